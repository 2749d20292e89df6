"""Builds the analysis engine for one (symbol, timeframe): the only place that knows which analyzers exist."""

from __future__ import annotations

from src.analysis.elliott import ElliottAnalyzer
from src.analysis.engine import AnalysisEngine, AnalysisSettings, Analyzer
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
