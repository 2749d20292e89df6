"""A tiny DSL to hand-build candle sequences for the Wyckoff unit tests (no randomness)."""

from __future__ import annotations

from src.analysis.types import Candle

HOUR = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % HOUR)


class Tape:
    """Appends candles: ``walk`` moves linearly to a price, ``bar`` adds one exact candle."""

    def __init__(self, price: float = 100.0, symbol: str = "TESTUSDT") -> None:
        self.symbol = symbol
        self.candles: list[Candle] = []
        self.price = price
        self.marks: dict[str, int] = {}

    def bar(self, o: float, h: float, low: float, c: float, v: float = 1000.0) -> Tape:
        t = T0 + len(self.candles) * HOUR
        self.candles.append(Candle(self.symbol, "1h", t, t + HOUR - 1, o, max(h, o, c), min(low, o, c), c, v))
        self.price = c
        return self

    def quiet(self, n: int, v: float = 1000.0) -> Tape:
        """n bars oscillating +-0.4 around the current price with a 1.2 range."""
        base = self.price
        for k in range(n):
            c = base + (0.4 if k % 2 else -0.4)
            self.bar(self.price, max(self.price, c) + 0.4, min(self.price, c) - 0.4, c, v)
        return self

    def walk(self, to: float, n: int, v: float = 1000.0, wick: float = 0.4) -> Tape:
        start = self.price
        for k in range(1, n + 1):
            c = start + (to - start) * k / n
            self.bar(self.price, max(self.price, c) + wick, min(self.price, c) - wick, c, v)
        return self

    def mark(self, name: str) -> Tape:
        self.marks[name] = len(self.candles) - 1
        return self

    def time(self, name: str) -> int:
        return self.candles[self.marks[name]].open_time_ms


def accumulation_tape(*, spring: str = "reclaimed", sos_volume: float = 3500.0, sos_fails: bool = False,
                      absorb: bool = False, climax_volume: float = 4500.0) -> Tape:
    """Markdown -> SC -> AR -> ST -> phase B -> spring -> test -> SOS -> BU -> markup, around 78-86.

    ``spring``: "reclaimed" (close back above support on the same bar), "lost" (no reclaim: it
    keeps falling) or "none" (no spring at all). ``sos_volume`` sets the breakout bar's volume;
    ``sos_fails`` drops price back into the range right after the breakout. ``absorb`` makes the
    second phase-B down-leg heavy (1400) but short (1.9 instead of 4.3 price units): effort without result.
    ``climax_volume`` sets the selling climax's volume (1000 = an ordinary bar: no climax at all).
    """
    t = Tape(100.0)
    t.quiet(60)
    t.walk(84.0, 30)
    t.bar(84.0, 84.2, 78.0, 78.6, climax_volume).mark("sc")  # selling climax: 6 wide, RV 4.5, closes low
    t.bar(78.6, 81.8, 78.4, 81.5, 2200 if climax_volume > 1000 else 1000)  # closes above the climax midpoint
    t.walk(85.6, 5, 1300)
    t.bar(85.6, 86.3, 85.2, 85.5, 1200).mark("ar")  # AR high 86.3
    t.walk(79.0, 8, 700)
    t.bar(79.0, 79.3, 78.5, 79.2, 650).mark("st")  # ST low 78.5 on light volume
    t.walk(84.5, 8, 900).walk(80.5, 8, 800).walk(84.5, 8, 900)
    if absorb:
        t.walk(82.6, 8, 1400).mark("absorption").walk(84.0, 4, 800)
    else:
        t.walk(80.0, 8, 650)
    if spring == "none":
        t.walk(84.0, 8, 900).walk(81.5, 6, 600)
    elif spring == "lost":
        t.walk(78.6, 4, 700)
        t.bar(78.6, 78.8, 77.2, 77.4, 900).mark("spring")  # under support, closes under it ...
        t.walk(74.0, 6, 1200).walk(70.0, 10, 1000)  # ... and never comes back
        return t
    else:
        t.walk(78.6, 4, 700)
        t.bar(78.6, 78.9, 77.3, 78.6, 800).mark("spring")  # 0.7 under support 78.0, closes back above it
        t.walk(80.6, 3, 900)
        t.walk(78.3, 3, 500)
        t.bar(78.3, 78.5, 77.8, 78.4, 450).mark("test")  # test: higher low 77.8 on half the volume
        t.walk(84.8, 8, 1000)
    t.bar(84.8, 88.0, 84.6, 87.8, sos_volume).mark("sos")  # breakout over 86 on heavy volume
    if sos_fails:
        t.walk(83.0, 3, 1200).walk(81.0, 6, 800)
        return t
    t.walk(89.5, 3, 1500)
    t.walk(86.6, 4, 500)
    t.bar(86.6, 86.8, 86.1, 86.5, 450).mark("lps")  # back-up to the creek on light volume
    t.walk(95.0, 12, 1300)
    t.quiet(10)
    return t
