"""The live track record: outcomes from the store folded into the evidence model the engines use.

- :meth:`TrackRecordKeeper.refresh` reads the live record of every (pattern, timeframe) cell in ONE store
  query (``Store.live_track`` over the tracked population: the candidates whose gate reason is in
  ``TRACKED_GATE_REASONS``, the same population the model was fitted on), builds
  ``model.with_live(records)`` from the shipped (or user-fitted) base model, and hands it to ``apply``
  (the pipeline swaps it into every engine between batches). The app calls it once at start.
- The outcome tracker reports each saved outcome (:meth:`outcome_resolved`); :meth:`run` then refreshes,
  at most once per ``min_interval_s`` (300 s): the record changes slowly, and a refresh is a full
  aggregate over the signals table. Replays never run the loop: their results must not depend on
  how fast the machine replays (the same file gives the same signals, like the backtest).
- A store error leaves the previous model in place and is retried after the interval; it is logged,
  never raised into the pipeline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol

import structlog

from src.bot import analysis_api
from src.bot.analysis_api import EvidenceModelView, TrackRecordView
from src.storage.base import LiveTrack, SignalOutcome, StoreError

log = structlog.get_logger(__name__)


class LiveTrackStore(Protocol):
    async def live_track(
        self, tracked_reasons: Collection[str], *, symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None,
    ) -> list[LiveTrack]: ...


class TrackRecordKeeper:
    """See the module docstring. ``model`` None (no evidence model in this build): refreshes only read the record."""

    def __init__(
        self,
        store: LiveTrackStore,
        model: EvidenceModelView | None,
        apply: Callable[[EvidenceModelView], Awaitable[None]],
        *,
        min_interval_s: float = 300.0,
        tracked_reasons: Collection[str] = analysis_api.TRACKED_GATE_REASONS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self._sleep = sleep
        self.base_model = model
        self.model = model
        self._apply = apply
        self.min_interval_s = min_interval_s
        self.tracked_reasons = frozenset(tracked_reasons)
        self._clock = clock
        self._dirty = asyncio.Event()
        self._last_refresh: float | None = None
        self.tracks: list[LiveTrack] = []
        self.refreshes = 0
        self.failures = 0

    def outcome_resolved(self, outcome: SignalOutcome) -> None:
        """Outcome tracker hook: the live record changed; refresh on the next turn of :meth:`run`."""
        self._dirty.set()

    async def refresh(self) -> None:
        """Read the live record (one query), fold it into the base model and apply it. Raises StoreError."""
        self._last_refresh = self._clock()
        tracks = await self.store.live_track(self.tracked_reasons)
        self.tracks = tracks
        self.refreshes += 1
        if self.base_model is None:
            return
        model = analysis_api.with_live(self.base_model, tracks)
        await self._apply(model)
        self.model = model
        graded = sum(t.graded for t in tracks if t.population == "tracked")
        log.info("live track record folded into the evidence model", model=model.version, graded=graded,
                 cells=sum(1 for t in tracks if t.population == "tracked"))

    async def run(self) -> None:
        """Refresh after outcomes resolve, at most once per ``min_interval_s``, until cancelled."""
        while True:
            await self._dirty.wait()
            if self._last_refresh is not None:
                wait = self._last_refresh + self.min_interval_s - self._clock()
                if wait > 0:
                    await self._sleep(wait)
            self._dirty.clear()
            try:
                await self.refresh()
            except StoreError as exc:
                self.failures += 1
                self._dirty.set()  # try again after the interval
                log.warning("live track record unavailable; keeping the previous model", error=str(exc)[:200],
                            retry_in_s=self.min_interval_s)

    def track_records(self) -> Sequence[TrackRecordView]:
        """The current model's cells (backtest record, shrunk estimates and the live record folded in)."""
        return () if self.model is None else self.model.track_records()
