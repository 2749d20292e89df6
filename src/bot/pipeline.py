"""The one-way data path of the bot: closed candles -> aggregator -> engine + gate -> store -> sinks.

Order of effects for every batch of incoming candles (from the live feed, a REST backfill or a
replay file):

1. the aggregator keeps only new closed candles of the configured timeframes (building them from
   smaller ones where the input is smaller), ascending per stream;
2. those candles are written to the store (idempotent upsert) before anything else, so a crash
   after this point loses no candle; when the write fails for a transient reason (StoreUnavailable,
   e.g. SQLite "database is locked" past its busy timeout or a full disk) the candles are kept and
   written again with the next batch and on :meth:`close` (at most ``MAX_UNSAVED`` = 100 000 are
   kept, the oldest dropped and counted beyond that), because the aggregator has already accepted
   them and would drop a re-delivery as a duplicate;
3. each candle goes through :func:`src.analysis.engine.step` (the same step every backtest uses);
4. EVERY candidate is stored with the gate's verdict (kind 'trade', 'watch' or 'gated' and the reason),
   THEN the emitted ones (trade calls and watch notes) are published to the sinks (console, Discord
   outbox, preview), which take the kinds their route allows: a signal that was not stored is never
   sent, and a gated candidate is never published;
5. candle observers (the outcome tracker) see every stored candidate, then every analysed candle.

The gate's memory (last emission per stream and direction, the structures already signalled) is
seeded from the store on :meth:`Pipeline.start`, so cooldowns and one-signal-per-structure survive a
restart. :meth:`Pipeline.set_evidence` swaps a newer evidence model (the live record folded in) into
every engine between batches.

Analysis of a large batch (warm-up, backfill, replay) runs in a worker thread so the event loop,
the WebSocket pings and the Discord heartbeat keep running. Batches are processed one at a time
(a lock), so engine state is never touched concurrently.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import structlog

from src.analysis import timeframes as tf_mod
from src.analysis.engine import AnalysisEngine, AnalysisSettings, step
from src.analysis.types import Candle, Signal
from src.bot import analysis_api
from src.bot.analysis_api import EvidenceModelView
from src.bot.sinks import SignalBatch, SignalSink
from src.bot.status import MarketView
from src.market.aggregator import CandleAggregator
from src.storage.base import Store, StoreError, StoreUnavailable
from src.storage.cache import Cache

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

THREAD_BATCH = 64  # batches larger than this are analysed in a worker thread
VIEW_CANDLES = 150
RECENT_CANDIDATES = 5  # candidates of every kind >signal shows
STRUCTURE_MEMORY_MS = 90 * 86_400_000  # structures seeded into the gate: those emitted within 90 days of the newest
MAX_UNSAVED = 100_000  # candles kept for a retry while the store refuses writes (~10 MB)


class CandleObserver(Protocol):
    async def on_candles(self, candles: Sequence[Candle]) -> None: ...


@dataclass(slots=True)
class PipelineStats:
    candles_in: int = 0
    candles_analysed: int = 0
    candidates: int = 0  # every candidate newly stored (all kinds)
    signals_emitted: int = 0  # trade calls + watch notes
    trade_calls: int = 0
    watch_notes: int = 0
    gated: int = 0
    signals_by_symbol: Counter[str] = field(default_factory=Counter)
    signals_by_pattern: Counter[str] = field(default_factory=Counter)
    last_signal_at: str | None = None
    store_errors: int = 0
    candles_unsaved_dropped: int = 0
    sink_errors: int = 0
    analysis_seconds_total: float = 0.0


@dataclass(slots=True)
class _Candle:
    """One analysed candle's candidates (every kind), the emitted ones, and the market view AT that candle
    (the chart of its signals; None when nothing was emitted)."""

    candidates: list[Signal]
    emitted: list[Signal]
    view: MarketView | None


@dataclass(slots=True)
class _Analysed:
    groups: list[_Candle]
    seconds: float


def _log_orphan_failure(task: asyncio.Task[None]) -> None:
    """A batch whose caller was cancelled has nobody to raise to: log its error."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("candle batch failed after its caller was cancelled", error=f"{type(exc).__name__}: {exc}")


class Pipeline:
    """See the module docstring. ``on_candles`` is the CandleSink the feed and replay call."""

    def __init__(
        self,
        *,
        settings: AnalysisSettings,
        timeframes: Sequence[str],
        store: Store,
        sinks: Sequence[SignalSink] = (),
        evidence: EvidenceModelView | None = None,
        window: int = 500,
        build_from_smaller: bool = True,
        observers: Sequence[CandleObserver] = (),
        on_analysis: Callable[[float, int], None] | None = None,
        on_signal: Callable[[Signal], None] | None = None,
        engine_factory: Callable[[str, str], AnalysisEngine] | None = None,
        on_store_error: Callable[[str], None] | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sinks = list(sinks)
        self.evidence = evidence
        self.aggregator = CandleAggregator(timeframes, window=window, build_from_smaller=build_from_smaller)
        self.observers = list(observers)
        self.cache = cache
        self.engines: dict[tuple[str, str], AnalysisEngine] = {}
        self.gate = analysis_api.make_gate(settings)
        self.stats = PipelineStats()
        self._lock = asyncio.Lock()
        self._on_analysis = on_analysis
        self._on_signal = on_signal
        self._on_store_error = on_store_error
        self._unsaved: list[Candle] = []  # accepted candles whose store write failed, oldest first
        self._in_flight: set[asyncio.Task[None]] = set()
        self._engine_factory = engine_factory or (
            lambda sym, tf: analysis_api.build_engine(sym, tf, settings, self.evidence))

    async def start(self) -> None:
        """Seed the gate's memory from the store, so a restart neither re-emits nor forgets a cooldown or a structure."""
        seed = await self.store.gate_seed(structure_window_ms=STRUCTURE_MEMORY_MS)
        self.gate = analysis_api.make_gate(self.settings, seed)

    async def set_evidence(self, model: EvidenceModelView) -> None:
        """Use ``model`` for every engine from the next candle on (waits for the batch in analysis)."""
        async with self._lock:
            self.evidence = model
            for eng in self.engines.values():
                analysis_api.set_evidence(eng, model)

    def engine(self, symbol: str, timeframe: str) -> AnalysisEngine:
        key = (symbol, timeframe)
        eng = self.engines.get(key)
        if eng is None:
            eng = self.engines[key] = self._engine_factory(symbol, timeframe)
        return eng

    async def prime(self, symbol: str, timeframe: str, limit: int) -> int:
        """Rebuild a stream's analyzer state from history without emitting anything (those candles
        were analysed by an earlier run; their signals are already stored). The history comes from the
        cache (warm restart) when it holds ``limit`` contiguous candles ending at the store's newest
        one, else from the store."""
        history = await self._cached_history(symbol, timeframe, limit)
        if history is None:
            history = await self.store.load_candles(symbol, timeframe, limit=limit)
        if not history:
            return 0
        async with self._lock:
            window = self.aggregator.window(symbol, timeframe)
            fresh = [c for c in history if window.add(c)]
            eng = self.engine(symbol, timeframe)
            await self._maybe_thread(lambda: [eng.on_candle(c) for c in fresh], len(fresh))
        return len(fresh)

    async def _cached_history(self, symbol: str, timeframe: str, limit: int) -> list[Candle] | None:
        if self.cache is None:
            return None
        cached = await self.cache.recent_candles(symbol, timeframe, limit)
        if len(cached) < limit or any(
            tf_mod.next_open(timeframe, a.open_time_ms) != b.open_time_ms for a, b in itertools.pairwise(cached)
        ):
            return None
        if cached[-1].open_time_ms != await self.store.last_open_time(symbol, timeframe):
            return None  # the cache missed candles (e.g. Redis was down): the store is the truth
        return cached

    async def on_candles(self, candles: Sequence[Candle], source: str = "live") -> None:
        """Accept incoming candles (any streams, closed ones only are used); see the module docstring.

        The batch runs in its own task: a caller cancelled meanwhile (shutdown stopping the feed) gets
        CancelledError at once, but the batch is still stored, analysed and published; :meth:`close`
        waits for it. Cut in half, its candles would be stored while its signals were never stored or
        sent, and a restart would not analyse those candles again."""
        task = asyncio.ensure_future(self._process(candles, source))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_orphan_failure)
            raise

    async def _process(self, candles: Sequence[Candle], source: str) -> None:
        async with self._lock:
            self.stats.candles_in += len(candles)
            closed = [out for c in candles for out in self.aggregator.add(c)]
            if closed or self._unsaved:
                await self._write_candles(closed)
            if not closed:
                return
            result = await self._maybe_thread(lambda: self._analyse(closed), len(closed))
            self.stats.candles_analysed += len(closed)
            self.stats.analysis_seconds_total += result.seconds
            if self._on_analysis is not None:
                self._on_analysis(result.seconds, len(closed))
            stored: list[Signal] = []
            for group in result.groups:
                stored += await self._emit(group, historical=source in ("warmup", "backfill"))
            for obs in self.observers:
                try:
                    announce = getattr(obs, "on_signals", None)
                    if stored and announce is not None:
                        await announce(stored)
                    await obs.on_candles(closed)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("candle observer failed", observer=type(obs).__name__)

    async def _write_candles(self, closed: list[Candle]) -> None:
        """Upsert ``closed`` behind any earlier candles whose write failed; on failure keep them all."""
        batch = self._unsaved + closed
        try:
            await self.store.upsert_candles(batch)
        except StoreError as exc:
            # the spool wrapper (network backends) absorbs outages; reaching here is a real failure
            self._store_failed("candles")
            if not isinstance(exc, StoreUnavailable):  # permanent: retrying would block every later write
                self._unsaved = []
                log.error("candle write refused; analysis continues", error=str(exc), candles=len(batch))
                return
            excess = len(batch) - MAX_UNSAVED
            if excess > 0:
                self.stats.candles_unsaved_dropped += excess
                batch = batch[excess:]
            self._unsaved = batch
            log.error("candle write failed; kept for the next write, analysis continues", error=str(exc),
                      candles=len(closed), unsaved=len(batch), dropped_total=self.stats.candles_unsaved_dropped)
            return
        self._unsaved = []

    def _store_failed(self, operation: str) -> None:
        self.stats.store_errors += 1
        if self._on_store_error is not None:
            self._on_store_error(operation)

    def _analyse(self, candles: list[Candle]) -> _Analysed:
        t0 = time.perf_counter()
        groups: list[_Candle] = []
        seen: dict[tuple[str, str], list[Candle]] = defaultdict(list)  # this batch's candles per stream, so far
        for c in candles:
            eng = self.engine(c.symbol, c.timeframe)
            r = step(eng, self.gate, c)
            seen[c.stream].append(c)
            candidates = analysis_api.candidates_of(r)
            if candidates:
                emitted = [s for s in r.emitted if s.kind != "gated"]
                view = self._view_at(seen[c.stream], eng) if emitted else None
                groups.append(_Candle(candidates, emitted, view))
        return _Analysed(groups, time.perf_counter() - t0)

    def _view_at(self, batch_part: list[Candle], eng: AnalysisEngine) -> MarketView:
        """The stream as it was when its last candle in ``batch_part`` closed: the candles up to it (the
        window already holds the whole batch, so older ones come from before the batch) and the analyzers'
        states right now. Only built for candles that emitted a signal."""
        c = batch_part[-1]
        window = self.aggregator.windows.get(c.stream)
        first = batch_part[0].open_time_ms
        older = [x for x in window.candles(VIEW_CANDLES) if x.open_time_ms < first] if window is not None else []
        candles = (older + batch_part)[-VIEW_CANDLES:]
        return MarketView(c.symbol, c.timeframe, tuple(candles), tuple(eng.states()), None)

    async def _maybe_thread(self, fn: Callable[[], _T], size: int) -> _T:
        if size > THREAD_BATCH:
            return await asyncio.to_thread(fn)
        return fn()

    async def _emit(self, group: _Candle, historical: bool) -> list[Signal]:
        """Store every candidate of one candle, count them, and publish the emitted ones that were stored;
        returns the candidates that were stored."""
        stored: list[Signal] = []
        new = 0
        for s in group.candidates:
            try:
                is_new = await self.store.save_signal(s)
            except StoreError as exc:
                self._store_failed("signals")
                log.error("candidate write failed; it will not be sent or graded", signal_id=s.id, kind=s.kind,
                          error=str(exc))
                continue
            stored.append(s)
            if is_new:  # a candle an earlier run judged (replay into the same store) keeps its first verdict
                new += 1
                self.stats.gated += s.kind == "gated"
        saved = {s.id for s in stored}
        emitted = [s for s in group.emitted if s.id in saved]
        self.stats.candidates += new
        for s in emitted:
            self.stats.signals_emitted += 1
            if s.kind == "trade":
                self.stats.trade_calls += 1
            else:
                self.stats.watch_notes += 1
            self.stats.signals_by_symbol[s.symbol] += 1
            self.stats.signals_by_pattern[s.pattern] += 1
            self.stats.last_signal_at = s.generated_at
            if self._on_signal is not None:
                self._on_signal(s)
        if not emitted or group.view is None:
            return stored
        batch = SignalBatch(tuple(emitted), (group.view,), historical=historical)
        for sink in self.sinks:
            try:
                await sink.publish(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.sink_errors += 1
                log.exception("signal sink failed", sink=sink.name)
        return stored

    def market_view_now(self, symbol: str, timeframe: str, last: Signal | None) -> MarketView | None:
        """The current view of a stream from memory (no I/O); None for an unknown stream."""
        window = self.aggregator.windows.get((symbol, timeframe))
        eng = self.engines.get((symbol, timeframe))
        if window is None and eng is None:
            return None
        candles = window.candles(VIEW_CANDLES) if window is not None else ()
        states = tuple(eng.states()) if eng is not None else ()
        return MarketView(symbol, timeframe, candles, states, last)

    async def market_view(self, symbol: str, timeframe: str) -> MarketView | None:
        """The view for ``>signal``: memory state, the newest trade call or watch note of the stream (cache, else
        store) and its latest candidates of every kind (store)."""
        candidates = tuple(await self.store.recent_signals(symbol=symbol, timeframe=timeframe, limit=RECENT_CANDIDATES))
        latest = await self.cache.latest_signal(symbol, timeframe) if self.cache is not None else None
        if latest is None:
            latest = next((s for s in candidates if s.kind != "gated"), None)
        if latest is None:
            emitted = await self.store.recent_signals(symbol=symbol, timeframe=timeframe, limit=1, kinds=("trade", "watch"))
            latest = emitted[0] if emitted else None
        async with self._lock:  # never read engine state while a batch is being analysed in a thread
            view = self.market_view_now(symbol, timeframe, latest)
        if view is None:
            if latest is None and not candidates:
                return None
            return MarketView(symbol, timeframe, (), (), latest, candidates)
        return replace(view, candidates=candidates)

    async def close(self) -> None:
        """Wait for the batch in flight, write candles whose write failed earlier, then close the sinks."""
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        async with self._lock:
            if self._unsaved:
                await self._write_candles([])
            for sink in self.sinks:
                try:
                    await sink.close()
                except Exception:
                    log.exception("closing sink failed", sink=sink.name)

