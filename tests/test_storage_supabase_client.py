"""SupabaseClient (the runbook's connection check) on each configured backend: SQLite, real Postgres
(also as the runbook's verbatim ``python -c`` command), and Supabase REST through the fake PostgREST."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from src.config import Config
from src.storage.base import StoreError
from src.storage.postgres_store import PostgresStore
from src.storage.sqlite_store import SqliteStore
from src.storage.supabase_client import SupabaseClient
from tests.fakes.postgrest import FakePostgrest
from tests.storage_contract import T0, make_signal
from tests.test_storage_postgres import drop_schema, new_schema_name
from tests.test_storage_supabase import SERVICE_KEY

REPO = Path(__file__).resolve().parents[1]
RUNBOOK_CHECK = ("from src.storage.supabase_client import SupabaseClient; import asyncio; "
                 "asyncio.run(SupabaseClient().get_recent_signals('BTCUSDT', '1h', 1))")
H = 3_600_000
SIGNALS = [make_signal("BTCUSDT", "1h", T0 + i * H) for i in range(3)] + [make_signal("ETHUSDT", "1h", T0 + 9 * H)]


def config(tmp_path: Path, **env: str) -> Config:
    return Config.from_env({"SPOOL_PATH": str(tmp_path / "spool.db"), "SQLITE_PATH": str(tmp_path / "wyeli.db"), **env})


@pytest.fixture
async def pg_dsn(postgres_url: str) -> AsyncIterator[str]:
    """A DATABASE_URL whose search_path is a fresh schema holding SIGNALS."""
    schema = new_schema_name()
    conn = await asyncpg.connect(postgres_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    store = PostgresStore(postgres_url, schema=schema)
    await store.open()
    for s in SIGNALS:
        await store.save_signal(s)
    await store.close()
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}search_path={schema}"
    await drop_schema(postgres_url, schema)


async def test_recent_signals_from_sqlite_newest_first_as_dicts(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wyeli.db")
    await store.open()
    for s in SIGNALS:
        await store.save_signal(s)
    await store.close()
    client = SupabaseClient(config(tmp_path))
    assert await client.get_recent_signals("BTCUSDT", "1h", 1) == [SIGNALS[2].to_dict()]
    assert [d["id"] for d in await client.get_recent_signals()] == [s.id for s in reversed(SIGNALS)]
    assert await client.ping() is True


async def test_recent_signals_from_postgres_without_touching_the_spool(tmp_path: Path, pg_dsn: str) -> None:
    client = SupabaseClient(config(tmp_path, DATABASE_URL=pg_dsn))
    got = await client.get_recent_signals("BTCUSDT", "1h", 2)
    assert got == [SIGNALS[2].to_dict(), SIGNALS[1].to_dict()]
    assert not (tmp_path / "spool.db").exists()  # a running bot owns the spool
    assert not (tmp_path / "wyeli.db").exists()  # and no silent SQLite fallback


async def test_recent_signals_through_supabase_rest(tmp_path: Path) -> None:
    fake = FakePostgrest(key=SERVICE_KEY)
    await fake.start()
    try:
        cfg = config(tmp_path, SUPABASE_URL=fake.url, SUPABASE_SERVICE_KEY=SERVICE_KEY)
        assert cfg.storage_backend == "supabase"
        from src.storage.supabase_store import SupabaseRestStore

        writer = SupabaseRestStore(fake.url, SERVICE_KEY)
        await writer.open()
        for s in SIGNALS:
            await writer.save_signal(s)
        await writer.close()
        assert await SupabaseClient(cfg).get_recent_signals("ETHUSDT", "1h", 5) == [SIGNALS[3].to_dict()]
    finally:
        await fake.stop()


async def test_rejected_storage_variable_is_an_error_not_a_sqlite_fallback(tmp_path: Path) -> None:
    client = SupabaseClient(config(tmp_path, DATABASE_URL="mysql://db.example.com/x"))
    with pytest.raises(StoreError, match="DATABASE_URL"):
        await client.get_recent_signals("BTCUSDT", "1h", 1)
    assert not (tmp_path / "wyeli.db").exists()


async def test_the_runbook_command_works_verbatim(pg_dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": pg_dsn, "SPOOL_PATH": str(tmp_path / "spool.db")}
    for code in (RUNBOOK_CHECK, RUNBOOK_CHECK.replace("asyncio.run(", "print(asyncio.run(") + ")"):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=REPO, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    assert SIGNALS[2].id in out.decode() and SIGNALS[1].id not in out.decode()
