"""The event study's statistics: week-block bootstrap (coverage, null calibration, symbol alignment),
Holm / Benjamini-Hochberg against hand-computed values, and the deflated Sharpe ratio against the
worked example of Bailey & Lopez de Prado (2014)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.research.stats import (
    WEEK_MS,
    WeekBootstrap,
    benjamini_hochberg,
    deflated_sharpe,
    estimate,
    expected_max_sharpe,
    holm,
    p_greater,
    sharpe_stats,
    week_of,
)
from src.analysis.types import iso_to_ms


def clustered_sample(rng: np.random.Generator, mean: float, weeks: int = 80, per_week: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Events whose values share a weekly shock (the dependence the week blocks must respect)."""
    w = np.repeat(np.arange(weeks), per_week)
    shock = rng.normal(0.0, 0.5, size=weeks)[w]
    return w.astype(np.int64), mean + shock + rng.normal(0.0, 1.0, size=w.size)


def test_iso_weeks_start_on_monday_midnight_utc():
    sunday_night = iso_to_ms("2024-01-07T23:59:59")
    monday = iso_to_ms("2024-01-08T00:00:00")
    assert week_of(monday) == week_of(sunday_night) + 1
    assert week_of(monday + WEEK_MS - 1) == week_of(monday)


def test_whole_weeks_are_resampled_together_so_symbols_stay_aligned():
    # two symbols with events in the same weeks: every replication keeps both the same number of times
    weeks = np.arange(100, 140)
    boot = WeekBootstrap(weeks, 300, seed=3)
    btc_weeks = np.array([101, 101, 105, 120, 139], dtype=np.int64)
    eth_weeks = np.array([101, 105, 105, 120, 139], dtype=np.int64)
    wb = boot.weights(boot.position(btc_weeks))
    we = boot.weights(boot.position(eth_weeks))
    assert np.array_equal(wb[:, 0], we[:, 0])  # week 101
    assert np.array_equal(wb[:, 2], we[:, 1])  # week 105
    assert np.array_equal(wb[:, 3], we[:, 3]) and np.array_equal(wb[:, 4], we[:, 4])
    assert np.all(boot.counts.sum(axis=1) == weeks.size)  # each replication draws as many weeks as the data has
    assert not np.all(boot.counts == 1)  # and it is a resample, not the identity


def test_an_event_outside_the_covered_weeks_is_refused():
    boot = WeekBootstrap([1, 2, 3], 10, seed=0)
    with pytest.raises(ValueError, match="outside"):
        boot.position(np.array([7], dtype=np.int64))


def test_bootstrap_interval_covers_the_true_mean_of_a_planted_effect():
    rng = np.random.default_rng(42)
    w, x = clustered_sample(rng, mean=0.3)
    boot = WeekBootstrap(np.unique(w), 1000, seed=1)
    est = estimate(x, boot.means(boot.position(w), x))
    assert est.covers(0.3)
    assert est.lo > 0  # the effect is found
    assert p_greater(est.mean, boot.means(boot.position(w), x)) < 0.01


def test_bootstrap_intervals_reach_their_nominal_coverage_under_weekly_clustering():
    rng = np.random.default_rng(7)
    hits = 0
    sims = 150
    for k in range(sims):
        w, x = clustered_sample(rng, mean=0.3)
        boot = WeekBootstrap(np.unique(w), 300, seed=k)
        hits += estimate(x, boot.means(boot.position(w), x)).covers(0.3)
    assert hits / sims >= 0.88  # nominal 95 %; resampling single events instead of weeks covers about 81 % here


def test_bootstrap_on_driftless_data_is_centred_on_zero_and_its_p_values_are_calibrated():
    rng = np.random.default_rng(11)
    p_values, centres = [], []
    for k in range(150):
        w, x = clustered_sample(rng, mean=0.0)
        boot = WeekBootstrap(np.unique(w), 300, seed=k)
        b = boot.means(boot.position(w), x)
        est = estimate(x, b)
        centres.append((est.lo + est.hi) / 2)
        p_values.append(p_greater(est.mean, b))
    assert abs(np.mean(centres)) < 0.03
    assert np.mean(np.array(p_values) < 0.05) <= 0.10  # nominal 5 %
    assert np.mean(np.array(p_values) < 0.5) == pytest.approx(0.5, abs=0.15)


def test_replications_that_draw_none_of_a_cells_events_are_left_out():
    boot = WeekBootstrap(np.arange(50), 400, seed=2)
    pos = boot.position(np.array([0], dtype=np.int64))
    b = boot.means(pos, np.array([1.5]))
    assert np.isnan(b).any() and np.nanmax(b) == 1.5 and np.nanmin(b) == 1.5
    est = estimate(np.array([1.5]), b)
    assert est.lo == est.hi == 1.5


def test_mean_paths_are_bootstrapped_per_horizon():
    rng = np.random.default_rng(5)
    w = np.repeat(np.arange(30), 4).astype(np.int64)
    paths = np.cumsum(rng.normal(0.1, 1.0, size=(w.size, 12)), axis=1)
    boot = WeekBootstrap(np.unique(w), 200, seed=0)
    b = boot.means(boot.position(w), paths)
    assert b.shape == (200, 12)
    assert np.allclose(boot.means(boot.position(w), paths[:, 5])[:, None][:, 0], b[:, 5])


# ------------------------------------------------------------------------------ multiple testing


def test_holm_matches_hand_computed_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, max(1*0.04, 0.06)=0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_benjamini_hochberg_matches_hand_computed_values():
    # p*m/rank: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 (then running minimum from the top)
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # step-up: 0.01*3/1=0.03, 0.049*3/2=0.0735 is lowered to the 0.05*3/3=0.05 above it
    assert benjamini_hochberg([0.049, 0.01, 0.05]) == pytest.approx([0.05, 0.03, 0.05])
    assert benjamini_hochberg([0.04, 0.02, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_untested_cells_stay_outside_the_family():
    assert holm([0.01, math.nan, 0.04])[1] != holm([0.01, math.nan, 0.04])[1]  # NaN stays NaN
    assert holm([0.01, math.nan, 0.04])[0] == pytest.approx(0.02)  # family of 2, not 3
    assert benjamini_hochberg([math.nan]) != benjamini_hochberg([math.nan])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_adjusted_p_values_are_ordered_bounded_and_monotone(p):
    h, q = holm(p), benjamini_hochberg(p)
    for raw, hp, bq in zip(p, h, q, strict=True):
        assert raw <= bq + 1e-12 <= hp + 2e-12 <= 1.0 + 2e-12
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(np.array(h)[order]) >= -1e-12)
    assert np.all(np.diff(np.array(q)[order]) >= -1e-12)


# ------------------------------------------------------------------------------ deflated Sharpe


def test_deflated_sharpe_matches_the_papers_worked_example():
    # Bailey & Lopez de Prado (2014), section 4: annualised SR 2.5 over T = 1250 daily returns, N = 100 trials
    # with annualised variance 0.5 across them, skewness -3, kurtosis 10 -> SR0 = 0.1132 per day, DSR = 0.9004
    sr = 2.5 / math.sqrt(250)
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe(sr, 1250, -3.0, 10.0, sr0) == pytest.approx(0.9004, abs=5e-4)


def test_one_trial_deflates_nothing():
    assert expected_max_sharpe(1, 0.3) == 0.0
    # PSR(0) of a normal series: Phi(SR * sqrt(T - 1) / sqrt(1 + SR^2 / 2))
    want = 0.5 * (1 + math.erf(0.1 * math.sqrt(99) / math.sqrt(1 + 0.01 / 2) / math.sqrt(2)))
    assert deflated_sharpe(0.1, 100, 0.0, 3.0, 0.0) == pytest.approx(want)


def test_more_trials_raise_the_bar():
    assert expected_max_sharpe(10, 0.01) < expected_max_sharpe(100, 0.01) < expected_max_sharpe(1000, 0.01)


def test_sharpe_stats_use_population_moments_and_need_variance():
    x = np.array([1.0, -1.0, 2.0, 0.0])
    s = sharpe_stats(x)
    assert s is not None and s.n == 4
    assert s.sr == pytest.approx(0.5 / np.std(x, ddof=1))
    assert s.kurt == pytest.approx(np.mean((x - 0.5) ** 4) / np.var(x) ** 2)
    assert sharpe_stats(np.array([1.0])) is None and sharpe_stats(np.array([2.0, 2.0])) is None
