"""Safety limits and the pause (kill switch). When a limit trips, trading PAUSES: new entries stop,
protective orders stay, open positions are left as they are, and the reason is announced.

Limits (from the configuration):
- MAX_OPEN_POSITIONS: an entry is refused while that many positions are open or pending (not a pause);
- MAX_ORDERS_PER_DAY: entry orders per UTC day (protective orders never count and are never blocked);
  reaching it pauses entries until the next UTC day;
- DAILY_LOSS_LIMIT_PCT: equity (realised + unrealised) fell that many percent below the day's start
  equity (the first equity seen after 00:00 UTC): pauses entries until the next UTC day;
- the error-rate circuit breaker: TRADING_ERROR_LIMIT exchange errors within TRADING_ERROR_WINDOW_SECONDS
  pause entries until an admin resumes;
- the kill switch (``>kill``), a 418 IP ban, or anything else the trader decides: paused until ``>resume``.
The state (pause, day, entries counted, the day's start equity) survives restarts through the store.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

PauseKind = Literal["kill", "orders_per_day", "daily_loss", "errors", "ip_ban", "other"]
DAY_SCOPED: frozenset[str] = frozenset({"orders_per_day", "daily_loss"})


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class SafetyLimits:
    max_open_positions: int = 3
    max_orders_per_day: int = 20
    daily_loss_limit_pct: float = 5.0
    error_limit: int = 5
    error_window_s: int = 600


@dataclass(frozen=True, slots=True)
class Pause:
    kind: PauseKind
    reason: str
    by: str
    at_ms: int
    day: str  # the UTC day it happened (day-scoped pauses lift on the next day)


@dataclass
class SafetyState:
    """The mutable state; ``to_dict``/``from_dict`` for the store."""

    day: str = ""
    entries_today: int = 0
    day_start_equity: float | None = None
    pause: Pause | None = None
    errors: deque[int] = field(default_factory=deque)
    # after a 429/418: no request before this wall-clock time, also after a restart (a restart loop must not
    # hammer Binance into a longer ban)
    rate_blocked_until_wall_ms: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day, "entries_today": self.entries_today, "day_start_equity": self.day_start_equity,
                "pause": None if self.pause is None else asdict(self.pause),
                "rate_blocked_until_wall_ms": self.rate_blocked_until_wall_ms}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SafetyState:
        p = d.get("pause")
        return cls(day=str(d.get("day", "")), entries_today=int(d.get("entries_today", 0)),
                   day_start_equity=None if d.get("day_start_equity") is None else float(d["day_start_equity"]),
                   pause=None if not p else Pause(**p),
                   rate_blocked_until_wall_ms=int(d.get("rate_blocked_until_wall_ms", 0)))


class Safety:
    """Applies :class:`SafetyLimits` to a :class:`SafetyState`. Every method takes the time (ms) it is about."""

    def __init__(self, limits: SafetyLimits, state: SafetyState | None = None) -> None:
        self.limits = limits
        self.state = state or SafetyState()

    @property
    def paused(self) -> Pause | None:
        return self.state.pause

    def roll(self, now_ms: int) -> Pause | None:
        """Start a new UTC day when ``now_ms`` is in one: reset the entry count and the start equity, and lift a
        day-scoped pause. Returns the lifted pause (to announce it), else None."""
        day = utc_day(now_ms)
        if day == self.state.day:
            return None
        self.state.day, self.state.entries_today, self.state.day_start_equity = day, 0, None
        lifted = self.state.pause
        if lifted is not None and lifted.kind in DAY_SCOPED:
            self.state.pause = None
            return lifted
        return None

    def pause(self, kind: PauseKind, reason: str, by: str, now_ms: int) -> Pause:
        """Pause entries (the first reason stays when already paused, except the kill switch replaces it)."""
        if self.state.pause is None or kind == "kill":
            self.state.pause = Pause(kind, reason, by, now_ms, utc_day(now_ms))
        return self.state.pause

    def resume(self) -> Pause | None:
        lifted, self.state.pause = self.state.pause, None
        self.state.errors.clear()
        return lifted

    def entry_refusal(self, open_positions: int, now_ms: int) -> str | None:
        """Why a new entry may not be sent now, or None."""
        self.roll(now_ms)
        if self.state.pause is not None:
            return f"trading is paused: {self.state.pause.reason}"
        if open_positions >= self.limits.max_open_positions:
            return f"{open_positions} positions open: MAX_OPEN_POSITIONS={self.limits.max_open_positions}"
        if self.state.entries_today >= self.limits.max_orders_per_day:
            return f"MAX_ORDERS_PER_DAY={self.limits.max_orders_per_day} entries sent today"
        return None

    def count_entry(self, now_ms: int) -> Pause | None:
        """Count an entry order as it is sent; pauses (and returns the pause) when the day's limit is reached."""
        self.roll(now_ms)
        self.state.entries_today += 1
        if self.state.entries_today >= self.limits.max_orders_per_day:
            return self.pause("orders_per_day", f"MAX_ORDERS_PER_DAY={self.limits.max_orders_per_day} entries sent "
                              "today; entries resume on the next UTC day", "bot", now_ms)
        return None

    def observe_equity(self, equity: float, now_ms: int) -> Pause | None:
        """Track the day's start equity; pause when the loss from it reaches DAILY_LOSS_LIMIT_PCT."""
        self.roll(now_ms)
        if self.state.day_start_equity is None or self.state.day_start_equity <= 0:
            self.state.day_start_equity = equity
            return None
        start = self.state.day_start_equity
        loss_pct = (start - equity) / start * 100.0
        if loss_pct >= self.limits.daily_loss_limit_pct and (self.state.pause is None or self.state.pause.kind != "daily_loss"):
            return self.pause("daily_loss", f"daily loss {loss_pct:.2f}% of the day's start equity {start:.2f} USDT "
                              f"reached DAILY_LOSS_LIMIT_PCT={self.limits.daily_loss_limit_pct:g}; entries resume on "
                              "the next UTC day", "bot", now_ms)
        return None

    def record_error(self, what: str, now_ms: int) -> Pause | None:
        """Count an exchange error; the breaker pauses when TRADING_ERROR_LIMIT fall within the window."""
        errors = self.state.errors
        errors.append(now_ms)
        while errors and errors[0] < now_ms - self.limits.error_window_s * 1000:
            errors.popleft()
        if len(errors) >= self.limits.error_limit and self.state.pause is None:
            return self.pause("errors", f"{len(errors)} exchange errors within {self.limits.error_window_s} s "
                              f"(TRADING_ERROR_LIMIT={self.limits.error_limit}); last: {what}; >resume when fixed",
                              "bot", now_ms)
        return None

    def daily_loss_pct(self, equity: float) -> float | None:
        start = self.state.day_start_equity
        if start is None or start <= 0:
            return None
        return (start - equity) / start * 100.0
