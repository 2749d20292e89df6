"""The WyEli process: builds every component from the configuration and runs them in one event loop.

Live mode: Binance feed -> pipeline -> store -> sinks, plus the periodic console status, the
Discord service, the HTTP health/metrics server, the systemd watchdog and candle retention.
Replay mode (``--replay FILE``): the same pipeline fed from kline CSV files; exits 0 when the files
are exhausted and everything is flushed. A replay writes into its OWN fresh SQLite database
(``<SQLITE_PATH's folder>/replays/<file stem>-<UTC stamp>.db``, or ``--replay-db PATH``) and uses no
cache, so it never touches the live store's candles, signals, cooldowns or outcomes; it prints where
at the start and, with the counts, at the end. ``--replay-into-store`` writes into the configured store.

The evidence model (EVIDENCE_MODEL_PATH, else the shipped default) assesses every candidate; the live
track record from the store is folded into it at start and, in live mode, as outcomes resolve
(:mod:`src.bot.track_record`).

Start-up order (live): the HTTP health server first (``/healthz`` answers from the first second,
``/readyz`` says why the bot is not ready: the store still opening or down, Binance unreachable), then
the store (a network store that is down is retried with backoff while writes are spooled; a stop
meanwhile exits 0), Binance's clock and symbols, the priming (with re-analysis after the watermark),
the feed. HTTP 451 from Binance, a store that refuses for good (bad key, missing schema) or bad input
end the bot with exit code 2 and one clear log line; nothing ends it with a raw traceback.

Shutdown (SIGTERM/SIGINT, or the end of a replay): stop intake, finish the batch in flight, flush
and close sinks (Discord outbox) and the store, close connections, STOPPING=1, all within 10 s.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from src.analysis import timeframes as tf_mod
from src.analysis.types import Candle, Signal, ms_to_iso
from src.bot import analysis_api
from src.bot.analysis_api import EvidenceModelView, ModelError
from src.bot.console import ConsoleSink, format_status
from src.bot.leadership import Leadership
from src.bot.metrics import BotMetrics, ClosedCandleCounter, LoopLagMonitor
from src.bot.notify import ActivityTracker, SdNotifier, Watchdog
from src.bot.pipeline import Pipeline, PipelineStats, freeze_warm_heap
from src.bot.replay import replay_files
from src.bot.shutdown import ShutdownSignals, ShutdownStep, run_shutdown
from src.bot.sinks import CacheSink, KindFilter, SignalRoutes, SignalSink
from src.bot.status import ConnectionStatus, MarketView, StatusSnapshot, StreamStatus
from src.bot.track_record import TrackRecordKeeper
from src.bot.trading_runner import TradingRunner, TradingStartError
from src.config import Config, shards
from src.market.klines_csv import KlineFile, KlineFileError, read_klines_csv
from src.native import loader as native_loader
from src.storage.base import Store, StoreError, StoreUnavailable
from src.storage.instance_lock import InstanceLock, InstanceLocked

log = structlog.get_logger(__name__)
_R = TypeVar("_R")


@dataclass
class RunOptions:
    """Command-line options of ``python -m src.bot.main``."""

    replay: list[Path] = field(default_factory=list)
    replay_symbol: str | None = None
    replay_timeframe: str | None = None
    speed: float | None = None  # None = as fast as possible
    discord_preview: Path | None = None
    http: bool = True
    replay_into_store: bool = False  # replay into the configured store instead of a fresh replay database
    replay_db: Path | None = None  # the replay database (default: a fresh one under <SQLITE_PATH folder>/replays)
    own_process: bool = False  # the bot owns the process (python -m src.bot.main): signals are handled to the end


class StartupError(RuntimeError):
    """A problem the user must fix before the bot can run (message says what)."""


def load_evidence_model(path: Path | None, timeframes: Sequence[str] = ()) -> EvidenceModelView | None:
    """EVIDENCE_MODEL_PATH's model, else the shipped one (None when this build has no evidence model); a model
    fitted on other analyzers than these (for any of ``timeframes``) is loaded with a loud warning."""
    try:
        model = analysis_api.load_model(path)
    except ModelError as exc:
        raise StartupError(f"{exc}; fix it, or unset EVIDENCE_MODEL_PATH to use the model shipped with the bot") from None
    if model is None:
        log.warning("no evidence model in this build: candidates are gated by the analyzers' raw score")
    else:
        log.info("evidence model loaded", version=model.version, path=str(path) if path else "shipped default")
        stale = analysis_api.stale_timeframes(model, timeframes)
        if stale:
            log.warning("the evidence model was fitted on other analyzers than the ones running: its estimates describe "
                        "other candidates; refit it with the command recorded in the model (python -m backtest evidence "
                        "fit ...)", timeframes=",".join(stale), version=model.version)
    return model


def replay_database_path(config: Config, files: Sequence[Path], now: datetime | None = None) -> Path:
    """A new file ``<SQLITE_PATH's folder>/replays/<first file stem>[+N]-<UTC stamp>.db`` (never an existing one)."""
    stamp = (now or datetime.now(tz=UTC)).strftime("%Y%m%dT%H%M%SZ")
    stem = files[0].stem if files else "replay"
    if len(files) > 1:
        stem += f"+{len(files) - 1}"
    folder = config.sqlite_path.parent / "replays"
    path = folder / f"{stem}-{stamp}.db"
    n = 2
    while path.exists():
        path = folder / f"{stem}-{stamp}-{n}.db"
        n += 1
    return path


class _Intake:
    """The candle sink of the feed and of replay: marks data as flowing (watchdog), then runs the pipeline."""

    def __init__(self, pipeline: Pipeline, activity: ActivityTracker) -> None:
        self.pipeline = pipeline
        self.activity = activity

    async def on_candles(self, candles: Sequence[Candle], source: str) -> None:
        self.activity.touch()
        await self.pipeline.on_candles(candles, source)


class _CacheCandles:
    """Pipeline observer keeping the cache's recent candles current (shared with other processes)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    async def on_candles(self, candles: Sequence[Candle]) -> None:
        await self.cache.push_candles(candles)


def _now_ms() -> int:
    return int(time.time() * 1000)


class App:
    """One running bot; ``await run()`` returns the process exit code."""

    STORE_RETRY_S = 1.0  # first wait when the store cannot answer a start-up read

    def __init__(self, config: Config, options: RunOptions | None = None) -> None:
        self.config = config
        self.options = options or RunOptions()
        self.mode = "replay" if self.options.replay else "live"
        self.started_at_ms = _now_ms()
        self.shutdown = ShutdownSignals(after_uninstall="stopping" if self.options.own_process else "default")
        self.notifier = SdNotifier.from_env()
        self.metrics = BotMetrics()
        self.activity = ActivityTracker(max_silence_s=config.ws_stall_timeout)
        self.lag = LoopLagMonitor(self.metrics)
        self.store: Store | None = None
        self.pipeline: Pipeline | None = None
        self.feed: Any = None
        self.discord: Any = None
        self.cache: Any = None
        self.tracker: Any = None
        self.tp2: Any = None
        self._follow_up_listeners: list[Any] = []
        self.keeper: TrackRecordKeeper | None = None
        self.evidence: EvidenceModelView | None = None
        self.replay_db: Path | None = None  # the replay's own database (None: live, or --replay-into-store)
        self.routes = SignalRoutes.from_config(config)
        self.trading: TradingRunner | None = None
        self.jobs: Any = None  # src.bot.jobs_host.JobsHost (live mode): backtest jobs from Discord
        self.warmed_up = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._closers: list[ShutdownStep] = []
        self._feed_stats_at: tuple[float, Any] | None = None
        self._problems: dict[str, str] = {}  # what keeps the bot from its job now, by component (for /readyz)
        # several instances (issue 16): the role of this instance, the SQLite file lock, the exit code of a leader
        # that lost its lease (3: restart it and it comes back as a follower)
        self.leadership: Leadership | None = None
        self._instance_lock: InstanceLock | None = None
        self._exit_code: int | None = None

    # ------------------------------------------------------------------ run
    async def run(self) -> int:
        self.shutdown.install()
        try:
            return await self._run()
        except StartupError as exc:
            log.error("cannot start", problem=str(exc))
            return 2
        finally:
            self.shutdown.uninstall()
            if self._instance_lock is not None:
                self._instance_lock.release()

    async def _run(self) -> int:
        cfg = self.config
        self._announce()
        files = self._load_replay_files() if self.mode == "replay" else []
        self.evidence = load_evidence_model(cfg.evidence_model_path, cfg.timeframes)
        if self.mode == "live":
            http = await self._start_http()  # first: /healthz must answer while the store is still opening
            if http is not None:
                self._closers.append(ShutdownStep("http server", http.stop, 2.0))
        if self.mode == "live" and cfg.storage_backend == "sqlite":
            self._lock_sqlite()
        self._problems["store"] = f"starting: opening the {cfg.storage_backend} store"
        store = await self._until_stopped(self._open_store())
        if store is None:  # stopped while the store did not answer
            await self._shutdown_sequence()
            return 0
        self.store = store
        del self._problems["store"]
        self.cache = await self._open_cache()
        self.trading = self._build_trading()
        if self.mode == "live":
            from src.bot.jobs_host import JobsHost

            self.jobs = JobsHost(cfg)
            await self.jobs.open()
        sinks = self._build_sinks()
        self.keeper = TrackRecordKeeper(self.store, self.evidence)
        self.pipeline = Pipeline(
            settings=cfg.analysis_settings(),
            timeframes=cfg.timeframes if self.mode == "live" else self._replay_timeframes(files),
            store=self.store,
            sinks=sinks,
            evidence=self.evidence,
            build_from_smaller=self.mode == "replay",
            observers=self._build_observers(),
            on_analysis=self.metrics.observe_analysis,
            on_signal=self._on_signal,
            on_store_error=self.metrics.store_error,
            cache=self.cache,
            # replays judge with the model as loaded, like `backtest signals` on the same file (parity); the live
            # bot folds its own track record in, day by day in candle time (src/bot/track_record.py)
            evidence_source=self.keeper.model_for if self.mode == "live" else None,
        )
        if await self._until_stopped(self._store_read("signal cooldowns", self._seed_pipeline)) is None:
            await self._shutdown_sequence()
            return 0
        self.leadership = self._build_leadership()
        # with a lease, the trader starts when this instance becomes the leader (_promote)
        if self.leadership.lease is None and await self._until_stopped(self._start_trading()) is None:
            await self._shutdown_sequence()
            return 0
        await self.tracker.start()  # grade signals left open by an earlier run
        self._start_background()
        if self.mode == "replay":
            code = await self._run_replay(files)
        else:
            code = await self._run_live()
        await self._shutdown_sequence()
        return code if self._exit_code is None else self._exit_code

    def _announce(self) -> None:
        cfg = self.config
        discord = "discord" if cfg.discord_enabled else ("webhook" if cfg.discord_webhook_url else "console output")
        log.info(
            f"WyEli starting: trading {cfg.trading_words}, {cfg.storage_backend} storage, {discord}",
            mode=self.mode,
            symbols="ALL" if cfg.symbols_all else ",".join(cfg.symbols),
            timeframes=",".join(cfg.timeframes),
            min_confidence=cfg.min_confidence,
            trade_min_rr=cfg.trade_min_rr,
            watch_notes=cfg.watch_notes,
        )
        build = native_loader.current()
        log.info(f"analysis build: {build.describe()}", native=build.native)
        for warning in cfg.warnings:
            log.warning(warning)
        if cfg.trading_mode == "live":
            log.warning("LIVE TRADING WITH REAL MONEY: orders are sent to Binance with your keys. >kill in Discord "
                        "(or stopping the bot) pauses new entries; open positions keep their stops")

    # ------------------------------------------------------------------ components
    async def _open_store(self) -> Store:
        from src.storage.factory import build_store

        if self.mode == "replay" and not self.options.replay_into_store:
            return await self._open_replay_store()
        store = build_store(self.config)
        try:
            await store.open()
        except Exception as exc:
            raise StartupError(f"the {self.config.storage_backend} store cannot be opened: {exc}") from exc
        log.info("store open", backend=store.name)
        return store

    async def _open_replay_store(self) -> Store:
        """The replay's own fresh SQLite database: the live store (and its cooldowns) stay untouched."""
        from src.storage.sqlite_store import SqliteStore

        path = self.options.replay_db or replay_database_path(self.config, self.options.replay)
        if self.options.replay_db is None and path.exists():  # pragma: no cover - replay_database_path avoids it
            raise StartupError(f"replay database {path} exists already")
        store = SqliteStore(path)
        try:
            await store.open()
        except StoreError as exc:
            raise StartupError(f"the replay database {path} cannot be opened: {exc}") from exc
        self.replay_db = path
        print(f"REPLAY database: {path} (its own; the configured {self.config.storage_backend} store is not touched; "
              "--replay-into-store writes there instead)", flush=True)
        log.info("replay database open", path=str(path))
        return store

    async def _open_cache(self) -> Any:
        if self.config.cache_type == "none" or self.replay_db is not None:
            return None  # a replay in its own database must not push its candles/signals into the shared cache
        from src.storage.cache import build_cache

        cache = build_cache(self.config)
        await cache.open()
        return cache

    def _build_sinks(self) -> list[SignalSink]:
        from src.bot.discord.service import build_discord_sinks

        assert self.store is not None
        discord_sinks, self.discord = build_discord_sinks(
            self.config, self.store, self.status_snapshot, self.market_view,
            preview_dir=self.options.discord_preview, live=self.mode == "live", track_records=self._track_records,
            jobs=self.jobs.queue if self.jobs else None, jobs_unavailable=self.jobs.unavailable if self.jobs else "",
        )
        sinks: list[SignalSink] = [KindFilter(ConsoleSink(), self.routes.console), *discord_sinks]
        self._follow_up_listeners = [s for s in discord_sinks if hasattr(s, "follow_up_recorded")]
        if self.cache is not None:
            sinks.append(CacheSink(self.cache))
        if self.trading is not None:
            sinks.extend(self.trading.sinks())
            if self.discord is not None:
                self.discord.attach_trading(self.trading)
        return sinks

    # ------------------------------------------------------------------ several instances (issue 16)
    def _lock_sqlite(self) -> None:
        """One live bot per SQLite file: a second one refuses to start (src/storage/instance_lock.py)."""
        lock = InstanceLock(self.config.sqlite_path)
        try:
            lock.acquire()
        except InstanceLocked as exc:
            raise StartupError(str(exc)) from None
        self._instance_lock = lock

    def _build_leadership(self) -> Leadership:
        """A lease on Postgres in live mode (several instances may run); otherwise a single instance, always leader
        (SQLite: the file lock; Supabase REST: PostgREST cannot hold a lease, run one instance or set DATABASE_URL)."""
        cfg = self.config
        lease = None
        if self.mode == "live" and cfg.storage_backend == "postgres" and cfg.database_url:
            from src.storage.lease import PostgresLease

            renew = cfg.lease_renew_seconds
            lease = PostgresLease(cfg.database_url, holder=cfg.instance_id, ttl_s=cfg.lease_ttl_seconds, margin_s=renew,
                                  op_timeout_s=renew, schema=getattr(getattr(self.store, "primary", self.store),
                                                                     "schema", None))
        leadership = Leadership(lease, renew_every_s=cfg.lease_renew_seconds, on_promote=self._promote,
                                on_demote=self._demote, shard=shards.describe(cfg.shard))
        if self.trading is not None:
            self.trading.gate = leadership.acting
        if lease is not None:  # orders written right before they are sent carry the leader's epoch (the store fences)
            primary: Any = getattr(self.store, "primary", self.store)
            if hasattr(primary, "order_fence"):
                primary.order_fence = leadership.fence
        if self.discord is not None:
            self.discord.fence = leadership.fence
        self._closers.append(ShutdownStep("leader lease", leadership.close, 2.0))
        return leadership

    async def _promote(self, epoch: int | None) -> None:
        """This instance leads: Discord (gateway, outbox, follow-up posts) and, with a lease, the trader."""
        if self.discord is not None:
            await self.discord.start()
        if epoch is not None and self.trading is not None and self.trading.trader is not None:
            try:
                await self._start_trading()
            except StartupError as exc:
                log.error("trading cannot start on the new leader", problem=str(exc))
                self._exit_code = 2
                self.shutdown.request()

    def _demote(self, reason: str) -> None:
        """The lease is lost (or could not be renewed in time): stop acting at once and exit with code 3."""
        self._problems["leader"] = f"stepped down as leader: {reason}"
        if self._exit_code is None:
            self._exit_code = 3
        self.shutdown.request()

    # ------------------------------------------------------------------ trading (issue 13)
    def _build_trading(self) -> TradingRunner:
        try:
            return TradingRunner(self.config, self.store)
        except TradingStartError as exc:
            raise StartupError(str(exc)) from None

    async def _start_trading(self) -> bool:
        assert self.trading is not None
        if self.trading.trader is not None:
            self._closers.insert(0, ShutdownStep("trading", self.trading.close, 3.0))
        try:
            await self.trading.start()
        except TradingStartError as exc:
            await self.trading.close()
            raise StartupError(str(exc)) from None
        return True

    def _build_observers(self) -> list[Any]:
        from src.bot.follow_ups import Tp2Tracker
        from src.bot.outcome_tracker import OutcomeTracker

        assert self.store is not None
        self.tracker = OutcomeTracker(self.store, horizon_candles=self.config.outcome_horizon_candles,
                                      commission=self.config.backtest_commission, on_follow_up=self._follow_up_recorded)
        # follow-ups (issue 14): the TP2 watcher runs after the outcome tracker, on the same candles
        self.tp2 = Tp2Tracker(self.store, self.tracker.params, on_follow_up=self._follow_up_recorded)
        observers: list[Any] = [ClosedCandleCounter(self.metrics), self.tracker, self.tp2]
        if self.trading is not None:
            observers.extend(self.trading.observers())
        if self.cache is not None:
            observers.append(_CacheCandles(self.cache))
        return observers

    def _follow_up_recorded(self, signal: Signal, follow_up: Any) -> None:
        """A follow-up was stored: the TP2 watcher and every Discord-side listener (service, preview) hear of it."""
        if self.tp2 is not None:
            self.tp2.follow_up_recorded(signal, follow_up)
        for listener in self._follow_up_listeners:
            listener.follow_up_recorded(signal, follow_up)

    def _on_signal(self, signal: Signal) -> None:
        self.metrics.signal_emitted(signal.pattern, signal.kind)

    def _track_records(self) -> Sequence[analysis_api.TrackRecordView]:
        return self.keeper.track_records() if self.keeper is not None else ()

    def _start_background(self) -> None:
        cfg = self.config
        if cfg.status_interval_seconds > 0:
            self._spawn(self._status_loop(cfg.status_interval_seconds), "console-status")
        self._spawn(self.lag.run(), "loop-lag")
        if self.mode == "live":
            from src.storage.retention import run_retention

            assert self.store is not None
            self._spawn(run_retention(self.store, cfg.candle_retention_days), "retention")
        if self.jobs is not None:
            self.jobs.start()

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task failed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ replay
    def _load_replay_files(self) -> list[KlineFile]:
        files = []
        for path in self.options.replay:
            try:
                files.append(read_klines_csv(path, self.options.replay_symbol, self.options.replay_timeframe))
            except KlineFileError as exc:
                raise StartupError(str(exc)) from None
        return files

    def _replay_timeframes(self, files: Sequence[KlineFile]) -> tuple[str, ...]:
        """Configured timeframes buildable from (or equal to) the files' intervals."""
        from src.market.aggregator import can_build

        wanted = set(self.config.timeframes)
        usable = {tf for tf in wanted for f in files if f.timeframe == tf or can_build(f.timeframe, tf)}
        if not usable:
            have = ", ".join(sorted({f.timeframe for f in files}))
            raise StartupError(
                f"replay files are {have} candles; none of TIMEFRAMES={','.join(self.config.timeframes)} "
                "equals or can be built from them (set TIMEFRAMES, e.g. TIMEFRAMES=" + have + ")"
            )
        return tuple(sorted(usable, key=tf_mod.sort_key))

    async def _run_replay(self, files: Sequence[KlineFile]) -> int:
        assert self.pipeline is not None
        self.warmed_up.set()
        self.notifier.ready("replaying")
        pipeline = self.pipeline
        fed = await replay_files(files, _Intake(pipeline, self.activity), speed=self.options.speed,
                                 stop=self.shutdown.event, on_progress=self._replay_progress)
        st = pipeline.stats
        store_name = self.store.name if self.store is not None else "?"
        where = str(self.replay_db) if self.replay_db is not None else f"the configured store ({store_name})"
        print(f"REPLAY finished: {fed} candles fed, {st.candles_analysed} analysed, {st.candidates} candidates stored "
              f"({st.trade_calls} trade calls, {st.watch_notes} watch notes, {st.gated} gated) -> {where}", flush=True)
        log.info("replay done", candles=fed, analysed=st.candles_analysed, candidates=st.candidates,
                 trade_calls=st.trade_calls, watch_notes=st.watch_notes, gated=st.gated, database=where,
                 interrupted=self.shutdown.event.is_set())
        return 0

    def _replay_progress(self, fed: int, total: int, last_close_ms: int) -> None:
        """One progress line (replay_files calls it every few seconds): candles, market time, signals and, with
        --discord-preview, the messages written so far."""
        st = self.pipeline.stats if self.pipeline is not None else None
        pct = 100.0 * fed / total if total else 100.0
        line = (f"REPLAY {pct:5.1f} % ({fed:,}/{total:,} candles, up to {ms_to_iso(last_close_ms)[:16]}Z)"
                + (f": {st.trade_calls} trade calls, {st.watch_notes} watch notes" if st is not None else ""))
        for listener in self._follow_up_listeners:
            progress = getattr(listener, "progress", None)
            if progress is not None:
                line += f"; {progress()}"
        print(line, flush=True)

    # ------------------------------------------------------------------ live
    async def _run_live(self) -> int:
        from src.market.feed import BinanceKlineFeed

        assert self.pipeline is not None and self.store is not None
        pipeline, store = self.pipeline, self.store
        self.feed = BinanceKlineFeed.from_config(self.config, _Intake(pipeline, self.activity),
                                                 last_open_time=store.last_open_time,
                                                 on_frame=self.activity.touch)
        self._wire_metrics()
        assert self.leadership is not None
        if self.leadership.lease is None:
            await self.leadership.start_single()
        else:
            self.leadership.start()
        from src.market.feed import FeedFatal

        try:
            streams = await self._until_stopped(self.feed.resolve_streams())
        except FeedFatal as exc:  # HTTP 451: retrying cannot help
            await self.feed.stop()
            raise StartupError(str(exc)) from None
        if streams is None:
            await self.feed.stop()
            return 0
        if await self._until_stopped(self._prime(streams)) is None:  # thousands of streams take a while
            await self.feed.stop()
            return 0
        watchdog = Watchdog(self.notifier, self._healthy)
        watchdog.start()
        feed_task = asyncio.ensure_future(self.feed.run())
        feed_task.set_name("binance-feed")
        ready_task = asyncio.ensure_future(self._announce_ready())
        stop_task = asyncio.ensure_future(self.shutdown.wait())
        done, _ = await asyncio.wait({feed_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if feed_task in done and not feed_task.cancelled() and feed_task.exception() is not None:
            log.error("market feed stopped with an error", error=repr(feed_task.exception()))
            code = 1
        for t in (ready_task, stop_task):
            t.cancel()
        await self.feed.stop()
        feed_task.cancel()
        await asyncio.gather(feed_task, ready_task, stop_task, return_exceptions=True)
        await watchdog.stop()
        return code

    async def _prime(self, streams: Sequence[tuple[str, str]]) -> int:
        """Rebuild every stream's analyzer state from stored history; returns the candles read."""
        assert self.pipeline is not None
        total = 0
        closed_by = self.feed.closed_by_ms() if self.feed is not None else None  # Binance's clock, measured by now
        for symbol, timeframe in streams:
            total += await self._store_read(
                "history for analysis", functools.partial(self.pipeline.prime, symbol, timeframe, self.config.candle_window,
                                                          closed_by_ms=closed_by)
            )
        return total

    async def _seed_pipeline(self) -> bool:
        assert self.pipeline is not None
        await self.pipeline.start()
        return True

    async def _store_read(self, what: str, read: Callable[[], Awaitable[_R]]) -> _R:
        """``read()``, retried while the store is unavailable: a network store down at start gets its
        writes spooled, but these start-up reads need the database. Waits STORE_RETRY_S doubling to 30 s."""
        delay = self.STORE_RETRY_S
        while True:
            try:
                result = await read()
            except StoreUnavailable as exc:
                self._problems["store"] = f"store unavailable at start ({what}): {exc}; retrying"
                log.warning("store unavailable, waiting for it", step=what, error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            except StoreError as exc:  # refused for good (credentials, schema): a restart cannot fix it
                raise StartupError(f"the store refused a start-up read ({what}): {exc}") from None
            self._problems.pop("store", None)
            return result

    async def _until_stopped(self, coro: Awaitable[_R]) -> _R | None:
        """Await ``coro`` unless a shutdown signal comes first (then cancel it and return None)."""
        work = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self.shutdown.event.wait())
        done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if work in done:
            return work.result()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        return None

    async def _announce_ready(self) -> None:
        await self.feed.warmed_up.wait()
        self.warmed_up.set()
        self.notifier.ready("warm-up done, streaming")
        frozen, took = freeze_warm_heap()  # no full garbage collection walks the warmed streams on a candle close
        log.info("warm-up done: streaming live candles", gc_frozen_objects=frozen, gc_freeze_seconds=round(took, 3))

    def _healthy(self) -> bool:
        return self.activity.is_healthy()

    async def _start_http(self) -> Any:
        if not self.options.http or self.config.http_port == 0:
            return None
        from src.bot.http_server import HealthServer, HttpServerError

        server = HealthServer(host=self.config.http_host, port=self.config.http_port, metrics=self.metrics,
                              status=self.status_snapshot, store_ping=self._store_ping,
                              loop_lag=lambda: self.lag.last_lag_s)
        try:
            await server.start()
        except HttpServerError as exc:
            log.error("health/metrics server disabled", problem=str(exc))
            return None
        return server

    async def _store_ping(self) -> bool:
        """False until the store is open (then its own ping)."""
        return self.store is not None and await self.store.ping()

    def _wire_metrics(self) -> None:
        src = self.metrics.sources
        src.frames_received = lambda: self._feed_stats().frames_received
        src.reconnects_by_reason = lambda: dict(self._feed_stats().reconnects_by_reason)
        src.stalls = lambda: self._feed_stats().stalls
        src.gaps_backfilled = lambda: self._feed_stats().gaps_backfilled
        src.candles_backfilled = lambda: self._feed_stats().candles_backfilled
        # malformed frames, closed frames from the future and implausible ones: never stored
        src.frames_rejected = lambda: (self._feed_stats().frames_invalid + self._feed_stats().future_dropped
                                       + self._feed_stats().implausible_dropped)
        src.used_weight_1m = lambda: self._feed_stats().used_weight_1m
        if self.discord is not None:
            src.discord_sent = lambda: self.discord.stats().sent
            src.discord_failed = lambda: self.discord.stats().failed
            src.outbox_pending = lambda: self.discord.stats().pending
        depth = getattr(self.store, "depth", None)
        if depth is not None:
            src.spool_depth = lambda: float(getattr(self.store, "depth", 0))

    # ------------------------------------------------------------------ status
    def _feed_stats(self) -> Any:
        """The feed's stats, rebuilt at most once a second: a /metrics scrape reads eight values from
        them, and building every stream's status takes ~18 ms with 6,400 streams."""
        now = time.monotonic()
        if self._feed_stats_at is None or now - self._feed_stats_at[0] >= 1.0:
            self._feed_stats_at = (now, self.feed.stats())
        return self._feed_stats_at[1]

    def problems(self) -> tuple[str, ...]:
        """What keeps the bot from its job right now, in words: the store opening or down at start (or its
        outage while writes are spooled), Binance unreachable or refusing this location."""
        out = list(self._problems.values())
        outage = getattr(self.store, "outage", None)
        if outage and "store" not in self._problems:
            out.append(f"store unreachable ({outage}); writes are spooled and replayed when it is back")
        if self.feed is not None and (feed_problem := self._feed_stats().problem):
            out.append(feed_problem)
        return tuple(out)

    async def status_snapshot(self) -> StatusSnapshot:
        """The bot's state for ``>status``, the console line, /readyz and metrics; works at every stage of the
        start (before the store or the pipeline exist)."""
        now = _now_ms()
        streams: list[StreamStatus] = []
        connections: tuple[ConnectionStatus, ...] = ()
        if self.feed is not None:
            fs = self._feed_stats()
            streams = list(fs.streams)
            connections = tuple(fs.connections)
        elif self.pipeline is not None:
            for (symbol, timeframe), window in sorted(self.pipeline.aggregator.windows.items()):
                streams.append(StreamStatus(symbol, timeframe, window.last_open_time_ms, None, fresh=True))
        try:
            healthy = await asyncio.wait_for(self._store_ping(), 2.0)
        except Exception:
            healthy = False
        st = self.pipeline.stats if self.pipeline is not None else PipelineStats()
        problems = self.problems()
        cache = "off" if self.cache is None else str(self.cache.status)
        from src.bot.discord.service import discord_status_text

        discord = self.discord.describe() if self.discord is not None else discord_status_text(self.config)
        return StatusSnapshot(
            started_at_ms=self.started_at_ms,
            now_ms=now,
            mode=self.mode,
            warmed_up=self.warmed_up.is_set(),
            streams=tuple(streams),
            connections=connections,
            signals_total=st.signals_emitted,
            trade_calls=st.trade_calls,
            watch_notes=st.watch_notes,
            candidates=st.candidates,
            evidence_model=self.keeper.model.version if self.keeper is not None and self.keeper.model is not None else "",
            signals_by_symbol=tuple(sorted(st.signals_by_symbol.items())),
            last_signal_at=st.last_signal_at,
            store_backend=self.store.name if self.store is not None else self.config.storage_backend,
            store_healthy=healthy,
            spool_depth=int(getattr(self.store, "depth", 0) or 0),
            cache=cache,
            trading=self.trading.status_text() if self.trading is not None else self.config.trading_words,
            discord=discord,
            notes=problems,  # >status shows them
            problems=problems,
            role=self.leadership.role if self.leadership is not None else "single",
            role_text=self.leadership.describe() if self.leadership is not None else "starting",
            shard=shards.describe(self.config.shard),
            epoch=self.leadership.epoch if self.leadership is not None else None,
            lease_age_s=self.leadership.lease_age_s() if self.leadership is not None else None,
            instances=self.leadership.instances_text() if self.leadership is not None else (),
        )

    async def market_view(self, symbol: str, timeframe: str) -> MarketView | None:
        assert self.pipeline is not None
        return await self.pipeline.market_view(symbol, timeframe)

    async def _status_loop(self, every_s: int) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                snap = await self.status_snapshot()
                self.metrics.update_status(snap)
                print(format_status(snap), flush=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("status line failed")

    # ------------------------------------------------------------------ shutdown
    async def _shutdown_sequence(self) -> None:
        self.notifier.stopping()
        log.info("shutting down", reason=self.shutdown.received.name if self.shutdown.received else self.mode + " finished")
        steps: list[ShutdownStep] = []
        if self.pipeline is not None:
            steps.append(ShutdownStep("analysis in flight and sinks", self.pipeline.close, 6.0))
        if self.discord is not None:
            steps.append(ShutdownStep("discord", self.discord.stop, 4.0))
        if self.jobs is not None:
            steps.append(ShutdownStep("backtest jobs", self.jobs.stop, 4.0))
        steps.extend(self._closers)
        steps.append(ShutdownStep("background tasks", self._cancel_tasks, 1.0))
        if self.cache is not None:
            steps.append(ShutdownStep("cache", self.cache.close, 1.0))
        if self.store is not None:
            steps.append(ShutdownStep("store", self.store.close, 3.0))
        results = await run_shutdown(steps, total_timeout_s=10.0)
        failed = [r for r in results if not r.ok]
        log.info("stopped", steps=len(results), failed=[f"{r.name}: {r.error}" for r in failed])

    async def _cancel_tasks(self) -> None:
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)


def run_app(config: Config, options: RunOptions) -> int:
    """Run the bot until it stops; returns the exit code."""
    return asyncio.run(App(config, options).run())
