"""Shared pieces for the trading tests, the chaos test and the chaos benchmark: signals near the fake
exchange's clock, a demo trader wired to a fake, and a polling wait (a safety limit, not a timing assertion)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.analysis.types import Signal, ms_to_iso, signal_id
from src.config import Config
from src.storage.sqlite_store import SqliteStore
from src.trading.alerts import LogAlerts
from src.trading.live import ExchangeTrader
from src.trading.service import build_exchange, trader_settings
from src.trading.user_stream import UserDataStream
from tests.fakes.binance_trading import FakeBinanceTrading

MINUTE = 60_000


def near_signal(fake: FakeBinanceTrading, symbol: str = "BTCUSDT", direction: str = "LONG", *, risk_pct: float = 0.01,
                rr: float = 2.0, pattern: str = "spring", kind: str = "trade", minutes_ago: int = 0, salt: int = 0,
                entry: float | None = None) -> Signal:
    """A 1m signal confirmed on the last closed minute of the fake's clock, entry at the fake's price."""
    now = fake.now_ms()
    candle = now - now % MINUTE - MINUTE * (1 + minutes_ago)
    price = entry if entry is not None else fake.price(symbol)
    sign = 1 if direction == "LONG" else -1
    stop = price * (1 - sign * risk_pct)
    target = price * (1 + sign * risk_pct * rr)
    sid = signal_id(symbol, "1m", candle, f"{pattern}{salt}" if salt else pattern, direction)
    return Signal(id=sid, symbol=symbol, timeframe="1m", pattern=pattern, direction=direction,  # type: ignore[arg-type]
                  confidence=0.8, raw_confidence=0.8, entry=price, stop_loss=stop, take_profits=(target,),
                  candle_time_ms=candle, generated_at=ms_to_iso(candle + MINUTE - 1), reasons=("test",),
                  analyzer_version="t", config_hash="t", kind=kind)  # type: ignore[arg-type]


def demo_config(fake: FakeBinanceTrading, tmp_path: Path, **extra: str) -> Config:
    env = {"TRADING_MODE": "demo", "BINANCE_API_KEY": fake.api_key, "BINANCE_API_SECRET": fake.api_secret,
           "BINANCE_TRADE_REST_URL": fake.rest_url, "BINANCE_TRADE_WS_URL": fake.ws_url,
           "SQLITE_PATH": str(tmp_path / "t.db"), "POSITION_SIZE_USDT": "1000", "LEVERAGE": "2",
           "MAX_OPEN_POSITIONS": "10", "MAX_ORDERS_PER_DAY": "1000", "TRADING_ERROR_LIMIT": "1000", **extra}
    return Config.from_env(env).validate()


class FastStream(UserDataStream):
    """The real stream with test-sized back-off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from src.market.backoff import Backoff

        kwargs.setdefault("backoff", Backoff(0.05, 0.2))
        super().__init__(*args, **kwargs)


def make_trader(config: Config, store: SqliteStore, *, alerts: LogAlerts | None = None, timeout_s: float = 0.5,
                **kw: Any) -> ExchangeTrader:
    exchange, clock = build_exchange(config)
    exchange.rest.timeout_s = timeout_s
    exchange.rest.max_wait_s = 3.0
    opts: dict[str, Any] = {"reconcile_every_s": 3600.0, "account_every_s": 3600.0, "resolve_max_delay_s": 0.2,
                            "not_found_grace_ms": 200, "stream_factory": FastStream}
    opts.update(kw)
    return ExchangeTrader(trader_settings(config), store, alerts or LogAlerts(), exchange, clock,
                          ws_url=config.trade_ws_url, secrets=tuple(config.secret_values()), **opts)


async def until(cond: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110 - polling state spread over the trader and the fake
            await asyncio.sleep(0.02)


def _busy(trader: ExchangeTrader) -> bool:
    return bool(trader._queue.qsize() or trader._resolving or trader.lock.locked())


async def settle(trader: ExchangeTrader, within_s: float = 10.0) -> None:
    """Wait until the entry queue is empty, no entry is being resolved, and the lock is free (twice, 20 ms apart:
    a stream event may be on its way)."""
    async with asyncio.timeout(within_s):
        for _ in range(2):
            while _busy(trader):  # noqa: ASYNC110 - polling the trader's state
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.02)
