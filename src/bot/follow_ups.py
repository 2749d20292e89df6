"""The TP2 watcher: the one follow-up that happens AFTER a signal's outcome (the rules exit at TP1).

The outcome tracker writes the terminal follow-ups (tp1, stopped, invalidated, expired) with the outcome. A trade
call or watch note with a second target whose TP1 was hit is then watched here for ``tp2`` (or the internal
``tp2_missed``), with the rules of :class:`src.analysis.follow_ups.Tp2Watch`, on the same closed candles:

- it is a pipeline candle observer, after the outcome tracker; ``follow_up_recorded`` (a tp1) and every
  ``resync_s`` (300 s) make it re-read ``store.open_tp2_watches()``, so watches from before a restart or from
  another process are picked up; each new one is caught up from the STORED candles from its TP1 candle on;
- a live candle that is not the next one a watch expects (the store was replaying its outage spool) drops the
  watch; it is caught up from the store on the next read;
- a result is saved with ``store.save_follow_up`` (an idempotent upsert); on a store error it is kept and
  retried, never dropped; a failed read is retried after ``retry_s`` doubling up to ``resync_s``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from src.analysis import timeframes
from src.analysis.follow_ups import FollowUp, Tp2Watch
from src.analysis.outcomes import OutcomeParams
from src.analysis.types import Candle, Signal
from src.storage.base import CandleStore, StoreError

log = structlog.get_logger(__name__)

FollowUpListener = Callable[[Signal, FollowUp], None]


class Tp2Store(CandleStore, Protocol):
    async def open_tp2_watches(self) -> list[tuple[Signal, FollowUp]]: ...

    async def save_follow_up(self, follow_up: FollowUp) -> bool: ...


class Tp2Tracker:
    """See the module docstring. One per process, on the event loop."""

    def __init__(self, store: Tp2Store, params: OutcomeParams, *, resync_s: float = 300.0, retry_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, on_follow_up: FollowUpListener | None = None) -> None:
        self.store = store
        self.params = params
        self.resync_s = resync_s
        self.retry_s = retry_s
        self._clock = clock
        self._on_follow_up = on_follow_up
        self._stale = True
        self._last_sync = -math.inf
        self._retry_at = -math.inf
        self._failures = 0
        self._watches: dict[str, tuple[Tp2Watch, int]] = {}  # signal id -> (watch, open time of the candle it needs)
        self._unsaved: dict[str, tuple[Signal, FollowUp]] = {}
        self.reached = 0
        self.missed = 0

    @property
    def watching(self) -> int:
        return len(self._watches)

    def follow_up_recorded(self, signal: Signal, follow_up: FollowUp) -> None:
        """A follow-up was stored: a tp1 with a second target starts a watch (on the next batch)."""
        if follow_up.event == "tp1" and len(signal.take_profits) >= 2:
            self._stale = True

    async def on_candles(self, candles: Sequence[Candle]) -> None:
        if self._unsaved:
            await self._flush()
        now = self._clock()
        if now >= self._retry_at and (self._stale or now - self._last_sync >= self.resync_s):
            await self.sync()
        if not self._watches:
            return
        for c in sorted(candles, key=lambda c: c.open_time_ms):
            for sid, (watch, expected) in list(self._watches.items()):
                if watch.signal.symbol != c.symbol or watch.signal.timeframe != c.timeframe or c.open_time_ms < expected:
                    continue
                if c.open_time_ms > expected:
                    del self._watches[sid]
                    self._stale = True
                    continue
                self._watches[sid] = (watch, timeframes.next_open(c.timeframe, c.open_time_ms))
                result = watch.on_candle(c)
                if result is not None:
                    del self._watches[sid]
                    await self._done(watch.signal, result)

    async def sync(self) -> None:
        """Watch every open TP2 watch the store lists that is not watched yet, caught up from stored candles."""
        self._stale = False
        self._last_sync = self._clock()
        try:
            open_now = await self.store.open_tp2_watches()
            for signal, tp1 in open_now:
                if signal.id in self._watches or signal.id in self._unsaved:
                    continue
                watch = Tp2Watch(signal, tp1, self.params)
                result, expected = await self._catch_up(watch)
                if result is not None:
                    await self._done(signal, result)
                else:
                    self._watches[signal.id] = (watch, expected)
        except StoreError as exc:
            self._stale = True
            self._failures += 1
            delay = min(self.resync_s, self.retry_s * 2 ** (self._failures - 1))
            self._retry_at = self._clock() + delay
            log.warning("tp2 watches unavailable; will retry", error=str(exc)[:200], retry_in_s=delay)
            return
        self._failures = 0
        self._retry_at = -math.inf

    async def _catch_up(self, watch: Tp2Watch) -> tuple[FollowUp | None, int]:
        """Feed the stored candles from the TP1 candle on (the horizon bounds how many can matter)."""
        sig = watch.signal
        interval = timeframes.interval_ms(sig.timeframe)
        start = watch.tp1_open_ms
        end = start + (self.params.horizon_candles + 1) * interval
        expected = start
        for c in await self.store.load_candles(sig.symbol, sig.timeframe, start_ms=start, end_ms=end):
            expected = timeframes.next_open(sig.timeframe, c.open_time_ms)
            result = watch.on_candle(c)
            if result is not None:
                return result, expected
        return None, expected

    async def _done(self, signal: Signal, result: FollowUp) -> None:
        if result.event == "tp2":
            self.reached += 1
        else:
            self.missed += 1
        log.info("tp2 watch ended", signal_id=signal.id, symbol=signal.symbol, timeframe=signal.timeframe,
                 follow_up=result.event, r=round(result.r_multiple, 3), bars=result.bars)
        self._unsaved[signal.id] = (signal, result)
        await self._flush()

    async def _flush(self) -> None:
        for sid in list(self._unsaved):
            signal, result = self._unsaved[sid]
            try:
                await self.store.save_follow_up(result)
            except StoreError as exc:
                log.warning("tp2 follow-up save failed; will retry", signal_id=sid, error=str(exc)[:200])
                return
            del self._unsaved[sid]
            if self._on_follow_up is not None and result.event == "tp2":
                self._on_follow_up(signal, result)
