"""build_store picks the backend from the configuration; the retention loop prunes old candles."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
import structlog

from src.config import Config
from src.storage.base import StoreUnavailable
from src.storage.factory import build_store, spool_depth
from src.storage.retention import DAY_MS, prune_once, run_retention
from src.storage.spool import SpoolStore
from src.storage.sqlite_store import SqliteStore
from tests.storage_contract import make_candle


def config(tmp_path: Path, **env: str) -> Config:
    base = {"SQLITE_PATH": str(tmp_path / "db" / "wyeli.db"), "SPOOL_PATH": str(tmp_path / "spool.db")}
    return Config.from_env({**base, **env}, dotenv_path=None).validate()


async def test_without_database_settings_the_store_is_sqlite_at_sqlite_path(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        store = build_store(config(tmp_path))
    assert isinstance(store, SqliteStore)
    assert [e for e in logs if e["event"] == "storage_backend"] == [
        {"event": "storage_backend", "log_level": "info", "backend": "sqlite", "path": str(tmp_path / "db" / "wyeli.db")}
    ]
    await store.open()
    try:
        await store.upsert_candles([make_candle()])
        assert (tmp_path / "db" / "wyeli.db").is_file()
        assert spool_depth(store) == 0
    finally:
        await store.close()


def test_database_url_selects_postgres_behind_the_spool_and_logs_no_password(tmp_path: Path) -> None:
    from src.storage.postgres_store import PostgresStore

    url = "postgresql://bot:pa55word@db.example.com:5432/wyeli"
    with structlog.testing.capture_logs() as logs:
        store = build_store(config(tmp_path, DATABASE_URL=url, SUPABASE_URL="https://x.supabase.co",
                                   SUPABASE_SERVICE_KEY="service-key"))
    assert isinstance(store, SpoolStore)
    assert isinstance(store.primary, PostgresStore)
    assert store.path == tmp_path / "spool.db"
    assert "pa55word" not in store.name
    assert "pa55word" not in repr(logs)
    assert [e["backend"] for e in logs if e["event"] == "storage_backend"] == ["postgres"]


def test_supabase_url_selects_the_rest_backend_behind_the_spool(tmp_path: Path) -> None:
    if importlib.util.find_spec("src.storage.supabase_store") is None:
        pytest.skip("src/storage/supabase_store.py is not in the tree yet")
    with structlog.testing.capture_logs() as logs:
        store = build_store(config(tmp_path, SUPABASE_URL="https://abc.supabase.co",
                                   SUPABASE_SERVICE_KEY="sb_secret_abcdefghijklmnop"))
    assert isinstance(store, SpoolStore)
    assert type(store.primary).__name__ == "SupabaseRestStore"
    assert "sb_secret_abcdefghijklmnop" not in repr(logs)


async def test_an_unreachable_postgres_leaves_a_running_bot_with_a_spool(tmp_path: Path) -> None:
    # nothing listens on port 1: the primary is down from the start, the writes are spooled
    store = build_store(config(tmp_path, DATABASE_URL="postgresql://postgres@127.0.0.1:1/test"))
    assert isinstance(store, SpoolStore)
    store.primary._connect_timeout = 1.0  # type: ignore[attr-defined]
    await store.open()
    try:
        await store.upsert_candles([make_candle()])
        assert spool_depth(store) == 1
        with pytest.raises(StoreUnavailable):
            await store.load_candles("BTCUSDT", "1m")
    finally:
        await store.close()
    assert (tmp_path / "spool.db").is_file()


# ---------------------------------------------------------------------------- retention
async def test_prune_once_removes_candles_older_than_the_retention_window(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "r.db")
    await store.open()
    try:
        cs = [make_candle("BTCUSDT", "1d", i) for i in range(10)]
        await store.upsert_candles(cs)
        now = cs[9].open_time_ms + DAY_MS // 2
        with structlog.testing.capture_logs() as logs:
            removed = await prune_once(store, 3, now_ms=now)
        # kept: open_time >= now - 3 days -> days 7, 8, 9
        assert removed == 7
        assert await store.load_candles("BTCUSDT", "1d") == cs[7:]
        assert [e["removed"] for e in logs if e["event"] == "candles_pruned"] == [7]
        with pytest.raises(ValueError):
            await prune_once(store, 0)
    finally:
        await store.close()


async def test_run_retention_prunes_until_stopped_and_survives_store_errors(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "r.db")
    await store.open()
    cs = [make_candle("BTCUSDT", "1d", i) for i in range(10)]
    await store.upsert_candles(cs)
    clock_ms = [cs[5].open_time_ms]  # the clock advances one day per successful round
    stop = asyncio.Event()
    rounds: list[int] = []
    original = store.prune_candles

    async def counting_prune(older_than_ms: int) -> int:
        rounds.append(older_than_ms)
        if len(rounds) == 2:
            raise StoreUnavailable("disk busy")  # the loop logs and carries on
        if len(rounds) == 4:
            stop.set()
        clock_ms[0] += DAY_MS
        return await original(older_than_ms)

    store.prune_candles = counting_prune  # type: ignore[method-assign]
    try:
        with structlog.testing.capture_logs() as logs:
            await asyncio.wait_for(run_retention(store, 2, interval_s=0.0, stop=stop, clock=lambda: clock_ms[0]), 10)
        assert len(rounds) == 4
        assert any(e["event"] == "candle_prune_failed" for e in logs)
        # rounds at day 5, 6 (fails), 6, 7 with a 2-day window: the last cutoff is day 5
        assert rounds == [cs[3].open_time_ms, cs[4].open_time_ms, cs[4].open_time_ms, cs[5].open_time_ms]
        assert await store.load_candles("BTCUSDT", "1d") == cs[5:]
    finally:
        await store.close()
