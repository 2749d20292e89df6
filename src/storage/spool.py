"""The outage spool: a Store wrapper that keeps the bot writing while a network store is down (SPEC 6, 12).

Rules:
- Writes (candles, signals, analysis commits, deliveries, outcomes, stream quality, follow-ups and their
  deliveries, trading records) go to the primary store. When it
  raises :class:`StoreUnavailable`, does not answer within ``write_timeout`` (5 s), or could not be
  opened (within ``open_timeout``, 20 s: a black-holed network must not hold up the start), the write
  is appended to a local SQLite
  spool file instead (``synchronous=FULL``: during an outage it is the only copy) and the caller
  carries on.
- While anything is spooled, every new write is appended behind it, so the primary receives all
  writes in their original order. A background flusher replays the spool oldest first, merging
  runs of consecutive candle writes into batches of up to :data:`REPLAY_CANDLE_BATCH`; it retries
  with exponential backoff (``retry_initial`` doubling up to ``retry_max`` seconds).
- An entry the primary refuses permanently (:class:`StoreError` that is not StoreUnavailable, or an
  undecodable payload) is moved to the ``dead_letters`` table of the spool file, logged and counted;
  it never blocks the entries behind it and is never silently dropped.
- Reads go to the primary only; when it is down they raise StoreUnavailable (never a fake empty
  result). Until the spool is drained, reads may not yet show the spooled writes.
- ``save_signal`` answers True for a spooled signal (the primary keeps its first row on replay).
- A leader's fenced delivery rows (they name a lease epoch and are not 'sent', see ``base.fenced``) are never
  spooled: the fence can only be checked by the primary, so they go to it directly or raise StoreUnavailable
  (also while older writes are still spooled, which must land first); the outbox retries them later.
- The spool survives restarts: ``open()`` counts what is left and replays it before new writes.
- ``depth`` (pending spooled writes) and the counters feed ``>status`` and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog

from src.analysis.types import Candle, Signal, SignalKind
from src.storage.base import (
    TRADE_CALLS_ONLY,
    Delivery,
    FollowUp,
    FollowUpDelivery,
    FollowUpEvent,
    GateSeed,
    HistoryOutcome,
    LiveTrack,
    Mute,
    PendingFollowUp,
    SignalOutcome,
    Store,
    StoreError,
    StoreUnavailable,
    StreamQuality,
    Subscription,
    fenced,
)
from src.storage.spool_trading import TRADING_OPS, SpoolTradingMixin
from src.storage.sqlite_thread import SqliteThread, transaction

log = structlog.get_logger(__name__)

T = TypeVar("T")

REPLAY_READ_BATCH = 500  # spool rows read per round trip to the spool file
REPLAY_CANDLE_BATCH = 5000  # candles merged into one upsert on replay

_SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    op         TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    spooled_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq        INTEGER PRIMARY KEY,
    op         TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    spooled_at INTEGER NOT NULL,
    failed_at  INTEGER NOT NULL,
    error      TEXT    NOT NULL
);
"""


def _init_spool(conn: sqlite3.Connection) -> None:
    conn.executescript(_SPOOL_SCHEMA)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------- payload codecs
def _candle_list(candles: Sequence[Candle]) -> list[list[Any]]:
    return [
        [c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close, c.volume,
         c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume]
        for c in candles
    ]


def _candles_from(rows: list[list[Any]]) -> list[Candle]:
    return [
        Candle(symbol=str(r[0]), timeframe=str(r[1]), open_time_ms=int(r[2]), close_time_ms=int(r[3]),
               open=float(r[4]), high=float(r[5]), low=float(r[6]), close=float(r[7]), volume=float(r[8]),
               quote_volume=float(r[9]), trades=int(r[10]), taker_buy_volume=float(r[11]),
               taker_buy_quote_volume=float(r[12]))
        for r in rows
    ]


class _Entry:
    __slots__ = ("op", "payload", "seq")

    def __init__(self, seq: int, op: str, payload: bytes) -> None:
        self.seq = seq
        self.op = op
        self.payload = payload


class SpoolStore(SpoolTradingMixin):
    """Wrap ``primary`` (a network Store) with a durable local spool at ``path``; trading records go the same
    way (:class:`~src.storage.spool_trading.SpoolTradingMixin`)."""

    def __init__(
        self,
        primary: Store,
        path: str | Path,
        *,
        retry_initial: float = 1.0,
        retry_max: float = 30.0,
        close_flush_timeout: float = 2.0,
        write_timeout: float = 5.0,
        replay_timeout: float = 30.0,
        open_timeout: float = 20.0,
        autoflush: bool = True,
    ) -> None:
        self.primary = primary
        self.path = Path(path)
        self.name = primary.name
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.close_flush_timeout = close_flush_timeout
        self.write_timeout = write_timeout
        self.replay_timeout = replay_timeout  # one replayed batch (up to 5,000 candles) may take longer
        self.open_timeout = open_timeout  # connect + migrations; Postgres gives up on its own after 10 s
        self.autoflush = autoflush  # False: no background flusher, replay only through flush() (tools, tests)
        self.spooled_total = 0
        self.replayed_total = 0
        self.dead_letter_total = 0
        self._spool = SqliteThread(self.path, label="spool", synchronous="FULL")
        self._depth = 0
        self._primary_opened = False
        self._primary_up = True
        self._down_since: float | None = None
        self._outage: str | None = None
        self._write_lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ status
    @property
    def depth(self) -> int:
        """Spooled writes not yet replayed to the primary."""
        return self._depth

    @property
    def primary_up(self) -> bool:
        return self._primary_up

    @property
    def outage(self) -> str | None:
        """Why the primary is down (the error that started the outage), None while it is up."""
        return None if self._primary_up else self._outage

    @property
    def rejected_candles(self) -> int:
        """Candles the primary refused one by one (invalid or unstorable), for the store-error metric."""
        return int(getattr(self.primary, "rejected_candles", 0))

    async def wait_drained(self) -> None:
        """Return once nothing is spooled and the primary has taken every write (e.g. before a clean stop)."""
        await self._drained.wait()

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Open the spool file and the primary (a primary that is down is retried in the background)."""
        if self._spool.is_open:
            return
        self._closing = False
        await self._spool.start(_init_spool)
        self._depth = await self._spool.run(lambda c: int(c.execute("SELECT COUNT(*) FROM spool").fetchone()[0]),
                                            "spool count")
        await self._open_primary()
        if self._depth == 0 and self._primary_opened:
            self._drained.set()
        if self._depth:
            log.warning("spool_backlog_found", path=str(self.path), pending=self._depth, store=self.name)
            if self._primary_up:
                with contextlib.suppress(StoreUnavailable):
                    await self.flush()
        if self.autoflush:
            self._flusher = asyncio.create_task(self._flush_loop(), name="store-spool-flusher")
            if self._depth:
                self._wake.set()

    async def _open_primary(self) -> None:
        if self._primary_opened:
            return
        try:
            await asyncio.wait_for(self.primary.open(), timeout=self.open_timeout)
        except StoreUnavailable as exc:
            self._mark_down(exc)
            return
        except TimeoutError:
            self._mark_down(StoreUnavailable(f"{self.name} did not open within {self.open_timeout:g} s"))
            return
        self._primary_opened = True

    async def close(self) -> None:
        """Stop the flusher, try a last replay (bounded by ``close_flush_timeout``, 2 s: the app gives the
        store 3 s to close), close both stores. What is not replayed stays in the spool for the next start."""
        self._closing = True
        self._wake.set()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.wait({self._flusher})  # unlike awaiting it, never swallows a cancel of close() itself
            self._flusher = None
        try:
            if self._depth and self._spool.is_open:
                try:
                    await asyncio.wait_for(self.flush(), timeout=self.close_flush_timeout)
                except (StoreUnavailable, TimeoutError) as exc:
                    log.warning("spool_kept_for_next_start", pending=self._depth, path=str(self.path),
                                reason=str(exc) or type(exc).__name__)
        finally:
            # even when cancelled by a shutdown deadline: every spooled write is already committed on disk
            if self._primary_opened:
                self._primary_opened = False
                try:
                    await self.primary.close()
                except Exception as exc:
                    # a primary that is down may fail to close cleanly; the spool must still be closed
                    log.warning("store_close_failed", store=self.name, error=f"{type(exc).__name__}: {exc}")
            await self._spool.stop()

    async def ping(self) -> bool:
        if not self._primary_opened:
            return False
        try:
            return await self.primary.ping()
        except Exception:
            return False

    # ------------------------------------------------------------------ outage bookkeeping
    def _mark_down(self, exc: BaseException) -> None:
        if self._primary_up:
            self._primary_up = False
            self._down_since = time.monotonic()
            self._outage = str(exc) or type(exc).__name__
            # once per outage, not per write
            log.warning("store_unavailable_spooling", store=self.name, error=str(exc), spool=str(self.path))

    def _mark_up(self) -> None:
        if not self._primary_up:
            self._primary_up = True
            down_for = time.monotonic() - self._down_since if self._down_since is not None else 0.0
            self._down_since = None
            log.info("store_recovered", store=self.name, down_seconds=round(down_for, 1),
                     replayed_total=self.replayed_total)

    # ------------------------------------------------------------------ writes
    async def _direct_only(self, what: str, direct: Callable[[], Awaitable[None]]) -> None:
        """A fenced write: to the primary now, or StoreUnavailable (never into the spool; see the module rules)."""
        async with self._write_lock:
            if self._depth or not self._primary_up or not self._primary_opened:
                raise StoreUnavailable(f"{what} needs the primary store (the lease fence), which is not caught up yet")
            try:
                await asyncio.wait_for(direct(), timeout=self.write_timeout)
            except StoreUnavailable as exc:
                self._mark_down(exc)
                raise
            except TimeoutError:
                exc2 = StoreUnavailable(f"no answer within {self.write_timeout:g} s")
                self._mark_down(exc2)
                raise exc2 from None

    async def _write(self, op: str, encode: Callable[[], bytes], direct: Callable[[], Awaitable[T]], spooled: T) -> T:
        async with self._write_lock:
            if self._depth == 0 and self._primary_up and self._primary_opened:
                try:
                    # a black-holed network would otherwise hold every write for the driver's own timeout
                    return await asyncio.wait_for(direct(), timeout=self.write_timeout)
                except StoreUnavailable as exc:
                    self._mark_down(exc)
                except TimeoutError:
                    self._mark_down(StoreUnavailable(f"no answer within {self.write_timeout:g} s"))
            payload = encode()
            at = _now_ms()
            await self._spool.run(
                lambda c: transaction(c, lambda: c.execute(
                    "INSERT INTO spool (op, payload, spooled_at) VALUES (?, ?, ?)", (op, payload, at)).close()),
                "spool append",
            )
            self._depth += 1
            self.spooled_total += 1
            self._drained.clear()
            self._wake.set()
            return spooled

    async def upsert_candles(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return
        await self._write("candles", lambda: orjson.dumps(_candle_list(candles)),
                          lambda: self.primary.upsert_candles(candles), None)

    async def save_signal(self, signal: Signal) -> bool:
        return await self._write("signal", lambda: orjson.dumps(signal.to_dict()),
                                 lambda: self.primary.save_signal(signal), True)

    async def record_delivery(self, delivery: Delivery) -> None:
        if fenced(delivery.status, delivery.epoch):
            return await self._direct_only("a leader's delivery claim", lambda: self.primary.record_delivery(delivery))
        await self._write("delivery", lambda: orjson.dumps(asdict(delivery)),
                          lambda: self.primary.record_delivery(delivery), None)

    async def save_outcome(self, outcome: SignalOutcome) -> None:
        await self._write("outcome", lambda: orjson.dumps(asdict(outcome)),
                          lambda: self.primary.save_outcome(outcome), None)

    async def save_stream_quality(self, rows: Sequence[StreamQuality]) -> None:
        if not rows:
            return
        await self._write("quality", lambda: orjson.dumps([asdict(r) for r in rows]),
                          lambda: self.primary.save_stream_quality(rows), None)

    async def commit_analysis(self, signals: Sequence[Signal], analysed_to: Mapping[tuple[str, str], int]) -> None:
        """Spooled as ONE entry and replayed as one ``commit_analysis``: atomic on the primary either way."""
        if not signals and not analysed_to:
            return
        await self._write("analysis", lambda: orjson.dumps({
            "signals": [s.to_dict() for s in signals],
            "analysed_to": [[sym, tf, ms] for (sym, tf), ms in analysed_to.items()],
        }), lambda: self.primary.commit_analysis(signals, analysed_to), None)

    async def prune_candles(self, older_than_ms: int) -> int:
        """Maintenance, not data: runs on the primary only (raises StoreUnavailable when it is down)."""
        return await self.primary.prune_candles(older_than_ms)

    async def drop_candles_after(self, symbol: str, timeframe: str, after_ms: int) -> int:
        """Repair at start, not data: runs on the primary only (raises StoreUnavailable when it is down)."""
        return await self.primary.drop_candles_after(symbol, timeframe, after_ms)

    # ------------------------------------------------------------------ replay
    async def flush(self) -> int:
        """Replay everything spooled now; returns how many entries were replayed (dead letters excluded).

        Raises StoreUnavailable if the primary is (still) down; what was replayed stays replayed.
        """
        async with self._flush_lock:
            await self._open_primary()
            if not self._primary_opened:
                raise StoreUnavailable(f"{self.name} could not be opened")
            replayed = 0
            while True:
                entries = await self._spool.run(
                    lambda c: [_Entry(r[0], r[1], bytes(r[2])) for r in c.execute(
                        "SELECT seq, op, payload FROM spool ORDER BY seq LIMIT ?", (REPLAY_READ_BATCH,))],
                    "spool read",
                )
                if not entries:
                    # the in-memory depth is kept by append/delete; never reset it here, a write may be
                    # appending right now
                    break
                for group in _groups(entries):
                    try:
                        await self._apply_group(group)
                    except StoreUnavailable as exc:
                        self._mark_down(exc)
                        raise
                    await self._delete_through(group[-1].seq)
                    self._depth = max(0, self._depth - len(group))
                    replayed += len(group)
            self.replayed_total += replayed
            self._mark_up()
            if self._depth == 0:
                self._drained.set()
            return replayed

    async def _apply_group(self, group: list[_Entry]) -> None:
        """Apply a group; on a permanent error retry its entries one by one and dead-letter the bad ones."""
        try:
            await self._apply(group)
            return
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(group) == 1:
                await self._dead_letter(group[0], exc)
                return
        for entry in group:
            try:
                await self._apply([entry])
            except StoreUnavailable:
                raise
            except Exception as exc:
                await self._dead_letter(entry, exc)

    async def _apply(self, group: list[_Entry]) -> None:
        try:
            await asyncio.wait_for(self._apply_now(group), timeout=self.replay_timeout)
        except TimeoutError:
            raise StoreUnavailable(f"replay got no answer within {self.replay_timeout:g} s") from None

    async def _apply_now(self, group: list[_Entry]) -> None:
        op = group[0].op
        if op == "candles":
            batch: list[Candle] = []
            for e in group:
                batch.extend(_candles_from(orjson.loads(e.payload)))
            await self.primary.upsert_candles(batch)
        elif op == "quality":
            rows: list[StreamQuality] = []
            for e in group:
                rows.extend(StreamQuality(**d) for d in orjson.loads(e.payload))
            await self.primary.save_stream_quality(rows)
        elif op == "signal":
            await self.primary.save_signal(Signal.from_dict(orjson.loads(group[0].payload)))
        elif op == "analysis":
            data = orjson.loads(group[0].payload)
            await self.primary.commit_analysis([Signal.from_dict(d) for d in data["signals"]],
                                               {(str(a), str(b)): int(c) for a, b, c in data["analysed_to"]})
        elif op == "delivery":
            await self.primary.record_delivery(Delivery(**orjson.loads(group[0].payload)))
        elif op == "outcome":
            await self.primary.save_outcome(SignalOutcome(**orjson.loads(group[0].payload)))
        elif op in TRADING_OPS:
            await self._apply_trading(op, group[0].payload)
        elif op == "follow_up":
            await self.primary.save_follow_up(FollowUp(**orjson.loads(group[0].payload)))
        elif op == "follow_up_delivery":
            await self.primary.record_follow_up_delivery(FollowUpDelivery(**orjson.loads(group[0].payload)))
        else:
            raise StoreError(f"unknown spool operation {op!r}")

    async def _delete_through(self, seq: int) -> None:
        await self._spool.run(
            lambda c: transaction(c, lambda: c.execute("DELETE FROM spool WHERE seq <= ?", (seq,)).close()),
            "spool delete",
        )

    async def _dead_letter(self, entry: _Entry, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        at = _now_ms()

        def move(c: sqlite3.Connection) -> None:
            def body() -> None:
                c.execute(
                    "INSERT OR REPLACE INTO dead_letters (seq, op, payload, spooled_at, failed_at, error) "
                    "SELECT seq, op, payload, spooled_at, ?, ? FROM spool WHERE seq = ?",
                    (at, error, entry.seq),
                ).close()
                c.execute("DELETE FROM spool WHERE seq = ?", (entry.seq,)).close()

            transaction(c, body)

        await self._spool.run(move, "spool dead-letter")
        self.dead_letter_total += 1
        log.error("spool_entry_refused", op=entry.op, seq=entry.seq, error=error, dead_letters=self.dead_letter_total,
                  spool=str(self.path))

    async def dead_letters(self) -> list[tuple[int, str, str]]:
        """(seq, op, error) of every write the primary refused, oldest first."""
        return await self._spool.run(
            lambda c: [(int(r[0]), str(r[1]), str(r[2])) for r in c.execute(
                "SELECT seq, op, error FROM dead_letters ORDER BY seq")],
            "spool dead letters",
        )

    async def _flush_loop(self) -> None:
        delay = self.retry_initial
        while not self._closing:
            if self._depth == 0 and self._primary_opened:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                # also runs with nothing spooled when the primary could not be opened: it retries the open
                await self.flush()
                delay = self.retry_initial
                continue
            except StoreUnavailable:
                pass
            except Exception as exc:
                # the spool file itself failed (or a bug): keep the task alive and retry, loudly
                log.error("spool_flush_failed", error=f"{type(exc).__name__}: {exc}", spool=str(self.path))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    # ------------------------------------------------------------------ reads (primary only)
    async def last_open_time(self, symbol: str, timeframe: str) -> int | None:
        return await self.primary.last_open_time(symbol, timeframe)

    async def load_candles(
        self,
        symbol: str,
        timeframe: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        return await self.primary.load_candles(symbol, timeframe, start_ms=start_ms, end_ms=end_ms, limit=limit)

    async def get_signal(self, signal_id: str) -> Signal | None:
        return await self.primary.get_signal(signal_id)

    async def analysed_up_to(self, symbol: str, timeframe: str) -> int | None:
        return await self.primary.analysed_up_to(symbol, timeframe)

    async def recent_signals(
        self, *, symbol: str | None = None, timeframe: str | None = None, limit: int = 20,
        kinds: Collection[SignalKind] | None = None,
    ) -> list[Signal]:
        return await self.primary.recent_signals(symbol=symbol, timeframe=timeframe, limit=limit, kinds=kinds)

    async def gate_seed(self, *, structure_window_ms: int) -> GateSeed:
        return await self.primary.gate_seed(structure_window_ms=structure_window_ms)

    async def pending_deliveries(
        self, destination: str, *, kinds: Collection[SignalKind] = TRADE_CALLS_ONLY, limit: int = 50,
        since_ms: int | None = None,
    ) -> list[Signal]:
        return await self.primary.pending_deliveries(destination, kinds=kinds, limit=limit, since_ms=since_ms)

    async def get_delivery(self, signal_id: str, destination: str) -> Delivery | None:
        return await self.primary.get_delivery(signal_id, destination)

    async def open_signals(self) -> list[Signal]:
        return await self.primary.open_signals()

    async def get_outcome(self, signal_id: str) -> SignalOutcome | None:
        return await self.primary.get_outcome(signal_id)

    async def live_track(
        self, tracked_reasons: Collection[str], *, symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, since_ms: int | None = None, resolved_before_ms: int | None = None,
    ) -> list[LiveTrack]:
        return await self.primary.live_track(tracked_reasons, symbol=symbol, timeframe=timeframe, pattern=pattern,
                                             since_ms=since_ms, resolved_before_ms=resolved_before_ms)

    async def stream_quality(self) -> list[StreamQuality]:
        return await self.primary.stream_quality()

    # ------------------------------------------------------------------ Discord community (issue 14)
    # follow-ups and their deliveries are spooled like the other writes; subscriptions and mutes are user commands
    # that go to the primary only (a command answers "the database is not reachable" rather than pretend)
    async def save_follow_up(self, follow_up: FollowUp) -> bool:
        return await self._write("follow_up", lambda: orjson.dumps(asdict(follow_up)),
                                 lambda: self.primary.save_follow_up(follow_up), True)

    async def record_follow_up_delivery(self, delivery: FollowUpDelivery) -> None:
        if fenced(delivery.status, delivery.epoch):
            return await self._direct_only("a leader's follow-up claim",
                                           lambda: self.primary.record_follow_up_delivery(delivery))
        await self._write("follow_up_delivery", lambda: orjson.dumps(asdict(delivery)),
                          lambda: self.primary.record_follow_up_delivery(delivery), None)

    async def follow_ups(self, signal_id: str) -> list[FollowUp]:
        return await self.primary.follow_ups(signal_id)

    async def open_tp2_watches(self) -> list[tuple[Signal, FollowUp]]:
        return await self.primary.open_tp2_watches()

    async def pending_follow_ups(self, destination: str, *, limit: int = 50) -> list[PendingFollowUp]:
        return await self.primary.pending_follow_ups(destination, limit=limit)

    async def get_follow_up_delivery(self, signal_id: str, event: FollowUpEvent, destination: str) -> FollowUpDelivery | None:
        return await self.primary.get_follow_up_delivery(signal_id, event, destination)

    async def save_subscription(self, subscription: Subscription) -> bool:
        return await self.primary.save_subscription(subscription)

    async def delete_subscriptions(self, destination: str, *, symbol: str | None = None,
                                   timeframe: str | None = None) -> int:
        return await self.primary.delete_subscriptions(destination, symbol=symbol, timeframe=timeframe)

    async def subscriptions(self, destination: str | None = None) -> list[Subscription]:
        return await self.primary.subscriptions(destination)

    async def save_mute(self, mute: Mute) -> None:
        await self.primary.save_mute(mute)

    async def delete_mutes(self, destination: str, *, symbol: str | None = None, timeframe: str | None = None) -> int:
        return await self.primary.delete_mutes(destination, symbol=symbol, timeframe=timeframe)

    async def mutes(self, destination: str | None = None) -> list[Mute]:
        return await self.primary.mutes(destination)

    async def signal_history(
        self, *, kinds: Collection[SignalKind], symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, outcome: HistoryOutcome | None = None, offset: int = 0, limit: int = 10,
    ) -> list[tuple[Signal, SignalOutcome | None]]:
        return await self.primary.signal_history(kinds=kinds, symbol=symbol, timeframe=timeframe, pattern=pattern,
                                                 outcome=outcome, offset=offset, limit=limit)



def _groups(entries: list[_Entry]) -> list[list[_Entry]]:
    """Split entries (in seq order) into replay groups: runs of consecutive candle (or quality) writes
    merge up to REPLAY_CANDLE_BATCH candles; every other write is its own group."""
    groups: list[list[_Entry]] = []
    size = 0
    for e in entries:
        mergeable = e.op in ("candles", "quality")
        if mergeable and groups and groups[-1][0].op == e.op and size < REPLAY_CANDLE_BATCH:
            groups[-1].append(e)
        else:
            groups.append([e])
            size = 0
        if mergeable:
            # a rough size: the payload holds one JSON array per row
            size += e.payload.count(b"[") - 1
    return groups
