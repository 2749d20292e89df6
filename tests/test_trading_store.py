"""The TradingStore contract on every backend: SQLite, Postgres (real server), Supabase REST (fake PostgREST),
and the outage spool, plus the spool keeping trading records through a primary outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from src.storage.base import StoreUnavailable
from src.storage.postgres_store import PostgresStore
from src.storage.spool import SpoolStore
from src.storage.sqlite_store import SqliteStore
from src.storage.supabase_store import SupabaseRestStore
from src.storage.trading_records import AuditEntry, TradingStore
from tests.fakes.postgrest import FakePostgrest
from tests.storage_contract import T0, make_signal
from tests.test_storage_postgres import drop_schema, new_schema_name
from tests.test_storage_spool import SwitchableStore
from tests.test_storage_supabase import SERVICE_KEY
from tests.trading_store_contract import TradingStoreContract, make_order, make_position

MIGRATION_004 = (Path(__file__).resolve().parent.parent / "src/storage/migrations/004_trading.sql").read_text()
_TRADING_METHODS = frozenset(n for n in dir(TradingStore) if not n.startswith("_"))


class SwitchableTradingStore(SwitchableStore):
    """SwitchableStore whose trading methods fail as well while ``down``."""

    def __getattribute__(self, name: str) -> Any:
        if name in _TRADING_METHODS and object.__getattribute__(self, "down"):
            async def unavailable(*args: Any, **kwargs: Any) -> Any:
                raise StoreUnavailable(f"test primary is down ({name})")

            return unavailable
        return super().__getattribute__(name)


class TestSqliteTradingStore(TradingStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        s = SqliteStore(tmp_path / "t.db")
        await s.open()
        yield s
        await s.close()


@pytest.mark.postgres
class TestPostgresTradingStore(TradingStoreContract):
    @pytest.fixture
    async def store(self, postgres_url: str) -> AsyncIterator[PostgresStore]:
        schema = new_schema_name()
        s = PostgresStore(postgres_url, schema=schema)
        await s.open()
        yield s
        await s.close()
        await drop_schema(postgres_url, schema)


class TestSupabaseTradingStore(TradingStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[SupabaseRestStore]:
        fake = FakePostgrest(key=SERVICE_KEY)
        await fake.start()
        s = SupabaseRestStore(fake.url, fake.key, retry_initial=0.001, retry_max=0.004, timeout=5.0)
        await s.open()
        yield s
        await s.close()
        await fake.stop()


class TestSpoolTradingStore(TradingStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SpoolStore]:
        s = SpoolStore(SqliteStore(tmp_path / "primary.db"), tmp_path / "spool.db")
        await s.open()
        yield s
        await s.close()


async def test_trading_records_written_during_an_outage_are_spooled_and_replayed(tmp_path: Path) -> None:
    primary = SwitchableTradingStore(tmp_path / "primary.db")
    spool = SpoolStore(primary, tmp_path / "spool.db", retry_initial=0.01, retry_max=0.05)
    await spool.open()
    try:
        sig = make_signal()
        await spool.save_signal(sig)
        primary.down = True
        entry = AuditEntry.make(T0, "bot", "order_submit", "demo", ref=f"wyE-{sig.id}")
        await spool.append_audit(entry)
        await spool.save_order(make_order(sig.id))
        await spool.save_position(make_position(sig.id))
        await spool.set_trading_state("paused", '{"reason": "x"}')
        assert spool.depth == 4
        primary.down = False
        async with asyncio.timeout(10):
            await spool.wait_drained()
        assert [e.event_id for e in await primary.audit_entries()] == [entry.event_id]
        assert await primary.get_order(f"wyE-{sig.id}") == make_order(sig.id)
        assert await primary.get_position(make_position(sig.id).key) == make_position(sig.id)
        assert await primary.get_trading_state("paused") == '{"reason": "x"}'
    finally:
        primary.down = False
        await spool.close()
        await primary.close()


@pytest.mark.postgres
async def test_migration_004_is_idempotent_and_keeps_rows(postgres_url: str) -> None:
    """Running the trading migration again (as pasting it twice into the SQL editor does) changes nothing."""
    schema = new_schema_name()
    store = PostgresStore(postgres_url, schema=schema)
    await store.open()
    try:
        sig = make_signal()
        await store.save_signal(sig)
        await store.save_position(make_position(sig.id))
        sql = MIGRATION_004
        conn = await asyncpg.connect(postgres_url, server_settings={"search_path": schema})
        try:
            await conn.execute(sql)
            await conn.execute(sql)
            views = await conn.fetch("SELECT * FROM v_trading_daily")
        finally:
            await conn.close()
        assert await store.get_position(make_position(sig.id).key) == make_position(sig.id)
        assert views == []  # the position is open: nothing closed per day yet
    finally:
        await store.close()
        await drop_schema(postgres_url, schema)
