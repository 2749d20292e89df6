"""Binance USDT-M futures public REST: symbol validation and kline paging, inside the IP weight budget.

Rules this client keeps (Binance "General Info" and "Kline/Candlestick Data" pages):

- ``GET /fapi/v1/klines`` is paged at ``limit=1000`` (weight 5; 1500 would cost 10; a smaller fetch asks
  for just what it needs, e.g. 99 rows cost 1), ascending by open time; the still-forming last kline
  is dropped: a row counts as closed only when its close time is more than ``close_margin_ms``
  (1 000 ms, covering clock skew) before now.
- ``GET /fapi/v1/exchangeInfo`` (weight 1) gives the tradable symbols: status ``TRADING``,
  contractType ``PERPETUAL``, quoteAsset ``USDT``.
- ``GET /fapi/v1/time`` (weight 1) gives Binance's clock (``{"serverTime": ms}``) for
  :class:`~src.market.exchange_clock.ExchangeClock`.
- Weight: the budget is 2400/min per IP. ``X-MBX-USED-WEIGHT-1M`` from every response is the truth;
  before a request that would take the minute's usage above ``budget - safety_margin`` (2000), the
  client pauses until the next minute starts.
- 429: wait ``Retry-After`` seconds (60 when absent), then retry. 418 (IP banned): ALL calls of this
  client fail fast with :class:`RestBanned` until ``Retry-After`` (120 s when absent) has passed;
  the client never retries into a ban.
- Network/DNS errors, timeouts, 403 (WAF), 408 and 5xx: capped jittered backoff (1 s doubling to 30 s),
  ``max_attempts`` (4) tries, then :class:`RestUnavailable`. 451 (Binance refuses this location):
  :class:`RestGeoBlocked` at once, never retried. Other 4xx: :class:`RestRequestError`.

Requests are serialised by one lock so the weight bookkeeping and the 429 pause hold for every caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from src.analysis import timeframes
from src.analysis.types import Candle
from src.market.backoff import Backoff
from src.market.frames import ParseError, parse_rest_row

log = structlog.get_logger(__name__)

KLINES_PATH = "/fapi/v1/klines"
EXCHANGE_INFO_PATH = "/fapi/v1/exchangeInfo"
TIME_PATH = "/fapi/v1/time"
KLINES_PAGE = 1000
EXCHANGE_INFO_WEIGHT = 1
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


def klines_weight(limit: int) -> int:
    """Request weight of ``/fapi/v1/klines`` by limit: [1,100) 1, [100,500) 2, [500,1000] 5, above 10."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class BinanceRestError(Exception):
    """Base of the REST client's errors."""


class RestUnavailable(BinanceRestError):
    """Temporary: Binance unreachable, 5xx, timeouts, or retries exhausted. Try again later."""


class RestBanned(RestUnavailable):
    """HTTP 418: the IP is banned until ``until_monotonic``; no call is made before then."""

    def __init__(self, message: str, until_monotonic: float) -> None:
        super().__init__(message)
        self.until_monotonic = until_monotonic


class RestGeoBlocked(BinanceRestError):
    """HTTP 451: Binance serves no API to this machine's location (a restricted jurisdiction). Retrying
    cannot help; the bot must run from an eligible region."""


class RestRequestError(BinanceRestError):
    """Permanent: Binance rejected the request (4xx other than 403/408/418/429), e.g. an unknown symbol."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"HTTP {status} (code {code}): {message}")
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class RestSettings:
    base_url: str = "https://fapi.binance.com"
    weight_budget_1m: int = 2400
    weight_safety_margin: int = 400
    max_attempts: int = 4
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    request_timeout_s: float = 15.0
    close_margin_ms: int = 1000
    default_retry_after_429_s: float = 60.0
    default_retry_after_418_s: float = 120.0


@dataclass(frozen=True, slots=True)
class SymbolSelection:
    """The symbols to subscribe (validated), the configured ones Binance does not trade, and every tradable
    symbol (for suggestions)."""

    symbols: tuple[str, ...]
    unknown: tuple[str, ...]
    tradable: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RestStats:
    requests: int
    used_weight_1m: int
    weight_pauses: int
    rest_429: int
    rest_418: int
    errors: int
    invalid_rows: int
    banned: bool
    last_error: str | None = None  # the latest failure, None once a request succeeded again


class BinanceRestClient:
    """Async client for the two public endpoints the feed needs. Use as ``async with`` or call :meth:`close`."""

    def __init__(
        self,
        settings: RestSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self._base = settings.base_url.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng
        self._lock = asyncio.Lock()
        self._used_weight = 0
        self._weight_minute = -1
        self._banned_until = 0.0
        self._requests = 0
        self._weight_pauses = 0
        self._n429 = 0
        self._n418 = 0
        self._errors = 0
        self._invalid_rows = 0
        self._last_error: str | None = None

    async def __aenter__(self) -> BinanceRestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> RestStats:
        return RestStats(
            requests=self._requests,
            used_weight_1m=self._used_weight if int(self._clock() // 60) == self._weight_minute else 0,
            weight_pauses=self._weight_pauses,
            rest_429=self._n429,
            rest_418=self._n418,
            errors=self._errors,
            invalid_rows=self._invalid_rows,
            banned=self._monotonic() < self._banned_until,
            last_error=self._last_error,
        )

    @property
    def banned_until_monotonic(self) -> float:
        return self._banned_until

    # ------------------------------------------------------------------ endpoints
    async def server_time_ms(self) -> int:
        """Binance's clock (``serverTime``, epoch ms) from ``GET /fapi/v1/time``."""
        body = await self._get(TIME_PATH, {}, 1)
        value = body.get("serverTime") if isinstance(body, dict) else None
        if type(value) is not int or value <= 0:
            raise RestUnavailable(f"{TIME_PATH} answered without an integer serverTime: {str(body)[:80]}")
        return value

    async def tradable_usdt_perpetuals(self) -> frozenset[str]:
        """Symbols with status TRADING, contractType PERPETUAL and quoteAsset USDT."""
        info = await self._get(EXCHANGE_INFO_PATH, {}, EXCHANGE_INFO_WEIGHT)
        symbols = info.get("symbols") if isinstance(info, dict) else None
        if not isinstance(symbols, list):
            raise RestUnavailable("exchangeInfo response has no 'symbols' list")
        return frozenset(
            s["symbol"]
            for s in symbols
            if isinstance(s, dict)
            and isinstance(s.get("symbol"), str)
            and s.get("status") == "TRADING"
            and s.get("contractType") == "PERPETUAL"
            and s.get("quoteAsset") == "USDT"
        )

    async def select_symbols(self, configured: Sequence[str], all_symbols: bool = False) -> SymbolSelection:
        """Validate SYMBOLS against exchangeInfo; ``all_symbols`` (SYMBOLS=ALL) selects every tradable one."""
        tradable = await self.tradable_usdt_perpetuals()
        if all_symbols:
            return SymbolSelection(tuple(sorted(tradable)), (), tradable)
        ok = tuple(s for s in configured if s in tradable)
        unknown = tuple(s for s in configured if s not in tradable)
        return SymbolSelection(ok, unknown, tradable)

    async def iter_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int | None = None, *, now_ms: int | None = None
    ) -> AsyncIterator[list[Candle]]:
        """Yield pages of CLOSED candles with ``start_ms <= open_time <= end_ms``, ascending, no duplicates.

        ``now_ms`` (default: the clock) decides which klines are closed; the forming one is dropped.
        """
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        closed_before = now - self.settings.close_margin_ms
        # Newest open time whose kline can be closed: skips the request when nothing new can exist.
        newest = closed_before - 1 if interval == "1M" else closed_before - timeframes.interval_ms(interval)
        end = newest if end_ms is None else min(end_ms, newest)
        cursor = start_ms
        step = timeframes.interval_ms(interval)
        while cursor <= end:
            # Weight follows the limit (<100: 1, <500: 2, <=1000: 5): ask for no more than needed,
            # so the many small backfills after a reconnect cost 1 instead of 5.
            limit = min(KLINES_PAGE, max(1, (end - cursor) // step + 2))
            params = {"symbol": symbol, "interval": interval, "startTime": cursor, "endTime": end, "limit": limit}
            rows = await self._get(KLINES_PATH, params, klines_weight(limit))
            if not isinstance(rows, list):
                raise RestUnavailable(f"klines response for {symbol} {interval} is not a list")
            page: list[Candle] = []
            newest_open = cursor - 1
            for row in rows:
                try:
                    candle = parse_rest_row(symbol, interval, row)
                except ParseError as exc:
                    self._invalid_rows += 1
                    log.warning("invalid kline row skipped", symbol=symbol, interval=interval, error=str(exc))
                    continue
                t = candle.open_time_ms
                if t <= newest_open or t > end:
                    continue  # out of range or not ascending: never rewind or duplicate
                newest_open = t
                if candle.close_time_ms >= closed_before:
                    continue  # still forming
                page.append(candle)
            if page:
                yield page
            if len(rows) < limit or newest_open < cursor:
                return
            cursor = newest_open + 1

    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int | None = None, *, now_ms: int | None = None
    ) -> list[Candle]:
        """All closed candles of :meth:`iter_klines` in one list."""
        out: list[Candle] = []
        async for page in self.iter_klines(symbol, interval, start_ms, end_ms, now_ms=now_ms):
            out.extend(page)
        return out

    async def latest_klines(self, symbol: str, interval: str, count: int, *, now_ms: int | None = None) -> list[Candle]:
        """The newest ``count`` closed candles."""
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        # one interval more than needed: the newest closed kline may fall inside the clock-skew margin
        start = timeframes.bucket_start(interval, now) - (count + 1) * timeframes.interval_ms(interval)
        candles = await self.klines(symbol, interval, max(start, 0), now_ms=now)
        return candles[-count:] if count > 0 else []

    # ------------------------------------------------------------------ transport
    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_s))
        return self._session

    async def _await_weight(self, weight: int) -> None:
        """Pause until the next minute when this request would exceed ``budget - safety_margin``."""
        limit = self.settings.weight_budget_1m - self.settings.weight_safety_margin
        while True:
            now = self._clock()
            minute = int(now // 60)
            if minute != self._weight_minute:
                self._weight_minute = minute
                self._used_weight = 0  # Binance's weight window is the calendar minute
            if self._used_weight + weight <= limit:
                self._used_weight += weight  # optimistic; the response header corrects it
                return
            wait = (minute + 1) * 60 - now + 0.5
            self._weight_pauses += 1
            log.warning("Binance REST weight budget nearly used, pausing", used_weight_1m=self._used_weight,
                        limit=limit, pause_s=round(wait, 1))
            await self._sleep(wait)

    def _retry_after(self, headers: Any, default: float) -> float:
        try:
            value = float(headers.get("Retry-After", default))
        except (TypeError, ValueError):
            return default
        return value if value >= 0 and value == value else default

    async def _get(self, path: str, params: dict[str, Any], weight: int) -> Any:
        async with self._lock:
            backoff = Backoff(self.settings.backoff_base_s, self.settings.backoff_cap_s, self._rng)
            attempt = 0
            while True:
                attempt += 1
                if self._monotonic() < self._banned_until:
                    raise RestBanned(
                        f"Binance REST banned this IP (HTTP 418) for {self._banned_until - self._monotonic():.0f} s more",
                        self._banned_until,
                    )
                await self._await_weight(weight)
                problem: str
                try:
                    self._requests += 1
                    async with self._get_session().get(self._base + path, params=params) as resp:
                        self._read_weight(resp.headers)
                        status = resp.status
                        body = await resp.read()
                        if status == 200:
                            result = orjson.loads(body)
                            self._last_error = None
                            return result
                        if status == 429:
                            self._n429 += 1
                            self._last_error = f"{path}: rate limited (HTTP 429)"
                            wait = self._retry_after(resp.headers, self.settings.default_retry_after_429_s)
                            log.warning("Binance REST rate limit hit (HTTP 429), waiting Retry-After", path=path,
                                        retry_after_s=wait)
                            await self._sleep(wait)
                            if attempt >= self.settings.max_attempts:
                                raise RestUnavailable(f"HTTP 429 on {path} after {attempt} attempts")
                            continue
                        if status == 418:
                            self._n418 += 1
                            wait = self._retry_after(resp.headers, self.settings.default_retry_after_418_s)
                            self._banned_until = self._monotonic() + wait
                            self._last_error = f"{path}: this IP is banned (HTTP 418) for {wait:.0f} s"
                            log.error("Binance REST banned this IP (HTTP 418); no REST call until Retry-After",
                                      path=path, retry_after_s=wait)
                            raise RestBanned(f"HTTP 418 on {path}: banned for {wait:.0f} s", self._banned_until)
                        if status == 451:
                            self._errors += 1
                            self._last_error = f"{path}: HTTP 451, Binance refuses this location"
                            raise RestGeoBlocked(geo_block_message(status))
                        if status in (403, 408) or status >= 500:
                            problem = f"HTTP {status}"
                        else:
                            code, msg = _error_body(body)
                            self._errors += 1
                            raise RestRequestError(status, code, msg)
                except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                self._errors += 1
                self._last_error = f"{path}: {problem}"[:300]
                if attempt >= self.settings.max_attempts:
                    log.error("Binance REST unreachable, giving up this request", path=path, error=problem,
                              attempts=attempt)
                    raise RestUnavailable(f"{path}: {problem} (after {attempt} attempts)")
                delay = backoff.next_delay()
                log.warning("Binance REST unreachable, retrying", path=path, error=problem, attempt=attempt,
                            retry_in_s=round(delay, 2))
                await self._sleep(delay)

    def _read_weight(self, headers: Any) -> None:
        raw = headers.get(WEIGHT_HEADER)
        if raw is None:
            return
        with contextlib.suppress(ValueError):
            self._used_weight = int(raw)
            self._weight_minute = int(self._clock() // 60)


def geo_block_message(status: int = 451) -> str:
    """What to tell the operator when Binance answers HTTP 451."""
    return (f"Binance answered HTTP {status}: it serves no futures API to this machine's location (a restricted "
            "jurisdiction, e.g. the USA or the UK; see Binance's terms of use). Run the bot on a server in a region "
            "Binance serves (check with: curl -s -o /dev/null -w '%{http_code}' https://fapi.binance.com/fapi/v1/ping "
            "-> 200)")


def _error_body(body: bytes) -> tuple[int | None, str]:
    """Binance errors are ``{"code": -1121, "msg": "Invalid symbol."}``; anything else is shown truncated."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        code = data.get("code")
        return (code if isinstance(code, int) else None), str(data.get("msg", ""))[:200]
    return None, str(data)[:200]
