"""WyEli storage tools.

- ``python -m src.storage migrate``: apply pending Postgres migrations using DATABASE_URL. Exit codes: 0
  done (or nothing to do), 1 database error, 2 usage/configuration error (e.g. no DATABASE_URL).
  ``--dry-run`` lists the pending migrations without applying them. The URL is read like the bot reads it
  (environment, then ``.env``) and is never printed unmasked.
- ``python -m src.storage spool [--dead-letters]``: what waits in the outage spool (SPOOL_PATH) and what
  the database refused for good. Works for every set-up: with SQLite (no spool) or no spool file yet it
  says so; the file is opened read-only and never created. Exit 0, or 1 when the file is not a spool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
from pathlib import Path

import asyncpg

from src.config import Config, mask_secret
from src.storage.migrate import MigrationError, apply_migrations, discover, pending
from src.storage.postgres_store import split_dsn


async def _run(dsn: str, dry_run: bool) -> list[str]:
    dsn, cache = split_dsn(dsn)
    conn = await asyncpg.connect(dsn, timeout=15, statement_cache_size=100 if cache is None else cache)
    try:
        if dry_run:
            return [m.name for m in await pending(conn, discover())]
        return await apply_migrations(conn)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.storage", description="WyEli storage tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrate", help="apply pending Postgres migrations (DATABASE_URL)")
    mig.add_argument("--dry-run", action="store_true", help="list pending migrations, change nothing")
    mig.add_argument("--env-file", default=".env", help="dotenv file to read first (default: .env)")
    spool = sub.add_parser("spool", help="show what waits in the outage spool (network stores) and its dead letters")
    spool.add_argument("--dead-letters", action="store_true", help="list the writes the database refused for good")
    env = spool.add_mutually_exclusive_group()
    env.add_argument("--env-file", default=".env", help="dotenv file to read first (default: .env)")
    env.add_argument("--no-env-file", action="store_true", help="read no dotenv file")
    args = parser.parse_args(argv)
    if args.command == "spool":
        return _spool(Config.from_env(dotenv_path=None if args.no_env_file else args.env_file), args.dead_letters)

    config = Config.from_env(dotenv_path=args.env_file)
    if not config.database_url:
        print(
            "DATABASE_URL is not set (or invalid): expected postgresql://user:password@host:5432/dbname. "
            "For Supabase use the direct connection or the session pooler (port 5432). "
            "With the Supabase REST backend, paste src/storage/migrations/001_create_schema.sql into the SQL editor instead.",
            file=sys.stderr,
        )
        return 2
    where = mask_secret(config.database_url)
    try:
        names = asyncio.run(_run(config.database_url, args.dry_run))
    except MigrationError as exc:
        print(f"migrations directory problem: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"migration against {where} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"{where}: {len(names)} pending migration(s){': ' + ', '.join(names) if names else ''}")
    elif names:
        print(f"{where}: applied {', '.join(names)}")
    else:
        print(f"{where}: schema up to date, nothing to apply")
    return 0


def _spool(config: Config, dead_letters: bool) -> int:
    path = Path(config.spool_path)
    if not path.is_file():
        why = ("the SQLite store writes directly and needs no spool" if config.storage_backend == "sqlite"
               else "the database has not been unreachable since this path was set")
        print(f"no spool file at {path}: nothing is waiting ({why})")
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            pending = int(conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0])
            dead = conn.execute("SELECT seq, op, error FROM dead_letters ORDER BY seq").fetchall()
    except sqlite3.Error as exc:
        print(f"{path} is not a WyEli spool file ({exc})", file=sys.stderr)
        return 1
    print(f"{path}: pending: {pending}, dead letters: {len(dead)}"
          + ("" if config.storage_backend != "sqlite" else " (the store is SQLite now: nothing replays them)"))
    if dead_letters:
        for seq, op, error in dead:
            print(f"  #{seq} {op}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
