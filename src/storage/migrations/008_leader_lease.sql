-- WyEli migration 008: the leader lease (issue 16, SPEC 13): several bot instances on one Postgres, one leader.
--
-- Idempotent; runs as-is in the Supabase SQL editor. Row Level Security is on with no policy (like 001):
-- the table owner (DATABASE_URL) bypasses it; anon/authenticated see nothing.
--
-- One row per lease name. An instance takes the lease when the row is missing or expired (by the DATABASE's
-- clock: expires_at <= clock_timestamp()), which bumps epoch by one; the holder renews it (expires_at moves
-- to clock_timestamp() + ttl) while it is not expired. epoch only ever grows, so a write that names an epoch
-- (the Discord outbox's claims, src/storage/postgres_store.py) is refused in the same statement when a newer
-- leader exists or the lease has expired: a stale leader can never post or trade after a takeover.
CREATE TABLE IF NOT EXISTS leader_lease (
    name        text        PRIMARY KEY,
    holder      text        NOT NULL,
    epoch       bigint      NOT NULL CHECK (epoch > 0),
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Every instance (leader or follower) says it is alive here at each lease attempt, with its role and shard, so
-- the leader's >status can list them all. Rows not seen for a day are deleted by the leader.
CREATE TABLE IF NOT EXISTS bot_instances (
    instance_id text        PRIMARY KEY,
    role        text        NOT NULL CHECK (role IN ('leader', 'follower')),
    shard       text        NOT NULL,
    epoch       bigint,
    started_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL
);

ALTER TABLE leader_lease  ENABLE ROW LEVEL SECURITY;
ALTER TABLE bot_instances ENABLE ROW LEVEL SECURITY;

-- Supabase grants every new table to anon/authenticated: take the writes back (reads are stopped by RLS), as 001 does.
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON leader_lease, bot_instances FROM %I', r);
        END IF;
    END LOOP;
END $$;

-- Recorded here too, so a paste into the SQL editor counts (the bot's runner then only fills in the checksum).
INSERT INTO schema_migrations (version, name) VALUES (8, '008_leader_lease') ON CONFLICT (version) DO NOTHING;
