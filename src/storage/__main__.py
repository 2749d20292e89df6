"""``python -m src.storage migrate``: apply pending Postgres migrations using DATABASE_URL.

Exit codes: 0 done (or nothing to do), 1 database error, 2 usage/configuration error (e.g. no
DATABASE_URL). ``--dry-run`` lists the pending migrations without applying them. The URL is read
like the bot reads it (environment, then ``.env``) and is never printed unmasked.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
