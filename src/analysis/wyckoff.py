"""Wyckoff analyzer: trading ranges, accumulation/distribution events, phases A-E, tradeable setups.

Per closed candle (amortised O(1)):

1. Features on log prices: Wilder ATR(14) of the previous bar, RV = volume / median of the
   previous 50 volumes, bar range / ATR, close position.
2. Two copies of one state machine (:mod:`src.analysis.wyckoff_fsm`): the accumulation tracker
   sees log prices, the distribution tracker sees negated log prices. Distribution is therefore
   the exact mirror of accumulation (BC <-> SC, UTAD <-> spring, SOW <-> SOS, LPSY <-> LPS) and
   every rule is stated once, in the FSM docstring, with its numbers.
3. Tradeable events become :class:`SignalCandidate` objects timestamped on the confirming candle:

   ============================  ==========  ===========================================
   pattern                       direction   confirming candle
   ============================  ==========  ===========================================
   wyckoff_spring / _utad        LONG/SHORT  the reclaim close back inside the range
   wyckoff_test / _utad_test     LONG/SHORT  the bar confirming the test's swing pivot
   wyckoff_sos / _sow            LONG/SHORT  the breakout bar
   wyckoff_lps / _lpsy           LONG/SHORT  the bar confirming the LPS/BU (LPSY) pivot
   ============================  ==========  ===========================================

   entry = that candle's close; stop = the invalidation level (spring/test/LPS low - 0.25 ATR,
   SOS: resistance - 1 ATR; mirrored for shorts); targets = range-height projections (spring and
   test: resistance, then resistance + W; SOS and LPS: resistance + W, + 2 W); raw_score = the
   weighted geometric mean of :data:`src.analysis.wyckoff_scoring.WEIGHTS`.

Every recognised event (including failures, re-anchors and expiries) is also an
:class:`AnalysisEvent` of kind ``wyckoff_event`` with the event bar's and the recognition bar's
open times. The analyzer reads only the candle it is given and its own state: no lookahead.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque

from src.analysis.engine import AnalyzerOutput
from src.analysis.indicators import WilderATR, close_position
from src.analysis.types import AnalysisEvent, AnalyzerState, Candle, Direction, SignalCandidate, ms_to_iso
from src.analysis.wyckoff_features import Bar, RollingMedian
from src.analysis.wyckoff_fsm import RawEvent, Setup, SideTracker, St
from src.analysis.wyckoff_params import WyckoffParams
from src.analysis.wyckoff_scoring import WEIGHTS

SIDES = ("accumulation", "distribution")
# oriented event key -> (accumulation name, distribution name)
EVENT_TYPES: dict[str, tuple[str, str]] = {
    "ps": ("ps", "psy"), "sc": ("sc", "bc"), "ar": ("ar", "ar"), "st": ("st", "st"), "ua": ("ua", "msow"),
    "st_b": ("st_b", "ut"), "spring": ("spring", "utad"), "shakeout": ("shakeout", "utad"),
    "test": ("test", "utad_test"), "lpsc": ("lps_c", "lpsy_c"), "sos": ("sos", "sow"),
    "failed_sos": ("failed_sos", "failed_sow"), "bu": ("bu", "lpsy"), "lps": ("lps", "lpsy"),
    "markup": ("markup", "markdown"), "failed": ("failed", "failed"), "expired": ("expired", "expired"),
    "reanchor": ("reanchor", "reanchor"), "absorption": ("absorption", "absorption"),
    "no_follow_through": ("no_follow_through", "no_follow_through"),
}
# setup key -> (LONG pattern, SHORT pattern)
PATTERNS: dict[str, tuple[str, str]] = {
    "spring": ("wyckoff_spring", "wyckoff_utad"),
    "test": ("wyckoff_test", "wyckoff_utad_test"),
    "sos": ("wyckoff_sos", "wyckoff_sow"),
    "lps": ("wyckoff_lps", "wyckoff_lpsy"),
}
ALL_PATTERNS: tuple[str, ...] = tuple(name for pair in PATTERNS.values() for name in pair)
LABELS: dict[str, str] = {
    "spring": "Spring", "shakeout": "Shakeout", "test": "Test", "utad_test": "UTAD test", "lps_c": "LPS (phase C)",
    "lpsy_c": "LPSY (phase C)", "st_b": "ST in phase B", "failed_sos": "failed SOS", "failed_sow": "failed SOW",
    "msow": "minor SOW", "markup": "markup", "markdown": "markdown", "failed": "failed", "expired": "expired",
    "reanchor": "re-anchor", "absorption": "absorption", "no_follow_through": "no follow-through",
}
_REASONS = {1.0: "breakdown", 2.0: "timeout", 3.0: "v_reversal", 4.0: "left range without SOS", 5.0: "range too wide",
            6.0: "spring failed", 7.0: "LPS failed", 8.0: "no automatic rally", 9.0: "ST too deep", 10.0: "markup"}


def label(event_type: str) -> str:
    return LABELS.get(event_type, event_type.upper())


def _fmt(x: float) -> str:
    return f"{x:.6g}"


class WyckoffAnalyzer:
    """The ``wyckoff`` analyzer for one (symbol, timeframe); see the module docstring."""

    name = "wyckoff"

    def __init__(self, symbol: str, timeframe: str, params: WyckoffParams | None = None) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.params = params or WyckoffParams.for_timeframe(timeframe)
        p = self.params
        self._atr = WilderATR(p.atr_period)
        self._vol = RollingMedian(p.volume_window)
        self._sides = (SideTracker(p), SideTracker(p))
        self._i = 0
        self._recent: deque[AnalysisEvent] = deque(maxlen=8)
        self.skipped = 0  # candles with non-finite or non-positive prices (never analysed)

    def params_fingerprint(self) -> str:
        """Every parameter and every evidence weight (a re-weighted score is a different signal)."""
        blob = json.dumps({"params": self.params.fingerprint(), "weights": WEIGHTS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ per candle
    def on_candle(self, candle: Candle) -> AnalyzerOutput:
        o, h, low, c = candle.open, candle.high, candle.low, candle.close
        # NaN fails every comparison; the sum is finite only when every price is
        if not (o > 0 and h > 0 and low > 0 and c > 0 and math.isfinite(o + h + low + c) and math.isfinite(candle.volume)):
            self.skipped += 1
            return AnalyzerOutput()
        lo, lh, ll, lc = math.log(o), math.log(h), math.log(low), math.log(c)
        atr_prev = self._atr.value or 0.0
        self._atr.update(lh, ll, lc)
        med = self._vol.median
        vol = max(0.0, candle.volume)
        if med is None:
            rv = 1.0
        elif med > 0:
            rv = vol / med
        else:
            rv = 1.0 if vol == 0 else 10.0
        self._vol.push(vol)
        rstar = (lh - ll) / atr_prev if atr_prev > 0 else 0.0
        cp = close_position(lh, ll, lc)
        i, t = self._i, candle.open_time_ms
        self._i += 1
        bars = (Bar(i, t, lo, lh, ll, lc, atr_prev, rv, rstar, cp),
                Bar(i, t, -lo, -ll, -lh, -lc, atr_prev, rv, rstar, 1.0 - cp))
        out = AnalyzerOutput()
        for side, (tracker, bar) in enumerate(zip(self._sides, bars, strict=True)):
            for raw in tracker.update(bar):
                event = self._to_event(side, tracker, raw)
                out.events.append(event)
                self._recent.append(event)
                if raw.setup is not None:
                    out.candidates.append(self._to_candidate(side, tracker, raw, raw.setup, candle))
        return out

    # ------------------------------------------------------------------ conversion to real prices
    @staticmethod
    def _px(side: int, x: float) -> float:
        return math.exp(x if side == 0 else -x)

    def _range_px(self, side: int, s_or: float, rz_or: float) -> tuple[float, float]:
        """Oriented (S, Rz) -> real (support, resistance)."""
        a, b = self._px(side, s_or), self._px(side, rz_or)
        return (a, b) if side == 0 else (b, a)

    def _levels(self, side: int, tracker: SideTracker) -> tuple[float, float]:
        """(support, resistance) of ``tracker``'s current range in real prices."""
        return self._range_px(side, tracker.S, tracker.Rz)

    def _to_event(self, side: int, tracker: SideTracker, raw: RawEvent) -> AnalysisEvent:
        etype = EVENT_TYPES[raw.key][side]
        details: list[tuple[str, str]] = [("side", SIDES[side])]
        if raw.range_levels is not None:
            sup, res = self._range_px(side, *raw.range_levels)
            details += [("support", _fmt(sup)), ("resistance", _fmt(res))]
        for k, v in raw.details:
            if k == "reason_code":
                details.append(("reason", _REASONS.get(v, "?")))
            else:
                details.append((k, f"{v:.4g}"))
        return AnalysisEvent(
            kind="wyckoff_event", type=etype, symbol=self.symbol, timeframe=self.timeframe,
            candle_time_ms=raw.event_t, recognised_ms=raw.recog_t, price=self._px(side, raw.price),
            phase=raw.phase, details=tuple(details),
        )

    def _to_candidate(self, side: int, tracker: SideTracker, raw: RawEvent, setup: Setup, candle: Candle) -> SignalCandidate:
        direction: Direction = "LONG" if side == 0 else "SHORT"
        pattern = PATTERNS[setup.key][side]
        sup, res = self._levels(side, tracker)
        chain = [f"{label(EVENT_TYPES[k][side])} {ms_to_iso(t)[:16].replace('T', ' ')} at {_fmt(self._px(side, x))}"
                 for k, t, x in raw.chain]
        stop = self._px(side, setup.stop)
        targets = tuple(self._px(side, x) for x in setup.targets)
        evidence = ", ".join(f"{k} {v:.2f}" for k, v in setup.memberships)
        reasons = (
            f"{SIDES[side].capitalize()} range {_fmt(sup)} - {_fmt(res)}, phase {raw.phase}",
            "Events: " + "; ".join(chain),
            f"{label(EVENT_TYPES[raw.key][side])} confirmed by the close {_fmt(candle.close)}; invalid beyond {_fmt(stop)}",
            f"Evidence: {evidence}",
        )
        return SignalCandidate(
            analyzer=self.name, pattern=pattern, direction=direction, raw_score=round(setup.raw_score, 6),
            entry=candle.close, stop_loss=stop, take_profits=targets, reasons=reasons,
            features=tuple((k, round(v, 6)) for k, v in setup.features),
            structure=f"wyckoff:{SIDES[side]}:{tracker.cl_low_t}",
        )

    # ------------------------------------------------------------------ snapshot
    def state(self) -> AnalyzerState:
        order = {"": 0, "A": 1, "B": 2, "C": 3, "D": 4}
        best = max((0, 1), key=lambda s: (order[self._sides[s].phase], -s))
        tracker = self._sides[best]
        lines = tuple(
            f"{label(e.type)} ({e.phase or '-'}) {ms_to_iso(e.candle_time_ms)[:16].replace('T', ' ')} at {_fmt(e.price)}"
            for e in list(self._recent)[-6:]
        )
        levels: list[tuple[str, float]] = []
        for s, tr in enumerate(self._sides):
            if tr.state in (St.IDLE, St.SC_PENDING, St.AWAIT_AR):
                continue
            sup, res = self._levels(s, tr)
            levels += [(f"{SIDES[s]} support", sup), (f"{SIDES[s]} resistance", res)]
        if tracker.phase == "":
            summary = "No Wyckoff range in progress"
        elif tracker.state in (St.SC_PENDING, St.AWAIT_AR):
            summary = f"{SIDES[best].capitalize()}?, phase A (climax at {_fmt(self._px(best, tracker.cl_low))})"
        else:
            sup, res = self._levels(best, tracker)
            summary = f"{SIDES[best].capitalize()}, phase {tracker.phase} (range {_fmt(sup)} - {_fmt(res)})"
        return AnalyzerState(analyzer=self.name, summary=summary, lines=lines, levels=tuple(levels))
