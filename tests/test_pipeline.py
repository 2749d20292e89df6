from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from src.analysis.engine import AnalysisSettings, SignalGate, replay
from src.bot.pipeline import VIEW_CANDLES, Pipeline
from src.bot.sinks import SignalBatch
from src.storage.base import StoreUnavailable
from src.storage.sqlite_store import SqliteStore
from tests.breakout import breakout_engine
from tests.candlegen import random_walk

SETTINGS = AnalysisSettings(min_confidence=0.5, cooldown_seconds=3600)


class RecordingSink:
    name = "recording"

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.batches: list[SignalBatch] = []
        self.stored_before_publish: list[bool] = []

    async def publish(self, batch: SignalBatch) -> None:
        for s in batch.signals:
            self.stored_before_publish.append(await self.store.get_signal(s.id) is not None)
        self.batches.append(batch)

    async def close(self) -> None:
        pass


def _pipeline(store, sinks=(), timeframes=("15m",), build=True):
    return Pipeline(settings=SETTINGS, timeframes=timeframes, store=store, sinks=sinks, build_from_smaller=build,
                    engine_factory=lambda sym, tf: breakout_engine(sym, tf, SETTINGS))


async def test_every_closed_candle_is_stored_once_and_signals_are_stored_before_they_are_published(tmp_path: Path):
    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    sink = RecordingSink(store)
    p = _pipeline(store, [sink])
    await p.start()
    candles = random_walk(2000, timeframe="15m", seed=11, vol=0.01)
    noisy = candles[:1000] + candles[990:1010] + candles[1000:]  # duplicates / late frames
    for i in range(0, len(noisy), 37):
        await p.on_candles(noisy[i:i + 37], "live")
    stored = await store.load_candles("BTCUSDT", "15m")
    assert stored == candles
    emitted = [s for b in sink.batches for s in b.signals]
    assert emitted and all(sink.stored_before_publish)
    assert p.stats.signals_emitted == len(emitted)
    await store.close()


async def test_pipeline_emits_exactly_what_the_backtest_replay_emits(tmp_path: Path):
    candles = random_walk(3000, timeframe="15m", seed=5, vol=0.01)
    _, expected, _ = replay(candles, breakout_engine("BTCUSDT", "15m", SETTINGS), SignalGate(SETTINGS))
    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    sink = RecordingSink(store)
    p = _pipeline(store, [sink])
    await p.start()
    await p.on_candles(candles, "replay")  # one big batch: analysed in a worker thread
    assert [s for b in sink.batches for s in b.signals] == expected
    # each batch carries the view AT its signal candle (chart inputs), not the end of the big batch
    by_time = {c.open_time_ms: i for i, c in enumerate(candles)}
    for b in sink.batches:
        view = b.view_for("BTCUSDT", "15m")
        assert view is not None and view.states
        t = b.signals[0].candle_time_ms
        assert view.candles[-1].open_time_ms == t
        assert list(view.candles) == candles[max(0, by_time[t] - len(view.candles) + 1): by_time[t] + 1]
    await store.close()


async def test_a_signal_in_a_rest_page_charts_the_full_history_before_it(tmp_path: Path):
    # windows keep only VIEW_CANDLES candles; a 400-candle page pushes out those before it, which its early
    # signals still chart
    candles = random_walk(3000, timeframe="15m", seed=5, vol=0.01)
    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    sink = RecordingSink(store)
    p = _pipeline(store, [sink])
    await p.start()
    for i in range(0, len(candles), 400):
        await p.on_candles(candles[i:i + 400], "backfill")
    assert p.aggregator.window("BTCUSDT", "15m").candles() == tuple(candles[-VIEW_CANDLES:])
    by_time = {c.open_time_ms: i for i, c in enumerate(candles)}
    early = 0
    for b in sink.batches:
        view = b.view_for("BTCUSDT", "15m")
        t = b.signals[0].candle_time_ms
        assert view is not None
        assert list(view.candles) == candles[max(0, by_time[t] - VIEW_CANDLES + 1): by_time[t] + 1]
        early += by_time[t] >= 400 and by_time[t] % 400 < VIEW_CANDLES
    assert early  # signals early in a later page exist, so the history before the page was needed
    await store.close()


async def test_a_restart_does_not_re_emit_and_continues_the_cooldown(tmp_path: Path):
    candles = random_walk(3000, timeframe="15m", seed=5, vol=0.01)
    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    first = RecordingSink(store)
    p1 = _pipeline(store, [first])
    await p1.start()
    await p1.on_candles(candles[:2000], "live")
    await p1.close()
    # restart: a new pipeline primes from stored history, then gets an overlapping backfill
    second = RecordingSink(store)
    p2 = _pipeline(store, [second])
    await p2.start()
    assert await p2.prime("BTCUSDT", "15m", 500) == 500
    await p2.on_candles(candles[1900:], "backfill")
    ids_first = {s.id for b in first.batches for s in b.signals}
    ids_second = {s.id for b in second.batches for s in b.signals}
    assert not ids_first & ids_second
    assert all(s.candle_time_ms > candles[1999].open_time_ms for s in (s for b in second.batches for s in b.signals))
    assert all(b.historical for b in second.batches)
    await store.close()


async def test_one_minute_input_builds_and_analyses_every_configured_timeframe(tmp_path: Path):
    ones = random_walk(60 * 24, seed=3)
    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    p = _pipeline(store, timeframes=("15m", "1h", "4h"))
    await p.start()
    await p.on_candles(ones, "replay")
    assert len(await store.load_candles("BTCUSDT", "15m")) == 96
    assert len(await store.load_candles("BTCUSDT", "1h")) == 24
    assert len(await store.load_candles("BTCUSDT", "4h")) == 6
    assert await store.load_candles("BTCUSDT", "1m") == []
    view = await p.market_view("BTCUSDT", "1h")
    assert view is not None and len(view.candles) == 24 and view.states[0].analyzer == "breakout"
    await store.close()


async def test_a_failing_sink_does_not_stop_the_pipeline(tmp_path: Path):
    class Broken:
        name = "broken"

        async def publish(self, batch):
            raise RuntimeError("discord down")

        async def close(self):
            pass

    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    p = _pipeline(store, [Broken()])
    await p.start()
    await p.on_candles(random_walk(500, timeframe="15m", seed=11, vol=0.01), "live")
    assert p.stats.sink_errors > 0 and p.stats.candles_analysed == 500
    await asyncio.sleep(0)
    await store.close()


class FlakyCandleStore:
    """A SqliteStore whose next ``fail`` candle writes raise StoreUnavailable (e.g. 'database is locked')."""

    def __init__(self, inner: SqliteStore, fail: int) -> None:
        self.inner = inner
        self.fail = fail

    async def upsert_candles(self, candles):
        if self.fail > 0:
            self.fail -= 1
            raise StoreUnavailable("sqlite upsert candles: database is locked")
        await self.inner.upsert_candles(candles)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_candles_whose_write_failed_are_written_with_the_next_batch(tmp_path: Path):
    inner = SqliteStore(tmp_path / "w.db")
    await inner.open()
    store = FlakyCandleStore(inner, fail=2)
    p = _pipeline(store)
    await p.start()
    candles = random_walk(300, timeframe="15m", seed=4, vol=0.01)
    await p.on_candles(candles[:100], "live")
    await p.on_candles(candles[100:200], "live")
    await p.on_candles(candles[200:], "live")
    assert await inner.load_candles("BTCUSDT", "15m") == candles
    assert p.stats.store_errors == 2
    await inner.close()


async def test_candles_whose_last_write_failed_are_written_on_close(tmp_path: Path):
    inner = SqliteStore(tmp_path / "w.db")
    await inner.open()
    store = FlakyCandleStore(inner, fail=1)
    p = _pipeline(store)
    await p.start()
    candles = random_walk(50, timeframe="15m", seed=4, vol=0.01)
    await p.on_candles(candles, "live")
    assert await inner.load_candles("BTCUSDT", "15m") == []
    await p.close()
    assert await inner.load_candles("BTCUSDT", "15m") == candles
    await inner.close()


class GatedCandleStore:
    """A SqliteStore whose candle writes wait until ``release`` is set (a slow store during shutdown)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def upsert_candles(self, candles):
        self.entered.set()
        await self.release.wait()
        await self.inner.upsert_candles(candles)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_a_batch_whose_caller_is_cancelled_still_finishes_before_close_returns(tmp_path: Path):
    # Shutdown cancels the feed while it waits for the pipeline: the batch in flight must still be
    # stored, analysed and published, or its signals are lost for good (its candles are stored).
    inner = SqliteStore(tmp_path / "w.db")
    await inner.open()
    store = GatedCandleStore(inner)
    sink = RecordingSink(inner)
    p = _pipeline(store, [sink])
    await p.start()
    candles = random_walk(500, timeframe="15m", seed=11, vol=0.01)
    caller = asyncio.create_task(p.on_candles(candles, "backfill"))
    await store.entered.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    store.release.set()
    await p.close()
    assert await inner.load_candles("BTCUSDT", "15m") == candles
    assert p.stats.candles_analysed == 500
    assert sink.batches and p.stats.signals_emitted == sum(len(b.signals) for b in sink.batches)
    await inner.close()


async def test_a_warm_restart_primes_from_the_cache_only_when_it_is_as_fresh_as_the_store(tmp_path: Path):
    from src.storage.cache import MemoryCache

    candles = random_walk(800, timeframe="15m", seed=5, vol=0.01)
    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    await store.upsert_candles(candles)
    await store.commit_analysis([], {("BTCUSDT", "15m"): candles[-1].open_time_ms})  # an earlier run analysed them

    class CountingStore:
        """The real store; counts history loads so the test sees where the history came from."""

        def __init__(self, inner):
            self.inner, self.loads = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        async def load_candles(self, *args, **kwargs):
            self.loads += 1
            return await self.inner.load_candles(*args, **kwargs)

    fresh_cache = MemoryCache()
    await fresh_cache.push_candles(candles[-600:])
    counting = CountingStore(store)
    p = Pipeline(settings=SETTINGS, timeframes=("15m",), store=counting, cache=fresh_cache,
                 engine_factory=lambda sym, tf: breakout_engine(sym, tf, SETTINGS))
    assert await p.prime("BTCUSDT", "15m", 500) == 500 and counting.loads == 0
    assert p.aggregator.window("BTCUSDT", "15m").candles() == tuple(candles[-VIEW_CANDLES:])  # what charts show

    stale_cache = MemoryCache()
    await stale_cache.push_candles(candles[-700:-10])  # missed the newest ten candles
    counting = CountingStore(store)
    p = Pipeline(settings=SETTINGS, timeframes=("15m",), store=counting, cache=stale_cache,
                 engine_factory=lambda sym, tf: breakout_engine(sym, tf, SETTINGS))
    assert await p.prime("BTCUSDT", "15m", 500) == 500 and counting.loads == 1
    assert p.aggregator.window("BTCUSDT", "15m").candles() == tuple(candles[-VIEW_CANDLES:])  # what charts show
    await store.close()


# ---------------------------------------------------------------------------- issue 10: kinds, gate memory, evidence
async def test_every_candidate_is_stored_with_its_kind_and_only_trade_calls_and_watch_notes_are_published(tmp_path: Path):
    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    sink = RecordingSink(store)
    p = _pipeline(store, [sink])
    await p.start()
    await p.on_candles(random_walk(3000, timeframe="15m", seed=5, vol=0.01), "replay")
    stored = await store.recent_signals(limit=100_000)
    published = [s for b in sink.batches for s in b.signals]
    assert p.stats.candidates == len(stored) > p.stats.signals_emitted == len(published) > 0
    assert all(s.kind in ("trade", "watch") for s in published) and all(sink.stored_before_publish)
    assert sorted(s.id for s in stored if s.kind != "gated") == sorted(s.id for s in published)
    gated = [s for s in stored if s.kind == "gated"]
    assert p.stats.gated == len(gated) and all(s.gate_reason for s in gated)  # kept with the reason, never sent
    assert p.stats.trade_calls + p.stats.watch_notes == len(published)
    await store.close()


async def test_start_seeds_the_gate_from_the_stores_gate_memory(tmp_path: Path, monkeypatch):
    from src.bot import analysis_api
    from src.storage.base import GateSeed
    from tests.storage_contract import make_signal

    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    await store.save_signal(make_signal("BTCUSDT", "15m", 1_700_000_000_000, "test_breakout", kind="watch",
                                        gate_reason="no_edge", structure_id="s1"))
    await store.save_signal(make_signal("BTCUSDT", "15m", 1_700_000_900_000, "test_breakout", kind="gated",
                                        gate_reason="cooldown", structure_id="s2"))
    seeds: list[GateSeed | None] = []
    real = analysis_api.make_gate

    def spy(settings, seed=None):
        seeds.append(seed)
        return real(settings, seed)

    monkeypatch.setattr(analysis_api, "make_gate", spy)
    p = _pipeline(store)
    await p.start()
    assert seeds[-1] == GateSeed({("BTCUSDT", "15m", "LONG"): 1_700_000_000_000}, {"s1": "watch"}, {},
                                 {("BTCUSDT", "15m"): 1_700_000_900_000})
    await store.close()


async def test_set_evidence_reaches_every_running_engine_between_batches(tmp_path: Path):
    from src.analysis.evidence import EvidenceModel

    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    p = Pipeline(settings=SETTINGS, timeframes=("15m", "1h"), store=store,
                 engine_factory=lambda sym, tf: breakout_engine(sym, tf, SETTINGS))
    await p.start()
    await p.on_candles(random_walk(8 * 60, seed=3), "replay")  # builds 15m and 1h engines
    model = EvidenceModel.uninformed()
    await p.set_evidence(model)
    assert p.evidence is model and len(p.engines) == 2
    # the real engines (a wrapper would not do: the compiled step() takes an AnalysisEngine only)
    assert all(e.evidence is model for e in p.engines.values())
    await store.close()


async def test_market_view_shows_the_latest_candidates_of_every_kind_and_the_last_posted_one(tmp_path: Path):
    from tests.storage_contract import make_signal

    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % 900_000
    posted = make_signal("BTCUSDT", "15m", t0, "a", kind="trade")
    later = [make_signal("BTCUSDT", "15m", t0 + i * 900_000, f"g{i}", kind="gated", gate_reason="cooldown")
             for i in range(1, 8)]
    for s in (posted, *later):
        await store.save_signal(s)
    p = _pipeline(store)
    await p.start()
    view = await p.market_view("BTCUSDT", "15m")
    assert view is not None and view.last_signal == posted
    assert [s.pattern for s in view.candidates] == ["g7", "g6", "g5", "g4", "g3"]
    assert await p.market_view("ETHUSDT", "15m") is None


async def test_a_candle_no_store_can_hold_is_refused_alone_counted_and_logged_without_false_promises(tmp_path: Path):
    # e.g. a replay file with a 2**63 trade count: refused before the aggregator (not stored, not analysed),
    # the store-error metric moves, the other candles of the batch are stored and analysed
    from dataclasses import replace

    from structlog.testing import capture_logs

    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    errors: list[str] = []
    p = Pipeline(settings=SETTINGS, timeframes=("15m",), store=store, build_from_smaller=False,
                 engine_factory=lambda sym, tf: breakout_engine(sym, tf, SETTINGS), on_store_error=errors.append)
    await p.start()
    candles = random_walk(300, timeframe="15m", seed=3, vol=0.01)
    bad = replace(candles[150], trades=2**63)
    with capture_logs() as logs:
        await p.on_candles([*candles[:150], bad, *candles[151:]], "replay")
    assert await store.load_candles("BTCUSDT", "15m") == candles[:150] + candles[151:]
    assert errors == ["candle_refused"]
    assert p.stats.candles_analysed == 299 and p.stats.candles_refused == 1
    refused = [e for e in logs if e["log_level"] == "error"]
    assert len(refused) == 1 and "not stored" in refused[0]["event"]
    assert not any("fetched again" in e["event"] or "re-fetch" in e["event"] for e in logs)
    await store.close()


def test_freeze_warm_heap_takes_the_warmed_objects_out_of_garbage_collection_but_still_collects_new_cycles() -> None:
    import gc

    from src.bot.pipeline import freeze_warm_heap

    class Node:
        def __init__(self) -> None:
            self.me = self

    warmed = [[i] for i in range(10_000)]  # stands for the warmed engines
    try:
        frozen, _ = freeze_warm_heap()
        assert frozen >= len(warmed) and gc.get_freeze_count() == frozen
        Node()  # a reference cycle made after the warm-up is garbage the collector still finds
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
    assert warmed[-1] == [9_999]
