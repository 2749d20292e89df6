"""The SQL migrations on the real Postgres: from empty, re-applied, pasted by hand, RLS on every table,
anon cannot write, the optional read policy, the Realtime publication guard, and the migrate command.

Supabase-only objects (roles anon/authenticated, publication supabase_realtime) are created inside a
transaction that is rolled back, so the shared test server is left as it was.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from src.storage import __main__ as storage_cli
from src.storage.migrate import MIGRATIONS_DIR, Migration, MigrationError, apply_migrations, discover, pending
from tests.test_storage_postgres import drop_schema, new_schema_name

pytestmark = pytest.mark.postgres

SCHEMA_SQL = (MIGRATIONS_DIR / "001_create_schema.sql").read_text()
KINDS_SQL = (MIGRATIONS_DIR / "002_signal_kinds_and_evidence.sql").read_text()
OPTIONAL_READ_SQL = (MIGRATIONS_DIR / "optional_public_read.sql").read_text()
TABLES = {"schema_migrations", "symbols", "candles", "signals", "signal_deliveries", "signal_performance",
          "stream_quality", "orders", "positions", "audit_log", "trading_state", "analysis_watermarks",
          "signal_follow_ups", "follow_up_deliveries", "discord_subscriptions", "discord_mutes", "backtest_jobs",
          "backtest_job_files", "leader_lease", "bot_instances"}
VIEWS = {"v_recent_signals", "v_signal_stats", "v_win_rate", "v_reliability", "v_data_quality", "v_trading_daily"}
FUNCTIONS = ("wyeli_pending_deliveries(text, integer)", "wyeli_open_signals()", "wyeli_last_signal_times()",
             "wyeli_pattern_stats()", "wyeli_pending_deliveries_by_kind(text, text[], integer)", "wyeli_last_emitted()",
             "wyeli_recent_structures(bigint)", "wyeli_live_track(text[], text, text, text, timestamptz)",
             "wyeli_commit_analysis(json, json)", "wyeli_drop_candles_after(text, text, timestamptz)",
             "wyeli_pending_follow_ups(text, integer)", "wyeli_open_tp2_watches()",
             "wyeli_pending_deliveries_since(text, text[], bigint, integer)",
             "wyeli_signal_history(text[], text, text, text, text, integer, integer)",
             "wyeli_live_track_since(text[], text, text, text, bigint, timestamptz)")

MIGRATION_NAMES = [m.name for m in discover()]
ALL_SQL = [m.sql for m in discover()]  # every numbered file, in order, as pasted into the SQL editor


async def paste_all(c: asyncpg.Connection) -> None:
    for sql in ALL_SQL:
        await c.execute(sql)


@pytest.fixture
async def conn(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose search_path is a fresh, empty schema (dropped afterwards)."""
    schema = new_schema_name()
    c = await asyncpg.connect(postgres_url)
    await c.execute(f'CREATE SCHEMA "{schema}"')
    await c.execute(f'SET search_path = "{schema}"')
    yield c
    await c.close()
    await drop_schema(postgres_url, schema)


async def catalog(c: asyncpg.Connection) -> list[tuple[object, ...]]:
    """Everything the schema file defines, as comparable rows (tables, columns, indexes, views, policies, RLS)."""
    rows = await c.fetch(
        """
        SELECT 'rel', relname, relkind::text, relrowsecurity::text FROM pg_class
         WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'v', 'i')
        UNION ALL
        SELECT 'col', table_name, column_name, data_type FROM information_schema.columns
         WHERE table_schema = current_schema()
        UNION ALL
        SELECT 'view', viewname, definition, '' FROM pg_views WHERE schemaname = current_schema()
        UNION ALL
        SELECT 'idx', indexname, indexdef, '' FROM pg_indexes WHERE schemaname = current_schema()
        UNION ALL
        SELECT 'pol', tablename, policyname, cmd FROM pg_policies WHERE schemaname = current_schema()
        ORDER BY 1, 2, 3, 4
        """
    )
    return [tuple(r) for r in rows]


async def test_migrations_apply_to_an_empty_schema_and_are_recorded(conn) -> None:
    applied = await apply_migrations(conn)
    assert applied == MIGRATION_NAMES
    rels = {(r[0], r[1]) for r in await conn.fetch(
        "SELECT relname, relkind::text FROM pg_class WHERE relnamespace = current_schema()::regnamespace")}
    assert {t for t, k in rels if k == "r"} == TABLES
    assert {v for v, k in rels if k == "v"} == VIEWS
    ledger = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    assert sorted((r["version"], r["name"], r["checksum"]) for r in ledger) == [
        (m.version, m.name, m.checksum) for m in discover()]
    assert await pending(conn) == []


async def test_reapplying_the_later_files_changes_nothing(conn) -> None:
    # 001 cannot be pasted again after 002 (002 changed the columns of views 001 creates; RUNBOOK: apply each
    # file once, in order); every later file is idempotent on its own
    await apply_migrations(conn)
    before = await catalog(conn)
    for sql in ALL_SQL[1:] * 2:
        await conn.execute(sql)
    assert await apply_migrations(conn) == []
    assert await catalog(conn) == before
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(MIGRATION_NAMES)


async def test_files_pasted_by_hand_in_order_give_the_runners_schema(conn, postgres_url) -> None:
    await conn.execute(SCHEMA_SQL)  # 001 twice (before the later files) is harmless too
    await paste_all(conn)
    pasted = await catalog(conn)
    schema = new_schema_name()
    other = await asyncpg.connect(postgres_url, server_settings={"search_path": schema})
    try:
        await other.execute(f'CREATE SCHEMA "{schema}"')
        await apply_migrations(other)
        here = await conn.fetchval("SELECT current_schema()")
        assert [tuple(str(x).replace(schema, "S") for x in row) for row in await catalog(other)] == [
            tuple(str(x).replace(here, "S") for x in row) for row in pasted]
    finally:
        await other.close()
        await drop_schema(postgres_url, schema)


async def test_schema_pasted_by_hand_is_recognised_and_its_checksum_filled_in(conn) -> None:
    await paste_all(conn)
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE checksum IS NOT NULL") == 0
    assert await apply_migrations(conn) == []
    for m in discover():
        assert await conn.fetchval("SELECT checksum FROM schema_migrations WHERE version = $1", m.version) == m.checksum


async def test_existing_data_survives_reapplying_the_schema(conn) -> None:
    await apply_migrations(conn)
    await conn.execute("INSERT INTO symbols (symbol) VALUES ('BTCUSDT')")
    await conn.execute(KINDS_SQL)
    assert await conn.fetchval("SELECT count(*) FROM symbols") == 1


async def test_migration_002_keeps_the_rows_of_a_001_database_as_posted_trade_calls(conn) -> None:
    await apply_migrations(conn, discover()[:1])
    await conn.execute(
        "INSERT INTO signals (id, symbol, timeframe, pattern, direction, confidence, raw_confidence, entry, stop_loss, "
        "take_profits, candle_time, generated_at) VALUES ('a1', 'BTCUSDT', '1h', 'spring', 'LONG', 0.8, 0.8, 100, 98, "
        "'{103}', now(), now())")
    await conn.execute(
        "INSERT INTO signal_performance (signal_id, symbol_name, timeframe, pattern, direction, outcome, entry_time, "
        "entry_price, exit_time, exit_price, r_multiple, mfe, mae, confidence, resolved_at) VALUES ('a1', 'BTCUSDT', '1h', "
        "'spring', 'LONG', 'WIN', now(), 100, now(), 103, 1.4, 1.5, 0.2, 0.8, now())")
    assert await apply_migrations(conn) == MIGRATION_NAMES[1:]
    row = await conn.fetchrow("SELECT kind, gate_reason, structure_id, p_win, evidence FROM signals WHERE id = 'a1'")
    assert tuple(row) == ("trade", "", "", None, None)
    assert await conn.fetchval("SELECT r_multiple FROM v_recent_signals WHERE id = 'a1'") == 1.4
    # rows from before the evidence model never count in the tracked population
    pops = {r["population"] for r in await conn.fetch("SELECT population FROM v_signal_stats")}
    assert pops == {"trade"}


async def test_row_level_security_is_enabled_on_every_table(conn) -> None:
    await apply_migrations(conn)
    rows = await conn.fetch(
        "SELECT relname, relrowsecurity FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'"
    )
    assert {r["relname"] for r in rows} == TABLES
    assert all(r["relrowsecurity"] for r in rows), [r["relname"] for r in rows if not r["relrowsecurity"]]
    assert await conn.fetchval("SELECT count(*) FROM pg_policies WHERE schemaname = current_schema()") == 0


async def test_later_migration_is_applied_once_in_version_order(conn) -> None:
    extra = Migration(version=999, name="999_add_note", sql="ALTER TABLE signals ADD COLUMN IF NOT EXISTS test_note text;")
    assert await apply_migrations(conn, [*discover(), extra]) == [*MIGRATION_NAMES, "999_add_note"]
    assert await apply_migrations(conn, [*discover(), extra]) == []
    assert await conn.fetchval(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND column_name = 'test_note'"
    ) == 1


async def test_failing_migration_rolls_back_and_records_nothing(conn) -> None:
    broken = Migration(version=998, name="998_broken", sql="CREATE TABLE ok_table (x int); SELECT no_such_column FROM signals;")
    with pytest.raises(asyncpg.PostgresError):
        await apply_migrations(conn, [*discover(), broken])
    assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None  # the whole run rolled back
    assert await apply_migrations(conn) == MIGRATION_NAMES


async def test_changed_migration_file_is_not_reapplied_but_warned_about(conn) -> None:
    await apply_migrations(conn)
    changed = Migration(version=1, name="001_create_schema", sql=SCHEMA_SQL + "\n-- edited\n")
    with capture_logs() as logs:
        assert await apply_migrations(conn, [changed]) == []
    assert any(e["event"] == "migration_changed_after_apply" for e in logs)


async def test_concurrent_runners_apply_each_migration_once(postgres_url: str) -> None:
    schema = new_schema_name()
    conns = [await asyncpg.connect(postgres_url, server_settings={"search_path": schema}) for _ in range(4)]
    try:
        await conns[0].execute(f'CREATE SCHEMA "{schema}"')
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(MIGRATION_NAMES)]
    finally:
        for c in conns:
            await c.close()
        await drop_schema(postgres_url, schema)


def test_discover_ignores_optional_files_and_rejects_duplicate_versions(tmp_path: Path) -> None:
    names = [m.name for m in discover()]
    assert names[0] == "001_create_schema" and "optional_public_read" not in names  # an opt-in, not a migration
    assert names == sorted(names)
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "002_b.sql").write_text("SELECT 2;")
    (tmp_path / "notes.sql").write_text("SELECT 3;")
    assert [(m.version, m.name) for m in discover(tmp_path)] == [(1, "001_a"), (2, "002_b")]
    (tmp_path / "002_c.sql").write_text("SELECT 4;")
    with pytest.raises(MigrationError, match="two migrations with version 2"):
        discover(tmp_path)


# ---------------------------------------------------------------------------- Supabase-only objects
async def _create_role_if_missing(c: asyncpg.Connection, role: str) -> None:
    if not await c.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        await c.execute(f"CREATE ROLE {role} NOLOGIN")


async def test_anon_cannot_write_any_table_and_reads_nothing_without_the_optional_policy(conn) -> None:
    tx = conn.transaction()
    await tx.start()
    try:
        for role in ("anon", "authenticated"):
            await _create_role_if_missing(conn, role)
            # what Supabase does for every new table in public
            await conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {await conn.fetchval('SELECT current_schema()')} "
                               f"GRANT ALL ON TABLES TO {role}")
            await conn.execute(f"GRANT USAGE ON SCHEMA {await conn.fetchval('SELECT current_schema()')} TO {role}")
        await paste_all(conn)
        for table in TABLES:
            for priv in ("INSERT", "UPDATE", "DELETE"):
                assert not await conn.fetchval("SELECT has_table_privilege('anon', $1, $2)", table, priv), (table, priv)
        for fn in FUNCTIONS:
            assert not await conn.fetchval("SELECT has_function_privilege('anon', $1, 'EXECUTE')", fn), fn
        await conn.execute(
            "INSERT INTO signals (id, symbol, timeframe, pattern, direction, confidence, raw_confidence, entry, stop_loss, "
            "candle_time, generated_at) VALUES ('a1', 'BTCUSDT', '1h', 'spring', 'LONG', 0.8, 0.8, 100, 98, now(), now())"
        )
        # Even with a write grant (say, someone re-granted it), RLS without a policy refuses the row.
        await conn.execute("GRANT INSERT, SELECT ON signals TO anon")
        await conn.execute("SET LOCAL ROLE anon")
        assert await conn.fetchval("SELECT count(*) FROM signals") == 0  # RLS: no read policy, no rows
        assert await conn.fetchval("SELECT count(*) FROM v_recent_signals") == 0  # the view obeys the caller's RLS
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with conn.transaction():  # a savepoint, rolled back by the error
                await conn.execute(
                    "INSERT INTO signals (id, symbol, timeframe, pattern, direction, confidence, raw_confidence, entry, "
                    "stop_loss, candle_time, generated_at) VALUES ('b2', 'ETHUSDT', '1h', 'spring', 'LONG', 0.8, 0.8, "
                    "100, 98, now(), now())"
                )
        await conn.execute("RESET ROLE")

        await conn.execute(OPTIONAL_READ_SQL)
        await conn.execute(OPTIONAL_READ_SQL)  # idempotent
        await conn.execute("REVOKE INSERT ON signals FROM anon")
        await conn.execute("SET LOCAL ROLE anon")
        assert await conn.fetchval("SELECT count(*) FROM signals") == 1
        assert await conn.fetchval("SELECT count(*) FROM v_recent_signals") == 1
        assert await conn.fetchval("SELECT candidates FROM v_signal_stats WHERE population = 'trade'") == 1
        assert await conn.fetchval("SELECT count(*) FROM v_reliability") == 0
        for statement in ("UPDATE signals SET confidence = 0.1", "DELETE FROM signals",
                          "INSERT INTO candles (symbol, timeframe, open_time, close_time, open, high, low, close, volume) "
                          "VALUES ('X', '1m', now(), now() + interval '1 minute', 1, 1, 1, 1, 1)"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(statement)
        await conn.execute("RESET ROLE")
    finally:
        await tx.rollback()


async def test_optional_read_policy_file_is_a_no_op_on_plain_postgres(conn) -> None:
    await apply_migrations(conn)
    supabase_roles = await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname IN ('anon', 'authenticated')")
    await conn.execute(OPTIONAL_READ_SQL)
    policies = await conn.fetch("SELECT policyname, cmd FROM pg_policies WHERE schemaname = current_schema()")
    if supabase_roles:  # a Supabase-like server: exactly the two read policies
        assert sorted((p["policyname"], p["cmd"]) for p in policies) == [
            ("signal_performance_public_read", "SELECT"), ("signals_public_read", "SELECT")]
    else:  # plain Postgres (the CI service): nothing to do, and no error
        assert policies == []


async def test_signals_join_the_realtime_publication_when_it_exists(conn) -> None:
    tx = conn.transaction()
    await tx.start()
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime'"):
            await conn.execute("CREATE PUBLICATION supabase_realtime")
        await conn.execute(SCHEMA_SQL)
        await conn.execute(SCHEMA_SQL)  # already a member: no error
        published = await conn.fetch(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' AND schemaname = current_schema()"
        )
        assert [r[0] for r in published] == ["signals"]
    finally:
        await tx.rollback()


async def test_schema_installs_as_a_plain_owner_that_cannot_alter_the_realtime_publication(conn) -> None:
    """Like Supabase's `postgres` role: owns the schema, is no superuser, may not own the publication."""
    role = f"wyeli_owner_{secrets.token_hex(4)}"
    schema = await conn.fetchval("SELECT current_schema()")
    tx = conn.transaction()
    await tx.start()
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime'"):
            await conn.execute("CREATE PUBLICATION supabase_realtime")
        await conn.execute(f"CREATE ROLE {role} NOLOGIN")
        await conn.execute(f'ALTER SCHEMA "{schema}" OWNER TO {role}')
        await conn.execute(f"SET LOCAL ROLE {role}")
        assert await apply_migrations(conn) == MIGRATION_NAMES  # the notice is not an error
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime' AND schemaname = $1", schema
        ) == 0
        assert await conn.fetchval("SELECT tableowner FROM pg_tables WHERE schemaname = $1 AND tablename = 'signals'",
                                   schema) == role
        await conn.execute("RESET ROLE")
    finally:
        await tx.rollback()


# ---------------------------------------------------------------------------- the migrate command
def test_migrate_command_without_database_url_explains_what_is_needed(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert storage_cli.main(["migrate", "--env-file", str(tmp_path / "none.env")]) == 2
    err = capsys.readouterr().err
    assert "DATABASE_URL is not set" in err and "postgresql://" in err


def test_migrate_command_applies_then_reports_up_to_date(monkeypatch, capsys, tmp_path, postgres_url) -> None:
    schema = new_schema_name()

    async def make() -> None:
        c = await asyncpg.connect(postgres_url)
        await c.execute(f'CREATE SCHEMA "{schema}"')
        await c.close()

    asyncio.run(make())
    sep = "&" if "?" in postgres_url else "?"
    monkeypatch.setenv("DATABASE_URL", f"{postgres_url}{sep}search_path={schema}")
    env = ["--env-file", str(tmp_path / "none.env")]
    try:
        assert storage_cli.main(["migrate", "--dry-run", *env]) == 0
        pending_text = f"{len(MIGRATION_NAMES)} pending migration(s): {', '.join(MIGRATION_NAMES)}"
        assert pending_text in capsys.readouterr().out
        assert storage_cli.main(["migrate", *env]) == 0
        assert f"applied {', '.join(MIGRATION_NAMES)}" in capsys.readouterr().out
        assert storage_cli.main(["migrate", *env]) == 0
        assert "nothing to apply" in capsys.readouterr().out
    finally:
        asyncio.run(drop_schema(postgres_url, schema))


def test_migrate_command_reports_an_unreachable_server_without_the_password(monkeypatch, capsys, tmp_path,
                                                                            unused_tcp_port) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://wyeli:hunter2secret@127.0.0.1:{unused_tcp_port}/db")
    assert storage_cli.main(["migrate", "--env-file", str(tmp_path / "none.env")]) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "hunter2secret" not in err
