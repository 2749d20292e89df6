"""The zero-config engine: a pool of job processes on this machine, fed from the job rows (SQLite).

Used by the bot (JOBS_LOCAL_WORKERS slots, default 1) and by ``python -m backtest worker`` with the SQLite
store. Each slot runs one attempt at a time through :func:`src.jobs.supervisor.run_attempt` (a child
process; the event loop only awaits it). Claims are ``BEGIN IMMEDIATE`` transactions, so several runners
on the same file (the bot and a worker process) never take the same job.

A runner that died (the bot killed, the machine restarted) leaves its jobs ``running`` with a heartbeat
that stops; every runner looks for such jobs every ``poll_s`` and gives them back to the queue (or fails
them once their attempts are used up) when the heartbeat is older than ``stale_after_s`` (30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog

from src.jobs.store import JobStore
from src.jobs.supervisor import AttemptSettings, run_attempt
from src.storage.base import StoreError

log = structlog.get_logger(__name__)


def worker_name(kind: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{kind}"


class LocalJobRunner:
    def __init__(self, store: JobStore, *, slots: int = 1, name: str | None = None, poll_s: float = 1.0,
                 stale_after_s: float = 30.0, attempt: AttemptSettings | None = None) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.store = store
        self.slots = slots
        self.name = name or worker_name("local")
        self.poll_s = poll_s
        self.stale_after_s = stale_after_s
        self.attempt = attempt or AttemptSettings()
        self._running: set[asyncio.Task[object]] = set()
        self._wake = asyncio.Event()
        self.finished = 0

    def wake(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    async def recover_stale(self) -> int:
        """Jobs whose runner stopped answering: back to the queue (or failed); returns how many."""
        n = 0
        for job in await self.store.stale_running(self.stale_after_s):
            state = await self.store.requeue_or_fail(
                job.id, job.attempt, f"worker {job.worker or '?'} stopped responding (no heartbeat for "
                                     f"{self.stale_after_s:.0f} s) during attempt {job.attempt}")
            if state is not None:
                n += 1
                log.warning("job_recovered_from_dead_worker", job_id=job.id, attempt=job.attempt, now=state)
        return n

    async def run(self) -> None:
        """Claim and run jobs until cancelled; running attempts are then stopped and their jobs queued again."""
        log.info("job_runner_started", worker=self.name, slots=self.slots)
        try:
            while True:
                try:
                    await self.recover_stale()
                    while len(self._running) < self.slots:
                        job = await self.store.claim_next(self.name)
                        if job is None:
                            break
                        log.info("job_started", job_id=job.id, attempt=job.attempt, worker=self.name,
                                 request=job.request.label())
                        task: asyncio.Task[object] = asyncio.create_task(run_attempt(self.store, job, self.attempt),
                                                                         name=f"job-{job.id}")
                        self._running.add(task)
                        task.add_done_callback(self._done)
                except StoreError as exc:
                    log.warning("job_runner_store_error", error=str(exc)[:200])
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
        finally:
            tasks = list(self._running)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._running.discard(task)
        self.finished += 1
        if not task.cancelled() and task.exception() is not None:
            log.error("job_attempt_failed", task=task.get_name(), error=repr(task.exception()))
        self._wake.set()  # a slot is free

    @property
    def busy(self) -> int:
        return len(self._running)
