"""Small record builders shared by the trading unit tests."""

from __future__ import annotations

from src.storage.trading_records import PositionRecord, position_key


def position(signal_id: str, *, symbol: str = "BTCUSDT", direction: str = "LONG", quantity: float = 0.02,
             status: str = "OPEN", generation: int = 0, take_profit: float | None = 110.0) -> PositionRecord:
    return PositionRecord(
        key=position_key("demo", signal_id), mode="demo", signal_id=signal_id, symbol=symbol, timeframe="1h",
        pattern="spring", direction=direction, status=status, quantity=quantity,  # type: ignore[arg-type]
        planned_entry=100.0, entry_price=100.0, stop_loss=95.0, take_profit=take_profit, leverage=1, risk_per_unit=5.0,
        opened_at_ms=1, closed_at_ms=None, exit_price=None, exit_reason=None, realized_pnl=None, fees=0.0,
        r_multiple=None, protection="stop+target", stop_generation=generation, note="", created_at_ms=1,
        updated_at_ms=1,
    )
