"""The job queue as one object for the bot and the shell: the rows plus the engine that runs them.

- ``DATABASE_URL`` (Postgres): rows in Postgres, engine procrastinate (:mod:`src.jobs.pg_queue`); workers are
  ``python -m backtest worker`` processes on any machine, and the bot may start one itself.
- SQLite (the zero-config default): rows in SQLITE_PATH, engine a local pool of job processes
  (:class:`src.jobs.local_runner.LocalJobRunner`) run by the bot or by ``python -m backtest worker`` on this
  machine.
- Supabase REST only (SUPABASE_URL without DATABASE_URL): not supported (PostgREST offers no transaction
  for the limit check and no row locks for claims); :func:`jobs_unsupported_reason` says so and how to
  fix it (set DATABASE_URL to the project's Postgres connection string).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog

from src.config import Config
from src.jobs.model import JobLimits, JobRecord, JobRequest, Requester
from src.jobs.store import JobStore

log = structlog.get_logger(__name__)


class Engine(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def defer(self, job_id: int) -> int: ...


class LocalEngine:
    """SQLite: the rows are the queue; a runner in this process (if any) is woken, others poll (1 s)."""

    def __init__(self) -> None:
        self.wake_callbacks: list[Callable[[], None]] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def defer(self, job_id: int) -> int:
        for wake in self.wake_callbacks:
            wake()
        return job_id


def jobs_unsupported_reason(cfg: Config) -> str | None:
    if cfg.storage_backend == "supabase":
        return ("backtest jobs need a database connection: set DATABASE_URL to the Supabase project's Postgres "
                "connection string (Settings > Database); the Supabase REST store alone cannot run the queue")
    return None


def limits_from(cfg: Config) -> JobLimits:
    return JobLimits(cfg.jobs_max_active_per_user, cfg.jobs_max_active, cfg.jobs_max_period_days)


class JobQueue:
    def __init__(self, store: JobStore, engine: Engine, limits: JobLimits, *, max_attempts: int = 2,
                 engine_name: str = "local") -> None:
        self.store = store
        self.engine = engine
        self.limits = limits
        self.max_attempts = max_attempts
        self.engine_name = engine_name

    async def open(self) -> None:
        await self.store.open()
        await self.engine.open()

    async def close(self) -> None:
        await self.engine.close()
        await self.store.close()

    async def submit(self, request: JobRequest, requester: Requester) -> JobRecord:
        """Insert the row (limits checked) and hand it to the engine. If the engine refuses, the row is failed."""
        rec = await self.store.submit(request, requester, self.limits, max_attempts=self.max_attempts)
        try:
            await self.engine.defer(rec.id)
        except Exception as exc:
            log.error("job_defer_failed", job_id=rec.id, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            started = await self.store.start(rec.id, "queue")
            if started is not None:
                await self.store.finish(rec.id, started.attempt, "failed", error="the job queue is unavailable; try again later")
            raise
        return rec


def build_job_queue(cfg: Config) -> JobQueue:
    """The queue the configuration asks for (not opened). Raises ValueError when jobs are unsupported."""
    reason = jobs_unsupported_reason(cfg)
    if reason:
        raise ValueError(reason)
    limits = limits_from(cfg)
    if cfg.storage_backend == "postgres" and cfg.database_url:
        from src.jobs.pg_queue import PgQueue
        from src.jobs.postgres_jobs import PostgresJobStore

        store: JobStore = PostgresJobStore(cfg.database_url)
        return JobQueue(store, PgQueue(cfg.database_url, store), limits, max_attempts=cfg.jobs_max_attempts,
                        engine_name="procrastinate")
    from src.jobs.sqlite_jobs import SqliteJobStore

    return JobQueue(SqliteJobStore(cfg.sqlite_path), LocalEngine(), limits, max_attempts=cfg.jobs_max_attempts)
