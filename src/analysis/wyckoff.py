"""Wyckoff analyzer: trading ranges, accumulation/distribution events, phases A-E, tradeable setups.

Per closed candle (amortised O(1)):

1. Features on log prices: Wilder ATR(14) of the previous bar, RV = volume / median of the
   previous 50 volumes, bar range / ATR, close position.
2. Two copies of one candidate-range tracker (:mod:`src.analysis.wyckoff_ranges`): the accumulation
   tracker sees log prices, the distribution tracker sees negated log prices. Distribution is
   therefore the exact mirror of accumulation (BC <-> SC, UTAD <-> spring, SOW <-> SOS, LPSY <-> LPS)
   and every rule is stated once, in that module's docstring, with its numbers. Each tracker keeps up
   to 3 candidate ranges alive; when several ranges see the same setup on one candle, only the best
   scored candidate is proposed (one per pattern, side and candle), and each candidate names its range
   in ``structure`` (``wyckoff:<side>:<open time of the range's first pivot>``), the same for every
   candidate of that range.
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
from src.analysis.indicators import WilderATR
from src.analysis.types import AnalysisEvent, AnalyzerState, Candle, Direction, SignalCandidate, ms_to_iso
from src.analysis.wyckoff_features import Bar, RollingMedian, Swings, mirrored
from src.analysis.wyckoff_params import WyckoffParams
from src.analysis.wyckoff_ranges import RawEvent, SideTracker
from src.analysis.wyckoff_scoring import SHARPNESS, WEIGHTS

SIDES = ("accumulation", "distribution")
# bumped whenever a rule changes in code without a parameter changing (part of the fingerprint, so an evidence
# model fitted on other rules is reported stale); 2 = round 2 of issue 12 (rules F1, F3, F4, R1)
RULES_VERSION = 2
# entries per text memo of a stream, oldest out first: a range's candidates repeat its chain and levels, and an
# older range's texts are not asked for again (30,000 1m candles: 7,004 chain formats at 32, 6,038 at 4,096).
# It was 4,096 with clear-all: a live 1m stream's engine grew by ~1.7 MB in a month (stream_memory.py --long)
MEMO_SIZE = 32
# oriented event key -> (accumulation name, distribution name)
EVENT_TYPES: dict[str, tuple[str, str]] = {
    "ps": ("ps", "psy"), "sc": ("sc", "bc"), "ar": ("ar", "ar"), "st": ("st", "st"), "ua": ("ua", "msow"),
    "st_b": ("st_b", "ut"), "spring": ("spring", "utad"), "shakeout": ("shakeout", "utad"),
    "test": ("test", "utad_test"), "lpsc": ("lps_c", "lpsy_c"), "sos": ("sos", "sow"),
    "failed_sos": ("failed_sos", "failed_sow"), "bu": ("bu", "lpsy"), "lps": ("lps", "lpsy"),
    "markup": ("markup", "markdown"), "failed": ("failed", "failed"), "expired": ("expired", "expired"),
    "reanchor": ("reanchor", "reanchor"), "absorption": ("absorption", "absorption"), "tr": ("tr", "tr"),
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
    "tr": "TR (range from swings)",
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
        self._swings = Swings(p.swing_k_atr)  # one zigzag (accumulation orientation); mirrored for distribution
        self._sides = (SideTracker(p), SideTracker(p))
        self._sides[0].other, self._sides[1].other = self._sides[1], self._sides[0]
        self._i = 0
        self._recent: deque[AnalysisEvent] = deque(maxlen=8)
        self.skipped = 0  # candles with non-finite or non-positive prices (never analysed)
        self._chain_memo: dict[tuple[int, str, int, float], str] = {}
        self._levels_memo: dict[tuple[int, tuple[float, float]], list[tuple[str, str]]] = {}

    def params_fingerprint(self) -> str:
        """Every parameter and every evidence weight (a re-weighted score is a different signal)."""
        blob = json.dumps({"params": self.params.fingerprint(), "weights": WEIGHTS, "sharpness": SHARPNESS,
                           "rules": RULES_VERSION}, sort_keys=True)
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
        spread = lh - ll
        cp = min(1.0, max(0.0, (lc - ll) / spread)) if spread > 0 else 0.5  # close_position, inlined (hot path)
        i, t = self._i, candle.open_time_ms
        self._i += 1
        bars = (Bar(i, t, lo, lh, ll, lc, atr_prev, rv, rstar, cp),
                Bar(i, t, -lo, -ll, -lh, -lc, atr_prev, rv, rstar, 1.0 - cp))
        out = AnalyzerOutput()
        acc, dist = self._sides
        pivot = self._swings.update(bars[0])
        found = (acc.update(bars[0], pivot), dist.update(bars[1], mirrored(pivot) if pivot is not None else None))
        for side, raws in enumerate(found):
            if not raws:
                continue
            seen: set[tuple[str, int]] = set()
            best: dict[str, RawEvent] = {}
            for raw in raws:
                if raw.setup is not None:
                    # several ranges may see one setup: propose the best-scored one (ties: the older range)
                    kept = best.get(raw.setup.key)
                    if kept is None or kept.setup is None or raw.setup.raw_score > kept.setup.raw_score:
                        best[raw.setup.key] = raw
                    continue
                if (raw.key, raw.event_i) in seen:
                    continue  # the same event seen by two ranges is reported once
                seen.add((raw.key, raw.event_i))
                self._emit(out, side, raw)
            for raw in best.values():
                self._emit(out, side, raw)
                if raw.setup is not None:
                    out.candidates.append(self._to_candidate(side, raw, candle))
        if acc.dirty:
            acc.publish()
        if dist.dirty:
            dist.publish()
        return out

    def _emit(self, out: AnalyzerOutput, side: int, raw: RawEvent) -> None:
        event = self._to_event(side, raw)
        out.events.append(event)
        self._recent.append(event)

    # ------------------------------------------------------------------ conversion to real prices
    @staticmethod
    def _px(side: int, x: float) -> float:
        return math.exp(x if side == 0 else -x)

    def _range_px(self, side: int, s_or: float, rz_or: float) -> tuple[float, float]:
        """Oriented (S, Rz) -> real (support, resistance)."""
        a, b = self._px(side, s_or), self._px(side, rz_or)
        return (a, b) if side == 0 else (b, a)

    def _to_event(self, side: int, raw: RawEvent) -> AnalysisEvent:
        etype = EVENT_TYPES[raw.key][side]
        details: list[tuple[str, str]] = [("side", SIDES[side])]
        if raw.range_levels is not None:
            details += self._levels_text(side, raw.range_levels)
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

    def _levels_text(self, side: int, levels: tuple[float, float]) -> list[tuple[str, str]]:
        """("support", ...), ("resistance", ...) of an oriented (S, Rz), memoised (a range's events repeat them)."""
        memo = self._levels_memo
        text = memo.get((side, levels))
        if text is None:
            if len(memo) >= MEMO_SIZE:
                del memo[next(iter(memo))]
            sup, res = self._range_px(side, *levels)
            text = memo[(side, levels)] = [("support", _fmt(sup)), ("resistance", _fmt(res))]
        return text

    def _chain_text(self, side: int, key: str, t_ms: int, x: float) -> str:
        """One event of a candidate's chain as text, e.g. "SC 2024-08-05 00:00 at 49000" (memoised: the
        candidates of one range repeat the same chain, and formatting dates is slow)."""
        memo = self._chain_memo
        text = memo.get((side, key, t_ms, x))
        if text is None:
            if len(memo) >= MEMO_SIZE:
                del memo[next(iter(memo))]
            text = f"{label(EVENT_TYPES[key][side])} {ms_to_iso(t_ms)[:16].replace('T', ' ')} at {_fmt(self._px(side, x))}"
            memo[(side, key, t_ms, x)] = text
        return text

    def _to_candidate(self, side: int, raw: RawEvent, candle: Candle) -> SignalCandidate:
        setup = raw.setup
        assert setup is not None
        direction: Direction = "LONG" if side == 0 else "SHORT"
        pattern = PATTERNS[setup.key][side]
        sup, res = self._range_px(side, *raw.range_levels) if raw.range_levels is not None else (0.0, 0.0)
        chain = [self._chain_text(side, k, t, x) for k, t, x in raw.chain]
        stop = self._px(side, setup.stop)
        # list comprehensions, not generators: mypyc compiles them to plain loops (a generator is an object)
        targets = tuple([self._px(side, x) for x in setup.targets])
        evidence = ", ".join([f"{k} {v:.2f}" for k, v in setup.memberships])
        reasons = (
            f"{SIDES[side].capitalize()} range {_fmt(sup)} - {_fmt(res)}, phase {raw.phase}",
            "Events: " + "; ".join(chain),
            f"{label(EVENT_TYPES[raw.key][side])} confirmed by the close {_fmt(candle.close)}; invalid beyond {_fmt(stop)}",
            f"Evidence: {evidence}",
        )
        return SignalCandidate(
            analyzer=self.name, pattern=pattern, direction=direction, raw_score=round(setup.raw_score, 6),
            entry=candle.close, stop_loss=stop, take_profits=targets, reasons=reasons,
            features=tuple([(k, round(v, 6)) for k, v in setup.features]),
            structure=f"wyckoff:{SIDES[side]}:{raw.range_t}",
        )

    # ------------------------------------------------------------------ snapshot
    def state(self) -> AnalyzerState:
        order = {"B": 1, "C": 2, "D": 3}
        bests = [t.best() for t in self._sides]
        lines = tuple(
            f"{label(e.type)} ({e.phase or '-'}) {ms_to_iso(e.candle_time_ms)[:16].replace('T', ' ')} at {_fmt(e.price)}"
            for e in list(self._recent)[-6:]
        )
        levels: list[tuple[str, float]] = []
        for s, r in enumerate(bests):
            if r is not None:
                sup, res = self._range_px(s, r.S, r.Rz)
                levels += [(f"{SIDES[s]} support", sup), (f"{SIDES[s]} resistance", res)]
        live = [(order[r.phase], -s, s) for s, r in enumerate(bests) if r is not None]
        if not live:
            return AnalyzerState(analyzer=self.name, summary="No Wyckoff range in progress", lines=lines, levels=())
        s = max(live)[2]
        r = bests[s]
        assert r is not None
        sup, res = self._range_px(s, r.S, r.Rz)
        summary = f"{SIDES[s].capitalize()}, phase {r.phase} (range {_fmt(sup)} - {_fmt(res)})"
        return AnalyzerState(analyzer=self.name, summary=summary, lines=lines, levels=tuple(levels))
