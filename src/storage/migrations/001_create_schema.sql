-- WyEli schema, version 1.
--
-- Runs unchanged in the Supabase SQL editor and in plain PostgreSQL (>= 13; 15+ also gets
-- security_invoker views), and is idempotent: running it again changes nothing.
-- Objects are created unqualified, i.e. in the first schema of search_path (`public` on Supabase;
-- the bot can point search_path elsewhere, the test suite uses a throw-away schema per run).
--
-- Times are timestamptz (UTC). Prices and volumes are double precision: the bot works with floats,
-- and double keeps every Binance decimal string to its nearest double exactly on the round trip.
-- Row Level Security is enabled on every table with NO policy: the table owner (`postgres`, used by
-- DATABASE_URL) and Supabase's service_role / sb_secret_ key bypass RLS, so the bot writes; the
-- anon/authenticated roles (publishable key) can neither read nor write. A read-only policy for
-- signals is an opt-in: see optional_public_read.sql.

-- ------------------------------------------------------------------ migrations ledger
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text,                       -- sha256 of the file; NULL when run by hand (SQL editor)
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- ------------------------------------------------------------------ market data
CREATE TABLE IF NOT EXISTS symbols (
    symbol      text PRIMARY KEY,
    base_asset  text,
    quote_asset text,
    status      text,
    tick_size   double precision,
    step_size   double precision,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Closed klines. No foreign key to symbols: warm-up and backfill write ~10^6 rows and a per-row FK
-- check would halve their speed; the store adds missing symbols in the same transaction instead.
CREATE TABLE IF NOT EXISTS candles (
    symbol                  text             NOT NULL,
    timeframe               text             NOT NULL,
    open_time               timestamptz      NOT NULL,
    close_time              timestamptz      NOT NULL,
    open                    double precision NOT NULL,
    high                    double precision NOT NULL,
    low                     double precision NOT NULL,
    close                   double precision NOT NULL,
    volume                  double precision NOT NULL,
    quote_volume            double precision NOT NULL DEFAULT 0,
    trades                  bigint           NOT NULL DEFAULT 0,
    taker_buy_volume        double precision NOT NULL DEFAULT 0,
    taker_buy_quote_volume  double precision NOT NULL DEFAULT 0,
    CONSTRAINT candles_natural_key UNIQUE (symbol, timeframe, open_time),
    CONSTRAINT candles_times CHECK (close_time > open_time)
);
-- (symbol, timeframe, open_time) serves last_open_time, load_candles and the upsert conflict check.
-- Retention deletes by open_time alone; BRIN is tiny and cheap to maintain for append-mostly time data.
CREATE INDEX IF NOT EXISTS candles_open_time_brin ON candles USING brin (open_time);

-- ------------------------------------------------------------------ signals
CREATE TABLE IF NOT EXISTS signals (
    id               text PRIMARY KEY,                 -- deterministic: sha256(symbol|tf|candle_time|pattern|direction)[:24]
    symbol           text             NOT NULL,
    timeframe        text             NOT NULL,
    pattern          text             NOT NULL,
    direction        text             NOT NULL CHECK (direction IN ('LONG', 'SHORT')),
    confidence       double precision NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    raw_confidence   double precision NOT NULL,
    entry            double precision NOT NULL,
    stop_loss        double precision NOT NULL,
    take_profits     double precision[] NOT NULL DEFAULT '{}',
    candle_time      timestamptz      NOT NULL,        -- open time of the confirming candle
    generated_at     timestamptz      NOT NULL,        -- close time of the confirming candle
    reasons          text[]           NOT NULL DEFAULT '{}',
    analyzer_version text             NOT NULL DEFAULT '',
    config_hash      text             NOT NULL DEFAULT '',
    features         json             NOT NULL DEFAULT '{}',  -- json (not jsonb) keeps the key order
    created_at       timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS signals_stream_candle_time ON signals (symbol, timeframe, candle_time DESC);
CREATE INDEX IF NOT EXISTS signals_candle_time ON signals (candle_time DESC, id DESC);
CREATE INDEX IF NOT EXISTS signals_generated_at ON signals (generated_at DESC);

-- Outbox: delivery state of each signal per destination ('discord:<channel_id>', 'webhook', ...).
CREATE TABLE IF NOT EXISTS signal_deliveries (
    signal_id   text        NOT NULL REFERENCES signals (id) ON DELETE CASCADE,
    destination text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'sent', 'skipped', 'failed')),
    message_id  text,
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error  text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (signal_id, destination)
);
CREATE INDEX IF NOT EXISTS signal_deliveries_destination_status ON signal_deliveries (destination, status);

-- One row per resolved signal. mfe / mae are the max favourable / adverse excursions in R
-- (multiples of |entry - stop_loss|, both >= 0); r_multiple is after fees.
CREATE TABLE IF NOT EXISTS signal_performance (
    signal_id    text             PRIMARY KEY REFERENCES signals (id) ON DELETE CASCADE,
    symbol_name  text             NOT NULL,
    timeframe    text             NOT NULL,
    pattern      text             NOT NULL,
    direction    text             NOT NULL CHECK (direction IN ('LONG', 'SHORT')),
    outcome      text             NOT NULL CHECK (outcome IN ('WIN', 'LOSS', 'EXPIRED')),
    entry_time   timestamptz      NOT NULL,
    entry_price  double precision NOT NULL,
    exit_time    timestamptz      NOT NULL,
    exit_price   double precision NOT NULL,
    r_multiple   double precision NOT NULL,
    mfe          double precision NOT NULL CHECK (mfe >= 0),
    mae          double precision NOT NULL CHECK (mae >= 0),
    fees         double precision NOT NULL DEFAULT 0,
    bars_held    integer          NOT NULL DEFAULT 0,
    confidence   double precision NOT NULL,
    resolved_at  timestamptz      NOT NULL
);
CREATE INDEX IF NOT EXISTS signal_performance_symbol ON signal_performance (symbol_name, timeframe, pattern);
CREATE INDEX IF NOT EXISTS signal_performance_resolved_at ON signal_performance (resolved_at DESC);

-- ------------------------------------------------------------------ data quality
-- Per stream counters written by the market-data layer (SPEC 6 data-quality view).
CREATE TABLE IF NOT EXISTS stream_quality (
    symbol             text        NOT NULL,
    timeframe          text        NOT NULL,
    last_candle_time   timestamptz,
    gaps_backfilled    integer     NOT NULL DEFAULT 0,
    candles_backfilled integer     NOT NULL DEFAULT 0,
    stalls             integer     NOT NULL DEFAULT 0,
    reconnects         integer     NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, timeframe)
);

-- ------------------------------------------------------------------ trading (off by default; plain tables for now)
CREATE TABLE IF NOT EXISTS orders (
    client_order_id   text PRIMARY KEY,
    exchange_order_id text,
    signal_id         text REFERENCES signals (id) ON DELETE SET NULL,
    symbol            text             NOT NULL,
    side              text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type        text             NOT NULL,
    quantity          double precision NOT NULL CHECK (quantity > 0),
    price             double precision,
    stop_price        double precision,
    reduce_only       boolean          NOT NULL DEFAULT false,
    status            text             NOT NULL DEFAULT 'NEW',
    testnet           boolean          NOT NULL DEFAULT true,
    raw               jsonb,
    created_at        timestamptz      NOT NULL DEFAULT now(),
    updated_at        timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_symbol_created ON orders (symbol, created_at DESC);
CREATE INDEX IF NOT EXISTS orders_signal ON orders (signal_id);

CREATE TABLE IF NOT EXISTS positions (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    signal_id     text REFERENCES signals (id) ON DELETE SET NULL,
    symbol        text             NOT NULL,
    direction     text             NOT NULL CHECK (direction IN ('LONG', 'SHORT')),
    quantity      double precision NOT NULL CHECK (quantity > 0),
    entry_price   double precision NOT NULL,
    stop_loss     double precision,
    take_profit   double precision,
    leverage      integer          NOT NULL DEFAULT 1 CHECK (leverage BETWEEN 1 AND 125),
    status        text             NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'CLOSED')),
    realized_pnl  double precision,
    testnet       boolean          NOT NULL DEFAULT true,
    opened_at     timestamptz      NOT NULL DEFAULT now(),
    closed_at     timestamptz
);
-- At most one open position per symbol (one-way mode).
CREATE UNIQUE INDEX IF NOT EXISTS positions_one_open_per_symbol ON positions (symbol) WHERE status = 'OPEN';

CREATE TABLE IF NOT EXISTS audit_log (
    id       bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text        NOT NULL,          -- 'bot', 'discord:<user_id>', 'operator'
    action   text        NOT NULL,
    details  jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at DESC);

-- ------------------------------------------------------------------ views
-- Win rates count EXPIRED as not-won: win_rate_pct = wins / resolved * 100 (the runbook query's rule).

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
       p.resolved_at
FROM signals s
LEFT JOIN signal_performance p ON p.signal_id = s.id;

CREATE OR REPLACE VIEW v_signal_stats AS
SELECT s.symbol,
       s.timeframe,
       s.pattern,
       COUNT(*)                                                     AS total_signals,
       MAX(s.generated_at)                                          AS last_signal_at,
       AVG(s.confidence)                                            AS avg_confidence,
       COUNT(p.signal_id)                                           AS resolved,
       COUNT(*) FILTER (WHERE p.outcome = 'WIN')                    AS wins,
       COUNT(*) FILTER (WHERE p.outcome = 'LOSS')                   AS losses,
       COUNT(*) FILTER (WHERE p.outcome = 'EXPIRED')                AS expired,
       100.0 * COUNT(*) FILTER (WHERE p.outcome = 'WIN') / NULLIF(COUNT(p.signal_id), 0) AS win_rate_pct,
       AVG(p.r_multiple)                                            AS avg_r
FROM signals s
LEFT JOIN signal_performance p ON p.signal_id = s.id
GROUP BY s.symbol, s.timeframe, s.pattern;

CREATE OR REPLACE VIEW v_win_rate AS
SELECT symbol_name,
       timeframe,
       pattern,
       COUNT(*)                                                     AS total_signals,
       COUNT(*) FILTER (WHERE outcome = 'WIN')                      AS wins,
       COUNT(*) FILTER (WHERE outcome = 'LOSS')                     AS losses,
       COUNT(*) FILTER (WHERE outcome = 'EXPIRED')                  AS expired,
       AVG(CASE WHEN outcome = 'WIN' THEN 1.0 ELSE 0.0 END) * 100   AS win_rate_pct,
       AVG(r_multiple)                                              AS avg_r,
       SUM(r_multiple)                                              AS total_r,
       AVG(mfe)                                                     AS avg_mfe,
       AVG(mae)                                                     AS avg_mae
FROM signal_performance
GROUP BY symbol_name, timeframe, pattern;

-- Calibration: resolved signals by calibrated-confidence decile [0.0, 0.1), ..., [0.9, 1.0]
-- (1.0 falls in the top bucket). A well calibrated bot has hit_rate close to avg_confidence.
CREATE OR REPLACE VIEW v_calibration AS
SELECT ROUND(b.bucket / 10.0, 1)                                     AS bucket_low,
       ROUND((b.bucket + 1) / 10.0, 1)                               AS bucket_high,
       COUNT(*)                                                      AS signals,
       COUNT(*) FILTER (WHERE b.outcome = 'WIN')                     AS wins,
       AVG(CASE WHEN b.outcome = 'WIN' THEN 1.0 ELSE 0.0 END)        AS hit_rate,
       AVG(b.confidence)                                             AS avg_confidence,
       AVG(b.r_multiple)                                             AS avg_r
FROM (SELECT LEAST(GREATEST(FLOOR(confidence * 10)::int, 0), 9) AS bucket, outcome, confidence, r_multiple
      FROM signal_performance) b
GROUP BY b.bucket;

CREATE OR REPLACE VIEW v_data_quality AS
SELECT symbol,
       timeframe,
       last_candle_time,
       now() - last_candle_time AS last_candle_age,
       gaps_backfilled,
       candles_backfilled,
       stalls,
       reconnects,
       updated_at
FROM stream_quality;

-- Postgres 15+: views check the CALLER's permissions and RLS (else they run as their owner and
-- would bypass RLS for anon). Guarded so older servers still accept the file.
DO $$
DECLARE v text;
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        FOREACH v IN ARRAY ARRAY['v_recent_signals', 'v_signal_stats', 'v_win_rate', 'v_calibration', 'v_data_quality'] LOOP
            EXECUTE format('ALTER VIEW %I SET (security_invoker = on)', v);
        END LOOP;
    END IF;
END $$;

-- ------------------------------------------------------------------ functions for the REST backend
-- PostgREST exposes these as POST /rest/v1/rpc/<name>: the queries the Supabase REST store cannot
-- express as a filter (anti-joins, aggregates). SECURITY INVOKER (the default): they see exactly
-- what the caller's key may see, so RLS applies to them as well.
CREATE OR REPLACE FUNCTION wyeli_pending_deliveries(p_destination text, p_limit integer DEFAULT 50)
RETURNS SETOF signals LANGUAGE sql STABLE AS $$
    SELECT s.* FROM signals s
    WHERE NOT EXISTS (SELECT 1 FROM signal_deliveries d
                      WHERE d.signal_id = s.id AND d.destination = p_destination AND d.status IN ('sent', 'skipped'))
    ORDER BY s.candle_time, s.id
    LIMIT GREATEST(p_limit, 0)
$$;

CREATE OR REPLACE FUNCTION wyeli_open_signals()
RETURNS SETOF signals LANGUAGE sql STABLE AS $$
    SELECT s.* FROM signals s
    WHERE NOT EXISTS (SELECT 1 FROM signal_performance p WHERE p.signal_id = s.id)
    ORDER BY s.candle_time, s.id
$$;

CREATE OR REPLACE FUNCTION wyeli_last_signal_times()
RETURNS TABLE (symbol text, timeframe text, candle_time timestamptz) LANGUAGE sql STABLE AS $$
    SELECT s.symbol, s.timeframe, MAX(s.candle_time) FROM signals s GROUP BY s.symbol, s.timeframe ORDER BY 1, 2
$$;

CREATE OR REPLACE FUNCTION wyeli_pattern_stats()
RETURNS TABLE (pattern text, signals bigint, wins bigint, losses bigint, expired bigint, avg_r double precision)
LANGUAGE sql STABLE AS $$
    SELECT s.pattern, COUNT(*), COUNT(*) FILTER (WHERE p.outcome = 'WIN'), COUNT(*) FILTER (WHERE p.outcome = 'LOSS'),
           COUNT(*) FILTER (WHERE p.outcome = 'EXPIRED'), AVG(p.r_multiple)
    FROM signals s LEFT JOIN signal_performance p ON p.signal_id = s.id
    GROUP BY s.pattern ORDER BY s.pattern
$$;

-- ------------------------------------------------------------------ row level security
ALTER TABLE schema_migrations  ENABLE ROW LEVEL SECURITY;
ALTER TABLE symbols            ENABLE ROW LEVEL SECURITY;
ALTER TABLE candles            ENABLE ROW LEVEL SECURITY;
ALTER TABLE signals            ENABLE ROW LEVEL SECURITY;
ALTER TABLE signal_deliveries  ENABLE ROW LEVEL SECURITY;
ALTER TABLE signal_performance ENABLE ROW LEVEL SECURITY;
ALTER TABLE stream_quality     ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders             ENABLE ROW LEVEL SECURITY;
ALTER TABLE positions          ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log          ENABLE ROW LEVEL SECURITY;

-- Supabase grants anon/authenticated full table privileges by default; take the write ones back
-- (RLS without policies already blocks them: this is defence in depth). Plain Postgres has no such
-- roles, hence the guard.
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format(
                'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations, symbols, candles, signals, '
                'signal_deliveries, signal_performance, stream_quality, orders, positions, audit_log FROM %I', r);
        END IF;
    END LOOP;
END $$;

-- Only the service role (and the owner) may call the functions.
REVOKE EXECUTE ON FUNCTION wyeli_pending_deliveries(text, integer), wyeli_open_signals(), wyeli_last_signal_times(),
    wyeli_pattern_stats() FROM PUBLIC;
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('%s EXECUTE ON FUNCTION wyeli_pending_deliveries(text, integer), wyeli_open_signals(), '
                           'wyeli_last_signal_times(), wyeli_pattern_stats() %s %I',
                           CASE WHEN r = 'service_role' THEN 'GRANT' ELSE 'REVOKE' END,
                           CASE WHEN r = 'service_role' THEN 'TO' ELSE 'FROM' END, r);
        END IF;
    END LOOP;
END $$;

-- Supabase Realtime: publish inserts on signals when the publication exists (Database -> Replication).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime')
       AND NOT EXISTS (SELECT 1 FROM pg_publication_tables
                       WHERE pubname = 'supabase_realtime' AND schemaname = current_schema() AND tablename = 'signals') THEN
        EXECUTE format('ALTER PUBLICATION supabase_realtime ADD TABLE %I.signals', current_schema());
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    -- not the publication's owner: Realtime is optional, never fail the migration for it
    RAISE NOTICE 'signals not added to supabase_realtime (%): enable it under Database -> Publications', SQLERRM;
END $$;

INSERT INTO schema_migrations (version, name) VALUES (1, '001_create_schema') ON CONFLICT (version) DO NOTHING;
