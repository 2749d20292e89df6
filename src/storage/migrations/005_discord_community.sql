-- WyEli schema, version 5: Discord for a community (issue 14): follow-ups, channel/DM subscriptions and mutes.
--
-- Runs unchanged in the Supabase SQL editor (after the earlier numbered files) and in plain PostgreSQL, and is
-- idempotent. The bot applies it by itself when it uses DATABASE_URL.
--
-- signal_follow_ups     what happened to a trade call or watch note after it was posted, one row per (signal, event),
--                       written by the outcome tracker from the same candles it grades on (src/analysis/follow_ups.py):
--                       'tp1' (first target hit: the whole position exits there, SPEC 7), 'stopped', 'expired',
--                       'invalidated' (the candle after the signal OPENED beyond the stop: the setup was broken
--                       before a fair entry; graded as a loss at that open), 'tp2' (informational: the second target
--                       was reached after TP1 within the horizon, before the stop) and 'tp2_missed' (internal marker:
--                       the TP2 watch ended without it; never posted). event_time = open time of the candle it
--                       happened on; r_multiple = the trade's net R after fees (for 'tp2': what holding to TP2 would
--                       have made, net of fees); bars = candles since entry (the entry candle is 1).
-- follow_up_deliveries  delivery of one follow-up to one destination (a reply to the original message), like
--                       signal_deliveries; the key is (signal_id, event, destination).
-- discord_subscriptions `>watch` entries: destination 'discord:<channel id>' or 'dm:<user id>', symbol, timeframe
--                       ('' = every timeframe).
-- discord_mutes         `>mute` entries: nothing of that symbol ('' = every symbol) / timeframe ('' = every timeframe)
--                       is posted to the destination until `until`.

-- ------------------------------------------------------------------ follow-ups
CREATE TABLE IF NOT EXISTS signal_follow_ups (
    signal_id   text             NOT NULL REFERENCES signals (id) ON DELETE CASCADE,
    event       text             NOT NULL
        CONSTRAINT signal_follow_ups_event_check
        CHECK (event IN ('tp1', 'tp2', 'stopped', 'expired', 'invalidated', 'tp2_missed')),
    event_time  timestamptz      NOT NULL,
    price       double precision NOT NULL,
    r_multiple  double precision NOT NULL,
    bars        integer          NOT NULL DEFAULT 0 CHECK (bars >= 0),
    entry_price double precision NOT NULL,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (signal_id, event)
);
CREATE INDEX IF NOT EXISTS signal_follow_ups_event_time ON signal_follow_ups (event_time, signal_id);

CREATE TABLE IF NOT EXISTS follow_up_deliveries (
    signal_id   text        NOT NULL,
    event       text        NOT NULL,
    destination text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'sent', 'skipped', 'failed')),
    message_id  text,
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (signal_id, event, destination),
    FOREIGN KEY (signal_id, event) REFERENCES signal_follow_ups (signal_id, event) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS follow_up_deliveries_destination ON follow_up_deliveries (destination, status);

-- ------------------------------------------------------------------ subscriptions and mutes
CREATE TABLE IF NOT EXISTS discord_subscriptions (
    destination text        NOT NULL CHECK (destination ~ '^(discord|dm):[0-9]{1,22}$'),
    symbol      text        NOT NULL CHECK (symbol <> ''),
    timeframe   text        NOT NULL DEFAULT '',
    created_by  text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, symbol, timeframe)
);

CREATE TABLE IF NOT EXISTS discord_mutes (
    destination text        NOT NULL CHECK (destination ~ '^(discord|dm):[0-9]{1,22}$'),
    symbol      text        NOT NULL DEFAULT '',
    timeframe   text        NOT NULL DEFAULT '',
    until       timestamptz NOT NULL,
    created_by  text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, symbol, timeframe)
);

ALTER TABLE signal_follow_ups     ENABLE ROW LEVEL SECURITY;
ALTER TABLE follow_up_deliveries  ENABLE ROW LEVEL SECURITY;
ALTER TABLE discord_subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE discord_mutes         ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON signal_follow_ups, follow_up_deliveries, '
                           'discord_subscriptions, discord_mutes FROM %I', r);
        END IF;
    END LOOP;
END $$;

-- ------------------------------------------------------------------ functions for the REST backend (and the bot)
-- Follow-ups a destination still has to post: the original signal was posted there ('sent' with a message id), and
-- the follow-up has no 'sent'/'skipped' delivery to it yet. Oldest event first; on one candle the order of events is
-- invalidated, stopped, tp1, expired, tp2.
CREATE OR REPLACE FUNCTION wyeli_pending_follow_ups(p_destination text, p_limit integer DEFAULT 50)
RETURNS TABLE (signal_id text, event text, event_time timestamptz, price double precision, r_multiple double precision,
               bars integer, entry_price double precision, original_message_id text)
LANGUAGE sql STABLE AS $$
    SELECT f.signal_id, f.event, f.event_time, f.price, f.r_multiple, f.bars, f.entry_price, d.message_id
    FROM signal_follow_ups f
    JOIN signal_deliveries d ON d.signal_id = f.signal_id AND d.destination = p_destination AND d.status = 'sent'
                            AND d.message_id IS NOT NULL
    WHERE f.event <> 'tp2_missed'
      AND NOT EXISTS (SELECT 1 FROM follow_up_deliveries x
                      WHERE x.signal_id = f.signal_id AND x.event = f.event AND x.destination = p_destination
                        AND x.status IN ('sent', 'skipped'))
    ORDER BY f.event_time, f.signal_id,
             array_position(ARRAY['invalidated', 'stopped', 'tp1', 'expired', 'tp2'], f.event)
    LIMIT GREATEST(p_limit, 0)
$$;

-- Signals whose first target was hit and whose second target is still being watched (no 'tp2' / 'tp2_missed' yet).
CREATE OR REPLACE FUNCTION wyeli_open_tp2_watches()
RETURNS SETOF signals LANGUAGE sql STABLE AS $$
    SELECT s.* FROM signals s
    JOIN signal_follow_ups f ON f.signal_id = s.id AND f.event = 'tp1'
    WHERE cardinality(s.take_profits) >= 2
      AND NOT EXISTS (SELECT 1 FROM signal_follow_ups g WHERE g.signal_id = s.id AND g.event IN ('tp2', 'tp2_missed'))
    ORDER BY s.candle_time, s.id
$$;

-- wyeli_pending_deliveries_by_kind (002) without the signals whose candle opened before p_since_ms, unless this
-- destination already attempted them (a post that may have reached Discord before a crash is still checked).
CREATE OR REPLACE FUNCTION wyeli_pending_deliveries_since(p_destination text, p_kinds text[], p_since_ms bigint,
                                                          p_limit integer DEFAULT 50)
RETURNS SETOF signals LANGUAGE sql STABLE AS $$
    SELECT s.* FROM signals s
    WHERE s.kind = ANY (p_kinds) AND s.kind <> 'gated'
      AND (s.candle_time >= 'epoch'::timestamptz + p_since_ms * interval '1 millisecond'
           OR EXISTS (SELECT 1 FROM signal_deliveries a WHERE a.signal_id = s.id AND a.destination = p_destination))
      AND NOT EXISTS (SELECT 1 FROM signal_deliveries d
                      WHERE d.signal_id = s.id AND d.destination = p_destination AND d.status IN ('sent', 'skipped'))
    ORDER BY s.candle_time, s.id
    LIMIT GREATEST(p_limit, 0)
$$;

-- `>signals` history: newest first, filtered (NULL = any): pattern is a substring; p_outcome 'WIN' | 'LOSS' |
-- 'EXPIRED' | 'OPEN' (no outcome yet).
CREATE OR REPLACE FUNCTION wyeli_signal_history(p_kinds text[], p_symbol text DEFAULT NULL, p_timeframe text DEFAULT NULL,
                                                p_pattern text DEFAULT NULL, p_outcome text DEFAULT NULL,
                                                p_offset integer DEFAULT 0, p_limit integer DEFAULT 10)
RETURNS SETOF signals LANGUAGE sql STABLE AS $$
    SELECT s.* FROM signals s
    LEFT JOIN signal_performance p ON p.signal_id = s.id
    WHERE s.kind = ANY (p_kinds)
      AND (p_symbol IS NULL OR s.symbol = p_symbol)
      AND (p_timeframe IS NULL OR s.timeframe = p_timeframe)
      AND (p_pattern IS NULL OR strpos(s.pattern, p_pattern) > 0)
      AND (p_outcome IS NULL OR (p_outcome = 'OPEN' AND p.signal_id IS NULL) OR p.outcome = p_outcome)
    ORDER BY s.candle_time DESC, s.id DESC
    OFFSET GREATEST(p_offset, 0) LIMIT GREATEST(p_limit, 0)
$$;

-- wyeli_live_track (002) over the candidates whose candle opened at or after p_since_ms (`>stats ... 30d`).
CREATE OR REPLACE FUNCTION wyeli_live_track_since(p_tracked text[], p_symbol text, p_timeframe text, p_pattern text,
                                                  p_since_ms bigint, p_resolved_before timestamptz DEFAULT NULL)
RETURNS TABLE (pattern text, timeframe text, population text, candidates bigint, graded bigint, sum_r double precision,
               sum_r2 double precision, wins bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.pattern, s.timeframe, g.population, COUNT(*), COUNT(p.signal_id), COALESCE(SUM(p.r_multiple), 0),
           COALESCE(SUM(p.r_multiple * p.r_multiple), 0), COUNT(*) FILTER (WHERE p.r_multiple > 0)
    FROM signals s
    LEFT JOIN signal_performance p ON p.signal_id = s.id AND (p_resolved_before IS NULL OR p.resolved_at < p_resolved_before)
    CROSS JOIN LATERAL (VALUES ('trade', s.kind = 'trade'),
                               ('watch', s.kind = 'watch'),
                               ('tracked', s.p_win IS NOT NULL AND s.gate_reason = ANY (p_tracked)))
        AS g (population, member)
    WHERE g.member
      AND s.candle_time >= 'epoch'::timestamptz + p_since_ms * interval '1 millisecond'
      AND (p_symbol IS NULL OR s.symbol = p_symbol)
      AND (p_timeframe IS NULL OR s.timeframe = p_timeframe)
      AND (p_pattern IS NULL OR s.pattern = p_pattern)
    GROUP BY s.pattern, s.timeframe, g.population
    ORDER BY 1, 2, 3
$$;

-- Only the service role (and the owner) may call the functions (as in 001 and 002).
REVOKE EXECUTE ON FUNCTION wyeli_pending_follow_ups(text, integer), wyeli_open_tp2_watches(),
    wyeli_pending_deliveries_since(text, text[], bigint, integer),
    wyeli_signal_history(text[], text, text, text, text, integer, integer),
    wyeli_live_track_since(text[], text, text, text, bigint, timestamptz) FROM PUBLIC;
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('%s EXECUTE ON FUNCTION wyeli_pending_follow_ups(text, integer), wyeli_open_tp2_watches(), '
                           'wyeli_pending_deliveries_since(text, text[], bigint, integer), '
                           'wyeli_signal_history(text[], text, text, text, text, integer, integer), '
                           'wyeli_live_track_since(text[], text, text, text, bigint, timestamptz) %s %I',
                           CASE WHEN r = 'service_role' THEN 'GRANT' ELSE 'REVOKE' END,
                           CASE WHEN r = 'service_role' THEN 'TO' ELSE 'FROM' END, r);
        END IF;
    END LOOP;
END $$;

INSERT INTO schema_migrations (version, name) VALUES (5, '005_discord_community') ON CONFLICT (version) DO NOTHING;
