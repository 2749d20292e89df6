"""User-data stream events (the ``/private`` WebSocket), parsed into dataclasses.

Samples (fields used; unknown fields are ignored, an unknown event type parses to None)::

    {"e": "ORDER_TRADE_UPDATE", "E": 1568879465651, "T": 1568879465650,
     "o": {"s": "BTCUSDT", "c": "wyE-...", "S": "BUY", "o": "MARKET", "q": "0.001", "ap": "9000", "x": "TRADE",
           "X": "FILLED", "i": 8886774, "l": "0.001", "z": "0.001", "L": "9000", "n": "0.0036", "R": false,
           "rp": "0"}}
    {"e": "ALGO_UPDATE", "T": 1750515742297, "E": 1750515742303,
     "o": {"caid": "wyS0-...", "aid": 2148719, "at": "CONDITIONAL", "o": "STOP_MARKET", "s": "BNBUSDT", "S": "SELL",
           "q": "0", "X": "CANCELED", "ai": "", "ap": "0", "aq": "0", "tp": "750", "cp": true, "rm": ""}}
    {"e": "ACCOUNT_UPDATE", "E": 1564745798939, "T": 1564745798938,
     "a": {"m": "ORDER", "B": [{"a": "USDT", "wb": "122624.12", "cw": "100.12", "bc": "50.12"}],
           "P": [{"s": "BTCUSDT", "pa": "0", "ep": "0.0", "up": "0", "ps": "BOTH"}]}}
    {"e": "listenKeyExpired", "E": 1576653824250, "listenKey": "..."}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


def _f(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    event_ms: int
    symbol: str
    client_order_id: str
    side: str
    order_type: str
    execution_type: str
    status: str
    order_id: str
    last_qty: float
    last_price: float
    cum_qty: float
    avg_price: float
    commission: float
    realized_profit: float
    reduce_only: bool


@dataclass(frozen=True, slots=True)
class AlgoUpdate:
    event_ms: int
    client_algo_id: str
    algo_id: str
    symbol: str
    side: str
    order_type: str
    status: str
    trigger_price: float
    executed_qty: float
    avg_price: float
    reason: str


@dataclass(frozen=True, slots=True)
class PositionChange:
    symbol: str
    amount: float
    entry_price: float
    unrealized_pnl: float


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    event_ms: int
    reason: str
    wallet_balance: float | None  # USDT
    positions: tuple[PositionChange, ...]


@dataclass(frozen=True, slots=True)
class ListenKeyExpired:
    event_ms: int


UserEvent = OrderUpdate | AlgoUpdate | AccountUpdate | ListenKeyExpired


def parse_event(text: str | bytes) -> UserEvent | None:
    """One frame of the user-data stream; None for unknown or malformed ones (the caller counts them)."""
    try:
        d = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(d, dict):
        return None
    if isinstance(d.get("data"), dict) and "stream" in d:  # a combined-stream wrapper
        d = d["data"]
    kind = d.get("e")
    at = int(_f(d.get("E")))
    o = d.get("o")
    if kind in ("ORDER_TRADE_UPDATE", "ALGO_UPDATE") and not isinstance(o, dict):
        return None
    o = o if isinstance(o, dict) else {}
    if kind == "ORDER_TRADE_UPDATE":
        return OrderUpdate(at, str(o.get("s", "")), str(o.get("c", "")), str(o.get("S", "")), str(o.get("o", "")),
                           str(o.get("x", "")), str(o.get("X", "")), str(o.get("i", "")), _f(o.get("l")), _f(o.get("L")),
                           _f(o.get("z")), _f(o.get("ap")), _f(o.get("n")), _f(o.get("rp")), bool(o.get("R", False)))
    if kind == "ALGO_UPDATE":
        return AlgoUpdate(at, str(o.get("caid", "")), str(o.get("aid", "")), str(o.get("s", "")), str(o.get("S", "")),
                          str(o.get("o", "")), str(o.get("X", "")), _f(o.get("tp")), _f(o.get("aq")), _f(o.get("ap")),
                          str(o.get("rm", "")))
    if kind == "ACCOUNT_UPDATE":
        a = d.get("a") if isinstance(d.get("a"), dict) else {}
        wallet = next((_f(b.get("wb")) for b in a.get("B", []) if isinstance(b, dict) and b.get("a") == "USDT"), None)
        positions = tuple(PositionChange(str(p.get("s", "")), _f(p.get("pa")), _f(p.get("ep")), _f(p.get("up")))
                          for p in a.get("P", []) if isinstance(p, dict) and p.get("ps", "BOTH") == "BOTH")
        return AccountUpdate(at, str(a.get("m", "")), wallet, positions)
    if kind == "listenKeyExpired":
        return ListenKeyExpired(at)
    return None
