"""The live track record: aggregated from the store over the tracked population as of a candle time (the start of
the candle's UTC day), folded into the evidence model in one query per day, and survives store errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from pathlib import Path

import pytest

from src.bot import analysis_api
from src.bot.track_record import DAY_MS, TrackRecordKeeper, record_cutoff_ms
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


async def test_refresh_folds_the_tracked_live_record_into_the_base_model(store: SqliteStore) -> None:
    await _graded(store)
    base = FakeEvidenceModel(cells=(FakeTrackRecord("spring", "1h"), FakeTrackRecord("utad", "4h")))
    keeper = TrackRecordKeeper(store, base, tracked_reasons=TRACKED)
    model = await keeper.refresh(T0 + 10 * DAY_MS)
    assert isinstance(model, FakeEvidenceModel) and model.version == "fake-1+live"
    rec = model.live[("spring", "1h")]
    assert (rec.n, rec.wins) == (3, 2) and rec.sum_r == pytest.approx(1.5) and rec.sum_r2 == pytest.approx(5.25)
    assert ("utad", "4h") not in model.live  # nothing graded there yet
    assert keeper.model is model
    cells = {(r.pattern, r.timeframe): r for r in keeper.track_records()}
    assert cells[("spring", "1h")].live_n == 3 and cells[("spring", "1h")].live_mean_r == pytest.approx(0.5)
    assert cells[("utad", "4h")].live_n == 0


async def test_the_record_as_of_a_time_leaves_out_outcomes_resolved_later(store: SqliteStore) -> None:
    await _graded(store)  # outcomes resolve 2 h after their signal: T0+2h, T0+3h, T0+4h
    keeper = TrackRecordKeeper(store, FakeEvidenceModel(), tracked_reasons=TRACKED)
    model = await keeper.refresh(T0 + 3 * H + 1)
    assert isinstance(model, FakeEvidenceModel)
    rec = model.live[("spring", "1h")]
    assert (rec.n, rec.sum_r) == (2, pytest.approx(1.0))


async def test_a_second_refresh_starts_again_from_the_base_model_not_from_the_last_fold(store: SqliteStore) -> None:
    await _graded(store)
    keeper = TrackRecordKeeper(store, FakeEvidenceModel(), tracked_reasons=TRACKED)
    first = await keeper.refresh(T0 + DAY_MS)
    second = await keeper.refresh(T0 + 2 * DAY_MS)
    assert first is not None and second is not None and [first.version, second.version] == ["fake-1+live"] * 2


class CountingStore:
    """Records each live_track query's cutoff; fails the next ``fail`` of them."""

    def __init__(self, tracks: list[LiveTrack] | None = None, fail: int = 0) -> None:
        self.cutoffs: list[int | None] = []
        self.tracks = tracks or []
        self.fail = fail

    async def live_track(self, tracked_reasons: Collection[str], *, symbol: str | None = None,
                         timeframe: str | None = None, pattern: str | None = None,
                         resolved_before_ms: int | None = None) -> list[LiveTrack]:
        self.cutoffs.append(resolved_before_ms)
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("database is locked")
        return self.tracks


def test_the_record_cutoff_is_the_start_of_the_utc_day_the_candle_closes_on() -> None:
    day = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS
    assert record_cutoff_ms(day) == day
    assert record_cutoff_ms(day + DAY_MS - 1) == day  # the last 1m candle of the day closes at 23:59:59.999
    assert record_cutoff_ms(day + DAY_MS) == day + DAY_MS


async def test_model_for_queries_once_per_utc_day_whatever_the_number_of_candles() -> None:
    store = CountingStore([LiveTrack("spring", "1h", "tracked", 1, 1, 1.0, 1.0, 1)])
    keeper = TrackRecordKeeper(store, FakeEvidenceModel())
    day = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS
    models = [await keeper.model_for(day + i * 60_000 - 1) for i in range(1, 1441)]  # a whole day of 1m closes
    assert store.cutoffs == [day] and all(m is models[0] for m in models)
    nxt = await keeper.model_for(day + DAY_MS + 59_999)
    assert store.cutoffs == [day, day + DAY_MS] and nxt is not models[0]


async def test_a_store_error_keeps_the_previous_model_and_the_next_candle_tries_again() -> None:
    store = CountingStore(fail=1)
    base = FakeEvidenceModel()
    keeper = TrackRecordKeeper(store, base)
    day = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS
    assert await keeper.model_for(day + 1) is base and keeper.failures == 1
    again = await keeper.model_for(day + 2)
    assert again is not base and store.cutoffs == [day, day]


async def test_without_an_evidence_model_refresh_only_reads_the_record() -> None:
    store = CountingStore([LiveTrack("spring", "1h", "tracked", 1, 1, 1.0, 1.0, 1)])
    keeper = TrackRecordKeeper(store, None)
    assert await keeper.model_for(T0) is None
    assert keeper.track_records() == () and keeper.tracks


async def test_a_permanent_store_error_propagates_from_refresh_for_the_caller_to_log() -> None:
    class Broken(CountingStore):
        async def live_track(self, tracked_reasons, **kw):
            raise StoreError("relation signals does not exist")

    keeper = TrackRecordKeeper(Broken(), FakeEvidenceModel())
    with pytest.raises(StoreError):
        await keeper.refresh(T0)


def test_live_records_carry_only_tracked_cells_with_graded_outcomes() -> None:
    tracks = [LiveTrack("a", "1h", "tracked", 5, 3, 0.3, 1.1, 2), LiveTrack("a", "1h", "trade", 2, 2, 1.0, 1.0, 1),
              LiveTrack("b", "4h", "tracked", 2, 0, 0.0, 0.0, 0)]
    model = analysis_api.with_live(FakeEvidenceModel(), tracks)
    assert isinstance(model, FakeEvidenceModel)
    assert set(model.live) == {("a", "1h")}
    rec = model.live[("a", "1h")]
    assert (rec.n, rec.sum_r, rec.sum_r2, rec.wins) == (3, 0.3, 1.1, 2)
