""">backtest and >research end to end with dpytest (prefix path), and the JobPoster that edits progress and
posts each result once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext import commands

from src.bot.discord.bot import WyEliBot
from src.bot.discord.cogs.jobs import JobCommandDeps, JobsCog
from src.bot.discord.job_posts import JobPoster
from src.jobs.model import JobFile, JobLimits, Requester
from src.jobs.queue import JobQueue, LocalEngine
from src.jobs.sqlite_jobs import SqliteJobStore
from src.storage.sqlite_store import SqliteStore
from tests.test_discord_commands import make_deps

NOW = datetime(2025, 6, 15, 12, tzinfo=UTC).timestamp()
OWNER = 4242  # not the dpytest member: the default member is no owner


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[JobQueue]:
    q = JobQueue(SqliteJobStore(tmp_path / "jobs.db"), LocalEngine(), JobLimits(2, 3, 400))
    await q.open()
    yield q
    await q.close()


async def make_bot(tmp_path: Path, queue: JobQueue | None, *, unavailable: str = "x", cooldown: bool = False) -> WyEliBot:
    store = SqliteStore(tmp_path / "cmd.db")
    await store.open()
    deps = JobCommandDeps(queue=queue, symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT"), timeframes=("15m", "1h", "4h"),
                          unavailable=unavailable, clock=lambda: NOW)
    b = WyEliBot(make_deps(store), intents=discord.Intents.all(), owner_ids=(OWNER,),
                 extra_cogs=(lambda bot: JobsCog(bot, deps),))
    await b._async_setup_hook()
    dpytest.configure(b)
    b.on_command_error = b.on_command_error.__old__  # type: ignore[attr-defined, method-assign]
    await b.setup_hook()
    b._test_store = store  # type: ignore[attr-defined]
    if not cooldown:
        cog = b.get_cog("Jobs")
        for cmd in cog.get_commands():  # type: ignore[union-attr]
            cmd._buckets = commands.CooldownMapping(None, commands.BucketType.default)
    b.is_ready = lambda: True  # type: ignore[method-assign]  # dpytest never sends READY; the poster waits for it
    return b


@pytest.fixture
async def bot(tmp_path: Path, queue: JobQueue) -> AsyncIterator[WyEliBot]:
    b = await make_bot(tmp_path, queue)
    yield b
    await dpytest.empty_queue()
    await b._test_store.close()  # type: ignore[attr-defined]


def text() -> str:
    return dpytest.get_message().content


async def test_backtest_answers_at_once_with_the_job_id_and_queue_position(bot: WyEliBot, queue: JobQueue) -> None:
    await dpytest.message(">backtest sol 4h 2024 springs")
    reply = dpytest.get_message()
    assert "backtest #1: SOLUSDT 4h 2024-01-01 .. 2024-12-31 (spring)" in reply.content
    assert "position 1 in the queue" in reply.content
    job = await queue.store.get(1)
    assert job is not None and job.state == "queued" and job.message_id == reply.id
    assert job.request.patterns == ("wyckoff_spring",) and job.requester.channel_id == reply.channel.id
    await dpytest.message(">backtest eth")
    second = text()
    assert "backtest #2: ETHUSDT 1h" in second and "position 2 in the queue" in second


async def test_status_queue_and_cancel(bot: WyEliBot, queue: JobQueue) -> None:
    await dpytest.message(">backtest btc 1h 90d")
    dpytest.get_message()
    await dpytest.message(">backtest status 1")
    assert "Queued: position 1" in text()
    await dpytest.message(">backtest queue")
    embed = dpytest.get_message().embeds[0]
    assert embed.title == "Backtest queue" and "#1 queued (1)" in (embed.description or "")
    await dpytest.message(">backtest cancel #1")
    assert text() == "Job #1: cancelled."
    assert (await queue.store.get(1)).state == "cancelled"  # type: ignore[union-attr]
    await dpytest.message(">backtest cancel 1")
    assert "already ended (cancelled)" in text()
    await dpytest.message(">backtest status 99")
    assert "There is no job #99" in text()


async def test_someone_elses_job_cannot_be_cancelled(bot: WyEliBot, queue: JobQueue) -> None:
    other = await queue.submit((await _any_request(queue)), Requester(user_id="777", user_name="zed", channel_id=1))
    await dpytest.message(f">backtest cancel {other.id}")
    assert "not yours" in text()
    assert (await queue.store.get(other.id)).state == "queued"  # type: ignore[union-attr]


async def _any_request(queue: JobQueue) -> Any:
    from tests.jobs_helpers import request

    return request()


async def test_limits_and_bad_arguments_get_friendly_answers(bot: WyEliBot) -> None:
    await dpytest.message(">backtest btc 2020-01..2022-01")
    assert text() == "Not queued: the period is 762 days; the limit is 400 days."
    await dpytest.message(">backtest doge 1h")
    assert "I don't watch `doge`" in text()
    await dpytest.message(">backtest btc 7h")
    assert "`7h` is not a timeframe I can backtest; timeframes: 15m, 1h, 4h" in text()
    await dpytest.message(">backtest btc nonsense")
    assert "I don't understand `nonsense`" in text()
    await dpytest.message(">backtest btc 1d")
    assert "`1d` is not a timeframe I can backtest" in text()
    await dpytest.message(">backtest")
    assert "Usage: `>backtest SYMBOL [TF] [period] [pattern...]`" in text()
    await dpytest.message(">research 4h")
    assert "name a pattern" in text()


async def test_per_user_limit_is_enforced_from_discord(bot: WyEliBot, queue: JobQueue) -> None:
    for sym in ("btc", "eth"):
        await dpytest.message(f">backtest {sym}")
        assert "Queued" in text()
    await dpytest.message(">backtest sol")
    assert "Not queued: you already have 2 jobs queued or running (limit 2)" in text()


async def test_research_queues_an_event_study_over_the_configured_symbols(bot: WyEliBot, queue: JobQueue) -> None:
    await dpytest.message(">research spring 4h 1y")
    assert "research #1: BTC, ETH, SOL 4h" in text()
    job = await queue.store.get(1)
    assert job is not None and job.request.kind == "research" and job.request.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")


async def test_commands_have_a_per_user_cooldown(tmp_path: Path, queue: JobQueue) -> None:
    b = await make_bot(tmp_path, queue, cooldown=True)
    try:
        for _ in range(5):
            await dpytest.message(">backtest status 1")
            assert "There is no job #1" in text()
        await dpytest.message(">backtest status 1")
        assert text().startswith("One moment: try again in")
    finally:
        await dpytest.empty_queue()
        await b._test_store.close()  # type: ignore[attr-defined]


async def test_without_a_queue_the_commands_say_why(tmp_path: Path) -> None:
    b = await make_bot(tmp_path, None, unavailable="set DATABASE_URL")
    try:
        await dpytest.message(">backtest btc")
        assert text() == "Backtests are not available here: set DATABASE_URL."
    finally:
        await dpytest.empty_queue()
        await b._test_store.close()  # type: ignore[attr-defined]


async def test_the_poster_edits_progress_and_posts_each_result_once(bot: WyEliBot, queue: JobQueue) -> None:
    await dpytest.message(">backtest btc 1h 90d")
    ack = dpytest.get_message()
    store = queue.store
    job = await store.start(1, "w1")
    assert job is not None
    await store.heartbeat(1, job.attempt, "backtesting 2160 candles (store data)")
    posters = [JobPoster(store, lambda: bot, edit_every_s=0.0) for _ in range(2)]  # two bot processes
    await posters[0].tick()
    edited = await ack.channel.fetch_message(ack.id)
    assert "Running (attempt 1): backtesting 2160 candles" in edited.content
    summary = {"trades": 12, "wins": 5, "losses": 6, "expired": 1, "win_rate": 5 / 12, "expectancy_r": 0.12,
               "expectancy_r_ci95": [-0.3, 0.5], "max_drawdown": 0.08, "total_return": 0.02, "candles": 2160,
               "baseline": {"random_expectancy_r_mean": -0.05, "random_expectancy_r_p5": -0.4,
                            "random_expectancy_r_p95": 0.3, "strategy_beats_share": 0.7},
               "patterns": [], "per_pattern": {}, "data": [{"symbol": "BTCUSDT", "source": "store", "candles": 2160}]}
    assert await store.finish(1, job.attempt, "done", summary=summary,
                              files=[JobFile("equity.png", b"\x89PNG\r\n"), JobFile("report.json", b"{}")])
    for _ in range(3):
        for p in posters:
            await p.tick()
    assert sum(p.posted for p in posters) == 1
    post = dpytest.get_message()  # dpytest keeps the files of a message with files, not its text or embed
    assert sorted(a.filename for a in post.attachments) == ["equity.png", "report.json"]
    assert dpytest.verify().message().nothing()
    final = await store.get(1)
    assert final is not None and final.notified_ms is not None
    assert "Done: results below." in (await ack.channel.fetch_message(ack.id)).content


async def test_a_failed_job_is_posted_to_its_requester_with_the_reason(bot: WyEliBot, queue: JobQueue) -> None:
    await dpytest.message(">backtest eth 4h 2024")
    ack = dpytest.get_message()
    job = await queue.store.start(1, "w1")
    assert job is not None
    await queue.store.finish(1, job.attempt, "failed", error="Binance refused ETHUSDT 4h: HTTP 400 (code -1121)")
    await JobPoster(queue.store, lambda: bot).tick()
    post = dpytest.get_message()
    assert post.content == f"<@{job.requester.user_id}> backtest #1 failed."
    assert post.embeds and "Failed: Binance refused ETHUSDT 4h" in (post.embeds[0].description or "")
    assert ack.id  # the reply's reference and mentions are checked with a recording channel below


class RecordingChannel:
    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    async def send(self, content: str, **kwargs: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append({"content": content, **kwargs})

    async def fetch_message(self, message_id: int) -> Any:
        raise discord.NotFound(_Resp(), "gone")


class _Resp:
    status = 404
    reason = "Not Found"


class FakeClient:
    def __init__(self, channel: RecordingChannel) -> None:
        self.channel = channel

    def is_ready(self) -> bool:
        return True

    def get_channel(self, channel_id: int) -> RecordingChannel:
        return self.channel


async def test_a_result_replies_to_the_acknowledgement_and_pings_only_the_requester(queue: JobQueue) -> None:
    from tests.jobs_helpers import request

    store = queue.store
    job = await store.submit(request(), Requester(user_id="123", user_name="al", channel_id=9), queue.limits)
    await store.set_message(job.id, 555)
    started = await store.start(job.id, "w")
    assert started is not None
    await store.finish(job.id, started.attempt, "failed", error="no candles")
    flaky = RecordingChannel(fail=discord.HTTPException(_Resp(), "503"))
    poster = JobPoster(store, lambda: FakeClient(flaky))  # type: ignore[arg-type, return-value]
    await poster.tick()
    assert poster.posted == 0 and [j.id for j in await store.to_notify()] == [job.id]  # released for the next round
    ok = RecordingChannel()
    poster = JobPoster(store, lambda: FakeClient(ok))  # type: ignore[arg-type, return-value]
    await poster.tick()
    await poster.tick()
    assert len(ok.sent) == 1
    sent = ok.sent[0]
    assert sent["content"] == "<@123> backtest #1 failed."
    assert sent["reference"].message_id == 555 and sent["reference"].fail_if_not_exists is False
    mentions = sent["allowed_mentions"]
    assert mentions.everyone is False and mentions.roles is False and [u.id for u in mentions.users] == [123]
