"""Engine-level properties of EVERY registered analyzer (src.analysis.registry.build_engine).

- Scale invariance: prices x1000 and volumes x10 change no signal and no event (rules live in
  ATR, ratio and log units).
- Mirror symmetry: negated log prices (p -> K/p, highs and lows swap) turn accumulation into
  distribution and every LONG into a SHORT on the same candle, with the same raw score.
- No lookahead: for a random cut k, the signals produced from the first k candles are exactly the
  full run's signals whose candle time lies within those k candles; the events recognised within
  those k candles are exactly the prefix run's events.

Inputs are seeded synthetic series (Wyckoff schematics and driftless random walks) so that the
analyzers actually fire; hypothesis picks kinds, seeds and cut points (few examples: each one
replays a few hundred candles several times).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest.synthetic import generate
from src.analysis.engine import AnalysisSettings, SignalGate, replay
from src.analysis.registry import build_engine
from src.analysis.types import AnalysisEvent, Candle, Signal
from src.analysis.wyckoff import EVENT_TYPES, PATTERNS

SETTINGS = AnalysisSettings(min_confidence=0.0, cooldown_seconds=0)
KIND = st.sampled_from(["accumulation", "distribution", "accumulation2", "random_walk"])
SEED = st.integers(min_value=0, max_value=10_000)
# derandomize: the same examples on every run, so CI never turns red on a draw it did not make before; new
# counter-examples are searched for deliberately (the scaling regression test below came from a random draw)
PROPS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

_MIRROR_PATTERN = {a: b for a, b in PATTERNS.values()} | {b: a for a, b in PATTERNS.values()}
_FLIP = {"LONG": "SHORT", "SHORT": "LONG"}
# Wyckoff event types -> one token per mirror pair (shakeout counts as a spring, BU as an LPS)
_CANON = {name: key for key, pair in EVENT_TYPES.items() for name in pair}
_CANON.update({"shakeout": "spring", "utad": "spring", "bu": "lps", "lpsy": "lps"})


def series(kind: str, seed: int) -> list[Candle]:
    return generate(kind, seed, length=450).candles


def run(candles: list[Candle]) -> tuple[list[Signal], list[AnalysisEvent]]:
    engine = build_engine("PROPUSDT", "1h", SETTINGS)
    candidates, _, events = replay(candles, engine, SignalGate(SETTINGS))
    return candidates, events


def sig_key(s: Signal) -> tuple[int, str, str]:
    return (s.candle_time_ms, s.pattern, s.direction)


def ev_key(e: AnalysisEvent) -> tuple[str, str, int, int, str]:
    return (e.kind, e.type, e.candle_time_ms, e.recognised_ms, e.phase)


def test_the_registry_has_analyzers_to_check():
    engine = build_engine("PROPUSDT", "1h", SETTINGS)
    assert "wyckoff" in [a.name for a in engine.analyzers]


@PROPS
@given(KIND, SEED)
def test_scaling_prices_by_1000_and_volume_by_10_changes_nothing(kind, seed):
    candles = series(kind, seed)
    scaled = [replace(c, open=c.open * 1000, high=c.high * 1000, low=c.low * 1000, close=c.close * 1000,
                      volume=c.volume * 10) for c in candles]
    sigs, events = run(candles)
    sigs2, events2 = run(scaled)
    assert [sig_key(s) for s in sigs] == [sig_key(s) for s in sigs2]
    for a, b in zip(sigs, sigs2, strict=True):
        assert b.raw_confidence == pytest.approx(a.raw_confidence, abs=2e-4)
        assert b.entry == pytest.approx(a.entry * 1000, rel=1e-9)
        assert b.stop_loss == pytest.approx(a.stop_loss * 1000, rel=1e-6)
        assert b.take_profits == pytest.approx(tuple(x * 1000 for x in a.take_profits), rel=1e-6)
    assert [ev_key(e) for e in events] == [ev_key(e) for e in events2]
    assert [e.price * 1000 for e in events] == pytest.approx([e.price for e in events2], rel=1e-6)


def test_scaling_does_not_change_which_degree_leads_a_count_found_at_two_degrees():
    """Found by hypothesis (accumulation2, seed 1953): one zigzag found at degrees 0 and 1 scored the same up
    to the last bits, and x1000 prices flipped which degree led, adding one count event."""
    candles = series("accumulation2", 1953)
    scaled = [replace(c, open=c.open * 1000, high=c.high * 1000, low=c.low * 1000, close=c.close * 1000,
                      volume=c.volume * 10) for c in candles]
    assert [ev_key(e) for e in run(candles)[1]] == [ev_key(e) for e in run(scaled)[1]]


def _mirror(candles: list[Candle], k: float = 1e4) -> list[Candle]:
    return [replace(c, open=k / c.open, high=k / c.low, low=k / c.high, close=k / c.close) for c in candles]


def _mirror_sig(s: Signal) -> tuple[int, str, str]:
    return (s.candle_time_ms, _MIRROR_PATTERN.get(s.pattern, s.pattern), _FLIP[s.direction])


def _mirror_ev(e: AnalysisEvent) -> tuple[str, str, int, int]:
    if e.kind == "wyckoff_event":
        etype = _CANON[e.type]
    elif e.kind == "pivot":
        etype = {"high": "low", "low": "high"}.get(e.type, e.type)
    else:  # count names carry their direction; the time stamps must still mirror exactly
        etype = ""
    return (e.kind, etype, e.candle_time_ms, e.recognised_ms)


def _plain_ev(e: AnalysisEvent) -> tuple[str, str, int, int]:
    etype = _CANON[e.type] if e.kind == "wyckoff_event" else ("" if e.kind == "elliott_count" else e.type)
    return (e.kind, etype, e.candle_time_ms, e.recognised_ms)


@PROPS
@given(KIND, SEED)
def test_mirrored_prices_turn_longs_into_shorts_on_the_same_candles(kind, seed):
    candles = series(kind, seed)
    sigs, events = run(candles)
    msigs, mevents = run(_mirror(candles))
    assert sorted(_mirror_sig(s) for s in sigs) == sorted(sig_key(s) for s in msigs)
    conf = {sig_key(s): s.raw_confidence for s in msigs}
    for s in sigs:
        assert conf[_mirror_sig(s)] == pytest.approx(s.raw_confidence, abs=2e-4)
    assert sorted(_mirror_ev(e) for e in events) == sorted(_plain_ev(e) for e in mevents)


def test_mirrored_accumulation_schematic_gives_wyckoff_shorts():
    candles = series("accumulation", 0)
    sigs, _ = run(candles)
    msigs, _ = run(_mirror(candles))
    longs = [s for s in sigs if s.pattern.startswith("wyckoff_") and s.direction == "LONG"]
    shorts = [s for s in msigs if s.pattern.startswith("wyckoff_") and s.direction == "SHORT"]
    assert longs and len(longs) == len(shorts)


@PROPS
@given(KIND, SEED, st.floats(min_value=0.1, max_value=0.95))
def test_no_analyzer_looks_ahead_of_the_candle_it_is_given(kind, seed, frac):
    candles = series(kind, seed)
    k = max(1, int(len(candles) * frac))
    last_ms = candles[k - 1].open_time_ms
    sigs, events = run(candles)
    psigs, pevents = run(candles[:k])
    assert [s.to_dict() for s in psigs] == [s.to_dict() for s in sigs if s.candle_time_ms <= last_ms]
    assert [e.to_dict() for e in pevents] == [e.to_dict() for e in events if e.recognised_ms <= last_ms]
    assert all(s.candle_time_ms <= last_ms for s in psigs)
