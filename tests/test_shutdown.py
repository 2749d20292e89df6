"""Signal handling (first signal = graceful, second = immediate exit) and the bounded shutdown sequence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from src.analysis.types import Candle
from src.bot.app import App, RunOptions
from src.bot.pipeline import Pipeline
from src.bot.shutdown import ShutdownSignals, ShutdownStep, run_shutdown
from src.config import Config
from src.market.aggregator import build_candle
from src.market.feed import BinanceKlineFeed
from src.market.klines_csv import write_klines_csv
from tests.candlegen import random_walk
from tests.fakes.binance import FakeBinance

ROOT = Path(__file__).resolve().parent.parent


async def test_first_sigterm_sets_the_event_and_second_exits_with_143():
    exits: list[int] = []
    exited = asyncio.Event()

    def fake_exit(code: int) -> None:
        exits.append(code)
        exited.set()

    sigs = ShutdownSignals(exit_now=fake_exit).install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(sigs.wait(), 10) == "SIGTERM"
        assert sigs.requested and exits == []
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(exited.wait(), 10)
        assert exits == [143]
    finally:
        sigs.uninstall()


async def test_second_sigint_exits_with_130():
    exits: list[int] = []
    sigs = ShutdownSignals(exit_now=exits.append).install()
    try:
        sigs.request(signal.SIGINT)
        sigs.request(signal.SIGINT)
    finally:
        sigs.uninstall()
    assert sigs.received == signal.SIGINT
    assert exits == [130]


async def test_uninstall_removes_the_loop_handlers():
    loop = asyncio.get_running_loop()
    sigs = ShutdownSignals().install()
    sigs.uninstall()
    assert loop.remove_signal_handler(signal.SIGTERM) is False  # nothing left to remove
    assert not sigs.requested


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from src.bot.shutdown import ShutdownSignals, ShutdownStep, run_shutdown

    async def main() -> int:
        sigs = ShutdownSignals().install()
        print("ready", flush=True)
        name = await sigs.wait()
        print("graceful", name, flush=True)

        async def flush() -> None:
            await asyncio.sleep(float(sys.argv[1]))  # a hung flush when argv[1] is large
            print("flushed", flush=True)

        await run_shutdown([ShutdownStep("flush", flush, timeout_s=60)], total_timeout_s=60)
        return 0

    sys.exit(asyncio.run(main()))
    """
)


def start_child(tmp_path: Path, flush_seconds: float) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(flush_seconds)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )
    read_until(proc, "ready")
    return proc


def read_until(proc: subprocess.Popen[str], wanted: str) -> None:
    """Read the child's stdout line by line (structlog lines are interleaved) until ``wanted``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == wanted:
            return
    raise AssertionError(f"child ended before printing {wanted!r}")


def test_process_exits_0_after_a_graceful_sigterm(tmp_path):
    proc = start_child(tmp_path, 0.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = out.splitlines()
    assert lines.index("graceful SIGTERM") < lines.index("flushed")


def test_second_signal_kills_a_hung_shutdown_at_once_with_130(tmp_path):
    proc = start_child(tmp_path, 3600.0)
    proc.send_signal(signal.SIGINT)
    read_until(proc, "graceful SIGINT")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "flushed" not in out


async def test_shutdown_steps_run_in_order_and_failures_do_not_stop_the_rest():
    order: list[str] = []

    async def ok(name: str) -> None:
        order.append(name)

    async def broken() -> None:
        order.append("broken")
        raise RuntimeError("disk full")

    async def hangs() -> None:
        order.append("hangs")
        await asyncio.sleep(3600)

    results = await run_shutdown(
        [
            ShutdownStep("stop intake", lambda: ok("stop intake")),
            ShutdownStep("flush store", broken),
            ShutdownStep("flush outbox", hangs, timeout_s=0.05),
            ShutdownStep("close connections", lambda: ok("close connections")),
        ],
        total_timeout_s=30,
    )
    assert order == ["stop intake", "broken", "hangs", "close connections"]
    assert [(r.name, r.ok) for r in results] == [
        ("stop intake", True), ("flush store", False), ("flush outbox", False), ("close connections", True),
    ]
    assert results[1].error == "RuntimeError: disk full"
    assert results[2].error is not None and results[2].error.startswith("timed out")


async def test_a_step_that_raises_cancelled_error_does_not_abort_the_remaining_steps():
    # e.g. a close() that does `task.cancel(); await task`: the CancelledError is the step's, not ours
    order: list[str] = []

    async def awaits_its_cancelled_task() -> None:
        order.append("cancelled inside")
        task = asyncio.ensure_future(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel()
        await task

    async def close_store() -> None:
        order.append("store")

    results = await run_shutdown([ShutdownStep("discord", awaits_its_cancelled_task),
                                  ShutdownStep("store", close_store)], total_timeout_s=30)
    assert order == ["cancelled inside", "store"]
    assert [(r.name, r.ok) for r in results] == [("discord", False), ("store", True)]


async def test_cancelling_the_shutdown_itself_still_propagates():
    async def hangs() -> None:
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(run_shutdown([ShutdownStep("hangs", hangs, 60)], total_timeout_s=60))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_steps_beyond_the_total_budget_are_skipped_not_started():
    started: list[str] = []

    async def slow() -> None:
        started.append("slow")
        await asyncio.sleep(3600)

    async def late() -> None:
        started.append("late")

    results = await run_shutdown([ShutdownStep("slow", slow, 60), ShutdownStep("late", late)], total_timeout_s=0.05)
    assert started == ["slow"]
    assert results[1].error == "skipped: no time left"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exit_code_is_128_plus_the_signal_number(sig):
    exits: list[int] = []
    sigs = ShutdownSignals(exit_now=exits.append)
    sigs.request(sig)
    sigs.request(sig)
    assert exits == [128 + int(sig)]


# ---------------------------------------------------------------- the whole app (needs src.bot.app)
class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages


async def eventually(cond: Callable[[], bool], within_s: float = 30.0) -> None:
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110 - polling state spread over a child process / the app and the fake
            await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stored_candles(db: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(
            "SELECT symbol, timeframe, open_time, close_time, open, high, low, close, volume, trades "
            "FROM candles ORDER BY symbol, timeframe, open_time"
        ).fetchall()


def row(c: Candle) -> tuple[Any, ...]:
    return (c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close, c.volume, c.trades)


async def test_sigterm_during_replay_exits_0_with_every_delivered_candle_stored(tmp_path):
    """``python -m src.bot.main --replay`` as a real child: READY, SIGTERM mid-replay, STOPPING, exit 0, no loss."""
    minutes = random_walk(3000, seed=11)  # 1m candles from a 15m bucket start -> 200 complete 15m candles
    csv_path = tmp_path / "BTCUSDT-1m-e2e.csv"
    write_klines_csv(csv_path, minutes)
    expected = [row(build_candle(minutes[i:i + 15], "15m", minutes[i].open_time_ms)) for i in range(0, 3000, 15)]
    db = tmp_path / "wyeli.db"
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": str(notify.path), "SQLITE_PATH": str(db), "SPOOL_PATH": str(tmp_path / "spool.db"),
        "TIMEFRAMES": "15m", "STATUS_INTERVAL_SECONDS": "0",
        "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
    }
    # speed 6000: one 1m candle every 10 ms, so the whole file would take ~30 s; we stop it long before
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "src.bot.main", "--replay", str(csv_path), "--speed", "6000", "--no-env-file",
        "--replay-db", str(db),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(lambda: any(m.startswith("READY=1") for m in notify.drain()))
        await eventually(lambda: db.exists() and len(stored_candles(db)) >= 5)
        before_signal = len(stored_candles(db))
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    logs = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    done = next(rec for rec in logs if rec["event"] == "replay done")
    assert done["interrupted"] is True
    fed = done["candles"]  # 1m candles handed to the pipeline before it stopped
    assert 15 * before_signal <= fed < 3000
    stored = stored_candles(db)
    # every 15m candle completed by a delivered 1m candle is stored, exactly, and nothing else
    assert stored == expected[: fed // 15]
    messages = notify.drain()
    assert messages[0] == "READY=1\nSTATUS=replaying"
    assert messages[-1].startswith("STOPPING=1")


async def test_sigterm_during_live_streaming_exits_0_and_loses_no_delivered_candle(tmp_path, monkeypatch):
    """The live app against the fake Binance: READY after warm-up, watchdog pings while frames flow, /readyz 200,
    a real SIGTERM, STOPPING=1, exit 0, and every candle the pipeline received is in SQLite exactly."""
    symbols, tfs = ("BTCUSDT", "ETHUSDT"), ("1m", "5m")
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping check every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    received: list[Candle] = []
    original_on_candles = Pipeline.on_candles

    async def recording_on_candles(self: Pipeline, candles: Any, source: str = "live") -> None:
        await original_on_candles(self, candles, source)
        received.extend(c for c in candles if c.timeframe in tfs)  # only after the pipeline accepted them

    monkeypatch.setattr(Pipeline, "on_candles", recording_on_candles)
    async with FakeBinance(list(symbols), list(tfs), seed=31) as fake:
        original_from_config = BinanceKlineFeed.from_config.__func__  # type: ignore[attr-defined]

        def with_fake_clock(cls: type[BinanceKlineFeed], *args: Any, **kw: Any) -> BinanceKlineFeed:
            return original_from_config(cls, *args, clock=fake.clock, **kw)  # type: ignore[no-any-return]

        monkeypatch.setattr(BinanceKlineFeed, "from_config", classmethod(with_fake_clock))
        db = tmp_path / "wyeli.db"
        port = free_port()
        env = {
            "SQLITE_PATH": str(db), "SPOOL_PATH": str(tmp_path / "spool.db"), "CALIBRATION_PATH": str(tmp_path / "x.json"),
            "BINANCE_WS_URL": fake.ws_url, "BINANCE_REST_URL": fake.rest_url, "SYMBOLS": ",".join(symbols),
            "TIMEFRAMES": ",".join(tfs), "WARMUP_CANDLES": "30", "WS_RECONNECT_DELAY": "0.01",
            "WS_MAX_RECONNECT_DELAY": "0.05", "HTTP_PORT": str(port), "STATUS_INTERVAL_SECONDS": "0", "LOG_FORMAT": "text",
        }
        app = App(Config.from_env(env, dotenv_path=None).validate(), RunOptions(http=True))
        run = asyncio.create_task(app.run())
        await eventually(lambda: any(m.startswith("READY=1") for m in notify.drain()))
        await fake.wait_for_connections(1)
        for _ in range(3):
            await fake.advance(1)
        await eventually(lambda: notify.drain().count("WATCHDOG=1") >= 2)

        async with aiohttp.ClientSession() as http:
            async def ready() -> int:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    return resp.status

            async with asyncio.timeout(30):
                while await ready() != 200:
                    await fake.advance(1)
                    await asyncio.sleep(0.05)
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics_text = await resp.text()
        assert "wyeli_ws_frames_received_total" in metrics_text

        await fake.advance(2)
        await fake.send_partials()
        os.kill(os.getpid(), signal.SIGTERM)  # the real signal, handled by the app's loop handler
        async with asyncio.timeout(20):
            code = await run
        assert app.shutdown.received == signal.SIGTERM
    assert code == 0

    stored = stored_candles(db)
    assert {row(c) for c in received} <= set(stored)  # nothing the pipeline received was lost
    assert len(received) > 0
    by_stream: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for r in stored:
        by_stream.setdefault((r[0], r[1]), []).append(r)
    assert set(by_stream) == {(s, t) for s in symbols for t in tfs}
    for (sym, tf), got in by_stream.items():  # contiguous, exact, no duplicates
        expected = [row(c) for c in fake.closed_candles(sym, tf, since_ms=got[0][2])][: len(got)]
        assert got == expected, (sym, tf)
    messages = notify.drain()
    ready_at = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    assert "WATCHDOG=1" in messages[ready_at:]  # pings after READY, while frames flowed
    assert messages[-1].startswith("STOPPING=1")
    assert not any(m.startswith("STOPPING=1") for m in messages[:-1])


# ---------------------------------------------------------------- a signal during the final teardown (issue 11)
TEARDOWN_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from src.bot.shutdown import ShutdownSignals

    async def main() -> None:
        ShutdownSignals(after_uninstall="stopping").install().uninstall()  # what the bot's run() does at its end

    asyncio.run(main())
    print("tearing down", flush=True)  # interpreter teardown: executors joined, chart worker stopped, ...
    time.sleep(float(sys.argv[1]))
    print("done", flush=True)
    sys.exit(0)
    """
)


@pytest.mark.parametrize("signals, code", [(1, 0), (2, 143)])
def test_a_sigterm_during_teardown_lets_it_finish_with_its_exit_code_and_a_second_exits_at_once(
        tmp_path: Path, signals: int, code: int) -> None:
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), "2"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    try:
        read_until(proc, "tearing down")
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        assert proc.wait(30) == code
        assert proc.stdout is not None and ("done" in proc.stdout.read()) == (signals == 1)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_bot_entry_point_keeps_a_stopping_handler_until_the_process_exits(monkeypatch, tmp_path) -> None:
    from src.bot import main as bot_main

    seen: list[RunOptions] = []

    def record(config: Config, options: RunOptions) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(bot_main, "run_app", record)
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "w.db"))
    assert bot_main.main([]) == 0
    assert seen and seen[0].own_process
