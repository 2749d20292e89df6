"""Exactly-once delivery of follow-ups to one destination, the same way signals are delivered.

A follow-up is its own delivery row keyed by (signal id, event, destination). The store lists a destination's
pending follow-ups only for signals it posted ('sent' with a message id): the follow-up replies to that message
(or posts in its thread). Per follow-up:

1. an earlier attempt (``attempts > 0``) may have reached Discord before a crash: the poster looks for
   ``follow-up <event> of <signal id>`` in the footers of its own recent messages (the channel and the original's
   thread) and, if found, records that message instead of posting again;
2. a follow-up whose candle closed more than ``max_age_s`` ago, or that the destination does not post now
   (DISCORD_FOLLOW_UPS=off, notifications off, the market muted there), is recorded 'skipped' with the reason;
3. the attempt is recorded before the POST, the reply's id after it; a failure is recorded 'failed' and raises
   :class:`DeliveryFailed` (the sender backs off); a payload Discord refuses is 'skipped' with the error;
4. then the original message's status line is rewritten from every follow-up of the signal so far. The edit is
   idempotent, so one that fails (logged, counted) is made good by the next follow-up of that signal.

Like the signal outbox it remembers the rows it wrote, for a store that does not show them yet (outage spool).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import structlog

from src.analysis.follow_ups import follow_up_sort_key
from src.bot.discord.delivery import DeliveryFailed, FollowUpPoster, OutboxStats, describe_error, is_rejection
from src.bot.discord.destinations import Destination, follow_up_verdict
from src.bot.discord.messages import MessageBuilder
from src.bot.discord.subscriptions import SubscriptionBook
from src.bot.discord.wording import candle_close_ms
from src.storage.base import DeliveryStatus, FollowUpDelivery, FollowUpStore, PendingFollowUp, StoreError

log = structlog.get_logger(__name__)

IN_FLIGHT = "in flight"
HISTORY_SLACK_MS = 60_000
SETTLED_MEMORY = 10_000

Key = tuple[str, str]


class FollowUpQueue:
    """The follow-ups of one destination; driven by its :class:`~src.bot.discord.outbox.OutboxSender`."""

    def __init__(self, store: FollowUpStore, poster: FollowUpPoster, builder: MessageBuilder, destination: Destination,
                 *, stats: OutboxStats, max_age_s: int, clock: Callable[[], float], book: SubscriptionBook | None = None,
                 batch_limit: int = 50, fence: Callable[[], int | None] | None = None) -> None:
        self.store = store
        self.fence = fence  # the leader's epoch, raising FencedOut when this instance may not act (issue 16)
        self.poster = poster
        self.builder = builder
        self.target = destination
        self.stats = stats
        self.max_age_s = max_age_s
        self.clock = clock
        self.book = book
        self.batch_limit = batch_limit
        self._settled: OrderedDict[Key, FollowUpDelivery] = OrderedDict()
        self._attempts: dict[Key, FollowUpDelivery] = {}

    @property
    def destination(self) -> str:
        return self.target.key

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    @staticmethod
    def due_ms(p: PendingFollowUp) -> int:
        """When it happened: the close of the candle of the event (what orders it among the signals)."""
        return candle_close_ms(p.signal.timeframe, p.follow_up.event_time_ms)

    async def pending(self) -> list[PendingFollowUp]:
        """Pending follow-ups minus those this process settled already (their rows are written again)."""
        out: list[PendingFollowUp] = []
        for p in await self.store.pending_follow_ups(self.destination, limit=self.batch_limit):
            row = self._settled.get((p.signal.id, p.follow_up.event))
            if row is None:
                out.append(p)
            else:
                await self.store.record_follow_up_delivery(row)
        return out

    async def _record(self, p: PendingFollowUp, status: DeliveryStatus, *, message_id: str | None, attempts: int,
                      error: str | None, at_ms: int | None = None) -> None:
        key = (p.signal.id, p.follow_up.event)
        epoch = None if status == "sent" or self.fence is None else self.fence()
        row = FollowUpDelivery(key[0], p.follow_up.event, self.destination, status, message_id, attempts, error,
                               self._now_ms() if at_ms is None else at_ms, epoch)
        if status in ("sent", "skipped"):
            self._attempts.pop(key, None)
            self._settled[key] = row
            self._settled.move_to_end(key)
            while len(self._settled) > SETTLED_MEMORY:
                self._settled.popitem(last=False)
        else:
            self._attempts[key] = row
        await self.store.record_follow_up_delivery(row)

    async def _delivery(self, p: PendingFollowUp) -> FollowUpDelivery | None:
        key = (p.signal.id, p.follow_up.event)
        stored = await self.store.get_follow_up_delivery(key[0], p.follow_up.event, self.destination)
        mine = self._attempts.get(key)
        if mine is not None and (stored is None or (stored.status in ("pending", "failed") and mine.attempts > stored.attempts)):
            return mine
        return stored

    async def deliver(self, p: PendingFollowUp) -> int:
        """Settle one follow-up (see the module docstring); returns messages posted (0 or 1). Raises DeliveryFailed
        (back off and retry) or StoreError."""
        key = (p.signal.id, p.follow_up.event)
        d = await self._delivery(p)
        attempts = d.attempts if d else 0
        if d is not None and attempts > 0:
            found = await self.poster.find_posted_follow_ups([key], {p.signal.id: p.original_message_id},
                                                             d.updated_at_ms - HISTORY_SLACK_MS)
            if key in found:
                await self._record(p, "sent", message_id=found[key], attempts=attempts, error=None)
                self.stats.recovered += 1
                log.info("discord_follow_up_recovered", destination=self.destination, signal_id=key[0], follow_up=key[1])
                await self._edit(p)
                return 0
        if self.max_age_s > 0 and self._now_ms() - self.due_ms(p) > self.max_age_s * 1000:
            await self._record(p, "skipped", message_id=None, attempts=attempts,
                               error=f"older than SIGNAL_MAX_AGE_SECONDS={self.max_age_s}")
            self.stats.skipped += 1
            return 0
        mutes = self.book.mutes(self.destination) if self.book is not None else []
        verdict = follow_up_verdict(self.target, p.signal, mutes, self._now_ms())
        if not verdict.post:
            await self._record(p, "skipped", message_id=None, attempts=attempts, error=f"not posted: {verdict.reason}")
            self.stats.not_routed += 1
            return 0
        message = self.builder.follow_up(p)
        if verdict.silent:
            message = replace(message, silent=True)
        started = self._now_ms()
        await self._record(p, "pending", message_id=None, attempts=attempts + 1, error=IN_FLIGHT, at_ms=started)
        if self.fence is not None:
            self.fence()  # the claim may have waited on the store: still the acting leader right before the POST?
        try:
            message_id = await self.poster.post_follow_up(message, p.original_message_id, self.target.follow_up_mode)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = describe_error(exc)
            self.stats.last_error = error
            if is_rejection(exc):
                await self._record(p, "skipped", message_id=None, attempts=attempts + 1, error=f"rejected: {error}")
                self.stats.rejected += 1
                log.error("discord_follow_up_rejected", destination=self.destination, signal_id=key[0], follow_up=key[1],
                          error=error)
                return 0
            await self._record(p, "failed", message_id=None, attempts=attempts + 1, error=error, at_ms=started)
            self.stats.failed += 1
            raise DeliveryFailed(error) from exc
        await self._record(p, "sent", message_id=message_id, attempts=attempts + 1, error=None)
        self.stats.follow_ups += 1
        self.stats.last_sent_at_ms = self._now_ms()
        log.info("discord_follow_up_posted", destination=self.destination, signal_id=key[0], follow_up=key[1],
                 message_id=message_id)
        await self._edit(p)
        return 1

    async def _edit(self, p: PendingFollowUp) -> None:
        """Rewrite the original's status line from the signal's follow-ups up to this one (never raises)."""
        try:
            upto = follow_up_sort_key(p.follow_up)
            history = [f for f in await self.store.follow_ups(p.signal.id) if follow_up_sort_key(f) <= upto]
            status = self.builder.status(p.signal, history)
            if not await self.poster.edit_status(p.original_message_id, p.signal.id, status):
                log.info("discord_original_not_found", destination=self.destination, signal_id=p.signal.id,
                         message_id=p.original_message_id)
        except asyncio.CancelledError:
            raise
        except (StoreError, Exception) as exc:  # the reply is out; a stale status line is fixed by the next follow-up
            self.stats.edits_failed += 1
            log.warning("discord_status_edit_failed", destination=self.destination, signal_id=p.signal.id,
                        error=describe_error(exc))
