"""The trader inside the bot process: built from the configuration, started before market data flows,
fed by the pipeline, stopped after it (issue 13).

- ``off`` (the default): nothing is built; :attr:`TradingRunner.trader` is None and the status says so.
- ``paper``: the paper trader is a signal sink and a candle observer of the pipeline.
- ``demo`` / ``live``: the exchange trader is a signal sink; ``start()`` measures Binance's clock, loads the
  filters, proves the key with an account read and reconciles. A refusal by Binance (bad key, bad
  permissions) stops the start with a clear error; an exchange that cannot be reached is retried (1 s
  doubling to 60 s) until it answers or the bot is stopped.
Alerts go to the log always, and to Discord when it is configured (src/bot/discord/trading_alerts.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from src.analysis.types import Candle
from src.bot.sinks import SignalBatch
from src.config import Config
from src.storage.base import StoreError
from src.trading.alerts import AlertSink, FanOutAlerts, LogAlerts
from src.trading.base import TraderBase
from src.trading.errors import ExchangeError, NotSent, TradingError
from src.trading.service import TradingSetupError, build_trader

log = structlog.get_logger(__name__)


class TradingStartError(RuntimeError):
    """Trading is configured but cannot start (the message says what to fix)."""


class _TraderSink:
    """The trader as a pipeline SignalSink; closing is the runner's job (after the pipeline has finished)."""

    name = "trading"

    def __init__(self, trader: TraderBase, gate: Callable[[], bool]) -> None:
        self.trader = trader
        self.gate = gate

    async def publish(self, batch: SignalBatch) -> None:
        if not self.gate():  # a follower (or a leader that lost its lease) never trades (issue 16)
            return
        await self.trader.publish(batch)

    async def close(self) -> None:
        return None


class _TraderObserver:
    def __init__(self, trader: TraderBase, gate: Callable[[], bool]) -> None:
        self.trader = trader
        self.gate = gate

    async def on_candles(self, candles: Sequence[Candle]) -> None:
        if self.gate():
            await self.trader.on_candles(candles)


class TradingRunner:
    def __init__(self, config: Config, store: object) -> None:
        self.config = config
        self.alerts = FanOutAlerts(LogAlerts())
        # acting leader? (issue 16: set by the app from src/bot/leadership.Leadership.acting; always True alone)
        self.gate: Callable[[], bool] = lambda: True
        try:
            self.trader = build_trader(config, store, self.alerts)
        except TradingSetupError as exc:
            raise TradingStartError(str(exc)) from None

    def add_alerts(self, sink: AlertSink) -> None:
        self.alerts.add(sink)

    def sinks(self) -> list[_TraderSink]:
        return [] if self.trader is None else [_TraderSink(self.trader, lambda: self.gate())]

    def observers(self) -> list[_TraderObserver]:
        if self.trader is None or self.trader.mode != "paper":
            return []
        return [_TraderObserver(self.trader, lambda: self.gate())]

    async def start(self) -> None:
        trader = self.trader
        if trader is None:
            return
        delay = 1.0
        while True:
            try:
                await trader.start()
                return
            except ExchangeError as exc:
                raise TradingStartError(f"Binance refused the trading start ({self.config.trade_rest_url}): {exc}. "
                                        "Check BINANCE_API_KEY / BINANCE_API_SECRET, the key's futures permission and "
                                        "IP whitelist, and that the key belongs to this mode (demo keys for demo)") from None
            except StoreError as exc:
                raise TradingStartError(f"the store cannot hold trading records ({exc}); on Supabase, run "
                                        "src/storage/migrations/004_trading.sql in the SQL editor") from None
            except (NotSent, TradingError, OSError) as exc:
                log.warning("trading_start_waiting_for_exchange", error=str(exc)[:200], retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(60.0, delay * 2)

    def status_text(self) -> str:
        return self.config.trading_words if self.trader is None else self.trader.status_line()

    async def close(self) -> None:
        if self.trader is not None:
            await self.trader.close()
