"""systemd readiness and watchdog notifications (the sd_notify protocol), without systemd-python.

Protocol (sd_notify(3)): one datagram of newline-separated ``KEY=VALUE`` lines sent to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``; a leading ``@`` means the Linux abstract namespace (a NUL byte). With
``NOTIFY_SOCKET`` unset every call is a no-op, so the bot runs unchanged outside systemd.

- ``READY=1`` when warm-up is done (``Type=notify`` units wait for it, up to ``TimeoutStartSec``).
- ``STOPPING=1`` when the graceful shutdown starts.
- ``STATUS=...`` free text shown by ``systemctl status``.
- ``WATCHDOG=1`` from :class:`Watchdog`, a task on the event loop that pings every ``WATCHDOG_USEC / 2``
  (sd_watchdog_enabled(3) recommends half the timeout), after READY=1 and ONLY while ``is_healthy()`` is true. A stalled
  feed (``is_healthy`` false) or a blocked event loop (the task cannot run) stops the pings, systemd kills the
  process with SIGABRT after ``WatchdogSec`` and ``Restart=on-failure`` starts it again.
- ``WATCHDOG_PID``, when set, must equal our pid, otherwise the watchdog is meant for another process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger(__name__)

MAX_STATUS_CHARS = 1000  # a STATUS= line longer than this is truncated; systemctl shows one line anyway


def _address(socket_path: str) -> str | bytes:
    """'@name' -> the abstract address b'\\0name'; anything else is a filesystem path."""
    if socket_path.startswith("@"):
        return b"\0" + socket_path[1:].encode()
    return socket_path


def _clean(value: str) -> str:
    """One line, bounded length: a newline inside a value would start a new (bogus) assignment."""
    text = " ".join(value.split())
    return text[:MAX_STATUS_CHARS]


class SdNotifier:
    """Sends sd_notify datagrams. Never raises: a failed send is logged and counted in ``errors``.

    :param socket_path: the ``NOTIFY_SOCKET`` value, ``None``/empty = disabled (every call is a no-op).
    """

    def __init__(self, socket_path: str | None) -> None:
        self.socket_path = socket_path or None
        self.sent = 0
        self.errors = 0
        self.ready_sent = False  # set by ready(); the watchdog stays quiet before it

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SdNotifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; True when sent (False when disabled or failed)."""
        if self.socket_path is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Non-blocking: a full receive queue must never stall the event loop; the message is dropped
                # instead (a lost WATCHDOG=1 is repaired by the next ping at half the timeout).
                sock.setblocking(False)
                sock.connect(_address(self.socket_path))
                sock.send(payload)
        except OSError as exc:
            self.errors += 1
            log.warning("sd_notify failed", socket=self.socket_path, error=str(exc), errors=self.errors)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (plus an optional STATUS line): warm-up is done."""
        self.ready_sent = True
        return self.notify("READY=1", *((f"STATUS={_clean(status)}",) if status else ()))

    def stopping(self, status: str | None = "shutting down") -> bool:
        """STOPPING=1: the graceful shutdown has started."""
        return self.notify("STOPPING=1", *((f"STATUS={_clean(status)}",) if status else ()))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_clean(text)}")

    def watchdog_ping(self) -> bool:
        return self.notify("WATCHDOG=1")


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when no watchdog applies to this process.

    None when WATCHDOG_USEC is unset, not a positive integer, or WATCHDOG_PID names another process.
    """
    env = os.environ if env is None else env
    raw_usec = env.get("WATCHDOG_USEC", "").strip()
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC", value=raw_usec)
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID", "").strip()
    if raw_pid:
        try:
            if int(raw_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_PID", value=raw_pid)
            return None
    return usec / 2 / 1_000_000


class ActivityTracker:
    """"Is data flowing?" for the watchdog: healthy while the last ``touch()`` is at most ``max_silence_s`` old.

    The app calls ``touch()`` whenever a WebSocket frame or a closed candle arrives (or a replayed candle is
    processed). It starts touched, so a freshly started process gets one full ``max_silence_s`` of grace.
    Uses the monotonic clock (wall-clock jumps must not trigger restarts).
    """

    def __init__(self, max_silence_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_silence_s <= 0:
            raise ValueError(f"max_silence_s must be > 0, got {max_silence_s}")
        self.max_silence_s = max_silence_s
        self._clock = clock
        self._last = clock()

    def touch(self) -> None:
        self._last = self._clock()

    def silence_s(self) -> float:
        return max(0.0, self._clock() - self._last)

    def is_healthy(self) -> bool:
        return self.silence_s() <= self.max_silence_s


class Watchdog:
    """Pings WATCHDOG=1 every ``interval_s`` while ``is_healthy()``; see the module docstring.

    :param interval_s: seconds between checks; default :func:`watchdog_interval` from the environment.
        When there is no interval (no watchdog configured) or the notifier is disabled, ``start`` does nothing.
    :param is_healthy: called on the loop once per interval; an exception counts as unhealthy.
    """

    def __init__(
        self,
        notifier: SdNotifier,
        is_healthy: Callable[[], bool],
        interval_s: float | None = None,
    ) -> None:
        self.notifier = notifier
        self.is_healthy = is_healthy
        self.interval_s = watchdog_interval() if interval_s is None else interval_s
        self.pings = 0
        self.skipped = 0
        self._healthy_before = True
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.notifier.enabled and self.interval_s is not None and self.interval_s > 0

    def tick(self) -> bool:
        """One check: ping if healthy. Returns whether a ping was sent. Logs transitions once, not every tick.

        Does nothing before ``notifier.ready()``: systemd arms the watchdog only once start-up is complete, and a
        long warm-up (no frames yet) must not be reported as a stall.
        """
        if not self.notifier.ready_sent:
            return False
        try:
            healthy = bool(self.is_healthy())
        except Exception as exc:  # a broken probe must not kill the watchdog task; it withholds the ping
            log.exception("watchdog health probe raised", error=str(exc))
            healthy = False
        if healthy != self._healthy_before:
            if healthy:
                log.info("data flowing again: watchdog pings resumed")
                self.notifier.status("running")
            else:
                log.warning("data stalled: withholding watchdog pings; systemd restarts the bot after WatchdogSec")
                self.notifier.status("stalled: no market data, watchdog pings withheld")
            self._healthy_before = healthy
        if not healthy:
            self.skipped += 1
            return False
        if self.notifier.watchdog_ping():
            self.pings += 1
            return True
        return False

    async def run(self) -> None:
        """Tick now and then every ``interval_s`` until cancelled; after READY=1 the first ping comes within one
        interval, half of WatchdogSec, so the first deadline is always met."""
        if not self.active:
            return
        assert self.interval_s is not None
        log.info("systemd watchdog enabled", interval_s=self.interval_s)
        while True:
            self.tick()
            await asyncio.sleep(self.interval_s)

    def start(self) -> asyncio.Task[None] | None:
        """Start the ping task on the running loop (None when no watchdog applies)."""
        if not self.active:
            return None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="systemd-watchdog")
        return self._task

    async def stop(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        await asyncio.wait([task])  # waits without re-raising the task's CancelledError (ours still propagates)
