"""Binance's server time as seen from here: the offset measured with ``GET /fapi/v1/time``.

A signed request carries ``timestamp`` (ms) and ``recvWindow``; Binance refuses it with -1021 unless
``timestamp < serverTime + 1000`` and ``serverTime - timestamp <= recvWindow``. The offset is measured with
round-trip correction (server time is taken to be read half-way through the request:
``offset = server - (t_sent + t_received) / 2``), re-measured every ``resync_every_s`` (600 s) and at once
after a -1021. ``now_ms()`` = local wall clock + offset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class ServerClock(Protocol):
    """What signing needs: Binance's time now, and a way to re-measure it."""

    def now_ms(self) -> int: ...

    async def resync(self) -> None: ...


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ExchangeClock:
    """The offset to Binance's clock (see the module docstring). ``fetch`` returns serverTime in ms."""

    def __init__(self, fetch: Callable[[], Awaitable[int]], *, local_ms: Callable[[], int] = wall_ms,
                 resync_every_s: float = 600.0) -> None:
        self._fetch = fetch
        self._local = local_ms
        self.resync_every_s = resync_every_s
        self.offset_ms = 0
        self.round_trip_ms: int | None = None
        self.synced_at_ms: int | None = None
        self.syncs = 0
        self._lock = asyncio.Lock()

    def now_ms(self) -> int:
        return self._local() + self.offset_ms

    async def resync(self) -> None:
        async with self._lock:
            sent = self._local()
            server = await self._fetch()
            received = self._local()
            self.offset_ms = server - (sent + received) // 2
            self.round_trip_ms = received - sent
            self.synced_at_ms = received
            self.syncs += 1
        log.info("exchange_clock_synced", offset_ms=self.offset_ms, round_trip_ms=self.round_trip_ms)

    async def run(self) -> None:
        """Re-measure every ``resync_every_s`` (the first after one period: start-up measures on its own) until
        cancelled; a failed measurement is retried after 30 s."""
        await asyncio.sleep(self.resync_every_s)
        while True:
            try:
                await self.resync()
                await asyncio.sleep(self.resync_every_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("exchange_clock_sync_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(30.0)
