"""The evidence model (SPEC 5a): what a signal's trade is worth, in net R after fees, out of sample.

The outcome is the trade's net R under the SPEC 7 rules (src/analysis/outcomes.py: entry at the next open,
first target or stop, stop first when one candle touches both, expiry after the horizon, commission per
side and slippage per fill in R). For every candidate the model gives

- ``p_win`` = P(net R > 0) of this trade;
- ``expected_r`` = E[net R] of this trade;
- the central ``interval`` (80 %) ``[expected_r_lo, expected_r_hi]``: where the AVERAGE net R of
  ``reference_n`` (20) signals like this one lands 4 times out of 5. It holds the uncertainty of the expected
  R itself (posterior variance of the pattern's effect + the drift of the coming period) and the scatter of
  a 20-signal average (per-trade variance x design effect / 20): what a user can check on a track record;
- ``Signal.confidence`` = Phi(expected_r / sd) (:func:`p_positive`) = P(that average is above 0), what
  MIN_CONFIDENCE is compared with: at 0.9 the lower end of the shown 80 % interval lies above 0 R.

Estimate for a signal of pattern P on timeframe T (all numbers in R; fitted by ``python -m backtest evidence
fit``, src/analysis/evidence_fit.py):

    expected_r = baseline(T, geometry) + shrunk excess of the (P, T) cell
    p_win      = baseline_p(T, geometry) + shrunk excess win rate of the cell (clipped to [0.01, 0.99])
    variance   = posterior variance of the excess + drift of the cell + per-trade variance x deff / 20

The per-trade variance (the scale of the drift and of the 20-signal scatter) is the cell's, or, when larger,
that of a trade with this geometry: a win of R:R against a loss of 1 at the baseline's P(win),
p (1 - p) (R:R + 1)^2. A far target makes a trade's net R far more scattered than its cell's average trade
(R:R 30 at p 0.1: a standard deviation of 9 R against about 1.3), so its interval widens instead of carrying
the cell's narrow one to a geometry with few twins.

``baseline`` is the net R that RANDOM entries with the same exit geometry earn (matched random entries:
same stream, period and volatility decile, both directions, same stop and first-target distance in ATR,
graded by the same rules), fitted as a function of what a signal knows at its candle: reward/risk to the
first target, stop distance in ATR(14) and costs in R = (2 x commission + 2 x slippage) x entry / risk. The
cell excess (the pattern's net R above its random twins of the same direction and period) is shrunk toward
0 by empirical Bayes with the variance of effects that PERSIST across time periods and symbols; small or
unstable cells make no confident claim. The drift variance is how much a cell's result moves from one
half-year to the next beyond sampling error (older per-pattern differences did not replicate on newer data):
it stays in every interval.

The live track record from the store (:class:`LiveRecord`, over :func:`counts_in_track_record` candidates)
is folded in by :meth:`EvidenceModel.with_live` with the same shrinkage. ``assess`` is O(1): a dict lookup
and a few dozen floating-point operations. The JSON file is versioned (``format`` 1); the shipped default
is package data read by :func:`load_default_model`, the one I/O edge of this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from importlib import resources
from typing import Any, Final

from src.analysis.gate import TRACKED_GATE_REASONS
from src.analysis.pickling import register_frozen
from src.analysis.types import Evidence, Signal, reward_risk

__all__ = [
    "BASIS",
    "CTX_ATR",
    "FORMAT_VERSION",
    "TRACKED_GATE_REASONS",
    "BaselineFit",
    "CellEstimate",
    "EvidenceFormatError",
    "EvidenceModel",
    "Geometry",
    "Hyper",
    "LiveRecord",
    "TrackRecord",
    "counts_in_track_record",
    "family_of",
    "geometry",
    "load_default_model",
    "p_positive",
    "shrink",
]

FORMAT_VERSION = 1
CTX_ATR = "ctx_atr"  # feature the engine adds: Wilder ATR(14) of the stream at the confirming candle
DEFAULT_INTERVAL = 0.8
DEFAULT_REFERENCE_N = 20  # the shown interval is for the average of this many signals (module docstring)
DEFAULT_MODEL_RESOURCE = "models/evidence-default.json"
P_MIN, P_MAX = 0.01, 0.99
RR_RANGE = (0.02, 20.0)
STOP_ATR_RANGE = (0.05, 50.0)
ANY_TIMEFRAME = "*"


class EvidenceFormatError(ValueError):
    """An evidence model document that cannot be used (bad JSON, wrong format, missing or bad fields)."""


# ---------------------------------------------------------------------------------------------- geometry


@dataclass(slots=True, unsafe_hash=True)
class Geometry:
    """What the baseline knows about a signal: reward/risk to TP1, stop distance in ATR, costs in R.
    Not frozen (built on the hot path, and a frozen dataclass's generated ``__init__`` runs interpreted under
    mypyc); hashable like before (``unsafe_hash``); Final fields: mypy rejects assignments."""

    rr: Final[float]
    stop_atr: Final[float | None]
    cost_r: Final[float]

    def __init__(self, rr: float, stop_atr: float | None, cost_r: float) -> None:
        # explicit (dataclass keeps it): compiled by mypyc
        self.rr = rr
        self.stop_atr = stop_atr
        self.cost_r = cost_r


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _feature(features: tuple[tuple[str, float], ...], name: str) -> float | None:
    for k, v in reversed(features):
        if k == name:
            return v if math.isfinite(v) else None
    return None


def geometry(signal: Signal, cost_per_side: float) -> Geometry:
    """The signal's geometry; ``cost_per_side`` = commission + slippage per fill, as a fraction of price.

    A signal without a target has reward/risk 0 (clipped to the smallest modelled value)."""
    return _geometry(signal.entry, signal.stop_loss, signal.take_profits, signal.features, cost_per_side)


def _geometry(entry: float, stop_loss: float, take_profits: tuple[float, ...], features: tuple[tuple[str, float], ...],
              cost_per_side: float) -> Geometry:
    """:func:`geometry` from the signal's fields (what the engine has before the Signal exists)."""
    risk = abs(entry - stop_loss)
    rr = reward_risk(entry, stop_loss, take_profits) or 0.0
    atr = _feature(features, CTX_ATR)
    stop_atr = risk / atr if atr and atr > 0 else None
    cost = 2.0 * cost_per_side * entry / risk if risk > 0 else math.inf
    return Geometry(rr, stop_atr, cost)


def trade_variance(rr: float, p_win: float) -> float:
    """Variance of one trade's net R from its geometry: a win of R:R (clipped to the modelled range) against a
    loss of 1 with probability ``p_win``: p (1 - p) (R:R + 1)^2."""
    rr = _clip(rr, *RR_RANGE)
    return p_win * (1.0 - p_win) * (rr + 1.0) ** 2


RR_KNOTS = (0.1, 0.3, 1.0, 3.0)
STOP_ATR_KNOTS = (2.0, 4.0, 8.0)
_RR_HINGES = tuple((f"hinge_log_rr_{k:g}", math.log(k)) for k in RR_KNOTS)
_STOP_ATR_HINGES = tuple((f"hinge_log_stop_atr_{k:g}", math.log(k)) for k in STOP_ATR_KNOTS)


BASIS: tuple[str, ...] = (
    "const", "cost_r", "log_rr", "log_stop_atr", "log_rr_x_log_stop_atr", "log_rr_over_cost", "log_rr_over_cost_sq",
    *(name for name, _ in _RR_HINGES), *(name for name, _ in _STOP_ATR_HINGES),
)
"""Names of the basis functions a baseline may use (see :func:`_basis_vector`)."""


def _basis_vector(rr: float, stop_atr: float, cost_r: float) -> list[float]:
    """Basis functions of a baseline, in :data:`BASIS` order: logs of R:R and stop distance in ATR (clipped to
    the modelled range), their product, hinges max(0, log x - log knot) at fixed knots (a piecewise-linear curve
    in the logs), costs in R, and log(R:R / costs) with its square (a target that does not clear the costs
    cannot win)."""
    rr = _clip(rr, RR_RANGE[0], RR_RANGE[1])
    sa = _clip(stop_atr, STOP_ATR_RANGE[0], STOP_ATR_RANGE[1])
    lr, ls = math.log(rr), math.log(sa)
    lrc = math.log(_clip(rr / max(cost_r, 1e-4), 0.05, 1000.0))
    out = [1.0, cost_r, lr, ls, lr * ls, lrc, lrc * lrc]
    for _, log_k in _RR_HINGES:
        out.append(max(0.0, lr - log_k))
    for _, log_k in _STOP_ATR_HINGES:
        out.append(max(0.0, ls - log_k))
    return out


def _basis_values(rr: float, stop_atr: float, cost_r: float) -> dict[str, float]:
    """:func:`_basis_vector` by name."""
    return dict(zip(BASIS, _basis_vector(rr, stop_atr, cost_r), strict=True))


def _indexed(terms: tuple[tuple[str, float], ...]) -> tuple[tuple[int, float], ...]:
    return tuple((BASIS.index(name), c) for name, c in terms)


class _Record:
    """The track-record fields of an :class:`Evidence` for one cell."""

    __slots__ = ("backtest_ci", "backtest_mean_r", "backtest_n", "live_mean_r", "live_n")

    def __init__(self, backtest_n: int, backtest_mean_r: float | None, backtest_ci: tuple[float, float] | None,
                 live_n: int, live_mean_r: float | None) -> None:
        self.backtest_n = backtest_n
        self.backtest_mean_r = backtest_mean_r
        self.backtest_ci = backtest_ci
        self.live_n = live_n
        self.live_mean_r = live_mean_r


@dataclass(frozen=True, slots=True)
class BaselineFit:
    """The random-entry baseline of one timeframe: E[net R] = sum(coef x basis) (linear) and
    P(net R > 0) = sigmoid(sum(coef_p x basis)). ``stop_atr_median`` replaces a missing ATR."""

    mean_terms: tuple[tuple[str, float], ...]
    p_terms: tuple[tuple[str, float], ...]
    stop_atr_median: float
    n: int = 0
    _mean_at: tuple[tuple[int, float], ...] = field(init=False, repr=False, compare=False)
    _p_at: tuple[tuple[int, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # the terms by basis position: predict runs for every candidate
        object.__setattr__(self, "_mean_at", _indexed(self.mean_terms))
        object.__setattr__(self, "_p_at", _indexed(self.p_terms))

    def predict(self, g: Geometry) -> tuple[float, float]:
        """(E[net R], P(net R > 0)) of a random entry with this geometry."""
        if not math.isfinite(g.cost_r):
            return -1.0, P_MIN
        values = _basis_vector(g.rr, g.stop_atr if g.stop_atr is not None else self.stop_atr_median, g.cost_r)
        # the same additions in the same order as sum() from 0 (a loop: sum over a generator is slow compiled)
        mean = 0.0
        for i, c in self._mean_at:
            mean += c * values[i]
        z = 0.0
        for i, c in self._p_at:
            z += c * values[i]
        p = 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0
        return mean, _clip(p, P_MIN, P_MAX)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": dict(self.mean_terms),
            "p_win": dict(self.p_terms),
            "stop_atr_median": self.stop_atr_median,
            "n": self.n,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> BaselineFit:
        def terms(m: Any, what: str) -> tuple[tuple[str, float], ...]:
            if not isinstance(m, Mapping) or not m:
                raise EvidenceFormatError(f"{where}: {what} must be a non-empty object of basis -> coefficient")
            out = []
            for k, v in m.items():
                if k not in BASIS:
                    raise EvidenceFormatError(f"{where}: unknown basis {k!r} in {what}; known: {', '.join(BASIS)}")
                out.append((str(k), _finite(v, f"{where}.{what}.{k}")))
            return tuple(out)

        return cls(
            terms(d.get("mean"), "mean"),
            terms(d.get("p_win"), "p_win"),
            _positive(d.get("stop_atr_median"), f"{where}.stop_atr_median"),
            int(d.get("n", 0)),
        )


# ---------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True, slots=True)
class LiveRecord:
    """Live outcomes of one (pattern, timeframe) cell, from the store."""

    n: int  # graded signals counted in the track record
    sum_r: float  # sum of net R
    sum_r2: float  # sum of net R squared
    wins: int  # how many had net R > 0


@dataclass(frozen=True, slots=True)
class TrackRecord:
    """One cell, for ``>stats`` and the SQL-free parts of the UI."""

    pattern: str
    timeframe: str
    backtest_n: int
    backtest_mean_r: float | None
    backtest_ci: tuple[float, float] | None
    live_n: int
    live_mean_r: float | None
    p_win: float | None  # the cell's typical shown p_win
    expected_r: float | None  # the cell's shrunk expected R and its interval
    expected_r_lo: float | None
    expected_r_hi: float | None


@dataclass(frozen=True, slots=True)
class CellEstimate:
    """The fitted evidence of one (pattern, timeframe) cell. R values are net R after fees.

    Backtest record: ``n`` graded candidates, ``mean_r`` and its cluster-robust 95 % ``ci`` (clusters = UTC
    weeks across symbols), ``win_rate``. Baseline: ``mean_baseline_r`` / ``mean_baseline_p`` = the average
    random-twin estimate over the cell's candidates. Excess over the baseline: ``excess_r`` with variance
    ``excess_var`` (sampling + averaged drift), win-rate excess ``excess_p`` / ``excess_p_var``.
    ``trade_var`` = per-trade variance of net R (the scale of the prior and the drift). Shrunk:
    ``shrunk_r`` / ``shrunk_var`` and ``shrunk_p``. ``design_effect`` = cluster-robust / iid variance of the
    mean (used for live records, which carry no clusters). Live: ``live_n``, ``live_sum_r``, ``live_wins``.
    """

    pattern: str
    timeframe: str
    n: int
    mean_r: float
    ci: tuple[float, float]
    win_rate: float
    mean_baseline_r: float
    mean_baseline_p: float
    excess_r: float
    excess_var: float
    excess_p: float
    excess_p_var: float
    trade_var: float
    design_effect: float
    shrunk_r: float
    shrunk_var: float
    shrunk_p: float
    stop_atr_median: float
    live_n: int = 0
    live_sum_r: float = 0.0
    live_wins: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.pattern, self.timeframe)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ci"] = list(self.ci)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> CellEstimate:
        try:
            ci = d["ci"]
            if not isinstance(ci, list | tuple) or len(ci) != 2:
                raise EvidenceFormatError(f"{where}.ci must be [lo, hi]")
            floats = {k: _finite(d[k], f"{where}.{k}") for k in _CELL_FLOATS}
            variances = {k: _non_negative(d[k], f"{where}.{k}") for k in _CELL_VARIANCES}
            return cls(
                pattern=str(d["pattern"]),
                timeframe=str(d["timeframe"]),
                n=_count(d["n"], f"{where}.n"),
                ci=(_finite(ci[0], f"{where}.ci"), _finite(ci[1], f"{where}.ci")),
                stop_atr_median=_positive(d["stop_atr_median"], f"{where}.stop_atr_median"),
                live_n=_count(d.get("live_n", 0), f"{where}.live_n"),
                live_wins=_count(d.get("live_wins", 0), f"{where}.live_wins"),
                live_sum_r=_finite(d.get("live_sum_r", 0.0), f"{where}.live_sum_r"),
                **floats,
                **variances,
            )
        except KeyError as exc:
            raise EvidenceFormatError(f"{where}: missing field {exc.args[0]!r}") from None


_CELL_FLOATS = ("mean_r", "win_rate", "mean_baseline_r", "mean_baseline_p", "excess_r", "excess_p", "shrunk_r", "shrunk_p")
_CELL_VARIANCES = ("excess_var", "excess_p_var", "trade_var", "shrunk_var", "design_effect")
NO_ESTIMATE_VAR = 1e12  # the variance of "no estimate" (a cell without backtest data)

# ---------------------------------------------------------------------------------------------- validation


def _finite(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
        raise EvidenceFormatError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def _non_negative(v: Any, where: str) -> float:
    x = _finite(v, where)
    if x < 0:
        raise EvidenceFormatError(f"{where}: expected a number >= 0, got {v!r}")
    return x


def _positive(v: Any, where: str) -> float:
    x = _finite(v, where)
    if x <= 0:
        raise EvidenceFormatError(f"{where}: expected a number > 0, got {v!r}")
    return x


def _count(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise EvidenceFormatError(f"{where}: expected a whole number >= 0, got {v!r}")
    return v


@cache
def _z(interval: float) -> float:
    """Two-sided normal quantile: the z with P(|N(0,1)| <= z) = ``interval``."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + interval / 2.0)


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def p_positive(ev: Evidence) -> float:
    """P(the value the interval describes > 0) under the normal distribution it was built from: the
    probability that the average net R of ``reference_n`` such signals is above 0 (``Signal.confidence``)."""
    half = (ev.expected_r_hi - ev.expected_r_lo) / 2.0
    if not half > 0 or not 0 < ev.interval < 1:
        return 1.0 if ev.expected_r > 0 else 0.0
    sd = half / _z(ev.interval)
    return _phi(ev.expected_r / sd)


def counts_in_track_record(signal: Signal) -> bool:
    """True when ``signal`` belongs to the population the model was fitted on (every candidate except the
    same-candle duplicates of a structure); the live record is computed over exactly these."""
    return signal.gate_reason in TRACKED_GATE_REASONS


# ---------------------------------------------------------------------------------------------- the model


def family_of(pattern: str) -> str:
    """The analyzer family of a pattern: the part before the first underscore (``wyckoff_spring`` -> ``wyckoff``)."""
    return pattern.split("_", 1)[0]


@dataclass(frozen=True, slots=True)
class Hyper:
    """Shrinkage hyper-parameters (empirical Bayes), relative to a cell's per-trade variance of net R.

    ``prior_rel[family]`` = variance of the persistent effects of that analyzer family's cells / per-trade
    variance (tau^2); ``drift_rel["family|timeframe"]`` = variance of a cell's period-to-period excess /
    per-trade variance (omega^2); the ``*_p`` maps the same for the win rate (relative to p(1 - p));
    ``trade_var[timeframe]`` = pooled per-trade variance of net R and ``design_effect[timeframe]`` the largest
    design effect of the timeframe's cells (both for cells never seen). Look-ups fall
    back from ``family|tf`` to ``family|*``, ``*|tf`` and ``*``; the fit writes those fall-backs as the
    LARGEST value of what they stand for, so an unknown pattern never claims more certainty than a known one.
    """

    prior_rel: Mapping[str, float]
    prior_rel_p: Mapping[str, float]
    drift_rel: Mapping[str, float]
    drift_rel_p: Mapping[str, float]
    trade_var: Mapping[str, float]
    design_effect: Mapping[str, float]

    @staticmethod
    def _get(m: Mapping[str, float], *keys: str) -> float:
        for k in keys:
            if k in m:
                return m[k]
        return max(m.values(), default=0.0)

    def prior(self, pattern: str, win_rate: bool = False) -> float:
        return self._get(self.prior_rel_p if win_rate else self.prior_rel, family_of(pattern), ANY_TIMEFRAME)

    def drift(self, pattern: str, timeframe: str, win_rate: bool = False) -> float:
        fam = family_of(pattern)
        return self._get(self.drift_rel_p if win_rate else self.drift_rel, f"{fam}|{timeframe}", f"{fam}|*",
                         f"*|{timeframe}", ANY_TIMEFRAME)

    def pooled_trade_var(self, timeframe: str) -> float:
        m = self.trade_var
        return m.get(timeframe, m.get(ANY_TIMEFRAME, max(m.values(), default=1.0)))

    def pooled_design_effect(self, timeframe: str) -> float:
        m = self.design_effect
        return m.get(timeframe, m.get(ANY_TIMEFRAME, max(m.values(), default=1.0)))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: dict(sorted(getattr(self, f.name).items())) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hyper:
        def one(name: str) -> dict[str, float]:
            m = d.get(name)
            if not isinstance(m, Mapping) or not m:
                raise EvidenceFormatError(f"hyper.{name} must be a non-empty object of key -> number")
            return {str(k): _non_negative(v, f"hyper.{name}.{k}") for k, v in m.items()}

        return cls(*(one(f.name) for f in fields(cls)))


def shrink(excess: float, var: float, prior: float) -> tuple[float, float]:
    """Normal-normal posterior of an effect with prior N(0, ``prior``) given an estimate ``excess`` with
    variance ``var``: (mean, variance) = (w x excess, w x var), w = prior / (prior + var)."""
    if prior <= 0:
        return 0.0, 0.0
    if var <= 0:
        return excess, 0.0
    w = prior / (prior + var)
    return w * excess, w * var


@dataclass(frozen=True)
class EvidenceModel:
    """See the module docstring. Build one with ``EvidenceModel.from_json`` (or the fit); immutable."""

    version: str
    interval: float
    cost_per_side: float
    baselines: Mapping[str, BaselineFit]
    hyper: Hyper
    cells: Mapping[tuple[str, str], CellEstimate]
    meta: Mapping[str, Any] = field(default_factory=dict)
    reference_n: int = DEFAULT_REFERENCE_N
    _z: float = field(init=False, repr=False, compare=False)
    _terms: dict[tuple[str, str], tuple[float, float, float]] = field(init=False, repr=False, compare=False)
    _geo: dict[tuple[str, str], tuple[float, float]] = field(init=False, repr=False, compare=False)
    _records: dict[tuple[str, str], _Record] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.interval < 1.0:
            raise EvidenceFormatError(f"interval must be in (0, 1), got {self.interval}")
        if self.reference_n < 1:
            raise EvidenceFormatError(f"reference_n must be >= 1, got {self.reference_n}")
        if not self.baselines:
            raise EvidenceFormatError("a model needs at least one baseline")
        object.__setattr__(self, "_z", _z(self.interval))
        object.__setattr__(self, "_terms", {})  # cell_terms per (pattern, timeframe): fixed for a model
        object.__setattr__(self, "_geo", {})  # geometry_terms, likewise
        object.__setattr__(self, "_records", {})  # the track record an Evidence shows, likewise

    # ------------------------------------------------------------------ assess
    def baseline_for(self, timeframe: str) -> BaselineFit:
        b = self.baselines.get(timeframe) or self.baselines.get(ANY_TIMEFRAME)
        return b if b is not None else next(iter(self.baselines.values()))

    def mean_variance(self, pattern: str, timeframe: str) -> float:
        """Variance of the cell's expected R itself: posterior variance of the excess + the coming period's
        drift (what the interval would be for infinitely many signals)."""
        h = self.hyper
        cell = self.cells.get((pattern, timeframe))
        if cell is not None:
            return cell.shrunk_var + h.drift(pattern, timeframe) * cell.trade_var
        return (h.prior(pattern) + h.drift(pattern, timeframe)) * h.pooled_trade_var(timeframe)

    def cell_terms(self, pattern: str, timeframe: str) -> tuple[float, float, float]:
        """(shrunk excess R, variance of the shown interval, shrunk excess win rate) of a cell: the interval's
        variance = posterior variance of the excess + the coming period's drift + the scatter of the average
        of ``reference_n`` signals (per-trade variance x design effect / reference_n). Memoised."""
        key = (pattern, timeframe)
        terms = self._terms.get(key)
        if terms is None:
            terms = self._terms[key] = self._cell_terms(pattern, timeframe)
        return terms

    def _cell_terms(self, pattern: str, timeframe: str) -> tuple[float, float, float]:
        cell = self.cells.get((pattern, timeframe))
        var = self.mean_variance(pattern, timeframe)
        if cell is not None:
            return cell.shrunk_r, var + cell.trade_var * cell.design_effect / self.reference_n, cell.shrunk_p
        h = self.hyper
        return 0.0, var + h.pooled_trade_var(timeframe) * h.pooled_design_effect(timeframe) / self.reference_n, 0.0

    def geometry_terms(self, pattern: str, timeframe: str) -> tuple[float, float]:
        """(the cell's per-trade variance, the factor drift + deff / reference_n): a trade whose own variance v
        exceeds the cell's adds (v - per-trade variance) x factor to its interval's variance (module docstring).
        Memoised."""
        key = (pattern, timeframe)
        terms = self._geo.get(key)
        if terms is None:
            h = self.hyper
            cell = self.cells.get(key)
            trade_var, deff = ((cell.trade_var, cell.design_effect) if cell is not None
                               else (h.pooled_trade_var(timeframe), h.pooled_design_effect(timeframe)))
            terms = self._geo[key] = (trade_var, h.drift(pattern, timeframe) + deff / self.reference_n)
        return terms

    def _geometry_var(self, pattern: str, timeframe: str, rr: float, p: float) -> float:
        trade_var, factor = self.geometry_terms(pattern, timeframe)
        extra = trade_variance(rr, p) - trade_var
        return extra * factor if extra > 0.0 else 0.0

    def assess(self, signal: Signal) -> Evidence:
        """The evidence for ``signal``: only its own fields (what is known at its candle) are read."""
        return self.assess_fields(signal.pattern, signal.timeframe, signal.entry, signal.stop_loss,
                                  signal.take_profits, signal.features)

    def assess_fields(self, pattern: str, tf: str, entry: float, stop_loss: float, take_profits: tuple[float, ...],
                      features: tuple[tuple[str, float], ...]) -> Evidence:
        """:meth:`assess` from the fields it reads, so the engine builds each candidate's Signal once, with its
        evidence, instead of once without and once more with it."""
        g = _geometry(entry, stop_loss, take_profits, features, self.cost_per_side)
        base_r, base_p = self.baseline_for(tf).predict(g)
        shift, var, dp = self.cell_terms(pattern, tf)
        var += self._geometry_var(pattern, tf, g.rr, base_p)
        expected = base_r + shift
        half = self._z * math.sqrt(var)
        rec = self._record(pattern, tf)
        return Evidence(
            p_win=round(_clip(base_p + dp, P_MIN, P_MAX), 4),
            expected_r=round(expected, 4),
            expected_r_lo=round(expected - half, 4),
            expected_r_hi=round(expected + half, 4),
            interval=self.interval,
            model_version=self.version,
            backtest_n=rec.backtest_n,
            backtest_mean_r=rec.backtest_mean_r,
            backtest_ci=rec.backtest_ci,
            live_n=rec.live_n,
            live_mean_r=rec.live_mean_r,
            reference_n=self.reference_n,
        )

    def _record(self, pattern: str, tf: str) -> _Record:
        """The cell's track record as an Evidence shows it (rounded once per cell: fixed for a model)."""
        key = (pattern, tf)
        rec = self._records.get(key)
        if rec is None:
            cell = self.cells.get(key)
            rec = self._records[key] = _Record(
                cell.n if cell else 0,
                round(cell.mean_r, 4) if cell and cell.n else None,
                (round(cell.ci[0], 4), round(cell.ci[1], 4)) if cell and cell.n else None,
                cell.live_n if cell else 0,
                round(cell.live_sum_r / cell.live_n, 4) if cell and cell.live_n else None,
            )
        return rec

    # ------------------------------------------------------------------ live record
    def with_live(self, live: Mapping[tuple[str, str], LiveRecord]) -> EvidenceModel:
        """A copy with the live record folded in (key (pattern, timeframe)); the fitted backtest part stays.

        Live outcomes are out of sample by construction. Their excess over the cell's average baseline is
        one more period: its variance is the iid variance x the cell's design effect + the drift variance.
        It is combined with the backtest excess by precision, then shrunk like the backtest alone."""
        if not live:
            return self
        cells = dict(self.cells)
        h = self.hyper
        for key, rec in live.items():
            if rec.n < 0 or rec.wins < 0 or rec.wins > rec.n:
                raise ValueError(f"live record {key}: inconsistent counts n={rec.n}, wins={rec.wins}")
            pattern, tf = key
            cell = cells.get(key) or self._empty_cell(pattern, tf)
            cells[key] = _fold_live(cell, rec, h)
        digest = hashlib.sha256(
            json.dumps(sorted((f"{k[0]}|{k[1]}", v.n, round(v.sum_r, 6), v.wins) for k, v in live.items())).encode()
        ).hexdigest()[:6]
        base_version = self.version.split("+live")[0]
        return replace(self, version=f"{base_version}+live.{digest}", cells=cells)

    def _empty_cell(self, pattern: str, timeframe: str) -> CellEstimate:
        b = self.baseline_for(timeframe)
        tv = self.hyper.pooled_trade_var(timeframe)
        mr, mp = b.predict(Geometry(1.0, b.stop_atr_median, 0.0))
        return CellEstimate(
            pattern, timeframe, 0, 0.0, (0.0, 0.0), 0.0, mr, mp, 0.0, NO_ESTIMATE_VAR, 0.0, NO_ESTIMATE_VAR, tv, 1.0, 0.0,
            self.hyper.prior(pattern) * tv, 0.0, b.stop_atr_median,
        )

    # ------------------------------------------------------------------ reporting
    def track_records(self) -> list[TrackRecord]:
        """One row per cell (pattern, timeframe), sorted; the interval is for the cell's typical signal."""
        rows = []
        for (pattern, tf), c in sorted(self.cells.items()):
            expected = c.mean_baseline_r + c.shrunk_r
            half = self._z * math.sqrt(self.cell_terms(pattern, tf)[1])
            rows.append(TrackRecord(
                pattern=pattern,
                timeframe=tf,
                backtest_n=c.n,
                backtest_mean_r=c.mean_r if c.n else None,
                backtest_ci=c.ci if c.n else None,
                live_n=c.live_n,
                live_mean_r=c.live_sum_r / c.live_n if c.live_n else None,
                p_win=_clip(c.mean_baseline_p + c.shrunk_p, P_MIN, P_MAX),
                expected_r=expected,
                expected_r_lo=expected - half,
                expected_r_hi=expected + half,
            ))
        return rows

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> str:
        doc = {
            "format": FORMAT_VERSION,
            "version": self.version,
            "interval": self.interval,
            "reference_n": self.reference_n,
            "cost_per_side": self.cost_per_side,
            "baselines": {tf: b.to_dict() for tf, b in sorted(self.baselines.items())},
            "hyper": self.hyper.to_dict(),
            "cells": [c.to_dict() for _, c in sorted(self.cells.items())],
            "meta": dict(self.meta),
        }
        return json.dumps(doc, indent=1, sort_keys=False, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> EvidenceModel:
        """Parse and validate; EvidenceFormatError says what is wrong and where."""
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise EvidenceFormatError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise EvidenceFormatError("an evidence model is a JSON object")
        if doc.get("format") != FORMAT_VERSION:
            raise EvidenceFormatError(
                f"unsupported evidence model format {doc.get('format')!r} (this version reads format {FORMAT_VERSION}); "
                "refit it with `python -m backtest evidence fit`"
            )
        version = doc.get("version")
        if not isinstance(version, str) or not version:
            raise EvidenceFormatError("missing model version")
        baselines_doc = doc.get("baselines")
        if not isinstance(baselines_doc, dict) or not baselines_doc:
            raise EvidenceFormatError("missing baselines (one per timeframe)")
        baselines = {str(tf): BaselineFit.from_dict(b, f"baselines.{tf}") for tf, b in baselines_doc.items()
                     if _is_mapping(b, f"baselines.{tf}")}
        hyper_doc = doc.get("hyper")
        if not isinstance(hyper_doc, dict):
            raise EvidenceFormatError("missing hyper (shrinkage parameters)")
        cells_doc = doc.get("cells", [])
        if not isinstance(cells_doc, list):
            raise EvidenceFormatError("cells must be a list")
        cells: dict[tuple[str, str], CellEstimate] = {}
        for i, c in enumerate(cells_doc):
            _is_mapping(c, f"cells[{i}]")
            cell = CellEstimate.from_dict(c, f"cells[{i}]")
            if cell.key in cells:
                raise EvidenceFormatError(f"cells[{i}]: duplicate cell {cell.key}")
            cells[cell.key] = cell
        meta = doc.get("meta", {})
        if not isinstance(meta, dict):
            raise EvidenceFormatError("meta must be an object")
        return cls(
            version=version,
            interval=_finite(doc.get("interval", DEFAULT_INTERVAL), "interval"),
            reference_n=_count(doc.get("reference_n", DEFAULT_REFERENCE_N), "reference_n"),
            cost_per_side=_non_negative(doc.get("cost_per_side"), "cost_per_side"),
            baselines=baselines,
            hyper=Hyper.from_dict(hyper_doc),
            cells=cells,
            meta=meta,
        )

    # ------------------------------------------------------------------ a model without data
    @classmethod
    def uninformed(cls, commission: float = 0.0004, slippage_bps: float = 0.0) -> EvidenceModel:
        """A model fitted on nothing: random entries of a driftless market (E[net R] = -costs in R,
        P(win) = 1 / (1 + R:R)), wide intervals, no cells. For tests and to bootstrap a fit."""
        base = BaselineFit((("cost_r", -1.0),), (("log_rr", -1.0),), 1.5)
        hyper = Hyper({ANY_TIMEFRAME: 0.05}, {ANY_TIMEFRAME: 0.05}, {ANY_TIMEFRAME: 0.05}, {ANY_TIMEFRAME: 0.0},
                      {ANY_TIMEFRAME: 1.5}, {ANY_TIMEFRAME: 1.0})
        return cls("uninformed", DEFAULT_INTERVAL, commission + slippage_bps / 10_000.0, {ANY_TIMEFRAME: base}, hyper,
                   {}, {"note": "uninformed prior: no data"})


def _is_mapping(v: Any, where: str) -> bool:
    if not isinstance(v, Mapping):
        raise EvidenceFormatError(f"{where} must be an object")
    return True


def _fold_live(cell: CellEstimate, rec: LiveRecord, h: Hyper) -> CellEstimate:
    """The cell with ``rec`` folded in (see EvidenceModel.with_live); replaces any earlier live part."""
    tf, pattern = cell.timeframe, cell.pattern
    n = rec.n
    if n <= 0:
        return replace(cell, live_n=0, live_sum_r=0.0, live_wins=0)
    mean = rec.sum_r / n
    var_iid = max(0.0, (rec.sum_r2 - rec.sum_r * rec.sum_r / n) / (n - 1)) if n > 1 else cell.trade_var
    var_iid = max(var_iid, 1e-6)
    drift = h.drift(pattern, tf) * cell.trade_var
    live_var = max(cell.design_effect, 1.0) * var_iid / n + drift
    live_excess = mean - cell.mean_baseline_r
    excess, excess_var = _combine(cell.excess_r, cell.excess_var, live_excess, live_var)
    shrunk_r, shrunk_var = shrink(excess, excess_var, h.prior(pattern) * cell.trade_var)
    pv = max(cell.mean_baseline_p * (1 - cell.mean_baseline_p), 1e-4)
    live_p_excess = rec.wins / n - cell.mean_baseline_p
    live_p_var = max(cell.design_effect, 1.0) * pv / n + h.drift(pattern, tf, win_rate=True) * pv
    excess_p, excess_p_var = _combine(cell.excess_p, cell.excess_p_var, live_p_excess, live_p_var)
    shrunk_p, _ = shrink(excess_p, excess_p_var, h.prior(pattern, win_rate=True) * pv)
    return replace(
        cell, shrunk_r=shrunk_r, shrunk_var=shrunk_var, shrunk_p=shrunk_p,
        live_n=n, live_sum_r=rec.sum_r, live_wins=rec.wins,
    )


def _combine(a: float, va: float, b: float, vb: float) -> tuple[float, float]:
    """Precision-weighted mean of two estimates (a variance >= NO_ESTIMATE_VAR means "no estimate")."""
    if va >= NO_ESTIMATE_VAR:
        return b, vb
    if vb >= NO_ESTIMATE_VAR:
        return a, va
    if va <= 0 or vb <= 0:
        return (a, va) if va <= vb else (b, vb)
    wa, wb = 1.0 / va, 1.0 / vb
    return (a * wa + b * wb) / (wa + wb), 1.0 / (wa + wb)


@cache
def load_default_model() -> EvidenceModel:
    """The committed default fitted by ``python -m backtest evidence fit`` (package data; read once)."""
    ref = resources.files("src.analysis").joinpath(DEFAULT_MODEL_RESOURCE)
    try:
        text = ref.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvidenceFormatError(f"the shipped evidence model {DEFAULT_MODEL_RESOURCE} cannot be read: {exc}") from None
    try:
        return EvidenceModel.from_json(text)
    except EvidenceFormatError as exc:
        raise EvidenceFormatError(f"the shipped evidence model {DEFAULT_MODEL_RESOURCE}: {exc}") from None


register_frozen(Geometry, BaselineFit, LiveRecord, TrackRecord, CellEstimate, Hyper, EvidenceModel)

