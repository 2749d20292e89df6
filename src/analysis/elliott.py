"""Elliott-wave analyzer: pivot-driven candidate counts, hard-rule gates, guideline scores, signals.

Per closed candle (amortised O(D x K), D zigzag degrees, K <= 9 live counts per degree):

1. The :class:`~src.analysis.pivots.PivotEngine` confirms pivots (default 2 and 4 x ATR(14), log
   prices). Each confirmed pivot is reported as an AnalysisEvent(kind="pivot").
2. On a confirmed pivot of degree d the counts of that degree are rebuilt from windows of the last
   2-6 consecutive pivots (elliott_counts): impulse prefixes, diagonals (wave 4 overlapping wave 1),
   zigzag and flat A-B-C corrections. Counts that fail a hard rule are never created.
3. Every bar, live counts whose invalidation price is traded through die (O(K) comparisons).
4. The best live count over all degrees (stage >= 2) is the LEADING count; each change of it is an
   AnalysisEvent(kind="elliott_count"). Alternatives are ranked by score.

Signals (SignalCandidates), all timestamped on the candle that confirmed the last pivot, entry at
that candle's close:

- ``elliott_wave3``: a valid 0-1-2 (wave 2 confirmed). Stop = wave-1 origin (rule I1);
  targets = P2 + 1.618 x L1 and P2 + 2.618 x L1 (lengths in the engine's price space, log by default).
- ``elliott_wave5``: a valid 0-1-2-3-4 impulse (wave 4 confirmed, no overlap). Stop = wave-1 end
  (rule I4); targets = P4 + 0.618 x L1 and P4 + 1.0 x L1 (capped at P4 + L3 when L3 < L1, rule I3).
- ``elliott_abc``: a complete zigzag or flat (C confirmed); trade in the direction of the larger
  trend. Stop = C extreme -/+ 0.15 ATR; targets = C + 1.0 x A and C + 1.618 x A.

Both directions (LONG for an up wave 1 / a down correction, SHORT mirrored). When several degrees
fire the same pattern and direction on one candle, the highest score is kept. Every candidate names its
structure (:func:`structure_key`: family, direction and origin pivot, independent of the degree), so the
gate gives one count found at several degrees one signal. A setup whose entry
is already beyond its stop or first target is skipped and counted in ``skipped_setups``; a candle
that fails ``Candle.validate`` (NaN, non-positive, high < low) is skipped and counted in
``invalid_candles``.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from src.analysis import elliott_counts as ec
from src.analysis.elliott_counts import Count
from src.analysis.engine import AnalyzerOutput
from src.analysis.pickling import register_frozen
from src.analysis.pivots import Pivot, PivotEngine, ThresholdMode
from src.analysis.types import (
    AnalysisEvent,
    AnalyzerState,
    Candle,
    Direction,
    InvalidCandle,
    SignalCandidate,
    ms_to_iso,
)

NAME = "elliott"


def _default_weights() -> dict[str, dict[str, float]]:
    return {k: dict(v) for k, v in ec.DEFAULT_WEIGHTS.items()}


@dataclass(frozen=True)
class ElliottParams:
    """Every knob of the analyzer (all enter ``params_fingerprint``).

    thresholds: zigzag reversal per degree (ATR multiples, or fractions in "pct" mode).
    wave4_overlap_atr: tolerated wave-4 overlap into wave 1 in ATRs (0 = strict rule I4).
    history: confirmed pivots kept per degree. completed_memory: complete impulses remembered per
    degree (context for elliott_abc). *_targets: multiples of the reference wave (see module doc).
    abc_stop_buffer_atr: stop beyond the C extreme, in ATRs. weights: evidence weights (elliott_counts).
    """

    thresholds: tuple[float, ...] = (2.0, 3.0, 4.5, 6.75)
    threshold_mode: ThresholdMode = "atr"
    atr_period: int = 14
    log_prices: bool = True
    wave4_overlap_atr: float = 0.0
    history: int = 32
    completed_memory: int = 8
    wave3_targets: tuple[float, ...] = (1.618, 2.618)
    wave5_targets: tuple[float, ...] = (0.618, 1.0)
    abc_targets: tuple[float, ...] = (1.0, 1.618)
    abc_stop_buffer_atr: float = 0.15
    weights: Mapping[str, Mapping[str, float]] = field(default_factory=_default_weights)

    def fingerprint(self) -> str:
        d = asdict(self)
        d["weights"] = {k: dict(sorted(v.items())) for k, v in sorted(self.weights.items())}
        return json.dumps(d, sort_keys=True, separators=(",", ":"))


_DEFAULT_PARAMS = ElliottParams()


@dataclass(slots=True)
class _DegreeState:
    """The live counts of one degree and the complete impulses remembered for corrections.

    ``below``/``above`` are the tightest invalidation prices over ``counts`` (the highest "below", the lowest
    "above"; -inf/+inf without one): a bar with low >= below and high <= above kills no count, so the
    per-bar check is two comparisons and the counts are scanned only on a bar that kills one."""

    counts: list[Count] = field(default_factory=list)
    completed: deque[Count] = field(default_factory=lambda: deque(maxlen=8))
    below: float = -math.inf
    above: float = math.inf

    def set_counts(self, counts: list[Count]) -> None:
        self.counts = counts
        below, above = -math.inf, math.inf
        for c in counts:
            for price, side in c.invalidations:
                # comparisons as in _violated (a NaN price never triggers there, and is never kept here)
                if side == "below":
                    if price > below:
                        below = price
                elif side == "above" and price < above:
                    above = price
        self.below, self.above = below, above


class ElliottAnalyzer:
    """Streaming Elliott analyzer for one (symbol, timeframe); implements the Analyzer protocol."""

    name = NAME

    def __init__(self, symbol: str, timeframe: str, params: ElliottParams | None = None) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.params = params or _DEFAULT_PARAMS  # one shared, immutable default: no per-stream weight tables
        p = self.params
        self.pivots = PivotEngine(p.thresholds, p.threshold_mode, p.atr_period, p.log_prices, p.history)
        self._deg = [_DegreeState(completed=deque(maxlen=p.completed_memory)) for _ in p.thresholds]
        self._leader: Count | None = None
        self._counts_changed = False  # the live counts changed since the leader was chosen
        self._last_candle: Candle | None = None
        self.skipped_setups = 0
        self.invalid_candles = 0

    # ---- Analyzer protocol ---------------------------------------------------------------

    def params_fingerprint(self) -> str:
        return self.params.fingerprint()

    def on_candle(self, candle: Candle) -> AnalyzerOutput:
        out = AnalyzerOutput()
        try:
            candle.validate()
        except InvalidCandle:
            # log(0) or a NaN would poison the zigzag for good: skip the bar and count it
            self.invalid_candles += 1
            return out
        self._last_candle = candle
        new_pivots = self.pivots.update(candle)
        atr = self.pivots.atr_prev or self.pivots.atr or 0.0
        best: dict[tuple[str, str], SignalCandidate] = {}
        for pivot in new_pivots:
            out.events.append(self._pivot_event(pivot, candle))
            for cand in self._on_pivot(pivot, candle, atr):
                k = (cand.pattern, cand.direction)
                if k not in best or cand.raw_score > best[k].raw_score:
                    best[k] = cand
        confirmed_degrees = {p.degree for p in new_pivots}
        self._invalidate(candle, skip=confirmed_degrees)
        if best:
            out.candidates.extend(sorted(best.values(), key=lambda c: (c.pattern, c.direction)))
        if self._counts_changed:
            # the leader is a function of the live counts only: rank them again only when they changed
            self._counts_changed = False
            leader = self._leading()
            if (leader.key if leader else None) != (self._leader.key if self._leader else None):
                out.events.append(self._count_event(leader, candle))
            self._leader = leader
        return out

    def state(self) -> AnalyzerState:
        ranked = self.ranked_counts()
        th = self.params.thresholds
        if not ranked:
            n = sum(len(self.pivots.pivots(d)) for d in range(len(th)))
            return AnalyzerState(NAME, f"No valid wave count yet ({n} confirmed pivots)")
        lead = ranked[0]
        lines = [f"Leading: {lead.describe(th)}"]
        # the same labelled swings found at several degrees are one count, not alternates
        alternates: list[Count] = []
        seen = {(lead.pattern, tuple(p.index for p in lead.pivots))}
        for c in ranked[1:]:
            key = (c.pattern, tuple(p.index for p in c.pivots))
            if key not in seen and len(alternates) < 2:
                seen.add(key)
                alternates.append(c)
        lines += [f"Alternate {i}: {c.describe(th)}" for i, c in enumerate(alternates, 1)]
        levels = [(f"invalidation ({lab})", price) for price, lab in lead.invalidations]
        pivots = tuple((p.time_ms, p.price, lab) for lab, p in zip(lead.labels, lead.pivots, strict=True))
        summary = f"{lead.name.replace('_', ' ').capitalize()}, {_stage_text(lead)} (score {lead.score:.2f})"
        return AnalyzerState(NAME, summary, tuple(lines), tuple(levels), pivots)

    # ---- counts ---------------------------------------------------------------------------

    def ranked_counts(self) -> list[Count]:
        """Live counts of stage >= 2 over all degrees, best first (ties: higher degree, newer origin). Scores
        are compared to 9 decimals: one count found at two degrees scores the same up to the last bits, which
        a price scale can flip (the leader, and its event, must not depend on the price scale)."""
        live = [c for st in self._deg for c in st.counts if c.stage >= 2]
        live.sort(key=lambda c: (-round(c.score, 9), -c.degree, -c.pivots[0].index, c.pattern, -c.direction))
        return live

    def _leading(self) -> Count | None:
        """``ranked_counts()[0]`` by one scan: the first live count (stage >= 2) that no later one ranks
        strictly before (the sort is stable, so its first element is that one), without key tuples or a sort."""
        best: Count | None = None
        for st in self._deg:
            for c in st.counts:
                if c.stage >= 2 and (best is None or _ranks_before(c, best)):
                    best = c
        return best

    def _on_pivot(self, pivot: Pivot, candle: Candle, atr: float) -> list[SignalCandidate]:
        st = self._deg[pivot.degree]
        piv = list(self.pivots.pivots(pivot.degree))
        p = self.params
        counts: list[Count] = []
        for stage in range(1, 6):
            if len(piv) < stage + 1:
                break
            window = piv[-stage - 1 :]
            imp = ec.impulse_count(window, pivot.degree, atr, p.wave4_overlap_atr, p.weights)
            if imp is not None:
                counts.append(imp)
            if stage >= 4:
                diag = ec.diagonal_count(window, pivot.degree, p.weights)
                if diag is not None:
                    counts.append(diag)
            if stage == 3:
                ctx = self._trend_context(st, window[0], piv[-5] if len(piv) >= 5 else None)
                corr = ec.correction_count(window, ctx, pivot.degree, p.weights)
                if corr is not None:
                    counts.append(corr)
        st.set_counts(counts)
        self._counts_changed = True
        for c in counts:
            if c.pattern == "impulse" and c.stage == 5:
                st.completed.append(c)
        cands: list[SignalCandidate] = []
        for c in counts:
            cand = self._setup(c, candle, atr)
            if cand is not None:
                cands.append(cand)
        return cands

    @staticmethod
    def _trend_context(st: _DegreeState, origin: Pivot, prior: Pivot | None) -> ec.TrendContext | None:
        """The trend a correction starting at ``origin`` corrects: the best complete impulse whose
        wave 5 ends there, else the previous leg (from ``prior``)."""
        best: Count | None = None
        for c in st.completed:
            if c.pivots[-1].index == origin.index and c.pivots[-1].kind == origin.kind and (best is None or c.score > best.score):
                best = c
        if best is not None:
            vol = sum(p.leg_volume for p in best.pivots[1:])
            return ec.TrendContext(best.pivots[0].level, best.pivots[0].index, vol, best.score)
        if prior is None:
            return None
        return ec.TrendContext(prior.level, prior.index, origin.leg_volume, 0.0)

    def _invalidate(self, candle: Candle, skip: set[int]) -> None:
        """Kill counts whose invalidation price this bar traded through.

        Counts rebuilt on this bar are skipped: their pivots already include this bar's reversal. A degree
        whose tightest invalidation prices this bar did not reach is not scanned (see _DegreeState).
        """
        low, high = candle.low, candle.high
        for st in self._deg:
            if (low >= st.below and high <= st.above) or not st.counts or st.counts[0].degree in skip:
                continue
            alive = [c for c in st.counts if not _violated(c, candle)]
            if len(alive) != len(st.counts):
                self._counts_changed = True
            st.set_counts(alive)

    # ---- signals --------------------------------------------------------------------------

    def _setup(self, c: Count, candle: Candle, atr: float) -> SignalCandidate | None:
        if c.pattern == "impulse" and c.stage == 2:
            pattern, ref, stop = "elliott_wave3", (c.pivots[0], c.pivots[1]), c.pivots[0].price
            base, mults, cap = c.pivots[2], self.params.wave3_targets, None
        elif c.pattern == "impulse" and c.stage == 4:
            pattern, ref, stop = "elliott_wave5", (c.pivots[0], c.pivots[1]), c.pivots[1].price
            base, mults = c.pivots[4], self.params.wave5_targets
            l1 = abs(c.pivots[1].level - c.pivots[0].level)
            l3 = abs(c.pivots[3].level - c.pivots[2].level)
            cap = l3 if l3 < l1 else None  # rule I3: wave 5 may not outgrow a wave 3 shorter than wave 1
        elif c.pattern in ("zigzag", "flat"):
            pattern, ref = "elliott_abc", (c.pivots[0], c.pivots[1])
            buffer = self.params.abc_stop_buffer_atr * atr
            stop = self.pivots.from_level(c.pivots[3].level - c.direction * buffer)
            base, mults, cap = c.pivots[3], self.params.abc_targets, None
        else:
            return None
        length = abs(ref[1].level - ref[0].level)
        dists = [m * length if cap is None else min(m * length, cap) for m in mults]
        # list comprehensions, not generators: mypyc compiles them to plain loops (a generator is an object)
        targets = tuple([self.pivots.from_level(base.level + c.direction * d) for d in dists])
        entry = candle.close
        sgn = c.direction
        if (entry - stop) * sgn <= 0 or not targets or (targets[0] - entry) * sgn <= 0:
            self.skipped_setups += 1
            return None
        direction: Direction = "LONG" if sgn > 0 else "SHORT"
        th = self.params.thresholds
        reasons = (
            c.describe(th),
            f"{pattern} {direction}: entry {entry:.6g} on the close of the confirming candle "
            f"{ms_to_iso(candle.open_time_ms)}, stop {stop:.6g}, targets " + ", ".join([f"{t:.6g}" for t in targets]),
        )
        feats = (*c.features, ("degree", float(th[c.degree])), ("stage", float(c.stage)))
        return SignalCandidate(NAME, pattern, direction, c.score, entry, stop, targets, reasons, feats,
                               structure_key(c))

    # ---- events ---------------------------------------------------------------------------

    def _pivot_event(self, p: Pivot, candle: Candle) -> AnalysisEvent:
        return AnalysisEvent(
            kind="pivot",
            type=p.kind,
            symbol=self.symbol,
            timeframe=self.timeframe,
            candle_time_ms=p.time_ms,
            recognised_ms=candle.open_time_ms,
            price=p.price,
            details=(("degree", str(p.degree)), ("threshold", f"{self.params.thresholds[p.degree]:g}")),
        )

    def _count_event(self, c: Count | None, candle: Candle) -> AnalysisEvent:
        if c is None:
            return AnalysisEvent("elliott_count", "none", self.symbol, self.timeframe, candle.open_time_ms,
                                 candle.open_time_ms, candle.close, details=(("reason", "no valid count"),))
        labels = " ".join([f"{lab}:{p.time_ms}:{p.price:.10g}" for lab, p in zip(c.labels, c.pivots, strict=True)])
        return AnalysisEvent(
            kind="elliott_count",
            type=c.name,
            symbol=self.symbol,
            timeframe=self.timeframe,
            candle_time_ms=c.pivots[-1].time_ms,
            recognised_ms=candle.open_time_ms,
            price=c.invalidations[0][0],
            phase=_stage_text(c),
            details=(
                ("pattern", c.pattern),
                ("subtype", c.subtype),
                ("degree", str(c.degree)),
                ("stage", str(c.stage)),
                ("score", f"{c.score:.4f}"),
                ("pivots", labels),
                ("invalidation", ";".join([f"{side}:{price:.10g}" for price, side in c.invalidations])),
            ),
        )


def structure_key(c: Count) -> str:
    """The structure a count belongs to, whatever its degree: its family (impulse: wave-3 and wave-5 setups;
    correction: A-B-C), direction and ORIGIN pivot bar. The same 0-1-2 found by the 2-ATR and the 4.5-ATR
    zigzag, or a wave 5 of the impulse whose wave 3 was signalled, is one structure (the gate gives it one
    trade call)."""
    family = "correction" if c.pattern in ("zigzag", "flat") else "impulse"
    side = "up" if c.direction > 0 else "down"
    return f"elliott:{family}:{side}:{c.pivots[0].time_ms}"


def _ranks_before(a: Count, b: Count) -> bool:
    """``key(a) < key(b)`` for ranked_counts' sort key (-round(score, 9), -degree, -origin index, pattern,
    -direction), compared field by field as the tuples would be.

    round() costs a decimal conversion (about 2,800 instructions): scores more than 2e-9 apart are ordered by
    their raw values, because round(., 9) is monotone and moves a value by at most 0.5e-9, so their rounded
    values differ in the same direction."""
    sa, sb = a.score, b.score
    if sa - sb > 2e-9:
        return True
    if sb - sa > 2e-9:
        return False
    sa, sb = round(sa, 9), round(sb, 9)
    if sa != sb:
        return sa > sb
    if a.degree != b.degree:
        return a.degree > b.degree
    ia, ib = a.pivots[0].index, b.pivots[0].index
    if ia != ib:
        return ia > ib
    if a.pattern != b.pattern:
        return a.pattern < b.pattern
    return a.direction > b.direction


def _violated(c: Count, candle: Candle) -> bool:
    for price, side in c.invalidations:
        if (side == "below" and candle.low < price) or (side == "above" and candle.high > price):
            return True
    return False


def _stage_text(c: Count) -> str:
    if c.pattern in ("zigzag", "flat"):
        return "correction complete, trend resumption expected"
    if c.stage == 5:
        return "5 waves complete, correction expected"
    return f"wave {c.stage + 1} in progress"


register_frozen(ElliottParams)

