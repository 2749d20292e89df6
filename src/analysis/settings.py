"""Analysis and gate switches (SPEC 3, 5, 5a); the configuration builds one, the engine and gate read it.

Defaults are the product's defaults (chosen on measured data, see docs/analysis.md "The gate"):

- ``min_confidence`` 0.9: a TRADE call needs ``Signal.confidence`` >= 0.9: by the evidence model, the average
  net R after fees of 20 signals like it is above 0 with probability >= 0.9, i.e. the lower end of the 80 %
  interval shown with the signal lies above 0 R (src/analysis/evidence.py);
- ``trade_min_rr`` 1.0: reward/risk to the first target a trade call needs;
- ``watch_min_rr`` 1.0: below it a candidate is not even a watch note (a first target at 0.03 R is no setup);
- ``watch_min_score`` 0.65: the analyzer raw score a watch note needs. The raw score does NOT predict net R
  (docs/analysis.md); this floor only keeps the number of watch notes a channel can bear (about 2 a week per
  symbol on 15m, 0.5 on 1h, 0.1 on 4h on BTC/ETH 2023-2025H1);
- ``cooldown_candles`` 12 per (symbol, timeframe, direction); ``cooldown_seconds`` (SIGNAL_COOLDOWN_SECONDS)
  is still accepted: the effective cooldown is the longer of the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from src.analysis.pickling import register_frozen


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """Analysis switches and gate thresholds; see the module docstring for the meaning of each."""

    min_confidence: float = 0.9
    enable_wyckoff: bool = True
    enable_elliott: bool = True
    cooldown_seconds: int = 0
    trade_min_rr: float = 1.0
    watch_min_rr: float = 1.0
    watch_min_score: float = 0.65
    cooldown_candles: int = 12

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.min_confidence <= 1.0:
            problems.append(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if not self.trade_min_rr >= 0 or not self.watch_min_rr >= 0:
            problems.append(f"trade_min_rr and watch_min_rr must be >= 0, got {self.trade_min_rr}, {self.watch_min_rr}")
        if not 0.0 <= self.watch_min_score <= 1.0:
            problems.append(f"watch_min_score must be in [0, 1], got {self.watch_min_score}")
        if self.cooldown_candles < 0 or self.cooldown_seconds < 0:
            problems.append("cooldown_candles and cooldown_seconds must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))


register_frozen(AnalysisSettings)

