"""Which signals the trader acts on (issue 13, SPEC 5a): trade calls only, never gated candidates.

TRADING_ACT_ON=all also acts on watch notes in paper and demo mode (so the execution path can be exercised
when trade calls are rare); the configuration refuses it in live mode, and this rule refuses it again.
"""

from __future__ import annotations

from src.analysis.types import Signal


def acts_on(signal: Signal, mode: str, act_on: str) -> bool:
    if signal.kind == "trade":
        return True
    if signal.kind == "watch":
        return act_on == "all" and mode in ("paper", "demo")
    return False
