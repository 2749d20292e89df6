"""Snapshots of the running bot, shared by the console status line, ``>status``, ``/readyz`` and metrics.

The application builds them on demand; consumers get a provider callable and never reach into the
components themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from src.analysis.types import AnalyzerState, Candle, Signal
from src.market.status import ConnectionStatus, StreamStatus

__all__ = ["ConnectionStatus", "MarketView", "MarketViewProvider", "StatusProvider", "StatusSnapshot", "StreamStatus"]


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    started_at_ms: int
    now_ms: int
    mode: str  # "live" or "replay"
    warmed_up: bool
    streams: tuple[StreamStatus, ...]
    connections: tuple[ConnectionStatus, ...]
    signals_total: int
    signals_by_symbol: tuple[tuple[str, int], ...]
    last_signal_at: str | None
    store_backend: str
    store_healthy: bool
    spool_depth: int
    cache: str  # "off", "redis ok", "redis down"
    trading: str  # "off (alerts only)", "paper", "testnet", "LIVE"
    discord: str  # "off (set DISCORD_TOKEN ...)", "connected", ...
    notes: tuple[str, ...] = field(default=())
    problems: tuple[str, ...] = field(default=())  # why the bot is not doing its job right now (shown by /readyz)

    @property
    def uptime_s(self) -> float:
        return max(0.0, (self.now_ms - self.started_at_ms) / 1000)


@dataclass(frozen=True, slots=True)
class MarketView:
    """What ``>signal SYMBOL TF`` shows: recent candles, the analyzers' current state, the last signal."""

    symbol: str
    timeframe: str
    candles: tuple[Candle, ...]
    states: tuple[AnalyzerState, ...]
    last_signal: Signal | None


StatusProvider = Callable[[], Awaitable[StatusSnapshot]]
MarketViewProvider = Callable[[str, str], Awaitable[MarketView | None]]
