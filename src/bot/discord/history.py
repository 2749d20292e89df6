"""``>signals`` pages: the query, one page of the store's history, and the ◀ ▶ buttons.

A page holds :data:`PAGE_SIZE` (10) trade calls and watch notes, newest first, with their results so far. The
buttons belong to the user who asked (others are told to ask themselves: a page is a shared message) and stop
working after :data:`VIEW_TIMEOUT_S` (5 minutes); ``>signals ... page N`` reaches any page without them.
"""

from __future__ import annotations

from typing import Any

import discord

from src.analysis.types import SignalKind
from src.bot.discord.arguments import HistoryQuery
from src.bot.discord.embeds import history_embed
from src.storage.base import HistoryOutcome, HistoryStore

PAGE_SIZE = 10
VIEW_TIMEOUT_S = 300.0
EMITTED: tuple[SignalKind, ...] = ("trade", "watch")
HISTORY_USAGE = ("Usage: `>signals [SYMBOL] [TF] [PATTERN] [win|loss|expired|open] [page N]`, in any order, "
                 "e.g. `>signals eth 4h`, `>signals spring loss page 2`.")


class HistoryPager:
    """Reads pages of ``query`` from ``store`` and builds their embeds and buttons."""

    def __init__(self, store: HistoryStore, query: HistoryQuery, *, utc_offset_minutes: int = 0,
                 author_id: int | None = None) -> None:
        self.store = store
        self.query = query
        self.offset_minutes = utc_offset_minutes
        self.author_id = author_id
        self.page = query.page
        self.has_next = False

    async def page_embed(self, page: int) -> discord.Embed:
        """Page ``page`` (1-based); reads one row more than a page to know whether another follows."""
        self.page = max(1, page)
        q = self.query
        outcome: HistoryOutcome | None = q.outcome  # type: ignore[assignment]
        rows = await self.store.signal_history(kinds=EMITTED, symbol=q.symbol, timeframe=q.timeframe, pattern=q.pattern,
                                               outcome=outcome, offset=(self.page - 1) * PAGE_SIZE, limit=PAGE_SIZE + 1)
        self.has_next = len(rows) > PAGE_SIZE
        return history_embed(rows[:PAGE_SIZE], filters=q.describe(), page=self.page, has_next=self.has_next,
                             offset_minutes=self.offset_minutes)

    def view(self) -> HistoryView | None:
        """Buttons when there is somewhere to go, else None."""
        if self.page <= 1 and not self.has_next:
            return None
        return HistoryView(self)


class HistoryView(discord.ui.View):
    """◀ newer / older ▶ for one ``>signals`` message."""

    def __init__(self, pager: HistoryPager) -> None:
        super().__init__(timeout=VIEW_TIMEOUT_S)
        self.pager = pager
        self._sync()

    def _sync(self) -> None:
        self.newer.disabled = self.pager.page <= 1
        self.older.disabled = not self.pager.has_next

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        if self.pager.author_id is not None and interaction.user.id != self.pager.author_id:
            await interaction.response.send_message("These buttons page the list of whoever asked; type `>signals` "
                                                    "(or `/signals`) for your own.", ephemeral=True)
            return False
        return True

    async def _show(self, interaction: discord.Interaction[Any], page: int) -> None:
        embed = await self.pager.page_embed(page)
        self._sync()
        await interaction.response.edit_message(embed=embed, view=self)

    @discord.ui.button(label="◀ newer", style=discord.ButtonStyle.secondary)
    async def newer(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        await self._show(interaction, self.pager.page - 1)

    @discord.ui.button(label="older ▶", style=discord.ButtonStyle.secondary)
    async def older(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        await self._show(interaction, self.pager.page + 1)
