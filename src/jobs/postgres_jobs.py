"""``backtest_jobs`` in PostgreSQL (DATABASE_URL) through asyncpg, for the bot, the workers and the shell.

The schema is migration 007 (applied under the migration runner's advisory lock on ``open()``). Times are
timestamptz, converted to epoch ms in SQL. ``submit`` takes a transaction-scoped advisory lock, so the
limit check and the insert are one serialised step across every process; the other changes are single
conditional UPDATEs (see :mod:`src.jobs.store`). A ``search_path`` query option in the URL selects the
schema (used by the tests; asyncpg sends it as a server setting).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from src.jobs.model import JobFile, JobLimits, JobRecord, JobRequest, JobState, LimitReached, Requester
from src.storage.base import StoreError, StoreUnavailable
from src.storage.migrate import apply_migrations
from src.storage.postgres_store import _is_unavailable, _ms, describe_dsn, split_dsn

_SUBMIT_LOCK = 0x57794A6F62537562  # pg_advisory_xact_lock key: "WyJobSub" in ASCII
_COLS = (
    "id, request, state, user_id, user_name, channel_id, guild_id, admin, "
    f"{_ms('created_at')}, attempt, max_attempts, {_ms('started_at')}, {_ms('finished_at')}, {_ms('heartbeat_at')}, "
    f"worker, progress, error, summary, message_id, {_ms('notified_at')}, cancel_requested"
)



class PostgresJobStore:
    """The JobStore protocol on PostgreSQL (see the module docstring)."""

    def __init__(self, dsn: str, *, max_size: int = 3, command_timeout: float = 30.0) -> None:
        self._dsn, cache = split_dsn(dsn)
        self._cache = 100 if cache is None else cache
        self.name = describe_dsn(self._dsn)
        self._max_size = max_size
        self._timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        async with self._lock:
            if self._pool is not None:
                return
            try:
                pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._max_size, timeout=10,
                                                 command_timeout=self._timeout, statement_cache_size=self._cache)
            except Exception as exc:
                raise self._translate(exc, "connect") from exc
            try:
                async with pool.acquire() as conn:
                    await apply_migrations(conn)
            except Exception as exc:
                await pool.close()
                raise self._translate(exc, "migrate") from exc
            self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                pool.terminate()

    @staticmethod
    def _translate(exc: BaseException, what: str) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        cls = StoreUnavailable if _is_unavailable(exc) else StoreError
        return cls(f"postgres jobs {what}: {type(exc).__name__}: {exc}")

    @asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            await self.open()
        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except (LimitReached, StoreError):
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    async def _fetch(self, conn: asyncpg.Connection, job_id: int) -> JobRecord | None:
        r = await conn.fetchrow(f"SELECT {_COLS} FROM backtest_jobs WHERE id = $1", job_id)
        if r is None:
            return None
        names = await conn.fetch("SELECT name FROM backtest_job_files WHERE job_id = $1 ORDER BY name", job_id)
        return JobRecord.from_row(r, tuple(n[0] for n in names))

    # ------------------------------------------------------------------ requests
    async def submit(self, request: JobRequest, requester: Requester, limits: JobLimits, *,
                     max_attempts: int = 2) -> JobRecord:
        request.validate()
        limits.check_period(request, requester)
        async with self._conn("submit job") as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SUBMIT_LOCK)
            if not requester.admin:
                mine, total = await conn.fetchrow(
                    "SELECT COUNT(*) FILTER (WHERE user_id = $1), COUNT(*) FROM backtest_jobs "
                    "WHERE state IN ('queued', 'running')", requester.user_id)
                if mine >= limits.max_active_per_user:
                    raise LimitReached(f"you already have {mine} jobs queued or running (limit "
                                       f"{limits.max_active_per_user}); wait for one to finish or cancel one")
                if total >= limits.max_active_total:
                    raise LimitReached(f"the queue is full ({total} jobs queued or running, limit "
                                       f"{limits.max_active_total}); try again later")
            job_id = await conn.fetchval(
                "INSERT INTO backtest_jobs (kind, request, user_id, user_name, channel_id, guild_id, admin, max_attempts) "
                "VALUES ($1, $2::json, $3, $4, $5, $6, $7, $8) RETURNING id",
                request.kind, request.to_json(), requester.user_id, requester.user_name, requester.channel_id,
                requester.guild_id, requester.admin, max_attempts)
            rec = await self._fetch(conn, int(job_id))
        assert rec is not None
        return rec

    async def get(self, job_id: int) -> JobRecord | None:
        async with self._conn("get job") as conn:
            return await self._fetch(conn, job_id)

    async def list_jobs(self, *, states: Sequence[JobState] | None = None, user_id: str | None = None,
                        limit: int = 20) -> list[JobRecord]:
        sql = (f"SELECT {_COLS} FROM backtest_jobs WHERE ($1::text[] IS NULL OR state = ANY($1::text[])) "
               "AND ($2::text IS NULL OR user_id = $2) ORDER BY id DESC LIMIT $3")
        async with self._conn("list jobs") as conn:
            rows = await conn.fetch(sql, list(states) if states else None, user_id, max(0, limit))
        return [JobRecord.from_row(r) for r in rows]

    async def queue_position(self, job_id: int) -> int | None:
        sql = ("SELECT CASE WHEN j.state = 'queued' THEN (SELECT COUNT(*) FROM backtest_jobs q "
               "WHERE q.state = 'queued' AND q.id < j.id) + 1 END FROM backtest_jobs j WHERE j.id = $1")
        async with self._conn("queue position") as conn:
            pos = await conn.fetchval(sql, job_id)
        return None if pos is None else int(pos)

    async def counts(self) -> dict[str, int]:
        async with self._conn("job counts") as conn:
            rows = await conn.fetch("SELECT state, COUNT(*) FROM backtest_jobs GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    async def set_message(self, job_id: int, message_id: int) -> None:
        async with self._conn("set job message") as conn:
            await conn.execute("UPDATE backtest_jobs SET message_id = $2 WHERE id = $1", job_id, message_id)

    async def cancel(self, job_id: int) -> JobRecord | None:
        async with self._conn("cancel job") as conn:
            await conn.execute(
                "UPDATE backtest_jobs SET state = 'cancelled', cancel_requested = true, finished_at = now(), "
                "progress = '' WHERE id = $1 AND state IN ('queued', 'running')", job_id)
            return await self._fetch(conn, job_id)

    # ------------------------------------------------------------------ runs
    _START = ("UPDATE backtest_jobs SET state = 'running', attempt = attempt + 1, worker = $2, started_at = now(), "
              "heartbeat_at = now(), progress = 'starting' WHERE id = $1 AND state = 'queued' "
              "RETURNING id")

    async def claim_next(self, worker: str) -> JobRecord | None:
        async with self._conn("claim job") as conn, conn.transaction():
            job_id = await conn.fetchval("SELECT id FROM backtest_jobs WHERE state = 'queued' ORDER BY id LIMIT 1 "
                                         "FOR UPDATE SKIP LOCKED")
            if job_id is None:
                return None
            await conn.fetchval(self._START, job_id, worker)
            return await self._fetch(conn, int(job_id))

    async def start(self, job_id: int, worker: str) -> JobRecord | None:
        async with self._conn("start job") as conn:
            got = await conn.fetchval(self._START, job_id, worker)
            return None if got is None else await self._fetch(conn, job_id)

    async def heartbeat(self, job_id: int, attempt: int, progress: str | None = None) -> bool:
        async with self._conn("job heartbeat") as conn:
            status = await conn.execute(
                "UPDATE backtest_jobs SET heartbeat_at = now(), progress = COALESCE($3, progress) "
                "WHERE id = $1 AND attempt = $2 AND state = 'running'",
                job_id, attempt, None if progress is None else progress[:200])
        return bool(status == "UPDATE 1")

    async def finish(self, job_id: int, attempt: int, state: JobState, *, summary: dict[str, Any] | None = None,
                     error: str | None = None, files: Sequence[JobFile] = ()) -> bool:
        if state not in ("done", "failed"):
            raise StoreError(f"finish: state must be done or failed, got {state!r}")
        text = None if summary is None else json.dumps(summary, allow_nan=False, default=str)
        async with self._conn("finish job") as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE backtest_jobs SET state = $3, finished_at = now(), heartbeat_at = now(), summary = $4::json, "
                "error = COALESCE($5, error), progress = '' WHERE id = $1 AND attempt = $2 AND state = 'running'",
                job_id, attempt, state, text, None if error is None else error[:2000])
            if status != "UPDATE 1":
                return False
            if files:
                await conn.executemany(
                    "INSERT INTO backtest_job_files (job_id, name, content) VALUES ($1, $2, $3) "
                    "ON CONFLICT (job_id, name) DO UPDATE SET content = EXCLUDED.content",
                    [(job_id, f.name, f.content) for f in files])
            return True

    async def requeue_or_fail(self, job_id: int, attempt: int, reason: str, *, free: bool = False) -> JobState | None:
        async with self._conn("requeue job") as conn:
            state = await conn.fetchval(
                "UPDATE backtest_jobs SET max_attempts = max_attempts + $4::int, "
                "state = CASE WHEN attempt < max_attempts + $4::int THEN 'queued' ELSE 'failed' END, "
                "finished_at = CASE WHEN attempt < max_attempts + $4::int THEN NULL ELSE now() END, "
                "progress = CASE WHEN attempt < max_attempts + $4::int THEN left('retrying: ' || $3, 200) ELSE '' END, "
                "worker = CASE WHEN attempt < max_attempts + $4::int THEN NULL ELSE worker END, error = $3 "
                "WHERE id = $1 AND attempt = $2 AND state = 'running' RETURNING state", job_id, attempt, reason[:2000],
                int(free))
        return state  # type: ignore[no-any-return]

    async def stale_running(self, older_than_s: float) -> list[JobRecord]:
        sql = (f"SELECT {_COLS} FROM backtest_jobs WHERE state = 'running' AND "
               "COALESCE(heartbeat_at, 'epoch'::timestamptz) < now() - $1 * interval '1 second' ORDER BY id")
        async with self._conn("stale jobs") as conn:
            return [JobRecord.from_row(r) for r in await conn.fetch(sql, float(older_than_s))]

    # ------------------------------------------------------------------ Discord posts
    async def to_notify(self, *, stale_ms: int = 600_000, limit: int = 10) -> list[JobRecord]:
        sql = (f"SELECT {_COLS} FROM backtest_jobs WHERE state IN ('done', 'failed', 'cancelled') "
               "AND channel_id IS NOT NULL AND notified_at IS NULL AND (notify_claimed_at IS NULL OR "
               "notify_claimed_at < now() - $1 * interval '1 millisecond') ORDER BY id LIMIT $2")
        async with self._conn("jobs to post") as conn:
            return [JobRecord.from_row(r) for r in await conn.fetch(sql, stale_ms, limit)]

    async def claim_notification(self, job_id: int, *, stale_ms: int = 600_000) -> bool:
        async with self._conn("claim job post") as conn:
            status = await conn.execute(
                "UPDATE backtest_jobs SET notify_claimed_at = now() WHERE id = $1 AND notified_at IS NULL AND "
                "(notify_claimed_at IS NULL OR notify_claimed_at < now() - $2 * interval '1 millisecond')",
                job_id, stale_ms)
        return bool(status == "UPDATE 1")

    async def mark_notified(self, job_id: int) -> None:
        async with self._conn("mark job posted") as conn:
            await conn.execute("UPDATE backtest_jobs SET notified_at = now() WHERE id = $1", job_id)

    async def release_notification(self, job_id: int) -> None:
        async with self._conn("release job post") as conn:
            await conn.execute("UPDATE backtest_jobs SET notify_claimed_at = NULL WHERE id = $1 AND notified_at IS NULL",
                               job_id)

    async def active_with_messages(self, limit: int = 50) -> list[JobRecord]:
        sql = (f"SELECT {_COLS} FROM backtest_jobs WHERE state IN ('queued', 'running') AND message_id IS NOT NULL "
               "ORDER BY id LIMIT $1")
        async with self._conn("active jobs") as conn:
            return [JobRecord.from_row(r) for r in await conn.fetch(sql, limit)]

    async def files(self, job_id: int) -> list[JobFile]:
        async with self._conn("job files") as conn:
            rows = await conn.fetch("SELECT name, content FROM backtest_job_files WHERE job_id = $1 ORDER BY name", job_id)
        return [JobFile(r[0], bytes(r[1])) for r in rows]
