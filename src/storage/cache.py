"""Optional cache of recent candles per stream and the latest signal per symbol (SPEC 6, CACHE_TYPE).

Three implementations of one :class:`Cache` protocol:
- :class:`NullCache` (``CACHE_TYPE=none``): every read is a miss;
- :class:`MemoryCache` (``CACHE_TYPE=memory``): in-process, bounded, lost on restart;
- :class:`RedisCache` (``CACHE_TYPE=redis``): shared between processes and kept across restarts.

The cache is never the system of record: a miss only means "ask the store". RedisCache therefore
never raises from a cache call. Every Redis error (refused, reset, timeout, garbage) is caught,
counted (``errors_total``), logged ONCE per outage, and answered as a miss; while Redis is down the
cache does not even try for ``retry_interval`` seconds (5 s by default) so a dead Redis costs the bot
nothing, then it reconnects by itself. Commands fail fast: 1 s socket timeouts and no client-side
retries (redis-py would otherwise retry 3 times with backoff on every call).

Redis layout (``prefix`` defaults to ``wyeli:``):
- ``{prefix}candles:{SYMBOL}:{tf}``: sorted set, score = open_time_ms, member = JSON array of the
  candle; at most ``max_candles`` newest kept; a re-written open time replaces its member;
- ``{prefix}signal:{SYMBOL}:{tf}`` and ``{prefix}signal:{SYMBOL}``: hash ``t`` (candle_time_ms) and
  ``v`` (``Signal.to_dict`` JSON); a signal only replaces a newer-or-equal one (a backfilled old
  signal never hides the latest).
Every key expires after ``ttl_seconds`` (7 days) without writes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import pairwise
from typing import Any, Protocol, TypeVar, runtime_checkable

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from src.analysis.types import Candle, Signal
from src.config import Config, mask_secret

log = structlog.get_logger(__name__)

T = TypeVar("T")


@runtime_checkable
class Cache(Protocol):
    """What the bot needs from a cache. Reads return [] / None on a miss; nothing here raises."""

    name: str

    @property
    def status(self) -> str:
        """'off', 'memory', 'redis ok' or 'redis down' (for >status)."""

    @property
    def healthy(self) -> bool:
        """True when the cache works right now (always False for NullCache)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def push_candles(self, candles: Sequence[Candle]) -> None:
        """Remember closed candles (any mix of streams); each stream keeps only its newest ones."""

    async def recent_candles(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        """Up to ``limit`` newest cached candles of the stream, ascending by open time."""

    async def set_latest_signal(self, signal: Signal) -> None:
        """Remember ``signal`` as the latest of its symbol and of its stream, unless a newer one is cached."""

    async def latest_signal(self, symbol: str, timeframe: str | None = None) -> Signal | None:
        """The cached latest signal of the stream (or of the symbol across timeframes), or None."""


def _candle_json(c: Candle) -> bytes:
    return orjson.dumps([c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close,
                         c.volume, c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume])


def _candle_from(raw: bytes | str) -> Candle:
    r = orjson.loads(raw)
    return Candle(symbol=str(r[0]), timeframe=str(r[1]), open_time_ms=int(r[2]), close_time_ms=int(r[3]),
                  open=float(r[4]), high=float(r[5]), low=float(r[6]), close=float(r[7]), volume=float(r[8]),
                  quote_volume=float(r[9]), trades=int(r[10]), taker_buy_volume=float(r[11]),
                  taker_buy_quote_volume=float(r[12]))


class NullCache:
    """CACHE_TYPE=none: remembers nothing."""

    name = "off"

    @property
    def status(self) -> str:
        return "off"

    @property
    def healthy(self) -> bool:
        return False

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def push_candles(self, candles: Sequence[Candle]) -> None:
        return None

    async def recent_candles(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        return []

    async def set_latest_signal(self, signal: Signal) -> None:
        return None

    async def latest_signal(self, symbol: str, timeframe: str | None = None) -> Signal | None:
        return None


class MemoryCache:
    """CACHE_TYPE=memory: per-process, ``max_candles`` newest candles per stream."""

    name = "memory"

    def __init__(self, *, max_candles: int = 500) -> None:
        self.max_candles = max_candles
        self._candles: dict[tuple[str, str], deque[Candle]] = {}
        self._signals: dict[tuple[str, str | None], Signal] = {}

    @property
    def status(self) -> str:
        return "memory"

    @property
    def healthy(self) -> bool:
        return True

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._candles.clear()
        self._signals.clear()

    async def push_candles(self, candles: Sequence[Candle]) -> None:
        by_stream: dict[tuple[str, str], list[Candle]] = {}
        for c in candles:
            by_stream.setdefault(c.stream, []).append(c)
        for stream, new in by_stream.items():
            window = self._candles.setdefault(stream, deque(maxlen=self.max_candles))
            times = [c.open_time_ms for c in new]
            in_order = all(a < b for a, b in pairwise(times))
            if in_order and (not window or window[-1].open_time_ms < times[0]):
                window.extend(new)  # the live case: newer candles appended, the oldest fall off
                continue
            # rewrites or out-of-order candles: merge once, one candle per open time, newest kept
            merged = {x.open_time_ms: x for x in window}
            merged.update((c.open_time_ms, c) for c in new)
            window.clear()
            window.extend(merged[k] for k in sorted(merged)[-self.max_candles:])

    async def recent_candles(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        window = self._candles.get((symbol, timeframe))
        if not window or limit <= 0:
            return []
        return list(window)[-limit:]

    async def set_latest_signal(self, signal: Signal) -> None:
        for key in ((signal.symbol, signal.timeframe), (signal.symbol, None)):
            cur = self._signals.get(key)
            if cur is None or cur.candle_time_ms <= signal.candle_time_ms:
                self._signals[key] = signal

    async def latest_signal(self, symbol: str, timeframe: str | None = None) -> Signal | None:
        return self._signals.get((symbol, timeframe))


# KEYS = signal hashes; ARGV = candle_time_ms, signal JSON, ttl seconds
_SET_LATEST_LUA = """
for _, key in ipairs(KEYS) do
  local cur = redis.call('HGET', key, 't')
  if (not cur) or tonumber(cur) <= tonumber(ARGV[1]) then
    redis.call('HSET', key, 't', ARGV[1], 'v', ARGV[2])
  end
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', key, ARGV[3]) end
end
return 1
"""


class RedisCache:
    """CACHE_TYPE=redis (see the module docstring for the layout and the failure rules)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "wyeli:",
        max_candles: int = 500,
        ttl_seconds: int = 7 * 86400,
        retry_interval: float = 5.0,
        socket_timeout: float = 1.0,
    ) -> None:
        self.url_masked = mask_secret(url)
        self.prefix = prefix
        self.max_candles = max_candles
        self.ttl_seconds = ttl_seconds
        self.retry_interval = retry_interval
        self.errors_total = 0
        self.outages = 0
        self.bad_entries = 0
        self._url = url
        self._socket_timeout = socket_timeout
        self._client: Redis | None = None
        self._down = False
        self._retry_at = 0.0

    @property
    def status(self) -> str:
        return "redis ok" if self.healthy else "redis down"

    @property
    def healthy(self) -> bool:
        return self._client is not None and not self._down

    async def open(self) -> None:
        """Create the client and ping once; an unreachable Redis is logged, not raised."""
        if self._client is not None:
            return
        try:
            self._client = Redis.from_url(
                self._url,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=30,
            )
        except ValueError as exc:
            self._down = True
            log.error("redis_cache_bad_url", url=self.url_masked, error=str(exc))
            return
        await self._guard(self._ping, None)
        if not self._down:
            log.info("redis_cache_connected", url=self.url_masked)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except (RedisError, OSError) as exc:
                log.debug("redis_cache_close_failed", error=str(exc))

    async def _ping(self) -> None:
        assert self._client is not None
        await self._client.ping()

    async def _guard(self, fn: Callable[[], Awaitable[T]], default: T) -> T:
        """Run a Redis call; on any Redis/socket error count it, log once per outage, return ``default``."""
        if self._client is None:
            return default
        now = time.monotonic()
        if self._down and now < self._retry_at:
            return default
        try:
            result = await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors_total += 1
            self._retry_at = now + self.retry_interval
            if not self._down:
                self._down = True
                self.outages += 1
                log.warning("redis_cache_unavailable", url=self.url_masked, error=f"{type(exc).__name__}: {exc}",
                            retry_every_s=self.retry_interval)
            return default
        if self._down:
            self._down = False
            log.info("redis_cache_recovered", url=self.url_masked, errors_total=self.errors_total)
        return result

    def _candle_key(self, symbol: str, timeframe: str) -> str:
        return f"{self.prefix}candles:{symbol}:{timeframe}"

    def _signal_key(self, symbol: str, timeframe: str | None) -> str:
        return f"{self.prefix}signal:{symbol}:{timeframe}" if timeframe else f"{self.prefix}signal:{symbol}"

    async def push_candles(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return

        async def push() -> None:
            assert self._client is not None
            async with self._client.pipeline(transaction=True) as pipe:
                keys: set[str] = set()
                for c in candles:
                    key = self._candle_key(c.symbol, c.timeframe)
                    keys.add(key)
                    pipe.zremrangebyscore(key, c.open_time_ms, c.open_time_ms)
                    pipe.zadd(key, {_candle_json(c): c.open_time_ms})
                for key in keys:
                    pipe.zremrangebyrank(key, 0, -(self.max_candles + 1))
                    pipe.expire(key, self.ttl_seconds)
                await pipe.execute()

        await self._guard(push, None)

    async def recent_candles(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        if limit <= 0:
            return []

        async def read() -> list[Any]:
            assert self._client is not None
            raw: list[Any] = await self._client.zrange(self._candle_key(symbol, timeframe), -limit, -1)
            return raw

        out: list[Candle] = []
        empty: list[Any] = []
        for raw in await self._guard(read, empty):
            try:
                out.append(_candle_from(raw))
            except (ValueError, TypeError, IndexError) as exc:
                self.bad_entries += 1
                log.warning("redis_cache_bad_entry", symbol=symbol, timeframe=timeframe, error=str(exc))
        return out

    async def set_latest_signal(self, signal: Signal) -> None:
        keys = [self._signal_key(signal.symbol, signal.timeframe), self._signal_key(signal.symbol, None)]
        args: list[bytes | int] = [signal.candle_time_ms, orjson.dumps(signal.to_dict()), self.ttl_seconds]

        async def put() -> None:
            assert self._client is not None
            await self._client.eval(_SET_LATEST_LUA, len(keys), *keys, *args)

        await self._guard(put, None)

    async def latest_signal(self, symbol: str, timeframe: str | None = None) -> Signal | None:
        async def get() -> Any:
            assert self._client is not None
            return await self._client.hget(self._signal_key(symbol, timeframe), "v")

        raw: Any = await self._guard(get, None)
        if raw is None:
            return None
        try:
            return Signal.from_dict(orjson.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            self.bad_entries += 1
            log.warning("redis_cache_bad_entry", symbol=symbol, timeframe=timeframe, error=str(exc))
            return None


def build_cache(config: Config) -> Cache:
    """The cache CACHE_TYPE asks for: none -> NullCache, memory -> MemoryCache, redis -> RedisCache."""
    url = config.effective_redis_url
    if config.cache_type == "redis" and url:
        return RedisCache(url, max_candles=config.candle_window)
    if config.cache_type == "memory":
        return MemoryCache(max_candles=config.candle_window)
    return NullCache()
