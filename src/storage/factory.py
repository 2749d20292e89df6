"""Choose the storage backend from the configuration (SPEC 3, 6).

Priority: ``DATABASE_URL`` (Postgres via asyncpg) > ``SUPABASE_URL`` (+ ``SUPABASE_SERVICE_KEY``,
Supabase REST) > ``SQLITE_PATH`` (embedded default). Network backends are wrapped in the outage
spool (:class:`SpoolStore` at ``SPOOL_PATH``) so a database outage never stops the bot; SQLite is a
local file and needs no spool. The choice is logged once, without secrets. Network backends are
imported lazily, so a missing optional dependency never breaks SQLite users.
"""

from __future__ import annotations

import importlib

import structlog

from src.config import Config, mask_secret
from src.storage.base import Store, StoreError
from src.storage.spool import SpoolStore
from src.storage.sqlite_store import SqliteStore

log = structlog.get_logger(__name__)


def build_store(config: Config) -> Store:
    """The Store the configuration asks for (not opened yet: call ``await store.open()``)."""
    backend = config.storage_backend
    if backend == "postgres" and config.database_url:
        from src.storage.postgres_store import PostgresStore

        primary: Store = PostgresStore(config.database_url)
        log.info("storage_backend", backend="postgres", url=mask_secret(config.database_url),
                 spool=str(config.spool_path))
        return SpoolStore(primary, config.spool_path)
    if backend == "supabase" and config.supabase_url:
        if not config.supabase_service_key:
            raise StoreError("SUPABASE_URL is set but SUPABASE_SERVICE_KEY is not")
        # imported by name: the module is optional (supabase-py) and may be absent from a slim install
        supabase_store = importlib.import_module("src.storage.supabase_store")
        primary = supabase_store.SupabaseRestStore(config.supabase_url, config.supabase_service_key)
        log.info("storage_backend", backend="supabase", url=mask_secret(config.supabase_url),
                 spool=str(config.spool_path))
        return SpoolStore(primary, config.spool_path)
    log.info("storage_backend", backend="sqlite", path=str(config.sqlite_path))
    return SqliteStore(config.sqlite_path)


def spool_depth(store: Store) -> int:
    """Pending spooled writes of ``store`` (0 for a store without a spool), for status and metrics."""
    return store.depth if isinstance(store, SpoolStore) else 0
