"""Constructive Elliott-wave series with labelled pivots, hard negatives and null random walks.

Generation (ANALYSIS-NOTES 4.2, Elliott generator), all in log price, seeded and deterministic:

1. Wave ratios are SAMPLED from the guideline distributions, then the hard rules are enforced by
   construction (never by rejecting uniform points):
   r2 = L2/L1 ~ mixture around 0.5 / 0.618 inside [0.35, 0.8]; e3 = L3/L1 ~ mixture at 1.618 / 2.618;
   r4 = L4/L3 ~ around 0.382 inside [0.2, 0.5]; wave 5 ~ L1 (3 extended) or 0.618 x (P3 - P0).
   Durations: T1 ~ U[8, 14] bars, T2 ~ T1 x U[0.6, 1.2], T3 ~ T1 x e3^0.5, T4 ~ T2 x U[1.0, 2.0], T5 ~ T1 x U[0.8, 1.3].
2. ``depth=2`` subdivides motive waves 1, 3, 5 into 5 sub-waves and waves 2, 4 into a 3-wave zigzag,
   with the same samplers at the lower scale (sub-waves >= 3 bars).
3. Bars between consecutive anchors follow a Brownian bridge in log price (12 sub-steps per bar, so
   OHLC are mutually consistent) with per-bar volatility ``noise`` x L1 / sqrt(T1): the signal-to-noise
   ratio is set relative to wave 1's size. A GBM lead-in (with a counter-trend drift into wave 0) and
   a GBM tail surround the pattern; an A-B-C zigzag correcting 38-62 % of the impulse follows it.
4. Volume: V = 1000 * m_wave * (1 + beta * |r| / sigma) * exp(eps), eps ~ N(0, 0.35^2), beta = 1;
   m_wave = 1.3 in waves 3, 1.1 in 1 and 5, 0.8 in corrections, 1.0 elsewhere (a volume-volatility
   coupling is always present, so volume evidence is not trivially clean).

Hard negatives (one rule broken on purpose, everything else identical): "overlap" (wave 4 ends
5-20 % of L1 inside wave 1), "short3" (wave 3 the shortest, 5-20 % shorter than waves 1 and 5),
"deep2" (wave 2 ends 3-10 % of L1 beyond wave 1's origin).

Labels: each anchor (label "0".."5", "A", "B", "C") with its bar index, price and kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from src.analysis.types import Candle

HOUR_MS = 3_600_000
NegativeKind = Literal["overlap", "short3", "deep2"]


@dataclass(frozen=True, slots=True)
class Anchor:
    """A labelled turning point: bar index in the series, log price, 'high' or 'low', label."""

    index: int
    level: float
    kind: str
    label: str


@dataclass(slots=True)
class SyntheticSeries:
    candles: list[Candle]
    anchors: list[Anchor] = field(default_factory=list)  # the top-degree labelled pivots
    direction: int = 1
    kind: str = "impulse"  # "impulse", a NegativeKind, or "null"

    @property
    def impulse_anchors(self) -> list[Anchor]:
        return [a for a in self.anchors if a.label in {"0", "1", "2", "3", "4", "5"}]


def _mixture(rng: np.random.Generator, modes: Sequence[float], sd: float, lo: float, hi: float) -> float:
    for _ in range(100):
        v = float(rng.normal(modes[int(rng.integers(len(modes)))], sd))
        if lo <= v <= hi:
            return v
    return float(np.clip(modes[0], lo, hi))


def sample_impulse(rng: np.random.Generator, negative: NegativeKind | None = None) -> tuple[list[float], list[int]]:
    """Up-oriented impulse: 6 levels (P0 = 0, L1 = 1) and 5 durations in bars, rules enforced
    (or exactly one broken for a hard negative)."""
    r2 = _mixture(rng, (0.5, 0.618), 0.05, 0.35, 0.8)
    e3 = _mixture(rng, (1.618, 2.618), 0.15, 1.2, 3.2)
    r4 = _mixture(rng, (0.382,), 0.07, 0.2, 0.5)
    L1, L2, L3 = 1.0, r2, e3
    if negative == "short3":
        L3 = float(rng.uniform(0.8, 0.95))  # 5-20 % shorter than wave 1 ...
        L2 = min(r2, 0.6 * L3)  # ... still beyond wave 1's end (rule I2 holds)
    elif negative == "deep2":
        L2 = 1.0 + float(rng.uniform(0.03, 0.1))  # wave 2 ends beyond wave 1's origin
        L3 = max(L3, L2 + 1.2)
    L4 = min(r4 * L3, 0.9 * (L3 - L2))  # P4 stays above P1 (rule I4)
    # wave 5: ~L1 when wave 3 extended, else ~0.618 x (P3 - P0); never truncated
    L5 = float(rng.uniform(0.8, 1.1)) if L3 >= 1.618 else 0.618 * (L1 - L2 + L3) * float(rng.uniform(0.9, 1.1))
    L5 = max(L5, L4 + 0.15)
    if negative == "overlap":
        L4 = L3 - L2 + float(rng.uniform(0.05, 0.2))  # P4 = P1 - 5..20 % of L1
        L5 = max(L5, L4 + 0.3)
    elif negative == "short3":
        L5 = L3 / float(rng.uniform(0.8, 0.95))  # ... and than wave 5
    lv = [0.0, L1, L1 - L2, L1 - L2 + L3, L1 - L2 + L3 - L4, L1 - L2 + L3 - L4 + L5]
    t1 = int(rng.integers(8, 15))
    t2 = max(4, round(t1 * float(rng.uniform(0.6, 1.2))))
    t3 = max(6, round(t1 * math.sqrt(max(L3, 1.0))))
    t4 = max(4, round(t2 * float(rng.uniform(1.0, 2.0))))
    t5 = max(5, round(t1 * float(rng.uniform(0.8, 1.3))))
    return lv, [t1, t2, t3, t4, t5]


def _subdivide(
    rng: np.random.Generator, lv: Sequence[float], dur: Sequence[int]
) -> tuple[list[float], list[int], list[int]]:
    """Replace each wave by 5 (motive) or 3 (corrective zigzag) sub-waves when it is long enough.

    Returns (levels, durations, positions in levels of the top-degree pivots 1..5)."""
    out_lv: list[float] = [lv[0]]
    out_dur: list[int] = []
    top: list[int] = []
    for w in range(len(dur)):
        a, b, n = lv[w], lv[w + 1], dur[w]
        d = b - a
        sub_lv: list[float]
        if w % 2 == 0 and n >= 15:
            sub, sd = sample_impulse(rng)
            sub_lv = [a + d * s / sub[5] for s in sub[1:]]
            weights = np.array(sd, dtype=float)
        elif w % 2 == 1 and n >= 9:
            ra, rb = float(rng.uniform(0.55, 0.7)), float(rng.uniform(0.4, 0.6))
            p1 = a + ra * d
            sub_lv = [p1, p1 - rb * ra * d, b]
            weights = np.array([1.0, 0.6, 1.0])
        else:
            sub_lv, weights = [b], np.array([1.0])
        parts = np.maximum(3, np.round(weights / weights.sum() * n)).astype(int) if len(sub_lv) > 1 else np.array([n])
        out_lv.extend(sub_lv)
        out_dur.extend(int(x) for x in parts)
        top.append(len(out_lv) - 1)
    return out_lv, out_dur, top


def _bridge(rng: np.random.Generator, a: float, b: float, n_bars: int, sigma: float, sub: int) -> np.ndarray:
    """Log-price Brownian bridge from a to b over n_bars * sub steps (first point excluded)."""
    m = n_bars * sub
    steps = rng.standard_normal(m) * sigma / math.sqrt(sub)
    walk = np.cumsum(steps)
    t = np.arange(1, m + 1) / m
    path: np.ndarray = a + (b - a) * t + walk - t * walk[-1]
    return path


@dataclass(slots=True)
class _Builder:
    rng: np.random.Generator
    sigma: float
    symbol: str = "SYNUSDT"
    timeframe: str = "1h"
    sub: int = 12
    bars: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    level: float = math.log(100.0)

    def leg(self, target: float, n: int, vol_mult: float = 1.0, bridge: bool = True, drift_only: bool = False) -> None:
        if drift_only:
            path = self.level + np.cumsum(self.rng.standard_normal(n * self.sub) * self.sigma / math.sqrt(self.sub))
            path += np.linspace(0, target - self.level, n * self.sub + 1)[1:]
        else:
            path = _bridge(self.rng, self.level, target, n, self.sigma, self.sub)
        prev = self.level
        for i in range(n):
            seg = path[i * self.sub : (i + 1) * self.sub]
            o, c = prev, float(seg[-1])
            h, lo = max(o, float(seg.max())), min(o, float(seg.min()))
            r = abs(c - o)
            v = 1000.0 * vol_mult * (1.0 + r / max(self.sigma, 1e-12)) * math.exp(float(self.rng.normal(0, 0.35)))
            self.bars.append((o, h, lo, c, v))
            prev = c
        self.level = prev

    def candles(self) -> list[Candle]:
        out = []
        for i, (o, h, lo, c, v) in enumerate(self.bars):
            t = i * HOUR_MS
            out.append(Candle(self.symbol, self.timeframe, t, t + HOUR_MS - 1, math.exp(o), math.exp(h), math.exp(lo),
                              math.exp(c), v))
        return out


def impulse_series(
    seed: int,
    direction: int = 1,
    noise: float = 0.15,
    depth: int = 1,
    negative: NegativeKind | None = None,
    wave1_pct: float = 0.06,
    with_correction: bool = True,
) -> SyntheticSeries:
    """One labelled impulse (or hard negative) in a GBM lead-in and tail; see the module docstring.

    ``noise`` is the per-bar volatility over wave 1's size per sqrt(T1) bar; ``wave1_pct`` is wave 1's
    log size; ``direction`` +1 builds an up impulse (LONG setups), -1 its mirror.
    """
    rng = np.random.default_rng(seed)
    lv, dur = sample_impulse(rng, negative)
    scale = wave1_pct * direction
    sigma = noise * wave1_pct / math.sqrt(dur[0])
    b = _Builder(rng, sigma)
    # lead-in: 40 bars of random walk, then a counter-trend leg of one wave-1 size into wave 0
    b.leg(b.level, 40, drift_only=True)
    origin = b.level - scale
    b.leg(origin, int(rng.integers(10, 16)), vol_mult=1.0)
    anchors = [Anchor(len(b.bars) - 1, origin, "low" if direction > 0 else "high", "0")]
    if depth >= 2:
        waves_lv, waves_dur, top = _subdivide(rng, lv, dur)
    else:
        waves_lv, waves_dur, top = list(lv), list(dur), [1, 2, 3, 4, 5]
    vol_by_wave = (1.1, 0.8, 1.3, 0.8, 1.1)
    wave = 0
    for k, n in enumerate(waves_dur):
        target = origin + scale * waves_lv[k + 1]
        b.leg(target, n, vol_mult=vol_by_wave[wave])
        if k + 1 in top:
            label = top.index(k + 1) + 1
            up = (label % 2 == 1) == (direction > 0)
            anchors.append(Anchor(len(b.bars) - 1, target, "high" if up else "low", str(label)))
            wave = min(wave + 1, 4)
    if with_correction:
        p5 = origin + scale * lv[5]
        total = scale * lv[5]
        depth_c = float(rng.uniform(0.38, 0.62))
        a_end = p5 - total * depth_c * 0.75
        b_end = a_end + (p5 - a_end) * float(rng.uniform(0.4, 0.7))
        c_end = p5 - total * depth_c
        for i, (lab, tgt) in enumerate((("A", a_end), ("B", b_end), ("C", c_end))):
            b.leg(tgt, int(rng.integers(8, 14)), vol_mult=0.8)
            up = (i == 1) == (direction > 0)
            anchors.append(Anchor(len(b.bars) - 1, tgt, "high" if up else "low", lab))
    b.leg(b.level, 30, drift_only=True)
    return SyntheticSeries(b.candles(), _snap(b.bars, anchors), direction, negative or "impulse")


def _snap(bars: Sequence[tuple[float, float, float, float, float]], anchors: Sequence[Anchor]) -> list[Anchor]:
    """Move each label to the true extreme bar between its neighbours (bridge noise may overshoot)."""
    out: list[Anchor] = []
    for i, a in enumerate(anchors):
        lo_i = anchors[i - 1].index + 1 if i > 0 else max(0, a.index - 5)
        hi_i = anchors[i + 1].index - 1 if i + 1 < len(anchors) else min(len(bars) - 1, a.index + 5)
        idx = range(lo_i, hi_i + 1)
        if a.kind == "high":
            j = max(idx, key=lambda k: (bars[k][1], -k))
            out.append(Anchor(j, bars[j][1], a.kind, a.label))
        else:
            j = min(idx, key=lambda k: (bars[k][2], k))
            out.append(Anchor(j, bars[j][2], a.kind, a.label))
    return out


def null_series(seed: int, n: int = 5000, sigma: float = 0.01) -> SyntheticSeries:
    """Driftless GBM with the same volume model: no pattern is embedded."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, sigma)
    b.leg(b.level, n, drift_only=True)
    return SyntheticSeries(b.candles(), [], 0, "null")


def path_candles(
    prices: Sequence[float],
    bars_per_leg: int | Sequence[int] = 5,
    wick: float = 0.001,
    volumes: Sequence[float] | None = None,
    symbol: str = "TESTUSDT",
    timeframe: str = "1h",
    start_ms: int = 0,
) -> list[Candle]:
    """Noise-free candles walking straight (in log price) through ``prices``: each leg takes
    ``bars_per_leg`` bars, every bar has relative wicks ``wick`` beyond its open/close, and the last
    bar of each leg touches the turning price exactly. ``volumes`` gives one volume per leg."""
    legs = len(prices) - 1
    counts = [bars_per_leg] * legs if isinstance(bars_per_leg, int) else list(bars_per_leg)
    out: list[Candle] = []
    t = start_ms
    step = HOUR_MS
    prev = prices[0]
    for k in range(legs):
        a, b = math.log(prices[k]), math.log(prices[k + 1])
        n = counts[k]
        vol = 1000.0 if volumes is None else volumes[k]
        for i in range(1, n + 1):
            c = math.exp(a + (b - a) * i / n)
            o = prev
            h = max(o, c) * (1 + wick)
            lo = min(o, c) * (1 - wick)
            # wicks never poke back beyond the leg's starting turn (it stays the swing extreme)
            if b > a:
                lo = max(lo, prices[k])
            else:
                h = min(h, prices[k])
            if i == n:  # the turning bar's extreme is the turning price itself
                if b > a:
                    h, c = c, c * (1 - wick)
                else:
                    lo, c = c, c * (1 + wick)
                h, lo = max(h, o, c), min(lo, o, c)
            out.append(Candle(symbol, timeframe, t, t + step - 1, o, h, lo, c, vol))
            prev = c
            t += step
    return out
