"""One attempt in a child process: progress relayed, crashes retried then failed, user errors failed at once,
a cancelled job's child killed within a heartbeat, a stopped worker's job queued again without using an
attempt. The child here is a stand-in script (the real one is exercised in test_jobs_workers)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from src.jobs.model import JobLimits, JobRecord, Requester
from src.jobs.sqlite_jobs import SqliteJobStore
from src.jobs.supervisor import AttemptSettings, run_attempt
from tests.jobs_helpers import finish_log_sqlite, install_finish_log_sqlite, request

FAKE_CHILD = r'''
import json, os, sys, time
assert sys.argv[1:3] == ["-m", "backtest.jobs.child"], sys.argv
workdir = sys.argv[3]
mode = os.environ["FAKE_MODE"]
print(json.dumps({"progress": "loading"}), flush=True)
if mode == "crash":
    print("Traceback: boom", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    print(json.dumps({"progress": "backtesting"}), flush=True)
    time.sleep(60)
if mode == "user_error":
    open(os.path.join(workdir, "result.json"), "w").write(json.dumps({"error": "no SYNUSDT 1h candles in that period"}))
if mode == "ok":
    os.makedirs(os.path.join(workdir, "out"))
    open(os.path.join(workdir, "out", "report.json"), "w").write("{}")
    open(os.path.join(workdir, "out", "huge.bin"), "wb").write(b"x" * (8 * 1024 * 1024 + 1))
    open(os.path.join(workdir, "result.json"), "w").write(json.dumps(
        {"summary": {"trades": 3}, "files": ["report.json", "huge.bin", "../../etc/passwd"]}))
'''


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteJobStore]:
    s = SqliteJobStore(tmp_path / "jobs.db")
    await s.open()
    install_finish_log_sqlite(tmp_path / "jobs.db")
    yield s
    await s.close()


def settings(tmp_path: Path, mode: str) -> AttemptSettings:
    script = tmp_path / "fake_python.py"
    script.write_text(FAKE_CHILD)
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    wrapper.chmod(0o755)
    return AttemptSettings(heartbeat_s=0.2, python=str(wrapper), env={"FAKE_MODE": mode})


async def started(store: SqliteJobStore, max_attempts: int = 2) -> JobRecord:
    job = await store.submit(request(), Requester(), JobLimits(), max_attempts=max_attempts)
    claimed = await store.claim_next("test")
    assert claimed is not None and claimed.id == job.id
    return claimed


async def test_a_crashing_child_is_retried_then_failed_with_its_last_error_line(store, tmp_path: Path) -> None:
    job = await started(store)
    assert await run_attempt(store, job, settings(tmp_path, "crash")) == "queued"
    again = await store.claim_next("test")
    assert await run_attempt(store, again, settings(tmp_path, "crash")) == "failed"
    failed = await store.get(job.id)
    assert failed.state == "failed" and "crashed (exit 1): Traceback: boom" in failed.error
    assert finish_log_sqlite(tmp_path / "jobs.db") == [(job.id, "failed")]


async def test_a_user_error_fails_the_job_at_once(store, tmp_path: Path) -> None:
    job = await started(store)
    assert await run_attempt(store, job, settings(tmp_path, "user_error")) == "failed"
    failed = await store.get(job.id)
    assert failed.attempt == 1 and failed.error == "no SYNUSDT 1h candles in that period"


async def test_results_keep_only_named_files_of_at_most_8_mb_from_the_output_directory(store, tmp_path: Path) -> None:
    job = await started(store)
    assert await run_attempt(store, job, settings(tmp_path, "ok")) == "done"
    done = await store.get(job.id)
    assert done.summary == {"trades": 3} and done.files == ("report.json",)


async def test_a_cancelled_jobs_child_is_killed_within_a_heartbeat(store, tmp_path: Path) -> None:
    job = await started(store)
    attempt = asyncio.create_task(run_attempt(store, job, settings(tmp_path, "hang")))

    async def progressed() -> bool:
        rec = await store.get(job.id)
        return rec is not None and rec.progress == "backtesting"

    from tests.jobs_helpers import wait_for

    await wait_for(progressed, 10, "progress from the child")
    t0 = time.monotonic()
    await store.cancel(job.id)
    assert await asyncio.wait_for(attempt, 5) is None
    assert time.monotonic() - t0 < 2
    assert (await store.get(job.id)).state == "cancelled"
    assert finish_log_sqlite(tmp_path / "jobs.db") == [(job.id, "cancelled")]


async def test_a_stopped_worker_queues_its_job_again_without_using_an_attempt(store, tmp_path: Path) -> None:
    job = await started(store, max_attempts=1)
    attempt = asyncio.create_task(run_attempt(store, job, settings(tmp_path, "hang")))
    await asyncio.sleep(1.0)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    back = await store.get(job.id)
    assert back.state == "queued" and back.max_attempts == 2 and "shutdown" in back.progress
    assert finish_log_sqlite(tmp_path / "jobs.db") == []
