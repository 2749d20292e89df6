"""A tiny stand-in for the evidence model of ``src.analysis.evidence`` (the issue-10 contract), for the product's
tests: the same method names and track-record fields, with trivially checkable numbers.

``FakeEvidenceModel.with_live`` returns a NEW model that remembers the live records it was given (so tests can
check what the bot folded in) and reports them in its track records, as the real model does; nothing here
estimates anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class FakeLiveRecord:
    n: int
    sum_r: float
    sum_r2: float
    wins: int


@dataclass(frozen=True, slots=True)
class FakeTrackRecord:
    pattern: str
    timeframe: str
    backtest_n: int = 100
    backtest_mean_r: float | None = 0.0
    backtest_ci: tuple[float, float] | None = (-0.2, 0.2)
    live_n: int = 0
    live_mean_r: float | None = None
    p_win: float | None = 0.45
    expected_r: float | None = -0.02
    expected_r_lo: float | None = -0.2
    expected_r_hi: float | None = 0.15


@dataclass(frozen=True)
class FakeEvidenceModel:
    version: str = "fake-1"
    cells: tuple[FakeTrackRecord, ...] = ()
    live: Mapping[tuple[str, str], Any] = field(default_factory=dict)

    def with_live(self, live: Mapping[tuple[str, str], Any]) -> FakeEvidenceModel:
        return replace(self, version=f"{self.version}+live", live=dict(live))

    def track_records(self) -> list[FakeTrackRecord]:
        out = []
        for cell in self.cells:
            rec = self.live.get((cell.pattern, cell.timeframe))
            if rec is not None and rec.n:
                cell = replace(cell, live_n=rec.n, live_mean_r=rec.sum_r / rec.n)
            out.append(cell)
        return out
