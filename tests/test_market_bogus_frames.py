"""Whatever frames arrive - future-dated, the forming interval marked closed, absurd or unstorable numbers,
oversize, duplicate, out of order - the candles stored are exactly what Binance's REST returns for those
intervals, real candles are never dropped as "late", and no stream looks fresh on a bogus candle."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.analysis import timeframes
from src.analysis.types import Candle
from src.market.feed import BinanceKlineFeed
from src.storage.sqlite_store import SqliteStore
from tests.fakes.binance import FakeBinance, kline_frame
from tests.test_market_feed import eventually, settings_for

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TFS = ("1m", "5m")
MINUTE = 60_000


class StoreSink:
    """The feed's sink writing straight into a SQLite store (what the bot stores, minus the analysis)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.last: dict[tuple[str, str], int] = {}

    async def on_candles(self, candles: Sequence[Candle], source: str) -> None:
        await self.store.upsert_candles(candles)
        for c in candles:
            self.last[c.stream] = c.open_time_ms


def bogus(candle: Candle, **changes: object) -> Candle:
    return dataclasses.replace(candle, **changes)  # type: ignore[arg-type]


def forming(fake: FakeBinance, symbol: str, tf: str) -> Candle:
    """The candle still forming at market time, marked closed."""
    c = fake.market.candle(symbol, tf, timeframes.bucket_start(tf, fake.now_ms), upto_ms=fake.now_ms, partial=0.5)
    return bogus(c, closed=True)


async def inject(fake: FakeBinance, feed: BinanceKlineFeed, frame: str) -> None:
    """Send ``frame`` to every connection and wait until the feed has read it: market time is frozen between
    advances, so a frame must be judged at the market time it was sent at, as it would be live."""
    before = feed.stats().frames_received
    await fake.send_raw(frame)
    await eventually(lambda: feed.stats().frames_received >= before + len(fake.open_connections))


async def run_feed(tmp_path: Path, fake: FakeBinance) -> tuple[BinanceKlineFeed, asyncio.Task[None], SqliteStore, StoreSink]:
    store = SqliteStore(tmp_path / f"w{fake.seed}-{id(fake)}.db")
    await store.open()
    sink = StoreSink(store)
    feed = BinanceKlineFeed(settings_for(fake), sink, store.last_open_time, clock=fake.clock)
    task = asyncio.create_task(feed.run())
    await asyncio.wait_for(feed.warmed_up.wait(), 10)
    await fake.wait_for_connections(2)
    return feed, task, store, sink


async def finish(fake: FakeBinance, feed: BinanceKlineFeed, task: asyncio.Task[None], sink: StoreSink) -> None:
    await fake.advance(5)
    await eventually(lambda: all(
        sink.last.get((s, t)) == fake.closed_candles(s, t, since_ms=fake.now_ms - 3_600_000)[-1].open_time_ms
        for s in SYMBOLS for t in TFS), within_s=15)
    await feed.stop()
    await task


async def assert_store_is_binance(fake: FakeBinance, store: SqliteStore) -> None:
    for s in SYMBOLS:
        for t in TFS:
            got = await store.load_candles(s, t)
            assert got, (s, t)
            assert got == fake.closed_candles(s, t, since_ms=got[0].open_time_ms), (s, t)


async def test_a_future_dated_closed_frame_is_never_stored_and_never_makes_real_candles_late(tmp_path: Path) -> None:
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=41) as fake:
        feed, task, store, sink = await run_feed(tmp_path, fake)
        real = fake.market.candle("BTCUSDT", "1m", fake.now_ms + 10 * MINUTE)  # 10 minutes ahead
        await inject(fake, feed, kline_frame(real, fake.now_ms))
        await inject(fake, feed, kline_frame(forming(fake, "ETHUSDT", "5m"), fake.now_ms))
        await inject(fake, feed, kline_frame(bogus(forming(fake, "ETHUSDT", "1m"), high=1e308), fake.now_ms))
        assert feed.stats().future_dropped == 2 and feed.stats().frames_invalid == 2  # the 1e308 one, on 2 sockets
        await fake.advance(12)
        await finish(fake, feed, task, sink)
        await assert_store_is_binance(fake, store)
        assert feed.stats().late_dropped == 0
        await store.close()


async def test_absurd_or_unstorable_closed_frames_are_replaced_by_binances_rest_copy(tmp_path: Path) -> None:
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=42) as fake:
        feed, task, store, sink = await run_feed(tmp_path, fake)
        for changes in ({"high": 1e308}, {"volume": 1e308, "quote_volume": 1e308}, {"trades": 2**63},
                        {"high": 1e12}, {"low": 1e-12}):
            await fake.send_partials()
            await fake.advance(1, send=False)
            just_closed = fake.market.candle("BTCUSDT", "1m", fake.now_ms - MINUTE)
            await inject(fake, feed, kline_frame(bogus(just_closed, **changes), fake.now_ms))  # before the real one
            await fake.send_closed()
        # a 50x jump within one minute is implausible: not stored, fetched from REST instead
        await fake.advance(1, send=False)
        just_closed = fake.market.candle("ETHUSDT", "1m", fake.now_ms - MINUTE)
        await inject(fake, feed, kline_frame(bogus(just_closed, high=just_closed.high * 50), fake.now_ms))
        await fake.send_closed()
        await finish(fake, feed, task, sink)
        stats = feed.stats()
        assert stats.frames_invalid >= 5 and stats.implausible_dropped == 1
        await assert_store_is_binance(fake, store)
        await store.close()


async def test_no_stream_is_fresh_on_the_strength_of_a_bogus_candle(tmp_path: Path) -> None:
    async with FakeBinance(["BTCUSDT"], ["1m"], seed=43) as fake:
        store = SqliteStore(tmp_path / "w.db")
        await store.open()
        sink = StoreSink(store)
        feed = BinanceKlineFeed(settings_for(fake, symbols=("BTCUSDT",), tfs=("1m",)), sink, store.last_open_time,
                                clock=fake.clock)
        task = asyncio.create_task(feed.run())
        await asyncio.wait_for(feed.warmed_up.wait(), 10)
        await fake.wait_for_connections(1)
        fake.now_ms += 10 * MINUTE  # the feed went quiet for 10 minutes: stale
        await inject(fake, feed, kline_frame(fake.market.candle("BTCUSDT", "1m", fake.now_ms + 5 * MINUTE), fake.now_ms))
        assert not feed.stats().streams[0].fresh
        assert (await store.last_open_time("BTCUSDT", "1m") or 0) < fake.now_ms
        await feed.stop()
        await task
        await store.close()


# ------------------------------------------------------------------ property: any mix of frames
STEP = st.one_of(
    st.tuples(st.just("advance"), st.integers(1, 3)),
    st.tuples(st.just("future"), st.integers(1, 600)),  # a closed frame this many minutes ahead
    st.tuples(st.just("forming"), st.sampled_from(["real", "absurd"])),  # the forming interval marked closed
    st.tuples(st.just("absurd_at_close"), st.sampled_from(["1e308", "trades", "negative", "nan", "jump", "tiny"])),
    st.tuples(st.just("duplicate"), st.just(0)),
    st.tuples(st.just("out_of_order"), st.integers(2, 30)),
    st.tuples(st.just("huge"), st.sampled_from([20_000, 70_000])),  # parse limit / the socket's frame limit
)
ABSURD: dict[str, dict[str, object]] = {
    "1e308": {"high": 1e308, "volume": 1e308}, "trades": {"trades": 2**63}, "negative": {"volume": -5.0},
    "nan": {"close": float("nan")}, "jump": {"low": 1e-3, "open": 1e-3}, "tiny": {"low": 1e-300},
}


async def play(fake: FakeBinance, feed: BinanceKlineFeed, steps: Sequence[tuple[str, int | str]], sym: str,
               tf: str) -> None:
    async def send(frame: str) -> None:
        await inject(fake, feed, frame)

    for kind, arg in steps:
        if kind == "advance":
            await fake.advance(int(arg))
        elif kind == "future":
            ahead = fake.market.candle(sym, tf, timeframes.bucket_start(tf, fake.now_ms + int(arg) * MINUTE))
            await send(kline_frame(ahead, fake.now_ms))
        elif kind == "forming":
            c = forming(fake, sym, tf)
            await send(kline_frame(c if arg == "real" else bogus(c, high=c.high * 1e6), fake.now_ms))
        elif kind == "absurd_at_close":
            await fake.send_partials()
            await fake.advance(1, send=False)
            closed = fake.market.candle(sym, "1m", fake.now_ms - MINUTE)
            await send(kline_frame(bogus(closed, **ABSURD[str(arg)]), fake.now_ms))
            await fake.send_closed()
        elif kind == "duplicate":
            last = fake.market.candle(sym, "1m", fake.now_ms - MINUTE)
            await send(kline_frame(last, fake.now_ms))
        elif kind == "out_of_order":
            old = fake.market.candle(sym, "1m", fake.now_ms - int(arg) * MINUTE)
            await send(kline_frame(old, fake.now_ms))
        elif kind == "huge":
            frame = kline_frame(fake.market.candle(sym, "1m", fake.now_ms - MINUTE), fake.now_ms)
            await send(frame[:-1] + ', "pad": "' + "x" * int(arg) + '"}')
        await asyncio.sleep(0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=12), sym=st.sampled_from(SYMBOLS), tf=st.sampled_from(TFS),
       seed=st.integers(0, 10_000))
async def test_whatever_frames_arrive_the_store_holds_exactly_binances_rest_candles(
    tmp_path: Path, steps: list[tuple[str, int | str]], sym: str, tf: str, seed: int
) -> None:
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=seed) as fake:
        feed, task, store, sink = await run_feed(tmp_path, fake)
        await play(fake, feed, steps, sym, tf)
        await finish(fake, feed, task, sink)
        await assert_store_is_binance(fake, store)
        await store.close()
