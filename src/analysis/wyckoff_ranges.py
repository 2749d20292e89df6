"""Candidate trading ranges for ONE side, in oriented log space, judged by evidence instead of a gate chain.

The accumulation side sees log prices; the distribution side sees negated log prices, so its
buying climax arrives here as a "selling climax", its UTAD as a "spring", its SOW as an "SOS".
Event keys are therefore the accumulation names; :mod:`src.analysis.wyckoff` renames them.

Numbers are :class:`WyckoffParams` defaults; S = support, Rz = resistance, W = Rz - S, ATR = the
previous bar's ATR, RV = relative volume, CP = close position.

Forming a range (the only gates, all geometric). On every confirmed swing pivot (degree-1 zigzag,
1.25 ATR) the last three pivots are read:

- low-high-low: S = the first low, Rz = the high, and the second low returns to
  [S - 0.5 ATR, S + 0.5 W] (a secondary test). The first low's climax evidence (max RV of the bars
  around it, their spread, the move into it) is kept: with RV >= 2 and spread >= 1.5 ATR it is
  reported as SC / AR / ST, otherwise as a trading range "TR" / AR / ST. No climax is required.
- high-low-high: Rz = the first high, S = the low, and the second high returns to
  [Rz - 0.5 W, Rz + 0.5 ATR] (a range after an advance: re-accumulation; mirrored: re-distribution).

W must be 2-20 ATR. A new range lying inside [S - 0.25 W, Rz + 0.25 W] of a live range is the same
range and is not added. At most 3 ranges live per side; beyond that the weakest (least climax and
context evidence, then the oldest) is dropped. Several ranges can therefore be judged at once, and
a missed climax never blocks phase C or D.

Judging a range on every bar (O(1) per range):

- Spring: a low under S - 0.1 ATR starts a probe; a close back >= S within 10 bars is a SPRING
  (penetration <= max(0.5 W, 1.5 ATR)) or SHAKEOUT (deeper), once the range is 12 bars old (before
  that: an ST in phase B). No reclaim in 10 bars, or deeper than max(1 W, 4 ATR): the range FAILS.
- Test: a swing low within 20 bars of the spring, >= spring low - 0.1 ATR, <= S + 0.5 W, on leg RV
  <= max(0.7 x spring RV, 1.0). A low < spring low - 0.25 ATR fails the range.
- Phase-C LPS (no spring): after 12 bars, a swing low in [S + 0.1 W, S + 0.35 W] on leg RV <= 0.8 x
  the range's down-leg mean, after a swing high >= S + 0.75 W.
- SOS: the first close > Rz + 0.1 ATR (a crossing: the previous close was not above) once the range
  is 12 bars old. Before that a close over Rz lets the next swing high raise Rz. A close > Rz + 1 W
  without an SOS ends the range.
- Phase D: a close < Rz - 0.5 ATR within 5 bars of the SOS (or < S + 0.5 W later) is a failed SOS
  (back to B). LPS/BU = the first swing low after the SOS leg's high, >= S + 0.5 W, on leg RV
  <= 0.8 x the SOS leg's, retracing <= 61.8 %. Then a close over the SOS leg's high is MARKUP.
  Phase D expires after 150 bars; any range expires 600 bars (1h) after its first pivot.
- UA (a poke over Rz + 0.1 ATR closed back under Rz within 2 bars) and effort-vs-result on swings
  (ABSORPTION / NO_FOLLOW_THROUGH) are informational.

Everything else is evidence in the raw score (:func:`SideTracker` ``_common`` and the setup builders),
a weighted geometric mean of ramps: climax (RV 1.3 -> 3, spread 1 -> 3 ATR), context (prior move
2.5 -> 8 ATR), range quality (W/ATR band 3-12, touches 2 -> 5, age 12 -> 30 bars), supply drying up,
the event's own geometry, effort and bar shape. Every bar costs O(K) with K <= 3 ranges.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice

from src.analysis.pickling import register_frozen
from src.analysis.wyckoff_features import Bar, Pivot
from src.analysis.wyckoff_params import WyckoffParams
from src.analysis.wyckoff_scoring import band, ramp, score

INFORMATIONAL = frozenset({"ua", "st_b", "absorption", "no_follow_through"})  # not part of a signal's event chain
_REASON_CODES = {"breakdown": 1.0, "timeout": 2.0, "no_sos": 4.0, "spring_failed": 6.0, "lps_failed": 7.0, "markup": 10.0}
_PHASE_RANK = {"B": 0, "C": 1, "D": 2}


# max()/min() of one Bar field over seg[a:b] (a < b), as explicit loops with max()'s and min()'s comparisons (the
# first of equal values wins): native attribute reads under mypyc, where map(attrgetter) read each field through
# a generic getattr
def _max_rv(seg: list[Bar], a: int, b: int) -> float:
    m = seg[a].rv
    for n in range(a + 1, b):
        x = seg[n].rv
        if x > m:
            m = x
    return m


def _max_h(seg: list[Bar], a: int, b: int) -> float:
    m = seg[a].h
    for n in range(a + 1, b):
        x = seg[n].h
        if x > m:
            m = x
    return m


def _min_low(seg: list[Bar], a: int, b: int) -> float:
    m = seg[a].low
    for n in range(a + 1, b):
        x = seg[n].low
        if x < m:
            m = x
    return m


@dataclass(slots=True)
class Setup:
    """A tradeable event in oriented log space (stop below entry, targets above it). Not frozen (built on the
    hot path; frozen dataclasses pay for every field); treat it as immutable."""

    key: str  # spring | test | sos | lps
    entry: float
    stop: float
    targets: tuple[float, ...]
    raw_score: float
    memberships: tuple[tuple[str, float], ...]
    features: tuple[tuple[str, float], ...]

    def __init__(self, key: str, entry: float, stop: float, targets: tuple[float, ...], raw_score: float,
                 memberships: tuple[tuple[str, float], ...], features: tuple[tuple[str, float], ...]) -> None:
        # explicit (dataclass keeps it): mypyc compiles it, the generated __init__ would be interpreted
        self.key = key
        self.entry = entry
        self.stop = stop
        self.targets = targets
        self.raw_score = raw_score
        self.memberships = memberships
        self.features = features


@dataclass(slots=True)
class RawEvent:
    """One recognised event: ``event_*`` is the bar it refers to, ``recog_*`` the bar that proved it."""

    key: str
    event_i: int
    event_t: int
    recog_i: int
    recog_t: int
    price: float
    phase: str
    details: tuple[tuple[str, float], ...]
    setup: Setup | None
    chain: tuple[tuple[str, int, float], ...]  # (key, t_ms, oriented price) of the range so far (setups only)
    range_levels: tuple[float, float] | None  # oriented (S, Rz)
    range_t: int  # open time of the range's first pivot (the structure key)

    def __init__(self, key: str, event_i: int, event_t: int, recog_i: int, recog_t: int, price: float, phase: str,
                 details: tuple[tuple[str, float], ...] = (), setup: Setup | None = None,
                 chain: tuple[tuple[str, int, float], ...] = (), range_levels: tuple[float, float] | None = None,
                 range_t: int = 0) -> None:
        # explicit: compiled by mypyc (see Setup)
        self.key = key
        self.event_i = event_i
        self.event_t = event_t
        self.recog_i = recog_i
        self.recog_t = recog_t
        self.price = price
        self.phase = phase
        self.details = details
        self.setup = setup
        self.chain = chain
        self.range_levels = range_levels
        self.range_t = range_t


@dataclass(slots=True)
class PivotInfo:
    """A confirmed pivot with the evidence around its extreme bar: the move into it (ATR, from the
    opposite extreme of the previous ``context_bars`` bars), and the max RV / spread (ATR) of the
    bars around it (two before, the bar itself, one after)."""

    pivot: Pivot
    prior_atr: float
    cl_rv: float
    cl_spread_atr: float

    def __init__(self, pivot: Pivot, prior_atr: float, cl_rv: float, cl_spread_atr: float) -> None:
        # explicit: compiled by mypyc (see Setup)
        self.pivot = pivot
        self.prior_atr = prior_atr
        self.cl_rv = cl_rv
        self.cl_spread_atr = cl_spread_atr


class Range:
    """One candidate trading range and its progress through phases B, C and D."""

    __slots__ = ("Rz", "S", "W", "absorptions", "atr_ref", "c_kind", "chain", "cl_rv", "cl_spread", "climax",
                 "down_first", "down_last", "down_n", "down_sum", "grow", "lps_done", "lps_low", "made", "mu_climax",
                 "mu_context", "pend_atr",
                 "pend_i", "pend_low", "pend_low_i", "pend_low_t", "pend_rv", "phase", "prev_c", "prev_leg",
                 "prior_atr", "sos_i", "sos_leg_high", "sos_leg_rv", "sos_leg_start", "sos_quality",
                 "spring_geometry", "spring_i", "spring_low", "spring_rv", "start_i", "start_t", "strength",
                 "tested", "tests", "ua_high", "ua_high_i", "ua_high_t", "ua_i")

    def __init__(self, S: float, Rz: float, start_i: int, start_t: int, prior_atr: float, cl_rv: float,
                 cl_spread: float, climax: bool, close: float, atr: float) -> None:
        self.S, self.Rz, self.W = S, Rz, Rz - S
        self.start_i, self.start_t = start_i, start_t
        self.prior_atr, self.cl_rv, self.cl_spread, self.climax = prior_atr, cl_rv, cl_spread, climax
        self.mu_climax = self.mu_context = -1.0  # memberships of the fixed phase-A evidence, set once by the tracker
        self.phase = "B"
        self.strength = 0.0  # cached SideTracker._strength (refreshed when the evidence changes)
        self.prev_c = close
        self.atr_ref = atr
        self.grow = False
        self.chain: deque[tuple[str, int, float]] = deque(maxlen=16)
        self.tests = 3
        self.down_first = self.down_last = self.down_sum = 0.0
        self.down_n = 0
        self.prev_leg: dict[int, tuple[float, float]] = {}
        self.absorptions = 0
        self.pend_i = -1
        self.pend_atr = self.pend_low = self.pend_rv = 0.0
        self.pend_low_i = self.pend_low_t = 0
        self.ua_i = -1
        self.ua_high = 0.0
        self.ua_high_i = self.ua_high_t = 0
        self.c_kind = ""
        self.spring_low = self.spring_rv = self.spring_geometry = 0.0
        self.spring_i = 0
        self.tested = False
        self.sos_i = 0
        self.sos_quality = 0.0
        self.sos_leg_high: float | None = None
        self.sos_leg_start = self.sos_leg_rv = 0.0
        self.lps_low = 0.0
        self.lps_done = False
        self.made: dict[str, int] = {}  # setups of each kind its structure has proposed (rule R1; shared per structure)

class SideTracker:
    """All candidate ranges of one side on oriented bars; see the module docstring."""

    def __init__(self, p: WyckoffParams) -> None:
        self.p = p
        self.ranges: list[Range] = []
        self._pivots: deque[Pivot] = deque(maxlen=p.formation_pivots)
        self._last_high: Pivot | None = None
        # recent bars, enough to read a pivot's climax cluster and the context window before it
        self._bars: deque[Bar] = deque(maxlen=p.context_bars + p.evidence_lag_bars + 2)
        self.other: SideTracker | None = None  # the opposite side (its ranges are read mirrored)
        self.published: tuple[tuple[float, float, float], ...] = ()
        self.dirty = False
        self._youngest_expiry = -1  # the first bar index at which some live range may expire (fast-path bound)
        self._made: dict[int, dict[str, int]] = {}  # structure (first pivot's open time) -> setups proposed (rule R1)

    # ------------------------------------------------------------------ per bar
    def _ranges_changed(self) -> None:
        self.dirty = True
        self._youngest_expiry = min((r.start_i for r in self.ranges), default=0) + self.p.max_range_bars

    def publish(self) -> None:
        """Expose (S, Rz, strength) of every live range to the other side; called (when ``dirty``) once both
        sides have seen the candle, so each reads the other's ranges as of the previous candle (mirror-symmetric)."""
        self.published = tuple([(r.S, r.Rz, r.strength) for r in self.ranges])
        self.dirty = False

    def update(self, bar: Bar, pivot: Pivot | None) -> list[RawEvent]:
        """Advance on one closed oriented bar and the swing pivot it confirmed (if any, in this side's
        orientation); returns the events it recognised."""
        p = self.p
        self._bars.append(bar)
        out: list[RawEvent] = []
        if bar.i >= p.warmup_bars and bar.atr > 0:
            if self.ranges:
                # fast path for the common bar that stays inside a range in phase B/C: nothing can happen there
                # (the same tests _range would make), so skip the call
                low, high, close = bar.low, bar.h, bar.c
                low_buf, high_buf = p.spring_min_atr * bar.atr, p.ua_atr * bar.atr
                quiet = bar.i <= self._youngest_expiry
                for r in tuple(self.ranges):
                    if (quiet and close <= r.Rz and high <= r.Rz + high_buf and low >= r.S - low_buf and r.pend_i < 0
                            and r.ua_i < 0 and r.phase != "D"
                            and (r.phase == "B" or r.c_kind == "lpsc" or low >= r.spring_low - p.test_fail_atr * bar.atr)):
                        r.prev_c = close  # no bar-level rule can fire; only a new swing needs judging
                        if pivot is not None:
                            self._range_swing(r, bar, pivot, out)
                        continue
                    self._step(r, bar, pivot, out)
            if pivot is not None:
                self._pivots.append(pivot)
                self._maybe_form(bar, out)
        elif pivot is not None:
            self._pivots.append(pivot)
        if pivot is not None and pivot.kind > 0:
            self._last_high = pivot
        return out

    def _evidence(self, pivot: Pivot, now: Bar) -> PivotInfo:
        """Climax and context around a pivot's extreme bar (zeros if it lies beyond the bar buffer)."""
        bars = self._bars
        k = len(bars) - 1 - (now.i - pivot.i)
        if k < 0 or bars[k].atr <= 0:
            return PivotInfo(pivot, 0.0, 0.0, 0.0)
        ext = bars[k]
        start = max(0, k - self.p.context_bars)
        seg = list(islice(bars, start, min(len(bars), k + 2)))  # one copy of the window
        j = k - start
        lo = max(0, j - 2)
        cl_rv = _max_rv(seg, lo, min(j + 2, len(seg)))
        if pivot.kind < 0:
            spread = _max_h(seg, lo, j + 1) - ext.low
            prior = _max_h(seg, 0, j) - ext.low if j else 0.0
        else:
            spread = ext.h - _min_low(seg, lo, j + 1)
            prior = ext.h - _min_low(seg, 0, j) if j else 0.0
        return PivotInfo(pivot, max(0.0, prior) / ext.atr, cl_rv, spread / ext.atr)

    def best(self) -> Range | None:
        """The most advanced live range (phase, then climax evidence, then the oldest)."""
        if not self.ranges:
            return None
        return max(self.ranges, key=lambda r: (_PHASE_RANK[r.phase], self._strength(r), -r.start_i))

    # ------------------------------------------------------------------ range bookkeeping
    def _strength(self, r: Range) -> float:
        """Evidence for this reading of a range: mean of its climax and context memberships, + 0.25 once
        phase C (spring, shakeout or phase-C LPS) has shown which way the range leans."""
        return 0.5 * self._climax_mu(r) + 0.5 * self._context_mu(r) + (0.25 if r.c_kind else 0.0)

    def _restrength(self, r: Range) -> None:
        r.strength = self._strength(r)
        self.dirty = True

    def _climax_mu(self, r: Range) -> float:
        mu = r.mu_climax
        if mu < 0:  # computed once: a range's phase-A evidence never changes
            p = self.p
            mu = r.mu_climax = max(p.climax_floor, 0.5 * ramp(r.cl_rv, p.climax_rv_lo, p.climax_rv_hi)
                                   + 0.5 * ramp(r.cl_spread, p.climax_spread_lo, p.climax_spread_hi))
        return mu

    def _pivot_climax_mu(self, info: PivotInfo) -> float:
        p = self.p
        return max(p.climax_floor, 0.5 * ramp(info.cl_rv, p.climax_rv_lo, p.climax_rv_hi)
                   + 0.5 * ramp(info.cl_spread_atr, p.climax_spread_lo, p.climax_spread_hi))

    def _context_mu(self, r: Range) -> float:
        mu = r.mu_context
        if mu < 0:
            p = self.p
            mu = r.mu_context = max(p.context_floor, ramp(r.prior_atr, p.context_lo, p.context_hi))
        return mu

    def _edges(self, pc: Pivot, atr: float) -> tuple[Pivot, Pivot] | None:
        """The first edge and the middle pivot of a range that the retest ``pc`` closes, or None.

        Rule F1: the first edge is a same-side pivot 2, 4, ... places back (pivots alternate; at most
        ``formation_pivots`` - 1 back) that is at least as extreme as every same-side pivot between it and
        ``pc``, so minor swings inside the automatic rally or the first reaction do not hide the climax
        or the top that stopped the trend; the middle is the most extreme opposite pivot after it. The
        oldest such edge is tried first, then the younger ones, and the first that passes the geometric
        gates (retest zone, W of 3-20 ATR) is taken.
        """
        p = self.p
        piv = self._pivots
        n = len(piv)
        low_side = pc.kind < 0
        mid: Pivot | None = None
        edge_ext: float | None = None
        cands: list[tuple[Pivot, Pivot]] = []
        back = 2
        while back < n:
            m = piv[-back]
            if mid is None or (m.price > mid.price if low_side else m.price < mid.price):
                mid = m
            cand = piv[-back - 1]
            if edge_ext is None or (cand.price <= edge_ext if low_side else cand.price >= edge_ext):
                edge_ext = cand.price
                cands.append((cand, mid))
            back += 2
        for pa, pb in reversed(cands):
            W = (pb.price - pa.price) if low_side else (pa.price - pb.price)
            if not (p.min_width_atr * atr <= W <= p.max_width_atr * atr):
                continue
            if low_side:
                if pa.price - p.retest_under_atr * atr <= pc.price <= pa.price + p.retest_inside_w * W:
                    return pa, pb
            elif pa.price - p.retest_inside_w * W <= pc.price <= pa.price + p.retest_under_atr * atr:
                return pa, pb
        return None

    def _maybe_form(self, bar: Bar, out: list[RawEvent]) -> None:
        piv = self._pivots
        if len(piv) < 3:
            return
        p = self.p
        pc = piv[-1]
        kind = pc.kind
        atr = bar.atr
        found = self._edges(pc, atr)
        if found is None:
            return
        pa, pb = found
        if kind < 0:
            S, Rz = pa.price, pb.price
        else:
            Rz, S = pa.price, pb.price
        W = Rz - S
        if not (p.min_width_atr * atr <= W <= p.max_width_atr * atr):
            return
        nested = [old for old in self.ranges if old.S - p.nest_margin_w * old.W <= S and Rz <= old.Rz + p.nest_margin_w * old.W]
        if any(old.phase != "B" and p.same_range_w * old.W <= W for old in nested):
            return  # the same range seen again while that range is already in phase C or D
        # rule F5: an inner range (under 0.6 of the live one's height) may form whatever the outer one's phase:
        # a wide range left over from before a climax must not hide the structure that climax starts
        low_pivot = pa if kind < 0 else pb
        low = self._evidence(low_pivot, bar)
        if nested:
            # a swing range inside a live one replaces it only with a clearly stronger climax (its move from
            # inside the old range is no trend)
            mu = self._pivot_climax_mu(low)
            if any(mu <= self._climax_mu(old) + 0.2 for old in nested):
                return
        top = self._evidence(pb if kind < 0 else pa, bar)
        if kind > 0 and low.prior_atr > top.prior_atr:
            return  # a lower high, the climax low and the automatic rally: the low-high-low triple will form it
        for old in nested:
            if p.same_range_w * old.W <= W:
                self.ranges.remove(old)  # the same range seen again with a stronger climax: replaced
            # rule F3: a clearly narrower range inside a live one is another reading; the outer stays alive
        a, b, c = (low, top, PivotInfo(pc, 0.0, 0.0, 0.0)) if kind < 0 else (top, low, PivotInfo(pc, 0.0, 0.0, 0.0))
        # the support low's climax evidence; context = the decline into it or the advance into the top
        climax = low.cl_rv >= 2.0 and low.cl_spread_atr >= 1.5
        # rule F4: an advance that ran into the range before its first low (re-accumulation read low-high-low)
        # is context too: the move into the top less the range's own height
        prior = max(low.prior_atr, top.prior_atr if top.pivot.i < low.pivot.i else top.prior_atr - W / atr)
        r = Range(S, Rz, a.pivot.i, a.pivot.t_ms, prior, low.cl_rv, low.cl_spread_atr, climax, bar.c, atr)
        # R1 counts per structure (first pivot), so a range formed again from the same first pivot remembers
        # the setups it already proposed; the last 32 structures are remembered
        made = self._made.get(r.start_t)
        if made is None:
            made = self._made[r.start_t] = {}
            if len(self._made) > 32:
                del self._made[next(iter(self._made))]
        r.made = made
        if c.pivot.kind < 0:
            sc_key = "sc" if climax else "tr"
            out.append(self._event(r, sc_key, bar, a.pivot.i, a.pivot.t_ms, S, (
                ("rv", a.cl_rv), ("range_atr", a.cl_spread_atr), ("prior_move_atr", a.prior_atr))))
            out.append(self._event(r, "ar", bar, b.pivot.i, b.pivot.t_ms, Rz, (("w_atr", W / atr),)))
            out.append(self._event(r, "st", bar, c.pivot.i, c.pivot.t_ms, c.pivot.price, (
                ("leg_rv", c.pivot.leg_mean_rv),)))
            self._down_leg(r, c.pivot)
        else:
            out.append(self._event(r, "sc" if climax else "tr", bar, b.pivot.i, b.pivot.t_ms, S, (
                ("rv", low.cl_rv), ("range_atr", low.cl_spread_atr), ("prior_move_atr", prior), ("w_atr", W / atr))))
            self._down_leg(r, b.pivot)
        self._restrength(r)
        self.ranges.append(r)
        if len(self.ranges) > p.max_ranges:
            weakest = min(self.ranges, key=lambda x: (_PHASE_RANK[x.phase], self._strength(x), x.start_i))
            self.ranges.remove(weakest)
        self._ranges_changed()

    def _event(self, r: Range, key: str, bar: Bar, event_i: int, event_t: int, price: float,
               details: tuple[tuple[str, float], ...] = (), setup: Setup | None = None) -> RawEvent:
        if key not in INFORMATIONAL:
            r.chain.append((key, event_t, price))
        phase = "E" if key == "markup" else ("A" if key in ("sc", "ar", "tr") else r.phase)
        chain = tuple(r.chain) if setup is not None else ()  # only a candidate's reasons list the chain
        return RawEvent(key, event_i, event_t, bar.i, bar.t_ms, price, phase, details, setup, chain, (r.S, r.Rz),
                        r.start_t)

    def _end(self, r: Range, key: str, bar: Bar, out: list[RawEvent], reason: str) -> None:
        out.append(self._event(r, key, bar, bar.i, bar.t_ms, bar.c, (("reason_code", _REASON_CODES[reason]),)))
        self.ranges.remove(r)
        self._ranges_changed()

    def _step(self, r: Range, bar: Bar, pivot: Pivot | None, out: list[RawEvent]) -> None:
        p = self.p
        if bar.i - r.start_i > p.max_range_bars:
            self._end(r, "expired", bar, out, "timeout")
            return
        if r.phase == "D":
            self._phase_d(r, bar, pivot, out)
        else:
            self._range(r, bar, pivot, out)

    # ------------------------------------------------------------------ phases B and C
    def _down_leg(self, r: Range, pivot: Pivot) -> None:
        if r.down_n == 0:
            r.down_first = pivot.leg_mean_rv
        r.down_last = pivot.leg_mean_rv
        r.down_sum += pivot.leg_mean_rv
        r.down_n += 1

    def _range(self, r: Range, bar: Bar, pivot: Pivot | None, out: list[RawEvent]) -> None:
        p = self.p
        age = bar.i - r.start_i
        mature = age >= p.min_age_bars
        level = r.Rz + p.sos_break_atr * bar.atr
        crossed = bar.c > level >= r.prev_c
        r.prev_c = bar.c
        if crossed and mature and r.pend_i < 0:
            self._sos(r, bar, out)
            return
        if bar.c > r.Rz + p.runaway_w * r.W:
            self._end(r, "expired", bar, out, "no_sos")
            return
        if bar.c > r.Rz and not mature:
            r.grow = True
        self._upthrust_after(r, bar, out)
        if r.phase == "C" and r.c_kind != "lpsc" and bar.low < r.spring_low - p.test_fail_atr * bar.atr:
            # the spring did not hold: report it, and judge this deeper dip as a new probe of the same range
            out.append(self._event(r, "failed", bar, bar.i, bar.t_ms, bar.low, (("reason_code", 6.0),)))
            r.phase, r.c_kind, r.tested = "B", "", False
            self._restrength(r)
        if (r.phase == "B" or r.c_kind == "lpsc") and self._probe_support(r, bar, mature, out):
            return
        if pivot is not None:
            self._range_swing(r, bar, pivot, out)

    def _range_swing(self, r: Range, bar: Bar, pivot: Pivot, out: list[RawEvent]) -> None:
        """Swing-level rules of phases B and C (a pivot was confirmed on this bar)."""
        p = self.p
        mature = bar.i - r.start_i >= p.min_age_bars
        self._effort_vs_result(r, bar, pivot, out)
        if pivot.kind > 0:
            if r.grow and pivot.price > r.Rz and pivot.price - r.S <= p.max_width_atr * bar.atr:
                r.Rz = pivot.price  # the rally after the first test was not over: the top moves up
                r.W = r.Rz - r.S
                self.dirty = True
                r.grow = False
            elif pivot.price >= r.Rz - p.test_zone_w * r.W:
                r.tests += 1
            return
        if r.phase == "B":
            if pivot.price <= r.S + p.test_zone_w * r.W:
                r.tests += 1
            mean_down = r.down_sum / r.down_n if r.down_n else pivot.leg_mean_rv
            hi = self._last_high
            if (mature and r.S + p.lpsc_min_w * r.W <= pivot.price <= r.S + p.lpsc_max_w * r.W
                    and pivot.leg_mean_rv <= p.lpsc_max_effort * mean_down
                    and hi is not None and hi.i > r.start_i and hi.price >= r.S + p.lpsc_prior_high_w * r.W):
                r.phase = "C"
                r.c_kind = "lpsc"
                self._restrength(r)
                r.spring_low, r.spring_i, r.spring_rv = pivot.price, pivot.i, pivot.leg_mean_rv
                out.append(self._event(r, "lpsc", bar, pivot.i, pivot.t_ms, pivot.price, (
                    ("leg_rv", pivot.leg_mean_rv), ("height_w", (pivot.price - r.S) / r.W))))
            self._down_leg(r, pivot)
            return
        if r.c_kind in ("spring", "shakeout") and not r.tested and pivot.i > r.spring_i:
            if pivot.i - r.spring_i > p.test_max_bars:
                return
            if (pivot.price >= r.spring_low - p.test_under_atr * bar.atr and pivot.price <= r.S + p.test_max_w * r.W
                    and pivot.leg_mean_rv <= max(p.test_max_effort * r.spring_rv, 1.0)):
                r.tested = True
                out.append(self._event(r, "test", bar, pivot.i, pivot.t_ms, pivot.price, (
                    ("leg_rv", pivot.leg_mean_rv), ("spring_rv", r.spring_rv)), self._test_setup(r, bar, pivot)))

    def _effort_vs_result(self, r: Range, bar: Bar, pivot: Pivot, out: list[RawEvent]) -> None:
        """Weis-wave check against the previous leg of the same direction inside the range.

        Progress (ATR) down >= 30 % while effort (sum of RV over the leg) up >= 20 %: the move is
        being absorbed. Toward support that is supply absorbed ("absorption", bullish for this
        side); toward resistance, demand absorbed ("no_follow_through").
        """
        progress = abs(pivot.price - pivot.leg_start_price) / bar.atr
        effort = pivot.leg_mean_rv * pivot.leg_bars
        prev = r.prev_leg.get(pivot.kind)
        r.prev_leg[pivot.kind] = (progress, effort)
        if prev is None or prev[0] <= 0 or prev[1] <= 0:
            return
        if progress <= self.p.evr_progress_max * prev[0] and effort >= self.p.evr_effort_min * prev[1]:
            key = "absorption" if pivot.kind < 0 else "no_follow_through"
            if pivot.kind < 0:
                r.absorptions += 1
            out.append(self._event(r, key, bar, pivot.i, pivot.t_ms, pivot.price, (
                ("progress_ratio", progress / prev[0]), ("effort_ratio", effort / prev[1]))))

    def _probe_support(self, r: Range, bar: Bar, mature: bool, out: list[RawEvent]) -> bool:
        """Dips under S: ST-in-B, spring, shakeout or breakdown. True when the range ended."""
        p = self.p
        if r.pend_i < 0:
            if bar.low >= r.S - p.spring_min_atr * bar.atr:
                return False
            r.pend_i, r.pend_atr = bar.i, bar.atr
            r.pend_low, r.pend_low_i, r.pend_low_t, r.pend_rv = bar.low, bar.i, bar.t_ms, bar.rv
        else:
            r.pend_rv = max(r.pend_rv, bar.rv)
            if bar.low < r.pend_low:
                r.pend_low, r.pend_low_i, r.pend_low_t = bar.low, bar.i, bar.t_ms
        depth = r.S - r.pend_low
        if depth > max(p.breakdown_w * r.W, p.breakdown_atr * r.pend_atr):
            self._end(r, "failed", bar, out, "breakdown")
            return True
        waited = bar.i - r.pend_i
        if bar.c >= r.S:
            r.pend_i = -1
            d_atr = depth / r.pend_atr
            if not mature:
                out.append(self._event(r, "st_b", bar, r.pend_low_i, r.pend_low_t, r.pend_low, (
                    ("depth_atr", d_atr), ("rv", r.pend_rv))))
                return False
            deep = depth > max(p.spring_deep_w * r.W, p.spring_deep_atr * r.pend_atr)
            key = "shakeout" if deep else "spring"
            r.phase = "C"
            r.c_kind = key
            self._restrength(r)
            r.spring_low, r.spring_i, r.spring_rv = r.pend_low, r.pend_low_i, r.pend_rv
            setup = self._spring_setup(r, bar, depth, waited)
            out.append(self._event(r, key, bar, r.pend_low_i, r.pend_low_t, r.pend_low, (
                ("depth_atr", d_atr), ("depth_w", depth / r.W), ("rv", r.pend_rv), ("reclaim_bars", float(waited))),
                setup))
            return False
        if waited >= p.reclaim_bars:
            self._end(r, "failed", bar, out, "breakdown")
            return True
        return False

    def _upthrust_after(self, r: Range, bar: Bar, out: list[RawEvent]) -> None:
        """UA: a poke above Rz + 0.1 ATR that closes back under Rz within 2 bars."""
        p = self.p
        if r.ua_i < 0:
            if bar.h > r.Rz + p.ua_atr * bar.atr:
                r.ua_i, r.ua_high, r.ua_high_i, r.ua_high_t = bar.i, bar.h, bar.i, bar.t_ms
            else:
                return
        elif bar.h > r.ua_high:
            r.ua_high, r.ua_high_i, r.ua_high_t = bar.h, bar.i, bar.t_ms
        if bar.c < r.Rz:
            out.append(self._event(r, "ua", bar, r.ua_high_i, r.ua_high_t, r.ua_high))
            r.ua_i = -1
        elif bar.i - r.ua_i >= p.ua_fail_bars:
            r.ua_i = -1

    # ------------------------------------------------------------------ phase D
    def _sos(self, r: Range, bar: Bar, out: list[RawEvent]) -> None:
        setup = self._sos_setup(r, bar)
        r.phase = "D"
        r.sos_i = bar.i
        r.sos_leg_high = None
        r.lps_done = False
        r.pend_i = -1
        r.ua_i = -1
        out.append(self._event(r, "sos", bar, bar.i, bar.t_ms, bar.c, (
            ("rv", bar.rv), ("rstar", bar.rstar), ("cp", bar.cp)), setup))

    def _phase_d(self, r: Range, bar: Bar, pivot: Pivot | None, out: list[RawEvent]) -> None:
        p = self.p
        if bar.i - r.sos_i > p.d_max_bars:
            self._end(r, "expired", bar, out, "timeout")
            return
        if r.lps_done:
            if r.sos_leg_high is not None and bar.c > r.sos_leg_high:
                self._end(r, "markup", bar, out, "markup")
            elif bar.c < r.lps_low - p.stop_buffer_atr * bar.atr:
                self._end(r, "failed", bar, out, "lps_failed")
            return
        early = bar.i - r.sos_i <= p.sos_fail_bars
        if (early and bar.c < r.Rz - p.sos_fail_atr * bar.atr) or bar.c < r.S + p.lps_min_w * r.W:
            out.append(self._event(r, "failed_sos", bar, bar.i, bar.t_ms, bar.c))
            r.phase = "B"
            r.prev_c = bar.c
            return
        if bar.c > r.Rz + p.markup_w * r.W:
            self._end(r, "markup", bar, out, "markup")
            return
        if pivot is None:
            return
        if pivot.kind > 0:
            if pivot.i >= r.sos_i and (r.sos_leg_high is None or pivot.price > r.sos_leg_high):
                if r.sos_leg_high is None:
                    r.sos_leg_start = pivot.leg_start_price
                    r.sos_leg_rv = pivot.leg_mean_rv
                r.sos_leg_high = pivot.price
            return
        if r.sos_leg_high is None:
            return
        leg = r.sos_leg_high - r.sos_leg_start
        retrace = (r.sos_leg_high - pivot.price) / leg if leg > 0 else 1.0
        if (pivot.price >= r.S + p.lps_min_w * r.W and retrace <= p.lps_max_retrace
                and pivot.leg_mean_rv <= p.lps_max_effort * r.sos_leg_rv):
            key = "bu" if pivot.price >= r.Rz - p.lps_bu_atr * bar.atr else "lps"
            setup = self._lps_setup(r, bar, pivot, retrace)
            r.lps_low = pivot.price
            r.lps_done = True
            out.append(self._event(r, key, bar, pivot.i, pivot.t_ms, pivot.price, (
                ("retrace", retrace), ("leg_rv", pivot.leg_mean_rv), ("sos_leg_rv", r.sos_leg_rv)), setup))

    # ------------------------------------------------------------------ setups and scores
    def _common(self, r: Range, bar: Bar) -> dict[str, float]:
        p = self.p
        w_atr = r.W / bar.atr
        drying = ramp(r.down_last / r.down_first, 1.3, 0.8) if r.down_n >= 2 and r.down_first > 0 else 0.5
        age = bar.i - r.start_i
        other = 0.0
        for neg_hi, neg_lo, strength in self.other.published if self.other is not None else ():
            lo, hi = -neg_lo, -neg_hi  # the other side's oriented (S, Rz), mirrored into this side's space
            overlap = min(hi, r.Rz) - max(lo, r.S)
            if overlap > 0.5 * min(hi - lo, r.W):
                other = max(other, strength)
        return {
            "bias": max(p.bias_floor, ramp(r.strength - other, -0.3, 0.2)),
            "climax": self._climax_mu(r),
            "range": p.range_w_width * ramp(w_atr, p.width_lo, p.width_hi)
            + p.range_w_age * ramp(float(age), p.young_bars, p.mature_bars)
            + p.range_w_tests * ramp(float(r.tests), p.tests_lo, p.tests_hi),
            "supply_drying": drying,
            "context": self._context_mu(r),
        }

    def _make(self, r: Range, key: str, bar: Bar, stop: float, targets: tuple[float, ...], mu: dict[str, float],
              extra: tuple[tuple[str, float], ...]) -> Setup:
        p = self.p
        entry = bar.c
        stop = min(stop, entry - 1e-9 * max(1.0, abs(entry)))
        risk = entry - stop
        tps = tuple([t for t in targets if t > entry + 0.1 * risk])  # a list comprehension: a plain loop in mypyc
        if not tps:
            tps = (entry + 2.0 * risk,)
        # rule R1: the k-th setup of one kind in one range scores x repeat_factor^(k-1): a range whose spring
        # or SOS already came and went has shown the reading was wrong (random walks re-cross their edges)
        made = r.made.get(key, 0)
        r.made[key] = made + 1
        raw = score(key, mu) * p.repeat_factor ** made
        feats = (("w_atr", r.W / bar.atr), ("rv", bar.rv), ("cp", bar.cp), ("absorptions", float(r.absorptions)),
                 ("range_age", float(bar.i - r.start_i)), ("climax_rv", r.cl_rv), ("prior_move_atr", r.prior_atr),
                 ("tests", float(r.tests)), ("climax_spread_atr", r.cl_spread), ("repeat", float(made)),
                 *extra, *[(f"mu_{k}", v) for k, v in sorted(mu.items())])
        return Setup(key, entry, stop, tps, raw, tuple(sorted(mu.items())), feats)

    def _spring_setup(self, r: Range, bar: Bar, depth: float, waited: int) -> Setup:
        p = self.p
        mu = self._common(r, bar)
        reclaim = 1.0 if waited <= 1 else max(0.4, 1.0 - 0.6 * (waited - 1) / max(1, p.reclaim_fade_bars - 1))
        depth_mu = min(band(depth / r.W, 0.0, 0.06, 0.45, 1.0), ramp(depth / bar.atr, 0.1, 0.5))
        r.spring_geometry = depth_mu * reclaim
        stop = r.pend_low - p.stop_buffer_atr * bar.atr
        rv = r.pend_rv
        mu["geometry"] = r.spring_geometry
        mu["effort"] = 1.0 if rv < p.light_rv else (0.7 if rv <= p.heavy_rv else 0.45)
        mu["bar"] = ramp(bar.cp, 0.3, 0.8)
        rr = (r.Rz - bar.c) / max(1e-12, bar.c - stop)
        mu["room"] = ramp(rr, 0.5, 1.5)
        return self._make(r, "spring", bar, stop, (r.Rz, r.Rz + r.W), mu,
                          (("depth_atr", depth / bar.atr), ("depth_w", depth / r.W), ("spring_rv", rv),
                           ("reclaim_bars", float(waited))))

    def _test_setup(self, r: Range, bar: Bar, pivot: Pivot) -> Setup:
        p = self.p
        mu = self._common(r, bar)
        stop = min(pivot.price, r.spring_low) - p.stop_buffer_atr * bar.atr
        ratio = pivot.leg_mean_rv / max(1e-12, r.spring_rv)
        mu["spring"] = r.spring_geometry if r.c_kind == "spring" else 0.5 * r.spring_geometry
        mu["geometry"] = ramp(pivot.price - r.spring_low, -p.test_under_atr * bar.atr, 0.2 * bar.atr)
        mu["effort"] = ramp(ratio, 1.0, 0.5)
        rr = (r.Rz - bar.c) / max(1e-12, bar.c - stop)
        mu["room"] = ramp(rr, 0.5, 1.5)
        return self._make(r, "test", bar, stop, (r.Rz, r.Rz + r.W), mu,
                          (("test_effort_ratio", ratio), ("bars_after_spring", float(pivot.i - r.spring_i))))

    def _phase_c_quality(self, r: Range) -> float:
        if r.c_kind in ("spring", "shakeout"):
            return 1.0 if r.tested else 0.85
        return 0.85 if r.c_kind == "lpsc" else 0.5

    def _sos_setup(self, r: Range, bar: Bar) -> Setup:
        p = self.p
        mu = self._common(r, bar)
        mu["phase_c"] = self._phase_c_quality(r)
        mu["breakout"] = ramp((bar.c - r.Rz) / bar.atr, p.sos_break_atr, 0.8)
        mu["effort"] = ramp(bar.rv, p.sos_rv_lo, p.sos_rv_hi)
        mu["bar"] = 0.5 * ramp(bar.cp, 0.4, 0.85) + 0.5 * ramp(bar.rstar, 0.8, 2.0)
        r.sos_quality = 0.5 * mu["breakout"] + 0.5 * mu["effort"]
        stop = r.Rz - p.sos_stop_atr * bar.atr
        return self._make(r, "sos", bar, stop, (r.Rz + r.W, r.Rz + 2.0 * r.W), mu,
                          (("breakout_atr", (bar.c - r.Rz) / bar.atr), ("rstar", bar.rstar)))

    def _lps_setup(self, r: Range, bar: Bar, pivot: Pivot, retrace: float) -> Setup:
        p = self.p
        mu = self._common(r, bar)
        ratio = pivot.leg_mean_rv / max(1e-12, r.sos_leg_rv)
        stop = pivot.price - p.stop_buffer_atr * bar.atr
        mu["phase_c"] = self._phase_c_quality(r)
        mu["sos"] = r.sos_quality
        mu["depth"] = ramp(retrace, p.lps_max_retrace, 0.3)
        mu["effort"] = ramp(ratio, p.lps_max_effort, 0.4)
        target = r.Rz + r.W
        rr = (target - bar.c) / max(1e-12, bar.c - stop)
        mu["room"] = ramp(rr, 1.0, 2.5)
        return self._make(r, "lps", bar, stop, (target, r.Rz + 2.0 * r.W), mu,
                          (("retrace", retrace), ("lps_effort_ratio", ratio)))


# pickled by their constructor: a compiled class with an explicit __init__ needs its arguments to unpickle
register_frozen(Setup, RawEvent, PivotInfo)
