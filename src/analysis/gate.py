"""The signal gate (SPEC 5, 5a): which candidates become TRADE calls, which WATCH notes, and why the rest
are gated. Every candidate leaves the gate with ``kind`` and ``gate_reason`` set; nothing is dropped.

Per candle, the candidates of one stream are judged in three passes:

1. **One structure, one candidate per candle.** Candidates with the same ``structure_id`` collapse into the
   one with the highest raw score (then pattern name); the others are gated ``duplicate_structure``. The
   choice does not depend on the evidence model, so the population the model is fitted on is the same
   whatever the model says (:data:`TRACKED_GATE_REASONS`).
2. **Merits.** A candidate is a trade call when its evidence gives P(E[net R] > 0) >= ``min_confidence``
   (``Signal.confidence``; at 0.9 the lower end of the shown 80 % interval is above 0 R) AND its reward/risk
   to the first target >= ``trade_min_rr``. Otherwise it may be a watch note when R:R >= ``watch_min_rr``
   (else ``rr_below_min``) and raw score >= ``watch_min_score`` (else ``score_below_watch_min``); a watch
   note's ``gate_reason`` says why it is not a trade call: ``no_edge`` or ``rr_below_trade_min``.
3. **Memory**, in posting order (trade calls first, then by the lower end of expected R):
   - a structure gives at most one trade call, and at most one watch note before it (a watch note may be
     upgraded to a trade call once); anything else from it is gated ``structure_signalled``;
   - cooldown per (symbol, timeframe, direction): ``max(cooldown_candles x interval, cooldown_seconds)`` of
     CANDLE time since the last emission (never the wall clock, so replay, backtest and live agree). A watch
     note waits for any earlier emission's cooldown; a trade call only for an earlier trade call's, so a watch
     note never holds back a trade call. Gated ``cooldown``. A candidate at or before the last emission of
     its key is never emitted (a restart that replays old candles re-emits nothing), except on the same
     candle when the cooldown is 0.

A candle at or before ``GateMemory.judged_until_ms`` of its stream was analysed by an earlier run (a replay
into the same store): its candidates come back gated ``already_judged`` and none is emitted again; callers
keep the verdict they stored the first time.

:class:`GateMemory` is all the gate remembers; the bot seeds it from the store so it survives restarts.
Structures not seen for :data:`STRUCTURE_MEMORY_CANDLES` candles of their timeframe are forgotten
(amortised O(1)); every candle costs O(k log k) for its k candidates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from src.analysis import timeframes
from src.analysis.settings import AnalysisSettings
from src.analysis.types import SIGNAL_KINDS, Signal, SignalKind

REASON_NO_EDGE = "no_edge"
REASON_RR_BELOW_TRADE_MIN = "rr_below_trade_min"
REASON_RR_BELOW_MIN = "rr_below_min"
REASON_SCORE_BELOW_WATCH_MIN = "score_below_watch_min"
REASON_DUPLICATE_STRUCTURE = "duplicate_structure"
REASON_STRUCTURE_SIGNALLED = "structure_signalled"
REASON_COOLDOWN = "cooldown"
REASON_NO_EVIDENCE = "no_evidence"
REASON_ALREADY_JUDGED = "already_judged"

GATE_REASONS: dict[str, str] = {
    "": "trade call",
    REASON_NO_EDGE: "watch note: the evidence does not show a positive expected R after fees",
    REASON_RR_BELOW_TRADE_MIN: "watch note: the evidence is positive but reward/risk to TP1 is below TRADE_MIN_RR",
    REASON_RR_BELOW_MIN: "gated: reward/risk to the first target is below WATCH_MIN_RR (or there is no target)",
    REASON_SCORE_BELOW_WATCH_MIN: "gated: analyzer raw score below WATCH_MIN_SCORE (a volume limit, not evidence)",
    REASON_DUPLICATE_STRUCTURE: "gated: another candidate of the same structure on the same candle was kept",
    REASON_STRUCTURE_SIGNALLED: "gated: this structure already gave its trade call (or its watch note)",
    REASON_COOLDOWN: "gated: an earlier signal of this symbol, timeframe and direction is still in its cooldown",
    REASON_NO_EVIDENCE: "no evidence model attached: never a trade call",
    REASON_ALREADY_JUDGED: "not new: its candle was analysed by an earlier run (its stored verdict stands)",
}
"""Every ``gate_reason`` the gate writes, with a one-line explanation for users (``>signal``)."""

TRACKED_GATE_REASONS: frozenset[str] = frozenset(GATE_REASONS) - {REASON_DUPLICATE_STRUCTURE, REASON_ALREADY_JUDGED}
"""Candidates with these reasons form the population the evidence model is fitted on and the live track
record counts: everything except the same-candle duplicates of a structure (pass 1 above) and repeats of
candles an earlier run already judged."""

STRUCTURE_MEMORY_CANDLES = 2000
SEEDED_STRUCTURE_TTL_MS = 90 * 86_400_000  # seeded structures carry no timeframe: forgotten 90 days (candle time) later
_KIND_RANK: dict[str, int] = {"gated": 0, "watch": 1, "trade": 2}
_PRUNE_EVERY = 512

StreamDirection = tuple[str, str, str]  # (symbol, timeframe, direction)


@dataclass(slots=True)
class GateMemory:
    """What the gate remembers across candles and restarts.

    ``last_emitted_ms``: (symbol, timeframe, direction) -> candle_time_ms of the last trade call or watch note.
    ``structures``: structure_id -> the best kind it has given ("trade" > "watch"; "gated" = seen only).
    ``last_trade_ms``: the same key -> the last TRADE call; None when unknown (a memory seeded from an older
    store), in which case every seeded emission is taken to have been a trade call (the safe reading).
    ``judged_until_ms``: (symbol, timeframe) -> open time of the last candle an earlier run analysed.
    """

    last_emitted_ms: dict[StreamDirection, int] = field(default_factory=dict)
    structures: dict[str, SignalKind] = field(default_factory=dict)
    last_trade_ms: dict[StreamDirection, int] | None = None
    judged_until_ms: dict[tuple[str, str], int] = field(default_factory=dict)

    def copy(self) -> GateMemory:
        return GateMemory(
            dict(self.last_emitted_ms),
            dict(self.structures),
            None if self.last_trade_ms is None else dict(self.last_trade_ms),
            dict(self.judged_until_ms),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (keys joined with ``|``)."""
        return {
            "last_emitted_ms": {"|".join(k): v for k, v in sorted(self.last_emitted_ms.items())},
            "structures": dict(sorted(self.structures.items())),
            "last_trade_ms": None
            if self.last_trade_ms is None
            else {"|".join(k): v for k, v in sorted(self.last_trade_ms.items())},
            "judged_until_ms": {"|".join(k): v for k, v in sorted(self.judged_until_ms.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateMemory:
        """Inverse of :meth:`to_dict`; ValueError names the bad entry."""

        def keys(m: dict[str, Any], what: str) -> dict[StreamDirection, int]:
            out: dict[StreamDirection, int] = {}
            for k, v in m.items():
                parts = str(k).split("|")
                if len(parts) != 3 or parts[2] not in ("LONG", "SHORT"):
                    raise ValueError(f"{what}: key {k!r} is not SYMBOL|TIMEFRAME|LONG or SHORT")
                out[(parts[0], parts[1], parts[2])] = int(v)
            return out

        structures: dict[str, SignalKind] = {}
        for sid, kind in dict(d.get("structures") or {}).items():
            if kind not in SIGNAL_KINDS:
                raise ValueError(f"structures: {sid!r} has kind {kind!r}, expected one of {', '.join(SIGNAL_KINDS)}")
            structures[str(sid)] = kind
        trades = d.get("last_trade_ms")
        judged: dict[tuple[str, str], int] = {}
        for k, v in dict(d.get("judged_until_ms") or {}).items():
            parts = str(k).split("|")
            if len(parts) != 2:
                raise ValueError(f"judged_until_ms: key {k!r} is not SYMBOL|TIMEFRAME")
            judged[(parts[0], parts[1])] = int(v)
        return cls(
            keys(dict(d.get("last_emitted_ms") or {}), "last_emitted_ms"),
            structures,
            None if trades is None else keys(dict(trades), "last_trade_ms"),
            judged,
        )


def _key(s: Signal) -> StreamDirection:
    return (s.symbol, s.timeframe, s.direction)


def _rr(s: Signal) -> float:
    rr = s.risk_reward
    return -1.0 if rr is None else rr


def _lower(s: Signal) -> float:
    return s.evidence.expected_r_lo if s.evidence is not None else float("-inf")


class SignalGate:
    """See the module docstring. One gate serves every stream of a process (keys include the stream)."""

    def __init__(self, settings: AnalysisSettings, memory: GateMemory | None = None) -> None:
        self.settings = settings
        mem = memory.copy() if memory is not None else GateMemory()
        if mem.last_trade_ms is None:
            mem.last_trade_ms = dict(mem.last_emitted_ms)  # unknown kinds: assume trade calls (safe)
        self.memory = mem
        self._burst: dict[StreamDirection, int] = {}  # keys whose last emission this gate made, by candle time
        self._structure_seen: dict[str, tuple[int, int]] = {}  # structure_id -> (last seen ms, interval ms)
        self._since_prune = 0

    def cooldown_ms(self, timeframe: str) -> int:
        """The effective cooldown of a stream: max(cooldown_candles x interval, cooldown_seconds)."""
        return max(self.settings.cooldown_candles * timeframes.interval_ms(timeframe), self.settings.cooldown_seconds * 1000)

    # ------------------------------------------------------------------ pass 2: merits
    def _merits(self, s: Signal) -> tuple[SignalKind, str]:
        st = self.settings
        rr = _rr(s)
        if s.evidence is not None and s.confidence >= st.min_confidence and rr >= st.trade_min_rr:
            return "trade", ""
        if rr < st.watch_min_rr:
            return "gated", REASON_RR_BELOW_MIN
        if s.raw_confidence < st.watch_min_score:
            return "gated", REASON_SCORE_BELOW_WATCH_MIN
        if s.evidence is None:
            return "watch", REASON_NO_EVIDENCE
        if s.confidence >= st.min_confidence:
            return "watch", REASON_RR_BELOW_TRADE_MIN
        return "watch", REASON_NO_EDGE

    # ------------------------------------------------------------------ pass 3: memory
    def _blocked(self, s: Signal, kind: SignalKind) -> str:
        mem = self.memory
        prior = mem.structures.get(s.structure_id, "gated")
        if prior == "trade" or (prior == "watch" and kind != "trade"):
            return REASON_STRUCTURE_SIGNALLED
        key = _key(s)
        t = s.candle_time_ms
        cooldown = self.cooldown_ms(s.timeframe)
        assert mem.last_trade_ms is not None
        last = mem.last_trade_ms.get(key) if kind == "trade" else mem.last_emitted_ms.get(key)
        if last is not None:
            same_burst = cooldown == 0 and t == last and self._burst.get(key) == t
            if not same_burst and (t <= last or t - last < cooldown):
                return REASON_COOLDOWN
        return ""

    def _remember(self, s: Signal, kind: SignalKind) -> None:
        mem = self.memory
        key = _key(s)
        if kind in ("trade", "watch"):
            mem.last_emitted_ms[key] = max(s.candle_time_ms, mem.last_emitted_ms.get(key, s.candle_time_ms))
            self._burst[key] = s.candle_time_ms
            if kind == "trade":
                assert mem.last_trade_ms is not None
                mem.last_trade_ms[key] = max(s.candle_time_ms, mem.last_trade_ms.get(key, s.candle_time_ms))
        if _KIND_RANK[kind] > _KIND_RANK[mem.structures.get(s.structure_id, "gated")] or s.structure_id not in mem.structures:
            mem.structures[s.structure_id] = kind
        self._structure_seen[s.structure_id] = (s.candle_time_ms, timeframes.interval_ms(s.timeframe))

    def _prune(self, now_ms: int) -> None:
        """Forget structures not seen for STRUCTURE_MEMORY_CANDLES candles of their timeframe; seeded ones (no
        timeframe known) after SEEDED_STRUCTURE_TTL_MS from the first prune that sees them."""
        seen = self._structure_seen
        for sid in self.memory.structures:
            if sid not in seen:
                seen[sid] = (now_ms, 0)
        stale = [
            sid for sid, (t, iv) in seen.items()
            if now_ms - t > (STRUCTURE_MEMORY_CANDLES * iv if iv else SEEDED_STRUCTURE_TTL_MS)
        ]
        for sid in stale:
            del seen[sid]
            self.memory.structures.pop(sid, None)

    # ------------------------------------------------------------------ one candle
    def judge(self, candidates: Iterable[Signal]) -> tuple[list[Signal], list[Signal]]:
        """Judge the candidates of ONE candle of one stream (see the module docstring).

        Returns (every candidate with kind and gate_reason set, in posting order; the emitted ones)."""
        cands = list(candidates)
        if not cands:
            return [], []
        until = self.memory.judged_until_ms.get((cands[0].symbol, cands[0].timeframe))
        if until is not None and cands[0].candle_time_ms <= until:
            return [s.with_verdict("gated", REASON_ALREADY_JUDGED) for s in cands], []
        # pass 1: one candidate per structure on this candle
        groups: dict[str, list[Signal]] = defaultdict(list)
        for s in cands:
            groups[s.structure_id].append(s)
        kept: list[Signal] = []
        dupes: list[Signal] = []
        for group in groups.values():
            group.sort(key=lambda s: (-s.raw_confidence, s.pattern, s.direction, s.id))
            kept.append(group[0])
            dupes.extend([s.with_verdict("gated", REASON_DUPLICATE_STRUCTURE) for s in group[1:]])
        # pass 2: merits; posting order = trade calls first, best lower bound of expected R first
        judged = [(s, *self._merits(s)) for s in kept]
        judged.sort(key=lambda j: (-_KIND_RANK[j[1]], -_lower(j[0]), j[0].pattern, j[0].direction, j[0].id))
        # pass 3: structure and cooldown memory, in that order
        out: list[Signal] = []
        emitted: list[Signal] = []
        for s, kind, reason in judged:
            if kind != "gated":
                blocked = self._blocked(s, kind)
                if blocked:
                    kind, reason = "gated", blocked
            self._remember(s, kind)
            final = s.with_verdict(kind, reason)
            out.append(final)
            if kind != "gated":
                emitted.append(final)
        out.extend(dupes)
        self._since_prune += len(cands)
        if self._since_prune >= _PRUNE_EVERY:
            self._since_prune = 0
            self._prune(max(s.candle_time_ms for s in cands))
        return out, emitted
