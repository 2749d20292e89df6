"""The shortcuts of the analysis hot path (issue 15) decide exactly what the plain rules decide.

- ``Candle.validate``'s comparison chain accepts exactly the candles the detailed checks accept, and a
  candle it remembers as valid is never a different one;
- ``Signal.with_verdict`` builds what ``dataclasses.replace`` builds (every field, so a field added to
  Signal later cannot be dropped by the gate);
- the Elliott analyzer's per-degree tightest invalidation levels skip a bar only when no count dies on it.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from src.analysis.elliott import _DegreeState, _violated
from src.analysis.elliott_counts import Count
from src.analysis.pivots import Pivot
from src.analysis.types import Candle, Evidence, InvalidCandle, Signal

NUM = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, 2.0, 1e-300]))


def detailed_ok(c: Candle) -> bool:
    """The rules of Candle.validate's docstring, written out plainly."""
    prices = (c.open, c.high, c.low, c.close)
    vols = (c.volume, c.quote_volume, c.taker_buy_volume, c.taker_buy_quote_volume)
    return (all(math.isfinite(p) and p > 0 for p in prices)
            and c.low <= min(c.open, c.close) and max(c.open, c.close) <= c.high
            and all(math.isfinite(v) and v >= 0 for v in vols) and c.trades >= 0
            and c.close_time_ms > c.open_time_ms)


@given(o=NUM, h=NUM, lo=NUM, c=NUM, v=NUM, q=NUM, tb=NUM, tq=NUM, trades=st.integers(-2, 2),
       span=st.integers(-1, 1))
def test_validate_accepts_exactly_the_candles_the_rules_accept(o: float, h: float, lo: float, c: float, v: float,
                                                                q: float, tb: float, tq: float, trades: int,
                                                                span: int) -> None:
    candle = Candle("X", "1m", 1000, 1000 + span, o, h, lo, c, v, q, trades, tb, tq)
    try:
        candle.validate()
        accepted = True
    except InvalidCandle:
        accepted = False
    assert accepted == detailed_ok(candle)


def test_a_bad_candle_fails_even_right_after_an_equal_looking_good_one() -> None:
    good = Candle("X", "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.5, 1.0)
    good.validate()
    with pytest.raises(InvalidCandle):
        Candle("X", "1m", 0, 59_999, 1.0, 2.0, 0.5, math.nan, 1.0).validate()
    assert good.validate() is good


def test_with_verdict_is_replace_with_kind_and_reason() -> None:
    ev = Evidence(0.4, -0.1, -0.3, 0.2, 0.8, "m1", 10, 0.1, (0.0, 0.2), 3, 0.05, 20)
    s = Signal("id1", "BTCUSDT", "1h", "elliott_abc", "SHORT", 0.3, 0.7, 100.0, 110.0, (90.0, 80.0), 5, "t",
               ("a", "b"), "0.3.0", "cfg", (("x", 1.0),), "watch", "no_edge", "sid", ev)
    got = s.with_verdict("gated", "cooldown")
    assert got == replace(s, kind="gated", gate_reason="cooldown")
    # every field other than the two verdict fields is carried over (checked field by field)
    for f in fields(Signal):
        if f.name not in ("kind", "gate_reason"):
            assert getattr(got, f.name) == getattr(s, f.name), f.name


def _count(invalidations: tuple[tuple[float, str], ...]) -> Count:
    p = Pivot(0, 0, 1.0, 0.0, "low", 0, 1, 1, 0.0)
    return Count("impulse", 1, 0, (p, p, p), 0.5, (), invalidations)


LEVELS = st.lists(st.tuples(st.floats(0.5, 2.0), st.sampled_from(["below", "above"])), min_size=0, max_size=2)


@given(counts=st.lists(LEVELS, max_size=6), low=st.floats(0.5, 2.0), width=st.floats(0.0, 1.0))
def test_tightest_levels_skip_a_bar_only_when_no_count_dies(counts: list[list[tuple[float, str]]], low: float,
                                                           width: float) -> None:
    state = _DegreeState()
    state.set_counts([_count(tuple(inv)) for inv in counts])
    bar = Candle("X", "1m", 0, 59_999, low, low + width, low, low, 1.0)
    skipped = bar.low >= state.below and bar.high <= state.above
    dies = any(_violated(c, bar) for c in state.counts)
    assert skipped == (not dies)
