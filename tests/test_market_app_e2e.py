"""The whole app (live mode) against the fake Binance, storing into a tmp SQLite file.

Asserts the candles table ends up holding every closed candle of every stream exactly once, with
Binance's final values, across a mid-candle connection drop and a hole without a disconnect.
The app builds its feed with ``BinanceKlineFeed.from_config``; the test wraps it to pass the fake's
market clock (the fake's market time is not the wall clock).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from src.bot.app import App, RunOptions
from src.config import Config
from src.market.feed import BinanceKlineFeed
from tests.fakes.binance import FakeBinance

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TFS = ("1m", "5m")


async def eventually(cond: Callable[[], bool], within_s: float = 20.0) -> None:
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110 - polling state spread over the app and the fake
            await asyncio.sleep(0.02)


def newest_closed(fake: FakeBinance, symbol: str, tf: str) -> int:
    return fake.closed_candles(symbol, tf, since_ms=fake.now_ms - 3_600_000)[-1].open_time_ms


async def test_app_stores_every_closed_candle_exactly_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Market time near the wall clock (on a 5m boundary), so the store's retention keeps the candles.
    start_ms = int(time.time() // 300) * 300_000
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=21, start_ms=start_ms) as fake:
        original = BinanceKlineFeed.from_config.__func__  # type: ignore[attr-defined]

        def with_fake_clock(cls: type[BinanceKlineFeed], *args: Any, **kw: Any) -> BinanceKlineFeed:
            feed: BinanceKlineFeed = original(cls, *args, clock=fake.clock, **kw)
            return feed

        monkeypatch.setattr(BinanceKlineFeed, "from_config", classmethod(with_fake_clock))
        db = tmp_path / "wyeli.db"
        env = {
            "SQLITE_PATH": str(db), "SPOOL_PATH": str(tmp_path / "spool.db"),
            "CALIBRATION_PATH": str(tmp_path / "none.json"),
            "BINANCE_WS_URL": fake.ws_url, "BINANCE_REST_URL": fake.rest_url,
            "SYMBOLS": ",".join(SYMBOLS), "TIMEFRAMES": ",".join(TFS), "WARMUP_CANDLES": "60",
            "WS_RECONNECT_DELAY": "0.01", "WS_MAX_RECONNECT_DELAY": "0.05", "HTTP_PORT": "0",
            "STATUS_INTERVAL_SECONDS": "0", "LOG_FORMAT": "text",
        }
        app = App(Config.from_env(env, dotenv_path=None).validate(), RunOptions(http=False))
        run = asyncio.create_task(app.run())
        await eventually(lambda: app.warmed_up.is_set())
        await fake.wait_for_connections(1)

        def caught_up() -> bool:
            last = {(s.symbol, s.timeframe): s.last_candle_ms for s in app.feed.stats().streams}
            return all(last.get((sym, tf)) == newest_closed(fake, sym, tf) for sym in SYMBOLS for tf in TFS)

        await fake.advance(6)  # past a 5m close: each stream gets a live candle
        await eventually(caught_up)
        await fake.send_partials()
        await fake.drop_connections()  # mid-candle
        await fake.advance(3)
        await fake.wait_for_connections(2)
        await fake.advance(3, send=False)  # a hole without a disconnect
        await fake.advance(6)
        await eventually(caught_up)

        app.shutdown.request()
        async with asyncio.timeout(20):
            code = await run
    assert code == 0

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT symbol, timeframe, open_time, close_time, open, high, low, close, volume, trades "
            "FROM candles ORDER BY symbol, timeframe, open_time"
        ).fetchall()
    by_stream: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        by_stream.setdefault((row[0], row[1]), []).append(row)
    assert set(by_stream) == {(s, t) for s in SYMBOLS for t in TFS}
    for (sym, tf), got in by_stream.items():
        expected = fake.closed_candles(sym, tf, since_ms=got[0][2])
        assert len(expected) >= 60 + 2
        assert got == [(c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close,
                        c.volume, c.trades) for c in expected], (sym, tf)


async def test_a_shutdown_during_the_start_up_priming_stops_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Priming reads every stream's history from the store (1 500+ streams with SYMBOLS=ALL): a SIGTERM
    # meanwhile must not wait for all of it.
    from src.bot.pipeline import Pipeline

    primed = asyncio.Event()

    async def endless_prime(self: Pipeline, symbol: str, timeframe: str, limit: int, **kw: Any) -> int:
        primed.set()
        await asyncio.Event().wait()
        return 0

    monkeypatch.setattr(Pipeline, "prime", endless_prime)
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=3) as fake:
        env = {
            "SQLITE_PATH": str(tmp_path / "w.db"), "SPOOL_PATH": str(tmp_path / "spool.db"),
            "CALIBRATION_PATH": str(tmp_path / "none.json"),
            "BINANCE_WS_URL": fake.ws_url, "BINANCE_REST_URL": fake.rest_url,
            "SYMBOLS": ",".join(SYMBOLS), "TIMEFRAMES": ",".join(TFS), "HTTP_PORT": "0",
            "STATUS_INTERVAL_SECONDS": "0", "LOG_FORMAT": "text",
        }
        app = App(Config.from_env(env, dotenv_path=None).validate(), RunOptions(http=False))
        run = asyncio.create_task(app.run())
        await eventually(primed.is_set)
        app.shutdown.request()
        async with asyncio.timeout(20):  # guards against waiting forever, not a timing assertion
            code = await run
    assert code == 0


async def test_a_restart_heals_a_store_holding_a_candle_from_the_future(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An earlier version stored a bogus closed frame dated 20 minutes ahead: its backfill would have started
    # after it and every real candle would have been dropped as "late". Now it is deleted at start, logged,
    # and the stream is backfilled with Binance's real candles.
    import dataclasses

    from structlog.testing import capture_logs

    from src.storage.sqlite_store import SqliteStore

    start_ms = int(time.time() // 300) * 300_000
    async with FakeBinance(list(SYMBOLS), list(TFS), seed=22, start_ms=start_ms) as fake:
        original = BinanceKlineFeed.from_config.__func__  # type: ignore[attr-defined]

        def with_fake_clock(cls: type[BinanceKlineFeed], *args: Any, **kw: Any) -> BinanceKlineFeed:
            feed: BinanceKlineFeed = original(cls, *args, clock=fake.clock, **kw)
            return feed

        monkeypatch.setattr(BinanceKlineFeed, "from_config", classmethod(with_fake_clock))
        db = tmp_path / "wyeli.db"
        store = SqliteStore(db)
        await store.open()
        history = fake.closed_candles("BTCUSDT", "1m", since_ms=fake.now_ms - 60 * 60_000)
        future = dataclasses.replace(fake.market.candle("BTCUSDT", "1m", fake.now_ms + 20 * 60_000), high=1e6)
        await store.upsert_candles([*history, future])
        await store.commit_analysis([], {("BTCUSDT", "1m"): future.open_time_ms})
        await store.close()
        env = {
            "SQLITE_PATH": str(db), "SPOOL_PATH": str(tmp_path / "spool.db"),
            "CALIBRATION_PATH": str(tmp_path / "none.json"),
            "BINANCE_WS_URL": fake.ws_url, "BINANCE_REST_URL": fake.rest_url,
            "SYMBOLS": ",".join(SYMBOLS), "TIMEFRAMES": ",".join(TFS), "WARMUP_CANDLES": "60",
            "WS_RECONNECT_DELAY": "0.01", "WS_MAX_RECONNECT_DELAY": "0.05", "HTTP_PORT": "0",
            "STATUS_INTERVAL_SECONDS": "0", "LOG_FORMAT": "text",
        }
        app = App(Config.from_env(env, dotenv_path=None).validate(), RunOptions(http=False))
        with capture_logs() as logs:
            run = asyncio.create_task(app.run())
            await eventually(lambda: app.warmed_up.is_set())
            await fake.wait_for_connections(1)
            await fake.advance(6)

            def caught_up() -> bool:
                last = {(s.symbol, s.timeframe): s.last_candle_ms for s in app.feed.stats().streams}
                return all(last.get((sym, tf)) == newest_closed(fake, sym, tf) for sym in SYMBOLS for tf in TFS)

            await eventually(caught_up)
            assert all(s.fresh for s in app.feed.stats().streams)
            app.shutdown.request()
            async with asyncio.timeout(20):
                assert await run == 0
    assert any(e["event"].startswith("stored candles from the future dropped") for e in logs)
    store = SqliteStore(db)
    await store.open()
    got = await store.load_candles("BTCUSDT", "1m")
    assert got == fake.closed_candles("BTCUSDT", "1m", since_ms=got[0].open_time_ms)
    await store.close()
