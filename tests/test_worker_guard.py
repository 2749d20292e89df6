"""kill -9 of the bot never leaves its chart worker process behind (issue 11, defect 6): the worker watches
its parent (PR_SET_PDEATHSIG on Linux, plus a parent-pid watchdog thread everywhere) and ends with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import asyncio, multiprocessing
    from src.bot.discord.charts import ChartRenderer, ChartSpec

    async def main() -> None:
        renderer = ChartRenderer()  # the bot's default: a spawned worker process
        png = await renderer.render(ChartSpec(title="warm", candles=()))
        assert png and renderer.uses_processes
        print("worker", *[p.pid for p in multiprocessing.active_children()], flush=True)
        await asyncio.Event().wait()

    if __name__ == "__main__":  # spawn re-imports this file in the worker
        asyncio.run(main())
    """
)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return "\nState:\tZ" not in state


def test_kill_9_of_the_bot_ends_its_chart_worker_too(tmp_path: Path) -> None:
    script = tmp_path / "bot.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("worker"):
                workers = [int(x) for x in line.split()[1:]]
                break
        assert workers and all(alive(w) for w in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10  # a safety limit for a slow machine, not a timing assertion
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), "chart worker orphaned"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)


def test_a_worker_whose_parent_is_already_gone_exits_at_once() -> None:
    code = "from src.bot.worker_guard import die_with_parent; die_with_parent(1); print('still here')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "still here" not in out.stdout
