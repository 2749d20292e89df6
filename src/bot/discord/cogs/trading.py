"""Trading commands, for trading admins only (TRADING_ADMIN_IDS / TRADING_ADMIN_ROLE_IDS; when both are
unset, the DISCORD_OWNER_IDS): ``>kill`` (pause new entries now), ``>kill flatten`` (pause, then close every
open position at market after a confirmation code), ``>resume``, ``>positions``, ``>orders``, ``>pnl``.

Every command is audited by the trader with the admin's Discord id. Anyone else gets a polite refusal
and nothing happens.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import discord
import structlog
from discord.ext import commands

from src.bot.discord.arguments import sanitize
from src.bot.discord.messages import NO_MENTIONS
from src.bot.discord.trading_text import orders_embed, pnl_embed, positions_embed
from src.trading.service import TradingControl

log = structlog.get_logger(__name__)
CONFIRM_S = 60.0


@dataclass(frozen=True, slots=True)
class TradingAdmins:
    user_ids: frozenset[int]
    role_ids: frozenset[int]

    def allows(self, user: discord.abc.User | discord.Member) -> bool:
        if user.id in self.user_ids:
            return True
        roles = getattr(user, "roles", ())
        return any(r.id in self.role_ids for r in roles)


class NotTradingAdmin(commands.CheckFailure):
    pass


class TradingCog(commands.Cog, name="Trading"):
    def __init__(self, bot: commands.Bot, trading: TradingControl, admins: TradingAdmins) -> None:
        self.bot = bot
        self.trading = trading
        self.admins = admins
        self._pending_flatten: dict[int, tuple[str, float]] = {}

    async def cog_check(self, ctx: commands.Context[commands.Bot]) -> bool:  # type: ignore[override]
        if not self.admins.allows(ctx.author):
            raise NotTradingAdmin("not a trading admin")
        return True

    async def _reply(self, ctx: commands.Context[commands.Bot], content: str | None = None, *,
                     embed: discord.Embed | None = None) -> None:
        if embed is None:
            await ctx.send(content, allowed_mentions=NO_MENTIONS)
        else:
            await ctx.send(content, embed=embed, allowed_mentions=NO_MENTIONS)

    @commands.command(name="kill")
    async def kill(self, ctx: commands.Context[commands.Bot], action: str = "", code: str = "") -> None:
        """Pause new entries now; ``>kill flatten`` also closes every open position (asks for a code first)."""
        actor = f"discord:{ctx.author.id}"
        action = sanitize(action, 10).lower()
        if action not in ("", "flatten"):
            await self._reply(ctx, "Usage: `>kill` (pause entries) or `>kill flatten` (pause and close positions).")
            return
        if action == "":
            await self._reply(ctx, await self.trading.kill(actor))
            return
        code = sanitize(code, 10)
        pending = self._pending_flatten.get(ctx.author.id)
        if code and pending is not None and pending[0] == code and time.monotonic() < pending[1]:
            del self._pending_flatten[ctx.author.id]
            await self.trading.kill(actor, "kill switch (flatten)")
            await self._reply(ctx, await self.trading.flatten(actor))
            return
        await self.trading.kill(actor, "kill switch (flatten requested)")
        open_now = [p for p in await self.trading.open_position_list() if p.status == "OPEN"]
        new_code = f"{secrets.randbelow(9000) + 1000}"
        self._pending_flatten[ctx.author.id] = (new_code, time.monotonic() + CONFIRM_S)
        await self._reply(ctx, f"Entries are paused. Flatten closes {len(open_now)} open position(s) at market "
                               f"({self.trading.mode}). To confirm, send `>kill flatten {new_code}` within "
                               f"{CONFIRM_S:.0f} s.")

    @commands.command(name="resume")
    async def resume(self, ctx: commands.Context[commands.Bot]) -> None:
        """Allow new entries again."""
        await self._reply(ctx, await self.trading.resume(f"discord:{ctx.author.id}"))

    @commands.command(name="positions")
    async def positions(self, ctx: commands.Context[commands.Bot]) -> None:
        """Open positions of the bot."""
        await self._reply(ctx, embed=positions_embed(self.trading.mode, await self.trading.open_position_list(),
                                                     self.trading.status_line()))

    @commands.command(name="orders")
    async def orders(self, ctx: commands.Context[commands.Bot]) -> None:
        """The most recent orders."""
        await self._reply(ctx, embed=orders_embed(self.trading.mode, await self.trading.recent_order_list(15)))

    @commands.command(name="pnl")
    async def pnl(self, ctx: commands.Context[commands.Bot]) -> None:
        """Realised and unrealised PnL, equity and the daily loss limit."""
        await self._reply(ctx, embed=pnl_embed(await self.trading.pnl()))

    async def cog_command_error(self, ctx: commands.Context[commands.Bot], error: Exception) -> None:  # type: ignore[override]
        if isinstance(error, NotTradingAdmin):
            await self._reply(ctx, "Only trading admins can do that (TRADING_ADMIN_IDS / TRADING_ADMIN_ROLE_IDS).")
        elif isinstance(error, commands.UserInputError):
            await self._reply(ctx, "Usage: `>kill [flatten]`, `>resume`, `>positions`, `>orders`, `>pnl`.")
        else:
            original = getattr(error, "original", error)
            log.error("trading_command_failed", command=ctx.command and ctx.command.name,
                      error=f"{type(original).__name__}: {str(original)[:200]}")
            await self._reply(ctx, "That failed; the error was logged.")
