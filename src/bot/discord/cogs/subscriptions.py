"""``>watch`` / ``>unwatch`` / ``>mute`` / ``>unmute`` / ``>subscriptions`` (prefix, @mention and slash).

Scope: the channel the command is typed in (``discord:<channel id>``), or the user's own DMs (``dm:<user id>``)
when typed in a DM with the bot or with the word ``dm`` (``>watch BTC 1h dm``). Changing a channel's list needs the
Manage Channels permission in that channel (or a bot owner); anyone may change their own DM list. Everything is
stored (:mod:`src.bot.discord.subscriptions`) and survives restarts. Replies never ping anyone.
"""

from __future__ import annotations

import time
from typing import Any

import discord
import structlog
from discord import app_commands
from discord.ext import commands

from src.bot.discord.arguments import MarketWords, fmt_duration_words, parse_market_words
from src.bot.discord.cogs.signals import CommandDeps, UserError, symbol_choices
from src.bot.discord.embeds import subscriptions_embed
from src.bot.discord.messages import NO_MENTIONS
from src.bot.discord.subscriptions import TooManySubscriptions
from src.bot.discord.wording import fmt_time
from src.storage.base import StoreError

log = structlog.get_logger(__name__)

SCOPES = [app_commands.Choice(name="this channel", value="here"), app_commands.Choice(name="my DMs", value="dm")]
MUTE_USAGE = ("Usage: `>mute [SYMBOL] [TF] DURATION [dm]`, e.g. `>mute ETH 4h 12h` (ETH 4h for 12 hours), "
              "`>mute 2h` (everything). Durations: 30m, 12h, 2d, 1w (at most 30 days).")


class SubscriptionsCog(commands.Cog, name="Subscriptions"):
    def __init__(self, bot: commands.Bot, deps: CommandDeps) -> None:
        self.bot = bot
        self.deps = deps

    # ------------------------------------------------------------------ helpers
    async def _reply(self, ctx: commands.Context[commands.Bot], content: str | None = None, **kwargs: Any) -> None:
        await ctx.send(content, allowed_mentions=NO_MENTIONS, **kwargs)

    def _book(self) -> Any:
        if self.deps.book is None:
            raise UserError("Subscriptions need the bot (DISCORD_TOKEN): a webhook-only set-up has none.")
        return self.deps.book

    def _words(self, words: tuple[str | None, ...], *, duration: bool = False) -> MarketWords:
        try:
            return parse_market_words(words, self.deps.symbols, self.deps.timeframes, any_symbol=self.deps.all_symbols,
                                      duration=duration)
        except ValueError as exc:
            raise UserError(f"{exc}.\n{self.usage(duration)}") from None

    def usage(self, mute: bool = False) -> str:
        if mute:
            return MUTE_USAGE
        return ("Usage: `>watch SYMBOL [TF] [dm]`, e.g. `>watch BTC 1h` (this channel) or `>watch ETH dm` (your DMs, "
                "every timeframe). `>unwatch [SYMBOL] [TF] [dm]` removes; `>subscriptions` lists.")

    async def _scope(self, ctx: commands.Context[commands.Bot], scope: str | None, *, changes: bool) -> tuple[str, str]:
        """(destination key, words for it). A DM, or ``dm``: the user's own list; else the channel, which only
        someone with Manage Channels there (or a bot owner) may change."""
        in_dm = ctx.guild is None
        if scope == "dm" or in_dm:
            return f"dm:{ctx.author.id}", "your DMs"
        if changes:
            # a slash command carries the permissions Discord computed for the user in this channel
            perms = (ctx.interaction.permissions if ctx.interaction is not None
                     else ctx.channel.permissions_for(ctx.author))  # type: ignore[arg-type]
            if not (perms.manage_channels or perms.administrator) and not await self.bot.is_owner(ctx.author):
                raise UserError("Changing this channel's subscriptions needs the Manage Channels permission here. "
                                "Add `dm` to get them in your DMs instead, e.g. `>watch BTC 1h dm`.")
        return f"discord:{ctx.channel.id}", "this channel"

    # ------------------------------------------------------------------ commands
    @commands.hybrid_command(name="watch", description="Post a market's trade calls (and results) here or in your DMs")  # type: ignore[arg-type]
    @app_commands.describe(symbol="e.g. BTC", timeframe="e.g. 1h (default: every timeframe)", scope="here or your DMs")
    @app_commands.choices(scope=SCOPES)
    async def watch(self, ctx: commands.Context[commands.Bot], symbol: str, timeframe: str | None = None,
                    scope: str | None = None) -> None:
        words = self._words((symbol, timeframe, scope))
        if words.symbol is None:
            raise UserError(f"Which market? {self.usage()}")
        dest, where = await self._scope(ctx, words.scope, changes=True)
        await ctx.defer()
        try:
            new = await self._book().watch(dest, words.symbol, words.timeframe or "", ctx.author.id)
        except TooManySubscriptions as exc:
            raise UserError(f"{exc}; `>unwatch` some first.") from None
        market = f"{words.symbol} {words.timeframe or '(every timeframe)'}"
        if not new:
            await self._reply(ctx, f"{where.capitalize()} already watches {market}.")
            return
        await self._reply(ctx, f"Watching {market} in {where}: its trade calls (and watch notes, if those are posted) "
                               "come here from now on, each followed by its result.")

    @watch.autocomplete("symbol")
    async def _watch_symbols(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return symbol_choices(self.deps.symbols, current)

    @commands.hybrid_command(name="unwatch", description="Stop posting a market (or everything) here or in your DMs")  # type: ignore[arg-type]
    @app_commands.describe(symbol="e.g. BTC (default: everything)", timeframe="e.g. 1h", scope="here or your DMs")
    @app_commands.choices(scope=SCOPES)
    async def unwatch(self, ctx: commands.Context[commands.Bot], symbol: str | None = None, timeframe: str | None = None,
                      scope: str | None = None) -> None:
        words = self._words((symbol, timeframe, scope))
        dest, where = await self._scope(ctx, words.scope, changes=True)
        await ctx.defer()
        book = self._book()
        removed = await book.unwatch(dest, words.symbol, words.timeframe if words.symbol else None)
        if removed:
            what = f"{words.symbol} {words.timeframe or ''}".strip() if words.symbol else "every market"
            await self._reply(ctx, f"Stopped watching {what} in {where} ({removed} subscription{'s' * (removed != 1)}).")
            return
        hint = ""
        if words.symbol and words.timeframe and any(s.symbol == words.symbol and s.timeframe == ""
                                                    for s in book.subscriptions(dest)):
            hint = f" {words.symbol} is watched on every timeframe: `>unwatch {words.symbol.removesuffix('USDT')}` stops it."
        await self._reply(ctx, f"Nothing like that is watched in {where}.{hint}")

    @commands.hybrid_command(name="mute", description="Hold back a market (or everything) here for a while")  # type: ignore[arg-type]
    @app_commands.describe(first="SYMBOL, TF or DURATION, e.g. ETH", second="e.g. 4h", third="e.g. 12h", fourth="dm")
    async def mute(self, ctx: commands.Context[commands.Bot], first: str | None = None, second: str | None = None,
                   third: str | None = None, fourth: str | None = None) -> None:
        words = self._words((first, second, third, fourth), duration=True)
        if words.duration_ms is None:
            raise UserError(f"For how long? {MUTE_USAGE}")
        dest, where = await self._scope(ctx, words.scope, changes=True)
        await ctx.defer()
        mute = await self._book().mute(dest, words.symbol or "", words.timeframe or "", words.duration_ms, ctx.author.id)
        market = f"{words.symbol or 'everything'} {words.timeframe or ''}".strip()
        await self._reply(ctx, f"Muted {market} in {where} for {fmt_duration_words(mute.until_ms - mute.created_at_ms)}, "
                               f"until {fmt_time(mute.until_ms, self.deps.utc_offset_minutes)}. What would have been "
                               "posted meanwhile is not posted later. `>unmute` ends it early.")

    @commands.hybrid_command(name="unmute", description="End mutes here (or in your DMs)")  # type: ignore[arg-type]
    @app_commands.describe(symbol="e.g. ETH (default: every mute)", timeframe="e.g. 4h", scope="here or your DMs")
    @app_commands.choices(scope=SCOPES)
    async def unmute(self, ctx: commands.Context[commands.Bot], symbol: str | None = None, timeframe: str | None = None,
                     scope: str | None = None) -> None:
        words = self._words((symbol, timeframe, scope))
        dest, where = await self._scope(ctx, words.scope, changes=True)
        await ctx.defer()
        removed = await self._book().unmute(dest, words.symbol if words.symbol else None,
                                            words.timeframe if words.symbol else None)
        await self._reply(ctx, f"Ended {removed} mute{'s' * (removed != 1)} in {where}." if removed
                          else f"Nothing like that is muted in {where}.")

    @commands.hybrid_command(name="subscriptions", description="What this channel (or your DMs) gets and what is muted")  # type: ignore[arg-type]
    @app_commands.describe(scope="here or your DMs")
    @app_commands.choices(scope=SCOPES)
    async def subscriptions(self, ctx: commands.Context[commands.Bot], scope: str | None = None) -> None:
        words = self._words((scope,))
        dest, where = await self._scope(ctx, words.scope, changes=False)
        await ctx.defer()
        book = self._book()
        await book.refresh()
        routed = ", ".join(self.deps.routed_here(dest)) if self.deps.routed_here is not None else ""
        await self._reply(ctx, embed=subscriptions_embed(where, book.subscriptions(dest), book.mutes(dest),
                                                         now_ms=int(time.time() * 1000),
                                                         offset_minutes=self.deps.utc_offset_minutes, routed=routed))

    # ------------------------------------------------------------------ errors
    async def cog_command_error(self, ctx: commands.Context[commands.Bot], error: Exception) -> None:  # type: ignore[override]
        original = getattr(error, "original", error)
        if isinstance(error, commands.HybridCommandError):
            original = getattr(error.original, "original", error.original)
        if isinstance(original, UserError):
            await self._reply(ctx, str(original))
        elif isinstance(error, commands.UserInputError):
            name = ctx.command.name if ctx.command else ""
            await self._reply(ctx, MUTE_USAGE if name == "mute" else self.usage())
        elif isinstance(original, StoreError):
            await self._reply(ctx, "The database is not reachable right now; nothing was changed. Try again in a minute.")
        else:
            log.error("discord_command_failed", command=ctx.command and ctx.command.name,
                                                 error=f"{type(original).__name__}: {str(original)[:200]}")
            await self._reply(ctx, "Something went wrong; the error was logged.")
