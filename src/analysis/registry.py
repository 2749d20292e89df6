"""Builds the analysis engine for one (symbol, timeframe): the only place that knows which analyzers exist."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from src.analysis.elliott import ElliottAnalyzer
from src.analysis.engine import AnalysisEngine, AnalysisSettings, Analyzer, analyzers_fingerprint
from src.analysis.evidence import EvidenceModel
from src.analysis.wyckoff import WyckoffAnalyzer


def build_analyzers(symbol: str, timeframe: str, settings: AnalysisSettings) -> list[Analyzer]:
    """Analyzers enabled by ``settings``, in a fixed order (Wyckoff first, then Elliott)."""
    analyzers: list[Analyzer] = []
    if settings.enable_wyckoff:
        analyzers.append(WyckoffAnalyzer(symbol, timeframe))
    if settings.enable_elliott:
        analyzers.append(ElliottAnalyzer(symbol, timeframe))
    return analyzers


def build_engine(
    symbol: str, timeframe: str, settings: AnalysisSettings, evidence: EvidenceModel | None = None
) -> AnalysisEngine:
    """The engine with every enabled analyzer; ``evidence`` None = the shipped default model."""
    return AnalysisEngine(symbol, timeframe, build_analyzers(symbol, timeframe, settings), settings, evidence)


def fitted_analyzers(meta: Mapping[str, Any]) -> dict[str, str]:
    """timeframe -> fingerprint of the analyzers an evidence model was fitted on (its ``meta.streams``)."""
    out: dict[str, str] = {}
    for stream in meta.get("streams", ()):
        if isinstance(stream, Mapping) and stream.get("timeframe") and stream.get("analyzers"):
            out[str(stream["timeframe"])] = str(stream["analyzers"])
    return out


def stale_evidence(meta: Mapping[str, Any], timeframes: Iterable[str]) -> list[str]:
    """The timeframes whose running analyzers (every analyzer on) differ from those the model was fitted on:
    its estimates describe other candidates there. A timeframe the model never saw is not listed (its cells
    are empty and shrink to the random-entry baseline)."""
    fitted = fitted_analyzers(meta)
    stale: list[str] = []
    for tf in timeframes:
        if tf in fitted and fitted[tf] != analyzers_fingerprint(build_analyzers("X", tf, AnalysisSettings())):
            stale.append(tf)
    return stale
