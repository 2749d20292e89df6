"""Inference for the event study: week-block bootstrap, Holm and Benjamini-Hochberg, deflated Sharpe.

- Week-block bootstrap: events are grouped by the ISO week (Monday 00:00 UTC) of their candle. One
  replication draws W weeks with replacement from the W weeks the data covers and keeps every event of
  a drawn week as many times as the week was drawn. The SAME draw serves every symbol, timeframe and
  pattern, so events of correlated symbols in one week stay together (cross-symbol correlation and
  within-week clustering are kept) and differences between cells are bootstrapped jointly. A mean is
  a ratio (sum over drawn weeks / events in drawn weeks); a replication that draws no event of a cell
  is left out of that cell's percentiles.
- Intervals are bootstrap percentile intervals. The one-sided p-value for "mean > 0" resamples under
  the null by centring: p = (1 + #{b: m*_b - m >= m}) / (1 + B), B = replications with events.
- Holm (1979) step-down and Benjamini-Hochberg (1995) step-up adjusted p-values over one family.
- Deflated Sharpe ratio (Bailey & Lopez de Prado 2014): with N trials whose Sharpe ratios vary with
  variance V, the expected maximum Sharpe under the null is
  SR0 = sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e))), g = Euler-Mascheroni;
  DSR = Phi((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2)) for a series of T
  observations with (non-excess) kurtosis ``kurt``. SR, SR0 per observation (here: per trade).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_MONDAY_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday: ISO weeks start on Monday 1970-01-05
EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


def week_of(time_ms: npt.ArrayLike) -> IntArray:
    """ISO week number (weeks since Monday 1970-01-05 00:00 UTC) of epoch-ms times."""
    return (np.asarray(time_ms, dtype=np.int64) - _MONDAY_OFFSET_MS) // WEEK_MS


class WeekBootstrap:
    """Replications of whole weeks drawn with replacement; see the module docstring.

    ``counts[b, k]`` is how often replication ``b`` drew week ``weeks[k]``.
    """

    def __init__(self, weeks: Sequence[int] | IntArray, reps: int, seed: int) -> None:
        self.weeks: IntArray = np.unique(np.asarray(weeks, dtype=np.int64))
        if self.weeks.size == 0:
            raise ValueError("the bootstrap needs at least one week of data")
        if reps < 1:
            raise ValueError("bootstrap replications must be >= 1")
        w = self.weeks.size
        draws = np.random.default_rng(seed).integers(0, w, size=(reps, w))
        counts = np.zeros((reps, w), dtype=np.float64)
        np.add.at(counts, (np.repeat(np.arange(reps), w), draws.reshape(-1)), 1.0)
        self.counts = counts
        self.reps = reps

    def position(self, event_weeks: IntArray) -> IntArray:
        """Column of each event's week; every week must be one the data covers."""
        pos = np.searchsorted(self.weeks, event_weeks)
        if pos.size and (pos.max() >= self.weeks.size or not np.array_equal(self.weeks[pos], event_weeks)):
            raise ValueError("an event lies in a week outside the bootstrap's weeks")
        return pos.astype(np.int64)

    def weights(self, pos: IntArray) -> FloatArray:
        """(reps, n): how many times each event is kept in each replication."""
        return self.counts[:, pos]

    def means(self, pos: IntArray, values: FloatArray) -> FloatArray:
        """(reps, *values.shape[1:]) bootstrap means of ``values`` (one row per event); NaN where a
        replication drew none of these events."""
        w = self.weeks.size
        sums = np.zeros((w, *values.shape[1:]), dtype=np.float64)
        np.add.at(sums, pos, values)
        n = np.bincount(pos, minlength=w).astype(np.float64)
        boot_n = self.counts @ n
        boot_sum = np.tensordot(self.counts, sums, axes=(1, 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            shape = (-1,) + (1,) * (values.ndim - 1)
            out: FloatArray = boot_sum / boot_n.reshape(shape)
        return out


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean with its bootstrap percentile interval."""

    mean: float
    lo: float
    hi: float

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi


def percentile_interval(boot: FloatArray, level: float = 0.95) -> tuple[FloatArray, FloatArray]:
    """Elementwise percentile interval over axis 0, ignoring NaN replications."""
    a = (1.0 - level) / 2.0
    valid = ~np.isnan(boot)
    if not valid.any():
        nan = np.full(boot.shape[1:], np.nan)
        return nan, nan
    lo = np.nanpercentile(boot, 100 * a, axis=0)
    hi = np.nanpercentile(boot, 100 * (1 - a), axis=0)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def estimate(values: FloatArray, boot: FloatArray, level: float = 0.95) -> Estimate:
    """Sample mean of ``values`` with the interval of its bootstrap means ``boot`` (reps,)."""
    if values.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    lo, hi = percentile_interval(boot, level)
    return Estimate(float(values.mean()), float(lo), float(hi))


def p_greater(mean: float, boot: FloatArray) -> float:
    """One-sided bootstrap p-value of H0 "true mean <= 0" (centred bootstrap; module docstring)."""
    b = boot[~np.isnan(boot)]
    if b.size == 0 or not math.isfinite(mean):
        return math.nan
    return float((1 + np.count_nonzero(b - mean >= mean)) / (1 + b.size))


def p_less(mean: float, boot: FloatArray) -> float:
    """One-sided bootstrap p-value of H0 "true mean >= 0"."""
    return p_greater(-mean, -boot)


def holm(p: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values; NaN entries are not in the family and stay NaN."""
    arr = np.asarray(p, dtype=np.float64)
    out = np.full(arr.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(arr))
    m = idx.size
    if m == 0:
        return [float(x) for x in out]
    order = idx[np.argsort(arr[idx], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * arr[order])
    out[order] = np.minimum(1.0, adj)
    return [float(x) for x in out]


def benjamini_hochberg(p: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN entries are not in the family."""
    arr = np.asarray(p, dtype=np.float64)
    out = np.full(arr.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(arr))
    m = idx.size
    if m == 0:
        return [float(x) for x in out]
    order = idx[np.argsort(arr[idx], kind="stable")]
    scaled = arr[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(scaled[::-1])[::-1]
    out[order] = np.minimum(1.0, adj)
    return [float(x) for x in out]


@dataclass(frozen=True, slots=True)
class SharpeStats:
    """Per-observation Sharpe ratio of a series with its skewness and (non-excess) kurtosis."""

    sr: float
    skew: float
    kurt: float
    n: int


def sharpe_stats(x: FloatArray) -> SharpeStats | None:
    """None for fewer than 2 observations or no variance."""
    n = int(x.size)
    if n < 2:
        return None
    mu = float(x.mean())
    d = x - mu
    m2 = float(np.mean(d**2))
    sd = float(x.std(ddof=1))
    if not sd > 0 or not m2 > 0:
        return None
    skew = float(np.mean(d**3) / m2**1.5)
    kurt = float(np.mean(d**4) / m2**2)
    return SharpeStats(mu / sd, skew, kurt, n)


def expected_max_sharpe(n_trials: int, var_sr: float) -> float:
    """SR0: the expected maximum of ``n_trials`` Sharpe ratios with variance ``var_sr`` under the null."""
    if n_trials <= 1 or not var_sr > 0:
        return 0.0
    z1 = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(var_sr) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe(sr: float, n_obs: int, skew: float, kurt: float, sr0: float) -> float:
    """P(true Sharpe > sr0) given the estimate ``sr`` from ``n_obs`` observations (the DSR when
    ``sr0`` is the expected maximum Sharpe of the trials)."""
    if n_obs < 2:
        return math.nan
    denom = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if not denom > 0:
        return math.nan
    return _NORMAL.cdf((sr - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denom))
