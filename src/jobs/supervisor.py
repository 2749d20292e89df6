"""One attempt of one job: a child process (``python -m backtest.jobs.child``) watched from the event loop.

The backtest never runs in the caller's event loop: the child does the work, the supervisor only awaits
its output. Rules:

- every ``heartbeat_s`` (2 s) the attempt's heartbeat (and the child's latest progress line) is written;
  when that write says the attempt no longer owns the job (cancelled, or given up on and retried
  elsewhere) the child is killed at once and nothing more is written;
- child exits 0 with ``result.json``: ``done`` with the summary and result files (each at most 8 MB), or
  ``failed`` with the child's message for a problem the requester must fix (not retried);
- child crashes (non-zero exit, no result): ``requeue_or_fail`` (retried while attempts remain);
- cancelled from outside (worker shutdown): the child is killed and the job goes back to the queue
  without using up an attempt (:meth:`release`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from src.jobs.model import MAX_FILE_BYTES, JobFile, JobRecord, JobState
from src.jobs.store import JobStore
from src.storage.base import StoreError

log = structlog.get_logger(__name__)

CHILD_MODULE = "backtest.jobs.child"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class AttemptSettings:
    heartbeat_s: float = 2.0
    python: str = sys.executable
    work_root: Path | None = None  # None: the system temp directory
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the child


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    # the child imports backtest/ and src/ from this checkout whatever the working directory is
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    return env


async def run_attempt(store: JobStore, job: JobRecord, settings: AttemptSettings) -> JobState | None:
    """Run the attempt ``job.attempt`` of ``job`` to its end; returns the state it left the job in (None when the
    attempt lost the job: cancelled or taken over)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"wyeli-job-{job.id}-", dir=settings.work_root))
    proc: asyncio.subprocess.Process | None = None
    try:
        (workdir / "request.json").write_text(json.dumps({"job_id": job.id, "request": json.loads(job.request.to_json())}),
                                              encoding="utf-8")
        with (workdir / "stderr.log").open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                settings.python, "-m", CHILD_MODULE, str(workdir), stdout=asyncio.subprocess.PIPE, stderr=err,
                env={**child_env(settings.env), "WYELI_JOB_PARENT_PID": str(os.getpid())}, start_new_session=True)
        owned = await _watch(store, job, proc, settings.heartbeat_s)
        if not owned:
            log.info("job_attempt_abandoned", job_id=job.id, attempt=job.attempt)
            return None
        return await _conclude(store, job, proc.returncode, workdir)
    except asyncio.CancelledError:
        if proc is not None and proc.returncode is None:
            _kill(proc)
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                await asyncio.shield(proc.wait())
        with contextlib.suppress(StoreError):
            await asyncio.shield(release(store, job))
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def release(store: JobStore, job: JobRecord) -> None:
    """Put a job back to the queue after its worker was stopped on purpose (the attempt does not count)."""
    await store.requeue_or_fail(job.id, job.attempt, "worker stopped (shutdown); queued again", free=True)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def _watch(store: JobStore, job: JobRecord, proc: asyncio.subprocess.Process, heartbeat_s: float) -> bool:
    """Relay progress and heartbeats until the child exits; False (child killed) when the attempt lost the job."""
    assert proc.stdout is not None
    latest: str | None = None
    sent: str | None = None
    reader = asyncio.ensure_future(proc.stdout.readline())
    loop = asyncio.get_running_loop()
    next_beat = loop.time()
    try:
        while True:
            timeout = max(0.0, next_beat - loop.time())
            done, _ = await asyncio.wait({reader}, timeout=timeout)
            if reader in done:
                line = reader.result()
                if not line:  # EOF: the child has exited (or closed stdout)
                    await proc.wait()
                    return True
                with contextlib.suppress(ValueError, AttributeError):
                    latest = str(json.loads(line)["progress"])
                reader = asyncio.ensure_future(proc.stdout.readline())
                if latest == sent:
                    continue
            if loop.time() >= next_beat or latest != sent:
                try:
                    owned = await store.heartbeat(job.id, job.attempt, latest if latest != sent else None)
                except StoreError as exc:  # the database is briefly away: keep the child running, try again
                    log.warning("job_heartbeat_failed", job_id=job.id, error=str(exc)[:200])
                    owned = True
                else:
                    sent = latest
                if not owned:
                    _kill(proc)
                    await proc.wait()
                    return False
                next_beat = loop.time() + heartbeat_s
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


def _read_files(out_dir: Path, names: list[str]) -> list[JobFile]:
    files = []
    for name in names:
        path = out_dir / Path(name).name
        if path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
            files.append(JobFile(path.name, path.read_bytes()))
    return files


async def _conclude(store: JobStore, job: JobRecord, code: int | None, workdir: Path) -> JobState | None:
    result_path = workdir / "result.json"
    result: dict[str, Any] | None = None
    if code == 0 and result_path.is_file():
        with contextlib.suppress(ValueError, OSError):
            result = json.loads(result_path.read_text(encoding="utf-8"))
    if result is None:
        tail = (workdir / "stderr.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        reason = f"the job process crashed (exit {code})" + (f": {tail[0][:300]}" if tail else "")
        log.warning("job_attempt_crashed", job_id=job.id, attempt=job.attempt, reason=reason)
        return await store.requeue_or_fail(job.id, job.attempt, reason)
    if "error" in result:
        ok = await store.finish(job.id, job.attempt, "failed", error=str(result["error"]))
        return "failed" if ok else None
    files = _read_files(workdir / "out", list(result.get("files") or []))
    ok = await store.finish(job.id, job.attempt, "done", summary=result.get("summary"), files=files)
    log.info("job_done" if ok else "job_result_discarded", job_id=job.id, attempt=job.attempt)
    return "done" if ok else None
