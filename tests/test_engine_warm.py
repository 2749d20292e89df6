"""``AnalysisEngine.warm`` (the restart warm-up) leaves an engine exactly where ``on_candle`` leaves it: what it
skips (turning candidates into Signals) changes no state."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backtest import parity
from src.analysis.engine import AnalysisSettings, SignalGate, step
from src.analysis.registry import build_engine


@pytest.mark.parametrize("case", ["candlegen-15m", "wyckoff-accumulation-spring", "textbook-distribution", "elliott-62"])
def test_warming_with_warm_gives_the_same_later_candidates_and_states_as_on_candle(case: str) -> None:
    candles = parity.synthetic_cases()[case]()
    cut = len(candles) // 2
    settings = AnalysisSettings()
    plain = build_engine(candles[0].symbol, candles[0].timeframe, settings)
    warmed = build_engine(candles[0].symbol, candles[0].timeframe, settings)
    skipped = sum(len(plain.on_candle(c).signals) for c in candles[:cut])
    for c in candles[:cut]:
        warmed.warm(c)
    assert skipped > 0  # the warm half had candidates that warm() never built
    assert warmed.candles_seen == plain.candles_seen and warmed.last_open_time_ms == plain.last_open_time_ms
    gate_a, gate_b = SignalGate(settings), SignalGate(settings)
    later = 0
    for c in candles[cut:]:
        a, b = step(plain, gate_a, c), step(warmed, gate_b, c)
        assert [s.to_dict() for s in a.candidates] == [s.to_dict() for s in b.candidates]
        assert a.events == b.events
        later += len(a.candidates)
    assert later > 0
    assert plain.states() == warmed.states()


def test_warm_ignores_a_candle_it_has_seen_and_refuses_an_open_one() -> None:
    candles = parity.synthetic_cases()["candlegen-15m"]()[:50]
    eng = build_engine("BTCUSDT", "15m", AnalysisSettings())
    for c in candles:
        eng.warm(c)
    eng.warm(candles[10])
    assert eng.candles_seen == 50
    with pytest.raises(ValueError, match="closed"):
        eng.warm(replace(candles[-1], open_time_ms=candles[-1].open_time_ms + 900_000, closed=False))
