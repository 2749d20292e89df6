"""The Discord side of WyEli behind one object the app wires: :class:`DiscordService`.

- a :class:`~src.bot.sinks.SignalSink`: ``publish(batch)`` remembers the batch's market views (for the
  charts) and wakes the outbox senders; it never raises and never posts by itself;
- ``start()`` starts the bot (DISCORD_TOKEN) with its commands and an outbox sender for
  ``discord:<DISCORD_SIGNALS_CHANNEL_ID>``, and/or a sender for ``webhook`` (DISCORD_WEBHOOK_URL); both
  post trade calls, and watch notes with WATCH_NOTES=signals; with WATCH_NOTES=channel a third sender
  posts the watch notes to ``discord:<DISCORD_WATCH_CHANNEL_ID>`` (:class:`~src.bot.sinks.SignalRoutes`);
- ``stop()`` lets the senders finish the message in flight (2.5 s), closes the bot and the webhook's
  aiohttp session, and stops the chart worker;
- ``stats()`` returns the counters for metrics and ``>status``; ``status_text()`` one line for
  StatusSnapshot.discord.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from discord.ext import commands

from src.analysis.types import SignalKind
from src.bot.analysis_api import TrackRecordView
from src.bot.discord.bot import WyEliBot, run_bot
from src.bot.discord.charts import ChartRenderer
from src.bot.discord.cogs.signals import CommandDeps
from src.bot.discord.cogs.trading import TradingAdmins
from src.bot.discord.messages import MessageBuilder, ViewCache
from src.bot.discord.outbox import OutboxSender, OutboxStats
from src.bot.discord.posters import ChannelPoster, WebhookPoster
from src.bot.discord.preview import DiscordPreviewSink
from src.bot.discord.trading_alerts import DiscordTradingAlerts
from src.bot.sinks import KindFilter, SignalBatch, SignalRoutes, SignalSink
from src.bot.status import MarketViewProvider, StatusProvider
from src.config import Config
from src.storage.base import Store

TrackRecordsProvider = Callable[[], Sequence[TrackRecordView]]

if TYPE_CHECKING:
    from src.jobs.queue import JobQueue

log = structlog.get_logger(__name__)

DISABLED_TEXT = "off (set DISCORD_TOKEN + DISCORD_SIGNALS_CHANNEL_ID, or DISCORD_WEBHOOK_URL, to enable; see RUNBOOK section 4)"


def discord_status_text(config: Config) -> str:
    """The ``discord`` line of the status when no service runs (tells the user how to enable it)."""
    if not config.discord_token and not config.discord_webhook_url:
        return DISABLED_TEXT
    return "configured, not started"


@dataclass(frozen=True, slots=True)
class DiscordStats:
    """Totals over all destinations plus each destination's own counters."""

    sent: int
    failed: int
    skipped: int
    rejected: int
    recovered: int
    pending: int
    destinations: dict[str, OutboxStats] = field(default_factory=dict)


class DiscordService:
    """Bot + outbox senders + webhook. Build it with :func:`build_discord_service`."""

    name = "discord"

    def __init__(
        self,
        config: Config,
        store: Store,
        status_provider: StatusProvider | None,
        market_view_provider: MarketViewProvider | None,
        *,
        renderer: ChartRenderer | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval_s: float = 30.0,
        flush_timeout_s: float = 2.5,
        track_records: TrackRecordsProvider | None = None,
        jobs: JobQueue | None = None,
        jobs_unavailable: str = "",
    ) -> None:
        self.config = config
        self.store = store
        self._own_renderer = renderer is None
        self.renderer = renderer or ChartRenderer()
        self.views = ViewCache()
        self.builder = MessageBuilder(self.renderer, candles=store, views=self.views)
        self.flush_timeout_s = flush_timeout_s
        self.deps = CommandDeps(
            symbols=config.symbols,
            timeframes=config.timeframes,
            store=store,
            status_provider=status_provider,
            market_view_provider=market_view_provider,
            renderer=self.renderer,
            all_symbols=config.symbols_all,
            guild_id=config.discord_guild_id,
            track_records=track_records,
        )
        self.routes = SignalRoutes.from_config(config)
        self.senders: list[OutboxSender] = []
        self._channel_senders: list[OutboxSender] = []
        self._webhook: WebhookPoster | None = None

        def sender(poster: ChannelPoster | WebhookPoster, kinds: frozenset[SignalKind]) -> OutboxSender:
            return OutboxSender(store, poster, self.builder, max_age_s=config.signal_max_age_seconds, clock=clock,
                                poll_interval_s=poll_interval_s, kinds=kinds)

        if config.discord_token and config.discord_signals_channel_id:
            self._channel_senders.append(sender(ChannelPoster(lambda: self._bot, config.discord_signals_channel_id),
                                                self.routes.discord_signals))
        if config.discord_token and config.discord_watch_channel_id and self.routes.discord_watch:
            self._channel_senders.append(sender(ChannelPoster(lambda: self._bot, config.discord_watch_channel_id),
                                                self.routes.discord_watch))
        self.senders.extend(self._channel_senders)
        if config.discord_webhook_url:
            try:
                self._webhook = WebhookPoster(config.discord_webhook_url)
            except ValueError as exc:  # a wrong URL disables the webhook, not the bot
                log.error("discord_webhook_disabled", error=str(exc))
            else:
                self.senders.append(sender(self._webhook, self.routes.discord_signals))
        # backtest jobs (src/jobs): the >backtest/>research cog and the poster of progress and results
        self.jobs = jobs
        self.jobs_unavailable = jobs_unavailable or "backtest jobs are not configured"
        self._job_poster_task: asyncio.Task[None] | None = None
        self._bot: WyEliBot | None = None
        self._bot_task: asyncio.Task[None] | None = None
        self._sender_tasks: list[asyncio.Task[None]] = []
        self._started = False
        # trading (issue 13): the admin commands and the alerts channel, when a trader runs
        self.trading: Any = None
        self.trading_alerts: DiscordTradingAlerts | None = None
        self._alerts_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def bot(self) -> WyEliBot | None:
        return self._bot

    def make_bot(self, message_content: bool) -> WyEliBot:
        return WyEliBot(self.deps, message_content=message_content, owner_ids=self.config.discord_owner_ids,
                        on_ready_hook=self._on_bot_ready, trading=self.trading, trading_admins=trading_admins(self.config),
                        extra_cogs=(self._jobs_cog,))

    def attach_trading(self, runner: Any) -> None:
        """Trading commands for the admins, and trading alerts in DISCORD_TRADING_CHANNEL_ID (else the signals
        channel), when ``runner`` (src/bot/trading_runner.TradingRunner) has a trader."""
        if runner.trader is None:
            return
        self.trading = runner.trader
        channel = self.config.discord_trading_channel_id or self.config.discord_signals_channel_id
        if self.config.discord_token and channel:
            self.trading_alerts = DiscordTradingAlerts(lambda: self._bot, channel,
                                                       tuple(sorted(trading_admins(self.config).user_ids)))
            runner.add_alerts(self.trading_alerts)

    def _jobs_cog(self, bot: commands.Bot) -> commands.Cog:
        from src.bot.discord.cogs.jobs import JobCommandDeps, JobsCog

        deps = JobCommandDeps(queue=self.jobs, symbols=self.config.symbols, timeframes=self.config.timeframes,
                              all_symbols=self.config.symbols_all, unavailable=self.jobs_unavailable)
        return JobsCog(bot, deps)

    def _set_bot(self, bot: WyEliBot) -> None:
        self._bot = bot

    def _on_bot_ready(self) -> None:
        for channel_sender in self._channel_senders:
            channel_sender.wake()

    async def start(self) -> None:
        """Start the bot (if a token is set) and the outbox senders. Returns at once; the bot connects in
        the background."""
        if self._started:
            return
        self._started = True
        if self.config.discord_token:
            token = self.config.discord_token
            self._bot_task = asyncio.create_task(run_bot(token, self.make_bot, self._set_bot), name="discord-bot")
        for sender in self.senders:
            self._sender_tasks.append(asyncio.create_task(sender.run(), name=f"outbox-{sender.destination}"))
        if self.trading_alerts is not None:
            self._alerts_task = asyncio.create_task(self.trading_alerts.run(), name="discord-trading-alerts")
        if self.jobs is not None and self.config.discord_token:
            from src.bot.discord.job_posts import JobPoster

            poster = JobPoster(self.jobs.store, lambda: self._bot)
            self._job_poster_task = asyncio.create_task(poster.run(), name="job-posts")
        log.info("discord_service_started", destinations=[s.destination.replace("webhook", "webhook(masked)")
                                                          for s in self.senders],
                 bot=bool(self.config.discord_token))

    async def publish(self, batch: SignalBatch) -> None:
        """Remember the charts' views and wake the senders (the signals are already stored)."""
        for signal in batch.signals:
            view = batch.view_for(signal.symbol, signal.timeframe)
            if view is not None:
                self.views.put(signal.id, view)
        for sender in self.senders:
            sender.wake()

    async def stop(self) -> None:
        """Flush what is in flight (up to ``flush_timeout_s``), then close the bot, the webhook session and
        the chart worker. Idempotent."""
        for sender, task in zip(self.senders, self._sender_tasks, strict=False):
            await sender.stop(task, flush_timeout_s=self.flush_timeout_s)
        self._sender_tasks.clear()
        if self._alerts_task is not None:
            self._alerts_task.cancel()
            await asyncio.gather(self._alerts_task, return_exceptions=True)
            self._alerts_task = None
        if self._job_poster_task is not None:
            self._job_poster_task.cancel()
            await asyncio.gather(self._job_poster_task, return_exceptions=True)
            self._job_poster_task = None
        if self._bot is not None and not self._bot.is_closed():
            await self._bot.close()
        if self._bot_task is not None:
            try:
                await asyncio.wait_for(self._bot_task, timeout=1.0)  # cancels it on timeout
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # a shutdown deadline: the next stop() (idempotent) finishes the rest
            except Exception as exc:  # the bot task's own errors were logged there
                log.debug("discord_bot_task_ended", error=type(exc).__name__)
            self._bot_task = None
        if self._webhook is not None:
            await self._webhook.close()
        if self._own_renderer:
            self.renderer.close()
        self._started = False

    async def close(self) -> None:
        await self.stop()

    # ------------------------------------------------------------------ reporting
    def stats(self) -> DiscordStats:
        per = {s.destination: s.stats for s in self.senders}
        return DiscordStats(
            sent=sum(s.sent for s in per.values()),
            failed=sum(s.failed for s in per.values()),
            skipped=sum(s.skipped for s in per.values()),
            rejected=sum(s.rejected for s in per.values()),
            recovered=sum(s.recovered for s in per.values()),
            pending=sum(s.pending for s in per.values()),
            destinations=per,
        )

    def describe(self) -> str:
        """One line for StatusSnapshot.discord (same as :meth:`status_text`)."""
        return self.status_text()

    def status_text(self) -> str:
        """One line for StatusSnapshot.discord."""
        parts: list[str] = []
        if self.config.discord_token:
            bot = self._bot
            if bot is None or not bot.is_ready():
                parts.append("bot connecting")
            elif bot.message_content:
                parts.append(f"bot connected as {bot.user} (prefix >)")
            else:
                parts.append(f"bot connected as {bot.user} (no Message Content intent: use @mention or slash commands)")
        if self._webhook is not None:
            parts.append("webhook on")
        st = self.stats()
        parts.append(f"sent {st.sent}, pending {st.pending}, failed attempts {st.failed}, skipped {st.skipped + st.rejected}")
        return "; ".join(parts)


def trading_admins(config: Config) -> TradingAdmins:
    """TRADING_ADMIN_IDS / TRADING_ADMIN_ROLE_IDS; when both are unset, the bot owners (DISCORD_OWNER_IDS)."""
    users = config.trading_admin_ids or (() if config.trading_admin_role_ids else config.discord_owner_ids)
    return TradingAdmins(frozenset(users), frozenset(config.trading_admin_role_ids))


def build_discord_service(
    config: Config,
    store: Store,
    status_provider: StatusProvider | None,
    market_view_provider: MarketViewProvider | None,
    track_records: TrackRecordsProvider | None = None,
    *,
    jobs: JobQueue | None = None,
    jobs_unavailable: str = "",
) -> DiscordService | None:
    """The service when DISCORD_TOKEN (+ channel) or DISCORD_WEBHOOK_URL is set, else None (console only)."""
    if not config.discord_token and not config.discord_webhook_url:
        return None
    return DiscordService(config, store, status_provider, market_view_provider, track_records=track_records,
                          jobs=jobs, jobs_unavailable=jobs_unavailable)


def build_discord_sinks(
    config: Config,
    store: Store,
    status_provider: StatusProvider | None,
    market_view_provider: MarketViewProvider | None,
    *,
    preview_dir: Path | None = None,
    live: bool = True,
    track_records: TrackRecordsProvider | None = None,
    jobs: JobQueue | None = None,
    jobs_unavailable: str = "",
) -> tuple[list[SignalSink], DiscordService | None]:
    """Every Discord-side sink the configuration asks for: the preview sink (``--discord-preview DIR``,
    charts falling back to the store's candles; it shows the kinds some Discord destination would post) and,
    in live mode, the service (bot and/or webhook). The caller starts and stops the service; the sinks are
    closed with the other sinks."""
    sinks: list[SignalSink] = []
    if preview_dir is not None:
        sinks.append(KindFilter(DiscordPreviewSink(preview_dir, candles=store), SignalRoutes.from_config(config).discord))
    service = (build_discord_service(config, store, status_provider, market_view_provider, track_records,
                                     jobs=jobs, jobs_unavailable=jobs_unavailable)
               if live else None)
    if service is not None:
        sinks.append(service)
    return sinks, service
