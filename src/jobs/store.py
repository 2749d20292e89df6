"""The job rows' port: what the bot, the workers and the shell need from ``backtest_jobs`` (migration 007).

Backends: :class:`src.jobs.sqlite_jobs.SqliteJobStore` and :class:`src.jobs.postgres_jobs.PostgresJobStore`.
Rules both keep:

- ``submit`` checks the limits and inserts in one transaction (serialised), so two requests at once
  cannot both squeeze under a limit;
- a run's writes (``heartbeat``, ``finish``, ``requeue_or_fail``) name its attempt and change the row only
  while that attempt is the current running one: a run given up on (worker lost, job cancelled) can never
  finish the job afterwards, and a job ends exactly once;
- ``claim_notification`` hands a finished job's Discord post to one caller at a time (a claim older than
  ``stale_ms`` may be taken again, so a bot that died while posting does not lose the post);
- errors are :class:`src.storage.base.StoreError` / ``StoreUnavailable`` as for the main store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from src.jobs.model import JobFile, JobLimits, JobRecord, JobRequest, JobState, Requester


class JobStore(Protocol):
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, request: JobRequest, requester: Requester, limits: JobLimits, *,
                     max_attempts: int = 2) -> JobRecord:
        """Queue a job (raises LimitReached / JobError with a message for the user)."""

    async def get(self, job_id: int) -> JobRecord | None: ...

    async def list_jobs(self, *, states: Sequence[JobState] | None = None, user_id: str | None = None,
                        limit: int = 20) -> list[JobRecord]:
        """Newest first."""

    async def queue_position(self, job_id: int) -> int | None:
        """1 for the next queued job to start; None when the job is not queued."""

    async def counts(self) -> dict[str, int]:
        """Jobs per state."""

    async def set_message(self, job_id: int, message_id: int) -> None:
        """Remember the Discord message that acknowledged the job (edited with progress)."""

    async def cancel(self, job_id: int) -> JobRecord | None:
        """Cancel a queued or running job; returns the row afterwards (unchanged when already final), None if unknown."""

    async def claim_next(self, worker: str) -> JobRecord | None:
        """Start the oldest queued job (a new attempt) for ``worker``; None when nothing is queued."""

    async def start(self, job_id: int, worker: str) -> JobRecord | None:
        """Start a new attempt of one job if it is queued (a retry after a lost worker is queued again first); else
        None, so a duplicate delivery of the job can never take over a running attempt."""

    async def heartbeat(self, job_id: int, attempt: int, progress: str | None = None) -> bool:
        """Record that the attempt is alive (and its progress); False when the attempt no longer owns the job."""

    async def finish(self, job_id: int, attempt: int, state: JobState, *, summary: dict[str, Any] | None = None,
                     error: str | None = None, files: Sequence[JobFile] = ()) -> bool:
        """End the job (done/failed) with its results; True only for the one call that ended it."""

    async def requeue_or_fail(self, job_id: int, attempt: int, reason: str, *, free: bool = False) -> JobState | None:
        """An attempt died: back to queued while attempts remain, else failed with ``reason``; None if not owned.
        ``free``: the attempt was stopped on purpose (worker shutdown) and does not count (always queued again)."""

    async def stale_running(self, older_than_s: float) -> list[JobRecord]:
        """Running jobs whose heartbeat is older than ``older_than_s`` seconds."""

    async def to_notify(self, *, stale_ms: int = 600_000, limit: int = 10) -> list[JobRecord]:
        """Finished Discord jobs whose result post is not done (nor claimed within ``stale_ms``)."""

    async def claim_notification(self, job_id: int, *, stale_ms: int = 600_000) -> bool: ...

    async def mark_notified(self, job_id: int) -> None: ...

    async def release_notification(self, job_id: int) -> None: ...

    async def active_with_messages(self, limit: int = 50) -> list[JobRecord]:
        """Queued or running jobs that have a Discord message to keep up to date."""

    async def files(self, job_id: int) -> list[JobFile]: ...
