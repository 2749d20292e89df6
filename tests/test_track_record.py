"""The live track record: aggregated from the store over the tracked population, folded into the evidence model in
one query, applied to the engines, refreshed after outcomes at most once per interval, and survives store errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import pytest

from src.bot import analysis_api
from src.bot.analysis_api import EvidenceModelView
from src.bot.track_record import TrackRecordKeeper
from src.storage.base import LiveTrack, StoreError, StoreUnavailable
from src.storage.sqlite_store import SqliteStore
from tests.fakes.evidence import FakeEvidenceModel, FakeTrackRecord
from tests.storage_contract import T0, make_evidence, make_outcome, make_signal

H = 3_600_000
TRACKED = frozenset({"", "no_edge", "cooldown"})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "track.db")
    await s.open()
    yield s
    await s.close()


class Applied:
    def __init__(self) -> None:
        self.models: list[Any] = []

    async def __call__(self, model: EvidenceModelView) -> None:  # the pipeline's set_evidence
        self.models.append(model)


async def _graded(store: SqliteStore) -> None:
    """spring 1h: trade +2, watch -1, gated 'cooldown' +0.5, duplicate -1 (not tracked), one without evidence."""
    ev = make_evidence()
    rows = [
        (make_signal(candle_time_ms=T0, evidence=ev), 2.0),
        (make_signal(candle_time_ms=T0 + H, kind="watch", gate_reason="no_edge", evidence=ev), -1.0),
        (make_signal(candle_time_ms=T0 + 2 * H, kind="gated", gate_reason="cooldown", evidence=ev), 0.5),
        (make_signal(candle_time_ms=T0 + 3 * H, kind="gated", gate_reason="duplicate_structure", evidence=ev), -1.0),
        (make_signal(candle_time_ms=T0 + 4 * H), 3.0),  # before the evidence model: never tracked
        (make_signal("ETHUSDT", "4h", T0, "utad", "SHORT", evidence=ev), None),  # still open
    ]
    for sig, r in rows:
        await store.save_signal(sig)
        if r is not None:
            await store.save_outcome(make_outcome(sig, "WIN" if r > 0 else "LOSS", r))


async def test_refresh_folds_the_tracked_live_record_into_the_base_model_and_applies_it(store: SqliteStore) -> None:
    await _graded(store)
    base = FakeEvidenceModel(cells=(FakeTrackRecord("spring", "1h"), FakeTrackRecord("utad", "4h")))
    applied = Applied()
    keeper = TrackRecordKeeper(store, base, applied, tracked_reasons=TRACKED)
    await keeper.refresh()
    [model] = applied.models
    assert isinstance(model, FakeEvidenceModel) and model.version == "fake-1+live"
    rec = model.live[("spring", "1h")]
    assert (rec.n, rec.wins) == (3, 2) and rec.sum_r == pytest.approx(1.5) and rec.sum_r2 == pytest.approx(5.25)
    assert ("utad", "4h") not in model.live  # nothing graded there yet
    assert keeper.model is model
    cells = {(r.pattern, r.timeframe): r for r in keeper.track_records()}
    assert cells[("spring", "1h")].live_n == 3 and cells[("spring", "1h")].live_mean_r == pytest.approx(0.5)
    assert cells[("utad", "4h")].live_n == 0


async def test_a_second_refresh_starts_again_from_the_base_model_not_from_the_last_fold(store: SqliteStore) -> None:
    await _graded(store)
    applied = Applied()
    keeper = TrackRecordKeeper(store, FakeEvidenceModel(), applied, tracked_reasons=TRACKED)
    await keeper.refresh()
    await keeper.refresh()
    assert [m.version for m in applied.models] == ["fake-1+live", "fake-1+live"]


class CountingStore:
    """Counts live_track queries; fails the next ``fail`` of them."""

    def __init__(self, tracks: list[LiveTrack] | None = None, fail: int = 0) -> None:
        self.calls: list[frozenset[str]] = []
        self.tracks = tracks or []
        self.fail = fail

    async def live_track(self, tracked_reasons: Collection[str], *, symbol: str | None = None,
                         timeframe: str | None = None, pattern: str | None = None) -> list[LiveTrack]:
        self.calls.append(frozenset(tracked_reasons))
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("database is locked")
        return self.tracks


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_outcomes_trigger_one_refresh_per_interval_with_one_query_each() -> None:
    store = CountingStore()
    clock = ManualClock()
    keeper = TrackRecordKeeper(store, FakeEvidenceModel(), Applied(), min_interval_s=300, tracked_reasons=TRACKED,
                               clock=clock, sleep=clock.sleep)
    await keeper.refresh()  # at start
    task = asyncio.create_task(keeper.run())
    try:
        await _settle()
        assert len(store.calls) == 1  # nothing resolved: no refresh
        outcome = make_outcome(make_signal(), "WIN", 1.0)
        for _ in range(5):  # a burst of outcomes on one candle close
            keeper.outcome_resolved(outcome)
        await _settle()
        assert len(store.calls) == 2 and clock.slept == [300]  # waited out the interval since the start refresh
        clock.now += 10
        keeper.outcome_resolved(outcome)
        await _settle()
        assert len(store.calls) == 3 and clock.slept == [300, 290]
        assert set(store.calls) == {TRACKED}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_store_error_keeps_the_previous_model_and_is_retried_after_the_interval() -> None:
    cell = LiveTrack("spring", "1h", "tracked", 4, 4, 1.0, 2.0, 2)
    store = CountingStore([cell], fail=1)
    clock = ManualClock()
    gate = asyncio.Event()

    async def held_sleep(seconds: float) -> None:  # the retry waits until the test lets it go
        clock.slept.append(seconds)
        await gate.wait()
        clock.now += seconds

    applied = Applied()
    keeper = TrackRecordKeeper(store, FakeEvidenceModel(), applied, min_interval_s=60, clock=clock, sleep=held_sleep)
    task = asyncio.create_task(keeper.run())
    try:
        keeper.outcome_resolved(make_outcome(make_signal(), "WIN", 1.0))
        await _settle()
        assert keeper.failures == 1 and len(store.calls) == 1 and clock.slept == [60]
        assert keeper.model is not None and keeper.model.version == "fake-1" and not applied.models
        gate.set()
        await _settle()
        assert len(store.calls) == 2 and keeper.model.version == "fake-1+live" and len(applied.models) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_without_an_evidence_model_refresh_only_reads_the_record() -> None:
    store = CountingStore([LiveTrack("spring", "1h", "tracked", 1, 1, 1.0, 1.0, 1)])
    applied = Applied()
    keeper = TrackRecordKeeper(store, None, applied)
    await keeper.refresh()
    assert applied.models == [] and keeper.track_records() == () and keeper.tracks


async def test_a_permanent_store_error_propagates_from_refresh_for_the_caller_to_log() -> None:
    class Broken(CountingStore):
        async def live_track(self, tracked_reasons, **kw):
            raise StoreError("relation signals does not exist")

    keeper = TrackRecordKeeper(Broken(), FakeEvidenceModel(), Applied())
    with pytest.raises(StoreError):
        await keeper.refresh()


def test_live_records_carry_only_tracked_cells_with_graded_outcomes() -> None:
    tracks = [LiveTrack("a", "1h", "tracked", 5, 3, 0.3, 1.1, 2), LiveTrack("a", "1h", "trade", 2, 2, 1.0, 1.0, 1),
              LiveTrack("b", "4h", "tracked", 2, 0, 0.0, 0.0, 0)]
    model = analysis_api.with_live(FakeEvidenceModel(), tracks)
    assert isinstance(model, FakeEvidenceModel)
    assert set(model.live) == {("a", "1h")}
    rec = model.live[("a", "1h")]
    assert (rec.n, rec.sum_r, rec.sum_r2, rec.wins) == (3, 0.3, 1.1, 2)
