"""Checking an evidence model on data it was not fitted on (the walk-forward of the fit, the benchmark).

- :func:`predict`: the model's estimates for arrays of graded candidates, exactly as ``EvidenceModel.assess``
  computes them for a Signal (tests check the two agree), vectorised.
- :func:`evaluate`: reliability of ``p_win`` (ECE over 10 equal-width bins, against 1[net R > 0]); per
  (pattern, timeframe) cell with >= ``min_n`` candidates whether the cell's shown interval (the means of its
  candidates' ``expected_r_lo`` and ``expected_r_hi``) covers the cell's realised mean net R (``coverage``);
  whether the model's expected R is right within its OWN uncertainty and the realised mean's sampling error,
  |realised - predicted| <= z sqrt(var(expected R) + se^2) (``coverage_of_mean``: the check that does not
  depend on the reference n of the shown interval); the Spearman rank correlation of predicted against
  realised cell means; the realised mean R of the candidates the model would make trade calls of
  (confidence >= ``min_confidence`` and R:R >= ``trade_min_rr``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, fields
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from src.analysis.evidence import P_MAX, P_MIN, RR_RANGE, EvidenceModel, family_of
from src.analysis.evidence_fit import WEEK_MS, Samples, baseline_predictions, cluster_var
from src.analysis.pickling import register_frozen
from src.analysis.reliability import ece, reliability

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class Predictions:
    p_win: FloatArray
    expected_r: FloatArray
    lo: FloatArray
    hi: FloatArray
    confidence: FloatArray  # P(E[net R] > 0)


def predict(model: EvidenceModel, s: Samples) -> Predictions:
    """Vectorised ``EvidenceModel.assess`` over graded candidates (geometry from the arrays)."""
    n = len(s)
    base_r = np.empty(n)
    base_p = np.empty(n)
    for tf in set(s.timeframe.tolist()):
        m = s.timeframe == tf
        base_r[m], base_p[m] = baseline_predictions(model.baseline_for(tf), s.rr[m], s.stop_atr[m], s.cost_r[m])
    shift = np.zeros(n)
    var = np.zeros(n)
    dp = np.zeros(n)
    trade_var = np.empty(n)
    factor = np.empty(n)
    for i, k in enumerate(zip(s.pattern.tolist(), s.timeframe.tolist(), strict=True)):
        shift[i], var[i], dp[i] = model.cell_terms(*k)  # both memoised by the model
        trade_var[i], factor[i] = model.geometry_terms(*k)
    rr = np.clip(s.rr, *RR_RANGE)
    var = var + np.maximum(base_p * (1.0 - base_p) * (rr + 1.0) ** 2 - trade_var, 0.0) * factor
    expected = base_r + shift
    sd = np.sqrt(var)
    z = NormalDist().inv_cdf(0.5 + model.interval / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = np.where(sd > 0, 0.5 * np.vectorize(math.erfc)(-expected / sd / math.sqrt(2)), (expected > 0) * 1.0)
    return Predictions(np.clip(base_p + dp, P_MIN, P_MAX), expected, expected - z * sd, expected + z * sd, conf)


@dataclass(slots=True)
class CellCheck:
    pattern: str
    timeframe: str
    n: int
    realised: float
    realised_se: float
    predicted: float
    lo: float
    hi: float
    covered: bool
    mean_sd: float  # sd of the model's expected R for the cell (no reference-n scatter)


@dataclass(slots=True)
class Evaluation:
    n: int
    ece: float
    reliability: list[tuple[float, float, int, float, float]]
    cells: list[CellCheck] = field(default_factory=list)
    coverage: float = float("nan")
    coverage_of_mean: float = float("nan")
    spearman: float = float("nan")
    trade_calls: int = 0
    trade_mean_r: float | None = None
    others_mean_r: float | None = None
    mean_r: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "ece": self.ece, "coverage": self.coverage, "coverage_of_mean": self.coverage_of_mean,
            "spearman": self.spearman, "trade_calls": self.trade_calls, "trade_mean_r": self.trade_mean_r,
            "mean_r": self.mean_r, "cells": [{f.name: getattr(c, f.name) for f in fields(c)} for c in self.cells],
            "reliability": [list(r) for r in self.reliability],
        }


def spearman(x: FloatArray, y: FloatArray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN with fewer than 3 points."""
    if x.shape[0] < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(x: FloatArray) -> FloatArray:
    """1-based ranks, ties get their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = np.arange(1, x.shape[0] + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return np.asarray(sums[inv] / counts[inv], dtype=np.float64)


def evaluate(model: EvidenceModel, s: Samples, *, min_n: int = 20, min_confidence: float = 0.9,
             trade_min_rr: float = 1.0, preds: Predictions | None = None) -> Evaluation:
    """See the module docstring."""
    p = preds or predict(model, s)
    win = (s.r > 0).astype(np.float64)
    rows = reliability(p.p_win.tolist(), win.tolist())
    ev = Evaluation(len(s), ece(p.p_win.tolist(), win.tolist()),
                    [(r.lo, r.hi, r.n, r.mean_p, r.hit_rate) for r in rows], mean_r=float(s.r.mean()) if len(s) else math.nan)
    idx: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, k in enumerate(zip(s.pattern.tolist(), s.timeframe.tolist(), strict=True)):
        idx[k].append(i)
    weeks = s.time_ms // WEEK_MS
    for (pattern, tf), ii in sorted(idx.items()):
        if len(ii) < min_n:
            continue
        a = np.array(ii)
        realised = float(s.r[a].mean())
        lo, hi = float(p.lo[a].mean()), float(p.hi[a].mean())
        ev.cells.append(CellCheck(pattern, tf, len(ii), realised, math.sqrt(cluster_var(s.r[a], weeks[a])),
                                  float(p.expected_r[a].mean()), lo, hi, lo <= realised <= hi,
                                  math.sqrt(model.mean_variance(pattern, tf))))
    if ev.cells:
        ev.coverage = sum(c.covered for c in ev.cells) / len(ev.cells)
        z = NormalDist().inv_cdf(0.5 + model.interval / 2)
        ok = sum(abs(c.realised - c.predicted) <= z * math.sqrt(c.mean_sd ** 2 + c.realised_se ** 2) for c in ev.cells)
        ev.coverage_of_mean = ok / len(ev.cells)
        ev.spearman = spearman(np.array([c.predicted for c in ev.cells]), np.array([c.realised for c in ev.cells]))
    calls = (p.confidence >= min_confidence) & (s.rr >= trade_min_rr)
    ev.trade_calls = int(calls.sum())
    ev.trade_mean_r = float(s.r[calls].mean()) if calls.any() else None
    ev.others_mean_r = float(s.r[~calls].mean()) if (~calls).any() else None
    return ev


def families(s: Samples) -> list[str]:
    return sorted({family_of(p) for p in s.pattern.tolist()})


@dataclass(frozen=True, slots=True)
class RefinementCheck:
    """Does a feature predict a pattern's excess over its matched twins OUT of sample?

    On the training set: per-cell standardised feature, one pooled least-squares slope of the excess on it.
    On the test set: the correlation of that prediction with the realised excess and the realised mean net R
    of the top and bottom fifth of the prediction."""

    feature: str
    slope: float
    test_corr: float
    top_fifth_r: float
    bottom_fifth_r: float
    n_test: int


REFINEMENT_FEATURES = ("raw", "rr", "stop_atr", "vol_decile", "trend")


def _feature_values(s: Samples, name: str) -> FloatArray:
    if name == "rr":
        return np.log(np.clip(s.rr, 0.02, 20.0))
    if name == "stop_atr":
        return np.log(np.clip(s.stop_atr, 0.05, 50.0))
    return np.asarray(getattr(s, name), dtype=np.float64)


def refinement_check(train: Samples, test: Samples, name: str) -> RefinementCheck:
    """See :class:`RefinementCheck`; the excess is net R minus the candidate's same-direction twins' mean."""
    def standardised(s: Samples, stats: dict[tuple[str, str], tuple[float, float]]) -> FloatArray:
        x = _feature_values(s, name)
        out = np.zeros_like(x)
        for i, k in enumerate(zip(s.pattern.tolist(), s.timeframe.tolist(), strict=True)):
            m, sd = stats.get(k, (0.0, 0.0))
            out[i] = (x[i] - m) / sd if sd > 0 else 0.0
        return out

    stats: dict[tuple[str, str], tuple[float, float]] = {}
    xt = _feature_values(train, name)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, k in enumerate(zip(train.pattern.tolist(), train.timeframe.tolist(), strict=True)):
        groups[k].append(i)
    for k, ii in groups.items():
        v = xt[ii]
        stats[k] = (float(v.mean()), float(v.std()))
    def excess(s: Samples) -> FloatArray:
        return np.where(np.isfinite(s.twin_r), s.r - s.twin_r, 0.0)

    a = standardised(train, stats)
    e = excess(train)
    slope = float((a * (e - e.mean())).sum() / max((a * a).sum(), 1e-12))
    b = standardised(test, stats)
    pred = slope * b
    et = excess(test)
    corr = float(np.corrcoef(pred, et)[0, 1]) if test.r.shape[0] > 2 and pred.std() > 0 else 0.0
    q = np.quantile(pred, [0.2, 0.8]) if test.r.shape[0] else np.array([0.0, 0.0])
    top = test.r[pred >= q[1]]
    bottom = test.r[pred <= q[0]]
    return RefinementCheck(name, slope, corr, float(top.mean()) if top.size else math.nan,
                           float(bottom.mean()) if bottom.size else math.nan, int(test.r.shape[0]))


register_frozen(RefinementCheck)

