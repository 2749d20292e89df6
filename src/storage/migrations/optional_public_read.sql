-- OPTIONAL, not applied by the bot: let the anon / authenticated roles (Supabase publishable key)
-- READ signals, their outcomes and the signal views, e.g. for a public dashboard or a Realtime
-- subscriber. Nothing here grants a write. Run it by hand in the Supabase SQL editor after
-- the numbered migrations (001, 002, ...); it is idempotent and does nothing on a server without those roles.
-- Run it again after a migration that rebuilds a view (002 rebuilds v_signal_stats and v_win_rate).
-- Undo: DROP POLICY signals_public_read ON signals; DROP POLICY signal_performance_public_read ON signal_performance;
--       REVOKE SELECT ON signals, signal_performance, v_recent_signals, v_signal_stats, v_win_rate, v_reliability
--       FROM anon, authenticated;
DO $$
DECLARE
    roles text;
    t text;
BEGIN
    SELECT string_agg(quote_ident(rolname), ', ') INTO roles
    FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
    IF roles IS NULL THEN
        RAISE NOTICE 'no anon/authenticated roles here (plain Postgres): nothing to do';
        RETURN;
    END IF;
    FOREACH t IN ARRAY ARRAY['signals', 'signal_performance'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS %I ON %I', t || '_public_read', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO %s USING (true)', t || '_public_read', t, roles);
    END LOOP;
    EXECUTE format('GRANT SELECT ON signals, signal_performance, v_recent_signals, v_signal_stats, v_win_rate, '
                   'v_reliability TO %s', roles);
END $$;
