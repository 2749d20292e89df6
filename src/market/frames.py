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
- bounds no real kline comes near and every store can hold: prices in ``[MIN_PRICE, MAX_PRICE]``
  (1e-9 .. 1e9: Binance's largest USDT-M price is ~1e5, its smallest ~1e-5), volumes at most
  ``MAX_VOLUME`` (1e18), trade count below ``MAX_TRADES`` (2**53: exact as a double, far below the
  stores' 64-bit integers); a 1e308 price or a 2**63 trade count is refused here, not in the store;
- ``s`` is an upper-case symbol, ``i`` a Binance interval, and ``stream`` equals
  ``<s lower-case>@kline_<i>``;
- unknown keys are ignored (Binance adds fields without notice).

:func:`parse_kline_frame` applies every rule to every frame; :func:`scan_kline_frame` (the feed's hot
path) applies the price/volume rules only to closed frames; a closed frame that fails them raises
:class:`InvalidKline`, which names the kline, so the feed can fetch the real one from REST at once.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson

from src.analysis import timeframes
from src.analysis.types import Candle

MAX_FRAME_CHARS = 16_384
_MAX_TIME_MS = 1 << 42
MIN_PRICE = 1e-9
MAX_PRICE = 1e9
MAX_VOLUME = 1e18
MAX_TRADES = 1 << 53
_INF = math.inf
_INTERVAL_MS: dict[str, int] = {i: timeframes.interval_ms(i) for i in timeframes.INTERVALS if i != "1M"}
_INTERVALS = frozenset(timeframes.INTERVALS)
_loads = orjson.loads


class ParseError(ValueError):
    """A frame or REST row that is not a well-formed, plausible Binance kline."""


class InvalidKline(ParseError):
    """A closed kline frame whose identity is sound but whose numbers are not (NaN, 1e308, 2**63 trades...):
    names the kline so the feed can replace it with Binance's REST copy."""

    def __init__(self, message: str, symbol: str, interval: str, open_time_ms: int) -> None:
        super().__init__(message)
        self.symbol = symbol
        self.interval = interval
        self.open_time_ms = open_time_ms


class ScannedKline(NamedTuple):
    """What :func:`scan_kline` gives the feed: the stream, the closed candle (None for an update of the
    forming one) and Binance's event time ``E`` (None when absent or not an integer)."""

    symbol: str
    interval: str
    candle: Candle | None
    event_ms: int | None


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
    if not (MIN_PRICE <= lf <= of <= hf <= MAX_PRICE and lf <= cf <= hf):
        raise ParseError(f"implausible prices o={o:.20} h={h:.20} l={l:.20} c={c:.20}")
    if not (0.0 <= vf <= MAX_VOLUME and 0.0 <= qf <= MAX_VOLUME and 0.0 <= bvf <= MAX_VOLUME
            and 0.0 <= bqf <= MAX_VOLUME):
        raise ParseError(f"negative or non-finite volume, or one above 1e18: v={v:.20} q={q:.20}")
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
    if not (0 < t < _MAX_TIME_MS) or not (0 <= n < MAX_TRADES):
        raise ParseError(f"open time {t} or trade count {n:.30} out of range")
    size = _INTERVAL_MS.get(interval)
    if (t + size - 1 != T) if size is not None else not (t < T < _MAX_TIME_MS):
        raise ParseError(f"close time {T} does not match open time {t} and interval {interval}")
    of, hf, lf, cf, vf, qf, bvf, bqf = _numbers(o, h, l, c, v, q, bv, bq)
    return Candle(symbol, interval, t, T, of, hf, lf, cf, vf, qf, n, bvf, bqf, closed)


def _identity(raw: str | bytes) -> tuple[dict[str, Any], str, str, int, bool]:
    """Decode a frame and check what identifies it: (k, symbol, interval, open_time, closed)."""
    k, symbol, interval, t, x, _ = _identity_e(raw)
    return k, symbol, interval, t, x


def _identity_e(raw: str | bytes) -> tuple[dict[str, Any], str, str, int, bool, int | None]:
    """:func:`_identity` plus the event time ``E`` (None unless a positive integer)."""
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
    event = data.get("E") if type(data) is dict else None
    return k, symbol, interval, t, x, (event if type(event) is int and 0 < event < _MAX_TIME_MS else None)


def _values(k: dict[str, Any], symbol: str, interval: str, t: int, closed: bool) -> Candle:
    """Prices, volumes and trade count of a decoded kline (see the module rules)."""
    try:
        o, h, l, c, v, q, bv, bq, n = k["o"], k["h"], k["l"], k["c"], k["v"], k["q"], k["V"], k["Q"], k["n"]  # noqa: E741
    except KeyError as exc:
        raise ParseError(f"kline is missing field {exc.args[0]!r}") from None
    if type(n) is not int or not (0 <= n < MAX_TRADES):
        raise ParseError(f"trade count {n!r:.30} must be an integer in [0, 2**53)")
    of, hf, lf, cf, vf, qf, bvf, bqf = _numbers(o, h, l, c, v, q, bv, bq)
    return Candle(symbol, interval, t, k["T"], of, hf, lf, cf, vf, qf, n, bvf, bqf, closed)


def parse_kline_frame(raw: str | bytes) -> Candle:
    """Parse and fully validate one combined-stream kline frame; ``Candle.closed`` is ``k.x``. Raises ParseError."""
    k, symbol, interval, t, x = _identity(raw)
    return _values(k, symbol, interval, t, x)


def scan_kline(raw: str | bytes) -> ScannedKline:
    """The feed's fast path: the stream, the fully validated closed candle (None for a non-closed update)
    and the event time. A non-closed update is checked only for what identifies it (stream, symbol,
    interval, times): its prices are never used, it only proves the stream is alive. Binance sends ~240
    of those per closed 1m candle, so skipping their decimals is the main saving. A closed frame whose
    numbers fail raises :class:`InvalidKline`."""
    k, symbol, interval, t, x, event_ms = _identity_e(raw)
    if not x:
        return ScannedKline(symbol, interval, None, event_ms)
    try:
        candle = _values(k, symbol, interval, t, True)
    except ParseError as exc:
        raise InvalidKline(str(exc), symbol, interval, t) from None
    return ScannedKline(symbol, interval, candle, event_ms)


def scan_kline_frame(raw: str | bytes) -> tuple[str, str, Candle | None]:
    """:func:`scan_kline` without the event time: ``(symbol, interval, closed candle or None)``."""
    scanned = scan_kline(raw)
    return scanned.symbol, scanned.interval, scanned.candle


def parse_rest_row(symbol: str, interval: str, row: Any) -> Candle:
    """Parse one ``/fapi/v1/klines`` row as a CLOSED candle (the caller drops the forming one)."""
    if type(row) is not list or len(row) < 11:
        raise ParseError(f"kline row is not an array of >= 11 items: {row!s:.80}")
    return _checked(symbol, interval, row[0], row[6], row[8], row[1], row[2], row[3], row[4],
                    row[5], row[7], row[9], row[10], True)
