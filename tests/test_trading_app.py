"""The whole app with trading, live against the fake market AND the fake trading server:

- ``off`` (the default, even with keys configured) provably sends nothing signed: no request reaches the
  trading server, no request anywhere carries a signature or the API key, and no signed client is built;
- ``demo``: the trader starts with the app (clock, filters, account, reconcile, user-data stream), a trade
  call from the pipeline's sink opens a protected position, ``>status`` says the mode in plain words, the app
  stops cleanly leaving the position and its stop on the exchange, and a restart reconciles without
  sending anything twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from src.bot.app import App, RunOptions
from src.bot.sinks import SignalBatch
from src.config import Config
from src.market.feed import BinanceKlineFeed
from src.trading import client_ids
from src.trading.rest import BinanceTradeRest
from tests.fakes.binance import FakeBinance
from tests.fakes.binance_trading import FakeBinanceTrading
from tests.trading_harness import near_signal, until

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeBinance]:
    start_ms = int(time.time() // 300) * 300_000
    async with FakeBinance(list(SYMBOLS), ["1m"], seed=5, start_ms=start_ms) as fake:
        original = BinanceKlineFeed.from_config.__func__  # type: ignore[attr-defined]

        def with_fake_clock(cls: type[BinanceKlineFeed], *args: Any, **kw: Any) -> BinanceKlineFeed:
            feed: BinanceKlineFeed = original(cls, *args, clock=fake.clock, **kw)
            return feed

        monkeypatch.setattr(BinanceKlineFeed, "from_config", classmethod(with_fake_clock))
        yield fake


def app_env(tmp_path: Path, market: FakeBinance, exchange: FakeBinanceTrading, **extra: str) -> dict[str, str]:
    return {"SQLITE_PATH": str(tmp_path / "w.db"), "SPOOL_PATH": str(tmp_path / "s.db"),
            "CALIBRATION_PATH": str(tmp_path / "none.json"), "BINANCE_WS_URL": market.ws_url,
            "BINANCE_REST_URL": market.rest_url, "SYMBOLS": ",".join(SYMBOLS), "TIMEFRAMES": "1m",
            "WARMUP_CANDLES": "30", "HTTP_PORT": "0", "STATUS_INTERVAL_SECONDS": "0", "LOG_FORMAT": "text",
            "BINANCE_API_KEY": exchange.api_key, "BINANCE_API_SECRET": exchange.api_secret,
            "BINANCE_TRADE_REST_URL": exchange.rest_url, "BINANCE_TRADE_WS_URL": exchange.ws_url, **extra}


async def run_app(env: dict[str, str], market: FakeBinance, body: Any) -> tuple[App, int]:
    app = App(Config.from_env(env, dotenv_path=None).validate(), RunOptions(http=False))
    task = asyncio.create_task(app.run())
    await until(lambda: app.warmed_up.is_set() or task.done(), within_s=20)
    assert not task.done(), "the app stopped during start-up"
    await market.advance(2)
    await body(app)
    app.shutdown.request()
    async with asyncio.timeout(20):
        code = await task
    return app, code


async def test_off_mode_sends_nothing_signed(tmp_path: Path, market: FakeBinance, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, str]]] = []
    real_request = aiohttp.ClientSession._request

    async def recording(self: aiohttp.ClientSession, method: str, url: Any, **kw: Any) -> Any:
        sent.append((str(url), dict(kw.get("headers") or {})))
        return await real_request(self, method, url, **kw)

    def no_signed_client(*args: Any, **kw: Any) -> None:
        raise AssertionError("off mode built a signed trading client")

    monkeypatch.setattr(aiohttp.ClientSession, "_request", recording)
    monkeypatch.setattr(BinanceTradeRest, "__init__", no_signed_client)
    async with FakeBinanceTrading(clock=lambda: market.now_ms) as exchange:
        async def body(app: App) -> None:
            assert app.trading is not None and app.trading.trader is None
            snap = await app.status_snapshot()
            assert snap.trading.startswith("off (alerts only")
            await market.advance(3)

        # keys and trading URLs configured, ENABLE_TRADING left at its default (false): off
        _, code = await run_app(app_env(tmp_path, market, exchange), market, body)
    assert code == 0
    assert exchange.requests == [] and exchange.signed_requests == 0
    assert sent, "the market client should have made requests"
    assert not [u for u, _ in sent if "signature=" in u]
    assert not [h for _, h in sent if "X-MBX-APIKEY" in h]


async def test_demo_mode_trades_through_the_app_and_a_restart_reconciles(tmp_path: Path, market: FakeBinance) -> None:
    async with FakeBinanceTrading(clock=lambda: market.now_ms) as exchange:
        exchange.prices["BTCUSDT"] = market.market.minute("BTCUSDT", market.now_ms - 60_000).close
        signal = near_signal(exchange)
        seen: dict[str, Any] = {}

        async def body(app: App) -> None:
            assert app.trading is not None and app.trading.trader is not None
            trader: Any = app.trading.trader
            await until(lambda: trader.stream.connected)
            await app.pipeline.sinks[-1].publish(SignalBatch((signal,), ()))  # type: ignore[union-attr]
            await until(lambda: len(exchange.open_algo("BTCUSDT")) == 2)
            seen["status"] = (await app.status_snapshot()).trading

        env = app_env(tmp_path, market, exchange, TRADING_MODE="demo", POSITION_SIZE_USDT="500")
        _, code = await run_app(env, market, body)
        assert code == 0
        assert seen["status"].startswith("DEMO trading on 127.0.0.1") and "1 open / max 3" in seen["status"]
        qty = exchange.position("BTCUSDT")
        assert qty > 0 and {a["clientAlgoId"] for a in exchange.open_algo()} == {
            client_ids.stop_id(signal.id, 0), client_ids.target_id(signal.id, 0)}

        async def after_restart(app: App) -> None:
            trader: Any = app.trading.trader  # type: ignore[union-attr]
            await until(lambda: trader.stream.connected and trader.reconciles >= 2)

        submissions = dict(exchange.entry_submissions)
        _, code = await run_app(env, market, after_restart)
        assert code == 0
        assert dict(exchange.entry_submissions) == submissions  # nothing sent again
        assert exchange.position("BTCUSDT") == qty and len(exchange.open_algo()) == 2
