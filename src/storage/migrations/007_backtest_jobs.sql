-- WyEli migration 007: backtest jobs requested from Discord or the shell (src/jobs), and their result files.
--
-- Idempotent; runs as-is in the Supabase SQL editor. Row Level Security is on with no policy (like 001):
-- the table owner (DATABASE_URL) and the service role bypass it; anon/authenticated see nothing.
-- The queue engine itself (procrastinate) keeps its own procrastinate_* tables, created by
-- `python -m backtest worker` (or the bot) on first use; these rows are the application's record of a
-- job: what was asked, by whom, its state, progress, summary and result files. Every state change is one
-- conditional UPDATE naming the job's current attempt (src/jobs/model.py), so a job ends exactly once.

CREATE TABLE IF NOT EXISTS backtest_jobs (
    id                bigserial PRIMARY KEY,
    kind              text        NOT NULL CHECK (kind IN ('backtest', 'research')),
    request           json        NOT NULL,
    state             text        NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    user_id           text        NOT NULL,
    user_name         text        NOT NULL DEFAULT '',
    channel_id        bigint,
    guild_id          bigint,
    admin             boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    attempt           integer     NOT NULL DEFAULT 0,
    max_attempts      integer     NOT NULL DEFAULT 2,
    started_at        timestamptz,
    finished_at       timestamptz,
    heartbeat_at      timestamptz,
    worker            text,
    progress          text        NOT NULL DEFAULT '',
    error             text,
    summary           json,
    message_id        bigint,
    cancel_requested  boolean     NOT NULL DEFAULT false,
    notified_at       timestamptz,
    notify_claimed_at timestamptz
);
CREATE INDEX IF NOT EXISTS backtest_jobs_state ON backtest_jobs (state, id);
CREATE INDEX IF NOT EXISTS backtest_jobs_user_state ON backtest_jobs (user_id, state);

CREATE TABLE IF NOT EXISTS backtest_job_files (
    job_id  bigint NOT NULL REFERENCES backtest_jobs (id) ON DELETE CASCADE,
    name    text   NOT NULL,
    content bytea  NOT NULL,
    PRIMARY KEY (job_id, name)
);

ALTER TABLE backtest_jobs      ENABLE ROW LEVEL SECURITY;
ALTER TABLE backtest_job_files ENABLE ROW LEVEL SECURITY;

-- Supabase grants every new table to anon/authenticated: take the writes back (reads are stopped by RLS), as 001 does.
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON backtest_jobs, backtest_job_files FROM %I', r);
        END IF;
    END LOOP;
END $$;

-- Recorded here too, so a paste into the SQL editor counts (the bot's runner then only fills in the checksum).
INSERT INTO schema_migrations (version, name) VALUES (7, '007_backtest_jobs') ON CONFLICT (version) DO NOTHING;
