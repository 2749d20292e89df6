"""The bot's one seam to the analysis engine's gate and evidence API (issue 10).

The product (pipeline, track record, commands) uses only what this module exposes:

- :func:`load_model` reads EVIDENCE_MODEL_PATH's evidence model, or the shipped default;
- :func:`build_engine` / :func:`set_evidence` build an engine with a model and swap in a newer one
  (the live record folded in with :func:`with_live`);
- :func:`make_gate` builds the gate with its memory seeded from the store (:class:`GateSeed`);
- :func:`candidates_of` returns every candidate of a step with its kind and gate reason;
- :data:`TRACKED_GATE_REASONS`: the gate reasons of the population the live track record counts.

Models and track records are typed by the :class:`EvidenceModelView` / :class:`TrackRecordView`
protocols (the fields the bot reads), so the real ``src.analysis.evidence`` classes fit them structurally.

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from src.analysis import evidence as _evidence
from src.analysis import registry as _registry
from src.analysis.engine import AnalysisEngine, AnalysisSettings, StepResult
from src.analysis.gate import GateMemory, SignalGate
from src.analysis.types import Signal
from src.storage.base import GateSeed, LiveTrack

TRACKED_GATE_REASONS: frozenset[str] = frozenset(_evidence.TRACKED_GATE_REASONS)


class ModelError(ValueError):
    """The evidence model file cannot be used (unreadable, not a model, wrong version); the message says why."""


class TrackRecordView(Protocol):
    """One (pattern, timeframe) cell of the evidence model: what ``>stats`` shows (src.analysis.evidence.TrackRecord)."""

    @property
    def pattern(self) -> str: ...
    @property
    def timeframe(self) -> str: ...
    @property
    def backtest_n(self) -> int: ...
    @property
    def backtest_mean_r(self) -> float | None: ...
    @property
    def backtest_ci(self) -> tuple[float, float] | None: ...
    @property
    def live_n(self) -> int: ...
    @property
    def live_mean_r(self) -> float | None: ...
    @property
    def p_win(self) -> float | None: ...
    @property
    def expected_r(self) -> float | None: ...
    @property
    def expected_r_lo(self) -> float | None: ...
    @property
    def expected_r_hi(self) -> float | None: ...


class EvidenceModelView(Protocol):
    """The evidence model as the bot uses it (src.analysis.evidence.EvidenceModel)."""

    @property
    def version(self) -> str: ...

    def with_live(self, live: Mapping[tuple[str, str], Any]) -> EvidenceModelView: ...

    def track_records(self) -> Sequence[TrackRecordView]: ...


def load_model(path: Path | None) -> EvidenceModelView | None:
    """The model in ``path`` (EVIDENCE_MODEL_PATH), else the shipped default; None when this build has no
    evidence model. Raises :class:`ModelError` naming the file and the problem."""
    if path is None:
        try:
            model: EvidenceModelView = _evidence.load_default_model()
        except ValueError as exc:  # EvidenceFormatError: a broken installation
            raise ModelError(f"the evidence model shipped with the bot cannot be loaded ({exc}); reinstall") from None
        return model
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"EVIDENCE_MODEL_PATH={path} cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        loaded: EvidenceModelView = _evidence.EvidenceModel.from_json(text)
    except ValueError as exc:  # EvidenceFormatError is a ValueError
        raise ModelError(
            f"EVIDENCE_MODEL_PATH={path} is not an evidence model written by `python -m backtest evidence fit` ({exc})"
        ) from None
    return loaded


def stale_timeframes(model: EvidenceModelView, timeframes: Sequence[str]) -> list[str]:
    """The timeframes where ``model`` was fitted on other analyzers than the ones running (refit it)."""
    return _registry.stale_evidence(getattr(model, "meta", {}), timeframes)


def with_live(model: EvidenceModelView, tracks: Sequence[LiveTrack]) -> EvidenceModelView:
    """``model`` with the live record of the tracked population folded in: one LiveRecord per (pattern, timeframe)
    cell with graded outcomes (n, sum of net R, sum of squares, wins = net R > 0)."""
    live = {
        (t.pattern, t.timeframe): _evidence.LiveRecord(n=t.graded, sum_r=t.sum_r, sum_r2=t.sum_r2, wins=t.wins)
        for t in tracks if t.population == "tracked" and t.graded > 0
    }
    return model.with_live(live)


def build_engine(symbol: str, timeframe: str, settings: AnalysisSettings, model: EvidenceModelView | None) -> AnalysisEngine:
    """The registry's engine for the stream, assessing candidates with ``model``."""
    # every model the bot loads is an EvidenceModel; the view protocol only lets tests hand in fakes
    return _registry.build_engine(symbol, timeframe, settings, evidence=cast(_evidence.EvidenceModel | None, model))


def set_evidence(engine: AnalysisEngine, model: EvidenceModelView | None) -> None:
    """Swap ``model`` into a running engine (no-op without a model or without the API)."""
    setter = getattr(engine, "set_evidence", None)
    if model is not None and setter is not None:
        setter(model)


def make_gate(settings: AnalysisSettings, seed: GateSeed | None = None) -> SignalGate:
    """The gate with its memory seeded from the store, so cooldowns and structures survive restarts."""
    memory = None if seed is None else GateMemory(
        last_emitted_ms=dict(seed.last_emitted_ms), structures=dict(seed.structures),
        last_trade_ms=dict(seed.last_trade_ms), judged_until_ms=dict(seed.judged_until_ms))
    return SignalGate(settings, memory)


def candidates_of(result: StepResult) -> list[Signal]:
    """Every candidate of the step, each with its kind and gate reason."""
    return list(result.candidates)


__all__ = [
    "TRACKED_GATE_REASONS", "EvidenceModelView", "ModelError",
    "TrackRecordView", "build_engine", "candidates_of", "load_model", "make_gate", "set_evidence", "stale_timeframes",
    "with_live",
]
