"""Raw evidence score of a Wyckoff setup: a weighted geometric mean of memberships in [0, 1].

s = prod(mu_i ** w_i) with sum(w_i) = 1, so one near-zero critical check drags the whole score
down (a plain average would let strong volume hide a bad geometry). Memberships are piecewise
linear ramps; each is floored at 0.01 so the score stays defined. The weights per setup are in
:data:`WEIGHTS` (and in docs/analysis.md); the score is NOT a probability: the engine's
calibrator maps it to one once graded outcomes exist.
"""

from __future__ import annotations

import math

# (evidence name, weight) per tradeable setup; every row sums to 1.
WEIGHTS: dict[str, tuple[tuple[str, float], ...]] = {
    "spring": (
        ("climax", 0.165), ("context", 0.135), ("range", 0.22), ("geometry", 0.135),
        ("effort", 0.055), ("bar", 0.07), ("room", 0.13), ("bias", 0.09),
    ),
    "test": (
        ("climax", 0.17), ("context", 0.15), ("range", 0.22), ("spring", 0.10),
        ("geometry", 0.10), ("effort", 0.12), ("room", 0.06), ("bias", 0.08),
    ),
    "sos": (
        ("climax", 0.17), ("context", 0.17), ("range", 0.19), ("phase_c", 0.17),
        ("breakout", 0.07), ("effort", 0.09), ("bar", 0.05), ("bias", 0.09),
    ),
    "lps": (
        ("climax", 0.15), ("context", 0.15), ("range", 0.18), ("phase_c", 0.10), ("sos", 0.10),
        ("depth", 0.10), ("effort", 0.12), ("room", 0.05), ("bias", 0.05),
    ),
}
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
    """Weighted geometric mean of the memberships named in ``WEIGHTS[setup]`` (missing -> 0.5)."""
    total = 0.0
    for name, w in WEIGHTS[setup]:
        mu = max(FLOOR, min(1.0, memberships.get(name, 0.5)))
        total += w * math.log(mu)
    return math.exp(total)
