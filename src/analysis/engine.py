"""The one analysis code path shared by the live bot, replay and every backtest command.

Per (symbol, timeframe) an :class:`AnalysisEngine` feeds each closed candle to its analyzers (in
order), turns their candidates into :class:`Signal` objects (deterministic id, calibrated
confidence, timestamps of the confirming candle) and returns them with the analysis events. The
:class:`SignalGate` then decides which signals are emitted:

- confidence (calibrated) >= ``min_confidence``;
- per (symbol, timeframe) cooldown of ``cooldown_seconds`` measured on CANDLE time (never the wall
  clock, so replay, backtest and live agree): a signal on a later candle needs
  ``candle_time - last_emitted_candle_time >= cooldown``; several signals on the candle that
  started the cooldown are all admitted (they are one burst);
- a signal on a candle at or before the last emitted candle of its stream, that is not part of the
  current burst, is never emitted again (a restart replays warm-up candles without re-emitting).

The gate's memory is seeded from the store (``last emitted candle time per stream``), so the
cooldown survives restarts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from src.analysis import timeframes
from src.analysis.types import AnalysisEvent, AnalyzerState, Candle, Signal, SignalCandidate, ms_to_iso, signal_id

ANALYZER_VERSION = "0.1.0"


@dataclass(slots=True)
class AnalyzerOutput:
    candidates: list[SignalCandidate] = field(default_factory=list)
    events: list[AnalysisEvent] = field(default_factory=list)


class Analyzer(Protocol):
    """One streaming analyzer for one (symbol, timeframe).

    ``on_candle`` is called once per closed candle, in ascending open-time order, and may use only
    that candle and earlier ones. It must be amortised O(1) or O(log n) per call.
    """

    name: str

    def on_candle(self, candle: Candle) -> AnalyzerOutput: ...

    def state(self) -> AnalyzerState: ...

    def params_fingerprint(self) -> str: ...


class Calibrator(Protocol):
    """Maps a raw analyzer score to a probability-like confidence for (pattern, timeframe)."""

    def calibrate(self, pattern: str, timeframe: str, raw: float) -> float: ...


class IdentityCalibrator:
    """Confidence = raw score (no calibration fitted yet)."""

    def calibrate(self, pattern: str, timeframe: str, raw: float) -> float:
        return raw


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """Analysis switches from the configuration (SPEC 3)."""

    min_confidence: float = 0.65
    enable_wyckoff: bool = True
    enable_elliott: bool = True
    cooldown_seconds: int = 300


@dataclass(slots=True)
class EngineResult:
    signals: list[Signal] = field(default_factory=list)
    events: list[AnalysisEvent] = field(default_factory=list)


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


class AnalysisEngine:
    """All analyzers of one (symbol, timeframe); see the module docstring."""

    def __init__(
        self,
        symbol: str,
        timeframe: str,
        analyzers: Sequence[Analyzer],
        settings: AnalysisSettings,
        calibrator: Calibrator | None = None,
    ) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.analyzers = list(analyzers)
        self.settings = settings
        self.calibrator: Calibrator = calibrator or IdentityCalibrator()
        self.config_hash = config_hash(settings, self.analyzers)
        self.last_open_time_ms: int | None = None
        self.candles_seen = 0

    def on_candle(self, candle: Candle) -> EngineResult:
        """Analyse one closed candle; candles at or before the last one seen are ignored."""
        if not candle.closed:
            raise ValueError("AnalysisEngine only accepts closed candles")
        if self.last_open_time_ms is not None and candle.open_time_ms <= self.last_open_time_ms:
            return EngineResult()
        self.last_open_time_ms = candle.open_time_ms
        self.candles_seen += 1
        result = EngineResult()
        generated_at = ""  # the confirming candle's close, formatted only when a candidate needs it
        for analyzer in self.analyzers:
            out = analyzer.on_candle(candle)
            result.events.extend(out.events)
            for cand in out.candidates:
                generated_at = generated_at or ms_to_iso(timeframes.next_open(self.timeframe, candle.open_time_ms))
                result.signals.append(self._to_signal(cand, candle, generated_at))
        result.signals.sort(key=lambda s: (-s.confidence, s.pattern))
        return result

    def _to_signal(self, cand: SignalCandidate, candle: Candle, generated_at: str) -> Signal:
        raw = min(1.0, max(0.0, cand.raw_score))
        conf = min(1.0, max(0.0, self.calibrator.calibrate(cand.pattern, self.timeframe, raw)))
        return Signal(
            id=signal_id(self.symbol, self.timeframe, candle.open_time_ms, cand.pattern, cand.direction),
            symbol=self.symbol,
            timeframe=self.timeframe,
            pattern=cand.pattern,
            direction=cand.direction,
            confidence=round(conf, 4),
            raw_confidence=round(raw, 4),
            entry=cand.entry,
            stop_loss=cand.stop_loss,
            take_profits=cand.take_profits,
            candle_time_ms=candle.open_time_ms,
            generated_at=generated_at,
            reasons=cand.reasons,
            analyzer_version=ANALYZER_VERSION,
            config_hash=self.config_hash,
            features=cand.features,
        )

    def states(self) -> list[AnalyzerState]:
        return [a.state() for a in self.analyzers]


class SignalGate:
    """Confidence threshold + per-stream cooldown on candle time; see the module docstring."""

    def __init__(
        self,
        min_confidence: float,
        cooldown_seconds: int,
        last_emitted_ms: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.min_confidence = min_confidence
        self.cooldown_ms = cooldown_seconds * 1000
        self._last: dict[tuple[str, str], int] = dict(last_emitted_ms or {})
        self._burst: dict[tuple[str, str], int] = {}  # streams whose last emission happened in this process

    def admit(self, signal: Signal) -> bool:
        if signal.confidence < self.min_confidence:
            return False
        key = (signal.symbol, signal.timeframe)
        t = signal.candle_time_ms
        last = self._last.get(key)
        if last is not None:
            if t == last and self._burst.get(key) == t:
                return True
            if t <= last or t - last < self.cooldown_ms:
                return False
        self._last[key] = t
        self._burst[key] = t
        return True

    def filter(self, signals: Iterable[Signal]) -> list[Signal]:
        return [s for s in signals if self.admit(s)]


@dataclass(slots=True)
class StepResult:
    """One closed candle through engine and gate: every candidate signal, the emitted ones, the events."""

    candidates: list[Signal]
    emitted: list[Signal]
    events: list[AnalysisEvent]


def step(engine: AnalysisEngine, gate: SignalGate, candle: Candle) -> StepResult:
    """The single per-candle step used live, in replay and in every backtest command."""
    result = engine.on_candle(candle)
    return StepResult(result.signals, gate.filter(result.signals), result.events)


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
