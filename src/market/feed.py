"""BinanceKlineFeed: closed Binance klines for every (symbol, timeframe), gap-free, each exactly once.

Guarantee to the sink, per (symbol, timeframe): closed candles in strictly ascending open time, never a
duplicate, never a hole that Binance's REST API could fill. How:

- Start: measure Binance's clock, validate SYMBOLS against exchangeInfo (unknown ones are reported and
  not subscribed; ``ALL`` takes every TRADING USDT perpetual; HTTP 451 = Binance refuses this location:
  :class:`FeedFatal`, no retry), then per stream ask ``last_open_time(symbol, tf)`` (the
  store) and fetch from the next candle to now via REST, or the newest WARMUP_CANDLES (500) when
  nothing is stored (source ``"warmup"``, progress logged). ``warmed_up`` is set when every stream
  has done this once. WebSocket connections open at the same time; their closed candles wait in the
  queue and are deduplicated against the warm-up.
- Every (re)connect: each stream of that connection is backfilled from its last delivered candle to
  now (source ``"backfill"``).
- A live closed candle that does not follow the last delivered one (frames lost without a
  disconnect) first triggers a REST backfill of the hole, then is delivered (source ``"live"``).
- Closed candles at or before the last delivered one (duplicates, out-of-order, late frames) are
  dropped and counted. Non-closed frames only refresh the stream's freshness.
- Time is Binance's (:class:`~src.market.exchange_clock.ExchangeClock`, measured before the first
  REST decision and every 10 minutes): a frame marked closed whose close time is not yet past on the
  exchange's clock (a future-dated frame, or the forming interval marked closed) is never delivered
  (``future_dropped``); it cannot make real candles "late". A frame whose event time ``E`` is ahead of
  the clock estimate makes the clock re-measure and the stream resync from REST (a stepped local clock
  must not lose candles). A closed frame whose numbers fail the parser's bounds, or whose prices lie
  outside ``[last close / plausible_jump, last close * plausible_jump]`` (10x), is not delivered either
  (``invalid``/``implausible_dropped``): its stream is resynced from REST, whose copy is the truth.
  Freshness is judged on exchange time and a stream is never fresh on a candle that has not closed.
- A stream silent for ``max(WS_STALL_TIMEOUT, stream_stall_intervals x its interval)`` (3 intervals)
  makes its connection reconnect (counted as a stall); after each such stall the stream's limit
  doubles (at most 32x) until a frame arrives, so an illiquid symbol cannot make its connection
  flap. A whole connection silent for WS_STALL_TIMEOUT is detected by the connection itself.
- Failures never escape: REST unavailable/banned -> the stream is marked for resync and retried with
  capped jittered backoff (5 s to 120 s; after a 418 not before the ban ends), and its live candles
  are held back meanwhile (the resync fetches them); a sink exception -> the batch is not counted
  as delivered and the affected streams are resynced from REST; the queue between the WebSocket
  readers and the delivery loop holds ``queue_capacity`` (10 000) closed candles, and on overflow
  the candle is dropped and its stream marked for resync (REST repairs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from src.analysis import timeframes
from src.analysis.types import Candle
from src.config import shards
from src.market.backoff import Backoff
from src.market.binance_rest import (
    BinanceRestClient,
    BinanceRestError,
    RestBanned,
    RestGeoBlocked,
    RestRequestError,
    RestSettings,
)
from src.market.exchange_clock import ExchangeClock
from src.market.frames import InvalidKline, ParseError, scan_kline, stream_name
from src.market.status import ConnectionStatus, StreamStatus
from src.market.symbols import no_valid_symbol_text, unknown_symbol_text
from src.market.ws import KlineConnection, WsSettings

if TYPE_CHECKING:
    from src.config import Config

log = structlog.get_logger(__name__)

SOURCES = ("warmup", "backfill", "live")


class CandleSink(Protocol):
    """Receives closed candles; ``source`` is ``"warmup"``, ``"backfill"`` or ``"live"``.

    A call holds one stream (warmup/backfill) or several (live batch), ascending per stream. If it
    raises, those candles count as not delivered: the stream is resynced from REST, and the sink decides
    what of that is new to it (the pipeline never takes a candle twice).
    """

    async def on_candles(self, candles: Sequence[Candle], source: str) -> None: ...


LastOpenTime = Callable[[str, str], Awaitable[int | None]]
"""``async (symbol, timeframe) -> open_time_ms of the newest stored candle, or None``."""


@dataclass(frozen=True, slots=True)
class FeedSettings:
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    symbols_all: bool = False
    ws: WsSettings = field(default_factory=WsSettings)
    rest: RestSettings = field(default_factory=RestSettings)
    streams_per_connection: int = 200
    warmup_candles: int = 500
    stream_stall_intervals: float = 3.0
    queue_capacity: int = 10_000
    resync_retry_s: float = 5.0
    resync_retry_cap_s: float = 120.0
    validate_symbols: bool = True
    live_batch_max: int = 1000
    exchange_clock: bool = True  # measure Binance's clock (False: trust the local clock, e.g. a fake without /time)
    close_tolerance_ms: int = 1000  # a closed frame may close at most this far (plus the clock's error) ahead
    plausible_jump: float = 10.0  # a live candle's prices within [last close / 10, last close * 10]
    shard: tuple[int, int] = (0, 1)  # SHARD=i/N: only the symbols of this shard (src/config/shards.py)

    @classmethod
    def from_config(cls, config: Config) -> FeedSettings:
        return cls(
            symbols=config.symbols,
            timeframes=config.timeframes,
            symbols_all=config.symbols_all,
            shard=config.shard,
            ws=WsSettings(
                base_url=config.binance_ws_url,
                reconnect_delay_s=config.ws_reconnect_delay,
                max_reconnect_delay_s=config.ws_max_reconnect_delay,
                stall_timeout_s=config.ws_stall_timeout,
                max_connection_age_s=config.ws_max_connection_age,
            ),
            rest=RestSettings(base_url=config.binance_rest_url),
            streams_per_connection=config.ws_streams_per_connection,
            warmup_candles=config.warmup_candles,
        )


@dataclass(frozen=True, slots=True)
class FeedStats:
    """A consistent snapshot for status, ``>status`` and metrics."""

    symbols: tuple[str, ...]
    unknown_symbols: tuple[str, ...]
    warmed_up: bool
    streams: tuple[StreamStatus, ...]
    connections: tuple[ConnectionStatus, ...]
    frames_received: int
    frames_invalid: int
    frames_unexpected: int
    closed_candles: int
    duplicates_dropped: int
    late_dropped: int
    held_for_resync: int
    queue_overflows: int
    reconnects_by_reason: Mapping[str, int]
    stalls: int
    gaps_backfilled: int
    candles_backfilled: int
    candles_delivered: Mapping[str, int]
    sink_errors: int
    used_weight_1m: int
    rest_429: int
    rest_418: int
    rest_errors: int
    future_dropped: int = 0
    implausible_dropped: int = 0
    clock_measured: bool = False
    clock_offset_ms: int = 0
    problem: str | None = None  # why the feed cannot deliver right now (Binance unreachable, 451, ...), else None


class _SinkFailed(Exception):
    pass


class FeedFatal(Exception):
    """A condition retrying cannot fix (HTTP 451: Binance serves no API here); the message tells the operator."""


class _Stream:
    __slots__ = (
        "backoff", "candles_backfilled", "conn", "gaps_backfilled", "initial_done", "interval_ms",
        "last_close", "last_delivered", "last_frame_at_ms", "last_frame_mono", "name", "needs_resync", "reconnects",
        "resync_reason", "retry_at", "stall_after_s", "stall_limit_s", "stalls", "symbol", "timeframe",
    )

    def __init__(self, symbol: str, timeframe: str, stall_after_s: float, backoff: Backoff) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.name = stream_name(symbol, timeframe)
        self.interval_ms = timeframes.interval_ms(timeframe)
        self.stall_after_s = stall_after_s
        self.stall_limit_s = stall_after_s  # grows after stalls, back to stall_after_s on the next frame
        self.backoff = backoff
        self.conn: KlineConnection | None = None
        self.last_delivered: int | None = None
        self.last_close: float | None = None  # close of the last delivered candle (plausibility check)
        self.last_frame_at_ms: int | None = None
        self.last_frame_mono = 0.0
        self.needs_resync = True
        self.resync_reason = "warmup"
        self.initial_done = False
        self.retry_at = 0.0
        self.reconnects = 0
        self.gaps_backfilled = 0
        self.candles_backfilled = 0
        self.stalls = 0

    def mark_resync(self, reason: str) -> None:
        if not self.needs_resync:
            self.needs_resync = True
            self.resync_reason = reason
            self.retry_at = 0.0


class BinanceKlineFeed:
    """Orchestrates symbol validation, REST warm-up/backfill and the WebSocket shards; see module doc."""

    def __init__(
        self,
        settings: FeedSettings,
        sink: CandleSink,
        last_open_time: LastOpenTime,
        *,
        rest: BinanceRestClient | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] | None = None,
        on_frame: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._sink = sink
        self._on_frame = on_frame
        self._last_open_time = last_open_time
        self._own_rest = rest is None
        self._clock = clock
        # Binance's clock decides what is closed; it is measured through the REST client it also serves
        self.exchange_clock = ExchangeClock(self._server_time_ms, local_clock=clock, monotonic=monotonic, sleep=sleep)
        self._rest = rest or BinanceRestClient(settings.rest, clock=self.exchange_clock.now_s, monotonic=monotonic,
                                               sleep=sleep, rng=rng)
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng
        self.warmed_up = asyncio.Event()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._connections: list[KlineConnection] = []
        self._pending: deque[Candle] = deque()
        self._wake = asyncio.Event()
        self._symbols: tuple[str, ...] = ()
        self._unknown: tuple[str, ...] = ()
        self._inner: asyncio.Task[None] | None = None
        self._finished = asyncio.Event()
        self._stopping = False
        # totals
        self._frames = 0
        self._invalid = 0
        self._unexpected = 0
        self._closed = 0
        self._dups = 0
        self._late = 0
        self._held = 0
        self._overflows = 0
        self._reasons: Counter[str] = Counter()
        self._stalls = 0
        self._gaps = 0
        self._backfilled = 0
        self._delivered: Counter[str] = Counter()
        self._sink_errors = 0
        self._future = 0
        self._implausible = 0
        self._initial_left = 0
        self._resolved: tuple[str, ...] | None = None
        self._rest_problem: str | None = None  # the last REST failure, cleared by the next success
        self._use_exchange_clock = settings.exchange_clock

    @classmethod
    def from_config(
        cls,
        config: Config,
        sink: CandleSink,
        *,
        last_open_time: LastOpenTime,
        on_frame: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> BinanceKlineFeed:
        """The feed for the app: settings from :class:`Config`; ``on_frame`` is called on every frame."""
        return cls(FeedSettings.from_config(config), sink, last_open_time, clock=clock, on_frame=on_frame)

    # ------------------------------------------------------------------ public API
    async def resolve_streams(self) -> list[tuple[str, str]]:
        """Validate the symbols (retrying while Binance REST is unavailable) and return the
        (symbol, timeframe) streams :meth:`run` will serve. Optional: run() resolves them itself."""
        if self._resolved is None:
            self._resolved = await self._resolve_symbols()
        return [(sym, tf) for sym in self._resolved for tf in self.settings.timeframes]
    async def run(self) -> None:
        """Run until cancelled or :meth:`stop`; never raises for Binance or sink trouble."""
        self._inner = asyncio.create_task(self._run_inner(), name="binance-feed")
        try:
            await self._inner
        except asyncio.CancelledError:
            if not self._inner.done():
                self._inner.cancel()
            with contextlib.suppress(BaseException):
                await self._inner
            if not self._stopping:
                raise
        finally:
            try:
                if self._own_rest:
                    await self._rest.close()
            finally:
                self._finished.set()

    async def stop(self) -> None:
        """Close every connection and return once :meth:`run` has finished (run() then returns normally)."""
        self._stopping = True
        if self._inner is None:  # never ran (e.g. stopped while resolving symbols): close the REST session here
            if self._own_rest:
                await self._rest.close()
            return
        if not self._inner.done():
            self._inner.cancel()
        await self._finished.wait()

    def now_ms(self) -> int:
        """Exchange time (the local clock until Binance's has been measured)."""
        return self.exchange_clock.now_ms()

    def closed_by_ms(self) -> int:
        """Every kline whose close time is before this instant has closed (exchange time plus the tolerance
        for the clock's error); a stored candle closing later cannot be real."""
        return self.now_ms() + self._tolerance_ms()

    def _fresh(self, st: _Stream, now_ms: int) -> bool:
        """The stream's last candle closed at most two intervals ago, and has closed (a candle from the
        future never makes a stream look fresh)."""
        if st.last_delivered is None:
            return False
        closed_at = st.last_delivered + st.interval_ms
        return closed_at <= now_ms + self._tolerance_ms() and now_ms - closed_at <= 2 * st.interval_ms

    def problem(self) -> str | None:
        """Why nothing flows right now, in words for /readyz and the status line; None when nothing is wrong."""
        if self._rest_problem is not None:
            return self._rest_problem
        last_error = self._rest.stats().last_error  # a request still retrying says so from its first failure
        if last_error is not None:
            return f"Binance REST unreachable ({last_error}); retrying"
        down = [c for c in self._connections if not c.connected and c.last_error is not None]
        if down and len(down) == len(self._connections):
            return f"Binance WebSocket unreachable: {down[0].last_error}"
        return None

    def stats(self) -> FeedStats:
        now_ms = self.now_ms()
        rest = self._rest.stats()
        streams = tuple(
            StreamStatus(
                symbol=st.symbol,
                timeframe=st.timeframe,
                last_candle_ms=st.last_delivered,
                last_frame_at_ms=st.last_frame_at_ms,
                fresh=self._fresh(st, now_ms),
                reconnects=st.reconnects,
                gaps_backfilled=st.gaps_backfilled,
                candles_backfilled=st.candles_backfilled,
                stalls=st.stalls,
            )
            for st in self._streams.values()
        )
        conns = tuple(
            ConnectionStatus(
                name=c.name,
                streams=len(c.streams),
                connected=c.connected,
                connected_since_ms=c.connected_since_ms,
                reconnects=c.reconnects,
                last_message_at_ms=c.last_message_at_ms,
            )
            for c in self._connections
        )
        return FeedStats(
            symbols=self._symbols,
            unknown_symbols=self._unknown,
            warmed_up=self.warmed_up.is_set(),
            streams=streams,
            connections=conns,
            frames_received=self._frames,
            frames_invalid=self._invalid,
            frames_unexpected=self._unexpected,
            closed_candles=self._closed,
            duplicates_dropped=self._dups,
            late_dropped=self._late,
            held_for_resync=self._held,
            queue_overflows=self._overflows,
            reconnects_by_reason=dict(self._reasons),
            stalls=self._stalls,
            gaps_backfilled=self._gaps,
            candles_backfilled=self._backfilled,
            candles_delivered={s: self._delivered[s] for s in SOURCES},
            sink_errors=self._sink_errors,
            used_weight_1m=rest.used_weight_1m,
            rest_429=rest.rest_429,
            rest_418=rest.rest_418,
            rest_errors=rest.errors,
            future_dropped=self._future,
            implausible_dropped=self._implausible,
            clock_measured=self.exchange_clock.measured,
            clock_offset_ms=self.exchange_clock.offset_ms,
            problem=self.problem(),
        )

    # ------------------------------------------------------------------ ConnectionHandler
    def on_message(self, conn: KlineConnection, raw: str | bytes) -> None:
        self._frames += 1
        if self._on_frame is not None:
            self._on_frame()
        try:
            symbol, timeframe, candle, event_ms = scan_kline(raw)
        except ParseError as exc:
            self._invalid += 1
            if self._invalid <= 10 or self._invalid % 1000 == 0:
                log.warning("invalid frame skipped", connection=conn.name, error=str(exc), invalid_total=self._invalid)
            if isinstance(exc, InvalidKline):  # a closed kline with impossible numbers: REST has the real one
                bad = self._streams.get((exc.symbol, exc.interval))
                if bad is not None and bad.conn is conn and bad.initial_done:
                    bad.mark_resync("invalid_frame")
                    self._wake.set()
            return
        st = self._streams.get((symbol, timeframe))
        if st is None or st.conn is not conn:
            self._unexpected += 1
            return
        st.last_frame_mono = self._monotonic()
        st.last_frame_at_ms = self.now_ms()
        st.stall_limit_s = st.stall_after_s
        clock_behind = event_ms is not None and self._use_exchange_clock and self.exchange_clock.observe_event(event_ms)
        if candle is None:  # a non-closed update only proves the stream is alive
            return
        self._closed += 1
        if self._closes_in_future(candle):
            self._drop_future(candle, st, event_ms, clock_behind)
            return
        if len(self._pending) >= self.settings.queue_capacity:
            self._overflows += 1
            st.mark_resync("queue_overflow")
        else:
            self._pending.append(candle)
        self._wake.set()

    def _tolerance_ms(self) -> int:
        return self.settings.close_tolerance_ms + self.exchange_clock.uncertainty_ms

    def _closes_in_future(self, candle: Candle) -> bool:
        """True when ``candle`` claims to be closed but its interval has not ended on the exchange's clock."""
        return candle.close_time_ms >= self.now_ms() + self._tolerance_ms()

    def _drop_future(self, candle: Candle, st: _Stream, event_ms: int | None, clock_behind: bool) -> None:
        self._future += 1
        if self._future <= 10 or self._future % 1000 == 0:
            log.warning("closed frame for an interval that has not ended on Binance's clock; not stored",
                        stream=st.name, open_ms=candle.open_time_ms, close_ms=candle.close_time_ms,
                        exchange_now_ms=self.now_ms(), event_ms=event_ms, future_total=self._future)
        if clock_behind and st.initial_done:
            # the frame's own event time says our clock is behind: once it is re-measured, REST confirms the candle
            st.mark_resync("clock")
            st.retry_at = max(st.retry_at, self.exchange_clock.remeasure_at())
            self._wake.set()

    def _implausible_reason(self, candle: Candle, st: _Stream) -> str | None:
        """Why ``candle`` cannot follow the stream's last close (a 10x jump within one interval), else None."""
        last = st.last_close
        jump = self.settings.plausible_jump
        if last is None or (last / jump <= candle.low and candle.high <= last * jump):
            return None
        return f"prices low={candle.low:.6g} high={candle.high:.6g} after a close of {last:.6g}"

    def on_connected(self, conn: KlineConnection, reconnect: bool) -> None:
        now = self._monotonic()
        for st in self._conn_streams(conn):
            st.last_frame_mono = now
            # The first connect needs no resync: the warm-up runs now, and a candle missed between
            # the two is caught as a hole by the next live candle.
            if reconnect:
                st.reconnects += 1
                if st.initial_done:
                    st.mark_resync("reconnect")
        self._wake.set()

    def on_disconnected(self, conn: KlineConnection, reason: str) -> None:
        self._reasons[reason] += 1
        if reason == "stall":
            self._stalls += 1
            for st in self._conn_streams(conn):
                st.stalls += 1

    # ------------------------------------------------------------------ exchange time
    async def _server_time_ms(self) -> int:
        return await self._rest.server_time_ms()

    async def _ensure_clock(self) -> None:
        """Measure Binance's clock before the first decision that depends on it, and again when frames said it
        is stale (raises BinanceRestError while REST is unavailable). An endpoint without ``/fapi/v1/time``
        (a mirror) leaves the local clock."""
        if not self._use_exchange_clock:
            return
        try:
            if self.exchange_clock.measured:
                await self.exchange_clock.refresh_if_stale()
                return
            await self.exchange_clock.ensure()
        except RestRequestError as exc:
            self._use_exchange_clock = False
            log.error("cannot measure Binance's clock (GET /fapi/v1/time refused); deciding what is closed on the "
                      "local clock: keep it in sync (NTP)", error=str(exc))

    # ------------------------------------------------------------------ orchestration
    def _conn_streams(self, conn: KlineConnection) -> list[_Stream]:
        return [st for st in self._streams.values() if st.conn is conn]

    async def _run_inner(self) -> None:
        if self._resolved is None:
            self._resolved = await self._resolve_symbols()
        symbols = self._resolved
        if not symbols:  # validation off and nothing configured
            raise FeedFatal("no symbol to stream: SYMBOLS is empty")
        self._build(symbols)
        async with asyncio.TaskGroup() as tg:
            for conn in self._connections:
                tg.create_task(conn.run(), name=f"binance-{conn.name}")
            tg.create_task(self._deliver_loop(), name="binance-feed-deliver")
            tg.create_task(self._watchdog(), name="binance-feed-watchdog")
            if self.settings.exchange_clock:
                tg.create_task(self.exchange_clock.run(), name="binance-clock")

    async def _resolve_symbols(self) -> tuple[str, ...]:
        s = self.settings
        if not s.validate_symbols:
            self._symbols = shards.select(s.symbols, s.shard)
            return self._symbols
        backoff = Backoff(s.resync_retry_s, s.resync_retry_cap_s, self._rng)
        while True:
            try:
                await self._ensure_clock()
                selection = await self._rest.select_symbols(s.symbols, s.symbols_all)
                break
            except RestGeoBlocked as exc:
                self._rest_problem = str(exc)
                log.error("Binance refuses this location (HTTP 451); the bot cannot run here", problem=str(exc))
                raise FeedFatal(str(exc)) from None
            except BinanceRestError as exc:
                delay = backoff.next_delay()
                if isinstance(exc, RestBanned):
                    delay = max(delay, exc.until_monotonic - self._monotonic())
                self._rest_problem = f"Binance REST unreachable ({exc}); retrying"
                log.warning("cannot validate symbols yet (Binance REST unavailable), retrying",
                            error=str(exc), retry_in_s=round(delay, 1))
                await self._sleep(delay)
        self._rest_problem = None
        self._symbols, self._unknown = selection.symbols, selection.unknown
        if s.shard[1] > 1:  # SHARD=i/N: this instance streams its share; the other shards stream the rest
            self._symbols = shards.select(selection.symbols, s.shard)
            log.info("symbol shard", shard=shards.describe(s.shard), symbols=len(self._symbols),
                     of=len(selection.symbols))
        if not selection.symbols:
            problem = no_valid_symbol_text(selection.unknown, selection.tradable)
            log.error("no valid symbol to stream; the bot cannot run with this SYMBOLS", problem=problem)
            raise FeedFatal(problem)
        if selection.unknown:
            log.warning("symbols not traded as USDT perpetuals on Binance are NOT subscribed",
                        unknown=[unknown_symbol_text(u, selection.tradable) for u in selection.unknown])
        log.info("symbols validated", count=len(selection.symbols), all=s.symbols_all)
        return self._symbols

    def _build(self, symbols: Sequence[str]) -> None:
        s = self.settings
        for sym in symbols:
            for tf in s.timeframes:
                stall = max(s.ws.stall_timeout_s, s.stream_stall_intervals * timeframes.interval_ms(tf) / 1000)
                backoff = Backoff(s.resync_retry_s, s.resync_retry_cap_s, self._rng)
                self._streams[(sym, tf)] = _Stream(sym, tf, stall, backoff)
        streams = list(self._streams.values())
        per = max(1, s.streams_per_connection)
        for i in range(0, len(streams), per):
            chunk = streams[i : i + per]
            conn = KlineConnection(f"ws-{i // per}", [st.name for st in chunk], s.ws, self,
                                   monotonic=self._monotonic, clock=self._clock, sleep=self._sleep, rng=self._rng)
            for st in chunk:
                st.conn = conn
            self._connections.append(conn)
        self._initial_left = len(streams)
        if not streams:
            self.warmed_up.set()
        log.info("market feed starting", streams=len(streams), connections=len(self._connections),
                 warmup_candles=s.warmup_candles)

    async def _watchdog(self) -> None:
        """Per-stream silence -> reconnect its connection (the connection watches whole-connection silence)."""
        while True:
            await self._sleep(self.settings.ws.watchdog_interval_s)
            now = self._monotonic()
            for st in self._streams.values():
                conn = st.conn
                if conn is None or not conn.connected or now - st.last_frame_mono <= st.stall_limit_s:
                    continue
                st.stalls += 1
                self._stalls += 1
                st.last_frame_mono = now
                log.warning("stream stalled: no frame", stream=st.name, connection=conn.name,
                            silent_s=round(st.stall_limit_s, 1))
                st.stall_limit_s = min(st.stall_limit_s * 2, st.stall_after_s * 32)
                conn.request_reconnect("stream_stall")

    async def _deliver_loop(self) -> None:
        while True:
            self._wake.clear()
            now = self._monotonic()
            due = [st for st in self._streams.values() if st.needs_resync and st.retry_at <= now]
            for st in due:
                await self._resync(st)
            if self._pending:
                await self._drain_live()
                continue
            if due:
                continue
            waits = [st.retry_at - now for st in self._streams.values() if st.needs_resync]
            timeout = max(0.0, min(waits)) if waits else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _drain_live(self) -> None:
        """Deliver up to ``live_batch_max`` queued live candles in one sink call; a hole in a stream
        flushes the batch so far, is backfilled from REST, and then the candle joins the next batch."""
        batch: list[Candle] = []
        before: dict[_Stream, tuple[int | None, float | None]] = {}
        while self._pending and len(batch) < self.settings.live_batch_max:
            candle = self._pending.popleft()
            st = self._streams[(candle.symbol, candle.timeframe)]
            if st.needs_resync:
                self._held += 1  # the stream's resync will fetch this candle from REST
                continue
            last = st.last_delivered
            t = candle.open_time_ms
            if last is not None and t <= last:
                if t == last:
                    self._dups += 1
                else:
                    self._late += 1
                continue
            if self._closes_in_future(candle):  # queued before Binance's clock was measured
                self._drop_future(candle, st, None, False)
                continue
            implausible = self._implausible_reason(candle, st)
            if implausible is not None:
                self._implausible += 1
                log.warning("implausible closed frame not stored; fetching the candle from Binance REST instead",
                            stream=st.name, open_ms=t, problem=implausible, implausible_total=self._implausible)
                st.mark_resync("implausible")
                continue
            if last is not None and t != timeframes.next_open(st.timeframe, last):
                await self._flush(batch, before)
                batch, before = [], {}
                if st.needs_resync:  # the flush failed and rolled this stream back: its resync repairs it
                    self._held += 1
                    continue
                if not await self._fetch(st, timeframes.next_open(st.timeframe, last), t - 1, "backfill"):
                    st.needs_resync, st.resync_reason = True, "gap"  # keeps the retry time _fetch scheduled
                    self._held += 1
                    continue
                if st.last_delivered is not None and st.last_delivered >= t:
                    continue
            if st not in before:
                before[st] = (st.last_delivered, st.last_close)
            st.last_delivered = t
            st.last_close = candle.close
            batch.append(candle)
        await self._flush(batch, before)

    async def _flush(self, batch: list[Candle], before: dict[_Stream, tuple[int | None, float | None]]) -> None:
        if not batch:
            return
        try:
            await self._emit(batch, "live")
        except _SinkFailed:
            for st, (prev, prev_close) in before.items():
                st.last_delivered, st.last_close = prev, prev_close
                st.mark_resync("sink_error")

    async def _emit(self, candles: Sequence[Candle], source: str) -> None:
        try:
            await self._sink.on_candles(candles, source)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._sink_errors += 1
            log.error("candle sink failed; resyncing the stream(s) from Binance REST", source=source,
                      candles=len(candles), error=f"{type(exc).__name__}: {exc}")
            raise _SinkFailed from exc
        self._delivered[source] += len(candles)

    async def _fetch(self, st: _Stream, start_ms: int, end_ms: int | None, source: str) -> bool:
        """REST candles ``start..end`` (end None = now) -> sink, page by page. False on any failure."""
        count = 0
        try:
            await self._ensure_clock()
            now_ms = self.now_ms()
            async for page in self._rest.iter_klines(st.symbol, st.timeframe, start_ms, end_ms, now_ms=now_ms):
                page = [c for c in page if st.last_delivered is None or c.open_time_ms > st.last_delivered]
                if not page:
                    continue
                await self._emit(page, source)
                st.last_delivered = page[-1].open_time_ms
                st.last_close = page[-1].close
                count += len(page)
                if source == "backfill":
                    st.candles_backfilled += len(page)
                    self._backfilled += len(page)
        except RestRequestError as exc:  # permanent (e.g. symbol delisted): retrying cannot help
            log.error("Binance REST rejected the kline request; continuing with live candles only",
                      stream=st.name, error=str(exc))
            return True
        except (BinanceRestError, _SinkFailed) as exc:
            self._schedule_retry(st, exc)
            return False
        self._rest_problem = None
        if count and source == "backfill":
            st.gaps_backfilled += 1
            self._gaps += 1
            log.info("backfilled", stream=st.name, candles=count)
        if end_ms is not None and (st.last_delivered is None or st.last_delivered < end_ms - st.interval_ms + 1):
            log.warning("Binance REST has no klines for part of a hole; delivering after it", stream=st.name,
                        from_ms=start_ms, to_ms=end_ms, last_ms=st.last_delivered)
        return True

    def _schedule_retry(self, st: _Stream, exc: Exception) -> None:
        if isinstance(exc, BinanceRestError):
            self._rest_problem = f"Binance REST unavailable ({exc}); retrying"
        delay = st.backoff.next_delay()
        if isinstance(exc, RestBanned):
            delay = max(delay, exc.until_monotonic - self._monotonic())
        st.retry_at = self._monotonic() + delay
        log.warning("stream sync failed, will retry", stream=st.name, error=str(exc), retry_in_s=round(delay, 1))

    async def _resync(self, st: _Stream) -> None:
        """Initial warm-up or post-reconnect backfill of one stream up to now."""
        initial = not st.initial_done
        st.needs_resync = False  # set again by anything that happens while we fetch
        ok: bool
        try:
            if st.last_delivered is None:
                await self._ensure_clock()
                stored = await self._last_open_time(st.symbol, st.timeframe)
                if stored is not None and timeframes.next_open(st.timeframe, stored) > self.now_ms() + self._tolerance_ms():
                    log.error("the store's newest candle has not closed yet on Binance's clock; ignoring it (the "
                              "bot drops such candles at start)", stream=st.name, stored_open_ms=stored,
                              exchange_now_ms=self.now_ms())
                    stored = None
                if stored is not None:
                    st.last_delivered = stored
            if st.last_delivered is None:
                ok = await self._warmup_newest(st)
            else:
                ok = await self._fetch(st, timeframes.next_open(st.timeframe, st.last_delivered), None,
                                       "warmup" if initial else "backfill")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store's last_open_time failed (StoreUnavailable, ...)
            self._schedule_retry(st, exc)
            ok = False
        if not ok:
            st.needs_resync = True
            return
        st.backoff.reset()
        if initial:
            st.initial_done = True
            self._initial_left -= 1
            total = len(self._streams)
            done = total - self._initial_left
            if self._initial_left == 0 or done % max(1, total // 20) == 0:
                log.info("warm-up progress", streams_done=done, streams_total=total,
                         candles=self._delivered["warmup"])
            if self._initial_left == 0:
                self.warmed_up.set()
                log.info("warm-up complete", streams=total, candles=self._delivered["warmup"])

    async def _warmup_newest(self, st: _Stream) -> bool:
        n = self.settings.warmup_candles
        if n <= 0:
            return True
        try:
            await self._ensure_clock()
            candles = await self._rest.latest_klines(st.symbol, st.timeframe, n, now_ms=self.now_ms())
            if candles:
                await self._emit(candles, "warmup")
                st.last_delivered = candles[-1].open_time_ms
                st.last_close = candles[-1].close
        except RestRequestError as exc:
            log.error("Binance REST rejected the warm-up request; continuing with live candles only",
                      stream=st.name, error=str(exc))
        except (BinanceRestError, _SinkFailed) as exc:
            self._schedule_retry(st, exc)
            return False
        self._rest_problem = None
        return True
