-- WyEli schema, version 2: every candidate is stored with the gate's verdict and the evidence (issue 10).
--
-- Runs unchanged in the Supabase SQL editor (after 001_create_schema.sql) and in plain PostgreSQL, and is
-- idempotent. The bot applies it by itself when it uses DATABASE_URL.
--
-- signals.kind          'trade' (a trade call), 'watch' (a watch note, NOT a trade call) or 'gated' (kept with its
--                       reason, never posted). Rows stored before this migration were posted signals: 'trade'.
-- signals.gate_reason   the gate's reason code: '' for a trade call, why a watch note is not a trade call, why a
--                       candidate was gated (e.g. 'no_edge', 'cooldown', 'duplicate_structure', 'rr_below_min';
--                       src/analysis/gate.py lists them all).
-- signals.structure_id  the same for every candidate from one market structure ('' when unknown).
-- signals.p_win, expected_r, expected_r_lo, expected_r_hi
--                       the evidence model's out-of-sample estimates of the trade's net R after fees: P(net R > 0)
--                       and E[net R] with its interval. NULL for rows stored before the evidence model.
-- signals.evidence      the whole assessment as JSON (model version, interval coverage, track record).
--
-- The TRACKED population (the candidates the live track record counts, the same population the evidence model
-- is fitted on) is: p_win IS NOT NULL AND gate_reason = ANY (wyeli_tracked_gate_reasons()). The bot computes
-- its own live record with the reason codes of the running program (src.analysis.evidence.TRACKED_GATE_REASONS);
-- the test suite checks the function below lists the same codes.
--
-- Views changed here: v_recent_signals (kind and evidence appended), v_signal_stats and v_win_rate (rebuilt: one
-- row per symbol/timeframe/pattern AND population 'trade' | 'watch' | 'tracked'; win rate = share of graded
-- candidates with net R > 0), v_calibration (dropped) -> v_reliability (shown p_win vs realised share of net R > 0).
-- After this migration, re-run optional_public_read.sql if you granted the views to anon/authenticated.

-- ------------------------------------------------------------------ signals: kind, reason, structure, evidence
ALTER TABLE signals ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'trade'
    CONSTRAINT signals_kind_check CHECK (kind IN ('trade', 'watch', 'gated'));
ALTER TABLE signals ADD COLUMN IF NOT EXISTS gate_reason text NOT NULL DEFAULT '';
ALTER TABLE signals ADD COLUMN IF NOT EXISTS structure_id text NOT NULL DEFAULT '';
ALTER TABLE signals ADD COLUMN IF NOT EXISTS p_win double precision
    CONSTRAINT signals_p_win_check CHECK (p_win >= 0 AND p_win <= 1);
ALTER TABLE signals ADD COLUMN IF NOT EXISTS expected_r double precision;
ALTER TABLE signals ADD COLUMN IF NOT EXISTS expected_r_lo double precision;
ALTER TABLE signals ADD COLUMN IF NOT EXISTS expected_r_hi double precision;
ALTER TABLE signals ADD COLUMN IF NOT EXISTS evidence json;  -- json (not jsonb) keeps the text as written

-- the outbox reads trade calls / watch notes per destination in candle order; the gate seed per stream
CREATE INDEX IF NOT EXISTS signals_kind_candle_time ON signals (kind, candle_time, id);
CREATE INDEX IF NOT EXISTS signals_structure ON signals (structure_id) WHERE structure_id <> '';

-- ------------------------------------------------------------------ the tracked population
CREATE OR REPLACE FUNCTION wyeli_tracked_gate_reasons()
RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['', 'no_edge', 'rr_below_trade_min', 'rr_below_min', 'score_below_watch_min', 'structure_signalled',
                 'cooldown', 'no_evidence']::text[]
$$;

-- ------------------------------------------------------------------ views
-- CREATE OR REPLACE keeps v_recent_signals' columns (and grants); the new ones are appended.
CREATE OR REPLACE VIEW v_recent_signals AS
SELECT s.id,
       s.symbol,
       s.timeframe,
       s.pattern,
       s.direction,
       s.confidence,
       s.entry,
       s.stop_loss,
       s.take_profits,
       s.candle_time,
       s.generated_at,
       s.reasons,
       p.outcome,
       p.r_multiple,
       p.resolved_at,
       s.kind,
       s.gate_reason,
       s.structure_id,
       s.p_win,
       s.expected_r,
       s.expected_r_lo,
       s.expected_r_hi,
       (s.evidence ->> 'interval')::double precision         AS interval_coverage,
       (s.evidence ->> 'backtest_n')::integer                AS backtest_n,
       (s.evidence ->> 'backtest_mean_r')::double precision  AS backtest_mean_r,
       (s.evidence ->> 'live_n')::integer                    AS live_n,
       (s.evidence ->> 'live_mean_r')::double precision      AS live_mean_r,
       s.evidence ->> 'model_version'                        AS model_version,
       s.raw_confidence                                      AS raw_score,
       CASE WHEN cardinality(s.take_profits) > 0 AND s.entry <> s.stop_loss
            THEN abs(s.take_profits[1] - s.entry) / abs(s.entry - s.stop_loss) END AS rr_to_tp1
FROM signals s
LEFT JOIN signal_performance p ON p.signal_id = s.id;

-- One row per (symbol, timeframe, pattern, population): 'trade' = trade calls, 'watch' = watch notes,
-- 'tracked' = every candidate of the tracked population (see the header). The track record the embeds show:
-- graded = candidates with an outcome, mean_r = mean net R, ci95 = mean +- 1.96 sd / sqrt(graded) (normal
-- approximation, NULL below 2 graded), win_rate_pct = share of graded ones with net R > 0.
DROP VIEW IF EXISTS v_signal_stats;
CREATE VIEW v_signal_stats AS
SELECT s.symbol,
       s.timeframe,
       s.pattern,
       g.population,
       COUNT(*)                                                           AS candidates,
       MAX(s.generated_at)                                                AS last_at,
       COUNT(p.signal_id)                                                 AS graded,
       AVG(p.r_multiple)                                                  AS mean_r,
       AVG(p.r_multiple) - 1.96 * stddev_samp(p.r_multiple) / sqrt(NULLIF(COUNT(p.signal_id), 0)) AS ci95_lo,
       AVG(p.r_multiple) + 1.96 * stddev_samp(p.r_multiple) / sqrt(NULLIF(COUNT(p.signal_id), 0)) AS ci95_hi,
       100.0 * COUNT(*) FILTER (WHERE p.r_multiple > 0) / NULLIF(COUNT(p.signal_id), 0)           AS win_rate_pct,
       SUM(p.r_multiple)                                                  AS total_r,
       AVG(s.p_win)                                                       AS avg_p_win,
       AVG(s.expected_r)                                                  AS avg_expected_r,
       COUNT(*) FILTER (WHERE p.outcome = 'WIN')                          AS tp_first,
       COUNT(*) FILTER (WHERE p.outcome = 'LOSS')                         AS stopped,
       COUNT(*) FILTER (WHERE p.outcome = 'EXPIRED')                      AS expired
FROM signals s
LEFT JOIN signal_performance p ON p.signal_id = s.id
CROSS JOIN LATERAL (VALUES ('trade', s.kind = 'trade'),
                           ('watch', s.kind = 'watch'),
                           ('tracked', s.p_win IS NOT NULL AND s.gate_reason = ANY (wyeli_tracked_gate_reasons())))
    AS g (population, member)
WHERE g.member
GROUP BY s.symbol, s.timeframe, s.pattern, g.population;

-- Outcomes per (symbol, timeframe, pattern, kind) over graded candidates. net_win_rate_pct = share with net R > 0
-- (the product's outcome); tp_first_rate_pct = share that reached the first target before the stop (SPEC 7 WIN),
-- shown for reference only: a near TP1 makes it high while the trade loses money after fees.
DROP VIEW IF EXISTS v_win_rate;
CREATE VIEW v_win_rate AS
SELECT p.symbol_name,
       p.timeframe,
       p.pattern,
       s.kind,
       COUNT(*)                                                     AS graded,
       COUNT(*) FILTER (WHERE p.r_multiple > 0)                     AS net_wins,
       100.0 * COUNT(*) FILTER (WHERE p.r_multiple > 0) / COUNT(*)  AS net_win_rate_pct,
       COUNT(*) FILTER (WHERE p.outcome = 'WIN')                    AS tp_first,
       COUNT(*) FILTER (WHERE p.outcome = 'LOSS')                   AS stopped,
       COUNT(*) FILTER (WHERE p.outcome = 'EXPIRED')                AS expired,
       100.0 * COUNT(*) FILTER (WHERE p.outcome = 'WIN') / COUNT(*) AS tp_first_rate_pct,
       AVG(p.r_multiple)                                            AS avg_r,
       SUM(p.r_multiple)                                            AS total_r,
       AVG(p.mfe)                                                   AS avg_mfe,
       AVG(p.mae)                                                   AS avg_mae
FROM signal_performance p
JOIN signals s ON s.id = p.signal_id
GROUP BY p.symbol_name, p.timeframe, p.pattern, s.kind;

-- Reliability of the shown p_win: graded candidates with an evidence assessment, by p_win decile
-- [0.0, 0.1), ..., [0.9, 1.0] (1.0 in the top bucket), per population. Honest estimates have
-- realised_win_rate close to avg_p_win in every bucket with enough candidates.
DROP VIEW IF EXISTS v_calibration;
CREATE OR REPLACE VIEW v_reliability AS
SELECT g.population,
       ROUND(b.bucket / 10.0, 1)                                     AS bucket_low,
       ROUND((b.bucket + 1) / 10.0, 1)                               AS bucket_high,
       COUNT(*)                                                      AS graded,
       AVG(b.p_win)                                                  AS avg_p_win,
       AVG(CASE WHEN b.r_multiple > 0 THEN 1.0 ELSE 0.0 END)         AS realised_win_rate,
       AVG(b.expected_r)                                             AS avg_expected_r,
       AVG(b.r_multiple)                                             AS mean_r
FROM (SELECT LEAST(GREATEST(FLOOR(s.p_win * 10)::int, 0), 9) AS bucket, s.p_win, s.expected_r, s.kind, s.gate_reason,
             p.r_multiple
      FROM signals s JOIN signal_performance p ON p.signal_id = s.id
      WHERE s.p_win IS NOT NULL) b
CROSS JOIN LATERAL (VALUES ('trade', b.kind = 'trade'),
                           ('watch', b.kind = 'watch'),
                           ('tracked', b.gate_reason = ANY (wyeli_tracked_gate_reasons())))
    AS g (population, member)
WHERE g.member
GROUP BY g.population, b.bucket;

DO $$
DECLARE v text;
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        FOREACH v IN ARRAY ARRAY['v_recent_signals', 'v_signal_stats', 'v_win_rate', 'v_reliability'] LOOP
            EXECUTE format('ALTER VIEW %I SET (security_invoker = on)', v);
        END LOOP;
    END IF;
END $$;

-- ------------------------------------------------------------------ functions for the REST backend
-- Trade calls and watch notes the destination has not settled; only the kinds asked for (never 'gated').
CREATE OR REPLACE FUNCTION wyeli_pending_deliveries_by_kind(p_destination text, p_kinds text[], p_limit integer DEFAULT 50)
RETURNS SETOF signals LANGUAGE sql STABLE AS $$
    SELECT s.* FROM signals s
    WHERE s.kind = ANY (p_kinds) AND s.kind <> 'gated'
      AND NOT EXISTS (SELECT 1 FROM signal_deliveries d
                      WHERE d.signal_id = s.id AND d.destination = p_destination AND d.status IN ('sent', 'skipped'))
    ORDER BY s.candle_time, s.id
    LIMIT GREATEST(p_limit, 0)
$$;

-- The gate's memory: the newest trade call / watch note (candle_time) and the newest trade call (trade_time, NULL
-- when none) per (symbol, timeframe, direction) ... (the newest candidate of any kind per stream, what an earlier
-- run already judged, is 001's wyeli_last_signal_times())
CREATE OR REPLACE FUNCTION wyeli_last_emitted()
RETURNS TABLE (symbol text, timeframe text, direction text, candle_time timestamptz, trade_time timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.symbol, s.timeframe, s.direction, MAX(s.candle_time), MAX(s.candle_time) FILTER (WHERE s.kind = 'trade')
    FROM signals s
    WHERE s.kind IN ('trade', 'watch')
    GROUP BY s.symbol, s.timeframe, s.direction ORDER BY 1, 2, 3
$$;

-- ... and the best kind ('trade' beats 'watch') per structure emitted within p_window_ms of the newest emission.
CREATE OR REPLACE FUNCTION wyeli_recent_structures(p_window_ms bigint)
RETURNS TABLE (structure_id text, kind text) LANGUAGE sql STABLE AS $$
    SELECT s.structure_id, MIN(s.kind) FROM signals s   -- 'trade' < 'watch'
    WHERE s.kind IN ('trade', 'watch') AND s.structure_id <> ''
      AND s.candle_time >= (SELECT MAX(candle_time) FROM signals WHERE kind IN ('trade', 'watch'))
                           - p_window_ms * interval '1 millisecond'
    GROUP BY s.structure_id ORDER BY 1
$$;

-- The live track record per (pattern, timeframe, population) as sums (n, sum R, sum R^2, net wins), optionally for
-- one symbol / timeframe / pattern; p_tracked = the gate reasons of the tracked population.
CREATE OR REPLACE FUNCTION wyeli_live_track(p_tracked text[], p_symbol text DEFAULT NULL, p_timeframe text DEFAULT NULL,
                                            p_pattern text DEFAULT NULL)
RETURNS TABLE (pattern text, timeframe text, population text, candidates bigint, graded bigint, sum_r double precision,
               sum_r2 double precision, wins bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.pattern, s.timeframe, g.population, COUNT(*), COUNT(p.signal_id), COALESCE(SUM(p.r_multiple), 0),
           COALESCE(SUM(p.r_multiple * p.r_multiple), 0), COUNT(*) FILTER (WHERE p.r_multiple > 0)
    FROM signals s
    LEFT JOIN signal_performance p ON p.signal_id = s.id
    CROSS JOIN LATERAL (VALUES ('trade', s.kind = 'trade'),
                               ('watch', s.kind = 'watch'),
                               ('tracked', s.p_win IS NOT NULL AND s.gate_reason = ANY (p_tracked)))
        AS g (population, member)
    WHERE g.member
      AND (p_symbol IS NULL OR s.symbol = p_symbol)
      AND (p_timeframe IS NULL OR s.timeframe = p_timeframe)
      AND (p_pattern IS NULL OR s.pattern = p_pattern)
    GROUP BY s.pattern, s.timeframe, g.population
    ORDER BY 1, 2, 3
$$;

-- Only the service role (and the owner) may call the functions (as in 001).
REVOKE EXECUTE ON FUNCTION wyeli_pending_deliveries_by_kind(text, text[], integer), wyeli_last_emitted(),
    wyeli_recent_structures(bigint), wyeli_live_track(text[], text, text, text) FROM PUBLIC;
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('%s EXECUTE ON FUNCTION wyeli_pending_deliveries_by_kind(text, text[], integer), '
                           'wyeli_last_emitted(), wyeli_recent_structures(bigint), '
                           'wyeli_live_track(text[], text, text, text) %s %I',
                           CASE WHEN r = 'service_role' THEN 'GRANT' ELSE 'REVOKE' END,
                           CASE WHEN r = 'service_role' THEN 'TO' ELSE 'FROM' END, r);
        END IF;
    END LOOP;
END $$;

INSERT INTO schema_migrations (version, name) VALUES (2, '002_signal_kinds_and_evidence') ON CONFLICT (version) DO NOTHING;
