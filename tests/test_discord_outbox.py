"""Exactly-once delivery: the outbox against the real SqliteStore, a fake channel, and a local webhook server."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from unittest.mock import MagicMock

import discord
import pytest
from aiohttp import web

from src.analysis.types import Signal, SignalKind
from src.bot.discord.charts import ChartRenderer
from src.bot.discord.embeds import FOOTER_ID_RE
from src.bot.discord.messages import MessageBuilder, OutgoingMessage
from src.bot.discord.outbox import IN_FLIGHT, DeliveryFailed, OutboxSender
from src.bot.discord.posters import WebhookPoster, mask_webhook_url
from src.storage.sqlite_store import SqliteStore
from tests.candlegen import random_walk
from tests.storage_contract import T0, make_signal
from tests.test_storage_postgres import pg_schema  # noqa: F401  (fixture: a throw-away schema)

HOUR = 3_600_000
NOW_S = (T0 + 3 * HOUR) / 1000  # three hours after the first test candle opened


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the outbox catches it."""


class FakeChannel:
    """A Discord channel: keeps every posted message (id, embeds' footers, file names)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, OutgoingMessage]] = []
        self.next_id = 1000

    def signal_ids(self) -> list[str]:
        return [sid for _, m in self.messages for e in m.embeds for sid in FOOTER_ID_RE.findall(e.footer.text or "")]


class FakePoster:
    destination = "discord:42"

    def __init__(self, channel: FakeChannel, *, fail: int = 0, crash_after_post: bool = False,
                 reject_with_files: bool = False) -> None:
        self.channel = channel
        self.fail = fail
        self.crash_after_post = crash_after_post
        self.reject_with_files = reject_with_files
        self.attempts = 0
        self.is_ready = True

    async def ready(self) -> bool:
        return self.is_ready

    async def post(self, message: OutgoingMessage) -> str:
        self.attempts += 1
        if self.fail:
            self.fail -= 1
            raise ConnectionError("discord unreachable")
        if self.reject_with_files and message.files:
            body = {"code": 50035, "message": "Invalid Form Body"}
            raise discord.HTTPException(MagicMock(status=400, reason="Bad Request"), body)
        self.channel.next_id += 1
        mid = str(self.channel.next_id)
        self.channel.messages.append((mid, message))
        if self.crash_after_post:
            self.crash_after_post = False
            raise Crash()
        return mid

    async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
        found = {}
        for mid, m in self.channel.messages:
            for e in m.embeds:
                for sid in FOOTER_ID_RE.findall(e.footer.text or ""):
                    if sid in signal_ids:
                        found[sid] = mid
        return found


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "outbox.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def renderer() -> Iterator[ChartRenderer]:
    r = ChartRenderer(use_processes=False)
    yield r
    r.close()


def sender_for(store: SqliteStore, poster: FakePoster | WebhookPoster, *, renderer: ChartRenderer | None = None,
               max_age_s: int = 6 * 3600, now_s: float = NOW_S, **kw: object) -> OutboxSender:
    return OutboxSender(store, poster, MessageBuilder(renderer, candles=store), max_age_s=max_age_s, clock=lambda: now_s,
                        backoff_base_s=0.001, backoff_cap_s=0.01, **kw)  # type: ignore[arg-type]


async def save(store: SqliteStore, *signals: Signal) -> None:
    for s in signals:
        assert await store.save_signal(s)


async def test_sender_that_fails_three_times_then_succeeds_posts_exactly_once(store: SqliteStore) -> None:
    sig = make_signal()
    await save(store, sig)
    channel = FakeChannel()
    poster = FakePoster(channel, fail=3)
    sender = sender_for(store, poster)
    for _ in range(3):
        with pytest.raises(DeliveryFailed):
            await sender.drain_once()
        d = await store.get_delivery(sig.id, poster.destination)
        assert d is not None and d.status == "failed" and "unreachable" in (d.last_error or "")
    assert await sender.drain_once() == 1
    assert channel.signal_ids() == [sig.id]
    d = await store.get_delivery(sig.id, poster.destination)
    assert d is not None and d.status == "sent" and d.message_id == channel.messages[0][0] and d.attempts == 4
    assert sender.stats.failed == 3 and sender.stats.sent == 1
    assert await sender.drain_once() == 0 and len(channel.messages) == 1


async def test_run_loop_retries_with_backoff_and_stops_cleanly(store: SqliteStore) -> None:
    sig = make_signal()
    await save(store, sig)
    channel = FakeChannel()
    sender = sender_for(store, FakePoster(channel, fail=5), poll_interval_s=3600)
    task = asyncio.create_task(sender.run())
    for _ in range(2000):
        if channel.messages:
            break
        await asyncio.sleep(0.005)
    await sender.stop(task, flush_timeout_s=5)
    assert task.done()
    assert channel.signal_ids() == [sig.id] and sender.stats.failed == 5


async def test_publish_wake_triggers_delivery_without_waiting_for_the_poll(store: SqliteStore) -> None:
    channel = FakeChannel()
    sender = sender_for(store, FakePoster(channel), poll_interval_s=3600)
    task = asyncio.create_task(sender.run())
    await asyncio.sleep(0.05)  # the first (empty) pass is done; the sender now waits up to an hour
    sig = make_signal()
    await save(store, sig)
    sender.wake()
    for _ in range(2000):
        if channel.messages:
            break
        await asyncio.sleep(0.005)
    await sender.stop(task, flush_timeout_s=5)
    assert channel.signal_ids() == [sig.id]


async def test_restart_between_stored_and_sent_posts_the_pending_signal(tmp_path: Path) -> None:
    path = tmp_path / "restart.db"
    first = SqliteStore(path)
    await first.open()
    sig = make_signal()
    await save(first, sig)
    await first.close()  # the process stops before the outbox ran
    channel = FakeChannel()
    second = SqliteStore(path)
    await second.open()
    try:
        assert await sender_for(second, FakePoster(channel)).drain_once() == 1
        assert channel.signal_ids() == [sig.id]
    finally:
        await second.close()


async def test_restart_after_sent_never_posts_again(tmp_path: Path) -> None:
    path = tmp_path / "sent.db"
    channel = FakeChannel()
    sig = make_signal()
    for _ in range(3):  # three process lifetimes
        s = SqliteStore(path)
        await s.open()
        try:
            await s.save_signal(sig)  # the pipeline re-stores on warm-up: idempotent
            await sender_for(s, FakePoster(channel)).drain_once()
        finally:
            await s.close()
    assert channel.signal_ids() == [sig.id]


async def test_crash_between_post_and_recording_is_recovered_from_channel_history(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    channel = FakeChannel()
    sig, later = make_signal(), make_signal(candle_time_ms=T0 + HOUR)
    s = SqliteStore(path)
    await s.open()
    await save(s, sig, later)
    with pytest.raises(Crash):
        await sender_for(s, FakePoster(channel, crash_after_post=True)).drain_once()
    d = await s.get_delivery(sig.id, "discord:42")
    assert d is not None and d.status == "pending" and d.last_error == IN_FLIGHT and d.attempts == 1
    await s.close()

    s2 = SqliteStore(path)
    await s2.open()
    try:
        sender = sender_for(s2, FakePoster(channel))
        await sender.drain_once()
        assert channel.signal_ids() == [sig.id, later.id]  # the crashed one was not posted twice
        d = await s2.get_delivery(sig.id, "discord:42")
        assert d is not None and d.status == "sent" and d.message_id == channel.messages[0][0]
        assert sender.stats.recovered == 1 and sender.stats.sent == 1
    finally:
        await s2.close()


async def test_startup_skips_signals_older_than_max_age_instead_of_flooding(store: SqliteStore) -> None:
    old = make_signal(candle_time_ms=T0)
    fresh = make_signal(candle_time_ms=T0 + 2 * HOUR)
    await save(store, old, fresh)
    channel = FakeChannel()
    sender = sender_for(store, FakePoster(channel), max_age_s=3600)
    await sender.drain_once()
    assert channel.signal_ids() == [fresh.id]
    d = await store.get_delivery(old.id, "discord:42")
    assert d is not None and d.status == "skipped" and "SIGNAL_MAX_AGE_SECONDS" in (d.last_error or "")
    assert sender.stats.skipped == 1
    assert await store.pending_deliveries("discord:42") == []


async def test_signals_of_one_candle_close_share_a_message_and_order_is_kept(store: SqliteStore) -> None:
    burst = [make_signal(symbol=s, candle_time_ms=T0 + HOUR) for s in ("ETHUSDT", "BTCUSDT", "SOLUSDT")]
    first = make_signal(symbol="ADAUSDT", candle_time_ms=T0)
    await save(store, *burst, first)
    channel = FakeChannel()
    await sender_for(store, FakePoster(channel)).drain_once()
    assert len(channel.messages) == 2
    assert channel.signal_ids()[0] == first.id
    mid, msg = channel.messages[1]
    assert len(msg.embeds) == 3 and "3 trade calls" in (msg.content or "")
    for s in burst:
        d = await store.get_delivery(s.id, "discord:42")
        assert d is not None and d.message_id == mid


async def test_gated_candidates_are_never_delivered_and_watch_notes_only_where_routed(store: SqliteStore) -> None:
    trade = make_signal(candle_time_ms=T0, pattern="a")
    watch = make_signal(candle_time_ms=T0 + HOUR, pattern="b", kind="watch", gate_reason="no_edge")
    gated = [make_signal(candle_time_ms=T0 + HOUR, pattern=f"g{i}", kind="gated", gate_reason="cooldown") for i in range(3)]
    await save(store, trade, watch, *gated)
    trades_only, with_watch = FakeChannel(), FakeChannel()
    await sender_for(store, FakePoster(trades_only)).drain_once()
    assert trades_only.signal_ids() == [trade.id]
    poster = FakePoster(with_watch)
    poster.destination = "discord:43"
    await sender_for(store, poster, kinds=("trade", "watch", "gated")).drain_once()
    assert with_watch.signal_ids() == [trade.id, watch.id]
    for g in gated:
        assert await store.get_delivery(g.id, "discord:42") is None and await store.get_delivery(g.id, "discord:43") is None
    # the watch note is still pending for nobody but the destinations that take it
    assert await store.pending_deliveries("discord:42") == []


async def test_chart_is_rendered_from_stored_candles_and_attached(store: SqliteStore, renderer: ChartRenderer) -> None:
    candles = random_walk(150, timeframe="1h", start_ms=T0 - 140 * HOUR)
    await store.upsert_candles(candles)
    sig = make_signal(candle_time_ms=candles[140].open_time_ms)
    await save(store, sig)
    channel = FakeChannel()
    await sender_for(store, FakePoster(channel), renderer=renderer).drain_once()
    _, msg = channel.messages[0]
    assert [name for name, _ in msg.files] == [f"{sig.id}.png"]
    assert msg.files[0][1].startswith(b"\x89PNG")
    assert msg.embeds[0].image.url == f"attachment://{sig.id}.png"


async def test_rejected_upload_is_retried_without_charts(store: SqliteStore, renderer: ChartRenderer) -> None:
    await store.upsert_candles(random_walk(30, timeframe="1h", start_ms=T0 - 20 * HOUR))
    sig = make_signal()
    await save(store, sig)
    channel = FakeChannel()
    poster = FakePoster(channel, reject_with_files=True)
    assert await sender_for(store, poster, renderer=renderer).drain_once() == 1
    _, msg = channel.messages[0]
    assert msg.files == () and not msg.embeds[0].image.url
    assert poster.attempts == 2


async def test_not_ready_destination_posts_nothing_and_keeps_signals_pending(store: SqliteStore) -> None:
    await save(store, make_signal())
    poster = FakePoster(FakeChannel())
    poster.is_ready = False
    assert await sender_for(store, poster).drain_once() == 0
    assert len(await store.pending_deliveries("discord:42")) == 1


# ------------------------------------------------------------------------------------------- webhook, 429s
WEBHOOK_ID = "123456789012345678"
WEBHOOK_TOKEN = "T" * 68


def discord_json(data: dict[str, object], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly application/json (no charset), like Discord sends
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


class FakeDiscordWebhook:
    """A local server answering like Discord's execute-webhook endpoint; the first ``rate_limited`` POSTs
    get 429 with retry_after (and the Via header Discord's edge sends, which makes discord.py retry)."""

    def __init__(self, rate_limited: int) -> None:
        self.rate_limited = rate_limited
        self.requests = 0
        self.created: list[dict[str, object]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        assert request.match_info["token"] == WEBHOOK_TOKEN
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return discord_json({"message": "You are being rate limited.", "retry_after": 0.001, "global": False},
                                status=429, headers={"Via": "1.1 google", "X-RateLimit-Remaining": "0"})
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            payload = json.loads(str(form["payload_json"]))
        else:
            payload = await request.json()
        mid = str(900_000_000_000_000_000 + len(self.created))
        self.created.append(payload)
        return discord_json({
            "id": mid, "type": 0, "channel_id": "111111111111111111", "content": payload.get("content", ""),
            "author": {"id": WEBHOOK_ID, "username": "WyEli", "discriminator": "0000", "avatar": None, "bot": True},
            "embeds": payload.get("embeds", []), "attachments": [], "mentions": [], "mention_roles": [], "pinned": False,
            "mention_everyone": False, "tts": False, "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None,
            "flags": 0, "webhook_id": WEBHOOK_ID,
        })


@pytest.fixture
async def fake_webhook(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscordWebhook]:
    fake = FakeDiscordWebhook(rate_limited=0)
    app = web.Application()
    app.router.add_post("/api/v10/webhooks/{id}/{token}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    yield fake
    await runner.cleanup()


async def test_webhook_429_storm_is_ridden_out_and_each_signal_posted_once(store: SqliteStore,
                                                                           fake_webhook: FakeDiscordWebhook) -> None:
    # 7 rate-limited answers: discord.py retries 5 times inside one send and then raises; the outbox backs
    # off and its next attempt gets through after 2 more 429s.
    fake_webhook.rate_limited = 7
    sigs = [make_signal(candle_time_ms=T0 + i * HOUR) for i in range(3)]
    await save(store, *sigs)
    poster = WebhookPoster(f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}")
    sender = sender_for(store, poster)
    try:
        for _ in range(10):
            try:
                await sender.drain_once()
                break
            except DeliveryFailed as exc:
                assert "429" in str(exc)
        else:
            pytest.fail("the outbox never got through the 429 storm")
    finally:
        await poster.close()
    posted = [FOOTER_ID_RE.search(p["embeds"][0]["footer"]["text"]).group(1) for p in fake_webhook.created]  # type: ignore[index, union-attr]
    assert posted == [s.id for s in sigs]  # exactly once each, in order
    ids = []
    for s in sigs:
        d = await store.get_delivery(s.id, "webhook")
        assert d is not None and d.status == "sent"
        ids.append(d.message_id)
    assert len(set(ids)) == 3
    assert sender.stats.failed == 1 and fake_webhook.requests == 7 + 3


async def test_webhook_url_token_never_appears_in_errors_or_repr() -> None:
    url = f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}"
    poster = WebhookPoster(url)
    assert WEBHOOK_TOKEN not in repr(poster) and WEBHOOK_TOKEN not in poster.masked_url
    assert WEBHOOK_TOKEN not in mask_webhook_url(f"error posting to {url}?wait=true")


async def test_a_failed_attempt_keeps_the_signal_pending_for_the_next_pass(store: SqliteStore) -> None:
    sig = make_signal()
    await save(store, sig)
    with pytest.raises(DeliveryFailed):
        await sender_for(store, FakePoster(FakeChannel(), fail=1)).drain_once()
    assert [s.id for s in await store.pending_deliveries("discord:42")] == [sig.id]


async def test_lost_response_after_discord_accepted_is_recorded_not_reposted(store: SqliteStore) -> None:
    # the POST reached Discord but the answer was lost (timeout): the retry finds the message instead of posting
    sig = make_signal()
    await save(store, sig)
    channel = FakeChannel()
    poster = LosingPoster(channel)
    sender = sender_for(store, poster)
    with pytest.raises(DeliveryFailed):
        await sender.drain_once()
    await sender.drain_once()
    assert channel.signal_ids() == [sig.id]
    d = await store.get_delivery(sig.id, "discord:42")
    assert d is not None and d.status == "sent" and d.message_id == channel.messages[0][0]
    assert sender.stats.recovered == 1


class LosingPoster(FakePoster):
    async def post(self, message: OutgoingMessage) -> str:
        await super().post(message)
        if self.attempts == 1:
            raise TimeoutError("no answer within 60 s")
        return self.channel.messages[-1][0]


@pytest.mark.postgres
async def test_crash_recovery_works_the_same_on_postgres(postgres_url: str, pg_schema: str) -> None:  # noqa: F811
    from src.storage.postgres_store import PostgresStore

    channel = FakeChannel()
    sig = make_signal()
    first = PostgresStore(postgres_url, schema=pg_schema)
    await first.open()
    try:
        await save(first, sig)  # type: ignore[arg-type]
        with pytest.raises(Crash):
            await sender_for(first, FakePoster(channel, crash_after_post=True)).drain_once()  # type: ignore[arg-type]
    finally:
        await first.close()
    second = PostgresStore(postgres_url, schema=pg_schema)
    await second.open()
    try:
        sender = sender_for(second, FakePoster(channel))  # type: ignore[arg-type]
        await sender.drain_once()
        await sender.drain_once()
        d = await second.get_delivery(sig.id, "discord:42")
    finally:
        await second.close()
    assert channel.signal_ids() == [sig.id]
    assert d is not None and d.status == "sent" and d.message_id == channel.messages[0][0]


def test_webhook_poster_refuses_a_url_that_is_not_a_discord_webhook() -> None:
    with pytest.raises(ValueError) as err:
        WebhookPoster("https://example.com/api/webhooks/1/secret-token-value")
    assert "secret-token-value" not in str(err.value)


class ChaosPoster(FakePoster):
    """Each post randomly succeeds, fails before reaching Discord, loses the answer after Discord accepted,
    or kills the process before or after Discord accepted."""

    def __init__(self, channel: FakeChannel, rng: random.Random) -> None:
        super().__init__(channel)
        self.rng = rng

    async def post(self, message: OutgoingMessage) -> str:
        roll = self.rng.random()
        if roll < 0.15:
            raise ConnectionError("refused")
        if roll < 0.25:
            raise Crash()
        mid = await super().post(message)
        if roll < 0.40:
            raise TimeoutError("answer lost")
        if roll < 0.50:
            raise Crash()
        return mid


@pytest.mark.parametrize("seed", range(12))
async def test_random_failures_and_crashes_never_lose_duplicate_or_reorder_a_signal(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "chaos.db"
    signals = [make_signal(symbol=rng.choice(["BTCUSDT", "ETHUSDT"]), candle_time_ms=T0 + i * HOUR // 4,
                           pattern=rng.choice(["spring", "sos"])) for i in range(10)]
    unique = {s.id: s for s in signals}
    channel = FakeChannel()
    for _lifetime in range(200):  # each iteration is one process lifetime
        s = SqliteStore(path)
        await s.open()
        try:
            for sig in unique.values():
                await s.save_signal(sig)  # warm-up re-stores: idempotent
            sender = sender_for(s, ChaosPoster(channel, rng))
            try:
                for _ in range(50):
                    try:
                        await sender.drain_once()
                        break
                    except DeliveryFailed:
                        continue
            except Crash:
                continue
            if not await s.pending_deliveries("discord:42"):
                break
        finally:
            await s.close()
    else:
        pytest.fail("signals still pending after 200 lifetimes")
    expected = [sig.id for sig in sorted(unique.values(), key=lambda x: (x.candle_time_ms, x.id))]
    assert channel.signal_ids() == expected


async def test_webhook_failures_are_logged_without_the_token(store: SqliteStore, fake_webhook: FakeDiscordWebhook) -> None:
    from structlog.testing import capture_logs

    fake_webhook.rate_limited = 10_000  # every answer is a 429: discord.py gives up after 5 tries, we back off
    await save(store, make_signal())
    poster = WebhookPoster(f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}")
    sender = sender_for(store, poster, poll_interval_s=3600)
    with capture_logs() as logs:
        task = asyncio.create_task(sender.run())
        for _ in range(4000):
            if sender.stats.failed >= 2:
                break
            await asyncio.sleep(0.005)
        await sender.stop(task, flush_timeout_s=5)
        await poster.close()
    assert sender.stats.failed >= 2 and any(e["event"] == "discord_delivery_retry" for e in logs)
    assert WEBHOOK_TOKEN not in repr(logs)
    d = await store.get_delivery(make_signal().id, "webhook")
    assert d is not None and d.status == "failed" and WEBHOOK_TOKEN not in (d.last_error or "")


class LaggingStore:
    """The outage spool's documented behaviour (src/storage/spool.py): reads go to the primary and do not
    show spooled writes until the flusher replays them. Delivery writes are held back until
    :meth:`catch_up`; a sender that re-reads the same unchanged store 200 times is spinning (Crash)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.held: list[object] = []
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def record_delivery(self, delivery: object) -> None:
        self.held.append(delivery)

    async def pending_deliveries(self, destination: str, *, kinds: Sequence[SignalKind] = ("trade",),
                                 limit: int = 50) -> list[Signal]:
        self.reads += 1
        if self.reads > 200:
            raise Crash("the sender spins on a store that has not caught up")
        return await self.inner.pending_deliveries(destination, kinds=kinds, limit=limit)

    async def catch_up(self) -> None:
        for d in self.held:
            await self.inner.record_delivery(d)  # type: ignore[arg-type]
        self.held.clear()
        self.reads = 0


class OnceOnlyPoster(FakePoster):
    """Kills the process on a second post of the same signal (a duplicate in the channel)."""

    async def post(self, message: OutgoingMessage) -> str:
        if set(message.signal_ids) & set(self.channel.signal_ids()):
            raise Crash(f"duplicate post of {message.signal_ids}")
        return await super().post(message)


async def test_store_that_does_not_yet_show_the_sent_row_never_causes_a_second_post(store: SqliteStore) -> None:
    sig, later = make_signal(), make_signal(candle_time_ms=T0 + HOUR)
    await save(store, sig, later)
    lagging = LaggingStore(store)
    channel = FakeChannel()
    sender = sender_for(lagging, OnceOnlyPoster(channel))  # type: ignore[arg-type]
    await sender.drain_once()
    await sender.drain_once()  # the spool has not replayed our 'sent' rows yet: nothing is posted again
    assert channel.signal_ids() == [sig.id, later.id]
    assert sender.stats.sent == 2 and sender.stats.pending == 0
    await lagging.catch_up()
    for s, (mid, _) in zip((sig, later), channel.messages, strict=True):
        d = await store.get_delivery(s.id, "discord:42")
        assert d is not None and d.status == "sent" and d.message_id == mid
    assert await store.pending_deliveries("discord:42") == []


async def test_store_that_does_not_yet_show_a_skip_does_not_make_the_sender_spin(store: SqliteStore) -> None:
    old = make_signal(candle_time_ms=T0)
    await save(store, old)
    lagging = LaggingStore(store)
    sender = sender_for(lagging, OnceOnlyPoster(FakeChannel()), max_age_s=3600)  # type: ignore[arg-type]
    await sender.drain_once()
    assert sender.stats.skipped == 1 and len(lagging.held) <= 2
    await lagging.catch_up()
    d = await store.get_delivery(old.id, "discord:42")
    assert d is not None and d.status == "skipped"


async def test_failed_attempt_the_store_does_not_show_yet_is_still_checked_in_history(store: SqliteStore) -> None:
    # the POST reached Discord, the answer was lost, and the 'failed' row is still in the spool: the retry
    # must look in the channel instead of trusting the store's "never attempted"
    sig = make_signal()
    await save(store, sig)
    lagging = LaggingStore(store)
    channel = FakeChannel()
    sender = sender_for(lagging, LosingPoster(channel))  # type: ignore[arg-type]
    with pytest.raises(DeliveryFailed):
        await sender.drain_once()
    await sender.drain_once()
    assert channel.signal_ids() == [sig.id] and sender.stats.recovered == 1


class HangingPoster(FakePoster):
    """A POST that never answers (a black-holed network)."""

    async def post(self, message: OutgoingMessage) -> str:
        self.attempts += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_stop_does_not_swallow_the_cancellation_of_a_shutdown_deadline(store: SqliteStore) -> None:
    # the shutdown sequence bounds each step with wait_for: a stop() that swallows that cancellation runs
    # on past the step's budget (and the next sender's flush with it)
    await save(store, make_signal())
    poster = HangingPoster(FakeChannel())
    sender = sender_for(store, poster, poll_interval_s=3600)
    task = asyncio.create_task(sender.run())
    for _ in range(2000):
        if poster.attempts:
            break
        await asyncio.sleep(0.005)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sender.stop(task, flush_timeout_s=3600), timeout=0.05)
    await asyncio.wait([task])
    assert task.cancelled()  # the sender was stopped too


async def test_stop_of_a_sender_whose_task_was_cancelled_elsewhere_returns_normally(store: SqliteStore) -> None:
    sender = sender_for(store, HangingPoster(FakeChannel()), poll_interval_s=3600)
    task = asyncio.create_task(sender.run())
    await asyncio.sleep(0.01)
    task.cancel()
    await sender.stop(task, flush_timeout_s=5)
    assert task.cancelled()


class NoAttachFilesPoster(FakePoster):
    """A channel where the bot lacks Attach Files: Discord answers 403 (50013) to any upload."""

    async def post(self, message: OutgoingMessage) -> str:
        if message.files:
            self.attempts += 1
            raise discord.Forbidden(MagicMock(status=403, reason="Forbidden"),
                                    {"code": 50013, "message": "Missing Permissions"})
        return await super().post(message)


async def test_missing_attach_files_permission_posts_the_signal_without_its_chart(store: SqliteStore,
                                                                                   renderer: ChartRenderer) -> None:
    await store.upsert_candles(random_walk(30, timeframe="1h", start_ms=T0 - 20 * HOUR))
    sig = make_signal()
    await save(store, sig)
    channel = FakeChannel()
    assert await sender_for(store, NoAttachFilesPoster(channel), renderer=renderer).drain_once() == 1
    assert channel.signal_ids() == [sig.id] and channel.messages[0][1].files == ()
    d = await store.get_delivery(sig.id, "discord:42")
    assert d is not None and d.status == "sent"


# ---------------------------------------------------------------- duplicate windows (issue 11)
class NonceChannel(discord.abc.Messageable):
    """A channel that records every send's keyword arguments (the bot path's POST /messages)."""

    def __init__(self) -> None:
        self.sends: list[dict[str, object]] = []

    async def _get_channel(self) -> discord.abc.MessageableChannel:
        raise NotImplementedError

    async def send(self, *args: object, **kwargs: object) -> MagicMock:
        self.sends.append(kwargs)
        return MagicMock(id=len(self.sends))


async def test_the_bot_channel_post_carries_a_nonce_discord_enforces_so_a_retry_returns_the_first_message() -> None:
    from src.bot.discord.posters import ChannelPoster

    channel = NonceChannel()
    bot = MagicMock(is_ready=lambda: True, get_channel=lambda _id: channel)
    poster = ChannelPoster(lambda: bot, 42)
    a, b = make_signal(), make_signal(pattern="utad")
    await poster.post(OutgoingMessage((a.id,), "x", ()))
    await poster.post(OutgoingMessage((a.id,), "x again, without charts", ()))  # the retry of the same message
    await poster.post(OutgoingMessage((b.id, a.id), "a group", ()))
    nonces = [s["nonce"] for s in channel.sends]
    assert nonces[0] == nonces[1] != nonces[2]
    assert all(isinstance(n, str) and 0 < len(n) <= 25 for n in nonces)  # Discord's limit


async def test_a_webhook_post_whose_outcome_is_unknown_is_posted_again_and_says_so(store: SqliteStore) -> None:
    # Discord took the POST but the answer came after the client timeout (or the bot stopped meanwhile): a
    # webhook cannot read the channel to check, so the retry may duplicate it; the log says so per signal.
    from structlog.testing import capture_logs

    sig = make_signal()
    await save(store, sig)
    channel = FakeChannel()

    class TimedOutWebhook(FakePoster):
        destination = "webhook"
        can_confirm = False

        async def post(self, message: OutgoingMessage) -> str:
            mid = await super().post(message)
            if self.attempts == 1:
                raise TimeoutError  # accepted by Discord, answered too late
            return mid

        async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
            return {}

    poster = TimedOutWebhook(channel)
    sender = sender_for(store, poster)
    with pytest.raises(DeliveryFailed):
        await sender.drain_once()
    with capture_logs() as logs:
        assert await sender.drain_once() == 1
    assert channel.signal_ids() == [sig.id, sig.id]  # the remaining window: documented in RUNBOOK
    warned = [e for e in logs if e["event"] == "discord_delivery_unconfirmed_repost"]
    assert len(warned) == 1 and warned[0]["signal_id"] == sig.id and warned[0]["may_duplicate"] is True
    d = await store.get_delivery(sig.id, "webhook")
    assert d is not None and d.status == "sent" and d.attempts == 2
