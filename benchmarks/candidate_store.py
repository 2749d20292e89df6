"""The cost of storing every candidate (issue 10): the store reads the bot makes over a full signals table.

    .venv/bin/python benchmarks/candidate_store.py [--candidates 100000] [--repeats 5] [--dsn postgresql://...]

Every candidate is stored now (trade calls, watch notes and gated ones, about 20 per symbol and day on
15m+1h+4h; see the report), so the queries that read the signals table must stay cheap as it grows:

- ``live_track``: the whole live track record (one aggregate over candidates and outcomes), run at start and
  at most every 5 minutes by the track record keeper;
- ``gate_seed``: the gate's memory at start;
- ``pending_deliveries``: the outbox's query, every wake-up and every 30 s per destination;
- ``open_signals``: the outcome tracker's resync (open candidates only; the data set leaves ~1 % open);
- ``recent_signals``: ``>signal`` (one stream, every kind, 5 rows).

Data: --candidates synthetic candidates over 100 symbols x 3 timeframes (seeded, seed 7), kinds in the
proportion a replay of the real files gives (~96 % gated, ~3 % watch notes, ~1 % trade calls), 99 % graded,
all of them delivered but the last 20 trade calls. Measured: one warm-up, then the median of --repeats calls.
A fingerprint (row counts the queries return) checks each result. SQLite always; Postgres at --dsn, else
$WYELI_BENCH_DATABASE_URL / $TEST_DATABASE_URL / postgresql://postgres@127.0.0.1:5432/test, in a throw-away
schema (skipped with a message when unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from src.analysis.timeframes import interval_ms  # noqa: E402
from src.analysis.types import Evidence, Signal, SignalKind, ms_to_iso, signal_id  # noqa: E402
from src.storage.base import Delivery, SignalOutcome, Store  # noqa: E402
from src.storage.postgres_store import PostgresStore  # noqa: E402
from src.storage.sqlite_store import SqliteStore  # noqa: E402

T0 = 1_700_000_000_000 - (1_700_000_000_000 % 86_400_000)
TIMEFRAMES = ("15m", "1h", "4h")
TRACKED = frozenset({"", "no_edge", "rr_below_trade_min", "rr_below_min", "score_below_watch_min", "structure_signalled",
                     "cooldown", "no_evidence"})
GATED_REASONS = ("score_below_watch_min", "rr_below_min", "structure_signalled", "duplicate_structure", "cooldown")


def make_data(n: int, rng: random.Random) -> tuple[list[Signal], list[SignalOutcome]]:
    signals: list[Signal] = []
    outcomes: list[SignalOutcome] = []
    symbols = [f"S{i:03d}USDT" for i in range(100)]
    for k in range(n):
        sym, tf = rng.choice(symbols), rng.choice(TIMEFRAMES)
        t = T0 + (k // 3) * interval_ms("15m")
        t -= t % interval_ms(tf)
        pattern = rng.choice(("elliott_abc", "elliott_wave3", "elliott_wave5", "wyckoff_spring", "wyckoff_sos"))
        direction = rng.choice(("LONG", "SHORT"))
        u = rng.random()
        kind: SignalKind = "trade" if u < 0.01 else "watch" if u < 0.04 else "gated"
        reason = "" if kind == "trade" else "no_edge" if kind == "watch" else rng.choice(GATED_REASONS)
        sign = 1 if direction == "LONG" else -1
        er = rng.gauss(0, 0.1)
        ev = Evidence(p_win=rng.uniform(0.3, 0.6), expected_r=er, expected_r_lo=er - 0.2, expected_r_hi=er + 0.2,
                      interval=0.8, model_version="bench", backtest_n=500, backtest_mean_r=0.0, backtest_ci=(-0.1, 0.1))
        sig = Signal(
            id=signal_id(sym, tf, t, f"{pattern}{k}", direction), symbol=sym, timeframe=tf, pattern=pattern,
            direction=direction,  # type: ignore[arg-type]
            confidence=0.1, raw_confidence=rng.random(), entry=100.0, stop_loss=100.0 - sign, take_profits=(100.0 + 2 * sign,),
            candle_time_ms=t, generated_at=ms_to_iso(t + interval_ms(tf)), reasons=("bench",) * 3, analyzer_version="b",
            config_hash="h", features=(("score", 0.5),), kind=kind, gate_reason=reason, structure_id=f"st{k // 4}",
            evidence=ev,
        )
        signals.append(sig)
        if rng.random() < 0.99:
            r = rng.gauss(-0.05, 1.0)
            outcomes.append(SignalOutcome(
                signal_id=sig.id, symbol=sym, timeframe=tf, pattern=pattern, direction=sig.direction,
                outcome="WIN" if r > 0 else "LOSS", entry_time_ms=t + 1, entry_price=100.0, exit_time_ms=t + 2,
                exit_price=100.0 + r, r_multiple=r, mfe_r=max(r, 0.0), mae_r=max(-r, 0.0), fees=0.01, bars_held=3,
                confidence=0.1, resolved_at_ms=t + 2))
    return signals, outcomes


async def fill(store: Store, signals: list[Signal], outcomes: list[SignalOutcome]) -> None:
    sem = asyncio.Semaphore(5)

    async def one(coro: Awaitable[Any]) -> None:
        async with sem:
            await coro

    await asyncio.gather(*(one(store.save_signal(s)) for s in signals))
    await asyncio.gather(*(one(store.save_outcome(o)) for o in outcomes))
    trades = [s for s in signals if s.kind == "trade"]
    done = trades[:-20] if len(trades) > 20 else []
    await asyncio.gather(*(one(store.record_delivery(Delivery(s.id, "discord:1", "sent", "m", 1, None, T0)))
                           for s in done))


async def timed(fn: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, Any]:
    result = await fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


async def measure(name: str, store: Store, repeats: int) -> None:
    probe = (await store.recent_signals(limit=1))[0]
    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("live_track (whole record)", lambda: store.live_track(TRACKED)),
        ("gate_seed", lambda: store.gate_seed(structure_window_ms=90 * 86_400_000)),
        ("pending_deliveries (trade+watch)", lambda: store.pending_deliveries("discord:1", kinds=("trade", "watch"))),
        ("open_signals", store.open_signals),
        ("recent_signals (>signal)", lambda: store.recent_signals(symbol=probe.symbol, timeframe=probe.timeframe, limit=5)),
    ]
    for label, fn in cases:
        seconds, result = await timed(fn, repeats)
        size = len(result.last_emitted_ms) + len(result.structures) if hasattr(result, "structures") else len(result)
        print(f"  {name:<8} {label:<34} {seconds * 1000:9.1f} ms   (fingerprint: {size} rows)")


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dsn", default=os.environ.get("WYELI_BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
                   or "postgresql://postgres@127.0.0.1:5432/test")
    args = p.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
          f"{args.candidates} candidates, median of {args.repeats}")
    signals, outcomes = make_data(args.candidates, random.Random(7))
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteStore(Path(tmp) / "bench.db")
        await sqlite.open()
        t0 = time.perf_counter()
        await fill(sqlite, signals, outcomes)
        print(f"  sqlite   fill: {len(signals) / (time.perf_counter() - t0):,.0f} candidates/s (one save_signal each)")
        await measure("sqlite", sqlite, args.repeats)
        await sqlite.close()
    schema = f"wyeli_bench_{secrets.token_hex(4)}"
    pg = PostgresStore(args.dsn, schema=schema)
    try:
        await pg.open()
    except Exception as exc:
        print(f"  postgres skipped: {type(exc).__name__}: {exc}")
        return 0
    try:
        t0 = time.perf_counter()
        await fill(pg, signals, outcomes)
        print(f"  postgres fill: {len(signals) / (time.perf_counter() - t0):,.0f} candidates/s (one save_signal each)")
        await measure("postgres", pg, args.repeats)
    finally:
        await pg.close()
        conn = await asyncpg.connect(args.dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
