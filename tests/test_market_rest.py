"""Binance REST client against the local fake: symbol validation, paging, weight budget, 429/418, outages."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from src.market.binance_rest import (
    BinanceRestClient,
    RestBanned,
    RestRequestError,
    RestSettings,
    RestUnavailable,
)
from tests.fakes.binance import FakeBinance


class FakeTime:
    """Wall clock, monotonic clock and sleep that only move when the code under test sleeps."""

    def __init__(self, wall: float = 1_767_571_200.0) -> None:
        self.wall = wall
        self.mono = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.wall += seconds
        self.mono += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(["BTCUSDT", "ETHUSDT", "SOLUSDT"], ["1m"], seed=11) as f:
        yield f


def client(url: str, t: FakeTime, **kw: object) -> BinanceRestClient:
    kw.setdefault("close_margin_ms", 0)  # the fake's clock is exact; the skew test sets its own
    return BinanceRestClient(RestSettings(base_url=url, **kw), clock=t.clock,  # type: ignore[arg-type]
                             monotonic=t.monotonic, sleep=t.sleep, rng=lambda: 0.5)


async def test_unknown_and_non_perpetual_symbols_are_reported_not_selected(fake: FakeBinance) -> None:
    async with client(fake.rest_url, FakeTime()) as rest:
        sel = await rest.select_symbols(["BTCUSDT", "FOOUSDT", "OLDUSDT", "ETHBTC", "BTCUSDT_260327", "SOLUSDT"])
    assert sel.symbols == ("BTCUSDT", "SOLUSDT")
    assert sel.unknown == ("FOOUSDT", "OLDUSDT", "ETHBTC", "BTCUSDT_260327")


async def test_symbols_all_selects_every_trading_usdt_perpetual(fake: FakeBinance) -> None:
    async with client(fake.rest_url, FakeTime()) as rest:
        sel = await rest.select_symbols([], all_symbols=True)
    assert sel.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT") and sel.unknown == ()


async def test_klines_pages_at_1000_ascending_without_the_forming_candle(fake: FakeBinance) -> None:
    await fake.advance(7, send=False)  # the forming candle is mid-history, not at a page edge
    async with client(fake.rest_url, FakeTime(), close_margin_ms=0) as rest:
        got = await rest.klines("BTCUSDT", "1m", fake.history_start_ms or 0, now_ms=fake.now_ms)
    expected = fake.closed_candles("BTCUSDT", "1m")
    assert len(expected) == 3 * 1440 + 7
    assert got == expected
    pages = [q for path, q in fake.rest_requests if path == "/fapi/v1/klines"]
    assert len(pages) == 5 and [q["limit"] for q in pages] == ["1000"] * 4 + [str(len(expected) - 4000 + 1)]
    starts = [int(q["startTime"]) for q in pages]
    assert starts[0] == expected[0].open_time_ms
    assert starts[1:] == [expected[i * 1000 - 1].open_time_ms + 1 for i in range(1, 5)]  # last open + 1


async def test_klines_within_the_clock_skew_margin_are_not_taken_as_closed(fake: FakeBinance) -> None:
    async with client(fake.rest_url, FakeTime(), close_margin_ms=1000) as rest:
        got = await rest.klines("ETHUSDT", "1m", fake.now_ms - 10 * 60_000, now_ms=fake.now_ms + 500)
    # the candle that closed 1 ms before the fake's now is within the 1 s margin: not yet trusted
    assert [c.open_time_ms for c in got] == [fake.now_ms - i * 60_000 for i in range(10, 1, -1)]


async def test_latest_klines_returns_the_newest_closed_ones(fake: FakeBinance) -> None:
    async with client(fake.rest_url, FakeTime()) as rest:
        got = await rest.latest_klines("SOLUSDT", "1m", 500, now_ms=fake.now_ms)
    assert got == fake.closed_candles("SOLUSDT", "1m")[-500:]


async def test_latest_klines_gives_the_full_count_when_the_newest_is_within_the_skew_margin(fake: FakeBinance) -> None:
    async with client(fake.rest_url, FakeTime(), close_margin_ms=1000) as rest:
        got = await rest.latest_klines("SOLUSDT", "1m", 50, now_ms=fake.now_ms)
    assert got == fake.closed_candles("SOLUSDT", "1m")[-51:-1]


async def test_no_request_is_made_when_no_new_candle_can_have_closed(fake: FakeBinance) -> None:
    async with client(fake.rest_url, FakeTime()) as rest:
        got = await rest.klines("BTCUSDT", "1m", fake.now_ms, now_ms=fake.now_ms + 30_000)
    assert got == [] and fake.rest_requests == []


async def test_a_small_backfill_asks_for_few_rows_at_weight_1(fake: FakeBinance) -> None:
    fake.used_weight = 0
    async with client(fake.rest_url, FakeTime()) as rest:
        got = await rest.klines("BTCUSDT", "1m", fake.now_ms - 3 * 60_000, now_ms=fake.now_ms)
    assert len(got) == 3
    assert [q["limit"] for _, q in fake.rest_requests] == ["4"] and fake.used_weight == 1


async def test_client_pauses_until_next_minute_before_exceeding_weight_budget(fake: FakeBinance) -> None:
    t = FakeTime(wall=1_767_571_230.0)  # 30 s into a minute
    fake.used_weight = 1991
    async with client(fake.rest_url, t) as rest:
        await rest.klines("BTCUSDT", "1m", fake.now_ms - 600 * 60_000, now_ms=fake.now_ms)  # weight 5 -> 1996
        assert t.sleeps == [] and rest.stats().used_weight_1m == 1996
        await rest.klines("BTCUSDT", "1m", fake.now_ms - 600 * 60_000, now_ms=fake.now_ms)  # 1996 + 5 > 2000
        assert t.sleeps == [30.5]
        assert rest.stats().weight_pauses == 1


async def test_429_waits_retry_after_then_succeeds(fake: FakeBinance) -> None:
    t = FakeTime()
    fake.fail_next(429, retry_after=7)
    async with client(fake.rest_url, t) as rest:
        got = await rest.klines("BTCUSDT", "1m", fake.now_ms - 3 * 60_000, now_ms=fake.now_ms)
        assert len(got) == 3 and t.sleeps == [7.0] and rest.stats().rest_429 == 1


async def test_418_stops_every_call_until_retry_after_has_passed(fake: FakeBinance) -> None:
    t = FakeTime()
    fake.fail_next(418, retry_after=30)
    async with client(fake.rest_url, t) as rest:
        with pytest.raises(RestBanned):
            await rest.klines("BTCUSDT", "1m", fake.now_ms - 3 * 60_000, now_ms=fake.now_ms)
        made = len(fake.rest_requests)
        t.mono += 29
        with pytest.raises(RestBanned):
            await rest.tradable_usdt_perpetuals()
        with pytest.raises(RestBanned):
            await rest.klines("ETHUSDT", "1m", fake.now_ms - 3 * 60_000, now_ms=fake.now_ms)
        assert len(fake.rest_requests) == made  # nothing was sent during the ban
        assert t.sleeps == [] and rest.stats().rest_418 == 1 and rest.stats().banned
        t.mono += 2
        assert len(await rest.klines("ETHUSDT", "1m", fake.now_ms - 3 * 60_000, now_ms=fake.now_ms)) == 3


async def test_5xx_is_retried_with_capped_jittered_backoff(fake: FakeBinance) -> None:
    t = FakeTime()
    fake.fail_next(503, times=2)
    async with client(fake.rest_url, t, backoff_base_s=1.0, backoff_cap_s=30.0) as rest:
        assert len(await rest.klines("BTCUSDT", "1m", fake.now_ms - 2 * 60_000, now_ms=fake.now_ms)) == 2
    assert t.sleeps == [1.0, 1.5]  # uniform(1, 1) then uniform(1, 2) with rng 0.5


async def test_invalid_symbol_is_a_permanent_request_error(fake: FakeBinance) -> None:
    async with client(fake.rest_url, FakeTime()) as rest:
        with pytest.raises(RestRequestError) as info:
            await rest.klines("NOPEUSDT", "1m", fake.now_ms - 60_000 * 5, now_ms=fake.now_ms)
    assert info.value.status == 400 and info.value.code == -1121


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_binance_raises_unavailable_after_logged_retries() -> None:
    t = FakeTime()
    async with client(f"http://127.0.0.1:{closed_port()}", t, max_attempts=3) as rest:
        with pytest.raises(RestUnavailable, match="after 3 attempts"):
            await rest.tradable_usdt_perpetuals()
    assert len(t.sleeps) == 2 and rest.stats().errors == 3
