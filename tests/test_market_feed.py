"""BinanceKlineFeed end to end against the local fake Binance (WebSocket + REST).

The core assertion everywhere: per (symbol, timeframe) the sink received every closed candle exactly
once, ascending, with Binance's final values (never a forming candle), and nothing else.
"""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from src.analysis.types import Candle
from src.market.binance_rest import RestSettings
from src.market.feed import BinanceKlineFeed, FeedSettings
from src.market.ws import WsSettings
from tests.fakes.binance import FakeBinance

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TFS = ("1m", "5m")


class CollectSink:
    def __init__(self, fail_first_live: int = 0) -> None:
        self.calls: list[tuple[str, list[Candle]]] = []
        self.by_stream: dict[tuple[str, str], list[Candle]] = defaultdict(list)
        self.fail_live = fail_first_live

    async def on_candles(self, candles: Sequence[Candle], source: str) -> None:
        if source == "live" and self.fail_live > 0:
            self.fail_live -= 1
            raise RuntimeError("store is down")
        self.calls.append((source, list(candles)))
        for c in candles:
            self.by_stream[c.stream].append(c)

    def last(self, stream: tuple[str, str]) -> int | None:
        got = self.by_stream.get(stream)
        return got[-1].open_time_ms if got else None


def settings_for(fake: FakeBinance, symbols: Sequence[str] = SYMBOLS, tfs: Sequence[str] = TFS, **kw: object) -> FeedSettings:
    ws = WsSettings(base_url=fake.ws_url, reconnect_delay_s=0.01, max_reconnect_delay_s=0.05, stall_timeout_s=5.0,
                    watchdog_interval_s=0.02, healthy_after_s=0.2, open_timeout_s=2.0, rotation_overlap_s=1.0)
    rest = RestSettings(base_url=fake.rest_url, close_margin_ms=0, backoff_base_s=0.01, backoff_cap_s=0.05)
    base = FeedSettings(symbols=tuple(symbols), timeframes=tuple(tfs), ws=ws, rest=rest, warmup_candles=30,
                        streams_per_connection=3, resync_retry_s=0.01, resync_retry_cap_s=0.05)
    ws_kw = {k[3:]: v for k, v in kw.items() if k.startswith("ws_")}
    other = {k: v for k, v in kw.items() if not k.startswith("ws_")}
    return replace(base, ws=replace(ws, **ws_kw), **other)  # type: ignore[arg-type]


async def no_store(symbol: str, timeframe: str) -> int | None:
    return None


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=5) as f:
        yield f


async def eventually(cond: Callable[[], bool], within_s: float = 10.0) -> None:
    """Poll ``cond`` (state spread over the feed and the fake has no single event to wait on)."""
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def caught_up(fake: FakeBinance, sink: CollectSink, streams: Sequence[tuple[str, str]]) -> Callable[[], bool]:
    def check() -> bool:
        return all(sink.last(s) == fake.closed_candles(*s, since_ms=fake.now_ms - 10 * 300_000)[-1].open_time_ms
                   for s in streams)
    return check


def assert_exactly_once(fake: FakeBinance, sink: CollectSink, streams: Sequence[tuple[str, str]]) -> None:
    assert set(sink.by_stream) == set(streams)
    for s in streams:
        got = sink.by_stream[s]
        assert got, s
        expected = fake.closed_candles(*s, since_ms=got[0].open_time_ms)
        assert [c.open_time_ms for c in got] == [c.open_time_ms for c in expected], s
        assert got == expected, s  # final values, all closed


def streams_of(symbols: Sequence[str] = SYMBOLS, tfs: Sequence[str] = TFS) -> list[tuple[str, str]]:
    return [(s, t) for s in symbols for t in tfs]


async def start(feed: BinanceKlineFeed) -> asyncio.Task[None]:
    task = asyncio.create_task(feed.run())
    async with asyncio.timeout(10):
        await feed.warmed_up.wait()
    return task


async def test_feed_delivers_every_closed_candle_once_through_drops_duplicates_holes_and_stalls(fake: FakeBinance) -> None:
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake, ws_stall_timeout_s=0.4), sink, no_store, clock=fake.clock)
    task = await start(feed)
    streams = streams_of()
    await fake.wait_for_connections(2)
    assert [src for src, _ in sink.calls[:4]] == ["warmup"] * 4
    assert all(len(sink.by_stream[s]) == 30 for s in streams)

    await fake.advance(3)
    await eventually(caught_up(fake, sink, streams))

    # 1) the connection drops mid-candle, three times; minutes pass while it is down
    for i in range(3):
        await fake.send_partials()
        await fake.drop_connections()
        await fake.advance(2)
        await fake.wait_for_connections(2 + 2 * (i + 1))
        await fake.advance(1)
        await eventually(caught_up(fake, sink, streams))

    # 2) duplicates, out-of-order/late frames and garbage frames
    fake.duplicate_closed = fake.resend_previous_closed = fake.garbage = True
    await fake.advance(6)
    await eventually(caught_up(fake, sink, streams))
    fake.duplicate_closed = fake.resend_previous_closed = fake.garbage = False

    # 3) a hole without a disconnect: frames of 3 minutes are never sent
    await fake.advance(3, send=False)
    await fake.advance(2)
    await eventually(caught_up(fake, sink, streams))

    # 4) a silence: connections stay up but nothing arrives -> stall detection reconnects and backfills
    connections_before = fake.connections_total
    fake.silent = True
    await fake.advance(2)
    await eventually(lambda: feed.stats().stalls >= 1)
    fake.silent = False
    await fake.wait_for_connections(connections_before + 2)
    await fake.advance(1)
    await eventually(caught_up(fake, sink, streams))

    await feed.stop()
    assert task.done() and task.exception() is None
    assert_exactly_once(fake, sink, streams)
    stats = feed.stats()
    assert stats.reconnects_by_reason.get("dropped", 0) >= 6  # 3 drops x 2 connections
    assert stats.reconnects_by_reason.get("stall", 0) >= 2
    assert stats.duplicates_dropped > 0 and stats.late_dropped > 0 and stats.frames_invalid > 0
    assert stats.gaps_backfilled >= 1 and stats.candles_backfilled >= 3
    assert stats.candles_delivered["warmup"] == 4 * 30
    assert {s.symbol for s in stats.streams} == set(SYMBOLS)
    assert all(s.reconnects >= 3 and s.stalls >= 1 for s in stats.streams)
    assert len(stats.connections) == 2 and sum(c.streams for c in stats.connections) == 4


async def test_rotation_before_the_age_limit_loses_and_duplicates_nothing(fake: FakeBinance) -> None:
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake, ws_max_connection_age_s=0.25), sink, no_store, clock=fake.clock)
    task = await start(feed)
    streams = streams_of()
    for _ in range(40):
        await fake.advance(1)
        await asyncio.sleep(0.02)
    await eventually(caught_up(fake, sink, streams))
    rotations = sum(c.rotations for c in feed._connections)
    await feed.stop()
    await task
    assert rotations >= 2
    assert_exactly_once(fake, sink, streams)
    stats = feed.stats()
    assert stats.reconnects_by_reason == {}  # a rotation is not a reconnect
    assert stats.candles_backfilled == 0  # nothing had to be repaired from REST
    assert stats.duplicates_dropped > 0  # both connections delivered during the overlap


async def test_server_side_age_cut_is_survived_with_a_backfill(fake: FakeBinance) -> None:
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake), sink, no_store, clock=fake.clock)
    task = await start(feed)
    await fake.wait_for_connections(2)
    await asyncio.sleep(0.1)
    fake.max_connection_age_s = 0.05  # the server now cuts every connection older than this
    await fake.advance(2)
    fake.max_connection_age_s = None
    await fake.wait_for_connections(4)
    await fake.advance(1)
    await eventually(caught_up(fake, sink, streams_of()))
    await feed.stop()
    await task
    assert_exactly_once(fake, sink, streams_of())
    assert feed.stats().reconnects_by_reason.get("closed_by_server", 0) >= 2


async def test_a_single_silent_stream_counts_as_a_stall_and_reconnects(fake: FakeBinance) -> None:
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake, ws_stall_timeout_s=0.3, stream_stall_intervals=0.0), sink,
                            no_store, clock=fake.clock)
    task = await start(feed)
    fake.muted_streams = {("ETHUSDT", "1m")}
    async with asyncio.timeout(10):
        while feed.stats().reconnects_by_reason.get("stream_stall", 0) < 1:
            await fake.advance(1)
            await asyncio.sleep(0.03)
    fake.muted_streams = set()
    await fake.advance(1)
    await eventually(caught_up(fake, sink, streams_of()))
    await feed.stop()
    await task
    assert_exactly_once(fake, sink, streams_of())
    eth = next(s for s in feed.stats().streams if (s.symbol, s.timeframe) == ("ETHUSDT", "1m"))
    assert eth.stalls >= 1


async def test_warmup_resumes_after_the_last_stored_candle(fake: FakeBinance) -> None:
    stored = {s: fake.closed_candles(*s)[-8].open_time_ms for s in streams_of()}

    async def last_open(symbol: str, tf: str) -> int | None:
        return stored[(symbol, tf)]

    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake), sink, last_open, clock=fake.clock)
    task = await start(feed)
    for s in streams_of():
        assert [c.open_time_ms for c in sink.by_stream[s]] == [c.open_time_ms for c in fake.closed_candles(*s)[-7:]]
    await fake.wait_for_connections(2)
    await fake.advance(5)
    await eventually(caught_up(fake, sink, streams_of()))
    await feed.stop()
    await task
    assert_exactly_once(fake, sink, streams_of())


async def test_sink_failure_is_repaired_from_rest_without_loss(fake: FakeBinance) -> None:
    sink = CollectSink(fail_first_live=2)
    feed = BinanceKlineFeed(settings_for(fake), sink, no_store, clock=fake.clock)
    task = await start(feed)
    await fake.wait_for_connections(2)
    for _ in range(6):
        await fake.advance(1)
        await asyncio.sleep(0.02)
    await eventually(caught_up(fake, sink, streams_of()))
    await feed.stop()
    await task
    assert_exactly_once(fake, sink, streams_of())
    assert feed.stats().sink_errors == 2


async def test_rest_failing_during_a_hole_holds_the_stream_then_repairs_it(fake: FakeBinance) -> None:
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake), sink, no_store, clock=fake.clock)
    task = await start(feed)
    await fake.wait_for_connections(2)
    await fake.advance(1)
    await eventually(caught_up(fake, sink, streams_of(tfs=("1m",))))
    fake.fail_next(503, times=8)  # two whole backfill attempts (4 tries each) fail
    await fake.advance(2, send=False)
    await fake.advance(3)
    await eventually(caught_up(fake, sink, streams_of()))
    await feed.stop()
    await task
    assert_exactly_once(fake, sink, streams_of())
    stats = feed.stats()
    assert stats.held_for_resync >= 1 and stats.rest_errors >= 8 and stats.gaps_backfilled >= 1


async def test_unknown_symbols_are_reported_and_not_subscribed(fake: FakeBinance) -> None:
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake, symbols=("BTCUSDT", "FOOUSDT"), tfs=("1m",)), sink, no_store,
                            clock=fake.clock)
    task = await start(feed)
    await fake.wait_for_connections(1)
    await fake.advance(2)
    await eventually(caught_up(fake, sink, [("BTCUSDT", "1m")]))
    await feed.stop()
    await task
    stats = feed.stats()
    assert stats.symbols == ("BTCUSDT",) and stats.unknown_symbols == ("FOOUSDT",)
    assert set(sink.by_stream) == {("BTCUSDT", "1m")}


async def test_symbols_all_streams_every_tradable_perpetual(fake: FakeBinance) -> None:
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake, symbols=(), tfs=("1m",), symbols_all=True), sink, no_store,
                            clock=fake.clock)
    task = await start(feed)
    await feed.stop()
    await task
    assert feed.stats().symbols == SYMBOLS
    assert set(sink.by_stream) == {(s, "1m") for s in SYMBOLS}


async def test_a_legacy_unrouted_url_is_detected_as_a_stall(fake: FakeBinance) -> None:
    root = fake.ws_url.removesuffix("/market")  # ws://host:port/stream?streams=... is accepted but silent
    feed = BinanceKlineFeed(settings_for(fake, ws_base_url=root, ws_stall_timeout_s=0.2), CollectSink(), no_store,
                            clock=fake.clock)
    task = await start(feed)
    for _ in range(3):
        await fake.advance(1)
    await eventually(lambda: feed.stats().reconnects_by_reason.get("stall", 0) >= 2)
    await feed.stop()
    await task
    assert feed.stats().closed_candles == 0


async def test_an_oversize_frame_closes_the_connection_and_nothing_is_lost(fake: FakeBinance) -> None:
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake, ws_max_frame_bytes=4096), sink, no_store, clock=fake.clock)
    task = await start(feed)
    await fake.wait_for_connections(2)
    await fake.advance(1)
    await fake.send_raw('{"stream":"btcusdt@kline_1m","data":"' + "x" * 10_000 + '"}')
    await fake.advance(2)
    await fake.wait_for_connections(3)
    await fake.advance(5)
    await eventually(caught_up(fake, sink, streams_of()))
    await feed.stop()
    await task
    assert_exactly_once(fake, sink, streams_of())
    assert sum(feed.stats().reconnects_by_reason.values()) >= 1


async def test_a_418_ban_pauses_the_feed_until_retry_after_then_it_warms_up(fake: FakeBinance) -> None:
    fake.fail_next(418, retry_after=1)
    sink = CollectSink()
    feed = BinanceKlineFeed(settings_for(fake), sink, no_store, clock=fake.clock)
    with capture_logs() as logs:
        task = await start(feed)
    paths = [p for p, _ in fake.rest_requests]
    await feed.stop()
    await task
    # the first request (Binance's clock) is banned; after the ban: the clock, then one exchangeInfo call
    assert feed.stats().rest_418 == 1 and paths[0] == "/fapi/v1/time" and paths.count("/fapi/v1/exchangeInfo") == 1
    retry = [e for e in logs if e["event"].startswith("cannot validate symbols yet")]
    assert len(retry) == 1 and retry[0]["retry_in_s"] >= 0.9  # it waited out Retry-After, not the 0.01 s backoff
    assert all(len(sink.by_stream[s]) == 30 for s in streams_of())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_binance_is_reported_and_retried_forever() -> None:
    port = closed_port()
    ws = WsSettings(base_url=f"ws://127.0.0.1:{port}/market", reconnect_delay_s=0.01, max_reconnect_delay_s=0.03,
                    watchdog_interval_s=0.02)
    rest = RestSettings(base_url=f"http://127.0.0.1:{port}", backoff_base_s=0.01, backoff_cap_s=0.02, max_attempts=2)
    settings = FeedSettings(symbols=("BTCUSDT",), timeframes=("1m",), ws=ws, rest=rest, validate_symbols=False,
                            resync_retry_s=0.01, resync_retry_cap_s=0.03)
    feed = BinanceKlineFeed(settings, CollectSink(), no_store)
    with capture_logs() as logs:
        task = asyncio.create_task(feed.run())
        await eventually(lambda: bool(feed._connections) and feed._connections[0].failed_attempts >= 5
                         and feed.stats().rest_errors >= 4)
        assert not task.done()
        await feed.stop()
    assert task.done() and task.exception() is None
    events = {e["event"] for e in logs}
    assert "Binance WebSocket unreachable, retrying" in events
    assert "Binance REST unreachable, retrying" in events
    assert not feed.warmed_up.is_set()


async def test_symbol_validation_keeps_retrying_while_rest_is_down() -> None:
    port = closed_port()
    rest = RestSettings(base_url=f"http://127.0.0.1:{port}", backoff_base_s=0.01, backoff_cap_s=0.02, max_attempts=1)
    settings = FeedSettings(symbols=("BTCUSDT",), timeframes=("1m",), rest=rest, resync_retry_s=0.01,
                            resync_retry_cap_s=0.02)
    feed = BinanceKlineFeed(settings, CollectSink(), no_store)
    with capture_logs() as logs:
        task = asyncio.create_task(feed.run())
        await eventually(lambda: feed.stats().rest_errors >= 3)
        await feed.stop()
    assert task.exception() is None
    assert any(e["event"].startswith("cannot validate symbols yet") for e in logs)


async def test_cancelling_run_propagates_and_closes_cleanly(fake: FakeBinance) -> None:
    feed = BinanceKlineFeed(settings_for(fake), CollectSink(), no_store, clock=fake.clock)
    task = await start(feed)
    await fake.wait_for_connections(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: not fake.open_connections)
