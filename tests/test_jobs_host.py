"""The bot's side of the queue (JobsHost): with SQLite it runs queued jobs in its own process pool and gives a
running job back to the queue when the bot stops; with the Supabase REST store alone it says why there are no
jobs; a queue that cannot be opened leaves the bot running without jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.bot.jobs_host import JobsHost
from src.config import Config
from src.jobs.model import Requester
from src.storage.sqlite_store import SqliteStore
from tests.jobs_helpers import candles, request, wait_for


async def test_sqlite_host_runs_a_submitted_job_and_requeues_one_in_flight_on_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "bot.db"
    monkeypatch.setenv("SQLITE_PATH", str(db))  # the job process reads the store through the environment
    store = SqliteStore(db)
    await store.open()
    await store.upsert_candles(candles(days=30))
    await store.close()
    host = JobsHost(Config.from_env({"SQLITE_PATH": str(db), "JOBS_LOCAL_WORKERS": "1"}))
    queue = await host.open()
    assert queue is not None and host.unavailable == ""
    host.start()
    try:
        job = await queue.submit(request(days=20), Requester(user_id="1", channel_id=5))

        async def done() -> bool:
            rec = await queue.store.get(job.id)
            return rec is not None and rec.state == "done"

        await wait_for(done, 60, "the job to finish")
        second = await queue.submit(request(days=25), Requester(user_id="1", channel_id=5))

        async def running() -> bool:
            rec = await queue.store.get(second.id)
            return rec is not None and rec.state == "running"

        await wait_for(running, 30, "the second job to start", every=0.05)
        store_view = queue.store
        await host.stop()
        await store_view.open()
        back = await store_view.get(second.id)
        assert back is not None and back.state == "queued" and back.attempt == 1 and back.max_attempts == 3
        await store_view.close()
    finally:
        await host.stop()


async def test_supabase_rest_alone_leaves_jobs_off_with_the_reason() -> None:
    host = JobsHost(Config.from_env({"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_KEY": "k"}))
    assert await host.open() is None
    assert "set DATABASE_URL" in host.unavailable
    host.start()
    await host.stop()


async def test_an_unreachable_postgres_leaves_the_bot_running_without_jobs() -> None:
    host = JobsHost(Config.from_env({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}))
    assert await host.open() is None
    assert "could not be opened" in host.unavailable
    await host.stop()
