"""Build the trader the configuration asks for, and the face it shows to the app and to Discord.

- ``off``: no trader at all -- nothing is constructed that could sign or send a request;
- ``paper``: :class:`~src.trading.paper.PaperTrader` (no keys, no network);
- ``demo`` / ``live``: :class:`~src.trading.live.ExchangeTrader` on the signed REST base and the user-data
  WebSocket of the mode (Config.trade_rest_url / trade_ws_url), HMAC or Ed25519 signing.
"""

from __future__ import annotations

from typing import Protocol

from src.config import Config
from src.storage.trading_records import OrderRecord, PositionRecord, TradingStore
from src.trading.alerts import AlertSink
from src.trading.base import PnlReport, TraderBase, TraderSettings
from src.trading.budget import RequestBudget
from src.trading.clock import ExchangeClock
from src.trading.exchange import BinanceFuturesExchange
from src.trading.live import ExchangeTrader
from src.trading.paper import PaperStore, PaperTrader
from src.trading.rest import BinanceTradeRest
from src.trading.safety import SafetyLimits
from src.trading.signing import Ed25519Signer, HmacSigner, Signer


class TradingSetupError(RuntimeError):
    """The configuration asks for trading that cannot run (message says what to fix)."""


class TradingControl(Protocol):
    """What Discord's trading commands use."""

    mode: str

    async def kill(self, actor: str, reason: str = ...) -> str: ...

    async def resume(self, actor: str) -> str: ...

    async def flatten(self, actor: str) -> str: ...

    async def open_position_list(self) -> list[PositionRecord]: ...

    async def recent_order_list(self, limit: int = ...) -> list[OrderRecord]: ...

    async def pnl(self) -> PnlReport: ...

    def status_line(self) -> str: ...


def trader_settings(config: Config) -> TraderSettings:
    mode = config.trading_mode
    if mode == "off":
        raise TradingSetupError("TRADING_MODE is off")
    return TraderSettings(
        mode=mode,  # type: ignore[arg-type]
        words=config.trading_words,
        act_on=config.trading_act_on,
        position_size_usdt=config.position_size_usdt,
        leverage=config.leverage,
        margin_type=config.margin_type,
        commission=config.backtest_commission,
        horizon_candles=config.outcome_horizon_candles,
        initial_equity=config.backtest_initial_balance,
        limits=SafetyLimits(
            max_open_positions=config.max_open_positions,
            max_orders_per_day=config.max_orders_per_day,
            daily_loss_limit_pct=config.daily_loss_limit_pct,
            error_limit=config.trading_error_limit,
            error_window_s=config.trading_error_window_seconds,
        ),
    )


def make_signer(config: Config) -> Signer:
    if config.binance_private_key_path is not None:
        try:
            return Ed25519Signer.from_file(config.binance_private_key_path)
        except ValueError as exc:
            raise TradingSetupError(str(exc)) from None
    if not config.binance_api_secret:
        raise TradingSetupError("BINANCE_API_SECRET (or BINANCE_PRIVATE_KEY_PATH) is required for demo and live trading")
    return HmacSigner(config.binance_api_secret)


def build_exchange(config: Config) -> tuple[BinanceFuturesExchange, ExchangeClock]:
    """The signed REST client, its typed endpoints and the server-time clock for the mode's REST base."""
    if config.trading_mode not in ("demo", "live") or not config.binance_api_key:
        raise TradingSetupError("an exchange client exists only in demo and live mode, with BINANCE_API_KEY")
    holder: list[BinanceFuturesExchange] = []

    async def fetch_time() -> int:
        return await holder[0].server_time()

    clock = ExchangeClock(fetch_time)
    rest = BinanceTradeRest(config.trade_rest_url, config.binance_api_key, make_signer(config), clock,
                            budget=RequestBudget(), recv_window_ms=config.trading_recv_window_ms)
    holder.append(BinanceFuturesExchange(rest))
    return holder[0], clock


def build_trader(config: Config, store: object, alerts: AlertSink) -> TraderBase | None:
    """The trader for TRADING_MODE (None when off). ``store`` must implement TradingStore (every backend does)."""
    if config.trading_mode == "off":
        return None
    if not isinstance(store, TradingStore):
        raise TradingSetupError(f"the store {getattr(store, 'name', store)!r} cannot hold trading records")
    settings = trader_settings(config)
    secrets = tuple(config.secret_values())
    if config.trading_mode == "paper":
        paper_store: PaperStore = store  # type: ignore[assignment]
        return PaperTrader(settings, paper_store, alerts, secrets=secrets)
    exchange, clock = build_exchange(config)
    return ExchangeTrader(settings, store, alerts, exchange, clock, ws_url=config.trade_ws_url, secrets=secrets)
