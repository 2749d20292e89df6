"""Speed of ``backtest run``: candles/s on one core, and the scaling with ``--jobs``.

    .venv/bin/python benchmarks/backtest_speed.py [DATA_DIR] [--repeats 3] [--reps 1000]

Reads the real Binance kline CSVs in DATA_DIR/klines (DATA_DIR: the argument, else $WYELI_DATA_DIR,
else ../shared/data relative to the repository); exits cleanly with a message when they are absent.
Per file: one warm-up, then ``--repeats`` timed runs of the whole per-stream job (read + replay
through the engine and gate + grading + the random baseline with ``--reps`` replications), with
default settings (the default gate and evidence model, trading its trade calls AND watch notes so the grading
and the baseline have work: there are no trade calls at the defaults; horizon 48, commission 0.0004, seed
0). Prints the median
wall time and CPU time and candles/s. Then the 1m files together with --jobs 1 and --jobs 2 (one
run each after the warm-up; identical results are checked).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backtest.inputs import StreamSpec  # noqa: E402
from backtest.run_cmd import JobConfig, run_all, run_job  # noqa: E402
from src.analysis.engine import AnalysisSettings  # noqa: E402
from src.analysis.outcomes import OutcomeParams  # noqa: E402
from src.market.klines_csv import infer_symbol_interval  # noqa: E402


def spec_for(path: Path) -> StreamSpec:
    symbol, tf = infer_symbol_interval(path)
    assert symbol and tf
    return StreamSpec(symbol, tf, path=str(path))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", nargs="?", default=os.environ.get("WYELI_DATA_DIR", str(REPO.parent / "shared" / "data")))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reps", type=int, default=1000, help="baseline replications")
    args = p.parse_args()
    kdir = Path(args.data_dir) / "klines"
    files_1m = sorted(kdir.glob("*-1m-*.csv"))
    files_15m = sorted(kdir.glob("*-15m-*.csv"))
    if not files_1m and not files_15m:
        print(f"no kline CSVs in {kdir} (pass DATA_DIR or set WYELI_DATA_DIR); nothing to measure")
        return 0
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; data {kdir}")
    job = JobConfig(AnalysisSettings(), OutcomeParams(), None, args.reps, 0, 0, ("trade", "watch"))
    print(f"{'file':36s} {'candles':>8s} {'signals':>7s} {'wall s':>7s} {'cpu s':>7s} {'candles/s wall':>14s}"
          f" {'candles/s cpu':>13s}")
    for path in files_1m + files_15m:
        spec = spec_for(path)
        out = run_job(spec, job)  # warm-up
        walls, cpus = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = run_job(spec, job)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        w, c = statistics.median(walls), statistics.median(cpus)
        n = out.result.candles
        # CPU time is the honest figure on a shared machine; wall time shows what a user waits
        print(f"{path.name:36s} {n:8d} {len(out.result.signals):7d} {w:7.2f} {c:7.2f} {n / w:14.0f} {n / c:13.0f}")
    if len(files_1m) >= 2:
        specs = [spec_for(f) for f in files_1m]
        total = 0
        results = {}
        for jobs in (1, 2):
            t0 = time.perf_counter()
            outs = run_all(specs, job, jobs, show_progress=False)
            wall = time.perf_counter() - t0
            total = sum(o.result.candles for o in outs)
            results[jobs] = (wall, [(len(o.result.signals), [g.resolution for g in o.result.graded]) for o in outs])
            print(f"--jobs {jobs}: {len(specs)} files, {total} candles in {wall:.2f} s = {total / wall:.0f} candles/s")
        assert results[1][1] == results[2][1], "--jobs 2 gave different trades"
        print(f"speed-up --jobs 2 vs 1: {results[1][0] / results[2][0]:.2f}x (identical trades)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
