"""Wyckoff analyzer: hand-built candle tapes for each event and near-miss, plus synthetic schematics."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from backtest.synthetic import generate
from src.analysis.engine import AnalysisSettings
from src.analysis.registry import build_analyzers
from src.analysis.types import AnalysisEvent, Candle, SignalCandidate
from src.analysis.wyckoff import ALL_PATTERNS, WyckoffAnalyzer
from src.analysis.wyckoff_params import WyckoffParams
from tests.wyckoff_tape import HOUR, Tape, accumulation_tape


def run(candles: list[Candle], params: WyckoffParams | None = None) -> tuple[list[AnalysisEvent], list[SignalCandidate],
                                                                             list[int], WyckoffAnalyzer]:
    """Events, candidates, and the index of the candle each candidate came from."""
    a = WyckoffAnalyzer("TESTUSDT", "1h", params)
    events: list[AnalysisEvent] = []
    cands: list[SignalCandidate] = []
    at: list[int] = []
    for i, c in enumerate(candles):
        out = a.on_candle(c)
        events += out.events
        cands += out.candidates
        at += [i] * len(out.candidates)
    return events, cands, at, a


def side(e: AnalysisEvent) -> str:
    return dict(e.details)["side"]


def acc_types(events: list[AnalysisEvent]) -> list[str]:
    return [e.type for e in events if side(e) == "accumulation"]


def mirror(candles: list[Candle], k: float = 10_000.0) -> list[Candle]:
    """Negated log prices: p -> k / p (highs and lows swap)."""
    return [replace(c, open=k / c.open, high=k / c.low, low=k / c.high, close=k / c.close) for c in candles]


def test_accumulation_tape_gives_the_full_event_chain_in_order():
    tape = accumulation_tape()
    events, _, _, _ = run(tape.candles)
    assert acc_types(events) == ["sc", "ar", "st", "spring", "test", "sos", "bu", "markup"]
    by_type = {e.type: e for e in events if side(e) == "accumulation"}
    for name in ("sc", "ar", "st", "spring", "test", "sos"):
        assert by_type[name].candle_time_ms == tape.time(name), name
    assert by_type["bu"].candle_time_ms == tape.time("lps")
    assert [by_type[n].phase for n in ("sc", "st", "spring", "sos", "markup")] == ["A", "B", "C", "D", "E"]
    sup = float(dict(by_type["spring"].details)["support"])
    res = float(dict(by_type["spring"].details)["resistance"])
    assert sup == pytest.approx(78.0) and res == pytest.approx(86.3)


def test_every_event_is_recognised_no_earlier_than_it_happened():
    events, _, _, _ = run(accumulation_tape().candles)
    assert events
    assert all(e.recognised_ms >= e.candle_time_ms for e in events)
    assert all(e.kind == "wyckoff_event" for e in events)


def test_tradeable_events_become_long_candidates_with_stop_below_and_targets_above():
    tape = accumulation_tape()
    _, cands, at, _ = run(tape.candles)
    assert [c.pattern for c in cands] == ["wyckoff_spring", "wyckoff_test", "wyckoff_sos", "wyckoff_lps"]
    for c, i in zip(cands, at, strict=True):
        assert c.direction == "LONG" and c.analyzer == "wyckoff"
        assert c.entry == tape.candles[i].close  # entry = the confirming candle's close
        assert c.stop_loss < c.entry < min(c.take_profits)
        assert 0.0 <= c.raw_score <= 1.0
        assert any("Events: SC" in r for r in c.reasons)
    spring = cands[0]
    assert at[0] == tape.marks["spring"]  # reclaimed on the spring bar itself
    assert spring.stop_loss < 77.3 < spring.stop_loss + 0.5  # just under the spring low
    assert spring.take_profits[0] == pytest.approx(86.3)  # first target: the top of the range
    assert at[2] == tape.marks["sos"]


def test_the_clean_tape_scores_above_the_default_threshold():
    _, cands, _, _ = run(accumulation_tape().candles)
    assert all(c.raw_score >= 0.65 for c in cands), [(c.pattern, c.raw_score) for c in cands]


def test_spring_that_is_not_reclaimed_is_a_breakdown_not_a_spring():
    events, cands, _, _ = run(accumulation_tape(spring="lost").candles)
    types = acc_types(events)
    assert "spring" not in types and "failed" in types
    assert not [c for c in cands if c.direction == "LONG"]
    failed = next(e for e in events if e.type == "failed" and side(e) == "accumulation")
    assert dict(failed.details)["reason"] == "breakdown"


def test_range_without_a_spring_still_gives_sos_and_lps_as_schematic_two():
    events, cands, _, _ = run(accumulation_tape(spring="none").candles)
    types = acc_types(events)
    assert "spring" not in types and "sos" in types and "bu" in types
    assert [c.pattern for c in cands if c.direction == "LONG"] == ["wyckoff_sos", "wyckoff_lps"]


def test_breakout_on_ordinary_volume_is_a_weaker_sign_of_strength():
    _, heavy, _, _ = run(accumulation_tape().candles)
    _, light, _, _ = run(accumulation_tape(sos_volume=1000.0).candles)
    sos_heavy = next(c for c in heavy if c.pattern == "wyckoff_sos")
    sos_light = next(c for c in light if c.pattern == "wyckoff_sos")
    assert sos_light.raw_score < sos_heavy.raw_score  # volume is evidence, not a gate
    assert dict(sos_light.features)["mu_effort"] < dict(sos_heavy.features)["mu_effort"]


def test_breakout_that_falls_back_into_the_range_is_a_failed_sos():
    events, cands, _, _ = run(accumulation_tape(sos_fails=True).candles)
    types = acc_types(events)
    assert types[types.index("sos") + 1] == "failed_sos"
    assert "wyckoff_lps" not in [c.pattern for c in cands]


def test_climax_without_a_reversal_is_not_a_selling_climax():
    t = Tape(100.0).quiet(60).walk(84.0, 30)
    t.bar(84.0, 84.2, 78.0, 78.6, 4500)
    t.bar(78.6, 78.9, 77.6, 77.9, 1500).bar(77.9, 78.2, 77.0, 77.3, 1400).bar(77.3, 77.6, 76.4, 76.7, 1300)
    t.walk(70.0, 10, 1200)
    events, _, _, _ = run(t.candles)
    assert "sc" not in acc_types(events)


def test_climax_on_ordinary_volume_is_not_a_selling_climax():
    t = Tape(100.0).quiet(60).walk(84.0, 30)
    t.bar(84.0, 84.2, 78.0, 78.6, 1100).bar(78.6, 81.8, 78.4, 81.5, 1000).walk(86.0, 6)
    events, _, _, _ = run(t.candles)
    assert "sc" not in acc_types(events)


def test_mirrored_tape_is_a_distribution_with_short_signals():
    tape = accumulation_tape()
    events, cands, _, _ = run(mirror(tape.candles))
    dist = [e.type for e in events if side(e) == "distribution"]
    assert dist == ["bc", "ar", "st", "utad", "utad_test", "sow", "lpsy", "markdown"]
    assert [c.pattern for c in cands] == ["wyckoff_utad", "wyckoff_utad_test", "wyckoff_sow", "wyckoff_lpsy"]
    for c in cands:
        assert c.direction == "SHORT"
        assert c.stop_loss > c.entry > max(c.take_profits)


def test_state_reports_phase_and_range_levels_for_the_chart():
    tape = accumulation_tape()
    a = WyckoffAnalyzer("TESTUSDT", "1h")
    assert a.state().summary == "No Wyckoff range in progress"
    for c in tape.candles[: tape.marks["spring"] + 2]:
        a.on_candle(c)
    st = a.state()
    assert st.analyzer == "wyckoff"
    assert st.summary.startswith("Accumulation, phase C")
    levels = dict(st.levels)
    assert levels["accumulation support"] == pytest.approx(78.0)
    assert levels["accumulation resistance"] == pytest.approx(86.3)
    assert any(line.startswith("Spring") for line in st.lines)


def test_params_fingerprint_covers_every_parameter():
    base = WyckoffParams()
    default = WyckoffAnalyzer("X", "1h").params_fingerprint()
    assert default == WyckoffAnalyzer("Y", "1h", WyckoffParams()).params_fingerprint()
    assert default != WyckoffAnalyzer("X", "4h").params_fingerprint()  # range-length limits scale with the timeframe
    assert default != WyckoffAnalyzer("X", "1h", replace(base, sos_rv_lo=1.0)).params_fingerprint()
    seen = {base.fingerprint()}
    for name in base.__dataclass_fields__:
        value = getattr(base, name)
        changed = replace(base, **{name: value + 1 if isinstance(value, int) else value * 1.1 + 0.01})
        seen.add(changed.fingerprint())
    assert len(seen) == len(base.__dataclass_fields__) + 1


def test_bad_candles_are_skipped_and_counted_without_a_crash():
    tape = accumulation_tape()
    candles = list(tape.candles)
    candles.insert(100, replace(candles[100], close=math.nan))
    candles.insert(120, replace(candles[120], low=-1.0))
    candles.insert(130, replace(candles[130], open=math.inf))
    a = WyckoffAnalyzer("TESTUSDT", "1h")
    for c in candles:
        a.on_candle(c)
    assert a.skipped == 3
    events, _, _, _ = run(accumulation_tape().candles)
    assert [e.type for e in a._recent] == [e.type for e in events][-len(a._recent):]  # the bad bars changed nothing


def test_wyckoff_is_registered_first_and_can_be_switched_off():
    names = [a.name for a in build_analyzers("BTCUSDT", "1h", AnalysisSettings())]
    assert names[0] == "wyckoff"
    off = build_analyzers("BTCUSDT", "1h", AnalysisSettings(enable_wyckoff=False))
    assert "wyckoff" not in [a.name for a in off]


def test_pattern_names_are_lowercase_and_prefixed():
    assert all(p == p.lower() and p.startswith("wyckoff_") for p in ALL_PATTERNS)
    assert {"wyckoff_spring", "wyckoff_test", "wyckoff_sos", "wyckoff_lps", "wyckoff_utad", "wyckoff_sow",
            "wyckoff_lpsy"} <= set(ALL_PATTERNS)


def _near(events: list[AnalysisEvent], etype: str, t_ms: int, tol: int) -> bool:
    return any(e.type == etype and abs(e.candle_time_ms - t_ms) <= tol * HOUR for e in events)


@pytest.mark.parametrize("kind", ["accumulation", "distribution"])
def test_synthetic_schematics_are_mostly_recognised(kind):
    hits = 0
    for seed in range(6):
        s = generate(kind, seed)
        events, _, _, _ = run(s.candles)
        truth = {e.type: e for e in s.events}
        key_events = ("spring", "sos") if kind == "accumulation" else ("utad", "sow")
        hits += all(_near(events, t, s.candles[truth[t].bar].open_time_ms, 3) for t in key_events)
    assert hits >= 4


def test_failed_accumulations_rarely_give_a_confident_long_signal():
    confident = 0
    for seed in range(8):
        _, cands, _, _ = run(generate("failed_accumulation", seed).candles)
        confident += any(c.direction == "LONG" and c.raw_score >= 0.65 for c in cands)
    assert confident <= 1  # a shallow spring before the break may look right at the time; the break never does


def test_random_walks_rarely_clear_the_threshold():
    bars = 0
    confident = 0
    for seed in range(8):
        candles = generate("random_walk", 500 + seed, length=5000).candles
        bars += len(candles)
        _, cands, _, _ = run(candles)
        confident += sum(c.raw_score >= 0.65 for c in cands)
    assert confident * 1000 / bars < 1.25  # benchmarks/detection.py measures it on 100,000 bars


def test_heavy_short_down_leg_in_phase_b_is_reported_as_absorption():
    tape = accumulation_tape(absorb=True)
    events, cands, _, _ = run(tape.candles)
    absorbed = [e for e in events if e.type == "absorption" and side(e) == "accumulation"]
    assert [e.candle_time_ms for e in absorbed] == [tape.time("absorption")]
    assert absorbed[0].phase == "B" and float(dict(absorbed[0].details)["effort_ratio"]) >= 1.2
    assert dict(cands[0].features)["absorptions"] == 1.0
    assert "absorption" not in " ".join(cands[0].reasons)  # informational: not part of the event chain


def test_ordinary_phase_b_legs_show_no_effort_without_result():
    events, _, _, _ = run(accumulation_tape().candles)
    assert not [e for e in events if e.type in ("absorption", "no_follow_through")]


def test_range_duration_numbers_scale_with_the_timeframe():
    assert (WyckoffParams.for_timeframe("15m").mature_bars, WyckoffParams.for_timeframe("15m").max_range_bars) == (192, 1000)
    assert WyckoffParams.for_timeframe("1h") == WyckoffParams()
    assert WyckoffParams.for_timeframe("4h").max_range_bars == 300 == WyckoffParams.for_timeframe("1d").max_range_bars
    assert WyckoffAnalyzer("X", "5m").params.mature_bars == 192
