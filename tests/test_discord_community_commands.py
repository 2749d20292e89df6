"""The issue-14 commands end to end: dpytest for the prefix path, the real command tree for the slash path
(tests/fakes/slash.py), the real SQLite store behind them: >watch, >unwatch, >mute, >unmute, >subscriptions,
>signals with filters and pages, >stats with a period."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import discord
import discord.ext.test as dpytest
import pytest

from src.bot.discord.arguments import parse_duration_ms, parse_history_words, parse_market_words, split_period
from src.bot.discord.bot import WyEliBot
from src.bot.discord.charts import ChartRenderer
from src.bot.discord.history import HistoryPager, HistoryView
from src.bot.discord.subscriptions import SubscriptionBook
from src.storage.sqlite_store import SqliteStore
from tests.fakes.slash import invoke_slash
from tests.storage_contract import T0, make_evidence, make_outcome, make_signal
from tests.test_discord_commands import SYMBOLS, TFS, make_deps

HOUR = 3_600_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "community.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def book(store: SqliteStore) -> SubscriptionBook:
    return SubscriptionBook(store)


@pytest.fixture
async def bot(store: SqliteStore, book: SubscriptionBook) -> AsyncIterator[WyEliBot]:
    renderer = ChartRenderer(use_processes=False)
    b = WyEliBot(replace(make_deps(store, renderer), book=book), intents=discord.Intents.all())
    await b._async_setup_hook()
    dpytest.configure(b, members=2)
    b.on_command_error = b.on_command_error.__old__  # type: ignore[attr-defined, method-assign]
    await b.setup_hook()
    yield b
    await dpytest.empty_queue()
    renderer.close()


def channel_and_members() -> tuple[discord.TextChannel, discord.Member, discord.Member]:
    cfg = dpytest.get_config()
    channel = cfg.channels[0]
    assert isinstance(channel, discord.TextChannel)
    return channel, cfg.members[0], cfg.members[1]


async def make_moderator(channel: discord.TextChannel, member: discord.Member) -> None:
    """Give ``member`` a role with Manage Channels (dpytest's per-member overwrites are not applied by discord.py)."""
    perms = discord.Permissions(view_channel=True, send_messages=True, read_message_history=True, manage_channels=True)
    role = dpytest.backend.make_role("moderators", channel.guild, permissions=perms.value)
    await dpytest.add_role(member, role)


def reply() -> discord.Message:
    return dpytest.get_message()


# ---------------------------------------------------------------------------- arguments (pure)
def test_market_words_take_any_order_and_the_last_duration_for_a_mute() -> None:
    words = parse_market_words(("4h", "eth", "12h"), SYMBOLS, TFS, duration=True)
    assert (words.symbol, words.timeframe, words.duration_ms) == ("ETHUSDT", "4h", 12 * HOUR)
    words = parse_market_words(("eth", "1h"), SYMBOLS, TFS, duration=True)  # 1h is the duration here
    assert (words.symbol, words.timeframe, words.duration_ms) == ("ETHUSDT", None, HOUR)
    assert parse_market_words(("btc", "dm"), SYMBOLS, TFS).scope == "dm"
    with pytest.raises(ValueError, match="`doge` is neither"):
        parse_market_words(("doge",), SYMBOLS, TFS)
    with pytest.raises(ValueError, match="two symbols"):
        parse_market_words(("btc", "eth"), SYMBOLS, TFS)
    assert [parse_duration_ms(x) for x in ("30m", "2d", "1w", "0h", "5y", "12")] == [
        1_800_000, 2 * 86_400_000, 7 * 86_400_000, None, None, None]


def test_history_words_read_filters_outcomes_and_pages() -> None:
    q = parse_history_words("eth 4h spring loss page 3", SYMBOLS, TFS)
    assert (q.symbol, q.timeframe, q.pattern, q.outcome, q.page) == ("ETHUSDT", "4h", "spring", "LOSS", 3)
    assert parse_history_words("p2 open", SYMBOLS, TFS).page == 2
    assert parse_history_words("spring", (), TFS, any_symbol=True).pattern == "spring"  # SYMBOLS=ALL
    assert parse_history_words("doge", (), TFS, any_symbol=True).symbol == "DOGEUSDT"
    with pytest.raises(ValueError, match="two outcomes"):
        parse_history_words("win loss", SYMBOLS, TFS)
    assert split_period(("btc", "30d", None), TFS) == (["btc", None], 30 * 86_400_000, "30d")
    assert split_period(("4h",), TFS) == (["4h"], None, "")  # a configured timeframe is not a period


# ---------------------------------------------------------------------------- >watch / >unwatch / >subscriptions
async def test_watch_in_a_channel_needs_manage_channels_and_is_stored(bot: WyEliBot, store: SqliteStore) -> None:
    channel, member, _ = channel_and_members()
    await dpytest.message(">watch btc 1h", channel=channel, member=member)
    assert "needs the Manage Channels permission" in reply().content
    assert await store.subscriptions() == []
    await make_moderator(channel, member)
    await dpytest.message(">watch btc 1h", channel=channel, member=member)
    assert reply().content.startswith("Watching BTCUSDT 1h in this channel")
    await dpytest.message(">watch btc 1h", channel=channel, member=member)
    assert reply().content == "This channel already watches BTCUSDT 1h."
    subs = await store.subscriptions()
    assert [(s.destination, s.symbol, s.timeframe, s.created_by) for s in subs] == [
        (f"discord:{channel.id}", "BTCUSDT", "1h", str(member.id))]


async def test_anyone_may_watch_for_their_own_dms_and_list_them(bot: WyEliBot, store: SqliteStore) -> None:
    channel, _, other = channel_and_members()
    await dpytest.message(">watch eth dm", channel=channel, member=other)
    assert "in your DMs" in reply().content
    assert [(s.destination, s.symbol, s.timeframe) for s in await store.subscriptions()] == [
        (f"dm:{other.id}", "ETHUSDT", "")]
    await dpytest.message(">subscriptions dm", channel=channel, member=other)
    fields = {f.name: f.value for f in reply().embeds[0].fields}
    assert "ETHUSDT every timeframe" in str(fields["Watched here"]) and fields["Muted"] == "nothing muted"


async def test_unwatch_removes_one_market_or_everything_and_says_when_nothing_matched(bot: WyEliBot,
                                                                                      store: SqliteStore) -> None:
    channel, member, _ = channel_and_members()
    await make_moderator(channel, member)
    for cmd in (">watch btc", ">watch eth 4h", ">watch sol 15m"):
        await dpytest.message(cmd, channel=channel, member=member)
        reply()
    await dpytest.message(">unwatch btc 1h", channel=channel, member=member)
    assert "watched on every timeframe: `>unwatch BTC` stops it" in reply().content
    await dpytest.message(">unwatch eth", channel=channel, member=member)
    assert reply().content == "Stopped watching ETHUSDT in this channel (1 subscription)."
    await dpytest.message(">unwatch", channel=channel, member=member)
    assert reply().content == "Stopped watching every market in this channel (2 subscriptions)."
    assert await store.subscriptions() == []


async def test_hostile_arguments_to_watch_are_neutralised(bot: WyEliBot) -> None:
    channel, member, _ = channel_and_members()
    await dpytest.message(">watch @everyone**" + "x" * 500, channel=channel, member=member)
    msg = reply()
    assert "@everyone" not in msg.content and not msg.mention_everyone and len(msg.content) < 600


# ---------------------------------------------------------------------------- >mute / >unmute
async def test_mute_for_a_while_and_unmute(bot: WyEliBot, store: SqliteStore) -> None:
    channel, member, _ = channel_and_members()
    await make_moderator(channel, member)
    await dpytest.message(">mute eth 4h 12h", channel=channel, member=member)
    assert reply().content.startswith("Muted ETHUSDT 4h in this channel for 12 h, until ")
    mutes = await store.mutes()
    assert len(mutes) == 1 and (mutes[0].symbol, mutes[0].timeframe) == ("ETHUSDT", "4h")
    assert abs(mutes[0].until_ms - (int(time.time() * 1000) + 12 * HOUR)) < 60_000
    await dpytest.message(">mute eth", channel=channel, member=member)
    assert reply().content.startswith("For how long?")
    await dpytest.message(">subscriptions", channel=channel, member=member)
    assert "ETHUSDT 4h until" in str({f.name: f.value for f in reply().embeds[0].fields}["Muted"])
    await dpytest.message(">unmute", channel=channel, member=member)
    assert reply().content == "Ended 1 mute in this channel."
    assert await store.mutes() == []


async def test_mute_of_a_shared_channel_is_refused_without_the_permission(bot: WyEliBot, store: SqliteStore) -> None:
    channel, _, other = channel_and_members()
    await dpytest.message(">mute 2h", channel=channel, member=other)
    assert "Manage Channels" in reply().content and await store.mutes() == []


# ---------------------------------------------------------------------------- >signals pages and filters
async def history(store: SqliteStore, n: int = 23) -> list[Any]:
    sigs = []
    for i in range(n):
        s = make_signal("BTCUSDT" if i % 2 else "ETHUSDT", "1h" if i % 3 else "4h", T0 + i * HOUR,
                        "wyckoff_spring" if i % 4 else "elliott_wave3", kind="trade" if i % 5 else "watch",
                        gate_reason="" if i % 5 else "no_edge", evidence=make_evidence())
        await store.save_signal(s)
        sigs.append(s)
    await store.save_outcome(make_outcome(sigs[-1], "WIN", 1.5))
    await store.save_outcome(make_outcome(sigs[-2], "LOSS", -1.0))
    gated = make_signal(candle_time_ms=T0 + 99 * HOUR, pattern="hidden", kind="gated", gate_reason="cooldown")
    await store.save_signal(gated)
    return sigs


async def test_signals_pages_newest_first_with_results_and_never_shows_gated(bot: WyEliBot, store: SqliteStore) -> None:
    sigs = await history(store)
    await dpytest.message(">signals")
    e = reply().embeds[0]
    lines = (e.description or "").splitlines()
    assert len(lines) == 10 and "hidden" not in (e.description or "")
    assert "TP1 hit +1.50 R" in lines[0] and "stopped -1.00 R" in lines[1] and "**open**" in lines[2]
    assert "page 1 · more" in (e.footer.text or "")
    await dpytest.message(">signals page 3")
    e = reply().embeds[0]
    assert len((e.description or "").splitlines()) == 3 and "page 3 ·" in (e.footer.text or "")
    assert "more" not in (e.footer.text or "")
    await dpytest.message(">signals eth 4h")
    e = reply().embeds[0]
    want = [s for s in sigs if s.symbol == "ETHUSDT" and s.timeframe == "4h"]
    assert e.title == "Trade calls and watch notes · ETHUSDT 4h"
    assert len((e.description or "").splitlines()) == len(want)
    await dpytest.message(">signals win")
    assert len((reply().embeds[0].description or "").splitlines()) == 1
    await dpytest.message(">signals btc eth")
    assert "two symbols given" in reply().content


async def test_the_page_buttons_move_through_the_pages_for_the_asker_only(store: SqliteStore) -> None:
    await history(store)
    pager = HistoryPager(store, parse_history_words("", SYMBOLS, TFS), author_id=7)
    await pager.page_embed(1)
    view = pager.view()
    assert isinstance(view, HistoryView) and view.newer.disabled and not view.older.disabled

    def click(user_id: int) -> MagicMock:
        it = MagicMock()
        it.user.id = user_id
        it.response.edit_message = AsyncMock()
        it.response.send_message = AsyncMock()
        return it

    it = click(7)
    await view.older.callback(it)
    assert pager.page == 2 and not view.newer.disabled
    shown = it.response.edit_message.await_args.kwargs["embed"]
    assert "page 2" in shown.footer.text
    it = click(7)
    await view.older.callback(it)
    assert pager.page == 3 and view.older.disabled
    stranger = click(8)
    assert await view.interaction_check(stranger) is False
    assert stranger.response.send_message.await_args.kwargs["ephemeral"] is True


# ---------------------------------------------------------------------------- >stats with a period
async def test_stats_with_a_period_counts_only_recent_live_candidates(bot: WyEliBot, store: SqliteStore) -> None:
    now = int(time.time() * 1000)
    old = make_signal(candle_time_ms=now - 40 * 86_400_000, evidence=make_evidence())
    new = make_signal(candle_time_ms=now - 5 * 86_400_000, evidence=make_evidence())
    for s in (old, new):
        await store.save_signal(s)
    await store.save_outcome(make_outcome(old, "LOSS", -1.0))
    await store.save_outcome(make_outcome(new, "WIN", 2.0))
    await dpytest.message(">stats btc 30d")
    e = reply().embeds[0]
    assert e.title == "Track record per pattern · BTCUSDT live: last 30d"
    assert "live: n 1, mean +2.00 R" in (e.description or "")
    await dpytest.message(">stats btc")
    assert "live: n 2, mean +0.50 R" in (reply().embeds[0].description or "")


# ---------------------------------------------------------------------------- the slash variants
async def test_slash_watch_unwatch_mute_unmute_and_subscriptions_go_through_the_command_tree(
        bot: WyEliBot, store: SqliteStore) -> None:
    channel, member, other = channel_and_members()
    refused = await invoke_slash(bot, "watch", {"symbol": "BTC", "timeframe": "1h"}, channel=channel, member=other)
    assert "Manage Channels" in refused.text() and await store.subscriptions() == []
    mod = discord.Permissions(send_messages=True, manage_channels=True)
    got = await invoke_slash(bot, "watch", {"symbol": "BTC", "timeframe": "1h"}, channel=channel, member=member,
                             permissions=mod)
    assert got.deferred and "Watching BTCUSDT 1h in this channel" in got.text()
    got = await invoke_slash(bot, "watch", {"symbol": "eth", "scope": "dm"}, channel=channel, member=other)
    assert "in your DMs" in got.text()
    got = await invoke_slash(bot, "mute", {"first": "btc", "second": "1h", "third": "6h"}, channel=channel,
                             member=member, permissions=mod)
    assert "Muted BTCUSDT 1h in this channel for 6 h" in got.text()
    got = await invoke_slash(bot, "subscriptions", {}, channel=channel, member=member)
    assert "BTCUSDT 1h" in got.text() and "until" in got.text()
    assert got.last["allowed_mentions"].everyone is False
    got = await invoke_slash(bot, "unmute", {}, channel=channel, member=member, permissions=mod)
    assert "Ended 1 mute" in got.text()
    got = await invoke_slash(bot, "unwatch", {"symbol": "btc"}, channel=channel, member=member, permissions=mod)
    assert "Stopped watching BTCUSDT" in got.text()
    assert [s.destination for s in await store.subscriptions()] == [f"dm:{other.id}"]


async def test_slash_signals_and_stats_take_the_same_filters(bot: WyEliBot, store: SqliteStore) -> None:
    channel, member, _ = channel_and_members()
    await history(store)
    got = await invoke_slash(bot, "signals", {"filters": "eth 4h page 1"}, channel=channel, member=member)
    assert got.deferred and got.last["embed"].title == "Trade calls and watch notes · ETHUSDT 4h"
    got = await invoke_slash(bot, "signals", {}, channel=channel, member=member)
    assert isinstance(got.last["view"], HistoryView)
    got = await invoke_slash(bot, "stats", {"first": "btc", "second": "12w"}, channel=channel, member=member)
    assert got.last["embed"].title == "Track record per pattern · BTCUSDT live: last 12w"
    got = await invoke_slash(bot, "help", {}, channel=channel, member=member)
    assert ">watch SYMBOL [TF] [dm]" in got.text() and ">mute [SYMBOL] [TF] DURATION [dm]" in got.text()


async def test_every_hybrid_command_is_also_a_slash_command() -> None:
    b = WyEliBot(make_deps(MagicMock()))
    await b._async_setup_hook()
    await b.setup_hook()
    slash = {c.name for c in b.tree.get_commands()}
    prefix = {c.name for c in b.commands if not c.hidden}
    assert prefix <= slash and {"watch", "unwatch", "mute", "unmute", "subscriptions", "signals", "stats"} <= slash
