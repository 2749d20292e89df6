"""The job rows on SQLite and on the real Postgres: limits, queue order, attempts that end a job exactly once,
recovery of dead attempts, cancel, the once-only claim of a result post, result files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from src.jobs.model import JobFile, JobLimits, LimitReached, Requester
from src.jobs.postgres_jobs import PostgresJobStore
from src.jobs.sqlite_jobs import SqliteJobStore
from tests.jobs_helpers import request
from tests.test_storage_postgres import drop_schema, new_schema_name

ALICE = Requester(user_id="1", user_name="alice", channel_id=10)
BOB = Requester(user_id="2", user_name="bob", channel_id=10)
ADMIN = Requester(user_id="3", user_name="root", channel_id=10, admin=True)
LIMITS = JobLimits(max_active_per_user=2, max_active_total=3, max_period_days=60)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s: Any = SqliteJobStore(tmp_path / "jobs.db")
        await s.open()
        yield s
        await s.close()
        return
    url = request.getfixturevalue("postgres_url")
    schema = new_schema_name()
    sep = "&" if "?" in url else "?"
    s = PostgresJobStore(f"{url}{sep}search_path={schema}")
    import asyncpg

    conn = await asyncpg.connect(url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    await s.open()
    yield s
    await s.close()
    await drop_schema(url, schema)


async def test_submit_queues_in_order_and_reports_the_queue_position(store) -> None:
    a = await store.submit(request(), ALICE, LIMITS)
    b = await store.submit(request(), BOB, LIMITS)
    assert (a.state, b.state) == ("queued", "queued") and b.id > a.id
    assert await store.queue_position(a.id) == 1 and await store.queue_position(b.id) == 2
    claimed = await store.claim_next("w1")
    assert claimed is not None and claimed.id == a.id and claimed.state == "running" and claimed.attempt == 1
    assert await store.queue_position(a.id) is None and await store.queue_position(b.id) == 1
    assert await store.counts() == {"running": 1, "queued": 1}


async def test_per_user_and_global_limits_refuse_with_a_message_and_admins_are_exempt(store) -> None:
    await store.submit(request(), ALICE, LIMITS)
    await store.submit(request(), ALICE, LIMITS)
    with pytest.raises(LimitReached, match="you already have 2 jobs"):
        await store.submit(request(), ALICE, LIMITS)
    await store.submit(request(), BOB, LIMITS)
    with pytest.raises(LimitReached, match="queue is full"):
        await store.submit(request(), BOB, LIMITS)
    with pytest.raises(LimitReached, match="the limit is 60 days"):
        await store.submit(request(days=90), BOB, LIMITS)
    assert (await store.submit(request(days=900), ADMIN, LIMITS)).state == "queued"


async def test_concurrent_submissions_cannot_squeeze_past_a_limit(store) -> None:
    results = await asyncio.gather(*(store.submit(request(), ALICE, LIMITS) for _ in range(6)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 2
    assert all(isinstance(r, LimitReached) for r in results if isinstance(r, BaseException))


async def test_a_job_finishes_once_and_a_superseded_attempt_can_change_nothing(store) -> None:
    job = await store.submit(request(), ALICE, LIMITS)
    first = await store.claim_next("w1")
    assert await store.heartbeat(job.id, first.attempt, "backtesting")
    assert (await store.get(job.id)).progress == "backtesting"
    # the worker is given up on: the job is queued again and started by another worker (attempt 2)
    assert await store.requeue_or_fail(job.id, first.attempt, "worker lost") == "queued"
    second = await store.claim_next("w2")
    assert second.attempt == 2
    assert not await store.heartbeat(job.id, first.attempt)
    assert not await store.finish(job.id, first.attempt, "done", summary={"trades": 1})
    files = [JobFile("equity.png", b"\x89PNG..."), JobFile("report.json", b"{}")]
    assert await store.finish(job.id, second.attempt, "done", summary={"trades": 2}, files=files)
    assert not await store.finish(job.id, second.attempt, "failed", error="late")
    done = await store.get(job.id)
    assert done.state == "done" and done.summary == {"trades": 2} and done.files == ("equity.png", "report.json")
    assert await store.files(job.id) == sorted(files, key=lambda f: f.name)
    assert done.status_dict()["summary"] == {"trades": 2}


async def test_a_job_whose_attempts_are_used_up_fails_with_the_reason(store) -> None:
    job = await store.submit(request(), ALICE, LIMITS, max_attempts=2)
    a1 = await store.claim_next("w1")
    assert await store.requeue_or_fail(job.id, a1.attempt, "crash 1") == "queued"
    a2 = await store.claim_next("w1")
    assert await store.requeue_or_fail(job.id, a2.attempt, "crash 2") == "failed"
    failed = await store.get(job.id)
    assert failed.state == "failed" and failed.error == "crash 2" and failed.finished_ms is not None
    assert await store.requeue_or_fail(job.id, a2.attempt, "again") is None


async def test_a_stopped_worker_gives_the_job_back_without_using_an_attempt(store) -> None:
    job = await store.submit(request(), ALICE, LIMITS, max_attempts=1)
    a1 = await store.claim_next("w1")
    assert await store.requeue_or_fail(job.id, a1.attempt, "shutdown", free=True) == "queued"
    a2 = await store.claim_next("w1")
    assert a2.attempt == 2 and a2.max_attempts == 2
    assert await store.finish(job.id, a2.attempt, "done", summary={})


async def test_start_runs_queued_jobs_only_so_a_duplicate_delivery_cannot_take_over(store) -> None:
    job = await store.submit(request(), ALICE, LIMITS)
    started = await store.start(job.id, "pg-1")
    assert started.state == "running" and started.worker == "pg-1"
    assert await store.start(job.id, "pg-dup") is None  # running: a second delivery is a no-op
    assert await store.heartbeat(job.id, started.attempt)
    cancelled = await store.cancel(job.id)
    assert cancelled.state == "cancelled" and cancelled.cancel_requested
    assert await store.start(job.id, "pg-2") is None
    assert not await store.heartbeat(job.id, started.attempt)
    assert (await store.cancel(job.id)).state == "cancelled"
    assert await store.cancel(987654) is None


async def test_stale_running_lists_jobs_whose_heartbeat_stopped(store) -> None:
    job = await store.submit(request(), ALICE, LIMITS)
    await store.claim_next("w1")
    assert await store.stale_running(60) == []
    await asyncio.sleep(1.1)
    assert [j.id for j in await store.stale_running(1)] == [job.id]


async def test_a_finished_jobs_post_is_claimed_by_one_caller_until_it_goes_stale(store) -> None:
    job = await store.submit(request(), ALICE, LIMITS)
    shell = await store.submit(request(), Requester(), LIMITS)  # no channel: never posted
    for j in (job, shell):
        a = await store.start(j.id, "w")
        await store.finish(j.id, a.attempt, "failed", error="x")
    assert [j.id for j in await store.to_notify()] == [job.id]
    claims = await asyncio.gather(*(store.claim_notification(job.id) for _ in range(5)))
    assert sum(claims) == 1
    assert await store.to_notify() == []
    await store.release_notification(job.id)
    assert await store.claim_notification(job.id)
    await asyncio.sleep(0.05)
    assert await store.claim_notification(job.id, stale_ms=10)  # a claim older than stale_ms can be taken over
    await store.mark_notified(job.id)
    assert not await store.claim_notification(job.id, stale_ms=0)
    assert await store.to_notify(stale_ms=0) == []


async def test_list_and_messages(store) -> None:
    a = await store.submit(request(), ALICE, LIMITS)
    b = await store.submit(request(), BOB, LIMITS)
    await store.set_message(b.id, 555)
    assert [j.id for j in await store.list_jobs()] == [b.id, a.id]
    assert [j.id for j in await store.list_jobs(user_id="1")] == [a.id]
    assert [j.id for j in await store.active_with_messages()] == [b.id]
    assert (await store.get(b.id)).message_id == 555
