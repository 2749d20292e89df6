"""Elliott-wave hard rules (gates) and guideline fits (scores), as pure functions of pivot levels.

Every function takes pivot levels ``x`` already ORIENTED so the pattern's first wave goes UP
(multiply log prices by -1 for a down pattern; ANALYSIS-NOTES 1.6). Lengths are L_i = |x_i - x_(i-1)|.
A sequence may be a prefix (a count still in progress): only the rules its pivots can decide are
checked, so a prefix that passes may still fail later, but one that fails never recovers.

Hard rules [R] (gates; a failing count dies):

- I1  wave 2 never moves beyond the start of wave 1: x2 > x0.
- I2  wave 3 moves beyond the end of wave 1: x3 > x1.
- I3  wave 3 is never the shortest of 1, 3, 5: not (L3 < L1 and L3 < L5).
- I4  wave 4 never enters wave 1's territory: x4 > x1 - tolerance (tolerance 0 = strict).
- D1  diagonal: wave 4 DOES overlap wave 1 (x4 <= x1) but stays beyond wave 2's end (x4 > x2);
      contracting (L3 < L1, L4 < L2, L5 < L3) or expanding (L3 > L1, L4 > L2, L5 > L3).
- Z1  zigzag: B never beyond the start of A; C ends beyond A's end [P, gate: a "zigzag" whose
      C fails to pass A is left to the flat/triangle families].
- F1  flat: B retraces >= 90 % of A; B <= 161.8 % and C <= 261.8 % of A [P, sanity caps].

Loose gates from ElliottWaveAnalyzer [H]: L2 >= 0.2 L1 (a 1-bar wiggle is not a wave), L4 >= L2 / 3,
T2 > T1 / 9, T3 > T1 / 7 (T = duration in bars).

Guideline fits [G] return a value in [0, 1] (1 = textbook) and are only ever used for scoring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

FIB_R2 = (0.5, 0.618)  # wave-2 retracement band
FIB_E3 = (1.618, 2.618)  # wave-3 extension modes
FIB_R4 = (0.236, 0.382)  # wave-4 retracement band
ZIGZAG_B = (0.382, 0.786)  # zigzag B retracement band
ZIGZAG_C = (0.618, 1.0, 1.618)  # zigzag C/A modes
FLAT_B = (1.0, 1.38)
FLAT_C = (1.0, 1.65)


def lengths(x: Sequence[float]) -> list[float]:
    """Wave lengths L_1.. of consecutive pivot levels."""
    return [abs(x[i] - x[i - 1]) for i in range(1, len(x))]


def impulse_failures(x: Sequence[float], wave4_tolerance: float = 0.0, first: bool = False) -> tuple[str, ...]:
    """Hard-rule failures (I1-I4 + loose size gates) of an up-oriented impulse prefix (2-6 pivots).

    ``first``: stop at the first failure (a gate only needs to know that one fails). Lengths are read as
    scalars, not a ``lengths()`` list: this runs for every pivot window (same operations, same floats)."""
    n = len(x)
    if n < 2 or x[1] <= x[0]:
        return ("orientation",)
    fails: list[str] = []
    x0, x1 = x[0], x[1]
    l1 = abs(x1 - x0)
    if n >= 3:
        x2 = x[2]
        if x2 <= x0:
            if first:
                return ("I1",)
            fails.append("I1")
        if abs(x2 - x1) < 0.2 * l1:
            if first:
                return ("min_wave2",)
            fails.append("min_wave2")
        if n >= 4:
            x3 = x[3]
            if x3 <= x1:
                if first:
                    return ("I2",)
                fails.append("I2")
            if n >= 5:
                x4 = x[4]
                if x4 <= x1 - wave4_tolerance:
                    if first:
                        return ("I4",)
                    fails.append("I4")
                if abs(x4 - x3) < abs(x2 - x1) / 3.0:
                    if first:
                        return ("min_wave4",)
                    fails.append("min_wave4")
                if n >= 6:
                    l3 = abs(x3 - x2)
                    if l3 < l1 and l3 < abs(x[5] - x4):
                        fails.append("I3")
    return tuple(fails)


def diagonal_failures(x: Sequence[float], first: bool = False) -> tuple[str, ...]:
    """Hard-rule failures of an up-oriented diagonal prefix; needs 5-6 pivots (before wave 4 it
    cannot be told from an impulse). Waves 1-3 obey the impulse rules but the wave-2 size gate.

    ``first``: stop at the first failure. Scalar reads, no ``lengths()`` list (same floats)."""
    n = len(x)
    if n < 5:
        return ("too_short",)
    x0, x1, x2, x3, x4 = x[0], x[1], x[2], x[3], x[4]
    fails: list[str] = []
    # impulse_failures(x[:4]) without "min_wave2": "orientation" alone when wave 1 does not go up
    if x1 <= x0:
        if first:
            return ("orientation",)
        fails.append("orientation")
    else:
        if x2 <= x0:
            if first:
                return ("I1",)
            fails.append("I1")
        if x3 <= x1:
            if first:
                return ("I2",)
            fails.append("I2")
    if not x4 <= x1:
        if first:
            return ("D1_no_overlap",)
        fails.append("D1_no_overlap")
    if not x4 > x2:
        if first:
            return ("D1_beyond_wave2",)
        fails.append("D1_beyond_wave2")
    l0, l1, l2, l3 = abs(x1 - x0), abs(x2 - x1), abs(x3 - x2), abs(x4 - x3)
    contracting = l2 < l0 and l3 < l1
    expanding = l2 > l0 and l3 > l1
    if n >= 6:
        l4 = abs(x[5] - x4)
        contracting = contracting and l4 < l2
        expanding = expanding and l4 > l2
    if not (contracting or expanding):
        fails.append("D1_shape")
    return tuple(fails)


def diagonal_shape(x: Sequence[float]) -> str:
    """'contracting' or 'expanding' (call only on a diagonal that passes its rules)."""
    L = lengths(x)
    return "contracting" if L[2] < L[0] else "expanding"


def correction_failures(q: Sequence[float], kind: str) -> tuple[str, ...]:
    """Hard-rule failures of an A-B-C correction, oriented so the LARGER trend is UP (wave A goes
    down): q0 > q1 < q2 > q3. ``kind`` is 'zigzag' or 'flat'."""
    if len(q) != 4 or not (q[0] > q[1] < q[2] > q[3]):
        return ("orientation",)
    a, b, c = abs(q[1] - q[0]), abs(q[2] - q[1]), abs(q[3] - q[2])  # lengths(q), without the list
    fails: list[str] = []
    rb = b / a
    if kind == "zigzag":
        if q[2] >= q[0]:
            fails.append("Z1")
        if rb >= 0.9:
            fails.append("zigzag_b_is_flat")
        if q[3] >= q[1]:
            fails.append("Z_c_not_beyond_a")
    elif kind == "flat":
        if rb < 0.9:
            fails.append("F1")
        if rb > 1.618:
            fails.append("flat_b_too_long")
        if c > 2.618 * a:
            fails.append("flat_c_too_long")
    else:
        raise ValueError(f"unknown correction kind {kind!r}")
    return tuple(fails)


def flat_shape(q: Sequence[float]) -> str:
    """'expanded' (B > 105 % of A and C beyond A), 'running' (B > 100 %, C not beyond A) or 'regular'."""
    a, b, _ = lengths(q)
    if b > 1.05 * a and q[3] < q[1]:
        return "expanded"
    if b > a and q[3] >= q[1]:
        return "running"
    return "regular"


def time_failures(t: Sequence[int]) -> tuple[str, ...]:
    """Loose duration gates [H] on pivot bar indices: T2 > T1/9 and T3 > T1/7."""
    fails: list[str] = []
    if len(t) >= 3 and (t[2] - t[1]) * 9 <= (t[1] - t[0]):
        fails.append("time_wave2")
    if len(t) >= 4 and (t[3] - t[2]) * 7 <= (t[1] - t[0]):
        fails.append("time_wave3")
    return tuple(fails)


# ---- guideline fits -------------------------------------------------------------------------


def band_fit(value: float, lo: float, hi: float, width: float) -> float:
    """1 inside [lo, hi]; outside, a Gaussian of the distance to the band with sd ``width``."""
    if lo <= value <= hi:
        return 1.0
    d = lo - value if value < lo else value - hi
    return math.exp(-0.5 * (d / width) ** 2)


def ratio_fit(value: float, modes: Sequence[float], log_width: float = 0.12) -> float:
    """Closeness of a positive ratio to its nearest mode, Gaussian in log-ratio (sd ``log_width``)."""
    if value <= 0:
        return 0.0
    return max(math.exp(-0.5 * (math.log(value / m) / log_width) ** 2) for m in modes)


def alternation_fit(r2: float, r4: float, t2: int, t4: int) -> float:
    """1 when waves 2 and 4 alternate: |r2 - r4| >= 0.15 or a duration ratio >= 1.5 either way."""
    if abs(r2 - r4) >= 0.15:
        return 1.0
    ratio = max(t2, 1) / max(t4, 1)
    return 1.0 if ratio >= 1.5 or ratio <= 1 / 1.5 else abs(r2 - r4) / 0.15


def channel_fit(x: Sequence[float], t: Sequence[int], atr: float) -> float:
    """Wave 5 ending on the parallel of the 2-4 line through 3: 1 within 0.5 ATR, then Gaussian."""
    if len(x) < 6 or t[4] == t[2] or atr <= 0:
        return 0.0
    slope = (x[4] - x[2]) / (t[4] - t[2])
    target = x[3] + slope * (t[5] - t[3])
    return band_fit(x[5] - target, -0.5 * atr, 0.5 * atr, 0.5 * atr)


def wave5_fit(L: Sequence[float], x: Sequence[float]) -> float:
    """Wave-5 length relation: if 3 is extended (L3 >= 1.618 L1) L5 ~ L1 or 0.618 L1, else
    L5 ~ 0.618 or 1.618 x (x3 - x0)."""
    if L[2] >= 1.618 * L[0]:
        return ratio_fit(L[4] / L[0], (0.618, 1.0))
    return ratio_fit(L[4] / (x[3] - x[0]), (0.618, 1.618))
