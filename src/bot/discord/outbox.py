"""Exactly-once delivery of stored signals to one destination (a Discord channel or a webhook).

The pipeline stores every candidate before publishing it; the outbox only reads the store
(``pending_deliveries``: signals of the destination's kinds with no 'sent'/'skipped' row for it) and
writes delivery rows. A destination takes trade calls, and watch notes only when WATCH_NOTES routes
them there; gated candidates are never returned by the store, so never posted.
The protocol for each group of signals (one message) is:

1. signals whose candle closed more than ``max_age_s`` ago are recorded 'skipped' (a restart after a
   long outage never floods the channel with stale setups), unless step 2 finds them posted;
2. a signal with ``attempts > 0`` MAY have been posted already (a crash or timeout between Discord
   accepting the POST and us recording the message id). Before posting it again the poster looks for
   ``id <signal id>`` in the footers of its own recent messages (channel history since the last attempt
   minus a minute); if found, that message id is recorded as 'sent' and nothing is posted;
3. the attempt is recorded BEFORE the POST (status 'pending', attempts + 1, ``last_error='in flight'``),
   then the message is posted and its id recorded as 'sent';
4. on failure the row becomes 'failed' with the error, the pass stops (order is kept: a later signal is
   never posted before an earlier one) and the sender retries after a capped, jittered exponential
   backoff (1 s, 2 s, 4 s ... 300 s). 429s are retried inside discord.py (Retry-After honoured); no
   sleep loop here wraps a send. A payload Discord rejects (400/413) or an upload it forbids (403: no
   Attach Files permission) is retried once without charts,
   and if that is rejected too the signal is recorded 'skipped' with the error (logged and counted) so
   one bad message cannot block the queue forever.

The store may lag behind the outbox's own writes: with a network store the outage spool replays
delivery rows later, and until then reads still show the signal pending and never attempted. The sender
therefore also remembers, in memory, every row it wrote: a signal it settled ('sent'/'skipped') is never
posted again in this process (its row is written again, an idempotent upsert, in case the first write was
lost), and an attempt the store does not show yet still triggers the history check of step 2.

Guarantee: the bot channel destination is exactly-once as long as the crashed attempt is still among
the channel's newest 200 messages and the bot has Read Message History there (without it the check is
skipped with a logged error); every bot post also carries a nonce Discord enforces for a few minutes, so
a quick retry returns the first message even without that permission.
Webhooks can neither read channel history nor send a nonce: an attempt whose outcome is unknown (the
POST took longer than the 60 s client timeout, or the bot stopped or died during it) is posted again and
may show twice (at-least-once for that window, exactly-once otherwise); each such repost is logged as
``discord_delivery_unconfirmed_repost`` with ``may_duplicate=true`` (RUNBOOK section 4.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

import discord
import structlog

from src.analysis.types import Signal, SignalKind, iso_to_ms
from src.bot.discord.delivery import DeliveryFailed as DeliveryFailed
from src.bot.discord.delivery import FollowUpPoster, is_rejection
from src.bot.discord.delivery import OutboxStats as OutboxStats
from src.bot.discord.delivery import Poster as Poster
from src.bot.discord.delivery import describe_error as describe_error
from src.bot.discord.destinations import Destination, signal_verdict
from src.bot.discord.follow_up_outbox import FollowUpQueue
from src.bot.discord.messages import MessageBuilder, OutgoingMessage, group_signals
from src.bot.discord.notices import Notice, NoticeQueue
from src.bot.discord.subscriptions import SubscriptionBook
from src.config.discord_routes import RouteKind, RouteSpec
from src.storage.base import TRADE_CALLS_ONLY, Delivery, DeliveryStatus, FollowUpStore, OutboxStore, StoreError

log = structlog.get_logger(__name__)

IN_FLIGHT = "in flight"
HISTORY_SLACK_MS = 60_000
SETTLED_MEMORY = 10_000  # signal ids settled by this process that are remembered (a few hundred KB)


_is_rejection = is_rejection  # the name the tests and older code use
_SIGNAL_ROUTE_KINDS: tuple[RouteKind, ...] = ("trade", "watch")
_EMITTED: tuple[SignalKind, ...] = ("trade", "watch")


def _close_ms(signal: Signal) -> int:
    try:
        return iso_to_ms(signal.generated_at)
    except ValueError:
        return signal.candle_time_ms


class OutboxSender:
    """Posts pending signals (and follow-ups) of one destination in order; wakes on :meth:`wake` and polls.

    :param max_age_s: skip signals whose candle closed longer ago than this; 0 disables the limit.
    :param kinds: the kinds this destination posts when no ``target`` says more (every such signal, no follow-ups).
    :param target: the destination's filters, kinds, mentions and notification modes (issue 14).
    :param book: the ``>watch`` subscriptions and ``>mute`` mutes (for destinations that take them).
    :param since_slack_ms: with ``max_age_s``, read only signals whose candle opened after now - max age - this
        slack (the longest configured interval), so a new destination never pages through the whole history.
    :param clock: wall clock in epoch seconds (injected for tests).
    """

    def __init__(
        self,
        store: OutboxStore,
        poster: Poster,
        builder: MessageBuilder,
        *,
        max_age_s: int,
        clock: Callable[[], float] = time.time,
        poll_interval_s: float = 30.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        batch_limit: int = 50,
        kinds: Collection[SignalKind] = TRADE_CALLS_ONLY,
        target: Destination | None = None,
        book: SubscriptionBook | None = None,
        since_slack_ms: int | None = None,
        fence: Callable[[], int | None] | None = None,
    ) -> None:
        self.store = store
        # issue 16: the leader's lease epoch for every row this sender writes, raising FencedOut when this instance
        # may not act any more; also checked right before each POST (None: a single instance, no lease)
        self.fence = fence
        if target is None:  # every signal of ``kinds``, no follow-ups: the destination before routes existed
            plain: tuple[RouteKind, ...] = tuple(k for k in _SIGNAL_ROUTE_KINDS if k in kinds)
            target = Destination(poster.destination, poster.destination, frozenset(plain),
                                 route=RouteSpec(poster.destination, kinds=plain), follow_up_mode="off")
        self.target = target
        self.book = book
        self.since_slack_ms = since_slack_ms
        self.kinds: tuple[SignalKind, ...] = tuple(k for k in _EMITTED if k in target.signal_kinds)
        self.poster = poster
        self.builder = builder
        self.max_age_s = max_age_s
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.batch_limit = batch_limit
        self.stats = OutboxStats()
        self._wake = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False
        self._failures = 0
        # rows this process wrote, for a store that does not show them yet (see the module docstring)
        self._settled: OrderedDict[str, Delivery] = OrderedDict()
        self._attempts: dict[str, Delivery] = {}
        self.notices = NoticeQueue()
        self.follow_ups: FollowUpQueue | None = None
        if target.posts_follow_ups and isinstance(poster, FollowUpPoster) and isinstance(store, FollowUpStore):
            self.follow_ups = FollowUpQueue(store, poster, builder, target, stats=self.stats, max_age_s=max_age_s,
                                            clock=clock, book=book, batch_limit=batch_limit, fence=fence)

    @property
    def destination(self) -> str:
        return self.poster.destination

    def wake(self) -> None:
        self._wake.set()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def _record(self, sid: str, status: DeliveryStatus, *, message_id: str | None, attempts: int,
                      error: str | None, at_ms: int | None = None) -> None:
        at = self._now_ms() if at_ms is None else at_ms
        epoch = None if status == "sent" or self.fence is None else self.fence()
        row = Delivery(sid, self.destination, status, message_id, attempts, error, at, epoch)
        # remembered before the write: a write that raises must not make the signal look unsent or unattempted
        if status in ("sent", "skipped"):
            self._attempts.pop(sid, None)
            self._settled[sid] = row
            self._settled.move_to_end(sid)
            while len(self._settled) > SETTLED_MEMORY:
                self._settled.popitem(last=False)
        else:
            self._attempts[sid] = row
        await self.store.record_delivery(row)

    async def _delivery(self, sid: str) -> Delivery | None:
        """The stored row, or this process's own newer attempt when the store does not show it yet."""
        stored = await self.store.get_delivery(sid, self.destination)
        mine = self._attempts.get(sid)
        if mine is not None and (stored is None or (stored.status in ("pending", "failed") and mine.attempts > stored.attempts)):
            return mine
        return stored

    async def _unsettled(self) -> list[Signal]:
        """Pending signals minus those this process already settled (their rows are written again)."""
        if not self.kinds:
            return []
        since = None
        if self.since_slack_ms is not None and self.max_age_s > 0:
            since = self._now_ms() - self.max_age_s * 1000 - self.since_slack_ms
        pending = await self.store.pending_deliveries(self.destination, kinds=self.kinds, limit=self.batch_limit,
                                                      since_ms=since)
        out: list[Signal] = []
        for s in pending:
            row = self._settled.get(s.id)
            if row is None:
                out.append(s)
            else:
                await self.store.record_delivery(row)
        return out

    def _too_old(self, signal: Signal) -> bool:
        if self.max_age_s <= 0:
            return False
        try:
            closed_ms = iso_to_ms(signal.generated_at)
        except ValueError:
            closed_ms = signal.candle_time_ms  # a malformed timestamp must not block the queue
        return self._now_ms() - closed_ms > self.max_age_s * 1000

    def notify(self, notice: Notice) -> bool:
        """Queue ``notice`` when this destination takes its kind (and DISCORD_NOTIFICATIONS does not turn it off);
        True if queued. The next pass posts it first."""
        if notice.kind not in self.target.kinds:
            return False
        mode = self.target.notifications.get(notice.kind, "on")
        if mode == "off":
            return False
        self.notices.put(notice, silent=mode == "silent")
        self.wake()
        return True

    async def _post_notices(self) -> int:
        posted = 0
        while (item := self.notices.peek()) is not None:
            notice, silent = item
            message = OutgoingMessage((), None, (notice.embed(),), silent=silent).with_mentions(
                self.target.mention_roles if notice.kind == "alarm" else ())
            try:
                await self.poster.post(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = describe_error(exc)
                self.stats.last_error = error
                if _is_rejection(exc):
                    self.notices.pop()
                    self.stats.rejected += 1
                    log.error("discord_notice_rejected", destination=self.destination, error=error)
                    continue
                self.stats.failed += 1
                raise DeliveryFailed(error) from exc
            self.notices.pop()
            self.stats.notices += 1
            posted += 1
        return posted

    async def _pending_follow_ups(self) -> list[Any]:
        return await self.follow_ups.pending() if self.follow_ups is not None else []

    async def drain_once(self) -> int:
        """One pass over the pending signals and follow-ups, oldest first (signals by candle close, follow-ups by
        the close of their event's candle). Returns messages posted. Raises DeliveryFailed (post failed)
        or StoreError (store down); both mean 'back off and retry'."""
        if self.book is not None:
            await self.book.ensure_fresh()
        if not await self.poster.ready():
            # keep the pending count honest for >status and metrics while the destination is down
            self.stats.pending = len(await self._unsettled()) + len(await self._pending_follow_ups())
            return 0
        posted = await self._post_notices()
        for _page in range(10_000):  # bounded: each page settles at least one signal or follow-up, or returns
            self._wake.clear()  # a publish() from now on triggers another pass
            pending = await self._unsettled()
            follow_ups = await self._pending_follow_ups()
            self.stats.pending = len(pending) + len(follow_ups)
            if not pending and not follow_ups:
                return posted
            sendable = await self._settle_or_keep(pending) if pending else []
            if sendable and (not follow_ups or _close_ms(sendable[0]) <= FollowUpQueue.due_ms(follow_ups[0])):
                silent = self._silent(sendable[0])
                group = [s for s in group_signals(sendable)[0] if self._silent(s) == silent]
                posted += await self._deliver(group, {s.id: await self._delivery(s.id) for s in group}, silent=silent)
            elif follow_ups:
                assert self.follow_ups is not None
                posted += await self.follow_ups.deliver(follow_ups[0])
            if self._stopping:
                return posted
        return posted

    def _verdict_now(self, signal: Signal) -> Any:
        book = self.book
        subs = book.subscriptions(self.destination) if book is not None else []
        mutes = book.mutes(self.destination) if book is not None else []
        return signal_verdict(self.target, signal, subs, mutes, self._now_ms())

    def _silent(self, signal: Signal) -> bool:
        return bool(self._verdict_now(signal).silent)

    async def _settle_or_keep(self, pending: list[Signal]) -> list[Signal]:
        """Record what needs no post (found posted after a crash, too old, not routed here); return the rest."""
        deliveries = {s.id: await self._delivery(s.id) for s in pending}
        maybe_posted = [sid for sid, d in deliveries.items() if d is not None and d.attempts > 0]
        found: dict[str, str] = {}
        if maybe_posted:
            since = min(deliveries[sid].updated_at_ms for sid in maybe_posted) - HISTORY_SLACK_MS  # type: ignore[union-attr]
            found = await self.poster.find_posted(maybe_posted, since)
        sendable: list[Signal] = []
        for s in pending:
            d = deliveries[s.id]
            attempts = d.attempts if d else 0
            if s.id in maybe_posted and s.id not in found and not self._too_old(s):
                # an earlier attempt's outcome is unknown (timed out, or the process stopped mid-POST); a
                # destination that cannot check (a webhook) may now show this signal twice
                log.warning("discord_delivery_unconfirmed_repost", destination=self.destination, signal_id=s.id,
                            attempts=attempts, may_duplicate=not getattr(self.poster, "can_confirm", True))
            if s.id in found:
                await self._record(s.id, "sent", message_id=found[s.id], attempts=attempts, error=None)
                self.stats.recovered += 1
                log.info("discord_delivery_recovered", destination=self.destination, signal_id=s.id, message_id=found[s.id])
            elif self._too_old(s):
                await self._record(s.id, "skipped", message_id=None, attempts=attempts,
                                   error=f"older than SIGNAL_MAX_AGE_SECONDS={self.max_age_s}")
                self.stats.skipped += 1
                log.info("discord_delivery_skipped_stale", destination=self.destination, signal_id=s.id,
                         generated_at=s.generated_at)
            elif not (verdict := self._verdict_now(s)).post:
                await self._record(s.id, "skipped", message_id=None, attempts=attempts,
                                   error=f"not posted: {verdict.reason}"[:500])
                self.stats.not_routed += 1
            else:
                sendable.append(s)
        return sendable

    async def _deliver(self, group: list[Signal], deliveries: dict[str, Delivery | None], *, silent: bool = False) -> int:
        message = await self.builder.build(group, status=self.follow_ups is not None)
        message = replace(message, silent=silent).with_mentions(self.target.mention_roles)
        ids = set(message.signal_ids)
        members = [s for s in group if s.id in ids]
        attempts = {s.id: (deliveries[s.id].attempts if deliveries[s.id] else 0) + 1 for s in members}  # type: ignore[union-attr]
        started_ms = self._now_ms()
        for s in members:
            await self._record(s.id, "pending", message_id=None, attempts=attempts[s.id], error=IN_FLIGHT, at_ms=started_ms)
        if self.fence is not None:
            self.fence()  # the claims may have waited on the store: still the acting leader right before the POST?
        try:
            message_id = await self.poster.post(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # a refused upload (400/413), or 403 = the bot may post but lacks Attach Files: the signal without
            # its chart beats no signal at all
            if (_is_rejection(exc) or isinstance(exc, discord.Forbidden)) and message.files:
                log.warning("discord_payload_rejected_retry_without_charts", destination=self.destination,
                            error=describe_error(exc))
                try:
                    message_id = await self.poster.post(message.without_files())
                except asyncio.CancelledError:
                    raise
                except Exception as exc2:
                    return await self._failed(members, attempts, exc2, started_ms)
            else:
                return await self._failed(members, attempts, exc, started_ms)
        for s in members:
            await self._record(s.id, "sent", message_id=message_id, attempts=attempts[s.id], error=None)
        self.stats.sent += len(members)
        self.stats.messages += 1
        self.stats.last_sent_at_ms = self._now_ms()
        self._failures = 0
        log.info("discord_signal_posted", destination=self.destination, message_id=message_id,
                 signal_ids=[s.id for s in members])
        return 1

    async def _failed(self, members: list[Signal], attempts: dict[str, int], exc: BaseException, started_ms: int) -> int:
        """Record the failure. A failed row keeps the attempt's START time as ``updated_at``: a POST that hung
        and then failed may still have created a message, and the history check searches from that time."""
        error = describe_error(exc)
        self.stats.last_error = error
        if _is_rejection(exc):
            for s in members:
                await self._record(s.id, "skipped", message_id=None, attempts=attempts[s.id], error=f"rejected: {error}")
            self.stats.rejected += len(members)
            log.error("discord_payload_rejected", destination=self.destination, signal_ids=[s.id for s in members], error=error)
            return 0
        for s in members:
            await self._record(s.id, "failed", message_id=None, attempts=attempts[s.id], error=error, at_ms=started_ms)
        self.stats.failed += 1
        raise DeliveryFailed(error) from exc

    def backoff_delay(self) -> float:
        """Capped exponential backoff with full jitter in [50%, 100%] of base * 2^(failures-1)."""
        raw = min(self.backoff_cap_s, self.backoff_base_s * 2 ** max(0, self._failures - 1))
        return float(raw * (0.5 + random.random() / 2))

    async def run(self) -> None:
        """Loop until :meth:`stop`: drain, then wait for a wake-up or the poll interval; after a failure wait
        out the backoff (only stop() interrupts it, so a burst of publishes cannot hammer a failing API)."""
        while not self._stopping:
            try:
                await self.drain_once()
                failed = False
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except (DeliveryFailed, StoreError) as exc:
                failed = True
                self._failures += 1
                log.warning("discord_delivery_retry", destination=self.destination, attempt=self._failures,
                            error=str(exc)[:200])
            except Exception as exc:  # a bug must not end delivery for good: log it and retry with backoff
                failed = True
                self._failures += 1
                log.exception("discord_outbox_error", destination=self.destination, error=describe_error(exc))
            if self._stopping:
                break
            event, timeout = (self._stop_event, self.backoff_delay()) if failed else (self._wake, self.poll_interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=timeout)

    async def stop(self, task: asyncio.Task[None] | None, *, flush_timeout_s: float = 10.0) -> None:
        """Finish the message in flight (and what else fits in ``flush_timeout_s``), then cancel."""
        self._stopping = True
        self._stop_event.set()
        self._wake.set()
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=flush_timeout_s)
            return
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is None or not current.cancelling():
                return  # the sender task itself was cancelled elsewhere
            task.cancel()  # our caller is cancelled (a shutdown deadline): stop the sender, let the cancel through
            raise
        task.cancel()
        await asyncio.wait([task])  # unlike awaiting it, never swallows a cancellation of stop() itself
