"""Live outcome tracker (SPEC 7): follows every open signal on new closed candles and stores how it
resolved, with the SAME rules as the backtest (src/analysis/outcomes.py).

Every stored candidate is graded, whatever its kind: trade calls, watch notes AND gated candidates.
The gated ones are what makes the live track record unbiased (the evidence model is fitted on every
candidate of its population, not only on those it let through). ``on_resolved`` is told about each
outcome once the store has it (the track record keeper folds the live record into the model).

- The pipeline calls ``await on_signals(signals)`` after it stored new signals and
  ``await on_candles(candles)`` after it stored the candles of a batch. ``on_candles`` re-reads
  ``store.open_signals()`` (signals without an outcome) only when something may have changed: new
  signals were announced, an earlier sync failed, or ``resync_s`` (300 s) passed (signals
  written by another process). So signals from this batch, from another process or from before a
  restart are all picked up, without one store query per candle on the hot path. A failed sync is
  retried after ``retry_s`` (5 s) doubling up to ``resync_s``, not on the next batch: on a network
  store a failing read can take seconds (connect timeout, retries) and runs inside the pipeline's
  lock, so one retry per batch would stall the bot for as long as the store is down.
- A newly seen signal is caught up from the STORED candles after its confirming candle (read in
  windows of ``horizon + 1`` intervals until it resolves or the store has nothing later), so a
  restart, an outage or a backfill loses nothing;
  candles already processed are ignored (the follower skips repeats), so overlap is harmless. A live
  candle that is not the next one after the last candle the signal saw (the store was still replaying
  its outage spool when the signal was caught up, so the candles between are not graded) makes the
  tracker drop the signal and catch it up again from the store on the next sync.
- A resolved trade is written with ``store.save_outcome`` (an upsert on signal_id). If the store is
  unavailable it is kept in memory and retried on the next call; it is never dropped.
- If the store cannot list open signals or load a signal's candles, the tracker logs it and keeps
  grading the signals it follows; the rest are picked up (and caught up) on a later call.
- A signal whose stop or target is on the wrong side of its entry cannot be graded: it is logged
  once and counted in ``stats.invalid``.
- ``SignalOutcome.fees`` holds the fees in R (commission on both sides' notional / planned risk),
  so ``r_multiple = gross R - fees``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from src.analysis import timeframes
from src.analysis.outcomes import InvalidSignalGeometry, OutcomeParams, Resolution, TradeFollower
from src.analysis.types import Candle, Signal
from src.storage.base import CandleStore, OutcomeStore, SignalOutcome, StoreError

log = structlog.get_logger(__name__)


class TrackerStore(CandleStore, OutcomeStore, Protocol):
    """What the tracker needs from the store."""


def to_signal_outcome(signal: Signal, r: Resolution) -> SignalOutcome:
    """The stored row for a resolved signal (``fees`` in R)."""
    return SignalOutcome(
        signal_id=signal.id,
        symbol=signal.symbol,
        timeframe=signal.timeframe,
        pattern=signal.pattern,
        direction=signal.direction,
        outcome=r.outcome,
        entry_time_ms=r.entry_time_ms,
        entry_price=r.entry_price,
        exit_time_ms=r.exit_time_ms,
        exit_price=r.exit_price,
        r_multiple=r.r_multiple,
        mfe_r=r.mfe_r,
        mae_r=r.mae_r,
        fees=r.fees_r,
        bars_held=r.bars_held,
        confidence=signal.confidence,
        resolved_at_ms=r.resolved_at_ms,
    )


@dataclass(slots=True)
class TrackerStats:
    following: int = 0
    resolved: int = 0
    invalid: int = 0
    save_failures: int = 0
    sync_failures: int = 0
    pending_saves: int = 0


class OutcomeTracker:
    """See the module docstring. One instance per process; not thread-safe (one event loop)."""

    def __init__(
        self,
        store: TrackerStore,
        *,
        horizon_candles: int = 48,
        commission: float = 0.0004,
        slippage_bps: float = 0.0,
        resync_s: float = 300.0,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_resolved: Callable[[SignalOutcome], None] | None = None,
    ) -> None:
        self.store = store
        self._on_resolved = on_resolved
        self.resync_s = resync_s
        self.retry_s = retry_s
        self._clock = clock
        self._stale = True  # the first batch always syncs
        self._last_sync = -math.inf
        self._failed_syncs = 0  # consecutive
        self._retry_at = -math.inf  # no sync before this (backoff after a failed one)
        self.params = OutcomeParams(horizon_candles, commission, slippage_bps)
        self._follow: dict[str, tuple[Signal, TradeFollower]] = {}
        self._next_open: dict[str, int] = {}  # per followed signal: open time of the candle it needs next
        self._by_stream: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._invalid: set[str] = set()
        self._unsaved: dict[str, SignalOutcome] = {}
        self._stats = TrackerStats()

    @property
    def stats(self) -> TrackerStats:
        s = self._stats
        s.following = len(self._follow)
        s.pending_saves = len(self._unsaved)
        return s

    async def start(self) -> None:
        """Load every open signal and grade it on the stored candles (restart recovery)."""
        await self.sync()

    async def sync(self) -> None:
        """Follow signals the store reports open that are not followed yet, caught up from stored candles.

        A store error here is logged and left for the next call: a signal becomes followed only
        after its history loaded, so a failed load is simply retried (no candle is skipped)."""
        await self._flush()
        self._stale = False
        self._last_sync = self._clock()
        try:
            open_now = await self.store.open_signals()
        except StoreError as exc:
            self._sync_failed()
            log.warning("open signals unavailable; will retry", error=str(exc), retry_in_s=self._retry_in())
            return
        failed = False
        for sig in open_now:
            # resolved here but not saved yet: the store still lists it as open
            if sig.id in self._follow or sig.id in self._invalid or sig.id in self._unsaved:
                continue
            try:
                follower = TradeFollower.for_signal(sig, self.params)
            except InvalidSignalGeometry as exc:
                self._invalid.add(sig.id)
                self._stats.invalid += 1
                log.warning("signal cannot be graded", signal_id=sig.id, error=str(exc))
                continue
            try:
                resolution, next_open = await self._catch_up(sig, follower)
            except StoreError as exc:
                # the others would most likely fail the same way, each after its own timeout: retry them later
                failed = True
                self._sync_failed()
                log.warning("candles for an open signal unavailable; will retry", signal_id=sig.id, error=str(exc),
                            retry_in_s=self._retry_in())
                break
            if resolution is not None:
                await self._resolved(sig, resolution)
                continue
            self._follow[sig.id] = (sig, follower)
            self._by_stream[(sig.symbol, sig.timeframe)].add(sig.id)
            self._next_open[sig.id] = next_open
        if not failed:
            self._failed_syncs = 0
            self._retry_at = -math.inf

    async def _catch_up(self, sig: Signal, follower: TradeFollower) -> tuple[Resolution | None, int]:
        """Feed ``follower`` the stored candles after the signal's candle; returns its resolution (or None) and
        the open time of the next candle it needs. Candles are read in windows of ``horizon + 1`` intervals
        (what can decide a trade without gaps), so every stored candidate is not graded on the whole rest of
        the series; a window without a resolution reads on while the store has later candles (the store's
        candles are the truth: a gap in them, an exchange outage, is accepted). Raises StoreError."""
        window_ms = timeframes.interval_ms(sig.timeframe) * (self.params.horizon_candles + 1)
        start = sig.candle_time_ms + 1
        next_open = timeframes.next_open(sig.timeframe, sig.candle_time_ms)
        while True:
            end = start + window_ms - 1
            for c in await self.store.load_candles(sig.symbol, sig.timeframe, start_ms=start, end_ms=end):
                next_open = timeframes.next_open(sig.timeframe, c.open_time_ms)
                r = follower.on_candle(c)
                if r is not None:
                    return r, next_open
            if not await self.store.load_candles(sig.symbol, sig.timeframe, start_ms=end + 1, limit=1):
                return None, next_open
            start = end + 1

    def _sync_failed(self) -> None:
        self._stale = True
        self._stats.sync_failures += 1
        self._failed_syncs += 1
        self._retry_at = self._clock() + self._retry_in()

    def _retry_in(self) -> float:
        return float(min(self.resync_s, self.retry_s * 2 ** max(0, self._failed_syncs - 1)))

    async def on_candles(self, candles: Sequence[Candle]) -> None:
        """Pipeline hook: grade open signals on these closed candles (any streams, any order)."""
        if self._unsaved:
            await self._flush()
        now = self._clock()
        if now >= self._retry_at and (self._stale or now - self._last_sync >= self.resync_s):
            await self.sync()
        for c in sorted(candles, key=lambda c: c.open_time_ms):
            if not c.closed:
                continue
            for sid in sorted(self._by_stream.get(c.stream, ())):
                sig, follower = self._follow[sid]
                expected = self._next_open[sid]
                if c.open_time_ms < expected:
                    continue  # already graded (caught up from the store, or a repeat)
                if c.open_time_ms > expected:
                    self._unfollow(sig)
                    self._stale = True
                    log.info("signal missed candles; catching it up again from the store", signal_id=sid,
                             expected_open_ms=expected, got_open_ms=c.open_time_ms)
                    continue
                self._next_open[sid] = timeframes.next_open(sig.timeframe, c.open_time_ms)
                r = follower.on_candle(c)
                if r is not None:
                    await self._resolved(sig, r)

    async def on_signals(self, signals: Sequence[Signal]) -> None:
        """Pipeline hook: new signals were stored; the next batch re-reads the open signals."""
        if signals:
            self._stale = True

    async def on_candle(self, candle: Candle) -> None:
        await self.on_candles([candle])

    def _unfollow(self, sig: Signal) -> None:
        self._follow.pop(sig.id, None)
        self._next_open.pop(sig.id, None)
        self._by_stream[(sig.symbol, sig.timeframe)].discard(sig.id)

    async def _resolved(self, sig: Signal, r: Resolution) -> None:
        self._unfollow(sig)
        self._stats.resolved += 1
        self._unsaved[sig.id] = to_signal_outcome(sig, r)
        log.info("signal resolved", signal_id=sig.id, symbol=sig.symbol, timeframe=sig.timeframe, kind=sig.kind,
                 pattern=sig.pattern, outcome=r.outcome, r=round(r.r_multiple, 3), bars=r.bars_held)
        await self._flush()

    async def _flush(self) -> None:
        for sid in list(self._unsaved):
            outcome = self._unsaved[sid]
            try:
                await self.store.save_outcome(outcome)
            except StoreError as exc:
                self._stats.save_failures += 1
                log.warning("outcome save failed; will retry", signal_id=sid, error=str(exc))
                return
            del self._unsaved[sid]
            if self._on_resolved is not None:
                self._on_resolved(outcome)
