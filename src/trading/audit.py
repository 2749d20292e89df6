"""Every action and every exchange answer, written to ``audit_log`` (all three stores).

Writes never block or break trading: an entry the store does not take (StoreError) is kept in memory,
in order, and written again before the next one (at most ``max_pending`` = 10 000 are kept, the oldest
dropped and counted beyond that). Details are scrubbed: keys named like secrets are replaced, and any
configured secret value found in a string is masked, so a key can never reach the table.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from src.storage.base import StoreError
from src.storage.trading_records import AuditEntry, TradingStore

log = structlog.get_logger(__name__)
_SECRET_KEYS = ("secret", "signature", "apikey", "api_key", "x-mbx-apikey", "password", "token", "private")


class Auditor:
    def __init__(self, store: TradingStore, mode: str, *, secrets: tuple[str, ...] = (),
                 clock: Callable[[], int] | None = None, max_pending: int = 10_000) -> None:
        self.store = store
        self.mode = mode
        self._secrets = tuple(s for s in secrets if s and len(s) >= 6)
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._pending: deque[AuditEntry] = deque()
        self._lock = asyncio.Lock()  # one writer at a time keeps the order and pops exactly what was written
        self.max_pending = max_pending
        self.written = 0
        self.failed_writes = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _clean(self, value: Any, depth: int = 0) -> Any:
        if depth > 6:
            return "..."
        if isinstance(value, dict):
            return {str(k): "***" if any(s in str(k).lower() for s in _SECRET_KEYS) else self._clean(v, depth + 1)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v, depth + 1) for v in value]
        if isinstance(value, str):
            for s in self._secrets:
                if s in value:
                    value = value.replace(s, "***")
            return value
        return value

    async def record(self, action: str, *, actor: str = "bot", symbol: str | None = None, signal_id: str | None = None,
                     ref: str | None = None, **details: Any) -> AuditEntry:
        entry = AuditEntry.make(self._clock(), actor, action, self.mode, symbol=symbol, signal_id=signal_id, ref=ref,
                                details=self._clean(details))
        self._pending.append(entry)
        while len(self._pending) > self.max_pending:
            self._pending.popleft()
            self.dropped += 1
        await self.flush()
        return entry

    async def flush(self) -> None:
        async with self._lock:
            while self._pending:
                entry = self._pending[0]
                try:
                    await self.store.append_audit(entry)
                except StoreError as exc:
                    self.failed_writes += 1
                    log.warning("audit_write_failed", pending=len(self._pending), error=str(exc)[:200])
                    return
                if self._pending and self._pending[0] is entry:
                    self._pending.popleft()
                self.written += 1
