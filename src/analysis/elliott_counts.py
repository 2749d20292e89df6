"""Elliott candidate counts over consecutive confirmed pivots, with their guideline scores.

A count is a window of CONSECUTIVE confirmed pivots of one degree ending at the newest pivot: an
impulse or diagonal prefix (2-6 pivots, labels 0-5) or an A-B-C correction (4 pivots, labels
0, A, B, C). Pivots are never skipped (ANALYSIS-NOTES 2.4: a coarser count comes from a higher
zigzag degree, not from skipping), so at most 5 + 2 + 2 windows exist per degree and pivot: the
beam is bounded by construction and each update is O(1).

Score = sigmoid(bias + sum_i w_i * f_i) where each f_i in [0, 1] is a guideline fit (elliott_rules)
and the weights/biases are :data:`DEFAULT_WEIGHTS`. Passing the hard rules contributes NOTHING: about
4 % of random-walk 6-pivot windows pass them (ANALYSIS-NOTES 4.7), so a rule-valid count with no
guideline support scores sigmoid(bias), e.g. 0.18 for a wave-3 setup and < 0.01 for a full impulse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from src.analysis import elliott_rules as rules
from src.analysis.pickling import register_frozen
from src.analysis.pivots import Pivot
from src.analysis.types import ms_to_iso

Pattern = Literal["impulse", "diagonal", "zigzag", "flat"]

# Evidence weights [P] (logit units). Each setup: "bias" plus one weight per guideline fit.
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    # impulse prefix ending at wave 2 (the wave-3 setup)
    "impulse2": {"bias": -2.2, "r2": 1.2, "t2": 0.4, "impulsive1": 0.8, "vol12": 0.6},
    # impulse prefix ending at wave 3 (count only)
    "impulse3": {"bias": -3.6, "r2": 1.2, "t2": 0.4, "impulsive1": 0.6, "vol12": 0.4, "e3": 1.2, "slope3": 0.8,
                 "vol3": 0.8},
    # impulse prefix ending at wave 4 (the wave-5 setup)
    "impulse4": {"bias": -5.2, "r2": 1.2, "t2": 0.4, "impulsive1": 0.6, "vol12": 0.4, "e3": 1.2, "slope3": 0.8,
                 "vol3": 0.8, "r4": 1.0, "alternation": 0.8},
    # complete impulse
    "impulse5": {"bias": -6.3, "r2": 1.2, "t2": 0.4, "impulsive1": 0.6, "vol12": 0.4, "e3": 1.2, "slope3": 0.8,
                 "vol3": 0.8, "r4": 1.0, "alternation": 0.8, "wave5": 1.0, "channel": 0.8, "vol5": 0.4,
                 "truncated": -1.5},
    # diagonal at wave 4 / complete (counts only): diagonal waves 2 and 4 retrace 0.66-0.81
    "diagonal": {"bias": -3.0, "r2": 1.0, "r4": 1.0, "converge": 0.6},
    # A-B-C corrections (the elliott_abc setup); "impulse" = the correction follows a complete impulse
    "zigzag": {"bias": -3.6, "b": 1.0, "c": 1.0, "impulse": 1.6, "prior": 0.8, "time": 0.4, "quiet": 0.6},
    "flat": {"bias": -3.6, "b": 1.0, "c": 1.0, "impulse": 1.6, "prior": 0.8, "time": 0.4, "quiet": 0.6},
}


@dataclass(slots=True, unsafe_hash=True)
class Count:
    """One candidate count.

    ``direction`` is +1/-1: the direction of wave 1 for impulses and diagonals, and of the LARGER
    trend (opposite to wave A, i.e. the trade direction) for corrections. ``invalidations`` are
    (real price, side) pairs: the count dies when a later bar trades below ("below") or above
    ("above") that price.
    Not frozen (built on the hot path, and a frozen dataclass's generated ``__init__`` runs interpreted under
    mypyc); hashable like before (``unsafe_hash``); Final fields: mypy rejects assignments.
    """

    pattern: Final[Pattern]
    direction: Final[int]
    degree: Final[int]
    pivots: Final[tuple[Pivot, ...]]
    score: Final[float]
    features: Final[tuple[tuple[str, float], ...]]
    invalidations: Final[tuple[tuple[float, str], ...]]
    subtype: Final[str]

    def __init__(self, pattern: Pattern, direction: int, degree: int, pivots: tuple[Pivot, ...], score: float,
                 features: tuple[tuple[str, float], ...], invalidations: tuple[tuple[float, str], ...],
                 subtype: str = "") -> None:
        # explicit (dataclass keeps it): compiled by mypyc
        self.pattern = pattern
        self.direction = direction
        self.degree = degree
        self.pivots = pivots
        self.score = score
        self.features = features
        self.invalidations = invalidations
        self.subtype = subtype

    @property
    def stage(self) -> int:
        return len(self.pivots) - 1

    @property
    def labels(self) -> tuple[str, ...]:
        if self.pattern in ("zigzag", "flat"):
            return ("0", "A", "B", "C")[: len(self.pivots)]
        return tuple([str(i) for i in range(len(self.pivots))])

    @property
    def key(self) -> tuple[str, int, int, int, int]:
        return (self.pattern, self.direction, self.degree, self.pivots[0].index, self.stage)

    @property
    def name(self) -> str:
        side = "up" if self.direction > 0 else "down"
        if self.pattern in ("zigzag", "flat"):
            side = "down" if self.direction > 0 else "up"  # a correction moves against the trend
        return f"{self.pattern}_{side}"

    def describe(self, thresholds: Sequence[float]) -> str:
        """One line: pattern, degree, labelled pivots with prices and times, invalidation."""
        sub = f" {self.subtype}" if self.subtype else ""
        pairs = zip(self.labels, self.pivots, strict=True)
        # list comprehensions, not generators: mypyc compiles them to plain loops (a generator is an object)
        waves = ", ".join([f"{lab}={p.price:.6g} @ {ms_to_iso(p.time_ms)}" for lab, p in pairs])
        inval = "; ".join([f"{side} {price:.6g}" for price, side in self.invalidations])
        return (
            f"{self.name.replace('_', ' ')}{sub} (degree {thresholds[self.degree]:g}, score {self.score:.2f}): "
            f"{waves}; invalid if price trades {inval}"
        )


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


def _logit_score(feats: Mapping[str, float], weights: Mapping[str, float]) -> float:
    # a loop, not sum() over a generator (an object under mypyc): the same additions in the same order, from 0
    z = 0.0
    for name, w in weights.items():
        if name != "bias":
            z += w * feats[name]
    return _sigmoid(weights["bias"] + z)


def _clamp01(v: float) -> float:
    return 0.0 if v < 0 else 1.0 if v > 1 else v


def _leg_stats(piv: Sequence[Pivot], x: Sequence[float]) -> tuple[list[int], list[float], list[float]]:
    """Per wave: duration in bars (>= 1), slope (level per bar), mean volume per bar."""
    durs = [max(1, piv[i].index - piv[i - 1].index) for i in range(1, len(piv))]
    slopes = [abs(x[i] - x[i - 1]) / durs[i - 1] for i in range(1, len(x))]
    vols = [piv[i].leg_volume / durs[i - 1] for i in range(1, len(piv))]
    return durs, slopes, vols


def _ratio_up(a: float, b: float, span: float) -> float:
    """0 when a <= b, 1 when a >= b * (1 + span), linear between (b <= 0 counts as 1 if a > 0)."""
    if b <= 0:
        return 1.0 if a > 0 else 0.0
    return _clamp01((a / b - 1.0) / span)


def impulse_features(piv: Sequence[Pivot], x: Sequence[float], atr: float) -> dict[str, float]:
    """Guideline fits of an up-oriented impulse prefix (3-6 pivots)."""
    L = rules.lengths(x)
    durs, slopes, vols = _leg_stats(piv, x)
    f: dict[str, float] = {
        "r2": rules.band_fit(L[1] / L[0], rules.FIB_R2[0], rules.FIB_R2[1], 0.08),
        "t2": rules.band_fit(durs[1] / durs[0], 0.382, 1.618, 0.3),
        "impulsive1": _ratio_up(slopes[0], slopes[1], 1.0),
        "vol12": _ratio_up(vols[0], vols[1], 0.5),
    }
    if len(x) >= 4:
        f["e3"] = rules.ratio_fit(L[2] / L[0], rules.FIB_E3)
        f["slope3"] = _clamp01(slopes[2] / max(slopes[0], 1e-12) - 0.5) if slopes[2] < slopes[0] else 1.0
        f["vol3"] = _ratio_up(vols[2], vols[0], 0.5)
    if len(x) >= 5:
        r2, r4 = L[1] / L[0], L[3] / L[2]
        f["r4"] = rules.band_fit(r4, rules.FIB_R4[0], rules.FIB_R4[1], 0.08)
        f["alternation"] = rules.alternation_fit(r2, r4, durs[1], durs[3])
    if len(x) >= 6:
        f["wave5"] = rules.wave5_fit(L, x)
        f["channel"] = rules.channel_fit(x, [p.index for p in piv], atr)
        f["vol5"] = 1.0 if vols[4] < vols[2] else 0.0
        f["truncated"] = 1.0 if x[5] <= x[3] else 0.0
    return f


def _orient(piv: Sequence[Pivot], direction: int) -> list[float]:
    return [p.level * direction for p in piv]


def impulse_count(
    piv: Sequence[Pivot], degree: int, atr: float, wave4_tolerance: float, weights: Mapping[str, Mapping[str, float]]
) -> Count | None:
    """The impulse count over ``piv`` (2-6 consecutive pivots) or None when a hard rule fails."""
    direction = -piv[0].sign  # a low origin starts an up impulse
    x = _orient(piv, direction)
    # first=True: a gate needs one failure, not all (most windows fail)
    if rules.impulse_failures(x, wave4_tolerance * atr, True) or rules.time_failures([p.index for p in piv]):
        return None
    stage = len(piv) - 1
    below, above = ("below", "above") if direction > 0 else ("above", "below")
    if stage <= 2:
        inval = ((piv[0].price, below),)  # I1: wave 2 may not pass wave 1's origin
    elif stage <= 4:
        inval = ((piv[1].price, below),)  # I4: wave 4 may not enter wave 1's territory
    else:
        inval = ((piv[5].price, above),)  # a new extreme beyond 5 means wave 5 is still running
    if stage == 1:
        return Count("impulse", direction, degree, tuple(piv), 0.0, (), inval)
    feats = impulse_features(piv, x, atr)
    score = _logit_score(feats, weights[f"impulse{stage}"])
    return Count("impulse", direction, degree, tuple(piv), score, tuple(sorted(feats.items())), inval)


def diagonal_count(piv: Sequence[Pivot], degree: int, weights: Mapping[str, Mapping[str, float]]) -> Count | None:
    """The diagonal count over 5-6 consecutive pivots (wave 4 overlapping wave 1) or None."""
    direction = -piv[0].sign
    x = _orient(piv, direction)
    if rules.diagonal_failures(x, True):
        return None
    L = rules.lengths(x)
    shape = rules.diagonal_shape(x)
    feats = {
        "r2": rules.band_fit(L[1] / L[0], 0.66, 0.81, 0.1),
        "r4": rules.band_fit(L[3] / L[2], 0.66, 0.81, 0.1),
        "converge": 1.0 if shape == "contracting" else 0.0,
    }
    below, above = ("below", "above") if direction > 0 else ("above", "below")
    inval = ((piv[2].price, below),) if len(piv) == 5 else ((piv[5].price, above),)
    score = _logit_score(feats, weights["diagonal"])
    return Count("diagonal", direction, degree, tuple(piv), score, tuple(sorted(feats.items())), inval, shape)


@dataclass(slots=True, unsafe_hash=True)
class TrendContext:
    """The move a correction corrects: its origin (level, bar), its total volume, and the score of
    the complete impulse it is (0 when it is just the previous zigzag leg).
    Not frozen (built on the hot path, and a frozen dataclass's generated ``__init__`` runs interpreted under
    mypyc); hashable like before (``unsafe_hash``); Final fields: mypy rejects assignments."""

    origin_level: Final[float]
    origin_index: Final[int]
    volume: Final[float]
    impulse_score: Final[float]

    def __init__(self, origin_level: float, origin_index: int, volume: float, impulse_score: float = 0.0) -> None:
        self.origin_level = origin_level
        self.origin_index = origin_index
        self.volume = volume
        self.impulse_score = impulse_score


def correction_count(
    piv: Sequence[Pivot],
    trend_ctx: TrendContext | None,
    degree: int,
    weights: Mapping[str, Mapping[str, float]],
) -> Count | None:
    """The best A-B-C count (zigzag or flat) over 4 consecutive pivots, or None.

    ``trend_ctx`` describes the trend being corrected: a complete same-direction impulse ending at
    the correction's origin if there is one, else the previous zigzag leg (None at start-up).
    """
    trend = piv[0].sign  # a high origin: wave A goes down, the larger trend is up
    q = _orient(piv, trend)
    best: Count | None = None
    kinds: tuple[Pattern, ...] = ("zigzag", "flat")
    for kind in kinds:
        if rules.correction_failures(q, kind):
            continue
        # measured only for a kind that passes (most windows pass neither; at most one passes: B < or >= 0.9 A)
        a, b, c = rules.lengths(q)
        durs, _, vols = _leg_stats(piv, q)
        if kind == "zigzag":
            fb = rules.band_fit(b / a, rules.ZIGZAG_B[0], rules.ZIGZAG_B[1], 0.1)
            fc = rules.ratio_fit(c / a, rules.ZIGZAG_C)
            subtype = ""
        else:
            fb = rules.band_fit(b / a, rules.FLAT_B[0], rules.FLAT_B[1], 0.1)
            fc = rules.band_fit(c / a, rules.FLAT_C[0], rules.FLAT_C[1], 0.15)
            subtype = rules.flat_shape(q)
        prior_fit, quiet = 0.0, 0.0
        if trend_ctx is not None:
            # depth of the correction as a fraction of the trend it corrects: 38.2-61.8 % [G]
            trend_len = abs(piv[0].level - trend_ctx.origin_level)
            depth = (q[0] - min(q[1], q[3])) / trend_len if trend_len > 0 else math.inf
            prior_fit = rules.band_fit(depth, 0.382, 0.618, 0.15)
            # corrections trade on lighter volume per bar than the trend [G]
            trend_vpb = trend_ctx.volume / max(1, piv[0].index - trend_ctx.origin_index)
            quiet = 1.0 - _clamp01(max(vols[0], vols[2]) / max(trend_vpb, 1e-12) - 0.5)
        feats = {
            "b": fb,
            "c": fc,
            "impulse": trend_ctx.impulse_score if trend_ctx is not None else 0.0,
            "prior": prior_fit,
            "time": rules.band_fit(durs[2] / durs[0], 0.618, 1.618, 0.4),
            "quiet": quiet,
        }
        score = _logit_score(feats, weights[kind])
        stop_side = "below" if trend > 0 else "above"
        cnt = Count(kind, trend, degree, tuple(piv), score, tuple(sorted(feats.items())), ((piv[3].price, stop_side),), subtype)
        if best is None or cnt.score > best.score:
            best = cnt
    return best


register_frozen(Count, TrendContext)

