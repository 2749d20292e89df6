"""The Binance USDT-M endpoints the trader uses, with typed answers (one-way position mode).

Orders: ``POST /fapi/v1/order`` (MARKET entries and reduce-only closes, ``newOrderRespType=RESULT`` so the
answer carries the fill), ``GET /fapi/v1/order`` by ``origClientOrderId`` (-2013 = no such order).
Protective orders use the Algo Order API (since 2025-12 the old endpoint answers -4120 for them):
``POST /fapi/v1/algoOrder`` with ``algoType=CONDITIONAL``, ``type=STOP_MARKET|TAKE_PROFIT_MARKET``,
``triggerPrice``, ``closePosition=true`` (closes whatever the position is; cannot be combined with
quantity or reduceOnly) and ``clientAlgoId``; ``GET``/``DELETE /fapi/v1/algoOrder`` by ``clientAlgoId``;
``GET /fapi/v1/openAlgoOrders``. Account: ``POST /fapi/v1/leverage``, ``POST /fapi/v1/marginType``
(-4046 "no need to change" is success), ``GET /fapi/v3/positionRisk``, ``GET /fapi/v3/account``.
User data: ``POST``/``PUT``/``DELETE /fapi/v1/listenKey``. Weights follow Binance's documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from src.trading.errors import (
    NO_NEED_TO_CHANGE_MARGIN_TYPE,
    NO_SUCH_ORDER,
    UNKNOWN_ORDER_SENT,
    ExchangeError,
)
from src.trading.filters import SymbolRules, fmt, rules_from_symbol
from src.trading.rest import BinanceTradeRest

Side = Literal["BUY", "SELL"]
LIVE_ALGO_STATUSES = frozenset({"NEW", "TRIGGERING"})
FIRED_ALGO_STATUSES = frozenset({"TRIGGERED", "FINISHED"})
FINAL_ORDER_STATUSES = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"})


def _f(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True, slots=True)
class ExchangeOrder:
    client_order_id: str
    order_id: str
    symbol: str
    side: str
    order_type: str
    status: str
    orig_qty: float
    executed_qty: float
    avg_price: float
    reduce_only: bool
    update_time_ms: int

    @property
    def final(self) -> bool:
        return self.status in FINAL_ORDER_STATUSES

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ExchangeOrder:
        return cls(
            client_order_id=str(d.get("clientOrderId", "")), order_id=str(d.get("orderId", "")),
            symbol=str(d.get("symbol", "")), side=str(d.get("side", "")), order_type=str(d.get("type", "")),
            status=str(d.get("status", "")), orig_qty=_f(d.get("origQty")), executed_qty=_f(d.get("executedQty")),
            avg_price=_f(d.get("avgPrice")), reduce_only=bool(d.get("reduceOnly", False)),
            update_time_ms=int(_f(d.get("updateTime"))),
        )


@dataclass(frozen=True, slots=True)
class AlgoOrder:
    client_algo_id: str
    algo_id: str
    symbol: str
    side: str
    order_type: str
    status: str
    trigger_price: float
    close_position: bool
    executed_qty: float
    avg_price: float

    @property
    def live(self) -> bool:
        return self.status in LIVE_ALGO_STATUSES

    @property
    def fired(self) -> bool:
        return self.status in FIRED_ALGO_STATUSES

    @classmethod
    def parse(cls, d: dict[str, Any]) -> AlgoOrder:
        return cls(
            client_algo_id=str(d.get("clientAlgoId", "")), algo_id=str(d.get("algoId", "")),
            symbol=str(d.get("symbol", "")), side=str(d.get("side", "")),
            order_type=str(d.get("orderType", d.get("type", ""))), status=str(d.get("algoStatus", "")),
            trigger_price=_f(d.get("triggerPrice")), close_position=bool(d.get("closePosition", False)),
            executed_qty=_f(d.get("executedQty")), avg_price=_f(d.get("avgPrice")),
        )


@dataclass(frozen=True, slots=True)
class ExchangePosition:
    """A non-zero position (one-way mode): ``amount`` > 0 long, < 0 short."""

    symbol: str
    amount: float
    entry_price: float
    mark_price: float
    unrealized_pnl: float


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    wallet_balance: float
    unrealized_pnl: float
    margin_balance: float
    available_balance: float


class BinanceFuturesExchange:
    """Typed calls over :class:`BinanceTradeRest` (see the module docstring)."""

    def __init__(self, rest: BinanceTradeRest) -> None:
        self.rest = rest

    async def server_time(self) -> int:
        body = await self.rest.public("GET", "/fapi/v1/time")
        return int(body["serverTime"])

    async def exchange_info(self) -> tuple[dict[str, SymbolRules], list[dict[str, Any]]]:
        """Rules of every TRADING symbol, and the announced rate limits."""
        body = await self.rest.public("GET", "/fapi/v1/exchangeInfo")
        rules: dict[str, SymbolRules] = {}
        for entry in body.get("symbols", []):
            if isinstance(entry, dict) and entry.get("status") == "TRADING":
                try:
                    r = rules_from_symbol(entry)
                except ValueError:
                    continue
                rules[r.symbol] = r
        return rules, [r for r in body.get("rateLimits", []) if isinstance(r, dict)]

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        body = await self.rest.signed("POST", "/fapi/v1/leverage", {"symbol": symbol, "leverage": leverage})
        return int(body.get("leverage", 0))

    async def set_margin_type(self, symbol: str, margin_type: str) -> None:
        try:
            await self.rest.signed("POST", "/fapi/v1/marginType", {"symbol": symbol, "marginType": margin_type})
        except ExchangeError as exc:
            if exc.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:
                raise

    async def new_market_order(self, symbol: str, side: Side, quantity: Decimal, client_order_id: str, *,
                               reduce_only: bool = False) -> ExchangeOrder:
        params: dict[str, Any] = {"symbol": symbol, "side": side, "type": "MARKET", "quantity": fmt(quantity),
                                  "newClientOrderId": client_order_id, "newOrderRespType": "RESULT"}
        if reduce_only:
            params["reduceOnly"] = "true"
        return ExchangeOrder.parse(await self.rest.signed("POST", "/fapi/v1/order", params, order=True))

    async def query_order(self, symbol: str, client_order_id: str) -> ExchangeOrder | None:
        try:
            body = await self.rest.signed("GET", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": client_order_id},
                                          audited=True)
        except ExchangeError as exc:
            if exc.code == NO_SUCH_ORDER:
                return None
            raise
        return ExchangeOrder.parse(body)

    async def new_protective_order(self, symbol: str, side: Side, order_type: Literal["STOP_MARKET", "TAKE_PROFIT_MARKET"],
                                   trigger: Decimal, client_algo_id: str) -> AlgoOrder:
        params = {"algoType": "CONDITIONAL", "symbol": symbol, "side": side, "type": order_type,
                  "triggerPrice": fmt(trigger), "closePosition": "true", "workingType": "CONTRACT_PRICE",
                  "clientAlgoId": client_algo_id}
        return AlgoOrder.parse(await self.rest.signed("POST", "/fapi/v1/algoOrder", params, order=True))

    async def query_algo(self, client_algo_id: str) -> AlgoOrder | None:
        try:
            body = await self.rest.signed("GET", "/fapi/v1/algoOrder", {"clientAlgoId": client_algo_id}, audited=True)
        except ExchangeError as exc:
            if exc.code == NO_SUCH_ORDER:
                return None
            raise
        return AlgoOrder.parse(body)

    async def cancel_algo(self, client_algo_id: str) -> AlgoOrder | None:
        """Cancel one of our algo orders; None when it is no longer open (nothing to cancel)."""
        try:
            body = await self.rest.signed("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": client_algo_id})
        except ExchangeError as exc:
            if exc.code in (NO_SUCH_ORDER, UNKNOWN_ORDER_SENT):
                return None
            raise
        return AlgoOrder.parse(body)

    async def open_algo_orders(self) -> list[AlgoOrder]:
        body = await self.rest.signed("GET", "/fapi/v1/openAlgoOrders", weight=40)
        rows = body if isinstance(body, list) else body.get("orders", []) if isinstance(body, dict) else []
        return [AlgoOrder.parse(r) for r in rows if isinstance(r, dict)]

    async def positions(self) -> list[ExchangePosition]:
        body = await self.rest.signed("GET", "/fapi/v3/positionRisk", weight=5)
        out = []
        for r in body if isinstance(body, list) else []:
            amount = _f(r.get("positionAmt"))
            if amount != 0:
                out.append(ExchangePosition(str(r.get("symbol", "")), amount, _f(r.get("entryPrice")),
                                            _f(r.get("markPrice")), _f(r.get("unRealizedProfit"))))
        return out

    async def account(self) -> AccountSnapshot:
        body = await self.rest.signed("GET", "/fapi/v3/account", weight=5)
        return AccountSnapshot(_f(body.get("totalWalletBalance")), _f(body.get("totalUnrealizedProfit")),
                               _f(body.get("totalMarginBalance")), _f(body.get("availableBalance")))

    async def create_listen_key(self) -> str:
        return str((await self.rest.keyed("POST", "/fapi/v1/listenKey"))["listenKey"])

    async def keepalive_listen_key(self) -> None:
        await self.rest.keyed("PUT", "/fapi/v1/listenKey")

    async def close_listen_key(self) -> None:
        await self.rest.keyed("DELETE", "/fapi/v1/listenKey")
