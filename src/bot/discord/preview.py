"""``--discord-preview DIR``: every Discord message a replay would post, per destination, written to files.

The preview runs the REAL outbox (:class:`~src.bot.discord.outbox.OutboxSender`: routes, filters, notification
modes, grouping, follow-ups, status-line edits) against :class:`PreviewPoster` destinations that write instead of
posting. Without any Discord destination configured it previews the one the signals channel would be (trade
calls, watch notes per WATCH_NOTES, follow-ups). Nothing is posted anywhere, and no signal is too old to preview.

Layout, per destination ``DIR/<route name>/``:

- ``NNNN-signal-<signal id>.json`` / ``.png``: the message payload exactly as it would be sent (content, embeds,
  allowed mentions, flags) and each chart; ``NNNN-follow_up-<event>-<signal id>.json``: a follow-up, a reply to
  the message ``reply_to`` names;
- ``messages.jsonl``: the channel's sequence, one line per message (or ``edit`` of an original's status line),
  ordered by the candle close it belongs to: ``seq``, ``at`` (UTC), ``type``, ``message_id``, ``reply_to``,
  ``signal_ids``, ``event``, ``file``, ``charts``;
- ``index.html``: the same sequence drawn like a channel (open it in a browser), the status lines as edited.

``DIR/index.html`` links the destinations. Progress (messages written so far) is available from
:meth:`DiscordPreview.progress`.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import structlog

from src.analysis.follow_ups import FollowUp
from src.analysis.types import Signal, iso_to_ms
from src.bot.discord.charts import ChartRenderer
from src.bot.discord.destinations import Destination, configured_destinations, discord_signal_kinds
from src.bot.discord.embeds import FOLLOW_UP_RE, with_status
from src.bot.discord.messages import MessageBuilder, OutgoingMessage, ViewCache
from src.bot.discord.outbox import OutboxSender
from src.bot.sinks import SignalBatch
from src.config import Config
from src.config.discord_routes import FollowUpMode, RouteKind, RouteSpec
from src.storage.base import Store

log = structlog.get_logger(__name__)

_SAFE_RE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(slots=True)
class PreviewEntry:
    seq: int
    at_ms: int
    type: str  # "signal" | "follow_up" | "edit"
    message_id: str
    file: str
    signal_ids: tuple[str, ...]
    reply_to: str | None = None
    event: str | None = None
    charts: tuple[str, ...] = ()
    mode: str | None = None


@dataclass(slots=True)
class PreviewPoster:
    """A destination that writes each message into ``directory`` instead of posting it."""

    directory: Path
    destination: str
    name: str
    entries: list[PreviewEntry] = field(default_factory=list)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)  # message id -> payload (originals get edited)
    files: dict[str, str] = field(default_factory=dict)  # message id -> its JSON file name
    _next_id: int = 1_000_000

    async def ready(self) -> bool:
        return True

    async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
        return {}

    async def find_posted_follow_ups(self, keys: Sequence[tuple[str, str]], originals: Mapping[str, str],
                                     since_ms: int) -> dict[tuple[str, str], str]:
        return {}

    async def post(self, message: OutgoingMessage) -> str:
        return await asyncio.to_thread(self._write, message, "signal", None, None)

    async def post_follow_up(self, message: OutgoingMessage, original_message_id: str, mode: FollowUpMode) -> str:
        return await asyncio.to_thread(self._write, message, "follow_up", original_message_id, mode)

    async def edit_status(self, original_message_id: str, signal_id: str, status: str) -> bool:
        return await asyncio.to_thread(self._edit, original_message_id, signal_id, status)

    def _write(self, message: OutgoingMessage, kind: str, reply_to: str | None, mode: str | None) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._next_id += 1
        mid = str(self._next_id)
        seq = len(self.entries) + 1
        event = None
        if kind == "follow_up":
            found = FOLLOW_UP_RE.search(str(message.embeds[0].footer.text or "")) if message.embeds else None
            event = found.group(1) if found else None
        stem = f"{seq:04d}-{kind}" + (f"-{event}" if event else "") + f"-{message.signal_ids[0] if message.signal_ids else mid}"
        payload = message.payload()
        _write_json(self.directory / f"{stem}.json", payload)
        charts = []
        for i, (_name, data) in enumerate(message.files):
            chart = f"{stem}.png" if i == 0 else f"{stem}-{i + 1}.png"
            (self.directory / chart).write_bytes(data)
            charts.append(chart)
        self.payloads[mid] = payload
        self.files[mid] = f"{stem}.json"
        self.entries.append(PreviewEntry(seq, _message_time(message), kind, mid, f"{stem}.json", message.signal_ids,
                                         reply_to, event, tuple(charts), mode))
        return mid

    def _edit(self, original_message_id: str, signal_id: str, status: str) -> bool:
        payload = self.payloads.get(original_message_id)
        if payload is None:
            return False
        embeds = with_status([discord.Embed.from_dict(e) for e in payload["embeds"]], signal_id, status)
        if embeds is None:
            return False
        payload["embeds"] = [e.to_dict() for e in embeds]
        _write_json(self.directory / self.files[original_message_id], payload)
        at = max((e.at_ms for e in self.entries if e.reply_to == original_message_id), default=0)
        self.entries.append(PreviewEntry(len(self.entries) + 1, at, "edit", original_message_id,
                                         self.files[original_message_id], (signal_id,), event="status: " + status))
        return True

    def ordered(self) -> list[PreviewEntry]:
        """The channel as it would have looked: by candle close, then in the order written."""
        return sorted(self.entries, key=lambda e: (e.at_ms, e.seq))

    def write_index(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = []
        for e in self.ordered():
            lines.append(json.dumps({"seq": e.seq, "at": _iso(e.at_ms), "type": e.type, "message_id": e.message_id,
                                     "reply_to": e.reply_to, "signal_ids": list(e.signal_ids), "event": e.event,
                                     "mode": e.mode, "file": e.file, "charts": list(e.charts)}, ensure_ascii=False))
        (self.directory / "messages.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        (self.directory / "index.html").write_text(render_channel_html(self), encoding="utf-8")


class DiscordPreview:
    """A :class:`~src.bot.sinks.SignalSink` (and follow-up listener) previewing every destination into ``directory``."""

    name = "discord-preview"

    def __init__(self, directory: Path, config: Config, store: Store, *, renderer: ChartRenderer | None = None) -> None:
        self.directory = Path(directory)
        self._own_renderer = renderer is None
        self.renderer = renderer or ChartRenderer()
        self.views = ViewCache()
        # candles: the store, for signals whose batch view no longer covers them (replay analyses in batches)
        self.builder = MessageBuilder(self.renderer, candles=store, views=self.views,
                                      utc_offset_minutes=config.display_utc_offset)
        destinations = configured_destinations(config) or [_default_destination(config)]
        used: set[str] = set()
        self.senders: list[OutboxSender] = []
        self.posters: list[PreviewPoster] = []
        for dest in destinations:
            folder = _SAFE_RE.sub("_", dest.name) or "destination"
            while folder in used:
                folder += "_"
            used.add(folder)
            poster = PreviewPoster(self.directory / folder, dest.key, dest.name)
            # the real sender, every kind it would post, nothing too old in a replay, no subscriptions in a replay DB
            plain = Destination(dest.key, dest.name, dest.kinds, route=dest.route, mention_roles=dest.mention_roles,
                                notifications=dest.notifications, follow_up_mode=dest.follow_up_mode)
            self.senders.append(OutboxSender(store, poster, self.builder, max_age_s=0, target=plain))
            self.posters.append(poster)
        self._lock = asyncio.Lock()
        self._drains: set[asyncio.Task[None]] = set()
        self.failed = 0

    @property
    def written(self) -> int:
        return sum(1 for p in self.posters for e in p.entries if e.type != "edit")

    def progress(self) -> str:
        signals = sum(1 for p in self.posters for e in p.entries if e.type == "signal")
        follow_ups = sum(1 for p in self.posters for e in p.entries if e.type == "follow_up")
        return f"preview: {signals} signal message(s), {follow_ups} follow-up(s) in {len(self.posters)} destination(s)"

    async def publish(self, batch: SignalBatch) -> None:
        for signal in batch.signals:
            view = batch.view_for(signal.symbol, signal.timeframe)
            if view is not None:
                self.views.put(signal.id, view)
        await self._drain()

    def follow_up_recorded(self, signal: Signal, follow_up: FollowUp) -> None:
        task = asyncio.ensure_future(self._drain())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self) -> None:
        async with self._lock:  # one pass at a time: a sender is not re-entrant
            for sender in self.senders:
                try:
                    while await sender.drain_once():
                        pass
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a preview problem must not stop a replay
                    self.failed += 1
                    log.warning("discord_preview_failed", destination=sender.destination,
                                error=f"{type(exc).__name__}: {str(exc)[:200]}")

    async def close(self) -> None:
        """Post what is left (follow-ups of the last candles), then write every destination's index."""
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)
        await self._drain()
        for poster in self.posters:
            await asyncio.to_thread(poster.write_index)
        await asyncio.to_thread(self._write_top_index)
        if self._own_renderer:
            self.renderer.close()
        log.info("discord_preview_written", directory=str(self.directory), messages=self.written)

    def _write_top_index(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        items = "".join(f'<li><a href="{html.escape(p.directory.name)}/index.html">{html.escape(p.name)}</a> '
                        f"({sum(1 for e in p.entries if e.type != 'edit')} messages)</li>" for p in self.posters)
        (self.directory / "index.html").write_text(
            f"<!doctype html><meta charset=utf-8><title>WyEli preview</title><h1>WyEli Discord preview</h1><ul>{items}</ul>",
            encoding="utf-8")


def _default_destination(config: Config) -> Destination:
    """What the signals channel would get: the preview of a configuration without Discord."""
    kinds: set[RouteKind] = set(discord_signal_kinds(config))
    if config.watch_notes == "channel":
        kinds.add("watch")
    return Destination("preview:signals", "signals", frozenset(kinds), route=RouteSpec("signals"),
                       notifications=dict(config.discord_notifications), follow_up_mode=config.discord_follow_ups)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)


def _message_time(message: OutgoingMessage) -> int:
    """The candle close a message belongs to: the newest embed timestamp."""
    times = []
    for e in message.embeds:
        if e.timestamp is not None:
            times.append(int(e.timestamp.timestamp() * 1000))
    return max(times, default=0)


def _iso(ms: int) -> str:
    from src.analysis.types import ms_to_iso

    return ms_to_iso(ms) if ms > 0 else ""


# ---------------------------------------------------------------------------------------------- the channel page
_CSS = """body{background:#313338;color:#dbdee1;font:15px/1.4 sans-serif;max-width:860px;margin:2em auto}
.msg{margin:1.2em 0;padding-left:.8em}.meta{color:#949ba4;font-size:12px}.reply{border-left:2px solid #4e5058;
margin-left:1em;padding-left:.8em}.embed{background:#2b2d31;border-left:4px solid var(--c);border-radius:4px;
padding:.6em .9em;margin:.4em 0;max-width:720px}.title{font-weight:600;color:#f2f3f5}.field{display:inline-block;
vertical-align:top;min-width:30%;margin:.3em 1em .3em 0}.field.full{display:block}.fname{font-weight:600;color:#f2f3f5;
font-size:13px}.foot{color:#949ba4;font-size:12px;margin-top:.4em}img{max-width:100%;border-radius:4px;margin-top:.4em}
.content{white-space:pre-wrap}.desc,.fval{white-space:pre-wrap}"""


def _md(text: str) -> str:
    out = html.escape(text)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)


def _embed_html(e: Mapping[str, Any], charts: Sequence[str]) -> str:
    colour = f"#{int(e.get('color') or 0x4E5058):06x}"
    parts = [f'<div class=embed style="--c:{colour}">']
    if e.get("title"):
        parts.append(f"<div class=title>{_md(str(e['title']))}</div>")
    if e.get("description"):
        parts.append(f"<div class=desc>{_md(str(e['description']))}</div>")
    for f in e.get("fields") or ():
        cls = "field" if f.get("inline") else "field full"
        parts.append(f"<div class='{cls}'><div class=fname>{_md(str(f.get('name', '')))}</div>"
                     f"<div class=fval>{_md(str(f.get('value', '')))}</div></div>")
    image = (e.get("image") or {}).get("url", "")
    if image.startswith("attachment://"):
        name = image.removeprefix("attachment://")
        chart = next((c for c in charts if name.removesuffix(".png") in c or len(charts) == 1), None)
        if chart:
            parts.append(f'<img src="{html.escape(chart)}" alt="chart">')
    if e.get("footer"):
        parts.append(f"<div class=foot>{_md(str(e['footer'].get('text', '')))}</div>")
    parts.append("</div>")
    return "".join(parts)


def render_channel_html(poster: PreviewPoster) -> str:
    """The destination's messages as a Discord-like page (originals shown with their final status lines)."""
    rows = []
    for e in poster.ordered():
        if e.type == "edit":
            rows.append(f"<div class='msg meta'>{html.escape(_iso(e.at_ms))} · edited the status line of message "
                        f"{html.escape(e.message_id)}: {html.escape((e.event or '').removeprefix('status: '))}</div>")
            continue
        payload = poster.payloads.get(e.message_id, {})
        charts = e.charts
        body = "".join(_embed_html(x, charts) for x in payload.get("embeds") or ())
        content = f"<div class=content>{_md(str(payload.get('content') or ''))}</div>" if payload.get("content") else ""
        silent = " · silent" if payload.get("flags") == 4096 else ""
        cls = "msg reply" if e.reply_to else "msg"
        reply = f" · reply to message {html.escape(e.reply_to)} ({e.mode})" if e.reply_to else ""
        rows.append(f"<div class='{cls}' id=m{html.escape(e.message_id)}><div class=meta>WyEli · "
                    f"{html.escape(_iso(e.at_ms))} · message {html.escape(e.message_id)}{reply}{silent}</div>"
                    f"{content}{body}</div>")
    return (f"<!doctype html><meta charset=utf-8><title>WyEli preview · {html.escape(poster.name)}</title>"
            f"<style>{_CSS}</style><h2># {html.escape(poster.name)} <span class=meta>({html.escape(poster.destination)})"
            f"</span></h2>{''.join(rows)}")


def payload_time(payload: Mapping[str, Any]) -> int:
    """The newest embed timestamp of a written payload (epoch ms), 0 without one."""
    stamps = [iso_to_ms(str(e["timestamp"])) for e in payload.get("embeds") or () if e.get("timestamp")]
    return max(stamps, default=0)
