-- WyEli schema, migration 004: trading (issue 13).
--
-- 001 created plain orders / positions / audit_log tables that nothing wrote to yet. This file extends
-- them for paper, demo and live trading, in place, and adds trading_state. Like every migration it is
-- idempotent (ADD COLUMN IF NOT EXISTS, constraints dropped before they are re-added) and runs as-is in
-- the Supabase SQL editor. Every write the bot makes is an upsert on a natural key:
--   orders.client_order_id, positions.key ('<mode>:<signal_id>'), audit_log.event_id, trading_state.key.
-- Times are timestamptz (UTC); RLS stays on for every table, with no policy (service key / owner only).

-- ------------------------------------------------------------------ orders
ALTER TABLE orders ADD COLUMN IF NOT EXISTS mode           text             NOT NULL DEFAULT 'demo';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS position_key   text;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS purpose        text             NOT NULL DEFAULT 'entry';
ALTER TABLE orders ADD COLUMN IF NOT EXISTS close_position boolean          NOT NULL DEFAULT false;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS algo           boolean          NOT NULL DEFAULT false;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS filled_qty     double precision NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS avg_price      double precision;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS error          text;
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_mode_check;
ALTER TABLE orders ADD CONSTRAINT orders_mode_check CHECK (mode IN ('paper', 'demo', 'live'));
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_purpose_check;
ALTER TABLE orders ADD CONSTRAINT orders_purpose_check CHECK (purpose IN ('entry', 'stop', 'target', 'close'));
CREATE INDEX IF NOT EXISTS orders_mode_created ON orders (mode, created_at DESC);
CREATE INDEX IF NOT EXISTS orders_position_key ON orders (position_key);

-- ------------------------------------------------------------------ positions
ALTER TABLE positions ADD COLUMN IF NOT EXISTS key             text;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS mode            text             NOT NULL DEFAULT 'demo';
ALTER TABLE positions ADD COLUMN IF NOT EXISTS timeframe       text             NOT NULL DEFAULT '';
ALTER TABLE positions ADD COLUMN IF NOT EXISTS pattern         text             NOT NULL DEFAULT '';
ALTER TABLE positions ADD COLUMN IF NOT EXISTS planned_entry   double precision;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS risk_per_unit   double precision;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS exit_price      double precision;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS exit_reason     text;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS fees            double precision NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS r_multiple      double precision;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS protection      text             NOT NULL DEFAULT 'none';
ALTER TABLE positions ADD COLUMN IF NOT EXISTS stop_generation integer          NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS note            text             NOT NULL DEFAULT '';
ALTER TABLE positions ADD COLUMN IF NOT EXISTS created_at      timestamptz      NOT NULL DEFAULT now();
ALTER TABLE positions ADD COLUMN IF NOT EXISTS updated_at      timestamptz      NOT NULL DEFAULT now();
-- a position waiting for its entry fill has no entry price yet; opened_at is set by the bot at the fill
ALTER TABLE positions ALTER COLUMN entry_price DROP NOT NULL;
ALTER TABLE positions ALTER COLUMN opened_at DROP NOT NULL;
ALTER TABLE positions ALTER COLUMN opened_at DROP DEFAULT;
ALTER TABLE positions DROP CONSTRAINT IF EXISTS positions_status_check;
ALTER TABLE positions ADD CONSTRAINT positions_status_check CHECK (status IN ('PENDING', 'OPEN', 'CLOSED', 'FAILED'));
ALTER TABLE positions DROP CONSTRAINT IF EXISTS positions_mode_check;
ALTER TABLE positions ADD CONSTRAINT positions_mode_check CHECK (mode IN ('paper', 'demo', 'live'));
CREATE UNIQUE INDEX IF NOT EXISTS positions_key ON positions (key);
-- 001's UNIQUE "one open position per symbol" index would make the store refuse a record (and the spool
-- dead-letter it) whenever the store lags the exchange; the exchange is the source of truth and the bot
-- enforces one position per symbol itself, so the record must always be accepted. The name is kept for a
-- plain (non-unique) index, so pasting 001 again later (CREATE ... IF NOT EXISTS) does not bring it back.
DROP INDEX IF EXISTS positions_one_open_per_symbol;
CREATE INDEX IF NOT EXISTS positions_one_open_per_symbol ON positions (mode, symbol) WHERE status = 'OPEN';
CREATE INDEX IF NOT EXISTS positions_mode_status ON positions (mode, status);
CREATE INDEX IF NOT EXISTS positions_mode_closed ON positions (mode, closed_at DESC);

-- ------------------------------------------------------------------ audit log
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS event_id  text;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS mode      text NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS symbol    text;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS signal_id text;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS ref       text;
CREATE UNIQUE INDEX IF NOT EXISTS audit_log_event_id ON audit_log (event_id);
CREATE INDEX IF NOT EXISTS audit_log_mode_at ON audit_log (mode, at DESC);

-- ------------------------------------------------------------------ durable trading state
-- Small JSON values that must survive a restart: the kill switch / pause reason, each day's start equity.
CREATE TABLE IF NOT EXISTS trading_state (
    key        text PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE trading_state ENABLE ROW LEVEL SECURITY;

-- ------------------------------------------------------------------ a view for the operator
-- Closed positions per mode and UTC day: trades, wins, realised PnL (USDT, after fees) and summed R.
CREATE OR REPLACE VIEW v_trading_daily AS
SELECT mode,
       (closed_at AT TIME ZONE 'UTC')::date                    AS day,
       COUNT(*)                                                AS trades,
       COUNT(*) FILTER (WHERE realized_pnl > 0)                AS wins,
       SUM(realized_pnl)                                       AS realized_pnl,
       SUM(r_multiple)                                         AS total_r,
       AVG(r_multiple)                                         AS avg_r
FROM positions
WHERE status = 'CLOSED' AND closed_at IS NOT NULL
GROUP BY mode, (closed_at AT TIME ZONE 'UTC')::date;

DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE 'ALTER VIEW v_trading_daily SET (security_invoker = on)';
    END IF;
END $$;

DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON trading_state FROM %I', r);
        END IF;
    END LOOP;
END $$;

INSERT INTO schema_migrations (version, name) VALUES (4, '004_trading') ON CONFLICT (version) DO NOTHING;
