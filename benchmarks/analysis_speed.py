"""Analysis throughput on real klines: the full stack (engine + gate, ``engine.step``) per core, in CPU time.

    .venv/bin/python benchmarks/analysis_speed.py [--ref REV] [--sma-python PY] [--repeats 2] [--limit N]
        [--parts] [FILE.csv ...]

READS REAL DATA from ``DIR/klines`` (``--data-dir``, else $WYELI_DATA_DIR, else ../shared/data relative to the
repository); default files: BTCUSDT 1m (May 2025), 15m (2023-2025H1) and 1h (2019-2025H1). Without them it says
so and exits 0.

Per file it prints the full stack's candles per second of CPU time (``time.process_time``, one process, median
of ``--repeats`` runs of a fresh engine and gate over the whole file: what live, replay and every backtest
command run per candle) and, in the same run on the same file:

- ``--ref REV``: the same measurement on another git revision (exported with ``git archive`` by
  benchmarks/analysis_parity.py, this script run there in a subprocess): the before/after figure;
- backtesting.py's SMA(10/30) cross (``Backtest.run`` CPU time over the same candles), the yardstick of issue 15.
  backtesting.py is benchmark-only (requirements-bench.txt; it cannot share the project venv, see there):
  install it with ``python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -r requirements-bench.txt``
  and pass ``--sma-python /tmp/benchvenv/bin/python``. Without it the column says "not installed".
- ``--pure``: this tree again on the pure-Python source (``WYELI_PURE_PYTHON=1``, in a subprocess) when the
  compiled build runs (``python -m src.native build``): what the compiled build gains;
- ``--parts``: each analyzer alone (engine without the other analyzer, with the gate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.analysis.engine import AnalysisEngine, AnalysisSettings, SignalGate, step  # noqa: E402
from src.analysis.registry import build_analyzers, build_engine  # noqa: E402
from src.analysis.types import Candle  # noqa: E402
from src.market.klines_csv import read_klines_csv  # noqa: E402

FILES = ("BTCUSDT-1m-2025-05.csv", "BTCUSDT-15m-2023-2025H1.csv", "BTCUSDT-1h-2019-2025H1.csv")

SMA_SCRIPT = r'''
import json, sys, time
import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import SMA

class SmaCross(Strategy):
    n1, n2 = 10, 30
    def init(self):
        self.ma1 = self.I(SMA, self.data.Close, self.n1)
        self.ma2 = self.I(SMA, self.data.Close, self.n2)
    def next(self):
        if crossover(self.ma1, self.ma2):
            self.position.close(); self.buy()
        elif crossover(self.ma2, self.ma1):
            self.position.close(); self.sell()

path, limit, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
raw = pd.read_csv(path, header=None, usecols=range(6))
if not str(raw.iloc[0, 0]).isdigit():
    raw = raw.iloc[1:]
raw = raw.astype(float)
df = pd.DataFrame({"Open": raw[1].values, "High": raw[2].values, "Low": raw[3].values, "Close": raw[4].values,
                   "Volume": raw[5].values}, index=pd.to_datetime(raw[0].astype("int64"), unit="ms"))
if limit:
    df = df.iloc[:limit]
rates = []
for _ in range(repeats):
    bt = Backtest(df, SmaCross, cash=1e9, commission=0.0004, finalize_trades=True)
    t = time.process_time()
    bt.run()
    rates.append(len(df) / (time.process_time() - t))
rates.sort()
print(json.dumps({"rate": rates[len(rates) // 2], "version": __import__("backtesting").__version__}))
'''


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("WYELI_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def full_stack_rate(candles: list[Candle], repeats: int, only: str | None = None) -> float:
    """Median candles per CPU second of a fresh engine + gate stepping through ``candles``."""
    settings = AnalysisSettings()
    sym, tf = candles[0].symbol, candles[0].timeframe

    def once() -> float:
        if only is None:
            engine = build_engine(sym, tf, settings)
        else:
            engine = AnalysisEngine(sym, tf, [a for a in build_analyzers(sym, tf, settings) if a.name == only],
                                    settings)
        gate = SignalGate(settings)
        t = time.process_time()
        for c in candles:
            step(engine, gate, c)
        return len(candles) / (time.process_time() - t)

    return statistics.median(once() for _ in range(repeats))


def sma_rate(python: str | None, path: Path, limit: int, repeats: int) -> str:
    exe = python or sys.executable
    r = subprocess.run([exe, "-c", SMA_SCRIPT, str(path), str(limit), str(repeats)], capture_output=True, text=True)
    if r.returncode != 0:
        if "ModuleNotFoundError" in r.stderr:
            return "backtesting.py not installed (see requirements-bench.txt)"
        return f"backtesting.py failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return f"{out['rate']:,.0f}/s (backtesting.py {out['version']})"


def ref_rates(rev: str, paths: list[Path], limit: int, repeats: int) -> dict[str, float]:
    """Full-stack rates of revision ``rev`` (this script run in its exported tree)."""
    from backtest.parity import export_revision

    tree = export_revision(rev)
    (tree / "benchmarks").mkdir(exist_ok=True)
    script = tree / "benchmarks" / "_analysis_speed_current.py"
    script.write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
    r = subprocess.run([sys.executable, str(script), "--json", "--no-sma", "--repeats", str(repeats), "--limit",
                        str(limit), *[str(p) for p in paths]], cwd=tree, check=True, capture_output=True, text=True)
    rates: dict[str, float] = json.loads(r.stdout.strip().splitlines()[-1])
    return rates


def analysis_build() -> tuple[bool, str]:
    """(native?, description) of the analysis build running here; revisions before src/native: pure Python."""
    try:
        from src.native import loader
    except ImportError:
        return False, "pure Python (this revision has no native build)"
    return loader.current().native, loader.describe()


def pure_rates(paths: list[Path], limit: int, repeats: int) -> dict[str, float]:
    """Full-stack rates of this tree on the pure-Python source (this script in a subprocess with
    WYELI_PURE_PYTHON=1): the compiled build's before/after in one run."""
    env = {**os.environ, "WYELI_PURE_PYTHON": "1"}
    r = subprocess.run([sys.executable, __file__, "--json", "--no-sma", "--repeats", str(repeats), "--limit",
                        str(limit), *[str(p) for p in paths]], cwd=ROOT, env=env, check=True, capture_output=True,
                       text=True)
    rates: dict[str, float] = json.loads(r.stdout.strip().splitlines()[-1])
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help=f"kline CSVs (names under DIR/klines or paths; default {', '.join(FILES)})")
    ap.add_argument("--data-dir", help="folder holding klines/ (default $WYELI_DATA_DIR or ../shared/data)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N candles of each file (0 = all)")
    ap.add_argument("--ref", help="also measure this git revision (before/after in one run)")
    ap.add_argument("--sma-python", help="interpreter with backtesting.py installed (default: this one)")
    ap.add_argument("--no-sma", action="store_true", help="skip the backtesting.py column")
    ap.add_argument("--parts", action="store_true", help="also each analyzer alone")
    ap.add_argument("--pure", action="store_true",
                    help="also this tree on the pure-Python source (WYELI_PURE_PYTHON=1) when the native build runs")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # machine output for --ref
    args = ap.parse_args()
    root = data_dir(args.data_dir) / "klines"
    paths = [p if p.is_file() else root / p.name for p in (Path(f) for f in (args.files or FILES))]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        print(f"no kline files found in {root} (this benchmark reads real data: set WYELI_DATA_DIR or --data-dir)")
        return 0
    if args.json:
        rates = {}
        for path in paths:
            candles = read_klines_csv(path).candles
            rates[path.name] = full_stack_rate(candles[: args.limit] if args.limit else candles, args.repeats)
        print(json.dumps(rates))
        return 0
    names = [a.name for a in build_analyzers("X", "1h", AnalysisSettings())]
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}; "
          f"full stack = engine ({', '.join(names)}) + gate via engine.step; candles per CPU second of one "
          f"process, median of {args.repeats}; analysis build: {analysis_build()[1]}")
    ref = ref_rates(args.ref, paths, args.limit, args.repeats) if args.ref else {}
    pure = pure_rates(paths, args.limit, args.repeats) if args.pure and analysis_build()[0] else {}
    for path in paths:
        candles = read_klines_csv(path).candles
        if args.limit:
            candles = candles[: args.limit]
        rate = full_stack_rate(candles, args.repeats)
        line = f"{path.name}: {len(candles):,} candles: full stack {rate:,.0f}/s ({1e6 / rate:.1f} µs each)"
        if path.name in pure:
            line += f"; pure Python {pure[path.name]:,.0f}/s (native x{rate / pure[path.name]:.2f})"
        if path.name in ref:
            line += f"; {args.ref} {ref[path.name]:,.0f}/s (x{rate / ref[path.name]:.2f})"
        if not args.no_sma:
            sma = sma_rate(args.sma_python, path, args.limit, args.repeats)
            line += f"; SMA(10/30) cross {sma}"
            if sma[:1].isdigit():
                line += f" ratio {rate / float(sma.split('/')[0].replace(',', '')):.2f}"
        print(line)
        if args.parts:
            print("  " + ", ".join(f"{n} alone {full_stack_rate(candles, args.repeats, n):,.0f}/s" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
