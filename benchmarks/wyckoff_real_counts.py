"""Wyckoff candidates per pattern on the real kline files (for before/after comparisons of the detector).

    .venv/bin/python benchmarks/wyckoff_real_counts.py [--data-dir DIR] [--files GLOB]

READS REAL DATA from ``DIR/klines`` (default: $WYELI_DATA_DIR, else ../shared/data); without it, says
so and exits 0. Every file is replayed through the Wyckoff analyzer alone (the same ``on_candle`` the
engine calls); the table gives, per pattern, the number of candidates with raw score >= 0, >= 0.5 and
>= 0.65, summed over the files, and the rate per 1,000 candles at each threshold.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.analysis.wyckoff import ALL_PATTERNS, WyckoffAnalyzer
from src.market.klines_csv import read_klines_csv

THRESHOLDS = (0.0, 0.5, 0.65)


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("WYELI_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--files", default="*.csv", help="glob inside klines/ (default every file)")
    args = ap.parse_args()
    root = data_dir(args.data_dir) / "klines"
    paths = sorted(root.glob(args.files)) if root.is_dir() else []
    if not paths:
        print(f"no kline files found in {root} (this benchmark reads real data)")
        return 0
    counts: dict[float, Counter[str]] = {t: Counter() for t in THRESHOLDS}
    bars = 0
    for path in paths:
        frame = read_klines_csv(path)
        candles = frame.candles
        tf = candles[0].timeframe if candles else "1h"
        a = WyckoffAnalyzer(candles[0].symbol if candles else "X", tf)
        per_file: Counter[str] = Counter()
        for c in candles:
            for cand in a.on_candle(c).candidates:
                for t in THRESHOLDS:
                    if cand.raw_score >= t:
                        counts[t][cand.pattern] += 1
                per_file[cand.pattern] += 1
        bars += len(candles)
        print(f"{path.name}: {len(candles):,} candles, {sum(per_file.values())} candidates "
              + ", ".join(f"{p.removeprefix('wyckoff_')} {per_file[p]}" for p in ALL_PATTERNS))
    print(f"\nall files: {bars:,} candles")
    print(f"{'pattern':20s} " + " ".join(f"{'raw>=' + str(t):>10s} {'/1k':>6s}" for t in THRESHOLDS))
    for p in (*ALL_PATTERNS, "total"):
        row = []
        for t in THRESHOLDS:
            n = sum(counts[t].values()) if p == "total" else counts[t][p]
            row.append(f"{n:10d} {1000 * n / bars:6.2f}")
        print(f"{p:20s} " + " ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
