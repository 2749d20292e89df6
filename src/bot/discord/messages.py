"""One outgoing Discord message for a group of signals: content, embeds and chart attachments.

Used by the outbox (bot channel and webhook) and by the preview sink, so all three produce the same
payload. Signals confirmed on the same candle close are grouped (at most 10 embeds, 6000 characters
in total); each embed shows its own chart through ``attachment://<signal id>.png``.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import discord
import structlog

from src.analysis import timeframes
from src.analysis.follow_ups import FollowUp
from src.analysis.types import AnalyzerState, Candle, Signal
from src.bot.discord.charts import MAX_CANDLES, ChartRenderer, spec_for_signal, structure_window_start
from src.bot.discord.embeds import (
    CONTENT_MAX,
    EMBEDS_PER_MESSAGE,
    TOTAL_MAX,
    chart_filename,
    fit_total,
    fmt_price,
    follow_up_content,
    follow_up_embed,
    signal_close_text,
    signal_embed,
    truncate,
)
from src.bot.discord.structure import structure_of
from src.bot.discord.wording import pattern_words, status_line
from src.bot.evidence_text import evidence_line
from src.bot.status import MarketView
from src.storage.base import CandleStore, PendingFollowUp, StoreError

log = structlog.get_logger(__name__)

CHART_CANDLES = 120
MIN_VIEW_CANDLES = 30  # fewer candles before the signal than this make a useless chart
NO_MENTIONS = discord.AllowedMentions.none()


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """What one post contains. ``files`` are (filename, PNG bytes): a fresh ``discord.File`` is made
    per attempt because a File is consumed by a send. ``silent`` posts without a push notification;
    ``mention_roles`` are the only mentions the message may ping (its content starts with them)."""

    signal_ids: tuple[str, ...]
    content: str | None
    embeds: tuple[discord.Embed, ...]
    files: tuple[tuple[str, bytes], ...] = ()
    silent: bool = False
    mention_roles: tuple[int, ...] = ()

    def discord_files(self) -> list[discord.File]:
        return [discord.File(io.BytesIO(data), filename=name) for name, data in self.files]

    def allowed_mentions(self) -> discord.AllowedMentions:
        """No one but the configured roles; never @everyone, users or the author of a replied-to message."""
        if not self.mention_roles:
            return NO_MENTIONS
        return discord.AllowedMentions(everyone=False, users=False, replied_user=False,
                                       roles=[discord.Object(id=r) for r in self.mention_roles])

    def payload(self) -> dict[str, Any]:
        """The JSON body Discord receives (without the attachments): content, embeds, allowed_mentions and flags
        (4096 = SUPPRESS_NOTIFICATIONS)."""
        body: dict[str, Any] = {"content": self.content, "embeds": [e.to_dict() for e in self.embeds],
                                "allowed_mentions": self.allowed_mentions().to_dict()}
        if self.silent:
            body["flags"] = 4096
        return body

    def without_files(self) -> OutgoingMessage:
        """The degraded form used when Discord rejects the upload: same embeds, no images."""
        embeds = []
        for e in self.embeds:
            copy = e.copy()
            copy.set_image(url=None)
            embeds.append(copy)
        return replace(self, embeds=tuple(embeds), files=())

    def with_mentions(self, roles: Sequence[int]) -> OutgoingMessage:
        """The message with ``roles`` mentioned at the start of its content (and allowed to ping)."""
        if not roles:
            return self
        prefix = " ".join(f"<@&{r}>" for r in roles)
        content = truncate(f"{prefix} {self.content or ''}".strip(), CONTENT_MAX)
        return replace(self, content=content, mention_roles=tuple(roles))


def group_signals(signals: Sequence[Signal], *, max_per_message: int = EMBEDS_PER_MESSAGE) -> list[list[Signal]]:
    """Consecutive signals of the same candle close (``generated_at``) share a message, at most
    ``max_per_message`` each; order is kept."""
    groups: list[list[Signal]] = []
    for s in signals:
        if groups and groups[-1][0].generated_at == s.generated_at and len(groups[-1]) < max_per_message:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def message_content(signals: Sequence[Signal]) -> str:
    """The text above the embeds: the kind first, then the market and the evidence in one line."""
    if len(signals) == 1:
        s = signals[0]
        kind = "**TRADE CALL**" if s.kind == "trade" else "**WATCH NOTE** (not a trade call)"
        return truncate(f"{kind} {s.symbol} {s.timeframe} {pattern_words(s.pattern)} {s.direction} · "
                        f"{evidence_line(s.evidence)}", CONTENT_MAX)
    trades = sum(1 for s in signals if s.kind == "trade")
    counts = ", ".join(x for x in (f"{trades} trade call{'s' * (trades != 1)}" if trades else "",
                                   f"{len(signals) - trades} watch note{'s' * (len(signals) - trades != 1)}"
                                   if len(signals) - trades else "") if x)
    names = ", ".join(f"{s.symbol} {s.timeframe} {pattern_words(s.pattern)} "
                      f"({'trade call' if s.kind == 'trade' else 'watch note'})" for s in signals)
    return truncate(f"**{counts}** on the {signal_close_text(signals[0])} close: {names}", CONTENT_MAX)


class ViewCache:
    """The market views handed over with each published batch, by signal id (bounded LRU, 256), so the
    chart of a live signal shows the analyzers' levels and pivots; after a restart charts come from
    stored candles only."""

    def __init__(self, capacity: int = 256) -> None:
        self._items: OrderedDict[str, MarketView] = OrderedDict()
        self.capacity = capacity

    def put(self, signal_id: str, view: MarketView) -> None:
        self._items[signal_id] = view
        self._items.move_to_end(signal_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, signal_id: str) -> MarketView | None:
        return self._items.get(signal_id)


class MessageBuilder:
    """Builds :class:`OutgoingMessage` objects; charts come from the cached live view or the store."""

    def __init__(self, renderer: ChartRenderer | None, *, candles: CandleStore | None = None,
                 views: ViewCache | None = None, chart_candles: int = CHART_CANDLES, utc_offset_minutes: int = 0) -> None:
        self.renderer = renderer
        self.candles = candles
        self.views = views or ViewCache()
        self.chart_candles = chart_candles
        self.utc_offset_minutes = utc_offset_minutes

    def follow_up(self, pending: PendingFollowUp) -> OutgoingMessage:
        """The follow-up message (a reply to the original): content line and one embed, no chart."""
        sig, f = pending.signal, pending.follow_up
        return OutgoingMessage((sig.id,), follow_up_content(sig, f),
                               (follow_up_embed(sig, f, offset_minutes=self.utc_offset_minutes),))

    def status(self, signal: Signal, history: Sequence[FollowUp]) -> str:
        """The original's status line after ``history``."""
        return status_line(signal, history, [fmt_price(f.price) for f in history], self.utc_offset_minutes)

    async def _chart_inputs(self, signal: Signal) -> tuple[Sequence[Candle], Sequence[AnalyzerState]]:
        """Candles up to the signal candle, from before the start of its structure (the whole Wyckoff range, the whole
        count; at least ``chart_candles``), from the batch's live view when it covers them, else from the store. The
        chart draws the structure read from the signal itself, so it is the same live, after a restart and in a
        replay; the analyzers' states are not used."""
        start = structure_window_start(signal, structure_of(signal))
        interval = timeframes.interval_ms(signal.timeframe) if timeframes.is_interval(signal.timeframe) else 0
        first = start if start is not None else signal.candle_time_ms - (self.chart_candles - 1) * interval
        first = max(first, signal.candle_time_ms - (MAX_CANDLES - 1) * interval)
        view = self.views.get(signal.id)
        if view is not None and view.candles:
            upto = [c for c in view.candles if first <= c.open_time_ms <= signal.candle_time_ms]
            if upto and upto[0].open_time_ms <= first and upto[-1].open_time_ms == signal.candle_time_ms:
                return upto, ()
            if self.candles is None and len(upto) >= MIN_VIEW_CANDLES:
                return upto, ()
        if self.candles is None:
            return (), ()
        try:
            candles = await self.candles.load_candles(signal.symbol, signal.timeframe, start_ms=first,
                                                      end_ms=signal.candle_time_ms, limit=MAX_CANDLES)
        except StoreError as exc:
            log.warning("chart_candles_unavailable", signal_id=signal.id, error=str(exc)[:200])
            return (), ()
        return candles, ()

    async def build(self, signals: Sequence[Signal], *, charts: bool = True, status: bool = False) -> OutgoingMessage:
        """The message of ``signals`` (one candle close); ``status`` adds the status line follow-ups edit."""
        embeds: list[discord.Embed] = []
        files: list[tuple[str, bytes]] = []
        for s in signals[:EMBEDS_PER_MESSAGE]:
            png: bytes | None = None
            if charts and self.renderer is not None:
                candles, states = await self._chart_inputs(s)
                if candles:
                    png = await self.renderer.render(spec_for_signal(s, candles, states,
                                                                     offset_minutes=self.utc_offset_minutes))
            name = chart_filename(s.id)
            embeds.append(signal_embed(s, image_filename=name if png else None, offset_minutes=self.utc_offset_minutes,
                                       status=status_line(s, (), (), self.utc_offset_minutes) if status else None))
            if png:
                files.append((name, png))
        fitted = fit_total(embeds, TOTAL_MAX)
        kept = {e.footer.text for e in fitted}
        ids = tuple(s.id for s, e in zip(signals, embeds, strict=False) if e.footer.text in kept)
        files = [f for f in files if f[0].removesuffix(".png") in ids]
        return OutgoingMessage(ids, message_content([s for s in signals if s.id in ids]), tuple(fitted), tuple(files))
