"""Fitting the evidence model (src/analysis/evidence.py) from graded candidates and their random twins. Pure.

Input: every population candidate of the training data with its net R (:class:`Samples`) and its matched
random twins (:class:`Twins`, see backtest/evidence_data.py). Steps:

1. **Baseline per timeframe** (and ``*`` pooled, for other timeframes), on the twins only (half LONG, half
   SHORT: no drift assumed): E[net R] = a + b x cost_r (least squares); P(net R > 0) = logistic regression
   on log R:R, log stop-ATR, their product, piecewise-linear hinges of both logs at fixed knots, cost_r and
   log(R:R / cost_r) with its square (evidence.BASIS). Random entries of a driftless market earn minus their
   costs, and the twins agree (gross |E[R]| < 0.04 R in every geometry bin on the shipped data).
2. **Cells** (pattern, timeframe): n, mean net R with a cluster-robust 95 % CI (clusters = UTC weeks across
   symbols, small-sample factor G / (G - 1)), the excess e_i = R_i - (mean R of its same-direction twins)
   and the same for wins, per-trade variance sigma^2 of R, design effect (cluster-robust / iid variance).
3. **Units** = (cell, symbol, half-year) with >= ``min_unit_n`` candidates, PURGED (a candidate whose trade
   resolves in a later half-year is left out of its unit, so no outcome straddles two units). In units of
   sigma: z_u = mean excess / sigma, s_u^2 = the cell's per-trade variance of the excess x design effect /
   n_u / sigma^2.
4. **Empirical Bayes, per family** (the analyzer: ``wyckoff``, ``elliott``, ...):
   tau^2 (effects that PERSIST) = weighted mean of z_u x z_u' over pairs of units of the same cell from
   DIFFERENT half-years and DIFFERENT symbols (different half-years only when one symbol exists): noise and
   period drift do not correlate across those, a real effect does. omega^2 (DRIFT, per family and timeframe)
   = weighted mean of z_u^2 - s_u^2 minus tau^2; a group with fewer than ``min_group_units`` units takes
   the family's pooled value when that is larger. Weights 1 / (s_u^2 + omega^2), two passes. Both >= 0,
   and both are used at their upper one-sigma value (point + one jackknife SE over half-years).
5. **Shrinkage** per cell: V = sampling variance of the cell's excess / sigma^2 + omega^2 x sum over
   half-years (n_b / n)^2 (drift is shared by the symbols of one period); w = tau^2 / (tau^2 + V); shrunk
   excess = w x excess, variance w x V. The interval of a signal adds omega^2 (the coming period's drift)
   and the scatter of a ``reference_n``-signal average (evidence.py). The win-rate excess is shrunk the same
   way (its own tau_p^2, omega_p^2, in units of p (1 - p)).

The excess of a candidate is measured against its OWN twins of the same direction (same stream, half-year
and volatility decile): the market's drift in that period is removed from the pattern's effect. How far those
twins were from the drift-free baseline is the MARKET part; its period-to-period variance (omega_m^2,
estimated like omega^2 with tau = 0) is added to the drift, because the coming period's drift is unknown.

Nothing here reads a candidate's outcome to assess that candidate: a model is fitted on one set and applied
to another (the walk-forward and the hold-out benchmark check exactly that).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from src.analysis.evidence import (
    ANY_TIMEFRAME,
    BASIS,
    DEFAULT_INTERVAL,
    DEFAULT_REFERENCE_N,
    NO_ESTIMATE_VAR,
    RR_KNOTS,
    RR_RANGE,
    STOP_ATR_KNOTS,
    STOP_ATR_RANGE,
    BaselineFit,
    CellEstimate,
    EvidenceModel,
    Hyper,
    family_of,
    shrink,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
WEEK_MS = 7 * 86_400_000
MEAN_BASIS = ("const", "cost_r")
P_BASIS = (
    "const", "log_rr", "log_stop_atr", "log_rr_x_log_stop_atr", "cost_r", "hinge_log_rr_0.1", "hinge_log_rr_0.3",
    "hinge_log_rr_1", "hinge_log_rr_3", "hinge_log_stop_atr_2", "hinge_log_stop_atr_4", "hinge_log_stop_atr_8",
    "log_rr_over_cost", "log_rr_over_cost_sq",
)


def half_year(t_ms: int) -> int:
    """Calendar half-year index of an instant (UTC): 2 x year + (1 from July)."""
    d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
    return 2 * d.year + (1 if d.month >= 7 else 0)


@dataclass(slots=True)
class Samples:
    """Graded population candidates (parallel arrays, one entry per candidate)."""

    symbol: npt.NDArray[np.str_]
    timeframe: npt.NDArray[np.str_]
    pattern: npt.NDArray[np.str_]
    time_ms: IntArray
    resolved_ms: IntArray
    direction: IntArray  # +1 LONG, -1 SHORT
    rr: FloatArray
    stop_atr: FloatArray
    cost_r: FloatArray
    r: FloatArray
    twin_r: FloatArray  # mean net R of the candidate's SAME-direction twins (NaN: none)
    twin_win: FloatArray  # their share with net R > 0
    raw: FloatArray  # analyzer raw score (refinement checks only)
    vol_decile: IntArray  # ATR/close decile in its stream and half-year (refinement checks only)
    trend: FloatArray  # direction x (close - EMA100) / ATR (refinement checks only)

    def __len__(self) -> int:
        return int(self.r.shape[0])

    def subset(self, mask: BoolArray) -> Samples:
        return Samples(*(getattr(self, f.name)[mask] for f in fields(self)))


@dataclass(slots=True)
class Twins:
    """Random twins (parallel arrays): their timeframe, geometry (copied from their candidate), costs, net R."""

    timeframe: npt.NDArray[np.str_]
    time_ms: IntArray
    rr: FloatArray
    stop_atr: FloatArray
    cost_r: FloatArray
    r: FloatArray

    def __len__(self) -> int:
        return int(self.r.shape[0])

    def subset(self, mask: BoolArray) -> Twins:
        return Twins(*(getattr(self, f.name)[mask] for f in fields(self)))


@dataclass(slots=True)
class FitOptions:
    interval: float = DEFAULT_INTERVAL
    reference_n: int = DEFAULT_REFERENCE_N
    cost_per_side: float = 0.0004
    min_unit_n: int = 5
    min_group_units: int = 12
    ridge: float = 1e-3


@dataclass(slots=True)
class FitReport:
    """What the fit estimated (relative to per-trade variance), for the model's ``meta`` and the summary."""

    tau_rel: dict[str, float] = field(default_factory=dict)  # family -> tau^2 used (point + 1 jackknife SE)
    tau_rel_p: dict[str, float] = field(default_factory=dict)
    tau_rel_point: dict[str, float] = field(default_factory=dict)  # the point estimates
    tau_rel_p_point: dict[str, float] = field(default_factory=dict)
    effect_drift_rel: dict[str, float] = field(default_factory=dict)  # "family|tf" -> omega_e^2
    market_drift_rel: dict[str, float] = field(default_factory=dict)  # "family|tf" -> omega_m^2
    effect_drift_rel_p: dict[str, float] = field(default_factory=dict)
    market_drift_rel_p: dict[str, float] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)  # "family|tf" -> units used
    pairs: dict[str, int] = field(default_factory=dict)  # family -> cross pairs used for tau

    def to_dict(self) -> dict[str, Any]:
        return {f.name: dict(sorted(getattr(self, f.name).items())) for f in fields(self)}


# ---------------------------------------------------------------------------------------------- regression


def design(names: Sequence[str], rr: FloatArray, stop_atr: FloatArray, cost_r: FloatArray) -> FloatArray:
    """Rows of basis values: the same definitions as ``evidence._basis_values``, vectorised (a test checks
    the two agree)."""
    lr = np.log(np.clip(rr, *RR_RANGE))
    ls = np.log(np.clip(stop_atr, *STOP_ATR_RANGE))
    lrc = np.log(np.clip(np.clip(rr, *RR_RANGE) / np.maximum(cost_r, 1e-4), 0.05, 1000.0))
    cols: dict[str, FloatArray] = {
        "const": np.ones_like(lr),
        "cost_r": cost_r,
        "log_rr": lr,
        "log_stop_atr": ls,
        "log_rr_x_log_stop_atr": lr * ls,
        "log_rr_over_cost": lrc,
        "log_rr_over_cost_sq": lrc * lrc,
    }
    for k in RR_KNOTS:
        cols[f"hinge_log_rr_{k:g}"] = np.maximum(0.0, lr - math.log(k))
    for k in STOP_ATR_KNOTS:
        cols[f"hinge_log_stop_atr_{k:g}"] = np.maximum(0.0, ls - math.log(k))
    unknown = [n for n in names if n not in cols]
    if unknown or set(cols) != set(BASIS):
        raise ValueError(f"basis out of sync with evidence.BASIS: {unknown or sorted(set(cols) ^ set(BASIS))}")
    return np.column_stack([cols[n] for n in names])


def least_squares(x: FloatArray, y: FloatArray) -> FloatArray:
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return np.asarray(coef, dtype=np.float64)


def logistic(x: FloatArray, y: FloatArray, ridge: float = 1e-3, iterations: int = 50) -> FloatArray:
    """Logistic regression by iteratively reweighted least squares with a small ridge (not on the intercept)."""
    n, k = x.shape
    beta = np.zeros(k)
    pen = np.full(k, ridge * n)
    pen[0] = 0.0
    for _ in range(iterations):
        z = np.clip(x @ beta, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        w = np.maximum(p * (1 - p), 1e-9)
        grad = x.T @ (y - p) - pen * beta
        hess = (x * w[:, None]).T @ x + np.diag(pen)
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return beta


def fit_baseline(t: Twins, ridge: float) -> BaselineFit:
    """The random-entry baseline on ``t`` (see the module docstring)."""
    if len(t) < 50:
        raise ValueError(f"only {len(t)} random twins: too few to fit a baseline")
    xm = design(MEAN_BASIS, t.rr, t.stop_atr, t.cost_r)
    mean = least_squares(xm, t.r)
    xp = design(P_BASIS, t.rr, t.stop_atr, t.cost_r)
    pcoef = logistic(xp, (t.r > 0).astype(np.float64), ridge)
    return BaselineFit(
        tuple((n, float(c)) for n, c in zip(MEAN_BASIS, mean, strict=True)),
        tuple((n, float(c)) for n, c in zip(P_BASIS, pcoef, strict=True)),
        float(np.median(t.stop_atr)),
        len(t),
    )


def baseline_predictions(
    b: BaselineFit, rr: FloatArray, stop_atr: FloatArray, cost_r: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Vectorised BaselineFit.predict: (E[net R], P(net R > 0))."""
    names_m = [n for n, _ in b.mean_terms]
    names_p = [n for n, _ in b.p_terms]
    mean = design(names_m, rr, stop_atr, cost_r) @ np.array([c for _, c in b.mean_terms])
    z = design(names_p, rr, stop_atr, cost_r) @ np.array([c for _, c in b.p_terms])
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return mean, np.clip(p, 0.01, 0.99)


# ---------------------------------------------------------------------------------------------- statistics


def cluster_var(values: FloatArray, clusters: IntArray) -> float:
    """Cluster-robust variance of the mean of ``values`` with the small-sample factor G / (G - 1); the iid
    variance of the mean when there is a single cluster."""
    n = values.shape[0]
    if n < 2:
        return NO_ESTIMATE_VAR
    dev = values - values.mean()
    _, inv = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inv, weights=dev)
    g = sums.shape[0]
    if g < 2:
        return float(dev.var(ddof=1) / n)
    return float((sums * sums).sum() / (n * n) * g / (g - 1))


def mean_ci(values: FloatArray, clusters: IntArray, z: float = 1.959964) -> tuple[float, float, float]:
    """(mean, lo, hi): cluster-robust 95 % interval of the mean."""
    m = float(values.mean())
    half = z * math.sqrt(cluster_var(values, clusters)) if values.shape[0] > 1 else 0.0
    return m, m - half, m + half


@dataclass(slots=True)
class _Unit:
    cell: tuple[str, str]
    symbol: str
    block: int
    n: int
    z: float  # mean excess / sigma
    s2: float  # its sampling variance / sigma^2


def _moments(units: Sequence[_Unit], omega: float) -> tuple[float, float, float, int]:
    """(tau^2, second moment, the standard error of tau^2 under independent pairs, pairs) of the units of one
    group, weights 1 / (s2 + omega) per unit and their product per pair (the SE is then 1 / sqrt(sum of pair
    weights): each product z_u z_u' has variance (s_u^2 + omega)(s_u'^2 + omega) when nothing persists)."""
    by_cell: dict[tuple[str, str], list[_Unit]] = defaultdict(list)
    for u in units:
        by_cell[u.cell].append(u)
    num = den = 0.0
    pairs = 0
    for group in by_cell.values():
        multi_symbol = len({u.symbol for u in group}) > 1
        for a, b in itertools.combinations(group, 2):
            if a.block == b.block or (multi_symbol and a.symbol == b.symbol):
                continue
            w = 1.0 / ((a.s2 + omega) * (b.s2 + omega))
            num += w * a.z * b.z
            den += w
            pairs += 1
    tau = num / den if den > 0 else 0.0
    ws = [1.0 / (u.s2 + omega) for u in units]
    second = sum(w * (u.z * u.z - u.s2) for w, u in zip(ws, units, strict=True)) / sum(ws) if units else 0.0
    return tau, second, 1.0 / math.sqrt(den) if den > 0 else 0.0, pairs


def _tau(units: Sequence[_Unit], opts: FitOptions) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """tau^2 per family from the cross products of units (module docstring, step 4): (point estimate, point
    estimate + one standard error, pairs used); the SE is the larger of the jackknife over half-years and the
    SE under independent pairs. The shrinkage uses the upper value: "no persistent effect seen so far" must
    not become "no effect can ever be seen", or a pattern with a real, repeated edge in more data (or in the
    live record) could never move its estimate."""
    fams: dict[str, list[_Unit]] = defaultdict(list)
    for u in units:
        fams[family_of(u.cell[0])].append(u)

    def estimate(us: Sequence[_Unit]) -> tuple[float, float, int]:
        om, t, se, n_pairs = 0.0, 0.0, 0.0, 0
        for _ in range(2):  # the weights depend on omega: two passes
            t, second, se, n_pairs = _moments(us, max(om, 1e-6))
            t = max(0.0, t)
            om = max(0.0, second - t)
        return t, se, n_pairs

    tau: dict[str, float] = {}
    upper: dict[str, float] = {}
    pairs: dict[str, int] = {}
    for fam, us in fams.items():
        tau[fam], se, pairs[fam] = estimate(us)
        blocks = sorted({u.block for u in us})
        if len(blocks) >= 3:
            loo = np.array([estimate([u for u in us if u.block != b])[0] for b in blocks])
            se = max(se, math.sqrt((len(blocks) - 1) / len(blocks) * float(((loo - loo.mean()) ** 2).sum())))
        upper[fam] = tau[fam] + se
    return tau, upper, pairs


def _drift(units: Sequence[_Unit], tau: Mapping[str, float], opts: FitOptions) -> tuple[dict[str, float], dict[str, int]]:
    """omega^2 per "family|tf": second moment of the unit means beyond sampling, minus tau^2 of the family,
    plus one jackknife standard error (leave one half-year out): the drift is a variance estimated from few
    periods, and an interval built on an underestimate would claim too much, so the upper one-sigma value is
    used. A group with fewer than ``min_group_units`` units takes its family's pooled value when larger."""
    fams: dict[str, list[_Unit]] = defaultdict(list)
    groups: dict[str, list[_Unit]] = defaultdict(list)
    for u in units:
        fam = family_of(u.cell[0])
        fams[fam].append(u)
        groups[f"{fam}|{u.cell[1]}"].append(u)

    def estimate(us: Sequence[_Unit], t: float) -> float:
        om = 0.0
        for _ in range(2):
            _, second, _, _ = _moments(us, max(om, 1e-6))
            om = max(0.0, second - t)
        return om

    def upper(us: Sequence[_Unit], t: float) -> float:
        full = estimate(us, t)
        blocks = sorted({u.block for u in us})
        if len(blocks) < 3:
            return full
        loo = np.array([estimate([u for u in us if u.block != b], t) for b in blocks])
        se = math.sqrt((len(blocks) - 1) / len(blocks) * float(((loo - loo.mean()) ** 2).sum()))
        return full + se

    pooled = {fam: upper(us, tau.get(fam, 0.0)) for fam, us in fams.items()}
    out: dict[str, float] = {}
    counts: dict[str, int] = {}
    for key, us in groups.items():
        fam = key.split("|")[0]
        om = upper(us, tau.get(fam, 0.0))
        if len(us) < opts.min_group_units or len({u.block for u in us}) < 3:
            om = max(om, pooled[fam])  # a small group cannot claim less drift than its family
        out[key] = om
        counts[key] = len(us)
    return out, counts


def _add(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in set(a) | set(b)}


# ---------------------------------------------------------------------------------------------- the fit


def _units(s: Samples, excess: FloatArray, sigma: dict[tuple[str, str], float], opts: FitOptions) -> list[_Unit]:
    """The (cell, symbol, half-year) units of step 3. A unit's sampling variance is its cell's: the cell's
    variance of the excess x its design effect (clusters = weeks) / the unit's n. A unit's own variance
    estimate, from a handful of trades, would be as noisy as its mean, and weighting by it would favour the
    units that happen to look precise."""
    blocks = np.array([half_year(int(t)) for t in s.time_ms], dtype=np.int64)
    resolved_blocks = np.array([half_year(int(t)) for t in s.resolved_ms], dtype=np.int64)
    keep = blocks == resolved_blocks  # purge: no trade straddles two half-years
    weeks = s.time_ms // WEEK_MS
    idx: dict[tuple[str, str, str, int], list[int]] = defaultdict(list)
    cells: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i in np.flatnonzero(keep).tolist():
        cell = (str(s.pattern[i]), str(s.timeframe[i]))
        idx[(*cell, str(s.symbol[i]), int(blocks[i]))].append(i)
        cells[cell].append(i)
    per_trade: dict[tuple[str, str], float] = {}
    for cell, ii in cells.items():
        e = excess[ii]
        if len(ii) < 2:
            continue
        var = float(e.var(ddof=1))
        deff = max(1.0, cluster_var(e, weeks[ii]) * len(ii) / var) if var > 0 else 1.0
        per_trade[cell] = var * deff
    out = []
    for (pattern, tf, symbol, block), ii in idx.items():
        cell = (pattern, tf)
        if len(ii) < opts.min_unit_n or cell not in per_trade:
            continue
        sd = sigma[cell]
        out.append(_Unit(cell, symbol, block, len(ii), float(excess[ii].mean()) / sd,
                         per_trade[cell] / len(ii) / (sd * sd)))
    return out


def fit_model(samples: Samples, twins: Twins, opts: FitOptions, meta: Mapping[str, Any] | None = None) -> tuple[
    EvidenceModel, FitReport
]:
    """Fit the evidence model (module docstring). ``samples`` and ``twins`` are the TRAINING data only."""
    if len(samples) == 0:
        raise ValueError("no graded candidates to fit on")
    report = FitReport()
    # 1. baselines (direction-neutral: no drift assumed)
    baselines: dict[str, BaselineFit] = {ANY_TIMEFRAME: fit_baseline(twins, opts.ridge)}
    for tf in sorted(set(twins.timeframe.tolist())):
        sub = twins.subset(twins.timeframe == tf)
        if len(sub) >= 1000:
            baselines[tf] = fit_baseline(sub, opts.ridge)
    base_r = np.empty(len(samples))
    base_p = np.empty(len(samples))
    for tf in set(samples.timeframe.tolist()):
        m = samples.timeframe == tf
        b = baselines.get(tf, baselines[ANY_TIMEFRAME])
        base_r[m], base_p[m] = baseline_predictions(b, samples.rr[m], samples.stop_atr[m], samples.cost_r[m])
    win = (samples.r > 0).astype(np.float64)
    # the pattern effect is measured against the candidate's own twins of the same direction and period
    # (drift removed); the market part is how far those twins were from the drift-free baseline
    has_twins = np.isfinite(samples.twin_r)
    matched_r = np.where(has_twins, samples.twin_r, base_r)
    matched_p = np.where(has_twins, samples.twin_win, base_p)
    effect = samples.r - matched_r
    market = matched_r - base_r
    effect_p = win - matched_p
    market_p = matched_p - base_p
    # 2. cells
    order: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, k in enumerate(zip(samples.pattern.tolist(), samples.timeframe.tolist(), strict=True)):
        order[k].append(i)
    cell_idx = {k: np.array(ii, dtype=np.intp) for k, ii in order.items()}
    weeks = samples.time_ms // WEEK_MS
    sigma = {k: max(float(np.std(samples.r[ii])), 0.05) if ii.size > 1 else 1.0 for k, ii in cell_idx.items()}
    psd = {k: math.sqrt(max(float(base_p[ii].mean() * (1 - base_p[ii].mean())), 1e-3)) for k, ii in cell_idx.items()}
    # 3-4. units and hyper-parameters, for R and for wins
    units_e = _units(samples, effect, sigma, opts)
    tau_point, tau, pairs = _tau(units_e, opts)
    omega_e, counts = _drift(units_e, tau_point, opts)
    omega_m, _ = _drift(_units(samples, market, sigma, opts), {}, opts)
    units_ep = _units(samples, effect_p, psd, opts)
    tau_p_point, tau_p, _ = _tau(units_ep, opts)
    omega_ep, _ = _drift(units_ep, tau_p_point, opts)
    omega_mp, _ = _drift(_units(samples, market_p, psd, opts), {}, opts)
    report.tau_rel, report.tau_rel_p, report.units, report.pairs = tau, tau_p, counts, pairs
    report.tau_rel_point, report.tau_rel_p_point = tau_point, tau_p_point
    report.effect_drift_rel, report.market_drift_rel = omega_e, omega_m
    report.effect_drift_rel_p, report.market_drift_rel_p = omega_ep, omega_mp
    hyper = Hyper(
        _with_fallbacks(tau, False), _with_fallbacks(tau_p, False),
        _with_fallbacks(_add(omega_e, omega_m), True), _with_fallbacks(_add(omega_ep, omega_mp), True),
        {**{tf: float(np.var(samples.r[samples.timeframe == tf])) for tf in set(samples.timeframe.tolist())},
         ANY_TIMEFRAME: float(np.var(samples.r))},
        {ANY_TIMEFRAME: 1.0},  # replaced below, once the cells' design effects are known
    )
    # 5. cells with shrinkage
    cells: dict[tuple[str, str], CellEstimate] = {}
    blocks = np.array([half_year(int(t)) for t in samples.time_ms], dtype=np.int64)
    for k, ii in sorted(cell_idx.items()):
        pattern, tf = k
        fam = family_of(pattern)
        n = int(ii.size)
        var_r = sigma[k] ** 2
        mean_r, lo, hi = mean_ci(samples.r[ii], weeks[ii])
        _, bcounts = np.unique(blocks[ii], return_counts=True)
        drift_share = float(((bcounts / n) ** 2).sum())
        om_e = omega_e.get(f"{fam}|{tf}", hyper.drift(pattern, tf))
        om_ep = omega_ep.get(f"{fam}|{tf}", hyper.drift(pattern, tf, win_rate=True))
        prior = hyper.prior(pattern) * var_r
        samp = cluster_var(effect[ii], weeks[ii])
        iid = float(np.var(samples.r[ii], ddof=1) / n) if n > 1 else NO_ESTIMATE_VAR
        v = min(NO_ESTIMATE_VAR, samp + om_e * var_r * drift_share) if n > 1 else NO_ESTIMATE_VAR
        shrunk, shrunk_var = shrink(float(effect[ii].mean()), v, prior)
        if n <= 1:
            shrunk_var = prior
        pbar = float(base_p[ii].mean())
        pv = max(pbar * (1 - pbar), 1e-3)
        vp = min(NO_ESTIMATE_VAR, cluster_var(effect_p[ii], weeks[ii]) + om_ep * pv * drift_share) if n > 1 \
            else NO_ESTIMATE_VAR
        shrunk_p, _ = shrink(float(effect_p[ii].mean()), vp, hyper.prior(pattern, win_rate=True) * pv)
        cells[k] = CellEstimate(
            pattern=pattern, timeframe=tf, n=n, mean_r=mean_r, ci=(lo, hi), win_rate=float(win[ii].mean()),
            mean_baseline_r=float(base_r[ii].mean()), mean_baseline_p=pbar,
            excess_r=float(effect[ii].mean()), excess_var=v,
            excess_p=float(effect_p[ii].mean()), excess_p_var=vp,
            trade_var=var_r, design_effect=max(1.0, samp / iid) if n > 1 and iid > 0 else 1.0,
            shrunk_r=shrunk, shrunk_var=shrunk_var, shrunk_p=shrunk_p,
            stop_atr_median=float(np.median(samples.stop_atr[ii])),
        )
    deffs: dict[str, list[float]] = defaultdict(list)
    for (_, tf), c in cells.items():
        deffs[tf].append(c.design_effect)
    pooled_deff = {tf: max(v) for tf, v in deffs.items()}
    pooled_deff[ANY_TIMEFRAME] = max(pooled_deff.values(), default=1.0)
    hyper = replace(hyper, design_effect=pooled_deff)
    model_meta = dict(meta or {})
    model_meta["fit"] = report.to_dict()
    body = json.dumps({"cells": {f"{k[0]}|{k[1]}": c.to_dict() for k, c in sorted(cells.items())},
                       "baselines": {tf: b.to_dict() for tf, b in sorted(baselines.items())},
                       "hyper": hyper.to_dict(), "interval": opts.interval, "reference_n": opts.reference_n,
                       "cost_per_side": opts.cost_per_side}, sort_keys=True)
    version = "ev1-" + hashlib.sha256(body.encode()).hexdigest()[:10]
    model = EvidenceModel(version, opts.interval, opts.cost_per_side, baselines, hyper, cells, model_meta,
                          opts.reference_n)
    return model, report


def _with_fallbacks(m: Mapping[str, float], keyed_by_timeframe: bool) -> dict[str, float]:
    """``m`` plus its fall-back keys (``family|*``, ``*|tf``, ``*``), each the LARGEST value it stands for."""
    out = dict(m)
    if keyed_by_timeframe:
        fams: dict[str, list[float]] = defaultdict(list)
        tfs: dict[str, list[float]] = defaultdict(list)
        for key, v in m.items():
            fam, tf = key.split("|", 1)
            fams[fam].append(v)
            tfs[tf].append(v)
        out.update({f"{f}|*": max(v) for f, v in fams.items()})
        out.update({f"*|{t}": max(v) for t, v in tfs.items()})
    out[ANY_TIMEFRAME] = max(m.values(), default=0.0)
    return out
