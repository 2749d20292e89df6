"""``>watch`` / ``>unwatch`` / ``>mute`` / ``>unmute``: the stored subscriptions and mutes, and their in-memory copy.

The store is the truth (they survive restarts and are shared between processes). :class:`SubscriptionBook` keeps
a copy for the outbox senders, which consult it for every signal: it is re-read after every change made here and
at most ``refresh_s`` (60 s) after a change made by another process. A failed re-read keeps the last copy (logged):
filters never fall back to "post everything" or "post nothing" because the database blinked.

Scopes: a channel (``discord:<channel id>``; changing it needs Manage Channels there, or a bot owner) or a user's
DMs (``dm:<user id>``; a user manages only their own list).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from src.storage.base import Mute, StoreError, Subscription

log = structlog.get_logger(__name__)

MAX_SUBSCRIPTIONS_PER_DESTINATION = 100
MAX_MUTE_MS = 30 * 86_400_000  # a mute lasts at most 30 days


class SubscriptionBookStore(Protocol):
    async def save_subscription(self, subscription: Subscription) -> bool: ...

    async def delete_subscriptions(self, destination: str, *, symbol: str | None = None,
                                   timeframe: str | None = None) -> int: ...

    async def subscriptions(self, destination: str | None = None) -> list[Subscription]: ...

    async def save_mute(self, mute: Mute) -> None: ...

    async def delete_mutes(self, destination: str, *, symbol: str | None = None, timeframe: str | None = None) -> int: ...

    async def mutes(self, destination: str | None = None) -> list[Mute]: ...


class TooManySubscriptions(ValueError):
    """A destination already has :data:`MAX_SUBSCRIPTIONS_PER_DESTINATION`."""


class SubscriptionBook:
    """The subscriptions and mutes of every destination, read from ``store``; see the module docstring.

    :param on_change: called after a change made through this book (the service starts or stops senders).
    :param clock: wall clock in epoch seconds.
    """

    def __init__(self, store: SubscriptionBookStore, *, refresh_s: float = 60.0, clock: Callable[[], float] = time.time,
                 on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self.on_change = on_change
        self._subs: dict[str, list[Subscription]] = {}
        self._mutes: dict[str, list[Mute]] = {}
        self._loaded_at = -math.inf
        self.loaded = False

    # ------------------------------------------------------------------ reading
    async def refresh(self) -> None:
        """Re-read everything (raises StoreError)."""
        subs = await self.store.subscriptions()
        mutes = await self.store.mutes()
        by_dest: dict[str, list[Subscription]] = defaultdict(list)
        for s in subs:
            by_dest[s.destination].append(s)
        muted: dict[str, list[Mute]] = defaultdict(list)
        for m in mutes:
            muted[m.destination].append(m)
        self._subs, self._mutes = dict(by_dest), dict(muted)
        self._loaded_at = self.clock()
        self.loaded = True

    async def ensure_fresh(self) -> None:
        """Re-read when the copy is older than ``refresh_s``; a failure keeps the old copy (and is retried later)."""
        if self.clock() - self._loaded_at < self.refresh_s:
            return
        try:
            await self.refresh()
        except StoreError as exc:
            self._loaded_at = self.clock()  # not on every signal while the store is down
            log.warning("discord_subscriptions_unavailable", error=str(exc)[:200], kept=sum(map(len, self._subs.values())))

    def subscriptions(self, destination: str) -> list[Subscription]:
        return list(self._subs.get(destination, ()))

    def mutes(self, destination: str) -> list[Mute]:
        return list(self._mutes.get(destination, ()))

    def destinations(self) -> set[str]:
        """Every destination with at least one subscription."""
        return {d for d, subs in self._subs.items() if subs}

    # ------------------------------------------------------------------ changing (commands)
    async def watch(self, destination: str, symbol: str, timeframe: str, user_id: int) -> bool:
        """Subscribe; True if new. Raises TooManySubscriptions, StoreError."""
        await self.refresh()
        current = self.subscriptions(destination)
        if any(s.symbol == symbol and s.timeframe == timeframe for s in current):
            return False
        if len(current) >= MAX_SUBSCRIPTIONS_PER_DESTINATION:
            raise TooManySubscriptions(f"at most {MAX_SUBSCRIPTIONS_PER_DESTINATION} subscriptions per channel or user")
        new = await self.store.save_subscription(Subscription(destination, symbol, timeframe, str(user_id),
                                                              int(self.clock() * 1000)))
        await self._changed()
        return new

    async def unwatch(self, destination: str, symbol: str | None, timeframe: str | None) -> int:
        removed = await self.store.delete_subscriptions(destination, symbol=symbol, timeframe=timeframe)
        await self._changed()
        return removed

    async def mute(self, destination: str, symbol: str, timeframe: str, duration_ms: int, user_id: int) -> Mute:
        now = int(self.clock() * 1000)
        mute = Mute(destination, symbol, timeframe, now + min(duration_ms, MAX_MUTE_MS), str(user_id), now)
        await self.store.save_mute(mute)
        await self._changed()
        return mute

    async def unmute(self, destination: str, symbol: str | None, timeframe: str | None) -> int:
        removed = await self.store.delete_mutes(destination, symbol=symbol, timeframe=timeframe)
        await self._changed()
        return removed

    async def _changed(self) -> None:
        await self.refresh()
        if self.on_change is not None:
            self.on_change()

    def active_mutes(self, destination: str) -> Sequence[Mute]:
        now = int(self.clock() * 1000)
        return [m for m in self.mutes(destination) if m.until_ms > now]
