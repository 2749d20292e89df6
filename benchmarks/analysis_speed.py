"""Analysis throughput on real klines: the full analyzer stack (build_engine) on one core.

    .venv/bin/python benchmarks/analysis_speed.py [--data-dir DIR] [--repeats 3] [--limit N]

READS REAL DATA from ``DIR/klines`` (default: $WYELI_DATA_DIR, else ../shared/data relative to the
repository): BTCUSDT-1m-2025-05.csv and BTCUSDT-15m-2023-2025H1.csv. Without them it says so and
exits 0. Reports, per file, candles per second through ``AnalysisEngine.on_candle`` for the
whole stack and for each analyzer alone (median of ``--repeats`` runs after a warm-up run), and
the cost of the incremental engine against recomputing a 500-candle window on every candle
(what a non-streaming bot does).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.analysis.engine import AnalysisEngine, AnalysisSettings
from src.analysis.registry import build_analyzers, build_engine
from src.analysis.types import Candle
from src.market.klines_csv import read_klines_csv

FILES = ("BTCUSDT-1m-2025-05.csv", "BTCUSDT-15m-2023-2025H1.csv")
WINDOW = 500


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("WYELI_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def throughput(candles: list[Candle], make: type[AnalysisEngine] | None, settings: AnalysisSettings,
               only: str | None, repeats: int) -> float:
    """Median candles/s of a fresh engine over ``candles`` (one warm-up run first)."""
    sym, tf = candles[0].symbol, candles[0].timeframe

    def engine() -> AnalysisEngine:
        analyzers = build_analyzers(sym, tf, settings)
        if only is not None:
            analyzers = [a for a in analyzers if a.name == only]
        return AnalysisEngine(sym, tf, analyzers, settings)

    def once() -> float:
        e = engine()
        t = time.perf_counter()
        for c in candles:
            e.on_candle(c)
        return len(candles) / (time.perf_counter() - t)

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def window_recompute_cost(candles: list[Candle], settings: AnalysisSettings, samples: int) -> tuple[float, float]:
    """(incremental µs per candle, recompute-500-window µs per candle)."""
    sym, tf = candles[0].symbol, candles[0].timeframe
    e = build_engine(sym, tf, settings)
    t = time.perf_counter()
    for c in candles[: WINDOW + samples]:
        e.on_candle(c)
    inc = (time.perf_counter() - t) / (WINDOW + samples) * 1e6
    t = time.perf_counter()
    for k in range(WINDOW, WINDOW + samples):
        fresh = build_engine(sym, tf, settings)
        for c in candles[k - WINDOW + 1: k + 1]:
            fresh.on_candle(c)
    rec = (time.perf_counter() - t) / samples * 1e6
    return inc, rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="folder holding klines/ (default $WYELI_DATA_DIR or ../shared/data)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N candles of each file (0 = all)")
    ap.add_argument("--window-samples", type=int, default=100, help="candles timed for the recompute comparison")
    args = ap.parse_args()
    root = data_dir(args.data_dir) / "klines"
    paths = [root / f for f in FILES if (root / f).is_file()]
    if not paths:
        print(f"no kline files found in {root} (this benchmark reads real data: set WYELI_DATA_DIR or --data-dir)")
        return 0
    settings = AnalysisSettings()
    names = [a.name for a in build_analyzers("X", "1h", settings)]
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}, "
          f"one core; analyzers: {', '.join(names)}; median of {args.repeats} after a warm-up")
    for path in paths:
        candles = read_klines_csv(path).candles
        if args.limit:
            candles = candles[: args.limit]
        full = throughput(candles, None, settings, None, args.repeats)
        parts = ", ".join(f"{n} alone {throughput(candles, None, settings, n, args.repeats):,.0f}/s" for n in names)
        print(f"{path.name}: {len(candles):,} candles: full stack {full:,.0f} candles/s ({1e6 / full:.1f} µs each); {parts}")
        inc, rec = window_recompute_cost(candles, settings, args.window_samples)
        print(f"  incremental {inc:.1f} µs/candle vs recomputing a {WINDOW}-candle window {rec / 1000:.1f} ms/candle "
              f"({rec / inc:,.0f}x slower)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
