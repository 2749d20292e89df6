"""The live track record: outcomes from the store folded into the evidence model the engines use.

The record is folded in AS OF candle time, once per UTC day: the candles that close on day D are judged by
``base_model.with_live(record of the outcomes resolved before D 00:00 UTC)``. The pipeline asks for that
model (:meth:`TrackRecordKeeper.model_for`) before it analyses the first candle of a new day; a batch that
spans days is analysed day by day, so every outcome resolved before D has been graded (and stored) by the
time D's candles are judged. The model a candle is judged by therefore depends only on the candles before
it, never on the wall clock, the machine's pace or where a restart happened: a bot killed and restarted
gives the same evidence on every signal as one that ran undisturbed (the crash-consistency tests compare
whole stores). Replays judge with the model as loaded, exactly like ``backtest signals`` on the same file.

- One store query per day change (``Store.live_track`` over the tracked population: the candidates whose
  gate reason is in ``TRACKED_GATE_REASONS``, the same population the model was fitted on, with
  ``resolved_before_ms`` = the day's start), then ``model.with_live(records)`` from the shipped (or
  user-fitted) base model. A new model appears in the posts at most once a day, which is as often as a
  slowly changing record needs.
- A store error keeps the previous model (logged, never raised into the pipeline) and the next candle
  tries again; only then can a run differ from an undisturbed one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import structlog

from src.bot import analysis_api
from src.bot.analysis_api import EvidenceModelView, TrackRecordView
from src.storage.base import LiveTrack, StoreError

log = structlog.get_logger(__name__)

DAY_MS = 86_400_000


class LiveTrackStore(Protocol):
    async def live_track(
        self, tracked_reasons: Collection[str], *, symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, resolved_before_ms: int | None = None,
    ) -> list[LiveTrack]: ...


def record_cutoff_ms(candle_close_ms: int) -> int:
    """The start (00:00 UTC) of the day a candle closes on: the live record a candle is judged by counts the
    outcomes resolved before it."""
    return candle_close_ms - candle_close_ms % DAY_MS


class TrackRecordKeeper:
    """See the module docstring. ``model`` None (no evidence model): refreshes only read the record."""

    def __init__(
        self,
        store: LiveTrackStore,
        model: EvidenceModelView | None,
        *,
        tracked_reasons: Collection[str] = analysis_api.TRACKED_GATE_REASONS,
    ) -> None:
        self.store = store
        self.base_model = model
        self.model = model
        self.tracked_reasons = frozenset(tracked_reasons)
        self.cutoff_ms: int | None = None  # the record the current model holds: outcomes resolved before this
        self.tracks: list[LiveTrack] = []
        self.refreshes = 0
        self.failures = 0

    async def refresh(self, cutoff_ms: int) -> EvidenceModelView | None:
        """Read the record as of ``cutoff_ms`` (one query) and fold it into the base model. Raises StoreError."""
        tracks = await self.store.live_track(self.tracked_reasons, resolved_before_ms=cutoff_ms)
        self.tracks = tracks
        self.cutoff_ms = cutoff_ms
        self.refreshes += 1
        if self.base_model is None:
            return None
        model = analysis_api.with_live(self.base_model, tracks)
        self.model = model
        graded = sum(t.graded for t in tracks if t.population == "tracked")
        log.info("live track record folded into the evidence model", model=model.version, graded=graded,
                 cells=sum(1 for t in tracks if t.population == "tracked"), as_of_ms=cutoff_ms)
        return model

    async def model_for(self, candle_close_ms: int) -> EvidenceModelView | None:
        """The model that judges a candle closing at ``candle_close_ms`` (the pipeline's evidence source):
        refreshed when the candle's day differs from the current record's; the previous model on a store error."""
        cutoff = record_cutoff_ms(candle_close_ms)
        if cutoff != self.cutoff_ms:
            try:
                return await self.refresh(cutoff)
            except StoreError as exc:
                self.failures += 1
                log.warning("live track record unavailable; keeping the previous model", error=str(exc)[:200],
                            as_of_ms=cutoff)
        return self.model

    def track_records(self) -> Sequence[TrackRecordView]:
        """The current model's cells (backtest record, shrunk estimates and the live record folded in)."""
        return () if self.model is None else self.model.track_records()
