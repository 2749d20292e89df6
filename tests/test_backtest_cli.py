"""``python -m backtest signals`` / ``events``: the measurement contract, on generated kline files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backtest.cli import SUBCOMMANDS, main
from backtest.synthetic import generate
from src.analysis.engine import AnalysisSettings, SignalGate, replay
from src.analysis.registry import build_engine
from src.analysis.types import Candle, Signal
from src.market.aggregator import TimeframeBuilder
from src.market.klines_csv import write_klines_csv

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch):
    for var in ("MIN_CONFIDENCE", "SIGNAL_COOLDOWN_SECONDS", "ENABLE_WYCKOFF", "ENABLE_ELLIOTT"):
        monkeypatch.delenv(var, raising=False)


def candles(symbol: str = "SYNUSDT") -> list[Candle]:
    return generate("accumulation", 3, symbol=symbol).candles


@pytest.fixture
def csv_1h(tmp_path: Path) -> Path:
    path = tmp_path / "SYNUSDT-1h-test.csv"
    write_klines_csv(path, candles())
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_signals_writes_exactly_what_the_engine_and_gate_emit(csv_1h, tmp_path, capsys, monkeypatch):
    # the configuration's defaults changed with the evidence gate (issue 10); this test checks the old engine
    monkeypatch.setenv("MIN_CONFIDENCE", "0.65")
    monkeypatch.setenv("SIGNAL_COOLDOWN_SECONDS", "300")
    out = tmp_path / "signals.jsonl"
    assert main(["signals", "--data", str(csv_1h), "--symbol", "SYNUSDT", "--timeframe", "1h", "--out", str(out)]) == 0
    rows = read_jsonl(out)
    from src.config import Config

    settings = Config.from_env().analysis_settings()
    _, emitted, _ = replay(candles(), build_engine("SYNUSDT", "1h", settings), SignalGate(settings))
    assert [Signal.from_dict(r) for r in rows] == emitted
    assert rows and all(r["kind"] in ("trade", "watch") for r in rows)
    assert all(r["confidence"] >= settings.min_confidence for r in rows if r["kind"] == "trade")
    for r in rows:  # the measurement contract
        for key in ("kind", "p_win", "expected_r", "expected_r_lo", "expected_r_hi", "structure_id"):
            assert r[key] is not None, key
        assert r["expected_r_lo"] <= r["expected_r"] <= r["expected_r_hi"] and 0 < r["p_win"] < 1
    assert "trade calls and watch notes" in capsys.readouterr().out


def test_min_confidence_zero_writes_every_candidate_with_its_raw_score(csv_1h, tmp_path):
    gated, every = tmp_path / "gated.jsonl", tmp_path / "every.jsonl"
    base = ["signals", "--data", str(csv_1h), "--timeframe", "1h"]
    assert main([*base, "--out", str(gated)]) == 0
    assert main([*base, "--out", str(every), "--min-confidence", "0"]) == 0
    rows = read_jsonl(every)
    assert len(rows) > len(read_jsonl(gated))
    assert any(r["raw_confidence"] < 0.65 for r in rows)
    assert {r["kind"] for r in rows} >= {"gated"} and all(r["gate_reason"] for r in rows if r["kind"] == "gated")
    assert main([*base, "--out", str(tmp_path / "all.jsonl"), "--all"]) == 0
    assert len(read_jsonl(tmp_path / "all.jsonl")) == len(rows)
    assert {r["symbol"] for r in rows} == {"SYNUSDT"}  # symbol taken from the file name


def test_events_writes_the_analysis_trail(csv_1h, tmp_path):
    out = tmp_path / "events.jsonl"
    assert main(["events", "--data", str(csv_1h), "--symbol", "SYNUSDT", "--timeframe", "1h", "--out", str(out)]) == 0
    rows = read_jsonl(out)
    wy = [r for r in rows if r["kind"] == "wyckoff_event"]
    assert {"sc", "ar", "st", "sos"} <= {r["type"] for r in wy}
    assert all(r["recognised_at"] >= r["candle_time"] for r in rows)
    times = [r["recognised_at"] for r in rows]
    assert times == sorted(times)


def test_one_minute_file_is_aggregated_to_the_requested_timeframe(tmp_path):
    minutes = generate("random_walk", 7, length=600, timeframe="1m", step_ms=60_000, symbol="MINUSDT").candles
    path = tmp_path / "MINUSDT-1m-test.csv"
    write_klines_csv(path, minutes)
    out = tmp_path / "events.jsonl"
    assert main(["events", "--data", str(path), "--timeframe", "15m", "--out", str(out)]) == 0
    builder = TimeframeBuilder("1m", "15m")
    built = [c for m in minutes for c in builder.add(m)]
    _, _, events = replay(built, build_engine("MINUSDT", "15m", AnalysisSettings()), SignalGate(AnalysisSettings()))
    assert [e.to_dict() for e in events] == read_jsonl(out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["signals", "--data", "missing.csv", "--symbol", "X", "--timeframe", "1h", "--out", "{tmp}/o"], "no such file"),
        (["signals", "--data", "{csv}", "--timeframe", "7h", "--out", "{tmp}/o"], "unknown interval"),
        (["signals", "--data", "{csv}", "--timeframe", "1h", "--out", "{tmp}/o", "--min-confidence", "1.5"], "[0, 1]"),
        (["signals", "--data", "{csv}", "--timeframe", "1h", "--out", "{tmp}/nodir/o"], "does not exist"),
        (["signals", "--data", "{csv}", "--timeframe", "1m", "--out", "{tmp}/o"], "cannot be split"),
        (["events", "--data", "{bad}", "--symbol", "X", "--timeframe", "1h", "--out", "{tmp}/o"], "x.csv:2: not a kline row"),
        (["signals", "--data", "{csv}", "--timeframe", "1h"], "--out"),
        (["frobnicate"], "unknown command"),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_traceback(argv, message, csv_1h, tmp_path, capsys):
    bad = tmp_path / "BADUSDT-1h-x.csv"
    bad.write_text("1700000000000,1,2,0.5,1.5,10,1700003599999\nnot,a,kline,row,at,all,!\n")
    args = [a.format(tmp=tmp_path, csv=csv_1h, bad=bad) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_lists_every_subcommand_and_exits_0(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in SUBCOMMANDS)
    assert main([]) == 2


def test_python_dash_m_backtest_runs_as_a_module(csv_1h, tmp_path):
    out = tmp_path / "s.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "backtest", "signals", "--data", str(csv_1h), "--timeframe", "1h", "--out", str(out),
         "--min-confidence", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().count("\n") >= 1


@pytest.mark.parametrize("command", ["signals", "events"])
def test_a_file_interval_that_cannot_build_the_timeframe_exits_2_without_a_traceback(command, tmp_path, capsys):
    m3 = tmp_path / "BTCUSDT-3m-x.csv"
    m3.write_text("1700000000000,1,2,0.5,1.5,10,1700000179999,10,5,5,5,0\n")
    assert main([command, "--data", str(m3), "--timeframe", "5m", "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "3m candles cannot be aggregated to 5m" in err and "Traceback" not in err


# ---------------------------------------------------------------- --timeframe from the file name (issue 11)
@pytest.mark.parametrize("command", ["signals", "events", "run"])
def test_timeframe_comes_from_the_file_name_when_omitted(command, tmp_path, csv_1h):
    args = [command, "--data", str(csv_1h)]
    args += ["--out-dir", str(tmp_path / "o")] if command == "run" else ["--out", str(tmp_path / "o.jsonl")]
    assert main(args) == 0
    with_tf = [command, "--data", str(csv_1h), "--timeframe", "1h"]
    with_tf += ["--out-dir", str(tmp_path / "p")] if command == "run" else ["--out", str(tmp_path / "p.jsonl")]
    assert main(with_tf) == 0
    if command != "run":
        assert (tmp_path / "o.jsonl").read_text() == (tmp_path / "p.jsonl").read_text()


def test_without_timeframe_a_file_name_that_does_not_say_the_interval_is_a_clear_error(tmp_path, csv_1h, capsys):
    plain = tmp_path / "candles.csv"
    plain.write_bytes(csv_1h.read_bytes())
    assert main(["signals", "--data", str(plain), "--symbol", "SYNUSDT", "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "--timeframe" in err and "file name" in err
