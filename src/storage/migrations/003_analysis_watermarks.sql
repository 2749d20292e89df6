-- WyEli schema, migration 003: the "analysed up to" watermark per stream (issue 11).
--
-- Runs as-is in the Supabase SQL editor and in plain PostgreSQL, and is idempotent.
-- analysis_watermarks.analysed_to is the open time of the newest candle of the stream whose analysis
-- results (its signals) are stored. The bot commits it in the SAME transaction as those signals and, on
-- start, re-analyses every stored candle after it: a crash between the candle write and the signal
-- write (or between two signals of one candle) loses nothing and doubles nothing. Streams that exist
-- when this runs count as analysed up to their newest stored candle.

CREATE TABLE IF NOT EXISTS analysis_watermarks (
    symbol      text        NOT NULL,
    timeframe   text        NOT NULL,
    analysed_to timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe)
);

INSERT INTO analysis_watermarks (symbol, timeframe, analysed_to)
SELECT symbol, timeframe, MAX(open_time) FROM candles GROUP BY symbol, timeframe
ON CONFLICT (symbol, timeframe) DO NOTHING;

-- ------------------------------------------------------------------ functions for the REST backend
-- One transaction through PostgREST: insert the signals (new ids only; the columns are the keys of the
-- JSON rows, so later columns need no change here) and move each stream's watermark forward only.
-- p_signals: [{"id": ..., "symbol": ..., <signals columns>}...]; p_watermarks: [{"symbol", "timeframe",
-- "analysed_to": <timestamptz text>}...]. Returns the number of signals inserted.
CREATE OR REPLACE FUNCTION wyeli_commit_analysis(p_signals json, p_watermarks json)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    cols text;
    inserted integer := 0;
BEGIN
    IF p_signals IS NOT NULL AND json_array_length(p_signals) > 0 THEN
        INSERT INTO symbols (symbol)
        SELECT DISTINCT e->>'symbol' FROM json_array_elements(p_signals) e
        ON CONFLICT (symbol) DO NOTHING;
        SELECT string_agg(quote_ident(k.key), ', ') INTO cols
        FROM (SELECT DISTINCT json_object_keys(e) AS key FROM json_array_elements(p_signals) e) k
        WHERE k.key IN (SELECT column_name FROM information_schema.columns
                        WHERE table_schema = current_schema() AND table_name = 'signals');
        EXECUTE format('INSERT INTO signals (%1$s) SELECT %1$s FROM json_populate_recordset(NULL::signals, $1) '
                       'ON CONFLICT (id) DO NOTHING', cols) USING p_signals;
        GET DIAGNOSTICS inserted = ROW_COUNT;
    END IF;
    INSERT INTO analysis_watermarks AS w (symbol, timeframe, analysed_to, updated_at)
    SELECT e->>'symbol', e->>'timeframe', (e->>'analysed_to')::timestamptz, now()
    FROM json_array_elements(COALESCE(p_watermarks, '[]'::json)) e
    ON CONFLICT (symbol, timeframe) DO UPDATE
        SET analysed_to = GREATEST(w.analysed_to, EXCLUDED.analysed_to), updated_at = now();
    RETURN inserted;
END $$;

-- Drops a stream's candles after p_after (a candle stored from the future) and moves its watermark back.
CREATE OR REPLACE FUNCTION wyeli_drop_candles_after(p_symbol text, p_timeframe text, p_after timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    removed integer;
BEGIN
    DELETE FROM candles WHERE symbol = p_symbol AND timeframe = p_timeframe AND open_time > p_after;
    GET DIAGNOSTICS removed = ROW_COUNT;
    UPDATE analysis_watermarks SET analysed_to = p_after, updated_at = now()
    WHERE symbol = p_symbol AND timeframe = p_timeframe AND analysed_to > p_after;
    RETURN removed;
END $$;

-- ------------------------------------------------------------------ row level security (as in 001)
ALTER TABLE analysis_watermarks ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON analysis_watermarks FROM %I', r);
        END IF;
    END LOOP;
END $$;

REVOKE EXECUTE ON FUNCTION wyeli_commit_analysis(json, json), wyeli_drop_candles_after(text, text, timestamptz)
    FROM PUBLIC;
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('%s EXECUTE ON FUNCTION wyeli_commit_analysis(json, json), '
                           'wyeli_drop_candles_after(text, text, timestamptz) %s %I',
                           CASE WHEN r = 'service_role' THEN 'GRANT' ELSE 'REVOKE' END,
                           CASE WHEN r = 'service_role' THEN 'TO' ELSE 'FROM' END, r);
        END IF;
    END LOOP;
END $$;

INSERT INTO schema_migrations (version, name) VALUES (3, '003_analysis_watermarks') ON CONFLICT (version) DO NOTHING;
