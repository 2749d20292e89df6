"""The one-way data path of the bot: closed candles -> aggregator -> engine + gate -> store -> sinks.

Order of effects for every batch of incoming candles (from the live feed, a REST backfill or a
replay file):

1. a candle no store could keep (:func:`~src.storage.base.candle_problem`: impossible numbers, a 2**63
   trade count, a time past year 9999) is refused first: logged, counted as a store error
   (``candle_refused``), not stored and not analysed; the rest of the batch goes on (the feed never
   delivers such a candle, a replay file may hold one);
2. the aggregator keeps only new closed candles of the configured timeframes (building them from
   smaller ones where the input is smaller), ascending per stream;
3. those candles are written to the store (idempotent upsert) before anything else, so a crash
   after this point loses no candle; when the write fails for a transient reason (StoreUnavailable,
   e.g. SQLite "database is locked" past its busy timeout or a full disk) the candles are kept and
   written again with the next batch and on :meth:`close` (at most ``MAX_UNSAVED`` = 100 000 are
   kept, the oldest dropped and counted beyond that), because the aggregator has already accepted
   them and would drop a re-delivery as a duplicate;
3. each candle goes through :func:`src.analysis.engine.step` (the same step every backtest uses);
4. EVERY candidate (kind 'trade', 'watch' or 'gated' with the gate's reason) of the batch and, per stream,
   the open time of its newest analysed candle (the "analysed up to" watermark) are committed in ONE
   store transaction (``commit_analysis``), THEN the emitted ones (trade calls and watch notes) are
   published to the sinks (console, Discord outbox, preview), which take the kinds their route allows: a
   signal that was not stored is never sent, and a gated candidate is never published. A commit the
   store cannot take now (StoreUnavailable) is kept and committed with the next batch (or on
   :meth:`close`); its signals are sent once it is committed. A commit refused for good is retried one
   candidate at a time, so only the refused one is lost (logged);
5. candle observers (the outcome tracker) see every stored candidate, then every analysed candle.

The gate's memory (last emission per stream and direction, the structures already signalled) is
seeded from the store on :meth:`Pipeline.start`, so cooldowns and one-signal-per-structure survive a
restart. :meth:`Pipeline.set_evidence` swaps a newer evidence model (the live record folded in) into
every engine between batches.

Crash consistency: candles are stored before they are analysed, and their analysis is committed with the
watermark, so after a kill -9 anywhere the store holds every candle and, for each stream, either all or
none of a batch's candidates. On start :meth:`prime` rebuilds each stream's analyzers from the candles up to
its watermark (no emission) and then analyses every stored candle after it through this same path: the
signals a crash cut off are stored and sent then, exactly once (deterministic ids, insert-if-new), and a
candle stored from the future (a bogus frame) is deleted first.

Analysis of a large batch (warm-up, backfill, replay) runs in a worker thread so the event loop,
the WebSocket pings and the Discord heartbeat keep running. Batches are processed one at a time
(a lock), so engine state is never touched concurrently.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import structlog

from src.analysis import timeframes as tf_mod
from src.analysis.engine import AnalysisEngine, AnalysisSettings, step
from src.analysis.gate import REASON_ALREADY_JUDGED
from src.analysis.types import Candle, Signal
from src.bot import analysis_api
from src.bot.analysis_api import EvidenceModelView
from src.bot.sinks import SignalBatch, SignalSink
from src.bot.status import MarketView
from src.bot.track_record import record_cutoff_ms
from src.market.aggregator import CandleAggregator
from src.storage.base import Store, StoreError, StoreUnavailable, candle_problem
from src.storage.cache import Cache

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

THREAD_BATCH = 64  # batches larger than this are analysed in a worker thread
VIEW_CANDLES = 150
RECENT_CANDIDATES = 5  # candidates of every kind >signal shows
STRUCTURE_MEMORY_MS = 90 * 86_400_000  # structures seeded into the gate: those emitted within 90 days of the newest
MAX_UNSAVED = 100_000  # candles kept for a retry while the store refuses writes (~10 MB)
MAX_UNCOMMITTED = 10_000  # analysed batches kept for a retry while the store cannot commit
RECOVERY_CHUNK = 5_000  # stored candles re-analysed per commit on start


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
    candles_refused: int = 0
    candles_unsaved_dropped: int = 0
    candles_recovered: int = 0  # stored but never analysed (a crash): analysed on start
    future_candles_dropped: int = 0  # stored candles whose interval had not ended: deleted on start
    signals_refused: int = 0  # signals the store refused for good (not stored, not sent)
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


@dataclass(slots=True)
class _Uncommitted:
    """An analysed batch whose results are not committed yet: its candles' candidates and the streams' watermarks."""

    groups: list[_Candle]
    analysed_to: dict[tuple[str, str], int]
    historical: bool


def _by_record_day(closed: list[Candle]) -> list[list[Candle]]:
    """``closed`` cut into runs of candles that close on the same UTC day (order kept): each day is judged by
    the evidence model of that day, after the days before it are committed and graded."""
    days: list[list[Candle]] = []
    current = -1
    for c in closed:
        day = record_cutoff_ms(c.close_time_ms)
        if day != current:
            days.append([])
            current = day
        days[-1].append(c)
    return days


def _warm(engine: AnalysisEngine, candles: list[Candle]) -> None:
    for c in candles:
        engine.warm(c)


def _per_stream(candles: list[Candle]) -> dict[tuple[str, str], list[Candle]]:
    out: dict[tuple[str, str], list[Candle]] = defaultdict(list)
    for c in candles:
        out[c.stream].append(c)
    return out


def freeze_warm_heap() -> tuple[int, float]:
    """Collect once, then move every object alive now out of the garbage collector's generations (``gc.freeze``).

    Call it when the warm-up is done. The warmed streams are millions of long-lived objects (engines, windows,
    caches); a full collection walks every one of them, and with 2,000 warmed streams that is a 1.5 s pause,
    which lands on a candle close now and then (benchmarks/signal_latency.py). Frozen objects are still freed by
    reference counting when the live state replaces them; only a reference cycle among them would stay until
    exit. Returns (objects frozen, seconds it took)."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count(), time.perf_counter() - t0


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
        window: int = VIEW_CANDLES,
        build_from_smaller: bool = True,
        observers: Sequence[CandleObserver] = (),
        on_analysis: Callable[[float, int], None] | None = None,
        on_signal: Callable[[Signal], None] | None = None,
        engine_factory: Callable[[str, str], AnalysisEngine] | None = None,
        on_store_error: Callable[[str], None] | None = None,
        cache: Cache | None = None,
        evidence_source: Callable[[int], Awaitable[EvidenceModelView | None]] | None = None,
    ) -> None:
        """``evidence_source(candle_close_ms)`` gives the model that judges the candles of that candle's UTC day
        (the track-record keeper); it is asked once per day of every batch, before that day is analysed."""
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
        self._uncommitted: list[_Uncommitted] = []  # analysed batches the store could not commit yet, oldest first
        self._in_flight: set[asyncio.Task[None]] = set()
        self._evidence_source = evidence_source
        self._engine_factory = engine_factory or (
            lambda sym, tf: analysis_api.build_engine(sym, tf, settings, self.evidence))

    async def start(self) -> None:
        """Seed the gate's memory from the store, so a restart neither re-emits nor forgets a cooldown or a structure."""
        seed = await self.store.gate_seed(structure_window_ms=STRUCTURE_MEMORY_MS)
        self.gate = analysis_api.make_gate(self.settings, seed)

    async def set_evidence(self, model: EvidenceModelView) -> None:
        """Use ``model`` for every engine from the next candle on (waits for the batch in analysis)."""
        async with self._lock:
            self._swap_evidence(model)

    def _swap_evidence(self, model: EvidenceModelView) -> None:
        self.evidence = model
        for eng in self.engines.values():
            analysis_api.set_evidence(eng, model)

    def engine(self, symbol: str, timeframe: str) -> AnalysisEngine:
        key = (symbol, timeframe)
        eng = self.engines.get(key)
        if eng is None:
            eng = self.engines[key] = self._engine_factory(symbol, timeframe)
        return eng

    async def prime(self, symbol: str, timeframe: str, limit: int, *, closed_by_ms: int | None = None) -> int:
        """Bring a stream back after a (re)start; returns the candles read to rebuild its analyzers.

        1. With ``closed_by_ms`` (exchange time plus the clock's tolerance): stored candles whose interval has
           not ended by then (a bogus frame stored by an older version) are deleted, and logged.
        2. The analyzers are rebuilt from the newest ``limit`` candles up to the stream's "analysed up to"
           watermark, without emitting anything (their signals are stored). The history comes from the
           cache (warm restart) when it holds ``limit`` contiguous candles ending there, else from the store.
        3. Every stored candle after the watermark (a crash cut its analysis off) is analysed now through
           the normal path: its signals are committed with the watermark and published, once."""
        if closed_by_ms is not None:
            await self._drop_future(symbol, timeframe, closed_by_ms)
        newest = await self.store.last_open_time(symbol, timeframe)
        if newest is None:
            return 0
        watermark = await self.store.analysed_up_to(symbol, timeframe)
        upto = newest if watermark is None or watermark >= newest else watermark
        history: list[Candle] = []
        if watermark is not None:
            cached = await self._cached_history(symbol, timeframe, limit, upto)
            history = cached if cached is not None else await self.store.load_candles(
                symbol, timeframe, end_ms=upto, limit=limit)
        if history:
            async with self._lock:
                window = self.aggregator.window(symbol, timeframe)
                fresh = [c for c in history if window.add(c)]
                eng = self.engine(symbol, timeframe)
                await self._maybe_thread(functools.partial(_warm, eng, fresh), len(fresh))
        if watermark is None or watermark < newest:
            await self._recover(symbol, timeframe, None if watermark is None else watermark + 1)
        return len(history)

    async def _drop_future(self, symbol: str, timeframe: str, closed_by_ms: int) -> None:
        """Delete the stream's stored candles that cannot have closed by ``closed_by_ms``."""
        newest = await self.store.last_open_time(symbol, timeframe)
        forming = tf_mod.bucket_start(timeframe, closed_by_ms)  # the bucket of that instant has not closed
        if newest is None or newest < forming:
            return
        removed = await self.store.drop_candles_after(symbol, timeframe, forming - 1)
        self.stats.future_candles_dropped += removed
        log.error("stored candles from the future dropped: their interval had not ended on Binance's clock (a bogus "
                  "frame stored by an earlier run); the feed fetches the real ones", symbol=symbol,
                  timeframe=timeframe, candles=removed, newest_open_ms=newest, exchange_now_ms=closed_by_ms)

    async def _recover(self, symbol: str, timeframe: str, start_ms: int | None) -> None:
        """Analyse the stream's stored candles from ``start_ms`` (None: all) through the normal path."""
        candles = await self.store.load_candles(symbol, timeframe, start_ms=start_ms)
        if not candles:
            return
        log.warning("analysing stored candles a crash left unanalysed", symbol=symbol, timeframe=timeframe,
                    candles=len(candles), from_ms=candles[0].open_time_ms)
        self.stats.candles_recovered += len(candles)
        for i in range(0, len(candles), RECOVERY_CHUNK):
            await self._run_batch(candles[i:i + RECOVERY_CHUNK], "recovery", write=False)

    async def _cached_history(self, symbol: str, timeframe: str, limit: int, upto_ms: int) -> list[Candle] | None:
        if self.cache is None:
            return None
        cached = [c for c in await self.cache.recent_candles(symbol, timeframe, limit + 64) if c.open_time_ms <= upto_ms]
        cached = cached[-limit:]
        if len(cached) < limit or any(
            tf_mod.next_open(timeframe, a.open_time_ms) != b.open_time_ms for a, b in itertools.pairwise(cached)
        ):
            return None
        if cached[-1].open_time_ms != upto_ms:
            return None  # the cache missed candles (e.g. Redis was down): the store is the truth
        return cached

    async def on_candles(self, candles: Sequence[Candle], source: str = "live") -> None:
        """Accept incoming candles (any streams, closed ones only are used); see the module docstring.

        The batch runs in its own task: a caller cancelled meanwhile (shutdown stopping the feed) gets
        CancelledError at once, but the batch is still stored, analysed and published; :meth:`close`
        waits for it. Cut in half, its candles would be stored while its signals were never stored or
        sent, and a restart would not analyse those candles again."""
        await self._run_batch(candles, source, write=True)

    async def _run_batch(self, candles: Sequence[Candle], source: str, *, write: bool) -> None:
        task = asyncio.ensure_future(self._process(candles, source, write=write))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_orphan_failure)
            raise

    async def _process(self, candles: Sequence[Candle], source: str, *, write: bool = True) -> None:
        async with self._lock:
            self.stats.candles_in += len(candles)
            storable = self._storable(candles)
            before = self._chart_history(storable)
            closed = [out for c in storable for out in self.aggregator.add(c)]
            if write and (closed or self._unsaved):
                await self._write_candles(closed)
            if not closed:
                if self._uncommitted:
                    await self._observe(await self._commit_pending(), [])
                return
            historical = source in ("warmup", "backfill", "recovery")
            for day in _by_record_day(closed):
                await self._use_evidence_for(day[0])
                await self._analyse_and_commit(day, historical, before)
                if before:  # the next day's charts start from this day's candles
                    for key, part in _per_stream(day).items():
                        if key in before:
                            before[key] = (*before[key], *part)[-VIEW_CANDLES:]

    async def _use_evidence_for(self, first: Candle) -> None:
        """Swap in the evidence model that judges ``first``'s day (the evidence source decides; a new day's
        model folds in the live record up to that day, see src/bot/track_record.py). Holds the lock."""
        if self._evidence_source is None:
            return
        model = await self._evidence_source(first.close_time_ms)
        if model is not None and model is not self.evidence:
            self._swap_evidence(model)

    def _chart_history(self, candles: Sequence[Candle]) -> dict[tuple[str, str], tuple[Candle, ...]]:
        """The chart candles held before this batch of every stream of a symbol that gets more than one candle
        from it (a REST page): windows keep only VIEW_CANDLES, so such a batch pushes out the candles its earlier
        signals chart. A live batch (one candle per stream) needs none: its window still holds them."""
        counts = Counter(c.stream for c in candles)
        held: dict[tuple[str, str], tuple[Candle, ...]] = {}
        for symbol in {symbol for (symbol, _), n in counts.items() if n > 1}:
            for tf in self.aggregator.targets:
                window = self.aggregator.windows.get((symbol, tf))
                held[(symbol, tf)] = window.candles(VIEW_CANDLES) if window is not None else ()
        return held

    async def _analyse_and_commit(self, closed: list[Candle], historical: bool,
                                  before: dict[tuple[str, str], tuple[Candle, ...]] | None = None) -> None:
        result = await self._maybe_thread(lambda: self._analyse(closed, before or {}), len(closed))
        self.stats.candles_analysed += len(closed)
        self.stats.analysis_seconds_total += result.seconds
        if self._on_analysis is not None:
            self._on_analysis(result.seconds, len(closed))
        analysed_to: dict[tuple[str, str], int] = {}
        for c in closed:  # ascending per stream: the last one is the newest
            analysed_to[c.stream] = c.open_time_ms
        self._uncommitted.append(_Uncommitted(result.groups, analysed_to, historical))
        if len(self._uncommitted) > MAX_UNCOMMITTED:
            lost = self._uncommitted.pop(0)
            log.error("analysis results dropped: the store could not commit them for too long; their candles are "
                      "analysed again at the next start only if no later commit moved the watermark past them",
                      candidates=sum(len(g.candidates) for g in lost.groups))
        await self._observe(await self._commit_pending(), closed)

    async def _observe(self, stored: list[Signal], closed: list[Candle]) -> None:
        """Candle observers (the outcome tracker): newly stored signals first, then the analysed candles."""
        for obs in self.observers:
            try:
                announce = getattr(obs, "on_signals", None)
                if stored and announce is not None:
                    await announce(stored)
                if closed:
                    await obs.on_candles(closed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("candle observer failed", observer=type(obs).__name__)

    async def _commit_pending(self) -> list[Signal]:
        """Commit every analysed batch not committed yet (oldest first) in one ``commit_analysis``; then count
        and publish their signals. Returns the candidates stored now ([] when the commit has to wait)."""
        pending = self._uncommitted
        if not pending:
            return []
        signals = [s for batch in pending for group in batch.groups for s in group.candidates]
        marks: dict[tuple[str, str], int] = {}
        for batch in pending:
            for stream, t in batch.analysed_to.items():
                marks[stream] = max(marks.get(stream, t), t)
        try:
            await self.store.commit_analysis(signals, marks)
        except StoreUnavailable as exc:
            self._store_failed("signals")
            log.error("analysis results cannot be stored yet; kept and committed with the next batch (their signals "
                      "are sent then)", signals=len(signals), batches=len(pending), error=str(exc))
            return []
        except StoreError as exc:
            self._store_failed("signals")
            log.error("the store refused a batch of analysis results; committing them one by one", error=str(exc),
                      signals=len(signals))
            self._uncommitted = []
            return await self._commit_one_by_one(pending, marks)
        self._uncommitted = []
        for batch in pending:
            for group in batch.groups:
                await self._publish(group, batch.historical)
        return signals

    async def _commit_one_by_one(self, pending: list[_Uncommitted], marks: dict[tuple[str, str], int]) -> list[Signal]:
        """After a refused commit: each candidate alone (a refused one is logged and lost), then the watermarks."""
        stored: list[Signal] = []
        for batch in pending:
            for group in batch.groups:
                ok: list[Signal] = []
                for s in group.candidates:
                    try:
                        await self.store.commit_analysis([s], {})
                    except StoreError as exc:
                        self.stats.signals_refused += 1
                        self._store_failed("signals")
                        log.error("signal refused by the store; it is not stored and will not be sent", signal_id=s.id,
                                  error=str(exc))
                        continue
                    ok.append(s)
                if ok:
                    kept = {s.id for s in ok}
                    emitted = [s for s in group.emitted if s.id in kept]
                    await self._publish(_Candle(ok, emitted, group.view), batch.historical)
                    stored += ok
        try:
            await self.store.commit_analysis([], marks)
        except StoreError as exc:
            self._store_failed("signals")
            log.error("analysis watermark not stored; these candles are analysed again at the next start (stored "
                      "signals are not sent twice)", error=str(exc))
        return stored

    def _storable(self, candles: Sequence[Candle]) -> Sequence[Candle]:
        """``candles`` without those no store could keep (each refused one logged and counted)."""
        refused = [(c, problem) for c in candles if c.closed and (problem := candle_problem(c)) is not None]
        if not refused:
            return candles
        for c, problem in refused:
            self.stats.candles_refused += 1
            self._store_failed("candle_refused")
            log.error("candle refused: no store can hold it; it is not stored and not analysed", symbol=c.symbol,
                      timeframe=c.timeframe, open_time_ms=c.open_time_ms, problem=problem,
                      refused_total=self.stats.candles_refused)
        bad = {id(c) for c, _ in refused}
        return [c for c in candles if id(c) not in bad]

    async def _write_candles(self, closed: list[Candle]) -> None:
        """Upsert ``closed`` behind any earlier candles whose write failed; on failure keep them all."""
        batch = self._unsaved + closed
        rejected_before = int(getattr(self.store, "rejected_candles", 0))
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
        for _ in range(int(getattr(self.store, "rejected_candles", 0)) - rejected_before):
            self._store_failed("candles_rejected")  # the store logged each one with its reason

    def _store_failed(self, operation: str) -> None:
        self.stats.store_errors += 1
        if self._on_store_error is not None:
            self._on_store_error(operation)

    def _analyse(self, candles: list[Candle], before: dict[tuple[str, str], tuple[Candle, ...]]) -> _Analysed:
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
                view = self._view_at(seen[c.stream], eng, before.get(c.stream)) if emitted else None
                groups.append(_Candle(candidates, emitted, view))
        return _Analysed(groups, time.perf_counter() - t0)

    def _view_at(self, batch_part: list[Candle], eng: AnalysisEngine,
                 before: tuple[Candle, ...] | None = None) -> MarketView:
        """The stream as it was when its last candle in ``batch_part`` closed: the candles up to it (the
        window already holds the whole batch, so older ones come from ``before``, the window as it was before
        the batch, or else from the window's candles older than the batch) and the analyzers' states right
        now. Only built for candles that emitted a signal."""
        c = batch_part[-1]
        window = self.aggregator.windows.get(c.stream)
        first = batch_part[0].open_time_ms
        held = before if before is not None else window.candles(VIEW_CANDLES) if window is not None else ()
        older = [x for x in held if x.open_time_ms < first]
        candles = (older + batch_part)[-VIEW_CANDLES:]
        return MarketView(c.symbol, c.timeframe, tuple(candles), tuple(eng.states()), None)

    async def _maybe_thread(self, fn: Callable[[], _T], size: int) -> _T:
        if size > THREAD_BATCH:
            return await asyncio.to_thread(fn)
        return fn()

    async def _publish(self, group: _Candle, historical: bool) -> None:
        """Count the committed candidates of one candle and publish its emitted ones (trade calls, watch notes).
        Candidates of candles an earlier run judged (a replay into the same store) are not counted: the
        store keeps their first verdict (insert-if-new)."""
        new = [s for s in group.candidates if s.gate_reason != REASON_ALREADY_JUDGED]
        self.stats.candidates += len(new)
        self.stats.gated += sum(s.kind == "gated" for s in new)
        for s in group.emitted:
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
        if not group.emitted or group.view is None:
            return
        batch = SignalBatch(tuple(group.emitted), (group.view,), historical=historical)
        for sink in self.sinks:
            try:
                await sink.publish(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.sink_errors += 1
                log.exception("signal sink failed", sink=sink.name)

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
            if self._uncommitted:
                await self._observe(await self._commit_pending(), [])
            for sink in self.sinks:
                try:
                    await sink.close()
                except Exception:
                    log.exception("closing sink failed", sink=sink.name)

