"""Analysis speed of this checkout against another checkout of the project, interleaved on the same machine.

    .venv/bin/python benchmarks/compare_speed.py --baseline /path/to/other/checkout [--rounds 3] [--limit 40000]

A shared machine's load changes from minute to minute, so two runs of ``analysis_speed.py`` made at different
times are not comparable. This script alternates the two checkouts round by round (each in a fresh
interpreter, best of 3 passes after a warm-up, timed in process CPU time so other processes' load
matters less) on the same candles of the real kline files (READS REAL DATA:
``--data-dir`` or $WYELI_DATA_DIR or ../shared/data; says so and exits 0 without them) and prints candles/s
for the Wyckoff analyzer alone and for the full stack (``build_analyzers``), each through ``AnalysisEngine``,
and the ratio of the medians (this checkout / baseline).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

FILES = ("BTCUSDT-1m-2025-05.csv", "BTCUSDT-15m-2023-2025H1.csv")
CODE = r"""
import sys, time
sys.path.insert(0, ".")
from src.analysis.engine import AnalysisEngine, AnalysisSettings
from src.analysis.registry import build_analyzers
from src.market.klines_csv import read_klines_csv
path, only, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
candles = read_klines_csv(path).candles[:limit]
sym, tf = candles[0].symbol, candles[0].timeframe
settings = AnalysisSettings()
best = 0.0
for k in range(4):
    analyzers = [a for a in build_analyzers(sym, tf, settings) if only == "all" or a.name == only]
    engine = AnalysisEngine(sym, tf, analyzers, settings)
    t = time.process_time()
    for c in candles:
        engine.on_candle(c)
    if k:
        best = max(best, len(candles) / (time.process_time() - t))
print(best)
"""


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("WYELI_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def rate(checkout: Path, path: Path, only: str, limit: int) -> float:
    out = subprocess.run([sys.executable, "-c", CODE, str(path), only, str(limit)], cwd=checkout, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="another checkout of the project (e.g. main)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=40_000, help="candles per file")
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    base = Path(args.baseline).resolve()
    paths = [data_dir(args.data_dir) / "klines" / f for f in FILES]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        print("no kline files found (this benchmark reads real data: set WYELI_DATA_DIR or --data-dir)")
        return 0
    print(f"this checkout {here} vs baseline {base}; best of 3 passes per run, {args.rounds} interleaved rounds")
    for path in paths:
        for only in ("wyckoff", "all"):
            runs: dict[str, list[float]] = {"baseline": [], "this": []}
            for _ in range(args.rounds):
                runs["baseline"].append(rate(base, path, only, args.limit))
                runs["this"].append(rate(here, path, only, args.limit))
            b, t = statistics.median(runs["baseline"]), statistics.median(runs["this"])
            name = "wyckoff alone" if only == "wyckoff" else "full stack"
            print(f"{path.name} ({args.limit:,} candles), {name}: baseline {b:,.0f}/s, this {t:,.0f}/s, ratio {t / b:.2f} "
                  f"(rounds: baseline {', '.join(f'{x:,.0f}' for x in runs['baseline'])}; "
                  f"this {', '.join(f'{x:,.0f}' for x in runs['this'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
