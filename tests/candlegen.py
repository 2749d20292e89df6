"""A tiny seeded random-walk candle generator for tests (no shared data needed)."""

from __future__ import annotations

import random

from src.analysis import timeframes
from src.analysis.types import Candle


def random_walk(
    n: int, *, symbol: str = "BTCUSDT", timeframe: str = "1m", start_ms: int = 1_700_006_400_000,  # 2023-11-15 00:00 UTC
    price: float = 100.0, seed: int = 1, vol: float = 0.002,
) -> list[Candle]:
    rng = random.Random(seed)
    out = []
    t = timeframes.bucket_start(timeframe, start_ms)
    for _ in range(n):
        o = price
        c = max(0.01, o * (1 + rng.gauss(0, vol)))
        h = max(o, c) * (1 + abs(rng.gauss(0, vol / 2)))
        lo = min(o, c) * (1 - abs(rng.gauss(0, vol / 2)))
        v = round(rng.uniform(1, 100), 3)
        out.append(Candle(symbol, timeframe, t, timeframes.close_time(timeframe, t), o, h, lo, c, v,
                          quote_volume=round(v * c, 4), trades=rng.randint(1, 500),
                          taker_buy_volume=round(v * rng.random(), 3), taker_buy_quote_volume=0.0))
        price = c
        t = timeframes.next_open(timeframe, t)
    return out
