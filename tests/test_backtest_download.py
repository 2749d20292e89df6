"""``backtest download`` against the local fake Binance REST server: paging, 429, layout, errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from backtest.cli import main
from backtest.download_cmd import count_gaps, download
from src.market.klines_csv import read_klines_csv
from tests.fakes.binance import FakeBinance

MINUTE = 60_000


async def test_download_pages_through_a_day_of_minutes_and_writes_binance_layout(tmp_path):
    async with FakeBinance(["BTCUSDT"], ["1m"], seed=3) as fake:
        out = tmp_path / "BTCUSDT-1m.csv"
        start = fake.history_start_ms
        assert start is not None
        fake.fail_next(429, retry_after=0)
        got = await download("BTCUSDT", "1m", start, None, out, fake.rest_url, clock=fake.clock)
        # the client counts a kline as closed only 1 s after its close time (clock-skew margin)
        now = fake.now_ms
        expected = [c for c in fake.closed_candles("BTCUSDT", "1m", start) if c.close_time_ms < now - 1000]
        assert got == expected and len(got) == 3 * 1440 - 1
        klines = [q for p, q in fake.rest_requests if p == "/fapi/v1/klines"]
        # full pages of 1000 (the first one twice: the 429 is retried); the client sizes the last page to need
        limits = [int(q["limit"]) for q in klines]
        assert limits.count(1000) >= 4 and max(limits) == 1000
    header = out.read_text().splitlines()[0].split(",")
    assert len(header) == 12 and header[0] == "open_time"
    assert read_klines_csv(out).candles == expected
    assert not (tmp_path / "BTCUSDT-1m.csv.part").exists()


@pytest.fixture
def fake_in_thread() -> Iterator[FakeBinance]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = FakeBinance(["BTCUSDT"], ["1h"], seed=5)
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
    yield fake
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_download_command_end_to_end(tmp_path, fake_in_thread, capsys):
    fake = fake_in_thread
    out = tmp_path / "b.csv"
    assert fake.history_start_ms is not None
    start_iso = "2026-01-02T00:00:00Z"
    code = main(["download", "--symbol", "btcusdt", "--timeframe", "1h", "--from", start_iso, "--to", "2026-01-04",
                 "--out", str(out), "--rest-url", fake.rest_url])
    assert code == 0, capsys.readouterr().err
    candles = read_klines_csv(out, "BTCUSDT", "1h").candles
    assert len(candles) == 48 and count_gaps(candles, "1h") == 0
    assert "48 candles" in capsys.readouterr().out


def test_unknown_symbol_is_a_clear_error(tmp_path, fake_in_thread, capsys):
    code = main(["download", "--symbol", "NOPEUSDT", "--timeframe", "1h", "--from", "2026-01-02", "--to", "2026-01-03",
                 "--out", str(tmp_path / "x.csv"), "--rest-url", fake_in_thread.rest_url])
    assert code == 2 and "refused" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("args", [
    ["--timeframe", "7h", "--days", "3"],
    ["--timeframe", "1h", "--days", "0"],
    ["--timeframe", "1h", "--days", "3", "--from", "2026-01-01"],
    ["--timeframe", "1h", "--from", "2026-01-03", "--to", "2026-01-01"],
    ["--timeframe", "1h", "--days", "1", "--rest-url", "ftp://x"],
])
def test_bad_options_exit_2(tmp_path, args, capsys):
    assert main(["download", "--symbol", "BTCUSDT", *args, "--out", str(tmp_path / "x.csv")]) == 2
    assert "backtest download:" in capsys.readouterr().err


def test_count_gaps_counts_missing_candles():
    from tests.candlegen import random_walk

    c = random_walk(10, timeframe="1h")
    assert count_gaps(c, "1h") == 0
    assert count_gaps(c[:3] + c[6:], "1h") == 3


def test_ip_ban_stops_at_once_with_status_1_and_no_file(tmp_path, fake_in_thread, capsys):
    fake_in_thread.fail_next(418, retry_after=120)
    out = tmp_path / "x.csv"
    code = main(["download", "--symbol", "BTCUSDT", "--timeframe", "1h", "--from", "2026-01-02", "--to", "2026-01-03",
                 "--out", str(out), "--rest-url", fake_in_thread.rest_url])
    assert code == 1 and "unavailable" in capsys.readouterr().err
    assert not out.exists()
    assert len([p for p, _ in fake_in_thread.rest_requests if p == "/fapi/v1/klines"]) == 1  # no retry into a ban
