"""A local fake of Binance USDT-M futures TRADING: signed REST, the Algo Order API and the ``/private``
user-data WebSocket, with its own clock, prices, positions and fills, strict about requests, and faults
on demand.

Use it from any test (no internet)::

    async with FakeBinanceTrading(prices={"BTCUSDT": 50_000.0}) as ex:
        # point BINANCE_TRADE_REST_URL at ex.rest_url and BINANCE_TRADE_WS_URL at ex.ws_url
        ex.set_price("BTCUSDT", 49_000.0)        # moves the market: stops/targets trigger and fill
        ex.fail_next("POST", "/fapi/v1/order", "timeout_after_accept")

Strictness (Binance's rules and error codes):
- ``X-MBX-APIKEY`` must be the key (else 401 -2015); SIGNED endpoints need ``timestamp``, ``recvWindow``
  (<= 60000) and ``signature`` as the LAST query parameter over exactly the preceding query string:
  HMAC-SHA256 hex with ``api_secret``, or base64 Ed25519 when ``ed25519_public_key`` is set (else -1022);
  ``timestamp < server + 1000`` and ``server - timestamp <= recvWindow`` on the FAKE's clock (else -1021);
- weights per minute (``weight_limit``) and order counts per 10 s / minute are counted in the
  ``X-MBX-USED-WEIGHT-1M`` / ``X-MBX-ORDER-COUNT-10S`` / ``X-MBX-ORDER-COUNT-1M`` headers; over the limit ->
  429 (-1003, Retry-After); requests during the 429 back-off -> 429 again, the ``ban_after``-th one -> 418
  (banned for ``ban_s``);
- orders: MARKET only on ``/fapi/v1/order`` (conditional types -> -4120, use the Algo Order API); client ids
  ``^[.A-Z:/a-z0-9_-]{1,36}$`` (-4015), unique (-4116); LOT_SIZE / MARKET_LOT_SIZE step (-1111) and range
  (-1013), MIN_NOTIONAL (-4164), margin (-2019), reduce-only that would not reduce (-2022);
- algo orders: ``algoType=CONDITIONAL``, STOP_MARKET / TAKE_PROFIT_MARKET with ``triggerPrice`` on the tick
  (-4014), ``closePosition=true`` without quantity/reduceOnly (-1106), a second close-position order of the
  same type and side (-4130), a trigger already crossed (-2021), unique ``clientAlgoId`` (-4116);
- queries: unknown order -> -2013; cancelling a finished or unknown algo order -> -2011.
Market model: one-way positions per symbol, fills at the current price (``set_price``), commission
``commission`` per side from the wallet, PnL realised on reducing fills; live algo orders trigger when the
price crosses them and close the whole position at that price. Every state change is pushed to the user
streams as ORDER_TRADE_UPDATE / ALGO_UPDATE / ACCOUNT_UPDATE.

Faults (``fail_next(method, path, kind, times=1)``): ``timeout_after_accept`` (executed, the answer never
comes), ``reset_after_accept`` (executed, then the connection is cut), ``5xx_after_accept`` (executed, 503),
``5xx`` (503, not executed), ``429``, ``418``. ``partial_fill_next(ratio)`` fills only part of the next
MARKET order (status EXPIRED). ``drop_user_streams()``, ``expire_listen_keys()``, ``mute_stream`` (events
are lost, the connection stays). Hand actions: ``close_by_hand``, ``open_by_hand``, ``cancel_algo_by_hand``.
Records: ``requests``, ``signed_requests``, ``entry_submissions`` (client id -> times it was SUBMITTED),
``duplicate_after_accept`` (client id -> submissions after it had been executed), ``accepted`` (client ids
that were executed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from aiohttp import WSMsgType, web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
CONDITIONAL_TYPES = {"STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT", "TRAILING_STOP_MARKET"}


@dataclass(frozen=True)
class SymbolSpec:
    tick: str = "0.1"
    step: str = "0.001"
    min_qty: str = "0.001"
    max_qty: str = "1000"
    min_notional: str = "5"


DEFAULT_SYMBOLS = {"BTCUSDT": SymbolSpec("0.1", "0.001", "0.001", "1000", "100"),
                   "ETHUSDT": SymbolSpec("0.01", "0.001", "0.001", "10000", "20"),
                   "SOLUSDT": SymbolSpec("0.01", "0.01", "0.01", "100000", "5")}


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    signed: bool
    keyed: bool
    status: int = 0


class BinanceFail(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _dec(v: Any) -> Decimal:
    return Decimal(str(v))


def _s(x: float | Decimal) -> str:
    return format(Decimal(str(x)).normalize(), "f")


@dataclass
class FakeBinanceTrading:
    prices: dict[str, float] = field(default_factory=lambda: {"BTCUSDT": 50_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0})
    api_key: str = "fake-api-key-0123456789"
    api_secret: str = "fake-api-secret-abcdefghij"
    ed25519_public_key: Ed25519PublicKey | None = None
    symbols: dict[str, SymbolSpec] = field(default_factory=lambda: dict(DEFAULT_SYMBOLS))
    wallet: float = 10_000.0
    commission: float = 0.0004
    clock_offset_ms: int = 0
    clock: Callable[[], int] | None = None  # the fake's own clock (ms); default: wall clock + clock_offset_ms
    weight_limit: int = 2400
    orders_per_10s: int = 300
    orders_per_minute: int = 1200
    ban_s: float = 120.0
    retry_after_s: int = 2  # the Retry-After of a 429
    ban_after: int = 10  # requests during a 429 back-off before the IP is banned (418)
    hang_s: float = 30.0
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.positions: dict[str, list[float]] = {}  # symbol -> [amount, entry price]
        self.leverage: dict[str, int] = {}
        self.margin_type: dict[str, str] = {}
        self.orders: dict[str, dict[str, Any]] = {}  # by client order id
        self.algo: dict[str, dict[str, Any]] = {}  # by client algo id
        self.listen_keys: set[str] = set()
        self.streams: list[tuple[str, web.WebSocketResponse]] = []
        self._transports: dict[int, asyncio.Transport] = {}
        self.mute_stream = False
        self.signed_requests = 0
        self.entry_submissions: Counter[str] = Counter()
        self.duplicate_after_accept: Counter[str] = Counter()
        self.accepted: list[str] = []
        self.events_sent = 0
        self._faults: deque[tuple[str, str, str]] = deque()
        self._partial: float | None = None
        self._ids = itertools.count(1000)
        self._weight: dict[int, int] = {}
        self._orders10: dict[int, int] = {}
        self._orders60: dict[int, int] = {}
        self._blocked_until = 0
        self._violations = 0
        self.banned_until = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> FakeBinanceTrading:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/fapi/{tail:.*}", self._handle)
        app.router.add_get("/private/ws/{key}", self._ws)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for _, ws in list(self.streams):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/private"

    def now_ms(self) -> int:
        return self.clock() if self.clock is not None else time.time_ns() // 1_000_000 + self.clock_offset_ms

    # ------------------------------------------------------------------ test controls
    def fail_next(self, method: str, path: str, kind: str, times: int = 1) -> None:
        for _ in range(times):
            self._faults.append((method, path, kind))

    def partial_fill_next(self, ratio: float) -> None:
        self._partial = ratio

    def price(self, symbol: str) -> float:
        return self.prices[symbol]

    async def set_price(self, symbol: str, price: float) -> None:
        """Move the market; live algo orders crossed by the move trigger and close the position at ``price``."""
        self.prices[symbol] = price
        for a in list(self.algo.values()):
            if a["symbol"] == symbol and a["algoStatus"] == "NEW" and self._crossed(a, price):
                await self._trigger(a)

    async def drop_user_streams(self) -> None:
        for _, ws in list(self.streams):
            transport = self._transports.pop(id(ws), None)
            if transport is not None:
                transport.abort()
        self.streams.clear()
        await asyncio.sleep(0)

    async def expire_listen_keys(self) -> None:
        for key, ws in list(self.streams):
            with contextlib.suppress(Exception):
                await ws.send_str(orjson.dumps({"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": key}).decode())
        self.listen_keys.clear()

    async def close_by_hand(self, symbol: str) -> None:
        pos = self.positions.get(symbol)
        if pos and pos[0] != 0:
            await self._fill(symbol, "SELL" if pos[0] > 0 else "BUY", abs(pos[0]), f"manual-{next(self._ids)}",
                             reduce_only=True)

    async def open_by_hand(self, symbol: str, amount: float) -> None:
        await self._fill(symbol, "BUY" if amount > 0 else "SELL", abs(amount), f"manual-{next(self._ids)}")

    async def cancel_algo_by_hand(self, client_algo_id: str) -> None:
        a = self.algo[client_algo_id]
        a["algoStatus"] = "CANCELED"
        await self._push_algo(a)

    def open_algo(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.algo.values() if a["algoStatus"] == "NEW" and (symbol is None or a["symbol"] == symbol)]

    def position(self, symbol: str) -> float:
        return self.positions.get(symbol, [0.0, 0.0])[0]

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        raw_query = request.query_string
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        keyed = "X-MBX-APIKEY" in request.headers
        signed = "signature" in params
        rec = Recorded(request.method, path, {k: v for k, v in params.items() if k != "signature"}, signed, keyed)
        self.requests.append(rec)
        self.signed_requests += int(signed)
        if request.method == "POST" and path in ("/fapi/v1/order", "/fapi/v1/algoOrder"):
            cid = params.get("newClientOrderId") or params.get("clientAlgoId")
            if cid:
                self.entry_submissions[cid] += 1  # every time it left the client, whatever became of it
                if cid in self.orders or cid in self.algo:
                    self.duplicate_after_accept[cid] += 1  # sent again although the exchange had executed it
        fault = self._take_fault(request.method, path)
        try:
            if fault in ("429", "418", "5xx"):
                return self._fault_response(fault)
            weight, is_order = self._cost(request.method, path)
            self._check_limits(weight, is_order)
            body = await self._dispatch(request.method, path, params, raw_query, request.headers.get("X-MBX-APIKEY"))
            status = 200
        except BinanceFail as exc:
            rec.status = exc.status
            headers = {"Retry-After": str(self.retry_after_s)} if exc.status in (429, 418) else {}
            return self._json({"code": exc.code, "msg": exc.msg}, exc.status, headers)
        rec.status = status
        if fault == "timeout_after_accept":
            await asyncio.sleep(self.hang_s)
        if fault == "reset_after_accept":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=200)
        if fault == "5xx_after_accept":
            return self._json({"code": -1000, "msg": "An unknown error occured while processing the request."}, 503)
        return self._json(body, status)

    def _take_fault(self, method: str, path: str) -> str | None:
        for i, (m, p, kind) in enumerate(self._faults):
            if m == method and p == path:
                del self._faults[i]
                return kind
        return None

    def _fault_response(self, kind: str) -> web.Response:
        now = self.now_ms()
        if kind == "429":
            self._blocked_until, self._violations = now + self.retry_after_s * 1000, 0
            return self._json({"code": -1003, "msg": "Too many requests; current limit is 2400 requests per minute."},
                              429, {"Retry-After": str(self.retry_after_s)})
        if kind == "418":
            self.banned_until = now + int(self.ban_s * 1000)
            return self._json({"code": -1003, "msg": "Way too many requests; IP banned."}, 418,
                              {"Retry-After": str(int(self.ban_s))})
        return self._json({"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}, 503)

    def _json(self, body: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
        now = self.now_ms()
        h = {"X-MBX-USED-WEIGHT-1M": str(self._weight.get(now // 60_000, 0)),
             "X-MBX-ORDER-COUNT-10S": str(self._orders10.get(now // 10_000, 0)),
             "X-MBX-ORDER-COUNT-1M": str(self._orders60.get(now // 60_000, 0)), **(headers or {})}
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=h)

    @staticmethod
    def _cost(method: str, path: str) -> tuple[int, bool]:
        if path == "/fapi/v1/openAlgoOrders":
            return 40, False
        if path in ("/fapi/v3/positionRisk", "/fapi/v3/account"):
            return 5, False
        return 1, method == "POST" and path in ("/fapi/v1/order", "/fapi/v1/algoOrder")

    def _check_limits(self, weight: int, is_order: bool) -> None:
        now = self.now_ms()
        if now < self.banned_until:
            raise BinanceFail(-1003, "Way too many requests; IP banned.", 418)
        if now < self._blocked_until:
            self._violations += 1  # requests after a 429; Binance bans repeat offenders
            if self._violations >= self.ban_after:
                self.banned_until = now + int(self.ban_s * 1000)
                raise BinanceFail(-1003, "Way too many requests; IP banned.", 418)
            raise BinanceFail(-1003, "Too many requests; current limit is 2400 requests per minute.", 429)
        minute, ten = now // 60_000, now // 10_000
        self._weight[minute] = self._weight.get(minute, 0) + weight
        if self._weight[minute] > self.weight_limit:
            self._blocked_until, self._violations = now + self.retry_after_s * 1000, 0
            raise BinanceFail(-1003, "Too many requests; current limit is 2400 requests per minute.", 429)
        if is_order:
            self._orders10[ten] = self._orders10.get(ten, 0) + 1
            self._orders60[minute] = self._orders60.get(minute, 0) + 1
            if self._orders10[ten] > self.orders_per_10s or self._orders60[minute] > self.orders_per_minute:
                raise BinanceFail(-1015, "Too many new orders.", 429)

    def _auth(self, params: dict[str, str], raw_query: str, key: str | None, *, sign: bool) -> None:
        if key != self.api_key:
            raise BinanceFail(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        if not sign:
            return
        if "signature" not in params or not raw_query.rsplit("&", 1)[-1].startswith("signature="):
            raise BinanceFail(-1022, "Signature for this request is not valid.")
        payload, _, sig = raw_query.rpartition("&signature=")
        sig = unquote(sig)
        if self.ed25519_public_key is not None:
            try:
                self.ed25519_public_key.verify(base64.b64decode(sig), payload.encode())
            except (InvalidSignature, ValueError) as exc:
                raise BinanceFail(-1022, "Signature for this request is not valid.") from exc
        else:
            want = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(want, sig):
                raise BinanceFail(-1022, "Signature for this request is not valid.")
        try:
            ts, recv = int(params["timestamp"]), int(params.get("recvWindow", "5000"))
        except (KeyError, ValueError) as exc:
            raise BinanceFail(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.") from exc
        if recv > 60_000:
            raise BinanceFail(-1131, "recvWindow must be less than 60000")
        server = self.now_ms()
        if not (ts < server + 1000 and server - ts <= recv):
            raise BinanceFail(-1021, "Timestamp for this request is outside of the recvWindow.")

    async def _dispatch(self, method: str, path: str, p: dict[str, str], raw: str, key: str | None) -> Any:
        if path == "/fapi/v1/time" and method == "GET":
            return {"serverTime": self.now_ms()}
        if path == "/fapi/v1/exchangeInfo" and method == "GET":
            return self._exchange_info()
        if path == "/fapi/v1/listenKey":
            self._auth(p, raw, key, sign=False)
            return self._listen_key(method)
        self._auth(p, raw, key, sign=True)
        route = (method, path)
        if route == ("POST", "/fapi/v1/leverage"):
            lev = int(p["leverage"])
            if not 1 <= lev <= 125:
                raise BinanceFail(-4028, f"Leverage {lev} is not valid")
            self._symbol(p)
            self.leverage[p["symbol"]] = lev
            return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": p["symbol"]}
        if route == ("POST", "/fapi/v1/marginType"):
            sym = self._symbol(p)
            wanted = p.get("marginType", "").upper()
            if wanted not in ("ISOLATED", "CROSSED"):
                raise BinanceFail(-1116, "Invalid marginType.")
            if self.margin_type.get(sym, "CROSSED") == wanted:
                raise BinanceFail(-4046, "No need to change margin type.")
            if self.position(sym) != 0:
                raise BinanceFail(-4048, "Margin type cannot be changed if there exists position.")
            self.margin_type[sym] = wanted
            return {"code": 200, "msg": "success"}
        if route == ("POST", "/fapi/v1/order"):
            return await self._new_order(p)
        if route == ("GET", "/fapi/v1/order"):
            o = self.orders.get(p.get("origClientOrderId", ""))
            if o is None:
                raise BinanceFail(-2013, "Order does not exist.")
            return o
        if route == ("POST", "/fapi/v1/algoOrder"):
            return await self._new_algo(p)
        if route == ("GET", "/fapi/v1/algoOrder"):
            a = self.algo.get(p.get("clientAlgoId", ""))
            if a is None:
                raise BinanceFail(-2013, "Order does not exist.")
            return a
        if route == ("DELETE", "/fapi/v1/algoOrder"):
            a = self.algo.get(p.get("clientAlgoId", ""))
            if a is None or a["algoStatus"] != "NEW":
                raise BinanceFail(-2011, "Unknown order sent.")
            a["algoStatus"] = "CANCELED"
            a["updateTime"] = self.now_ms()
            await self._push_algo(a)
            return a
        if route == ("GET", "/fapi/v1/openAlgoOrders"):
            return self.open_algo(p.get("symbol"))
        if route == ("GET", "/fapi/v3/positionRisk"):
            return [self._position_row(s) for s, (amt, _) in sorted(self.positions.items()) if amt != 0]
        if route == ("GET", "/fapi/v3/account"):
            unreal = sum(self._unrealised(s) for s in self.positions)
            return {"totalWalletBalance": _s(self.wallet), "totalUnrealizedProfit": _s(unreal),
                    "totalMarginBalance": _s(self.wallet + unreal), "availableBalance": _s(self._available())}
        raise BinanceFail(-1000, f"the fake does not serve {method} {path}", 404)

    def _symbol(self, p: dict[str, str]) -> str:
        sym = p.get("symbol", "")
        if sym not in self.symbols:
            raise BinanceFail(-1121, "Invalid symbol.")
        return sym

    def _exchange_info(self) -> dict[str, Any]:
        symbols = []
        for sym, spec in self.symbols.items():
            filters = [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": spec.tick},
                {"filterType": "LOT_SIZE", "stepSize": spec.step, "minQty": spec.min_qty, "maxQty": spec.max_qty},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": spec.step, "minQty": spec.min_qty, "maxQty": spec.max_qty},
                {"filterType": "MIN_NOTIONAL", "notional": spec.min_notional},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            ]
            symbols.append({"symbol": sym, "pair": sym, "contractType": "PERPETUAL", "status": "TRADING",
                            "quoteAsset": "USDT", "marginAsset": "USDT", "filters": filters})
        return {"timezone": "UTC", "serverTime": self.now_ms(), "symbols": symbols,
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": self.weight_limit},
                               {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                                "limit": self.orders_per_10s},
                               {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                                "limit": self.orders_per_minute}]}

    def _listen_key(self, method: str) -> Any:
        if method == "POST":
            key = base64.b32encode(hashlib.sha256(str(next(self._ids)).encode()).digest()).decode().rstrip("=")[:60]
            self.listen_keys.add(key)
            return {"listenKey": key}
        if method == "PUT":
            if not self.listen_keys:
                raise BinanceFail(-1125, "This listenKey does not exist.")
            return {}
        return {}

    # ------------------------------------------------------------------ orders
    def _check_qty(self, sym: str, qty: Decimal) -> None:
        spec = self.symbols[sym]
        if qty % _dec(spec.step) != 0:
            raise BinanceFail(-1111, "Precision is over the maximum defined for this asset.")
        if qty < _dec(spec.min_qty) or qty > _dec(spec.max_qty):
            raise BinanceFail(-1013, "Filter failure: MARKET_LOT_SIZE")

    async def _new_order(self, p: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(p)
        kind = p.get("type", "")
        cid = p.get("newClientOrderId") or f"x-{next(self._ids)}"
        if kind in CONDITIONAL_TYPES:
            raise BinanceFail(-4120, "Order type not supported for this endpoint. Please use the Algo Order API "
                                     "endpoints instead.")
        if kind != "MARKET":
            raise BinanceFail(-1116, "Invalid orderType.")
        if not ID_RE.match(cid):
            raise BinanceFail(-4015, "Client order id is not valid.")
        if cid in self.orders:
            raise BinanceFail(-4116, "ClientOrderId is duplicated.")
        side = p.get("side", "")
        if side not in ("BUY", "SELL"):
            raise BinanceFail(-1117, "Invalid side.")
        qty = _dec(p.get("quantity", "0"))
        self._check_qty(sym, qty)
        reduce_only = p.get("reduceOnly", "false") == "true"
        price = self.prices[sym]
        pos = self.position(sym)
        if reduce_only:
            if pos == 0 or (pos > 0) == (side == "BUY"):
                raise BinanceFail(-2022, "ReduceOnly Order is rejected.")
            qty = min(qty, _dec(abs(pos)))
        else:
            if qty * _dec(price) < _dec(self.symbols[sym].min_notional):
                raise BinanceFail(-4164, f"Order's notional must be no smaller than {self.symbols[sym].min_notional} "
                                         "(unless you choose reduce only).")
            if float(qty) * price / self.leverage.get(sym, 20) > self._available():
                raise BinanceFail(-2019, "Margin is insufficient.")
        return await self._fill(sym, side, float(qty), cid, reduce_only=reduce_only)

    async def _fill(self, sym: str, side: str, qty: float, cid: str, *, reduce_only: bool = False,
                    origin: str = "") -> dict[str, Any]:
        price = self.prices[sym]
        filled = qty
        status = "FILLED"
        if self._partial is not None and not cid.startswith(("manual-", "algo-")):
            step = _dec(self.symbols[sym].step)
            filled = float((_dec(qty) * _dec(self._partial) / step).to_integral_value(rounding="ROUND_DOWN") * step)
            status = "EXPIRED" if filled < qty else "FILLED"
            self._partial = None
        now = self.now_ms()
        oid = next(self._ids)
        order = {"orderId": oid, "symbol": sym, "status": status, "clientOrderId": cid, "price": "0",
                 "avgPrice": _s(price) if filled else "0", "origQty": _s(qty), "executedQty": _s(filled),
                 "cumQuote": _s(filled * price), "timeInForce": "GTC", "type": "MARKET", "reduceOnly": reduce_only,
                 "closePosition": False, "side": side, "positionSide": "BOTH", "stopPrice": "0",
                 "workingType": "CONTRACT_PRICE", "origType": "MARKET", "updateTime": now}
        self.orders[cid] = order
        self.accepted.append(cid)
        signed_qty = filled if side == "BUY" else -filled
        pos = self.positions.setdefault(sym, [0.0, 0.0])
        realised = 0.0
        if filled:
            if pos[0] == 0 or (pos[0] > 0) == (signed_qty > 0):
                new_amt = pos[0] + signed_qty
                pos[1] = (abs(pos[0]) * pos[1] + filled * price) / abs(new_amt)
                pos[0] = new_amt
            else:
                closing = min(abs(pos[0]), filled)
                realised = closing * (price - pos[1]) * (1 if pos[0] > 0 else -1)
                pos[0] = round(pos[0] + signed_qty, 12)
                if pos[0] == 0:
                    pos[1] = 0.0
            fee = filled * price * self.commission
            self.wallet += realised - fee
        else:
            fee = 0.0
        await self._push({"e": "ORDER_TRADE_UPDATE", "E": now, "T": now,
                          "o": {"s": sym, "c": cid, "S": side, "o": "MARKET", "f": "GTC", "q": _s(qty), "p": "0",
                                "ap": "0", "x": "NEW", "X": "NEW", "i": oid, "l": "0", "z": "0", "L": "0", "n": "0",
                                "R": reduce_only, "rp": "0", "ps": "BOTH", "ot": origin or "MARKET"}})
        if filled:
            await self._push({"e": "ORDER_TRADE_UPDATE", "E": now, "T": now,
                              "o": {"s": sym, "c": cid, "S": side, "o": "MARKET", "f": "GTC", "q": _s(qty), "p": "0",
                                    "ap": _s(price), "x": "TRADE", "X": status, "i": oid, "l": _s(filled),
                                    "z": _s(filled), "L": _s(price), "n": _s(fee), "N": "USDT", "R": reduce_only,
                                    "rp": _s(realised), "ps": "BOTH", "ot": origin or "MARKET"}})
            await self._push_account(sym)
        elif status == "EXPIRED":
            await self._push({"e": "ORDER_TRADE_UPDATE", "E": now, "T": now,
                              "o": {"s": sym, "c": cid, "S": side, "o": "MARKET", "q": _s(qty), "x": "EXPIRED",
                                    "X": "EXPIRED", "i": oid, "l": "0", "z": "0", "L": "0", "n": "0", "R": reduce_only}})
        return order

    async def _new_algo(self, p: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(p)
        cid = p.get("clientAlgoId") or f"algo-{next(self._ids)}"
        if p.get("algoType") != "CONDITIONAL":
            raise BinanceFail(-1116, "Invalid algoType.")
        kind = p.get("type", "")
        if kind not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise BinanceFail(-1116, "Invalid orderType.")
        if not ID_RE.match(cid):
            raise BinanceFail(-4015, "Client order id is not valid.")
        if cid in self.algo:
            raise BinanceFail(-4116, "ClientOrderId is duplicated.")
        close_position = p.get("closePosition", "false") == "true"
        if close_position and ("quantity" in p or "reduceOnly" in p):
            raise BinanceFail(-1106, "Parameter 'quantity' sent when not required.")
        if not close_position:
            raise BinanceFail(-1102, "the fake supports closePosition protective orders only")
        side = p.get("side", "")
        trigger = _dec(p.get("triggerPrice", "0"))
        if trigger <= 0 or trigger % _dec(self.symbols[sym].tick) != 0:
            raise BinanceFail(-4014, "Price not increased by tick size.")
        for a in self.open_algo(sym):
            if a["orderType"] == kind and a["side"] == side and a["closePosition"]:
                raise BinanceFail(-4130, "An open stop or take profit order with GTE and closePosition in the direction "
                                         "is existing.")
        now = self.now_ms()
        a = {"algoId": next(self._ids), "clientAlgoId": cid, "algoType": "CONDITIONAL", "orderType": kind,
             "symbol": sym, "side": side, "positionSide": "BOTH", "timeInForce": "GTE_GTC", "quantity": "0",
             "algoStatus": "NEW", "triggerPrice": _s(trigger), "price": "0", "workingType": "CONTRACT_PRICE",
             "closePosition": True, "reduceOnly": False, "createTime": now, "updateTime": now, "executedQty": "0",
             "avgPrice": "0"}
        if self._crossed(a, self.prices[sym]):
            raise BinanceFail(-2021, "Order would immediately trigger.")
        self.algo[cid] = a
        self.accepted.append(cid)
        await self._push_algo(a)
        return a

    @staticmethod
    def _crossed(a: dict[str, Any], price: float) -> bool:
        trigger = float(a["triggerPrice"])
        sell = a["side"] == "SELL"
        if a["orderType"] == "STOP_MARKET":
            return price <= trigger if sell else price >= trigger
        return price >= trigger if sell else price <= trigger

    async def _trigger(self, a: dict[str, Any]) -> None:
        sym = a["symbol"]
        a["algoStatus"] = "TRIGGERED"
        a["updateTime"] = self.now_ms()
        await self._push_algo(a)
        pos = self.position(sym)
        want = "SELL" if pos > 0 else "BUY"
        if pos == 0 or want != a["side"]:
            a["algoStatus"] = "EXPIRED"
            await self._push_algo(a)
            return
        order = await self._fill(sym, a["side"], abs(pos), f"algo-{a['algoId']}", reduce_only=True, origin=a["orderType"])
        a["algoStatus"] = "FINISHED"
        a["executedQty"] = order["executedQty"]
        a["avgPrice"] = order["avgPrice"]
        a["actualOrderId"] = str(order["orderId"])
        await self._push_algo(a)

    # ------------------------------------------------------------------ account
    def _unrealised(self, sym: str) -> float:
        amt, entry = self.positions.get(sym, [0.0, 0.0])
        return amt * (self.prices[sym] - entry) if amt else 0.0

    def _available(self) -> float:
        used = sum(abs(amt) * entry / self.leverage.get(s, 20) for s, (amt, entry) in self.positions.items())
        return self.wallet + sum(min(0.0, self._unrealised(s)) for s in self.positions) - used

    def _position_row(self, sym: str) -> dict[str, Any]:
        amt, entry = self.positions[sym]
        return {"symbol": sym, "positionSide": "BOTH", "positionAmt": _s(amt), "entryPrice": _s(entry),
                "breakEvenPrice": _s(entry), "markPrice": _s(self.prices[sym]), "unRealizedProfit": _s(self._unrealised(sym)),
                "liquidationPrice": "0", "isolatedMargin": "0", "notional": _s(amt * self.prices[sym]),
                "marginAsset": "USDT", "isolatedWallet": "0", "initialMargin": "0", "maintMargin": "0",
                "positionInitialMargin": "0", "openOrderInitialMargin": "0", "adl": 0, "bidNotional": "0",
                "askNotional": "0", "updateTime": self.now_ms()}

    # ------------------------------------------------------------------ user-data stream
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        self.requests.append(Recorded("WS", request.path, {}, False, False))
        if key not in self.listen_keys:
            return web.Response(status=400, text="invalid listen key")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.streams.append((key, ws))
        if request.transport is not None:
            self._transports[id(ws)] = request.transport
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            with contextlib.suppress(ValueError):
                self.streams.remove((key, ws))
            self._transports.pop(id(ws), None)
        return ws

    async def _push(self, event: dict[str, Any]) -> None:
        if self.mute_stream:
            return
        text = orjson.dumps(event).decode()
        for _, ws in list(self.streams):
            with contextlib.suppress(Exception):
                await ws.send_str(text)
                self.events_sent += 1

    async def _push_algo(self, a: dict[str, Any]) -> None:
        now = self.now_ms()
        await self._push({"e": "ALGO_UPDATE", "T": now, "E": now,
                          "o": {"caid": a["clientAlgoId"], "aid": a["algoId"], "at": "CONDITIONAL", "o": a["orderType"],
                                "s": a["symbol"], "S": a["side"], "ps": "BOTH", "f": "GTE_GTC", "q": a["quantity"],
                                "X": a["algoStatus"], "ai": a.get("actualOrderId", ""), "ap": a.get("avgPrice", "0"),
                                "aq": a.get("executedQty", "0"), "act": "0", "tp": a["triggerPrice"], "p": "0",
                                "V": "EXPIRE_MAKER", "wt": "CONTRACT_PRICE", "pm": "NONE", "cp": a["closePosition"],
                                "pP": False, "R": False, "tt": 0, "gtd": 0, "rm": ""}})

    async def _push_account(self, sym: str) -> None:
        now = self.now_ms()
        amt, entry = self.positions.get(sym, [0.0, 0.0])
        await self._push({"e": "ACCOUNT_UPDATE", "E": now, "T": now,
                          "a": {"m": "ORDER", "B": [{"a": "USDT", "wb": _s(self.wallet), "cw": _s(self.wallet), "bc": "0"}],
                                "P": [{"s": sym, "pa": _s(amt), "ep": _s(entry), "bep": _s(entry), "cr": "0",
                                       "up": _s(self._unrealised(sym)), "mt": "isolated", "iw": "0", "ps": "BOTH"}]}})
