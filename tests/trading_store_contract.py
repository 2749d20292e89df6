"""The TradingStore contract (src/storage/trading_records.py): one suite for every backend.

A backend test class inherits :class:`TradingStoreContract` and provides an ``store`` fixture: an OPENED store
over empty tables. Signals are saved first where records point at them (Postgres keeps 001's foreign keys).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from src.storage.trading_records import AuditEntry, OrderRecord, PositionRecord, TradingStore, position_key
from tests.storage_contract import T0, make_signal


def make_order(signal_id: str, *, cid: str | None = None, mode: str = "demo", purpose: str = "entry", at: int = T0,
               status: str = "FILLED") -> OrderRecord:
    return OrderRecord(
        client_order_id=cid or f"wyE-{signal_id}", mode=mode, signal_id=signal_id,  # type: ignore[arg-type]
        position_key=position_key(mode, signal_id), symbol="BTCUSDT", side="BUY", order_type="MARKET",
        purpose=purpose, quantity=0.123, stop_price=None, reduce_only=False, close_position=False,  # type: ignore[arg-type]
        algo=False, status=status, filled_qty=0.123, avg_price=101.37000000000002, exchange_order_id="8389765",
        error=None, created_at_ms=at, updated_at_ms=at + 5,
    )


def make_position(signal_id: str, *, mode: str = "demo", status: str = "OPEN", at: int = T0,
                  closed_at: int | None = None) -> PositionRecord:
    return PositionRecord(
        key=position_key(mode, signal_id), mode=mode, signal_id=signal_id, symbol="BTCUSDT",  # type: ignore[arg-type]
        timeframe="1h", pattern="spring", direction="LONG", status=status, quantity=0.123,  # type: ignore[arg-type]
        planned_entry=100.0, entry_price=None if status == "PENDING" else 100.1, stop_loss=98.0, take_profit=103.0,
        leverage=2, risk_per_unit=2.0, opened_at_ms=None if status == "PENDING" else at + 1, closed_at_ms=closed_at,
        exit_price=103.0 if closed_at else None, exit_reason="target" if closed_at else None,
        realized_pnl=0.35 if closed_at else None, fees=0.01, r_multiple=1.42 if closed_at else None,
        protection="stop+target", stop_generation=1, note="", created_at_ms=at, updated_at_ms=at + 2,
    )


class TradingStoreContract:
    store: Any

    async def _signals(self, store: Any, n: int) -> list[str]:
        ids = []
        for i in range(n):
            s = make_signal(candle_time_ms=T0 + i * 3_600_000)
            await store.save_signal(s)
            ids.append(s.id)
        return ids

    async def test_store_implements_the_trading_port(self, store: Any) -> None:
        assert isinstance(store, TradingStore)

    async def test_orders_upsert_on_the_client_id_and_round_trip_exactly(self, store: Any) -> None:
        (sid,) = await self._signals(store, 1)
        o = make_order(sid, status="PENDING_SUBMIT")
        await store.save_order(o)
        assert await store.get_order(o.client_order_id) == o
        done = replace(o, status="FILLED", filled_qty=0.1, avg_price=99.95, updated_at_ms=o.updated_at_ms + 10)
        await store.save_order(done)
        assert await store.get_order(o.client_order_id) == done
        assert await store.get_order("nope") is None
        assert await store.recent_orders("demo") == [done]

    async def test_recent_orders_are_newest_first_per_mode_and_signal(self, store: Any) -> None:
        a, b = await self._signals(store, 2)
        orders = [make_order(a, at=T0), make_order(a, cid=f"wyS0-{a}", purpose="stop", at=T0 + 10),
                  make_order(b, at=T0 + 20), make_order(b, cid=f"wyE-{b}-p", mode="paper", at=T0 + 30)]
        for o in orders:
            await store.save_order(o)
        assert [o.client_order_id for o in await store.recent_orders("demo")] == [
            orders[2].client_order_id, orders[1].client_order_id, orders[0].client_order_id]
        assert [o.client_order_id for o in await store.recent_orders("demo", limit=1)] == [orders[2].client_order_id]
        assert {o.client_order_id for o in await store.recent_orders("demo", signal_id=a)} == {
            orders[0].client_order_id, orders[1].client_order_id}
        assert [o.mode for o in await store.recent_orders("paper")] == ["paper"]

    async def test_positions_upsert_on_the_key_and_list_open_and_closed_ones(self, store: Any) -> None:
        a, b, c = await self._signals(store, 3)
        pending = make_position(a, status="PENDING", at=T0)
        await store.save_position(pending)
        assert await store.get_position(pending.key) == pending
        opened = replace(pending, status="OPEN", entry_price=100.2, opened_at_ms=T0 + 1)
        await store.save_position(opened)
        closed = make_position(b, status="CLOSED", at=T0 + 10, closed_at=T0 + 5000)
        await store.save_position(closed)
        other_mode = make_position(c, mode="paper", at=T0 + 20)
        await store.save_position(other_mode)
        assert await store.open_positions("demo") == [opened]
        assert await store.open_positions("paper") == [other_mode]
        assert await store.closed_positions("demo") == [closed]
        assert await store.closed_positions("demo", since_ms=T0 + 5001) == []
        later = replace(opened, status="CLOSED", closed_at_ms=T0 + 9000, exit_price=98.0, exit_reason="stop",
                        realized_pnl=-0.25, r_multiple=-1.05)
        await store.save_position(later)
        assert [p.key for p in await store.closed_positions("demo")] == [later.key, closed.key]
        assert [p.key for p in await store.closed_positions("demo", limit=1)] == [later.key]
        assert await store.open_positions("demo") == []

    async def test_audit_entries_are_inserted_once_and_read_oldest_first(self, store: Any) -> None:
        first = AuditEntry.make(T0, "bot", "order_submit", "demo", symbol="BTCUSDT", ref="wyE-x",
                                details={"quantity": "0.123", "nested": {"a": [1, 2]}})
        second = AuditEntry.make(T0 + 1, "exchange", "order_answer", "demo", details={"status": "FILLED"})
        paper = AuditEntry.make(T0 + 2, "discord:42", "kill", "paper", details={})
        for e in (second, first, paper, first):
            await store.append_audit(e)
        got = await store.audit_entries()
        assert [e.event_id for e in got] == [first.event_id, second.event_id, paper.event_id]
        assert got[0].data == first.data and got[0].ref == "wyE-x" and got[0].symbol == "BTCUSDT"
        assert [e.action for e in await store.audit_entries(mode="paper")] == ["kill"]
        assert [e.action for e in await store.audit_entries(since_ms=T0 + 1)] == ["order_answer", "kill"]
        assert len(await store.audit_entries(limit=2)) == 2

    async def test_trading_state_holds_json_values_by_key(self, store: Any) -> None:
        assert await store.get_trading_state("paused") is None
        await store.set_trading_state("paused", '{"reason": "kill switch", "by": "discord:1"}')
        await store.set_trading_state("paused", '{"reason": "daily loss", "by": "bot"}')
        import orjson

        assert orjson.loads(await store.get_trading_state("paused")) == {"reason": "daily loss", "by": "bot"}

    @pytest.mark.parametrize("price", [0.1 + 0.2, 1e-8, 123456.78901234567])
    async def test_prices_come_back_bit_equal(self, store: Any, price: float) -> None:
        (sid,) = await self._signals(store, 1)
        o = replace(make_order(sid), avg_price=price, stop_price=price)
        await store.save_order(o)
        got = await store.get_order(o.client_order_id)
        assert got is not None and got.avg_price == price and got.stop_price == price
