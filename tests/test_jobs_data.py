"""Where a job's candles come from: store coverage, the monthly REST cache, and the weight ceiling that keeps
job downloads out of the live stream's share of Binance's per-IP budget."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from backtest.jobs.data import covers, download_cached, expected_slots, month_starts, rest_settings
from src.config import Config
from src.market.binance_rest import BinanceRestClient
from tests.candlegen import random_walk
from tests.fakes.binance import DEFAULT_START_MS, FakeBinance


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc, arg-type]


def test_the_store_covers_a_period_only_when_nearly_every_candle_is_there() -> None:
    cs = random_walk(24 * 10, timeframe="1h", start_ms=ms(2024, 1, 1))
    start, end = ms(2024, 1, 1), ms(2024, 1, 11)
    assert expected_slots("1h", start, end) == 240
    assert covers(cs, "1h", start, end)
    assert not covers(cs[5:], "1h", start, end)  # starts 5 hours late
    assert not covers(cs[:-5], "1h", start, end)  # ends 5 hours early
    holes = cs[:100] + cs[110:]
    assert not covers(holes, "1h", start, end)  # 10 of 240 missing (> 1 %)
    assert covers(cs[:100] + cs[101:], "1h", start, end)  # one missing candle is fine
    assert not covers([], "1h", start, end)


def test_month_starts_cover_every_month_overlapping_the_period() -> None:
    assert month_starts(ms(2024, 11, 15), ms(2025, 2, 1)) == [ms(2024, 11, 1), ms(2024, 12, 1), ms(2025, 1, 1)]
    assert month_starts(ms(2024, 11, 1), ms(2024, 11, 2)) == [ms(2024, 11, 1)]


def test_the_job_client_stops_at_the_jobs_weight_limit_of_the_ip_budget() -> None:
    s = rest_settings(Config.from_env({"JOBS_REST_WEIGHT_LIMIT": "800"}))
    assert s.weight_budget_1m - s.weight_safety_margin == 800


async def test_complete_months_are_downloaded_once_and_the_current_month_every_time(tmp_path: Path) -> None:
    async with FakeBinance(["BTCUSDT"], ["1h"], history_start_ms=ms(2025, 11, 20)) as fake:
        now = DEFAULT_START_MS + 3_600_000 * 5  # 2026-01-05 05:00, the fake market's time
        fake.now_ms = now
        start, end = ms(2025, 12, 1), ms(2026, 1, 5)
        async with BinanceRestClient(rest_settings(Config.from_env({"BINANCE_REST_URL": fake.rest_url})),
                                     clock=lambda: now / 1000) as client:
            got = await download_cached(client, tmp_path, "BTCUSDT", "1h", start, end, now_ms=now)
            first_requests = len(fake.rest_requests)
            again = await download_cached(client, tmp_path, "BTCUSDT", "1h", start, end, now_ms=now)
        assert [c.open_time_ms for c in got] == [t for t in range(start, end, 3_600_000)]
        assert got == again
        assert sorted(p.name for p in tmp_path.iterdir()) == ["BTCUSDT-1h-2025-12.csv"]  # noqa: ASYNC240 - January is not complete
        repeat = fake.rest_requests[first_requests:]
        assert repeat and all(int(q["startTime"]) >= ms(2026, 1, 1) for _, q in repeat)


async def test_a_job_download_pauses_while_the_ips_weight_is_above_the_jobs_limit(tmp_path: Path) -> None:
    pauses: list[float] = []
    clock = [DEFAULT_START_MS / 1000]

    async def sleep(s: float) -> None:
        pauses.append(s)
        clock[0] += s
        fake.used_weight = 0  # the next minute: the live stream's weight is gone from the window

    async with FakeBinance(["BTCUSDT"], ["1h"], history_start_ms=ms(2025, 11, 20)) as fake:
        fake.used_weight = 1500  # the live bot (same IP) used 1500 this minute
        settings = rest_settings(Config.from_env({"BINANCE_REST_URL": fake.rest_url, "JOBS_REST_WEIGHT_LIMIT": "1000"}))
        async with BinanceRestClient(settings, clock=lambda: clock[0], sleep=sleep) as client:
            await download_cached(client, tmp_path, "BTCUSDT", "1h", ms(2025, 11, 20), ms(2025, 12, 20),
                                  now_ms=DEFAULT_START_MS)
        assert len(pauses) == 1 and 0 < pauses[0] <= 61  # waited for the next minute, once
        assert len(fake.rest_requests) == 2
