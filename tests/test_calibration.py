"""Calibration: PAV monotone and optimal, Brier never worse in-sample, shrinkage, JSON round trip."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.calibration import (
    CalibrationFormatError,
    CalibrationSet,
    Sample,
    brier,
    ece,
    fit,
    pav,
    reliability,
)

scores = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.tuples(scores, st.integers(0, 1)), min_size=1, max_size=80))
def test_pav_is_monotone_and_keeps_the_mean(data):
    xs, ys = [d[0] for d in data], [float(d[1]) for d in data]
    blocks = pav(xs, ys)
    assert all(a.value <= b.value for a, b in pairwise(blocks))
    assert all(a.hi < b.lo for a, b in pairwise(blocks))
    assert sum(b.n for b in blocks) == len(xs)
    assert sum(b.value * b.n for b in blocks) == pytest.approx(sum(ys))


def test_pav_pools_a_violation():
    blocks = pav([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    assert [(b.lo, b.hi, b.n, b.value) for b in blocks] == [(0.1, 0.1, 1, 0.0), (0.2, 0.3, 2, 0.5), (0.4, 0.4, 1, 1.0)]


@settings(max_examples=100, deadline=None)
@given(data=st.lists(st.tuples(scores, st.integers(0, 1), st.sampled_from(["a", "b"])), min_size=1, max_size=150),
       min_samples=st.integers(1, 40), k=st.floats(0.0, 20.0))
def test_calibrated_brier_is_never_worse_in_sample_and_maps_are_monotone(data, min_samples, k):
    samples = [Sample(p, "1h", x, y) for x, y, p in data]
    cal = fit(samples, min_samples=min_samples, prior_strength=k)
    for pattern in ("a", "b"):
        group = [s for s in samples if s.pattern == pattern]
        if not group:
            continue
        raw = [s.raw for s in group]
        ys = [s.hit for s in group]
        after = [cal.calibrate(pattern, "1h", r) for r in raw]
        assert brier(after, ys) <= brier(raw, ys) + 1e-12
        grid = [i / 50 for i in range(51)]
        vals = [cal.calibrate(pattern, "1h", g) for g in grid]
        if (pattern, "1h") in cal.maps:
            assert all(a <= b + 1e-12 for a, b in pairwise(vals))
            assert all(0.0 <= v <= 1.0 for v in vals)


def test_overconfident_scores_are_pulled_to_the_observed_hit_rate():
    rng = random.Random(7)
    samples = []
    for _ in range(2000):
        raw = rng.random()
        p_true = 0.3 + 0.3 * raw  # raw says 0..1, truth is 0.3..0.6
        samples.append(Sample("spring", "1h", raw, int(rng.random() < p_true)))
    cal = fit(samples)
    m = cal.maps[("spring", "1h")]
    assert m.kind == "isotonic" and m.brier_calibrated < m.brier_raw
    assert cal.calibrate("spring", "1h", 0.95) == pytest.approx(0.6, abs=0.08)
    assert cal.calibrate("spring", "1h", 0.05) == pytest.approx(0.3, abs=0.08)
    probs = [cal.calibrate("spring", "1h", s.raw) for s in samples]
    assert ece(probs, [s.hit for s in samples]) < 0.05


def test_thin_pattern_gets_a_constant_shrunk_toward_the_base_rate():
    samples = [Sample("common", "1h", 0.5, i % 2) for i in range(100)]
    samples += [Sample("rare", "1h", 0.9, int(i == 0)) for i in range(5)]  # 1 hit in 5 at raw 0.9
    cal = fit(samples, min_samples=30, prior_strength=10)
    m = cal.maps[("rare", "1h")]
    base = (50 + 1) / 105
    assert m.kind == "constant" and m.n == 5 and m.hits == 1
    assert cal.calibrate("rare", "1h", 0.1) == pytest.approx((1 + 10 * base) / 15)
    assert cal.calibrate("rare", "1h", 0.99) == pytest.approx((1 + 10 * base) / 15)


def test_map_worse_than_raw_in_sample_is_not_kept():
    samples = [Sample("sharp", "1h", float(i % 2), i % 2) for i in range(10)]  # raw already perfect
    cal = fit(samples, min_samples=30, prior_strength=10)
    assert ("sharp", "1h") not in cal.maps and "sharp|1h" in cal.skipped
    assert cal.calibrate("sharp", "1h", 1.0) == 1.0


def test_unknown_pattern_passes_the_raw_score_through():
    assert CalibrationSet().calibrate("x", "1h", 0.42) == 0.42


def test_json_round_trip_is_exact():
    rng = random.Random(3)
    samples = [Sample(p, tf, rng.random(), rng.randint(0, 1)) for p in ("a", "b") for tf in ("1h", "4h") for _ in range(60)]
    cal = fit(samples)
    cal.meta["source"] = "test"
    again = CalibrationSet.from_json(cal.to_json())
    assert again.maps == cal.maps and again.meta == cal.meta and again.skipped == cal.skipped
    for x in (0.0, 0.13, 0.5, 0.77, 1.0):
        assert again.calibrate("a", "4h", x) == cal.calibrate("a", "4h", x)


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"version": 2, "maps": []}', '{"version": 1, "maps": [{"pattern": "a"}]}',
     '{"version": 1, "maps": [{"pattern": "a", "timeframe": "1h", "kind": "isotonic", "n": 2, "hits": 1,'
     ' "base_rate": 0.5, "blocks": [[0.1, 0.2, 1, 0.9], [0.3, 0.4, 1, 0.1]], "brier_raw": 0, "brier_calibrated": 0}]}'],
)
def test_bad_calibration_documents_are_rejected_clearly(text):
    with pytest.raises(CalibrationFormatError):
        CalibrationSet.from_json(text)


def test_reliability_bins_count_every_sample():
    rows = reliability([0.05, 0.15, 0.15, 1.0], [0, 1, 0, 1])
    assert [(r.n, r.hit_rate) for r in rows] == [(1, 0.0), (2, 0.5), (1, 1.0)]
    assert rows[-1].lo == 0.9
