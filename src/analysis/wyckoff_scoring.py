"""Raw evidence score of a Wyckoff setup: a weighted geometric mean of memberships in [0, 1].

s = prod(mu_i ** w_i) ** k with sum(w_i) = 1 and a sharpness k per setup, so one near-zero critical check
drags the whole score down (a plain average would let strong volume hide a bad geometry). Memberships are piecewise
linear ramps; each is floored at 0.01 so the score stays defined. The weights per setup are in
:data:`WEIGHTS` (and in docs/analysis.md); the score is NOT a probability: the engine's
calibrator maps it to one once graded outcomes exist.
"""

from __future__ import annotations

import math

# (evidence name, weight) per tradeable setup; every row sums to 1. Fitted in round 2 of issue 12 (a logistic
# regression of "the candidate matches a labelled event" on the log memberships, weights >= 0, normalised):
# the first setup of its kind in a range on the broad synthetic family's tuning seeds 0-99 against random
# walks 80000-80019 (never the benchmark's null seeds 90000+ or the held-out seeds). A zero weight means the
# evidence did not separate true events from random ones there; it is still reported as a feature.
WEIGHTS: dict[str, tuple[tuple[str, float], ...]] = {
    "spring": (
        ("climax", 0.23), ("context", 0.17), ("range", 0.17), ("geometry", 0.4), ("effort", 0.0),
        ("bar", 0.0), ("room", 0.0), ("bias", 0.03),
    ),
    "test": (
        ("climax", 0.18), ("context", 0.11), ("range", 0.13), ("spring", 0.33), ("geometry", 0.07),
        ("effort", 0.0), ("room", 0.18), ("bias", 0.0),
    ),
    "sos": (
        ("climax", 0.2), ("context", 0.12), ("range", 0.21), ("phase_c", 0.14), ("breakout", 0.0),
        ("effort", 0.06), ("bar", 0.25), ("bias", 0.02),
    ),
    "lps": (
        ("climax", 0.18), ("context", 0.12), ("range", 0.22), ("phase_c", 0.11), ("sos", 0.13),
        ("depth", 0.03), ("effort", 0.16), ("room", 0.05), ("bias", 0.0),
    ),
}
# score = (weighted geometric mean) ** SHARPNESS: the exponent puts the watch gate's 0.65 where random walks
# 80000-80019 give about 0.33 springs/UTADs, 0.37 SOS/SOWs, 0.02 tests and 0.02 LPS per 1,000 bars (first
# setups of their kind; rule R1 of wyckoff_ranges scales the later ones down)
SHARPNESS: dict[str, float] = {"spring": 0.903, "test": 1.706, "sos": 0.84, "lps": 1.196}
FLOOR = 0.01


def ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between (a falling ramp when lo > hi)."""
    if lo == hi:
        return 1.0 if x >= hi else 0.0
    t = (x - lo) / (hi - lo)
    return min(1.0, max(0.0, t))


def band(x: float, lo0: float, lo1: float, hi1: float, hi0: float) -> float:
    """Trapezoid: 0 below lo0, rising to 1 at lo1, 1 until hi1, falling to 0 at hi0."""
    if x < lo1:
        return ramp(x, lo0, lo1)
    if x > hi1:
        return ramp(x, hi0, hi1)
    return 1.0


def score(setup: str, memberships: dict[str, float]) -> float:
    """Weighted geometric mean of the memberships named in ``WEIGHTS[setup]`` (missing -> 0.5), raised to
    ``SHARPNESS[setup]``."""
    total = 0.0
    for name, w in WEIGHTS[setup]:
        if w:
            mu = max(FLOOR, min(1.0, memberships.get(name, 0.5)))
            total += w * math.log(mu)
    return math.exp(SHARPNESS[setup] * total)
