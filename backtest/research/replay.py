"""The study's events: analyzer candidates from the one analysis path, one per structure.

Candidates come from ``registry.build_engine`` + ``engine.step`` over the stream's closed candles, exactly
as live and in every backtest command (``StepResult.candidates``: every candidate of a candle, whatever
the gate decides). The event population is one candidate per structure and pattern
(:meth:`EventFilter.select`), among the candidates ``tracked`` admits (the population the evidence model
and the live track record count; every candidate by default):

- a candidate with a ``structure_id`` counts when it is the first of its pattern in that structure, so the
  same count found again at another pivot degree or on a later candle is one event, while a structure's
  different setups (a range's spring and its SOS; an impulse's wave-3 and wave-5 setups) are each studied;
- a candidate without one (analyzers that cannot name their structure) counts when no candidate of the
  same pattern and direction was seen in the previous ``decluster_bars`` candles of the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from src.analysis import timeframes
from src.analysis.engine import AnalysisSettings, SignalGate, step
from src.analysis.registry import build_engine
from src.analysis.types import Candle, Signal

PROGRESS_CHUNK = 5000


def replay_candidates(
    symbol: str,
    timeframe: str,
    candles: list[Candle],
    settings: AnalysisSettings,
    progress: Callable[[int], None] | None = None,
) -> list[Signal]:
    """Every candidate the analyzers produce over ``candles`` (ascending, closed)."""
    engine = build_engine(symbol, timeframe, settings)
    gate = SignalGate(settings)
    out: list[Signal] = []
    for i, candle in enumerate(candles, start=1):
        out.extend(step(engine, gate, candle).candidates)
        if progress is not None and (i % PROGRESS_CHUNK == 0 or i == len(candles)):
            progress(i % PROGRESS_CHUNK or PROGRESS_CHUNK)
    return out


def every_candidate(signal: Signal) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class EventFilter:
    """One event per structure and pattern (module docstring); ``patterns`` empty = every pattern."""

    timeframe: str
    decluster_bars: int
    patterns: frozenset[str] = frozenset()
    tracked: Callable[[Signal], bool] = field(default=every_candidate)

    def select(self, candidates: Iterable[Signal]) -> list[Signal]:
        """The events among ``candidates`` of one stream (in candle order)."""
        window_ms = self.decluster_bars * timeframes.interval_ms(self.timeframe)
        structures: set[tuple[str, str]] = set()
        last_seen: dict[tuple[str, str], int] = {}
        out: list[Signal] = []
        for s in candidates:
            if not self.tracked(s):
                continue
            if s.structure_id:
                first = (s.structure_id, s.pattern) not in structures
                structures.add((s.structure_id, s.pattern))
            else:
                key = (s.pattern, s.direction)
                prev = last_seen.get(key)
                first = prev is None or s.candle_time_ms - prev > window_ms
                last_seen[key] = s.candle_time_ms
            if first and (not self.patterns or s.pattern in self.patterns):
                out.append(s)
        return out
