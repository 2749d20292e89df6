"""Apply the numbered SQL migrations in ``src/storage/migrations`` to a Postgres database.

Rules:
- a migration is a file named ``NNN_name.sql`` (three or more digits); files are applied in version
  order, each at most once, and the version is recorded in ``schema_migrations`` with the file's sha256;
- every file is idempotent on its own (it can also be pasted into the Supabase SQL editor, which
  records the version with a NULL checksum; the runner then only fills in the checksum);
- the whole run holds a transaction-scoped advisory lock, so two bot processes starting together
  apply each file once (it works through Supabase's session pooler; see RUNBOOK section 3);
- a recorded checksum that differs from the file is logged as a warning, not applied again: the
  files are append-only, a change belongs in a new numbered file.
Other ``.sql`` files in the directory (e.g. ``optional_public_read.sql``) are never applied.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import structlog

from src.storage.migration_files import Migration, MigrationError, discover_in

__all__ = ["Migration", "MigrationError", "applied_versions", "apply_migrations", "discover", "pending"]

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The Postgres migrations, ascending by version (see :func:`discover_in`)."""
    return discover_in(directory)


# pg_advisory_xact_lock key: a fixed 64-bit number, "WyEliMig" in ASCII.
_LOCK_KEY = 0x5779456C694D6967

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str | None]:
    """version -> recorded checksum (None when applied by hand); {} before the first migration."""
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations')"
    )
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {int(r["version"]): r["checksum"] for r in rows}


async def pending(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """Migrations not yet recorded in the ledger."""
    done = await applied_versions(conn)
    return [m for m in (discover() if migrations is None else migrations) if m.version not in done]


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every pending migration in one transaction under the advisory lock; returns the names applied."""
    todo = discover() if migrations is None else migrations
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(_LEDGER_DDL)
        done = await applied_versions(conn)
        for m in todo:
            if m.version in done:
                recorded = done[m.version]
                if recorded is None:
                    await conn.execute("UPDATE schema_migrations SET checksum = $2 WHERE version = $1", m.version, m.checksum)
                elif recorded != m.checksum:
                    log.warning("migration_changed_after_apply", migration=m.name, hint="add a new numbered file instead")
                continue
            # No arguments: asyncpg uses the simple query protocol, which runs a multi-statement script.
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3) "
                "ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum",
                m.version, m.name, m.checksum,
            )
            applied.append(m.name)
    if applied:
        log.info("migrations_applied", migrations=applied)
    return applied
