"""One Binance combined-stream WebSocket connection (a shard of at most WS_STREAMS_PER_CONNECTION streams).

Behaviour (numbers are the defaults; :class:`WsSettings` holds them):

- URL ``{BINANCE_WS_URL}/stream?streams=a/b/...``; nothing is ever sent by us except the library's
  keepalive pings (one per ``ping_interval_s`` = 20 s) and its automatic pongs to Binance's 3-minute
  pings, far below Binance's 10 control messages/s per connection.
- Reconnect after any drop with exponential backoff and full jitter in
  [WS_RECONNECT_DELAY, WS_MAX_RECONNECT_DELAY]; the backoff resets once a connection has stayed up
  ``healthy_after_s`` (60 s).
- Stall: no message at all for WS_STALL_TIMEOUT seconds -> close, count, reconnect. The feed may also
  ask for a reconnect (a single silent stream) through :meth:`KlineConnection.request_reconnect`.
- Rotation before WS_MAX_CONNECTION_AGE (Binance cuts at 24 h): the replacement is opened first and
  read in parallel; once it has delivered a message (or ``rotation_overlap_s`` passed), the old one is
  closed. Both deliver into the same handler, which drops duplicates, so no closed candle is lost or
  delivered twice.
- Frames above ``max_frame_bytes`` (64 KiB; klines are ~400 bytes) make the library close the
  connection (1009), which counts as a drop.
- Binance unreachable: every failed attempt is logged with the error and the retry delay; it never
  gives up. Clock (monotonic) and sleep are injectable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from src.market.backoff import Backoff

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WsSettings:
    base_url: str = "wss://fstream.binance.com/market"
    reconnect_delay_s: float = 5.0
    max_reconnect_delay_s: float = 60.0
    stall_timeout_s: float = 90.0
    max_connection_age_s: float = 84600.0
    healthy_after_s: float = 60.0
    open_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    close_timeout_s: float = 2.0
    max_frame_bytes: int = 65_536
    watchdog_interval_s: float = 1.0
    rotation_overlap_s: float = 10.0


class ConnectionHandler(Protocol):
    """What a connection reports to its owner (the feed). ``on_message`` must be fast and never block."""

    def on_message(self, conn: KlineConnection, raw: str | bytes) -> None: ...

    def on_connected(self, conn: KlineConnection, reconnect: bool) -> None: ...

    def on_disconnected(self, conn: KlineConnection, reason: str) -> None: ...


def combined_url(base_url: str, streams: Sequence[str]) -> str:
    return f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"


class KlineConnection:
    """Keeps one combined-stream connection alive until cancelled; see the module docstring."""

    def __init__(
        self,
        name: str,
        streams: Sequence[str],
        settings: WsSettings,
        handler: ConnectionHandler,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] | None = None,
    ) -> None:
        if not streams:
            raise ValueError("a connection needs at least one stream")
        self.name = name
        self.streams = tuple(streams)
        self.url = combined_url(settings.base_url, self.streams)
        self.settings = settings
        self._handler = handler
        self._monotonic = monotonic
        self._clock = clock
        self._sleep = sleep
        self._backoff = Backoff(settings.reconnect_delay_s, settings.max_reconnect_delay_s, rng)
        self._reconnect_request: str | None = None
        self._wake = asyncio.Event()
        # observable state
        self.connected = False
        self.connected_since_ms: int | None = None
        self.last_message_at_ms: int | None = None
        self.last_message_mono = 0.0
        self.messages = 0
        self.reconnects = 0
        self.rotations = 0
        self.failed_attempts = 0
        self.last_error: str | None = None  # why the last connect attempt failed; None once connected
        self.reasons: Counter[str] = Counter()

    def request_reconnect(self, reason: str) -> None:
        """Ask for a reconnect (e.g. one stream stalled); honoured within ``watchdog_interval_s``."""
        if self._reconnect_request is None:
            self._reconnect_request = reason
        self._wake.set()

    async def run(self) -> None:
        """Connect, read, reconnect; returns only by cancellation."""
        first = True
        while True:
            ws = await self._connect_with_retry()
            self._on_open()
            self._handler.on_connected(self, not first)
            first = False
            reason = await self._serve(ws)
            self.connected = False
            self.reconnects += 1
            self.reasons[reason] += 1
            self._handler.on_disconnected(self, reason)
            delay = self._backoff.next_delay()
            log.warning("Binance WebSocket disconnected, reconnecting", connection=self.name, reason=reason,
                        retry_in_s=round(delay, 2), streams=len(self.streams))
            await self._sleep(delay)

    # ------------------------------------------------------------------ internals
    async def _open(self) -> ClientConnection:
        s = self.settings
        return await connect(
            self.url,
            open_timeout=s.open_timeout_s,
            ping_interval=s.ping_interval_s,
            ping_timeout=s.ping_timeout_s,
            close_timeout=s.close_timeout_s,
            max_size=s.max_frame_bytes,
        )

    async def _connect_with_retry(self) -> ClientConnection:
        while True:
            try:
                return await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # DNS, refused, TLS, handshake (e.g. HTTP 404/451), timeout
                self.failed_attempts += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                delay = self._backoff.next_delay()
                log.warning("Binance WebSocket unreachable, retrying", connection=self.name,
                            error=f"{type(exc).__name__}: {exc}", attempt=self.failed_attempts,
                            retry_in_s=round(delay, 2))
                await self._sleep(delay)

    def _on_open(self) -> None:
        self.connected = True
        self.last_error = None
        self.connected_since_ms = int(self._clock() * 1000)
        self.last_message_mono = self._monotonic()
        self._reconnect_request = None
        self._wake.clear()
        log.info("Binance WebSocket connected", connection=self.name, streams=len(self.streams))

    async def _read(self, ws: ClientConnection, first_message: asyncio.Event | None = None) -> str:
        """Deliver every message to the handler; return why the connection ended."""
        try:
            async for raw in ws:
                self.last_message_mono = self._monotonic()
                self.last_message_at_ms = int(self._clock() * 1000)
                self.messages += 1
                if first_message is not None:
                    first_message.set()
                self._handler.on_message(self, raw)
        except ConnectionClosedOK:
            return "closed_by_server"
        except ConnectionClosed as exc:
            log.info("Binance WebSocket connection lost", connection=self.name,
                     close_code=exc.rcvd.code if exc.rcvd else None, detail=str(exc))
            return "dropped"
        return "closed_by_server"

    async def _serve(self, ws: ClientConnection) -> str:
        s = self.settings
        opened = self._monotonic()
        reader = asyncio.create_task(self._read(ws), name=f"{self.name}-reader")
        waker = asyncio.create_task(self._wake.wait())
        try:
            while True:
                await asyncio.wait({reader, waker}, timeout=s.watchdog_interval_s, return_when=asyncio.FIRST_COMPLETED)
                now = self._monotonic()
                if reader.done():
                    return _reader_reason(reader)
                if self._reconnect_request is not None:
                    return self._reconnect_request
                if waker.done():
                    self._wake.clear()
                    waker = asyncio.create_task(self._wake.wait())
                if now - self.last_message_mono > s.stall_timeout_s:
                    log.warning("Binance WebSocket stalled: no message", connection=self.name,
                                silent_s=round(now - self.last_message_mono, 1))
                    return "stall"
                if now - opened >= s.healthy_after_s:
                    self._backoff.reset()
                if now - opened >= s.max_connection_age_s:
                    rotated = await self._rotate(ws, reader)
                    if rotated is not None:
                        ws, reader = rotated
                        opened = self._monotonic()
                        self.last_message_mono = opened
                    else:
                        opened = self._monotonic() - s.max_connection_age_s + s.reconnect_delay_s  # retry soon
        finally:
            waker.cancel()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            await _close_quietly(ws)

    async def _rotate(
        self, old: ClientConnection, old_reader: asyncio.Task[str]
    ) -> tuple[ClientConnection, asyncio.Task[str]] | None:
        """Open the replacement, read both until it speaks, then close the old one."""
        try:
            new = await self._open()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Binance WebSocket rotation: replacement failed to open, keeping the old connection",
                        connection=self.name, error=f"{type(exc).__name__}: {exc}")
            return None
        first = asyncio.Event()
        new_reader = asyncio.create_task(self._read(new, first), name=f"{self.name}-reader")
        first_task = asyncio.create_task(first.wait())
        try:
            await asyncio.wait({first_task, new_reader}, timeout=self.settings.rotation_overlap_s,
                               return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            new_reader.cancel()
            await _close_quietly(new)
            raise
        finally:
            first_task.cancel()
        if new_reader.done():
            log.warning("Binance WebSocket rotation: replacement closed at once, keeping the old connection",
                        connection=self.name, reason=_reader_reason(new_reader))
            await _close_quietly(new)
            return None
        try:
            old_reader.cancel()
            await asyncio.wait({old_reader})  # unlike awaiting it, lets a cancel of this task through
            await _close_quietly(old)
        except asyncio.CancelledError:  # shutdown mid-rotation: the caller only knows the old connection
            new_reader.cancel()
            await _close_quietly(new)
            raise
        self.rotations += 1
        self.connected_since_ms = int(self._clock() * 1000)
        log.info("Binance WebSocket rotated before the 24 h limit", connection=self.name, rotations=self.rotations)
        return new, new_reader


def _reader_reason(reader: asyncio.Task[str]) -> str:
    if reader.cancelled():
        return "cancelled"
    exc = reader.exception()
    if exc is not None:
        log.error("Binance WebSocket reader failed", error=f"{type(exc).__name__}: {exc}")
        return "error"
    return reader.result()


async def _close_quietly(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.close()
