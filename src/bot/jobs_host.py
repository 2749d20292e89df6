"""The bot's side of the backtest job queue (src/jobs): the queue the commands submit to, and the job
processes the bot runs itself (JOBS_LOCAL_WORKERS, default 1; 0 = leave the work to other workers).

- SQLite (zero config): a :class:`~src.jobs.local_runner.LocalJobRunner` in this event loop; each job runs
  in a child process, so the loop never blocks. On shutdown the jobs in flight go back to the queue.
- Postgres: one ``python -m backtest worker --concurrency N`` child process (restarted with a 5 s doubling
  to 300 s backoff if it exits); more workers can run anywhere with the same DATABASE_URL. On shutdown it
  gets SIGTERM (procrastinate finishes or, past 3 s, the process is killed and its jobs are recovered by
  the stalled-job check of the next worker).
- Supabase REST only: no queue; the commands say why (see :func:`src.jobs.queue.jobs_unsupported_reason`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import structlog

from src.config import Config
from src.jobs.local_runner import LocalJobRunner
from src.jobs.queue import JobQueue, LocalEngine, build_job_queue, jobs_unsupported_reason
from src.jobs.supervisor import child_env

log = structlog.get_logger(__name__)


class JobsHost:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.queue: JobQueue | None = None
        self.unavailable = jobs_unsupported_reason(config) or ""
        self.runner: LocalJobRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._worker: asyncio.subprocess.Process | None = None

    async def open(self) -> JobQueue | None:
        """Open the queue; on failure the bot runs on without jobs (the commands say so)."""
        if self.unavailable:
            log.warning("backtest_jobs_unavailable", reason=self.unavailable)
            return None
        queue = build_job_queue(self.config)
        try:
            await queue.open()
        except Exception as exc:
            self.unavailable = f"the job queue could not be opened ({type(exc).__name__})"
            log.error("backtest_jobs_unavailable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            with contextlib.suppress(Exception):
                await queue.close()
            return None
        self.queue = queue
        log.info("backtest_jobs_ready", engine=queue.engine_name, local_workers=self.config.jobs_local_workers)
        return queue

    def start(self) -> None:
        """Start the bot's own job processes (JOBS_LOCAL_WORKERS)."""
        queue = self.queue
        n = self.config.jobs_local_workers
        if queue is None or n < 1:
            return
        if isinstance(queue.engine, LocalEngine):
            self.runner = LocalJobRunner(queue.store, slots=n)
            queue.engine.wake_callbacks.append(self.runner.wake)
            self._tasks.append(asyncio.create_task(self.runner.run(), name="job-runner"))
        else:
            self._tasks.append(asyncio.create_task(self._keep_worker(n), name="job-worker-process"))

    async def _keep_worker(self, n: int) -> None:
        delay = 5.0
        while True:
            self._worker = await asyncio.create_subprocess_exec(sys.executable, "-m", "backtest", "worker",
                                                                "--concurrency", str(n), env=child_env({}))
            log.info("job_worker_process_started", pid=self._worker.pid, concurrency=n)
            code = await self._worker.wait()
            log.warning("job_worker_process_exited", code=code, restart_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(300.0, delay * 2)

    async def stop(self) -> None:
        """Stop the job processes (jobs in flight go back to the queue) and close the queue. Idempotent."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        proc, self._worker = self._worker, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self.queue is not None:
            queue, self.queue = self.queue, None
            await queue.close()
