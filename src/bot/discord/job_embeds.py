"""Pure builders for the job commands: the acknowledgement/progress text and the result embeds.

A backtest result shows what a user needs to judge it: trades, win rate, expected net R per trade with its
95 % bootstrap interval, the random-entry baseline (same exits, random entry times: mean E[R] with its
5-95 % range, the share of random runs the strategy beat) and the account's max drawdown; with named
patterns, one line per pattern. A research result shows each studied cell: events, net R and random R
with their intervals, the difference and the Holm-corrected p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord

from src.analysis.types import ms_to_iso
from src.bot.discord.embeds import COLOUR_INFO, COLOUR_SHORT, COLOUR_WARN, FIELD_VALUE_MAX, truncate
from src.jobs.model import JobRecord
from src.jobs.patterns import short_name

COLOUR_DONE = 0x2ECC71


def period_text(job: JobRecord) -> str:
    return f"{ms_to_iso(job.request.from_ms)[:10]} .. {ms_to_iso(job.request.to_ms - 1)[:10]}"


def job_title(job: JobRecord) -> str:
    r = job.request
    what = ", ".join(short_name(p) for p in r.patterns) or "all patterns"
    syms = ", ".join(s.removesuffix("USDT") for s in r.symbols) if r.kind == "research" else r.symbols[0]
    return f"{r.kind} #{job.id}: {syms} {r.timeframe} {period_text(job)} ({what})"


def state_text(job: JobRecord, position: int | None = None, running: int | None = None) -> str:
    """The one-paragraph text of the acknowledgement message, edited as the job moves."""
    head = f"**{truncate(job_title(job), 300)}**"
    if job.state == "queued":
        pos = f"position {position} in the queue" if position else "queued"
        extra = f" ({running} running)" if running else ""
        retry = f" — {truncate(job.progress, 200)}" if job.progress.startswith("retrying") else ""
        return f"{head}\nQueued: {pos}{extra}{retry}. I'll reply here when it is done."
    if job.state == "running":
        return f"{head}\nRunning (attempt {job.attempt}): {truncate(job.progress or 'starting', 200)}"
    if job.state == "done":
        return f"{head}\nDone: results below."
    if job.state == "cancelled":
        return f"{head}\nCancelled."
    return f"{head}\nFailed: {truncate(job.error or 'unknown error', 400)}"


def _r(v: Any) -> str:
    return "-" if v is None else f"{v:+.3f} R"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _ci(ci: Sequence[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _baseline(b: dict[str, Any] | None) -> str:
    """The random-entry comparison; '-' when report.json has none (or, after a format change, lacks a field)."""
    if not b:
        return "-"
    try:
        return (f"{b['random_expectancy_r_mean']:+.3f} R [{b['random_expectancy_r_p5']:+.2f}, "
                f"{b['random_expectancy_r_p95']:+.2f}]; beats {b['strategy_beats_share'] * 100:.0f}% of random runs")
    except (KeyError, TypeError, ValueError):
        return "-"


def _pattern_line(name: str, m: dict[str, Any]) -> str:
    n = m.get("trades") or 0
    if not n:
        return f"**{short_name(name)}**: no trades"
    b = m.get("baseline") or {}
    rnd = f"; random {b['random_expectancy_r_mean']:+.2f} R" if isinstance(b.get("random_expectancy_r_mean"), float) else ""
    return (f"**{short_name(name)}**: {n} trades, win {_pct(m.get('win_rate'))}, E[R] {_r(m.get('expectancy_r'))}"
            f"{_ci(m.get('expectancy_r_ci95'))}{rnd}")


def backtest_embed(job: JobRecord) -> discord.Embed:
    s = job.summary or {}
    e = discord.Embed(title=truncate(job_title(job), 256), colour=COLOUR_DONE)
    e.add_field(name="Trades", value=f"{s.get('trades', 0)} ({s.get('wins', 0)} won, {s.get('losses', 0)} lost, "
                                     f"{s.get('expired', 0)} expired)")
    e.add_field(name="Win rate", value=_pct(s.get("win_rate")))
    e.add_field(name="Expected R per trade (95% CI)", value=f"{_r(s.get('expectancy_r'))}{_ci(s.get('expectancy_r_ci95'))}")
    e.add_field(name="Random entries, same exits", value=truncate(_baseline(s.get("baseline")), FIELD_VALUE_MAX),
                inline=False)
    e.add_field(name="Max drawdown", value=_pct(s.get("max_drawdown")))
    e.add_field(name="Return", value=_pct(s.get("total_return")))
    e.add_field(name="Candles", value=str(s.get("candles", "-")))
    per = s.get("per_pattern") or {}
    if s.get("patterns"):
        lines = [_pattern_line(p, per.get(p) or {}) for p in s["patterns"]]
        e.add_field(name="Requested patterns", value=truncate("\n".join(lines), FIELD_VALUE_MAX), inline=False)
    sources = ", ".join(f"{d['symbol']}: {d['source']}" for d in s.get("data", []))
    e.set_footer(text=truncate(f"job #{job.id} · net R after fees · data {sources} · report.json has every metric", 2048))
    return e


def research_embed(job: JobRecord) -> discord.Embed:
    s = job.summary or {}
    e = discord.Embed(title=truncate(job_title(job), 256), colour=COLOUR_DONE)
    lines = []
    for c in s.get("cells", [])[:12]:
        net, rnd = c.get("net_r") or {}, c.get("random_r") or {}
        holm = c.get("holm_p")
        score = f" score>={c['min_score']}" if c.get("min_score") else ""
        lines.append(f"**{short_name(str(c.get('pattern')))} {c.get('timeframe')}**{score}: {c.get('n')} events, "
                     f"net {_r(net.get('mean'))} [{net.get('lo', 0):+.2f}, {net.get('hi', 0):+.2f}], "
                     f"random {_r(rnd.get('mean'))}"
                     + ("" if holm is None else f", Holm p {holm:.3f}"))
    e.description = truncate("\n".join(lines) or "no events in that period", 4000)
    streams = ", ".join(f"{d['symbol']}: {d['source']}" for d in s.get("data", []))
    e.set_footer(text=truncate(f"job #{job.id} · event study vs matched random entries · data {streams}", 2048))
    return e


def result_embed(job: JobRecord) -> discord.Embed:
    if job.state == "done":
        return backtest_embed(job) if job.request.kind == "backtest" else research_embed(job)
    colour = COLOUR_WARN if job.state == "cancelled" else COLOUR_SHORT
    e = discord.Embed(title=truncate(job_title(job), 256), colour=colour)
    e.description = "Cancelled." if job.state == "cancelled" else truncate(f"Failed: {job.error or 'unknown error'}", 4000)
    return e


def queue_embed(jobs: Sequence[JobRecord], counts: dict[str, int]) -> discord.Embed:
    e = discord.Embed(title="Backtest queue", colour=COLOUR_INFO)
    lines = []
    queued = sorted((j for j in jobs if j.state == "queued"), key=lambda j: j.id)
    for j in sorted((j for j in jobs if j.state == "running"), key=lambda j: j.id):
        lines.append(f"#{j.id} running · {truncate(job_title(j).split(': ', 1)[-1], 80)} · "
                     f"{j.requester.user_name or j.requester.user_id} · {truncate(j.progress, 80)}")
    for pos, j in enumerate(queued, 1):
        lines.append(f"#{j.id} queued ({pos}) · {truncate(job_title(j).split(': ', 1)[-1], 80)} · "
                     f"{j.requester.user_name or j.requester.user_id}")
    e.description = truncate("\n".join(lines) or "Nothing queued or running.", 4000)
    e.set_footer(text=" · ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no jobs yet")
    return e
