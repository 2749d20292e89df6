"""``SupabaseClient``: the small read API the runbook's connection check uses, on whatever backend is
configured (``DATABASE_URL`` > ``SUPABASE_URL`` > SQLite, as the bot chooses through
:func:`src.storage.factory.build_store`)::

    python -c "from src.storage.supabase_client import SupabaseClient; import asyncio; \\
               print(asyncio.run(SupabaseClient().get_recent_signals('BTCUSDT', '1h', 1)))"

Each call opens the store, reads, and closes it again, so it is safe next to a running bot: it talks to
the primary store directly and never touches the bot's outage spool. A storage variable the
configuration rejected (say a malformed DATABASE_URL) raises :class:`StoreError` instead of silently
falling back to SQLite.
"""

from __future__ import annotations

from typing import Any

from src.config import Config
from src.storage.base import Store, StoreError
from src.storage.factory import build_store
from src.storage.spool import SpoolStore

_STORAGE_VARIABLES = ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_KEY", "SQLITE_PATH")


class SupabaseClient:
    """Read signals from the configured store (the name is kept from the original runbook)."""

    def __init__(self, config: Config | None = None, *, store: Store | None = None) -> None:
        self._config = config
        self._store = store

    def _build(self) -> Store:
        if self._store is not None:
            return self._store
        config = self._config if self._config is not None else Config.from_env()
        problems = [p for p in config.problems if p.startswith(_STORAGE_VARIABLES)]
        if problems:
            raise StoreError("storage configuration is invalid: " + "; ".join(problems))
        store = build_store(config)
        # the bot may be running and owns the spool file; read from the database itself
        return store.primary if isinstance(store, SpoolStore) else store

    async def get_recent_signals(
        self, symbol: str | None = None, timeframe: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Newest first, as public signal dicts (``Signal.to_dict()``). Raises StoreError/StoreUnavailable."""
        store = self._build()
        await store.open()
        try:
            signals = await store.recent_signals(symbol=symbol, timeframe=timeframe, limit=limit)
        finally:
            if store is not self._store:
                await store.close()
        return [s.to_dict() for s in signals]

    async def ping(self) -> bool:
        """True when the configured store answers now."""
        store = self._build()
        try:
            await store.open()
        except StoreError:
            return False
        try:
            return await store.ping()
        finally:
            if store is not self._store:
                await store.close()
