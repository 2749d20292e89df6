"""The user commands, as hybrid commands (prefix ``>`` / mention, and slash): status, signal, signals,
stats, help; plus the owner-only prefix command ``sync`` that publishes the slash commands.

Every reply goes out with ``allowed_mentions=none`` (the bot's default too), and user arguments are
sanitised before they are shown, so hostile input cannot ping anyone or break formatting.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import discord
import structlog
from discord import app_commands
from discord.ext import commands

from src.analysis.types import SignalKind
from src.bot.analysis_api import TRACKED_GATE_REASONS, TrackRecordView
from src.bot.discord.arguments import parse_stats_filters, resolve_symbol, resolve_timeframe, sanitize
from src.bot.discord.charts import ChartRenderer, spec_for_view
from src.bot.discord.embeds import (
    help_embed,
    market_embed,
    signals_embed,
    stats_embed,
    status_embed,
    valid_list,
)
from src.bot.discord.messages import NO_MENTIONS
from src.bot.status import MarketViewProvider, StatusProvider
from src.storage.base import OutcomeStore, SignalStore, StoreError

log = structlog.get_logger(__name__)

# mypy 2.x cannot infer discord.py's hybrid_command TypeVars (they occur only in the returned Callable) and
# reports arg-type on every decorated method; plain commands.command type-checks, hence the targeted ignores.

RECENT_SIGNALS = 10
# >signal renders a chart in the one chart worker the outbox needs for signal messages too: a user gets
# 2 per 20 s, and at most 2 render at once (more are told to wait), so command spam cannot starve delivery
SIGNAL_COOLDOWN = (2, 20.0)
SIGNAL_CONCURRENCY = 2


class CommandStore(SignalStore, OutcomeStore, Protocol):
    """What the commands read from the store."""


EMITTED: tuple[SignalKind, ...] = ("trade", "watch")


@dataclass(frozen=True, slots=True)
class CommandDeps:
    """What the commands need; built by the service from Config and the app's providers.

    :param symbols: configured symbols (empty with ``all_symbols``).
    :param timeframes: configured timeframes, shortest first.
    """

    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    store: CommandStore
    status_provider: StatusProvider | None
    market_view_provider: MarketViewProvider | None
    renderer: ChartRenderer | None = None
    all_symbols: bool = False
    guild_id: int | None = None
    track_records: Callable[[], Sequence[TrackRecordView]] | None = None  # the evidence model's cells, live folded in
    tracked_reasons: Collection[str] = TRACKED_GATE_REASONS


def symbol_choices(symbols: Sequence[str], current: str) -> list[app_commands.Choice[str]]:
    """Slash-command suggestions: configured symbols containing what was typed (Discord shows at most 25)."""
    typed = sanitize(current, 20).upper()
    return [app_commands.Choice(name=s, value=s) for s in symbols if typed in s][:25]


class UserError(commands.CommandError):
    """A friendly message for the user (bad symbol, bad timeframe, nothing stored yet)."""


class SignalsCog(commands.Cog, name="WyEli"):
    def __init__(self, bot: commands.Bot, deps: CommandDeps) -> None:
        self.bot = bot
        self.deps = deps

    # ------------------------------------------------------------------ helpers
    def usage(self) -> str:
        syms = "any USDT perpetual, e.g. BTC" if self.deps.all_symbols else valid_list([s.removesuffix("USDT") or s
                                                                                         for s in self.deps.symbols])
        return (f"Usage: `>signal SYMBOL [TF]`, e.g. `>signal BTC 1h`.\nSymbols: {syms}\n"
                f"Timeframes: {', '.join(self.deps.timeframes)}")

    async def _reply(self, ctx: commands.Context[commands.Bot], content: str | None = None, **kwargs: Any) -> None:
        await ctx.send(content, allowed_mentions=NO_MENTIONS, **kwargs)

    async def _default_timeframe(self, symbol: str) -> str:
        """The timeframe of the symbol's latest trade call or watch note (the market people are talking about),
        else the first (shortest) configured timeframe."""
        try:
            recent = await self.deps.store.recent_signals(symbol=symbol, limit=1, kinds=EMITTED)
        except StoreError:
            recent = []
        if recent and recent[0].timeframe in self.deps.timeframes:
            return recent[0].timeframe
        return self.deps.timeframes[0]

    # ------------------------------------------------------------------ commands
    @commands.hybrid_command(name="status", description="Bot health: streams, reconnects, signals, storage, trading")  # type: ignore[arg-type]
    async def status(self, ctx: commands.Context[commands.Bot]) -> None:
        await ctx.defer()
        if self.deps.status_provider is None:
            raise UserError("Status is not available in this mode.")
        snap = await self.deps.status_provider()
        await self._reply(ctx, embed=status_embed(snap))

    @commands.hybrid_command(name="signal", description="Current Wyckoff/Elliott analysis of a market, with a chart")  # type: ignore[arg-type]
    @commands.cooldown(*SIGNAL_COOLDOWN, type=commands.BucketType.user)
    @commands.max_concurrency(SIGNAL_CONCURRENCY, per=commands.BucketType.default, wait=False)
    @app_commands.describe(symbol="e.g. BTC, eth or SOLUSDT", timeframe="e.g. 15m, 1h, 4h (default: the latest signal's)")
    async def signal(self, ctx: commands.Context[commands.Bot], symbol: str, timeframe: str | None = None) -> None:
        sym = resolve_symbol(symbol, self.deps.symbols, any_symbol=self.deps.all_symbols)
        if sym is None:
            shown = sanitize(symbol) or "that"
            raise UserError(f"I don't watch `{shown}`.\n{self.usage()}")
        resolved = None
        if timeframe is not None:
            resolved = resolve_timeframe(timeframe, self.deps.timeframes)
            if resolved is None:
                shown = sanitize(timeframe, 6) or "that"
                raise UserError(f"`{shown}` is not a configured timeframe.\n{self.usage()}")
        # before any I/O: the store, the view and the chart can take longer than the 3 s an interaction allows
        await ctx.defer()
        tf = resolved if resolved is not None else await self._default_timeframe(sym)
        if self.deps.market_view_provider is None:
            raise UserError("Market analysis is not available in this mode.")
        view = await self.deps.market_view_provider(sym, tf)
        if view is None:
            raise UserError(f"No data for {sym} {tf} yet (still warming up, or not a listed symbol).")
        png = None
        if self.deps.renderer is not None and view.candles:
            png = await self.deps.renderer.render(spec_for_view(view))
        if png:
            name = f"{sym}_{tf}.png"
            await self._reply(ctx, embed=market_embed(view, image_filename=name),
                              file=discord.File(io.BytesIO(png), filename=name))
        else:
            await self._reply(ctx, embed=market_embed(view))

    @signal.autocomplete("symbol")
    async def _symbol_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return symbol_choices(self.deps.symbols, current)

    @signal.autocomplete("timeframe")
    async def _timeframe_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=tf, value=tf) for tf in self.deps.timeframes if current.lower() in tf.lower()][:25]

    @commands.hybrid_command(name="signals", description="The most recent trade calls and watch notes")  # type: ignore[arg-type]
    @app_commands.describe(symbol="optional, e.g. BTC")
    async def signals(self, ctx: commands.Context[commands.Bot], symbol: str | None = None) -> None:
        sym: str | None = None
        if symbol is not None:
            sym = resolve_symbol(symbol, self.deps.symbols, any_symbol=self.deps.all_symbols)
            if sym is None:
                raise UserError(f"I don't watch `{sanitize(symbol) or 'that'}`.\n{self.usage()}")
        await ctx.defer()
        recent = await self.deps.store.recent_signals(symbol=sym, limit=RECENT_SIGNALS, kinds=EMITTED)
        await self._reply(ctx, embed=signals_embed(recent, symbol=sym))

    @commands.hybrid_command(name="stats", description="Track record per pattern: backtest and live, net R after fees")  # type: ignore[arg-type]
    @app_commands.describe(first="optional: a symbol, timeframe or pattern, e.g. BTC", second="optional, e.g. 1h",
                           third="optional, e.g. spring")
    async def stats(self, ctx: commands.Context[commands.Bot], first: str | None = None, second: str | None = None,
                    third: str | None = None) -> None:
        records = list(self.deps.track_records()) if self.deps.track_records is not None else []
        try:
            symbol, timeframe, pattern = parse_stats_filters(
                (first, second, third), self.deps.symbols, self.deps.timeframes, [r.pattern for r in records],
                any_symbol=self.deps.all_symbols)
        except ValueError as exc:
            raise UserError(f"{exc}.\nUsage: `>stats [SYMBOL] [TF] [PATTERN]`, e.g. `>stats BTC 1h spring`.") from None
        await ctx.defer()
        live = await self.deps.store.live_track(self.deps.tracked_reasons, symbol=symbol, timeframe=timeframe)
        if pattern is not None:
            records = [r for r in records if pattern in r.pattern]
            live = [t for t in live if pattern in t.pattern]
        await self._reply(ctx, embed=stats_embed(records, live, symbol=symbol, timeframe=timeframe, pattern=pattern))

    @commands.hybrid_command(name="help", description="What WyEli can do")  # type: ignore[arg-type]
    async def help(self, ctx: commands.Context[commands.Bot]) -> None:
        await self._reply(ctx, embed=help_embed(self.deps.symbols, self.deps.timeframes, all_symbols=self.deps.all_symbols))

    @commands.command(name="sync", hidden=True)
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[commands.Bot], scope: str = "guild") -> None:
        """Publish the slash commands: ``guild`` (DISCORD_GUILD_ID, instant), ``global`` (up to an hour),
        ``clear`` (remove the guild copies, e.g. after switching to global)."""
        tree = self.bot.tree
        scope = sanitize(scope, 10).lower() or "guild"
        gid = self.deps.guild_id or (ctx.guild.id if ctx.guild else None)
        try:
            if scope == "global" or (scope == "guild" and gid is None):
                synced: Sequence[Any] = await tree.sync()
                where = "globally (may take up to an hour to appear)"
            elif scope == "guild":
                guild = discord.Object(id=gid)  # type: ignore[arg-type]
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
                where = f"to guild {gid}"
            elif scope == "clear" and gid is not None:
                guild = discord.Object(id=gid)
                tree.clear_commands(guild=guild)
                synced = await tree.sync(guild=guild)
                where = f"to guild {gid} (cleared)"
            else:
                raise UserError("Usage: `>sync [guild|global|clear]`")
        except discord.Forbidden:
            raise UserError("Discord refused: invite the bot with the `applications.commands` scope.") from None
        except discord.HTTPException as exc:
            raise UserError(f"Sync failed: HTTP {exc.status}.") from None
        log.info("discord_commands_synced", scope=scope, count=len(synced), guild_id=gid)
        await self._reply(ctx, f"Synced {len(synced)} commands {where}.")

    # ------------------------------------------------------------------ errors
    async def cog_command_error(self, ctx: commands.Context[commands.Bot], error: Exception) -> None:  # type: ignore[override]
        original = getattr(error, "original", error)
        if isinstance(error, commands.HybridCommandError):
            original = getattr(error.original, "original", error.original)
        if isinstance(original, UserError):
            await self._reply(ctx, str(original))
        elif isinstance(error, commands.UserInputError):  # also unbalanced quotes (ArgumentParsingError)
            await self._reply(ctx, self.usage() if ctx.command and ctx.command.name == "signal"
                              else f"Usage: `>{ctx.command.qualified_name if ctx.command else 'help'}` — see `>help`.")
        elif isinstance(error, commands.CommandOnCooldown):
            await self._reply(ctx, f"One moment: try again in {max(1, round(error.retry_after))} s.")
        elif isinstance(error, commands.MaxConcurrencyReached):
            await self._reply(ctx, "Busy drawing other charts: try again in a few seconds.")
        elif isinstance(error, commands.NotOwner | commands.CheckFailure):
            await self._reply(ctx, "Only the bot owners can do that.")
        elif isinstance(original, StoreError):
            log.warning("discord_command_store_error", command=ctx.command and ctx.command.name, error=str(original)[:200])
            await self._reply(ctx, "The database is not reachable right now; try again in a minute.")
        else:
            log.error("discord_command_failed", command=ctx.command and ctx.command.name,
                      error=f"{type(original).__name__}: {str(original)[:200]}", exc_info=original)
            await self._reply(ctx, "Something went wrong; the error was logged.")
