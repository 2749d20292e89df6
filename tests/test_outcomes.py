"""Outcome rules on hand-built candles, plus hypothesis properties (mirror symmetry, R bounds)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.outcomes import InvalidSignalGeometry, OutcomeParams, TradeFollower, resolve
from src.analysis.types import Candle, Signal

H = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % H)
FREE = OutcomeParams(horizon_candles=48, commission=0.0, slippage_bps=0.0)


def bar(i: int, o: float, h: float, lo: float, c: float) -> Candle:
    return Candle("BTCUSDT", "1h", T0 + i * H, T0 + (i + 1) * H - 1, o, h, lo, c, 1.0)


def sig(direction: str = "LONG", entry: float = 100.0, stop: float = 90.0, tps: tuple[float, ...] = (120.0,)) -> Signal:
    return Signal(
        id="s1", symbol="BTCUSDT", timeframe="1h", pattern="spring", direction=direction,  # type: ignore[arg-type]
        confidence=0.7, raw_confidence=0.6, entry=entry, stop_loss=stop, take_profits=tps, candle_time_ms=T0,
        generated_at="", reasons=(), analyzer_version="t", config_hash="c",
    )


def test_win_when_target_reached_first_enters_at_next_open():
    candles = [bar(0, 99, 101, 98, 100), bar(1, 101, 105, 95, 104), bar(2, 104, 121, 103, 118)]
    r = resolve(sig(), candles, FREE)
    assert r is not None and r.outcome == "WIN" and r.reason == "target"
    assert r.entry_price == 101 and r.entry_time_ms == T0 + H
    assert r.exit_price == 120 and r.exit_time_ms == T0 + 2 * H
    assert r.r_multiple == pytest.approx((120 - 101) / 10)
    assert r.mae_r == pytest.approx(0.6) and r.mfe_r == pytest.approx(1.9)
    assert r.bars_held == 2 and r.resolved_at_ms == T0 + 3 * H - 1


def test_loss_when_stop_reached_first():
    candles = [bar(1, 100, 104, 89, 95), bar(2, 95, 130, 94, 125)]
    r = resolve(sig(), candles, FREE)
    assert r is not None and r.outcome == "LOSS" and r.reason == "stop"
    assert r.exit_price == 90 and r.r_multiple == pytest.approx(-1.0)
    assert r.mae_r == pytest.approx(1.0)


def test_candle_touching_both_stop_and_target_counts_as_stop():
    r = resolve(sig(), [bar(1, 100, 125, 85, 110)], FREE)
    assert r is not None and r.outcome == "LOSS" and r.exit_price == 90
    assert r.mfe_r == 0.0  # only the open is known to precede the stop


def test_gap_through_the_stop_exits_at_the_open_beyond_the_stop():
    candles = [bar(1, 100, 102, 95, 96), bar(2, 85, 88, 80, 86)]
    r = resolve(sig(), candles, FREE)
    assert r is not None and r.outcome == "LOSS" and r.reason == "stop_gap"
    assert r.exit_price == 85 and r.r_multiple == pytest.approx(-1.5)


def test_entry_open_beyond_the_stop_stops_at_once():
    r = resolve(sig(), [bar(1, 88, 95, 80, 94)], FREE)
    assert r is not None and r.outcome == "LOSS" and r.reason == "stop_gap" and r.bars_held == 1
    assert r.r_multiple == pytest.approx(0.0)


def test_gap_through_the_target_wins_at_the_open():
    r = resolve(sig(), [bar(1, 100, 101, 99, 100), bar(2, 125, 126, 124, 125)], FREE)
    assert r is not None and r.outcome == "WIN" and r.reason == "target_gap" and r.exit_price == 125


def test_expiry_after_horizon_exits_at_that_candle_close():
    params = OutcomeParams(horizon_candles=3, commission=0.0)
    candles = [bar(i, 100, 105, 95, 100 + i) for i in range(1, 10)]
    r = resolve(sig(), candles, params)
    assert r is not None and r.outcome == "EXPIRED" and r.reason == "horizon"
    assert r.bars_held == 3 and r.exit_price == 103 and r.exit_time_ms == T0 + 4 * H - 1
    assert r.r_multiple == pytest.approx(0.3)
    assert r.mfe_r == pytest.approx(0.5) and r.mae_r == pytest.approx(0.5)


def test_unresolved_when_candles_run_out():
    assert resolve(sig(), [bar(1, 100, 105, 95, 100)], FREE) is None


def test_fees_are_charged_on_both_sides_in_r():
    params = OutcomeParams(commission=0.0004)
    r = resolve(sig(), [bar(1, 100, 121, 99, 120)], params)
    assert r is not None
    assert r.fees_r == pytest.approx(0.0004 * (100 + 120) / 10)
    assert r.r_multiple == pytest.approx(2.0 - 0.0088)


def test_slippage_is_adverse_on_entry_and_exit():
    params = OutcomeParams(commission=0.0, slippage_bps=10)
    r = resolve(sig(), [bar(1, 100, 121, 99, 120)], params)
    assert r is not None and r.entry_price == pytest.approx(100.1) and r.exit_price == pytest.approx(119.88)
    s = resolve(sig("SHORT", 100, 110, (80,)), [bar(1, 100, 101, 79, 80)], params)
    assert s is not None and s.entry_price == pytest.approx(99.9) and s.exit_price == pytest.approx(80.08)


def test_signal_confirming_candle_and_earlier_ones_are_ignored():
    candles = [bar(-1, 100, 200, 50, 100), bar(0, 100, 200, 50, 100), bar(1, 100, 101, 99, 100)]
    f = TradeFollower.for_signal(sig(), FREE)
    assert [f.on_candle(c) for c in candles] == [None, None, None]
    assert f.entry_time_ms == T0 + H and not f.done


def test_duplicate_candle_is_not_counted_twice():
    params = OutcomeParams(horizon_candles=2, commission=0.0)
    f = TradeFollower.for_signal(sig(), params)
    c1 = bar(1, 100, 101, 99, 100)
    assert f.on_candle(c1) is None and f.on_candle(c1) is None
    r = f.on_candle(bar(2, 100, 101, 99, 100))
    assert r is not None and r.bars_held == 2


def test_wrong_side_stop_is_rejected():
    with pytest.raises(InvalidSignalGeometry):
        TradeFollower.for_signal(sig("LONG", 100, 110, (120,)), FREE)
    with pytest.raises(InvalidSignalGeometry):
        TradeFollower.for_signal(sig("SHORT", 100, 110, (120,)), FREE)


# ---------------------------------------------------------------- properties

prices = st.floats(min_value=50.0, max_value=150.0, allow_nan=False)


@st.composite
def candle_paths(draw: st.DrawFn) -> list[tuple[float, float, float, float]]:
    n = draw(st.integers(min_value=1, max_value=30))
    out = []
    for _ in range(n):
        o, c, a, b = draw(prices), draw(prices), draw(prices), draw(prices)
        out.append((o, max(o, c, a, b), min(o, c, a, b), c))
    return out


def mirror(p: float) -> float:
    return 200.0 - p  # reflect around 100: LONG above <-> SHORT below


@settings(max_examples=200, deadline=None)
@given(path=candle_paths(), stop_d=st.floats(1.0, 40.0), tp_d=st.floats(1.0, 40.0),
       horizon=st.integers(1, 20))
def test_long_and_short_are_mirror_images(path, stop_d, tp_d, horizon):
    params = OutcomeParams(horizon_candles=horizon, commission=0.0, slippage_bps=0.0)
    long_c = [bar(i + 1, o, h, lo, c) for i, (o, h, lo, c) in enumerate(path)]
    short_c = [bar(i + 1, mirror(o), mirror(lo), mirror(h), mirror(c)) for i, (o, h, lo, c) in enumerate(path)]
    a = resolve(sig("LONG", 100.0, 100.0 - stop_d, (100.0 + tp_d,)), long_c, params)
    b = resolve(sig("SHORT", 100.0, 100.0 + stop_d, (100.0 - tp_d,)), short_c, params)
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert (a.outcome, a.reason, a.bars_held, a.exit_time_ms) == (b.outcome, b.reason, b.bars_held, b.exit_time_ms)
        assert a.r_multiple == pytest.approx(b.r_multiple, abs=1e-9)
        assert a.mfe_r == pytest.approx(b.mfe_r, abs=1e-9) and a.mae_r == pytest.approx(b.mae_r, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(path=candle_paths(), direction=st.sampled_from(["LONG", "SHORT"]), stop_d=st.floats(1.0, 40.0),
       tp_d=st.floats(1.0, 40.0), horizon=st.integers(1, 20), fee=st.floats(0.0, 0.001), slip=st.floats(0.0, 20.0))
def test_r_is_bounded_by_the_geometry(path, direction, stop_d, tp_d, horizon, fee, slip):
    s = 1 if direction == "LONG" else -1
    params = OutcomeParams(horizon_candles=horizon, commission=fee, slippage_bps=slip)
    candles = [bar(i + 1, o, h, lo, c) for i, (o, h, lo, c) in enumerate(path)]
    r = resolve(sig(direction, 100.0, 100.0 - s * stop_d, (100.0 + s * tp_d,)), candles, params)
    if r is None:
        assert len(candles) < horizon
        return
    assert r.mfe_r >= 0 and r.mae_r >= 0 and r.fees_r >= 0
    assert -r.mae_r - r.fees_r - 1e-9 <= r.r_multiple <= r.mfe_r + 1e-9
    assert math.isclose(r.r_multiple, r.gross_r - r.fees_r, abs_tol=1e-12)
    assert 1 <= r.bars_held <= horizon
    if r.outcome == "WIN":
        assert r.gross_r > 0 or slip > 0 or r.reason == "target_gap"
    if r.reason in ("stop", "target"):  # a touch exits exactly at the level, less adverse slippage
        level = 100.0 - s * stop_d if r.reason == "stop" else 100.0 + s * tp_d
        assert r.exit_price == pytest.approx(level * (1 - s * slip / 10_000))
