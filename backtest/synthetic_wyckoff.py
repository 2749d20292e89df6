"""A broad, seeded family of Wyckoff structures with ground truth, for tuning and judging the detector.

Every series is drawn from randomised parameters (all in ATR units of the rendered bars, or in units of
the range height W; ATR ~ 1.6 x the per-bar volatility ``sigma``):

- context: ``reversal`` (a decline of 3-16 ATR into the range; distribution: an advance) or
  ``continuation`` (re-accumulation inside an uptrend: an advance of 6-16 ATR, a top, a reaction that
  becomes support, then the range; mirrored: re-distribution inside a downtrend);
- climax at the range's first low: 1-3 bars, spread 1-4.5 ATR, volume 1.5-6x (continuation ranges
  start with a top of 1.2-3x volume instead);
- range height W = 3-12 ATR and duration (range start to the breakout) 30-300 bars; the swings drift
  inside the range by -0.25..+0.25 W over its life (rising or falling lows and highs, kept inside the
  box set by the first low and the first high, so support and resistance stay horizontal: a sloping
  channel is a different reading and is not labelled here);
- phase B: 1-5 swings of random amplitude (lows at S + 0.05-0.45 W, highs at S + 0.55-0.97 W), random
  lengths; with probability 0.25 an upthrust (UA) pokes 0.1-1 ATR over resistance and closes back inside;
- phase C: a spring 0.05-0.4 W under support (reclaimed on the same bar or up to 2 bars later; volume
  0.5-2.5x) with or without a low-volume test, or NO spring (schematic #2: a higher low at
  S + 0.1-0.35 W, the "lps" variant);
- phase D: a sign of strength closing 0.2-1.2 ATR over resistance on 1.3-3.5x volume, a back-up / LPS
  on light volume, then markup of 1-2 W;
- volume: base x event multiplier x lognormal noise (s = 0.2-0.6) x (1 + beta |r| / sigma) with
  beta 0.5-2 (wide bars carry volume anyway), and 0-2 volume regime changes (the base level jumps by
  x0.5-2) anywhere in the series;
- 80-200 bars of random walk before the structure and 30-60 after it.

``side="distribution"`` renders the same structure with negated log prices (UTAD, SOW, LPSY ...).

Labels (:class:`Label`): event type (accumulation or distribution names), the event bar and the
confirmation bar: the reclaim close of a spring/UTAD, the breakout bar of an SOS/SOW, the bar after a
climax, and for swing events (AR, ST, test, LPS) the first bar 1.25 ATR off the extreme.

Seeds: :data:`TUNING_SEEDS` may be looked at while tuning; :data:`HELD_OUT_SEEDS` were scored by round 1's
final run (``benchmarks/detection.py --split held-out``) and looked at while round 2 was tuned, so they are
no longer fresh; :data:`FRESH_SEEDS` (``--split fresh``) were scored only by round 2's final run and must
never drive a change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from src.analysis.types import Candle

HOUR_MS = 3_600_000
TUNING_SEEDS = range(0, 400)
HELD_OUT_SEEDS = range(700_000, 700_400)
FRESH_SEEDS = range(900_000, 900_400)
SIDES = ("accumulation", "distribution")
VARIANTS = ("spring_test", "spring", "lps", "reaccumulation")
MIRROR = {"sc": "bc", "ar": "ar", "st": "st", "spring": "utad", "test": "utad_test", "lps_c": "lpsy_c", "sos": "sow",
          "lps": "lpsy", "ua": "msow"}
SWING_K = 1.25


@dataclass(frozen=True, slots=True)
class Label:
    type: str
    bar: int
    confirm: int


@dataclass(slots=True)
class WyckoffSeries:
    side: str
    variant: str
    seed: int
    candles: list[Candle]
    labels: list[Label] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)


class _Bars:
    """Log-price bars (o, h, l, c) with a volume multiplier each; Student-t bridges with 8 sub-steps."""

    def __init__(self, rng: np.random.Generator, sigma: float) -> None:
        self.rng = rng
        self.sigma = sigma
        self.o: list[float] = []
        self.h: list[float] = []
        self.lo: list[float] = []
        self.c: list[float] = []
        self.m: list[float] = []

    @property
    def n(self) -> int:
        return len(self.c)

    @property
    def last(self) -> float:
        return self.c[-1] if self.c else 0.0

    def _t(self, size: int) -> np.ndarray:
        return np.asarray(self.rng.standard_t(4, size=size) / np.sqrt(2.0))

    def bar(self, o: float, c: float, mult: float, lo_clip: float = -np.inf, hi_clip: float = np.inf) -> int:
        walk = o + np.cumsum(self._t(8) * self.sigma / np.sqrt(8))
        walk += (c - walk[-1]) * np.arange(1, 9) / 8
        h = min(hi_clip, max(o, c, float(walk.max())))
        low = max(lo_clip, min(o, c, float(walk.min())))
        return self.exact(o, h, low, c, mult)

    def exact(self, o: float, h: float, low: float, c: float, mult: float) -> int:
        self.o.append(o)
        self.h.append(max(h, o, c))
        self.lo.append(min(low, o, c))
        self.c.append(c)
        self.m.append(mult)
        return self.n - 1

    def walk(self, n: int) -> None:
        for _ in range(n):
            self.bar(self.last, self.last + float(self._t(1)[0]) * self.sigma, 1.0)

    def leg(self, target: float, bars: int, mult: float, lo: float = -np.inf, hi: float = np.inf,
            noise: float = 0.8) -> tuple[int, int]:
        """A noisy bridge to ``target``; closes clipped into [lo, hi] (wicks too)."""
        bars = max(1, bars)
        start, x0 = self.n, self.last
        path = x0 + np.cumsum(self._t(bars) * self.sigma * noise)
        path += (target - path[-1]) * np.arange(1, bars + 1) / bars
        prev = x0
        for k in range(bars):
            c = min(hi, max(lo, float(path[k])))
            self.bar(prev, c, mult * float(self.rng.uniform(0.8, 1.2)), lo, hi)
            prev = c
        return start, self.n

    def extreme(self, span: tuple[int, int], high: bool) -> int:
        a, b = span
        seg = self.h[a:b] if high else self.lo[a:b]
        return a + int(np.argmax(seg) if high else np.argmin(seg))


def _swing_confirm(b: _Bars, bar: int, high: bool, atr: float) -> int:
    for j in range(bar + 1, b.n):
        if high and b.lo[j] <= b.h[bar] - SWING_K * atr:
            return j
        if not high and b.h[j] >= b.lo[bar] + SWING_K * atr:
            return j
    return b.n - 1


def generate(side: str, variant: str, seed: int, *, sigma: float = 0.004, symbol: str = "SYNW",
             timeframe: str = "1h", start_ms: int = 1_600_000_000_000 - (1_600_000_000_000 % HOUR_MS),
             step_ms: int = HOUR_MS, base_price: float = 100.0) -> WyckoffSeries:
    """One labelled structure; the same (side, variant, seed) always gives the same candles."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    rng = np.random.default_rng([seed, SIDES.index(side), VARIANTS.index(variant), 12])
    b = _Bars(rng, sigma)
    atr = 1.6 * sigma
    labels: list[tuple[str, int, int]] = []
    b.walk(int(rng.integers(80, 200)))
    W = float(rng.uniform(3.0, 12.0)) * atr
    duration = int(rng.integers(30, 301))
    drift = float(rng.uniform(-0.25, 0.25)) * W
    params: dict[str, float] = {"w_atr": W / atr, "duration": float(duration), "drift_w": drift / W}
    if variant == "reaccumulation":
        advance = float(rng.uniform(6.0, 16.0)) * atr
        top = b.last + advance
        b.leg(top - 0.3 * atr, int(rng.integers(25, 60)), 1.1)
        t_top = b.exact(b.last, top, b.last - 0.3 * atr, top - 0.4 * atr, float(rng.uniform(1.2, 3.0)))
        Rz, S = top, top - W
        start = t_top
        a_span = b.leg(S + 0.02 * W, int(rng.integers(5, 15)), 1.2, lo=S, hi=Rz)
        labels.append(("ar", b.extreme(a_span, False), -1))
        params["prior_atr"] = advance / atr
    else:
        decline = float(rng.uniform(3.0, 16.0)) * atr
        S = b.last - decline
        Rz = S + W
        spread = float(rng.uniform(1.0, 4.5)) * atr
        b.leg(S + spread, int(rng.integers(15, 50)), 1.0)
        n_cl = int(rng.integers(1, 4))
        cl_rv = float(rng.uniform(1.5, 6.0))
        for k in range(n_cl):  # the cluster walks down to S; the last bar makes the low
            o = b.last
            low = S if k == n_cl - 1 else o - spread / n_cl
            close = low + float(rng.uniform(0.05, 0.5)) * (o - low + 0.2 * atr) if k == n_cl - 1 else low + 0.1 * atr
            sc = b.exact(o, o + 0.1 * atr, low, close, cl_rv * (1.0 if k == n_cl - 1 else 0.7))
        labels.append(("sc", sc, sc + 1))
        start = sc
        ar_span = b.leg(Rz - 0.02 * W, int(rng.integers(4, 14)), 1.3, lo=S + 0.03 * W, hi=Rz)
        ar = b.exact(b.last, Rz, b.last - 0.2 * atr, Rz - float(rng.uniform(0.3, 0.8)) * atr, 1.2)
        labels.append(("ar", max(ar, b.extreme((ar_span[0], ar + 1), True)), -1))
        st_lv = S + float(rng.uniform(0.02, 0.3)) * W
        st_span = b.leg(st_lv, int(rng.integers(5, 16)), float(rng.uniform(0.5, 0.9)), lo=st_lv, hi=Rz - 0.03 * W)
        labels.append(("st", b.extreme(st_span, False), -1))
        params["prior_atr"] = decline / atr
        params["climax_rv"] = cl_rv
        params["climax_spread_atr"] = spread / atr

    def lvl(x: float) -> float:
        """Range coordinate x (0 = support, 1 = resistance) at the current bar, drifted, kept inside the box."""
        y = x * W + drift * min(1.0, (b.n - start) / duration)
        return S + min(0.985 * W, max(0.02 * W, y))

    # phase B swings, filling the planned duration minus phase C/D
    end_b = start + max(12, duration - int(rng.integers(10, 25)))
    swings = int(rng.integers(1, 6))
    per = max(4, (end_b - b.n) // (2 * swings))
    vol_b = float(rng.uniform(0.8, 1.2))
    for k in range(swings):
        hi_x = float(rng.uniform(0.55, 0.97))
        b.leg(lvl(hi_x), max(3, int(per * rng.uniform(0.6, 1.4))), vol_b, lo=lvl(0.03), hi=lvl(0.985))
        if rng.random() < 0.25 and k == swings - 1 and variant != "reaccumulation":
            o = b.last
            ua_h = lvl(1.0) + float(rng.uniform(0.1, 1.0)) * atr
            ua = b.exact(o, ua_h, o - 0.2 * atr, min(lvl(0.97), o + 0.1 * atr), float(rng.uniform(1.0, 2.0)))
            labels.append(("ua", ua, ua))
        lo_x = float(rng.uniform(0.05, 0.45))
        vol_b *= float(rng.uniform(0.75, 1.0))
        b.leg(lvl(lo_x), max(3, int(per * rng.uniform(0.6, 1.4))), vol_b, lo=lvl(0.03), hi=lvl(0.985))
    while b.n < end_b:  # stretch to the planned length with drifting mid-range noise
        b.leg(lvl(float(rng.uniform(0.3, 0.7))), min(8, end_b - b.n), vol_b, lo=lvl(0.05), hi=lvl(0.95))
    # phase C
    if variant in ("spring", "spring_test") or (variant == "reaccumulation" and rng.random() < 0.5):
        b.leg(lvl(float(rng.uniform(0.05, 0.15))), int(rng.integers(3, 8)), 0.8, lo=lvl(0.03), hi=lvl(0.95))
        depth = float(rng.uniform(0.05, 0.4)) * W
        depth = max(depth, 0.3 * atr)  # a poke under 0.3 ATR is noise, not a spring anyone labels
        s_now = S
        o = b.last
        rv = float(rng.uniform(0.5, 2.5))
        reclaim = int(rng.choice([0, 0, 1, 2]))
        if reclaim == 0:
            sp = b.exact(o, o + 0.15 * atr, s_now - depth, s_now + float(rng.uniform(0.2, 0.8)) * atr, rv)
            conf = sp
        else:
            sp = b.exact(o, o + 0.1 * atr, s_now - depth, s_now - float(rng.uniform(0.2, 0.7)) * depth, rv)
            for k in range(reclaim):
                last = k == reclaim - 1
                c = s_now + float(rng.uniform(0.2, 0.8)) * atr if last else s_now - float(rng.uniform(0.1, 0.5)) * depth
                conf = b.exact(b.last, max(b.last, c) + 0.2 * atr, max(s_now - depth + 0.05 * atr, min(b.last, c) - 0.2 * atr), c,
                               float(rng.uniform(0.8, 1.5)))
        labels.append(("spring", sp, conf))
        params["spring_depth_w"] = depth / W
        low = s_now - depth
        if variant == "spring_test" or rng.random() < 0.3:
            b.leg(low + float(rng.uniform(1.8, 3.0)) * atr, int(rng.integers(3, 7)), 1.0, lo=low + 0.3 * atr, hi=lvl(0.9))
            t_lv = low + float(rng.uniform(0.1, 0.7)) * atr
            t_span = b.leg(t_lv, int(rng.integers(3, 8)), float(rng.uniform(0.35, 0.7)), lo=t_lv, hi=lvl(0.9))
            labels.append(("test", b.extreme(t_span, False), -1))
    else:
        hl = lvl(float(rng.uniform(0.1, 0.35)))
        c_span = b.leg(hl, int(rng.integers(6, 14)), float(rng.uniform(0.4, 0.75)), lo=hl, hi=lvl(0.95))
        labels.append(("lps_c", b.extreme(c_span, False), -1))
    # phase D: rally to the creek, the SOS bar, the back-up, markup
    b.leg(Rz - float(rng.uniform(0.2, 0.6)) * atr, int(rng.integers(5, 15)), 1.1, lo=lvl(0.05), hi=Rz - 0.1 * atr)
    rz_now = Rz
    o = b.last
    sos_c = rz_now + float(rng.uniform(0.2, 1.2)) * atr
    sos = b.exact(o, sos_c + float(rng.uniform(0.0, 0.3)) * atr, min(o, sos_c - float(rng.uniform(1.0, 2.5)) * atr),
                  sos_c, float(rng.uniform(1.3, 3.5)))
    labels.append(("sos", sos, sos))
    up = sos_c + float(rng.uniform(1.5, 3.5)) * atr
    b.leg(up, int(rng.integers(3, 8)), 1.3, lo=rz_now)
    lps_lv = rz_now + float(rng.uniform(-0.4, 0.6)) * atr
    l_span = b.leg(lps_lv, int(rng.integers(3, 9)), float(rng.uniform(0.4, 0.7)), lo=lps_lv, hi=up)
    labels.append(("lps", b.extreme(l_span, False), -1))
    b.leg(rz_now + float(rng.uniform(1.0, 2.0)) * W, int(rng.integers(15, 40)), 1.2, lo=lps_lv + 0.3 * atr)
    b.walk(int(rng.integers(30, 61)))
    mirror = side == "distribution"
    out = []
    for t, bar, conf in labels:
        if conf < 0:
            conf = _swing_confirm(b, bar, t == "ar" and variant != "reaccumulation", atr)
        out.append(Label(MIRROR.get(t, t) if mirror else t, bar, conf))
    candles = _render(b, rng, mirror, symbol, timeframe, start_ms, step_ms, base_price)
    return WyckoffSeries(side, variant, seed, candles, out, params)


def _render(b: _Bars, rng: np.random.Generator, mirror: bool, symbol: str, timeframe: str, start_ms: int,
            step_ms: int, base_price: float) -> list[Candle]:
    n = b.n
    s = float(rng.uniform(0.2, 0.6))
    beta = float(rng.uniform(0.5, 2.0))
    eps = rng.normal(0.0, s, size=n)
    base = np.ones(n)
    for _ in range(int(rng.integers(0, 3))):  # volume regime changes
        k = int(rng.integers(1, n))
        base[k:] *= float(rng.uniform(0.5, 2.0))
    sign = -1.0 if mirror else 1.0
    out: list[Candle] = []
    prev_c = b.o[0]
    for k in range(n):
        o, h, low, c = (sign * x for x in (b.o[k], b.h[k], b.lo[k], b.c[k]))
        if mirror:
            h, low = low, h
        r = abs(b.c[k] - prev_c) / b.sigma
        prev_c = b.c[k]
        vol = 1000.0 * base[k] * b.m[k] * math.exp(float(eps[k])) * (1.0 + beta * min(r, 6.0))
        t = start_ms + k * step_ms
        out.append(Candle(symbol=symbol, timeframe=timeframe, open_time_ms=t, close_time_ms=t + step_ms - 1,
                          open=base_price * math.exp(float(o)), high=base_price * math.exp(float(h)),
                          low=base_price * math.exp(float(low)), close=base_price * math.exp(float(c)),
                          volume=round(vol, 6)))
    return out
