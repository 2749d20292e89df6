"""The storage port: what the bot, the Discord outbox, the outcome tracker and the backtest need
from a store. Backends (SQLite, Postgres, Supabase REST) implement :class:`Store`.

Rules every backend keeps:
- every write is an idempotent upsert on the natural key (candles: symbol+timeframe+open_time;
  signals: id; deliveries: signal_id+destination; outcomes: signal_id; stream quality: symbol+timeframe;
  analysis watermarks: symbol+timeframe, forward only);
- reads return domain objects (``Candle``, ``Signal``, ...), never dicts;
- times cross this boundary as UTC epoch ms (``*_ms``) except ``Signal.generated_at`` (ISO-8601 UTC);
- a failure raises :class:`StoreUnavailable` (temporary: the caller may spool and retry) or
  :class:`StoreError` (permanent); it never returns an empty result instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import structlog

from src.analysis.follow_ups import FOLLOW_UP_EVENTS as FOLLOW_UP_EVENTS
from src.analysis.follow_ups import FOLLOW_UP_ORDER as FOLLOW_UP_ORDER
from src.analysis.follow_ups import POSTED_FOLLOW_UP_EVENTS as POSTED_FOLLOW_UP_EVENTS
from src.analysis.follow_ups import FollowUp as FollowUp
from src.analysis.follow_ups import FollowUpEvent as FollowUpEvent
from src.analysis.follow_ups import follow_up_sort_key as follow_up_sort_key
from src.analysis.types import SIGNAL_KINDS, Candle, Evidence, InvalidCandle, Signal, SignalKind

Outcome = Literal["WIN", "LOSS", "EXPIRED"]
DeliveryStatus = Literal["pending", "sent", "skipped", "failed"]


class StoreError(Exception):
    """A permanent storage error (bad schema, constraint, refused credentials)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now; the write may be retried later."""


class FencedOut(StoreError):
    """A write naming a leader-lease epoch was refused: that epoch no longer holds the lease (issue 16). The
    instance that made it is not the leader any more and must not act (post, trade) on it."""


def fenced(status: str, epoch: int | None) -> bool:
    """True when a delivery row must be refused unless ``epoch`` still holds the lease: every row a leader
    writes carries its epoch, and every status but 'sent' is fenced. A 'sent' row records a message that
    exists (whoever posted it), so refusing it could only make the next leader post it again."""
    return epoch is not None and status != "sent"


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    """How a signal resolved (SPEC 7). ``mfe_r``/``mae_r`` are the max favourable / adverse
    excursions in R (multiples of the entry-stop distance), both >= 0; ``r_multiple`` is after fees."""

    signal_id: str
    symbol: str
    timeframe: str
    pattern: str
    direction: Literal["LONG", "SHORT"]
    outcome: Outcome
    entry_time_ms: int
    entry_price: float
    exit_time_ms: int
    exit_price: float
    r_multiple: float
    mfe_r: float
    mae_r: float
    fees: float
    bars_held: int
    confidence: float
    resolved_at_ms: int


TRADE_CALLS_ONLY: tuple[SignalKind, ...] = ("trade",)  # what a destination receives unless told otherwise

Population = Literal["trade", "watch", "tracked"]
POPULATIONS: tuple[Population, ...] = ("trade", "watch", "tracked")
Z95 = 1.96


@dataclass(frozen=True, slots=True)
class LiveTrack:
    """The live track record of one (pattern, timeframe) cell and population, as sums (so cells add up).

    Populations: ``trade`` = trade calls, ``watch`` = watch notes, ``tracked`` = every stored candidate
    with an evidence assessment whose gate reason is one of the tracked reasons (the population the
    evidence model is fitted on; see ``Store.live_track``). ``graded`` counts candidates with an outcome;
    ``wins`` those with net R > 0 (after fees)."""

    pattern: str
    timeframe: str
    population: Population
    candidates: int
    graded: int
    sum_r: float
    sum_r2: float
    wins: int

    @property
    def mean_r(self) -> float | None:
        return self.sum_r / self.graded if self.graded else None

    @property
    def sd_r(self) -> float | None:
        """Sample standard deviation of net R (None below 2 graded)."""
        if self.graded < 2:
            return None
        var = (self.sum_r2 - self.sum_r * self.sum_r / self.graded) / (self.graded - 1)
        return math.sqrt(max(0.0, var))

    @property
    def ci95(self) -> tuple[float, float] | None:
        """mean +- 1.96 sd / sqrt(n) (normal approximation, as the SQL views); None below 2 graded."""
        sd, mean = self.sd_r, self.mean_r
        if sd is None or mean is None:
            return None
        half = Z95 * sd / math.sqrt(self.graded)
        return (mean - half, mean + half)

    @property
    def win_rate(self) -> float | None:
        """Share of graded candidates with net R > 0."""
        return self.wins / self.graded if self.graded else None


@dataclass(frozen=True, slots=True)
class GateSeed:
    """What the gate must remember across restarts, read from the stored candidates.

    ``last_emitted_ms``: (symbol, timeframe, direction) -> candle_time_ms of the newest trade call or watch note;
    ``last_trade_ms``: the same key -> the newest trade call (a watch note never holds back a trade call);
    ``structures``: structure_id -> the best kind emitted for it ("trade" beats "watch"), for the structures
    emitted within the requested window before the newest emission;
    ``judged_until_ms``: (symbol, timeframe) -> candle_time_ms of the newest stored candidate of any kind (a
    candle at or before it was judged by an earlier run: its verdict is in the store)."""

    last_emitted_ms: dict[tuple[str, str, str], int]
    structures: dict[str, SignalKind]
    last_trade_ms: dict[tuple[str, str, str], int] = field(default_factory=dict)
    judged_until_ms: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamQuality:
    """Data-quality counters per stream (SPEC 6 data-quality view)."""

    symbol: str
    timeframe: str
    last_candle_ms: int | None
    gaps_backfilled: int
    candles_backfilled: int
    stalls: int
    reconnects: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """Delivery state of one signal to one destination (e.g. ``discord:<channel>``, ``webhook``).

    ``epoch``: the leader-lease epoch of the instance writing the row (None: no lease, a single instance); a
    Postgres store refuses the row with :class:`FencedOut` when that epoch no longer holds the lease (see
    :func:`fenced`). It is not stored."""

    signal_id: str
    destination: str
    status: DeliveryStatus
    message_id: str | None
    attempts: int
    last_error: str | None
    updated_at_ms: int
    epoch: int | None = None


INT64_MAX = (1 << 63) - 1
# Epoch ms of 9999-12-31T23:59:59.999Z: the latest instant every backend can hold (Python's datetime,
# used for Supabase's timestamptz text, ends there; Postgres and SQLite go further).
MAX_STORED_TIME_MS = 253_402_300_799_999


def storage_problem(c: Candle) -> str | None:
    """Why a backend could not hold ``c`` even though its numbers are a valid candle (``Candle.validate``
    covers prices and volumes): a trade count outside 0..2**63-1 (a 64-bit integer column) or times
    outside 0..year 9999. None when it fits. Checked per candle, so one such candle never sinks a batch."""
    if not (0 <= c.trades <= INT64_MAX):
        return f"trade count {c.trades} does not fit a 64-bit integer column"
    if not (0 <= c.open_time_ms < c.close_time_ms <= MAX_STORED_TIME_MS):
        return f"times {c.open_time_ms}..{c.close_time_ms} ms are outside what the store can hold (year 9999)"
    return None


def plainly_valid(c: Candle) -> bool:
    """True exactly when ``Candle.validate()`` passes, 4x faster (chained comparisons; NaN fails every
    comparison). The store still calls ``validate()`` whenever this says no, for the exact reason, and
    a property test checks both agree on every kind of float, so the rules live in ``validate()``."""
    lo = c.low
    hi = c.high
    return (
        0.0 < lo <= c.open <= hi < math.inf and lo <= c.close <= hi
        and 0.0 <= c.volume < math.inf and 0.0 <= c.quote_volume < math.inf
        and 0.0 <= c.taker_buy_volume < math.inf and 0.0 <= c.taker_buy_quote_volume < math.inf
        and c.trades >= 0 and c.close_time_ms > c.open_time_ms
    )


def candle_problem(c: Candle) -> str | None:
    """Why no store would keep ``c`` (not a valid candle, or values no column can hold), else None. Fast for
    the common valid candle (:func:`plainly_valid`); the exact reason comes from ``Candle.validate``."""
    if not (plainly_valid(c) and 0 <= c.trades <= INT64_MAX and c.close_time_ms <= MAX_STORED_TIME_MS
            and c.open_time_ms >= 0):
        try:
            c.validate()
        except InvalidCandle as exc:
            return str(exc)
        return storage_problem(c)
    return None


def accept_candles(candles: Sequence[Candle], reject: Callable[[Candle, str], None]) -> list[Candle]:
    """Valid closed candles a store can hold, one per key (the last one wins), sorted by key (concurrent
    writers then lock rows in the same order and cannot deadlock). Each refused candle is passed to ``reject``."""
    by_key: dict[tuple[str, str, int], Candle] = {}
    for c in candles:
        try:
            if not c.closed:
                raise InvalidCandle(f"candle {c.key} is not closed")
            c.validate()
            problem = storage_problem(c)
            if problem is not None:
                raise InvalidCandle(f"candle {c.key}: {problem}")
        except InvalidCandle as exc:
            reject(c, str(exc))
            continue
        by_key[c.key] = c
    return [by_key[k] for k in sorted(by_key)]


class RejectingCandleWriter:
    """Mixin for network stores: ``_accept`` filters a batch with :func:`accept_candles`, counting and
    logging each refused candle in ``rejected_candles``; :meth:`_write_each` is the fallback when the
    database refuses a whole batch for a reason no check foresaw: the candles are written one by one and
    only the refused ones are dropped (and counted)."""

    rejected_candles: int = 0

    def _accept(self, candles: Sequence[Candle]) -> list[Candle]:
        return accept_candles(candles, self._reject)

    def _reject(self, c: Candle, reason: str) -> None:
        self.rejected_candles += 1
        structlog.get_logger(type(self).__module__).warning(
            "candle_rejected", symbol=c.symbol, timeframe=c.timeframe, open_time_ms=c.open_time_ms,
            reason=reason, rejected_total=self.rejected_candles)

    async def _write_each(self, rows: Sequence[Candle], write: Callable[[Sequence[Candle]], Awaitable[None]],
                          error: StoreError) -> None:
        """``write`` refused the whole batch permanently (``error``): write each candle alone, refusing only
        those the database refuses. A StoreUnavailable meanwhile propagates (the spool keeps the batch)."""
        if len(rows) == 1:
            self._reject(rows[0], str(error))
            return
        for c in rows:
            try:
                await write([c])
            except StoreUnavailable:
                raise
            except StoreError as exc:
                self._reject(c, str(exc))


_EVIDENCE_FLOATS = ("p_win", "expected_r", "expected_r_lo", "expected_r_hi")


def population(value: object) -> Population:
    """A population name read back from a query, checked."""
    for pop in POPULATIONS:
        if value == pop:
            return pop
    raise StoreError(f"unknown track-record population {value!r}")


def signal_kind(value: object, signal_id: str) -> SignalKind:
    """A stored kind, checked (the schema allows only these three)."""
    for kind in SIGNAL_KINDS:
        if value == kind:
            return kind
    raise StoreError(f"signal {signal_id} has invalid kind {value!r}")


def evidence_columns(signal: Signal) -> tuple[float | None, float | None, float | None, float | None]:
    """(p_win, expected_r, expected_r_lo, expected_r_hi) for the SQL columns: None without evidence, and a
    non-finite estimate (a bug upstream) as NULL rather than a refused row."""
    ev = signal.evidence
    if ev is None:
        return (None, None, None, None)
    return (_finite(ev.p_win), _finite(ev.expected_r), _finite(ev.expected_r_lo), _finite(ev.expected_r_hi))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evidence_dict(signal: Signal) -> dict[str, object] | None:
    """The evidence as a JSON-ready dict (non-finite numbers as null), or None."""
    if signal.evidence is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in signal.evidence.to_dict().items()}


def evidence_from(value: object, signal_id: str) -> Evidence | None:
    """Evidence from a stored JSON object (dict, or text some drivers return); NULL estimates read back as NaN."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise StoreError(f"signal {signal_id} has unreadable evidence {str(value)[:80]!r}")
    d = dict(value)
    for key in _EVIDENCE_FLOATS:
        if d.get(key) is None:
            d[key] = math.nan
    try:
        return Evidence.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"signal {signal_id} has unreadable evidence: {exc}") from exc


@runtime_checkable
class CandleStore(Protocol):
    async def upsert_candles(self, candles: Sequence[Candle]) -> None:
        """Insert or replace closed candles (batched by the backend)."""

    async def last_open_time(self, symbol: str, timeframe: str) -> int | None:
        """Open time of the newest stored candle of the stream, or None."""

    async def load_candles(
        self,
        symbol: str,
        timeframe: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Candles with start_ms <= open_time <= end_ms, ascending; with ``limit``, the NEWEST ``limit`` of them."""

    async def prune_candles(self, older_than_ms: int) -> int:
        """Delete candles with open_time < older_than_ms; returns how many."""


@runtime_checkable
class SignalStore(Protocol):
    async def save_signal(self, signal: Signal) -> bool:
        """Store a signal; True if it was new, False if its id existed (the stored row is kept)."""

    async def get_signal(self, signal_id: str) -> Signal | None: ...

    async def recent_signals(
        self, *, symbol: str | None = None, timeframe: str | None = None, limit: int = 20,
        kinds: Collection[SignalKind] | None = None,
    ) -> list[Signal]:
        """Newest first (by candle time, then id); ``kinds`` None = every kind (gated candidates too)."""

    async def gate_seed(self, *, structure_window_ms: int) -> GateSeed:
        """The gate's memory from the store (see :class:`GateSeed`): emissions count trade calls and watch notes
        only; structures are those emitted at most ``structure_window_ms`` before the newest emission (candle
        time, no wall clock); ``judged_until_ms`` counts every stored candidate."""


@runtime_checkable
class AnalysisStore(Protocol):
    """Durability of the analysis (issue 11): what was analysed is committed together with its results."""

    async def commit_analysis(self, signals: Sequence[Signal], analysed_to: Mapping[tuple[str, str], int]) -> None:
        """In ONE transaction: store ``signals`` (new ids only; an existing id keeps its first row, as
        ``save_signal``) and move each (symbol, timeframe) watermark forward to the given candle open time
        (never back). After a crash either all of it is stored or none of it."""

    async def analysed_up_to(self, symbol: str, timeframe: str) -> int | None:
        """Open time of the stream's newest candle whose analysis is committed; None if never analysed."""

    async def drop_candles_after(self, symbol: str, timeframe: str, after_ms: int) -> int:
        """Delete the stream's candles with open_time > ``after_ms`` and move its watermark back to at most
        ``after_ms``, in one transaction (a candle stored from the future); returns the candles deleted."""


@runtime_checkable
class OutboxStore(Protocol):
    async def pending_deliveries(
        self, destination: str, *, kinds: Collection[SignalKind] = TRADE_CALLS_ONLY, limit: int = 50,
        since_ms: int | None = None,
    ) -> list[Signal]:
        """Signals of ``kinds`` with no 'sent' or 'skipped' delivery to ``destination``, oldest first (candle
        time, id). Gated candidates are never returned, whatever ``kinds`` says. With ``since_ms``, signals whose
        candle opened earlier are left out unless ``destination`` has a delivery row for them already (an attempt
        that may have reached Discord is still settled)."""

    async def record_delivery(self, delivery: Delivery) -> None:
        """Upsert the delivery row for (signal_id, destination)."""

    async def get_delivery(self, signal_id: str, destination: str) -> Delivery | None: ...


@runtime_checkable
class OutcomeStore(Protocol):
    async def open_signals(self) -> list[Signal]:
        """Signals (every kind) without an outcome row, oldest first."""

    async def save_outcome(self, outcome: SignalOutcome) -> None: ...

    async def get_outcome(self, signal_id: str) -> SignalOutcome | None: ...

    async def live_track(
        self, tracked_reasons: Collection[str], *, symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, since_ms: int | None = None, resolved_before_ms: int | None = None,
    ) -> list[LiveTrack]:
        """The live track record per (pattern, timeframe, population), ordered by those, in ONE query; cells
        without candidates are absent. ``tracked`` = candidates with an evidence assessment (p_win set) whose
        gate_reason is in ``tracked_reasons``. Optional filters narrow it to one symbol / timeframe / pattern,
        ``since_ms`` to candidates whose candle opened at or after it, and ``resolved_before_ms`` counts only
        outcomes resolved (candle close) before that time, so the record as of a candle time is the same
        whenever it is read."""


@runtime_checkable
class QualityStore(Protocol):
    async def save_stream_quality(self, rows: Sequence[StreamQuality]) -> None: ...

    async def stream_quality(self) -> list[StreamQuality]: ...


# ---------------------------------------------------------------------------- Discord community (issue 14)
# (the follow-up types live with their rules in src/analysis/follow_ups.py and are re-exported here)
HistoryOutcome = Literal["WIN", "LOSS", "EXPIRED", "OPEN"]
HISTORY_OUTCOMES: tuple[HistoryOutcome, ...] = ("WIN", "LOSS", "EXPIRED", "OPEN")


def follow_up_event(value: object, signal_id: str) -> FollowUpEvent:
    """A stored follow-up event name, checked."""
    for event in FOLLOW_UP_EVENTS:
        if value == event:
            return event
    raise StoreError(f"signal {signal_id} has an invalid follow-up event {value!r}")


@dataclass(frozen=True, slots=True)
class FollowUpDelivery:
    """Delivery state of one follow-up to one destination (keyed by signal id + event + destination); ``epoch``
    as in :class:`Delivery` (fenced, not stored)."""

    signal_id: str
    event: FollowUpEvent
    destination: str
    status: DeliveryStatus
    message_id: str | None
    attempts: int
    last_error: str | None
    updated_at_ms: int
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class PendingFollowUp:
    """A follow-up ``destination`` still has to post, with its signal and the original message's id there."""

    follow_up: FollowUp
    signal: Signal
    original_message_id: str


@dataclass(frozen=True, slots=True)
class Subscription:
    """``>watch``: ``destination`` ('discord:<channel id>' or 'dm:<user id>') gets ``symbol`` on ``timeframe``
    ('' = every timeframe). ``created_by`` is the Discord user id who asked."""

    destination: str
    symbol: str
    timeframe: str
    created_by: str
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class Mute:
    """``>mute``: nothing of ``symbol`` ('' = every symbol) on ``timeframe`` ('' = every) is posted to
    ``destination`` before ``until_ms``."""

    destination: str
    symbol: str
    timeframe: str
    until_ms: int
    created_by: str
    created_at_ms: int


@runtime_checkable
class FollowUpStore(Protocol):
    async def save_follow_up(self, follow_up: FollowUp) -> bool:
        """Store a follow-up; True if new, False if (signal_id, event) existed (the stored row is kept)."""

    async def follow_ups(self, signal_id: str) -> list[FollowUp]:
        """The signal's follow-ups in the order they happened."""

    async def open_tp2_watches(self) -> list[tuple[Signal, FollowUp]]:
        """Signals with two or more targets whose 'tp1' follow-up exists and no 'tp2' / 'tp2_missed' yet, with
        that 'tp1' follow-up, oldest first."""

    async def pending_follow_ups(self, destination: str, *, limit: int = 50) -> list[PendingFollowUp]:
        """Follow-ups (never 'tp2_missed') whose signal was posted to ``destination`` ('sent' with a message id)
        and that have no 'sent'/'skipped' follow-up delivery there; oldest event first (event time, signal id,
        :data:`FOLLOW_UP_ORDER`)."""

    async def record_follow_up_delivery(self, delivery: FollowUpDelivery) -> None:
        """Upsert the row for (signal_id, event, destination)."""

    async def get_follow_up_delivery(self, signal_id: str, event: FollowUpEvent, destination: str) -> FollowUpDelivery | None: ...


@runtime_checkable
class SubscriptionStore(Protocol):
    async def save_subscription(self, subscription: Subscription) -> bool:
        """Add a subscription; True if new (an existing one is kept as it was)."""

    async def delete_subscriptions(self, destination: str, *, symbol: str | None = None,
                                   timeframe: str | None = None) -> int:
        """Remove the destination's subscriptions (None = any symbol / any timeframe); returns how many."""

    async def subscriptions(self, destination: str | None = None) -> list[Subscription]:
        """Every subscription (of one destination), ordered by destination, symbol, timeframe."""

    async def save_mute(self, mute: Mute) -> None:
        """Add or replace the mute for (destination, symbol, timeframe)."""

    async def delete_mutes(self, destination: str, *, symbol: str | None = None, timeframe: str | None = None) -> int:
        """Remove the destination's mutes (None = any symbol / any timeframe); returns how many."""

    async def mutes(self, destination: str | None = None) -> list[Mute]:
        """Every mute (of one destination), expired ones included, ordered by destination, symbol, timeframe."""


@runtime_checkable
class HistoryStore(Protocol):
    async def signal_history(
        self, *, kinds: Collection[SignalKind], symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, outcome: HistoryOutcome | None = None, offset: int = 0, limit: int = 10,
    ) -> list[tuple[Signal, SignalOutcome | None]]:
        """Signals of ``kinds``, newest first (candle time, id), each with its outcome (None while open), filtered:
        ``pattern`` is a substring of the pattern name; ``outcome`` 'OPEN' = no outcome yet. ``offset``/``limit``
        page through them."""


@runtime_checkable
class Store(CandleStore, SignalStore, AnalysisStore, OutboxStore, OutcomeStore, QualityStore, FollowUpStore,
            SubscriptionStore, HistoryStore, Protocol):
    """A complete backend. ``name`` is what logs and ``>status`` show (e.g. 'sqlite:./data/wyeli.db')."""

    name: str

    async def open(self) -> None:
        """Connect and create/migrate the schema. Idempotent."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers a trivial query now."""
