"""Signed REST to Binance USDT-M futures: one request path with the safety rules in one place.

- SIGNED requests: every parameter in the query string, then ``timestamp`` (server time from the clock)
  and ``recvWindow``, then ``signature`` over exactly that string (HMAC hex, or Ed25519 base64
  URL-encoded); the API key goes in the ``X-MBX-APIKEY`` header. Nothing secret is ever logged or audited:
  the audit sees the parameters without the signature, never a header.
- Before sending: :class:`~src.trading.budget.RequestBudget` may make the request wait (at most
  ``max_wait_s``, else RateLimited); after a 418 every request raises IpBanned until the ban ends.
- Answers: 2xx -> JSON; 429 -> RateLimited (and the budget backs off per Retry-After); 418 -> IpBanned;
  a Binance error body ``{"code", "msg"}`` -> ExchangeError (-1021: ClockSkew, after which the offset is
  re-measured and the request sent ONCE more with a fresh timestamp -- -1021 is a refusal, nothing was
  executed); 5xx / 408, a timeout, or a connection lost after the request left -> AmbiguousResult, which
  is never retried here; a connection that could not be opened -> ExchangeUnreachable.
- ``audit`` (optional) receives every write request and its answer (and reads marked ``audited``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import structlog

from src.trading.budget import RequestBudget
from src.trading.clock import ServerClock
from src.trading.errors import (
    AmbiguousResult,
    ClockSkew,
    ExchangeError,
    ExchangeUnreachable,
    IpBanned,
    RateLimited,
)
from src.trading.signing import Signer

log = structlog.get_logger(__name__)

AuditHook = Callable[[str, dict[str, Any]], Awaitable[None]]
_HIDDEN_PARAMS = frozenset({"signature", "listenKey"})
ANSWER_TEXT_LIMIT = 2000


def scrub(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters fit for logs and the audit: no signature, listen keys shortened."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k == "signature":
            continue
        out[k] = f"{str(v)[:4]}***" if k in _HIDDEN_PARAMS else v
    return out


class BinanceTradeRest:
    """The request path (see the module docstring). ``close()`` ends the HTTP session."""

    def __init__(self, base_url: str, api_key: str, signer: Signer, clock: ServerClock, *,
                 budget: RequestBudget | None = None, recv_window_ms: int = 5000, timeout_s: float = 10.0,
                 max_wait_s: float = 15.0, audit: AuditHook | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.__api_key = api_key
        self._signer = signer
        self.clock = clock
        self.budget = budget or RequestBudget()
        self.recv_window_ms = recv_window_ms
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self.audit = audit
        self._session = session
        self._own_session = session is None
        self.requests = 0
        self.signed_requests = 0

    def __repr__(self) -> str:
        return f"BinanceTradeRest({self.base_url}, key=***, signer={self._signer.kind})"

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    # ------------------------------------------------------------------ public entry points
    async def public(self, method: str, path: str, params: dict[str, Any] | None = None, *, weight: int = 1) -> Any:
        """An unsigned request (server time, exchangeInfo)."""
        return await self._request(method, path, dict(params or {}), weight=weight, sign=False, key=False,
                                   order=False, audited=False)

    async def keyed(self, method: str, path: str, params: dict[str, Any] | None = None, *, weight: int = 1) -> Any:
        """A request with the API key but no signature (listenKey management: USER_STREAM)."""
        return await self._request(method, path, dict(params or {}), weight=weight, sign=False, key=True,
                                   order=False, audited=method != "GET")

    async def signed(self, method: str, path: str, params: dict[str, Any] | None = None, *, weight: int = 1,
                     order: bool = False, audited: bool | None = None) -> Any:
        """A SIGNED request (TRADE / USER_DATA); ``order`` counts it against the ORDERS limits."""
        params = dict(params or {})
        audit = method != "GET" if audited is None else audited
        try:
            return await self._request(method, path, params, weight=weight, sign=True, key=True, order=order,
                                       audited=audit)
        except ClockSkew:
            # refused, not executed: re-measure the offset and send once more with a fresh timestamp
            await self.clock.resync()
            return await self._request(method, path, params, weight=weight, sign=True, key=True, order=order,
                                       audited=audit)

    # ------------------------------------------------------------------ the one request path
    async def _request(self, method: str, path: str, params: dict[str, Any], *, weight: int, sign: bool, key: bool,
                       order: bool, audited: bool) -> Any:
        now = self.clock.now_ms()
        if self.budget.banned(now):
            raise IpBanned(f"IP banned by Binance (418) for {(self.budget.banned_until_ms - now) / 1000:.0f} s more",
                           self.budget.banned_until_ms)
        wait_ms = self.budget.wait_ms(weight, order, now)
        if wait_ms > self.max_wait_s * 1000:
            raise RateLimited(f"rate budget exhausted: next request possible in {wait_ms / 1000:.1f} s", wait_ms / 1000)
        if wait_ms > 0:
            log.info("binance_rate_budget_wait", path=path, wait_s=round(wait_ms / 1000, 2))
            await asyncio.sleep(wait_ms / 1000)
        query = urlencode([(k, _text(v)) for k, v in params.items()])
        if sign:
            stamped = dict(params, timestamp=self.clock.now_ms(), recvWindow=self.recv_window_ms)
            query = urlencode([(k, _text(v)) for k, v in stamped.items()])
            query += "&signature=" + quote(self._signer.sign(query), safe="")
            params = stamped
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        headers = {"X-MBX-APIKEY": self.__api_key} if key else {}
        if audited and self.audit is not None:
            await self.audit("exchange_request", {"method": method, "path": path, "params": scrub(params)})
        self.requests += 1
        self.signed_requests += int(sign)
        self.budget.sent(weight, order, self.clock.now_ms())
        try:
            async with self._http().request(method, url, headers=headers) as resp:
                status = resp.status
                raw = await resp.read()
                resp_headers = {k: v for k, v in resp.headers.items() if k.upper().startswith(("X-MBX-", "RETRY-AFTER"))}
        except aiohttp.ClientConnectorError as exc:
            await self._audit_answer(audited, method, path, None, f"not connected: {type(exc).__name__}")
            raise ExchangeUnreachable(f"{method} {path}: cannot connect ({type(exc).__name__})") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            await self._audit_answer(audited, method, path, None, f"no answer: {type(exc).__name__}")
            raise AmbiguousResult(f"{method} {path}: no answer ({type(exc).__name__}: {exc})") from exc
        self.budget.observe({k.upper(): v for k, v in resp_headers.items()}, self.clock.now_ms())
        body = _json(raw)
        await self._audit_answer(audited, method, path, status, body if body is not None else raw[:200].decode("latin-1"))
        return self._answer(method, path, status, body, resp_headers)

    async def _audit_answer(self, audited: bool, method: str, path: str, status: int | None, answer: Any) -> None:
        if audited and self.audit is not None:
            text = orjson.dumps(answer, default=str).decode()
            shown = answer if len(text) <= ANSWER_TEXT_LIMIT else text[:ANSWER_TEXT_LIMIT]
            await self.audit("exchange_answer", {"method": method, "path": path, "status": status, "answer": shown})

    def _answer(self, method: str, path: str, status: int, body: Any, headers: dict[str, str]) -> Any:
        now = self.clock.now_ms()
        retry_after = _retry_after(headers)
        if status == 429:
            self.budget.back_off(retry_after if retry_after is not None else 60.0, now)
            raise RateLimited(f"{method} {path}: HTTP 429 too many requests", retry_after or 60.0)
        if status == 418:
            self.budget.ban(retry_after if retry_after is not None else 120.0, now)
            raise IpBanned(f"{method} {path}: HTTP 418, IP banned", self.budget.banned_until_ms)
        if status >= 500 or status == 408:
            raise AmbiguousResult(f"{method} {path}: HTTP {status} ({_code_msg(body)[1]})")
        if 200 <= status < 300:
            if body is None:
                raise AmbiguousResult(f"{method} {path}: HTTP {status} with an unreadable body")
            return body
        code, msg = _code_msg(body)
        if code == -1021:
            raise ClockSkew(code, msg, status)
        raise ExchangeError(code, msg, status)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _code_msg(body: Any) -> tuple[int, str]:
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        return int(body["code"]), str(body.get("msg", ""))
    return 0, "no Binance error body"


def _retry_after(headers: dict[str, str]) -> float | None:
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return None
    return None
