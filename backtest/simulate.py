"""Backtest core: replay one stream through the live engine + gate, grade every signal with the
outcome rules (src/analysis/outcomes.py), then size the trades on one shared account.

Per stream (one symbol + timeframe, run in its own process with ``--jobs``):

- candles go through ``src.analysis.engine.replay`` with ``registry.build_engine`` (the evidence model
  given, else the shipped default) and a fresh ``SignalGate`` exactly as live, so the emitted signals equal
  ``python -m backtest signals``; the signals TRADED are the emitted ones whose kind is in ``kinds``
  (default: trade calls only; watch notes are not trade calls, SPEC 5a);
- every traded signal is followed from the candle after its confirming candle by a
  ``TradeFollower``; signals still open when the data ends are counted as ``unresolved`` and are not
  trades; signals whose geometry is invalid (stop or target on the wrong side) are counted and skipped;
- overlapping trades: ONE position per stream (symbol + timeframe) at a time, no pyramiding: a signal
  whose entry comes before the previous trade's exit candle has closed is skipped and counted in
  ``skipped_overlap``. Different streams may hold positions at the same time.

Account (``size_trades``): trades are processed in entry order; each risks ``risk_per_trade`` of
the equity REALISED at its entry time (closed trades only), so P&L = risk amount * R multiple, and
fees in money = risk amount * fees in R. Equity is marked when the exit candle closes.

``grade_all``: every candidate (trade calls, watch notes and gated ones) is also graded on its own,
ignoring position overlap (``candidate_outcomes``; ``backtest run --grade-all`` writes them).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

from src.analysis.engine import AnalysisSettings, SignalGate, replay
from src.analysis.evidence import EvidenceModel
from src.analysis.indicators import WilderATR
from src.analysis.outcomes import InvalidSignalGeometry, OutcomeParams, Resolution, TradeFollower
from src.analysis.registry import build_engine
from src.analysis.types import Candle, Signal, SignalKind

ATR_PERIOD = 14
PROGRESS_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class GradedSignal:
    """An emitted signal with its resolution; ``atr`` is Wilder ATR(14) at the confirming candle."""

    signal: Signal
    resolution: Resolution
    atr: float | None


@dataclass(slots=True)
class StreamResult:
    """Everything one stream produced; plain data so it crosses process boundaries."""

    symbol: str
    timeframe: str
    candles: int
    first_open_ms: int | None
    last_close_ms: int | None
    signals: list[Signal] = field(default_factory=list)
    graded: list[GradedSignal] = field(default_factory=list)
    skipped_overlap: list[GradedSignal] = field(default_factory=list)
    unresolved: int = 0
    invalid_geometry: int = 0
    emitted: list[Signal] = field(default_factory=list)  # every trade call and watch note, traded or not
    # with grade_all: every candidate graded on its own (None: unresolved at the end of the data or invalid)
    candidate_outcomes: list[tuple[Signal, Resolution | None]] = field(default_factory=list)


def atr_series(candles: list[Candle], period: int = ATR_PERIOD) -> list[float | None]:
    atr = WilderATR(period)
    return [atr.update(c.high, c.low, c.close) for c in candles]


def grade(signal: Signal, candles: list[Candle], open_times: list[int], params: OutcomeParams) -> Resolution | None:
    """Follow ``signal`` over the candles after its confirming candle; None while unresolved."""
    follower = TradeFollower.for_signal(signal, params)
    start = bisect_right(open_times, signal.candle_time_ms)
    for i in range(start, len(candles)):
        r = follower.on_candle(candles[i])
        if r is not None:
            return r
    return None


def run_stream(
    symbol: str,
    timeframe: str,
    candles: list[Candle],
    settings: AnalysisSettings,
    params: OutcomeParams,
    evidence: EvidenceModel | None = None,
    *,
    kinds: tuple[SignalKind, ...] = ("trade",),
    grade_all: bool = False,
    progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Replay, grade and apply the one-position-per-stream rule (see the module docstring).

    ``kinds``: which emitted kinds are traded. ``grade_all``: grade every candidate on its own into
    ``candidate_outcomes``. ``progress`` is called with the number of candles replayed since its last call.
    """
    engine = build_engine(symbol, timeframe, settings, evidence)
    gate = SignalGate(settings)
    candidates: list[Signal] = []
    emitted: list[Signal] = []
    # replay in chunks only to report progress: engine and gate carry their state across calls
    for lo in range(0, len(candles), PROGRESS_CHUNK):
        chunk = candles[lo : lo + PROGRESS_CHUNK]
        c, e, _events = replay(chunk, engine, gate)
        candidates.extend(c)
        emitted.extend(e)
        if progress is not None:
            progress(len(chunk))
    res = StreamResult(
        symbol,
        timeframe,
        len(candles),
        candles[0].open_time_ms if candles else None,
        candles[-1].close_time_ms if candles else None,
        signals=[s for s in emitted if s.kind in kinds],
        emitted=emitted,
    )
    open_times = [c.open_time_ms for c in candles]
    take_trades(res, candles, open_times, params)
    if grade_all:
        for cand in candidates:
            try:
                r = grade(cand, candles, open_times, params)
            except InvalidSignalGeometry:
                r = None
            res.candidate_outcomes.append((cand, r))
    return res


def take_trades(
    res: StreamResult,
    candles: list[Candle],
    open_times: list[int],
    params: OutcomeParams,
    known: dict[str, Resolution | None] | None = None,
) -> None:
    """Grade ``res.signals`` in order and apply the one-position-per-stream rule into ``res``.

    ``known`` holds resolutions already computed (by signal id; None = unresolved)."""
    atrs = atr_series(candles)
    busy_until = -1  # close time of the exit candle of the stream's open trade
    for sig in res.signals:
        try:
            r = known[sig.id] if known is not None and sig.id in known else grade(sig, candles, open_times, params)
        except InvalidSignalGeometry:
            res.invalid_geometry += 1
            continue
        if r is None:
            res.unresolved += 1
            continue
        idx = bisect_right(open_times, sig.candle_time_ms) - 1
        g = GradedSignal(sig, r, atrs[idx] if idx >= 0 else None)
        if r.entry_time_ms <= busy_until:
            res.skipped_overlap.append(g)
            continue
        res.graded.append(g)
        # busy until the exit candle has closed: the next entry is at the following open at the earliest
        busy_until = max(busy_until, r.resolved_at_ms)


@dataclass(frozen=True, slots=True)
class Trade:
    """A sized trade on the account."""

    graded: GradedSignal
    risk_amount: float
    pnl: float
    fees: float
    equity_before: float

    @property
    def signal(self) -> Signal:
        return self.graded.signal

    @property
    def resolution(self) -> Resolution:
        return self.graded.resolution


@dataclass(slots=True)
class Account:
    initial_balance: float
    trades: list[Trade]
    equity_curve: list[tuple[int, float]]  # (time ms, realised equity), starting with (first time, initial)

    @property
    def final_equity(self) -> float:
        return self.equity_curve[-1][1]


def size_trades(graded: list[GradedSignal], initial_balance: float, risk_per_trade: float, start_ms: int) -> Account:
    """Size trades on one account in entry order (see the module docstring)."""
    if initial_balance <= 0 or not 0 < risk_per_trade <= 1:
        raise ValueError("initial balance must be > 0 and risk per trade in (0, 1]")
    order = sorted(graded, key=lambda g: (g.resolution.entry_time_ms, g.signal.symbol, g.signal.timeframe, g.signal.id))
    equity = initial_balance
    pending: list[tuple[int, int, float]] = []  # (exit time, seq, pnl)
    curve: list[tuple[int, float]] = [(start_ms, equity)]
    trades: list[Trade] = []

    def settle(until: int | None) -> None:
        nonlocal equity
        while pending and (until is None or pending[0][0] <= until):
            t, _, pnl = heapq.heappop(pending)
            equity += pnl
            curve.append((t, equity))

    for seq, g in enumerate(order):
        r = g.resolution
        settle(r.entry_time_ms)
        risk_amount = max(0.0, equity) * risk_per_trade
        pnl = risk_amount * r.r_multiple
        trades.append(Trade(g, risk_amount, pnl, risk_amount * r.fees_r, equity))
        # realised when the exit candle has closed (a stop inside candle k is not known at k's open)
        heapq.heappush(pending, (r.resolved_at_ms, seq, pnl))
    settle(None)
    return Account(initial_balance, trades, curve)
