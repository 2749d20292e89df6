"""Backtest jobs per minute through the job queue: a 1-year 1h backtest per job, with 1 and 2 workers.

    .venv/bin/python benchmarks/jobs_throughput.py [DATA_DIR] [--jobs 8] [--postgres DSN]

Reads BTCUSDT-1h-*.csv and ETHUSDT-1h-*.csv from DATA_DIR/klines (DATA_DIR: the argument, else
$WYELI_DATA_DIR, else ../shared/data), stores 2024-01-01 .. 2025-01-01 (+10 days of lead-in) in a
temporary SQLite store, then queues ``--jobs`` backtest jobs (BTC and ETH alternately, each the full year
2024, all patterns, default settings) and times them from the first claim to the last result:

- SQLite engine: a LocalJobRunner with 1 and 2 slots in this process (each job a child process);
- with ``--postgres DSN`` also the Postgres engine: 1 and 2 ``python -m backtest worker`` processes
  (procrastinate) on a throw-away schema of that database, candles in the same schema.

Prints jobs/minute and seconds per job for each case. The data is only read, nothing is tuned on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from src.analysis.types import Candle, iso_to_ms  # noqa: E402
from src.jobs.local_runner import LocalJobRunner  # noqa: E402
from src.jobs.model import JobLimits, JobRequest, Requester  # noqa: E402
from src.jobs.sqlite_jobs import SqliteJobStore  # noqa: E402
from src.jobs.supervisor import AttemptSettings  # noqa: E402
from src.market.klines_csv import read_klines_csv  # noqa: E402
from src.storage.sqlite_store import SqliteStore  # noqa: E402

FROM = iso_to_ms("2024-01-01")
TO = iso_to_ms("2025-01-01")
LEAD = 10 * 86_400_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
LIMITS = JobLimits(1000, 1000, 4000)


def load(data_dir: Path) -> list[Candle] | None:
    out: list[Candle] = []
    for sym in SYMBOLS:
        files = sorted((data_dir / "klines").glob(f"{sym}-1h-*.csv"))
        if not files:
            return None
        out += [c for c in read_klines_csv(files[0], sym, "1h").candles if FROM - LEAD <= c.open_time_ms < TO]
    return out


def requests(n: int) -> list[JobRequest]:
    return [JobRequest("backtest", (SYMBOLS[i % 2],), "1h", FROM, TO) for i in range(n)]


async def sqlite_case(db: Path, workers: int, n: int) -> float:
    store = SqliteJobStore(db)
    await store.open()
    ids = [(await store.submit(r, Requester(admin=True), LIMITS)).id for r in requests(n)]
    runner = LocalJobRunner(store, slots=workers, poll_s=0.1, attempt=AttemptSettings(env={"SQLITE_PATH": str(db)}))
    t0 = time.perf_counter()
    task = asyncio.create_task(runner.run())
    while True:
        jobs = [await store.get(i) for i in ids]
        if all(j is not None and j.final for j in jobs):
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    bad = [j.id for j in jobs if j is not None and j.state != "done"]
    await store.close()
    if bad:
        raise SystemExit(f"jobs {bad} did not finish: see `python -m backtest jobs status`")
    return elapsed


async def postgres_case(dsn: str, candles: list[Candle], workers: int, n: int) -> float:
    import asyncpg

    from src.jobs.pg_queue import PgQueue
    from src.jobs.postgres_jobs import PostgresJobStore
    from src.storage.postgres_store import PostgresStore

    schema = f"bench_jobs_{secrets.token_hex(4)}"
    main = PostgresStore(dsn, schema=schema)
    await main.open()
    await main.upsert_candles(candles)
    await main.close()
    sep = "&" if "?" in dsn else "?"
    url = f"{dsn}{sep}search_path={schema}"
    store = PostgresJobStore(url)
    queue = PgQueue(url, store)
    await store.open()
    await queue.open()
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(REPO)}
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "backtest", "worker", "--concurrency", "1",
                                                  env=env, stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.DEVNULL) for _ in range(workers)]
    await asyncio.sleep(3)  # workers connected and listening
    try:
        ids = []
        t0 = time.perf_counter()
        for r in requests(n):
            rec = await store.submit(r, Requester(admin=True), LIMITS)
            await queue.defer(rec.id)
            ids.append(rec.id)
        while True:
            jobs = [await store.get(i) for i in ids]
            if all(j is not None and j.final for j in jobs):
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
            await p.wait()
        await queue.close()
        await store.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    return elapsed


def report(engine: str, workers: int, n: int, elapsed: float) -> None:
    print(f"{engine:<22} workers={workers}  {n} jobs in {elapsed:6.1f} s  ->  {n / elapsed * 60:5.1f} jobs/min "
          f"({elapsed / n:4.2f} s per job)")


async def amain(args: argparse.Namespace, candles: list[Candle]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.db"
        s = SqliteStore(base)
        await s.open()
        await s.upsert_candles(candles)
        await s.close()
        for workers in (1, 2):
            db = Path(tmp) / f"w{workers}.db"
            db.write_bytes(base.read_bytes())
            report("sqlite (local pool)", workers, args.jobs, await sqlite_case(db, workers, args.jobs))
    if args.postgres:
        for workers in (1, 2):
            report("postgres (procrastinate)", workers, args.jobs,
                   await postgres_case(args.postgres, candles, workers, args.jobs))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("data_dir", nargs="?", type=Path)
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--postgres", metavar="DSN", help="also measure the Postgres engine on this database")
    args = p.parse_args()
    data_dir = args.data_dir or Path(os.environ.get("WYELI_DATA_DIR") or REPO.parent / "shared" / "data")
    candles = load(data_dir)
    if candles is None:
        print(f"no BTCUSDT/ETHUSDT 1h kline files in {data_dir / 'klines'}: nothing to measure")
        return 0
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
          f"{args.jobs} jobs, each a 1-year 1h backtest (2024, {len(candles) // 2} candles incl. lead-in, all patterns)")
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings and up only
    asyncio.run(amain(args, candles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
