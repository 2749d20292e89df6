"""Streaming building blocks of the Wyckoff analyzer, each O(1) or O(log n) per closed candle.

- :class:`RollingMedian`: median of the last n values (sorted list + bisect; n <= a few hundred).
- :class:`Swings`: a degree-1 zigzag on oriented log prices with Weis-wave leg statistics.

The analyzer works on *oriented* bars: log prices for the accumulation side, negated log prices
for the distribution side, so one set of rules serves both and mirror symmetry holds by
construction. In oriented space "low" is always the support side.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

from src.analysis.pickling import register_frozen


class Bar:
    """One closed candle in oriented log space, with the features the rules need.

    ``atr`` is the ATR (log units) of the previous bar; ``rv`` the relative volume; ``rstar`` the
    bar range over ``atr``; ``cp`` the oriented close position (0 = at the oriented low). A plain
    slotted class (not a frozen dataclass): two are built per candle, so construction cost matters.
    """

    __slots__ = ("atr", "c", "cp", "h", "i", "low", "o", "rstar", "rv", "t_ms")

    def __init__(self, i: int, t_ms: int, o: float, h: float, low: float, c: float, atr: float, rv: float,
                 rstar: float, cp: float) -> None:
        self.i = i
        self.t_ms = t_ms
        self.o = o
        self.h = h
        self.low = low
        self.c = c
        self.atr = atr
        self.rv = rv
        self.rstar = rstar
        self.cp = cp


class RollingMedian:
    """Median of the last ``n`` pushed values; ``median`` is None until one value exists."""

    __slots__ = ("_fifo", "_sorted", "n")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("window must be >= 1")
        self.n = n
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    @property
    def median(self) -> float | None:
        s = self._sorted
        k = len(s)
        if k == 0:
            return None
        mid = k // 2
        return s[mid] if k % 2 else 0.5 * (s[mid - 1] + s[mid])

    def push(self, x: float) -> None:
        if len(self._fifo) == self.n:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._fifo.append(x)
        bisect.insort(self._sorted, x)


@dataclass(slots=True)
class Pivot:
    """A confirmed swing extreme in oriented space and the leg that ended at it.

    ``kind`` is +1 for a swing high, -1 for a swing low. Leg statistics cover the bars after the
    previous pivot up to and including this one: bar count, mean and max RV, mean bar range/ATR.
    ``confirmed_i`` is the bar whose close confirmed it (>= ``i``). Not frozen (one per swing on the hot
    path); treat it as immutable.
    """

    kind: int
    i: int
    t_ms: int
    price: float
    confirmed_i: int
    leg_start_price: float
    leg_bars: int
    leg_mean_rv: float
    leg_max_rv: float
    leg_mean_rstar: float

    def __init__(self, kind: int, i: int, t_ms: int, price: float, confirmed_i: int, leg_start_price: float,
                 leg_bars: int, leg_mean_rv: float, leg_max_rv: float, leg_mean_rstar: float) -> None:
        # explicit (dataclass keeps it): mypyc compiles it, the generated __init__ would be interpreted
        self.kind = kind
        self.i = i
        self.t_ms = t_ms
        self.price = price
        self.confirmed_i = confirmed_i
        self.leg_start_price = leg_start_price
        self.leg_bars = leg_bars
        self.leg_mean_rv = leg_mean_rv
        self.leg_max_rv = leg_max_rv
        self.leg_mean_rstar = leg_mean_rstar


def mirrored(p: Pivot) -> Pivot:
    """The same pivot seen in the mirrored orientation (negated log prices): a swing high becomes a swing low.

    The zigzag is exactly symmetric under negation (the same strict comparisons, the same k x ATR), so the
    distribution side reuses the accumulation side's swings instead of running a second zigzag.
    """
    return Pivot(-p.kind, p.i, p.t_ms, -p.price, p.confirmed_i, -p.leg_start_price, p.leg_bars, p.leg_mean_rv,
                 p.leg_max_rv, p.leg_mean_rstar)


class _Acc:
    """Running sums of bar features over a stretch of bars (O(1) merge)."""

    __slots__ = ("max_rv", "n", "rstar", "rv")

    def __init__(self) -> None:
        self.n = 0
        self.rv = 0.0
        self.max_rv = 0.0
        self.rstar = 0.0

    def add(self, bar: Bar) -> None:
        self.n += 1
        self.rv += bar.rv
        self.rstar += bar.rstar
        if bar.rv > self.max_rv:
            self.max_rv = bar.rv

    def merge(self, other: _Acc) -> None:
        self.n += other.n
        self.rv += other.rv
        self.rstar += other.rstar
        self.max_rv = max(self.max_rv, other.max_rv)


class Swings:
    """Degree-1 zigzag on oriented highs/lows with reversal threshold ``k`` x ATR.

    Rules: in an up leg a higher high moves the extreme; otherwise a low at least k·ATR under the
    extreme confirms a swing high there and starts a down leg (mirror for down legs). A bar that
    both makes a new extreme and reverses by k·ATR only extends the extreme (OHLC cannot tell
    which came first). Start-up: the first direction is that of the later of the running high
    and low once they are k·ATR apart. Confirmed pivots never change (prefix stable).
    """

    __slots__ = ("_dir", "_ext", "_ext_i", "_ext_t", "_hi", "_hi_i", "_hi_t", "_leg", "_leg_start",
                 "_lo", "_lo_i", "_lo_t", "_tail", "k")

    def __init__(self, k: float) -> None:
        self.k = k
        self._dir = 0
        self._ext = 0.0
        self._ext_i = -1
        self._ext_t = 0
        self._leg = _Acc()
        self._tail = _Acc()
        self._leg_start = 0.0
        self._hi = float("-inf")
        self._lo = float("inf")
        self._hi_i = self._lo_i = -1
        self._hi_t = self._lo_t = 0

    @property
    def direction(self) -> int:
        """+1 while tracking a rising leg, -1 a falling one, 0 before the first swing."""
        return self._dir

    @property
    def extreme(self) -> float:
        return self._ext

    @property
    def extreme_i(self) -> int:
        """Bar index of the open leg's extreme (-1 before the first swing)."""
        return self._ext_i if self._dir != 0 else -1

    def update(self, bar: Bar) -> Pivot | None:
        thr = self.k * bar.atr
        if self._dir == 0:
            self._start(bar, thr)
            return None
        if self._dir > 0:
            if bar.h > self._ext:
                self._extend(bar, bar.h)
                return None
            if self._ext - bar.low >= thr:
                return self._reverse(bar, bar.low, +1)
        else:
            if bar.low < self._ext:
                self._extend(bar, bar.low)
                return None
            if bar.h - self._ext >= thr:
                return self._reverse(bar, bar.h, -1)
        self._tail.add(bar)
        return None

    def _start(self, bar: Bar, thr: float) -> None:
        if bar.h > self._hi:
            self._hi, self._hi_i, self._hi_t = bar.h, bar.i, bar.t_ms
        if bar.low < self._lo:
            self._lo, self._lo_i, self._lo_t = bar.low, bar.i, bar.t_ms
        if self._hi - self._lo >= thr > 0 and self._hi_i != self._lo_i:
            if self._hi_i > self._lo_i:
                self._dir, self._ext, self._ext_i, self._ext_t, self._leg_start = 1, self._hi, self._hi_i, self._hi_t, self._lo
            else:
                self._dir, self._ext, self._ext_i, self._ext_t, self._leg_start = -1, self._lo, self._lo_i, self._lo_t, self._hi
            self._leg = _Acc()
            self._leg.add(bar)
            self._tail = _Acc()

    def _extend(self, bar: Bar, price: float) -> None:
        tail = self._tail
        if tail.n:  # bars since the old extreme join the leg (the common trending bar has none: no new object)
            self._leg.merge(tail)
            self._tail = _Acc()
        self._leg.add(bar)
        self._ext, self._ext_i, self._ext_t = price, bar.i, bar.t_ms

    def _reverse(self, bar: Bar, price: float, kind: int) -> Pivot:
        leg = self._leg
        n = max(1, leg.n)
        pivot = Pivot(
            kind=kind,
            i=self._ext_i,
            t_ms=self._ext_t,
            price=self._ext,
            confirmed_i=bar.i,
            leg_start_price=self._leg_start,
            leg_bars=leg.n,
            leg_mean_rv=leg.rv / n,
            leg_max_rv=leg.max_rv,
            leg_mean_rstar=leg.rstar / n,
        )
        new_leg = self._tail
        new_leg.add(bar)
        self._leg = new_leg
        self._tail = _Acc()
        self._leg_start = self._ext
        self._dir = -kind
        self._ext, self._ext_i, self._ext_t = price, bar.i, bar.t_ms
        return pivot


# pickled by its constructor: a compiled class with an explicit __init__ needs its arguments to unpickle
register_frozen(Pivot)
