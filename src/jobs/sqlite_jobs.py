"""``backtest_jobs`` in the SQLite file (SQLITE_PATH), for the zero-config local queue.

One connection on one worker thread (:class:`src.storage.sqlite_store.SqliteThread`, WAL mode, 5 s busy
timeout) beside the bot's own store connection; the schema comes from the same numbered migrations. Every
multi-step change runs inside ``BEGIN IMMEDIATE``, which serialises writers across processes (the bot's
runner and a ``python -m backtest worker`` on the same machine), so claims and limit checks cannot race.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from src.jobs.model import (
    ACTIVE_STATES,
    JobFile,
    JobLimits,
    JobRecord,
    JobRequest,
    JobState,
    LimitReached,
    Requester,
)
from src.storage.base import StoreError
from src.storage.sqlite_store import _apply_schema
from src.storage.sqlite_thread import SqliteThread, transaction

_COLS = (
    "id, request, state, user_id, user_name, channel_id, guild_id, admin, created_at, attempt, max_attempts, "
    "started_at, finished_at, heartbeat_at, worker, progress, error, summary, message_id, notified_at, "
    "cancel_requested"
)



class SqliteJobStore:
    """The JobStore protocol on the SQLite file (see the module docstring)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self._clock = clock
        self._db = SqliteThread(self.path, label="jobs")

    def _now(self) -> int:
        return int(self._clock() * 1000)

    async def open(self) -> None:
        await self._db.start(_apply_schema)

    async def close(self) -> None:
        await self._db.stop()

    @staticmethod
    def _fetch(conn: sqlite3.Connection, job_id: int) -> JobRecord | None:
        r = conn.execute(f"SELECT {_COLS} FROM backtest_jobs WHERE id = ?", (job_id,)).fetchone()
        if r is None:
            return None
        names = tuple(n for (n,) in conn.execute("SELECT name FROM backtest_job_files WHERE job_id = ? ORDER BY name",
                                                  (job_id,)))
        return JobRecord.from_row(r, names)

    # ------------------------------------------------------------------ requests
    async def submit(self, request: JobRequest, requester: Requester, limits: JobLimits, *,
                     max_attempts: int = 2) -> JobRecord:
        request.validate()
        limits.check_period(request, requester)
        now = self._now()

        def q(conn: sqlite3.Connection) -> JobRecord:
            def body() -> JobRecord:
                if not requester.admin:
                    mine, total = conn.execute(
                        "SELECT COALESCE(SUM(user_id = ?), 0), COUNT(*) FROM backtest_jobs WHERE state IN (?, ?)",
                        (requester.user_id, *ACTIVE_STATES)).fetchone()
                    if mine >= limits.max_active_per_user:
                        raise LimitReached(f"you already have {mine} jobs queued or running (limit "
                                           f"{limits.max_active_per_user}); wait for one to finish or cancel one")
                    if total >= limits.max_active_total:
                        raise LimitReached(f"the queue is full ({total} jobs queued or running, limit "
                                           f"{limits.max_active_total}); try again later")
                cur = conn.execute(
                    "INSERT INTO backtest_jobs (kind, request, user_id, user_name, channel_id, guild_id, admin, "
                    "created_at, max_attempts) VALUES (?,?,?,?,?,?,?,?,?)",
                    (request.kind, request.to_json(), requester.user_id, requester.user_name, requester.channel_id,
                     requester.guild_id, int(requester.admin), now, max_attempts))
                job_id = int(cur.lastrowid or 0)
                cur.close()
                rec = self._fetch(conn, job_id)
                assert rec is not None
                return rec

            return transaction(conn, body)

        return await self._db.run(q, "submit job")

    async def get(self, job_id: int) -> JobRecord | None:
        return await self._db.run(lambda conn: self._fetch(conn, job_id), "get job")

    async def list_jobs(self, *, states: Sequence[JobState] | None = None, user_id: str | None = None,
                        limit: int = 20) -> list[JobRecord]:
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if user_id is not None:
            where.append("user_id = ?")
            args.append(user_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_COLS} FROM backtest_jobs {clause} ORDER BY id DESC LIMIT ?"
        args.append(max(0, limit))
        return await self._db.run(lambda conn: [JobRecord.from_row(r) for r in conn.execute(sql, args)], "list jobs")

    async def queue_position(self, job_id: int) -> int | None:
        def q(conn: sqlite3.Connection) -> int | None:
            r = conn.execute("SELECT state FROM backtest_jobs WHERE id = ?", (job_id,)).fetchone()
            if r is None or r[0] != "queued":
                return None
            ahead = conn.execute("SELECT COUNT(*) FROM backtest_jobs WHERE state = 'queued' AND id < ?",
                                 (job_id,)).fetchone()[0]
            return int(ahead) + 1

        return await self._db.run(q, "queue position")

    async def counts(self) -> dict[str, int]:
        def q(conn: sqlite3.Connection) -> dict[str, int]:
            return {s: int(n) for s, n in conn.execute("SELECT state, COUNT(*) FROM backtest_jobs GROUP BY state")}

        return await self._db.run(q, "job counts")

    async def set_message(self, job_id: int, message_id: int) -> None:
        def q(conn: sqlite3.Connection) -> None:
            transaction(conn, lambda: conn.execute("UPDATE backtest_jobs SET message_id = ? WHERE id = ?",
                                                   (message_id, job_id)).close())

        await self._db.run(q, "set job message")

    async def cancel(self, job_id: int) -> JobRecord | None:
        now = self._now()

        def q(conn: sqlite3.Connection) -> JobRecord | None:
            def body() -> JobRecord | None:
                conn.execute(
                    "UPDATE backtest_jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?, "
                    "progress = '' WHERE id = ? AND state IN ('queued', 'running')", (now, job_id)).close()
                return self._fetch(conn, job_id)

            return transaction(conn, body)

        return await self._db.run(q, "cancel job")

    # ------------------------------------------------------------------ runs
    def _start_sql(self, conn: sqlite3.Connection, job_id: int, worker: str, now: int) -> JobRecord | None:
        cur = conn.execute(
            "UPDATE backtest_jobs SET state = 'running', attempt = attempt + 1, worker = ?, started_at = ?, "
            "heartbeat_at = ?, progress = 'starting' WHERE id = ? AND state = 'queued'",
            (worker, now, now, job_id))
        changed = cur.rowcount
        cur.close()
        return self._fetch(conn, job_id) if changed == 1 else None

    async def claim_next(self, worker: str) -> JobRecord | None:
        now = self._now()

        def q(conn: sqlite3.Connection) -> JobRecord | None:
            def body() -> JobRecord | None:
                r = conn.execute("SELECT id FROM backtest_jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
                return None if r is None else self._start_sql(conn, int(r[0]), worker, now)

            return transaction(conn, body)

        return await self._db.run(q, "claim job")

    async def start(self, job_id: int, worker: str) -> JobRecord | None:
        now = self._now()
        return await self._db.run(lambda conn: transaction(conn, lambda: self._start_sql(conn, job_id, worker, now)),
                                  "start job")

    def _update(self, sql: str, args: Sequence[Any], what: str) -> Callable[[sqlite3.Connection], int]:
        def q(conn: sqlite3.Connection) -> int:
            def body() -> int:
                cur = conn.execute(sql, args)
                n = cur.rowcount
                cur.close()
                return n

            return transaction(conn, body)

        return q

    async def heartbeat(self, job_id: int, attempt: int, progress: str | None = None) -> bool:
        sql = ("UPDATE backtest_jobs SET heartbeat_at = ?, progress = COALESCE(?, progress) WHERE id = ? "
               "AND attempt = ? AND state = 'running'")
        args = (self._now(), None if progress is None else progress[:200], job_id, attempt)
        return await self._db.run(self._update(sql, args, "heartbeat"), "job heartbeat") == 1

    async def finish(self, job_id: int, attempt: int, state: JobState, *, summary: dict[str, Any] | None = None,
                     error: str | None = None, files: Sequence[JobFile] = ()) -> bool:
        if state not in ("done", "failed"):
            raise StoreError(f"finish: state must be done or failed, got {state!r}")
        now = self._now()
        text = None if summary is None else json.dumps(summary, allow_nan=False, default=str)
        rows = [(job_id, f.name, f.content) for f in files]

        def q(conn: sqlite3.Connection) -> bool:
            def body() -> bool:
                cur = conn.execute(
                    "UPDATE backtest_jobs SET state = ?, finished_at = ?, heartbeat_at = ?, summary = ?, "
                    "error = COALESCE(?, error), progress = '' WHERE id = ? AND attempt = ? AND state = 'running'",
                    (state, now, now, text, None if error is None else error[:2000], job_id, attempt))
                ok = cur.rowcount == 1
                cur.close()
                if ok and rows:
                    conn.executemany("INSERT OR REPLACE INTO backtest_job_files (job_id, name, content) VALUES (?,?,?)",
                                     rows).close()
                return ok

            return transaction(conn, body)

        return await self._db.run(q, "finish job")

    async def requeue_or_fail(self, job_id: int, attempt: int, reason: str, *, free: bool = False) -> JobState | None:
        now = self._now()

        def q(conn: sqlite3.Connection) -> JobState | None:
            def body() -> JobState | None:
                r = conn.execute("SELECT attempt, max_attempts FROM backtest_jobs WHERE id = ? AND attempt = ? "
                                 "AND state = 'running'", (job_id, attempt)).fetchone()
                if r is None:
                    return None
                if free or int(r[0]) < int(r[1]):
                    conn.execute("UPDATE backtest_jobs SET state = 'queued', worker = NULL, progress = ?, error = ?, "
                                 "max_attempts = max_attempts + ? WHERE id = ?",
                                 (f"retrying: {reason}"[:200], reason[:2000], int(free), job_id)).close()
                    return "queued"
                conn.execute("UPDATE backtest_jobs SET state = 'failed', finished_at = ?, progress = '', error = ? "
                             "WHERE id = ?", (now, reason[:2000], job_id)).close()
                return "failed"

            return transaction(conn, body)

        return await self._db.run(q, "requeue job")

    async def stale_running(self, older_than_s: float) -> list[JobRecord]:
        cutoff = self._now() - int(older_than_s * 1000)
        sql = f"SELECT {_COLS} FROM backtest_jobs WHERE state = 'running' AND COALESCE(heartbeat_at, 0) < ? ORDER BY id"
        return await self._db.run(lambda conn: [JobRecord.from_row(r) for r in conn.execute(sql, (cutoff,))], "stale jobs")

    # ------------------------------------------------------------------ Discord posts
    async def to_notify(self, *, stale_ms: int = 600_000, limit: int = 10) -> list[JobRecord]:
        cutoff = self._now() - stale_ms
        sql = (f"SELECT {_COLS} FROM backtest_jobs WHERE state IN ('done', 'failed', 'cancelled') "
               "AND channel_id IS NOT NULL AND notified_at IS NULL "
               "AND (notify_claimed_at IS NULL OR notify_claimed_at < ?) ORDER BY id LIMIT ?")
        return await self._db.run(lambda conn: [JobRecord.from_row(r) for r in conn.execute(sql, (cutoff, limit))],
                                  "jobs to post")

    async def claim_notification(self, job_id: int, *, stale_ms: int = 600_000) -> bool:
        now = self._now()
        sql = ("UPDATE backtest_jobs SET notify_claimed_at = ? WHERE id = ? AND notified_at IS NULL "
               "AND (notify_claimed_at IS NULL OR notify_claimed_at < ?)")
        return await self._db.run(self._update(sql, (now, job_id, now - stale_ms), "claim"), "claim job post") == 1

    async def mark_notified(self, job_id: int) -> None:
        sql = "UPDATE backtest_jobs SET notified_at = ? WHERE id = ?"
        await self._db.run(self._update(sql, (self._now(), job_id), "notified"), "mark job posted")

    async def release_notification(self, job_id: int) -> None:
        sql = "UPDATE backtest_jobs SET notify_claimed_at = NULL WHERE id = ? AND notified_at IS NULL"
        await self._db.run(self._update(sql, (job_id,), "release"), "release job post")

    async def active_with_messages(self, limit: int = 50) -> list[JobRecord]:
        sql = (f"SELECT {_COLS} FROM backtest_jobs WHERE state IN ('queued', 'running') AND message_id IS NOT NULL "
               "ORDER BY id LIMIT ?")
        return await self._db.run(lambda conn: [JobRecord.from_row(r) for r in conn.execute(sql, (limit,))], "active jobs")

    async def files(self, job_id: int) -> list[JobFile]:
        sql = "SELECT name, content FROM backtest_job_files WHERE job_id = ? ORDER BY name"
        return await self._db.run(lambda conn: [JobFile(n, bytes(c)) for n, c in conn.execute(sql, (job_id,))],
                                  "job files")
