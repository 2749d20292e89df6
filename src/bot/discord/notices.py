"""Notices: the messages that are not signals. ``alarm`` (the bot's own health) and ``trading`` (fills, from the
trading module when it runs), routed by kind like everything else and posted as they come.

Unlike signals and follow-ups, notices are not stored: each destination that takes the kind (DISCORD_ROUTES
``kinds=...,alarm``; the signals channel and DISCORD_WEBHOOK_URL take both) queues it in memory (at most
:data:`QUEUE_LIMIT`; the oldest is dropped and counted beyond that) and its sender posts it with the same retries
and backoff as a signal. A restart loses what was queued: an alarm describes the moment, and the condition is
reported again if it persists.

:class:`AlarmWatcher` turns the bot's status into alarms, on changes only (every ``interval_s``, 60 s):

- the store becomes unreachable / reachable again;
- streams go stale (no closed candle for more than two of their intervals) / are all fresh again;
- the outage spool holds writes for longer than one check (the database is down and writes are piling up).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import discord
import structlog

from src.bot.status import StatusProvider, StatusSnapshot
from src.config.discord_routes import RouteKind

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 100
COLOURS = {"alarm": 0xE67E22, "trading": 0x3498DB, "ok": 0x2ECC71}


@dataclass(frozen=True, slots=True)
class Notice:
    """One message of kind ``alarm`` or ``trading``; ``ok`` marks an all-clear (green)."""

    kind: RouteKind
    title: str
    text: str
    at_ms: int
    ok: bool = False

    def embed(self) -> discord.Embed:
        from src.bot.discord.embeds import DESCRIPTION_MAX, TITLE_MAX, _ts, truncate

        colour = COLOURS["ok"] if self.ok else COLOURS.get(self.kind, 0x95A5A6)
        embed = discord.Embed(title=truncate(self.title, TITLE_MAX), description=truncate(self.text, DESCRIPTION_MAX),
                              colour=colour, timestamp=_ts(self.at_ms))
        embed.set_footer(text=f"WyEli {self.kind}")
        return embed


class NoticeQueue:
    """A destination's notices waiting to be posted (bounded, oldest dropped first)."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self._items: deque[tuple[Notice, bool]] = deque()
        self.limit = limit
        self.dropped = 0

    def put(self, notice: Notice, silent: bool) -> None:
        if len(self._items) >= self.limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append((notice, silent))

    def peek(self) -> tuple[Notice, bool] | None:
        return self._items[0] if self._items else None

    def pop(self) -> None:
        self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class AlarmWatcher:
    """Polls the status and calls ``emit`` with an alarm on every change listed in the module docstring."""

    def __init__(self, status: StatusProvider, emit: Callable[[Notice], object], *, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.status = status
        self.emit = emit
        self.interval_s = interval_s
        self.clock = clock
        self._store_ok: bool | None = None
        self._stale: frozenset[str] = frozenset()
        self._spool = 0

    def check(self, snap: StatusSnapshot) -> list[Notice]:
        """The alarms ``snap`` raises compared with the previous check (pure; the first check sets the baseline and
        reports only what is wrong)."""
        now = int(self.clock() * 1000)
        out: list[Notice] = []
        if snap.store_healthy != self._store_ok:
            if not snap.store_healthy:
                out.append(Notice("alarm", "Database unreachable", f"{snap.store_backend} does not answer. Candles and "
                                  "signals are kept (spooled) and written when it is back; commands that read it wait.",
                                  now))
            elif self._store_ok is not None:
                out.append(Notice("alarm", "Database reachable again", f"{snap.store_backend} answers again.", now, ok=True))
            self._store_ok = snap.store_healthy
        stale = frozenset(f"{s.symbol} {s.timeframe}" for s in snap.streams if not s.fresh) if snap.warmed_up else frozenset()
        if stale != self._stale:
            if stale - self._stale:
                names = sorted(stale)
                shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
                out.append(Notice("alarm", f"{len(stale)} stream(s) without new candles",
                                  f"No closed candle for more than two intervals: {shown}. The feed reconnects and "
                                  "backfills on its own; see >status.", now))
            elif not stale:
                out.append(Notice("alarm", "Every stream is fresh again", "All streams deliver closed candles again.", now,
                                  ok=True))
            self._stale = stale
        if snap.spool_depth > 0 and self._spool > 0 and snap.spool_depth > self._spool:
            out.append(Notice("alarm", "Writes are piling up in the spool", f"{snap.spool_depth} writes wait for the "
                              "database (they are safe on disk and replayed in order when it is back).", now))
        self._spool = snap.spool_depth
        return out

    async def run(self) -> None:
        while True:
            try:
                snap = await self.status()
                for notice in self.check(snap):
                    log.warning("discord_alarm", title=notice.title, ok=notice.ok)
                    self.emit(notice)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watcher must outlive a failing status read
                log.warning("discord_alarm_check_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            await asyncio.sleep(self.interval_s)
