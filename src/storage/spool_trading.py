"""The TradingStore port through the outage spool, mixed into SpoolStore.

Writes (orders, positions, audit entries, state) follow the spool's rules: straight to the primary while it
is up, else appended to the local spool file behind everything already there, in order, and replayed
later; so an audit entry is never lost to a database outage. Reads go to the primary only (they raise
StoreUnavailable while it is down). The primary must implement TradingStore (all three backends do).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TypeVar

import orjson

from src.storage.base import Store, StoreError, StoreUnavailable
from src.storage.fence import replaying
from src.storage.trading_records import AuditEntry, OrderRecord, PositionRecord, TradingStore

T = TypeVar("T")
TRADING_OPS = frozenset({"order", "position", "audit", "state"})


class SpoolTradingMixin:
    """TradingStore methods for SpoolStore (which provides ``primary`` and ``_write``)."""

    primary: Store

    async def _write(self, op: str, encode: Callable[[], bytes], direct: Callable[[], Awaitable[T]], spooled: T) -> T:
        raise NotImplementedError  # SpoolStore provides it

    @property
    def _trading(self) -> TradingStore:
        if not isinstance(self.primary, TradingStore):
            raise StoreError(f"{self.primary.name} does not store trading records")
        return self.primary

    async def _direct_only(self, what: str, direct: Callable[[], Awaitable[None]]) -> None:
        raise NotImplementedError  # SpoolStore provides it

    async def save_order(self, order: OrderRecord) -> None:
        fence = getattr(self.primary, "order_fence", None)
        if order.status == "PENDING_SUBMIT" and fence is not None:
            # a leader's order, written right before it is sent (issue 16): the primary checks the lease epoch in
            # the same statement. When it cannot answer, the leader's own clock decides (fence() raises FencedOut
            # once it may not act any more) and the write-ahead record is spooled as before.
            try:
                return await self._direct_only("a leader's order", lambda: self._trading.save_order(order))
            except StoreUnavailable:
                fence()
        await self._write("order", lambda: orjson.dumps(asdict(order)), lambda: self._trading.save_order(order), None)

    async def save_position(self, position: PositionRecord) -> None:
        await self._write("position", lambda: orjson.dumps(asdict(position)),
                          lambda: self._trading.save_position(position), None)

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._write("audit", lambda: orjson.dumps(asdict(entry)), lambda: self._trading.append_audit(entry), None)

    async def set_trading_state(self, key: str, value: str) -> None:
        await self._write("state", lambda: orjson.dumps({"key": key, "value": value}),
                          lambda: self._trading.set_trading_state(key, value), None)

    async def _apply_trading(self, op: str, payload: bytes) -> None:
        data = orjson.loads(payload)
        if op == "order":
            token = replaying.set(True)  # judged when it was spooled; the order it records may have been sent
            try:
                await self._trading.save_order(OrderRecord(**data))
            finally:
                replaying.reset(token)
        elif op == "position":
            await self._trading.save_position(PositionRecord(**data))
        elif op == "audit":
            await self._trading.append_audit(AuditEntry(**data))
        else:
            await self._trading.set_trading_state(str(data["key"]), str(data["value"]))

    # ------------------------------------------------------------------ reads (primary only)
    async def get_order(self, client_order_id: str) -> OrderRecord | None:
        return await self._trading.get_order(client_order_id)

    async def recent_orders(self, mode: str, *, limit: int = 20, signal_id: str | None = None) -> list[OrderRecord]:
        return await self._trading.recent_orders(mode, limit=limit, signal_id=signal_id)

    async def get_position(self, key: str) -> PositionRecord | None:
        return await self._trading.get_position(key)

    async def open_positions(self, mode: str) -> list[PositionRecord]:
        return await self._trading.open_positions(mode)

    async def closed_positions(self, mode: str, *, since_ms: int = 0, limit: int = 1000) -> list[PositionRecord]:
        return await self._trading.closed_positions(mode, since_ms=since_ms, limit=limit)

    async def audit_entries(self, *, mode: str | None = None, since_ms: int = 0, limit: int = 1000) -> list[AuditEntry]:
        return await self._trading.audit_entries(mode=mode, since_ms=since_ms, limit=limit)

    async def get_trading_state(self, key: str) -> str | None:
        return await self._trading.get_trading_state(key)
