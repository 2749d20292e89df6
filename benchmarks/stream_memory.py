"""Memory and warm-up CPU of many warmed streams: N symbols x 4 timeframes x 500 candles (issue 15: 500 x 4 x 500).

    .venv/bin/python benchmarks/stream_memory.py [--symbols 500] [--candles 500] [--ref REV] [--data-dir DIR]
    .venv/bin/python benchmarks/stream_memory.py --long [40000]

READS REAL DATA from ``DIR/klines`` (default $WYELI_DATA_DIR, else ../shared/data): BTCUSDT 1m, 15m, 1h and 4h.
Each stream (symbol i, timeframe) is a 500-candle slice of the real file of its timeframe at an offset that
depends on i, renamed SYMiiiUSDT. Per stream the process holds what the live bot holds: the aggregator's
:class:`~src.market.aggregator.CandleWindow` (VIEW_CANDLES, what the bot keeps) and the analysis engine (registry.build_engine,
every analyzer), both fed every candle; one gate for all streams, fed through ``engine.step``. Candle objects
are built per stream from compact float arrays and dropped after feeding, so they are not counted.

Prints: RSS before the streams (interpreter, modules, the shipped evidence model, the source arrays), RSS after
warming every stream (VmRSS of /proc/self/status after gc), the difference per stream, and the CPU seconds
(``time.process_time``) of warming them all (window.add + engine.step). ``--ref REV`` runs the same script
inside another git revision's tree first (before/after in one run).

``--long N``: growth over a long live run instead. One engine per timeframe is fed up to N candles of its file
(40,000 1m candles = 28 days) and its state is weighed at checkpoints: every object reachable from the engine
(a deep walk, ``sys.getsizeof``; the shared evidence model, settings, gate, classes and functions excluded).
A flat line means the state is bounded; a rising one grows with the run until the process runs out of memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from src.analysis.engine import AnalysisSettings, SignalGate, step  # noqa: E402
from src.analysis.registry import build_engine  # noqa: E402
from src.analysis.types import Candle  # noqa: E402
from src.bot.pipeline import VIEW_CANDLES  # noqa: E402
from src.market.aggregator import CandleWindow  # noqa: E402
from src.market.klines_csv import read_klines_csv  # noqa: E402

FILES = {"1m": "BTCUSDT-1m-2025-05.csv", "15m": "BTCUSDT-15m-2023-2025H1.csv", "1h": "BTCUSDT-1h-2019-2025H1.csv",
         "4h": "BTCUSDT-4h-2023-2025H1.csv"}


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_arrays(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for tf, name in FILES.items():
        cs = read_klines_csv(root / name).candles
        out[tf] = np.array([(c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close, c.volume)
                            for c in cs], dtype=np.float64)
    return out


def stream_candles(arr: np.ndarray, symbol: str, tf: str, start: int, n: int) -> list[Candle]:
    return [Candle(symbol, tf, int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in arr[start:start + n].tolist()]


def measure(root: Path, symbols: int, n: int) -> dict[str, float]:
    arrays = load_arrays(root)
    settings = AnalysisSettings()
    build_engine("WARMUP", "1h", settings)  # load the shipped model and modules before the baseline
    gc.collect()
    before = rss_mb()
    gate = SignalGate(settings)
    keep: list[tuple[CandleWindow, object]] = []
    cpu = 0.0
    for i in range(symbols):
        sym = f"SYM{i:03d}USDT"
        for tf, arr in arrays.items():
            start = (i * 7919) % (len(arr) - n)
            candles = stream_candles(arr, sym, tf, start, n)
            t = time.process_time()
            window = CandleWindow(VIEW_CANDLES)
            engine = build_engine(sym, tf, settings)
            for c in candles:
                window.add(c)
                step(engine, gate, c)
            cpu += time.process_time() - t
            keep.append((window, engine))
    del candles
    gc.collect()
    after = rss_mb()
    return {"before": before, "after": after, "streams": len(keep), "cpu": cpu}


def deep_size(root: object, shared: set[int]) -> int:
    """Bytes of every object reachable from ``root`` and not in ``shared`` (ids), classes and functions skipped."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        x = stack.pop()
        if id(x) in seen or id(x) in shared or isinstance(x, skip):
            continue
        seen.add(id(x))
        total += sys.getsizeof(x)
        stack.extend(gc.get_referents(x))
    return total


def reachable_ids(*roots: object) -> set[int]:
    return {id(x) for x in _walk(roots)}


def _walk(roots: tuple[object, ...]) -> list[object]:
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    seen: dict[int, object] = {}
    stack = list(roots)
    while stack:
        x = stack.pop()
        if id(x) in seen or isinstance(x, skip):
            continue
        seen[id(x)] = x
        stack.extend(gc.get_referents(x))
    return list(seen.values())


def long_run(root: Path, limit: int) -> None:
    """One engine per timeframe fed up to ``limit`` candles; its deep size at checkpoints."""
    settings = AnalysisSettings()
    marks = sorted({500, 2_000, 5_000, 10_000, 20_000, limit // 2, limit})
    print(f"engine state over a long run (deep size of one stream's engine, KB) at {', '.join(f'{m:,}' for m in marks)} "
          "candles:")
    for tf, name in FILES.items():
        candles = read_klines_csv(root / name).candles[:limit]
        gate = SignalGate(settings)
        engine = build_engine("BTCUSDT", tf, settings)
        shared = reachable_ids(engine.evidence, engine.settings, gate)
        sizes: list[str] = []
        for i, c in enumerate(candles, 1):
            step(engine, gate, c)
            if i in marks:
                sizes.append(f"{deep_size(engine, shared) / 1024:,.0f}")
        print(f"  {tf:>3} ({len(candles):,} candles of {name}): {' / '.join(sizes)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--candles", type=int, default=500)
    ap.add_argument("--data-dir", help="folder holding klines/ (default $WYELI_DATA_DIR or ../shared/data)")
    ap.add_argument("--ref", help="also measure this git revision first")
    ap.add_argument("--long", type=int, nargs="?", const=40_000, metavar="N",
                    help="instead: one engine per timeframe fed N candles (default 40,000), its size on the way")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    base = Path(args.data_dir) if args.data_dir else Path(os.environ.get("WYELI_DATA_DIR") or ROOT.parent / "shared" / "data")
    root = base / "klines"
    if not all((root / f).is_file() for f in FILES.values()):
        print(f"kline files {', '.join(FILES.values())} not all in {root} (this benchmark reads real data)")
        return 0
    if args.long:
        from src.native import loader

        print(f"analysis build: {loader.describe()}")
        long_run(root, args.long)
        return 0
    if args.json:
        print(json.dumps(measure(root, args.symbols, args.candles)))
        return 0
    rows: list[tuple[str, dict[str, float]]] = []
    if args.ref:
        from backtest.parity import export_revision

        tree = export_revision(args.ref)
        script = tree / "benchmarks" / "_stream_memory_current.py"
        script.write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
        r = subprocess.run([sys.executable, str(script), "--json", "--symbols", str(args.symbols), "--candles",
                            str(args.candles), "--data-dir", str(base)], cwd=tree, check=True, capture_output=True,
                           text=True)
        rows.append((args.ref, json.loads(r.stdout.strip().splitlines()[-1])))
    rows.append(("this tree", measure(root, args.symbols, args.candles)))
    from src.native import loader

    print(f"{args.symbols} symbols x {len(FILES)} timeframes x {args.candles} real candles (window + engine per "
          f"stream, one gate); analysis build of this tree: {loader.describe()}")
    for label, m in rows:
        per = (m["after"] - m["before"]) * 1024 / m["streams"]
        print(f"  {label}: RSS {m['after']:.0f} MB ({m['before']:.0f} MB before the streams; {per:.1f} KB per "
              f"stream); warm-up {m['cpu']:.1f} s CPU ({m['streams'] * args.candles / m['cpu']:,.0f} candles/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
