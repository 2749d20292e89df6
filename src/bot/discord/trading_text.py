"""Text of the trading commands and alerts (pure functions; Discord's limits respected: a message is at
most 2000 characters, an embed description 4096)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import discord

from src.bot.discord.embeds import COLOUR_LONG, COLOUR_SHORT, COLOUR_WARN, fmt_price, truncate
from src.storage.trading_records import OrderRecord, PositionRecord
from src.trading.base import PnlReport

MESSAGE_MAX = 2000
LEVEL_PREFIX = {"info": "ℹ️", "warning": "⚠️", "alarm": "🚨 **ALARM**"}


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%d %H:%M")


def alert_text(level: str, text: str, mention_ids: Sequence[int] = ()) -> str:
    mentions = " ".join(f"<@{i}>" for i in mention_ids) if level == "alarm" else ""
    head = f"{LEVEL_PREFIX.get(level, '')} {mentions}".strip()
    return truncate(f"{head} {text}", MESSAGE_MAX)


def positions_embed(mode: str, positions: Sequence[PositionRecord], status: str) -> discord.Embed:
    embed = discord.Embed(title=f"Open positions ({mode})", colour=COLOUR_LONG if positions else COLOUR_WARN)
    lines = []
    for p in positions:
        entry = fmt_price(p.entry_price) if p.entry_price is not None else f"pending ~{fmt_price(p.planned_entry)}"
        target = fmt_price(p.take_profit) if p.take_profit is not None else "-"
        lines.append(f"{p.direction:<5} {p.symbol:<10} {p.timeframe:>3} {p.quantity:.6g} @ {entry}  stop {fmt_price(p.stop_loss)}"
                     f"  target {target}  [{p.status}, protection {p.protection}] since {_when(p.opened_at_ms)}")
    body = "\n".join(lines) if lines else "none"
    embed.description = truncate(f"{status}\n```\n{body}\n```", 4000)
    return embed


def orders_embed(mode: str, orders: Sequence[OrderRecord]) -> discord.Embed:
    embed = discord.Embed(title=f"Recent orders ({mode})", colour=COLOUR_WARN)
    lines = []
    for o in orders:
        price = fmt_price(o.avg_price) if o.avg_price else (fmt_price(o.stop_price) if o.stop_price else "-")
        lines.append(f"{_when(o.created_at_ms)} {o.purpose:<6} {o.side:<4} {o.symbol:<10} {o.order_type:<18} {o.status:<14}"
                     f" {o.filled_qty:.6g}/{o.quantity:.6g} @ {price}  {o.client_order_id}")
    embed.description = truncate("```\n" + ("\n".join(lines) if lines else "none") + "\n```", 4000)
    return embed


def pnl_embed(r: PnlReport) -> discord.Embed:
    colour = COLOUR_LONG if r.realised_today >= 0 else COLOUR_SHORT
    embed = discord.Embed(title=f"PnL ({r.mode}, UTC day {r.day})", colour=colour)
    rows = [
        f"today:     {r.trades_today} closed, {r.wins_today} won, {r.realised_today:+.2f} USDT, {r.r_today:+.2f} R",
        f"all time:  {r.trades_total} closed, {r.realised_total:+.2f} USDT, {r.r_total:+.2f} R",
        f"open:      {r.open_positions}, unrealised "
        + ("n/a" if r.unrealised is None else f"{r.unrealised:+.2f} USDT"),
        "equity:    " + ("n/a" if r.equity is None else f"{r.equity:.2f} USDT")
        + ("" if r.day_start_equity is None else f" (day start {r.day_start_equity:.2f})"),
        "daily loss: " + ("n/a" if r.daily_loss_pct is None else f"{r.daily_loss_pct:.2f}%")
        + f" of limit {r.daily_loss_limit_pct:g}%",
    ]
    if r.paused:
        rows.append(f"PAUSED: {r.paused}")
    embed.description = truncate("```\n" + "\n".join(rows) + "\n```", 4000)
    return embed
