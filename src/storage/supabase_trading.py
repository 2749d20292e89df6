"""The TradingStore port over Supabase REST (PostgREST), mixed into SupabaseRestStore.

Same tables as Postgres after migrations/004_trading.sql (paste it into the SQL editor after 001).
Upserts with ``on_conflict`` on the natural keys and ``Prefer: return=minimal``; audit entries use
``resolution=ignore-duplicates`` on ``event_id``; every request goes through the store's retrying
``_call``. Times travel as ISO-8601 text (exact conversion to and from epoch ms).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from postgrest.types import ReturnMethod
from supabase import AsyncClient

from src.storage.rest_times import ms_to_ts, ts_to_ms
from src.storage.trading_records import OPEN_STATUSES, AuditEntry, OrderRecord, PositionRecord

_ORDER_COLS = ("client_order_id,mode,signal_id,position_key,symbol,side,order_type,purpose,quantity,stop_price,"
               "reduce_only,close_position,algo,status,filled_qty,avg_price,exchange_order_id,error,created_at,updated_at")
_POSITION_COLS = ("key,mode,signal_id,symbol,timeframe,pattern,direction,status,quantity,planned_entry,entry_price,"
                  "stop_loss,take_profit,leverage,risk_per_unit,opened_at,closed_at,exit_price,exit_reason,realized_pnl,"
                  "fees,r_multiple,protection,stop_generation,note,created_at,updated_at")
_AUDIT_COLS = "event_id,at,actor,action,mode,symbol,signal_id,ref,details"


def _ts(ms: int | None) -> str | None:
    return None if ms is None else ms_to_ts(ms)


def _ms(text: Any) -> int | None:
    return None if text is None else ts_to_ms(str(text))


def _req_ms(text: Any) -> int:
    value = _ms(text)
    if value is None:
        raise ValueError("a required timestamp is null")
    return value


def order_row(o: OrderRecord) -> dict[str, Any]:
    return {
        "client_order_id": o.client_order_id, "mode": o.mode, "signal_id": o.signal_id, "position_key": o.position_key,
        "symbol": o.symbol, "side": o.side, "order_type": o.order_type, "purpose": o.purpose, "quantity": o.quantity,
        "stop_price": o.stop_price, "reduce_only": o.reduce_only, "close_position": o.close_position, "algo": o.algo,
        "status": o.status, "filled_qty": o.filled_qty, "avg_price": o.avg_price,
        "exchange_order_id": o.exchange_order_id, "error": o.error, "created_at": _ts(o.created_at_ms),
        "updated_at": _ts(o.updated_at_ms), "testnet": o.mode != "live",
    }


def row_order(r: dict[str, Any]) -> OrderRecord:
    return OrderRecord(
        client_order_id=r["client_order_id"], mode=r["mode"], signal_id=r["signal_id"], position_key=r["position_key"],
        symbol=r["symbol"], side=r["side"], order_type=r["order_type"], purpose=r["purpose"],
        quantity=float(r["quantity"]), stop_price=_opt_float(r["stop_price"]), reduce_only=bool(r["reduce_only"]),
        close_position=bool(r["close_position"]), algo=bool(r["algo"]), status=r["status"],
        filled_qty=float(r["filled_qty"]), avg_price=_opt_float(r["avg_price"]), exchange_order_id=r["exchange_order_id"],
        error=r["error"], created_at_ms=_req_ms(r["created_at"]), updated_at_ms=_req_ms(r["updated_at"]),
    )


def position_row(p: PositionRecord) -> dict[str, Any]:
    return {
        "key": p.key, "mode": p.mode, "signal_id": p.signal_id, "symbol": p.symbol, "timeframe": p.timeframe,
        "pattern": p.pattern, "direction": p.direction, "status": p.status, "quantity": p.quantity,
        "planned_entry": p.planned_entry, "entry_price": p.entry_price, "stop_loss": p.stop_loss,
        "take_profit": p.take_profit, "leverage": p.leverage, "risk_per_unit": p.risk_per_unit,
        "opened_at": _ts(p.opened_at_ms), "closed_at": _ts(p.closed_at_ms), "exit_price": p.exit_price,
        "exit_reason": p.exit_reason, "realized_pnl": p.realized_pnl, "fees": p.fees, "r_multiple": p.r_multiple,
        "protection": p.protection, "stop_generation": p.stop_generation, "note": p.note,
        "created_at": _ts(p.created_at_ms), "updated_at": _ts(p.updated_at_ms), "testnet": p.mode != "live",
    }


def row_position(r: dict[str, Any]) -> PositionRecord:
    return PositionRecord(
        key=r["key"], mode=r["mode"], signal_id=r["signal_id"], symbol=r["symbol"], timeframe=r["timeframe"],
        pattern=r["pattern"], direction=r["direction"], status=r["status"], quantity=float(r["quantity"]),
        planned_entry=float(r["planned_entry"]), entry_price=_opt_float(r["entry_price"]),
        stop_loss=float(r["stop_loss"]), take_profit=_opt_float(r["take_profit"]), leverage=int(r["leverage"]),
        risk_per_unit=float(r["risk_per_unit"]), opened_at_ms=_ms(r["opened_at"]), closed_at_ms=_ms(r["closed_at"]),
        exit_price=_opt_float(r["exit_price"]), exit_reason=r["exit_reason"], realized_pnl=_opt_float(r["realized_pnl"]),
        fees=float(r["fees"]), r_multiple=_opt_float(r["r_multiple"]), protection=r["protection"],
        stop_generation=int(r["stop_generation"]), note=r["note"], created_at_ms=_req_ms(r["created_at"]),
        updated_at_ms=_req_ms(r["updated_at"]),
    )


def audit_row(a: AuditEntry) -> dict[str, Any]:
    return {"event_id": a.event_id, "at": _ts(a.at_ms), "actor": a.actor, "action": a.action, "mode": a.mode,
            "symbol": a.symbol, "signal_id": a.signal_id, "ref": a.ref, "details": orjson.loads(a.details)}


def row_audit(r: dict[str, Any]) -> AuditEntry:
    return AuditEntry(event_id=r["event_id"], at_ms=_req_ms(r["at"]), actor=r["actor"], action=r["action"],
                      mode=r["mode"], symbol=r["symbol"], signal_id=r["signal_id"], ref=r["ref"],
                      details=orjson.dumps(r["details"]).decode())


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


Request = Callable[[AsyncClient], Awaitable[Any]]


class SupabaseTradingMixin:
    """TradingStore methods for SupabaseRestStore (which provides ``_call``, ``_upsert`` and ``_pages``)."""

    async def _call(self, what: str, request: Request) -> list[dict[str, Any]]:
        raise NotImplementedError  # SupabaseRestStore provides it

    async def _upsert(self, what: str, table: str, rows: list[dict[str, Any]], on_conflict: str) -> None:
        raise NotImplementedError

    async def _pages(self, what: str, page: Callable[[AsyncClient, int, int], Awaitable[Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def save_order(self, order: OrderRecord) -> None:
        await self._upsert("save order", "orders", [order_row(order)], "client_order_id")

    async def get_order(self, client_order_id: str) -> OrderRecord | None:
        rows = await self._call("get order", lambda c: c.table("orders").select(_ORDER_COLS)
                                .eq("client_order_id", client_order_id).limit(1).execute())
        return row_order(rows[0]) if rows else None

    async def recent_orders(self, mode: str, *, limit: int = 20, signal_id: str | None = None) -> list[OrderRecord]:
        wanted = max(0, limit)
        if wanted == 0:
            return []

        def request(c: AsyncClient) -> Awaitable[Any]:
            q = c.table("orders").select(_ORDER_COLS).eq("mode", mode)
            if signal_id is not None:
                q = q.eq("signal_id", signal_id)
            return q.order("created_at", desc=True).order("client_order_id", desc=True).limit(wanted).execute()

        return [row_order(r) for r in await self._call("recent orders", request)]

    async def save_position(self, position: PositionRecord) -> None:
        await self._upsert("save position", "positions", [position_row(position)], "key")

    async def get_position(self, key: str) -> PositionRecord | None:
        rows = await self._call("get position", lambda c: c.table("positions").select(_POSITION_COLS).eq("key", key)
                                .limit(1).execute())
        return row_position(rows[0]) if rows else None

    async def open_positions(self, mode: str) -> list[PositionRecord]:
        rows = await self._pages("open positions", lambda c, off, n: c.table("positions").select(_POSITION_COLS)
                                 .eq("mode", mode).in_("status", list(OPEN_STATUSES)).order("created_at").order("key")
                                 .range(off, off + n - 1).execute())
        return [row_position(r) for r in rows]

    async def closed_positions(self, mode: str, *, since_ms: int = 0, limit: int = 1000) -> list[PositionRecord]:
        wanted = max(0, limit)
        if wanted == 0:
            return []
        rows = await self._call("closed positions", lambda c: c.table("positions").select(_POSITION_COLS)
                                .eq("mode", mode).eq("status", "CLOSED").gte("closed_at", _ts(since_ms))
                                .order("closed_at", desc=True).order("key", desc=True).limit(wanted).execute())
        return [row_position(r) for r in rows]

    async def append_audit(self, entry: AuditEntry) -> None:
        row = audit_row(entry)
        await self._call("append audit", partial(_insert_ignore, "audit_log", [row], "event_id"))

    async def audit_entries(self, *, mode: str | None = None, since_ms: int = 0, limit: int = 1000) -> list[AuditEntry]:
        wanted = max(0, limit)
        out: list[dict[str, Any]] = []
        while len(out) < wanted:
            offset = len(out)

            def page(c: AsyncClient, offset: int = offset) -> Awaitable[Any]:
                q = c.table("audit_log").select(_AUDIT_COLS).gte("at", _ts(since_ms))
                if mode is not None:
                    q = q.eq("mode", mode)
                return q.order("at").order("event_id").range(offset, min(wanted, offset + 1000) - 1).execute()

            rows = await self._call("audit entries", page)
            if not rows:
                break
            out.extend(rows)
        return [row_audit(r) for r in out[:wanted]]

    async def get_trading_state(self, key: str) -> str | None:
        rows = await self._call("get trading state", lambda c: c.table("trading_state").select("key,value")
                                .eq("key", key).limit(1).execute())
        return orjson.dumps(rows[0]["value"]).decode() if rows else None

    async def set_trading_state(self, key: str, value: str) -> None:
        row = {"key": key, "value": orjson.loads(value), "updated_at": _ts(time.time_ns() // 1_000_000)}
        await self._upsert("set trading state", "trading_state", [row], "key")


def _insert_ignore(table: str, rows: list[dict[str, Any]], on_conflict: str, c: AsyncClient) -> Awaitable[Any]:
    return c.table(table).upsert(rows, on_conflict=on_conflict, returning=ReturnMethod.minimal,
                                 ignore_duplicates=True).execute()
