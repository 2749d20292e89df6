"""The user-data stream: a listenKey and the ``/private`` WebSocket, kept alive and reconnected.

- ``POST /fapi/v1/listenKey`` gives the key (valid 60 min); it is kept alive with ``PUT`` every
  ``keepalive_s`` (30 min). A keepalive answered -1125 (the key no longer exists), a ``listenKeyExpired``
  event, a dropped connection, or ``stall_s`` without any frame (the library pings every 20 s, so a dead
  link is noticed) all end the connection; the next one starts with a fresh key.
- URL: ``{BINANCE_TRADE_WS_URL}/ws/<listenKey>``, e.g. ``wss://fstream.binance.com/private/ws/<key>``.
- After EVERY (re)connect ``on_connected`` is awaited before events are handled: the trader reconciles over
  REST then, because events sent while the stream was down are lost.
- Reconnects back off from 1 s doubling to 60 s with jitter, reset after a connection stayed up 60 s.
- The listen key is a credential for the account's events: it is never logged whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from src.market.backoff import Backoff
from src.trading.errors import LISTEN_KEY_NOT_FOUND, ExchangeError
from src.trading.events import ListenKeyExpired, UserEvent, parse_event
from src.trading.exchange import BinanceFuturesExchange

log = structlog.get_logger(__name__)


class UserDataStream:
    """See the module docstring. ``run()`` until cancelled; ``connected`` tells whether it is up now."""

    def __init__(self, exchange: BinanceFuturesExchange, ws_base: str, *, on_event: Callable[[UserEvent], Awaitable[None]],
                 on_connected: Callable[[], Awaitable[None]], on_disconnected: Callable[[str], Awaitable[None]] | None = None,
                 keepalive_s: float = 1800.0, stall_s: float = 600.0, backoff: Backoff | None = None,
                 open_timeout_s: float = 10.0) -> None:
        self.exchange = exchange
        self.ws_base = ws_base.rstrip("/")
        self.on_event = on_event
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.keepalive_s = keepalive_s
        self.stall_s = stall_s
        self.open_timeout_s = open_timeout_s
        self.backoff = backoff or Backoff(1.0, 60.0)
        self.connected = False
        self.connects = 0
        self.drops = 0
        self.events = 0
        self.bad_frames = 0
        self.last_event_at: float | None = None
        self._reconnect = asyncio.Event()

    def request_reconnect(self) -> None:
        self._reconnect.set()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            reason = "closed"
            try:
                reason = await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            self.connected = False
            self.drops += 1
            if time.monotonic() - started > 60:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            log.warning("user_stream_down", reason=reason, retry_in_s=round(delay, 2))
            if self.on_disconnected is not None:
                with contextlib.suppress(Exception):
                    await self.on_disconnected(reason)
            await asyncio.sleep(delay)

    async def _session(self) -> str:
        key = await self.exchange.create_listen_key()
        url = f"{self.ws_base}/ws/{key}"
        self._reconnect.clear()
        async with connect(url, open_timeout=self.open_timeout_s, ping_interval=20, ping_timeout=20,
                           close_timeout=2, max_size=1 << 20) as ws:
            self.connected = True
            self.connects += 1
            log.info("user_stream_connected", url=f"{self.ws_base}/ws/{key[:4]}***", connects=self.connects)
            await self.on_connected()
            keepalive = asyncio.create_task(self._keepalive(), name="listen-key-keepalive")
            reconnect = asyncio.create_task(self._reconnect.wait(), name="user-stream-reconnect")
            recv: asyncio.Future[str | bytes] | None = None
            try:
                while True:
                    recv = asyncio.ensure_future(ws.recv())
                    done, _ = await asyncio.wait({recv, keepalive, reconnect}, timeout=self.stall_s,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if recv not in done:
                        recv.cancel()
                        with contextlib.suppress(BaseException):
                            await recv
                        if keepalive in done:
                            return f"keepalive failed: {keepalive.exception() or 'listen key gone'}"
                        if reconnect in done:
                            return "reconnect requested"
                        return f"no frame for {self.stall_s:g} s"
                    try:
                        frame = recv.result()
                    except ConnectionClosed as exc:
                        return f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
                    event = parse_event(frame)
                    if event is None:
                        self.bad_frames += 1
                        continue
                    self.events += 1
                    self.last_event_at = time.monotonic()
                    if isinstance(event, ListenKeyExpired):
                        return "listen key expired"
                    await self.on_event(event)
            finally:
                pending: list[asyncio.Future[Any]] = [keepalive, reconnect]
                if recv is not None:
                    pending.append(recv)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            try:
                await self.exchange.keepalive_listen_key()
            except ExchangeError as exc:
                if exc.code == LISTEN_KEY_NOT_FOUND:
                    raise
                log.warning("listen_key_keepalive_failed", error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listen_key_keepalive_failed", error=f"{type(exc).__name__}: {exc}")
