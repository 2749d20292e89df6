"""Follow-up rules (src/analysis/follow_ups.py) on hand-built candles, plus hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.follow_ups import FollowUp, Tp2Watch, follow_up_sort_key, terminal_follow_up
from src.analysis.outcomes import OutcomeParams, TradeFollower, resolve
from src.analysis.types import Candle, Signal

H = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % H)
FREE = OutcomeParams(horizon_candles=48, commission=0.0, slippage_bps=0.0)


def bar(i: int, o: float, h: float, lo: float, c: float) -> Candle:
    return Candle("BTCUSDT", "1h", T0 + i * H, T0 + (i + 1) * H - 1, o, h, lo, c, 1.0)


def sig(direction: str = "LONG", stop: float = 90.0, tps: tuple[float, ...] = (120.0, 140.0)) -> Signal:
    return Signal(
        id="s1", symbol="BTCUSDT", timeframe="1h", pattern="wyckoff_spring", direction=direction,  # type: ignore[arg-type]
        confidence=0.7, raw_confidence=0.6, entry=100.0, stop_loss=stop, take_profits=tps, candle_time_ms=T0,
        generated_at="", reasons=(), analyzer_version="t", config_hash="c",
    )


def terminal(signal: Signal, candles: list[Candle], params: OutcomeParams = FREE) -> FollowUp:
    r = resolve(signal, candles, params)
    assert r is not None
    return terminal_follow_up(signal, r)


def watch_after(signal: Signal, candles: list[Candle], later: list[Candle], params: OutcomeParams = FREE) -> FollowUp | None:
    """The TP2 watch fed the TP1 candle again (as a restart would) and then ``later``."""
    tp1 = terminal(signal, candles, params)
    assert tp1.event == "tp1"
    w = Tp2Watch(signal, tp1, params)
    for c in [candles[-1], *later]:
        got = w.on_candle(c)
        if got is not None:
            return got
    return None


def test_first_target_hit_is_tp1_with_the_trades_net_r_on_the_candle_it_happened():
    f = terminal(sig(), [bar(1, 101, 105, 95, 104), bar(2, 104, 121, 103, 118)])
    assert (f.event, f.event_time_ms, f.price, f.bars, f.entry_price) == ("tp1", T0 + 2 * H, 120.0, 2, 101.0)
    assert f.r_multiple == pytest.approx(1.9)


def test_stop_touched_is_stopped_and_a_later_gap_through_the_stop_too():
    assert terminal(sig(), [bar(1, 100, 104, 89, 95)]).event == "stopped"  # on the entry candle, but intrabar
    f = terminal(sig(), [bar(1, 100, 102, 95, 96), bar(2, 85, 88, 80, 86)])
    assert (f.event, f.price, f.event_time_ms) == ("stopped", 85.0, T0 + 2 * H)


def test_entry_candle_opening_beyond_the_stop_is_invalidated_not_stopped():
    f = terminal(sig(), [bar(1, 88, 92, 85, 90)])
    assert (f.event, f.bars, f.price) == ("invalidated", 1, 88.0)
    # the rules enter at that open and exit there at once: nothing but the fees is lost
    assert f.r_multiple == 0.0
    assert terminal(sig(), [bar(1, 88, 92, 85, 90)], OutcomeParams(commission=0.0004)).r_multiple < 0


def test_horizon_reached_is_expired_keyed_by_the_last_candles_open():
    params = OutcomeParams(horizon_candles=3, commission=0.0)
    f = terminal(sig(), [bar(1, 101, 105, 95, 104), bar(2, 104, 106, 99, 105), bar(3, 105, 110, 100, 108)], params)
    assert (f.event, f.event_time_ms, f.price, f.bars) == ("expired", T0 + 3 * H, 108.0, 3)


def test_tp2_reached_later_reports_what_holding_there_would_have_made():
    f = watch_after(sig(), [bar(1, 101, 105, 95, 104), bar(2, 104, 121, 103, 118)],
                    [bar(3, 118, 130, 110, 128), bar(4, 128, 141, 125, 139)])
    assert f is not None and (f.event, f.event_time_ms, f.price, f.bars) == ("tp2", T0 + 4 * H, 140.0, 4)
    assert f.r_multiple == pytest.approx((140 - 101) / 10)


def test_tp2_on_the_tp1_candle_itself_is_reached_there():
    f = watch_after(sig(), [bar(1, 101, 145, 99, 140)], [])
    assert f is not None and (f.event, f.event_time_ms, f.bars) == ("tp2", T0 + H, 1)


def test_stop_touched_before_tp2_ends_the_watch_even_on_a_candle_touching_both():
    f = watch_after(sig(), [bar(1, 101, 121, 99, 118)], [bar(2, 118, 141, 89, 120)])
    assert f is not None and (f.event, f.event_time_ms, f.r_multiple) == ("tp2_missed", T0 + 2 * H, 0.0)


def test_tp2_watch_ends_at_the_horizon_counted_from_entry():
    params = OutcomeParams(horizon_candles=3, commission=0.0)
    f = watch_after(sig(), [bar(1, 101, 121, 99, 118)], [bar(2, 118, 125, 110, 120), bar(3, 120, 130, 115, 125),
                                                          bar(4, 125, 145, 120, 140)], params)
    assert f is not None and (f.event, f.event_time_ms, f.bars) == ("tp2_missed", T0 + 3 * H, 3)


def test_tp2_watch_gap_rules_mirror_for_shorts():
    short = sig("SHORT", stop=110.0, tps=(80.0, 60.0))
    f = watch_after(short, [bar(1, 99, 101, 79, 81)], [bar(2, 58, 59, 50, 55)])
    assert f is not None and (f.event, f.price) == ("tp2", 58.0)  # opened beyond TP2: reached at the open
    f = watch_after(short, [bar(1, 99, 101, 79, 81)], [bar(2, 111, 112, 100, 105)])
    assert f is not None and f.event == "tp2_missed"


def test_tp2_watch_ignores_earlier_candles_and_repeats_and_answers_once():
    s = sig()
    tp1 = terminal(s, [bar(1, 101, 121, 99, 118)])
    w = Tp2Watch(s, tp1, FREE)
    assert w.on_candle(bar(0, 99, 200, 98, 150)) is None  # before the TP1 candle
    assert w.on_candle(bar(1, 101, 121, 99, 118)) is None
    assert w.on_candle(bar(1, 101, 999, 99, 118)) is None  # a repeat of the TP1 candle
    assert w.on_candle(bar(2, 118, 141, 115, 139)) is not None
    assert w.on_candle(bar(3, 139, 150, 130, 145)) is None


def test_tp2_watch_needs_a_second_target_and_a_tp1_follow_up():
    s = sig(tps=(120.0,))
    with pytest.raises(ValueError, match="no second target"):
        Tp2Watch(s, FollowUp("s1", "tp1", T0, 120.0, 2.0, 1, 101.0), FREE)
    with pytest.raises(ValueError, match="starts from the tp1"):
        Tp2Watch(sig(), FollowUp("s1", "stopped", T0, 90.0, -1.0, 1, 101.0), FREE)


def test_follow_ups_on_one_candle_sort_tp1_before_tp2():
    tp2 = FollowUp("a", "tp2", T0, 1, 1, 1, 1)
    tp1 = FollowUp("a", "tp1", T0, 1, 1, 1, 1)
    other = FollowUp("b", "stopped", T0 - 1, 1, 1, 1, 1)
    assert sorted([tp2, tp1, other], key=follow_up_sort_key) == [other, tp1, tp2]


# ---------------------------------------------------------------------------- properties
prices = st.floats(min_value=50.0, max_value=200.0, allow_nan=False)


@st.composite
def candle_paths(draw: st.DrawFn) -> list[Candle]:
    out = []
    for i in range(1, draw(st.integers(min_value=1, max_value=30)) + 1):
        o, c = draw(prices), draw(prices)
        hi = max(o, c) + draw(st.floats(min_value=0.0, max_value=20.0))
        lo = min(o, c) - draw(st.floats(min_value=0.0, max_value=20.0))
        out.append(bar(i, o, hi, max(lo, 1.0), c))
    return out


@settings(max_examples=300, deadline=None)
@given(path=candle_paths(), short=st.booleans(), horizon=st.integers(min_value=1, max_value=30),
       commission=st.sampled_from((0.0, 0.0004)))
def test_follow_ups_agree_with_the_outcome_and_tp2_never_follows_a_touched_stop(
        path: list[Candle], short: bool, horizon: int, commission: float) -> None:
    params = OutcomeParams(horizon_candles=horizon, commission=commission)
    s = sig("SHORT", stop=110.0, tps=(80.0, 60.0)) if short else sig()
    follower = TradeFollower.for_signal(s, params)
    resolved_at = None
    for i, c in enumerate(path):
        r = follower.on_candle(c)
        if r is not None:
            resolved_at = i
            break
    if resolved_at is None:
        return
    assert follower.result is not None
    f = terminal_follow_up(s, follower.result)
    want = {"WIN": {"tp1"}, "LOSS": {"stopped", "invalidated"}, "EXPIRED": {"expired"}}[follower.result.outcome]
    assert f.event in want and f.r_multiple == follower.result.r_multiple and f.bars == follower.result.bars_held
    assert path[resolved_at].open_time_ms == f.event_time_ms
    if f.event != "tp1":
        return
    w = Tp2Watch(s, f, params)
    sign = -1 if short else 1
    for c in path[resolved_at:]:
        got = w.on_candle(c)
        if got is None:
            # still watching: nothing so far touched the stop (from the TP1 candle on)
            assert (c.low - s.stop_loss) * sign > 0 if not short else (s.stop_loss - c.high) > 0
            continue
        assert got.bars <= horizon
        if got.event == "tp2":
            assert got.r_multiple >= f.r_multiple  # TP2 lies beyond TP1 (equal when both were gapped through)
        break
