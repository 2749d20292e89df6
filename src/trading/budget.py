"""Binance's rate limits, respected before a request leaves.

Limits (USDT-M, per ``exchangeInfo.rateLimits``): REQUEST_WEIGHT 2400 per minute per IP, ORDERS 300 per
10 s and 1200 per minute per account. Every answer carries the counters used so far
(``X-MBX-USED-WEIGHT-1M``, ``X-MBX-ORDER-COUNT-10S``, ``X-MBX-ORDER-COUNT-1M``); they are remembered with the
window (of server time) they belong to. A request that would take a counter past ``headroom`` (90 %) of its
limit waits for the next window. After a 429 nothing is sent until ``Retry-After`` has passed; after a 418
(IP banned) nothing is sent until the ban ends, and the trader pauses entries and raises an alarm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MINUTE_MS = 60_000
TEN_S_MS = 10_000


@dataclass
class _Counter:
    window_ms: int
    limit: int
    used: int = 0
    window_start: int = 0

    def window_of(self, now_ms: int) -> int:
        return now_ms - now_ms % self.window_ms

    def observe(self, used: int, now_ms: int) -> None:
        start = self.window_of(now_ms)
        if start != self.window_start or used > self.used:
            self.window_start, self.used = start, used

    def wait_ms(self, cost: int, now_ms: int, headroom: float) -> int:
        start = self.window_of(now_ms)
        used = self.used if start == self.window_start else 0
        if used + cost <= self.limit * headroom:
            return 0
        return start + self.window_ms - now_ms + 50

    def add(self, cost: int, now_ms: int) -> None:
        start = self.window_of(now_ms)
        if start != self.window_start:
            self.window_start, self.used = start, 0
        self.used += cost


class RequestBudget:
    """See the module docstring. Times are Binance server time in ms."""

    def __init__(self, *, weight_per_minute: int = 2400, orders_per_10s: int = 300, orders_per_minute: int = 1200,
                 headroom: float = 0.9) -> None:
        self.headroom = headroom
        self.weight = _Counter(MINUTE_MS, weight_per_minute)
        self.orders_10s = _Counter(TEN_S_MS, orders_per_10s)
        self.orders_1m = _Counter(MINUTE_MS, orders_per_minute)
        self.blocked_until_ms = 0  # after a 429
        self.banned_until_ms = 0  # after a 418

    def set_limits(self, rate_limits: Sequence[Mapping[str, object]]) -> None:
        """Adopt the limits exchangeInfo announces (unknown entries are ignored)."""
        for r in rate_limits:
            kind, interval, num, limit = r.get("rateLimitType"), r.get("interval"), r.get("intervalNum"), r.get("limit")
            if not isinstance(limit, int) or not isinstance(num, int):
                continue
            if kind == "REQUEST_WEIGHT" and interval == "MINUTE" and num == 1:
                self.weight.limit = limit
            elif kind == "ORDERS" and interval == "SECOND" and num == 10:
                self.orders_10s.limit = limit
            elif kind == "ORDERS" and interval == "MINUTE" and num == 1:
                self.orders_1m.limit = limit

    def wait_ms(self, weight: int, order: bool, now_ms: int) -> int:
        """How long to wait before a request of ``weight`` (an order when ``order``) may leave."""
        waits = [self.weight.wait_ms(weight, now_ms, self.headroom), max(0, self.blocked_until_ms - now_ms)]
        if order:
            waits += [self.orders_10s.wait_ms(1, now_ms, self.headroom), self.orders_1m.wait_ms(1, now_ms, self.headroom)]
        return max(waits)

    def sent(self, weight: int, order: bool, now_ms: int) -> None:
        """Count a request as it leaves (the answer's headers then correct the counts)."""
        self.weight.add(weight, now_ms)
        if order:
            self.orders_10s.add(1, now_ms)
            self.orders_1m.add(1, now_ms)

    def observe(self, headers: Mapping[str, str], now_ms: int) -> None:
        for name, counter in (("X-MBX-USED-WEIGHT-1M", self.weight), ("X-MBX-ORDER-COUNT-10S", self.orders_10s),
                              ("X-MBX-ORDER-COUNT-1M", self.orders_1m)):
            value = headers.get(name)
            if value is not None and value.isdigit():
                counter.observe(int(value), now_ms)

    def back_off(self, retry_after_s: float, now_ms: int) -> None:
        # Retry-After is whole seconds; half a second more keeps a request from arriving just before it ends
        self.blocked_until_ms = max(self.blocked_until_ms, now_ms + int(retry_after_s * 1000) + 500)

    def ban(self, retry_after_s: float, now_ms: int) -> None:
        self.banned_until_ms = max(self.banned_until_ms, now_ms + int(retry_after_s * 1000))
        self.back_off(retry_after_s, now_ms)

    def banned(self, now_ms: int) -> bool:
        return now_ms < self.banned_until_ms
