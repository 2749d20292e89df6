"""The outbox destinations: a channel through the bot (``discord:<channel id>``), a user's DMs (``dm:<user id>``) and a
webhook (``webhook`` / ``webhook:<id>``). Each posts signal messages and follow-ups, finds its own earlier posts after
a crash (the bot only: webhooks cannot read history) and edits an original message's status line."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import discord
import structlog

from src.bot.discord.embeds import FOLLOW_UP_RE, FOOTER_ID_RE, with_status
from src.bot.discord.messages import NO_MENTIONS, OutgoingMessage
from src.config import mask_secret
from src.config.discord_routes import FollowUpMode

log = structlog.get_logger(__name__)

HISTORY_LIMIT = 200
_WEBHOOK_TOKEN_RE = re.compile(r"(/webhooks/\d+/)[\w.-]+")
# the form discord.Webhook.from_url accepts (id: 17-20 digits, token: 60+ characters)
WEBHOOK_URL_RE = re.compile(r"discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9._-]{60,}")


def mask_webhook_url(text: str) -> str:
    """Hide the token part of any webhook URL inside ``text``."""
    return _WEBHOOK_TOKEN_RE.sub(r"\1***", text)


def delivery_nonce(signal_ids: Sequence[str]) -> str:
    """The message's nonce: the same for every attempt at posting these signals, 25 characters (Discord's limit)."""
    return hashlib.sha256("|".join(sorted(signal_ids)).encode()).hexdigest()[:25]


def _footer_ids(message: discord.Message) -> set[str]:
    ids: set[str] = set()
    for e in message.embeds:
        text = e.footer.text if e.footer else None
        if text:
            ids.update(FOOTER_ID_RE.findall(text))
    return ids


class ChannelPoster:
    """Posts into DISCORD_SIGNALS_CHANNEL_ID through the bot; finds its own earlier posts in the history, and
    sends a per-message nonce that Discord enforces (a repeat within minutes returns the first message).

    :param get_bot: returns the current bot (the service may replace it, e.g. after the intent fallback).
    """

    def __init__(self, get_bot: Callable[[], discord.Client | None], channel_id: int) -> None:
        self.get_bot = get_bot
        self.channel_id = channel_id
        self.destination = f"discord:{channel_id}"
        self.can_confirm = True  # channel history (Read Message History) and the nonce
        self._warned = False

    async def _channel(self) -> discord.abc.Messageable | None:
        bot = self.get_bot()
        if bot is None or not bot.is_ready():
            return None
        channel = bot.get_channel(self.channel_id)
        if channel is None:
            try:
                channel = await bot.fetch_channel(self.channel_id)
            except (discord.NotFound, discord.Forbidden, discord.InvalidData) as exc:
                if not self._warned:
                    log.error("discord_signals_channel_unavailable", channel_id=self.channel_id, error=type(exc).__name__,
                              hint="check DISCORD_SIGNALS_CHANNEL_ID and that the bot can View Channel there")
                    self._warned = True
                return None
        if not isinstance(channel, discord.abc.Messageable):
            if not self._warned:
                log.error("discord_signals_channel_not_text", channel_id=self.channel_id, kind=type(channel).__name__)
                self._warned = True
            return None
        self._warned = False
        return channel

    async def ready(self) -> bool:
        return await self._channel() is not None

    async def post(self, message: OutgoingMessage) -> str:
        channel = await self._channel()
        if channel is None:
            raise ConnectionError(f"channel {self.channel_id} is not reachable")
        # discord.py sends the nonce with enforce_nonce: Discord answers a repeat within a few minutes with the
        # message it already created instead of a second one (a retry after a timed-out POST, a quick restart)
        return str((await _send(channel, message, nonce=delivery_nonce(message.signal_ids))).id)

    async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
        channel = await self._channel()
        bot = self.get_bot()
        if channel is None or bot is None or bot.user is None:
            raise ConnectionError("cannot read the signals channel to check for earlier posts")
        wanted = set(signal_ids)
        found: dict[str, str] = {}
        for msg in await self._own_recent(channel, bot.user.id, since_ms):
            for sid in _footer_ids(msg) & wanted:
                found.setdefault(sid, str(msg.id))
        return found

    async def _own_recent(self, channel: discord.abc.Messageable, me: int, since_ms: int) -> list[discord.Message]:
        """Our own messages in ``channel`` since ``since_ms``, newest first (at most the newest 200 messages)."""
        after = datetime.fromtimestamp(max(0, since_ms) / 1000, tz=UTC)
        out: list[discord.Message] = []
        # newest first, stopping at the attempt's time (a plain walk back; no 'after' cursor needed)
        try:
            async for msg in channel.history(limit=HISTORY_LIMIT):
                if msg.created_at < after:
                    break
                if msg.author.id == me:
                    out.append(msg)
        except discord.Forbidden:
            # without Read Message History the check is impossible; blocking every signal on it would be worse
            # than the rare duplicate after a crash, so post again and say how to restore the guarantee
            log.error("discord_history_forbidden", channel_id=self.channel_id,
                      hint="grant the bot 'Read Message History' in the channel to keep delivery exactly-once")
        return out

    # ------------------------------------------------------------------ follow-ups (issue 14)
    async def post_follow_up(self, message: OutgoingMessage, original_message_id: str, mode: FollowUpMode) -> str:
        """A reply to the original message, or a post in a thread started on it (``mode='thread'``; the thread's id
        is the original's). Without the original (deleted) or the right to make threads it becomes a plain post."""
        channel = await self._channel()
        if channel is None:
            raise ConnectionError(f"channel {self.channel_id} is not reachable")
        if mode == "thread" and isinstance(channel, discord.TextChannel):
            thread = await self._thread_for(channel, original_message_id, message)
            if thread is not None:
                return str((await _send(thread, message)).id)
        reference = discord.MessageReference(message_id=int(original_message_id), channel_id=_channel_id(channel),
                                             fail_if_not_exists=False)
        return str((await _send(channel, message, reference=reference)).id)

    async def _thread_for(self, channel: discord.TextChannel, original_message_id: str,
                          message: OutgoingMessage) -> discord.Thread | None:
        thread_id = int(original_message_id)
        existing = channel.guild.get_thread(thread_id) if channel.guild else None
        if existing is not None:
            return existing
        name = truncate_name(message)
        try:
            return await channel.get_partial_message(thread_id).create_thread(name=name, auto_archive_duration=10080)
        except discord.Forbidden:
            log.warning("discord_thread_forbidden", channel_id=self.channel_id,
                        hint="grant the bot 'Create Public Threads' and 'Send Messages in Threads', or set "
                             "DISCORD_FOLLOW_UPS=reply; the follow-up is posted as a reply instead")
            return None
        except discord.NotFound:
            return None  # the original was deleted: a plain post it is
        except discord.HTTPException as exc:
            if exc.code == 160004:  # a thread already exists on that message (made by an earlier attempt)
                try:
                    found = await channel.guild.fetch_channel(thread_id)
                except (discord.NotFound, discord.Forbidden):
                    return None
                return found if isinstance(found, discord.Thread) else None
            raise

    async def find_posted_follow_ups(self, keys: Sequence[tuple[str, str]], originals: Mapping[str, str],
                                     since_ms: int) -> dict[tuple[str, str], str]:
        """(signal id, event) -> message id of those follow-ups we already posted since ``since_ms`` (in the channel
        and in the threads of their originals)."""
        channel = await self._channel()
        bot = self.get_bot()
        if channel is None or bot is None or bot.user is None:
            raise ConnectionError("cannot read the channel to check for earlier posts")
        wanted = set(keys)
        places: list[discord.abc.Messageable] = [channel]
        if isinstance(channel, discord.TextChannel) and channel.guild is not None:
            for sid in {k[0] for k in keys}:
                thread = channel.guild.get_thread(int(originals[sid])) if sid in originals else None
                if thread is not None:
                    places.append(thread)
        found: dict[tuple[str, str], str] = {}
        for place in places:
            for msg in await self._own_recent(place, bot.user.id, since_ms):
                for key in _follow_up_keys(msg) & wanted:
                    found.setdefault(key, str(msg.id))
        return found

    async def edit_status(self, original_message_id: str, signal_id: str, status: str) -> bool:
        """Set the status line of ``signal_id``'s embed in the original message; False when it cannot be found."""
        channel = await self._channel()
        if channel is None:
            raise ConnectionError(f"channel {self.channel_id} is not reachable")
        try:
            original = await channel.fetch_message(int(original_message_id))
        except discord.NotFound:
            return False
        embeds = with_status(original.embeds, signal_id, status)
        if embeds is None:
            return False
        await original.edit(embeds=embeds, allowed_mentions=NO_MENTIONS)
        return True


class DMPoster(ChannelPoster):
    """Posts into one user's DMs (``dm:<user id>``), for the user's own ``>watch`` list."""

    def __init__(self, get_bot: Callable[[], discord.Client | None], user_id: int) -> None:
        super().__init__(get_bot, user_id)
        self.user_id = user_id
        self.destination = f"dm:{user_id}"

    async def _channel(self) -> discord.abc.Messageable | None:
        bot = self.get_bot()
        if bot is None or not bot.is_ready():
            return None
        user = bot.get_user(self.user_id)
        try:
            if user is None:
                user = await bot.fetch_user(self.user_id)
            return user.dm_channel or await user.create_dm()
        except (discord.NotFound, discord.Forbidden, discord.HTTPException) as exc:
            if not self._warned:
                log.error("discord_dm_unavailable", user_id=self.user_id, error=type(exc).__name__)
                self._warned = True
            return None


async def _send(target: discord.abc.Messageable, message: OutgoingMessage, *,
                reference: discord.MessageReference | None = None, nonce: str | None = None) -> discord.Message:
    files = message.discord_files()
    extra: dict[str, Any] = {"files": files} if files else {}
    if nonce is not None:
        extra["nonce"] = nonce
    if reference is not None:
        extra["reference"] = reference
        extra["mention_author"] = False
    return await target.send(content=message.content, embeds=list(message.embeds), silent=message.silent,
                             allowed_mentions=message.allowed_mentions(), **extra)


def _channel_id(channel: discord.abc.Messageable) -> int:
    return int(getattr(channel, "id", 0))


def _follow_up_keys(message: discord.Message) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for e in message.embeds:
        text = e.footer.text if e.footer else None
        if text:
            keys.update((sid, event) for event, sid in FOLLOW_UP_RE.findall(text))
    return keys


def truncate_name(message: OutgoingMessage) -> str:
    """A thread name from the follow-up's first embed title (Discord allows 100 characters)."""
    title = str(message.embeds[0].title) if message.embeds and message.embeds[0].title else "WyEli follow-ups"
    head = title.split(" · ", 1)[1] if " · " in title else title
    return (head[:88] + " · results")[:100]


class WebhookPoster:
    """Posts through DISCORD_WEBHOOK_URL with an aiohttp session it owns (opened lazily, closed by
    :meth:`close`). The URL holds a token: it is never logged unmasked.

    Webhooks cannot read channel history, so :meth:`find_posted` can only confirm nothing; see the
    outbox module for what that means for the guarantee.
    """

    can_confirm = False  # no channel history and no nonce: an attempt whose outcome is unknown may be posted twice

    def __init__(self, url: str, *, username: str = "WyEli", destination: str = "webhook") -> None:
        if not WEBHOOK_URL_RE.search(url):
            raise ValueError(f"DISCORD_WEBHOOK_URL={mask_secret(url)!r} is not a Discord webhook URL "
                             "(https://discord.com/api/webhooks/<id>/<token>)")
        self.destination = destination
        self._url = url
        self.username = username
        self._session: aiohttp.ClientSession | None = None
        self._webhook: discord.Webhook | None = None

    def __repr__(self) -> str:
        return f"WebhookPoster({mask_secret(self._url)})"

    @property
    def masked_url(self) -> str:
        return mask_secret(self._url)

    async def _get(self) -> discord.Webhook:
        if self._webhook is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
            self._webhook = discord.Webhook.from_url(self._url, session=self._session)
        return self._webhook

    async def ready(self) -> bool:
        return True

    async def post(self, message: OutgoingMessage) -> str:
        webhook = await self._get()
        try:
            sent = await webhook.send(content=message.content or discord.utils.MISSING, embeds=list(message.embeds),
                                      files=message.discord_files() or discord.utils.MISSING, username=self.username,
                                      wait=True, allowed_mentions=message.allowed_mentions(), silent=message.silent)
        except aiohttp.ClientError as exc:
            # aiohttp errors may quote the request URL, which contains the webhook token
            raise ConnectionError(mask_webhook_url(f"{type(exc).__name__}: {exc}")) from None
        return str(sent.id)

    async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
        return {}

    async def post_follow_up(self, message: OutgoingMessage, original_message_id: str, mode: FollowUpMode) -> str:
        """Webhooks can neither reply nor start a thread in a text channel: a plain post (its embed names the signal)."""
        return await self.post(message)

    async def find_posted_follow_ups(self, keys: Sequence[tuple[str, str]], originals: Mapping[str, str],
                                     since_ms: int) -> dict[tuple[str, str], str]:
        return {}

    async def edit_status(self, original_message_id: str, signal_id: str, status: str) -> bool:
        """A webhook may edit the messages it posted."""
        webhook = await self._get()
        try:
            original = await webhook.fetch_message(int(original_message_id))
            embeds = with_status(original.embeds, signal_id, status)
            if embeds is None:
                return False
            await webhook.edit_message(int(original_message_id), embeds=embeds, allowed_mentions=NO_MENTIONS)
        except discord.NotFound:
            return False
        except aiohttp.ClientError as exc:
            raise ConnectionError(mask_webhook_url(f"{type(exc).__name__}: {exc}")) from None
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._webhook = None
