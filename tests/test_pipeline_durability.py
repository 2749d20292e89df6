"""No signal is lost or doubled when the process dies between the candle write and the signal write, or
between two signals of one candle: the pipeline commits a batch's signals together with each stream's
"analysed up to" watermark, and a restart re-analyses every stored candle after the watermark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from src.analysis.engine import AnalysisSettings
from src.analysis.types import Candle, Signal
from src.bot.pipeline import Pipeline
from src.storage.sqlite_store import SqliteStore
from tests.breakout import twin_breakout_engine
from tests.candlegen import random_walk

SETTINGS = AnalysisSettings(min_confidence=0.5, cooldown_seconds=3600)
STREAMS = (("BTCUSDT", "15m"), ("ETHUSDT", "15m"))


class Crash(BaseException):
    """The process dies here (kill -9): nothing after this point runs."""


class DyingStore:
    """Delegates to a real store; the process 'dies' when the ``die_at``-th signal would be written."""

    def __init__(self, inner: SqliteStore, die_at: int) -> None:
        self.inner = inner
        self.die_at = die_at
        self.written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save_signal(self, signal: Signal) -> bool:
        self.written += 1
        if self.written >= self.die_at:
            raise Crash
        return await self.inner.save_signal(signal)

    async def commit_analysis(self, signals: Sequence[Signal], analysed_to: Any) -> None:
        if self.written + len(signals) >= self.die_at:
            raise Crash  # dies before (or while) the one transaction commits: none of it lands
        self.written += len(signals)
        await self.inner.commit_analysis(signals, analysed_to)


def pipeline(store: Any) -> Pipeline:
    return Pipeline(settings=SETTINGS, timeframes=("15m",), store=store, build_from_smaller=False, window=2000,
                    engine_factory=lambda sym, tf: twin_breakout_engine(sym, tf, SETTINGS))


def market() -> dict[tuple[str, str], list[Candle]]:
    return {(s, tf): random_walk(700, symbol=s, timeframe=tf, seed=i + 3, vol=0.01) for i, (s, tf) in enumerate(STREAMS)}


async def feed(p: Pipeline, store: SqliteStore, data: dict[tuple[str, str], list[Candle]]) -> None:
    """What the feed does on start: per stream a warm-up batch (or a backfill from the newest stored candle),
    then live candles one close at a time (both streams in one batch)."""
    rest: dict[tuple[str, str], list[Candle]] = {}
    for stream, candles in data.items():
        last = await store.last_open_time(*stream)
        todo = [c for c in candles if last is None or c.open_time_ms > last]
        batch = [c for c in todo if c.open_time_ms < candles[500].open_time_ms]
        if batch:
            await p.on_candles(batch, "warmup" if last is None else "backfill")
        rest[stream] = [c for c in todo if c.open_time_ms >= candles[500].open_time_ms]
    for i in range(max(len(v) for v in rest.values())):
        await p.on_candles([v[i] for v in rest.values() if i < len(v)], "live")


async def start(store: SqliteStore) -> Pipeline:
    p = pipeline(store)
    await p.start()
    for stream in STREAMS:
        await p.prime(*stream, 2000)
    return p


async def stored_signals(store: SqliteStore) -> list[Signal]:
    return sorted(await store.recent_signals(limit=100_000), key=lambda s: s.id)


async def undisturbed(tmp_path: Path) -> list[Signal]:
    store = SqliteStore(tmp_path / "undisturbed.db")
    await store.open()
    p = await start(store)
    await feed(p, store, market())
    await p.close()
    out = await stored_signals(store)
    await store.close()
    return out


@pytest.mark.parametrize("die_at", [1, 2, 3, 8, 9, 25, 40, 41])
async def test_a_process_killed_at_any_signal_write_loses_and_doubles_nothing(tmp_path: Path, die_at: int) -> None:
    expected = await undisturbed(tmp_path)
    assert len(expected) > 45 and len({s.candle_time_ms for s in expected}) < len(expected)  # twin signals per candle
    store = SqliteStore(tmp_path / "killed.db")
    await store.open()
    with pytest.raises(Crash):
        await feed(await start(DyingStore(store, die_at)), store, market())  # type: ignore[arg-type]
    assert await store.load_candles("BTCUSDT", "15m")  # the candles of the batch in flight were stored
    p = await start(store)  # the restart
    await feed(p, store, market())
    await p.close()
    assert await stored_signals(store) == expected
    await store.close()
