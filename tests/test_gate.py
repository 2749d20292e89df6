"""The signal gate: kinds and reasons, one structure one trade call, cooldown in candles per direction, memory."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.engine import (
    REASON_ALREADY_JUDGED,
    REASON_COOLDOWN,
    REASON_DUPLICATE_STRUCTURE,
    REASON_NO_EDGE,
    REASON_NO_EVIDENCE,
    REASON_RR_BELOW_MIN,
    REASON_RR_BELOW_TRADE_MIN,
    REASON_SCORE_BELOW_WATCH_MIN,
    REASON_STRUCTURE_SIGNALLED,
    TRACKED_GATE_REASONS,
    AnalysisSettings,
    GateMemory,
    SignalGate,
)
from src.analysis.evidence import counts_in_track_record
from src.analysis.types import Evidence, Signal, signal_id

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR
DEFAULTS = AnalysisSettings()


def sig(
    t: int = 0,
    *,
    pattern: str = "elliott_wave3",
    direction: str = "LONG",
    confidence: float = 0.95,
    raw: float = 0.8,
    rr: float | None = 2.0,
    structure: str = "s1",
    evidence: bool = True,
    tf: str = "1h",
    symbol: str = "BTCUSDT",
) -> Signal:
    """A candidate on candle ``t`` (in candles from T0) with the given evidence strength."""
    ms = T0 + t * HOUR
    entry = 100.0
    sign = 1 if direction == "LONG" else -1
    stop = entry - sign * 2.0
    tps = () if rr is None else (entry + sign * 2.0 * rr,)
    ev = Evidence(p_win=0.5, expected_r=0.1, expected_r_lo=-0.1 + confidence / 10, expected_r_hi=0.3, interval=0.8,
                  model_version="test") if evidence else None
    return Signal(
        id=signal_id(symbol, tf, ms, pattern, direction), symbol=symbol, timeframe=tf, pattern=pattern,
        direction=direction,  # type: ignore[arg-type]
        confidence=confidence, raw_confidence=raw, entry=entry, stop_loss=stop, take_profits=tps, candle_time_ms=ms,
        generated_at="", reasons=(), analyzer_version="t", config_hash="t", structure_id=structure, evidence=ev,
    )


def judge(gate: SignalGate, *cands: Signal) -> dict[str, tuple[str, str]]:
    out, emitted = gate.judge(cands)
    assert [s for s in out if s.kind != "gated"] == emitted
    assert sorted(s.id for s in out) == sorted(s.id for s in cands)  # nothing is dropped
    return {s.pattern + s.direction + str(s.candle_time_ms): (s.kind, s.gate_reason) for s in out}


def verdict(gate: SignalGate, cand: Signal) -> tuple[str, str]:
    out, _ = gate.judge([cand])
    return out[0].kind, out[0].gate_reason


# ------------------------------------------------------------------------------------------ merits


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ("trade", "")),
        ({"confidence": 0.5}, ("watch", REASON_NO_EDGE)),
        ({"rr": 0.8, "confidence": 0.95}, ("gated", REASON_RR_BELOW_MIN)),
        ({"rr": None}, ("gated", REASON_RR_BELOW_MIN)),
        ({"confidence": 0.5, "raw": 0.2}, ("gated", REASON_SCORE_BELOW_WATCH_MIN)),
        ({"evidence": False, "confidence": 0.0}, ("watch", REASON_NO_EVIDENCE)),
    ],
)
def test_each_candidate_gets_a_kind_and_a_reason_from_its_evidence_and_geometry(kwargs, expected):
    assert verdict(SignalGate(DEFAULTS), sig(**kwargs)) == expected


def test_a_candidate_with_edge_but_a_short_target_is_a_watch_note_saying_so():
    s = AnalysisSettings(trade_min_rr=2.0, watch_min_rr=1.0)
    assert verdict(SignalGate(s), sig(rr=1.5)) == ("watch", REASON_RR_BELOW_TRADE_MIN)


def test_a_trade_call_does_not_need_the_watch_score_floor():
    # the raw score is not evidence: a trade call is judged on its evidence alone
    assert verdict(SignalGate(DEFAULTS), sig(raw=0.1)) == ("trade", "")


def test_min_confidence_compares_p_of_positive_expected_r():
    gate = SignalGate(AnalysisSettings(min_confidence=0.99))
    assert verdict(gate, sig(confidence=0.98)) == ("watch", REASON_NO_EDGE)


# ------------------------------------------------------------------------------------------ structures


def test_candidates_of_one_structure_on_one_candle_collapse_into_the_highest_raw_score():
    gate = SignalGate(DEFAULTS)
    res = judge(gate, sig(pattern="elliott_wave3", raw=0.6), sig(pattern="elliott_wave5", raw=0.9))
    assert res[f"elliott_wave5LONG{T0}"] == ("trade", "")
    assert res[f"elliott_wave3LONG{T0}"] == ("gated", REASON_DUPLICATE_STRUCTURE)
    assert REASON_DUPLICATE_STRUCTURE not in TRACKED_GATE_REASONS


def test_a_structure_gives_one_trade_call_and_later_candidates_are_gated():
    gate = SignalGate(AnalysisSettings(cooldown_candles=0))
    assert verdict(gate, sig(0)) == ("trade", "")
    assert verdict(gate, sig(30, pattern="elliott_wave5")) == ("gated", REASON_STRUCTURE_SIGNALLED)
    assert verdict(gate, sig(60, confidence=0.5)) == ("gated", REASON_STRUCTURE_SIGNALLED)
    assert verdict(gate, sig(60, structure="s2")) == ("trade", "")


def test_a_watch_note_may_be_upgraded_to_a_trade_call_once():
    gate = SignalGate(AnalysisSettings(cooldown_candles=0))
    assert verdict(gate, sig(0, confidence=0.5)) == ("watch", REASON_NO_EDGE)
    assert verdict(gate, sig(20, confidence=0.5)) == ("gated", REASON_STRUCTURE_SIGNALLED)
    assert verdict(gate, sig(40)) == ("trade", "")
    assert verdict(gate, sig(60)) == ("gated", REASON_STRUCTURE_SIGNALLED)


# ------------------------------------------------------------------------------------------ cooldown


def test_cooldown_counts_candles_per_symbol_timeframe_and_direction():
    gate = SignalGate(AnalysisSettings(cooldown_candles=12, cooldown_seconds=0))
    assert verdict(gate, sig(0, structure="a")) == ("trade", "")
    assert verdict(gate, sig(5, structure="b")) == ("gated", REASON_COOLDOWN)
    assert verdict(gate, sig(5, structure="c", direction="SHORT")) == ("trade", "")
    assert verdict(gate, sig(5, structure="d", tf="15m")) == ("trade", "")
    assert verdict(gate, sig(5, structure="e", symbol="ETHUSDT")) == ("trade", "")
    assert verdict(gate, sig(11, structure="f")) == ("gated", REASON_COOLDOWN)
    assert verdict(gate, sig(12, structure="g")) == ("trade", "")


def test_signal_cooldown_seconds_still_applies_when_it_is_longer():
    gate = SignalGate(AnalysisSettings(cooldown_candles=2, cooldown_seconds=10 * 3600))
    assert gate.cooldown_ms("1h") == 10 * HOUR
    assert verdict(gate, sig(0, structure="a")) == ("trade", "")
    assert verdict(gate, sig(9, structure="b")) == ("gated", REASON_COOLDOWN)
    assert verdict(gate, sig(10, structure="c")) == ("trade", "")


def test_a_watch_note_never_holds_back_a_trade_call_but_a_trade_call_holds_back_a_watch_note():
    gate = SignalGate(AnalysisSettings(cooldown_candles=12))
    assert verdict(gate, sig(0, structure="a", confidence=0.5)) == ("watch", REASON_NO_EDGE)
    assert verdict(gate, sig(1, structure="b", confidence=0.5)) == ("gated", REASON_COOLDOWN)
    assert verdict(gate, sig(2, structure="c")) == ("trade", "")
    assert verdict(gate, sig(3, structure="d")) == ("gated", REASON_COOLDOWN)
    assert verdict(gate, sig(20, structure="e", confidence=0.5)) == ("watch", REASON_NO_EDGE)


def test_on_one_candle_the_better_evidence_is_posted_first_and_the_other_waits():
    gate = SignalGate(DEFAULTS)
    weak = sig(0, structure="a", confidence=0.5, pattern="elliott_abc")
    strong = sig(0, structure="b", confidence=0.97)
    out, emitted = gate.judge([weak, strong])
    assert [s.id for s in emitted] == [strong.id]
    assert out[1].gate_reason == REASON_COOLDOWN


def test_an_old_candle_is_never_emitted_after_a_newer_emission():
    gate = SignalGate(AnalysisSettings(cooldown_candles=0))
    assert verdict(gate, sig(10, structure="a")) == ("trade", "")
    assert verdict(gate, sig(5, structure="b")) == ("gated", REASON_COOLDOWN)


def test_without_cooldown_a_burst_on_one_candle_passes_in_this_process():
    gate = SignalGate(AnalysisSettings(cooldown_candles=0))
    _, emitted = gate.judge([sig(0, structure="a"), sig(0, structure="b", pattern="elliott_abc")])
    assert len(emitted) == 2


# ------------------------------------------------------------------------------------------ memory


def test_a_memory_seeded_without_trade_times_counts_every_seeded_emission_as_a_trade_call():
    key = ("BTCUSDT", "1h", "LONG")
    gate = SignalGate(DEFAULTS, GateMemory(last_emitted_ms={key: T0}))
    assert verdict(gate, sig(3, structure="x")) == ("gated", REASON_COOLDOWN)


def test_seeded_structures_keep_their_trade_call():
    gate = SignalGate(DEFAULTS, GateMemory(structures={"s1": "trade"}))
    assert verdict(gate, sig(100)) == ("gated", REASON_STRUCTURE_SIGNALLED)


def test_candles_an_earlier_run_judged_are_not_emitted_again():
    gate = SignalGate(DEFAULTS, GateMemory(judged_until_ms={("BTCUSDT", "1h"): T0 + 5 * HOUR}))
    assert verdict(gate, sig(5)) == ("gated", REASON_ALREADY_JUDGED)
    assert not counts_in_track_record(gate.judge([sig(4, structure="z")])[0][0])
    assert verdict(gate, sig(6)) == ("trade", "")


def test_gate_memory_round_trips_through_its_dict_form():
    gate = SignalGate(DEFAULTS)
    for i, s in enumerate([sig(0), sig(3, structure="b", confidence=0.5), sig(40, structure="c", direction="SHORT")]):
        gate.judge([s])
        assert i >= 0
    mem = gate.memory
    back = GateMemory.from_dict(mem.to_dict())
    assert back == mem
    assert GateMemory.from_dict({}) == GateMemory()


@pytest.mark.parametrize(
    "doc",
    [{"last_emitted_ms": {"BTCUSDT|1h": 1}}, {"last_emitted_ms": {"BTCUSDT|1h|UP": 1}},
     {"structures": {"s": "maybe"}}, {"judged_until_ms": {"BTCUSDT": 1}}],
)
def test_a_bad_memory_document_is_a_clear_error(doc):
    with pytest.raises(ValueError, match=r"key|kind"):
        GateMemory.from_dict(doc)


candidate = st.builds(
    lambda t, structure, direction, conf, raw, rr, pattern: sig(
        t, structure=f"s{structure}", direction=direction, confidence=conf, raw=raw, rr=rr, pattern=pattern
    ),
    st.integers(0, 200),
    st.integers(0, 6),
    st.sampled_from(["LONG", "SHORT"]),
    st.floats(0, 1),
    st.floats(0, 1),
    st.one_of(st.none(), st.floats(0, 5)),
    st.sampled_from(["elliott_wave3", "elliott_wave5", "elliott_abc", "wyckoff_spring"]),
)
gate_settings = st.builds(
    AnalysisSettings,
    min_confidence=st.floats(0, 1),
    cooldown_candles=st.integers(0, 30),
    trade_min_rr=st.floats(0, 2),
    watch_min_rr=st.floats(0, 2),
    watch_min_score=st.floats(0, 1),
)


def _by_candle(cands: list[Signal]) -> list[list[Signal]]:
    groups: dict[int, list[Signal]] = {}
    for s in sorted(cands, key=lambda s: s.candle_time_ms):
        groups.setdefault(s.candle_time_ms, []).append(s)
    return list(groups.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(candidate, max_size=60), gate_settings)
def test_no_structure_ever_gets_two_trade_calls_and_every_emission_respects_the_cooldown(cands, s):
    gate = SignalGate(s)
    emitted: list[Signal] = []
    for group in _by_candle(cands):
        out, em = gate.judge(group)
        assert len(out) == len(group)
        for x in out:
            assert (x.kind == "gated") == bool(x.gate_reason and x.gate_reason not in (REASON_NO_EDGE,
                                                                                         REASON_RR_BELOW_TRADE_MIN,
                                                                                         REASON_NO_EVIDENCE))
        emitted += em
    trades = Counter(x.structure_id for x in emitted if x.kind == "trade")
    assert all(n == 1 for n in trades.values())
    watches = Counter(x.structure_id for x in emitted if x.kind == "watch")
    assert all(n == 1 for n in watches.values())
    cooldown = gate.cooldown_ms("1h")
    last_any: dict[str, int] = {}
    last_trade: dict[str, int] = {}
    for x in emitted:  # a watch note waits for any earlier emission of its direction, a trade call for a trade call
        before = last_trade if x.kind == "trade" else last_any
        if cooldown and x.direction in before:
            assert x.candle_time_ms - before[x.direction] >= cooldown
        last_any[x.direction] = x.candle_time_ms
        if x.kind == "trade":
            last_trade[x.direction] = x.candle_time_ms


@settings(max_examples=50, deadline=None)
@given(st.lists(candidate, max_size=40), st.integers(0, 40))
def test_a_gate_restarted_from_its_memory_decides_like_the_one_that_kept_running(cands, split):
    groups = _by_candle(cands)
    a = SignalGate(DEFAULTS)
    for g in groups[:split]:
        a.judge(g)
    b = SignalGate(DEFAULTS, GateMemory.from_dict(a.memory.to_dict()))
    for g in groups[split:]:
        assert a.judge(g) == b.judge(g)
