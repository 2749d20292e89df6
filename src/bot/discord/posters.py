"""The two outbox destinations: a channel through the bot (``discord:<channel id>``) and a webhook."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import aiohttp
import discord
import structlog

from src.bot.discord.embeds import FOOTER_ID_RE
from src.bot.discord.messages import NO_MENTIONS, OutgoingMessage
from src.config import mask_secret

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
            raise ConnectionError(f"signals channel {self.channel_id} is not reachable")
        files = message.discord_files()
        # discord.py sends the nonce with enforce_nonce: Discord answers a repeat within a few minutes with the
        # message it already created instead of a second one (a retry after a timed-out POST, a quick restart)
        nonce = delivery_nonce(message.signal_ids)
        if files:
            sent = await channel.send(content=message.content, embeds=list(message.embeds), files=files,
                                      allowed_mentions=NO_MENTIONS, nonce=nonce)
        else:
            sent = await channel.send(content=message.content, embeds=list(message.embeds), allowed_mentions=NO_MENTIONS,
                                      nonce=nonce)
        return str(sent.id)

    async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
        channel = await self._channel()
        bot = self.get_bot()
        if channel is None or bot is None or bot.user is None:
            raise ConnectionError("cannot read the signals channel to check for earlier posts")
        wanted = set(signal_ids)
        found: dict[str, str] = {}
        after = datetime.fromtimestamp(max(0, since_ms) / 1000, tz=UTC)
        # newest first, stopping at the attempt's time (a plain walk back; no 'after' cursor needed)
        try:
            async for msg in channel.history(limit=HISTORY_LIMIT):
                if msg.created_at < after:
                    break
                if msg.author.id != bot.user.id:
                    continue
                for sid in _footer_ids(msg) & wanted:
                    found.setdefault(sid, str(msg.id))
        except discord.Forbidden:
            # without Read Message History the check is impossible; blocking every signal on it would be worse
            # than the rare duplicate after a crash, so post again and say how to restore the guarantee
            log.error("discord_history_forbidden", channel_id=self.channel_id,
                      hint="grant the bot 'Read Message History' in the signals channel to keep delivery exactly-once")
        return found


class WebhookPoster:
    """Posts through DISCORD_WEBHOOK_URL with an aiohttp session it owns (opened lazily, closed by
    :meth:`close`). The URL holds a token: it is never logged unmasked.

    Webhooks cannot read channel history, so :meth:`find_posted` can only confirm nothing; see the
    outbox module for what that means for the guarantee.
    """

    destination = "webhook"
    can_confirm = False  # no channel history and no nonce: an attempt whose outcome is unknown may be posted twice

    def __init__(self, url: str, *, username: str = "WyEli") -> None:
        if not WEBHOOK_URL_RE.search(url):
            raise ValueError(f"DISCORD_WEBHOOK_URL={mask_secret(url)!r} is not a Discord webhook URL "
                             "(https://discord.com/api/webhooks/<id>/<token>)")
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
                                      wait=True, allowed_mentions=NO_MENTIONS)
        except aiohttp.ClientError as exc:
            # aiohttp errors may quote the request URL, which contains the webhook token
            raise ConnectionError(mask_webhook_url(f"{type(exc).__name__}: {exc}")) from None
        return str(sent.id)

    async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._webhook = None
