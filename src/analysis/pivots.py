"""Streaming multi-degree zigzag: the pivot engine shared by the Elliott analyzer (and anyone else).

Rules (ANALYSIS-NOTES 3.3), per degree, on closed candles only:

- Prices are compared in log space by default (``log_prices=True``), so every threshold is a
  relative move and the engine is exactly invariant to price scaling and to price inversion
  (p -> c / p mirrors highs and lows). ``log_prices=False`` compares raw prices.
- Threshold of degree d: ``k_d * ATR(t-1)`` in ATR mode (Wilder ATR(14) of the same price space,
  the ATR of the bar BEFORE the one that starts the leg), or ``log(1 + pct_d)`` in percent mode (a log
  distance, symmetric up and down). The threshold is frozen for the whole leg (set on the bar that
  confirmed the previous pivot). Start-up begins once the ATR exists (14 bars).
- Up leg: a higher high moves the extreme. Otherwise, if ``extreme - low >= threshold`` the extreme
  is CONFIRMED as a pivot high, the leg turns down and the new extreme is this bar's low. Down leg
  mirrors. An outside bar that makes a new extreme and also reverses by the threshold only extends
  the extreme (OHLC cannot tell which came first; the conservative reading wins).
- Start-up: the running highest high and lowest low are tracked until their distance reaches the
  threshold; the EARLIER of the two is confirmed as the first pivot and the leg runs toward the later
  (a single bar spanning the threshold by itself restarts the start-up after it).
- A confirmed pivot never changes (prefix-stable): it depends only on bars up to its confirming bar.
  The moving extreme of the open leg is exposed separately as :class:`TentativeExtreme`.

Cost: O(D) per candle for D degrees; each degree keeps the last ``history`` pivots.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from src.analysis.indicators import WilderATR
from src.analysis.pickling import register_frozen
from src.analysis.types import Candle

PivotKind = Literal["high", "low"]
ThresholdMode = Literal["atr", "pct"]


@dataclass(slots=True, unsafe_hash=True)
class Pivot:
    """A confirmed swing extreme.

    ``index``/``time_ms`` are the bar sequence number and open time of the extreme bar;
    ``confirmed_index``/``confirmed_ms`` those of the bar whose reversal confirmed it.
    ``price`` is the real price (high or low of the bar); ``level`` the same in the engine's
    price space (log price by default). ``leg_volume`` is the Weis volume of the leg that ends
    here (sum of volumes after the previous pivot bar up to and including this bar).
    Not frozen (built on the hot path, and a frozen dataclass's generated ``__init__`` runs interpreted under
    mypyc); hashable like before (``unsafe_hash``); Final fields: mypy rejects assignments.
    """

    index: Final[int]
    time_ms: Final[int]
    price: Final[float]
    level: Final[float]
    kind: Final[PivotKind]
    degree: Final[int]
    confirmed_index: Final[int]
    confirmed_ms: Final[int]
    leg_volume: Final[float]

    def __init__(self, index: int, time_ms: int, price: float, level: float, kind: PivotKind, degree: int,
                 confirmed_index: int, confirmed_ms: int, leg_volume: float) -> None:
        # explicit (dataclass keeps it): compiled by mypyc
        self.index = index
        self.time_ms = time_ms
        self.price = price
        self.level = level
        self.kind = kind
        self.degree = degree
        self.confirmed_index = confirmed_index
        self.confirmed_ms = confirmed_ms
        self.leg_volume = leg_volume

    @property
    def sign(self) -> int:
        """+1 for a high, -1 for a low."""
        return 1 if self.kind == "high" else -1


@dataclass(frozen=True, slots=True)
class TentativeExtreme:
    """The open leg's running extreme: it may still move and is never used for signals."""

    index: int
    time_ms: int
    price: float
    level: float
    kind: PivotKind
    degree: int


@dataclass(slots=True)
class _Mark:
    """A tracked bar extreme: level (engine space), real price, bar index/time, cumulative volume."""

    level: float
    price: float = 0.0
    index: int = -1
    time_ms: int = 0
    cum_volume: float = 0.0

    def set(self, level: float, price: float, index: int, time_ms: int, cum_volume: float) -> None:
        self.level, self.price, self.index, self.time_ms, self.cum_volume = level, price, index, time_ms, cum_volume


class ZigZag:
    """One degree of the zigzag; fed bar by bar with the threshold the caller computed for that bar.

    The threshold is FROZEN per leg: the value passed on the bar that started the leg (the
    confirming bar of the previous pivot; during start-up, the first bar with a threshold). A leg's
    own volatility therefore never moves its yardstick, and a reversal is always confirmed on the
    very bar whose low (high) first reaches the threshold, so each pivot high is the highest high
    strictly after the previous pivot low up to its confirming bar (mirrored for lows).
    """

    __slots__ = ("_cum_at_pivot", "_dir", "_ext", "_hi", "_lo", "_thr", "degree", "pivots")

    def __init__(self, degree: int = 0, history: int = 64) -> None:
        self.degree = degree
        self.pivots: deque[Pivot] = deque(maxlen=history)
        self._dir = 0  # 0 start-up, +1 up leg (tracking a high), -1 down leg (tracking a low)
        self._thr: float | None = None
        self._ext = _Mark(0.0)
        self._cum_at_pivot = 0.0
        self._hi, self._lo = _Mark(-math.inf), _Mark(math.inf)  # start-up running extremes

    @property
    def direction(self) -> int:
        return self._dir

    @property
    def leg_threshold(self) -> float | None:
        """The frozen reversal distance of the open leg (None before start-up has a threshold)."""
        return self._thr

    def tentative(self) -> TentativeExtreme | None:
        if self._dir == 0:
            return None
        kind: PivotKind = "high" if self._dir > 0 else "low"
        e = self._ext
        return TentativeExtreme(e.index, e.time_ms, e.price, e.level, kind, self.degree)

    def update(
        self,
        index: int,
        time_ms: int,
        high: float,
        low: float,
        high_price: float,
        low_price: float,
        cum_volume: float,
        threshold: float | None,
    ) -> Pivot | None:
        """Feed one closed bar (``high``/``low`` in the engine's price space, ``*_price`` real).

        ``cum_volume`` is the cumulative volume up to and including this bar; ``threshold`` the
        reversal distance a leg starting on this bar would use (None: not available yet). Returns
        the pivot this bar confirmed, if any.
        """
        if self._dir == 0:
            return self._startup(index, time_ms, high, low, high_price, low_price, cum_volume, threshold)
        ext, thr = self._ext, self._thr
        assert thr is not None  # set when start-up ended
        if self._dir > 0:
            if high > ext.level:  # an outside bar only extends: its reversal part cannot be ordered
                ext.set(high, high_price, index, time_ms, cum_volume)
                return None
            if ext.level - low < thr:
                return None
            pivot = self._confirm("high", index, time_ms)
            ext.set(low, low_price, index, time_ms, cum_volume)
        else:
            if low < ext.level:
                ext.set(low, low_price, index, time_ms, cum_volume)
                return None
            if high - ext.level < thr:
                return None
            pivot = self._confirm("low", index, time_ms)
            ext.set(high, high_price, index, time_ms, cum_volume)
        self._dir = -self._dir
        if threshold is not None:
            self._thr = threshold
        return pivot

    def _confirm(self, kind: PivotKind, index: int, time_ms: int) -> Pivot:
        e = self._ext
        pivot = Pivot(
            index=e.index,
            time_ms=e.time_ms,
            price=e.price,
            level=e.level,
            kind=kind,
            degree=self.degree,
            confirmed_index=index,
            confirmed_ms=time_ms,
            leg_volume=e.cum_volume - self._cum_at_pivot,
        )
        self._cum_at_pivot = e.cum_volume
        self.pivots.append(pivot)
        return pivot

    def _startup(
        self,
        index: int,
        time_ms: int,
        high: float,
        low: float,
        high_price: float,
        low_price: float,
        cum_volume: float,
        threshold: float | None,
    ) -> Pivot | None:
        if self._thr is None:
            if threshold is None:
                return None
            self._thr = threshold  # frozen for the whole start-up
        hi, lo = self._hi, self._lo
        if high > hi.level:
            hi.set(high, high_price, index, time_ms, cum_volume)
        if low < lo.level:
            lo.set(low, low_price, index, time_ms, cum_volume)
        if hi.level - lo.level < self._thr:
            return None
        if hi.index == lo.index:
            # One bar spans the threshold on its own and cannot say which extreme came first:
            # start afresh after it rather than guess.
            hi.set(-math.inf, 0.0, -1, 0, 0.0)
            lo.set(math.inf, 0.0, -1, 0, 0.0)
            return None
        kind: PivotKind
        first, later, kind, direction = (lo, hi, "low", 1) if lo.index < hi.index else (hi, lo, "high", -1)
        self._ext.set(first.level, first.price, first.index, first.time_ms, first.cum_volume)
        pivot = self._confirm(kind, index, time_ms)
        self._ext.set(later.level, later.price, later.index, later.time_ms, later.cum_volume)
        self._dir = direction
        self._thr = threshold
        return pivot


class PivotEngine:
    """Several zigzag degrees over one candle stream, sharing one ATR.

    ``thresholds`` are ATR multiples (mode "atr", e.g. (2.0, 4.0)) or fractions (mode "pct",
    e.g. (0.02, 0.05)), one per degree, ascending. Degree numbers are positions in that tuple.
    """

    def __init__(
        self,
        thresholds: Sequence[float] = (2.0, 4.0),
        mode: ThresholdMode = "atr",
        atr_period: int = 14,
        log_prices: bool = True,
        history: int = 64,
    ) -> None:
        if not thresholds or any(t <= 0 or not math.isfinite(t) for t in thresholds):
            raise ValueError(f"pivot thresholds must be positive and finite, got {tuple(thresholds)}")
        if list(thresholds) != sorted(thresholds):
            raise ValueError(f"pivot thresholds must be ascending, got {tuple(thresholds)}")
        if mode not in ("atr", "pct"):
            raise ValueError(f"pivot mode must be 'atr' or 'pct', got {mode!r}")
        self.thresholds = tuple(float(t) for t in thresholds)
        self.mode: ThresholdMode = mode
        self.log_prices = log_prices
        self._atr = WilderATR(atr_period)
        self._atr_prev: float | None = None
        self.degrees = [ZigZag(d, history) for d in range(len(self.thresholds))]
        self._index = -1
        self._cum_volume = 0.0

    def to_level(self, price: float) -> float:
        """Real price -> engine price space."""
        return math.log(price) if self.log_prices else price

    def from_level(self, level: float) -> float:
        """Engine price space -> real price."""
        return math.exp(level) if self.log_prices else level

    @property
    def bar_index(self) -> int:
        """Sequence number of the last candle fed (-1 before the first)."""
        return self._index

    @property
    def atr_prev(self) -> float | None:
        """ATR (engine price space) of the bar before the last one fed: the yardstick used on it."""
        return self._atr_prev

    @property
    def atr(self) -> float | None:
        """ATR (engine price space) including the last bar fed."""
        return self._atr.value

    def update(self, candle: Candle) -> list[Pivot]:
        """Feed one closed candle; returns the pivots it confirmed (ascending degree)."""
        self._index += 1
        self._cum_volume += candle.volume
        ch, cl = candle.high, candle.low
        high, low = (math.log(ch), math.log(cl)) if self.log_prices else (ch, cl)
        atr_prev = self._atr.value
        self._atr_prev = atr_prev
        confirmed: list[Pivot] = []
        index, t, cum = self._index, candle.open_time_ms, self._cum_volume
        if self.mode == "atr":
            # _bar_threshold inlined (every degree, every candle): k x the previous ATR, None without a real one
            unit = atr_prev if atr_prev is not None and atr_prev > 0 else None
            for zz, k in zip(self.degrees, self.thresholds, strict=True):
                p = zz.update(index, t, high, low, ch, cl, cum, None if unit is None else k * unit)
                if p is not None:
                    confirmed.append(p)
        else:
            for zz in self.degrees:
                p = zz.update(index, t, high, low, ch, cl, cum, self._bar_threshold(zz.degree, atr_prev, candle))
                if p is not None:
                    confirmed.append(p)
        self._atr.update(high, low, self.to_level(candle.close))
        return confirmed

    def _bar_threshold(self, degree: int, atr_prev: float | None, candle: Candle) -> float | None:
        k = self.thresholds[degree]
        if self.mode == "pct":
            # Percent mode in raw prices: a pct move of the bar's own price (close to the extreme's).
            return math.log1p(k) if self.log_prices else k * candle.close
        # A zero ATR (a run of flat bars) is no yardstick: wait for a real one.
        return None if atr_prev is None or atr_prev <= 0 else k * atr_prev

    def pivots(self, degree: int) -> Sequence[Pivot]:
        return self.degrees[degree].pivots

    def tentative(self, degree: int) -> TentativeExtreme | None:
        return self.degrees[degree].tentative()


register_frozen(Pivot, TentativeExtreme)

