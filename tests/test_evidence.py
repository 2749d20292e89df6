"""The evidence model: fit (baseline, empirical Bayes shrinkage), assess, live record, JSON, the shipped default."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.engine import ANALYZER_VERSION
from src.analysis.evidence import (
    BASIS,
    CTX_ATR,
    EvidenceFormatError,
    EvidenceModel,
    LiveRecord,
    _basis_values,
    counts_in_track_record,
    geometry,
    load_default_model,
    p_positive,
    trade_variance,
)
from src.analysis.evidence_eval import evaluate, predict
from src.analysis.evidence_fit import FitOptions, Samples, Twins, design, fit_model
from src.analysis.registry import fitted_analyzers, stale_evidence
from src.analysis.types import Evidence, Signal, signal_id

HALF_YEAR_MS = 182 * 86_400_000
START = 1_577_836_800_000  # 2020-01-01


def synthetic(seed: int, n: int, effects: dict[str, float], *, symbols: tuple[str, ...] = ("AAA", "BBB"),
              periods: int = 6, twins: int = 8) -> tuple[Samples, Twins]:
    """Candidates whose trades win rr - cost with probability 1 / (1 + rr) (+ the pattern's effect in that
    probability), else lose 1 + cost: a driftless market where only ``effects`` carry an edge."""
    rng = np.random.default_rng(seed)
    patterns = np.array(sorted(effects) * (n // len(effects) + 1))[:n]
    rng.shuffle(patterns)
    rr = np.exp(rng.uniform(np.log(0.5), np.log(4.0), n))
    stop_atr = np.exp(rng.uniform(np.log(1.0), np.log(6.0), n))
    cost = rng.uniform(0.02, 0.12, n)
    t = START + rng.integers(0, periods * HALF_YEAR_MS, n)
    t.sort()
    p = 1 / (1 + rr) + np.array([effects[x] for x in patterns])
    win = rng.random(n) < p
    r = np.where(win, rr - cost, -1 - cost)
    sym = np.array(symbols)[rng.integers(0, len(symbols), n)]
    tw_of = np.repeat(np.arange(n), twins)
    tw_win = rng.random(n * twins) < 1 / (1 + rr[tw_of])
    tw_r = np.where(tw_win, rr[tw_of] - cost[tw_of], -1 - cost[tw_of])
    direction = rng.choice([-1, 1], n)
    same = np.tile(np.array([True, False] * (twins // 2)), n)
    twin_mean = np.bincount(tw_of[same], weights=tw_r[same], minlength=n) / (twins // 2)
    twin_win = np.bincount(tw_of[same], weights=(tw_r[same] > 0).astype(float), minlength=n) / (twins // 2)
    samples = Samples(
        sym.astype(np.str_), np.array(["1h"] * n, dtype=np.str_), patterns.astype(np.str_), t.astype(np.int64),
        (t + 3_600_000 * 20).astype(np.int64), direction.astype(np.int64), rr, stop_atr, cost, r, twin_mean, twin_win,
        rng.random(n), rng.integers(0, 10, n).astype(np.int64), rng.normal(0, 1, n),
    )
    tw = Twins(np.array(["1h"] * (n * twins), dtype=np.str_), t[tw_of].astype(np.int64), rr[tw_of], stop_atr[tw_of],
               cost[tw_of], tw_r)
    return samples, tw


@pytest.fixture(scope="module")
def fitted() -> EvidenceModel:
    s, t = synthetic(1, 15_000, {"elliott_edge": 0.3, "elliott_rare_edge": 0.3, "elliott_null": 0.0,
                                 "wyckoff_null": 0.0, "wyckoff_rare": 0.0})
    rare = np.char.find(s.pattern.astype(str), "_rare") >= 0
    keep = ~rare | (np.arange(len(s)) % 40 == 0)  # rare patterns: few candidates
    model, _ = fit_model(s.subset(keep), t, FitOptions())
    return model


def signal_for(pattern: str, rr: float, stop_atr: float, *, tf: str = "1h", entry: float = 100.0,
               direction: str = "LONG", atr: float | None = 1.0) -> Signal:
    risk = stop_atr * (atr or 1.0)
    sign = 1 if direction == "LONG" else -1
    feats = () if atr is None else ((CTX_ATR, atr),)
    return Signal(
        id=signal_id("X", tf, 0, pattern, direction), symbol="X", timeframe=tf, pattern=pattern,
        direction=direction,  # type: ignore[arg-type]
        confidence=0.0, raw_confidence=0.5, entry=entry, stop_loss=entry - sign * risk,
        take_profits=(entry + sign * rr * risk,), candle_time_ms=0, generated_at="", reasons=(), analyzer_version="",
        config_hash="", features=feats,
    )


# ------------------------------------------------------------------------------------------ fit


def test_a_pattern_with_a_real_edge_is_found_and_null_patterns_stay_at_the_baseline(fitted):
    edge = fitted.cells[("elliott_edge", "1h")]
    null = fitted.cells[("elliott_null", "1h")]
    assert edge.shrunk_r > 0.3 and edge.shrunk_p > 0.1
    assert abs(null.shrunk_r) < 0.05
    ev = fitted.assess(signal_for("elliott_edge", 2.0, 2.0, entry=125.0))
    assert ev.expected_r_lo > 0 and p_positive(ev) > 0.9
    assert p_positive(fitted.assess(signal_for("elliott_null", 2.0, 2.0, entry=125.0))) < 0.9


def test_a_small_cell_makes_no_confident_claim(fitted):
    rare, big = fitted.cells[("elliott_rare_edge", "1h")], fitted.cells[("elliott_edge", "1h")]
    assert rare.n < 200 < big.n
    # the same true edge: the small cell keeps a smaller share of what it measured and claims no trade call
    assert 0 <= rare.shrunk_r / rare.excess_r < big.shrunk_r / big.excess_r
    assert fitted.mean_variance("elliott_rare_edge", "1h") > fitted.mean_variance("elliott_edge", "1h")
    rare_ev = fitted.assess(signal_for("elliott_rare_edge", 2.0, 2.0, entry=125.0))
    big_ev = fitted.assess(signal_for("elliott_edge", 2.0, 2.0, entry=125.0))
    assert p_positive(rare_ev) < p_positive(big_ev)
    null = fitted.cells[("wyckoff_rare", "1h")]
    assert abs(null.shrunk_r) <= abs(null.excess_r) + 1e-12


def test_the_baseline_is_random_entries_after_costs(fitted):
    # a driftless market: E[net R] of a random entry = -costs; P(win) = 1 / (1 + R:R)
    for rr in (0.7, 1.0, 2.0, 3.5):
        sig = signal_for("never_seen", rr, 2.0, entry=200.0)  # risk 2: costs 2 x 0.0004 x 200 / 2 = 0.08 R
        ev = fitted.assess(sig)
        g = geometry(sig, fitted.cost_per_side)
        assert g.cost_r == pytest.approx(0.08)
        assert ev.expected_r == pytest.approx(-g.cost_r, abs=0.05)
        assert ev.p_win == pytest.approx(1 / (1 + rr), abs=0.04)


def test_nothing_is_shrunk_when_no_effect_persists():
    s, t = synthetic(2, 8000, {"elliott_a": 0.0, "elliott_b": 0.0, "elliott_c": 0.0})
    model, report = fit_model(s, t, FitOptions())
    for c in model.cells.values():
        ev = model.assess(signal_for(c.pattern, 1.5, 2.0, entry=500.0))
        assert p_positive(ev) < 0.9 and ev.expected_r < 0.05
    assert report.tau_rel["elliott"] < 0.01


def test_evidence_for_a_candidate_never_depends_on_its_own_outcome(fitted):
    test, _ = synthetic(9, 2000, {"elliott_edge": 0.3, "elliott_null": 0.0})
    before = predict(fitted, test)
    flipped = replace(test, r=-test.r, twin_r=-test.twin_r)
    after = predict(fitted, flipped)
    for a, b in zip((before.p_win, before.expected_r, before.lo, before.hi), (after.p_win, after.expected_r, after.lo,
                                                                              after.hi), strict=True):
        assert np.array_equal(a, b)
    # ... while the fit itself does move with the outcomes it is fitted on
    train, twins = synthetic(1, 12_000, {"elliott_edge": 0.2, "elliott_null": 0.0})
    m2, _ = fit_model(replace(train, r=-train.r), twins, FitOptions())
    assert m2.cells[("elliott_edge", "1h")].mean_r != pytest.approx(fitted.cells[("elliott_edge", "1h")].mean_r)


def test_a_held_out_evaluation_of_a_calibrated_model_looks_calibrated(fitted):
    test, _ = synthetic(11, 6000, {"elliott_edge": 0.3, "elliott_null": 0.0, "wyckoff_null": 0.0})
    ev = evaluate(fitted, test)
    assert ev.ece < 0.05
    assert ev.coverage >= 0.8 and ev.coverage_of_mean >= 0.66
    assert ev.trade_calls > 0 and ev.trade_mean_r is not None and ev.trade_mean_r > 0


# ------------------------------------------------------------------------------------------ assess


def test_a_far_target_widens_the_interval_by_its_own_scatter(fitted):
    """A trade with TP1 at 30 R scatters far more than its cell's average trade: its 20-signal interval must
    hold that (at least the scatter of 20 such trades), not the cell's narrow one."""
    near = fitted.assess(signal_for("elliott_edge", 1.5, 1.0))
    far_signal = signal_for("elliott_edge", 30.0, 1.0)
    far = fitted.assess(far_signal)
    _, p = fitted.baseline_for("1h").predict(geometry(far_signal, fitted.cost_per_side))
    deff = fitted.cells[("elliott_edge", "1h")].design_effect
    floor = 2 * NormalDist().inv_cdf(0.9) * math.sqrt(trade_variance(30.0, p) * deff / fitted.reference_n)
    assert far.expected_r_hi - far.expected_r_lo >= floor * 0.999
    assert far.expected_r_hi - far.expected_r_lo > 2 * (near.expected_r_hi - near.expected_r_lo)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 15), st.floats(0.1, 30), st.sampled_from(["elliott_edge", "wyckoff_rare", "unknown_x"]),
       st.sampled_from(["LONG", "SHORT"]), st.floats(1, 1e5))
def test_assess_matches_the_vectorised_prediction(fitted, rr, stop_atr, pattern, direction, entry):
    sig = signal_for(pattern, rr, stop_atr, entry=entry, direction=direction, atr=entry / 200)
    ev = fitted.assess(sig)
    g = geometry(sig, fitted.cost_per_side)
    assert g.stop_atr is not None
    one = Samples(np.array(["X"]), np.array(["1h"]), np.array([pattern]), np.array([0]), np.array([0]), np.array([1]),
                  np.array([g.rr]), np.array([g.stop_atr]), np.array([g.cost_r]), np.array([0.0]), np.array([0.0]),
                  np.array([0.0]), np.array([0.5]), np.array([0]), np.array([0.0]))
    p = predict(fitted, one)
    assert ev.expected_r == pytest.approx(p.expected_r[0], abs=1e-4)
    assert ev.expected_r_lo == pytest.approx(p.lo[0], abs=1e-4)
    assert ev.p_win == pytest.approx(p.p_win[0], abs=1e-4)
    assert p_positive(ev) == pytest.approx(p.confidence[0], abs=2e-3)
    assert ev.expected_r_lo <= ev.expected_r <= ev.expected_r_hi and 0 < ev.p_win < 1


@settings(max_examples=100, deadline=None)
@given(st.floats(0.001, 50), st.floats(0.01, 60), st.floats(0, 2))
def test_every_basis_function_is_computed_the_same_way_in_both_places(rr, stop_atr, cost):
    one = _basis_values(rr, stop_atr, cost)
    many = design(BASIS, np.array([rr]), np.array([stop_atr]), np.array([cost]))[0]
    assert list(one) == list(BASIS)
    assert np.allclose([one[b] for b in BASIS], many, rtol=1e-9, atol=1e-12)


def test_a_signal_without_atr_uses_the_cells_typical_stop(fitted):
    ev = fitted.assess(signal_for("elliott_edge", 1.5, 2.0, atr=None))
    assert math.isfinite(ev.expected_r) and ev.expected_r_lo < ev.expected_r_hi


@pytest.mark.parametrize(("lo", "hi", "above"), [(0.01, 0.2, True), (-0.01, 0.2, False), (-0.3, -0.1, False)])
def test_confidence_at_0_9_means_the_shown_80_percent_interval_lies_above_zero(lo, hi, above):
    ev = Evidence(0.5, (lo + hi) / 2, lo, hi, 0.8, "t")
    assert (p_positive(ev) >= 0.9) == above


def test_the_uninformed_model_says_random_entries_lose_their_costs():
    m = EvidenceModel.uninformed()
    sig = signal_for("x", 2.0, 2.0, entry=125.0)
    ev = m.assess(sig)
    assert ev.expected_r == pytest.approx(-geometry(sig, m.cost_per_side).cost_r, abs=1e-4)
    assert ev.p_win == pytest.approx(1 / 3, abs=1e-3) and p_positive(ev) < 0.5


# ------------------------------------------------------------------------------------------ live record


def test_a_live_record_moves_the_estimate_and_appears_in_the_track_record(fitted):
    key = ("elliott_null", "1h")
    sig = signal_for("elliott_null", 1.5, 2.0, entry=125.0)
    before = fitted.assess(sig)
    good = fitted.with_live({key: LiveRecord(n=400, sum_r=400 * 0.6, sum_r2=400 * 2.0, wins=260)})
    after = good.assess(sig)
    assert after.expected_r > before.expected_r and after.p_win > before.p_win
    assert after.live_n == 400 and after.live_mean_r == pytest.approx(0.6)
    assert good.version.startswith(fitted.version) and "+live." in good.version
    row = next(r for r in good.track_records() if (r.pattern, r.timeframe) == key)
    assert row.live_n == 400 and row.backtest_n == fitted.cells[key].n
    assert fitted.with_live({}) is fitted
    assert good.with_live({key: LiveRecord(0, 0.0, 0.0, 0)}).assess(sig).live_n == 0


def test_a_live_record_for_a_new_pattern_creates_its_cell(fitted):
    m = fitted.with_live({("wyckoff_new", "1h"): LiveRecord(n=5, sum_r=-5.0, sum_r2=5.0, wins=0)})
    ev = m.assess(signal_for("wyckoff_new", 1.5, 2.0, entry=125.0))
    assert ev.live_n == 5 and ev.backtest_n == 0 and ev.backtest_mean_r is None
    EvidenceModel.from_json(m.to_json())  # still a valid file


def test_an_inconsistent_live_record_is_refused(fitted):
    with pytest.raises(ValueError, match="inconsistent"):
        fitted.with_live({("elliott_null", "1h"): LiveRecord(n=3, sum_r=0.0, sum_r2=0.0, wins=5)})


def test_the_track_record_population_excludes_only_same_candle_duplicates():
    base = signal_for("x", 1.5, 2.0)
    assert counts_in_track_record(replace(base, kind="gated", gate_reason="cooldown"))
    assert counts_in_track_record(replace(base, kind="watch", gate_reason="no_edge"))
    assert counts_in_track_record(base)
    assert not counts_in_track_record(replace(base, kind="gated", gate_reason="duplicate_structure"))


# ------------------------------------------------------------------------------------------ JSON


def test_the_model_file_round_trips_exactly(fitted):
    text = fitted.to_json()
    again = EvidenceModel.from_json(text)
    assert again.to_json() == text
    assert again.assess(signal_for("elliott_edge", 2.0, 2.0)) == fitted.assess(signal_for("elliott_edge", 2.0, 2.0))


def _mutate(fitted: EvidenceModel, change) -> str:
    doc = json.loads(fitted.to_json())
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format=99), "unsupported evidence model format 99"),
        (lambda d: d.pop("baselines"), "missing baselines"),
        (lambda d: d["baselines"]["1h"]["mean"].update(magic=1.0), "unknown basis 'magic'"),
        (lambda d: d["cells"][0].update(excess_var=-1), "excess_var: expected a number >= 0"),
        (lambda d: d["cells"][0].pop("shrunk_r"), "missing field 'shrunk_r'"),
        (lambda d: d["cells"].append(d["cells"][0]), "duplicate cell"),
        (lambda d: d["cells"][0].update(n="many"), "cells[0].n: expected a whole number"),
        (lambda d: d["hyper"].update(prior_rel=[]), "hyper.prior_rel must be"),
        (lambda d: d.update(interval=1.5), "interval must be in (0, 1)"),
        (lambda d: d.update(version=""), "missing model version"),
        (lambda d: d["baselines"]["1h"].update(stop_atr_median=0), "stop_atr_median: expected a number > 0"),
    ],
)
def test_a_bad_model_file_is_a_clear_error(fitted, change, message):
    with pytest.raises(EvidenceFormatError) as err:
        EvidenceModel.from_json(_mutate(fitted, change))
    assert message in str(err.value)


@pytest.mark.parametrize("text", ["", "not json", "[]", "null", '{"format": 1}'])
def test_text_that_is_no_model_at_all_is_a_clear_error(text):
    with pytest.raises(EvidenceFormatError):
        EvidenceModel.from_json(text)


# ------------------------------------------------------------------------------------------ the shipped default


def test_the_shipped_default_loads_and_says_how_it_was_made():
    m = load_default_model()
    assert m.version.startswith("ev1-") and m.interval == 0.8
    assert "backtest evidence fit" in m.meta["command"]
    assert m.meta["files"] and all(len(f["sha256"]) == 64 for f in m.meta["files"])
    assert {"15m", "1h", "4h"} <= set(m.baselines)
    assert m.meta["outcome"]["horizon_candles"] == 48 and m.meta["outcome"]["commission"] == 0.0004
    assert m.meta["validation"]["walk_forward"], "the default records its out-of-sample check"
    for row in m.track_records():
        assert row.expected_r_lo is not None and row.expected_r_hi is not None
        assert row.expected_r_lo <= (row.expected_r or 0) <= row.expected_r_hi


def test_the_shipped_default_was_fitted_on_the_analyzers_that_run():
    # change an analyzer (or its parameters) and this fails until the default is refitted with the command it
    # records: otherwise every number the bot shows would describe candidates of another detector
    m = load_default_model()
    assert set(fitted_analyzers(m.meta)) >= {"15m", "1h", "4h"}
    assert stale_evidence(m.meta, ("15m", "1h", "4h")) == [], m.meta["command"]
    assert m.meta["analyzer_version"] == ANALYZER_VERSION


def test_a_model_fitted_on_other_analyzers_is_named_stale_per_timeframe():
    meta = {"streams": [{"timeframe": "1h", "analyzers": "000000000000"}, {"timeframe": "4h", "analyzers": "x"}]}
    assert stale_evidence(meta, ("15m", "1h", "4h")) == ["1h", "4h"]  # 15m: never fitted, nothing to compare
    assert stale_evidence({}, ("1h",)) == []
