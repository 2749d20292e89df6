"""The Wyckoff event state machine for ONE side, in oriented log space.

The accumulation side sees log prices; the distribution side sees negated log prices, so its
buying climax arrives here as a "selling climax", its UTAD as a "spring", its SOW as an "SOS".
Event keys are therefore the accumulation names; :mod:`src.analysis.wyckoff` renames them.

States and rules (numbers are :class:`WyckoffParams` defaults; S = support, Rz = resistance,
W = Rz - S, ATR = the previous bar's ATR, RV = relative volume, CP = close position):

IDLE -> SC_PENDING: a climax cluster (the last 1-3 bars): max RV >= 2.5, high-low >= 2.5 ATR,
  max bar range >= 2 ATR, its low a new 50-bar low, >= 4 ATR below the 30-bar high before it.
  The cluster may extend to 3 bars while lows keep falling.
SC_PENDING -> AWAIT_AR: within 3 bars a close >= the cluster midpoint, or the next bar with
  CP >= 0.6 (emits PS when a swing low with leg RV >= 1.5 preceded the climax within 40 bars,
  then SC). S := climax low. Unconfirmed after 3 bars, or a close < low - 1 ATR: back to IDLE.
AWAIT_AR -> AWAIT_ST: the first swing high within 25 bars rallying >= max(2 ATR, 0.3 x prior
  decline); Rz := its high; the range must be 2-20 ATR high. Timeout or a close < S - 1 ATR
  (first 5 bars) / S - 1.5 ATR: IDLE.
AWAIT_ST -> B: a swing low in [S - 0.5 ATR, S + 0.35 W] whose leg mean RV <= 0.8 x the climax
  RV. A deeper swing low, a close < S - 1.5 ATR or a close > Rz + 1 W (V-reversal): IDLE.
B: phase B lasts >= max(10 bars, phase A length), and the range >= 30 bars from the climax
  (the "minimum duration" below). Swing lows <= S + 0.2 W count as tests of S;
  down-leg RVs are kept (supply drying up = falling). Effort vs result: a leg whose progress
  (ATR) is >= 30 % smaller than the previous same-direction leg's while its summed RV is >= 20 %
  larger is ABSORPTION (toward support) or NO_FOLLOW_THROUGH (toward resistance). UA: a high > Rz + 0.1 ATR that closes back
  under Rz within 2 bars. A dip under S - 0.1 ATR reclaimed (close >= S) within 3 bars is an ST
  in phase B before the minimum duration, and a SPRING (penetration <= 1.5 ATR) or SHAKEOUT
  (<= 3 ATR) after it -> C. No reclaim within 3 bars, or > 3 ATR deep: FAILED (-> IDLE, where a
  new climax can re-anchor). Schematic #2: after the minimum duration, a swing low in
  [S + 0.1 W, S + 0.35 W] on leg RV <= 0.8 x the phase-B down-leg mean, after a swing high
  >= S + 0.75 W, is a phase-C LPS -> C.
C: TEST = a swing low within 20 bars of the spring, >= spring low - 0.1 ATR, <= S + 0.5 W, leg
  mean RV <= max(0.7 x spring RV, 1.0). A low < spring low - 0.25 ATR: FAILED.
B/C -> D: SOS = a close > Rz + 0.25 ATR with RV >= 1.5, bar range >= 1.2 ATR, CP >= 0.6
  (from B only after its minimum duration). A close > Rz + 1 W without an SOS ends the case.
D: a close < Rz - 0.5 ATR within 5 bars of the SOS (or < S + 0.5 W later) is a failed SOS ->
  back to B. LPS/BU = the first swing low after the SOS leg's high, >= S + 0.5 W (BU when
  >= Rz - 0.5 ATR), leg mean RV <= 0.8 x the SOS leg's, retracing <= 61.8 % of the SOS leg.
  After the LPS a close above the SOS leg's high is MARKUP (phase E, case done); a close under
  the LPS low - 0.25 ATR fails it. Phase D expires after 150 bars.
Any state: a case older than 600 bars from its climax expires; a new climax below S while in
  phase A, or in phase B when no dip under S is pending, re-anchors the case there.

Every bar costs O(1): comparisons against stored levels, running sums, and the swing tracker.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from src.analysis.wyckoff_features import Bar, Pivot, RollingMin, Swings
from src.analysis.wyckoff_params import WyckoffParams
from src.analysis.wyckoff_scoring import band, ramp, score


class St(Enum):
    IDLE = "idle"
    SC_PENDING = "sc_pending"
    AWAIT_AR = "await_ar"
    AWAIT_ST = "await_st"
    B = "b"
    C = "c"
    D = "d"
    LPS_DONE = "lps_done"


INFORMATIONAL = frozenset({"ua", "st_b", "absorption", "no_follow_through"})  # not part of a signal's event chain
PHASE = {
    St.IDLE: "", St.SC_PENDING: "A", St.AWAIT_AR: "A", St.AWAIT_ST: "A", St.B: "B", St.C: "C",
    St.D: "D", St.LPS_DONE: "D",
}


@dataclass(frozen=True, slots=True)
class Setup:
    """A tradeable event in oriented log space (stop below entry, targets above it)."""

    key: str  # spring | test | sos | lps
    entry: float
    stop: float
    targets: tuple[float, ...]
    raw_score: float
    memberships: tuple[tuple[str, float], ...]
    features: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One recognised event: ``event_*`` is the bar it refers to, ``recog_*`` the bar that proved it."""

    key: str
    event_i: int
    event_t: int
    recog_i: int
    recog_t: int
    price: float
    phase: str
    details: tuple[tuple[str, float], ...] = ()
    setup: Setup | None = None
    chain: tuple[tuple[str, int, float], ...] = ()  # (key, t_ms, oriented price) of the case so far
    range_levels: tuple[float, float] | None = None  # oriented (S, Rz) once the AR fixed them


class SideTracker:
    """One accumulation-shaped case at a time on oriented bars; see the module docstring."""

    def __init__(self, p: WyckoffParams) -> None:
        self.p = p
        self.swings = Swings(p.swing_k_atr)
        self._recent: deque[Bar] = deque(maxlen=p.climax_bars)
        self._min_low = RollingMin(p.climax_lookback)  # lows before the cluster window
        self._max_high = RollingMin(p.prior_move_bars)  # of negated highs before the cluster window
        self._pivot_lows: deque[Pivot] = deque(maxlen=6)
        self._last_high: Pivot | None = None
        self._reset()

    # ------------------------------------------------------------------ case bookkeeping
    def _reset(self) -> None:
        self.state = St.IDLE
        self.S = 0.0
        self.Rz = 0.0
        self.chain: deque[tuple[str, int, float]] = deque(maxlen=16)
        # climax
        self.cl_low = self.cl_high = self.cl_mid = 0.0
        self.cl_low_i = self.cl_low_t = self.cl_start_i = self.cl_end_i = 0
        self.cl_rv = self.cl_range_atr = self.prior_move_atr = 0.0
        self.sc_confirm_i = 0
        # range
        self.ar_i = 0
        self.atr_ref = 0.0
        self.b_start_i = 0
        self.b_min = 0
        self.tests = 0
        self.down_first = self.down_last = self.down_sum = 0.0
        self.down_n = 0
        self.prev_leg: dict[int, tuple[float, float]] = {}  # pivot kind -> (progress ATR, effort) of the last leg
        self.absorptions = 0
        # below-support / above-resistance probes
        self.pend_i = -1
        self.pend_atr = 0.0
        self.pend_low = 0.0
        self.pend_low_i = self.pend_low_t = 0
        self.pend_rv = 0.0
        self.ua_i = -1
        self.ua_high = 0.0
        self.ua_high_i = self.ua_high_t = 0
        # phase C
        self.c_kind = ""
        self.spring_low = 0.0
        self.spring_i = 0
        self.spring_rv = 0.0
        self.spring_geometry = 0.0
        self.tested = False
        # phase D
        self.sos_i = 0
        self.sos_quality = 0.0
        self.sos_leg_high: float | None = None
        self.sos_leg_start = 0.0
        self.sos_leg_rv = 0.0
        self.lps_low = 0.0

    @property
    def phase(self) -> str:
        return PHASE[self.state]

    @property
    def W(self) -> float:
        return self.Rz - self.S

    def _event(self, key: str, bar: Bar, event_i: int, event_t: int, price: float,
               details: tuple[tuple[str, float], ...] = (), setup: Setup | None = None) -> RawEvent:
        if key not in INFORMATIONAL:
            self.chain.append((key, event_t, price))
        phase = "E" if key == "markup" else self.phase
        levels = (self.S, self.Rz) if self.state in (St.AWAIT_ST, St.B, St.C, St.D, St.LPS_DONE) else None
        return RawEvent(key, event_i, event_t, bar.i, bar.t_ms, price, phase, details, setup, tuple(self.chain), levels)

    def _end(self, key: str, bar: Bar, out: list[RawEvent], reason: str) -> None:
        """Close the current case with a terminal event (failed / expired / markup)."""
        code = {"breakdown": 1.0, "timeout": 2.0, "v_reversal": 3.0, "no_sos": 4.0, "too_wide": 5.0,
                "spring_failed": 6.0, "lps_failed": 7.0, "ar_missing": 8.0, "deep_st": 9.0, "markup": 10.0}[reason]
        out.append(self._event(key, bar, bar.i, bar.t_ms, bar.c, (("reason_code", code),)))
        self._reset()

    # ------------------------------------------------------------------ per bar
    def update(self, bar: Bar) -> list[RawEvent]:
        """Advance on one closed oriented bar; returns the events it recognised."""
        p = self.p
        out: list[RawEvent] = []
        pivot = self.swings.update(bar)
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            self._min_low.push(old.low)
            self._max_high.push(-old.h)
        self._recent.append(bar)
        if bar.i >= p.warmup_bars and bar.atr > 0:
            self._step(bar, pivot, out)
        if pivot is not None:
            if pivot.kind < 0:
                self._pivot_lows.append(pivot)
            else:
                self._last_high = pivot
        return out

    def _step(self, bar: Bar, pivot: Pivot | None, out: list[RawEvent]) -> None:
        p = self.p
        st = self.state
        if st is not St.IDLE and st is not St.SC_PENDING and bar.i - self.cl_low_i > p.max_range_bars:
            self._end("expired", bar, out, "timeout")
            st = self.state
        if st is St.SC_PENDING:
            self._sc_pending(bar, out)
        elif st is St.AWAIT_AR:
            self._await_ar(bar, pivot, out)
        elif st is St.AWAIT_ST:
            self._await_st(bar, pivot, out)
        elif st is St.B or st is St.C:
            self._range(bar, pivot, out)
        elif st is St.D or st is St.LPS_DONE:
            self._phase_d(bar, pivot, out)
        st = self.state
        # Re-anchor on a new climax under S in phase A, or in phase B unless a dip under S is still
        # being judged (a high-volume spring reclaimed within 3 bars is a spring, not a new climax;
        # an unreclaimed one fails the case, and the next climax starts a new one from IDLE).
        if st is St.IDLE or (bar.low < self.S and (st in (St.AWAIT_AR, St.AWAIT_ST) or (st is St.B and self.pend_i < 0))):
            self._maybe_climax(bar, out)

    # ------------------------------------------------------------------ phase A
    def _maybe_climax(self, bar: Bar, out: list[RawEvent]) -> None:
        p = self.p
        lo50 = self._min_low.value
        neg_hi30 = self._max_high.value
        if lo50 is None or neg_hi30 is None or not self._min_low.full or bar.low >= lo50:
            return  # (the current bar must make the new 50-bar low; this also short-cuts the common case)
        recent = self._recent
        cl_low = min(b.low for b in recent)
        if cl_low >= lo50 or bar.low > cl_low:
            return  # not a new 50-bar low, or the current bar is not part of the low
        atr = bar.atr
        cl_high = max(b.h for b in recent)
        cl_rv = max(b.rv for b in recent)
        cl_rstar = max(b.rstar for b in recent)
        prior = -neg_hi30 - cl_low
        if (cl_rv < p.climax_min_rv or cl_high - cl_low < p.climax_min_range_atr * atr
                or cl_rstar < p.climax_min_rstar or prior < p.prior_move_atr * atr):
            return
        if self.state is not St.IDLE:
            out.append(self._event("reanchor", bar, bar.i, bar.t_ms, cl_low))
            self._reset()
        self.state = St.SC_PENDING
        self.cl_low, self.cl_high, self.cl_mid = cl_low, cl_high, 0.5 * (cl_low + cl_high)
        self.cl_low_i, self.cl_low_t = bar.i, bar.t_ms
        self.cl_start_i = recent[0].i
        self.cl_end_i = bar.i
        self.cl_rv = cl_rv
        self.cl_range_atr = (cl_high - cl_low) / atr
        self.prior_move_atr = prior / atr
        self.atr_ref = atr

    def _sc_pending(self, bar: Bar, out: list[RawEvent]) -> None:
        p = self.p
        if bar.low < self.cl_low and bar.i - self.cl_start_i < p.climax_bars:
            self.cl_low, self.cl_low_i, self.cl_low_t = bar.low, bar.i, bar.t_ms
            self.cl_high = max(self.cl_high, bar.h)
            self.cl_mid = 0.5 * (self.cl_low + self.cl_high)
            self.cl_end_i = bar.i
            self.cl_rv = max(self.cl_rv, bar.rv)
            self.cl_range_atr = (self.cl_high - self.cl_low) / self.atr_ref
            return
        since = bar.i - self.cl_end_i
        confirmed = (bar.c >= self.cl_mid and since <= p.climax_confirm_bars) or (
            since == 1 and bar.cp >= p.climax_confirm_cp)
        if confirmed:
            self.S = self.cl_low
            self.state = St.AWAIT_AR
            self.sc_confirm_i = bar.i
            ps = self._preliminary(bar)
            if ps is not None:
                out.append(self._event("ps", bar, ps.i, ps.t_ms, ps.price, (("leg_max_rv", ps.leg_max_rv),)))
            out.append(self._event("sc", bar, self.cl_low_i, self.cl_low_t, self.cl_low, (
                ("rv", self.cl_rv), ("range_atr", self.cl_range_atr), ("prior_move_atr", self.prior_move_atr))))
        elif since > p.climax_confirm_bars or bar.c < self.cl_low - p.climax_fail_atr * bar.atr:
            self._reset()

    def _preliminary(self, bar: Bar) -> Pivot | None:
        for pv in reversed(self._pivot_lows):
            if pv.i < self.cl_low_i - self.p.ps_lookback:
                break
            if pv.i < self.cl_start_i and pv.price > self.cl_low and pv.leg_max_rv >= self.p.ps_min_rv:
                return pv
        return None

    def _await_ar(self, bar: Bar, pivot: Pivot | None, out: list[RawEvent]) -> None:
        p = self.p
        early = bar.i - self.sc_confirm_i <= p.climax_fail_bars
        if bar.c < self.S - (p.climax_fail_atr if early else p.breakdown_atr) * bar.atr:
            self._end("failed", bar, out, "breakdown")
            return
        if pivot is not None and pivot.kind > 0 and pivot.i > self.cl_low_i:
            rally = pivot.price - self.S
            need = max(p.ar_min_atr * bar.atr, p.ar_min_frac_prior * self.prior_move_atr * self.atr_ref)
            if rally >= need:
                w_atr = rally / bar.atr
                if w_atr > p.max_width_atr or w_atr < p.min_width_atr:
                    self._end("failed", bar, out, "too_wide")
                    return
                self.Rz = pivot.price
                self.ar_i = pivot.i
                self.atr_ref = bar.atr
                self.state = St.AWAIT_ST
                out.append(self._event("ar", bar, pivot.i, pivot.t_ms, pivot.price, (("w_atr", w_atr),)))
                return
        if bar.i - self.cl_low_i > p.ar_max_bars:
            self._end("failed", bar, out, "ar_missing")

    def _await_st(self, bar: Bar, pivot: Pivot | None, out: list[RawEvent]) -> None:
        p = self.p
        if bar.c < self.S - p.breakdown_atr * bar.atr:
            self._end("failed", bar, out, "breakdown")
            return
        if bar.c > self.Rz + p.runaway_w * self.W:
            self._end("failed", bar, out, "v_reversal")
            return
        if pivot is None or pivot.i <= self.ar_i:
            return
        if pivot.kind > 0:
            if pivot.price > self.Rz and (pivot.price - self.S) <= p.max_width_atr * bar.atr:
                self.Rz = pivot.price  # a higher high before the ST: the AR was not finished
            return
        if pivot.price < self.S - p.st_below_atr * bar.atr:
            self._end("failed", bar, out, "deep_st")
            return
        if pivot.price <= self.S + p.st_above_w * self.W and pivot.leg_mean_rv <= p.st_max_effort * self.cl_rv:
            self.state = St.B
            self.b_start_i = bar.i
            self.b_min = max(p.b_min_bars, pivot.i - self.cl_low_i)
            self.tests = 1
            self._down_leg(pivot)
            self.atr_ref = bar.atr
            out.append(self._event("st", bar, pivot.i, pivot.t_ms, pivot.price, (
                ("leg_rv", pivot.leg_mean_rv), ("effort_vs_climax", pivot.leg_mean_rv / self.cl_rv))))

    # ------------------------------------------------------------------ phases B and C
    def _down_leg(self, pivot: Pivot) -> None:
        if self.down_n == 0:
            self.down_first = pivot.leg_mean_rv
        self.down_last = pivot.leg_mean_rv
        self.down_sum += pivot.leg_mean_rv
        self.down_n += 1

    def _range(self, bar: Bar, pivot: Pivot | None, out: list[RawEvent]) -> None:
        p = self.p
        matured = bar.i - self.b_start_i >= self.b_min and bar.i - self.cl_low_i >= p.min_range_bars
        # --- bar level: SOS, runaway, UA, probes under support
        if matured and self._is_sos(bar):
            self._sos(bar, out)
            return
        if bar.c > self.Rz + p.runaway_w * self.W:
            self._end("expired", bar, out, "no_sos")
            return
        self._upthrust_after(bar, out)
        if self.state is St.C and self.c_kind != "lpsc":
            if bar.low < self.spring_low - p.test_fail_atr * bar.atr:
                self._end("failed", bar, out, "spring_failed")
                return
        elif self._probe_support(bar, matured, out):
            return
        # --- swing level
        if pivot is None:
            return
        self._effort_vs_result(bar, pivot, out)
        if pivot.kind > 0:
            return
        if self.state is St.B:
            if pivot.price <= self.S + p.test_zone_w * self.W:
                self.tests += 1
            mean_down = self.down_sum / self.down_n if self.down_n else pivot.leg_mean_rv
            hi = self._last_high
            if (matured and self.S + p.lpsc_min_w * self.W <= pivot.price <= self.S + p.lpsc_max_w * self.W
                    and pivot.leg_mean_rv <= p.lpsc_max_effort * mean_down
                    and hi is not None and hi.i > self.b_start_i - 1 and hi.price >= self.S + p.lpsc_prior_high_w * self.W):
                self.state = St.C
                self.c_kind = "lpsc"
                self.spring_low = pivot.price
                self.spring_i = pivot.i
                self.spring_rv = pivot.leg_mean_rv
                out.append(self._event("lpsc", bar, pivot.i, pivot.t_ms, pivot.price, (
                    ("leg_rv", pivot.leg_mean_rv), ("height_w", (pivot.price - self.S) / self.W))))
            self._down_leg(pivot)
            return
        if self.c_kind in ("spring", "shakeout") and not self.tested and pivot.i > self.spring_i:
            if pivot.i - self.spring_i > p.test_max_bars:
                return
            if (pivot.price >= self.spring_low - p.test_under_atr * bar.atr and pivot.price <= self.S + p.test_max_w * self.W
                    and pivot.leg_mean_rv <= max(p.test_max_effort * self.spring_rv, 1.0)):
                self.tested = True
                out.append(self._event("test", bar, pivot.i, pivot.t_ms, pivot.price, (
                    ("leg_rv", pivot.leg_mean_rv), ("spring_rv", self.spring_rv)), self._test_setup(bar, pivot)))

    def _effort_vs_result(self, bar: Bar, pivot: Pivot, out: list[RawEvent]) -> None:
        """Weis-wave check against the previous leg of the same direction inside the range.

        Progress (ATR) down >= 30 % while effort (sum of RV over the leg) up >= 20 %: the move is
        being absorbed. Toward support that is supply absorbed ("absorption", bullish for this
        side); toward resistance, demand absorbed ("no_follow_through").
        """
        progress = abs(pivot.price - pivot.leg_start_price) / bar.atr
        effort = pivot.leg_mean_rv * pivot.leg_bars
        prev = self.prev_leg.get(pivot.kind)
        self.prev_leg[pivot.kind] = (progress, effort)
        if prev is None or prev[0] <= 0 or prev[1] <= 0:
            return
        if progress <= self.p.evr_progress_max * prev[0] and effort >= self.p.evr_effort_min * prev[1]:
            key = "absorption" if pivot.kind < 0 else "no_follow_through"
            if pivot.kind < 0:
                self.absorptions += 1
            out.append(self._event(key, bar, pivot.i, pivot.t_ms, pivot.price, (
                ("progress_ratio", progress / prev[0]), ("effort_ratio", effort / prev[1]))))

    def _probe_support(self, bar: Bar, matured: bool, out: list[RawEvent]) -> bool:
        """Dips under S: ST-in-B, spring, shakeout or breakdown. True when the case ended."""
        p = self.p
        if self.pend_i < 0:
            if bar.low >= self.S - p.spring_min_atr * bar.atr:
                return False
            self.pend_i, self.pend_atr = bar.i, bar.atr
            self.pend_low, self.pend_low_i, self.pend_low_t, self.pend_rv = bar.low, bar.i, bar.t_ms, bar.rv
        else:
            self.pend_rv = max(self.pend_rv, bar.rv)
            if bar.low < self.pend_low:
                self.pend_low, self.pend_low_i, self.pend_low_t = bar.low, bar.i, bar.t_ms
        depth = (self.S - self.pend_low) / self.pend_atr
        if depth > p.shakeout_max_atr:
            self._end("failed", bar, out, "breakdown")
            return True
        waited = bar.i - self.pend_i
        if bar.c >= self.S:
            self.pend_i = -1
            if not matured:
                out.append(self._event("st_b", bar, self.pend_low_i, self.pend_low_t, self.pend_low, (
                    ("depth_atr", depth), ("rv", self.pend_rv))))
                return False
            key = "spring" if depth <= p.spring_max_atr else "shakeout"
            self.state = St.C
            self.c_kind = key
            self.spring_low, self.spring_i, self.spring_rv = self.pend_low, self.pend_low_i, self.pend_rv
            setup = self._spring_setup(bar, depth, waited)
            out.append(self._event(key, bar, self.pend_low_i, self.pend_low_t, self.pend_low, (
                ("depth_atr", depth), ("rv", self.pend_rv), ("reclaim_bars", float(waited))), setup))
            return False
        if waited >= p.reclaim_bars:
            self._end("failed", bar, out, "breakdown")
            return True
        return False

    def _upthrust_after(self, bar: Bar, out: list[RawEvent]) -> None:
        """UA: a poke above Rz + 0.1 ATR that closes back under Rz within 2 bars."""
        p = self.p
        if self.ua_i < 0:
            if bar.h > self.Rz + p.ua_atr * bar.atr:
                self.ua_i, self.ua_high, self.ua_high_i, self.ua_high_t = bar.i, bar.h, bar.i, bar.t_ms
            else:
                return
        elif bar.h > self.ua_high:
            self.ua_high, self.ua_high_i, self.ua_high_t = bar.h, bar.i, bar.t_ms
        if bar.c < self.Rz:
            out.append(self._event("ua", bar, self.ua_high_i, self.ua_high_t, self.ua_high))
            self.ua_i = -1
        elif bar.i - self.ua_i >= p.ua_fail_bars:
            self.ua_i = -1

    def _is_sos(self, bar: Bar) -> bool:
        p = self.p
        return (bar.c > self.Rz + p.sos_break_atr * bar.atr and bar.rv >= p.sos_min_rv
                and bar.rstar >= p.sos_min_rstar and bar.cp >= p.sos_min_cp)

    # ------------------------------------------------------------------ phase D
    def _sos(self, bar: Bar, out: list[RawEvent]) -> None:
        setup = self._sos_setup(bar)
        self.state = St.D
        self.sos_i = bar.i
        self.sos_leg_high = None
        self.pend_i = -1
        self.ua_i = -1
        out.append(self._event("sos", bar, bar.i, bar.t_ms, bar.c, (
            ("rv", bar.rv), ("rstar", bar.rstar), ("cp", bar.cp)), setup))

    def _phase_d(self, bar: Bar, pivot: Pivot | None, out: list[RawEvent]) -> None:
        p = self.p
        if bar.i - self.sos_i > p.d_max_bars:
            self._end("expired", bar, out, "timeout")
            return
        if self.state is St.LPS_DONE:
            if self.sos_leg_high is not None and bar.c > self.sos_leg_high:
                self._end("markup", bar, out, "markup")
            elif bar.c < self.lps_low - p.stop_buffer_atr * bar.atr:
                self._end("failed", bar, out, "lps_failed")
            return
        early = bar.i - self.sos_i <= p.sos_fail_bars
        if (early and bar.c < self.Rz - p.sos_fail_atr * bar.atr) or bar.c < self.S + p.lps_min_w * self.W:
            out.append(self._event("failed_sos", bar, bar.i, bar.t_ms, bar.c))
            self.state = St.B
            return
        if bar.c > self.Rz + p.markup_w * self.W:
            self._end("markup", bar, out, "markup")
            return
        if pivot is None:
            return
        if pivot.kind > 0:
            if pivot.i >= self.sos_i and (self.sos_leg_high is None or pivot.price > self.sos_leg_high):
                if self.sos_leg_high is None:
                    self.sos_leg_start = pivot.leg_start_price
                    self.sos_leg_rv = pivot.leg_mean_rv
                self.sos_leg_high = pivot.price
            return
        if self.sos_leg_high is None:
            return
        leg = self.sos_leg_high - self.sos_leg_start
        retrace = (self.sos_leg_high - pivot.price) / leg if leg > 0 else 1.0
        if (pivot.price >= self.S + p.lps_min_w * self.W and retrace <= p.lps_max_retrace
                and pivot.leg_mean_rv <= p.lps_max_effort * self.sos_leg_rv):
            key = "bu" if pivot.price >= self.Rz - p.lps_bu_atr * bar.atr else "lps"
            setup = self._lps_setup(bar, pivot, retrace)
            self.lps_low = pivot.price
            self.state = St.LPS_DONE
            out.append(self._event(key, bar, pivot.i, pivot.t_ms, pivot.price, (
                ("retrace", retrace), ("leg_rv", pivot.leg_mean_rv), ("sos_leg_rv", self.sos_leg_rv)), setup))

    # ------------------------------------------------------------------ setups and scores
    def _common(self, bar: Bar) -> dict[str, float]:
        w_atr = self.W / bar.atr
        drying = ramp(self.down_last / self.down_first, 1.3, 0.8) if self.down_n >= 2 and self.down_first > 0 else 0.5
        return {
            "climax": 0.5 * ramp(self.cl_rv, 2.0, 4.0) + 0.5 * ramp(self.cl_range_atr, 2.0, 4.0),
            "range": 0.5 * band(w_atr, 2.0, 3.0, 12.0, 16.0) + 0.5 * ramp(float(self.tests), 0.0, 2.0),
            "supply_drying": drying,
            "context": ramp(self.prior_move_atr, 4.0, 10.0),
        }

    def _make(self, key: str, bar: Bar, stop: float, targets: tuple[float, ...], mu: dict[str, float],
              extra: tuple[tuple[str, float], ...]) -> Setup:
        entry = bar.c
        stop = min(stop, entry - 1e-9 * max(1.0, abs(entry)))
        risk = entry - stop
        tps = tuple(t for t in targets if t > entry + 0.1 * risk)
        if not tps:
            tps = (entry + 2.0 * risk,)
        raw = score(key, mu)
        feats = (("w_atr", self.W / bar.atr), ("rv", bar.rv), ("cp", bar.cp), ("absorptions", float(self.absorptions)), *extra,
                 *((f"mu_{k}", v) for k, v in sorted(mu.items())))
        return Setup(key, entry, stop, tps, raw, tuple(sorted(mu.items())), feats)

    def _spring_setup(self, bar: Bar, depth: float, waited: int) -> Setup:
        p = self.p
        mu = self._common(bar)
        reclaim = 1.0 if waited <= 1 else max(0.5, 1.0 - 0.25 * (waited - 1))
        self.spring_geometry = band(depth, 0.0, p.spring_min_atr, 1.0, 2.5) * reclaim
        stop = self.pend_low - p.stop_buffer_atr * bar.atr
        rv = self.pend_rv
        mu["geometry"] = self.spring_geometry
        mu["effort"] = 1.0 if rv < p.light_rv else (0.6 if rv <= p.heavy_rv else 0.25)
        mu["bar"] = ramp(bar.cp, 0.4, 0.8)
        rr = (self.Rz - bar.c) / max(1e-12, bar.c - stop)
        mu["room"] = ramp(rr, 0.5, 1.5)
        return self._make("spring", bar, stop, (self.Rz, self.Rz + self.W), mu,
                          (("depth_atr", depth), ("spring_rv", rv), ("reclaim_bars", float(waited))))

    def _test_setup(self, bar: Bar, pivot: Pivot) -> Setup:
        p = self.p
        mu = self._common(bar)
        stop = min(pivot.price, self.spring_low) - p.stop_buffer_atr * bar.atr
        ratio = pivot.leg_mean_rv / max(1e-12, self.spring_rv)
        mu["spring"] = self.spring_geometry if self.c_kind == "spring" else 0.5 * self.spring_geometry
        mu["geometry"] = ramp(pivot.price - self.spring_low, -p.test_under_atr * bar.atr, 0.2 * bar.atr)
        mu["effort"] = ramp(ratio, 1.0, 0.5)
        rr = (self.Rz - bar.c) / max(1e-12, bar.c - stop)
        mu["room"] = ramp(rr, 0.5, 1.5)
        return self._make("test", bar, stop, (self.Rz, self.Rz + self.W), mu,
                          (("test_effort_ratio", ratio), ("bars_after_spring", float(pivot.i - self.spring_i))))

    def _phase_c_quality(self) -> float:
        if self.c_kind in ("spring", "shakeout"):
            return 1.0 if self.tested else 0.85
        return 0.85 if self.c_kind == "lpsc" else 0.4

    def _sos_setup(self, bar: Bar) -> Setup:
        p = self.p
        mu = self._common(bar)
        mu["phase_c"] = self._phase_c_quality()
        mu["breakout"] = ramp((bar.c - self.Rz) / bar.atr, p.sos_break_atr, 1.0)
        mu["effort"] = ramp(bar.rv, p.sos_min_rv, 3.0)
        mu["bar"] = 0.5 * ramp(bar.cp, p.sos_min_cp, 0.9) + 0.5 * ramp(bar.rstar, p.sos_min_rstar, 2.5)
        self.sos_quality = 0.5 * mu["breakout"] + 0.5 * mu["effort"]
        stop = self.Rz - p.sos_stop_atr * bar.atr
        return self._make("sos", bar, stop, (self.Rz + self.W, self.Rz + 2.0 * self.W), mu,
                          (("breakout_atr", (bar.c - self.Rz) / bar.atr), ("rstar", bar.rstar)))

    def _lps_setup(self, bar: Bar, pivot: Pivot, retrace: float) -> Setup:
        p = self.p
        mu = self._common(bar)
        ratio = pivot.leg_mean_rv / max(1e-12, self.sos_leg_rv)
        stop = pivot.price - p.stop_buffer_atr * bar.atr
        mu["phase_c"] = self._phase_c_quality()
        mu["sos"] = self.sos_quality
        mu["depth"] = ramp(retrace, p.lps_max_retrace, 0.3)
        mu["effort"] = ramp(ratio, p.lps_max_effort, 0.4)
        target = self.Rz + self.W
        rr = (target - bar.c) / max(1e-12, bar.c - stop)
        mu["room"] = ramp(rr, 1.0, 2.5)
        return self._make("lps", bar, stop, (target, self.Rz + 2.0 * self.W), mu,
                          (("retrace", retrace), ("lps_effort_ratio", ratio)))
