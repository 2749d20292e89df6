"""Start-up at the edges (issue 11): /healthz from the first second, /readyz saying why the bot is not ready
(store opening or down, Binance unreachable, HTTP 451), a store unreachable at start waited for without a
traceback, HTTP 451 ending the bot with a clear message, and no raw traceback from an unexpected error."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from src.bot import main as bot_main
from src.bot.app import App, RunOptions
from src.config import Config
from src.market.feed import BinanceKlineFeed
from src.storage.sqlite_store import SqliteStore
from tests.fakes.binance import FakeBinance


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(cond: Callable[[], Any], within_s: float = 20.0) -> None:
    async with asyncio.timeout(within_s):
        while not await cond():  # noqa: ASYNC110 - state in the app and another process
            await asyncio.sleep(0.05)


def env_for(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    return {"SQLITE_PATH": str(tmp_path / "w.db"), "SPOOL_PATH": str(tmp_path / "spool.db"),
            "CALIBRATION_PATH": str(tmp_path / "none.json"), "SYMBOLS": "BTCUSDT", "TIMEFRAMES": "1m",
            "WARMUP_CANDLES": "30", "HTTP_PORT": str(port), "STATUS_INTERVAL_SECONDS": "0", "LOG_FORMAT": "text",
            "WS_RECONNECT_DELAY": "0.05", "WS_MAX_RECONNECT_DELAY": "0.1", **extra}


async def http_get(port: int, path: str) -> tuple[int, dict[str, Any]] | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.json()
    except aiohttp.ClientConnectionError:
        return None


def use_fake_clock(monkeypatch: pytest.MonkeyPatch, fake: FakeBinance) -> None:
    original = BinanceKlineFeed.from_config.__func__  # type: ignore[attr-defined]

    def with_fake_clock(cls: type[BinanceKlineFeed], *args: Any, **kw: Any) -> BinanceKlineFeed:
        return original(cls, *args, clock=fake.clock, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(BinanceKlineFeed, "from_config", classmethod(with_fake_clock))


class HangingStore(SqliteStore):
    """A store whose open() does not return until ``release`` is set (a database that does not answer)."""

    release = asyncio.Event()

    async def open(self) -> None:
        await self.release.wait()
        await super().open()


async def test_healthz_answers_while_the_store_is_still_opening_and_readyz_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import src.storage.factory as factory

    HangingStore.release = asyncio.Event()
    monkeypatch.setattr(factory, "build_store", lambda config: HangingStore(config.sqlite_path))
    port = free_port()
    app = App(Config.from_env(env_for(tmp_path, port), dotenv_path=None).validate(), RunOptions(http=True))
    run = asyncio.create_task(app.run())
    try:
        async def healthz_ok() -> bool:
            got = await http_get(port, "/healthz")
            return got is not None and got[0] == 200

        await eventually(healthz_ok, within_s=10)
        status, body = await http_get(port, "/readyz") or (0, {})
        assert status == 503 and any("opening the sqlite store" in r for r in body["reasons"]), body
        app.shutdown.request()  # a stop while the store never answers: a clean exit, no hang
        async with asyncio.timeout(20):
            assert await run == 0
    finally:
        HangingStore.release.set()
        if not run.done():
            run.cancel()


async def test_a_store_unreachable_at_start_is_waited_for_and_readyz_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from src.storage.base import GateSeed, StoreUnavailable

    original = SqliteStore.gate_seed
    failing = {"left": 10**6}

    async def down(self: SqliteStore, *, structure_window_ms: int) -> GateSeed:
        if failing["left"] > 0:
            failing["left"] -= 1
            raise StoreUnavailable("postgres: connection refused")
        return await original(self, structure_window_ms=structure_window_ms)

    monkeypatch.setattr(SqliteStore, "gate_seed", down)
    monkeypatch.setattr(App, "STORE_RETRY_S", 0.05)
    port = free_port()
    async with FakeBinance(["BTCUSDT"], ["1m"], seed=3) as fake:
        use_fake_clock(monkeypatch, fake)
        cfg = Config.from_env(env_for(tmp_path, port, BINANCE_WS_URL=fake.ws_url, BINANCE_REST_URL=fake.rest_url),
                              dotenv_path=None).validate()
        app = App(cfg, RunOptions(http=True))
        run = asyncio.create_task(app.run())

        async def says_store_down() -> bool:
            got = await http_get(port, "/readyz")
            return got is not None and any("store unavailable at start" in r and "connection refused" in r
                                           for r in got[1].get("reasons", []))

        await eventually(says_store_down)
        failing["left"] = 0  # the database is back
        await eventually(lambda: asyncio.sleep(0, app.warmed_up.is_set()))
        app.shutdown.request()
        async with asyncio.timeout(20):
            assert await run == 0


async def test_supabase_unreachable_at_start_keeps_the_bot_up_without_a_traceback_and_a_sigterm_exits_0(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import src.storage.supabase_store as supabase_store
    from tests.test_storage_supabase import SERVICE_KEY

    monkeypatch.setattr(supabase_store, "SupabaseRestStore", partial(
        supabase_store.SupabaseRestStore, max_attempts=2, retry_initial=0.01, retry_max=0.02, timeout=0.5))
    monkeypatch.setattr(App, "STORE_RETRY_S", 0.05)
    dead = free_port()
    port = free_port()
    async with FakeBinance(["BTCUSDT"], ["1m"], seed=4) as fake:
        use_fake_clock(monkeypatch, fake)
        cfg = Config.from_env(env_for(tmp_path, port, BINANCE_WS_URL=fake.ws_url, BINANCE_REST_URL=fake.rest_url,
                                      SUPABASE_URL=f"http://127.0.0.1:{dead}", SUPABASE_SERVICE_KEY=SERVICE_KEY),
                              dotenv_path=None).validate()
        app = App(cfg, RunOptions(http=True))
        with capture_logs() as logs:
            run = asyncio.create_task(app.run())

            async def waiting() -> bool:
                got = await http_get(port, "/readyz")
                return got is not None and any("store unavailable at start" in r for r in got[1].get("reasons", []))

            await eventually(waiting)
            await asyncio.sleep(1.0)  # several retries, concurrent with the spool's own open attempts
            assert not run.done()
            app.shutdown.request()
            async with asyncio.timeout(20):
                assert await run == 0
    assert not [e for e in logs if e["log_level"] in ("critical",)]
    assert any(e["event"] == "store unavailable, waiting for it" for e in logs)


async def test_http_451_stops_the_bot_with_exit_2_and_says_where_it_can_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeBinance(["BTCUSDT"], ["1m"], seed=5) as fake:
        use_fake_clock(monkeypatch, fake)
        fake.fail_next(451, times=20)
        cfg = Config.from_env(env_for(tmp_path, 0, BINANCE_WS_URL=fake.ws_url, BINANCE_REST_URL=fake.rest_url),
                              dotenv_path=None).validate()
        with capture_logs() as logs:
            async with asyncio.timeout(30):
                code = await App(cfg, RunOptions(http=False)).run()
    assert code == 2
    problems = " ".join(str(e.get("problem", "")) for e in logs if e["log_level"] == "error")
    assert "HTTP 451" in problems and "region" in problems


async def test_an_unreachable_binance_is_named_in_readyz(tmp_path: Path) -> None:
    dead = free_port()
    port = free_port()
    cfg = Config.from_env(env_for(tmp_path, port, BINANCE_WS_URL=f"ws://127.0.0.1:{dead}/market",
                                  BINANCE_REST_URL=f"http://127.0.0.1:{dead}"), dotenv_path=None).validate()
    app = App(cfg, RunOptions(http=True))
    run = asyncio.create_task(app.run())

    async def named() -> bool:
        got = await http_get(port, "/readyz")
        return got is not None and any("Binance REST unreachable" in r for r in got[1].get("reasons", []))

    try:
        await eventually(named, within_s=30)
        snap = await app.status_snapshot()
        assert any("Binance REST unreachable" in p for p in snap.problems)
    finally:
        app.shutdown.request()
        async with asyncio.timeout(20):
            assert await run == 0


def test_an_unexpected_error_is_logged_as_json_and_exits_1_without_a_raw_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def boom(config: Config, options: RunOptions) -> int:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(bot_main, "run_app", boom)
    for k, v in env_for(tmp_path, 0, LOG_FORMAT="json").items():
        monkeypatch.setenv(k, v)
    assert bot_main.main([]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is a JSON log record: no raw traceback
    fatal = [r for r in records if r["level"] == "critical"]
    assert fatal and "something nobody foresaw" in json.dumps(fatal[0])
