"""What the market-data feed reports about itself: per-stream and per-connection status snapshots.

The bot folds them into its own status (``>status``, ``/readyz``, metrics); they live here because the
feed produces them and lower layers must not import the application.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """One (symbol, timeframe) stream. ``fresh`` means its last closed candle is at most two of its
    intervals old (measured on the wall clock live; always True in replay)."""

    symbol: str
    timeframe: str
    last_candle_ms: int | None
    last_frame_at_ms: int | None
    fresh: bool
    reconnects: int = 0
    gaps_backfilled: int = 0
    candles_backfilled: int = 0
    stalls: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """One WebSocket connection (a shard of streams)."""

    name: str
    streams: int
    connected: bool
    connected_since_ms: int | None
    reconnects: int
    last_message_at_ms: int | None
