"""The Postgres engine: procrastinate delivers job ids to workers on any machine that reaches the database.

procrastinate (https://procrastinate.readthedocs.io) gives the queue its locks (``FOR UPDATE SKIP LOCKED``
fetches, one lock per job), LISTEN/NOTIFY wake-ups, worker heartbeats and the list of stalled jobs; our
``backtest_jobs`` rows (:mod:`src.jobs.postgres_jobs`) stay the record users see. Rules:

- ``defer(job_id)`` queues one procrastinate job (task ``wyeli.run_job``, queue ``backtests``, lock
  ``wyeli-job-<id>``) for a row already inserted by ``submit``;
- the task starts a new attempt of the row (a cancelled or finished row makes it a no-op) and runs it with
  :func:`src.jobs.supervisor.run_attempt` (a child process);
- stalled-job recovery: every ``recover_every_s`` each worker asks procrastinate for jobs whose worker has
  sent no heartbeat for ``stalled_after_s`` (default 30 s; heartbeats every 10 s), moves the row back to
  the queue while attempts remain (``requeue_or_fail``, conditional on the attempt, so only one worker
  acts) and retries the procrastinate job, else fails both with the reason; rows queued for 2 minutes
  without a procrastinate job (the submitter died between insert and defer) are deferred again;
- procrastinate's own tables (``procrastinate_*``) are created on first use under an advisory lock
  (:func:`ensure_schema`); upgrading procrastinate means applying its migration files (RUNBOOK).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import procrastinate
import psycopg
import structlog
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager

from src.jobs.local_runner import worker_name
from src.jobs.store import JobStore
from src.jobs.supervisor import AttemptSettings, run_attempt
from src.storage.base import StoreError, StoreUnavailable

log = structlog.get_logger(__name__)

TASK_NAME = "wyeli.run_job"
QUEUE = "backtests"
_SCHEMA_LOCK = 0x577950726F637261  # pg_advisory_lock key: "WyProcra" in ASCII


def psycopg_conninfo(database_url: str) -> str:
    """DATABASE_URL for psycopg: our ``statement_cache_size`` option dropped, a ``search_path`` option (asyncpg
    sends it as a server setting) turned into libpq's ``options=-c search_path=...``."""
    parts = urlsplit(database_url)
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "statement_cache_size":
            continue
        if key == "search_path":
            kept.append(("options", f"-c search_path={value}"))
        else:
            kept.append((key, value))
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(kept, quote_via=quote)))


async def ensure_schema(conninfo: str) -> bool:
    """Create procrastinate's tables if absent (one process at a time); True when this call created them."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            cur = await conn.execute("SELECT to_regclass('procrastinate_jobs')")
            row = await cur.fetchone()
            if row is not None and row[0] is not None:
                return False
            schema_sql = SchemaManager.get_schema()
            async with conn.transaction():
                await conn.execute(schema_sql)
            log.info("procrastinate_schema_created")
            return True
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


class PgQueue:
    """The procrastinate app bound to our job rows. ``open()`` before use, ``close()`` after."""

    def __init__(self, database_url: str, store: JobStore, *, attempt: AttemptSettings | None = None,
                 name: str | None = None) -> None:
        self.conninfo = psycopg_conninfo(database_url)
        self.store = store
        self.attempt = attempt or AttemptSettings()
        self.name = name or worker_name("pg")
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self.conninfo, min_size=1,
                                                                              max_size=4))
        retry = procrastinate.RetryStrategy(max_attempts=5, wait=5, retry_exceptions={StoreError})
        self.task = self.app.task(name=TASK_NAME, queue=QUEUE, retry=retry)(self._run)
        self._opened = False

    async def open(self) -> None:
        if self._opened:
            return
        try:
            await ensure_schema(self.conninfo)
            await self.app.open_async()
        except (psycopg.Error, OSError) as exc:
            raise StoreUnavailable(f"procrastinate queue: {type(exc).__name__}: {str(exc)[:300]}") from exc
        self._opened = True

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self.app.close_async()

    async def defer(self, job_id: int) -> int:
        """Queue the procrastinate job that runs row ``job_id``; returns procrastinate's job id."""
        return await self.task.configure(lock=f"wyeli-job-{job_id}").defer_async(job_id=job_id)

    async def _run(self, job_id: int) -> str:
        job = await self.store.start(job_id, self.name)
        if job is None:
            return "skipped (cancelled or finished)"
        log.info("job_started", job_id=job.id, attempt=job.attempt, worker=self.name, request=job.request.label())
        state = await run_attempt(self.store, job, self.attempt)
        return str(state or "abandoned")

    async def recover_stalled(self, stalled_after_s: float) -> int:
        """Jobs of workers without a heartbeat for ``stalled_after_s``: retried or failed (module docstring)."""
        manager = self.app.job_manager
        n = 0
        for pj in await manager.get_stalled_jobs(queue=QUEUE, task_name=TASK_NAME,
                                                 seconds_since_heartbeat=stalled_after_s):
            job_id = int(str(pj.task_kwargs.get("job_id", 0)))
            rec = await self.store.get(job_id)
            reason = f"worker {rec.worker if rec else '?'} stopped responding (no heartbeat for {stalled_after_s:.0f} s)"
            if rec is None or rec.state != "running":
                # the dead worker fetched the job but never started the row (queued), or the row ended another
                # way (cancelled): hand the job back, or close it; another worker may have done so already
                with contextlib.suppress(Exception):
                    if rec is not None and rec.state == "queued":
                        await manager.retry_job(pj)
                    else:
                        await manager.finish_job(pj, status=Status.SUCCEEDED if rec else Status.FAILED,
                                                 delete_job=False)
                continue
            state = await self.store.requeue_or_fail(job_id, rec.attempt, f"{reason} during attempt {rec.attempt}")
            if state is None:
                continue  # another worker handled it
            n += 1
            if state == "queued":
                await manager.retry_job(pj)
            else:
                await manager.finish_job(pj, status=Status.FAILED, delete_job=False)
            log.warning("job_recovered_from_dead_worker", job_id=job_id, attempt=rec.attempt, now=state)
        return n

    async def redefer_orphans(self, older_than_s: float = 120.0) -> int:
        """Rows queued for longer than ``older_than_s`` without a waiting or running procrastinate job (the
        submitter died between the insert and the defer) are deferred again; returns how many."""
        queued = [j for j in await self.store.list_jobs(states=["queued"], limit=1000)
                  if time.time() * 1000 - j.created_ms > older_than_s * 1000]
        if not queued:
            return 0
        live: set[int] = set()
        for status in ("todo", "doing"):
            for pj in await self.app.job_manager.list_jobs_async(queue=QUEUE, task=TASK_NAME, status=status):
                live.add(int(str(pj.task_kwargs.get("job_id", 0))))
        orphans = [j.id for j in queued if j.id not in live]
        for job_id in orphans:
            # the lock keeps a (rare) duplicate from running beside the original; start() then skips it
            await self.defer(job_id)
            log.warning("job_deferred_again", job_id=job_id, reason="queued without a procrastinate job")
        return len(orphans)

    async def run_worker(self, *, concurrency: int = 1, heartbeat_s: float = 10.0, stalled_after_s: float = 30.0,
                         recover_every_s: float = 15.0, install_signal_handlers: bool = True) -> None:
        """Run jobs until stopped (SIGINT/SIGTERM: the jobs in flight finish first)."""
        await self.open()
        recover = asyncio.create_task(self._recover_loop(stalled_after_s, recover_every_s), name="recover-stalled")
        options: dict[str, Any] = {
            "queues": [QUEUE], "concurrency": concurrency, "name": self.name,
            "update_heartbeat_interval": heartbeat_s, "stalled_worker_timeout": stalled_after_s,
            "install_signal_handlers": install_signal_handlers, "fetch_job_polling_interval": 2.0,
        }
        log.info("job_worker_started", worker=self.name, engine="procrastinate", concurrency=concurrency)
        try:
            await self.app.run_worker_async(**options)
        finally:
            recover.cancel()
            await asyncio.gather(recover, return_exceptions=True)

    async def _recover_loop(self, stalled_after_s: float, every_s: float) -> None:
        while True:
            try:
                await self.recover_stalled(stalled_after_s)
                await self.redefer_orphans()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away for a moment: try again next round
                log.warning("job_recovery_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            await asyncio.sleep(every_s)
