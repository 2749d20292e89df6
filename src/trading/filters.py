"""Symbol trading rules from ``GET /fapi/v1/exchangeInfo`` and the rounding that obeys them.

Filters used (Binance USDT-M):
- PRICE_FILTER ``tickSize``: trigger prices are rounded to the nearest tick;
- LOT_SIZE ``minQty`` / ``maxQty`` / ``stepSize`` and MARKET_LOT_SIZE (the same for MARKET orders):
  a market quantity is rounded DOWN to the market step (never more than asked) and must lie in range;
- MIN_NOTIONAL ``notional``: quantity x price must reach it (5 USDT on most symbols).
Decimals are exact (``Decimal`` from Binance's strings); :func:`fmt` writes them without an exponent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from src.trading.errors import LocalRejection


@dataclass(frozen=True, slots=True)
class SymbolRules:
    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal


def _dec(value: Any, what: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{what}: not a number ({value!r})") from exc
    if not d.is_finite() or d < 0:
        raise ValueError(f"{what}: not a finite non-negative number ({value!r})")
    return d


def rules_from_symbol(entry: dict[str, Any]) -> SymbolRules:
    """Parse one ``symbols[]`` entry of exchangeInfo; raises ValueError naming what is missing or wrong."""
    symbol = str(entry.get("symbol", "?"))
    filters = {str(f.get("filterType")): f for f in entry.get("filters", []) if isinstance(f, dict)}
    try:
        price, lot = filters["PRICE_FILTER"], filters["LOT_SIZE"]
    except KeyError as exc:
        raise ValueError(f"{symbol}: exchangeInfo has no {exc.args[0]} filter") from None
    market = filters.get("MARKET_LOT_SIZE", lot)
    notional = filters.get("MIN_NOTIONAL", {})
    rules = SymbolRules(
        symbol=symbol,
        tick_size=_dec(price.get("tickSize"), f"{symbol} tickSize"),
        step_size=_dec(lot.get("stepSize"), f"{symbol} stepSize"),
        min_qty=_dec(lot.get("minQty"), f"{symbol} minQty"),
        max_qty=_dec(lot.get("maxQty"), f"{symbol} maxQty"),
        market_step_size=_dec(market.get("stepSize"), f"{symbol} market stepSize"),
        market_min_qty=_dec(market.get("minQty"), f"{symbol} market minQty"),
        market_max_qty=_dec(market.get("maxQty"), f"{symbol} market maxQty"),
        min_notional=_dec(notional.get("notional", "0"), f"{symbol} notional"),
    )
    if rules.tick_size == 0 or rules.market_step_size == 0:
        raise ValueError(f"{symbol}: tickSize and stepSize must be > 0")
    return rules


def fmt(d: Decimal) -> str:
    """A decimal as Binance wants it: plain notation, no exponent, no trailing zeros."""
    text = format(d.normalize(), "f")
    return text if "." not in text else text.rstrip("0").rstrip(".") or "0"


def round_to(value: float | Decimal, step: Decimal, rounding: str) -> Decimal:
    v = Decimal(str(value))
    return (v / step).quantize(Decimal(1), rounding=rounding) * step


def trigger_price(rules: SymbolRules, price: float) -> Decimal:
    """A stop/target trigger rounded to the nearest tick."""
    p = round_to(price, rules.tick_size, ROUND_HALF_UP)
    if p <= 0:
        raise LocalRejection(f"{rules.symbol}: price {price} rounds to {p} at tick {rules.tick_size}")
    return p


def market_quantity(rules: SymbolRules, notional_usdt: float, price: float) -> Decimal:
    """The MARKET order quantity for ``notional_usdt`` at ``price``, rounded down to the market step;
    raises LocalRejection (with the numbers) when it breaks MARKET_LOT_SIZE or MIN_NOTIONAL."""
    if not price > 0 or not notional_usdt > 0:
        raise LocalRejection(f"{rules.symbol}: cannot size {notional_usdt} USDT at price {price}")
    qty = round_to(Decimal(str(notional_usdt)) / Decimal(str(price)), rules.market_step_size, ROUND_DOWN)
    if qty < rules.market_min_qty or qty <= 0:
        raise LocalRejection(f"{rules.symbol}: {notional_usdt} USDT at {price} is {qty}, below the minimum quantity "
                             f"{fmt(rules.market_min_qty)}; raise POSITION_SIZE_USDT")
    if qty > rules.market_max_qty:
        raise LocalRejection(f"{rules.symbol}: quantity {qty} is above the market maximum {fmt(rules.market_max_qty)}")
    if qty * Decimal(str(price)) < rules.min_notional:
        raise LocalRejection(f"{rules.symbol}: notional {fmt(qty * Decimal(str(price)))} USDT is below the minimum "
                             f"{fmt(rules.min_notional)} USDT; raise POSITION_SIZE_USDT")
    return qty
