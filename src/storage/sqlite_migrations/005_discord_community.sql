-- WyEli embedded SQLite schema, migration 005: Discord for a community (issue 14). The same tables as the Postgres
-- file of the same number (which explains every column): follow-ups and their deliveries, subscriptions, mutes.
-- Times are UTC epoch milliseconds (INTEGER).

CREATE TABLE IF NOT EXISTS signal_follow_ups (
    signal_id   TEXT    NOT NULL REFERENCES signals (id) ON DELETE CASCADE,
    event       TEXT    NOT NULL CHECK (event IN ('tp1', 'tp2', 'stopped', 'expired', 'invalidated', 'tp2_missed')),
    event_time  INTEGER NOT NULL,
    price       REAL    NOT NULL,
    r_multiple  REAL    NOT NULL,
    bars        INTEGER NOT NULL DEFAULT 0 CHECK (bars >= 0),
    entry_price REAL    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (signal_id, event)
);
CREATE INDEX IF NOT EXISTS signal_follow_ups_event_time ON signal_follow_ups (event_time, signal_id);

CREATE TABLE IF NOT EXISTS follow_up_deliveries (
    signal_id   TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    destination TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'skipped', 'failed')),
    message_id  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (signal_id, event, destination),
    FOREIGN KEY (signal_id, event) REFERENCES signal_follow_ups (signal_id, event) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS discord_subscriptions (
    destination TEXT    NOT NULL,
    symbol      TEXT    NOT NULL CHECK (symbol <> ''),
    timeframe   TEXT    NOT NULL DEFAULT '',
    created_by  TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (destination, symbol, timeframe)
);

CREATE TABLE IF NOT EXISTS discord_mutes (
    destination TEXT    NOT NULL,
    symbol      TEXT    NOT NULL DEFAULT '',
    timeframe   TEXT    NOT NULL DEFAULT '',
    until       INTEGER NOT NULL,
    created_by  TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (destination, symbol, timeframe)
);
