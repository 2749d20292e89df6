"""Live outcome tracker on the real SqliteStore and PostgresStore: parity with the backtest, restarts, late signals,
save retries and ungradable signals."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from backtest.simulate import grade, run_stream
from src.analysis.engine import AnalysisSettings
from src.analysis.outcomes import OutcomeParams
from src.analysis.types import Candle, Signal, SignalKind
from src.bot.outcome_tracker import OutcomeTracker, to_signal_outcome
from src.storage.base import SignalOutcome, Store, StoreUnavailable
from src.storage.sqlite_store import SqliteStore
from tests.candlegen import random_walk

PARAMS = OutcomeParams(horizon_candles=24, commission=0.0004, slippage_bps=2.0)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The real SqliteStore, and the real PostgresStore in a throw-away schema."""
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "wyeli.db")
        await s.open()
        yield s
        await s.close()
        return
    import asyncpg

    from src.storage.postgres_store import PostgresStore

    url = request.getfixturevalue("postgres_url")
    schema = f"wyeli_test_{secrets.token_hex(6)}"
    pg = PostgresStore(url, schema=schema)
    await pg.open()
    yield pg
    await pg.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def tracker(store: Store) -> OutcomeTracker:
    return OutcomeTracker(store, horizon_candles=PARAMS.horizon_candles, commission=PARAMS.commission,
                          slippage_bps=PARAMS.slippage_bps)


def scenario() -> tuple[list[Candle], list[Signal]]:
    candles = random_walk(400, timeframe="1h", seed=21, vol=0.01)
    res = run_stream("BTCUSDT", "1h", candles, AnalysisSettings(min_confidence=0.0), PARAMS)
    assert len(res.signals) >= 10
    return candles, res.signals


def backtest_outcomes(candles: list[Candle], signals: list[Signal]) -> dict[str, SignalOutcome]:
    open_times = [c.open_time_ms for c in candles]
    out = {}
    for s in signals:
        r = grade(s, candles, open_times, PARAMS)
        if r is not None:
            out[s.id] = to_signal_outcome(s, r)
    return out


async def feed_live(store: Store, t: OutcomeTracker, candles: list[Candle], signals: list[Signal]) -> None:
    """Like the pipeline: store the candle, store the signals it confirmed, then call the observer."""
    by_time: dict[int, list[Signal]] = {}
    for s in signals:
        by_time.setdefault(s.candle_time_ms, []).append(s)
    for c in candles:
        await store.upsert_candles([c])
        for s in by_time.get(c.open_time_ms, []):
            await store.save_signal(s)
        await t.on_signals(by_time.get(c.open_time_ms, []))
        await t.on_candles([c])


async def stored(store: Store, ids: list[str]) -> dict[str, SignalOutcome]:
    out = {}
    for sid in ids:
        o = await store.get_outcome(sid)
        if o is not None:
            out[sid] = o
    return out


async def test_live_tracker_and_backtest_give_identical_outcomes(store):
    candles, signals = scenario()
    await feed_live(store, tracker(store), candles, signals)
    expected = backtest_outcomes(candles, signals)
    got = await stored(store, [s.id for s in signals])
    assert got == expected and len(expected) >= 10
    open_ids = {s.id for s in await store.open_signals()}
    assert open_ids == {s.id for s in signals} - set(expected)  # the unresolved tail stays open
    tracks = await store.live_track(set(), symbol="BTCUSDT")
    assert sum(t.graded for t in tracks if t.population == "trade") == len(expected)


async def test_every_kind_is_graded_and_each_saved_outcome_is_announced_once(store):
    candles, signals = scenario()
    verdicts: list[tuple[SignalKind, str]] = [("trade", ""), ("watch", "no_edge"), ("gated", "cooldown"),
                                              ("gated", "duplicate_structure")]
    kinds = itertools.cycle(verdicts)
    mixed = [replace(s, kind=k, gate_reason=g) for s, (k, g) in zip(signals, kinds, strict=False)]
    announced: list[SignalOutcome] = []
    t = OutcomeTracker(store, horizon_candles=PARAMS.horizon_candles, commission=PARAMS.commission,
                       slippage_bps=PARAMS.slippage_bps, on_resolved=announced.append)
    await feed_live(store, t, candles, mixed)
    expected = backtest_outcomes(candles, signals)
    got = await stored(store, [s.id for s in mixed])
    assert got == expected
    assert {s.kind for s in mixed if s.id in got} == {"trade", "watch", "gated"}
    assert sorted(o.signal_id for o in announced) == sorted(expected)


async def test_restart_resumes_from_stored_candles_with_the_same_outcomes(store):
    candles, signals = scenario()
    half = len(candles) // 2
    await feed_live(store, tracker(store), candles[:half], signals)
    # down for 30 candles: the feed stored them (backfill) but no tracker saw them
    gap = candles[half : half + 30]
    await store.upsert_candles(gap)
    for s in signals:
        if gap[0].open_time_ms <= s.candle_time_ms <= gap[-1].open_time_ms:
            await store.save_signal(s)
    t2 = tracker(store)
    await t2.start()
    await feed_live(store, t2, candles[half + 30 :], signals)
    assert await stored(store, [s.id for s in signals]) == backtest_outcomes(candles, signals)


async def test_batches_of_candles_in_any_order_give_the_same_outcomes(store):
    candles, signals = scenario()
    for s in signals:
        await store.save_signal(s)
    t = tracker(store)
    for i in range(0, len(candles), 25):
        batch = candles[i : i + 25]
        await store.upsert_candles(batch)
        await t.on_candles(list(reversed(batch)))
    assert await stored(store, [s.id for s in signals]) == backtest_outcomes(candles, signals)


class FlakyStore:
    """Delegates to a real store; the first ``failures`` outcome saves raise StoreUnavailable."""

    def __init__(self, inner: Store, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def save_outcome(self, outcome: SignalOutcome) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("database is down")
        await self.inner.save_outcome(outcome)


async def test_outcome_is_kept_and_retried_when_the_store_is_down(store):
    candles, signals = scenario()
    flaky = FlakyStore(store, failures=3)
    t = OutcomeTracker(flaky, horizon_candles=PARAMS.horizon_candles, commission=PARAMS.commission,
                       slippage_bps=PARAMS.slippage_bps)
    await feed_live(store, t, candles, signals)
    assert t.stats.save_failures == 3 and t.stats.pending_saves == 0
    assert await stored(store, [s.id for s in signals]) == backtest_outcomes(candles, signals)


async def test_signal_with_stop_on_the_wrong_side_is_counted_not_graded(store):
    candles, signals = scenario()
    bad = replace(signals[0], id="bad", stop_loss=signals[0].entry * (1.1 if signals[0].direction == "LONG" else 0.9))
    await store.save_signal(bad)
    t = tracker(store)
    await feed_live(store, t, candles[:50], [])
    await t.on_candles(candles[50:51])
    assert t.stats.invalid == 1
    assert await store.get_outcome("bad") is None


class DownForReads:
    """Delegates to a real store; open_signals / load_candles raise StoreUnavailable while ``down``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def open_signals(self):
        if self.down:
            raise StoreUnavailable("database is down")
        return await self.inner.open_signals()

    async def load_candles(self, *args, **kwargs):
        if self.down:
            raise StoreUnavailable("database is down")
        return await self.inner.load_candles(*args, **kwargs)


async def test_without_an_announcement_the_tracker_reads_open_signals_only_after_resync_seconds(store):
    candles, signals = scenario()
    now = [0.0]
    t = OutcomeTracker(store, horizon_candles=PARAMS.horizon_candles, commission=PARAMS.commission,
                       slippage_bps=PARAMS.slippage_bps, resync_s=60.0, clock=lambda: now[0])
    first = signals[0]
    before = [c for c in candles if c.open_time_ms <= first.candle_time_ms]
    await store.upsert_candles(before)
    await t.on_candles(before)  # first call syncs: nothing open yet
    await store.save_signal(first)  # written by "another process": no on_signals
    after = [c for c in candles if c.open_time_ms > first.candle_time_ms]
    await store.upsert_candles(after[:1])
    await t.on_candles(after[:1])
    assert t.stats.following == 0  # no query per candle
    now[0] = 61.0
    await store.upsert_candles(after[1:])
    await t.on_candles(after[1:])
    assert t.stats.following + t.stats.resolved == 1  # picked up by the periodic resync, caught up from the store


async def test_read_outage_loses_no_candle_for_followed_or_new_signals(store):
    candles, signals = scenario()
    flaky = DownForReads(store)
    ticks = itertools.count(0, 10)  # 10 s pass per clock read: failed syncs are retried after a backoff
    t = OutcomeTracker(flaky, horizon_candles=PARAMS.horizon_candles, commission=PARAMS.commission,
                       slippage_bps=PARAMS.slippage_bps, clock=lambda: float(next(ticks)))
    third = len(candles) // 3
    await feed_live(store, t, candles[:third], signals)
    flaky.down = True  # signals confirmed now are stored, but the tracker cannot list them yet
    await feed_live(store, t, candles[third : 2 * third], signals)
    assert t.stats.sync_failures > 0
    flaky.down = False
    await feed_live(store, t, candles[2 * third :], signals)
    assert await stored(store, [s.id for s in signals]) == backtest_outcomes(candles, signals)


class CountingDownForReads(DownForReads):
    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.reads = 0

    async def open_signals(self):
        self.reads += 1
        return await super().open_signals()


async def test_read_outage_costs_one_store_read_per_backoff_not_one_per_candle_batch(store):
    # on a network store a failing read can take seconds (connect timeout, retries) inside the pipeline's
    # lock: retrying it on every candle batch would stall the whole bot for the length of the outage
    candles, signals = scenario()
    flaky = CountingDownForReads(store)
    now = [0.0]
    t = OutcomeTracker(flaky, horizon_candles=PARAMS.horizon_candles, commission=PARAMS.commission,
                       slippage_bps=PARAMS.slippage_bps, clock=lambda: now[0])
    flaky.down = True
    await feed_live(store, t, candles[:100], signals)
    assert flaky.reads == 1 and t.stats.sync_failures == 1
    now[0] = 60.0  # past the first backoff: one more try, still down
    await feed_live(store, t, candles[100:150], signals)
    assert flaky.reads == 2
    flaky.down = False
    now[0] = 400.0  # past any backoff (capped at resync_s): the tracker recovers and loses nothing
    await feed_live(store, t, candles[150:], signals)
    assert await stored(store, [s.id for s in signals]) == backtest_outcomes(candles, signals)


class CandlesDown:
    """open_signals answers, load_candles fails (counted)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.loads = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def load_candles(self, *args, **kwargs):
        self.loads += 1
        raise StoreUnavailable("database is down")


async def test_candle_read_outage_tries_one_signal_per_sync_not_every_open_signal(store):
    candles, signals = scenario()
    await store.upsert_candles(candles)
    for s in signals:
        await store.save_signal(s)
    down = CandlesDown(store)
    t = OutcomeTracker(down, horizon_candles=PARAMS.horizon_candles, clock=lambda: 0.0)
    await t.on_candles(candles[-1:])
    await t.on_candles(candles[-1:])
    assert down.loads == 1 and t.stats.following == 0 and t.stats.sync_failures == 1


class ReplayingStore:
    """A network store after an outage (src/storage/spool.py): reads are down while ``down``; afterwards
    they show only what the spool has replayed so far, candles and signals up to ``visible_until``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False
        self.visible_until: int | None = None

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _seen(self, t: int) -> bool:
        return self.visible_until is None or t <= self.visible_until

    async def open_signals(self):
        if self.down:
            raise StoreUnavailable("database is down")
        return [s for s in await self.inner.open_signals() if self._seen(s.candle_time_ms)]

    async def load_candles(self, *args, **kwargs):
        if self.down:
            raise StoreUnavailable("database is down")
        return [c for c in await self.inner.load_candles(*args, **kwargs) if self._seen(c.open_time_ms)]


async def test_catch_up_from_a_store_still_replaying_its_spool_skips_no_candle(store):
    # a signal from the outage is first seen while the store holds only part of the candles after it:
    # grading it on the live candles from there on would jump over the ones still being replayed
    candles, signals = scenario()
    replaying = ReplayingStore(store)
    ticks = itertools.count(0, 10)
    t = OutcomeTracker(replaying, horizon_candles=PARAMS.horizon_candles, commission=PARAMS.commission,
                       slippage_bps=PARAMS.slippage_bps, clock=lambda: float(next(ticks)))
    third = len(candles) // 3
    await feed_live(store, t, candles[:third], signals)
    replaying.down = True
    await feed_live(store, t, candles[third : 2 * third], signals)
    replaying.down = False
    replaying.visible_until = candles[2 * third - 6].open_time_ms  # the spool has replayed only this far
    await feed_live(store, t, candles[2 * third : 2 * third + 40], signals)
    replaying.visible_until = None  # replay finished
    await feed_live(store, t, candles[2 * third + 40 :], signals)
    assert await stored(store, [s.id for s in signals]) == backtest_outcomes(candles, signals)


async def test_a_signal_is_caught_up_across_a_gap_longer_than_its_horizon_window(store):
    """Catch-up reads the store in windows of horizon + 1 intervals; an exchange outage longer than a window
    (no candles at all) must not stop it before the candles after the outage."""
    candles, signals = scenario()
    hole = 3 * (PARAMS.horizon_candles + 1)

    def holed_for(sig: Signal) -> list[Candle]:
        i = next(k for k, c in enumerate(candles) if c.open_time_ms == sig.candle_time_ms)
        return candles[: i + 2] + candles[i + 2 + hole:]  # the entry candle, then a hole of three windows

    # a signal the entry candle does not decide, so its grade needs the candles after the hole
    picked = []
    for sig in signals:
        holed = holed_for(sig)
        r = grade(sig, holed, [c.open_time_ms for c in holed], PARAMS)
        if r is not None and r.exit_time_ms > sig.candle_time_ms + (hole + 2) * 3_600_000:
            picked.append((sig, holed, r))
    assert picked, "the scenario should have a signal still open after its entry candle"
    sig, holed, expected = picked[0]
    await store.upsert_candles(holed)
    await store.save_signal(sig)
    t = tracker(store)
    await t.start()
    assert await store.get_outcome(sig.id) == to_signal_outcome(sig, expected)
    assert t.stats.following == 0
