"""One structure, one signal: the same Elliott count found at two zigzag degrees is one structure."""

from __future__ import annotations

from collections import Counter

from backtest.synthetic import random_walk_candles
from src.analysis.elliott import ElliottAnalyzer, structure_key
from src.analysis.engine import AnalysisSettings, SignalGate, replay, structure_id
from src.analysis.registry import build_engine

# lets every candidate through on its merits, so only the structure rule can stop a second trade call
PERMISSIVE = AnalysisSettings(min_confidence=0.0, trade_min_rr=0.0, watch_min_rr=0.0, watch_min_score=0.0,
                              cooldown_candles=0)


def _count_text(reasons: tuple[str, ...]) -> str:
    """'0=... @ ..., 1=..., 2=...' of the wave count (the degree is left out)."""
    return reasons[0].split("): ", 1)[1].split(";")[0]


def test_one_0_1_2_count_found_at_two_degrees_gives_two_candidates_of_one_structure_and_one_trade_call():
    # seed 1: a down 0-1-2 confirmed by the 2-ATR zigzag and one candle later by the 3-ATR zigzag, the shape of
    # "two BTCUSDT 1h wave-3 SHORT signals from one 0-1-2 count" (issue 10)
    candles = random_walk_candles(1, 1500, symbol="BTCUSDT")
    cands, emitted, _ = replay(candles, build_engine("BTCUSDT", "1h", PERMISSIVE), SignalGate(PERMISSIVE))
    wave3 = [s for s in cands if s.pattern == "elliott_wave3" and s.direction == "SHORT"]
    pairs = [(a, b) for a in wave3 for b in wave3
             if a.candle_time_ms < b.candle_time_ms and _count_text(a.reasons) == _count_text(b.reasons)
             and dict(a.features)["degree"] != dict(b.features)["degree"]]
    assert pairs, "the seeded walk no longer shows one count at two degrees"
    first, second = pairs[0]
    assert first.structure_id == second.structure_id
    assert first.kind == "trade" and second.kind == "gated" and second.gate_reason == "structure_signalled"
    trades = Counter(s.structure_id for s in emitted if s.kind == "trade")
    assert trades and max(trades.values()) == 1


def test_the_structure_key_ignores_the_degree_and_keeps_family_direction_and_origin():
    candles = random_walk_candles(3, 1200, symbol="BTCUSDT")
    analyzer = ElliottAnalyzer("BTCUSDT", "1h")
    keys: dict[str, set[float]] = {}
    for c in candles:
        analyzer.on_candle(c)
        for counts in (st.counts for st in analyzer._deg):
            for cnt in counts:
                keys.setdefault(structure_key(cnt), set()).add(cnt.degree)
    assert any(len(degrees) > 1 for degrees in keys.values())
    for key in keys:
        family, side, origin = key.split(":")[1:]
        assert family in ("impulse", "correction") and side in ("up", "down") and origin.isdigit()


def test_structure_ids_differ_by_stream_and_fall_back_to_the_signal_id():
    assert structure_id("BTCUSDT", "1h", "k", "sid") != structure_id("ETHUSDT", "1h", "k", "sid")
    assert structure_id("BTCUSDT", "1h", "k", "sid") != structure_id("BTCUSDT", "4h", "k", "sid")
    assert structure_id("BTCUSDT", "1h", "", "0123456789abcdef0123") == "0123456789abcdef"


def test_wyckoff_candidates_of_one_range_share_a_structure():
    from backtest.synthetic import generate

    candles = generate("accumulation", 3, symbol="BTCUSDT").candles
    cands, _, _ = replay(candles, build_engine("BTCUSDT", "1h", PERMISSIVE), SignalGate(PERMISSIVE))
    wy = [s for s in cands if s.pattern.startswith("wyckoff_") and s.direction == "LONG"]
    assert len(wy) >= 2, [s.pattern for s in wy]
    assert len({s.structure_id for s in wy}) < len(wy)
