"""``backtest evidence fit|show``, ``backtest run --grade-all / --kinds / --evidence-model``, and the purge of
the evidence fit's training sets, on seeded synthetic CSVs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from backtest.cli import main
from backtest.evidence_data import collect, fit_sets, plan_streams
from backtest.evidence_validate import embargo_ms, half_year_cuts, train_set
from src.analysis.evidence import EvidenceModel
from src.analysis.outcomes import OutcomeParams
from src.market.klines_csv import write_klines_csv
from tests.candlegen import random_walk

CONTRACT = ("kind", "gate_reason", "structure_id", "p_win", "expected_r", "expected_r_lo", "expected_r_hi")


@pytest.fixture(scope="module")
def csvs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("klines")
    out = []
    for sym, seed in (("AAAUSDT", 3), ("BBBUSDT", 4)):
        p = d / f"{sym}-4h-synthetic.csv"
        write_klines_csv(p, random_walk(2600, symbol=sym, timeframe="4h", seed=seed, vol=0.012,
                                        start_ms=1_577_836_800_000))
        out.append(p)
    return out


@pytest.fixture(scope="module")
def fitted(csvs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "evidence.json"
    argv = ["evidence", "fit", "--data", *map(str, csvs), "--out", str(out), "--timeframes", "4h", "--twins", "4"]
    assert main(argv) == 0
    return out


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines()]


# ------------------------------------------------------------------------------------------ evidence fit / show


def test_fit_writes_a_loadable_model_that_says_exactly_how_it_was_made(fitted, csvs):
    model = EvidenceModel.from_json(fitted.read_text())
    meta = model.meta
    assert meta["command"].startswith("python -m backtest evidence fit --data ")
    files = {f["path"]: f for f in meta["files"]}
    for p in csvs:
        assert files[p.name]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
        assert files[p.name]["rows"] == 2600 and files[p.name]["interval"] == "4h"
    assert {(s["symbol"], s["timeframe"]) for s in meta["streams"]} == {("AAAUSDT", "4h"), ("BBBUSDT", "4h")}
    assert meta["outcome"] == {"horizon_candles": 48, "commission": 0.0004, "slippage_bps": 0.0,
                               "rules": "SPEC 7 (src/analysis/outcomes.py)"}
    assert meta["folds"]["embargo_ms"] == 48 * 4 * 3_600_000
    assert meta["validation"]["walk_forward"] and "refinements" in meta["validation"]
    assert model.cells and all(tf == "4h" for _, tf in model.cells)


def test_the_same_files_and_flags_give_the_same_model_file(fitted, csvs, tmp_path):
    again = tmp_path / "again.json"
    argv = ["evidence", "fit", "--data", *map(str, csvs), "--out", str(again), "--timeframes", "4h", "--twins", "4"]
    assert main(argv) == 0
    assert json.loads(again.read_text())["version"] == json.loads(fitted.read_text())["version"]
    assert again.read_text().replace(str(again), "") == fitted.read_text().replace(str(fitted), "")


def test_show_prints_the_cells_of_a_model_and_of_the_default(fitted, capsys):
    assert main(["evidence", "show", "--model", str(fitted)]) == 0
    out = capsys.readouterr().out
    assert "backtest n" in out and "expected R" in out and "made by: python -m backtest evidence fit" in out
    assert main(["evidence", "show"]) == 0
    assert "elliott_wave3" in capsys.readouterr().out


def test_show_markdown_prints_one_table_row_per_cell_with_the_model_version(fitted, capsys):
    from src.analysis.evidence import EvidenceModel

    model = EvidenceModel.from_json(fitted.read_text())
    assert main(["evidence", "show", "--model", str(fitted), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| pattern")]
    assert len(rows) == len(model.track_records())
    assert all(ln.count("|") == 11 for ln in rows)
    assert any(model.version in ln for ln in lines)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--timeframes", "7m"], "--timeframes: unknown interval"),
        (["--twins", "3"], "--twins must be an even number"),
        (["--from", "2021-01-01", "--to", "2020-01-01"], "--to must be after --from"),
        (["--jobs", "0"], "--jobs must be >= 1"),
    ],
)
def test_bad_fit_flags_exit_2_with_a_message(csvs, tmp_path, capsys, extra, message):
    argv = ["evidence", "fit", "--data", str(csvs[0]), "--out", str(tmp_path / "m.json"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unusable_files_exit_2(tmp_path, capsys):
    assert main(["evidence", "fit", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "m.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    odd = tmp_path / "whatever.csv"
    odd.write_text("1,2,3\n")
    assert main(["evidence", "fit", "--data", str(odd), "--out", str(tmp_path / "m.json")]) == 2
    assert "SYMBOL-INTERVAL" in capsys.readouterr().err
    assert main(["evidence", "show", "--model", str(odd)]) == 2
    assert "not JSON" in capsys.readouterr().err


def test_training_sets_are_purged_and_embargoed_at_the_cut(csvs):
    plans = plan_streams([str(p) for p in csvs], ["4h"])
    streams = collect(plans, OutcomeParams(), twins=4)
    start = min(d.first_open_ms for d in streams)
    end = max(d.last_open_ms for d in streams)
    cut = half_year_cuts(start, end)[1]
    emb = embargo_ms(streams)
    train, twins = train_set(streams, cut, emb)
    assert len(train) > 50 and len(twins) > 50
    assert int(train.resolved_ms.max()) < cut - emb and int(train.time_ms.max()) < cut - emb
    assert int(twins.time_ms.max()) < cut - emb
    test, _ = fit_sets(streams, from_ms=cut)
    assert int(test.time_ms.min()) >= cut
    # every candidate of the stream is in exactly one of: purged, train, test
    all_s, _ = fit_sets(streams)
    assert len(train) + len(test) <= len(all_s)
    assert not np.isin(train.time_ms, test.time_ms).any()


# ------------------------------------------------------------------------------------------ backtest run


def run_cli(tmp: Path, name: str, *args: str) -> tuple[int, Path]:
    out = tmp / name
    return main(["run", *args, "--timeframe", "4h", "--out-dir", str(out), "--baseline-reps", "20"]), out


def test_grade_all_grades_every_candidate_with_the_contract_fields(csvs, tmp_path, fitted):
    code, out = run_cli(tmp_path, "r", "--data", str(csvs[0]), "--grade-all", "--evidence-model", str(fitted))
    assert code == 0
    rows = read_jsonl(out / "candidates.jsonl")
    assert main(["signals", "--data", str(csvs[0]), "--timeframe", "4h", "--out", str(tmp_path / "all.jsonl"), "--all",
                 "--evidence-model", str(fitted)]) == 0
    every = read_jsonl(tmp_path / "all.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in every] and rows
    assert {r["kind"] for r in rows} <= {"trade", "watch", "gated"}
    for r in rows:
        for key in CONTRACT:
            assert key in r, key
        assert r["r_multiple"] is None or r["outcome"] in ("WIN", "LOSS", "EXPIRED")
    graded = [r for r in rows if r["r_multiple"] is not None]
    assert len(graded) > len(rows) / 2
    rep = json.loads((out / "report.json").read_text())
    assert rep["params"]["evidence_model"] == EvidenceModel.from_json(fitted.read_text()).version
    groups = rep["candidates"]["groups"]
    assert sum(g["n"] for k, g in groups.items() if k.startswith("kind:")) == len(graded)
    signals = read_jsonl(out / "signals.jsonl")
    assert all(s["kind"] in ("trade", "watch") for s in signals)
    assert rep["trade_calls"] + rep["watch_notes"] == len(signals)


def test_run_trades_trade_calls_by_default_and_watch_notes_only_when_asked(csvs, tmp_path):
    base = ["--data", str(csvs[0])]
    code, calls = run_cli(tmp_path, "calls", *base)
    assert code == 0
    code, both = run_cli(tmp_path, "both", *base, "--kinds", "trade,watch")
    assert code == 0
    a, b = (json.loads((d / "report.json").read_text()) for d in (calls, both))
    assert a["signals"] == a["trade_calls"] and b["signals"] == b["trade_calls"] + b["watch_notes"]
    assert b["watch_notes"] > 0 and b["signals"] > a["signals"]
    assert a["params"]["kinds_traded"] == ["trade"]


@pytest.mark.parametrize(("args", "message"), [(["--kinds", "gated"], "--kinds"), (["--kinds", "maybe"], "--kinds")])
def test_bad_kinds_exit_2(csvs, tmp_path, capsys, args, message):
    assert run_cli(tmp_path, "x", "--data", str(csvs[0]), *args)[0] == 2
    assert message in capsys.readouterr().err


def test_a_bad_evidence_model_file_exits_2(csvs, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 7}')
    assert run_cli(tmp_path, "x", "--data", str(csvs[0]), "--evidence-model", str(bad))[0] == 2
    assert "unsupported evidence model format 7" in capsys.readouterr().err
    assert main(["signals", "--data", str(csvs[0]), "--timeframe", "4h", "--out", str(tmp_path / "s.jsonl"),
                 "--evidence-model", str(tmp_path / "missing.json")]) == 2
