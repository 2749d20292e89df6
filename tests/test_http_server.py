"""The health/metrics HTTP server, on a real socket (ephemeral port), driven by aiohttp's client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from src.bot.http_server import HealthServer, HttpServerError
from src.bot.metrics import BotMetrics
from src.bot.status import ConnectionStatus, StatusSnapshot, StreamStatus

READY = StatusSnapshot(
    started_at_ms=0,
    now_ms=120_000,
    mode="live",
    warmed_up=True,
    streams=(
        StreamStatus("BTCUSDT", "15m", 1_700_000_000_000, 1_700_000_900_000, True),
        StreamStatus("ETHUSDT", "15m", 1_700_000_000_000, 1_700_000_900_000, True),
    ),
    connections=(ConnectionStatus("shard-0", 2, True, 0, 0, 119_000),),
    signals_total=3,
    signals_by_symbol=(("BTCUSDT", 3),),
    last_signal_at=None,
    store_backend="sqlite",
    store_healthy=True,
    spool_depth=0,
    cache="off",
    trading="off (alerts only)",
    discord="off",
)


class Probes:
    """Mutable providers the tests flip between states."""

    def __init__(self) -> None:
        self.snap = READY
        self.store_up = True
        self.status_calls = 0

    async def status(self) -> StatusSnapshot:
        self.status_calls += 1
        return self.snap

    async def ping(self) -> bool:
        if not self.store_up:
            raise ConnectionRefusedError("postgres down")
        return True


@pytest.fixture
async def server() -> AsyncIterator[tuple[HealthServer, Probes, str]]:
    probes = Probes()
    metrics = BotMetrics(process_metrics=False)
    srv = HealthServer(host="127.0.0.1", port=0, metrics=metrics, status=probes.status, store_ping=probes.ping,
                       loop_lag=lambda: 0.0123, probe_timeout_s=0.5)
    await srv.start()
    assert srv.bound_port
    yield srv, probes, f"http://127.0.0.1:{srv.bound_port}"
    await srv.stop()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_healthz_answers_200_without_touching_any_dependency(server):
    _, probes, base = server
    probes.store_up = False
    status, ctype, body = await get(base + "/healthz")
    assert status == 200
    assert ctype.startswith("application/json")
    assert '"status":"ok"' in body
    assert '"loop_lag_s":0.0123' in body
    assert probes.status_calls == 0


async def test_readyz_is_200_when_warm_fresh_and_store_reachable(server):
    _, _, base = server
    status, _, body = await get(base + "/readyz")
    assert status == 200, body
    assert '"ready":true' in body
    assert '"store":"ok"' in body


async def test_readyz_is_503_listing_every_reason(server):
    _, probes, base = server
    stale = replace(READY.streams[1], fresh=False)
    probes.snap = replace(READY, warmed_up=False, streams=(READY.streams[0], stale))
    probes.store_up = False
    status, _, body = await get(base + "/readyz")
    assert status == 503
    assert '"ready":false' in body
    assert "warm-up not finished" in body
    assert "1 of 2 streams stale: ETHUSDT 15m" in body
    assert "store ping failed: ConnectionRefusedError" in body
    assert "postgres down" not in body  # exception text may carry DSNs: only the type is shown


async def test_readyz_reports_a_hanging_status_provider_as_not_ready(server):
    srv, _, base = server

    async def hang() -> StatusSnapshot:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    srv.status = hang
    status, _, body = await get(base + "/readyz")
    assert status == 503
    assert "status provider timed out" in body


async def test_readyz_long_stale_list_is_truncated():
    streams = tuple(StreamStatus(f"S{i}USDT", "1h", None, None, False) for i in range(50))
    snap = replace(READY, streams=streams)

    async def status() -> StatusSnapshot:
        return snap

    srv = HealthServer(port=0, status=status)
    await srv.start()
    try:
        code, _, body = await get(f"http://127.0.0.1:{srv.bound_port}/readyz")
    finally:
        await srv.stop()
    assert code == 503
    assert "50 of 50 streams stale" in body
    assert "(+30 more)" in body
    assert "S49USDT" not in body


async def test_metrics_endpoint_serves_parseable_prometheus_text_with_status_gauges(server):
    srv, _, base = server
    assert srv.metrics is not None
    srv.metrics.signal_emitted("wyckoff_spring")
    srv.metrics.sources.frames_received = lambda: 42
    status, ctype, text = await get(base + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert values[("wyeli_signals_emitted_total", (("kind", "trade"), ("pattern", "wyckoff_spring")))] == 1
    assert values[("wyeli_ws_frames_received_total", ())] == 42
    assert values[("wyeli_streams", (("state", "fresh"),))] == 2
    assert values[("wyeli_warmed_up", ())] == 1


async def test_unknown_path_is_404(server):
    _, _, base = server
    status, _, _ = await get(base + "/nope")
    assert status == 404


async def test_port_in_use_gives_a_clear_error():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        srv = HealthServer(port=port)
        with pytest.raises(HttpServerError, match=r"HTTP_PORT=0 to disable"):
            await srv.start()
        await srv.stop()  # harmless after a failed start
    finally:
        blocker.close()


async def test_stop_is_idempotent_and_start_twice_binds_once():
    srv = HealthServer(port=0)
    await srv.start()
    port = srv.bound_port
    await srv.start()
    assert srv.bound_port == port
    await srv.stop()
    await srv.stop()
