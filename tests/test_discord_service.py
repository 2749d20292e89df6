"""DiscordService wiring (webhook destination end to end), the preview sink, the bot start-up fallback and the
channel poster against dpytest's fake Discord."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest

from src.analysis.types import AnalyzerState
from src.bot.discord.bot import WyEliBot, run_bot
from src.bot.discord.charts import ChartRenderer
from src.bot.discord.embeds import signal_embed
from src.bot.discord.messages import MessageBuilder, OutgoingMessage
from src.bot.discord.outbox import IN_FLIGHT, OutboxSender
from src.bot.discord.posters import ChannelPoster
from src.bot.discord.preview import DiscordPreviewSink
from src.bot.discord.service import DISABLED_TEXT, DiscordService, build_discord_service, discord_status_text
from src.bot.sinks import SignalBatch
from src.bot.status import MarketView
from src.config import Config
from src.storage.base import Delivery
from src.storage.sqlite_store import SqliteStore
from tests.candlegen import random_walk
from tests.storage_contract import T0, make_signal
from tests.test_discord_commands import make_deps
from tests.test_discord_outbox import WEBHOOK_ID, WEBHOOK_TOKEN, FakeDiscordWebhook, fake_webhook  # noqa: F401

HOUR = 3_600_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "svc.db")
    await s.open()
    yield s
    await s.close()


def view_for(signal_candle_ms: int) -> MarketView:
    candles = tuple(random_walk(60, timeframe="1h", start_ms=signal_candle_ms - 59 * HOUR))
    state = AnalyzerState("elliott", "Wave 3", ("invalidation below 90",), (("invalidation", 99.0),),
                          ((candles[20].open_time_ms, candles[20].high, "1"), (candles[40].open_time_ms, candles[40].low, "2")))
    return MarketView("BTCUSDT", "1h", candles, (state,), None)


async def wait_for(predicate: Any, tries: int = 2000) -> None:
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(0.005)
    pytest.fail("condition not reached")


async def test_service_posts_a_published_signal_once_through_the_webhook_with_its_chart(
        store: SqliteStore, fake_webhook: FakeDiscordWebhook) -> None:  # noqa: F811
    config = Config(discord_webhook_url=f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}",
                    signal_max_age_seconds=0)
    sig = make_signal(candle_time_ms=T0 + 59 * HOUR)
    renderer = ChartRenderer(use_processes=False)
    svc = DiscordService(config, store, None, None, poll_interval_s=3600, renderer=renderer)
    await svc.start()
    try:
        assert await store.save_signal(sig)  # the pipeline stores first ...
        await svc.publish(SignalBatch((sig,), (view_for(sig.candle_time_ms),)))  # ... then publishes
        await wait_for(lambda: svc.stats().sent == 1)
        await svc.publish(SignalBatch((sig,), ()))  # a repeated publish does not post again
        await asyncio.sleep(0.05)
    finally:
        await svc.stop()
        renderer.close()
    assert len(fake_webhook.created) == 1
    embed = fake_webhook.created[0]["embeds"][0]  # type: ignore[index]
    assert embed["image"]["url"] == f"attachment://{sig.id}.png"
    d = await store.get_delivery(sig.id, "webhook")
    assert d is not None and d.status == "sent"
    assert "webhook on" in svc.describe() and "sent 1" in svc.describe()
    assert svc.stats().destinations["webhook"].messages == 1


async def test_without_token_or_webhook_there_is_no_service_and_status_says_how_to_enable(store: SqliteStore) -> None:
    assert build_discord_service(Config(), store, None, None) is None
    assert discord_status_text(Config()) == DISABLED_TEXT and "DISCORD_TOKEN" in DISABLED_TEXT
    svc = build_discord_service(Config(discord_token="x" * 70, discord_signals_channel_id=42), store, None, None)
    assert svc is not None and [s.destination for s in svc.senders] == ["discord:42"]
    assert svc.describe().startswith("bot connecting")
    await svc.stop()  # stopping a service that never started is fine


async def test_preview_sink_writes_payload_json_and_chart_png(tmp_path: Path) -> None:
    out = tmp_path / "preview"
    sink = DiscordPreviewSink(out, renderer=ChartRenderer(use_processes=False))
    sigs = (make_signal(candle_time_ms=T0 + 59 * HOUR), make_signal(candle_time_ms=T0 + 59 * HOUR, pattern="sos"))
    try:
        await sink.publish(SignalBatch(sigs, (view_for(sigs[0].candle_time_ms),), historical=True))
    finally:
        await sink.close()
        sink.renderer.close()
    for s in sigs:
        payload = json.loads((out / f"{s.id}.json").read_text())
        assert set(payload) == {"content", "embeds"} and "BTCUSDT 1h" in payload["content"]
        assert payload["embeds"][0]["footer"]["text"].startswith(f"id {s.id}")
        assert payload["embeds"][0]["image"]["url"] == f"attachment://{s.id}.png"
        assert (out / f"{s.id}.png").read_bytes().startswith(b"\x89PNG")
    assert sink.written == 2 and sink.failed == 0


class FakeClient:
    """Stands for a WyEliBot in the start-up supervisor: ``start`` raises what the script says."""

    def __init__(self, message_content: bool, script: list[BaseException | None]) -> None:
        self.message_content = message_content
        self.script = script
        self.closed = False

    async def start(self, token: str, *, reconnect: bool) -> None:
        outcome = self.script.pop(0)
        if outcome is not None:
            raise outcome

    async def close(self) -> None:
        self.closed = True

    def is_closed(self) -> bool:
        return self.closed


async def test_refused_message_content_intent_restarts_without_it() -> None:
    script: list[BaseException | None] = [discord.PrivilegedIntentsRequired(None), None]
    built: list[FakeClient] = []
    await run_bot("token", lambda mc: FakeClient(mc, script), built.append)  # type: ignore[arg-type, return-value]
    assert [b.message_content for b in built] == [True, False]
    assert all(b.closed for b in built)


async def test_rejected_token_stops_the_bot_without_retrying() -> None:
    script: list[BaseException | None] = [discord.LoginFailure("bad")]
    built: list[FakeClient] = []
    await run_bot("token", lambda mc: FakeClient(mc, script), built.append)  # type: ignore[arg-type, return-value]
    assert len(built) == 1


@pytest.fixture
async def dp_bot(store: SqliteStore) -> AsyncIterator[WyEliBot]:
    b = WyEliBot(make_deps(store), intents=discord.Intents.all())
    await b._async_setup_hook()
    dpytest.configure(b)
    b._ready.set()  # dpytest never runs the gateway handshake
    yield b
    await dpytest.empty_queue()


async def test_channel_poster_posts_and_finds_its_own_earlier_post_by_footer_id(dp_bot: WyEliBot) -> None:
    channel = dpytest.get_config().channels[0]
    poster = ChannelPoster(lambda: dp_bot, channel.id)
    assert await poster.ready()
    sig, other = make_signal(), make_signal(pattern="utad")
    mid = await poster.post(OutgoingMessage((sig.id,), "new signal", (signal_embed(sig),)))
    found = await poster.find_posted([sig.id, other.id], since_ms=0)
    assert found == {sig.id: mid}


async def test_channel_poster_is_not_ready_for_an_unknown_channel(dp_bot: WyEliBot) -> None:
    assert not await ChannelPoster(lambda: dp_bot, 4242).ready()
    assert not await ChannelPoster(lambda: None, 1).ready()


async def test_preview_chart_comes_from_the_store_when_the_batch_view_moved_past_the_signal(
        tmp_path: Path, store: SqliteStore) -> None:
    candles = random_walk(300, timeframe="1h", start_ms=T0)
    await store.upsert_candles(candles)
    sig = make_signal(candle_time_ms=candles[100].open_time_ms)
    later_view = MarketView("BTCUSDT", "1h", tuple(candles[-150:]), view_for(candles[-1].open_time_ms).states, None)
    with_store = DiscordPreviewSink(tmp_path / "a", renderer=ChartRenderer(use_processes=False), candles=store)
    without = DiscordPreviewSink(tmp_path / "b", renderer=ChartRenderer(use_processes=False))
    try:
        await with_store.publish(SignalBatch((sig,), (later_view,), historical=True))
        await without.publish(SignalBatch((sig,), (later_view,), historical=True))
    finally:
        for sink in (with_store, without):
            sink.renderer.close()
    assert (tmp_path / "a" / f"{sig.id}.png").is_file()
    # no store and a view that no longer shows the signal candle: the message goes without a chart
    assert not (tmp_path / "b" / f"{sig.id}.png").exists()
    assert "image" not in json.loads((tmp_path / "b" / f"{sig.id}.json").read_text())["embeds"][0]


async def test_a_malformed_webhook_url_disables_only_the_webhook(store: SqliteStore) -> None:
    config = Config(discord_token="x" * 70, discord_signals_channel_id=42,
                    discord_webhook_url="https://discord.com/api/webhooks/1/secret-token-value")
    svc = DiscordService(config, store, None, None)
    assert [s.destination for s in svc.senders] == ["discord:42"]
    await svc.stop()


@pytest.mark.parametrize("watch_notes, expected", [
    ("signals", [("discord:42", ("trade", "watch")), ("webhook", ("trade", "watch"))]),
    ("console", [("discord:42", ("trade",)), ("webhook", ("trade",))]),
    ("off", [("discord:42", ("trade",)), ("webhook", ("trade",))]),
    ("channel", [("discord:42", ("trade",)), ("discord:77", ("watch",)), ("webhook", ("trade",))]),
])
async def test_each_destination_posts_the_kinds_watch_notes_routes_to_it(store: SqliteStore, watch_notes: str,
                                                                        expected: list[tuple[str, tuple[str, ...]]]) -> None:
    config = Config(discord_token="x" * 70, discord_signals_channel_id=42, discord_watch_channel_id=77,
                    watch_notes=watch_notes,  # type: ignore[arg-type]
                    discord_webhook_url="https://discord.com/api/webhooks/123456789012345678/" + "t" * 68)
    svc = DiscordService(config, store, None, None)
    assert [(s.destination, s.kinds) for s in svc.senders] == expected
    await svc.stop()


async def test_build_discord_sinks_follows_the_configuration(tmp_path: Path, store: SqliteStore) -> None:
    from src.bot.discord.service import build_discord_sinks

    sinks, service = build_discord_sinks(Config(), store, None, None)
    assert sinks == [] and service is None
    sinks, service = build_discord_sinks(Config(discord_token="x" * 70, discord_signals_channel_id=42), store, None, None,
                                         preview_dir=tmp_path / "p")
    assert [s.name for s in sinks] == ["discord-preview", "discord"] and service is sinks[1]
    sinks2, service2 = build_discord_sinks(Config(discord_token="x" * 70, discord_signals_channel_id=42), store, None,
                                           None, live=False)
    assert sinks2 == [] and service2 is None
    for s in sinks:
        await s.close()


async def test_bot_channel_outbox_recovers_a_crashed_post_and_posts_the_next_signal(dp_bot: WyEliBot,
                                                                                    store: SqliteStore) -> None:
    channel = dpytest.get_config().channels[0]
    poster = ChannelPoster(lambda: dp_bot, channel.id)
    builder = MessageBuilder(None, candles=store)
    now_ms = int(time.time() * 1000)
    crashed, nxt = make_signal(candle_time_ms=now_ms - 2 * HOUR), make_signal(candle_time_ms=now_ms - HOUR)
    await store.save_signal(crashed)
    await store.save_signal(nxt)
    # the previous process recorded its attempt, posted, and died before recording the message id
    await store.record_delivery(Delivery(crashed.id, poster.destination, "pending", None, 1, IN_FLIGHT, now_ms))
    crashed_mid = await poster.post(await builder.build([crashed]))

    sender = OutboxSender(store, poster, builder, max_age_s=6 * 3600)
    await sender.drain_once()
    assert isinstance(channel, discord.TextChannel)
    history = [m async for m in channel.history(limit=10)]
    assert len(history) == 2  # the crashed post and the next signal; nothing twice
    d1 = await store.get_delivery(crashed.id, poster.destination)
    d2 = await store.get_delivery(nxt.id, poster.destination)
    assert d1 is not None and d1.status == "sent" and d1.message_id == crashed_mid
    assert d2 is not None and d2.status == "sent"
    assert {d1.message_id, d2.message_id} == {str(m.id) for m in history}
    assert sender.stats.recovered == 1 and sender.stats.sent == 1


async def test_service_stop_does_not_swallow_the_cancellation_of_a_shutdown_deadline(store: SqliteStore) -> None:
    renderer = ChartRenderer(use_processes=False)
    svc = DiscordService(Config(discord_token="x" * 70), store, None, None, renderer=renderer)
    async def bot_that_does_not_stop_in_time() -> None:
        await asyncio.Event().wait()

    svc._bot_task = asyncio.create_task(bot_that_does_not_stop_in_time())
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(svc.stop(), timeout=0.05)
    finally:
        renderer.close()
