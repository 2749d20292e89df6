"""On driftless random walks (GBM with realistic volume) the default gate makes (almost) no trade calls."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backtest.synthetic import random_walk_candles
from src.analysis.engine import AnalysisSettings, SignalGate, replay
from src.analysis.evidence import ANY_TIMEFRAME, BaselineFit, EvidenceModel, Hyper
from src.analysis.registry import build_engine

SERIES = 3
BARS = 4000


def _trade_calls_per_1000_bars(timeframe: str, model: EvidenceModel | None) -> tuple[float, int]:
    settings = AnalysisSettings()
    calls = candidates = bars = 0
    for seed in range(SERIES):
        candles = random_walk_candles(10_000 + seed, BARS, symbol="NULLUSDT", timeframe=timeframe,
                                      step_ms=900_000 if timeframe == "15m" else 3_600_000)
        cands, emitted, _ = replay(candles, build_engine("NULLUSDT", timeframe, settings, model), SignalGate(settings))
        calls += sum(1 for s in emitted if s.kind == "trade")
        candidates += len(cands)
        bars += len(candles)
    return 1000 * calls / bars, candidates


@pytest.mark.parametrize("timeframe", ["15m", "1h"])
def test_the_default_gate_makes_at_most_one_trade_call_per_10000_random_walk_bars(timeframe):
    rate, candidates = _trade_calls_per_1000_bars(timeframe, None)
    assert candidates > 100, "the analyzers should still propose candidates on noise"
    assert rate <= 0.1


def test_the_null_check_would_catch_a_model_that_claims_an_edge_everywhere():
    base = EvidenceModel.uninformed()
    boastful = replace(
        base, version="boastful",
        baselines={ANY_TIMEFRAME: BaselineFit((("const", 1.0),), (("const", 2.0),), 1.5)},
        hyper=Hyper({ANY_TIMEFRAME: 0.0}, {ANY_TIMEFRAME: 0.0}, {ANY_TIMEFRAME: 0.0}, {ANY_TIMEFRAME: 0.0},
                    {ANY_TIMEFRAME: 1.0}, {ANY_TIMEFRAME: 1.0}),
    )
    rate, _ = _trade_calls_per_1000_bars("1h", boastful)
    assert rate > 0.1
