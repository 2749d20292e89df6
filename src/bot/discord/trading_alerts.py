"""Trading alerts posted to Discord (DISCORD_TRADING_CHANNEL_ID, else the signals channel).

``alert`` never blocks trading: the message is queued (at most ``max_queue`` = 500; beyond that the oldest
is dropped and counted) and a worker posts it once the bot is ready, retrying a failed post after 2 s
doubling to 60 s. Alarms mention the trading admins (user ids only; roles are never pinged). Every alert is
in the log and the audit log as well, so nothing depends on Discord being up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import discord
import structlog

from src.bot.discord.trading_text import alert_text
from src.trading.alerts import AlertLevel

log = structlog.get_logger(__name__)


class DiscordTradingAlerts:
    def __init__(self, bot: Callable[[], discord.Client | None], channel_id: int, admin_ids: tuple[int, ...] = (),
                 *, max_queue: int = 500) -> None:
        self._bot = bot
        self.channel_id = channel_id
        self.admin_ids = admin_ids
        self._queue: deque[tuple[AlertLevel, str]] = deque()
        self._wake = asyncio.Event()
        self.max_queue = max_queue
        self.sent = 0
        self.dropped = 0
        self.failures = 0

    async def alert(self, level: AlertLevel, text: str) -> None:
        self._queue.append((level, text))
        while len(self._queue) > self.max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._wake.set()

    async def run(self) -> None:
        delay = 2.0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            level, text = self._queue[0]
            try:
                await self._post(level, text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning("trading_alert_post_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)
                continue
            self._queue.popleft()
            self.sent += 1
            delay = 2.0

    async def _post(self, level: AlertLevel, text: str) -> None:
        bot = self._bot()
        if bot is None or not bot.is_ready():
            raise RuntimeError("the Discord bot is not connected yet")
        channel = bot.get_channel(self.channel_id) or await bot.fetch_channel(self.channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise RuntimeError(f"channel {self.channel_id} cannot receive messages")
        mentions = discord.AllowedMentions(users=[discord.Object(i) for i in self.admin_ids], roles=False,
                                           everyone=False, replied_user=False)
        await channel.send(alert_text(level, text, self.admin_ids), allowed_mentions=mentions)
