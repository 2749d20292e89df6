"""``backtest calibrate`` end to end on a seeded synthetic CSV, the time split, and errors."""

from __future__ import annotations

import json

from backtest.calibrate_cmd import split
from backtest.cli import main
from src.analysis.calibration import FileCalibrator, Sample, brier
from src.market.klines_csv import write_klines_csv
from tests.candlegen import random_walk


def test_calibrate_writes_a_loadable_file_and_reports_brier(tmp_path, capsys):
    data = tmp_path / "BTCUSDT-1h-syn.csv"
    write_klines_csv(data, random_walk(2500, timeframe="1h", seed=4, vol=0.01))
    out = tmp_path / "cal" / "calibration.json"
    code = main(["calibrate", "--data", str(data), "--timeframe", "1h", "--holdout", "0.3", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "in-sample (training)" in text and "hold-out" in text and "Brier raw" in text
    cal = FileCalibrator.load(out)
    doc = json.loads(out.read_text())
    assert cal.maps and doc["meta"]["samples"] > 0 and doc["meta"]["holdout_samples"] > 0
    for m in cal.maps.values():  # every kept map beats the raw score on its own training data
        assert m.brier_calibrated <= m.brier_raw
    # the engine-facing call works and stays in [0, 1]
    (pattern, tf), _ = next(iter(cal.maps.items()))
    assert 0.0 <= cal.calibrate(pattern, tf, 0.9) <= 1.0


def test_calibrated_run_uses_the_file(tmp_path):
    data = tmp_path / "BTCUSDT-1h-syn.csv"
    write_klines_csv(data, random_walk(1500, timeframe="1h", seed=4, vol=0.01))
    out = tmp_path / "calibration.json"
    assert main(["calibrate", "--data", str(data), "--timeframe", "1h", "--out", str(out)]) == 0
    assert main(["run", "--data", str(data), "--timeframe", "1h", "--out-dir", str(tmp_path / "r"),
                 "--calibration", str(out), "--min-confidence", "0", "--baseline-reps", "0"]) == 0
    cal = FileCalibrator.load(out)
    rows = [json.loads(x) for x in (tmp_path / "r" / "signals.jsonl").read_text().splitlines()]
    assert rows
    changed = 0
    for r in rows:
        # the engine calibrates the unrounded raw score and stores both rounded to 4 places; the map
        # is monotone, so the confidence lies between the map's values at raw -/+ half a unit
        raw = r["raw_confidence"]
        lo = cal.calibrate(r["pattern"], "1h", raw - 5e-5)
        hi = cal.calibrate(r["pattern"], "1h", raw + 5e-5)
        assert lo - 5e-5 <= r["confidence"] <= hi + 5e-5
        changed += r["confidence"] != raw
    assert changed > len(rows) // 2


def test_split_holds_out_the_latest_and_purges_the_horizon():
    samples = [Sample("p", "1h", 0.5, i % 2, time_ms=i * 1000) for i in range(100)]
    train, test = split(samples, 0.2, purge_ms=5000)
    assert [s.time_ms for s in test] == [i * 1000 for i in range(80, 100)]
    assert max(s.time_ms for s in train) == 74_000
    assert split(samples, 0.0, 5000) == (samples, [])


def test_bad_holdout_and_bad_files_exit_2(tmp_path, capsys):
    data = tmp_path / "BTCUSDT-1h-syn.csv"
    write_klines_csv(data, random_walk(50, timeframe="1h"))
    assert main(["calibrate", "--data", str(data), "--timeframe", "1h", "--holdout", "1.5"]) == 2
    assert "--holdout" in capsys.readouterr().err
    assert main(["calibrate", "--data", str(tmp_path / "missing.csv"), "--timeframe", "1h"]) == 2


def test_brier_of_a_perfect_forecast_is_zero():
    assert brier([1.0, 0.0], [1, 0]) == 0.0
