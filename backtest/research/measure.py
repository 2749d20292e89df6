"""Per-stream measurements of the event study: volatility deciles, matched random twins, forward paths,
and the trade outcome of every event and of its twins.

For an event confirmed on candle ``i`` (direction sign ``s``: +1 LONG, -1 SHORT):

- ATR = Wilder ATR(14) at candle ``i`` (known at its close); ATR% = ATR / close.
- Volatility decile of candle ``i``: where its ATR% ranks among the ATR% of the previous
  ``VOL_WINDOW`` (1000) candles of the stream, strictly before ``i`` (past only; ties count half);
  undefined until ``VOL_MIN_HISTORY`` (100) such values exist.
- Forward path: ``s * (close[i + h] - open[i + 1]) / ATR[i]`` for h = 1..H (entry at the next
  candle's open, as the outcome rules; h = 1 is the entry candle's close).
- Trade: the candidate graded by ``TradeFollower`` (src/analysis/outcomes.py, SPEC 7: stop first,
  gaps, first target only, expiry after H candles, commission per side and slippage) to net R.
- Twins: ``reps`` candles ``j`` drawn uniformly (with replacement) from the stream's eligible candles
  with the SAME volatility decile; each twin takes the event's direction, its forward path is measured
  the same way with ATR[j], and it is graded as a trade with identical exits in ATR units (stop
  ``k_stop * ATR[j]`` and first target ``k_tp * ATR[j]`` from the close of ``j``; the numpy copy of the
  rules in backtest/baseline.py, tested against the follower there).
- Eligible (events and twins): ATR and decile defined, and H candles after ``i`` exist (so every path
  is complete and every trade resolves). Other events are counted by reason, never silently dropped.

Random draws are seeded from (seed, symbol, timeframe), so results do not depend on --jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from backtest import baseline as bl
from backtest.research.stats import week_of
from backtest.simulate import atr_series, grade
from src.analysis.outcomes import InvalidSignalGeometry, OutcomeParams
from src.analysis.types import Candle, Signal

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

VOL_WINDOW = 1000
VOL_MIN_HISTORY = 100
DECILES = 10
_CHUNK_CELLS = 2_000_000


def volatility_deciles(atr_pct: FloatArray, window: int = VOL_WINDOW, min_history: int = VOL_MIN_HISTORY) -> IntArray:
    """Decile 0..9 of each ATR% among the previous ``window`` finite values; -1 where undefined."""
    n = atr_pct.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    padded = np.concatenate([np.full(window, np.nan), atr_pct])
    past = sliding_window_view(padded, window)[:n]  # row i = values i-window .. i-1
    step = max(1, _CHUNK_CELLS // window)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        x = atr_pct[lo:hi, None]
        p = past[lo:hi]
        finite = np.isfinite(p)
        count = finite.sum(axis=1)
        rank = (p < x).sum(axis=1) + 0.5 * (p == x).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dec = np.floor(DECILES * rank / count)
        ok = (count >= min_history) & np.isfinite(atr_pct[lo:hi])
        out[lo:hi] = np.where(ok, np.clip(dec, 0, DECILES - 1), -1).astype(np.int64)
    return out


@dataclass(frozen=True, slots=True)
class StreamArrays:
    """Column arrays of one stream plus its ATR, ATR% decile and which candles are eligible."""

    candles: bl.Arrays
    decile: IntArray
    eligible: npt.NDArray[np.bool_]

    @classmethod
    def build(cls, candles: list[Candle], horizon: int) -> StreamArrays:
        a = bl.arrays(candles, atr_series(candles))
        with np.errstate(invalid="ignore", divide="ignore"):
            atr_pct = a.atr / a.close
        dec = volatility_deciles(atr_pct)
        n = a.close.shape[0]
        ok = (dec >= 0) & (a.atr > 0)
        ok[max(0, n - horizon) :] = False  # the forward window must be complete
        return cls(a, dec, ok)


def matched_twins(decile: IntArray, eligible: npt.NDArray[np.bool_], events: IntArray, reps: int,
                  rng: np.random.Generator) -> IntArray:
    """(len(events), reps) candle indexes drawn with replacement from the eligible candles of each
    event's decile; a row of -1 when that decile has no eligible candle."""
    out = np.full((events.shape[0], reps), -1, dtype=np.int64)
    pools = [np.flatnonzero(eligible & (decile == d)) for d in range(DECILES)]
    for row, i in enumerate(events):
        pool = pools[int(decile[i])]
        if pool.size:
            out[row] = pool[rng.integers(0, pool.size, size=reps)]
    return out


def forward_paths(a: bl.Arrays, idx: IntArray, sign: FloatArray, horizon: int) -> FloatArray:
    """(len(idx), horizon) direction-signed forward returns in ATR of candle idx (module docstring)."""
    cols = np.arange(1, horizon + 1, dtype=np.int64)
    entry = a.open[idx + 1]
    out: FloatArray = (a.close[idx[:, None] + cols[None, :]] - entry[:, None]) * (sign / a.atr[idx])[:, None]
    return out


@dataclass(slots=True)
class StreamEvents:
    """Everything one stream contributes to the study (plain arrays; crosses process boundaries).

    Per event: ``path`` (n, H) forward path in ATR; ``twin_path`` its twins' mean path; ``r`` net R and
    ``gross_r``; ``twin_r`` the twins' mean net R; ``twin_win`` their share with net R > 0;
    ``cost_atr`` the round-trip commission in ATR (2 * commission * close / ATR)."""

    symbol: str
    timeframe: str
    candles: int
    first_open_ms: int | None
    last_close_ms: int | None
    weeks: IntArray
    candidates: int
    pattern: list[str] = field(default_factory=list)
    signal_id: list[str] = field(default_factory=list)
    time_ms: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sign: FloatArray = field(default_factory=lambda: np.zeros(0))
    raw_score: FloatArray = field(default_factory=lambda: np.zeros(0))
    decile: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    twin_path: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    r: FloatArray = field(default_factory=lambda: np.zeros(0))
    gross_r: FloatArray = field(default_factory=lambda: np.zeros(0))
    twin_r: FloatArray = field(default_factory=lambda: np.zeros(0))
    twin_win: FloatArray = field(default_factory=lambda: np.zeros(0))
    cost_atr: FloatArray = field(default_factory=lambda: np.zeros(0))
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.pattern)


def measure_events(
    symbol: str,
    timeframe: str,
    candles: list[Candle],
    events: list[Signal],
    candidates: int,
    params: OutcomeParams,
    reps: int,
    seed: int,
) -> StreamEvents:
    """Forward paths, trades and matched twins of ``events`` (one stream; see the module docstring)."""
    h = params.horizon_candles
    sa = StreamArrays.build(candles, h)
    a = sa.candles
    weeks = np.unique(week_of(a.open_time))
    out = StreamEvents(symbol, timeframe, len(candles), int(a.open_time[0]) if len(candles) else None,
                       candles[-1].close_time_ms if candles else None, weeks, candidates)
    excluded = {"warm_up": 0, "end_of_data": 0, "invalid_geometry": 0, "no_twin": 0}
    n = len(candles)
    keep: list[tuple[int, Signal, float, float]] = []  # (candle index, signal, net R, gross R)
    open_times = [c.open_time_ms for c in candles]
    rng = np.random.default_rng(bl.stream_seed(seed, symbol, timeframe))
    for s in events:
        i = int(np.searchsorted(a.open_time, s.candle_time_ms))
        if i >= n or a.open_time[i] != s.candle_time_ms:
            raise ValueError(f"event {s.id} is not on a candle of {symbol} {timeframe}")
        if not sa.eligible[i]:
            excluded["end_of_data" if i >= n - h else "warm_up"] += 1
            continue
        try:
            res = grade(s, candles, open_times, params)
        except InvalidSignalGeometry:
            excluded["invalid_geometry"] += 1
            continue
        if res is None:  # cannot happen with a complete window; counted rather than trusted
            excluded["end_of_data"] += 1
            continue
        keep.append((i, s, res.r_multiple, res.gross_r))
    idx = np.array([k[0] for k in keep], dtype=np.int64)
    twins = matched_twins(sa.decile, sa.eligible, idx, reps, rng)
    has_twin = twins[:, 0] >= 0 if idx.size else np.zeros(0, dtype=bool)
    excluded["no_twin"] = int((~has_twin).sum())
    keep = [k for k, ok in zip(keep, has_twin, strict=True) if ok]
    idx, twins = idx[has_twin], twins[has_twin]
    out.excluded = excluded
    if not keep:
        out.path = np.zeros((0, h))
        out.twin_path = np.zeros((0, h))
        return out
    sig = [k[1] for k in keep]
    sign = np.array([1.0 if s.direction == "LONG" else -1.0 for s in sig])
    out.pattern = [s.pattern for s in sig]
    out.signal_id = [s.id for s in sig]
    out.time_ms = a.open_time[idx].copy()
    out.sign = sign
    out.raw_score = np.array([s.raw_confidence for s in sig])
    out.decile = sa.decile[idx].copy()
    out.r = np.array([k[2] for k in keep])
    out.gross_r = np.array([k[3] for k in keep])
    out.cost_atr = 2.0 * params.commission * a.close[idx] / a.atr[idx]
    out.path = forward_paths(a, idx, sign, h)
    # twins: the same path and the same exits in ATR units, graded in chunks to bound memory
    atr_e = a.atr[idx]
    k_stop = np.array([s.risk for s in sig]) / atr_e
    k_tp = np.array([abs(s.take_profits[0] - s.entry) if s.take_profits else np.nan for s in sig]) / atr_e
    twin_path = np.empty((idx.size, h))
    twin_r = np.empty(idx.size)
    twin_win = np.empty(idx.size)
    step = max(1, _CHUNK_CELLS // (reps * h))
    for lo in range(0, idx.size, step):
        hi = min(idx.size, lo + step)
        flat = twins[lo:hi].reshape(-1)
        tsign = np.repeat(sign[lo:hi], reps)
        twin_path[lo:hi] = forward_paths(a, flat, tsign, h).reshape(hi - lo, reps, h).mean(axis=1)
        atr_t = a.atr[flat]
        risk = np.repeat(k_stop[lo:hi], reps) * atr_t
        ref = a.close[flat]
        stop = ref - tsign * risk
        tp = ref + tsign * np.repeat(k_tp[lo:hi], reps) * atr_t
        g = bl.grade_many(a, flat, tsign, stop, tp, risk, params).r.reshape(hi - lo, reps)
        twin_r[lo:hi] = g.mean(axis=1)
        twin_win[lo:hi] = (g > 0).mean(axis=1)
    out.twin_path = twin_path
    out.twin_r = twin_r
    out.twin_win = twin_win
    return out
