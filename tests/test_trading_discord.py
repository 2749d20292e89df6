"""The trading commands in Discord (dpytest, prefix path) against a real paper trader, the alerts sink, the
admin rule, and the trading line of ``>status``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import discord
import discord.ext.test as dpytest
import pytest

from src.bot.discord.bot import WyEliBot
from src.bot.discord.cogs.trading import TradingAdmins
from src.bot.discord.service import trading_admins
from src.bot.discord.trading_alerts import DiscordTradingAlerts
from src.bot.discord.trading_text import alert_text
from src.config import Config
from src.storage.sqlite_store import SqliteStore
from src.trading.alerts import LogAlerts
from src.trading.base import TraderSettings
from src.trading.paper import PaperTrader
from tests.test_discord_commands import make_deps
from tests.test_trading_paper import candle, feed, sig


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "d.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def trader(store: SqliteStore) -> PaperTrader:
    t = PaperTrader(TraderSettings(mode="paper", words="PAPER trading: simulated fills"), store, LogAlerts())
    await t.start()
    await feed(t, store, candle(0, 99, 101, 98, 100), signals=(sig(0),))
    await feed(t, store, candle(1, 100, 102, 99, 101))
    return t


@pytest.fixture
async def bot(store: SqliteStore, trader: PaperTrader) -> AsyncIterator[WyEliBot]:
    b = WyEliBot(make_deps(store), intents=discord.Intents.all(), trading=trader,
                 trading_admins=TradingAdmins(frozenset(), frozenset()))
    await b._async_setup_hook()
    dpytest.configure(b, members=2)
    b.on_command_error = b.on_command_error.__old__  # type: ignore[attr-defined, method-assign]
    admin = dpytest.get_config().members[0]
    b.trading_admins = TradingAdmins(frozenset({admin.id}), frozenset())
    await b.setup_hook()
    yield b
    await dpytest.empty_queue()


def text_of(msg: discord.Message) -> str:
    return msg.content + " ".join(str(e.to_dict()) for e in msg.embeds)


async def test_only_trading_admins_may_use_the_trading_commands(bot: WyEliBot, trader: PaperTrader) -> None:
    for command in (">kill", ">resume", ">positions", ">orders", ">pnl", ">kill flatten"):
        await dpytest.message(command, member=1)
        assert "Only trading admins" in dpytest.get_message().content, command
    assert trader.safety.paused is None


async def test_kill_pauses_and_resume_resumes(bot: WyEliBot, trader: PaperTrader, store: SqliteStore) -> None:
    await dpytest.message(">kill")
    assert "paused" in dpytest.get_message().content.lower()
    assert trader.safety.paused is not None and trader.safety.paused.kind == "kill"
    await dpytest.message(">resume")
    assert "resumed" in dpytest.get_message().content.lower() and trader.safety.paused is None
    admin = dpytest.get_config().members[0]
    actors = {(e.actor, e.action) for e in await store.audit_entries()}
    assert (f"discord:{admin.id}", "kill") in actors and (f"discord:{admin.id}", "resume") in actors


async def test_kill_flatten_asks_for_a_code_then_closes_the_positions(bot: WyEliBot, trader: PaperTrader,
                                                                      store: SqliteStore) -> None:
    await dpytest.message(">kill flatten")
    ask = dpytest.get_message().content
    assert "Flatten closes 1 open position(s)" in ask and trader.safety.paused is not None
    assert await store.open_positions("paper")  # nothing closed yet
    await dpytest.message(">kill flatten 0000")  # a wrong code asks again
    assert "To confirm" in dpytest.get_message().content and await store.open_positions("paper")
    pending = bot.get_cog("Trading")._pending_flatten  # type: ignore[union-attr]
    (right,) = [c for c, _ in pending.values()]
    await dpytest.message(f">kill flatten {right}")
    assert "Flattened 1" in dpytest.get_message().content
    assert await store.open_positions("paper") == [] and (await store.closed_positions("paper"))[0].exit_reason == "flatten"


async def test_positions_orders_and_pnl_show_the_records(bot: WyEliBot) -> None:
    await dpytest.message(">positions")
    text = text_of(dpytest.get_message())
    assert "Open positions (paper)" in text and "BTCUSDT" in text and "OPEN" in text and "PAPER trading" in text
    await dpytest.message(">orders")
    text = text_of(dpytest.get_message())
    assert "wyE-" in text and "FILLED" in text and "STOP_MARKET" in text
    await dpytest.message(">pnl")
    text = text_of(dpytest.get_message())
    assert "PnL (paper" in text and "equity" in text and "daily loss" in text


def test_admins_default_to_the_bot_owners_and_roles_count() -> None:
    c = Config.from_env({"DISCORD_OWNER_IDS": "11,12"})
    assert trading_admins(c).user_ids == {11, 12}
    c = Config.from_env({"DISCORD_OWNER_IDS": "11", "TRADING_ADMIN_IDS": "21", "TRADING_ADMIN_ROLE_IDS": "31"})
    admins = trading_admins(c)
    assert admins.user_ids == {21} and admins.role_ids == {31}
    member = SimpleNamespace(id=99, roles=[SimpleNamespace(id=31)])
    assert admins.allows(member) and not admins.allows(SimpleNamespace(id=99, roles=[]))


async def test_alerts_are_posted_in_order_with_admin_mentions_for_alarms_and_retried() -> None:
    channel = MagicMock(spec=discord.TextChannel)
    channel.send = AsyncMock(side_effect=[discord.HTTPException(MagicMock(status=500), "boom"), None, None])
    bot: Any = MagicMock()
    bot.is_ready.return_value = True
    bot.get_channel.return_value = channel
    alerts = DiscordTradingAlerts(lambda: bot, 5, (42,))
    await alerts.alert("alarm", "POSITION WITHOUT STOP: x")
    await alerts.alert("info", "opened")
    task = asyncio.create_task(alerts.run())
    try:
        async with asyncio.timeout(10):
            while alerts.sent < 2:  # noqa: ASYNC110 - the worker's progress
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
    texts = [call.args[0] for call in channel.send.call_args_list]
    assert texts[1].startswith("🚨 **ALARM** <@42>") and "POSITION WITHOUT STOP" in texts[1]
    assert "<@" not in texts[2] and alerts.failures == 1
    assert len(alert_text("info", "x" * 5000)) <= 2000
