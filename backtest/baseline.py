"""Random-entry baseline with identical exits (ANALYSIS-NOTES 4.4, baseline 1).

For every strategy trade, each replication draws one random entry candle ``i`` of the same stream,
uniformly among eligible candles of the same walk-forward fold as the trade (the whole run without
walk-forward). Eligible: ATR(14) exists at ``i`` and ``i + horizon`` candles exist after it, so every
random trade resolves. The random trade copies the real trade's direction and geometry in ATR
units: with ``k_stop = |entry - stop| / ATR`` and ``k_tp = |tp1 - entry| / ATR`` taken at the
real signal's confirming candle, the random "signal" has entry reference ``close[i]``, stop
``close[i] -/+ k_stop * ATR[i]`` and target ``close[i] +/- k_tp * ATR[i]``. It is then graded by the
rules of src/analysis/outcomes.py (next open entry, stop first, gaps, horizon, fees, slippage).

The grading here is a numpy-vectorised copy of those rules (thousands of replications would take
minutes through the per-candle follower); tests/test_backtest_run.py checks it against
``outcomes.resolve`` trade by trade. Seeds derive from (seed, symbol, timeframe), so results do not
depend on ``--jobs`` or file order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from src.analysis.outcomes import OutcomeParams
from src.analysis.types import Candle

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_CHUNK_CELLS = 4_000_000  # cells (rows * horizon) graded at once; bounds memory to ~100 MB


@dataclass(frozen=True, slots=True)
class Geometry:
    """One real trade's direction (+1 LONG / -1 SHORT), stop and first-target distances in ATR,
    and the [start, end) open-time range its random twins are drawn from."""

    sign: int
    k_stop: float
    k_tp: float | None
    range_start_ms: int
    range_end_ms: int


@dataclass(frozen=True, slots=True)
class Arrays:
    open_time: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    atr: FloatArray  # NaN until the ATR exists


def arrays(candles: list[Candle], atrs: list[float | None]) -> Arrays:
    return Arrays(
        np.array([c.open_time_ms for c in candles], dtype=np.int64),
        np.array([c.open for c in candles], dtype=np.float64),
        np.array([c.high for c in candles], dtype=np.float64),
        np.array([c.low for c in candles], dtype=np.float64),
        np.array([c.close for c in candles], dtype=np.float64),
        np.array([np.nan if a is None else a for a in atrs], dtype=np.float64),
    )


def stream_seed(seed: int, symbol: str, timeframe: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}|{symbol}|{timeframe}".encode()).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class Graded:
    """Vectorised grading result: R after fees and the outcome code (0 LOSS, 1 WIN, 2 EXPIRED)."""

    r: FloatArray
    outcome: npt.NDArray[np.int8]


def grade_many(
    a: Arrays, idx: IntArray, sign: FloatArray, stop: FloatArray, tp: FloatArray, risk: FloatArray, params: OutcomeParams
) -> Graded:
    """Grade signals confirmed at candle indexes ``idx`` (entry at ``idx + 1``) with the outcome rules.

    ``tp`` is NaN for "no target". Every ``idx + horizon`` must be a valid candle index.
    """
    h = params.horizon_candles
    slip = params.slippage_bps / 10_000.0
    n = idx.shape[0]
    r_out = np.empty(n, dtype=np.float64)
    code_out = np.empty(n, dtype=np.int8)
    step = max(1, _CHUNK_CELLS // h)
    cols = np.arange(1, h + 1, dtype=np.int64)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        win = idx[lo:hi, None] + cols[None, :]
        o, hh, ll, cc = a.open[win], a.high[win], a.low[win], a.close[win]
        s = sign[lo:hi, None]
        st, tg = stop[lo:hi, None], tp[lo:hi, None]
        has_tp = ~np.isnan(tg)
        stop_gap = (o - st) * s <= 0
        tp_gap = has_tp & ((o - tg) * s >= 0)
        stop_touch = np.where(s > 0, ll <= st, hh >= st)
        tp_touch = has_tp & np.where(s > 0, hh >= tg, ll <= tg)
        any_ev = stop_gap | tp_gap | stop_touch | tp_touch
        hit = any_ev.any(axis=1)
        k = np.where(hit, any_ev.argmax(axis=1), h - 1)
        rows = np.arange(hi - lo)
        sg, tgp, stt = stop_gap[rows, k], tp_gap[rows, k], stop_touch[rows, k]
        o_k = o[rows, k]
        s1 = sign[lo:hi]
        price = np.where(
            ~hit,
            cc[rows, k],
            np.where(sg | tgp, o_k, np.where(stt, stop[lo:hi], tp[lo:hi])),
        )
        code = np.where(~hit, 2, np.where(sg | (~tgp & stt), 0, 1)).astype(np.int8)
        entry_fill = o[:, 0] * (1.0 + s1 * slip)
        exit_fill = price * (1.0 - s1 * slip)
        gross = (exit_fill - entry_fill) * s1 / risk[lo:hi]
        fees = params.commission * (entry_fill + exit_fill) / risk[lo:hi]
        r_out[lo:hi] = gross - fees
        code_out[lo:hi] = code
    return Graded(r_out, code_out)


def eligible_range(a: Arrays, start_ms: int, end_ms: int, horizon: int) -> tuple[int, int]:
    """[lo, hi) candle indexes usable as random confirming candles inside [start_ms, end_ms)."""
    n = a.open_time.shape[0]
    valid = np.flatnonzero(~np.isnan(a.atr) & (a.atr > 0))
    first_atr = int(valid[0]) if valid.size else n
    lo = max(first_atr, int(np.searchsorted(a.open_time, start_ms, side="left")))
    hi = min(n - horizon, int(np.searchsorted(a.open_time, end_ms, side="left")))
    if hi <= lo:  # the fold is too short: fall back to the whole stream
        lo, hi = first_atr, n - horizon
    return lo, max(lo, hi)


def random_baseline(
    a: Arrays, geoms: list[Geometry], params: OutcomeParams, reps: int, seed: int
) -> FloatArray | None:
    """R after fees of ``reps`` random twins of every trade: shape (reps, len(geoms)); None when the
    stream is too short for even one eligible candle."""
    if not geoms:
        return np.zeros((reps, 0), dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = np.empty((reps, len(geoms)), dtype=np.int64)
    for j, g in enumerate(geoms):
        lo, hi = eligible_range(a, g.range_start_ms, g.range_end_ms, params.horizon_candles)
        if hi <= lo:
            return None
        idx[:, j] = rng.integers(lo, hi, size=reps)
    flat = idx.reshape(-1)
    sign = np.tile(np.array([g.sign for g in geoms], dtype=np.float64), reps)
    k_stop = np.tile(np.array([g.k_stop for g in geoms], dtype=np.float64), reps)
    k_tp = np.tile(np.array([np.nan if g.k_tp is None else g.k_tp for g in geoms], dtype=np.float64), reps)
    ref = a.close[flat]
    atr = a.atr[flat]
    risk = k_stop * atr
    stop = ref - sign * risk
    tp = ref + sign * k_tp * atr
    graded = grade_many(a, flat, sign, stop, tp, risk, params)
    return graded.r.reshape(reps, len(geoms))


@dataclass(frozen=True, slots=True)
class BaselineSummary:
    """Expectancy (mean R) of the strategy against the replications' expectancies."""

    trades: int
    replications: int
    strategy_expectancy_r: float
    mean: float
    p5: float
    p95: float
    beat_share: float  # share of replications whose expectancy the strategy beats (strictly)
    p_value: float  # (1 + #{random >= strategy}) / (1 + replications)

    def to_dict(self) -> dict[str, float | int]:
        return {
            "trades": self.trades,
            "replications": self.replications,
            "strategy_expectancy_r": self.strategy_expectancy_r,
            "random_expectancy_r_mean": self.mean,
            "random_expectancy_r_p5": self.p5,
            "random_expectancy_r_p95": self.p95,
            "strategy_beats_share": self.beat_share,
            "p_value": self.p_value,
        }


def summarise(strategy_r: FloatArray, random_r: FloatArray) -> BaselineSummary | None:
    """Compare mean R of ``strategy_r`` (n,) with each row of ``random_r`` (reps, n)."""
    n = strategy_r.shape[0]
    if n == 0 or random_r.shape[0] == 0:
        return None
    strat = float(strategy_r.mean())
    means = random_r.mean(axis=1)
    reps = means.shape[0]
    return BaselineSummary(
        trades=n,
        replications=reps,
        strategy_expectancy_r=strat,
        mean=float(means.mean()),
        p5=float(np.percentile(means, 5)),
        p95=float(np.percentile(means, 95)),
        beat_share=float((strat > means).mean()),
        p_value=float((1 + (means >= strat).sum()) / (1 + reps)),
    )
