"""Keeps Discord up to date with the jobs it asked for: edits the acknowledgement with progress, and posts
each finished job's result once.

Every ``interval_s`` (3 s) while the bot is connected:

- finished jobs with a Discord channel and no post yet: ``claim_notification`` (one bot process at a time,
  a claim older than 10 minutes may be taken again), then ONE reply to the acknowledgement with the result
  embed and files (equity PNG, report.json, trades.csv / report.md, summary.json, charts), pinging the
  requester only; then ``mark_notified``. A failed send releases the claim for the next round; a channel
  that is gone or forbidden marks the job posted (nothing to retry) with a warning;
- queued and running jobs with an acknowledgement: the message is edited when its text changed (progress,
  queue position), at most once per ``edit_every_s`` (6 s) per job.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import Any

import discord
import structlog

from src.bot.discord.cogs.jobs import job_post_mentions
from src.bot.discord.embeds import truncate
from src.bot.discord.job_embeds import result_embed, state_text
from src.jobs.model import JobRecord
from src.jobs.store import JobStore
from src.storage.base import StoreError

log = structlog.get_logger(__name__)

MAX_FILES = 10


class ChannelGone(Exception):
    """The job's channel is not a channel the bot can post in (any more)."""


class JobPoster:
    def __init__(self, store: JobStore, bot: Callable[[], discord.Client | None], *, interval_s: float = 3.0,
                 edit_every_s: float = 6.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._bot = bot
        self.interval_s = interval_s
        self.edit_every_s = edit_every_s
        self._monotonic = monotonic
        self._shown: dict[int, tuple[str, float]] = {}
        self._messages: dict[int, Any] = {}
        self.posted = 0

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                log.warning("job_posts_store_error", error=str(exc)[:200])
            except Exception as exc:  # never let one bad round stop the loop
                log.error("job_posts_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> None:
        bot = self._bot()
        if bot is None or not bot.is_ready():
            return
        for job in await self.store.to_notify():
            if await self.store.claim_notification(job.id):
                await self._post(bot, job)
        active = await self.store.active_with_messages()
        running = sum(1 for j in active if j.state == "running")
        for job in active:
            await self._edit(bot, job, running)
        live = {j.id for j in active}
        for job_id in [k for k in self._shown if k not in live]:
            del self._shown[job_id]
            self._messages.pop(job_id, None)

    async def _channel(self, bot: discord.Client, channel_id: int) -> Any:
        channel: Any = bot.get_channel(channel_id)
        if channel is None:
            channel = await bot.fetch_channel(channel_id)
        if not hasattr(channel, "send"):  # a category or forum: nowhere to post
            raise ChannelGone(f"channel {channel_id} is not a text channel")
        return channel

    async def _post(self, bot: discord.Client, job: JobRecord) -> None:
        assert job.requester.channel_id is not None
        try:
            channel = await self._channel(bot, job.requester.channel_id)
            files = [] if job.state != "done" else await self.store.files(job.id)
            attachments = [discord.File(io.BytesIO(f.content), filename=f.name) for f in files[:MAX_FILES]]
            ref = None
            if job.message_id:
                ref = discord.MessageReference(message_id=job.message_id, channel_id=job.requester.channel_id,
                                               fail_if_not_exists=False)
            mention = f"<@{job.requester.user_id}>" if job.requester.user_id.isdigit() else ""
            verb = {"done": "is done", "failed": "failed", "cancelled": "was cancelled"}[job.state]
            await channel.send(truncate(f"{mention} {job.request.kind} #{job.id} {verb}.".strip(), 2000),
                               embed=result_embed(job), files=attachments, reference=ref,
                               allowed_mentions=job_post_mentions(job.requester.user_id))
        except (discord.NotFound, discord.Forbidden, ChannelGone) as exc:
            log.warning("job_result_undeliverable", job_id=job.id, channel_id=job.requester.channel_id,
                        error=type(exc).__name__)
        except (discord.HTTPException, OSError) as exc:
            log.warning("job_result_post_failed", job_id=job.id, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            await self.store.release_notification(job.id)
            return
        await self.store.mark_notified(job.id)
        self.posted += 1
        log.info("job_result_posted", job_id=job.id, state=job.state)
        if job.message_id:
            await self._edit_message(bot, job, state_text(job))

    async def _edit(self, bot: discord.Client, job: JobRecord, running: int) -> None:
        position = await self.store.queue_position(job.id) if job.state == "queued" else None
        text = state_text(job, position, running)
        shown = self._shown.get(job.id)
        now = self._monotonic()
        if shown is not None and (shown[0] == text or now - shown[1] < self.edit_every_s):
            return
        self._shown[job.id] = (text, now)
        await self._edit_message(bot, job, text)

    async def _edit_message(self, bot: discord.Client, job: JobRecord, text: str) -> None:
        if job.message_id is None or job.requester.channel_id is None:
            return
        try:
            msg = self._messages.get(job.id)
            if msg is None:  # fetched once per job, then edited in place (one request per edit)
                channel = await self._channel(bot, job.requester.channel_id)
                msg = await channel.fetch_message(job.message_id)
                self._messages[job.id] = msg
            await msg.edit(content=text)
        except (discord.HTTPException, OSError, ChannelGone) as exc:  # progress edits are best effort
            log.debug("job_progress_edit_failed", job_id=job.id, error=type(exc).__name__)
