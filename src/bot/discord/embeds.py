"""Pure builders: domain objects -> ``discord.Embed`` (no I/O, no client needed).

Discord's embed limits, all enforced here by truncation (never by raising):
title 256, description 4096, 25 fields, field name 256, field value 1024, footer 2048, author 256,
6000 characters in total across ALL embeds of one message, 10 embeds per message, content 2000.

The signal embed's footer starts with ``id <signal id>``: the outbox finds already-posted signals
in the channel history by that marker (:data:`FOOTER_ID_RE`), so truncation never cuts it.

What an embed says about a signal is the evidence model's estimate of the trade's net R after fees
(P(win), E[R] with its interval) and the pattern's track record, worded by :mod:`src.bot.evidence_text`;
a watch note says in its title that it is not a trade call. No raw score is shown as a "confidence".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import discord

from src.analysis import timeframes
from src.analysis.follow_ups import FollowUp
from src.analysis.types import Signal, iso_to_ms
from src.bot.analysis_api import TrackRecordView
from src.bot.discord.wording import (
    EVENT_COLOURS,
    EVENT_TITLES,
    candle_close_ms,
    close_time_text,
    fmt_time,
    follow_up_sentence,
    pattern_words,
    reason_words,
)
from src.bot.discord.wording import fmt_r as fmt_r_words
from src.bot.evidence_text import (
    KIND_SHORT,
    backtest_record_text,
    evidence_line,
    fmt_prob,
    fmt_r,
    gate_reason_text,
    kind_label,
    live_record_text,
    track_record_lines,
    why_not_a_trade_call,
)
from src.bot.status import MarketView, StatusSnapshot
from src.storage.base import LiveTrack, Mute, SignalOutcome, Subscription

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_MAX = 256
TOTAL_MAX = 6000
EMBEDS_PER_MESSAGE = 10
CONTENT_MAX = 2000

COLOUR_LONG = 0x2ECC71
COLOUR_SHORT = 0xE74C3C
COLOUR_INFO = 0x3498DB
COLOUR_WARN = 0xF1C40F
COLOUR_WATCH = 0x95A5A6  # grey: a watch note is not a trade call

ELLIPSIS = "…"
FOOTER_ID_RE = re.compile(r"\bid ([0-9a-f]{24})\b")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS


def fmt_price(price: float) -> str:
    """A price with enough decimals for its magnitude: 2 above 1000, up to 8 significant digits below."""
    if not math.isfinite(price):
        return "n/a"
    if abs(price) >= 1000:
        return f"{price:,.2f}"
    if price == 0:
        return "0"
    decimals = min(10, max(2, 5 - math.floor(math.log10(abs(price)))))
    return f"{price:.{decimals}f}"


def fmt_pct(value: float) -> str:
    return f"{value:+.2f}%" if math.isfinite(value) else "n/a"


def fmt_duration(seconds: float) -> str:
    """Compact duration: 45s, 12m, 3h 05m, 2d 04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def _ts(iso_or_ms: str | int) -> datetime | None:
    """Embed timestamp; None (no timestamp) for text that is not ISO-8601 rather than an error."""
    try:
        ms = iso_or_ms if isinstance(iso_or_ms, int) else iso_to_ms(iso_or_ms)
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _add_field(embed: discord.Embed, name: str, value: str, *, inline: bool = True) -> None:
    if len(embed.fields) >= FIELDS_MAX:
        return
    embed.add_field(name=truncate(name or "\u200b", FIELD_NAME_MAX), value=truncate(value or "\u200b", FIELD_VALUE_MAX),
                    inline=inline)


def _bullets(lines: Iterable[str], limit: int) -> str:
    """Lines as '• ' bullets, adding whole lines while they fit in ``limit``, then a '… n more' note."""
    items = [" ".join(str(x).split()) for x in lines]
    out: list[str] = []
    used = 0
    for i, item in enumerate(items):
        line = "• " + truncate(item, 700)
        rest = len(items) - i - 1
        note = f"\n… {rest} more" if rest else ""
        if used + len(line) + 1 + len(note) > limit:
            out.append(f"… {len(items) - i} more")
            break
        out.append(line)
        used += len(line) + 1
    return truncate("\n".join(out), limit)


def chart_filename(signal_id: str) -> str:
    """Attachment name of a signal's chart; the embed image refers to ``attachment://<name>``."""
    return f"{signal_id}.png"


def signal_title(signal: Signal) -> str:
    """'🟢 TRADE CALL · BTCUSDT 1h · Wyckoff spring · LONG'; a watch note says it is not a trade call first."""
    icon = ("🟢" if signal.direction == "LONG" else "🔴") if signal.kind == "trade" else "👁"
    head = f"{icon} {kind_label(signal.kind)} · "
    rest = f"{signal.symbol} {signal.timeframe} · {pattern_words(signal.pattern)} · {signal.direction}"
    return head + truncate(rest, TITLE_MAX - len(head))


def signal_close_text(signal: Signal, offset_minutes: int = 0) -> str:
    """The signal candle's close in the one time convention ('2024-05-03 14:00 UTC (16:00 UTC+2)')."""
    if timeframes.is_interval(signal.timeframe):
        return close_time_text(signal.timeframe, signal.candle_time_ms, offset_minutes)
    return truncate(signal.generated_at, 40)


def signal_footer(signal: Signal, offset_minutes: int = 0) -> str:
    """'id <signal id> · <pattern> · <analyzer version> · candle close ...': the id first (the outbox finds posted
    signals by it), then the pattern's name as ``>stats`` knows it."""
    version = truncate(signal.analyzer_version or "wyeli", 64)
    return truncate(f"id {signal.id} · {truncate(signal.pattern, 60)} · {version} · candle close "
                    f"{signal_close_text(signal, offset_minutes)}", FOOTER_MAX)


def reason_lines(signal: Signal, offset_minutes: int = 0) -> list[str]:
    """The analyzers' reasons in trader words and the one time convention (:func:`reason_words`); the Wyckoff score
    memberships read as a checklist."""
    out = []
    for r in signal.reasons:
        text = reason_words(r, signal.timeframe, offset_minutes)
        if text.startswith("Evidence: "):  # the analyzer's criteria (0..1), not the evidence model's estimate
            text = "Checklist (1 = textbook): " + text.removeprefix("Evidence: ")
        out.append(text)
    return out


def targets_text(signal: Signal) -> str:
    """One line per take-profit: price, % from entry and R multiple; the tail collapses to '… n more'."""
    if not signal.take_profits:
        return "none"
    lines = []
    for i, tp in enumerate(signal.take_profits, 1):
        pct = (tp - signal.entry) / signal.entry * 100 if signal.entry else float("nan")
        r = abs(tp - signal.entry) / signal.risk if signal.risk else float("nan")
        lines.append(f"TP{i} {fmt_price(tp)} ({fmt_pct(pct)}, {r:.2f}R)" if math.isfinite(r) else f"TP{i} {fmt_price(tp)}")
    out: list[str] = []
    for i, line in enumerate(lines):
        more = f"\n… {len(lines) - i} more"
        if sum(len(x) + 1 for x in out) + len(line) + len(more) > FIELD_VALUE_MAX:
            out.append(more.strip())
            break
        out.append(line)
    return truncate("\n".join(out), FIELD_VALUE_MAX)


def signal_colour(signal: Signal) -> int:
    if signal.kind != "trade":
        return COLOUR_WATCH
    return COLOUR_LONG if signal.direction == "LONG" else COLOUR_SHORT


STATUS_FIELD = "Status"


def signal_embed(signal: Signal, *, image_filename: str | None = None, status: str | None = None,
                 offset_minutes: int = 0) -> discord.Embed:
    """The posted signal: title (kind, symbol, timeframe, pattern, direction), colour (grey for a watch note),
    why a watch note is not a trade call, the reasons (trader words, candle-close times), the evidence (P(win), E[R]
    with its interval), entry / stop / targets, risk-reward to TP1, the pattern's track record, the status line
    follow-ups edit, footer with id, pattern, analyzer version and close."""
    why = why_not_a_trade_call(signal)
    head = f"**Not a trade call:** {why}\n" if why else ""
    body = _bullets(reason_lines(signal, offset_minutes), DESCRIPTION_MAX - len(head)) if signal.reasons else ""
    embed = discord.Embed(
        title=signal_title(signal),
        colour=signal_colour(signal),
        description=truncate(head + body, DESCRIPTION_MAX),
        timestamp=_ts(signal.generated_at),
    )
    stop_pct = (signal.stop_loss - signal.entry) / signal.entry * 100 if signal.entry else float("nan")
    rr = signal.risk_reward
    _add_field(embed, "Evidence · net R after fees", evidence_line(signal.evidence), inline=False)
    _add_field(embed, "Entry", fmt_price(signal.entry))
    _add_field(embed, "Stop", f"{fmt_price(signal.stop_loss)} ({fmt_pct(stop_pct)})")
    _add_field(embed, "Risk / reward to TP1", f"1 : {rr:.2f}" if rr is not None and math.isfinite(rr) else "n/a")
    _add_field(embed, "Targets", targets_text(signal), inline=False)
    backtest, live = track_record_lines(signal.evidence)
    _add_field(embed, truncate(f"Track record · {pattern_words(signal.pattern)} {signal.timeframe}", FIELD_NAME_MAX),
               f"{backtest}\n{live}", inline=False)
    if status is not None:  # the line follow-ups edit (issue 14)
        _add_field(embed, STATUS_FIELD, status, inline=False)
    embed.set_footer(text=signal_footer(signal, offset_minutes))
    if image_filename:
        embed.set_image(url=f"attachment://{image_filename}")
    return fit_total([embed])[0]


def fit_total(embeds: Sequence[discord.Embed], limit: int = TOTAL_MAX) -> list[discord.Embed]:
    """At most 10 embeds whose combined size is <= ``limit``: descriptions are shortened first (evenly),
    then field values, then trailing embeds are dropped. The footer (with the signal id) is never cut."""
    out = list(embeds[:EMBEDS_PER_MESSAGE])
    if sum(len(e) for e in out) <= limit:
        return out
    # shrink descriptions to an equal share of what is left after the rest of each embed
    for _ in range(3):
        excess = sum(len(e) for e in out) - limit
        if excess <= 0:
            return out
        with_desc = [e for e in out if e.description]
        if not with_desc:
            break
        share = math.ceil(excess / len(with_desc))
        for e in with_desc:
            desc = str(e.description)
            e.description = truncate(desc, max(0, len(desc) - share)) if len(desc) > share else None
    for e in out:
        if sum(len(x) for x in out) <= limit:
            return out
        for i, f in enumerate(e.fields):
            if len(str(f.value)) > 60:
                e.set_field_at(i, name=str(f.name), value=truncate(str(f.value), 60), inline=bool(f.inline))
    while len(out) > 1 and sum(len(e) for e in out) > limit:
        out.pop()
    if sum(len(e) for e in out) > limit:  # one embed still too big: titles and field names are the last resort
        e = out[0]
        e.title = truncate(str(e.title or ""), 100)
        for i, f in enumerate(e.fields):
            e.set_field_at(i, name=truncate(str(f.name), 40), value=truncate(str(f.value), 40), inline=bool(f.inline))
    return out


# ---------------------------------------------------------------------------------------------- status
def status_embed(snap: StatusSnapshot, *, max_stream_lines: int = 20) -> discord.Embed:
    """``>status``: uptime, connections, per-stream freshness, reconnects/gaps/stalls, signals, store,
    cache, trading and Discord state. With many streams the stale ones are listed first, capped at
    ``max_stream_lines`` lines plus a count."""
    fresh = sum(1 for s in snap.streams if s.fresh)
    total = len(snap.streams)
    healthy = snap.store_healthy and (fresh == total or snap.mode == "replay")
    embed = discord.Embed(
        title="WyEli status",
        colour=COLOUR_LONG if healthy else COLOUR_WARN,
        timestamp=_ts(snap.now_ms),
    )
    lines: list[str] = []
    ordered = sorted(snap.streams, key=lambda s: (s.fresh, s.symbol, s.timeframe))
    for s in ordered[:max_stream_lines]:
        age = fmt_duration((snap.now_ms - s.last_candle_ms) / 1000) if s.last_candle_ms is not None else "never"
        mark = "ok   " if s.fresh else "STALE"
        lines.append(f"{mark} {s.symbol:<12} {s.timeframe:>4}  last candle {age} ago")
    if total > max_stream_lines:
        lines.append(f"… {total - max_stream_lines} more streams (all fresh)" if all(s.fresh for s in ordered[max_stream_lines:])
                     else f"… {total - max_stream_lines} more streams")
    desc = f"**Streams:** {fresh}/{total} fresh" + ("" if snap.warmed_up else " (warming up)")
    if lines:
        desc += "\n```\n" + truncate("\n".join(lines), DESCRIPTION_MAX - len(desc) - 10) + "\n```"
    embed.description = truncate(desc, DESCRIPTION_MAX)

    _add_field(embed, "Uptime", f"{fmt_duration(snap.uptime_s)} ({snap.mode})")
    if snap.role != "single" or snap.shard != "all symbols":  # several instances (issue 16)
        _add_field(embed, "Instance", f"{snap.role_text}; {snap.shard}")
    if snap.instances:  # every instance on the database (the leader answers >status for all of them)
        _add_field(embed, "Instances", "\n".join(snap.instances), inline=False)
    conns = snap.connections
    up = sum(1 for c in conns if c.connected)
    conn_lines = [f"{up}/{len(conns)} connected"] + [
        f"{c.name}: {'up' if c.connected else 'DOWN'}, {c.streams} streams, {c.reconnects} reconnects" for c in conns[:8]
    ]
    if len(conns) > 8:
        conn_lines.append(f"… {len(conns) - 8} more")
    _add_field(embed, "WebSocket", "\n".join(conn_lines))
    reconnects = sum(c.reconnects for c in conns) or sum(s.reconnects for s in snap.streams)
    gaps = sum(s.gaps_backfilled for s in snap.streams)
    backfilled = sum(s.candles_backfilled for s in snap.streams)
    stalls = sum(s.stalls for s in snap.streams)
    _add_field(embed, "Data quality", f"reconnects {reconnects}\ngaps backfilled {gaps} ({backfilled} candles)\nstalls {stalls}")
    per_symbol = ", ".join(f"{sym} {n}" for sym, n in snap.signals_by_symbol[:15])
    if len(snap.signals_by_symbol) > 15:
        per_symbol += f", … {len(snap.signals_by_symbol) - 15} more"
    counts = (f"trade calls {snap.trade_calls} · watch notes {snap.watch_notes} · candidates {snap.candidates}"
              if snap.candidates or snap.signals_total == 0 else f"{snap.signals_total} total")
    _add_field(embed, "Signals since start", counts + (f"\n{per_symbol}" if per_symbol else ""), inline=False)
    _add_field(embed, "Last trade call / watch note", snap.last_signal_at or "none yet")
    if snap.evidence_model:
        _add_field(embed, "Evidence model", snap.evidence_model)
    store = f"{snap.store_backend}: {'ok' if snap.store_healthy else 'UNREACHABLE'}"
    if snap.spool_depth:
        store += f"\nspooled writes waiting: {snap.spool_depth}"
    _add_field(embed, "Storage", store)
    _add_field(embed, "Cache", snap.cache)
    _add_field(embed, "Trading", snap.trading)
    _add_field(embed, "Discord", snap.discord)
    if snap.notes:
        _add_field(embed, "Notes", _bullets(snap.notes, FIELD_VALUE_MAX), inline=False)
    return fit_total([embed])[0]


def status_text(snap: StatusSnapshot) -> str:
    """The same facts as :func:`status_embed` as plain text (console, logs, tests)."""
    e = status_embed(snap)
    parts = [str(e.title), str(e.description or "")]
    parts += [f"{f.name}: {f.value}" for f in e.fields]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- >signal
def market_embed(view: MarketView, *, image_filename: str | None = None, offset_minutes: int = 0) -> discord.Embed:
    """``>signal SYMBOL TF``: the analyzers' current state (even below the threshold), the last close and
    the latest signal of the market."""
    last = view.candles[-1] if view.candles else None
    embed = discord.Embed(title=truncate(f"{view.symbol} {view.timeframe} · current analysis", TITLE_MAX), colour=COLOUR_INFO)
    parts: list[str] = []
    budget = DESCRIPTION_MAX - 200
    for st in view.states:
        block = f"**{st.analyzer}** — {st.summary or 'no structure yet'}"
        if st.lines:
            block += "\n" + _bullets(st.lines, max(100, budget // max(1, len(view.states)) - len(block)))
        parts.append(block)
    embed.description = truncate("\n\n".join(parts) if parts else "No analyzer state yet (still warming up?).", DESCRIPTION_MAX)
    if last is not None:
        embed.timestamp = _ts(last.close_time_ms + 1)
        change = (last.close - last.open) / last.open * 100 if last.open else float("nan")
        closed_at = fmt_time(last.close_time_ms + 1, offset_minutes)
        _add_field(embed, "Last close", f"{fmt_price(last.close)} ({fmt_pct(change)} this candle)\n{closed_at}")
    for st in view.states:
        if st.levels:
            shown = st.levels[:8]
            text = "\n".join(f"{truncate(label, 40)}: {fmt_price(price)}" for label, price in shown)
            if len(st.levels) > 8:
                text += f"\n… {len(st.levels) - 8} more"
            _add_field(embed, f"{st.analyzer} levels", text)
    sig = view.last_signal
    if sig is None:
        _add_field(embed, "Last trade call / watch note", "none on this market yet", inline=False)
    else:
        rr = sig.risk_reward
        _add_field(
            embed,
            f"Last {'trade call' if sig.kind == 'trade' else 'watch note (not a trade call)'}",
            f"{pattern_words(sig.pattern)} {sig.direction}, candle close {signal_close_text(sig, offset_minutes)}\n"
            f"{evidence_line(sig.evidence)}\n"
            f"entry {fmt_price(sig.entry)} · stop {fmt_price(sig.stop_loss)} · "
            f"R:R to TP1 {'n/a' if rr is None else f'1 : {rr:.2f}'}\n{targets_text(sig)}",
            inline=False,
        )
    if view.candidates:
        _add_field(embed, "Latest candidates (every kind)", candidates_text(view.candidates, offset_minutes), inline=False)
    embed.set_footer(text="Analysis runs on closed candles only. Gated candidates are stored and graded, never posted; "
                          "their reason is shown above.")
    if image_filename:
        embed.set_image(url=f"attachment://{image_filename}")
    return fit_total([embed])[0]


def candidate_line(s: Signal, offset_minutes: int = 0) -> str:
    """One candidate: time (the candle close), pattern, direction, kind, the gate's reason in words, the evidence."""
    when = (close_time_text(s.timeframe, s.candle_time_ms, offset_minutes, short=True)
            if timeframes.is_interval(s.timeframe) else s.generated_at[:16].replace("T", " "))
    reason = gate_reason_text(s.gate_reason)
    head = f"`{when}` {s.pattern} {s.direction} · **{KIND_SHORT.get(s.kind, s.kind)}**"
    if s.kind != "trade" and reason:
        head += f": {reason}"
    ev = s.evidence
    tail = "" if ev is None else f" · P(win) {fmt_prob(ev.p_win)}, E[R] {fmt_r(ev.expected_r)}"
    return head + tail


def candidates_text(candidates: Sequence[Signal], offset_minutes: int = 0) -> str:
    return _lines_within([candidate_line(s, offset_minutes) for s in candidates], FIELD_VALUE_MAX)


# ---------------------------------------------------------------------------------------------- lists
def stats_embed(records: Sequence[TrackRecordView], live: Sequence[LiveTrack], *, symbol: str | None = None,
                timeframe: str | None = None, pattern: str | None = None, period: str = "") -> discord.Embed:
    """``>stats [SYMBOL] [TF] [PATTERN] [PERIOD]``: per pattern and timeframe the evidence the embeds show (out-of-sample
    backtest n, mean net R, 95 % CI; the current P(win) and E[R] with its interval) and the live record from the
    store (every tracked candidate, and the trade calls alone), narrowed by the filters; ``period`` (e.g. '30d')
    narrows the live record to candidates of that many days or weeks back (the backtest record is the model's)."""
    scope = " ".join(x for x in (symbol, timeframe, pattern, f"live: last {period}" if period else "") if x)
    embed = discord.Embed(title=f"Track record per pattern · {scope}" if scope else "Track record per pattern",
                          colour=COLOUR_INFO)
    cells = {(r.pattern, r.timeframe): r for r in records
             if (timeframe is None or r.timeframe == timeframe) and (pattern is None or pattern in r.pattern)}
    live = [t for t in live if (timeframe is None or t.timeframe == timeframe) and (pattern is None or pattern in t.pattern)]
    lives: dict[tuple[str, str], dict[str, LiveTrack]] = {}
    for t in live:
        lives.setdefault((t.pattern, t.timeframe), {})[t.population] = t
    keys = sorted(set(cells) | set(lives), key=lambda k: (k[0], _tf_rank(k[1])))
    if not keys:
        embed.description = "Nothing to show yet: no evidence model cells and no stored candidates match."
        return embed
    lines: list[str] = []
    for key in keys:
        rec = cells.get(key)
        pops = lives.get(key, {})
        lines.append(f"{truncate(key[0], 40)} {key[1]}")
        if rec is not None:
            lines.append("  " + backtest_record_text(rec.backtest_n, rec.backtest_mean_r, rec.backtest_ci))
            if rec.expected_r is not None:
                lines.append(f"  now: P(win) {fmt_prob(rec.p_win)} · E[R] {fmt_r(rec.expected_r)} "
                             f"[{_signed(rec.expected_r_lo)}, {_signed(rec.expected_r_hi)}]")
        tracked, trade = pops.get("tracked"), pops.get("trade")
        live_line = "  " + live_record_text(tracked.graded if tracked else 0, tracked.mean_r if tracked else None)
        if trade is not None and trade.graded:
            live_line += f" · trade calls n {trade.graded}, mean {fmt_r(trade.mean_r)}"
        lines.append(live_line)
    body = _lines_within(lines, DESCRIPTION_MAX - 20)
    embed.description = f"```\n{body}\n```"
    where = f" for {symbol}" if symbol else ""
    embed.set_footer(text=truncate(
        "Net R after fees under the outcome rules. Backtest = out-of-sample trades of the evidence model (all symbols); "
        f"live = graded candidates{where} from the store (the population the model is fitted on). "
        "Narrow with >stats SYMBOL TF PATTERN.", FOOTER_MAX))
    return embed


def _signed(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else fmt_r(v).removesuffix(" R")


def _tf_rank(tf: str) -> int:
    return timeframes.sort_key(tf) if timeframes.is_interval(tf) else 10**9


def help_embed(symbols: Sequence[str], timeframes: Sequence[str], *, all_symbols: bool = False) -> discord.Embed:
    embed = discord.Embed(title="WyEli commands", colour=COLOUR_INFO)
    embed.description = (
        "Prefix `>` (or mention the bot) and the same commands as slash commands.\n"
        "`>status` — uptime, streams, reconnects, signals, storage, trading\n"
        "`>signal SYMBOL [TF]` — current Wyckoff/Elliott analysis, the last trade call or watch note and the latest "
        "candidates (gated ones with their reason), with a chart (e.g. `>signal BTC`, `>signal ethusdt 4h`)\n"
        "`>signals [SYMBOL] [TF] [PATTERN] [win|loss|expired|open] [page N]` — trade calls and watch notes with their "
        "results, 10 a page (◀ ▶ buttons)\n"
        "`>stats [SYMBOL] [TF] [PATTERN] [30d]` — each pattern's track record: out-of-sample backtest and live (over the "
        "period given), net R after fees\n"
        "`>watch SYMBOL [TF] [dm]` / `>unwatch [SYMBOL] [TF] [dm]` — post a market's trade calls and their results in "
        "this channel (Manage Channels needed) or in your DMs\n"
        "`>mute [SYMBOL] [TF] DURATION [dm]` / `>unmute` — hold a market (or everything) back for a while, e.g. "
        "`>mute ETH 4h 12h`\n"
        "`>subscriptions [dm]` — what this channel (or your DMs) gets and what is muted\n"
        "`>backtest SYMBOL [TF] [period] [pattern...]` — queue a backtest (`>backtest SOL 1h 2024 spring`; "
        "`status ID`, `cancel ID`, `queue`); `>research PATTERN [TF]` — an event study\n"
        "`>help` — this message\n"
        "`>sync [guild|global]` — owners only: publish the slash commands"
    )
    _add_field(embed, "Symbols", "every USDT-M perpetual (ALL)" if all_symbols else valid_list(symbols), inline=False)
    _add_field(embed, "Timeframes", ", ".join(timeframes), inline=False)
    return embed


def valid_list(items: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … {len(items) - limit} more" if len(items) > limit else "")


def _lines_within(lines: Sequence[str], limit: int) -> str:
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        line = truncate(line, 400)
        note = f"… {len(lines) - i} more"
        if used + len(line) + 1 > limit - len(note) - 1 and i < len(lines) - 1:
            out.append(note)
            break
        if used + len(line) + 1 > limit:
            out.append(note)
            break
        out.append(line)
        used += len(line) + 1
    return truncate("\n".join(out), limit)


# ---------------------------------------------------------------------------------------------- follow-ups (issue 14)
FOLLOW_UP_RE = re.compile(r"\bfollow-up ([a-z0-9_]+) of ([0-9a-f]{24})\b")


def follow_up_footer(f: FollowUp, close_text: str) -> str:
    """'follow-up tp1 of <signal id> · candle close ...': the marker the outbox finds again after a crash (it never
    matches :data:`FOOTER_ID_RE`, which marks the signal itself)."""
    return truncate(f"follow-up {f.event} of {f.signal_id} · candle close {close_text}", FOOTER_MAX)


def follow_up_embed(signal: Signal, f: FollowUp, *, offset_minutes: int = 0) -> discord.Embed:
    """A follow-up: what happened (title, colour), the result in R after fees and the price, when (the candle close)."""
    price = fmt_price(f.price)
    title = f"{EVENT_TITLES.get(f.event, f.event)} · {signal.symbol} {signal.timeframe} · {pattern_words(signal.pattern)} " \
            f"{signal.direction}"
    close_ms = candle_close_ms(signal.timeframe, f.event_time_ms)
    kind = "trade call" if signal.kind == "trade" else "watch note (not a trade call)"
    embed = discord.Embed(title=truncate(title, TITLE_MAX), colour=EVENT_COLOURS.get(f.event, COLOUR_INFO),
                          description=truncate(follow_up_sentence(signal, f, price), DESCRIPTION_MAX),
                          timestamp=_ts(close_ms))
    posted = fmt_time(candle_close_ms(signal.timeframe, signal.candle_time_ms), offset_minutes)
    _add_field(embed, "Signal", f"{kind} of {posted}: entry {fmt_price(signal.entry)}, stop {fmt_price(signal.stop_loss)}, "
                                f"{targets_inline(signal)}", inline=False)
    _add_field(embed, "When", fmt_time(close_ms, offset_minutes))
    embed.set_footer(text=follow_up_footer(f, fmt_time(close_ms)))
    return fit_total([embed])[0]


def targets_inline(signal: Signal) -> str:
    return ", ".join(f"TP{i} {fmt_price(tp)}" for i, tp in enumerate(signal.take_profits[:6], 1)) or "no targets"


def follow_up_content(signal: Signal, f: FollowUp) -> str:
    return truncate(f"↪ **{EVENT_TITLES.get(f.event, f.event)}** {signal.symbol} {signal.timeframe} "
                    f"{pattern_words(signal.pattern)} {signal.direction}: {fmt_r_words(f.r_multiple)}", CONTENT_MAX)


def with_status(embeds: Sequence[discord.Embed], signal_id: str, status: str) -> list[discord.Embed] | None:
    """Copies of ``embeds`` (an original message's) with the status field of ``signal_id``'s embed set to ``status``;
    None when no embed carries that signal's footer id."""
    out: list[discord.Embed] = []
    found = False
    for e in embeds:
        copy = e.copy()
        if signal_id in FOOTER_ID_RE.findall(copy.footer.text or "") and not FOLLOW_UP_RE.search(copy.footer.text or ""):
            found = True
            index = next((i for i, f in enumerate(copy.fields) if f.name == STATUS_FIELD), None)
            if index is None:
                _add_field(copy, STATUS_FIELD, status, inline=False)
            else:
                copy.set_field_at(index, name=STATUS_FIELD, value=truncate(status, FIELD_VALUE_MAX), inline=False)
        out.append(copy)
    return fit_total(out) if found else None


# ---------------------------------------------------------------------------------------------- history (issue 14)
OUTCOME_TEXT = {"WIN": "TP1 hit", "LOSS": "stopped", "EXPIRED": "expired"}


def history_line(s: Signal, outcome: SignalOutcome | None, offset_minutes: int = 0) -> str:
    """One signal of ``>signals``: when (candle close), market, pattern, kind, evidence, entry/stop, result so far."""
    icon = ("🟢" if s.direction == "LONG" else "🔴") if s.kind == "trade" else "👁"
    when = close_time_text(s.timeframe, s.candle_time_ms, offset_minutes, short=True) if timeframes.is_interval(
        s.timeframe) else s.generated_at[:16]
    ev = s.evidence
    evidence = f"P(win) {fmt_prob(ev.p_win)}, E[R] {fmt_r(ev.expected_r)}" if ev is not None else "no evidence"
    result = "open" if outcome is None else f"{OUTCOME_TEXT.get(outcome.outcome, outcome.outcome)} {fmt_r(outcome.r_multiple)}"
    return (f"{icon} `{when}` **{s.symbol} {s.timeframe}** {pattern_words(s.pattern)} {s.direction} · "
            f"{KIND_SHORT.get(s.kind, s.kind)} · {evidence} · entry {fmt_price(s.entry)} stop {fmt_price(s.stop_loss)} · "
            f"**{result}**")


def history_embed(rows: Sequence[tuple[Signal, SignalOutcome | None]], *, filters: str = "", page: int = 1,
                  has_next: bool = False, offset_minutes: int = 0) -> discord.Embed:
    """``>signals``: one page of trade calls and watch notes, newest first, with their results so far."""
    title = "Trade calls and watch notes" + (f" · {filters}" if filters else "")
    embed = discord.Embed(title=truncate(title, TITLE_MAX), colour=COLOUR_INFO)
    if not rows:
        embed.description = ("Nothing on this page." if page > 1 else
                             "No trade calls or watch notes match." if filters else "No trade calls or watch notes stored yet.")
    else:
        embed.description = _lines_within([history_line(s, o, offset_minutes) for s, o in rows], DESCRIPTION_MAX)
    more = " · more: the ▶ button or `page N`" if has_next else ""
    embed.set_footer(text=truncate(f"page {page}{more} · newest first · times are candle closes · TRADE = trade call, "
                                   "WATCH = watch note (not a trade call) · results are net R after fees", FOOTER_MAX))
    return embed


# ---------------------------------------------------------------------------------------------- subscriptions (issue 14)
def _market(symbol: str, timeframe: str) -> str:
    return f"{symbol or 'everything'} {timeframe or 'every timeframe'}"


def subscriptions_embed(where: str, subs: Sequence[Subscription], mutes: Sequence[Mute], *, now_ms: int,
                        offset_minutes: int = 0, routed: str = "") -> discord.Embed:
    """``>subscriptions``: what ``where`` (this channel, or your DMs) gets and what is muted there."""
    embed = discord.Embed(title=truncate(f"Subscriptions · {where}", TITLE_MAX), colour=COLOUR_INFO)
    watched = [f"• {_market(x.symbol, x.timeframe)}" for x in subs]
    active = [m for m in mutes if m.until_ms > now_ms]
    muted = [f"• {_market(m.symbol, m.timeframe)} until {fmt_time(m.until_ms, offset_minutes)}" for m in active]
    _add_field(embed, "Watched here", _lines_within(watched, FIELD_VALUE_MAX) if watched else
               "nothing (`>watch BTC 1h` adds a market)", inline=False)
    if routed:
        _add_field(embed, "Also routed here by the configuration", routed, inline=False)
    _add_field(embed, "Muted", _lines_within(muted, FIELD_VALUE_MAX) if muted else "nothing muted", inline=False)
    embed.set_footer(text="Trade calls (and watch notes, as WATCH_NOTES says) of the watched markets are posted here, "
                          "followed by their results. >unwatch, >mute, >unmute change it.")
    return embed

