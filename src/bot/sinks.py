"""Where emitted signals go after they are stored: the signal-sink port and the routing by kind.

The pipeline stores every candidate FIRST, then calls ``publish`` on every sink with the batch of
emitted ones (trade calls and watch notes of one candle close, across streams; gated candidates are
never published) and a snapshot view of each affected stream. A sink must not raise for delivery
problems: it logs, counts and retries on its own schedule (the Discord outbox re-reads pending
deliveries from the store).

:class:`SignalRoutes` says which kinds each destination takes (WATCH_NOTES): trade calls go everywhere;
watch notes go nowhere (``off``), to the console only (``console``), to the console and the signals
channel / webhook (``signals``, the default), or to the console and their own channel (``channel``).
:class:`KindFilter` applies a route to a sink.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Protocol

from src.analysis.types import Signal, SignalKind
from src.bot.status import MarketView
from src.config import Config
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


@dataclass(frozen=True, slots=True)
class SignalRoutes:
    """The kinds each destination takes; never 'gated'."""

    console: frozenset[SignalKind]
    discord_signals: frozenset[SignalKind]  # the signals channel and the webhook
    discord_watch: frozenset[SignalKind]  # DISCORD_WATCH_CHANNEL_ID (WATCH_NOTES=channel)

    @classmethod
    def from_config(cls, config: Config) -> SignalRoutes:
        watch = config.watch_notes
        return cls(
            console=frozenset({"trade", "watch"} if watch != "off" else {"trade"}),
            discord_signals=frozenset({"trade", "watch"} if watch == "signals" else {"trade"}),
            discord_watch=frozenset({"watch"} if watch == "channel" else set()),
        )

    @property
    def discord(self) -> frozenset[SignalKind]:
        """Every kind some Discord destination posts (what a preview shows)."""
        return self.discord_signals | self.discord_watch


class KindFilter:
    """A :class:`SignalSink` passing on only the signals of ``kinds`` (a batch left empty is not published)."""

    def __init__(self, sink: SignalSink, kinds: Collection[SignalKind]) -> None:
        self.sink = sink
        self.kinds = frozenset(kinds) - {"gated"}
        self.name = sink.name

    async def publish(self, batch: SignalBatch) -> None:
        signals = tuple(s for s in batch.signals if s.kind in self.kinds)
        if signals:
            await self.sink.publish(replace(batch, signals=signals))

    async def close(self) -> None:
        await self.sink.close()


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
