"""Seeded synthetic candle series with ground-truth labels, for tests and the detection benchmark.

Everything is generated in log price with a fixed per-bar volatility ``sigma`` (ATR of the
rendered bars is about 1.6 sigma). Paths between anchors are noisy Brownian bridges (Student-t
innovations, df 4); each bar's high/low comes from 8 intrabar sub-steps, so OHLC are consistent.
Volume = base x template multiplier x lognormal noise (s in [0.25, 0.45]) x (1 + beta |r|/sigma)
with beta in [0.5, 1]: wide bars carry more volume even without a template, so volume detectors
cannot look artificially good.

Kinds (see :data:`KINDS`):

- ``accumulation`` (schematic #1): markdown, SC cluster, AR, ST, 2-4 phase-B swings with drying
  down-swing volume, spring (0.2-1.2 ATR under support, reclaimed within 0-1 bars), low-volume
  test, SOS bar (close 0.4-1 ATR over resistance, RV 1.8-3), LPS/BU on light volume, markup.
- ``accumulation2`` (schematic #2): as above without a spring: a phase-C higher low instead.
- ``distribution`` / ``distribution2``: the exact mirrors (negated log prices): BC, AR, ST, UTAD,
  UTAD test, SOW, LPSY / no UTAD.
- ``failed_accumulation`` / ``failed_distribution``: SC, AR, ST, phase B, then a break of the
  range edge by 1.5-3 ATR that is NOT reclaimed and runs on (hard negatives: no spring, no SOS).
- ``v_reversal``: markdown, climax and a straight rally with no range (no spring, no SOS).
- ``random_walk``: driftless GBM with the same volume model (the null).

Each label has the event bar (where the thing happened) and the recognisable bar (the first bar
on which a causal rule can know it: the reclaim bar of a spring, the bar after the SC, the bar
that reverses 1.25 ATR off a swing extreme).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from src.analysis.types import Candle

KINDS = ("accumulation", "accumulation2", "distribution", "distribution2", "failed_accumulation",
         "failed_distribution", "v_reversal", "random_walk")
MIRROR_LABELS = {"sc": "bc", "ar": "ar", "st": "st", "spring": "utad", "test": "utad_test", "lps_c": "lpsy_c",
                 "sos": "sow", "lps": "lpsy"}
HOUR_MS = 3_600_000
SWING_K = 1.25  # reversal (ATR) that makes a swing extreme recognisable, as in the analyzer


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    type: str  # the analyzer's event type names: sc, ar, st, spring, test, lps_c, sos, lps (or their mirrors)
    bar: int  # index of the event bar
    recognisable: int  # index of the first bar that can prove it


@dataclass(slots=True)
class SyntheticSeries:
    kind: str
    seed: int
    candles: list[Candle]
    events: list[LabelledEvent] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)


class _Path:
    """Bars in log price under construction (o, h, l, c, volume multiplier) plus labels."""

    def __init__(self, rng: np.random.Generator, sigma: float, noise: float) -> None:
        self.rng = rng
        self.sigma = sigma
        self.noise = noise
        self.o: list[float] = []
        self.h: list[float] = []
        self.lo: list[float] = []
        self.c: list[float] = []
        self.m: list[float] = []
        self.labels: list[tuple[str, int, str]] = []  # (type, bar, how to find recognisable)

    @property
    def last(self) -> float:
        return self.c[-1] if self.c else 0.0

    @property
    def n(self) -> int:
        return len(self.c)

    def _t(self, size: int) -> np.ndarray:
        return np.asarray(self.rng.standard_t(4, size=size) / np.sqrt(2.0))

    def bar(self, o: float, c: float, mult: float, lo_clip: float = -np.inf, hi_clip: float = np.inf) -> None:
        steps = 8
        inc = self._t(steps) * self.sigma / np.sqrt(steps)
        walk = o + np.cumsum(inc)
        walk += (c - walk[-1]) * np.arange(1, steps + 1) / steps  # bridge to the close
        h = max(o, float(walk.max()))
        low = min(o, float(walk.min()))
        o2, h2, l2, c2 = (min(max(x, lo_clip), hi_clip) for x in (o, h, low, c))
        self.o.append(o2)
        self.h.append(h2)
        self.lo.append(l2)
        self.c.append(c2)
        self.m.append(mult)

    def exact(self, o: float, h: float, low: float, c: float, mult: float) -> int:
        h, low = max(h, o, c), min(low, o, c)
        self.o.append(o)
        self.h.append(h)
        self.lo.append(low)
        self.c.append(c)
        self.m.append(mult)
        return self.n - 1

    def leg(self, target: float, bars: int, mult: float | Callable[[int], float] = 1.0,
            lo_clip: float = -np.inf, hi_clip: float = np.inf) -> tuple[int, int]:
        """A noisy bridge from the last close to ``target`` over ``bars`` bars; returns its bar span."""
        start = self.n
        x0 = self.last
        steps = self._t(bars) * self.sigma * self.noise
        walk = x0 + np.cumsum(steps)
        walk += (target - walk[-1]) * np.arange(1, bars + 1) / bars
        prev = x0
        for k in range(bars):
            mk = mult(k) if callable(mult) else mult
            self.bar(prev, float(walk[k]), mk, lo_clip, hi_clip)
            prev = self.c[-1]
        return start, self.n

    def extreme_bar(self, span: tuple[int, int], high: bool) -> int:
        a, b = span
        seg = self.h[a:b] if high else self.lo[a:b]
        return a + int(np.argmax(seg) if high else np.argmin(seg))


def _recognisable(p: _Path, bar: int, how: str, atr: float) -> int:
    if how == "next":
        return min(bar + 1, p.n - 1)
    if how == "same":
        return bar
    if how.startswith("reclaim"):
        return bar + int(how.split(":")[1])
    for j in range(bar + 1, p.n):
        if how == "high" and p.lo[j] <= p.h[bar] - SWING_K * atr:
            return j
        if how == "low" and p.h[j] >= p.lo[bar] + SWING_K * atr:
            return j
    return p.n - 1


def _accumulation(p: _Path, rng: np.random.Generator, atr: float, variant: str) -> dict[str, float]:
    """Builds the schematic after the current last close; S = current level - the markdown."""
    w_atr = float(rng.uniform(4.0, 10.0))
    W = w_atr * atr
    decline = float(rng.uniform(8.0, 14.0)) * atr
    S = p.last - decline
    Rz = S + W
    eps = 0.04 * W
    # markdown into the climax
    cl_range = float(rng.uniform(2.8, 4.5)) * atr
    p.leg(S + 0.9 * cl_range, int(rng.integers(30, 50)), 1.0)
    # SC cluster: one wide bar closing near its low, then a strong reversal bar
    o = p.last
    sc = p.exact(o, o + 0.1 * atr, S, S + 0.15 * cl_range, float(rng.uniform(3.0, 5.0)))
    p.exact(S + 0.15 * cl_range, S + 0.75 * cl_range, S + 0.1 * atr, S + 0.7 * cl_range, float(rng.uniform(1.5, 2.5)))
    p.labels.append(("sc", sc, "next"))
    # AR up to Rz (the highest high of the segment is the AR)
    ar_span = p.leg(Rz - 0.3 * atr, int(rng.integers(5, 10)), 1.3, lo_clip=S + eps, hi_clip=Rz)
    ar = p.exact(p.last, Rz, p.last - 0.3 * atr, Rz - 0.4 * atr, 1.2)
    p.labels.append(("ar", max(ar, p.extreme_bar((ar_span[0], ar + 1), True)), "high"))
    # ST back to the support area on lighter volume
    st_level = S + float(rng.uniform(0.05, 0.25)) * W
    st_span = p.leg(st_level, int(rng.integers(8, 16)), 0.75, lo_clip=st_level, hi_clip=Rz - eps)
    p.labels.append(("st", p.extreme_bar(st_span, False), "low"))
    # phase B swings, down-swing volume drying up
    swings = int(rng.integers(2, 5))
    for k in range(swings):
        top = S + float(rng.uniform(0.65, 0.9)) * W
        p.leg(top, int(rng.integers(8, 18)), 1.0, lo_clip=S + eps, hi_clip=Rz - eps)
        bottom = S + float(rng.uniform(0.2, 0.4)) * W
        p.leg(bottom, int(rng.integers(8, 18)), 0.85 - 0.1 * k, lo_clip=S + eps, hi_clip=Rz - eps)
    params = {"w_atr": w_atr, "swings": float(swings)}
    if variant == "failed":
        p.leg(S + 0.1 * W, int(rng.integers(5, 10)), 0.9, lo_clip=S + eps, hi_clip=Rz - eps)
        depth = float(rng.uniform(1.5, 3.0)) * atr
        p.leg(S - depth, int(rng.integers(3, 6)), 1.6, hi_clip=S + 0.2 * W)
        p.leg(S - depth - float(rng.uniform(4.0, 8.0)) * atr, int(rng.integers(20, 40)), 1.2, hi_clip=S - 0.5 * atr)
        return params
    if variant == "spring":
        p.leg(S + 0.08 * W, int(rng.integers(6, 12)), 0.8, lo_clip=S + 0.02 * W, hi_clip=Rz - eps)
        depth = float(rng.uniform(0.25, 1.2)) * atr
        o = p.last
        spring_rv = float(rng.uniform(0.6, 1.5))
        reclaim = int(rng.integers(0, 2))
        if reclaim == 0:
            spring = p.exact(o, o + 0.2 * atr, S - depth, S + 0.5 * atr, spring_rv)
        else:
            spring = p.exact(o, o + 0.1 * atr, S - depth, S - 0.3 * depth, spring_rv)
            p.exact(S - 0.3 * depth, S + 0.8 * atr, S - 0.35 * depth, S + 0.6 * atr, 1.0)
        p.labels.append(("spring", spring, f"reclaim:{reclaim}"))
        params["spring_depth_atr"] = depth / atr
        low = S - depth
        # test: a rally of ~2 ATR, then a low-volume higher low near the spring
        p.leg(low + float(rng.uniform(2.0, 2.8)) * atr, int(rng.integers(3, 6)), 1.0, lo_clip=low + 0.3 * atr, hi_clip=Rz - eps)
        test_level = low + float(rng.uniform(0.2, 0.6)) * atr
        t_span = p.leg(test_level, int(rng.integers(3, 7)), 0.5, lo_clip=test_level, hi_clip=Rz - eps)
        p.labels.append(("test", p.extreme_bar(t_span, False), "low"))
    else:
        hl = S + float(rng.uniform(0.15, 0.3)) * W
        c_span = p.leg(hl, int(rng.integers(8, 14)), 0.55, lo_clip=hl, hi_clip=Rz - eps)
        p.labels.append(("lps_c", p.extreme_bar(c_span, False), "low"))
    # rally to the creek and the SOS bar
    p.leg(Rz - 0.4 * atr, int(rng.integers(8, 14)), 1.1, lo_clip=S + eps, hi_clip=Rz - 0.1 * atr)
    o = p.last
    sos_close = Rz + float(rng.uniform(0.5, 1.0)) * atr
    sos_high = sos_close + 0.15 * atr
    sos_low = min(o, sos_close - float(rng.uniform(1.6, 2.4)) * atr)
    sos = p.exact(o, sos_high, sos_low, sos_close, float(rng.uniform(2.2, 3.5)))
    p.labels.append(("sos", sos, "same"))
    # a bit more markup, then the LPS / BU pullback on light volume
    up = sos_close + float(rng.uniform(2.0, 3.0)) * atr
    p.leg(up, int(rng.integers(3, 6)), 1.4, lo_clip=Rz)
    lps_level = Rz + float(rng.uniform(-0.3, 0.5)) * atr
    l_span = p.leg(lps_level, int(rng.integers(4, 8)), 0.45, lo_clip=lps_level, hi_clip=up)
    p.labels.append(("lps", p.extreme_bar(l_span, False), "low"))
    p.leg(Rz + 1.5 * W, int(rng.integers(20, 40)), 1.2, lo_clip=lps_level + 0.3 * atr)
    return params


def _v_reversal(p: _Path, rng: np.random.Generator, atr: float) -> dict[str, float]:
    S = p.last - float(rng.uniform(8.0, 14.0)) * atr
    cl_range = float(rng.uniform(2.8, 4.5)) * atr
    p.leg(S + 0.9 * cl_range, int(rng.integers(30, 50)), 1.0)
    o = p.last
    p.exact(o, o + 0.1 * atr, S, S + 0.2 * cl_range, float(rng.uniform(3.0, 5.0)))
    p.leg(S + float(rng.uniform(12.0, 18.0)) * atr, int(rng.integers(25, 40)), 1.2, lo_clip=S + 0.5 * atr)
    return {}


def generate(kind: str, seed: int, *, noise: float = 1.0, sigma: float = 0.004, symbol: str = "SYNTH",
             timeframe: str = "1h", background: int = 150, tail: int = 60, length: int = 600,
             start_ms: int = 1_600_000_000_000 - (1_600_000_000_000 % HOUR_MS), base_price: float = 100.0,
             step_ms: int = HOUR_MS) -> SyntheticSeries:
    """One labelled series of ``kind`` (see the module docstring); same (kind, seed, ...) -> same candles.

    ``noise`` scales the bridge noise between anchors (1.0 = moderate); ``length`` is only used by
    ``random_walk``; ``background`` random-walk bars precede a template and ``tail`` follow it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    p = _Path(rng, sigma, noise)
    atr = 1.6 * sigma
    params: dict[str, float] = {}
    base_kind = kind.replace("distribution", "accumulation")
    if kind == "random_walk":
        p.leg(float(rng.standard_normal()) * sigma, 1, 1.0)
        for _ in range(length - 1):
            p.bar(p.last, p.last + float(p._t(1)[0]) * sigma, 1.0)
    else:
        for _ in range(background):
            p.bar(p.last, p.last + float(p._t(1)[0]) * sigma, 1.0)
        if base_kind == "v_reversal":
            params = _v_reversal(p, rng, atr)
        else:
            variant = {"accumulation": "spring", "accumulation2": "lpsc", "failed_accumulation": "failed"}[base_kind]
            params = _accumulation(p, rng, atr, variant)
        for _ in range(tail):
            p.bar(p.last, p.last + float(p._t(1)[0]) * sigma, 1.0)
    mirror = kind.startswith(("distribution", "failed_distribution"))
    events = [LabelledEvent(MIRROR_LABELS[t] if mirror else t, b, _recognisable(p, b, how, atr)) for t, b, how in p.labels]
    candles = _render(p, rng, mirror, symbol, timeframe, start_ms, step_ms, base_price)
    params["noise"] = noise
    return SyntheticSeries(kind=kind, seed=seed, candles=candles, events=events, params=params)


def _render(p: _Path, rng: np.random.Generator, mirror: bool, symbol: str, timeframe: str, start_ms: int,
            step_ms: int, base_price: float) -> list[Candle]:
    n = p.n
    s = float(rng.uniform(0.25, 0.45))
    beta = float(rng.uniform(0.5, 1.0))
    eps = rng.normal(0.0, s, size=n)
    sign = -1.0 if mirror else 1.0
    out: list[Candle] = []
    prev_c = p.o[0]
    for k in range(n):
        o, h, low, c = (sign * x for x in (p.o[k], p.h[k], p.lo[k], p.c[k]))
        if mirror:
            h, low = low, h
        r = abs(p.c[k] - prev_c) / p.sigma
        prev_c = p.c[k]
        vol = 1000.0 * p.m[k] * math.exp(float(eps[k])) * (1.0 + beta * min(r, 6.0))
        t = start_ms + k * step_ms
        out.append(Candle(symbol=symbol, timeframe=timeframe, open_time_ms=t, close_time_ms=t + step_ms - 1,
                          open=base_price * math.exp(float(o)), high=base_price * math.exp(float(h)),
                          low=base_price * math.exp(float(low)), close=base_price * math.exp(float(c)),
                          volume=round(vol, 6)))
    return out


def random_walk_candles(seed: int, n: int, **kw: object) -> list[Candle]:
    """``n`` driftless random-walk candles (the null series)."""
    return generate("random_walk", seed, length=n, **kw).candles  # type: ignore[arg-type]
