"""The Discord side of WyEli behind one object the app wires: :class:`DiscordService`.

- a :class:`~src.bot.sinks.SignalSink`: ``publish(batch)`` remembers the batch's market views (for the
  charts) and wakes the outbox senders; it never raises and never posts by itself;
- ``start()`` starts the bot (DISCORD_TOKEN) with its commands, reads the ``>watch`` subscriptions, and
  starts one outbox sender per destination (:mod:`src.bot.discord.destinations`): the signals channel
  (DISCORD_SIGNALS_CHANNEL_ID), the watch-note channel (WATCH_NOTES=channel), the webhook (DISCORD_WEBHOOK_URL),
  every DISCORD_ROUTES route, and every channel or DM that has subscriptions (added when a ``>watch`` creates
  them); each posts its signals and then replies to them with their follow-ups;
- ``follow_up_recorded`` wakes the senders when the outcome tracker stored a follow-up;
- ``stop()`` lets the senders finish the message in flight (2.5 s), closes the bot and the webhooks'
  aiohttp sessions, and stops the chart worker;
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

from src.analysis import timeframes as tf_mod
from src.analysis.follow_ups import FollowUp
from src.analysis.types import Signal
from src.bot.analysis_api import TrackRecordView
from src.bot.discord.bot import WyEliBot, run_bot
from src.bot.discord.charts import ChartRenderer
from src.bot.discord.cogs.signals import CommandDeps
from src.bot.discord.cogs.trading import TradingAdmins
from src.bot.discord.delivery import OutboxStats
from src.bot.discord.destinations import Destination, configured_destinations, subscription_destination
from src.bot.discord.messages import MessageBuilder, ViewCache
from src.bot.discord.notices import AlarmWatcher, Notice
from src.bot.discord.outbox import OutboxSender
from src.bot.discord.posters import ChannelPoster, DMPoster, WebhookPoster
from src.bot.discord.preview import DiscordPreview
from src.bot.discord.subscriptions import SubscriptionBook
from src.bot.discord.trading_alerts import DiscordTradingAlerts
from src.bot.sinks import SignalBatch, SignalRoutes, SignalSink
from src.bot.status import MarketViewProvider, StatusProvider
from src.config import Config
from src.storage.base import Store, StoreError

TrackRecordsProvider = Callable[[], Sequence[TrackRecordView]]

if TYPE_CHECKING:
    from src.jobs.queue import JobQueue

log = structlog.get_logger(__name__)

DISABLED_TEXT = "off (set DISCORD_TOKEN + DISCORD_SIGNALS_CHANNEL_ID, or DISCORD_WEBHOOK_URL, to enable; see RUNBOOK section 4)"


def discord_status_text(config: Config) -> str:
    """The ``discord`` line of the status when no service runs (tells the user how to enable it)."""
    if not config.discord_token and not config.discord_webhook_url and not config.discord_routes:
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
    follow_ups: int = 0


class DiscordService:
    """Bot + outbox senders (one per destination) + subscriptions. Build it with :func:`build_discord_service`."""

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
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self._own_renderer = renderer is None
        self.renderer = renderer or ChartRenderer()
        self.views = ViewCache()
        self.builder = MessageBuilder(self.renderer, candles=store, views=self.views,
                                      utc_offset_minutes=config.display_utc_offset)
        self.flush_timeout_s = flush_timeout_s
        self.book = SubscriptionBook(store, clock=clock, on_change=self._subscriptions_changed)
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
            book=self.book if config.discord_token else None,
            utc_offset_minutes=config.display_utc_offset,
            routed_here=self._routed_here,
        )
        self.routes = SignalRoutes.from_config(config)
        # the longest configured interval: how long before (now - max age) a signal's candle may have opened
        self._since_slack_ms = max((tf_mod.interval_ms(tf) for tf in config.timeframes), default=86_400_000)
        self.senders: list[OutboxSender] = []
        self._webhooks: list[WebhookPoster] = []
        self._dynamic: set[str] = set()  # destinations that exist through subscriptions only
        for dest in configured_destinations(config):
            sender = self._sender_for(dest)
            if sender is not None:
                self.senders.append(sender)
        # backtest jobs (src/jobs): the >backtest/>research cog and the poster of progress and results
        self.jobs = jobs
        self.jobs_unavailable = jobs_unavailable or "backtest jobs are not configured"
        self._job_poster_task: asyncio.Task[None] | None = None
        self._bot: WyEliBot | None = None
        self._bot_task: asyncio.Task[None] | None = None
        self._sender_tasks: dict[str, asyncio.Task[None]] = {}
        self._status_provider = status_provider
        self._alarm_task: asyncio.Task[None] | None = None
        self._started = False
        # trading (issue 13): the admin commands and the alerts channel, when a trader runs
        self.trading: Any = None
        self.trading_alerts: DiscordTradingAlerts | None = None
        self._alerts_task: asyncio.Task[None] | None = None
        # several instances (issue 16): the leader's fence (src/bot/leadership.Leadership.fence) the senders check
        # before each claim and POST; None = a single instance
        self.fence: Callable[[], int | None] | None = None

    def _routed_here(self, destination: str) -> list[str]:
        """The configured routes posting to ``destination`` (for ``>subscriptions``)."""
        return [f"route {s.target.name}" for s in self.senders
                if s.destination == destination and s.target.route is not None]

    def _sender_for(self, dest: Destination) -> OutboxSender | None:
        poster: ChannelPoster | WebhookPoster
        if dest.webhook_url is not None:
            try:
                poster = WebhookPoster(dest.webhook_url, destination=dest.key)
            except ValueError as exc:  # a wrong URL disables the webhook, not the bot
                log.error("discord_webhook_disabled", route=dest.name, error=str(exc))
                return None
            self._webhooks.append(poster)
        elif dest.user_id is not None:
            poster = DMPoster(lambda: self._bot, dest.user_id)
        elif dest.channel_id is not None and self.config.discord_token:
            poster = ChannelPoster(lambda: self._bot, dest.channel_id)
        else:
            return None
        return OutboxSender(self.store, poster, self.builder, max_age_s=self.config.signal_max_age_seconds,
                            clock=self.clock, poll_interval_s=self.poll_interval_s, target=dest,
                            book=self.book if dest.subscribable else None, since_slack_ms=self._since_slack_ms,
                            fence=self._fence)

    def _fence(self) -> int | None:
        return None if self.fence is None else self.fence()

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
        for sender in self.senders:
            sender.wake()

    async def start(self) -> None:
        """Start the bot (if a token is set), read the subscriptions and start the outbox senders. Returns at once;
        the bot connects in the background."""
        if self._started:
            return
        self._started = True
        if self.config.discord_token:
            token = self.config.discord_token
            self._bot_task = asyncio.create_task(run_bot(token, self.make_bot, self._set_bot), name="discord-bot")
            try:
                await self.book.refresh()
            except StoreError as exc:  # subscribed channels join when a sender re-reads them
                log.warning("discord_subscriptions_unavailable", error=str(exc)[:200])
            self._sync_destinations()
        for sender in self.senders:
            self._start_sender(sender)
        if self._status_provider is not None and any("alarm" in s.target.kinds for s in self.senders):
            watcher = AlarmWatcher(self._status_provider, self.notify, clock=self.clock)
            self._alarm_task = asyncio.create_task(watcher.run(), name="discord-alarms")
        if self.trading_alerts is not None:
            self._alerts_task = asyncio.create_task(self.trading_alerts.run(), name="discord-trading-alerts")
        if self.jobs is not None and self.config.discord_token:
            from src.bot.discord.job_posts import JobPoster

            poster = JobPoster(self.jobs.store, lambda: self._bot)
            self._job_poster_task = asyncio.create_task(poster.run(), name="job-posts")
        log.info("discord_service_started", bot=bool(self.config.discord_token), follow_ups=self.config.discord_follow_ups,
                 destinations=[f"{s.target.name} ({_shown(s.destination)})" for s in self.senders])

    def _start_sender(self, sender: OutboxSender) -> None:
        if self._started and sender.destination not in self._sender_tasks:
            self._sender_tasks[sender.destination] = asyncio.create_task(sender.run(), name=f"outbox-{sender.destination}")

    def _subscriptions_changed(self) -> None:
        self._sync_destinations()
        for sender in self.senders:
            sender.wake()

    def _sync_destinations(self) -> None:
        """A sender for every subscribed channel or DM that has none yet (a configured channel takes its subscriptions
        itself). A destination left without subscriptions keeps its sender until the next start: it still posts the
        follow-ups of what it posted."""
        if not self.config.discord_token:
            return
        have = {s.destination for s in self.senders}
        for key in sorted(self.book.destinations() - have):
            sender = self._sender_for(subscription_destination(key, self.config))
            if sender is None:
                continue
            self.senders.append(sender)
            self._dynamic.add(key)
            self._start_sender(sender)
            log.info("discord_destination_added", destination=key)

    async def publish(self, batch: SignalBatch) -> None:
        """Remember the charts' views and wake the senders (the signals are already stored)."""
        for signal in batch.signals:
            view = batch.view_for(signal.symbol, signal.timeframe)
            if view is not None:
                self.views.put(signal.id, view)
        for sender in self.senders:
            sender.wake()

    def notify(self, notice: Notice) -> int:
        """Queue an ``alarm`` or ``trading`` notice on every destination that takes its kind; returns how many. (The
        trading module calls this with its fills.)"""
        return sum(sender.notify(notice) for sender in self.senders)

    def follow_up_recorded(self, signal: Signal, follow_up: FollowUp) -> None:
        """A follow-up was stored: wake the senders (those that posted the signal reply to it)."""
        for sender in self.senders:
            sender.wake()

    async def stop(self) -> None:
        """Flush what is in flight (up to ``flush_timeout_s``), then close the bot, the webhooks' sessions and the
        chart worker. Idempotent."""
        if self._alarm_task is not None:
            self._alarm_task.cancel()
            await asyncio.gather(self._alarm_task, return_exceptions=True)
            self._alarm_task = None
        for sender in self.senders:
            await sender.stop(self._sender_tasks.get(sender.destination), flush_timeout_s=self.flush_timeout_s)
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
        for webhook in self._webhooks:
            await webhook.close()
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
            follow_ups=sum(s.follow_ups for s in per.values()),
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
        hooks = sum(1 for s in self.senders if s.destination.startswith("webhook"))
        if hooks:
            parts.append("webhook on" if hooks == 1 else f"{hooks} webhooks on")
        if self._dynamic:
            parts.append(f"{len(self._dynamic)} subscribed channel(s)/DM(s)")
        st = self.stats()
        parts.append(f"sent {st.sent}, follow-ups {st.follow_ups}, pending {st.pending}, failed attempts {st.failed}, "
                     f"skipped {st.skipped + st.rejected}")
        return "; ".join(parts)


def trading_admins(config: Config) -> TradingAdmins:
    """TRADING_ADMIN_IDS / TRADING_ADMIN_ROLE_IDS; when both are unset, the bot owners (DISCORD_OWNER_IDS)."""
    users = config.trading_admin_ids or (() if config.trading_admin_role_ids else config.discord_owner_ids)
    return TradingAdmins(frozenset(users), frozenset(config.trading_admin_role_ids))


def _shown(destination: str) -> str:
    return destination if not destination.startswith("webhook") else destination + " (URL masked)"


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
    """The service when DISCORD_TOKEN, DISCORD_WEBHOOK_URL or a route is set, else None (console only)."""
    if not config.discord_token and not config.discord_webhook_url and not config.discord_routes:
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
    """Every Discord-side sink the configuration asks for: the preview (``--discord-preview DIR``: every
    destination's message sequence, follow-ups included, written to files) and, in live mode, the service (bot,
    webhooks, routes, subscriptions). The caller starts and stops the service; the sinks are closed with the other
    sinks."""
    sinks: list[SignalSink] = []
    if preview_dir is not None:
        sinks.append(DiscordPreview(preview_dir, config, store))
    service = (build_discord_service(config, store, status_provider, market_view_provider, track_records,
                                     jobs=jobs, jobs_unavailable=jobs_unavailable)
               if live else None)
    if service is not None:
        sinks.append(service)
    return sinks, service
