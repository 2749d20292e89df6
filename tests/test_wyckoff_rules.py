"""Properties of the Wyckoff range rules added in round 2 of issue 12 (F1, F3, S1, R1 in
``src/analysis/wyckoff_ranges.py``), checked with hypothesis on generated pivots and random walks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.synthetic import random_walk_candles
from src.analysis.engine import AnalyzerOutput
from src.analysis.wyckoff import SIDES, WyckoffAnalyzer
from src.analysis.wyckoff_features import Pivot
from src.analysis.wyckoff_params import WyckoffParams
from src.analysis.wyckoff_ranges import Range, SideTracker

SPRINGS = ("wyckoff_spring", "wyckoff_utad")


def _pivots(prices: list[float], first_kind: int) -> list[Pivot]:
    kind = first_kind
    out = []
    for i, x in enumerate(prices):
        out.append(Pivot(kind, 10 * i, 10 * i, x, 10 * i + 1, 0.0, 10, 1.0, 1.0, 1.0))
        kind = -kind
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=25.0), min_size=3, max_size=9), st.sampled_from((-1, 1)))
def test_f1_a_range_edge_is_the_most_extreme_pivot_since_it_and_the_middle_the_most_extreme_opposite(raw, last_kind):
    """F1: the first edge is as extreme as every same-side pivot after it, the middle the most extreme
    opposite pivot after the edge, the range 3-20 ATR high, and the retest inside its zone."""
    p = WyckoffParams()
    n = len(raw)
    first_kind = last_kind if n % 2 else -last_kind
    # lows at the value, highs 5 ATR over it, so that typical draws form ranges
    prices = [x + (5.0 if k > 0 else 0.0) for x, k in zip(raw, [first_kind * (-1) ** j for j in range(n)], strict=True)]
    tracker = SideTracker(p)
    for q in _pivots(prices, first_kind):
        tracker._pivots.append(q)
    pc = tracker._pivots[-1]
    found = tracker._edges(pc, 1.0)
    if found is None:
        return
    pa, pb = found
    piv = list(tracker._pivots)
    ia, ib = piv.index(pa), piv.index(pb)
    assert pa.kind == pc.kind and pb.kind == -pc.kind and ia < ib < len(piv) - 1
    between = piv[ia + 1:-1]
    low_side = pc.kind < 0
    for q in between:
        if q.kind == pc.kind:
            assert (pa.price <= q.price) if low_side else (pa.price >= q.price)
        else:
            assert (pb.price >= q.price) if low_side else (pb.price <= q.price)
    width = abs(pb.price - pa.price)
    assert p.min_width_atr <= width <= p.max_width_atr
    if low_side:
        assert pa.price - p.retest_under_atr <= pc.price <= pa.price + p.retest_inside_w * width
    else:
        assert pa.price - p.retest_inside_w * width <= pc.price <= pa.price + p.retest_under_atr


def _replay(seed: int, bars: int) -> Iterator[tuple[WyckoffAnalyzer, list[list[Range]], AnalyzerOutput]]:
    a = WyckoffAnalyzer("TESTUSDT", "1h")
    for c in random_walk_candles(seed, bars):
        before = [list(t.ranges) for t in a._sides]
        out = a.on_candle(c)
        yield a, before, out


def test_f3_f5_an_inner_range_forms_in_any_phase_of_the_outer_one_and_never_removes_it():
    """F3: when a new range forms inside a live one at less than 0.6 of its height, the outer range stays
    alive (unless it ended on that candle with its own end event, or the cap on live ranges dropped it).
    F5: such an inner range may form while the outer one is in phase C or D; a range of at least 0.6 of its
    height (the same range seen again) may not."""
    p = WyckoffParams.for_timeframe("1h")
    inner_seen = inner_over_cd = 0
    for seed in range(6):
        for a, before, out in _replay(seed, 2000):
            for side, tracker in enumerate(a._sides):
                now = tracker.ranges
                new = [r for r in now if all(r is not b for b in before[side])]
                ended = any(e.type in ("failed", "expired", "markup", "markdown")
                            and dict(e.details)["side"] == SIDES[side] for e in out.events)
                capped = len(before[side]) + len(new) > p.max_ranges
                for n in new:
                    for r in before[side]:
                        inside = r.S - p.nest_margin_w * r.W <= n.S and n.Rz <= r.Rz + p.nest_margin_w * r.W
                        if inside and p.same_range_w * r.W > n.W:
                            inner_seen += 1
                            inner_over_cd += r.phase != "B"
                            assert any(r is x for x in now) or ended or capped
                        elif inside:
                            assert r.phase == "B"  # the same range again never forms over a phase C/D one
    assert inner_seen > 0 and inner_over_cd > 0  # the random walks did exercise both rules


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_s1_and_r1_springs_reclaim_within_the_limit_and_repeats_score_lower(seed):
    """S1: a spring/UTAD closes back inside within ``reclaim_bars`` and its geometry evidence is at most the
    reclaim fade (1 within a bar, down to 0.4 at ``reclaim_fade_bars``). R1: the k-th setup of one kind in
    one range scores at most 0.6^(k-1), and no candidate claims fewer repeats than its range has shown."""
    p = WyckoffParams.for_timeframe("1h")
    shown: Counter[tuple[str, str]] = Counter()
    for _, _, out in _replay(seed, 2500):
        for cand in out.candidates:
            f = dict(cand.features)
            if cand.pattern in SPRINGS:
                rb = f["reclaim_bars"]
                assert 0 <= rb <= p.reclaim_bars
                fade = 1.0 if rb <= 1 else max(0.4, 1.0 - 0.6 * (rb - 1) / (p.reclaim_fade_bars - 1))
                assert f["mu_geometry"] <= fade + 1e-6
            key = (cand.structure, cand.pattern)
            assert f["repeat"] >= shown[key]
            assert cand.raw_score <= p.repeat_factor ** f["repeat"] + 1e-6
            shown[key] += 1
