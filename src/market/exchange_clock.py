"""Binance's clock as seen from this machine: every "is this kline closed?", warm-up start and freshness
decision (and, later, every signed request's ``timestamp``) uses exchange time, not the local clock.

Rules (the numbers are :class:`ExchangeClock` defaults):

- A measurement sends ``GET /fapi/v1/time`` ``samples`` (3) times. For each: ``t0`` local time before the
  request, ``S`` the server's ``serverTime``, ``t1`` local time after. The server read its clock somewhere
  in ``[t0, t1]``, so ``offset = S - (t0 + t1) / 2`` is wrong by at most half the round trip; the sample
  with the shortest round trip wins and ``uncertainty_ms`` is its half round trip.
- ``now_ms()`` = local time + offset. Before the first measurement the offset is 0 (``measured`` False).
- The offset is measured again every ``refresh_s`` (600 s) by :meth:`run`; a failed refresh keeps the
  last offset (logged), it never falls back to the local clock.
- Frames' event times ``E`` are a continuous check (:meth:`observe_event`): an event is stamped by
  Binance when it is sent, so it can lag the exchange's now by the network latency but never lead it.
  ``E`` more than ``event_tolerance_ms`` (2 000) ahead of ``now_ms()`` means the offset is stale (the
  local clock stepped, a VM resumed, a bad first measurement): it is re-measured at once (:meth:`run`,
  or :meth:`refresh_if_stale` before a decision), but never sooner than ``min_remeasure_s`` (1 s) after
  the last measurement; a stale-triggered measurement that changes nothing (the event times were
  bogus) doubles that gap up to 60 s, so a stream of bogus event times cannot hammer the REST API.
  Event times are never used to set the offset: a forged or broken frame must not move our clock.
- An offset above ``warn_offset_ms`` (1 000) is logged as a warning once per measurement: the machine's
  clock is off (fix NTP); the bot keeps working on exchange time.

Pure bookkeeping plus one injected coroutine (``fetch_server_ms``), so trading and tests can reuse it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

FetchServerTime = Callable[[], Awaitable[int]]
"""``async () -> Binance serverTime in epoch ms`` (e.g. :meth:`BinanceRestClient.server_time_ms`)."""


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One ``/fapi/v1/time`` round trip: the offset it implies and half its round trip (its error bound)."""

    offset_ms: float
    uncertainty_ms: float


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """For ``>status``, logs and metrics."""

    measured: bool
    offset_ms: int
    uncertainty_ms: int
    measurements: int
    failures: int
    event_lead_max_ms: int  # the largest lead of a frame's E over now_ms() seen since the last measurement
    stale: bool


class ExchangeClock:
    """See the module docstring. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        fetch_server_ms: FetchServerTime,
        *,
        local_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        samples: int = 3,
        refresh_s: float = 600.0,
        retry_s: float = 30.0,
        event_tolerance_ms: int = 2000,
        min_remeasure_s: float = 1.0,
        max_remeasure_s: float = 60.0,
        warn_offset_ms: int = 1000,
    ) -> None:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        self._fetch = fetch_server_ms
        self._local = local_clock
        self._monotonic = monotonic
        self._sleep = sleep
        self.samples = samples
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self.event_tolerance_ms = event_tolerance_ms
        self.min_remeasure_s = min_remeasure_s
        self.max_remeasure_s = max_remeasure_s
        self.warn_offset_ms = warn_offset_ms
        self._remeasure_gap_s = min_remeasure_s
        self._offset_ms = 0.0
        self._uncertainty_ms = math.inf
        self._measured = False
        self._measured_at = -math.inf  # monotonic
        self._measurements = 0
        self._failures = 0
        self._event_lead_max = 0
        self._stale = False
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ reading
    @property
    def measured(self) -> bool:
        return self._measured

    @property
    def offset_ms(self) -> int:
        """Exchange time minus local time, ms (0 before the first measurement)."""
        return round(self._offset_ms)

    @property
    def uncertainty_ms(self) -> int:
        """Half the round trip of the measurement in use (0 when unmeasured: nothing better is known)."""
        return round(self._uncertainty_ms) if self._measured else 0

    def now_ms(self) -> int:
        """The exchange's current time in epoch ms (the local clock until the first measurement)."""
        return int(self._local() * 1000 + self._offset_ms)

    def now_s(self) -> float:
        """:meth:`now_ms` in seconds, for APIs that take a ``clock() -> float``."""
        return self._local() + self._offset_ms / 1000

    def status(self) -> ClockStatus:
        return ClockStatus(self._measured, self.offset_ms, self.uncertainty_ms, self._measurements,
                           self._failures, self._event_lead_max, self._stale)

    # ------------------------------------------------------------------ the continuous check
    def observe_event(self, event_ms: int) -> bool:
        """A frame's event time ``E``. Returns True when it leads :meth:`now_ms` by more than the tolerance
        (the offset is then marked stale and :meth:`run` re-measures it)."""
        lead = event_ms - self.now_ms()
        if lead > self._event_lead_max:
            self._event_lead_max = lead
        if lead <= self.event_tolerance_ms + self.uncertainty_ms:
            return False
        if not self._stale:
            self._stale = True
            log.warning("frame event time is ahead of the exchange clock estimate; re-measuring Binance's clock",
                        lead_ms=lead, offset_ms=self.offset_ms)
            self._wake.set()
        return True

    @property
    def stale(self) -> bool:
        return self._stale

    def remeasure_at(self) -> float:
        """Monotonic time from which a stale offset may be measured again."""
        return self._measured_at + self._remeasure_gap_s

    async def refresh_if_stale(self) -> bool:
        """Re-measure now when an event time said the offset is stale and the gap allows it; True if it did.
        Raises what ``fetch_server_ms`` raises (the old offset stays)."""
        if not (self._stale and self._monotonic() >= self.remeasure_at()):
            return False
        async with self._lock:
            if not (self._stale and self._monotonic() >= self.remeasure_at()):
                return False  # measured meanwhile
            await self._measure_locked()
        return True

    # ------------------------------------------------------------------ measuring
    async def ensure(self) -> None:
        """Measure unless a measurement is already in use (concurrent callers share one measurement)."""
        async with self._lock:
            if not self._measured:
                await self._measure_locked()

    async def measure(self) -> ClockSample:
        """Measure the offset now (``samples`` round trips, the shortest wins) and use it.

        Raises whatever ``fetch_server_ms`` raises when every sample failed; the old offset stays."""
        async with self._lock:
            return await self._measure_locked()

    async def _measure_locked(self) -> ClockSample:
        best: ClockSample | None = None
        error: BaseException | None = None
        for _ in range(self.samples):
            t0 = self._local()
            try:
                server_ms = await self._fetch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc  # the other samples would fail the same way (after their own retries)
                break
            t1 = self._local()
            sample = ClockSample(server_ms - (t0 + t1) * 500.0, max(0.0, (t1 - t0) * 500.0))
            if best is None or sample.uncertainty_ms < best.uncertainty_ms:
                best = sample
        if best is None:
            self._failures += 1
            assert error is not None
            raise error
        previous = self._offset_ms if self._measured else None
        if self._stale and previous is not None:
            # a re-measure the event times asked for: if nothing changed they were bogus, so wait longer next time
            changed = abs(best.offset_ms - previous) > self.event_tolerance_ms
            self._remeasure_gap_s = (self.min_remeasure_s if changed
                                     else min(self._remeasure_gap_s * 2, self.max_remeasure_s))
        self._offset_ms = best.offset_ms
        self._uncertainty_ms = best.uncertainty_ms
        self._measured = True
        self._measured_at = self._monotonic()
        self._measurements += 1
        self._event_lead_max = 0
        self._stale = False
        offset = round(best.offset_ms)
        fields = {"offset_ms": offset, "uncertainty_ms": round(best.uncertainty_ms)}
        if abs(offset) > self.warn_offset_ms:
            log.warning("the machine's clock differs from Binance's; using exchange time (fix NTP to silence "
                        "this)", **fields)
        elif previous is None or abs(previous - best.offset_ms) > self.warn_offset_ms:
            log.info("Binance clock measured", **fields)
        return best

    async def run(self) -> None:
        """Re-measure every ``refresh_s``, at once when an event time said the offset is stale (at most once
        per ``min_remeasure_s``), and every ``retry_s`` after a failure. Runs until cancelled; never raises."""
        while True:
            if self._measured and not self._stale:
                wait = self._measured_at + self.refresh_s - self._monotonic()
            elif self._measured:  # stale: re-measure now, unless the gap since the last measurement is too short
                wait = self.remeasure_at() - self._monotonic()
            else:
                wait = 0.0
            if wait > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                    continue  # woken (stale): recompute the wait
                except TimeoutError:
                    pass
            try:
                await self.measure()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot measure Binance's clock; keeping the last offset", error=str(exc),
                            offset_ms=self.offset_ms, measured=self._measured, retry_in_s=self.retry_s)
                await self._sleep(self.retry_s)
