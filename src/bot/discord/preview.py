"""Preview sink: the Discord messages WyEli would post, written to files instead (``--discord-preview DIR``).

For every signal of a published batch: ``DIR/<signal id>.json`` holds the message payload exactly as
it would be sent (``{"content": ..., "embeds": [Embed.to_dict(), ...]}``) and ``DIR/<signal id>.png``
the chart, rendered from the batch's market view (or from the store's candles when the view was taken
after a replay batch that moved past the signal). Nothing is posted anywhere.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import structlog

from src.bot.discord.charts import ChartRenderer
from src.bot.discord.messages import MessageBuilder, ViewCache
from src.bot.sinks import SignalBatch
from src.storage.base import CandleStore

log = structlog.get_logger(__name__)


class DiscordPreviewSink:
    """A :class:`~src.bot.sinks.SignalSink` writing previews into ``directory`` (created if missing)."""

    name = "discord-preview"

    def __init__(self, directory: Path, *, renderer: ChartRenderer | None = None, candles: CandleStore | None = None) -> None:
        self.directory = Path(directory)
        self._own_renderer = renderer is None
        self.renderer = renderer or ChartRenderer()
        self.views = ViewCache()
        # candles: the store, for signals whose batch view no longer covers them (replay analyses in batches)
        self.builder = MessageBuilder(self.renderer, candles=candles, views=self.views)
        self.written = 0
        self.failed = 0

    async def publish(self, batch: SignalBatch) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        for signal in batch.signals:
            view = batch.view_for(signal.symbol, signal.timeframe)
            if view is not None:
                self.views.put(signal.id, view)
            try:
                message = await self.builder.build([signal])
                await asyncio.to_thread(self._write, signal.id, message.payload(), message.files)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a preview problem must not stop a replay
                self.failed += 1
                log.warning("discord_preview_failed", signal_id=signal.id, error=f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            self.written += 1

    def _write(self, signal_id: str, payload: dict[str, object], files: tuple[tuple[str, bytes], ...]) -> None:
        path = self.directory / f"{signal_id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        tmp.replace(path)
        for _name, data in files:
            (self.directory / f"{signal_id}.png").write_bytes(data)

    async def close(self) -> None:
        if self._own_renderer:
            self.renderer.close()
