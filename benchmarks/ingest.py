"""Market-data ingest: frames/s parsed (and aggregated) on one core, and memory of the candle windows.

Usage: .venv/bin/python benchmarks/ingest.py [--data-dir DIR] [--candles 4000] [--updates 10]
                                             [--repeat 5] [--symbols 500] [--window 500]

Part 1 (needs real data): reads the real Binance 1m klines in ``DIR/klines/*-1m-*.csv`` (DIR from
``--data-dir``, else ``$WYELI_DATA_DIR``, else ``../shared/data`` relative to the repository) and turns
the first ``--candles`` (4000) of each file into the exact combined-stream frames Binance sends:
``--updates`` non-closed updates per candle (live Binance sends ~240 per 1m candle, one every 250 ms)
then the closed frame. Without the data it says so and skips part 1.
Each variant runs over all frames once as warm-up, then ``--repeat`` times; the median is printed,
as CPU time of this process (robust on a busy machine) and wall time:

- ``json.loads``: decoding only (stdlib), the floor for a json-based parser;
- ``json.loads + Candle``: a straightforward parser (json.loads, float(), Candle, validate());
- ``orjson.loads``: decoding only;
- ``parse_kline_frame``: our strict parser, every rule on every frame;
- ``scan_kline_frame``: the feed's hot path (full rules for closed frames, identity for updates);
- ``scan + aggregator``: the above plus CandleAggregator(1m -> 1m,15m,1h,4h) for every closed candle;
- ``feed.on_message``: the feed's whole per-frame work (scan, stream lookup, freshness, queueing).

A fingerprint (closed candles and the sum of their closes) must be equal for every parser.

Part 2 (synthetic, fixed seed): tracemalloc of ``--symbols`` x 4 timeframes x ``--window`` closed
candles held in the aggregator's CandleWindows (column-wise float64 rings; target: < 150 MB for
500 x 4 x 500).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import orjson

from src.analysis.types import Candle
from src.market.aggregator import CandleAggregator, CandleWindow
from src.market.feed import BinanceKlineFeed, FeedSettings
from src.market.frames import parse_kline_frame, scan_kline_frame
from src.market.klines_csv import read_klines_csv

REPO = Path(__file__).resolve().parents[1]


def frame(c: Candle, closed: bool, event_ms: int) -> str:
    """A Binance combined-stream kline frame for ``c`` (decimals as strings, like Binance)."""
    k = {"t": c.open_time_ms, "T": c.close_time_ms, "s": c.symbol, "i": c.timeframe, "f": 100, "L": 100 + c.trades,
         "o": f"{c.open:.8f}", "c": f"{c.close:.8f}", "h": f"{c.high:.8f}", "l": f"{c.low:.8f}",
         "v": f"{c.volume:.3f}", "n": c.trades, "x": closed, "q": f"{c.quote_volume:.5f}",
         "V": f"{c.taker_buy_volume:.3f}", "Q": f"{c.taker_buy_quote_volume:.5f}", "B": "0"}
    return json.dumps({"stream": f"{c.symbol.lower()}@kline_{c.timeframe}",
                       "data": {"e": "kline", "E": event_ms, "s": c.symbol, "k": k}}, separators=(",", ":"))


def build_frames(files: Sequence[Path], per_file: int, updates: int) -> list[str]:
    """Interleave the symbols minute by minute; each candle: ``updates`` partial frames, then the closed one."""
    series = [read_klines_csv(p).candles[:per_file] for p in files]
    out: list[str] = []
    for i in range(max(len(s) for s in series)):
        for s in series:
            if i >= len(s):
                continue
            c = s[i]
            for j in range(1, updates + 1):
                f = j / (updates + 1)
                close = c.open + (c.close - c.open) * f
                part = Candle(c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open, max(c.open, close),
                              min(c.open, close), close, c.volume * f, c.quote_volume * f, int(c.trades * f))
                out.append(frame(part, False, c.open_time_ms + int(60_000 * f)))
            out.append(frame(c, True, c.close_time_ms + 1))
    return out


class _NullSink:
    async def on_candles(self, candles: Sequence[Candle], source: str) -> None:
        return None


async def _no_store(symbol: str, timeframe: str) -> int | None:
    return None


def naive_parse(raw: str) -> Candle:
    d = json.loads(raw)["data"]["k"]
    return Candle(d["s"], d["i"], d["t"], d["T"], float(d["o"]), float(d["h"]), float(d["l"]), float(d["c"]),
                  float(d["v"]), float(d["q"]), d["n"], float(d["V"]), float(d["Q"]), d["x"]).validate()


def run_variant(name: str, frames: Sequence[str], fn: Callable[[str], object], repeat: int,
                fingerprint: Callable[[list[object]], tuple[int, float]] | None) -> tuple[str, float, float, str]:
    results: list[object] = []
    for raw in frames:  # warm-up (and the fingerprint)
        results.append(fn(raw))
    fp = ""
    if fingerprint is not None:
        n, total = fingerprint(results)
        fp = f"{n} closed, sum(close)={total:.6f}"
    del results
    cpu, wall = [], []
    for _ in range(repeat):
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        for raw in frames:
            fn(raw)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return name, len(frames) / statistics.median(cpu), len(frames) / statistics.median(wall), fp


def closed_fp(results: list[object]) -> tuple[int, float]:
    closed = [r for r in results if isinstance(r, Candle) and r.closed]
    return len(closed), sum(c.close for c in closed)


def scan_fp(results: list[object]) -> tuple[int, float]:
    closed = [r[2] for r in results if isinstance(r, tuple) and r[2] is not None]
    return len(closed), sum(c.close for c in closed)


def part1(data_dir: Path, per_file: int, updates: int, repeat: int) -> None:
    files = sorted((data_dir / "klines").glob("*-1m-*.csv"))
    if not files:
        print(f"Part 1 skipped: no real 1m klines in {data_dir / 'klines'} "
              "(pass --data-dir or set WYELI_DATA_DIR to the folder holding klines/).")
        return
    print(f"Part 1: real 1m klines from {len(files)} files in {data_dir / 'klines'} ({', '.join(p.name for p in files)})")
    frames = build_frames(files, per_file, updates)
    closed = sum(1 for f in frames if '"x":true' in f)
    print(f"  {len(frames):,} frames ({closed:,} closed, {updates} updates per candle), "
          f"mean {statistics.mean(len(f) for f in frames):.0f} bytes; median of {repeat} runs after a warm-up")
    agg = CandleAggregator(("1m", "15m", "1h", "4h"), window=500)

    def scan_and_aggregate(raw: str) -> object:
        r = scan_kline_frame(raw)
        if r[2] is not None:
            agg.add(r[2])
        return r

    feed = BinanceKlineFeed(FeedSettings(symbols=tuple(sorted({p.name.split("-")[0] for p in files})),
                                         timeframes=("1m",), validate_symbols=False, queue_capacity=10**9),
                            _NullSink(), _no_store)
    feed._build(feed.settings.symbols)  # the streams and connection objects, without connecting
    conn = feed._connections[0]

    def feed_on_message(raw: str) -> object:
        feed.on_message(conn, raw)
        return None

    variants: list[tuple[str, Callable[[str], object], Callable[[list[object]], tuple[int, float]] | None]] = [
        ("json.loads (decode only)", json.loads, None),
        ("json.loads + Candle (naive)", naive_parse, closed_fp),
        ("orjson.loads (decode only)", orjson.loads, None),
        ("parse_kline_frame (strict)", parse_kline_frame, closed_fp),
        ("scan_kline_frame (feed path)", scan_kline_frame, scan_fp),
        ("scan + aggregator", scan_and_aggregate, scan_fp),
        ("feed.on_message (scan+bookkeeping)", feed_on_message, None),
    ]
    print(f"  {'variant':35s} {'frames/s (CPU)':>15s} {'frames/s (wall)':>16s}  fingerprint")
    prints = set()
    for name, fn, fp in variants:
        agg = CandleAggregator(("1m", "15m", "1h", "4h"), window=500)
        row = run_variant(name, frames, fn, repeat, fp)
        feed._pending.clear()
        print(f"  {row[0]:35s} {row[1]:15,.0f} {row[2]:16,.0f}  {row[3]}")
        if row[3]:
            prints.add(row[3])
    print(f"  fingerprints agree: {len(prints) == 1}; feed counted {feed.stats().closed_candles // (repeat + 1):,} "
          f"closed and {feed.stats().frames_invalid} invalid frames per pass")
    print("  target: >= 200,000 frames/s on one core (feed path)")


def part2(symbols: int, window: int, seed: int = 7) -> None:
    tfs = ("1m", "15m", "1h", "4h")
    n = symbols * len(tfs) * window
    print(f"Part 2: {symbols} symbols x {len(tfs)} timeframes x {window} candles = {n:,} candles in windows")
    rng = random.Random(seed)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    windows: list[CandleWindow] = []
    for s in range(symbols):
        sym = f"S{s:04d}USDT"
        for tf in tfs:
            w = CandleWindow(window)
            price = rng.uniform(0.01, 50_000)
            for i in range(window):
                o = price
                price *= 1 + rng.gauss(0, 0.002)
                hi, lo = max(o, price) * (1 + rng.random() * 1e-3), min(o, price) * (1 - rng.random() * 1e-3)
                v = rng.uniform(1, 1e4)
                t = 1_767_571_200_000 + i * 60_000
                w.add(Candle(sym, tf, t, t + 59_999, o, hi, lo, price, v, v * price, rng.randint(1, 5000),
                             v * 0.5, v * 0.5 * price))
            windows.append(w)
    objects = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(f"  CandleWindow rings: {objects / 1e6:8.1f} MB ({objects / n:.0f} bytes/candle)"
          f"   target < 150 MB: {'met' if objects < 150e6 else 'NOT met'}")
    del windows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("WYELI_DATA_DIR", REPO.parent / "shared" / "data")))
    ap.add_argument("--candles", type=int, default=4_000, help="1m candles per file (default 4000)")
    ap.add_argument("--updates", type=int, default=10, help="non-closed updates per candle (default 10)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--window", type=int, default=500)
    args = ap.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    print(f"Python {platform.python_version()} on {platform.machine()} ({platform.processor() or platform.platform()}), "
          f"orjson {orjson.__version__}, numpy {np.__version__}, pinned to one core")
    part1(args.data_dir, args.candles, args.updates, args.repeat)
    part2(args.symbols, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
