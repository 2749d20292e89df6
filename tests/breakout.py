"""A deliberately simple, deterministic analyzer for pipeline tests (not a product analyzer).

It proposes LONG ``test_breakout`` when a close exceeds the highest high of the previous 20 candles.
"""

from __future__ import annotations

from collections import deque

from src.analysis.engine import AnalysisEngine, AnalysisSettings, AnalyzerOutput
from src.analysis.types import AnalysisEvent, AnalyzerState, Candle, SignalCandidate


class BreakoutAnalyzer:
    name = "breakout"

    def __init__(self, lookback: int = 20, pattern: str = "test_breakout") -> None:
        self.lookback = lookback
        self.pattern = pattern
        self.name = "breakout" if pattern == "test_breakout" else f"breakout_{pattern}"
        self.highs: deque[float] = deque(maxlen=lookback)
        self.last: Candle | None = None

    def on_candle(self, candle: Candle) -> AnalyzerOutput:
        out = AnalyzerOutput()
        if len(self.highs) == self.lookback and candle.close > max(self.highs):
            top = max(self.highs)
            stop = min(candle.low, top * 0.99)
            risk = candle.close - stop
            out.candidates.append(SignalCandidate(
                analyzer=self.name, pattern=self.pattern, direction="LONG", raw_score=0.8, entry=candle.close,
                stop_loss=stop, take_profits=(candle.close + 2 * risk,), reasons=(f"close {candle.close:.2f} > {top:.2f}",),
            ))
            out.events.append(AnalysisEvent("wyckoff_event", "breakout", candle.symbol, candle.timeframe,
                                            candle.open_time_ms, candle.open_time_ms, candle.close))
        self.highs.append(candle.high)
        self.last = candle
        return out

    def state(self) -> AnalyzerState:
        return AnalyzerState(self.name, f"{len(self.highs)} highs tracked")

    def params_fingerprint(self) -> str:
        return f"lookback={self.lookback}" if self.pattern == "test_breakout" else f"lookback={self.lookback},{self.pattern}"


def breakout_engine(symbol: str, timeframe: str, settings: AnalysisSettings | None = None) -> AnalysisEngine:
    return AnalysisEngine(symbol, timeframe, [BreakoutAnalyzer()], settings or AnalysisSettings(cooldown_seconds=0))


def twin_breakout_engine(symbol: str, timeframe: str, settings: AnalysisSettings | None = None) -> AnalysisEngine:
    """Two signals on every breakout candle (patterns ``test_breakout`` and ``test_breakout_twin``)."""
    return AnalysisEngine(symbol, timeframe, [BreakoutAnalyzer(), BreakoutAnalyzer(pattern="test_breakout_twin")],
                          settings or AnalysisSettings(cooldown_seconds=0))
