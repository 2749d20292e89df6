"""From every stream's events to the study's cells: estimates, tests and corrections.

Cells: every (pattern, timeframe), every pattern pooled over timeframes (timeframe "all"), and every
timeframe pooled over patterns (pattern "all") plus everything pooled, at each raw-score threshold
tried (``min_score``: events with raw score >= it). Per cell, with one shared week-block bootstrap
(backtest/research/stats.py):

- net R of the events (mean, 95 % CI), of their matched random twins, and of the paired difference
  event - twins (95 % CI); one-sided p-values for "beats random" (difference > 0) and "worse";
- the direction-signed forward path in ATR (mean and 95 % band per horizon), the twins' path, and the
  excess path event - twins;
- the per-trade Sharpe ratio of net R with its deflated Sharpe ratio.

The test family (Holm and BH) is every cell with at least ``MIN_TEST_EVENTS`` events spread over at least
``MIN_TEST_WEEKS`` distinct weeks (pooled rows included: each is a claim the report could make): the week is
the bootstrap's resampling unit, and a bootstrap over a handful of clusters is too narrow to test with.
Every bootstrap spread is also widened by sqrt(G / (G - 1)) for the G weeks a cell's events fall in (the
usual small-sample correction of a cluster bootstrap, which otherwise understates the variance by that
factor squared). The deflated Sharpe counts as trials every cell with
an event at every threshold tried, plus ``extra_trials`` tried elsewhere; the variance of Sharpe
ratios across trials comes from the tested cells (smaller ones are too noisy to describe the spread).

With a split date, every cell is also measured on its events before and after the date (a stability
check, outside the test family): the Spearman correlation of the differences from random across the
pattern x timeframe cells with ``MIN_TEST_EVENTS`` events in both periods says whether the older data ranks the patterns the
way the newer data does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from backtest.research.measure import FloatArray, IntArray, StreamEvents
from backtest.research.stats import (
    Estimate,
    SharpeStats,
    WeekBootstrap,
    benjamini_hochberg,
    deflated_sharpe,
    estimate,
    expected_max_sharpe,
    holm,
    p_greater,
    p_less,
    percentile_interval,
    sharpe_stats,
    week_of,
)
from src.analysis import timeframes

MIN_TEST_EVENTS = 20
MIN_TEST_WEEKS = 20
ALL = "all"
SIGNIFICANCE = 0.05


@dataclass(frozen=True, slots=True)
class Band:
    """A mean path (one value per horizon 1..H) with its 95 % percentile band."""

    mean: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Cell:
    """One row of the study (see the module docstring); ``tested`` = in the multiple-testing family."""

    pattern: str
    timeframe: str
    min_score: float
    n: int
    weeks: int
    symbols: int
    net_r: Estimate
    random_r: Estimate
    diff_r: Estimate
    gross_r: float
    win_rate: float
    random_win_rate: float
    cost_atr: float
    p_beats: float
    p_worse: float
    tested: bool
    sharpe: SharpeStats | None
    path: Band
    random_path: Band
    excess_path: Band
    holm_p: float = math.nan
    bh_q: float = math.nan
    holm_p_worse: float = math.nan
    dsr: float = math.nan


@dataclass(slots=True)
class Study:
    """The study's cells with the family and trial counts behind their corrections."""

    cells: list[Cell]
    streams: list[StreamEvents]
    weeks: int
    bootstrap_reps: int
    trials: int
    family: int
    sr_variance: float
    sr0: float
    split_ms: int | None = None
    stability: list[tuple[Cell, Cell]] = field(default_factory=list)  # (before, after) per cell of the split
    stability_rho: float = math.nan  # Spearman of the differences before vs after, cells tested in both
    stability_cells: int = 0

    def find(self, pattern: str, timeframe: str = ALL, min_score: float | None = None) -> Cell | None:
        for c in self.cells:
            if c.pattern == pattern and c.timeframe == timeframe and (min_score is None or c.min_score == min_score):
                return c
        return None


@dataclass(slots=True)
class _Pool:
    """All streams' events concatenated."""

    pattern: np.ndarray  # object array of str
    timeframe: np.ndarray
    symbol: np.ndarray
    raw_score: FloatArray
    time_ms: IntArray
    pos: IntArray
    path: FloatArray
    twin_path: FloatArray
    r: FloatArray
    gross_r: FloatArray
    twin_r: FloatArray
    twin_win: FloatArray
    cost_atr: FloatArray


def _pool(streams: Sequence[StreamEvents], boot: WeekBootstrap, horizon: int) -> _Pool:
    def cat(name: str) -> FloatArray:
        parts = [getattr(s, name) for s in streams if s.n]
        return np.concatenate(parts) if parts else np.zeros(0)

    def cat2(name: str) -> FloatArray:
        parts = [getattr(s, name) for s in streams if s.n]
        return np.concatenate(parts) if parts else np.zeros((0, horizon))

    times = np.concatenate([s.time_ms for s in streams if s.n]) if any(s.n for s in streams) else np.zeros(0, np.int64)
    return _Pool(
        pattern=np.array([p for s in streams for p in s.pattern], dtype=object),
        timeframe=np.array([s.timeframe for s in streams for _ in range(s.n)], dtype=object),
        symbol=np.array([s.symbol for s in streams for _ in range(s.n)], dtype=object),
        raw_score=cat("raw_score"),
        time_ms=times.astype(np.int64),
        pos=boot.position(week_of(times)),
        path=cat2("path"),
        twin_path=cat2("twin_path"),
        r=cat("r"),
        gross_r=cat("gross_r"),
        twin_r=cat("twin_r"),
        twin_win=cat("twin_win"),
        cost_atr=cat("cost_atr"),
    )


def _band(values: FloatArray, boot: FloatArray) -> Band:
    lo, hi = percentile_interval(boot)
    return Band(tuple(values.mean(axis=0).tolist()), tuple(lo.tolist()), tuple(hi.tolist()))


def _widened(values: FloatArray, boot: FloatArray, clusters: int) -> FloatArray:
    """Bootstrap means spread around the sample mean by sqrt(G / (G - 1)) more (module docstring)."""
    if clusters < 2 or values.size == 0:
        return boot
    centre = values.mean(axis=0)
    out: FloatArray = centre + (boot - centre) * math.sqrt(clusters / (clusters - 1))
    return out


def _cell(pool: _Pool, mask: np.ndarray, boot: WeekBootstrap, pattern: str, timeframe: str, min_score: float) -> Cell:
    idx = np.flatnonzero(mask)
    pos = pool.pos[idx]
    g = int(np.unique(pos).size)

    def means(values: FloatArray) -> FloatArray:
        return _widened(values, boot.means(pos, values), g)

    r, tr = pool.r[idx], pool.twin_r[idx]
    diff = r - tr
    b_r, b_tr, b_diff = means(r), means(tr), means(diff)
    path, tpath = pool.path[idx], pool.twin_path[idx]
    d = estimate(diff, b_diff)
    return Cell(
        pattern=pattern,
        timeframe=timeframe,
        min_score=min_score,
        n=int(idx.size),
        weeks=g,
        symbols=int(np.unique(pool.symbol[idx]).size),
        net_r=estimate(r, b_r),
        random_r=estimate(tr, b_tr),
        diff_r=d,
        gross_r=float(pool.gross_r[idx].mean()),
        win_rate=float((r > 0).mean()),
        random_win_rate=float(pool.twin_win[idx].mean()),
        cost_atr=float(np.median(pool.cost_atr[idx])),
        p_beats=p_greater(d.mean, b_diff),
        p_worse=p_less(d.mean, b_diff),
        tested=idx.size >= MIN_TEST_EVENTS and g >= MIN_TEST_WEEKS,
        sharpe=sharpe_stats(r),
        path=_band(path, means(path)),
        random_path=_band(tpath, means(tpath)),
        excess_path=_band(path - tpath, means(path - tpath)),
    )


def run_study(
    streams: Sequence[StreamEvents],
    *,
    horizon: int,
    bootstrap_reps: int,
    seed: int,
    thresholds: Sequence[float] = (0.0,),
    extra_trials: int = 0,
    split_ms: int | None = None,
) -> Study:
    """Cells, corrections and deflated Sharpe ratios over every stream's events."""
    weeks = np.unique(np.concatenate([s.weeks for s in streams])) if streams else np.zeros(0, np.int64)
    boot = WeekBootstrap(weeks, bootstrap_reps, seed)
    pool = _pool(streams, boot, horizon)
    tfs = sorted({s.timeframe for s in streams}, key=timeframes.sort_key)
    patterns = sorted(set(pool.pattern.tolist()))
    cells: list[Cell] = []
    for thr in thresholds:
        above = pool.raw_score >= thr
        for p in patterns:
            for tf in tfs:
                m = above & (pool.pattern == p) & (pool.timeframe == tf)
                if m.any():
                    cells.append(_cell(pool, m, boot, p, tf, thr))
            m = above & (pool.pattern == p)
            if m.any() and len(tfs) > 1:
                cells.append(_cell(pool, m, boot, p, ALL, thr))
        if len(patterns) > 1:
            for tf in tfs:
                m = above & (pool.timeframe == tf)
                if m.any():
                    cells.append(_cell(pool, m, boot, ALL, tf, thr))
            if above.any() and len(tfs) > 1:
                cells.append(_cell(pool, above, boot, ALL, ALL, thr))
    tested = [i for i, c in enumerate(cells) if c.tested]
    hp = holm([cells[i].p_beats for i in tested])
    bq = benjamini_hochberg([cells[i].p_beats for i in tested])
    hw = holm([cells[i].p_worse for i in tested])
    for k, i in enumerate(tested):
        cells[i] = replace(cells[i], holm_p=hp[k], bh_q=bq[k], holm_p_worse=hw[k])
    srs = [c.sharpe.sr for c in cells if c.tested and c.sharpe is not None]
    var_sr = float(np.var(srs, ddof=1)) if len(srs) >= 2 else math.nan
    trials = len(cells) + max(0, extra_trials)
    sr0 = expected_max_sharpe(trials, var_sr) if math.isfinite(var_sr) else 0.0
    for i, c in enumerate(cells):
        if c.sharpe is not None:
            cells[i] = replace(c, dsr=deflated_sharpe(c.sharpe.sr, c.sharpe.n, c.sharpe.skew, c.sharpe.kurt, sr0))
    study = Study(cells, list(streams), int(weeks.size), bootstrap_reps, trials, len(tested), var_sr, sr0)
    if split_ms is not None:
        _add_stability(study, pool, boot, split_ms, thresholds[0])
    return study


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN below 3 pairs or without variance."""
    if len(x) < 3 or len(x) != len(y):
        return math.nan

    def ranks(v: Sequence[float]) -> FloatArray:
        a = np.asarray(v, dtype=np.float64)
        order = np.argsort(a, kind="stable")
        r = np.empty(a.size)
        r[order] = np.arange(a.size, dtype=np.float64)
        for value in np.unique(a):  # ties share their mean rank
            tie = a == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _add_stability(study: Study, pool: _Pool, boot: WeekBootstrap, split_ms: int, min_score: float) -> None:
    """Every cell of ``min_score`` measured again on the events before and after ``split_ms`` (not tests:
    a check whether a cell's difference from random on older data predicts the newer one)."""
    early = pool.time_ms < split_ms
    pairs: list[tuple[Cell, Cell]] = []
    for c in study.cells:
        if c.min_score != min_score:
            continue
        m = pool.raw_score >= min_score
        if c.pattern != ALL:
            m &= pool.pattern == c.pattern
        if c.timeframe != ALL:
            m &= pool.timeframe == c.timeframe
        if (m & early).any() and (m & ~early).any():
            pairs.append((_cell(pool, m & early, boot, c.pattern, c.timeframe, min_score),
                          _cell(pool, m & ~early, boot, c.pattern, c.timeframe, min_score)))
    # a diagnostic, not a test: cells with enough events on both sides (the week count only guards the tests)
    both = [(a, b) for a, b in pairs
            if min(a.n, b.n) >= MIN_TEST_EVENTS and a.pattern != ALL and a.timeframe != ALL]
    study.split_ms = split_ms
    study.stability = pairs
    study.stability_cells = len(both)
    study.stability_rho = spearman([a.diff_r.mean for a, _ in both], [b.diff_r.mean for _, b in both])
