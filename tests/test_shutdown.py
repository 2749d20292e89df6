"""Signal handling (first signal = graceful, second = immediate exit) and the bounded shutdown sequence."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from src.bot.shutdown import ShutdownSignals, ShutdownStep, run_shutdown

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
