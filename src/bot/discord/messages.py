"""One outgoing Discord message for a group of signals: content, embeds and chart attachments.

Used by the outbox (bot channel and webhook) and by the preview sink, so all three produce the same
payload. Signals confirmed on the same candle close are grouped (at most 10 embeds, 6000 characters
in total); each embed shows its own chart through ``attachment://<signal id>.png``.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import discord
import structlog

from src.analysis.types import AnalyzerState, Candle, Signal
from src.bot.discord.charts import ChartRenderer, spec_for_signal
from src.bot.discord.embeds import CONTENT_MAX, EMBEDS_PER_MESSAGE, TOTAL_MAX, chart_filename, fit_total, signal_embed, truncate
from src.bot.evidence_text import evidence_line
from src.bot.status import MarketView
from src.storage.base import CandleStore, StoreError

log = structlog.get_logger(__name__)

CHART_CANDLES = 120
MIN_VIEW_CANDLES = 30  # fewer candles before the signal than this make a useless chart
NO_MENTIONS = discord.AllowedMentions.none()


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """What one post contains. ``files`` are (filename, PNG bytes): a fresh ``discord.File`` is made
    per attempt because a File is consumed by a send."""

    signal_ids: tuple[str, ...]
    content: str | None
    embeds: tuple[discord.Embed, ...]
    files: tuple[tuple[str, bytes], ...] = ()

    def discord_files(self) -> list[discord.File]:
        return [discord.File(io.BytesIO(data), filename=name) for name, data in self.files]

    def payload(self) -> dict[str, Any]:
        """The JSON body Discord receives (without the attachments): {"content", "embeds"}."""
        return {"content": self.content, "embeds": [e.to_dict() for e in self.embeds]}

    def without_files(self) -> OutgoingMessage:
        """The degraded form used when Discord rejects the upload: same embeds, no images."""
        embeds = []
        for e in self.embeds:
            copy = e.copy()
            copy.set_image(url=None)
            embeds.append(copy)
        return OutgoingMessage(self.signal_ids, self.content, tuple(embeds), ())


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
        return truncate(f"{kind} {s.symbol} {s.timeframe} {s.pattern} {s.direction} · {evidence_line(s.evidence)}",
                        CONTENT_MAX)
    trades = sum(1 for s in signals if s.kind == "trade")
    counts = ", ".join(x for x in (f"{trades} trade call{'s' * (trades != 1)}" if trades else "",
                                   f"{len(signals) - trades} watch note{'s' * (len(signals) - trades != 1)}"
                                   if len(signals) - trades else "") if x)
    names = ", ".join(f"{s.symbol} {s.timeframe} {s.pattern} ({'trade call' if s.kind == 'trade' else 'watch note'})"
                      for s in signals)
    return truncate(f"**{counts}** on the {signals[0].generated_at} close: {names}", CONTENT_MAX)


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
                 views: ViewCache | None = None, chart_candles: int = CHART_CANDLES) -> None:
        self.renderer = renderer
        self.candles = candles
        self.views = views or ViewCache()
        self.chart_candles = chart_candles

    async def _chart_inputs(self, signal: Signal) -> tuple[Sequence[Candle], Sequence[AnalyzerState]]:
        """Candles up to the signal candle, and the analyzers' states when they describe that very candle.

        The live view is used when it ends exactly at the signal candle (a live close). A view taken later
        (replay and catch-up analyse many candles per batch) keeps its candles only if it still holds at least
        ``MIN_VIEW_CANDLES`` up to the signal, and never its states (levels and pivots of a later moment);
        otherwise candles come from the store."""
        view = self.views.get(signal.id)
        if view is not None and view.candles:
            upto = [c for c in view.candles if c.open_time_ms <= signal.candle_time_ms]
            if view.candles[-1].open_time_ms == signal.candle_time_ms:
                return upto, view.states
            if len(upto) >= MIN_VIEW_CANDLES or self.candles is None:
                return upto, ()
        if self.candles is None:
            return (), ()
        try:
            candles = await self.candles.load_candles(signal.symbol, signal.timeframe, end_ms=signal.candle_time_ms,
                                                      limit=self.chart_candles)
        except StoreError as exc:
            log.warning("chart_candles_unavailable", signal_id=signal.id, error=str(exc)[:200])
            return (), ()
        return candles, ()

    async def build(self, signals: Sequence[Signal], *, charts: bool = True) -> OutgoingMessage:
        embeds: list[discord.Embed] = []
        files: list[tuple[str, bytes]] = []
        for s in signals[:EMBEDS_PER_MESSAGE]:
            png: bytes | None = None
            if charts and self.renderer is not None:
                candles, states = await self._chart_inputs(s)
                if candles:
                    png = await self.renderer.render(spec_for_signal(s, candles, states))
            name = chart_filename(s.id)
            embeds.append(signal_embed(s, image_filename=name if png else None))
            if png:
                files.append((name, png))
        fitted = fit_total(embeds, TOTAL_MAX)
        kept = {e.footer.text for e in fitted}
        ids = tuple(s.id for s, e in zip(signals, embeds, strict=False) if e.footer.text in kept)
        files = [f for f in files if f[0].removesuffix(".png") in ids]
        return OutgoingMessage(ids, message_content([s for s in signals if s.id in ids]), tuple(fitted), tuple(files))
