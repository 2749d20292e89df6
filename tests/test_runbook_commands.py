"""Every RUNBOOK command that inspects a local set-up works on the DEFAULT one (zero config: SQLite in ./data,
no spool), exits 0, prints no traceback and leaves no stray file behind (issue 11: the old spool one-liner
failed with "no such table: spool" and left an empty spool file)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.storage_contract import delivery, make_candle, make_signal

REPO = Path(__file__).resolve().parent.parent
PYTHON = ".venv/bin/python"
# commands that only read (or back up) the local store and configuration; the others need the network,
# Discord, Postgres or minutes of work and are covered by their own tests
LOCAL = (f'{PYTHON} -c "import sqlite3', f"{PYTHON} -m src.storage spool", f"{PYTHON} -m src.bot.config --check")
_INLINE = re.compile(r"`(\.venv/bin/python [^`]+)`")


def runbook_commands() -> list[str]:
    out: list[str] = []
    for line in (REPO / "RUNBOOK.md").read_text().splitlines():
        candidates = [line.strip()] if line.startswith(PYTHON) else _INLINE.findall(line)
        for cmd in candidates:
            if cmd.startswith(LOCAL) and "/etc/wyeli" not in cmd and "--online" not in cmd and cmd not in out:
                out.append(cmd)
    return out


COMMANDS = runbook_commands()


def test_the_runbook_has_local_commands_to_check() -> None:
    assert len(COMMANDS) >= 8
    assert any("src.storage spool" in c for c in COMMANDS)


@pytest.fixture(scope="module")
def default_setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory as the zero-config bot leaves it: ./data/wyeli.db with candles, signals and deliveries."""
    import asyncio

    from src.storage.sqlite_store import SqliteStore

    root = tmp_path_factory.mktemp("default")

    async def fill() -> None:
        store = SqliteStore(root / "data" / "wyeli.db")
        await store.open()
        await store.upsert_candles([make_candle(i=i) for i in range(5)])
        sig = make_signal()
        await store.commit_analysis([sig], {("BTCUSDT", "1h"): sig.candle_time_ms})
        await store.record_delivery(delivery(sig, "webhook", "sent", attempts=2, message_id="1"))
        await store.close()

    asyncio.run(fill())
    return root


@pytest.mark.parametrize("command", COMMANDS)
def test_a_runbook_command_works_on_the_default_set_up(default_setup: Path, command: str) -> None:
    before = {p.relative_to(default_setup) for p in default_setup.rglob("*")}
    argv = shlex.split(command, comments=True)
    argv[0] = sys.executable
    r = subprocess.run(argv, cwd=default_setup, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (command, r.stdout[-1500:], r.stderr[-1500:])
    assert "Traceback" not in r.stdout + r.stderr, command
    created = {p.relative_to(default_setup) for p in default_setup.rglob("*")} - before
    created = {p for p in created if not p.name.startswith("wyeli.db-")}  # SQLite's own WAL/shm files
    assert created <= {Path("data/wyeli-backup.db")}, (command, created)
