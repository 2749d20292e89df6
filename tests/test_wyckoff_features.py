"""Streaming building blocks of the Wyckoff analyzer against brute-force references."""

from __future__ import annotations

import itertools
import math
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.wyckoff_features import Bar, RollingMedian, Swings
from src.analysis.wyckoff_scoring import SHARPNESS, WEIGHTS, band, ramp, score

values = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=120)


@settings(max_examples=60, deadline=None)
@given(values, st.integers(min_value=1, max_value=20))
def test_rolling_median_equals_the_median_of_the_last_n_values(xs, n):
    rm = RollingMedian(n)
    for k, x in enumerate(xs):
        rm.push(x)
        assert rm.median == statistics.median(xs[max(0, k - n + 1): k + 1])


def _bars(closes: list[float], atr: float = 1.0) -> list[Bar]:
    out = []
    prev = closes[0]
    for i, c in enumerate(closes):
        out.append(Bar(i, i * 1000, prev, max(prev, c), min(prev, c), c, atr, 1.0 + i % 3, 1.0, 0.5))
        prev = c
    return out


def test_swings_confirm_a_pivot_only_after_a_k_atr_reversal():
    sw = Swings(1.25)
    path = [0, 1, 2, 3, 4, 3.5, 3.0, 2.7, 4.5, 5, 6, 5.0, 4.0]
    pivots = [(b.i, sw.update(b)) for b in _bars([float(x) for x in path])]
    confirmed = [(i, p) for i, p in pivots if p is not None]
    # the high at bar 4 (4.0) is confirmed when a low reaches 4.0 - 1.25 = 2.75 (bar 7, low 2.7)
    assert confirmed[0][0] == 7 and confirmed[0][1].kind == 1 and confirmed[0][1].i == 4
    # then the low at bar 7 is confirmed by the rally to 4.5 (bar 8), then the high at 6 by bar 12
    assert confirmed[1][1].kind == -1 and confirmed[1][1].i == 7 and confirmed[1][0] == 8
    assert confirmed[2][1].kind == 1 and confirmed[2][1].i == 10 and confirmed[2][0] == 12


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-5, max_value=5, allow_nan=False), min_size=5, max_size=150))
def test_swing_pivots_alternate_and_are_prefix_stable(steps):
    closes = [sum(steps[: k + 1]) for k in range(len(steps))]
    bars = _bars(closes)
    full: list[tuple[int, int, float]] = []
    sw = Swings(1.25)
    for b in bars:
        p = sw.update(b)
        if p is not None:
            full.append((p.kind, p.i, p.price))
            assert p.confirmed_i == b.i >= p.i
            assert p.leg_bars >= 1 and p.leg_max_rv >= p.leg_mean_rv > 0
    assert all(a[0] != b[0] for a, b in itertools.pairwise(full))
    cut = len(bars) // 2
    sw2 = Swings(1.25)
    prefix = [(p.kind, p.i, p.price) for p in (sw2.update(b) for b in bars[:cut]) if p is not None]
    assert prefix == full[: len(prefix)]


def test_ramps_and_bands_are_piecewise_linear_in_the_unit_interval():
    assert ramp(2.0, 2.0, 4.0) == 0.0 and ramp(3.0, 2.0, 4.0) == 0.5 and ramp(9.0, 2.0, 4.0) == 1.0
    assert ramp(0.4, 1.0, 0.5) == 1.0 and ramp(0.75, 1.0, 0.5) == 0.5 and ramp(1.2, 1.0, 0.5) == 0.0  # falling
    assert band(2.5, 2, 3, 12, 16) == 0.5 and band(8, 2, 3, 12, 16) == 1.0 and band(14, 2, 3, 12, 16) == 0.5
    assert band(1, 2, 3, 12, 16) == 0.0 and band(20, 2, 3, 12, 16) == 0.0


def test_evidence_weights_sum_to_one_and_the_score_is_a_sharpened_geometric_mean():
    for setup, weights in WEIGHTS.items():
        assert math.isclose(sum(w for _, w in weights), 1.0), setup
        assert all(w >= 0 for _, w in weights), setup
        k = SHARPNESS[setup]
        assert score(setup, {n: 1.0 for n, _ in weights}) == 1.0
        half = score(setup, {n: 0.5 for n, _ in weights})
        assert math.isclose(half, 0.5 ** k)
        zero_one = score(setup, {weights[0][0]: 0.0} | {n: 1.0 for n, _ in weights[1:]})
        assert math.isclose(zero_one, 0.01 ** (k * weights[0][1]))  # one failed check drags the score down hard
        unweighted = [n for n, w in weights if w == 0]
        if unweighted:  # an evidence with weight 0 does not move the score
            assert score(setup, {n: 1.0 for n, _ in weights} | {unweighted[0]: 0.0}) == 1.0
