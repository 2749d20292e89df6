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
    signals_total: int  # trade calls + watch notes posted (emitted) since start
    signals_by_symbol: tuple[tuple[str, int], ...]
    last_signal_at: str | None
    store_backend: str
    store_healthy: bool
    spool_depth: int
    cache: str  # "off", "redis ok", "redis down"
    trading: str  # "off (alerts only)", "paper", "testnet", "LIVE"
    discord: str  # "off (set DISCORD_TOKEN ...)", "connected", ...
    notes: tuple[str, ...] = field(default=())
    trade_calls: int = 0  # since start
    watch_notes: int = 0
    candidates: int = 0  # every candidate the analyzers proposed (trade calls, watch notes and gated ones)
    evidence_model: str = ""  # the evidence model's version, "" without one
    problems: tuple[str, ...] = field(default=())  # why the bot is not doing its job right now (shown by /readyz)
    # several instances (issue 16): "single" (no lease: always leader), "leader" or "follower"
    role: str = "single"
    role_text: str = "single instance (always leader)"  # role, epoch, lease age in words
    shard: str = "all symbols"  # "shard i/N" with SHARD=i/N
    epoch: int | None = None  # the leader lease epoch held (None: not the leader, or no lease)
    lease_age_s: float | None = None  # seconds since the last successful lease renewal (leader only)
    instances: tuple[str, ...] = ()  # every instance on the database seen recently, one line each (with a lease)

    @property
    def uptime_s(self) -> float:
        return max(0.0, (self.now_ms - self.started_at_ms) / 1000)


@dataclass(frozen=True, slots=True)
class MarketView:
    """What ``>signal SYMBOL TF`` shows: recent candles, the analyzers' current state, the last trade call or
    watch note (``last_signal``), and the latest candidates of every kind, newest first (gated ones with
    their reason), so a user sees what the analyzers found even when nothing was posted."""

    symbol: str
    timeframe: str
    candles: tuple[Candle, ...]
    states: tuple[AnalyzerState, ...]
    last_signal: Signal | None
    candidates: tuple[Signal, ...] = ()


StatusProvider = Callable[[], Awaitable[StatusSnapshot]]
MarketViewProvider = Callable[[str, str], Awaitable[MarketView | None]]
