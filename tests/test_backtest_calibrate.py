"""``backtest calibrate`` is retired: it says where the replacement is and exits 2."""

from __future__ import annotations

from backtest.cli import main


def test_calibrate_points_to_evidence_fit_and_exits_2(capsys):
    assert main(["calibrate", "--data", "x.csv", "--timeframe", "1h"]) == 2
    err = capsys.readouterr().err
    assert "retired" in err and "backtest evidence fit" in err and "EVIDENCE_MODEL_PATH" in err
