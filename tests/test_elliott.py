"""The Elliott analyzer end to end on hand-built candle paths: each signal in both directions, the
near misses that must stay silent, events, state, determinism and no lookahead."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from backtest.synthetic_elliott import impulse_series, null_series, path_candles
from src.analysis.elliott import ElliottAnalyzer, ElliottParams
from src.analysis.engine import AnalysisSettings
from src.analysis.registry import build_analyzers
from src.analysis.types import Candle, SignalCandidate

PARAMS = ElliottParams(thresholds=(0.03,), threshold_mode="pct")


def impulse_prices(
    direction: int = 1, l1: float = 0.10, r2: float = 0.55, e3: float = 1.618, r4: float = 0.35, l5: float = 1.0
) -> list[float]:
    """P0..P5 (real prices) of an impulse from 100 with log lengths L1, r2 L1, e3 L1, r4 L3, l5 L1."""
    x = [0.0, l1, l1 * (1 - r2), l1 * (1 - r2 + e3), l1 * (1 - r2 + e3 - r4 * e3), l1 * (1 - r2 + e3 - r4 * e3 + l5)]
    return [100.0 * math.exp(direction * v) for v in x]


Fired = list[tuple[Candle, SignalCandidate]]


def run(candles: list[Candle], params: ElliottParams = PARAMS) -> tuple[ElliottAnalyzer, Fired, list]:
    a = ElliottAnalyzer("TESTUSDT", "1h", params)
    sigs: list[tuple[Candle, SignalCandidate]] = []
    events = []
    for c in candles:
        out = a.on_candle(c)
        sigs.extend((c, s) for s in out.candidates)
        events.extend(out.events)
    return a, sigs, events


def with_prelude(prices: list[float]) -> list[float]:
    """A counter-trend leg into P0 so that P0 is a confirmed pivot."""
    return [prices[0] * math.exp(math.copysign(0.08, prices[1] - prices[0])), *prices]


BARS = [6, 8, 6, 10, 8, 8, 6]
VOLS = [1000.0, 1200.0, 700.0, 1600.0, 700.0, 1100.0, 800.0, 800.0, 800.0, 800.0]  # prelude, waves 1-5, A, B, C, after


@pytest.mark.parametrize("direction", [1, -1])
def test_wave3_setup_fires_on_the_candle_confirming_wave2(direction):
    p = impulse_prices(direction)
    candles = path_candles(with_prelude([*p[:3], p[3]]), bars_per_leg=BARS[:4])
    _, sigs, _ = run(candles)
    w3 = [(c, s) for c, s in sigs if s.pattern == "elliott_wave3" and s.stop_loss == pytest.approx(p[0])]
    assert len(w3) == 1
    c, s = w3[0]
    assert s.direction == ("LONG" if direction > 0 else "SHORT")
    assert s.entry == c.close
    # confirmed = first bar 3 % beyond the wave-2 extreme
    if direction > 0:
        assert c.high >= p[2] * 1.03 and s.entry > s.stop_loss
    else:
        assert c.low <= p[2] / 1.03 and s.entry < s.stop_loss
    l1 = math.log(p[1] / p[0])
    assert s.take_profits == pytest.approx((p[2] * math.exp(1.618 * l1), p[2] * math.exp(2.618 * l1)))
    assert any("0=" in r and "invalid if price trades" in r for r in s.reasons)


@pytest.mark.parametrize("direction", [1, -1])
def test_wave5_setup_fires_on_the_candle_confirming_wave4_with_stop_at_wave1_end(direction):
    p = impulse_prices(direction)
    candles = path_candles(with_prelude(p), bars_per_leg=BARS[:6], volumes=VOLS)
    _, sigs, _ = run(candles)
    w5 = [(c, s) for c, s in sigs if s.pattern == "elliott_wave5"]
    assert len(w5) == 1
    c, s = w5[0]
    assert s.direction == ("LONG" if direction > 0 else "SHORT")
    assert s.stop_loss == pytest.approx(p[1])
    assert s.raw_score >= 0.65  # textbook ratios, alternation, wave 3 steepest
    l1 = math.log(p[1] / p[0])
    assert s.take_profits == pytest.approx((p[4] * math.exp(0.618 * l1), p[4] * math.exp(1.0 * l1)))
    assert c.open_time_ms > candles[0].open_time_ms


@pytest.mark.parametrize("direction", [1, -1])
def test_abc_after_an_impulse_trades_in_the_direction_of_the_prior_trend(direction):
    p = impulse_prices(direction)
    l_total = math.log(p[5] / p[0])
    # zigzag against the trend: A = 30 % of the impulse, B retraces 50 % of A, C = A
    a_end = p[5] * math.exp(-0.3 * l_total)
    b_end = a_end * math.exp(0.5 * 0.3 * l_total)
    c_end = b_end * math.exp(-0.3 * l_total)
    after = b_end * math.exp(0.2 * l_total)
    candles = path_candles(with_prelude([*p, a_end, b_end, c_end, after]), bars_per_leg=[*BARS[:6], 6, 4, 6, 6], volumes=VOLS)
    _, sigs, _ = run(candles)
    # stop = C extreme minus 0.15 ATR (beyond C, within 1 %)
    abc = [(c, s) for c, s in sigs if s.pattern == "elliott_abc" and 0 < (c_end - s.stop_loss) * direction < 0.01 * c_end]
    assert len(abc) == 1
    _c, s = abc[0]
    assert s.direction == ("LONG" if direction > 0 else "SHORT")
    la = abs(math.log(a_end / p[5]))
    assert s.take_profits[0] == pytest.approx(c_end * math.exp(direction * la))
    impulse_feature = dict(s.features)["impulse"]
    assert impulse_feature > 0.5  # the correction follows a complete, well-formed impulse


def test_wave2_beyond_the_origin_by_a_tick_gives_no_wave3_setup_from_that_origin():
    p = impulse_prices(1)
    p[2] = p[0] * (1 - 1e-6)  # wave 2 undercuts wave 1's origin by one tick
    candles = path_candles(with_prelude(p[:4]), bars_per_leg=BARS[:4])
    _, sigs, _ = run(candles)
    assert not [s for _, s in sigs if s.pattern == "elliott_wave3" and s.stop_loss == pytest.approx(p[0])]


def test_wave4_overlapping_wave1_by_a_tick_gives_no_wave5_setup():
    p = impulse_prices(1)
    p[4] = p[1] * (1 - 1e-6)
    candles = path_candles(with_prelude(p), bars_per_leg=BARS[:6], volumes=VOLS)
    _, sigs, _ = run(candles)
    assert not [s for _, s in sigs if s.pattern == "elliott_wave5"]
    # the tolerance option (in ATRs) admits the one-tick overlap as an impulse again
    _, tolerant, _ = run(candles, replace(PARAMS, wave4_overlap_atr=0.5))
    assert len([s for _, s in tolerant if s.pattern == "elliott_wave5"]) == 1


def test_wave3_shortest_by_one_percent_leaves_no_complete_impulse_count():
    # L1 = 0.10, L3 = 0.099, L5 = 0.10: wave 3 the shortest by 1 %
    p = impulse_prices(1, l1=0.10, r2=0.5, e3=0.99, r4=0.3, l5=1.0)
    tail = p[5] * math.exp(-0.05)
    candles = path_candles(with_prelude([*p, tail]), bars_per_leg=[*BARS[:6], 6])
    _a, _, events = run(candles)
    complete = [e for e in events if e.kind == "elliott_count" and e.type == "impulse_up" and dict(e.details)["stage"] == "5"]
    assert complete == []
    # control: wave 5 shorter than wave 3 keeps the count valid
    q = impulse_prices(1, l1=0.10, r2=0.5, e3=0.99, r4=0.3, l5=0.9)
    candles = path_candles(with_prelude([*q, q[5] * math.exp(-0.05)]), bars_per_leg=[*BARS[:6], 6])
    _, _, events = run(candles)
    assert [e for e in events if e.kind == "elliott_count" and dict(e.details).get("stage") == "5"]


def test_every_confirmed_pivot_is_an_event_recognised_on_its_confirming_candle():
    p = impulse_prices(1)
    candles = path_candles(with_prelude(p), bars_per_leg=BARS[:6], volumes=VOLS)
    a, _, events = run(candles)
    pivots = [e for e in events if e.kind == "pivot"]
    assert [(e.candle_time_ms, e.recognised_ms) for e in pivots] == [(q.time_ms, q.confirmed_ms) for q in a.pivots.pivots(0)]
    assert all(e.recognised_ms > e.candle_time_ms for e in pivots)
    counts = [e for e in events if e.kind == "elliott_count"]
    assert counts and counts[-1].type == "impulse_up"
    assert all(e.recognised_ms >= e.candle_time_ms for e in counts)


def test_state_reports_the_leading_count_with_labelled_pivots_and_invalidation():
    p = impulse_prices(1)
    candles = path_candles(with_prelude([*p[:5], p[4] * 1.04]), bars_per_leg=BARS[:6], volumes=VOLS)
    a, _, _ = run(candles)
    st = a.state()
    assert st.analyzer == "elliott"
    assert "Impulse up" in st.summary and "wave 5" in st.summary
    assert [lab for _, _, lab in st.pivots] == ["0", "1", "2", "3", "4"]
    assert [price for _, price, _ in st.pivots] == pytest.approx(p[:5])
    assert st.levels and st.levels[0][1] == pytest.approx(p[1])
    assert st.lines[0].startswith("Leading:")


def test_state_before_any_pivot_says_so():
    st = ElliottAnalyzer("X", "1h").state()
    assert "No valid wave count" in st.summary


def test_a_count_dies_when_price_trades_through_its_invalidation():
    p = impulse_prices(1)
    # after wave 2 confirms, price falls below wave 1's origin: the wave-3 count is dead
    crash = p[0] * 0.97
    candles = path_candles(with_prelude([p[0], p[1], p[2], p[2] * 1.035, crash]), bars_per_leg=[6, 8, 6, 2, 6])
    a, _, _ = run(candles)
    alive = [c for c in a.ranked_counts() if c.pattern == "impulse" and c.pivots[0].price == pytest.approx(p[0])]
    assert alive == []


def test_params_fingerprint_covers_every_parameter():
    base = ElliottAnalyzer("X", "1h").params_fingerprint()
    assert ElliottAnalyzer("X", "1h", ElliottParams(thresholds=(2.5, 4.0))).params_fingerprint() != base
    assert ElliottAnalyzer("X", "1h", ElliottParams(wave4_overlap_atr=0.1)).params_fingerprint() != base
    w = {k: dict(v) for k, v in ElliottParams().weights.items()}
    w["impulse2"]["r2"] += 0.1
    assert ElliottAnalyzer("X", "1h", ElliottParams(weights=w)).params_fingerprint() != base
    assert ElliottAnalyzer("Y", "4h").params_fingerprint() == base


def test_registry_adds_the_analyzer_only_when_enabled():
    names = [a.name for a in build_analyzers("BTCUSDT", "1h", AnalysisSettings(enable_elliott=True))]
    assert "elliott" in names
    names = [a.name for a in build_analyzers("BTCUSDT", "1h", AnalysisSettings(enable_elliott=False))]
    assert "elliott" not in names


def test_signals_of_a_prefix_equal_the_full_run_up_to_the_cut():
    s = impulse_series(seed=3, direction=1)
    _, full, full_ev = run(s.candles, ElliottParams())
    cut = len(s.candles) * 2 // 3
    _, part, part_ev = run(s.candles[:cut], ElliottParams())
    t_cut = s.candles[cut].open_time_ms
    assert [(c.open_time_ms, x) for c, x in full if c.open_time_ms < t_cut] == [(c.open_time_ms, x) for c, x in part]
    assert [e for e in full_ev if e.recognised_ms < t_cut] == part_ev


def test_same_candles_give_identical_output():
    s = impulse_series(seed=5, direction=-1, depth=2)
    assert run(s.candles, ElliottParams())[1] == run(s.candles, ElliottParams())[1]


def test_price_scale_does_not_change_signals():
    s = impulse_series(seed=7, direction=1)
    f = 1234.5
    scaled = [replace(c, open=c.open * f, high=c.high * f, low=c.low * f, close=c.close * f) for c in s.candles]
    a = [(c.open_time_ms, x.pattern, x.direction, round(x.raw_score, 9)) for c, x in run(s.candles, ElliottParams())[1]]
    b = [(c.open_time_ms, x.pattern, x.direction, round(x.raw_score, 9)) for c, x in run(scaled, ElliottParams())[1]]
    assert a == b


def test_constructive_impulse_is_counted_and_random_walk_rarely_reaches_the_threshold():
    hits = 0
    for seed in range(6):
        s = impulse_series(seed=seed, direction=1 if seed % 2 else -1)
        _, sigs, _ = run(s.candles, ElliottParams())
        five = s.impulse_anchors[4].index
        hits += any(x.pattern == "elliott_wave5" and x.raw_score >= 0.65 and c.open_time_ms >= s.candles[five].open_time_ms
                    for c, x in sigs)
    assert hits >= 4
    null = null_series(seed=11, n=4000)
    _, sigs, _ = run(null.candles, ElliottParams())
    assert sum(x.raw_score >= 0.65 for _, x in sigs) <= 8  # benchmark target: < 1 per 1,000 bars


def test_overlapping_wedge_is_counted_as_a_diagonal_and_gives_no_wave5_setup():
    x = [0.0, 0.15, 0.045, 0.18, 0.12, 0.165]  # L = .15 .105 .135 .06 .045: contracting, 4 overlaps 1
    prices = [100.0 * math.exp(v) for v in x]
    candles = path_candles(with_prelude([*prices, prices[5] * math.exp(-0.06)]), bars_per_leg=[6, 8, 6, 8, 6, 6, 6])
    a, sigs, _ = run(candles)
    assert not [s for _, s in sigs if s.pattern == "elliott_wave5"]
    diag = [c for c in a.ranked_counts() if c.pattern == "diagonal"]
    assert [(c.stage, c.subtype, c.direction) for c in diag] == [(5, "contracting", 1)]
    assert [p.price for p in diag[0].pivots] == pytest.approx(prices)


def test_expanded_flat_after_an_impulse_gives_an_abc_setup():
    p = impulse_prices(1)
    total = math.log(p[5] / p[0])
    a_end = p[5] * math.exp(-0.25 * total)
    b_end = a_end * math.exp(1.1 * 0.25 * total)  # B = 110 % of A
    c_end = b_end * math.exp(-1.3 * 0.25 * total)  # C ends beyond A: expanded
    after = c_end * math.exp(0.15 * total)
    candles = path_candles(with_prelude([*p, a_end, b_end, c_end, after]), bars_per_leg=[*BARS[:6], 6, 6, 8, 6], volumes=VOLS)
    _, sigs, events = run(candles)
    abc = [s for _, s in sigs if s.pattern == "elliott_abc" and 0 < c_end - s.stop_loss < 0.01 * c_end]
    assert len(abc) == 1 and abc[0].direction == "LONG"
    flats = [e for e in events if e.kind == "elliott_count" and dict(e.details)["pattern"] == "flat"]
    assert flats and dict(flats[-1].details)["subtype"] == "expanded"


def test_a_corrupt_candle_is_skipped_and_counted_not_fatal():
    p = impulse_prices(1)
    candles = path_candles(with_prelude(p), bars_per_leg=BARS[:6], volumes=VOLS)
    bad = replace(candles[10], close=float("nan"))
    zero = replace(candles[11], low=0.0)
    a, sigs, _ = run([*candles[:10], bad, zero, *candles[12:]])
    assert a.invalid_candles == 2
    assert [s for _, s in sigs if s.pattern == "elliott_wave5"]


def test_alternates_are_different_counts_not_the_same_swings_at_another_degree():
    s = impulse_series(seed=4, direction=1, depth=2)
    a, _, _ = run(s.candles, ElliottParams())
    lines = a.state().lines
    assert lines[0].startswith("Leading:")
    bodies = [line.split(": ", 1)[1].split("): ", 1)[1] for line in lines]
    assert len(bodies) == len(set(bodies))
