"""Graceful shutdown: signal handling and a bounded, ordered shutdown sequence.

- :class:`ShutdownSignals`: SIGTERM and SIGINT (via ``loop.add_signal_handler``) set an ``asyncio.Event`` the
  app awaits. A SECOND signal means "now": it logs and calls ``os._exit(128 + signum)`` (143 for SIGTERM, 130
  for SIGINT) without running any more cleanup. With ``after_uninstall="stopping"`` (the bot's own process)
  the handlers stay past :meth:`ShutdownSignals.uninstall`, through the interpreter's teardown (executors,
  the chart worker): a first signal there changes nothing (the process is already stopping, its exit code
  stands, e.g. 0), a second one still exits at once. Without it the loop's removal would restore the
  default action, and a SIGTERM in those last moments would end a clean stop with 143.
- :func:`run_shutdown`: runs named steps in order (stop intake, drain analysis, flush store and outbox, close
  connections, ...). Each step gets at most its own timeout and never more than what is left of the overall
  budget (default 10 s, inside systemd's TimeoutStopSec=30); a step that fails or times out is logged and the
  sequence continues, so one broken component cannot keep the others from closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

log = structlog.get_logger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignals:
    """Installs handlers; ``await wait()`` returns the first signal's name.

    :param exit_now: called with the exit code on the second signal (default ``os._exit``; replaceable in tests).
    """

    def __init__(
        self,
        signals: Sequence[signal.Signals] = DEFAULT_SIGNALS,
        *,
        exit_now: Callable[[int], object] = os._exit,
        after_uninstall: Literal["default", "stopping"] = "default",
    ) -> None:
        self.signals = tuple(signals)
        self.event = asyncio.Event()
        self.received: signal.Signals | None = None
        self.count = 0
        self._exit_now = exit_now
        self._after_uninstall = after_uninstall
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fallback: dict[signal.Signals, Callable[[int, object], object] | int | None] = {}

    def install(self) -> ShutdownSignals:
        """Register the handlers on the running loop (call from inside it). Returns self."""
        self._loop = loop = asyncio.get_running_loop()
        for sig in self.signals:
            try:
                loop.add_signal_handler(sig, self._handle, sig)
            except (NotImplementedError, RuntimeError):
                # Windows / non-main thread: plain signal.signal, hopping onto the loop thread-safely
                self._fallback[sig] = signal.getsignal(sig)  # type: ignore[assignment]
                signal.signal(sig, lambda signum, _frame: loop.call_soon_threadsafe(self._handle, signal.Signals(signum)))
        return self

    def uninstall(self) -> None:
        if self._loop is None:
            return
        for sig in self.signals:
            if sig in self._fallback:
                previous = self._fallback.pop(sig)
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            else:
                self._loop.remove_signal_handler(sig)
        self._loop = None
        if self._after_uninstall == "stopping" and threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                signal.signal(sig, self._while_stopping)

    def _while_stopping(self, signum: int, frame: object) -> None:
        """Handler for the last moments of the process: the first signal is absorbed (we are stopping
        already), a second one exits at once. No logging here: the logging lock may be held right now."""
        self.count += 1
        if self.count >= 2:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            self._exit_now(128 + int(signum))

    def request(self, reason: signal.Signals = signal.SIGTERM) -> None:
        """Ask for a shutdown from code (e.g. a fatal component error), as if ``reason`` had been received."""
        self._handle(reason)

    def _handle(self, sig: signal.Signals) -> None:
        self.count += 1
        if self.count == 1:
            self.received = sig
            log.info("shutdown requested; send the signal again to exit immediately", signal=sig.name)
            self.event.set()
            return
        code = 128 + int(sig)
        log.warning("second signal: exiting immediately without cleanup", signal=sig.name, exit_code=code)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed stdout must not stop the exit
                stream.flush()
        self._exit_now(code)

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> str:
        await self.event.wait()
        return self.received.name if self.received is not None else "requested"


@dataclass(frozen=True, slots=True)
class ShutdownStep:
    """One step of the shutdown sequence: ``action`` is awaited with at most ``timeout_s``."""

    name: str
    action: Callable[[], Awaitable[object]]
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class StepResult:
    name: str
    ok: bool
    seconds: float
    error: str | None = None


async def run_shutdown(steps: Sequence[ShutdownStep], total_timeout_s: float = 10.0) -> list[StepResult]:
    """Run ``steps`` in order within ``total_timeout_s``; failures are logged and skipped, never raised.

    A step with no budget left is not started (reported as ``skipped: no time left``).
    """
    deadline = time.monotonic() + total_timeout_s
    results: list[StepResult] = []
    for step in steps:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            results.append(StepResult(step.name, False, 0.0, "skipped: no time left"))
            log.error("shutdown step skipped: no time left", step=step.name)
            continue
        budget = min(step.timeout_s, remaining)
        started = time.monotonic()
        error: str | None = None
        try:
            await asyncio.wait_for(step.action(), budget)
        except TimeoutError:
            error = f"timed out after {budget:.1f} s"
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the shutdown itself is cancelled
            error = "cancelled inside the step"  # e.g. it awaited a task it had cancelled: keep closing the rest
        except Exception as exc:  # keep closing the other components
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        results.append(StepResult(step.name, error is None, elapsed, error))
        if error is None:
            log.info("shutdown step done", step=step.name, seconds=round(elapsed, 3))
        else:
            log.error("shutdown step failed", step=step.name, error=error, seconds=round(elapsed, 3))
    return results
