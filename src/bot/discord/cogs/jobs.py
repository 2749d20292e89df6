"""``>backtest`` and ``>research``: queue backtest jobs from Discord (hybrid commands: prefix and slash).

    >backtest SOL 1h 2024 spring      queue a backtest (answers at once with the id and queue position)
    >backtest status 12 | cancel 12   one job's state / cancel it (the requester or an admin)
    >backtest queue                   what is running and waiting
    >research spring 4h 1y            the event study of one pattern over the configured symbols

Limits (JOBS_MAX_ACTIVE_PER_USER, JOBS_MAX_ACTIVE, JOBS_MAX_PERIOD_DAYS) apply to everyone but admins:
the bot owners (DISCORD_OWNER_IDS) and members with Manage Server, who may also backtest any symbol and
timeframe and cancel anyone's job. The acknowledgement message is edited with progress and the result is
posted as a reply by :class:`src.bot.discord.job_posts.JobPoster`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import discord
import structlog
from discord import app_commands
from discord.ext import commands

from src.bot.discord.embeds import truncate
from src.bot.discord.job_arguments import ArgumentProblem, ParsedJob, parse_backtest, parse_research
from src.bot.discord.job_embeds import queue_embed, result_embed, state_text
from src.bot.discord.messages import NO_MENTIONS
from src.jobs.model import JobError, JobKind, JobRecord, JobRequest, Requester
from src.jobs.store import JobStore
from src.storage.base import StoreError

log = structlog.get_logger(__name__)

BACKTEST_USAGE = ("Usage: `>backtest SYMBOL [TF] [period] [pattern...]`, e.g. `>backtest SOL 1h 2024 spring` "
                  "(periods: `90d`, `6mo`, `1y`, `2024`, `2024-03`, `ytd`, `2024-01-01..2024-06-30`; default the last "
                  "365 days).\nAlso `>backtest status ID`, `>backtest cancel ID`, `>backtest queue`.")
RESEARCH_USAGE = "Usage: `>research PATTERN [TF] [period]`, e.g. `>research spring 4h 1y` (over the configured symbols)."
COMMAND_COOLDOWN = (5, 30.0)  # per user: submissions and status checks are cheap, but not free


class QueueLike(Protocol):
    store: JobStore

    async def submit(self, request: JobRequest, requester: Requester) -> JobRecord: ...


@dataclass(frozen=True, slots=True)
class JobCommandDeps:
    queue: QueueLike | None
    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    all_symbols: bool = False
    research_max_symbols: int = 5
    unavailable: str = "backtest jobs are not configured"
    clock: Callable[[], float] = field(default=time.time)


class JobProblem(commands.CommandError):
    """A friendly message for the user."""


class JobsCog(commands.Cog, name="Jobs"):
    def __init__(self, bot: commands.Bot, deps: JobCommandDeps) -> None:
        self.bot = bot
        self.deps = deps

    # ------------------------------------------------------------------ helpers
    async def _reply(self, ctx: commands.Context[commands.Bot], content: str | None = None, **kwargs: Any) -> Any:
        return await ctx.send(content, allowed_mentions=NO_MENTIONS, **kwargs)

    async def is_admin(self, ctx: commands.Context[commands.Bot]) -> bool:
        if await self.bot.is_owner(ctx.author):
            return True
        perms = getattr(ctx.author, "guild_permissions", None)
        return bool(perms is not None and (perms.manage_guild or perms.administrator))

    def _queue(self) -> QueueLike:
        if self.deps.queue is None:
            raise JobProblem(f"Backtests are not available here: {self.deps.unavailable}.")
        return self.deps.queue

    def _requester(self, ctx: commands.Context[commands.Bot], admin: bool) -> Requester:
        return Requester(user_id=str(ctx.author.id), user_name=truncate(getattr(ctx.author, "display_name", "") or
                                                                        str(ctx.author), 64),
                         channel_id=ctx.channel.id if ctx.channel else None,
                         guild_id=ctx.guild.id if ctx.guild else None, admin=admin)

    async def _submit(self, ctx: commands.Context[commands.Bot], kind: JobKind, parsed: ParsedJob, admin: bool) -> None:
        queue = self._queue()
        request = JobRequest(kind, parsed.symbols, parsed.timeframe, parsed.from_ms, parsed.to_ms, parsed.patterns)
        await ctx.defer()
        try:
            job = await queue.submit(request, self._requester(ctx, admin))
        except JobError as exc:  # LimitReached included
            raise JobProblem(f"Not queued: {exc}.") from None
        position = await queue.store.queue_position(job.id)
        running = (await queue.store.counts()).get("running", 0)
        msg = await self._reply(ctx, state_text(job, position, running))
        if msg is not None and getattr(msg, "id", None):
            await queue.store.set_message(job.id, int(msg.id))
        log.info("job_queued", job_id=job.id, kind=kind, user=job.requester.user_id, request=request.label())

    async def _job(self, raw: str | None) -> JobRecord:
        text = (raw or "").lstrip("#")
        if not text.isdigit() or len(text) > 12:
            raise JobProblem("Give the job number, e.g. `>backtest status 12`.")
        job = await self._queue().store.get(int(text))
        if job is None:
            raise JobProblem(f"There is no job #{int(text)}.")
        return job

    # ------------------------------------------------------------------ commands
    @commands.hybrid_command(name="backtest", description="Queue a backtest: SYMBOL [TF] [period] [pattern...]; "  # type: ignore[arg-type]
                                                          "or status ID, cancel ID, queue")
    @commands.cooldown(*COMMAND_COOLDOWN, type=commands.BucketType.user)
    @app_commands.describe(request="e.g. SOL 1h 2024 spring  |  status 12  |  cancel 12  |  queue")
    async def backtest(self, ctx: commands.Context[commands.Bot], *, request: str = "") -> None:
        words = request.split()
        action = words[0].lower() if words else ""
        if not words or action == "help":
            raise JobProblem(BACKTEST_USAGE)
        if action in ("status", "cancel"):
            job = await self._job(words[1] if len(words) > 1 else None)
            if action == "status":
                await self._status(ctx, job)
            else:
                await self._cancel(ctx, job)
            return
        if action in ("queue", "list"):
            store = self._queue().store
            jobs = await store.list_jobs(states=["queued", "running"], limit=25)
            await self._reply(ctx, embed=queue_embed(jobs, await store.counts()))
            return
        admin = await self.is_admin(ctx)
        try:
            parsed = parse_backtest(request, symbols=self.deps.symbols, tfs=self.deps.timeframes,
                                    now_ms=int(self.deps.clock() * 1000),
                                    any_symbol=self.deps.all_symbols or admin, any_tf=admin)
        except ArgumentProblem as exc:
            raise JobProblem(f"{exc}.\n{BACKTEST_USAGE}") from None
        await self._submit(ctx, "backtest", parsed, admin)

    @commands.hybrid_command(name="research", description="Queue an event study of one pattern over the configured symbols")  # type: ignore[arg-type]
    @commands.cooldown(*COMMAND_COOLDOWN, type=commands.BucketType.user)
    @app_commands.describe(request="e.g. spring 4h 1y")
    async def research(self, ctx: commands.Context[commands.Bot], *, request: str = "") -> None:
        admin = await self.is_admin(ctx)
        try:
            parsed = parse_research(request, symbols=self.deps.symbols[: self.deps.research_max_symbols],
                                    tfs=self.deps.timeframes, now_ms=int(self.deps.clock() * 1000), any_tf=admin)
        except ArgumentProblem as exc:
            raise JobProblem(f"{exc}.\n{RESEARCH_USAGE}") from None
        await self._submit(ctx, "research", parsed, admin)

    async def _status(self, ctx: commands.Context[commands.Bot], job: JobRecord) -> None:
        store = self._queue().store
        if job.final:
            await self._reply(ctx, embed=result_embed(job))
            return
        position = await store.queue_position(job.id)
        await self._reply(ctx, state_text(job, position, (await store.counts()).get("running", 0)))

    async def _cancel(self, ctx: commands.Context[commands.Bot], job: JobRecord) -> None:
        if job.requester.user_id != str(ctx.author.id) and not await self.is_admin(ctx):
            raise JobProblem(f"Job #{job.id} is not yours; only its requester or an admin can cancel it.")
        if job.final:
            raise JobProblem(f"Job #{job.id} has already ended ({job.state}).")
        after = await self._queue().store.cancel(job.id)
        state = after.state if after else "gone"
        await self._reply(ctx, f"Job #{job.id}: {'cancelled' if state == 'cancelled' else f'could not cancel ({state})'}.")

    # ------------------------------------------------------------------ errors
    async def cog_command_error(self, ctx: commands.Context[commands.Bot], error: Exception) -> None:  # type: ignore[override]
        original = getattr(error, "original", error)
        if isinstance(error, commands.HybridCommandError):
            original = getattr(error.original, "original", error.original)
        if isinstance(original, JobProblem):
            await self._reply(ctx, truncate(str(original), 1900))
        elif isinstance(error, commands.CommandOnCooldown):
            await self._reply(ctx, f"One moment: try again in {max(1, round(error.retry_after))} s.")
        elif isinstance(error, commands.UserInputError):
            await self._reply(ctx, BACKTEST_USAGE if ctx.command and ctx.command.name == "backtest" else RESEARCH_USAGE)
        elif isinstance(original, StoreError):
            log.warning("job_command_store_error", error=str(original)[:200])
            await self._reply(ctx, "The job queue's database is not reachable right now; try again in a minute.")
        else:
            log.error("job_command_failed", command=ctx.command and ctx.command.name,
                      error=f"{type(original).__name__}: {str(original)[:200]}", exc_info=original)
            await self._reply(ctx, "Something went wrong; the error was logged.")


def job_post_mentions(user_id: str) -> discord.AllowedMentions:
    """Result posts ping the requester only."""
    return discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(id=int(user_id))]) \
        if user_id.isdigit() else NO_MENTIONS
