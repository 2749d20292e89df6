"""Kline frame and REST row parsing: real payloads, every rejection rule, and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.types import Candle
from src.market.frames import (
    MAX_FRAME_CHARS,
    ParseError,
    parse_kline_frame,
    parse_rest_row,
    scan_kline_frame,
    stream_name,
)
from tests.fakes.binance import SyntheticMarket, kline_frame, rest_row

FIXTURE = Path(__file__).parent / "fixtures" / "ws_frames.jsonl"


def fixture_frames() -> list[str]:
    return FIXTURE.read_text().splitlines()


def valid_frame() -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(fixture_frames()[0])
    return frame


def test_every_fixture_frame_parses_with_its_closed_flag_and_values() -> None:
    frames = fixture_frames()
    candles = [parse_kline_frame(f) for f in frames]
    for raw, candle in zip(frames, candles, strict=True):
        k = json.loads(raw)["data"]["k"]
        assert candle.closed is k["x"]
        assert (candle.symbol, candle.timeframe, candle.open_time_ms, candle.close_time_ms) == (k["s"], k["i"], k["t"], k["T"])
        assert (candle.open, candle.high, candle.low, candle.close) == tuple(float(k[x]) for x in "ohlc")
        assert (candle.volume, candle.quote_volume, candle.trades) == (float(k["v"]), float(k["q"]), k["n"])
        assert (candle.taker_buy_volume, candle.taker_buy_quote_volume) == (float(k["V"]), float(k["Q"]))
        candle.validate()
    assert sum(c.closed for c in candles) == 4


def test_sushi_closed_frame_gives_the_exact_candle() -> None:
    c = parse_kline_frame(fixture_frames()[0].encode())
    assert c.symbol == "SUSHIUSDT" and c.timeframe == "1m" and c.closed
    assert c.open_time_ms == 1626992700000 and c.close_time_ms == 1626992759999
    assert c.close == 7.617


def test_unknown_keys_anywhere_are_ignored() -> None:
    f = valid_frame()
    f["extra"] = [1, 2]
    f["data"]["st"] = 1
    f["data"]["k"]["zz"] = {"nested": True}
    assert parse_kline_frame(json.dumps(f)) == parse_kline_frame(fixture_frames()[0])


def mutated(path: tuple[str, ...], value: Any) -> str:
    f = valid_frame()
    node = f
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(f)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("data", "k", "c"), "NaN", "implausible prices"),
        (("data", "k", "l"), "-1", "implausible prices"),
        (("data", "k", "h"), "0.5", "implausible prices"),  # high below open/close
        (("data", "k", "o"), "inf", "implausible prices"),
        (("data", "k", "h"), "1e400", "implausible prices"),
        (("data", "k", "v"), "-3", "negative or non-finite volume"),
        (("data", "k", "q"), "nan", "negative or non-finite volume"),
        (("data", "k", "c"), 7.6, "decimal strings"),
        (("data", "k", "c"), "seven", "not a decimal number"),
        (("data", "k", "t"), True, "integers"),
        (("data", "k", "t"), "1626992700000", "integers"),
        (("data", "k", "n"), -1, "trade count"),
        (("data", "k", "n"), 1.5, "trade count"),
        (("data", "k", "t"), -60000, "0 < t"),
        (("data", "k", "T"), 1626992760000, "close time"),
        (("data", "k", "x"), "true", "boolean"),
        (("data", "k", "i"), "7m", "bad interval"),
        (("data", "k", "s"), "sushiusdt", "bad symbol"),
        (("data", "k", "o"), _DELETE, "missing field 'o'"),
        (("data", "k"), [], "not a kline object"),
        (("data", "k"), "k", "not a kline object"),
        (("data", "e"), "aggTrade", "not a kline event"),
        (("stream",), "btcusdt@kline_1m", "does not match"),
        (("stream",), _DELETE, "missing 'stream'"),
    ],
)
def test_implausible_or_malformed_frames_raise_parse_error(path: tuple[str, ...], value: Any, why: str) -> None:
    with pytest.raises(ParseError, match=why):
        parse_kline_frame(mutated(path, value))


@pytest.mark.parametrize(
    "raw",
    ["", "not json", "[1,2]", "null", '{"result":null,"id":1}', '{"stream":"a","data":[]}', b"\xff\xfe",
     '{"data":{"e":"kline","k":{"t":1e999}}}', '{"a":' + "9" * 400 + "}"],
)
def test_garbage_raises_parse_error(raw: str | bytes) -> None:
    with pytest.raises(ParseError):
        parse_kline_frame(raw)


def test_huge_frame_is_rejected_before_decoding() -> None:
    f = valid_frame()
    f["data"]["k"]["pad"] = "x" * MAX_FRAME_CHARS
    with pytest.raises(ParseError, match="exceeds"):
        parse_kline_frame(json.dumps(f))


def test_synthetic_frames_round_trip_exactly() -> None:
    market = SyntheticMarket(3)
    for tf, t in (("1m", 1_767_571_200_000), ("5m", 1_767_571_500_000), ("1h", 1_767_571_200_000)):
        c = market.candle("ETHUSDT", tf, t)
        assert parse_kline_frame(kline_frame(c, t)) == c
        assert parse_rest_row("ETHUSDT", tf, orjson.loads(orjson.dumps(rest_row(c)))) == c


def test_rest_row_rejects_short_or_inconsistent_rows() -> None:
    c = SyntheticMarket(3).candle("BTCUSDT", "1m", 1_767_571_200_000)
    row = rest_row(c)
    with pytest.raises(ParseError):
        parse_rest_row("BTCUSDT", "1m", row[:10])
    with pytest.raises(ParseError):
        parse_rest_row("BTCUSDT", "1m", {"0": 1})
    bad = list(row)
    bad[6] = row[0]  # close time == open time
    with pytest.raises(ParseError):
        parse_rest_row("BTCUSDT", "1m", bad)


def test_scan_returns_the_full_candle_for_closed_frames_and_none_for_updates() -> None:
    for raw in fixture_frames():
        candle = parse_kline_frame(raw)
        assert scan_kline_frame(raw) == (candle.symbol, candle.timeframe, candle if candle.closed else None)


def test_scan_validates_prices_of_closed_frames_only() -> None:
    closed_nan = mutated(("data", "k", "c"), "NaN")
    with pytest.raises(ParseError):
        scan_kline_frame(closed_nan)
    update = json.loads(closed_nan)
    update["data"]["k"]["x"] = False
    assert scan_kline_frame(json.dumps(update)) == ("SUSHIUSDT", "1m", None)  # only proves liveness
    update["stream"] = "btcusdt@kline_1m"
    with pytest.raises(ParseError):
        scan_kline_frame(json.dumps(update))  # identity is always checked


def test_stream_names_are_lower_case() -> None:
    assert stream_name("BTCUSDT", "1h") == "btcusdt@kline_1h"


def _assert_parse_or_parse_error(raw: str | bytes) -> None:
    try:
        candle = parse_kline_frame(raw)
    except ParseError:
        candle = None
    if candle is not None:
        assert isinstance(candle, Candle)
        candle.validate()  # anything accepted is a plausible candle
    try:
        scanned = scan_kline_frame(raw)
    except ParseError:
        assert candle is None  # scan rejects nothing the full parse accepts
        return
    if scanned[2] is not None:
        assert scanned[2] == candle  # a closed candle from scan passed the full parse too


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_never_crashes_the_parser(raw: str | bytes) -> None:
    _assert_parse_or_parse_error(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(
    key=st.sampled_from(["t", "T", "s", "i", "o", "h", "l", "c", "v", "n", "x", "q", "V", "Q"]),
    value=json_values | st.sampled_from(["NaN", "-0", "1e308", "1e309", "0", "", " 7.6"]),
)
def test_any_single_field_replaced_gives_a_valid_candle_or_parse_error(key: str, value: Any) -> None:
    _assert_parse_or_parse_error(mutated(("data", "k", key), value))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=5), json_values, max_size=6))
def test_arbitrary_json_objects_raise_parse_error(obj: dict[str, Any]) -> None:
    _assert_parse_or_parse_error(json.dumps(obj))
