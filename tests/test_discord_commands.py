"""The bot's commands end to end with dpytest (prefix path), and the embed+file / slash paths with mocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext import commands

from src.analysis.types import AnalyzerState
from src.bot.discord.bot import WyEliBot
from src.bot.discord.charts import ChartRenderer
from src.bot.discord.cogs.signals import CommandDeps, SignalsCog
from src.bot.discord.embeds import FOOTER_ID_RE
from src.bot.status import MarketView, StatusSnapshot, StreamStatus
from src.storage.sqlite_store import SqliteStore
from tests.candlegen import random_walk
from tests.fakes.evidence import FakeEvidenceModel, FakeTrackRecord
from tests.storage_contract import T0, make_evidence, make_outcome, make_signal

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TFS = ("15m", "1h", "4h")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "cmd.db")
    await s.open()
    yield s
    await s.close()


async def status_provider() -> StatusSnapshot:
    return StatusSnapshot(
        started_at_ms=T0 - 7_200_000, now_ms=T0, mode="live", warmed_up=True,
        streams=(StreamStatus("BTCUSDT", "1h", T0 - 3_600_000, T0, True),), connections=(),
        signals_total=2, signals_by_symbol=(("BTCUSDT", 2),), last_signal_at="2023-11-15T00:59:59.999Z",
        store_backend="sqlite:test.db", store_healthy=True, spool_depth=0, cache="off", trading="off (alerts only)",
        discord="connected",
    )


async def market_view_provider(symbol: str, timeframe: str) -> MarketView | None:
    if symbol == "SOLUSDT":
        return None  # configured but not warmed up yet
    candles = tuple(random_walk(80, symbol=symbol, timeframe=timeframe))
    states = (AnalyzerState("wyckoff", "Accumulation, phase C", ("Spring at 99.1",), (("support", 99.0),)),
              AnalyzerState("elliott", "Wave 3 of an impulse", ("invalidation below 97.5",)))
    return MarketView(symbol, timeframe, candles, states, None)


MODEL = FakeEvidenceModel(cells=(FakeTrackRecord("spring", "1h", backtest_n=120, backtest_mean_r=0.1),))


def make_deps(store: SqliteStore, renderer: ChartRenderer | None = None) -> CommandDeps:
    return CommandDeps(symbols=SYMBOLS, timeframes=TFS, store=store, status_provider=status_provider,
                       market_view_provider=market_view_provider, renderer=renderer, track_records=MODEL.track_records,
                       tracked_reasons={"", "cooldown"})


@pytest.fixture
async def bot(store: SqliteStore) -> AsyncIterator[WyEliBot]:
    renderer = ChartRenderer(use_processes=False)
    b = WyEliBot(make_deps(store, renderer), intents=discord.Intents.all())
    await b._async_setup_hook()
    dpytest.configure(b)
    # dpytest re-raises every command error from dpytest.message(); our cog answers them itself
    b.on_command_error = b.on_command_error.__old__  # type: ignore[attr-defined, method-assign]
    await b.setup_hook()
    yield b
    await dpytest.empty_queue()
    renderer.close()


def last_embed() -> discord.Embed:
    msg = dpytest.get_message()
    assert msg.embeds, f"expected an embed, got {msg.content!r}"
    return msg.embeds[0]


async def test_status_command_replies_with_the_status_embed(bot: WyEliBot) -> None:
    await dpytest.message(">status")
    e = last_embed()
    assert e.title == "WyEli status"
    text = str(e.to_dict())
    assert "2 total" in text and "sqlite:test.db: ok" in text and "off (alerts only)" in text
    assert "onfidence" not in text


async def test_signal_command_accepts_short_lowercase_symbol_and_attaches_a_chart(bot: WyEliBot) -> None:
    await dpytest.message(">signal btc 1h")
    msg = dpytest.get_message()
    # dpytest drops embeds sent together with a file; the embed itself is checked in the mocked test below
    assert [a.filename for a in msg.attachments] == ["BTCUSDT_1h.png"]


async def test_signal_command_with_bad_symbol_lists_what_is_valid(bot: WyEliBot) -> None:
    await dpytest.message(">signal DOGE")
    msg = dpytest.get_message()
    assert "I don't watch `DOGE`" in msg.content and "BTC, ETH, SOL" in msg.content and "15m, 1h, 4h" in msg.content


async def test_signal_command_with_bad_timeframe_lists_configured_timeframes(bot: WyEliBot) -> None:
    await dpytest.message(">signal BTC 7h")
    assert dpytest.verify().message().contains().content("`7h` is not a configured timeframe")


async def test_signal_command_without_arguments_shows_usage(bot: WyEliBot) -> None:
    await dpytest.message(">signal")
    assert dpytest.verify().message().contains().content("Usage: `>signal SYMBOL [TF]`")


async def test_signal_command_for_a_market_without_data_says_so(bot: WyEliBot) -> None:
    await dpytest.message(">signal sol 4h")
    assert dpytest.verify().message().contains().content("No data for SOLUSDT 4h yet")


async def test_hostile_arguments_are_neutralised_and_ping_nobody(bot: WyEliBot) -> None:
    await dpytest.message(">signal @everyone**`" + "x" * 3000)
    msg = dpytest.get_message()
    assert "@everyone" not in msg.content and "**`" not in msg.content.split("\n")[0]
    assert len(msg.content) < 600
    assert not msg.mention_everyone and not msg.mentions


async def test_unknown_commands_are_ignored_quietly(bot: WyEliBot) -> None:
    await dpytest.message(">definitely-not-a-command")
    await dpytest.message("> quoted text in a normal chat message")
    assert dpytest.verify().message().nothing()


async def test_help_lists_commands_symbols_and_timeframes(bot: WyEliBot) -> None:
    await dpytest.message(">help")
    d = last_embed().to_dict()
    assert ">signal SYMBOL [TF]" in d["description"] and ">stats" in d["description"]
    assert {f["name"]: f["value"] for f in d["fields"]} == {"Symbols": ", ".join(SYMBOLS), "Timeframes": "15m, 1h, 4h"}


async def test_signals_lists_recent_signals_filtered_by_symbol(bot: WyEliBot, store: SqliteStore) -> None:
    await store.save_signal(make_signal(symbol="BTCUSDT"))
    await store.save_signal(make_signal(symbol="ETHUSDT", pattern="utad", direction="SHORT"))
    await store.save_signal(make_signal(symbol="ETHUSDT", pattern="hidden", kind="gated", gate_reason="cooldown"))
    await dpytest.message(">signals eth")
    desc = last_embed().description or ""
    assert "ETHUSDT" in desc and "utad" in desc and "BTCUSDT" not in desc
    await dpytest.message(">signals")
    desc = last_embed().description or ""
    assert "ETHUSDT" in desc and "BTCUSDT" in desc and "hidden" not in desc


async def test_stats_shows_the_model_track_record_and_the_live_record_per_pattern(bot: WyEliBot,
                                                                                 store: SqliteStore) -> None:
    ev = make_evidence()
    a = make_signal(candle_time_ms=T0, evidence=ev)
    b = make_signal(candle_time_ms=T0 + 3_600_000, kind="gated", gate_reason="cooldown", evidence=ev)
    c = make_signal("ETHUSDT", candle_time_ms=T0 + 7_200_000, evidence=ev)
    for s in (a, b, c):
        await store.save_signal(s)
    await store.save_outcome(make_outcome(a, "WIN", 1.5))
    await store.save_outcome(make_outcome(b, "LOSS", -1.0))
    await store.save_outcome(make_outcome(c, "LOSS", -1.0))
    await dpytest.message(">stats")
    desc = last_embed().description or ""
    assert "spring 1h" in desc and "backtest (out of sample): n 120, mean +0.10 R" in desc
    assert "live: n 3, mean -0.17 R · trade calls n 2, mean +0.25 R" in desc  # the gated 'cooldown' one is tracked
    await dpytest.message(">stats btc spring 1h")
    e = last_embed()
    assert e.title == "Track record per pattern · BTCUSDT 1h spring"
    assert "live: n 2, mean +0.25 R · trade calls n 1, mean +1.50 R" in (e.description or "")
    await dpytest.message(">stats 1h 4h")
    assert dpytest.verify().message().contains().content("two timeframes given")


async def test_sync_is_refused_for_non_owners(bot: WyEliBot) -> None:
    bot.owner_ids = {1}
    await dpytest.message(">sync")
    assert dpytest.verify().message().content("Only the bot owners can do that.")


async def test_status_with_failing_provider_answers_politely(bot: WyEliBot) -> None:
    async def broken() -> StatusSnapshot:
        raise RuntimeError("boom")

    cog = bot.get_cog("WyEli")
    assert isinstance(cog, SignalsCog)
    cog.deps = replace(cog.deps, status_provider=broken)
    await dpytest.message(">status")
    assert dpytest.verify().message().content("Something went wrong; the error was logged.")


# ------------------------------------------------------------------ mocked contexts (slash path, embed + file)
def signal_callback(cog: SignalsCog) -> Any:
    """The undecorated ``signal`` coroutine (what a slash invocation ends up calling)."""
    return cog.signal.callback


def mock_ctx() -> MagicMock:
    ctx = MagicMock(spec=commands.Context)
    ctx.send = AsyncMock()
    ctx.defer = AsyncMock()
    return ctx


async def test_signal_callback_sends_the_analysis_embed_with_the_chart_attached(store: SqliteStore) -> None:
    renderer = ChartRenderer(use_processes=False)
    try:
        cog = SignalsCog(MagicMock(), make_deps(store, renderer))
        ctx = mock_ctx()
        await signal_callback(cog)(cog, ctx, "ETH", "4h")
        ctx.defer.assert_awaited()  # slash invocations must be acknowledged before slow work
        kwargs = ctx.send.await_args.kwargs
        embed, file = kwargs["embed"], kwargs["file"]
        assert file.filename == "ETHUSDT_4h.png"
        assert embed.image.url == "attachment://ETHUSDT_4h.png"
        assert "Accumulation, phase C" in embed.description and "invalidation below 97.5" in embed.description
        assert kwargs["allowed_mentions"].everyone is False
    finally:
        renderer.close()


async def test_signal_default_timeframe_is_the_latest_signals_timeframe(store: SqliteStore) -> None:
    cog = SignalsCog(MagicMock(), make_deps(store))
    ctx = mock_ctx()
    await signal_callback(cog)(cog, ctx, "btc")
    assert "BTCUSDT 15m" in ctx.send.await_args.kwargs["embed"].title  # no signal yet: the first configured
    await store.save_signal(make_signal(symbol="BTCUSDT", timeframe="4h"))
    await signal_callback(cog)(cog, ctx, "btc")
    assert "BTCUSDT 4h" in ctx.send.await_args.kwargs["embed"].title


def test_bot_without_message_content_answers_mentions_only(store: SqliteStore) -> None:
    with_intent = WyEliBot(make_deps(store))
    without = WyEliBot(make_deps(store), message_content=False)
    assert with_intent.intents.message_content and not without.intents.message_content
    assert without.command_prefix is commands.when_mentioned
    assert with_intent.allowed_mentions is not None and with_intent.allowed_mentions.everyone is False


def test_signal_footer_marker_matches_ids_only() -> None:
    assert FOOTER_ID_RE.findall("id 0123456789abcdef01234567 · v") == ["0123456789abcdef01234567"]
    assert FOOTER_ID_RE.findall("id 0123 · v") == []


def test_slash_autocomplete_suggests_configured_symbols() -> None:
    from src.bot.discord.cogs.signals import symbol_choices

    assert [c.value for c in symbol_choices(SYMBOLS, "th")] == ["ETHUSDT"]
    assert [c.value for c in symbol_choices(SYMBOLS, "")] == list(SYMBOLS)
    assert len(symbol_choices([f"S{i}USDT" for i in range(100)], "")) == 25  # Discord's maximum


@pytest.mark.parametrize("text", ['>signal "BTC', '>signal BTC"1h'])
async def test_unbalanced_quotes_get_the_usage_not_an_internal_error(bot: WyEliBot, text: str) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        await dpytest.message(text)
    msg = dpytest.get_message()
    assert "Usage" in msg.content and "went wrong" not in msg.content
    assert not [e for e in logs if e["log_level"] == "error"]


async def test_signal_acknowledges_the_interaction_before_reading_the_store(store: SqliteStore) -> None:
    # a slash command must be answered (deferred) within 3 s; the default-timeframe lookup reads the store,
    # which can be slow or hang on a network backend
    order: list[str] = []

    class SlowStore:
        async def recent_signals(self, **kw: Any) -> list[Any]:
            order.append("store")
            return []

    cog = SignalsCog(MagicMock(), replace(make_deps(store), store=SlowStore()))  # type: ignore[arg-type]
    ctx = mock_ctx()
    ctx.defer.side_effect = lambda *a, **k: order.append("defer")
    await signal_callback(cog)(cog, ctx, "btc")
    assert order[0] == "defer" and "store" in order


async def test_one_user_spamming_signal_gets_a_cooldown_answer_not_more_charts(bot: WyEliBot) -> None:
    # each >signal renders a chart in the one chart worker the outbox also needs for signal messages
    renders = 0
    cog = bot.get_cog("WyEli")
    assert isinstance(cog, SignalsCog) and cog.deps.renderer is not None
    real_render = cog.deps.renderer.render

    async def counting_render(spec: Any) -> bytes | None:
        nonlocal renders
        renders += 1
        return await real_render(spec)

    cog.deps.renderer.render = counting_render  # type: ignore[method-assign]
    for _ in range(5):
        await dpytest.message(">signal btc 1h")
    replies = [dpytest.get_message() for _ in range(5)]
    assert renders == 2
    assert [("try again in" in m.content) for m in replies] == [False, False, True, True, True]
    assert not any("went wrong" in m.content for m in replies)


async def test_signal_requests_beyond_the_chart_limit_are_told_to_wait(bot: WyEliBot) -> None:
    release = asyncio.Event()
    started = 0
    cog = bot.get_cog("WyEli")
    assert isinstance(cog, SignalsCog)

    async def slow_view(symbol: str, timeframe: str) -> MarketView | None:
        nonlocal started
        started += 1
        await release.wait()
        return await market_view_provider(symbol, timeframe)

    cog.deps = replace(cog.deps, market_view_provider=slow_view)
    members = [await dpytest.member_join(name=f"user{i}") for i in range(3)]
    tasks = [asyncio.create_task(dpytest.message(">signal eth 4h", member=m)) for m in members]
    for _ in range(200):
        if started >= 2:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(*tasks)
    assert started == 2
    contents = [dpytest.get_message().content for _ in range(3)]
    assert sum("busy" in c.lower() for c in contents) == 1
