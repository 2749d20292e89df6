"""First run and configuration, as a new user meets them (issue 11): ``--check`` shows what was read and marks
what is wrong, once; a missing ``--env-file`` is an error; symbols that are not USDT-M perpetuals are named
with the right spelling, offline and (``--check --online``) against Binance's exchangeInfo; a bot left with no
valid symbol exits 2."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from src.bot.app import App, RunOptions
from src.config import Config
from tests.fakes.binance import FakeBinance

REPO = Path(__file__).resolve().parent.parent
BASE_ENV = {"PATH": "/usr/bin:/bin"}


def check(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "src.bot.config", "--check", *args], cwd=cwd,
                          env={**BASE_ENV, "PYTHONPATH": str(REPO), **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def test_a_missing_env_file_given_on_the_command_line_is_an_error(tmp_path: Path) -> None:
    r = check("--env-file", str(tmp_path / "typo.env"))
    assert r.returncode == 2
    assert "typo.env" in r.stderr and "does not exist" in r.stderr
    assert "configuration OK" not in r.stdout
    assert check("--no-env-file").returncode == 0  # explicitly none: fine


def test_check_shows_the_value_read_for_a_bad_variable_and_reports_it_once(tmp_path: Path) -> None:
    r = check("--no-env-file", env={"MIN_CONFIDENCE": "2", "TIMEFRAMES": "7m"})
    assert r.returncode == 2
    out = r.stdout + r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("MIN_CONFIDENCE"))
    assert "2" in row and "0.9" not in row and "invalid" in row and "between 0.5 and 1.0" in row
    assert out.count("MIN_CONFIDENCE") == 1  # marked in the table, not repeated below it
    assert out.count("TIMEFRAMES") == 1  # one message for 7m, not two
    assert "2 problem(s)" in out


def test_timeframes_with_only_a_bad_interval_give_one_problem() -> None:
    problems = Config.from_env({"TIMEFRAMES": "7m"}).problems
    assert len([p for p in problems if p.startswith("TIMEFRAMES")]) == 1


def test_symbols_that_are_not_usdt_m_names_get_the_usdt_m_spelling_suggested() -> None:
    problems = Config.from_env({"SYMBOLS": "BTC,eth,SOLUSDT"}).problems
    assert any("BTC" in p and "BTCUSDT" in p for p in problems), problems
    assert any("ETHUSDT" in p for p in problems), problems
    assert not any("SOLUSDT" in p for p in problems)


async def test_check_online_names_symbols_binance_does_not_trade_and_suggests_close_ones(tmp_path: Path) -> None:
    async with FakeBinance(["BTCUSDT", "ETHUSDT", "SOLUSDT"], ["1m"], seed=1) as fake:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "src.bot.config", "--check", "--online", "--no-env-file", cwd=REPO,
            env={**BASE_ENV, "PYTHONPATH": str(REPO), "BINANCE_REST_URL": fake.rest_url,
                 "SYMBOLS": "BTCUSDT,ETHUSTD,FOOUSDT"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        ok = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "src.bot.config", "--check", "--online", "--no-env-file", cwd=REPO,
            env={**BASE_ENV, "PYTHONPATH": str(REPO), "BINANCE_REST_URL": fake.rest_url, "SYMBOLS": "BTCUSDT,SOLUSDT"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        ok_out, ok_err = await asyncio.wait_for(ok.communicate(), 60)
    text = (out + err).decode()
    assert proc.returncode == 2, text
    assert "FOOUSDT" in text and "is not a TRADING USDT-M perpetual" in text  # reported by Binance's list
    assert "ETHUSTD" in text and "did you mean ETHUSDT" in text  # a misspelt quote, already offline
    assert ok.returncode == 0 and "symbols checked against Binance: 2 of 2 tradable" in ok_out.decode(), ok_err.decode()


def test_check_online_says_why_when_binance_cannot_be_reached(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = check("--online", "--no-env-file", env={"BINANCE_REST_URL": f"http://127.0.0.1:{port}"})
    assert r.returncode == 1
    assert "Binance" in r.stderr and "unreachable" in r.stderr and "not checked" in r.stderr


async def test_a_bot_left_with_no_valid_symbol_exits_2_and_says_which_names_to_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeBinance(["BTCUSDT", "ETHUSDT"], ["1m"], seed=2) as fake:
        env = {"SQLITE_PATH": str(tmp_path / "w.db"), "SPOOL_PATH": str(tmp_path / "s.db"), "SYMBOLS": "BTCCUSDT",
               "TIMEFRAMES": "1m", "BINANCE_WS_URL": fake.ws_url, "BINANCE_REST_URL": fake.rest_url, "HTTP_PORT": "0",
               "STATUS_INTERVAL_SECONDS": "0", "CALIBRATION_PATH": str(tmp_path / "none.json")}
        with capture_logs() as logs:
            async with asyncio.timeout(30):
                code = await App(Config.from_env(env, dotenv_path=None).validate(), RunOptions(http=False)).run()
    assert code == 2
    said = " ".join(str(e.get("problem", "")) + str(e.get("event")) for e in logs if e["log_level"] == "error")
    assert "no valid symbol" in said and "BTCCUSDT" in said and "did you mean BTCUSDT" in said
