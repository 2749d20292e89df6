-- WyEli embedded SQLite schema, migration 004: trading (issue 13): orders, positions, audit log, state.
-- Same columns as the Postgres tables after its 004; times are UTC epoch ms (INTEGER), booleans 0/1,
-- details / values JSON text. Natural keys: orders.client_order_id, positions.key, audit_log.event_id,
-- trading_state.key.

CREATE TABLE IF NOT EXISTS orders (
    client_order_id   TEXT    PRIMARY KEY,
    mode              TEXT    NOT NULL CHECK (mode IN ('paper', 'demo', 'live')),
    signal_id         TEXT,
    position_key      TEXT,
    symbol            TEXT    NOT NULL,
    side              TEXT    NOT NULL CHECK (side IN ('BUY', 'SELL')),
    order_type        TEXT    NOT NULL,
    purpose           TEXT    NOT NULL CHECK (purpose IN ('entry', 'stop', 'target', 'close')),
    quantity          REAL    NOT NULL,
    stop_price        REAL,
    reduce_only       INTEGER NOT NULL DEFAULT 0,
    close_position    INTEGER NOT NULL DEFAULT 0,
    algo              INTEGER NOT NULL DEFAULT 0,
    status            TEXT    NOT NULL,
    filled_qty        REAL    NOT NULL DEFAULT 0,
    avg_price         REAL,
    exchange_order_id TEXT,
    error             TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_mode_created ON orders (mode, created_at);
CREATE INDEX IF NOT EXISTS orders_signal ON orders (signal_id);

CREATE TABLE IF NOT EXISTS positions (
    key             TEXT    PRIMARY KEY,
    mode            TEXT    NOT NULL CHECK (mode IN ('paper', 'demo', 'live')),
    signal_id       TEXT    NOT NULL,
    symbol          TEXT    NOT NULL,
    timeframe       TEXT    NOT NULL,
    pattern         TEXT    NOT NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('LONG', 'SHORT')),
    status          TEXT    NOT NULL CHECK (status IN ('PENDING', 'OPEN', 'CLOSED', 'FAILED')),
    quantity        REAL    NOT NULL,
    planned_entry   REAL    NOT NULL,
    entry_price     REAL,
    stop_loss       REAL    NOT NULL,
    take_profit     REAL,
    leverage        INTEGER NOT NULL,
    risk_per_unit   REAL    NOT NULL,
    opened_at       INTEGER,
    closed_at       INTEGER,
    exit_price      REAL,
    exit_reason     TEXT,
    realized_pnl    REAL,
    fees            REAL    NOT NULL DEFAULT 0,
    r_multiple      REAL,
    protection      TEXT    NOT NULL DEFAULT 'none',
    stop_generation INTEGER NOT NULL DEFAULT 0,
    note            TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS positions_mode_status ON positions (mode, status);
CREATE INDEX IF NOT EXISTS positions_mode_closed ON positions (mode, closed_at);

CREATE TABLE IF NOT EXISTS audit_log (
    event_id  TEXT    PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    mode      TEXT    NOT NULL DEFAULT '',
    symbol    TEXT,
    signal_id TEXT,
    ref       TEXT,
    details   TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at, event_id);

CREATE TABLE IF NOT EXISTS trading_state (
    key        TEXT    PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
