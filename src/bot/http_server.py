"""Health, readiness and Prometheus metrics over HTTP, served by aiohttp inside the bot's event loop.

- ``GET /healthz``: liveness. The loop answered, nothing external is checked (a Binance or database
  outage must not look like a dead process). Always 200 ``{"status": "ok", ...}``.
- ``GET /readyz``: readiness, for monitoring. 200 ``{"ready": true, ...}`` when warm-up is done, every stream
  is fresh and the store answers; else 503 ``{"ready": false, "reasons": [...]}`` naming what is not ready,
  first the problems the app reports (``StatusSnapshot.problems``: the store still opening or down at
  start, Binance unreachable and why).
- ``GET /metrics``: Prometheus text format from :class:`~src.bot.metrics.BotMetrics` (status gauges refreshed
  first).

Inputs are provider callables, so the server is testable alone. Each provider call is bounded by
``probe_timeout_s`` (default 2 s); a provider that raises or times out makes ``/readyz`` answer 503 with the
reason, it never crashes the handler. Access logs are off (a scrape every 15 s would flood the journal).
HTTP_PORT=0 (or ``--no-http``) means the app does not create this server at all; ``port=0`` here binds an
ephemeral port (tests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from src.bot.metrics import BotMetrics
from src.bot.status import StatusProvider, StatusSnapshot

log = structlog.get_logger(__name__)

StorePing = Callable[[], Awaitable[bool]]
MAX_LISTED_STREAMS = 20  # /readyz names at most this many stale streams (SYMBOLS=ALL can have 1000+)


class HttpServerError(RuntimeError):
    """The server could not bind (port in use, bad host); the message says what to change."""


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class HealthServer:
    """The aiohttp server; ``await start()`` binds, ``await stop()`` closes (both idempotent).

    :param status: async provider of the current :class:`StatusSnapshot` (None: readiness cannot be judged,
        /readyz answers 503 "no status provider").
    :param store_ping: async callable, True when the store answers; None falls back to
        ``snapshot.store_healthy``.
    :param loop_lag: returns the latest event-loop lag in seconds (shown by /healthz; optional).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        metrics: BotMetrics | None = None,
        status: StatusProvider | None = None,
        store_ping: StorePing | None = None,
        loop_lag: Callable[[], float] | None = None,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.status = status
        self.store_ping = store_ping
        self.loop_lag = loop_lag
        self.probe_timeout_s = probe_timeout_s
        self.started_monotonic = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._metrics_handler = make_aiohttp_handler(metrics.registry) if metrics is not None else None

    # ------------------------------------------------------------------ lifecycle
    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_view)
        return app

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise HttpServerError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); "
                "set HTTP_PORT to a free port, or HTTP_PORT=0 to disable the health/metrics server"
            ) from exc
        self._runner = runner
        addresses = runner.addresses
        self._bound_port = int(addresses[0][1]) if addresses else self.port
        log.info("health/metrics server listening", host=self.host, port=self._bound_port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("health/metrics server stopped")

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (differs from ``port`` when that was 0); None before start."""
        return self._bound_port

    # ------------------------------------------------------------------ handlers
    async def healthz(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"status": "ok", "uptime_s": round(time.monotonic() - self.started_monotonic, 3)}
        if self.loop_lag is not None:
            try:
                body["loop_lag_s"] = round(float(self.loop_lag()), 4)
            except Exception:  # liveness must not depend on an optional figure
                log.warning("loop lag provider failed", exc_info=True)
        return _json(body)

    async def readyz(self, request: web.Request) -> web.Response:
        reasons: list[str] = []
        snap = await self._snapshot(reasons)
        body: dict[str, Any] = {}
        if snap is not None:
            body["mode"] = snap.mode
            reasons.extend(snap.problems)  # what the app knows is wrong: store opening or down, Binance unreachable
            if not snap.warmed_up:
                reasons.append("warm-up not finished")
            stale = [f"{s.symbol} {s.timeframe}" for s in snap.streams if not s.fresh]
            if not snap.streams:
                reasons.append("no streams configured or started")
            if stale:
                listed = ", ".join(stale[:MAX_LISTED_STREAMS])
                more = f" (+{len(stale) - MAX_LISTED_STREAMS} more)" if len(stale) > MAX_LISTED_STREAMS else ""
                reasons.append(f"{len(stale)} of {len(snap.streams)} streams stale: {listed}{more}")
            body["streams"] = {"total": len(snap.streams), "stale": len(stale)}
            body["store_backend"] = snap.store_backend
            body["role"] = snap.role  # a follower is ready too: it ingests and stores, ready to take over
            body["shard"] = snap.shard
            body["epoch"] = snap.epoch
            body["lease_age_s"] = None if snap.lease_age_s is None else round(snap.lease_age_s, 3)
        store_ok = await self._store_ok(snap, reasons)
        body["store"] = "ok" if store_ok else "unreachable"
        if not store_ok and not any(r.startswith("store") for r in reasons):
            reasons.append("store unreachable")
        if reasons:
            return _json({"ready": False, "reasons": reasons, **body}, status=503)
        return _json({"ready": True, **body})

    async def metrics_view(self, request: web.Request) -> web.StreamResponse:
        if self.metrics is None or self._metrics_handler is None:
            return web.Response(status=404, text="metrics disabled\n")
        if self.status is not None:
            snap = await self._snapshot([])
            if snap is not None:
                self.metrics.update_status(snap)
        return await self._metrics_handler(request)

    # ------------------------------------------------------------------ probes
    async def _snapshot(self, reasons: list[str]) -> StatusSnapshot | None:
        if self.status is None:
            reasons.append("no status provider")
            return None
        try:
            return await asyncio.wait_for(self.status(), self.probe_timeout_s)
        except TimeoutError:
            reasons.append(f"status provider timed out after {self.probe_timeout_s} s")
        except Exception as exc:  # report, do not crash the handler
            log.warning("status provider failed", error=repr(exc))
            reasons.append(f"status provider failed: {type(exc).__name__}")
        return None

    async def _store_ok(self, snap: StatusSnapshot | None, reasons: list[str]) -> bool:
        if self.store_ping is None:
            return snap is not None and snap.store_healthy
        try:
            ok = bool(await asyncio.wait_for(self.store_ping(), self.probe_timeout_s))
        except TimeoutError:
            reasons.append(f"store ping timed out after {self.probe_timeout_s} s")
            return False
        except Exception as exc:  # StoreUnavailable and friends
            log.warning("store ping failed", error=repr(exc))
            reasons.append(f"store ping failed: {type(exc).__name__}")
            return False
        return ok
