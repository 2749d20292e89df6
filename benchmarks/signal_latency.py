"""Close-to-signal latency on the live path with many streams: frame in -> candidates stored and signals queued.

    .venv/bin/python benchmarks/signal_latency.py [--symbols 500] [--warm 500] [--minutes 60] [--data-dir DIR]

READS REAL DATA from ``DIR/klines`` (default $WYELI_DATA_DIR, else ../shared/data): the 1m files of BTC, ETH,
SOL, BNB and ADA (May 2025) and BTCUSDT's 15m, 1h and 4h files. Symbol i (SYMiiiUSDT) replays one of the 1m
files from an offset that depends on i; its 1m, 15m, 1h and 4h streams (``--symbols`` x 4 streams, 2,000 by
default) are first warmed with ``--warm`` candles each (the 15m/1h/4h warm-up is a real slice of that
timeframe, shifted in time and scaled in price to end where the symbol's 1m replay starts), straight into each
stream's window and engine (what ``Pipeline.prime`` leaves behind, without the REST round trips).

Then ``--minutes`` market minutes go through the live path: per minute, Binance's closed kline frames (JSON text
as the exchange sends it: every symbol's 1m candle and, at their boundaries, its 15m, 1h and 4h candle) are
parsed with the feed's parser (``scan_kline``) and delivered like the feed's delivery loop does (one
``Pipeline.on_candles`` call per ``live_batch_max`` = 1,000 queued candles) into the real Pipeline with a SQLite
store (a temporary file; candles upserted, every candidate committed with the watermark) and a sink that puts
every emitted batch on an asyncio queue. All frames of a minute are taken to arrive at once (the worst case: a
real close spreads them over some hundred ms), so a frame's latency includes waiting for the frames before it.

Prints p50 / p99 / max of (a) every closed frame: frame parsed -> its batch stored, analysed, committed and
published; (b) every emitted signal: frame in -> on the sink's queue; plus the CPU seconds of the warm-up. The
WebSocket socket and the feed's gap bookkeeping are not included (the parser is). After the warm-up it calls
``freeze_warm_heap`` as the app does (``--no-freeze``: not). The garbage collector's
pauses during the live part are printed too (a full collection walks every object of every warmed stream).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.analysis import timeframes  # noqa: E402
from src.analysis.engine import AnalysisSettings, step  # noqa: E402
from src.analysis.types import Candle  # noqa: E402
from src.bot import analysis_api  # noqa: E402
from src.bot.pipeline import Pipeline, freeze_warm_heap  # noqa: E402
from src.bot.sinks import SignalBatch  # noqa: E402
from src.market.aggregator import build_candle  # noqa: E402
from src.market.frames import scan_kline  # noqa: E402
from src.market.klines_csv import read_klines_csv  # noqa: E402
from src.native import loader  # noqa: E402
from src.storage.sqlite_store import SqliteStore  # noqa: E402
from tests.fakes.binance import kline_frame  # noqa: E402

ONE_MIN = ("BTCUSDT-1m-2025-05.csv", "ETHUSDT-1m-2025-05.csv", "SOLUSDT-1m-2025-05.csv", "BNBUSDT-1m-2025-05.csv",
           "ADAUSDT-1m-2025-05.csv")
HIGHER = {"15m": "BTCUSDT-15m-2023-2025H1.csv", "1h": "BTCUSDT-1h-2019-2025H1.csv", "4h": "BTCUSDT-4h-2023-2025H1.csv"}
LIVE_BATCH_MAX = 1000  # FeedSettings.live_batch_max
DAY_MS = 86_400_000


class QueueSink:
    """The signal sinks' stand-in: every published batch goes on a queue with the time it arrived."""

    name = "queue"

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[float, SignalBatch]] = asyncio.Queue()

    async def publish(self, batch: SignalBatch) -> None:
        self.queue.put_nowait((time.perf_counter(), batch))

    async def close(self) -> None:
        return None


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def shifted(c: Candle, symbol: str, dt: int, scale: float) -> Candle:
    return Candle(symbol, c.timeframe, c.open_time_ms + dt, c.close_time_ms + dt, c.open * scale, c.high * scale,
                  c.low * scale, c.close * scale, c.volume, c.quote_volume, c.trades, c.taker_buy_volume,
                  c.taker_buy_quote_volume)


async def run(root: Path, symbols: int, warm: int, minutes: int, freeze: bool = True) -> None:
    ones = [read_klines_csv(root / f).candles for f in ONE_MIN]
    higher = {tf: read_klines_csv(root / f).candles for tf, f in HIGHER.items()}
    # the live replay starts at a UTC day boundary of the first 1m file, after enough 1m history to warm
    start_ms = timeframes.bucket_start("1d", ones[0][0].open_time_ms) + 2 * DAY_MS
    live: dict[str, list[Candle]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "wyeli.db")
        await store.open()
        sink = QueueSink()
        settings = AnalysisSettings()
        tfs = ("1m", *HIGHER)
        pipe = Pipeline(settings=settings, timeframes=tfs, store=store, sinks=[sink],
                        evidence=analysis_api.load_model(None), build_from_smaller=False)
        await pipe.start()
        cpu = time.process_time()
        for i in range(symbols):
            sym = f"SYM{i:03d}USDT"
            src = ones[i % len(ones)]
            # this symbol's replay: the 1m file from an offset, re-timed so it starts at start_ms
            off = warm + (i * 7919) % (len(src) - warm - minutes - 1)
            dt1 = start_ms - src[off].open_time_ms
            series = [shifted(c, sym, dt1, 1.0) for c in src[off - warm: off + minutes]]
            live[sym] = series[warm:]
            for tf in tfs:
                if tf == "1m":
                    hist = series[:warm]
                else:
                    h = higher[tf]
                    k = warm + (i * 104_729) % (len(h) - warm)
                    piece = h[k - warm: k]
                    # a whole number of intervals (start_ms is a UTC day): the buckets stay aligned
                    dt = start_ms - timeframes.next_open(tf, piece[-1].open_time_ms)
                    scale = series[warm].open / piece[-1].close
                    hist = [shifted(c, sym, dt, scale) for c in piece]
                engine = pipe.engine(sym, tf)
                window = pipe.aggregator.window(sym, tf)
                for c in hist:
                    window.add(c)
                    step(engine, pipe.gate, c)
        cpu = time.process_time() - cpu
        print(f"analysis build: {loader.describe()}")
        print(f"{symbols} symbols x {len(tfs)} timeframes = {symbols * len(tfs):,} streams warmed with {warm} candles "
              f"each in {cpu:.1f} s CPU")
        if freeze:  # what the app does once its warm-up is done
            frozen, took = freeze_warm_heap()
            print(f"  freeze_warm_heap: {frozen:,} objects frozen in {took:.2f} s")
        gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc_start = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_start[0] = time.perf_counter()
            else:
                gc_pauses[info["generation"]].append(time.perf_counter() - gc_start[0])

        gc.callbacks.append(on_gc)
        frame_lat: list[float] = []
        signal_lat: list[float] = []
        candidates = 0
        for m in range(minutes):
            now = start_ms + (m + 1) * 60_000  # the minute that just closed ends here
            texts: list[str] = []
            for series in live.values():
                c1 = series[m]
                texts.append(kline_frame(c1, now + 5))
                for tf in HIGHER:
                    if timeframes.next_open(tf, timeframes.bucket_start(tf, c1.open_time_ms)) == now:
                        t0 = timeframes.bucket_start(tf, c1.open_time_ms)
                        parts = series[max(0, m - (now - t0) // 60_000 + 1): m + 1]
                        texts.append(kline_frame(build_candle(parts, tf, t0), now + 5))
            t_in = time.perf_counter()  # every frame of this minute arrives now (worst case)
            pending = [c for c in (scan_kline(t).candle for t in texts) if c is not None]
            before = pipe.stats.candidates
            for b in range(0, len(pending), LIVE_BATCH_MAX):
                await pipe.on_candles(pending[b: b + LIVE_BATCH_MAX], "live")
                done = time.perf_counter()
                frame_lat.extend([done - t_in] * len(pending[b: b + LIVE_BATCH_MAX]))
            candidates += pipe.stats.candidates - before
            while not sink.queue.empty():
                at, batch = sink.queue.get_nowait()
                signal_lat.extend([at - t_in] * len(batch.signals))
        gc.callbacks.remove(on_gc)
        await pipe.close()
        await store.close()

    def show(name: str, xs: list[float]) -> str:
        if not xs:
            return f"{name}: none"
        return (f"{name}: n={len(xs):,} p50 {pct(xs, 0.5) * 1000:.1f} ms, p99 {pct(xs, 0.99) * 1000:.1f} ms, "
                f"max {max(xs) * 1000:.1f} ms, mean {statistics.fmean(xs) * 1000:.1f} ms")

    print(f"{minutes} live minutes, {len(frame_lat):,} closed frames, {candidates:,} candidates stored, "
          f"{len(signal_lat):,} signals queued (SQLite store, synchronous=NORMAL)")
    print("  " + show("frame in -> stored, analysed, committed, published", frame_lat))
    print("  " + show("frame in -> signal on the sink queue", signal_lat))
    print("  garbage collector pauses in the live part: " + "; ".join(
        f"generation {g}: {len(p)} ({sum(p) * 1000:.0f} ms in all, longest {max(p, default=0) * 1000:.0f} ms)"
        for g, p in gc_pauses.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--warm", type=int, default=500)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--no-freeze", action="store_true", help="skip freeze_warm_heap after the warm-up (as before)")
    ap.add_argument("--data-dir", help="folder holding klines/ (default $WYELI_DATA_DIR or ../shared/data)")
    args = ap.parse_args()
    base = Path(args.data_dir) if args.data_dir else Path(os.environ.get("WYELI_DATA_DIR") or ROOT.parent / "shared" / "data")
    root = base / "klines"
    if not all((root / f).is_file() for f in (*ONE_MIN, *HIGHER.values())):
        print(f"kline files missing in {root} (this benchmark reads real data)")
        return 0
    asyncio.run(run(root, args.symbols, args.warm, args.minutes, not args.no_freeze))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
