"""Where emitted signals go after they are stored: the signal-sink port.

The pipeline stores each batch of emitted signals FIRST, then calls ``publish`` on every sink with
the batch (the signals emitted on one candle close, across streams) and a snapshot view of each
affected stream. A sink must not raise for delivery problems: it logs, counts and retries on its
own schedule (the Discord outbox re-reads pending deliveries from the store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from src.analysis.types import Signal
from src.bot.status import MarketView


@dataclass(frozen=True, slots=True)
class SignalBatch:
    """Signals emitted together, oldest candle first, plus the market view of each stream involved."""

    signals: tuple[Signal, ...]
    views: tuple[MarketView, ...]
    historical: bool = False  # True for signals found while catching up (warm-up / backfill), not on a live close

    def view_for(self, symbol: str, timeframe: str) -> MarketView | None:
        for v in self.views:
            if v.symbol == symbol and v.timeframe == timeframe:
                return v
        return None


class SignalSink(Protocol):
    name: str

    async def publish(self, batch: SignalBatch) -> None: ...

    async def close(self) -> None: ...
