-- Migration 007: backtest jobs requested from Discord or the shell (src/jobs), and their result files.
-- Times are UTC epoch milliseconds. ``request`` and ``summary`` are JSON text. Every state change is one
-- conditional UPDATE naming the job's current ``attempt`` (see src/jobs/model.py), so a job ends once.

CREATE TABLE IF NOT EXISTS backtest_jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL CHECK (kind IN ('backtest', 'research')),
    request           TEXT    NOT NULL,
    state             TEXT    NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    user_id           TEXT    NOT NULL,
    user_name         TEXT    NOT NULL DEFAULT '',
    channel_id        INTEGER,
    guild_id          INTEGER,
    admin             INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL DEFAULT 2,
    started_at        INTEGER,
    finished_at       INTEGER,
    heartbeat_at      INTEGER,
    worker            TEXT,
    progress          TEXT    NOT NULL DEFAULT '',
    error             TEXT,
    summary           TEXT,
    message_id        INTEGER,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    notified_at       INTEGER,
    notify_claimed_at INTEGER
);
CREATE INDEX IF NOT EXISTS backtest_jobs_state ON backtest_jobs (state, id);
CREATE INDEX IF NOT EXISTS backtest_jobs_user_state ON backtest_jobs (user_id, state);

CREATE TABLE IF NOT EXISTS backtest_job_files (
    job_id  INTEGER NOT NULL REFERENCES backtest_jobs (id) ON DELETE CASCADE,
    name    TEXT    NOT NULL,
    content BLOB    NOT NULL,
    PRIMARY KEY (job_id, name)
);
