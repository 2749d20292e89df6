"""Storage write speed: candle upserts/s for SQLite and Postgres, and a full warm-up into Postgres.

    .venv/bin/python benchmarks/storage.py [--rows 200000] [--repeats 3] [--dsn postgresql://...]

Candles are synthetic (a seeded random walk, seed 42), so no data files are needed. Postgres is the
server at --dsn, else $WYELI_BENCH_DATABASE_URL, else $TEST_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/test; each run uses a throw-away schema that is dropped again.
When Postgres is unreachable its part is skipped with a message.

Measured (one warm-up, then the median of --repeats runs, fresh tables each run):
- insert: --rows new candles through ``upsert_candles`` in batches of 5,000 (the backfill path);
- rewrite: the same rows again, unchanged (a restart's warm-up: Postgres skips identical rows);
- update: the same keys with new prices (the changed-row path);
- warm-up: 500 symbols x 4 timeframes x 500 candles (1,000,000 rows) into Postgres, one
  ``upsert_candles`` call per stream as the bot's warm-up does, 5 streams at a time (pool max 5).
A fingerprint (row count and sum of closes read back) checks each result. Targets: SQLite >= 50k/s,
Postgres >= 20k/s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from src.analysis.timeframes import interval_ms  # noqa: E402
from src.analysis.types import Candle  # noqa: E402
from src.storage.base import Store  # noqa: E402
from src.storage.postgres_store import PostgresStore  # noqa: E402
from src.storage.sqlite_store import SqliteStore  # noqa: E402

BATCH = 5000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % 86_400_000)


def make_candles(symbol: str, timeframe: str, n: int, rng: random.Random, start: int = T0) -> list[Candle]:
    step = interval_ms(timeframe)
    price = 100.0 * math.exp(rng.uniform(-2, 2))
    out = []
    for i in range(n):
        o = price
        c = o * math.exp(rng.gauss(0, 0.002))
        hi, lo = max(o, c) * (1 + abs(rng.gauss(0, 0.001))), min(o, c) * (1 - abs(rng.gauss(0, 0.001)))
        vol = rng.uniform(1, 1000)
        t = start + i * step
        out.append(Candle(symbol, timeframe, t, t + step - 1, o, hi, lo, c, vol, vol * c, rng.randint(1, 5000),
                          vol / 2, vol * c / 2))
        price = c
    return out


def fingerprint(candles: list[Candle]) -> tuple[int, float]:
    return len(candles), round(math.fsum(c.close for c in candles), 6)


async def write_all(store: Store, candles: list[Candle]) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(candles), BATCH):
        await store.upsert_candles(candles[i:i + BATCH])
    return time.perf_counter() - t0


async def read_fingerprint(store: Store, symbol: str, timeframe: str) -> tuple[int, float]:
    return fingerprint(await store.load_candles(symbol, timeframe))


async def measure(name: str, make_store: Callable[[], Awaitable[tuple[Store, Callable[[], Awaitable[None]]]]],
                  candles: list[Candle], repeats: int) -> None:
    updated = [replace(c, close=c.close * 1.0001, high=c.high * 1.0001) for c in candles]
    results: dict[str, list[float]] = {"insert": [], "rewrite": [], "update": []}
    for run in range(repeats + 1):  # run 0 is the warm-up
        store, cleanup = await make_store()
        try:
            times = {"insert": await write_all(store, candles), "rewrite": await write_all(store, candles),
                     "update": await write_all(store, updated)}
            got = await read_fingerprint(store, candles[0].symbol, candles[0].timeframe)
            if got != fingerprint(updated):
                raise SystemExit(f"{name}: fingerprint mismatch {got} != {fingerprint(updated)}")
        finally:
            await cleanup()
        if run:
            for k, took in times.items():
                results[k].append(took)
    n = len(candles)
    for k, runs in results.items():
        med = statistics.median(runs)
        print(f"  {name:9s} {k:8s} {n:>9,d} rows  median {med:7.3f} s  {n / med:>10,.0f} rows/s")


def _remove(directory: Path, name: str) -> None:
    for p in directory.glob(name + "*"):  # the database and its -wal/-shm files
        p.unlink()


async def sqlite_part(rows: int, repeats: int) -> None:
    candles = make_candles("BTCUSDT", "1m", rows, random.Random(42))
    tmp = Path(tempfile.mkdtemp(prefix="wyeli-bench-"))

    async def make() -> tuple[Store, Callable[[], Awaitable[None]]]:
        path = tmp / f"{secrets.token_hex(4)}.db"
        store = SqliteStore(path)
        await store.open()

        async def cleanup() -> None:
            await store.close()
            await asyncio.to_thread(_remove, tmp, path.name)

        return store, cleanup

    await measure("sqlite", make, candles, repeats)
    await asyncio.to_thread(shutil.rmtree, tmp)


async def postgres_part(dsn: str, rows: int, repeats: int) -> None:
    candles = make_candles("BTCUSDT", "1m", rows, random.Random(42))

    async def make() -> tuple[Store, Callable[[], Awaitable[None]]]:
        schema = f"wyeli_bench_{secrets.token_hex(4)}"
        store = PostgresStore(dsn, schema=schema)
        await store.open()

        async def cleanup() -> None:
            await store.close()
            conn = await asyncpg.connect(dsn)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()

        return store, cleanup

    await measure("postgres", make, candles, repeats)

    # warm-up of 500 symbols x 4 timeframes x 500 candles, one call per stream, 5 concurrent
    rng = random.Random(7)
    streams = [make_candles(f"SYM{i:03d}USDT", tf, 500, rng) for i in range(500) for tf in ("15m", "1h", "4h", "1d")]
    total = sum(len(s) for s in streams)
    schema = f"wyeli_bench_{secrets.token_hex(4)}"
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    try:
        queue: asyncio.Queue[list[Candle]] = asyncio.Queue()
        for s in streams:
            queue.put_nowait(s)

        async def worker() -> None:
            while not queue.empty():
                await store.upsert_candles(queue.get_nowait())

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(5)))
        took = time.perf_counter() - t0
        sample = streams[1234]
        assert await read_fingerprint(store, sample[0].symbol, sample[0].timeframe) == fingerprint(sample)
        conn = await asyncpg.connect(dsn)
        count = await conn.fetchval(f'SELECT count(*) FROM "{schema}".candles')
        await conn.close()
        if count != total:
            raise SystemExit(f"warm-up stored {count} rows, expected {total}")
    finally:
        await store.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
    print(f"  postgres  warm-up  {total:>9,d} rows  ({len(streams)} streams x 500)  {took:7.2f} s  "
          f"{total / took:>10,.0f} rows/s")


async def postgres_reachable(dsn: str) -> str | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"Postgres at {dsn.split('@')[-1]} not reachable ({type(exc).__name__}); skipping its part")
        return None
    version = str(await conn.fetchval("SHOW server_version"))
    await conn.close()
    return version


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dsn", default=os.environ.get("WYELI_BENCH_DATABASE_URL")
                   or os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()} ({platform.platform()}), "
          f"{os.cpu_count()} CPUs; batches of {BATCH}")
    await sqlite_part(args.rows, args.repeats)
    version = await postgres_reachable(args.dsn)
    if version is not None:
        print(f"  (PostgreSQL {version}, asyncpg {asyncpg.__version__})")
        await postgres_part(args.dsn, args.rows, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
