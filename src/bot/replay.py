"""Replay: kline CSV files fed through the live pipeline instead of the WebSocket.

Candles of all files are merged in order of their close time (a 1m file and a 1h file interleave
as they would live). ``speed`` is a time multiplier: 60 plays one minute of market time per
second; None ("max") plays as fast as the pipeline takes it, in chunks. The pipeline never looks
at the wall clock, so replayed candles from 2019 behave exactly like live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import structlog

from src.analysis import timeframes
from src.analysis.types import Candle
from src.market.klines_csv import KlineFile

log = structlog.get_logger(__name__)
CHUNK = 2000


class CandleSink(Protocol):
    async def on_candles(self, candles: Sequence[Candle], source: str) -> None: ...


def merged(files: Sequence[KlineFile]) -> Iterator[Candle]:
    """All candles of ``files`` ordered by (close time, shorter timeframe first, symbol, file)."""

    def keyed(i: int, f: KlineFile) -> Iterator[tuple[tuple[int, int, str, int], Candle]]:
        rank = timeframes.sort_key(f.timeframe)
        for c in f.candles:
            yield (c.close_time_ms, rank, c.symbol, i), c

    # each file is sorted already: a k-way merge keeps it O(n log k)
    for _, candle in heapq.merge(*(keyed(i, f) for i, f in enumerate(files)), key=lambda item: item[0]):
        yield candle


async def replay_files(
    files: Sequence[KlineFile], sink: CandleSink, *, speed: float | None = None, stop: asyncio.Event | None = None,
    on_progress: Callable[[int, int, int], None] | None = None, progress_every_s: float = 5.0,
) -> int:
    """Feed every candle to ``sink``; returns how many were fed (fewer if ``stop`` was set). ``on_progress(fed,
    total, close ms of the last candle fed)`` is called at most every ``progress_every_s`` seconds and at the end."""
    total = sum(len(f.candles) for f in files)
    progress = _Progress(on_progress, total, progress_every_s)
    log.info("replay starting", files=[str(f.path) for f in files], candles=total, speed=speed or "max")
    fed = 0
    chunk: list[Candle] = []
    prev_close: int | None = None
    for candle in merged(files):
        if stop is not None and stop.is_set():
            break
        if speed is None:
            chunk.append(candle)
            if len(chunk) >= CHUNK:
                await sink.on_candles(chunk, "replay")
                fed += len(chunk)
                progress.tick(fed, chunk[-1].close_time_ms + 1)
                chunk = []
                await asyncio.sleep(0)
            continue
        if prev_close is not None and candle.close_time_ms > prev_close:
            delay = (candle.close_time_ms - prev_close) / 1000 / speed
            if stop is None:
                await asyncio.sleep(delay)
            else:  # a slow pace waits up to an interval (hours at speed 1): a stop must not wait for it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
        prev_close = candle.close_time_ms
        await sink.on_candles([candle], "replay")
        fed += 1
        progress.tick(fed, candle.close_time_ms + 1)
    if chunk and not (stop is not None and stop.is_set()):
        await sink.on_candles(chunk, "replay")
        fed += len(chunk)
        progress.last_close_ms = chunk[-1].close_time_ms + 1
    progress.done(fed)
    log.info("replay finished", candles=fed, of=total)
    return fed


class _Progress:
    """Calls ``report`` at most every ``every_s`` seconds of wall time (and once at the end)."""

    def __init__(self, report: Callable[[int, int, int], None] | None, total: int, every_s: float) -> None:
        self.report = report
        self.total = total
        self.every_s = every_s
        self.last_at = time.monotonic()
        self.last_close_ms = 0

    def tick(self, fed: int, close_ms: int) -> None:
        self.last_close_ms = close_ms
        if self.report is not None and time.monotonic() - self.last_at >= self.every_s:
            self.last_at = time.monotonic()
            self.report(fed, self.total, close_ms)

    def done(self, fed: int) -> None:
        if self.report is not None:
            self.report(fed, self.total, self.last_close_ms)
