"""The TradingStore port on Postgres (001's trading tables as extended by migrations/004_trading.sql),
mixed into PostgresStore.

Upserts on the natural keys (orders.client_order_id, positions.key, trading_state.key); audit entries are
``INSERT ... ON CONFLICT (event_id) DO NOTHING``. Times cross as epoch ms and are converted in SQL,
exactly, like the rest of the store. ``testnet`` (from 001) is written as ``mode <> 'live'``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from src.storage.base import FencedOut
from src.storage.fence import fence_sql, replaying
from src.storage.trading_records import OPEN_STATUSES, AuditEntry, OrderRecord, PositionRecord

FENCED_ORDER_STATUS = "PENDING_SUBMIT"  # written right before an order is sent: the trading action to fence


def _ts(expr: str) -> str:
    return f"('epoch'::timestamptz + ({expr}) * interval '1 millisecond')"


def _ms(expr: str) -> str:
    return f"(EXTRACT(EPOCH FROM {expr}) * 1000)::bigint"


def _opt_ts(param: str) -> str:
    return f"CASE WHEN {param}::bigint IS NULL THEN NULL ELSE {_ts(param + '::bigint')} END"


_ORDER_SELECT = (
    "SELECT client_order_id, mode, signal_id, position_key, symbol, side, order_type, purpose, quantity, stop_price, "
    f"reduce_only, close_position, algo, status, filled_qty, avg_price, exchange_order_id, error, {_ms('created_at')}, "
    f"{_ms('updated_at')} FROM orders"
)
_UPSERT_ORDER = f"""
INSERT INTO orders (client_order_id, mode, signal_id, position_key, symbol, side, order_type, purpose, quantity,
                    stop_price, reduce_only, close_position, algo, status, filled_qty, avg_price, exchange_order_id,
                    error, created_at, updated_at, testnet)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, {_ts('$19::bigint')},
        {_ts('$20::bigint')}, $2 <> 'live')
ON CONFLICT (client_order_id) DO UPDATE SET mode = EXCLUDED.mode, signal_id = EXCLUDED.signal_id,
    position_key = EXCLUDED.position_key, symbol = EXCLUDED.symbol, side = EXCLUDED.side,
    order_type = EXCLUDED.order_type, purpose = EXCLUDED.purpose, quantity = EXCLUDED.quantity,
    stop_price = EXCLUDED.stop_price, reduce_only = EXCLUDED.reduce_only, close_position = EXCLUDED.close_position,
    algo = EXCLUDED.algo, status = EXCLUDED.status, filled_qty = EXCLUDED.filled_qty, avg_price = EXCLUDED.avg_price,
    exchange_order_id = EXCLUDED.exchange_order_id, error = EXCLUDED.error, updated_at = EXCLUDED.updated_at,
    testnet = EXCLUDED.testnet"""
# The same upsert fenced by the leader lease (issue 16): written only while epoch $21 holds the lease.
_FENCED_UPSERT_ORDER = _UPSERT_ORDER.replace("VALUES (", "SELECT ", 1).replace(
    ", $2 <> 'live')\nON CONFLICT", f", $2 <> 'live'\nWHERE {fence_sql('$21::bigint')}\nON CONFLICT", 1)
assert _FENCED_UPSERT_ORDER.count("WHERE EXISTS") == 1

_POSITION_SELECT = (
    "SELECT key, mode, signal_id, symbol, timeframe, pattern, direction, status, quantity, planned_entry, entry_price, "
    f"stop_loss, take_profit, leverage, risk_per_unit, {_ms('opened_at')}, {_ms('closed_at')}, exit_price, exit_reason, "
    f"realized_pnl, fees, r_multiple, protection, stop_generation, note, {_ms('created_at')}, {_ms('updated_at')} "
    "FROM positions"
)
_UPSERT_POSITION = f"""
INSERT INTO positions (key, mode, signal_id, symbol, timeframe, pattern, direction, status, quantity, planned_entry,
                       entry_price, stop_loss, take_profit, leverage, risk_per_unit, opened_at, closed_at, exit_price,
                       exit_reason, realized_pnl, fees, r_multiple, protection, stop_generation, note, created_at,
                       updated_at, testnet)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, {_opt_ts('$16')}, {_opt_ts('$17')}, $18, $19,
        $20, $21, $22, $23, $24, $25, {_ts('$26::bigint')}, {_ts('$27::bigint')}, $2 <> 'live')
ON CONFLICT (key) DO UPDATE SET mode = EXCLUDED.mode, signal_id = EXCLUDED.signal_id, symbol = EXCLUDED.symbol,
    timeframe = EXCLUDED.timeframe, pattern = EXCLUDED.pattern, direction = EXCLUDED.direction,
    status = EXCLUDED.status, quantity = EXCLUDED.quantity, planned_entry = EXCLUDED.planned_entry,
    entry_price = EXCLUDED.entry_price, stop_loss = EXCLUDED.stop_loss, take_profit = EXCLUDED.take_profit,
    leverage = EXCLUDED.leverage, risk_per_unit = EXCLUDED.risk_per_unit, opened_at = EXCLUDED.opened_at,
    closed_at = EXCLUDED.closed_at, exit_price = EXCLUDED.exit_price, exit_reason = EXCLUDED.exit_reason,
    realized_pnl = EXCLUDED.realized_pnl, fees = EXCLUDED.fees, r_multiple = EXCLUDED.r_multiple,
    protection = EXCLUDED.protection, stop_generation = EXCLUDED.stop_generation, note = EXCLUDED.note,
    updated_at = EXCLUDED.updated_at, testnet = EXCLUDED.testnet"""

_AUDIT_SELECT = (
    f"SELECT event_id, {_ms('at')}, actor, action, mode, symbol, signal_id, ref, details::text FROM audit_log"
)
_INSERT_AUDIT = f"""
INSERT INTO audit_log (event_id, at, actor, action, mode, symbol, signal_id, ref, details)
VALUES ($1, {_ts('$2::bigint')}, $3, $4, $5, $6, $7, $8, $9::jsonb)
ON CONFLICT (event_id) DO NOTHING"""


def _order(r: asyncpg.Record) -> OrderRecord:
    return OrderRecord(*r)


def _position(r: asyncpg.Record) -> PositionRecord:
    return PositionRecord(*r)


def _audit(r: asyncpg.Record) -> AuditEntry:
    return AuditEntry(*r)


class PostgresTradingMixin:
    """TradingStore methods for a class with ``self._conn(what)`` (PostgresStore)."""

    # Several instances (issue 16): the leader's fence (src/bot/leadership.Leadership.fence), set by the app with a
    # lease. An order written PENDING_SUBMIT, i.e. right before the bot sends it to Binance, names the leader's
    # epoch and is refused (FencedOut, in the same statement) when that epoch no longer holds the lease, so a stale
    # leader never sends an order. None: a single instance.
    order_fence: Callable[[], int | None] | None = None

    def _conn(self, what: str) -> AbstractAsyncContextManager[asyncpg.Connection]:
        raise NotImplementedError  # PostgresStore provides it

    async def save_order(self, order: OrderRecord) -> None:
        o = order
        live = self.order_fence is not None and o.status == FENCED_ORDER_STATUS and not replaying.get()
        epoch = self.order_fence() if live and self.order_fence is not None else None
        args = (o.client_order_id, o.mode, o.signal_id, o.position_key, o.symbol, o.side, o.order_type, o.purpose,
                o.quantity, o.stop_price, o.reduce_only, o.close_position, o.algo, o.status, o.filled_qty, o.avg_price,
                o.exchange_order_id, o.error, o.created_at_ms, o.updated_at_ms)
        async with self._conn("save_order") as conn:
            if epoch is None:
                await conn.execute(_UPSERT_ORDER, *args)
                return
            result = await conn.execute(_FENCED_UPSERT_ORDER, *args, epoch)
        if result.endswith(" 0"):
            raise FencedOut(f"order {o.client_order_id} refused: lease epoch {epoch} is stale (not the leader any more)")

    async def get_order(self, client_order_id: str) -> OrderRecord | None:
        async with self._conn("get_order") as conn:
            row = await conn.fetchrow(f"{_ORDER_SELECT} WHERE client_order_id = $1", client_order_id)
        return None if row is None else _order(row)

    async def recent_orders(self, mode: str, *, limit: int = 20, signal_id: str | None = None) -> list[OrderRecord]:
        args: list[Any] = [mode, max(0, limit)]
        where = "mode = $1"
        if signal_id is not None:
            where += " AND signal_id = $3"
            args.append(signal_id)
        sql = f"{_ORDER_SELECT} WHERE {where} ORDER BY created_at DESC, client_order_id DESC LIMIT $2"
        async with self._conn("recent_orders") as conn:
            rows = await conn.fetch(sql, *args)
        return [_order(r) for r in rows]

    async def save_position(self, position: PositionRecord) -> None:
        p = position
        async with self._conn("save_position") as conn:
            await conn.execute(_UPSERT_POSITION, p.key, p.mode, p.signal_id, p.symbol, p.timeframe, p.pattern,
                               p.direction, p.status, p.quantity, p.planned_entry, p.entry_price, p.stop_loss,
                               p.take_profit, p.leverage, p.risk_per_unit, p.opened_at_ms, p.closed_at_ms, p.exit_price,
                               p.exit_reason, p.realized_pnl, p.fees, p.r_multiple, p.protection, p.stop_generation,
                               p.note, p.created_at_ms, p.updated_at_ms)

    async def get_position(self, key: str) -> PositionRecord | None:
        async with self._conn("get_position") as conn:
            row = await conn.fetchrow(f"{_POSITION_SELECT} WHERE key = $1", key)
        return None if row is None else _position(row)

    async def open_positions(self, mode: str) -> list[PositionRecord]:
        sql = f"{_POSITION_SELECT} WHERE mode = $1 AND status = ANY($2::text[]) ORDER BY created_at, key"
        async with self._conn("open_positions") as conn:
            rows = await conn.fetch(sql, mode, list(OPEN_STATUSES))
        return [_position(r) for r in rows]

    async def closed_positions(self, mode: str, *, since_ms: int = 0, limit: int = 1000) -> list[PositionRecord]:
        sql = (f"{_POSITION_SELECT} WHERE mode = $1 AND status = 'CLOSED' AND closed_at >= {_ts('$2::bigint')} "
               "ORDER BY closed_at DESC, key DESC LIMIT $3")
        async with self._conn("closed_positions") as conn:
            rows = await conn.fetch(sql, mode, since_ms, max(0, limit))
        return [_position(r) for r in rows]

    async def append_audit(self, entry: AuditEntry) -> None:
        a = entry
        async with self._conn("append_audit") as conn:
            await conn.execute(_INSERT_AUDIT, a.event_id, a.at_ms, a.actor, a.action, a.mode, a.symbol, a.signal_id,
                               a.ref, a.details)

    async def audit_entries(self, *, mode: str | None = None, since_ms: int = 0, limit: int = 1000) -> list[AuditEntry]:
        args: list[Any] = [since_ms, max(0, limit)]
        where = f"at >= {_ts('$1::bigint')}"
        if mode is not None:
            where += " AND mode = $3"
            args.append(mode)
        sql = f"{_AUDIT_SELECT} WHERE {where} ORDER BY at, event_id LIMIT $2"
        async with self._conn("audit_entries") as conn:
            rows = await conn.fetch(sql, *args)
        return [_audit(r) for r in rows]

    async def get_trading_state(self, key: str) -> str | None:
        async with self._conn("get_trading_state") as conn:
            value = await conn.fetchval("SELECT value::text FROM trading_state WHERE key = $1", key)
        return None if value is None else str(value)

    async def set_trading_state(self, key: str, value: str) -> None:
        sql = ("INSERT INTO trading_state (key, value, updated_at) VALUES ($1, $2::jsonb, now()) ON CONFLICT (key) "
               "DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at")
        async with self._conn("set_trading_state") as conn:
            await conn.execute(sql, key, value)

