-- WyEli embedded SQLite schema, migration 001 (applied by src/storage/sqlite_store.py, recorded in schema_migrations).
-- Times: candle/open/close/exit/resolved/updated times are UTC epoch milliseconds (INTEGER);
-- signals.generated_at and created_at are ISO-8601 UTC text ("2024-01-01T00:00:00.000Z").
-- JSON columns (take_profits, reasons, features) hold compact JSON text.

CREATE TABLE IF NOT EXISTS candles (
    symbol                 TEXT    NOT NULL,
    timeframe              TEXT    NOT NULL,
    open_time              INTEGER NOT NULL,
    close_time             INTEGER NOT NULL,
    open                   REAL    NOT NULL,
    high                   REAL    NOT NULL,
    low                    REAL    NOT NULL,
    close                  REAL    NOT NULL,
    volume                 REAL    NOT NULL,
    quote_volume           REAL    NOT NULL DEFAULT 0,
    trades                 INTEGER NOT NULL DEFAULT 0,
    taker_buy_volume       REAL    NOT NULL DEFAULT 0,
    taker_buy_quote_volume REAL    NOT NULL DEFAULT 0,
    -- the natural key is the clustered primary key: range reads per stream walk the b-tree in order
    PRIMARY KEY (symbol, timeframe, open_time)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS signals (
    id               TEXT    PRIMARY KEY,
    symbol           TEXT    NOT NULL,
    timeframe        TEXT    NOT NULL,
    pattern          TEXT    NOT NULL,
    direction        TEXT    NOT NULL CHECK (direction IN ('LONG', 'SHORT')),
    confidence       REAL    NOT NULL,
    raw_confidence   REAL    NOT NULL,
    entry            REAL    NOT NULL,
    stop_loss        REAL    NOT NULL,
    take_profits     TEXT    NOT NULL,
    candle_time      INTEGER NOT NULL,
    generated_at     TEXT    NOT NULL,
    reasons          TEXT    NOT NULL,
    analyzer_version TEXT    NOT NULL DEFAULT '',
    config_hash      TEXT    NOT NULL DEFAULT '',
    features         TEXT    NOT NULL DEFAULT '[]',
    created_at       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS signals_stream_time ON signals (symbol, timeframe, candle_time);
CREATE INDEX IF NOT EXISTS signals_time ON signals (candle_time, id);

CREATE TABLE IF NOT EXISTS signal_deliveries (
    signal_id   TEXT    NOT NULL REFERENCES signals (id) ON DELETE CASCADE,
    destination TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'skipped', 'failed')),
    message_id  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (signal_id, destination)
);

CREATE TABLE IF NOT EXISTS signal_performance (
    signal_id    TEXT    PRIMARY KEY REFERENCES signals (id) ON DELETE CASCADE,
    symbol       TEXT    NOT NULL,
    timeframe    TEXT    NOT NULL,
    pattern      TEXT    NOT NULL,
    direction    TEXT    NOT NULL CHECK (direction IN ('LONG', 'SHORT')),
    outcome      TEXT    NOT NULL CHECK (outcome IN ('WIN', 'LOSS', 'EXPIRED')),
    entry_time   INTEGER NOT NULL,
    entry_price  REAL    NOT NULL,
    exit_time    INTEGER NOT NULL,
    exit_price   REAL    NOT NULL,
    r_multiple   REAL    NOT NULL,
    mfe_r        REAL    NOT NULL,
    mae_r        REAL    NOT NULL,
    fees         REAL    NOT NULL,
    bars_held    INTEGER NOT NULL,
    confidence   REAL    NOT NULL,
    resolved_at  INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS stream_quality (
    symbol             TEXT    NOT NULL,
    timeframe          TEXT    NOT NULL,
    last_candle_ms     INTEGER,
    gaps_backfilled    INTEGER NOT NULL DEFAULT 0,
    candles_backfilled INTEGER NOT NULL DEFAULT 0,
    stalls             INTEGER NOT NULL DEFAULT 0,
    reconnects         INTEGER NOT NULL DEFAULT 0,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe)
);
