from __future__ import annotations

from pathlib import Path

import pytest

from src.market.klines_csv import KlineFileError, infer_symbol_interval, read_klines_csv, write_klines_csv
from tests.candlegen import random_walk


def test_round_trip_with_header_keeps_every_column(tmp_path: Path):
    candles = random_walk(50, timeframe="15m", seed=2)
    path = tmp_path / "BTCUSDT-15m-test.csv"
    write_klines_csv(path, candles)
    got = read_klines_csv(path)
    assert (got.symbol, got.timeframe) == ("BTCUSDT", "15m")
    assert got.candles == candles


def test_seven_column_file_without_header_reads_with_explicit_symbol_and_interval(tmp_path: Path):
    c = random_walk(3, timeframe="1h", seed=4)
    path = tmp_path / "data.csv"
    path.write_text("\n".join(f"{x.open_time_ms},{x.open},{x.high},{x.low},{x.close},{x.volume},{x.close_time_ms}" for x in c))
    got = read_klines_csv(path, symbol="ethusdt", timeframe="1h")
    assert got.symbol == "ETHUSDT" and len(got.candles) == 3 and got.candles[0].trades == 0


def test_duplicate_rows_are_merged_and_rows_sorted(tmp_path: Path):
    c = random_walk(5, symbol="ADAUSDT", seed=1)
    path = tmp_path / "ADAUSDT-1m.csv"
    write_klines_csv(path, [c[3], c[0], c[1], c[0], c[4], c[2]])
    assert read_klines_csv(path).candles == c


@pytest.mark.parametrize(
    "row, message",
    [
        ("1,2,3", "at least 7 columns"),
        ("x,1,2,0.5,1,10,59999", "not a kline row"),
        ("0,1,2,0.5,nan,10,59999", "non-positive or non-finite"),
        ("0,1,0.9,0.5,1,10,59999", "inconsistent OHLC"),
        ("0,1,2,0.5,1,-10,59999", "negative"),
    ],
)
def test_bad_rows_raise_a_clear_error_with_the_line_number(tmp_path: Path, row: str, message: str):
    path = tmp_path / "BTCUSDT-1m.csv"
    path.write_text("open_time,open,high,low,close,volume,close_time\n" + row + "\n")
    with pytest.raises(KlineFileError, match=rf"BTCUSDT-1m.csv:2: .*{message}"):
        read_klines_csv(path)


def test_missing_file_and_unknown_names_are_reported(tmp_path: Path):
    with pytest.raises(KlineFileError, match="cannot open"):
        read_klines_csv(tmp_path / "BTCUSDT-1m.csv")
    (tmp_path / "klines.csv").write_text("")
    with pytest.raises(KlineFileError, match="symbol unknown"):
        read_klines_csv(tmp_path / "klines.csv")
    with pytest.raises(KlineFileError, match="unknown interval"):
        read_klines_csv(tmp_path / "klines.csv", symbol="BTCUSDT", timeframe="7m")


def test_file_names_give_symbol_and_interval():
    assert infer_symbol_interval(Path("BTCUSDT-1m-2025-05.csv")) == ("BTCUSDT", "1m")
    assert infer_symbol_interval(Path("ethusdt-1M.csv")) == ("ETHUSDT", "1M")
    assert infer_symbol_interval(Path("prices.csv")) == (None, None)


def test_microsecond_timestamps_are_converted(tmp_path: Path):
    path = tmp_path / "BTCUSDT-1m.csv"
    path.write_text("1700006400000000,1,2,0.5,1.5,10,1700006459999999\n")
    c = read_klines_csv(path).candles[0]
    assert (c.open_time_ms, c.close_time_ms) == (1700006400000, 1700006459999)
