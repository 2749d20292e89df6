"""Postgres outage end to end: PostgresStore behind a TCP proxy we cut and restore, wrapped in storage I's
SpoolStore. Writes during the outage go to the spool; after the restore nothing is lost and the order
of writes to the same key is kept (the last write wins, as it would have without the outage).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from src.storage.base import StoreUnavailable, StreamQuality
from src.storage.postgres_store import PostgresStore
from src.storage.spool import SpoolStore
from tests.fakes.tcp_proxy import TcpProxy
from tests.storage_contract import T0, delivery, make_candle, make_outcome, make_signal
from tests.test_storage_postgres import drop_schema, new_schema_name

pytestmark = pytest.mark.postgres


def via(dsn: str, port: int) -> str:
    """The same DSN, pointed at 127.0.0.1:port."""
    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(postgres_url)
    p = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    name = new_schema_name()
    yield name
    await drop_schema(postgres_url, name)


async def direct_store(postgres_url: str, schema: str) -> PostgresStore:
    """A second store straight to Postgres (no proxy) to check what really landed."""
    s = PostgresStore(postgres_url, schema=schema)
    await s.open()
    return s


async def test_writes_during_an_outage_are_spooled_and_replayed_in_order(
    postgres_url: str, proxy: TcpProxy, schema: str, tmp_path: Path
) -> None:
    primary = PostgresStore(via(postgres_url, proxy.port), schema=schema, connect_timeout=2, command_timeout=5)
    store = SpoolStore(primary, tmp_path / "spool.db", autoflush=False)
    await store.open()
    try:
        before = [make_candle(i=i, price=100.0 + i) for i in range(5)]
        sig_a = make_signal("BTCUSDT", "1h", T0)
        await store.upsert_candles(before)
        assert await store.save_signal(sig_a) is True
        assert store.depth == 0

        await proxy.cut()
        # the same candle written three times, a delivery that fails then succeeds: order matters
        during = [make_candle(i=i, price=200.0 + i) for i in range(3, 8)]
        await store.upsert_candles(during)
        rewrite_1 = replace(make_candle(i=7, price=300.0))
        rewrite_2 = replace(make_candle(i=7, price=400.0))
        await store.upsert_candles([rewrite_1])
        await store.upsert_candles([rewrite_2])
        sig_b = make_signal("ETHUSDT", "4h", T0 + 4 * 3_600_000, "wave3", "SHORT")
        assert await store.save_signal(sig_b) is True
        await store.record_delivery(delivery(sig_a, "discord:1", "failed", error="store down", at=T0 + 1))
        await store.record_delivery(delivery(sig_a, "discord:1", "sent", attempts=2, message_id="42", at=T0 + 2))
        await store.save_outcome(make_outcome(sig_a, "WIN", 2.0))
        quality = StreamQuality("BTCUSDT", "1m", make_candle(i=7).open_time_ms, 1, 3, 0, 1, T0 + 3)
        await store.save_stream_quality([quality])
        assert store.depth == 8
        assert not store.primary_up
        with pytest.raises(StoreUnavailable):
            await store.load_candles("BTCUSDT", "1m")  # reads never pretend to be empty

        await proxy.restore()
        assert await store.flush() == 8
        assert store.depth == 0 and store.primary_up

        check = await direct_store(postgres_url, schema)
        try:
            expected = before[:3] + during[:4] + [rewrite_2]
            assert await check.load_candles("BTCUSDT", "1m") == expected
            assert await check.get_signal(sig_a.id) == sig_a
            assert await check.get_signal(sig_b.id) == sig_b
            got = await check.get_delivery(sig_a.id, "discord:1")
            assert got is not None and got.status == "sent" and got.message_id == "42"
            assert await check.get_outcome(sig_a.id) == make_outcome(sig_a, "WIN", 2.0)
            assert await check.stream_quality() == [quality]
            assert await check.open_signals() == [sig_b]
        finally:
            await check.close()
        assert await store.dead_letters() == []
    finally:
        await store.close()


async def test_store_down_at_start_spools_then_opens_and_migrates_when_postgres_returns(
    postgres_url: str, proxy: TcpProxy, schema: str, tmp_path: Path
) -> None:
    await proxy.cut()
    primary = PostgresStore(via(postgres_url, proxy.port), schema=schema, connect_timeout=2, command_timeout=5)
    store = SpoolStore(primary, tmp_path / "spool.db", retry_initial=0.05, retry_max=0.2)
    await store.open()  # does not raise: the bot starts while the database is away
    try:
        assert not store.primary_up
        cs = [make_candle(i=i) for i in range(10)]
        sig = make_signal()
        await store.upsert_candles(cs)
        assert await store.save_signal(sig) is True
        assert store.depth == 2

        await proxy.restore()
        # the background flusher retries with backoff; wait for it to drain (bounded, not a timing assertion)
        for _ in range(200):
            if store.depth == 0:
                break
            await asyncio.sleep(0.05)
        assert store.depth == 0
        assert await store.load_candles("BTCUSDT", "1m") == cs
        assert await store.get_signal(sig.id) == sig
        assert await store.ping() is True
    finally:
        await store.close()


async def test_dropped_connections_are_replaced_after_the_outage(postgres_url: str, proxy: TcpProxy, schema: str) -> None:
    store = PostgresStore(via(postgres_url, proxy.port), schema=schema, connect_timeout=2, command_timeout=5)
    await store.open()
    try:
        await store.upsert_candles([make_candle(i=0)])
        await proxy.cut()
        assert await store.ping() is False
        with pytest.raises(StoreUnavailable):
            await store.upsert_candles([make_candle(i=1)])
        await proxy.restore()
        await store.upsert_candles([make_candle(i=1)])
        assert len(await store.load_candles("BTCUSDT", "1m")) == 2
        assert proxy.connections_total >= 2
    finally:
        await store.close()
