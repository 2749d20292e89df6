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
from collections.abc import Iterator, Sequence
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
    files: Sequence[KlineFile], sink: CandleSink, *, speed: float | None = None, stop: asyncio.Event | None = None
) -> int:
    """Feed every candle to ``sink``; returns how many were fed (fewer if ``stop`` was set)."""
    total = sum(len(f.candles) for f in files)
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
    if chunk and not (stop is not None and stop.is_set()):
        await sink.on_candles(chunk, "replay")
        fed += len(chunk)
    log.info("replay finished", candles=fed, of=total)
    return fed
