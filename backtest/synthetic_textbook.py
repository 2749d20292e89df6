"""An INDEPENDENT textbook-schematic generator, used only to check the Wyckoff detector (never tuned on).

Written before the detector rewrite of issue 12 and deliberately unlike ``backtest/synthetic.py`` and
``backtest/synthetic_wyckoff.py``:
prices are built in plain percentage space around a reference price (not log bridges), the noise is
an AR(1) process on closes with half-normal wicks (not Student-t sub-steps), volume is a gamma draw
times a 24-hour session profile (no volume-volatility coupling), and distribution is built by the
same schematic with the price axis reflected in percentage space (p = P (1 - x) instead of
P (1 + x)), which is NOT the detector's log mirror.

One 1h series = 120-200 bars of drifting noise, then the schematic, then 40-70 bars of trend:

- decline of 14-24 % into a selling climax: 1-2 bars on 3-5x volume, the last closing off its low;
- automatic rally of 6-12 % (the range height H) over 5-10 bars; its high is resistance;
- secondary test back to support + 0-12 % of H on 0.6-0.8x volume;
- 2-3 phase-B swings between support + 15 % and + 90 % of H, volume falling from 1.0x to 0.7x;
- spring: a bar whose low is 0.10-0.25 H under support, closing back inside the range on that bar
  or the next (1-2 bars), on 1.2-2x volume;
- a low-volume test (0.4-0.7x) a few bars later, holding above the spring low;
- sign of strength: the close crosses resistance by 0.3-0.8 % of price on 2-3x volume;
- last point of support: a pullback to resistance on 0.5-0.7x volume, then markup of 10-20 %.

Labels are (event, bar, confirmation bar): the spring is confirmed by the bar that closes back
inside; the SOS by its own breakout bar; SC/AR/ST/test/LPS by the bar itself (informational).
For distribution the same bars carry the names BC, AR, ST, UTAD, UTAD test, SOW, LPSY.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from src.analysis.types import Candle

HOUR_MS = 3_600_000
START_MS = 1_650_000_000_000 - (1_650_000_000_000 % HOUR_MS)
DIST_NAMES = {"sc": "bc", "ar": "ar", "st": "st", "spring": "utad", "test": "utad_test", "sos": "sow", "lps": "lpsy"}


@dataclass(frozen=True, slots=True)
class TextbookLabel:
    event: str
    bar: int
    confirm_bar: int


@dataclass(slots=True)
class TextbookSeries:
    side: str  # "accumulation" or "distribution"
    seed: int
    candles: list[Candle]
    labels: list[TextbookLabel] = field(default_factory=list)


class _Builder:
    """Bars in schematic coordinates x (fraction of the reference price above it)."""

    def __init__(self, rnd: random.Random, vol: float) -> None:
        self.rnd = rnd
        self.vol = vol  # per-bar close noise, fraction of price
        self.bars: list[tuple[float, float, float, float, float]] = []  # o, h, l, c (x units), volume mult
        self.x = 0.0
        self.ar_state = 0.0

    def noise(self) -> float:
        self.ar_state = 0.35 * self.ar_state + self.rnd.gauss(0.0, self.vol)
        return self.ar_state

    def wick(self) -> float:
        return abs(self.rnd.gauss(0.0, 0.6 * self.vol))

    def add(self, o: float, h: float, low: float, c: float, vmult: float) -> int:
        h = max(h, o, c)
        low = min(low, o, c)
        self.bars.append((o, h, low, c, vmult))
        self.x = c
        return len(self.bars) - 1

    def move(self, target: float, n: int, vmult: float, floor: float = -9.0, ceil: float = 9.0) -> list[int]:
        """n bars drifting linearly to ``target`` with AR(1) noise, closes kept inside [floor, ceil]."""
        idx = []
        start = self.x
        for k in range(1, n + 1):
            base = start + (target - start) * k / n
            c = base + (self.noise() if k < n else 0.0)
            c = min(ceil, max(floor, c))
            o = self.x
            h = min(ceil, max(o, c) + self.wick())
            low = max(floor, min(o, c) - self.wick())
            idx.append(self.add(o, h, low, c, vmult * self.rnd.uniform(0.85, 1.15)))
        return idx


def make(side: str, seed: int, symbol: str = "TEXTBOOK") -> TextbookSeries:
    """One textbook accumulation (``side="accumulation"``) or distribution; deterministic per (side, seed)."""
    if side not in ("accumulation", "distribution"):
        raise ValueError(f"side must be accumulation or distribution, got {side!r}")
    rnd = random.Random(f"textbook-{side}-{seed}")
    vol = rnd.uniform(0.0035, 0.0065)
    b = _Builder(rnd, vol)
    labels: list[tuple[str, int, int]] = []
    # lead-in: drifting noise (slightly up for accumulation so the decline is a real markdown)
    b.move(rnd.uniform(0.0, 0.04), rnd.randint(120, 200), 1.0)
    top = b.x
    decline = rnd.uniform(0.14, 0.24)
    S = top - decline
    H = rnd.uniform(0.06, 0.12)
    Rz = S + H
    # markdown into the climax
    b.move(S + rnd.uniform(0.015, 0.03), rnd.randint(35, 60), 1.15)
    o = b.x
    if rnd.random() < 0.5:  # one climax bar
        sc = b.add(o, o + b.wick(), S, S + rnd.uniform(0.2, 0.5) * (o - S), rnd.uniform(3.0, 5.0))
    else:  # two bars, the second makes the low and closes off it
        mid = o - 0.6 * (o - S)
        b.add(o, o + b.wick(), mid - b.wick(), mid, rnd.uniform(2.5, 4.0))
        sc = b.add(mid, mid + b.wick(), S, S + rnd.uniform(0.3, 0.6) * (mid - S), rnd.uniform(3.0, 5.0))
    labels.append(("sc", sc, sc))
    # automatic rally to resistance
    ar_bars = b.move(Rz - 0.15 * H, rnd.randint(4, 9), 1.6, floor=S + 0.02 * H, ceil=Rz)
    ar = b.add(b.x, Rz, b.x - 0.1 * H, Rz - rnd.uniform(0.05, 0.2) * H, 1.4)
    labels.append(("ar", ar, ar))
    del ar_bars
    # secondary test
    st_level = S + rnd.uniform(0.0, 0.12) * H
    b.move(st_level + 0.1 * H, rnd.randint(6, 11), 0.8, floor=S + 0.02 * H, ceil=Rz - 0.03 * H)
    st = b.add(b.x, b.x + b.wick(), st_level, st_level + rnd.uniform(0.03, 0.1) * H, rnd.uniform(0.6, 0.8))
    labels.append(("st", st, st))
    # phase B: 2-3 swings, volume falling
    swings = rnd.randint(2, 3)
    for k in range(swings):
        vm = 1.0 - 0.3 * k / max(1, swings - 1)
        b.move(S + rnd.uniform(0.6, 0.9) * H, rnd.randint(8, 16), vm, floor=S + 0.1 * H, ceil=Rz - 0.03 * H)
        b.move(S + rnd.uniform(0.15, 0.35) * H, rnd.randint(8, 16), vm * 0.9, floor=S + 0.1 * H, ceil=Rz - 0.03 * H)
    # spring: under support by 0.10-0.25 H, back inside on the same bar or the next
    b.move(S + rnd.uniform(0.04, 0.1) * H, rnd.randint(4, 8), 0.8, floor=S + 0.02 * H, ceil=Rz - 0.05 * H)
    depth = rnd.uniform(0.10, 0.25) * H
    o = b.x
    spring_vol = rnd.uniform(1.2, 2.0)
    if rnd.random() < 0.5:
        spring = b.add(o, o + b.wick(), S - depth, S + rnd.uniform(0.05, 0.2) * H, spring_vol)
        confirm = spring
    else:
        spring = b.add(o, o + b.wick(), S - depth, S - rnd.uniform(0.2, 0.6) * depth, spring_vol)
        c = S + rnd.uniform(0.08, 0.2) * H
        confirm = b.add(b.x, c + b.wick(), b.x - 0.1 * depth, c, rnd.uniform(1.0, 1.4))
    labels.append(("spring", spring, confirm))
    # test: a small rally, then a low-volume higher low
    b.move(S + rnd.uniform(0.3, 0.45) * H, rnd.randint(3, 6), 1.0, floor=S, ceil=Rz - 0.05 * H)
    test_level = S - depth + rnd.uniform(0.3, 0.8) * depth
    b.move(test_level + 0.05 * H, rnd.randint(3, 6), 0.55, floor=test_level, ceil=Rz - 0.05 * H)
    test = b.add(b.x, b.x + b.wick(), test_level, test_level + rnd.uniform(0.03, 0.08) * H, rnd.uniform(0.4, 0.7))
    labels.append(("test", test, test))
    # rally to the creek, then the SOS bar
    b.move(Rz - rnd.uniform(0.05, 0.15) * H, rnd.randint(6, 12), 1.1, floor=S + 0.1 * H, ceil=Rz - 0.02 * H)
    o = b.x
    sos_close = Rz + rnd.uniform(0.003, 0.008)
    sos = b.add(o, sos_close + b.wick(), o - b.wick(), sos_close, rnd.uniform(2.0, 3.0))
    labels.append(("sos", sos, sos))
    # a little more markup, then the LPS back to resistance, then markup
    b.move(Rz + rnd.uniform(0.2, 0.4) * H, rnd.randint(3, 6), 1.3, floor=Rz)
    lps_level = Rz + rnd.uniform(-0.05, 0.1) * H
    b.move(lps_level + 0.03 * H, rnd.randint(4, 8), 0.6, floor=lps_level)
    lps = b.add(b.x, b.x + b.wick(), lps_level, lps_level + 0.05 * H, rnd.uniform(0.5, 0.7))
    labels.append(("lps", lps, lps))
    b.move(Rz + rnd.uniform(0.10, 0.20), rnd.randint(40, 70), 1.2, floor=lps_level + 0.02 * H)
    candles = _render(b, rnd, side, symbol)
    names = DIST_NAMES if side == "distribution" else {k: k for k in DIST_NAMES}
    return TextbookSeries(side, seed, candles, [TextbookLabel(names[e], i, c) for e, i, c in labels])


def _render(b: _Builder, rnd: random.Random, side: str, symbol: str) -> list[Candle]:
    ref = math.exp(rnd.uniform(math.log(0.5), math.log(60_000.0)))
    sign = -1.0 if side == "distribution" else 1.0
    base_vol = rnd.uniform(500.0, 5000.0)
    hour0 = rnd.randrange(24)
    out: list[Candle] = []
    for k, (o, h, low, c, vm) in enumerate(b.bars):
        po, ph, pl, pc = (ref * (1.0 + sign * x) for x in (o, h, low, c))
        if sign < 0:
            ph, pl = pl, ph
        hour = (hour0 + k) % 24
        session = 1.0 + 0.35 * math.sin(2 * math.pi * (hour - 8) / 24)
        v = base_vol * vm * session * rnd.gammavariate(6.0, 1.0 / 6.0)
        t = START_MS + k * HOUR_MS
        out.append(Candle(symbol, "1h", t, t + HOUR_MS - 1, po, max(ph, po, pc), min(pl, po, pc), pc, round(v, 4)))
    return out
