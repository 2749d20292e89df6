"""SqliteStore: the shared contract plus SQLite specifics (file creation, WAL, schema version, durability)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.types import Candle, InvalidCandle
from src.storage.base import StoreError, StoreUnavailable, plainly_valid
from src.storage.sqlite_store import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from tests.storage_contract import StoreContract, candles, delivery, make_candle, make_signal


class TestSqliteStoreContract(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        s = SqliteStore(tmp_path / "contract.db")
        await s.open()
        yield s
        await s.close()


async def test_open_creates_parent_directories_and_a_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "wyeli.db"
    store = SqliteStore(path)
    await store.open()
    try:
        assert path.is_file()
        assert store.name == f"sqlite:{path}"
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"candles", "signals", "signal_deliveries", "signal_performance", "stream_quality"} <= tables


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "wyeli.db"
    cs = [make_candle(i=i) for i in range(50)]
    sig = make_signal()
    store = SqliteStore(path)
    await store.open()
    await store.upsert_candles(cs)
    await store.save_signal(sig)
    await store.close()
    # close checkpoints the WAL into the main file
    assert not (tmp_path / "wyeli.db-wal").exists() or (tmp_path / "wyeli.db-wal").stat().st_size == 0
    again = SqliteStore(path)
    await again.open()
    try:
        assert await again.load_candles("BTCUSDT", "1m") == cs
        assert await again.get_signal(sig.id) == sig
    finally:
        await again.close()


async def test_close_twice_is_harmless_and_calls_after_close_raise_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    await store.open()
    await store.close()
    await store.close()
    assert await store.ping() is False
    with pytest.raises(StoreError):
        await store.load_candles("BTCUSDT", "1m")


async def test_a_file_from_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SqliteStore(path)
    with pytest.raises(StoreError, match="newer"):
        await store.open()
    await store.close()


async def test_a_file_from_before_the_migration_ledger_keeps_its_data_and_gets_only_the_new_migrations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # what the first release wrote: the whole 001 script, user_version 1
        conn.executescript(MIGRATIONS[0].sql)
        conn.execute("INSERT INTO signals (id, symbol, timeframe, pattern, direction, confidence, raw_confidence, entry, "
                     "stop_loss, take_profits, candle_time, generated_at, reasons, analyzer_version, config_hash, features, "
                     "created_at) VALUES ('old', 'BTCUSDT', '1h', 'p', 'LONG', 0.5, 0.5, 1, 0.9, '[1.1]', 0, "
                     "'1970-01-01T01:00:00.000Z', '[]', 'v', 'h', '{}', '1970-01-01T00:00:00.000Z')")
        conn.execute("PRAGMA user_version = 1")
    store = SqliteStore(path)
    await store.open()
    try:
        old = await store.get_signal("old")
        # migration 002: a row from before it was a posted signal, without an evidence assessment
        assert old is not None and (old.kind, old.gate_reason, old.structure_id, old.evidence) == ("trade", "", "", None)
        assert await store.pending_deliveries("discord:1") == [old]
        tracks = await store.live_track({""})
        assert [(t.population, t.candidates) for t in tracks] == [("trade", 1)]  # never in the tracked population
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert versions == [m.version for m in MIGRATIONS]


async def test_the_schema_refuses_an_unknown_kind_and_an_out_of_range_p_win(tmp_path: Path) -> None:
    path = tmp_path / "checks.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        cols = "id, symbol, timeframe, pattern, direction, confidence, raw_confidence, entry, stop_loss, take_profits, " \
               "candle_time, generated_at, reasons, created_at"
        values = "'x', 'B', '1h', 'p', 'LONG', 0.5, 0.5, 1, 0.9, '[]', 0, 't', '[]', 't'"
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"INSERT INTO signals ({cols}, kind) VALUES ({values}, 'maybe')")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"INSERT INTO signals ({cols}, p_win) VALUES ({values}, 1.5)")


async def test_a_file_with_a_migration_this_program_does_not_know_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, '999_from_the_future', 'x', 'now')")
    again = SqliteStore(path)
    with pytest.raises(StoreError, match="does not know"):
        await again.open()
    await again.close()


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    for _ in range(2):
        store = SqliteStore(path)
        await store.open()
        await store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version").fetchall()
    assert rows and all(n == 1 for _, n in rows)


async def test_invalid_and_unclosed_candles_are_skipped_and_counted_not_fatal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    await store.open()
    try:
        good = [make_candle(i=i) for i in range(3)]
        nan = replace(make_candle(i=5), close=float("nan"))
        negative = replace(make_candle(i=6), low=-1.0)
        forming = replace(make_candle(i=7), closed=False)
        await store.upsert_candles([good[0], nan, good[1], negative, forming, good[2]])
        assert await store.load_candles("BTCUSDT", "1m") == good
        assert store.rejected_candles == 3
    finally:
        await store.close()


async def test_a_delivery_for_an_unknown_signal_is_a_permanent_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    await store.open()
    try:
        with pytest.raises(StoreError):
            await store.record_delivery(delivery(make_signal(), "discord:1", "sent"))
    finally:
        await store.close()


async def test_a_locked_database_reports_store_unavailable_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SqliteStore(path, busy_timeout_ms=50)
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        with pytest.raises(StoreUnavailable):
            await store.upsert_candles([make_candle()])
        blocker.execute("ROLLBACK")
        await store.upsert_candles([make_candle()])
        assert await store.load_candles("BTCUSDT", "1m") == [make_candle()]
    finally:
        blocker.close()
        await store.close()


async def test_all_sqlite_work_runs_on_one_worker_thread_not_the_event_loop(tmp_path: Path) -> None:
    import threading

    store = SqliteStore(tmp_path / "x.db")
    await store.open()
    try:
        idents = {await store._db.run(lambda conn: threading.get_ident(), "ident") for _ in range(5)}
        assert len(idents) == 1
        assert threading.get_ident() not in idents
    finally:
        await store.close()


_SPECIALS = (0.0, -0.0, -1.0, 5e-324, 1e308, float("inf"), float("-inf"), float("nan"))
_FLOAT_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")


def _validates(candle: Candle) -> bool:
    try:
        candle.validate()
    except InvalidCandle:
        return False
    return True


def _with(candle: Candle, **changes: Any) -> Candle:
    return replace(candle, **changes)


@settings(max_examples=60, deadline=None)
@given(base=candles(), value=st.floats())
def test_the_fast_validity_check_agrees_with_candle_validate_on_corrupted_floats(base: Candle, value: float) -> None:
    # every float field set to every special value and to one arbitrary float, and every pair of fields swapped
    # (which breaks the low <= open/close <= high order): the fast check must agree with validate() each time
    variants = [base]
    for field in _FLOAT_FIELDS:
        variants += [_with(base, **{field: v}) for v in (*_SPECIALS, value)]
        variants += [_with(base, **{field: getattr(base, other), other: getattr(base, field)}) for other in _FLOAT_FIELDS]
    for candle in variants:
        assert plainly_valid(candle) == _validates(candle), candle


@settings(max_examples=100, deadline=None)
@given(base=candles(), trades=st.integers(-3, 3), close_shift=st.integers(-3, 3))
def test_the_fast_validity_check_agrees_with_candle_validate_on_counts_and_times(
    base: Candle, trades: int, close_shift: int
) -> None:
    candle = replace(base, trades=trades, close_time_ms=base.open_time_ms + close_shift)
    assert plainly_valid(candle) == _validates(candle)
