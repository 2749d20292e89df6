"""Probability forecast quality: reliability table, expected calibration error (ECE), Brier score.

Equal-width bins on [0, 1] (the last one closed); empty bins are left out. ECE = count-weighted mean of
|mean forecast - observed frequency| over the bins (ANALYSIS-NOTES 4.5).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from src.analysis.pickling import register_frozen


@dataclass(frozen=True, slots=True)
class ReliabilityRow:
    lo: float
    hi: float
    n: int
    mean_p: float
    hit_rate: float


def brier(probs: Sequence[float], labels: Sequence[float]) -> float:
    """Mean squared error of probabilities against 0/1 labels (lower is better); NaN when empty."""
    if not probs:
        return float("nan")
    return sum((p - y) ** 2 for p, y in zip(probs, labels, strict=True)) / len(probs)


def reliability(probs: Sequence[float], labels: Sequence[float], bins: int = 10) -> list[ReliabilityRow]:
    """Equal-width bins on [0, 1] (the last one closed); empty bins are left out."""
    acc: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for p, y in zip(probs, labels, strict=True):
        b = min(bins - 1, max(0, int(p * bins)))
        acc[b][0] += 1
        acc[b][1] += p
        acc[b][2] += y
    return [
        ReliabilityRow(b / bins, (b + 1) / bins, int(n), sp / n, sy / n) for b, (n, sp, sy) in sorted(acc.items())
    ]


def ece(probs: Sequence[float], labels: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean |mean p - hit rate| over the bins."""
    rows = reliability(probs, labels, bins)
    total = sum(r.n for r in rows)
    return sum(r.n * abs(r.mean_p - r.hit_rate) for r in rows) / total if total else float("nan")


register_frozen(ReliabilityRow)

