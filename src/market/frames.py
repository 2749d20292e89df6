"""Binance USDT-M kline payloads -> :class:`Candle`: WebSocket combined-stream frames and REST rows.

A combined-stream frame (``/market/stream?streams=btcusdt@kline_1m/...``) looks like this (real
capture, trimmed to one frame)::

    {"stream": "ctkusdt@kline_1m",
     "data": {"e": "kline", "E": 1626992741424, "s": "CTKUSDT",
              "k": {"t": 1626992700000, "T": 1626992759999, "s": "CTKUSDT", "i": "1m",
                    "f": 23961275, "L": 23961322, "o": "1.01000", "c": "1.01100",
                    "h": "1.01100", "l": "1.01000", "v": "3917", "n": 48, "x": false,
                    "q": "3957.89900", "V": "1729", "Q": "1748.01900", "B": "0"}}}

A REST ``GET /fapi/v1/klines`` row is
``[openTime, "o", "h", "l", "c", "v", closeTime, "quoteVolume", trades, "takerBuyBase", "takerBuyQuote", "ignore"]``.

Rules (anything else raises :class:`ParseError`, which the caller counts and skips):

- at most ``MAX_FRAME_CHARS`` (16 384) characters; valid JSON; ``data.e == "kline"``;
- ``t``/``T``/``n`` are JSON integers (not booleans), ``0 < t < 2**42`` ms (year ~2109),
  ``T == t + interval - 1`` (calendar month ``1M``: ``T > t``), ``n >= 0``;
- ``o h l c v q V Q`` are decimal STRINGS giving finite floats with ``0 < low <= open, close <= high``
  and volumes ``>= 0``; ``x`` is a boolean;
- ``s`` is an upper-case symbol, ``i`` a Binance interval, and ``stream`` equals
  ``<s lower-case>@kline_<i>``;
- unknown keys are ignored (Binance adds fields without notice).

:func:`parse_kline_frame` applies every rule to every frame; :func:`scan_kline_frame` (the feed's hot
path) applies the price/volume rules only to closed frames.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from src.analysis import timeframes
from src.analysis.types import Candle

MAX_FRAME_CHARS = 16_384
_MAX_TIME_MS = 1 << 42
_INF = math.inf
_INTERVAL_MS: dict[str, int] = {i: timeframes.interval_ms(i) for i in timeframes.INTERVALS if i != "1M"}
_INTERVALS = frozenset(timeframes.INTERVALS)
_loads = orjson.loads


class ParseError(ValueError):
    """A frame or REST row that is not a well-formed, plausible Binance kline."""


def stream_name(symbol: str, timeframe: str) -> str:
    """Binance stream name: ``btcusdt@kline_1h`` (symbols are lower-case in stream names)."""
    return f"{symbol.lower()}@kline_{timeframe}"


def _numbers(
    o: object, h: object, l: object, c: object, v: object, q: object, bv: object, bq: object,  # noqa: E741
) -> tuple[float, float, float, float, float, float, float, float]:
    """Decimal strings -> floats; 0 < low <= open, close <= high < inf and volumes in [0, inf), else ParseError."""
    if not (type(o) is str and type(h) is str and type(l) is str and type(c) is str
            and type(v) is str and type(q) is str and type(bv) is str and type(bq) is str):
        raise ParseError("prices and volumes must be decimal strings")
    try:
        of, hf, lf, cf = float(o), float(h), float(l), float(c)
        vf, qf, bvf, bqf = float(v), float(q), float(bv), float(bq)
    except ValueError:
        raise ParseError("price or volume is not a decimal number") from None
    # Chained comparisons are False for NaN, so NaN fails here too.
    if not (0.0 < lf <= of <= hf < _INF and lf <= cf <= hf):
        raise ParseError(f"implausible prices o={o:.20} h={h:.20} l={l:.20} c={c:.20}")
    if not (0.0 <= vf < _INF and 0.0 <= qf < _INF and 0.0 <= bvf < _INF and 0.0 <= bqf < _INF):
        raise ParseError("negative or non-finite volume")
    return of, hf, lf, cf, vf, qf, bvf, bqf


def _checked(
    symbol: object, interval: object, t: object, T: object, n: object,
    o: object, h: object, l: object, c: object, v: object, q: object, bv: object, bq: object,  # noqa: E741
    closed: bool,
) -> Candle:
    """Validate raw fields (types, ranges, OHLC consistency) and build the Candle."""
    if type(symbol) is not str or not (2 <= len(symbol) <= 20) or not symbol.isupper():
        raise ParseError(f"bad symbol {symbol!r:.40}")
    if type(interval) is not str or interval not in _INTERVALS:
        raise ParseError(f"bad interval {interval!r:.40}")
    if type(t) is not int or type(T) is not int or type(n) is not int:
        raise ParseError("t, T and n must be integers")
    if not (0 < t < _MAX_TIME_MS) or n < 0:
        raise ParseError(f"open time {t} or trade count {n} out of range")
    size = _INTERVAL_MS.get(interval)
    if (t + size - 1 != T) if size is not None else not (t < T < _MAX_TIME_MS):
        raise ParseError(f"close time {T} does not match open time {t} and interval {interval}")
    of, hf, lf, cf, vf, qf, bvf, bqf = _numbers(o, h, l, c, v, q, bv, bq)
    return Candle(symbol, interval, t, T, of, hf, lf, cf, vf, qf, n, bvf, bqf, closed)


def _identity(raw: str | bytes) -> tuple[dict[str, Any], str, str, int, bool]:
    """Decode a frame and check what identifies it: (k, symbol, interval, open_time, closed)."""
    if len(raw) > MAX_FRAME_CHARS:
        raise ParseError(f"frame of {len(raw)} characters exceeds {MAX_FRAME_CHARS}")
    try:
        msg = _loads(raw)
    except orjson.JSONDecodeError:
        raise ParseError("frame is not valid JSON") from None
    try:
        data = msg["data"]
        k = data["k"]
        if data["e"] != "kline":
            raise ParseError("frame is not a kline event")
        symbol, interval, t, T, x = k["s"], k["i"], k["t"], k["T"], k["x"]
        stream = msg["stream"]
    except KeyError as exc:
        raise ParseError(f"kline frame is missing {exc.args[0]!r}") from None
    except TypeError:  # a list, string or number where an object belongs
        raise ParseError("frame is not a kline object") from None
    if type(k) is not dict:
        raise ParseError("kline frame has no 'k' object")
    if type(x) is not bool:
        raise ParseError("'x' (closed) must be a boolean")
    if type(symbol) is not str or not (2 <= len(symbol) <= 20) or not symbol.isupper():
        raise ParseError(f"bad symbol {symbol!r:.40}")
    if type(interval) is not str or interval not in _INTERVALS:
        raise ParseError(f"bad interval {interval!r:.40}")
    if type(t) is not int or type(T) is not int or not (0 < t < _MAX_TIME_MS):
        raise ParseError("open time 't' and close time 'T' must be integers, 0 < t < 2**42")
    size = _INTERVAL_MS.get(interval)
    if (t + size - 1 != T) if size is not None else not (t < T < _MAX_TIME_MS):
        raise ParseError(f"close time {T} does not match open time {t} and interval {interval}")
    if type(stream) is not str or stream != f"{symbol.lower()}@kline_{interval}":
        raise ParseError(f"stream {stream!r:.60} does not match kline {symbol} {interval}")
    return k, symbol, interval, t, x


def _values(k: dict[str, Any], symbol: str, interval: str, t: int, closed: bool) -> Candle:
    """Prices, volumes and trade count of a decoded kline (see the module rules)."""
    try:
        o, h, l, c, v, q, bv, bq, n = k["o"], k["h"], k["l"], k["c"], k["v"], k["q"], k["V"], k["Q"], k["n"]  # noqa: E741
    except KeyError as exc:
        raise ParseError(f"kline is missing field {exc.args[0]!r}") from None
    if type(n) is not int or n < 0:
        raise ParseError(f"trade count {n!r:.20} must be an integer >= 0")
    of, hf, lf, cf, vf, qf, bvf, bqf = _numbers(o, h, l, c, v, q, bv, bq)
    return Candle(symbol, interval, t, k["T"], of, hf, lf, cf, vf, qf, n, bvf, bqf, closed)


def parse_kline_frame(raw: str | bytes) -> Candle:
    """Parse and fully validate one combined-stream kline frame; ``Candle.closed`` is ``k.x``. Raises ParseError."""
    k, symbol, interval, t, x = _identity(raw)
    return _values(k, symbol, interval, t, x)


def scan_kline_frame(raw: str | bytes) -> tuple[str, str, Candle | None]:
    """The feed's fast path: ``(symbol, interval, candle)`` where candle is the fully validated closed
    candle, or None for a non-closed update. A non-closed update is checked only for what identifies
    it (stream, symbol, interval, times): its prices are never used, it only proves the stream is alive.
    Binance sends ~240 of those per closed 1m candle, so skipping their decimals is the main saving."""
    k, symbol, interval, t, x = _identity(raw)
    return symbol, interval, (_values(k, symbol, interval, t, True) if x else None)


def parse_rest_row(symbol: str, interval: str, row: Any) -> Candle:
    """Parse one ``/fapi/v1/klines`` row as a CLOSED candle (the caller drops the forming one)."""
    if type(row) is not list or len(row) < 11:
        raise ParseError(f"kline row is not an array of >= 11 items: {row!s:.80}")
    return _checked(symbol, interval, row[0], row[6], row[8], row[1], row[2], row[3], row[4],
                    row[5], row[7], row[9], row[10], True)
