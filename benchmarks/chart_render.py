"""Chart rendering cost and event-loop lag while charts render (Discord heartbeat safety).

Usage: .venv/bin/python benchmarks/chart_render.py [--charts 20] [--candles 120]

Synthetic candles from a fixed seed (no data files needed). Prints, after one warm-up render:
- render time per chart (median, p95) when called directly;
- event-loop lag while ``--charts`` charts render back to back, measured by a 5 ms ticker: the time
  the loop was late for a tick (median, p99, max), for three modes: inline (blocking the loop, what
  NOT to do), ChartRenderer with a worker thread (the default), ChartRenderer with a worker process.
The bar is: the loop is never blocked > 100 ms by rendering.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

from src.analysis import timeframes
from src.analysis.types import AnalyzerState, Candle
from src.bot.discord.charts import ChartRenderer, ChartSpec, render_png

TICK_S = 0.005


def candles(n: int, seed: int = 7) -> tuple[Candle, ...]:
    rng = random.Random(seed)
    price, t, out = 30_000.0, 1_700_006_400_000, []
    for _ in range(n):
        o = price
        c = o * (1 + rng.gauss(0, 0.004))
        h, lo = max(o, c) * (1 + abs(rng.gauss(0, 0.002))), min(o, c) * (1 - abs(rng.gauss(0, 0.002)))
        out.append(Candle("BTCUSDT", "1h", t, timeframes.close_time("1h", t), o, h, lo, c, rng.uniform(10, 500)))
        price, t = c, timeframes.next_open("1h", t)
    return tuple(out)


def spec(n: int) -> ChartSpec:
    cs = candles(n)
    state = AnalyzerState("elliott", "Wave 3", levels=(("support", min(c.low for c in cs)),),
                          pivots=tuple((cs[i].open_time_ms, cs[i].high, str(k)) for k, i in enumerate(range(10, n, n // 6), 1)))
    last = cs[-1].close
    return ChartSpec("BTCUSDT 1h · spring LONG", cs, state.levels, state.pivots, last, last * 0.98, (last * 1.03, last * 1.06),
                     "LONG", cs[-1].open_time_ms)


async def measure_lag(work: asyncio.Future[object] | None, run_inline: tuple[ChartSpec, int] | None = None) -> list[float]:
    """Lag samples (seconds late per tick) until ``work`` finishes (or while rendering inline)."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append(max(0.0, time.perf_counter() - t0 - TICK_S))

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    if run_inline is not None:
        s, n = run_inline
        for _ in range(n):
            render_png(s)  # blocks the loop on purpose: the comparison baseline
            await asyncio.sleep(TICK_S * 2)  # let the ticker run between renders: each render is one block
    if work is not None:
        await work
    stop.set()
    await task
    return lags


def summary(lags: list[float]) -> str:
    ms = sorted(x * 1000 for x in lags)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"ticks {len(ms):5d}  median {statistics.median(ms):6.2f} ms  p99 {p99:7.2f} ms  max {ms[-1]:7.2f} ms"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--charts", type=int, default=20)
    ap.add_argument("--candles", type=int, default=120)
    args = ap.parse_args()
    s = spec(args.candles)
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; matplotlib {matplotlib.__version__}")
    render_png(s)  # warm-up: font cache, first figure
    times = []
    for _ in range(args.charts):
        t0 = time.perf_counter()
        png = render_png(s)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(f"render_png, {args.candles} candles: median {statistics.median(times) * 1000:.1f} ms, "
          f"p95 {times[int(len(times) * 0.95) - 1] * 1000:.1f} ms, {len(png)} bytes")

    print(f"event-loop lag while rendering {args.charts} charts ({TICK_S * 1000:.0f} ms ticker):")
    print(f"  inline (blocking) : {summary(await measure_lag(None, (s, args.charts)))}")
    for label, use_processes in (("worker thread  ", False), ("worker process ", True)):
        renderer = ChartRenderer(use_processes=use_processes)
        await renderer.render(s)  # warm-up (process start, imports)

        async def batch(r: ChartRenderer = renderer) -> None:
            for _ in range(args.charts):
                await r.render(s)

        lags = await measure_lag(asyncio.ensure_future(batch()))
        renderer.close()
        print(f"  {label}   : {summary(lags)}")


if __name__ == "__main__":
    asyncio.run(main())
