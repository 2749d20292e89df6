"""Forecast-quality helpers: reliability bins, ECE, Brier."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from src.analysis.reliability import brier, ece, reliability


def test_reliability_bins_count_every_sample():
    rows = reliability([0.05, 0.15, 0.15, 1.0], [0, 1, 0, 1])
    assert [(r.n, r.hit_rate) for r in rows] == [(1, 0.0), (2, 0.5), (1, 1.0)]
    assert rows[-1].lo == 0.9


def test_brier_of_a_perfect_forecast_is_zero():
    assert brier([1.0, 0.0], [1, 0]) == 0.0


def test_a_forecast_equal_to_the_hit_rate_of_its_bin_has_zero_ece():
    probs = [0.25] * 4 + [0.75] * 4
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    assert ece(probs, labels) == 0.0


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 1)), min_size=1, max_size=200))
def test_ece_lies_between_zero_and_one_and_bins_keep_every_sample(pairs):
    probs = [p for p, _ in pairs]
    labels = [y for _, y in pairs]
    e = ece(probs, labels)
    assert 0.0 <= e <= 1.0
    assert sum(r.n for r in reliability(probs, labels)) == len(pairs)
