"""The TradingStore port on SQLite (tables of sqlite_migrations/004_trading.sql), mixed into SqliteStore.

Same rules as the rest of the SQLite store: one worker thread, one transaction per write, upserts on the
natural keys (audit entries: insert-or-ignore on event_id), times in epoch ms, booleans as 0/1.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from src.storage.sqlite_thread import SqliteThread, write
from src.storage.trading_records import OPEN_STATUSES, AuditEntry, OrderRecord, PositionRecord

_ORDER_COLS = (
    "client_order_id, mode, signal_id, position_key, symbol, side, order_type, purpose, quantity, stop_price, "
    "reduce_only, close_position, algo, status, filled_qty, avg_price, exchange_order_id, error, created_at, updated_at"
)
_POSITION_COLS = (
    "key, mode, signal_id, symbol, timeframe, pattern, direction, status, quantity, planned_entry, entry_price, "
    "stop_loss, take_profit, leverage, risk_per_unit, opened_at, closed_at, exit_price, exit_reason, realized_pnl, "
    "fees, r_multiple, protection, stop_generation, note, created_at, updated_at"
)
_AUDIT_COLS = "event_id, at, actor, action, mode, symbol, signal_id, ref, details"


def _upsert(table: str, cols: str, key: str) -> str:
    names = [c.strip() for c in cols.split(",")]
    updates = ", ".join(f"{c}=excluded.{c}" for c in names if c not in (key, "created_at"))
    marks = ",".join("?" for _ in names)
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {updates}"


_UPSERT_ORDER = _upsert("orders", _ORDER_COLS, "client_order_id")
_UPSERT_POSITION = _upsert("positions", _POSITION_COLS, "key")
_INSERT_AUDIT = f"INSERT INTO audit_log ({_AUDIT_COLS}) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (event_id) DO NOTHING"


def order_row(o: OrderRecord) -> tuple[Any, ...]:
    return (o.client_order_id, o.mode, o.signal_id, o.position_key, o.symbol, o.side, o.order_type, o.purpose,
            o.quantity, o.stop_price, int(o.reduce_only), int(o.close_position), int(o.algo), o.status, o.filled_qty,
            o.avg_price, o.exchange_order_id, o.error, o.created_at_ms, o.updated_at_ms)


def row_order(r: Sequence[Any]) -> OrderRecord:
    return OrderRecord(
        client_order_id=r[0], mode=r[1], signal_id=r[2], position_key=r[3], symbol=r[4], side=r[5], order_type=r[6],
        purpose=r[7], quantity=r[8], stop_price=r[9], reduce_only=bool(r[10]), close_position=bool(r[11]),
        algo=bool(r[12]), status=r[13], filled_qty=r[14], avg_price=r[15], exchange_order_id=r[16], error=r[17],
        created_at_ms=r[18], updated_at_ms=r[19],
    )


def position_row(p: PositionRecord) -> tuple[Any, ...]:
    return (p.key, p.mode, p.signal_id, p.symbol, p.timeframe, p.pattern, p.direction, p.status, p.quantity,
            p.planned_entry, p.entry_price, p.stop_loss, p.take_profit, p.leverage, p.risk_per_unit, p.opened_at_ms,
            p.closed_at_ms, p.exit_price, p.exit_reason, p.realized_pnl, p.fees, p.r_multiple, p.protection,
            p.stop_generation, p.note, p.created_at_ms, p.updated_at_ms)


def row_position(r: Sequence[Any]) -> PositionRecord:
    return PositionRecord(*r)


def audit_row(a: AuditEntry) -> tuple[Any, ...]:
    return (a.event_id, a.at_ms, a.actor, a.action, a.mode, a.symbol, a.signal_id, a.ref, a.details)


class SqliteTradingMixin:
    """TradingStore methods for a class that has ``self._db`` (a SqliteThread)."""

    _db: SqliteThread

    async def save_order(self, order: OrderRecord) -> None:

        row = order_row(order)
        await self._db.run(lambda conn: write(conn, _UPSERT_ORDER, [row]), "save_order")

    async def get_order(self, client_order_id: str) -> OrderRecord | None:
        def q(conn: sqlite3.Connection) -> OrderRecord | None:
            r = conn.execute(f"SELECT {_ORDER_COLS} FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
            return None if r is None else row_order(r)

        result: OrderRecord | None = await self._db.run(q, "get_order")
        return result

    async def recent_orders(self, mode: str, *, limit: int = 20, signal_id: str | None = None) -> list[OrderRecord]:
        where = "mode = ?"
        args: list[Any] = [mode]
        if signal_id is not None:
            where += " AND signal_id = ?"
            args.append(signal_id)
        sql = f"SELECT {_ORDER_COLS} FROM orders WHERE {where} ORDER BY created_at DESC, client_order_id DESC LIMIT ?"
        rows: list[OrderRecord] = await self._db.run(
            lambda conn: [row_order(r) for r in conn.execute(sql, (*args, max(0, limit)))], "recent_orders")
        return rows

    async def save_position(self, position: PositionRecord) -> None:

        row = position_row(position)
        await self._db.run(lambda conn: write(conn, _UPSERT_POSITION, [row]), "save_position")

    async def get_position(self, key: str) -> PositionRecord | None:
        def q(conn: sqlite3.Connection) -> PositionRecord | None:
            r = conn.execute(f"SELECT {_POSITION_COLS} FROM positions WHERE key = ?", (key,)).fetchone()
            return None if r is None else row_position(r)

        result: PositionRecord | None = await self._db.run(q, "get_position")
        return result

    async def open_positions(self, mode: str) -> list[PositionRecord]:
        sql = (f"SELECT {_POSITION_COLS} FROM positions WHERE mode = ? AND status IN ({','.join('?' * len(OPEN_STATUSES))}) "
               "ORDER BY created_at, key")
        rows: list[PositionRecord] = await self._db.run(
            lambda conn: [row_position(r) for r in conn.execute(sql, (mode, *OPEN_STATUSES))], "open_positions")
        return rows

    async def closed_positions(self, mode: str, *, since_ms: int = 0, limit: int = 1000) -> list[PositionRecord]:
        sql = (f"SELECT {_POSITION_COLS} FROM positions WHERE mode = ? AND status = 'CLOSED' AND closed_at >= ? "
               "ORDER BY closed_at DESC, key DESC LIMIT ?")
        rows: list[PositionRecord] = await self._db.run(
            lambda conn: [row_position(r) for r in conn.execute(sql, (mode, since_ms, max(0, limit)))], "closed_positions")
        return rows

    async def append_audit(self, entry: AuditEntry) -> None:

        row = audit_row(entry)
        await self._db.run(lambda conn: write(conn, _INSERT_AUDIT, [row]), "append_audit")

    async def audit_entries(self, *, mode: str | None = None, since_ms: int = 0, limit: int = 1000) -> list[AuditEntry]:
        where = "at >= ?"
        args: list[Any] = [since_ms]
        if mode is not None:
            where += " AND mode = ?"
            args.append(mode)
        sql = f"SELECT {_AUDIT_COLS} FROM audit_log WHERE {where} ORDER BY at, event_id LIMIT ?"
        rows: list[AuditEntry] = await self._db.run(
            lambda conn: [AuditEntry(*r) for r in conn.execute(sql, (*args, max(0, limit)))], "audit_entries")
        return rows

    async def get_trading_state(self, key: str) -> str | None:
        def q(conn: sqlite3.Connection) -> str | None:
            r = conn.execute("SELECT value FROM trading_state WHERE key = ?", (key,)).fetchone()
            return None if r is None else str(r[0])

        result: str | None = await self._db.run(q, "get_trading_state")
        return result

    async def set_trading_state(self, key: str, value: str) -> None:

        sql = ("INSERT INTO trading_state (key, value, updated_at) VALUES (?,?,?) ON CONFLICT (key) DO UPDATE SET "
               "value=excluded.value, updated_at=excluded.updated_at")
        row = (key, value, time.time_ns() // 1_000_000)
        await self._db.run(lambda conn: write(conn, sql, [row]), "set_trading_state")
