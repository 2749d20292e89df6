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
from src.storage.cache import Cache


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


class CacheSink:
    """A :class:`SignalSink` keeping the cache current: each view's candles as the stream's recent ones,
    then each signal as the latest of its stream (oldest first, as batched). The cache never raises."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.name = cache.name

    async def publish(self, batch: SignalBatch) -> None:
        candles = [c for view in batch.views for c in view.candles]
        if candles:
            await self.cache.push_candles(candles)
        for signal in batch.signals:
            await self.cache.set_latest_signal(signal)

    async def close(self) -> None:
        await self.cache.close()
