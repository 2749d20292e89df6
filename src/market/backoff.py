"""Capped exponential backoff with full jitter, shared by the WebSocket and REST clients."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Attempt ``n`` (0-based) waits ``uniform(base, min(cap, base * 2**n))`` seconds.

    "Full jitter" spreads reconnecting clients apart; the floor ``base`` keeps a flapping peer from
    being hammered. :meth:`reset` (after a healthy period) starts again from ``base``.
    """

    def __init__(self, base: float, cap: float, rng: Callable[[], float] | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.random

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one failed attempt."""
        high = min(self.cap, self.base * float(1 << min(self.attempt, 62)))
        self.attempt += 1
        return self.base + (high - self.base) * self._rng()

    def reset(self) -> None:
        self.attempt = 0
