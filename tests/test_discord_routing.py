"""Routes, subscriptions, mutes, notification modes and follow-ups through the real outbox and the real SQLite store:
a fake channel that keeps every message, and dpytest's fake Discord for the bot channel (replies, edits, restarts)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.types import Signal
from src.bot.discord.bot import WyEliBot
from src.bot.discord.destinations import Destination, configured_destinations, route_matches, signal_verdict
from src.bot.discord.embeds import FOLLOW_UP_RE, FOOTER_ID_RE, STATUS_FIELD
from src.bot.discord.messages import MessageBuilder, OutgoingMessage
from src.bot.discord.outbox import IN_FLIGHT, OutboxSender
from src.bot.discord.posters import ChannelPoster
from src.bot.discord.service import DiscordService
from src.bot.discord.subscriptions import SubscriptionBook
from src.config import Config
from src.config.discord_routes import ROUTE_KINDS, FollowUpMode, RouteSpec
from src.storage.base import Delivery, FollowUpDelivery, Mute, Subscription
from src.storage.sqlite_store import SqliteStore
from tests.storage_contract import T0, make_evidence, make_follow_up, make_signal
from tests.test_discord_commands import make_deps

HOUR = 3_600_000
NOW_S = (T0 + 10 * HOUR) / 1000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "routing.db")
    await s.open()
    yield s
    await s.close()


class Channel:
    """A channel: every message with its embeds (by id), replies, edits."""

    def __init__(self) -> None:
        self.messages: dict[str, OutgoingMessage] = {}
        self.replies: dict[str, tuple[str, str]] = {}  # reply id -> (original id, mode)
        self.edits: list[tuple[str, str, str]] = []
        self.next_id = 5000

    def add(self, message: OutgoingMessage) -> str:
        self.next_id += 1
        self.messages[str(self.next_id)] = message
        return str(self.next_id)

    def follow_up_keys(self) -> list[tuple[str, str]]:
        return [(sid, event) for m in self.messages.values() for e in m.embeds
                for event, sid in FOLLOW_UP_RE.findall(e.footer.text or "")]

    def signal_ids(self) -> list[str]:
        return [sid for m in self.messages.values() for e in m.embeds if not FOLLOW_UP_RE.search(e.footer.text or "")
                for sid in FOOTER_ID_RE.findall(e.footer.text or "")]


class Poster:
    def __init__(self, channel: Channel, destination: str = "discord:42", *, crash_after_follow_up: bool = False) -> None:
        self.channel = channel
        self.destination = destination
        self.crash_after_follow_up = crash_after_follow_up

    async def ready(self) -> bool:
        return True

    async def post(self, message: OutgoingMessage) -> str:
        return self.channel.add(message)

    async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
        return {sid: mid for mid, m in self.channel.messages.items() for e in m.embeds
                for sid in FOOTER_ID_RE.findall(e.footer.text or "") if sid in signal_ids}

    async def post_follow_up(self, message: OutgoingMessage, original_message_id: str, mode: FollowUpMode) -> str:
        mid = self.channel.add(message)
        self.channel.replies[mid] = (original_message_id, mode)
        if self.crash_after_follow_up:
            self.crash_after_follow_up = False
            raise Crash()
        return mid

    async def find_posted_follow_ups(self, keys: Sequence[tuple[str, str]], originals: Mapping[str, str],
                                     since_ms: int) -> dict[tuple[str, str], str]:
        return {(sid, event): mid for mid, m in self.channel.messages.items() for e in m.embeds
                for event, sid in FOLLOW_UP_RE.findall(e.footer.text or "") if (sid, event) in keys}

    async def edit_status(self, original_message_id: str, signal_id: str, status: str) -> bool:
        self.channel.edits.append((original_message_id, signal_id, status))
        return original_message_id in self.channel.messages


class Crash(BaseException):
    """The process dies (not an Exception: nothing in the outbox catches it)."""


def dest(route: RouteSpec | None = None, **kw: Any) -> Destination:
    base: dict[str, Any] = {"key": "discord:42", "name": "test", "kinds": frozenset(ROUTE_KINDS),
                            "route": route if route is not None else RouteSpec("test")}
    base.update(kw)
    return Destination(**base)


def sender(store: SqliteStore, poster: Poster, target: Destination, *, book: SubscriptionBook | None = None,
           now_s: float = NOW_S) -> OutboxSender:
    return OutboxSender(store, poster, MessageBuilder(None, candles=store), max_age_s=0, clock=lambda: now_s,
                        target=target, book=book, backoff_base_s=0.001, backoff_cap_s=0.01)


async def settle(s: OutboxSender) -> None:
    while await s.drain_once():
        pass


# ---------------------------------------------------------------------------- filters (pure)
def test_route_filters_each_say_why_a_signal_does_not_pass() -> None:
    sig = make_signal("ETHUSDT", "4h", pattern="wyckoff_spring", evidence=make_evidence(expected_r=0.02))
    assert route_matches(RouteSpec("r"), sig) == ""
    assert "symbol ETHUSDT" in route_matches(RouteSpec("r", symbols=("BTCUSDT",)), sig)
    assert "timeframe 4h" in route_matches(RouteSpec("r", timeframes=("1h",)), sig)
    assert route_matches(RouteSpec("r", patterns=("spring",)), sig) == ""
    assert "pattern" in route_matches(RouteSpec("r", patterns=("sos", "lps")), sig)
    assert "direction LONG" in route_matches(RouteSpec("r", directions=("SHORT",)), sig)
    assert route_matches(RouteSpec("r", min_expected_r=0.02), sig) == ""
    assert "E[R] +0.020 below min_expected_r 0.05" in route_matches(RouteSpec("r", min_expected_r=0.05), sig)
    assert "no evidence" in route_matches(RouteSpec("r", min_expected_r=-1.0), make_signal())


def test_verdict_applies_kinds_notifications_subscriptions_and_mutes() -> None:
    trade, watch = make_signal(), make_signal(kind="watch", gate_reason="no_edge")
    only_btc = dest(RouteSpec("r", symbols=("ETHUSDT",)))
    assert not signal_verdict(only_btc, trade, [], [], T0).post
    subs = [Subscription("discord:42", "BTCUSDT", "", "1", T0)]
    assert signal_verdict(only_btc, trade, subs, [], T0).post  # the union of route and subscriptions
    assert not signal_verdict(dest(kinds=frozenset({"trade"})), watch, [], [], T0).post
    silent = dest(notifications={**dict.fromkeys(ROUTE_KINDS, "on"), "watch": "silent"})
    assert signal_verdict(silent, watch, [], [], T0) == signal_verdict(silent, watch, [], [], T0)
    assert signal_verdict(silent, watch, [], [], T0).silent and not signal_verdict(silent, trade, [], [], T0).silent
    off = dest(notifications={**dict.fromkeys(ROUTE_KINDS, "on"), "trade": "off"})
    assert "turns trade off" in signal_verdict(off, trade, [], [], T0).reason
    mute = [Mute("discord:42", "BTCUSDT", "1h", T0 + HOUR, "1", T0)]
    assert "muted until" in signal_verdict(dest(), trade, [], mute, T0).reason
    assert signal_verdict(dest(), trade, [], mute, T0 + HOUR).post  # expired
    assert signal_verdict(dest(), make_signal(timeframe="4h"), [], mute, T0).post  # another timeframe
    assert not signal_verdict(dest(), replace(trade, kind="gated"), [], [], T0).post


def test_the_legacy_variables_keep_their_destinations_and_routes_follow() -> None:
    hook = "https://discord.com/api/webhooks/123456789012345678/" + "t" * 68
    config = Config.from_env({"DISCORD_TOKEN": "x" * 40, "DISCORD_SIGNALS_CHANNEL_ID": "42", "DISCORD_WEBHOOK_URL": hook,
                              "WATCH_NOTES": "channel", "DISCORD_WATCH_CHANNEL_ID": "77",
                              "DISCORD_ROUTES": "btc: channel=99; symbols=BTC; kinds=trade | hook2: webhook="
                                                + hook.replace("123456789012345678", "223456789012345678")}).validate()
    got = [(d.key, d.name, d.signal_kinds, d.posts_follow_ups) for d in configured_destinations(config)]
    assert got == [("discord:42", "signals", ("trade",), True), ("discord:77", "watch", ("watch",), True),
                   ("webhook", "webhook", ("trade",), True), ("discord:99", "btc", ("trade",), False),
                   ("webhook:223456789012345678", "hook2", ("trade",), True)]


# ---------------------------------------------------------------------------- routing through the outbox
async def test_a_route_posts_what_its_filters_pass_and_records_the_rest_as_skipped_with_the_reason(
        store: SqliteStore) -> None:
    btc = make_signal("BTCUSDT", candle_time_ms=T0)
    eth = make_signal("ETHUSDT", candle_time_ms=T0 + HOUR)
    for s in (btc, eth):
        await store.save_signal(s)
    channel = Channel()
    out = sender(store, Poster(channel), dest(RouteSpec("btc", symbols=("BTCUSDT",))))
    await settle(out)
    assert channel.signal_ids() == [btc.id]
    d = await store.get_delivery(eth.id, "discord:42")
    assert d is not None and d.status == "skipped" and "route btc: symbol ETHUSDT" in (d.last_error or "")
    assert out.stats.not_routed == 1 and await store.pending_deliveries("discord:42") == []


async def test_a_mention_route_pings_its_roles_only_and_silent_kinds_carry_the_flag(store: SqliteStore) -> None:
    trade = make_signal(candle_time_ms=T0)
    watch = make_signal(candle_time_ms=T0 + HOUR, kind="watch", gate_reason="no_edge")
    for s in (trade, watch):
        await store.save_signal(s)
    channel = Channel()
    target = dest(mention_roles=(333,), notifications={**dict.fromkeys(ROUTE_KINDS, "on"), "watch": "silent"})
    await settle(sender(store, Poster(channel), target))
    first, second = list(channel.messages.values())
    assert first.content is not None and first.content.startswith("<@&333> ") and not first.silent
    allowed = first.allowed_mentions().to_dict()
    assert allowed["parse"] == [] and allowed["roles"] == [333] and not allowed.get("replied_user")
    assert second.silent and second.payload()["flags"] == 4096


async def test_subscriptions_and_mutes_come_from_the_store_and_survive_a_restart(store: SqliteStore) -> None:
    book = SubscriptionBook(store, clock=lambda: NOW_S)
    await book.watch("discord:42", "BTCUSDT", "", user_id=7)
    await book.mute("discord:42", "BTCUSDT", "4h", 12 * HOUR, user_id=7)
    restarted = SubscriptionBook(store, clock=lambda: NOW_S)  # a new process reads them back
    await restarted.refresh()
    assert restarted.destinations() == {"discord:42"}
    sigs = [make_signal("BTCUSDT", "1h", T0), make_signal("BTCUSDT", "4h", T0), make_signal("ETHUSDT", "1h", T0)]
    for s in sigs:
        await store.save_signal(s)
    channel = Channel()
    subscribed_only = Destination("discord:42", "subscriptions", frozenset(ROUTE_KINDS))  # no route of its own
    await settle(sender(store, Poster(channel), subscribed_only, book=restarted))
    assert channel.signal_ids() == [sigs[0].id]  # ETH is not watched; BTC 4h is muted
    muted = await store.get_delivery(sigs[1].id, "discord:42")
    assert muted is not None and "muted until" in (muted.last_error or "")


# ---------------------------------------------------------------------------- follow-ups through the outbox
async def posted_signal(store: SqliteStore, channel: Channel, target: Destination) -> tuple[Signal, OutboxSender]:
    sig = make_signal(candle_time_ms=T0)
    await store.save_signal(sig)
    out = sender(store, Poster(channel), target)
    await settle(out)
    return sig, out


async def test_a_follow_up_replies_to_the_original_once_and_edits_its_status_line(store: SqliteStore) -> None:
    channel = Channel()
    sig, out = await posted_signal(store, channel, dest())
    original = next(iter(channel.messages))
    status = [f for f in channel.messages[original].embeds[0].fields if f.name == STATUS_FIELD]
    assert status and "open" in str(status[0].value)
    tp1 = make_follow_up(sig, "tp1", bars=3, r=1.46)
    await store.save_follow_up(tp1)
    await settle(out)
    await settle(out)
    replies = [(mid, ref) for mid, ref in channel.replies.items()]
    assert len(replies) == 1 and replies[0][1] == (original, "reply")
    reply = channel.messages[replies[0][0]]
    assert reply.embeds[0].title is not None and reply.embeds[0].title.startswith("🎯 TP1 hit · BTCUSDT 1h")
    assert "+1.46 R" in str(reply.embeds[0].description) and "103.00" in str(reply.embeds[0].description)
    # the candle of the event opened 3 h after the signal's (22:00): it closed at 02:00
    assert channel.edits == [(original, sig.id, "🎯 TP1 hit +1.46 R at 103.000, 11-15 02:00 UTC")]
    d = await store.get_follow_up_delivery(sig.id, "tp1", "discord:42")
    assert d is not None and d.status == "sent" and d.message_id == replies[0][0]


async def test_follow_ups_go_only_where_the_signal_was_posted_and_tp2_missed_is_never_posted(store: SqliteStore) -> None:
    channel = Channel()
    sig, out = await posted_signal(store, channel, dest())
    other = make_signal(candle_time_ms=T0 + HOUR, pattern="never_posted")
    await store.save_signal(other)
    await store.record_delivery(Delivery(other.id, "discord:42", "skipped", None, 0, "not routed here", T0))
    await store.save_follow_up(make_follow_up(other, "stopped", r=-1.0))
    await store.save_follow_up(make_follow_up(sig, "tp1", bars=2))
    await store.save_follow_up(make_follow_up(sig, "tp2_missed", bars=6, r=0.0))
    await settle(out)
    assert channel.follow_up_keys() == [(sig.id, "tp1")]


async def test_follow_ups_off_or_muted_are_skipped_with_the_reason(store: SqliteStore) -> None:
    channel = Channel()
    sig, _ = await posted_signal(store, channel, dest())
    await store.save_follow_up(make_follow_up(sig, "stopped", r=-1.0))
    off = dest(notifications={**dict.fromkeys(ROUTE_KINDS, "on"), "follow_up": "off"})
    out = sender(store, Poster(channel), off)
    assert out.follow_ups is None  # this destination posts no follow-ups at all
    book = SubscriptionBook(store, clock=lambda: NOW_S)
    await book.mute("discord:42", "BTCUSDT", "", 24 * HOUR, user_id=1)
    muted = sender(store, Poster(channel), dest(), book=book)
    await settle(muted)
    d = await store.get_follow_up_delivery(sig.id, "stopped", "discord:42")
    assert d is not None and d.status == "skipped" and "muted" in (d.last_error or "") and not channel.follow_up_keys()


async def test_a_crash_after_the_reply_is_recovered_from_history_and_never_posted_twice(store: SqliteStore) -> None:
    channel = Channel()
    sig, _ = await posted_signal(store, channel, dest())
    await store.save_follow_up(make_follow_up(sig, "tp1"))
    crashing = sender(store, Poster(channel, crash_after_follow_up=True), dest())
    with pytest.raises(Crash):
        await settle(crashing)
    d = await store.get_follow_up_delivery(sig.id, "tp1", "discord:42")
    assert d is not None and d.status == "pending" and d.last_error == IN_FLIGHT
    restarted = sender(store, Poster(channel), dest())  # a new process
    await settle(restarted)
    assert channel.follow_up_keys() == [(sig.id, "tp1")] and restarted.stats.recovered == 1
    d = await store.get_follow_up_delivery(sig.id, "tp1", "discord:42")
    assert d is not None and d.status == "sent"
    assert channel.edits  # the status line was still set after the recovery


async def test_signals_and_follow_ups_go_out_in_candle_order(store: SqliteStore) -> None:
    channel = Channel()
    first, out = await posted_signal(store, channel, dest())
    await store.save_follow_up(make_follow_up(first, "tp1", bars=2))  # closes at T0 + 3h
    later = make_signal(candle_time_ms=T0 + 5 * HOUR, pattern="later")
    earlier = make_signal(candle_time_ms=T0 + HOUR, pattern="earlier")
    for s in (later, earlier):
        await store.save_signal(s)
    await settle(out)
    order = []
    for m in channel.messages.values():
        text = m.embeds[0].footer.text or ""
        order.append("fu" if FOLLOW_UP_RE.search(text) else FOOTER_ID_RE.findall(text)[0])
    assert order == [first.id, earlier.id, "fu", later.id]


# ---------------------------------------------------------------------------- the bot channel (dpytest)
@pytest.fixture
async def dp_bot(store: SqliteStore) -> AsyncIterator[WyEliBot]:
    b = WyEliBot(make_deps(store), intents=discord.Intents.all())
    await b._async_setup_hook()
    dpytest.configure(b)
    b._ready.set()  # dpytest never runs the gateway handshake
    yield b
    await dpytest.empty_queue()


async def test_bot_channel_follow_ups_reply_edit_and_survive_a_restart_none_lost_none_twice(
        dp_bot: WyEliBot, store: SqliteStore) -> None:
    channel = dpytest.get_config().channels[0]
    assert isinstance(channel, discord.TextChannel)
    now_s = time.time()
    sig = make_signal(candle_time_ms=int(now_s * 1000) - 3 * HOUR)
    await store.save_signal(sig)
    target = dest(key=f"discord:{channel.id}")

    def run() -> OutboxSender:
        return OutboxSender(store, ChannelPoster(lambda: dp_bot, channel.id), MessageBuilder(None, candles=store),
                            max_age_s=6 * 3600, target=target)

    await settle(run())
    tp1 = make_follow_up(sig, "tp1", bars=1, at=sig.candle_time_ms + HOUR)
    await store.save_follow_up(tp1)
    first = run()
    await settle(first)
    # a restart: the follow-up is in the store and in the channel; nothing is posted again
    await settle(run())
    tp2 = make_follow_up(sig, "tp2", bars=2, r=2.9, at=sig.candle_time_ms + 2 * HOUR)
    await store.save_follow_up(tp2)
    # the next process posted tp2 and died before recording it
    crashed = await store.get_follow_up_delivery(sig.id, "tp1", target.key)
    assert crashed is not None and crashed.status == "sent"
    pending = (await store.pending_follow_ups(target.key))[0]
    await store.record_follow_up_delivery(FollowUpDelivery(sig.id, "tp2", target.key, "pending", None, 1, IN_FLIGHT,
                                                           int(time.time() * 1000)))
    await ChannelPoster(lambda: dp_bot, channel.id).post_follow_up(
        MessageBuilder(None).follow_up(pending), pending.original_message_id, "reply")
    survivor = run()
    await settle(survivor)
    history = sorted([m async for m in channel.history(limit=20)], key=lambda m: m.id)
    markers = [FOLLOW_UP_RE.findall(m.embeds[0].footer.text or "") for m in history]
    assert markers == [[], [("tp1", sig.id)], [("tp2", sig.id)]]  # the signal, then each follow-up exactly once
    assert survivor.stats.recovered == 1
    original = await channel.fetch_message(history[0].id)
    status = next(f.value for f in original.embeds[0].fields if f.name == STATUS_FIELD)
    assert "TP1 hit" in str(status) and "TP2 reached" in str(status)


# ---------------------------------------------------------------------------- the service
async def test_the_service_adds_a_sender_for_a_newly_subscribed_channel(store: SqliteStore) -> None:
    svc = DiscordService(Config(discord_token="x" * 70, discord_signals_channel_id=42), store, None, None)
    svc._started = True  # no bot connection in this test: only the destinations are looked at
    try:
        assert [s.destination for s in svc.senders] == ["discord:42"]
        await svc.book.watch("discord:77", "BTCUSDT", "", user_id=1)
        await svc.book.watch("dm:5", "ETHUSDT", "4h", user_id=5)
        await svc.book.watch("discord:42", "SOLUSDT", "", user_id=1)  # a configured channel takes its own
        assert [s.destination for s in svc.senders] == ["discord:42", "discord:77", "dm:5"]
        assert "2 subscribed channel(s)/DM(s)" in svc.describe()
    finally:
        await svc.stop()


@settings(max_examples=60, deadline=None)
@given(symbol=st.sampled_from(("BTCUSDT", "ETHUSDT")), timeframe=st.sampled_from(("1h", "4h")),
       pattern=st.sampled_from(("wyckoff_spring", "elliott_wave3")), direction=st.sampled_from(("LONG", "SHORT")),
       er=st.floats(min_value=-0.5, max_value=0.5), min_r=st.none() | st.floats(min_value=-0.5, max_value=0.5),
       syms=st.sets(st.sampled_from(("BTCUSDT", "ETHUSDT")), max_size=2),
       tfs=st.sets(st.sampled_from(("1h", "4h")), max_size=2))
def test_property_a_route_passes_a_signal_exactly_when_every_filter_does(
        symbol: str, timeframe: str, pattern: str, direction: str, er: float, min_r: float | None,
        syms: set[str], tfs: set[str]) -> None:
    sig = make_signal(symbol, timeframe, pattern=pattern, direction=direction, evidence=make_evidence(expected_r=er))
    route = RouteSpec("r", symbols=tuple(sorted(syms)), timeframes=tuple(sorted(tfs)), min_expected_r=min_r)
    want = ((not syms or symbol in syms) and (not tfs or timeframe in tfs) and (min_r is None or er >= min_r))
    assert (route_matches(route, sig) == "") == want



# ---------------------------------------------------------------------------- notices: alarms and trading
def snapshot(*, store_ok: bool = True, stale: tuple[str, ...] = (), spool: int = 0) -> Any:
    from src.bot.status import StatusSnapshot, StreamStatus

    streams = tuple(StreamStatus(s, "1h", T0, T0, s not in stale) for s in ("BTCUSDT", "ETHUSDT"))
    return StatusSnapshot(started_at_ms=T0, now_ms=T0, mode="live", warmed_up=True, streams=streams, connections=(),
                          signals_total=0, signals_by_symbol=(), last_signal_at=None, store_backend="postgres:db",
                          store_healthy=store_ok, spool_depth=spool, cache="off", trading="off", discord="on")


def test_the_alarm_watcher_reports_changes_only() -> None:
    from src.bot.discord.notices import AlarmWatcher

    async def status() -> Any:
        return snapshot()

    w = AlarmWatcher(status, lambda n: None, clock=lambda: NOW_S)
    assert w.check(snapshot()) == []  # healthy at start: nothing to say
    down = w.check(snapshot(store_ok=False, stale=("ETHUSDT",), spool=3))
    assert [n.title for n in down] == ["Database unreachable", "1 stream(s) without new candles"]
    assert "ETHUSDT 1h" in down[1].text
    assert w.check(snapshot(store_ok=False, stale=("ETHUSDT",), spool=3)) == []  # no change, no alarm
    assert [n.title for n in w.check(snapshot(store_ok=False, stale=("ETHUSDT",), spool=9))] == [
        "Writes are piling up in the spool"]
    back = w.check(snapshot())
    assert [(n.title, n.ok) for n in back] == [("Database reachable again", True), ("Every stream is fresh again", True)]


async def test_notices_go_to_the_destinations_that_take_their_kind_with_their_mode(store: SqliteStore) -> None:
    from src.bot.discord.notices import QUEUE_LIMIT, Notice

    channel = Channel()
    alarms = sender(store, Poster(channel), dest(mention_roles=(9,)))
    quiet = sender(store, Poster(Channel(), "discord:43"), dest(key="discord:43", kinds=frozenset({"trade"})))
    silent = sender(store, Poster(channel, "discord:44"), dest(
        key="discord:44", notifications={**dict.fromkeys(ROUTE_KINDS, "on"), "trading": "silent"}))
    alarm = Notice("alarm", "Database unreachable", "postgres does not answer", T0)
    fill = Notice("trading", "Filled: BTCUSDT LONG", "entry 100 x 1", T0)
    assert alarms.notify(alarm) and not quiet.notify(alarm)
    assert silent.notify(fill)
    await settle(alarms)
    await settle(silent)
    posted = list(channel.messages.values())
    assert [str(m.embeds[0].title) for m in posted] == ["Database unreachable", "Filled: BTCUSDT LONG"]
    assert posted[0].mention_roles == (9,) and not posted[0].silent and posted[1].silent
    assert alarms.stats.notices == 1
    for i in range(QUEUE_LIMIT + 5):
        alarms.notify(Notice("alarm", f"a{i}", "x", T0))
    assert len(alarms.notices) == QUEUE_LIMIT and alarms.notices.dropped == 5
