"""Streaming indicators, O(1) per closed candle.

- Wilder ATR(n): true range TR = max(h - l, |h - c_prev|, |l - c_prev|); the first ATR is the mean
  of the first n TRs, then ATR = (ATR_prev * (n - 1) + TR) / n. Default n = 14.
- Relative volume RV(n): volume / mean of the previous n volumes (the current bar excluded, so a
  climax bar does not dilute its own baseline). Default n = 20. 1.0 until n bars exist.
- Close position CP: (close - low) / (high - low) in [0, 1]; 0.5 for a zero-range bar.
"""

from __future__ import annotations

from collections import deque


class WilderATR:
    """Wilder's average true range; ``value`` is None until ``period`` candles were seen.

    State in plain floats and flags (not ``float | None``), and the true range by explicit comparisons in
    ``max``'s order (the first of equal values wins; a NaN is kept only when it comes first): mypyc keeps
    them unboxed, where ``max()`` of three floats was a generic call on three boxed objects."""

    __slots__ = ("_count", "_has_prev", "_prev_close", "_ready", "_sum", "_value", "period")

    def __init__(self, period: int = 14) -> None:
        if period < 1:
            raise ValueError("ATR period must be >= 1")
        self.period = period
        self._prev_close = 0.0
        self._has_prev = False
        self._sum = 0.0
        self._count = 0
        self._value = 0.0
        self._ready = False

    @property
    def value(self) -> float | None:
        return self._value if self._ready else None

    def update(self, high: float, low: float, close: float) -> float | None:
        tr = high - low
        if self._has_prev:
            prev = self._prev_close
            up = abs(high - prev)
            if up > tr:
                tr = up
            down = abs(low - prev)
            if down > tr:
                tr = down
        self._prev_close = close
        self._has_prev = True
        if self._ready:
            self._value = (self._value * (self.period - 1) + tr) / self.period
        else:
            self._sum += tr
            self._count += 1
            if self._count == self.period:
                self._value = self._sum / self.period
                self._ready = True
            else:
                return None
        return self._value


class RelativeVolume:
    """Volume over the mean of the previous ``period`` volumes (rolling sum in a deque)."""

    __slots__ = ("_sum", "_window", "period")

    def __init__(self, period: int = 20) -> None:
        if period < 1:
            raise ValueError("relative-volume period must be >= 1")
        self.period = period
        self._window: deque[float] = deque(maxlen=period)
        self._sum = 0.0

    @property
    def baseline(self) -> float | None:
        """Mean of the last ``period`` volumes seen (None until the window is full)."""
        if len(self._window) < self.period:
            return None
        return self._sum / self.period

    def update(self, volume: float) -> float:
        base = self.baseline
        rv = 1.0 if base is None or base <= 0 else volume / base
        if len(self._window) == self.period:
            self._sum -= self._window[0]
        self._window.append(volume)
        self._sum += volume
        return rv


def close_position(high: float, low: float, close: float) -> float:
    """Where the close sits in the bar's range: 0 at the low, 1 at the high, 0.5 if high == low."""
    rng = high - low
    if rng <= 0:
        return 0.5
    return min(1.0, max(0.0, (close - low) / rng))
