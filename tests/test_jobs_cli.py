"""``python -m backtest jobs submit|status|list|cancel`` on the SQLite queue: ids, one JSON object per status,
bad input and unsupported stores exit 2 with a one-line message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backtest.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "q.db"))
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["jobs", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a script sees it: a fresh process, stdout and stderr apart."""
    env = {**os.environ, "SQLITE_PATH": str(tmp_path / "q.db"), "PYTHONPATH": str(REPO)}
    for name in ("DATABASE_URL", "SUPABASE_URL"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "backtest", "jobs", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_submit_prints_only_the_id_on_stdout_and_status_one_json_object(tmp_path: Path) -> None:
    sub = cli(tmp_path, "submit", "--symbol", "solusdt", "--timeframe", "1h", "--from", "2024-01-01",
              "--to", "2025-01-01", "--pattern", "springs")
    assert sub.returncode == 0 and sub.stdout == "1\n" and "position 1" in sub.stderr
    st = cli(tmp_path, "status", "1")
    assert st.returncode == 0 and len(st.stdout.splitlines()) == 1
    d = json.loads(st.stdout)
    assert d["state"] == "queued" and d["queue_position"] == 1 and d["symbols"] == ["SOLUSDT"]
    assert d["from"] == "2024-01-01T00:00:00.000Z" and d["to"] == "2025-01-01T00:00:00.000Z"
    assert d["patterns"] == ["wyckoff_spring"] and "summary" not in d


def test_list_and_cancel(capsys) -> None:
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert run(capsys, "submit", "--symbol", sym, "--timeframe", "4h")[0] == 0
    code, out, _ = run(capsys, "cancel", "1")
    assert code == 0 and json.loads(out.splitlines()[-1])["state"] == "cancelled"
    code, out, _ = run(capsys, "list")
    lines = [ln for ln in out.splitlines() if ln.startswith("#")]  # (another test may have sent logs to stdout)
    assert code == 0 and lines[0].startswith("#2     queued") and lines[1].startswith("#1     cancelled")
    code, out, _ = run(capsys, "list", "--state", "queued", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines() if line.startswith("{")] == [2]


@pytest.mark.parametrize(("args", "message"), [
    (["submit", "--symbol", "BTCUSDT", "--timeframe", "7h"], "unknown interval '7h'"),
    (["submit", "--symbol", "BTCUSDT", "--timeframe", "1h", "--from", "2024-13-01"], "--from: not an ISO date"),
    (["submit", "--symbol", "BTCUSDT", "--timeframe", "1h", "--from", "2025-01-01", "--to", "2024-01-01"],
     "the period must end after it starts"),
    (["submit", "--symbol", "BTCUSDT", "--timeframe", "1h", "--pattern", "unicorn"], "--pattern: unknown 'unicorn'"),
    (["submit", "--symbol", "BTC,ETH", "--timeframe", "1h"], "a backtest job runs one symbol"),
    (["status", "42"], "no job #42"),
])
def test_bad_input_exits_2_with_one_line(capsys, args: list[str], message: str) -> None:
    code, _, err = run(capsys, *args)
    # one line from the command (logging set up by an earlier test in this process may add its own lines)
    mine = [ln for ln in err.splitlines() if ln.startswith("backtest jobs: ")]
    assert code == 2 and len(mine) == 1 and message in mine[0]


def test_supabase_rest_alone_cannot_run_the_queue(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", "secret")
    code, _, err = run(capsys, "list")
    assert code == 2 and "set DATABASE_URL" in err
    assert main(["worker"]) == 2


def test_files_writes_a_finished_jobs_result_files(capsys, tmp_path: Path) -> None:
    import asyncio

    from src.jobs.model import JobFile
    from src.jobs.sqlite_jobs import SqliteJobStore

    assert run(capsys, "submit", "--symbol", "BTCUSDT", "--timeframe", "1h")[0] == 0

    async def finish() -> None:
        store = SqliteJobStore(tmp_path / "q.db")
        await store.open()
        job = await store.start(1, "w")
        assert job is not None
        await store.finish(1, job.attempt, "done", summary={"trades": 0},
                           files=[JobFile("equity.png", b"png"), JobFile("report.json", b"{}")])
        await store.close()

    asyncio.run(finish())
    code, _, _ = run(capsys, "files", "1", "--out-dir", str(tmp_path / "got"))
    assert code == 0 and (tmp_path / "got" / "equity.png").read_bytes() == b"png"
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["equity.png", "report.json"]
    assert run(capsys, "files", "9", "--out-dir", str(tmp_path / "x"))[0] == 2
