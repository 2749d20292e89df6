"""The one analysis code path shared by the live bot, replay and every backtest command.

Per (symbol, timeframe) an :class:`AnalysisEngine` feeds each closed candle to its analyzers (in
order) and turns their candidates into :class:`Signal` objects: deterministic id, timestamps of the
confirming candle, ``structure_id`` (a short hash of symbol, timeframe and the analyzer's structure
key, so every candidate of one structure shares it), the context the evidence model needs (Wilder
ATR(14) of the stream at the confirming candle, feature ``ctx_atr``) and the evidence model's
assessment: ``evidence`` (p_win, expected net R with its interval, track record) and
``confidence`` = P(E[net R] > 0); ``raw_confidence`` stays the analyzer's score.

:func:`step` then passes the candle's candidates through the :class:`~src.analysis.gate.SignalGate`
(trade call, watch note or gated, with a reason; see src/analysis/gate.py). ``step`` is the single
per-candle function used live, in replay and in every backtest command.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Protocol

from src.analysis import timeframes
from src.analysis.evidence import CTX_ATR, EvidenceModel, load_default_model, p_positive
from src.analysis.gate import (
    GATE_REASONS,
    REASON_ALREADY_JUDGED,
    REASON_COOLDOWN,
    REASON_DUPLICATE_STRUCTURE,
    REASON_NO_EDGE,
    REASON_NO_EVIDENCE,
    REASON_RR_BELOW_MIN,
    REASON_RR_BELOW_TRADE_MIN,
    REASON_SCORE_BELOW_WATCH_MIN,
    REASON_STRUCTURE_SIGNALLED,
    TRACKED_GATE_REASONS,
    GateMemory,
    SignalGate,
)
from src.analysis.indicators import WilderATR
from src.analysis.pickling import register_frozen
from src.analysis.settings import AnalysisSettings
from src.analysis.types import AnalysisEvent, AnalyzerState, Candle, Signal, SignalCandidate, ms_to_iso, signal_id

__all__ = [
    "ANALYZER_VERSION",
    "GATE_REASONS",
    "REASON_ALREADY_JUDGED",
    "REASON_COOLDOWN",
    "REASON_DUPLICATE_STRUCTURE",
    "REASON_NO_EDGE",
    "REASON_NO_EVIDENCE",
    "REASON_RR_BELOW_MIN",
    "REASON_RR_BELOW_TRADE_MIN",
    "REASON_SCORE_BELOW_WATCH_MIN",
    "REASON_STRUCTURE_SIGNALLED",
    "TRACKED_GATE_REASONS",
    "AnalysisEngine",
    "AnalysisSettings",
    "Analyzer",
    "AnalyzerOutput",
    "EngineResult",
    "GateMemory",
    "SignalGate",
    "StepResult",
    "analyzers_fingerprint",
    "config_hash",
    "replay",
    "step",
    "structure_id",
]

# 0.3: Wyckoff round 2 (rules F1, F3/F5, F4, S1, R1); 0.2: range-based Wyckoff, structure keys, the evidence gate
ANALYZER_VERSION = "0.3.0"


@dataclass(slots=True)
class AnalyzerOutput:
    """One analyzer's candidates and events of one candle. The explicit ``__init__`` (kept by ``dataclass``)
    is compiled by mypyc; the generated one would run as interpreted code on every analyzer call."""

    candidates: list[SignalCandidate]
    events: list[AnalysisEvent]

    def __init__(self, candidates: list[SignalCandidate] | None = None, events: list[AnalysisEvent] | None = None) -> None:
        self.candidates = [] if candidates is None else candidates
        self.events = [] if events is None else events


class Analyzer(Protocol):
    """One streaming analyzer for one (symbol, timeframe).

    ``on_candle`` is called once per closed candle, in ascending open-time order, and may use only
    that candle and earlier ones. It must be amortised O(1) or O(log n) per call.
    """

    name: str

    def on_candle(self, candle: Candle) -> AnalyzerOutput: ...

    def state(self) -> AnalyzerState: ...

    def params_fingerprint(self) -> str: ...


@dataclass(slots=True)
class EngineResult:
    """The signals and events of one candle (explicit ``__init__``: see :class:`AnalyzerOutput`)."""

    signals: list[Signal]
    events: list[AnalysisEvent]

    def __init__(self, signals: list[Signal] | None = None, events: list[AnalysisEvent] | None = None) -> None:
        self.signals = [] if signals is None else signals
        self.events = [] if events is None else events


def config_hash(settings: AnalysisSettings, analyzers: Sequence[Analyzer]) -> str:
    """12 hex chars identifying the analyzer version, settings and analyzer parameters."""
    blob = json.dumps(
        {
            "version": ANALYZER_VERSION,
            "settings": asdict(settings),
            "analyzers": {a.name: a.params_fingerprint() for a in analyzers},
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def analyzers_fingerprint(analyzers: Sequence[Analyzer]) -> str:
    """12 hex chars identifying the analyzer version and parameters only (not the gate settings): what an
    evidence model was fitted on."""
    blob = json.dumps({"version": ANALYZER_VERSION, "analyzers": {a.name: a.params_fingerprint() for a in analyzers}},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def structure_id(symbol: str, timeframe: str, structure: str, fallback: str) -> str:
    """16 hex chars of sha256("symbol|timeframe|structure"); ``fallback`` (the signal id) when the analyzer
    names no structure, so such a candidate is a structure of its own."""
    if not structure:
        return fallback[:16]
    return _structure_hash(symbol, timeframe, structure)


@lru_cache(maxsize=8192)
def _structure_hash(symbol: str, timeframe: str, structure: str) -> str:
    # memoised: a structure proposes a candidate on many candles (every degree, every stage)
    return hashlib.sha256(f"{symbol}|{timeframe}|{structure}".encode()).hexdigest()[:16]


ATR_PERIOD = 14


class AnalysisEngine:
    """All analyzers of one (symbol, timeframe); see the module docstring.

    ``evidence``: the evidence model that assesses every candidate; None = the shipped default
    (:func:`src.analysis.evidence.load_default_model`). Swap it with :meth:`set_evidence` (e.g. once the
    live track record is folded in)."""

    def __init__(
        self,
        symbol: str,
        timeframe: str,
        analyzers: Sequence[Analyzer],
        settings: AnalysisSettings,
        evidence: EvidenceModel | None = None,
    ) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.analyzers = list(analyzers)
        self.settings = settings
        self.evidence: EvidenceModel = evidence if evidence is not None else load_default_model()
        self.config_hash = config_hash(settings, self.analyzers)
        self.last_open_time_ms: int | None = None
        self.candles_seen = 0
        self._atr = WilderATR(ATR_PERIOD)

    def set_evidence(self, model: EvidenceModel) -> None:
        """Assess later candidates with ``model`` (e.g. the default with the live record folded in)."""
        self.evidence = model

    def on_candle(self, candle: Candle) -> EngineResult:
        """Analyse one closed candle; candles at or before the last one seen are ignored."""
        if not self._accept(candle):
            return EngineResult()
        # the ATR includes this candle: its close is known when the candidates are judged
        atr = self._atr.update(candle.high, candle.low, candle.close) if candle.high >= candle.low > 0 else self._atr.value
        result = EngineResult()
        generated_at = ""  # the confirming candle's close, formatted only when a candidate needs it
        for analyzer in self.analyzers:
            out = analyzer.on_candle(candle)
            result.events.extend(out.events)
            for cand in out.candidates:
                generated_at = generated_at or ms_to_iso(timeframes.next_open(self.timeframe, candle.open_time_ms))
                result.signals.append(self._to_signal(cand, candle, generated_at, atr))
        result.signals.sort(key=lambda s: (-s.confidence, s.pattern, s.direction))
        return result

    def warm(self, candle: Candle) -> None:
        """:meth:`on_candle` for a warm-up that throws the results away: the analyzers and the ATR see the candle
        the same way (same state afterwards), but no candidate becomes a Signal (no evidence, no ids)."""
        if not self._accept(candle):
            return
        if candle.high >= candle.low > 0:
            self._atr.update(candle.high, candle.low, candle.close)
        for analyzer in self.analyzers:
            analyzer.on_candle(candle)

    def _accept(self, candle: Candle) -> bool:
        """Whether ``candle`` is new (after the last one seen); counts it. Only closed candles may come."""
        if not candle.closed:
            raise ValueError("AnalysisEngine only accepts closed candles")
        if self.last_open_time_ms is not None and candle.open_time_ms <= self.last_open_time_ms:
            return False
        self.last_open_time_ms = candle.open_time_ms
        self.candles_seen += 1
        return True

    def _to_signal(self, cand: SignalCandidate, candle: Candle, generated_at: str, atr: float | None) -> Signal:
        raw = min(1.0, max(0.0, cand.raw_score))
        sid = signal_id(self.symbol, self.timeframe, candle.open_time_ms, cand.pattern, cand.direction)
        features = cand.features if atr is None else (*cand.features, (CTX_ATR, atr))
        # the evidence reads only these fields of the signal, never its evidence or confidence
        ev = self.evidence.assess_fields(cand.pattern, self.timeframe, cand.entry, cand.stop_loss, cand.take_profits,
                                         features)
        return Signal(
            id=sid,
            symbol=self.symbol,
            timeframe=self.timeframe,
            pattern=cand.pattern,
            direction=cand.direction,
            confidence=round(p_positive(ev), 4),
            raw_confidence=round(raw, 4),
            entry=cand.entry,
            stop_loss=cand.stop_loss,
            take_profits=cand.take_profits,
            candle_time_ms=candle.open_time_ms,
            generated_at=generated_at,
            reasons=cand.reasons,
            analyzer_version=ANALYZER_VERSION,
            config_hash=self.config_hash,
            features=features,
            structure_id=structure_id(self.symbol, self.timeframe, cand.structure, sid),
            evidence=ev,
        )

    def states(self) -> list[AnalyzerState]:
        return [a.state() for a in self.analyzers]


@dataclass(slots=True)
class StepResult:
    """One closed candle through engine and gate.

    ``candidates``: EVERY candidate of the candle with kind, gate_reason, evidence and structure_id set
    (posting order first, then the same-candle duplicates); ``emitted``: the trade calls and watch notes,
    in posting order; ``events``: the analysis events."""

    candidates: list[Signal]
    emitted: list[Signal]
    events: list[AnalysisEvent]

    def __init__(self, candidates: list[Signal], emitted: list[Signal], events: list[AnalysisEvent]) -> None:
        # explicit: compiled by mypyc (see AnalyzerOutput)
        self.candidates = candidates
        self.emitted = emitted
        self.events = events


def step(engine: AnalysisEngine, gate: SignalGate, candle: Candle) -> StepResult:
    """The single per-candle step used live, in replay and in every backtest command."""
    result = engine.on_candle(candle)
    judged, emitted = gate.judge(result.signals)
    return StepResult(judged, emitted, result.events)


def replay(
    candles: Iterable[Candle], engine: AnalysisEngine, gate: SignalGate
) -> tuple[list[Signal], list[Signal], list[AnalysisEvent]]:
    """Run ``step`` over ascending closed candles; returns (all candidates, emitted signals, events)."""
    candidates: list[Signal] = []
    emitted: list[Signal] = []
    events: list[AnalysisEvent] = []
    for candle in candles:
        r = step(engine, gate, candle)
        candidates.extend(r.candidates)
        emitted.extend(r.emitted)
        events.extend(r.events)
    return candidates, emitted, events


# pickled by their constructor: a compiled class with an explicit __init__ needs its arguments to unpickle
register_frozen(AnalyzerOutput, EngineResult, StepResult)
