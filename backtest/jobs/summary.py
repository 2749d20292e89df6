"""What a finished job keeps as its summary (``python -m backtest jobs status`` and the Discord embed).

Backtest: the scalar metrics of ``report.json`` (trades, win_rate, expectancy_r, max_drawdown, ...), its
``baseline`` (random entries with the same exits), ``per_pattern`` (the requested patterns only, when some
were named), and ``expectancy_r_ci95``: a 95 % percentile-bootstrap interval of the mean net R per trade
(2000 resamples of the trades, seed 0), for the whole run and for each pattern.
Research: the study's cells of the requested patterns (events, net R and random R with their week-block
bootstrap intervals, difference, Holm p, deflated Sharpe) and its findings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BOOTSTRAP = 2000
SUMMARY_KEYS = (
    "trades", "wins", "losses", "expired", "win_rate", "expectancy_r", "total_r", "profit_factor", "max_drawdown",
    "total_return", "final_equity", "initial_balance", "sharpe", "exposure", "signals", "skipped_overlap",
    "unresolved", "candles", "start", "end", "break_even_commission",
)


def mean_ci(rs: Sequence[float], *, reps: int = BOOTSTRAP, seed: int = 0) -> list[float] | None:
    """95 % percentile-bootstrap interval of the mean; None for fewer than 2 values."""
    x = np.asarray(rs, dtype=np.float64)
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(reps, x.size))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def backtest_summary(out_dir: Path, patterns: Sequence[str]) -> dict[str, Any]:
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    trades = [json.loads(line) for line in (out_dir / "trades.jsonl").read_text(encoding="utf-8").splitlines() if line]
    summary: dict[str, Any] = {k: report.get(k) for k in SUMMARY_KEYS}
    summary["expectancy_r_ci95"] = mean_ci([t["r_multiple"] for t in trades])
    summary["baseline"] = report.get("baseline")
    per = report.get("per_pattern") or {}
    wanted = list(patterns) or sorted(per)
    summary["per_pattern"] = {}
    for p in wanted:
        m = dict(per.get(p) or {"trades": 0})
        m["expectancy_r_ci95"] = mean_ci([t["r_multiple"] for t in trades if t["pattern"] == p])
        summary["per_pattern"][p] = m
    summary["patterns"] = list(patterns)
    return summary


def research_summary(out_dir: Path, patterns: Sequence[str]) -> dict[str, Any]:
    study = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    keep = ("pattern", "timeframe", "min_score", "n", "symbols", "net_r", "random_r", "diff_r", "win_rate",
            "random_win_rate", "p_beats", "holm_p", "bh_q", "dsr", "tested")
    cells = [{k: c.get(k) for k in keep} for c in study.get("cells", []) if not patterns or c.get("pattern") in patterns]
    return {
        "patterns": list(patterns),
        "streams": [{k: s.get(k) for k in ("symbol", "timeframe", "candles", "events")} for s in study.get("streams", [])],
        "cells": cells,
        "trials": study.get("trials"),
        "findings": study.get("findings"),
    }
