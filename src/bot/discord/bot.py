"""The discord.py bot: construction, cogs, and the start-up with the Message Content fallback.

The bot runs inside the app's event loop (``await bot.start(token)``, never ``bot.run``, which would
install its own logging handler). Prefix ``>`` needs the privileged Message Content intent; when the
gateway refuses it (close code 4014 -> ``discord.PrivilegedIntentsRequired``) the bot is rebuilt
without it and answers to @mentions (``@WyEli status``) and slash commands instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import discord
import structlog
from discord.ext import commands

from src.bot.discord.cogs.signals import CommandDeps, SignalsCog
from src.bot.discord.cogs.subscriptions import SubscriptionsCog
from src.bot.discord.cogs.trading import TradingAdmins, TradingCog
from src.bot.discord.messages import NO_MENTIONS

log = structlog.get_logger(__name__)

PREFIX = ">"


class WyEliBot(commands.Bot):
    """commands.Bot with the WyEli cog loaded in ``setup_hook`` and quiet handling of unknown commands."""

    def __init__(self, deps: CommandDeps, *, message_content: bool = True, owner_ids: tuple[int, ...] = (),
                 on_ready_hook: Callable[[], None] | None = None, intents: discord.Intents | None = None,
                 trading: Any = None, trading_admins: TradingAdmins | None = None,
                 extra_cogs: Sequence[Callable[[commands.Bot], commands.Cog]] = (), **kwargs: Any) -> None:
        # default intents + message content; tests pass wider intents (dpytest needs the member cache)
        intents = intents or discord.Intents.default()
        intents.message_content = message_content
        prefix = commands.when_mentioned_or(PREFIX) if message_content else commands.when_mentioned
        extra: dict[str, Any] = {"owner_ids": set(owner_ids)} if owner_ids else {}
        super().__init__(command_prefix=prefix, intents=intents, help_command=None, allowed_mentions=NO_MENTIONS,
                         case_insensitive=True, **extra, **kwargs)
        self.deps = deps
        self.message_content = message_content
        self.ready_event = asyncio.Event()
        self.on_ready_hook = on_ready_hook
        self.trading = trading  # a TradingControl when trading is on (src/trading/service.py)
        self.trading_admins = trading_admins or TradingAdmins(frozenset(), frozenset())
        self.extra_cogs = tuple(extra_cogs)  # e.g. the backtest jobs cog (src/bot/discord/cogs/jobs.py)

    async def setup_hook(self) -> None:
        await self.add_cog(SignalsCog(self, self.deps))
        if self.trading is not None:
            await self.add_cog(TradingCog(self, self.trading, self.trading_admins))
        await self.add_cog(SubscriptionsCog(self, self.deps))
        for make_cog in self.extra_cogs:
            await self.add_cog(make_cog(self))

    async def on_ready(self) -> None:
        self.ready_event.set()
        if self.on_ready_hook is not None:
            self.on_ready_hook()
        log.info("discord_ready", user=str(self.user), guilds=len(self.guilds),
                 prefix=PREFIX if self.message_content else "@mention (no Message Content intent)")

    async def on_command_error(self, context: commands.Context[commands.Bot], exception: commands.CommandError, /) -> None:  # type: ignore[override]
        if isinstance(exception, commands.CommandNotFound):
            return  # unknown commands are ignored quietly (">" starts many ordinary messages)
        if context.cog is not None and context.cog.has_error_handler():
            return
        log.warning("discord_command_error", error=f"{type(exception).__name__}: {str(exception)[:200]}")


BotFactory = Callable[[bool], WyEliBot]


async def run_bot(token: str, factory: BotFactory, on_bot: Callable[[WyEliBot], None]) -> None:
    """Start the bot and keep it running until cancelled or closed.

    - PrivilegedIntentsRequired: log the portal switch to flip, rebuild without Message Content, go on;
    - LoginFailure (bad token): log and return (the webhook, if any, keeps working);
    - anything else that ends ``start`` (network down at login): rebuild and retry after 5 s doubling
      to 300 s; discord.py reconnects the gateway on its own once logged in.
    """
    message_content = True
    delay = 5.0
    while True:
        bot = factory(message_content)
        on_bot(bot)
        try:
            await bot.start(token, reconnect=True)
            return  # closed on purpose
        except discord.PrivilegedIntentsRequired:
            log.error(
                "discord_message_content_intent_refused",
                hint="enable 'Message Content Intent' under Bot > Privileged Gateway Intents in the Developer Portal; "
                     "until then WyEli answers @mentions and slash commands only",
            )
            message_content = False
            delay = 5.0
        except discord.LoginFailure:
            log.error("discord_login_failed", hint="DISCORD_TOKEN was rejected: copy the bot token again (Bot > Reset Token)")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("discord_start_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}", retry_in_s=delay)
            await _close_quietly(bot)
            await asyncio.sleep(delay)
            delay = min(300.0, delay * 2)
            continue
        finally:
            if not bot.is_closed():
                await _close_quietly(bot)


async def _close_quietly(bot: discord.Client) -> None:
    try:
        await bot.close()
    except Exception as exc:  # closing a half-started client can fail; nothing left to do about it
        log.debug("discord_close_failed", error=type(exc).__name__)
