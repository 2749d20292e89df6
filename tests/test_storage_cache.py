"""Caches: NullCache, MemoryCache, and RedisCache against the real Redis, including Redis going away
mid-run (a local TCP proxy we control sits between the cache and Redis and is cut and restored)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import pytest
import structlog
from redis.asyncio import Redis

from src.bot.sinks import CacheSink, SignalBatch
from src.bot.status import MarketView
from src.config import Config
from src.storage.cache import Cache, MemoryCache, NullCache, RedisCache, build_cache
from tests.storage_contract import T0, make_candle, make_signal


class TcpProxy:
    """Forward 127.0.0.1:<port> to a target; ``cut()`` drops every connection and refuses new ones,
    ``restore()`` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()


@pytest.fixture
def prefix() -> str:
    return f"wyeli-test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def redis_cleanup(redis_url: str, prefix: str) -> AsyncIterator[None]:
    yield
    client = Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def cache(redis_url: str, prefix: str, redis_cleanup: None) -> AsyncIterator[RedisCache]:
    c = RedisCache(redis_url, prefix=prefix, max_candles=5)
    await c.open()
    yield c
    await c.close()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(redis_url)
    p = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await p.start()
    yield p
    await p.cut()


def via(proxy: TcpProxy, redis_url: str) -> str:
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, f"127.0.0.1:{proxy.port}", parts.path, parts.query, parts.fragment))


# ---------------------------------------------------------------------------- null and memory
async def test_null_cache_remembers_nothing() -> None:
    c = NullCache()
    await c.open()
    await c.push_candles([make_candle()])
    await c.set_latest_signal(make_signal())
    assert await c.recent_candles("BTCUSDT", "1m", 10) == []
    assert await c.latest_signal("BTCUSDT") is None
    assert c.status == "off"
    assert isinstance(c, Cache)
    await c.close()


async def test_memory_cache_keeps_newest_candles_per_stream_in_order() -> None:
    c = MemoryCache(max_candles=3)
    await c.push_candles([make_candle(i=i) for i in range(5)] + [make_candle("ETHUSDT", "1m", 0)])
    assert await c.recent_candles("BTCUSDT", "1m", 10) == [make_candle(i=i) for i in (2, 3, 4)]
    assert await c.recent_candles("BTCUSDT", "1m", 2) == [make_candle(i=i) for i in (3, 4)]
    # a rewrite of an open time replaces it; an older candle slots in by time (and may fall off)
    await c.push_candles([make_candle(i=3, price=500.0), make_candle(i=1)])
    assert await c.recent_candles("BTCUSDT", "1m", 10) == [make_candle(i=2), make_candle(i=3, price=500.0),
                                                            make_candle(i=4)]
    assert await c.recent_candles("ETHUSDT", "1m", 10) == [make_candle("ETHUSDT", "1m", 0)]
    assert isinstance(c, Cache)


async def test_memory_cache_keeps_the_newest_signal_per_symbol_and_stream() -> None:
    c = MemoryCache()
    new = make_signal("BTCUSDT", "1h", T0 + 7_200_000)
    old = make_signal("BTCUSDT", "4h", T0)
    await c.set_latest_signal(new)
    await c.set_latest_signal(old)
    assert await c.latest_signal("BTCUSDT") == new
    assert await c.latest_signal("BTCUSDT", "4h") == old
    assert await c.latest_signal("BTCUSDT", "15m") is None


async def test_memory_cache_as_a_signal_sink_caches_signals_and_view_candles() -> None:
    c = MemoryCache(max_candles=4)
    candles = tuple(make_candle("BTCUSDT", "1h", i) for i in range(6))
    sig = make_signal("BTCUSDT", "1h", candles[-1].open_time_ms)
    batch = SignalBatch(signals=(sig,), views=(MarketView("BTCUSDT", "1h", candles, (), sig),))
    await CacheSink(c).publish(batch)
    await CacheSink(c).publish(batch)  # the same view again changes nothing
    assert await c.recent_candles("BTCUSDT", "1h", 10) == list(candles[2:])
    assert await c.latest_signal("BTCUSDT", "1h") == sig
    assert c.healthy and c.status == "memory"


def test_build_cache_follows_cache_type() -> None:
    assert isinstance(build_cache(Config.from_env({}, dotenv_path=None)), NullCache)
    assert isinstance(build_cache(Config.from_env({"CACHE_TYPE": "memory"}, dotenv_path=None)), MemoryCache)
    redis_cache = build_cache(Config.from_env({"CACHE_TYPE": "redis", "REDIS_URL": "redis://:s3cret@h:6379/2"},
                                              dotenv_path=None))
    assert isinstance(redis_cache, RedisCache)
    assert "s3cret" not in redis_cache.url_masked


# ---------------------------------------------------------------------------- redis
@pytest.mark.redis
async def test_redis_cache_keeps_newest_candles_per_stream(cache: RedisCache) -> None:
    assert cache.status == "redis ok"
    await cache.push_candles([make_candle(i=i) for i in range(8)] + [make_candle("ETHUSDT", "5m", 1)])
    assert await cache.recent_candles("BTCUSDT", "1m", 100) == [make_candle(i=i) for i in range(3, 8)]
    assert await cache.recent_candles("BTCUSDT", "1m", 2) == [make_candle(i=6), make_candle(i=7)]
    assert await cache.recent_candles("ETHUSDT", "5m", 10) == [make_candle("ETHUSDT", "5m", 1)]
    assert await cache.recent_candles("SOLUSDT", "1m", 10) == []
    await cache.push_candles([make_candle(i=7, price=321.0)])  # same open time: replaced, not duplicated
    got = await cache.recent_candles("BTCUSDT", "1m", 100)
    assert len(got) == 5 and got[-1] == make_candle(i=7, price=321.0)


@pytest.mark.redis
async def test_redis_cache_latest_signal_is_never_replaced_by_an_older_one(cache: RedisCache) -> None:
    new = make_signal("BTCUSDT", "1h", T0 + 7_200_000)
    old = make_signal("BTCUSDT", "4h", T0)
    await cache.set_latest_signal(new)
    await cache.set_latest_signal(old)
    assert await cache.latest_signal("BTCUSDT") == new
    assert await cache.latest_signal("BTCUSDT", "1h") == new
    assert await cache.latest_signal("BTCUSDT", "4h") == old
    assert await cache.latest_signal("ETHUSDT") is None
    newer = replace(new, id="f" * 24, candle_time_ms=T0 + 10_800_000)
    await cache.set_latest_signal(newer)
    assert await cache.latest_signal("BTCUSDT", "1h") == newer


@pytest.mark.redis
async def test_redis_cache_as_a_signal_sink_caches_signals_and_view_candles(cache: RedisCache) -> None:
    candles = tuple(make_candle("ETHUSDT", "15m", i) for i in range(7))
    sig = make_signal("ETHUSDT", "15m", candles[-1].open_time_ms)
    await CacheSink(cache).publish(SignalBatch(signals=(sig,), views=(MarketView("ETHUSDT", "15m", candles, (), sig),)))
    assert await cache.recent_candles("ETHUSDT", "15m", 10) == list(candles[2:])
    assert await cache.latest_signal("ETHUSDT") == sig
    assert cache.healthy


@pytest.mark.redis
async def test_redis_cache_is_shared_between_two_clients(cache: RedisCache, redis_url: str, prefix: str) -> None:
    other = RedisCache(redis_url, prefix=prefix, max_candles=5)
    await other.open()
    try:
        await cache.push_candles([make_candle(i=0)])
        await cache.set_latest_signal(make_signal())
        assert await other.recent_candles("BTCUSDT", "1m", 5) == [make_candle(i=0)]
        assert await other.latest_signal("BTCUSDT") == make_signal()
    finally:
        await other.close()


@pytest.mark.redis
async def test_garbage_in_redis_is_a_counted_miss_not_a_crash(cache: RedisCache, redis_url: str, prefix: str) -> None:
    raw = Redis.from_url(redis_url)
    try:
        await raw.zadd(f"{prefix}candles:BTCUSDT:1m", {b"not json": T0})
        await raw.hset(f"{prefix}signal:BTCUSDT", mapping={"t": "1", "v": "{\"id\": 1}"})
    finally:
        await raw.aclose()
    assert await cache.recent_candles("BTCUSDT", "1m", 5) == []
    assert await cache.latest_signal("BTCUSDT") is None
    assert cache.bad_entries == 2


@pytest.mark.redis
async def test_redis_going_away_mid_run_gives_misses_logs_once_and_recovers(
    proxy: TcpProxy, redis_url: str, prefix: str, redis_cleanup: None
) -> None:
    cache = RedisCache(via(proxy, redis_url), prefix=prefix, max_candles=5, retry_interval=0.0)
    await cache.open()
    try:
        await cache.push_candles([make_candle(i=0)])
        assert await cache.recent_candles("BTCUSDT", "1m", 5) == [make_candle(i=0)]

        await proxy.cut()
        with structlog.testing.capture_logs() as logs:
            for i in range(5):
                await cache.push_candles([make_candle(i=i + 1)])  # no exception reaches the bot
                assert await cache.recent_candles("BTCUSDT", "1m", 5) == []
                assert await cache.latest_signal("BTCUSDT") is None
        assert cache.status == "redis down" and not cache.healthy
        assert cache.errors_total >= 15
        assert cache.outages == 1
        assert [e["event"] for e in logs].count("redis_cache_unavailable") == 1

        await proxy.restore()
        await cache.push_candles([make_candle(i=9)])
        assert cache.status == "redis ok"
        assert (await cache.recent_candles("BTCUSDT", "1m", 5))[-1] == make_candle(i=9)
    finally:
        await cache.close()


@pytest.mark.redis
async def test_while_redis_is_down_calls_are_skipped_until_the_retry_interval(
    proxy: TcpProxy, redis_url: str, prefix: str
) -> None:
    cache = RedisCache(via(proxy, redis_url), prefix=prefix, retry_interval=3600.0)
    await cache.open()
    try:
        await proxy.cut()
        await cache.push_candles([make_candle()])
        assert cache.errors_total == 1
        await proxy.restore()
        for _ in range(10):
            await cache.push_candles([make_candle()])  # not even tried: the breaker is open
        assert cache.errors_total == 1
        assert cache.status == "redis down"
    finally:
        await cache.close()


async def test_an_unreachable_redis_at_start_is_not_fatal() -> None:
    # port 1 on localhost refuses connections
    cache = RedisCache("redis://127.0.0.1:1/0", retry_interval=0.0)
    await cache.open()
    try:
        assert cache.status == "redis down"
        await cache.push_candles([make_candle()])
        assert await cache.recent_candles("BTCUSDT", "1m", 5) == []
        assert cache.outages == 1
    finally:
        await cache.close()
