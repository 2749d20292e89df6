"""Exchange time: the feed decides what is closed, where warm-up starts and what is fresh on Binance's clock
(measured with GET /fapi/v1/time), so a machine whose clock is minutes off stores exactly Binance's candles."""

from __future__ import annotations

import asyncio

import pytest

from src.market.exchange_clock import ExchangeClock
from src.market.feed import BinanceKlineFeed
from tests.fakes.binance import FakeBinance
from tests.test_market_feed import CollectSink, eventually, no_store, settings_for

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TFS = ("1m", "5m")
MINUTE = 60_000


def assert_exactly_binance(fake: FakeBinance, sink: CollectSink) -> None:
    """Every delivered candle is a closed Binance candle with its final values, each once, without holes."""
    for stream, got in sink.by_stream.items():
        assert got, stream
        expected = fake.closed_candles(*stream, since_ms=got[0].open_time_ms)
        assert got == expected, stream


@pytest.mark.parametrize("machine_behind_ms", [5 * MINUTE, -5 * MINUTE, 37_000])
async def test_a_machine_whose_clock_is_off_stores_exactly_binances_closed_candles(machine_behind_ms: int) -> None:
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=9, clock_offset_ms=machine_behind_ms) as fake:
        sink = CollectSink()
        feed = BinanceKlineFeed(settings_for(fake), sink, no_store, clock=fake.machine_clock)
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(feed.warmed_up.wait(), 10)
            await fake.wait_for_connections(1)
            # warm-up reaches the newest candle closed on the EXCHANGE's clock
            newest = {s: fake.closed_candles(*s, since_ms=fake.now_ms - 3_600_000)[-1].open_time_ms
                      for s in sink.by_stream}
            assert {s: sink.last(s) for s in sink.by_stream} == newest
            await fake.advance(7)
            await eventually(lambda: all(
                sink.last(s) == fake.closed_candles(*s, since_ms=fake.now_ms - 3_600_000)[-1].open_time_ms
                for s in sink.by_stream))
            assert feed.exchange_clock.offset_ms == machine_behind_ms
            assert all(s.fresh for s in feed.stats().streams)
        finally:
            await feed.stop()
            await task
        assert_exactly_binance(fake, sink)
        assert set(sink.by_stream) == {(s, t) for s in SYMBOLS for t in TFS}


async def test_the_clock_offset_uses_the_shortest_round_trip_and_event_times_only_trigger_a_remeasure() -> None:
    local = [1000.0]
    server = [1_000_000 + 250_000]  # the exchange is 250 s ahead
    rtts = iter([0.4, 0.05, 0.2])

    async def fetch() -> int:
        rtt = next(rtts)
        local[0] += rtt / 2
        value = server[0] + int(local[0] * 1000) - 1_000_000
        local[0] += rtt / 2
        return value

    clock = ExchangeClock(fetch, local_clock=lambda: local[0], monotonic=lambda: local[0])
    assert not clock.measured and clock.now_ms() == 1_000_000
    sample = await clock.measure()
    assert sample.uncertainty_ms == pytest.approx(25.0)
    assert clock.offset_ms == 250_000
    assert clock.now_ms() == int(local[0] * 1000) + 250_000
    # an event time at (or behind) the exchange's now is normal; one far ahead marks the offset stale
    assert clock.observe_event(clock.now_ms() - 300) is False and not clock.stale
    assert clock.observe_event(clock.now_ms() + 60_000) is True and clock.stale
    assert clock.offset_ms == 250_000  # a frame never moves the clock by itself


async def test_a_failed_measurement_keeps_the_last_offset() -> None:
    calls = {"n": 0}

    async def fetch() -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("network down")
        return 5_000

    clock = ExchangeClock(fetch, local_clock=lambda: 1.0, samples=1)
    await clock.measure()
    assert clock.offset_ms == 4_000
    with pytest.raises(OSError):
        await clock.measure()
    assert clock.offset_ms == 4_000 and clock.status().failures == 1


async def test_a_local_clock_that_steps_back_while_running_loses_no_candle() -> None:
    # NTP steps the machine's clock 5 minutes back mid-run: closed frames now look 5 minutes early. Their
    # event times say the clock estimate is stale: it is re-measured and the streams resync from REST.
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=12) as fake:
        sink = CollectSink()
        feed = BinanceKlineFeed(settings_for(fake), sink, no_store, clock=fake.machine_clock)
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(feed.warmed_up.wait(), 10)
            await fake.wait_for_connections(2)
            await fake.advance(2)
            fake.clock_offset_ms = 5 * MINUTE  # the step
            await fake.advance(6)
            await eventually(lambda: all(
                sink.last(s) == fake.closed_candles(*s, since_ms=fake.now_ms - 3_600_000)[-1].open_time_ms
                for s in sink.by_stream), within_s=15)
            assert feed.exchange_clock.offset_ms == 5 * MINUTE
            assert feed.stats().future_dropped > 0
        finally:
            await feed.stop()
            await task
        assert_exactly_binance(fake, sink)
