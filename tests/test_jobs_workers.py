"""Workers end to end: two workers, ten jobs, one worker killed mid-job. Every job ends exactly once (a trigger
logs each move into a final state), the killed worker's job is retried by the other, every result is posted
exactly once although two posters (two bot processes) race for it. On SQLite one worker runs inside the
test's event loop, whose lag is measured while the jobs run (under 100 ms: the backtests run in child
processes). On Postgres both workers are ``python -m backtest worker`` processes (procrastinate)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from backtest import run_cmd
from src.bot.discord.job_posts import JobPoster
from src.jobs.local_runner import LocalJobRunner
from src.jobs.model import JobLimits, Requester
from src.jobs.postgres_jobs import PostgresJobStore
from src.jobs.sqlite_jobs import SqliteJobStore
from src.jobs.supervisor import AttemptSettings
from src.storage.postgres_store import PostgresStore
from src.storage.sqlite_store import SqliteStore
from tests.jobs_helpers import (
    SYMBOL,
    candles,
    finish_log_pg,
    finish_log_sqlite,
    install_finish_log_pg,
    install_finish_log_sqlite,
    request,
    wait_for,
)
from tests.test_storage_postgres import drop_schema, new_schema_name

N_JOBS = 10
LIMITS = JobLimits(100, 100, 400)
REPO = Path(__file__).resolve().parent.parent


class Channel:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def send(self, content: str, **kwargs: Any) -> None:
        self.log.append(content)


class Client:
    def __init__(self, log: list[str]) -> None:
        self.channel = Channel(log)

    def is_ready(self) -> bool:
        return True

    def get_channel(self, channel_id: int) -> Channel:
        return self.channel


class LagProbe:
    """The largest delay of a 20 ms sleep on this event loop (how long something blocked it)."""

    def __init__(self) -> None:
        self.max_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.02)
            self.max_lag = max(self.max_lag, loop.time() - t - 0.02)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"JOBS_CACHE_DIR": str(tmp_path / "cache"), "BINANCE_REST_URL": "http://127.0.0.1:9",
            "HTTP_PORT": "0", "LOG_LEVEL": "INFO", "PYTHONPATH": str(REPO)}


async def start_worker(env: dict[str, str], *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backtest", "worker", "--concurrency", "1", *extra, cwd=str(REPO),
        env={**os.environ, **env}, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def submit_all(store: Any) -> list[int]:
    ids = []
    for i in range(N_JOBS):
        req = request(days=20 + i)  # different spans: different results
        ids.append((await store.submit(req, Requester(user_id=str(100 + i), channel_id=77), LIMITS)).id)
    return ids


async def kill_when_running(store: Any, proc: asyncio.subprocess.Process) -> int:
    """SIGKILL ``proc`` as soon as it runs a job; returns that job's id."""
    async def running() -> int | None:
        for j in await store.list_jobs(states=["running"], limit=50):
            if j.worker and f":{proc.pid}:" in j.worker:
                return int(j.id)
        return None

    job_id = int(await wait_for(running, 60, "the worker to start a job", every=0.05))
    await asyncio.sleep(0.5)  # mid-job: the child is loading or backtesting
    proc.kill()
    await proc.wait()
    workdirs = attempt_dirs(job_id)  # the dead worker's attempt

    async def no_orphan() -> bool:  # the job process ends by itself and removes its work directory
        return not children_of(proc.pid) and not set(workdirs) & set(attempt_dirs(job_id))

    await wait_for(no_orphan, 10, f"the job process of the killed worker {proc.pid} to exit and clean up")
    return job_id


def attempt_dirs(job_id: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"wyeli-job-{job_id}-*"))


def children_of(worker_pid: int) -> list[int]:
    """Job processes started by ``worker_pid`` (their environment names it), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"backtest.jobs.child" in cmd and f"WYELI_JOB_PARENT_PID={worker_pid}".encode() in env.split(b"\0"):
            found.append(int(entry.name))
    return found


async def post_everything(store: Any, limit_s: float) -> list[str]:
    log: list[str] = []
    posters = [JobPoster(store, lambda: Client(log)) for _ in range(2)]  # type: ignore[arg-type, return-value]

    async def all_posted() -> bool:
        await asyncio.gather(*(p.tick() for p in posters))
        return len(log) >= N_JOBS and not await store.to_notify(stale_ms=0)

    await wait_for(all_posted, limit_s, "every result to be posted")
    for p in posters:
        await p.tick()  # nothing more to post
    return log


def check_outcome(log: list[tuple[int, str]], ids: list[int], killed: int, attempts: dict[int, int],
                  posts: list[str]) -> None:
    assert sorted(job_id for job_id, _ in log) == sorted(ids), log  # each job ended exactly once
    assert {state for _, state in log} == {"done"}
    assert attempts[killed] == 2 and all(a == 1 for j, a in attempts.items() if j != killed)
    assert sorted(posts) == sorted(f"<@{100 + i}> backtest #{job_id} is done." for i, job_id in enumerate(ids))


async def test_sqlite_two_workers_ten_jobs_one_killed_every_job_ends_once_and_the_loop_never_blocks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "w.db"
    main = SqliteStore(db)
    await main.open()
    await main.upsert_candles(candles(days=40))
    await main.close()
    env = {**base_env(tmp_path), "SQLITE_PATH": str(db)}
    store = SqliteJobStore(db)
    await store.open()
    install_finish_log_sqlite(db)
    ids = await submit_all(store)
    worker = await start_worker(env, "--heartbeat", "1", "--stalled-after", "4")
    runner = LocalJobRunner(store, slots=1, poll_s=0.3, stale_after_s=4,
                            attempt=AttemptSettings(heartbeat_s=1.0, env=env))
    probe = LagProbe()
    probe.start()
    task = asyncio.create_task(runner.run())
    try:
        killed = await kill_when_running(store, worker)

        async def all_final() -> bool:
            return all(j.final for j in await store.list_jobs(limit=50)) and len(await store.list_jobs(limit=50)) == N_JOBS

        await wait_for(all_final, 150, "all jobs to end")
        posts = await post_everything(store, 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await probe.stop()
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    attempts = {i: (await store.get(i)).attempt for i in ids}  # type: ignore[union-attr]
    check_outcome(finish_log_sqlite(db), ids, killed, attempts, posts)
    assert probe.max_lag < 0.1, f"event loop blocked for {probe.max_lag * 1000:.0f} ms"
    recovered = await store.get(killed)
    assert recovered is not None and "stopped responding" in (recovered.error or "")

    # the stored summary is `backtest run --source db` over the same span
    job = await store.get(ids[0])
    assert job is not None and job.summary is not None
    await store.close()
    monkeypatch.setenv("SQLITE_PATH", str(db))
    out = tmp_path / "direct"
    assert await asyncio.to_thread(run_cmd.main, ["--source", "db", "--symbol", SYMBOL, "--timeframe", "1h", "--from",
                         "2023-11-15T00:00:00.000Z", "--to", "2023-12-05T00:00:00.000Z", "--out-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("trades", "wins", "losses", "win_rate", "expectancy_r", "max_drawdown", "candles", "start", "end"):
        assert job.summary[key] == report[key], key
    assert job.summary["baseline"] == report["baseline"]
    assert job.summary["data"] == [{"symbol": SYMBOL, "source": "store", "candles": report["candles"]}]


@pytest.fixture
async def pg_env(postgres_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    schema = new_schema_name()
    conn = await asyncpg.connect(postgres_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}search_path={schema}", schema
    await drop_schema(postgres_url, schema)


@pytest.mark.postgres
async def test_postgres_two_procrastinate_workers_ten_jobs_one_killed_every_job_ends_once(
        pg_env: tuple[str, str], postgres_url: str, tmp_path: Path) -> None:
    dsn, schema = pg_env
    main = PostgresStore(postgres_url, schema=schema)
    await main.open()
    await main.upsert_candles(candles(days=40))
    await main.close()
    from src.jobs.pg_queue import PgQueue

    store = PostgresJobStore(dsn)
    queue = PgQueue(dsn, store)
    await store.open()
    await queue.open()
    await install_finish_log_pg(postgres_url, schema)
    env = {**base_env(tmp_path), "DATABASE_URL": dsn}
    flags = ("--heartbeat", "0.5", "--stalled-after", "3", "--recover-every", "1")
    workers = [await start_worker(env, *flags) for _ in range(2)]
    try:
        ids = []
        for job_id in await submit_all(store):
            await queue.defer(job_id)
            ids.append(job_id)
        killed = await kill_when_running(store, workers[0])

        async def all_final() -> bool:
            return all(j.final for j in await store.list_jobs(limit=50)) and len(await store.list_jobs(limit=50)) == N_JOBS

        await wait_for(all_final, 150, "all jobs to end")
        posts = await post_everything(store, 30)
        attempts = {i: (await store.get(i)).attempt for i in ids}  # type: ignore[union-attr]
        check_outcome(await finish_log_pg(postgres_url, schema), ids, killed, attempts, posts)
        recovered = await store.get(killed)
        assert recovered is not None and "stopped responding" in (recovered.error or "")
        # procrastinate agrees: every job it delivered ended, none is left doing or todo
        conn = await asyncpg.connect(postgres_url, server_settings={"search_path": schema})
        try:
            states = {r[0]: r[1] for r in await conn.fetch(
                "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status")}
        finally:
            await conn.close()
        assert set(states) == {"succeeded"} and states["succeeded"] == N_JOBS
    finally:
        for w in workers:
            if w.returncode is None:
                w.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w.wait(), 10)
                if w.returncode is None:
                    w.kill()
                    await w.wait()
        await queue.close()
        await store.close()

