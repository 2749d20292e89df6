"""The study's outputs: DIR/report.md, DIR/summary.json, DIR/events.jsonl, PNG charts, and the rich
summary on stdout. Everything shown is computed in backtest/research/study.py; nothing is rounded
before it is written to summary.json."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backtest.report import json_clean
from backtest.research import findings as fd
from backtest.research.measure import VOL_MIN_HISTORY, VOL_WINDOW
from backtest.research.run import ResearchJob
from backtest.research.stats import Estimate
from backtest.research.study import ALL, MIN_TEST_EVENTS, MIN_TEST_WEEKS, Band, Cell, Study
from src.analysis import timeframes
from src.analysis.types import ms_to_iso

SUMMARY_VERSION = 1


# ---------------------------------------------------------------------------------------------- text


def _num(x: float, sign: bool = True, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _ci(e: Estimate) -> str:
    return f"{_num(e.mean)} [{_num(e.lo)}, {_num(e.hi)}]"


def _p(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _dsr(c: Cell) -> str:
    return f"{c.dsr:.2f}" if c.tested and math.isfinite(c.dsr) else "-"


def headline_rows(study: Study) -> list[Cell]:
    """Per pattern pooled over timeframes (or the only timeframe), then the all-pattern rows (per timeframe
    and pooled)."""
    tfs = {c.timeframe for c in study.cells if c.timeframe != ALL}
    single_tf = len(tfs) <= 1
    rows = [c for c in study.cells if c.pattern != ALL and (c.timeframe == ALL or single_tf)]
    rows += [c for c in study.cells if c.pattern == ALL]
    return rows


def _cell_columns(c: Cell, with_tf: bool, with_thr: bool) -> list[str]:
    # without a timeframe column, a pooled "all patterns" row of one timeframe must still say which one
    cols = [c.pattern if with_tf or c.pattern != ALL or c.timeframe == ALL else f"all ({c.timeframe})"]
    if with_tf:
        cols.append(c.timeframe)
    if with_thr:
        cols.append(f"{c.min_score:g}")
    cols += [
        str(c.n), _ci(c.net_r), _ci(c.random_r), _ci(c.diff_r),
        f"{c.win_rate * 100:.0f} % / {c.random_win_rate * 100:.0f} %",
        _p(c.p_beats), _p(c.holm_p), _p(c.bh_q), _dsr(c),
    ]
    return cols


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    right = [h not in ("pattern", "timeframe", "stream", "files") for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _horizons(h: int) -> list[int]:
    return sorted({1, max(1, h // 4), max(1, h // 2), h})


def _band_at(b: Band, k: int) -> str:
    return f"{_num(b.mean[k - 1], digits=2)} [{_num(b.lo[k - 1], digits=2)}, {_num(b.hi[k - 1], digits=2)}]"


def chart_name(pattern: str) -> str:
    return "path_" + re.sub(r"[^A-Za-z0-9_]+", "_", pattern) + ".png"


def write_markdown(
    path: Path, study: Study, job: ResearchJob, stream_files: Sequence[Sequence[str]], command: str, runtime_s: float,
    charts: Sequence[str],
) -> None:
    k = len(job.thresholds)
    with_thr = k > 1
    h = job.params.horizon_candles
    multi_tf = len({s.timeframe for s in study.streams}) > 1
    stat_head = ["n", "mean net R [95 % CI]", "matched random [95 % CI]", "difference [95 % CI]",
                 "net R > 0 (event / random)", "p", "Holm p", "BH q", "DSR"]
    lines = [
        "# Event study: do the analyzers' patterns beat random entries?",
        "",
        f"`{command}` ({runtime_s:.0f} s). Every number below is net R after fees under the outcome rules of "
        "SPEC 7 unless it says ATR; the data was not used to tune anything in this report.",
        "",
        "## Findings",
        "",
        *[f"- {line}" for line in fd.findings(study, k)],
        "",
        "## Per pattern" + (" (all timeframes pooled)" if multi_tf else ""),
        "",
        *_md_table(["pattern", *(["min score"] if with_thr else []), *stat_head],
                   [_cell_columns(c, False, with_thr) for c in headline_rows(study)]),
        "",
        *(["## Per pattern and timeframe", "",
           *_md_table(["pattern", "timeframe", *(["min score"] if with_thr else []), *stat_head],
                      [_cell_columns(c, True, with_thr) for c in study.cells if c.timeframe != ALL]),
           ""] if multi_tf else []),
        "## Event study: direction-signed forward return in ATR, event minus matched random (h = candles after entry)",
        "",
        *_md_table(
            ["pattern", "timeframe", *(["min score"] if with_thr else []), "n",
             *[f"h = {x}" for x in _horizons(h)]],
            [[c.pattern, c.timeframe, *([f"{c.min_score:g}"] if with_thr else []), str(c.n),
              *[_band_at(c.excess_path, x) for x in _horizons(h)]] for c in study.cells],
        ),
        "",
        *_stability_section(study),
        "## Data",
        "",
        *_md_table(
            ["stream", "files", "from", "to", "candles", "candidates", "events", "excluded", "mean net R", "random"],
            [[f"{s.symbol} {s.timeframe}", ", ".join(Path(f).name for f in files),
              ms_to_iso(s.first_open_ms)[:16] if s.first_open_ms is not None else "-",
              ms_to_iso(s.last_close_ms)[:16] if s.last_close_ms is not None else "-",
              str(s.candles), str(s.candidates), str(s.n),
              ", ".join(f"{k_}: {v}" for k_, v in s.excluded.items() if v) or "0",
              _num(float(s.r.mean())) if s.n else "-", _num(float(s.twin_r.mean())) if s.n else "-"]
             for s, files in zip(study.streams, stream_files, strict=True)],
        ),
        "",
        "## Method",
        "",
        *_method(study, job),
        "",
        "## Charts",
        "",
        "Mean direction-signed forward path in ATR with its 95 % week-block bootstrap band, beside the matched "
        "random entries' path and band (one panel per timeframe):",
        "",
        *[f"![{name}]({name})" for name in charts],
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def _stability_section(study: Study) -> list[str]:
    if study.split_ms is None:
        return []
    day = ms_to_iso(study.split_ms)[:10]
    rho = "-" if not math.isfinite(study.stability_rho) else f"{study.stability_rho:+.2f}"
    return [
        f"## Stability: before vs from {day}",
        "",
        f"Not tests (outside the family above): each cell measured again on its events before {day} and from {day} on. "
        f"Spearman rank correlation of the difference from random across the {study.stability_cells} pattern x "
        f"timeframe cells with {MIN_TEST_EVENTS}+ events in both periods: **{rho}**.",
        "",
        *_md_table(
            ["pattern", "timeframe", "n before", "difference before [95 % CI]", "n after", "difference after [95 % CI]"],
            [[a.pattern, a.timeframe, str(a.n), _ci(a.diff_r), str(b.n), _ci(b.diff_r)] for a, b in study.stability],
        ),
        "",
    ]


def _method(study: Study, job: ResearchJob) -> list[str]:
    p = job.params
    pats = ", ".join(sorted(job.patterns)) if job.patterns else "every pattern"
    thr = ", ".join(f"{t:g}" for t in job.thresholds)
    return [
        f"- Events: the analyzer candidates of {pats}, from the one analysis path (registry.build_engine + "
        "engine.step on closed candles, as live). One event per structure and pattern: the first candidate of each "
        "pattern in a structure id (a count re-found at another pivot degree or on a later candle is the same "
        "event), or, without a structure id, a candidate with no candidate of the same pattern and direction in the "
        f"previous {job.decluster_bars} candles of its stream. Raw-score thresholds tried: {thr}.",
        f"- Trade outcome: every event graded on its own (no position overlap rule) by the outcome rules: entry at "
        f"the next candle's open, stop first when a candle touches both, first target only, expiry after {p.horizon_candles} "
        f"candles, commission {p.commission * 100:.3f} % per side, slippage {p.slippage_bps:g} bps per fill.",
        f"- Matched random entries: {job.twin_reps} twins per event, drawn from the same stream (symbol and "
        f"timeframe) among candles in the same volatility decile (ATR(14)/close ranked among the previous "
        f"{VOL_WINDOW} candles, past only, at least {VOL_MIN_HISTORY}); each twin takes the event's direction and "
        "its stop and first-target distances in ATR, and is graded by the same rules. The difference is paired: "
        "event minus the mean of its twins.",
        f"- Event study: direction-signed return from the entry open to the close h candles later, in ATR of the "
        f"confirming candle, h = 1..{p.horizon_candles}.",
        f"- Inference: {study.bootstrap_reps} block-bootstrap replications resampling whole ISO weeks (Monday "
        f"00:00 UTC) from the {study.weeks} weeks the data covers; the same weeks for every symbol, timeframe and "
        "pattern; each cell's spread widened by sqrt(G / (G - 1)) for its G weeks (small-sample correction). 95 % "
        "percentile intervals; one-sided p for 'difference > 0' by the centred bootstrap.",
        f"- Multiple testing: Holm and Benjamini-Hochberg over the {study.family} cells with at least "
        f"{MIN_TEST_EVENTS} events in at least {MIN_TEST_WEEKS} distinct weeks (pattern x timeframe cells and pooled "
        "rows, at every threshold).",
        f"- Deflated Sharpe ratio (Bailey & Lopez de Prado 2014) of each cell's per-trade net R: {study.trials} trials "
        f"counted (every cell with an event at every threshold, pooled rows included, plus {job.extra_trials} declared "
        f"with --extra-trials); variance of Sharpe ratios across tested cells {_num(study.sr_variance, False, 4)}; "
        f"expected maximum Sharpe under the null SR0 = {_num(study.sr0, False, 3)} per trade. DSR = P(true Sharpe > SR0); "
        "it counts overlapping trades as independent observations, which if anything overstates it.",
        "- Caveats: events of one stream overlap in time (the bootstrap keeps whole weeks together for that); "
        "twins come from the whole stream, so a market drift that differs over time moves sub-period rows (the "
        "stability table) more than the whole-period ones; a data gap shortens the calendar time of a forward "
        "window; funding is not charged.",
    ]


# ---------------------------------------------------------------------------------------------- json


def _est(e: Estimate) -> dict[str, float]:
    return {"mean": e.mean, "lo": e.lo, "hi": e.hi}


def _bandd(b: Band) -> dict[str, list[float]]:
    return {"mean": list(b.mean), "lo": list(b.lo), "hi": list(b.hi)}


def cell_dict(c: Cell) -> dict[str, Any]:
    return {
        "pattern": c.pattern, "timeframe": c.timeframe, "min_score": c.min_score, "n": c.n, "weeks": c.weeks,
        "symbols": c.symbols, "net_r": _est(c.net_r), "random_r": _est(c.random_r), "diff_r": _est(c.diff_r),
        "gross_r": c.gross_r, "win_rate": c.win_rate, "random_win_rate": c.random_win_rate, "cost_atr": c.cost_atr,
        "p_beats": c.p_beats, "p_worse": c.p_worse, "tested": c.tested, "holm_p": c.holm_p, "bh_q": c.bh_q,
        "holm_p_worse": c.holm_p_worse, "dsr": c.dsr if c.tested else None,
        "sharpe": None if c.sharpe is None else c.sharpe.sr,
        "skew": None if c.sharpe is None else c.sharpe.skew,
        "kurtosis": None if c.sharpe is None else c.sharpe.kurt,
        "path": _bandd(c.path), "random_path": _bandd(c.random_path), "excess_path": _bandd(c.excess_path),
    }


def summary_dict(study: Study, job: ResearchJob, files: list[list[str]]) -> dict[str, Any]:
    p = job.params
    return {
        "version": SUMMARY_VERSION,
        "params": {
            "horizon_candles": p.horizon_candles, "commission": p.commission, "slippage_bps": p.slippage_bps,
            "decluster_bars": job.decluster_bars, "patterns": sorted(job.patterns), "random_twins": job.twin_reps,
            "bootstrap_reps": job.bootstrap_reps, "seed": job.seed, "min_scores": list(job.thresholds),
            "extra_trials": job.extra_trials, "vol_window": VOL_WINDOW, "min_test_events": MIN_TEST_EVENTS,
            "min_test_weeks": MIN_TEST_WEEKS,
        },
        "streams": [
            {"symbol": s.symbol, "timeframe": s.timeframe, "files": f, "candles": s.candles,
             "start": s.first_open_ms, "end": s.last_close_ms, "candidates": s.candidates, "events": s.n,
             "excluded": s.excluded}
            for s, f in zip(study.streams, files, strict=True)
        ],
        "weeks": study.weeks, "trials": study.trials, "family": study.family,
        "sr_variance": study.sr_variance, "sr0": study.sr0,
        "cells": [cell_dict(c) for c in study.cells],
        "split": None if study.split_ms is None else {
            "date": ms_to_iso(study.split_ms), "spearman": study.stability_rho, "cells_tested_in_both": study.stability_cells,
            "rows": [{"pattern": a.pattern, "timeframe": a.timeframe,
                      "before": {"n": a.n, "diff_r": _est(a.diff_r), "net_r": _est(a.net_r)},
                      "after": {"n": b.n, "diff_r": _est(b.diff_r), "net_r": _est(b.net_r)}} for a, b in study.stability],
        },
        "findings": fd.findings(study, len(job.thresholds)),
    }


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(json_clean(summary), indent=1, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def write_events(path: Path, study: Study) -> int:
    """One JSON line per event: what it was, its net R, its twins' mean, its path end."""
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for s in study.streams:
            for k in range(s.n):
                row = {
                    "symbol": s.symbol, "timeframe": s.timeframe, "pattern": s.pattern[k], "signal_id": s.signal_id[k],
                    "candle_time": int(s.time_ms[k]), "direction": "LONG" if s.sign[k] > 0 else "SHORT",
                    "raw_score": float(s.raw_score[k]), "vol_decile": int(s.decile[k]),
                    "r_multiple": float(s.r[k]), "gross_r": float(s.gross_r[k]), "random_r": float(s.twin_r[k]),
                    "forward_atr": float(s.path[k, -1]), "random_forward_atr": float(s.twin_path[k, -1]),
                }
                fh.write(json.dumps(json_clean(row), sort_keys=True, allow_nan=False) + "\n")
                n += 1
    return n


# ---------------------------------------------------------------------------------------------- charts


def write_charts(out_dir: Path, study: Study, min_score: float) -> list[str]:
    """One PNG per pattern (a panel per timeframe) and net_r.png (headline rows); returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in study.cells if c.min_score == min_score]
    tfs = sorted({c.timeframe for c in cells if c.timeframe != ALL}, key=timeframes.sort_key)
    names: list[str] = []
    for pattern in sorted({c.pattern for c in cells}, key=lambda p: (p == ALL, p)):
        panels = [c for tf in tfs for c in cells if c.pattern == pattern and c.timeframe == tf]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=False)
        for ax, c in zip(axes[0], panels, strict=True):
            x = np.arange(1, len(c.path.mean) + 1)
            ax.fill_between(x, c.random_path.lo, c.random_path.hi, color="0.6", alpha=0.35, label="matched random 95 %")
            ax.plot(x, c.random_path.mean, color="0.35", lw=1.2)
            ax.fill_between(x, c.path.lo, c.path.hi, color="tab:blue", alpha=0.3, label="events 95 %")
            ax.plot(x, c.path.mean, color="tab:blue", lw=1.6)
            ax.axhline(0.0, color="black", lw=0.6)
            ax.set_title(f"{pattern} {c.timeframe} (n {c.n})", fontsize=9)
            ax.set_xlabel("candles after entry")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("direction-signed return (ATR)")
        axes[0][0].legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        name = chart_name(pattern)
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        names.append(name)
    rows = [c for c in headline_rows(study) if c.min_score == min_score]
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.38 * len(rows) + 1.2))
        y = np.arange(len(rows))[::-1]
        for yi, c in zip(y, rows, strict=True):
            ax.errorbar(c.net_r.mean, yi + 0.12, xerr=[[c.net_r.mean - c.net_r.lo], [c.net_r.hi - c.net_r.mean]],
                        fmt="o", color="tab:blue", ms=4, capsize=2)
            ax.errorbar(c.random_r.mean, yi - 0.12,
                        xerr=[[c.random_r.mean - c.random_r.lo], [c.random_r.hi - c.random_r.mean]],
                        fmt="s", color="0.4", ms=3, capsize=2)
        ax.set_yticks(y, [f"{fd.cell_name(c)} (n {c.n})" for c in rows], fontsize=8)
        ax.axvline(0.0, color="black", lw=0.6)
        ax.set_xlabel("mean net R after fees, 95 % CI (blue: events, grey: matched random)")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "net_r.png", dpi=90)
        plt.close(fig)
        names.insert(0, "net_r.png")
    return names


# ---------------------------------------------------------------------------------------------- stdout


def print_summary(study: Study, job: ResearchJob, out_dir: Path, files: Sequence[str]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 170)
    with_thr = len(job.thresholds) > 1
    t = Table(title="event study: net R after fees vs matched random entries (95 % CI, week-block bootstrap)")
    for col in ("pattern", *(("min score",) if with_thr else ()), "n", "mean net R", "random", "difference",
                "p", "Holm p", "BH q", "DSR"):
        t.add_column(col, justify="left" if col == "pattern" else "right")
    for c in headline_rows(study):
        name = c.pattern if c.timeframe == ALL else f"{c.pattern} {c.timeframe}"
        t.add_row(name, *((f"{c.min_score:g}",) if with_thr else ()), str(c.n), _ci(c.net_r), _num(c.random_r.mean),
                  _ci(c.diff_r), _p(c.p_beats), _p(c.holm_p), _p(c.bh_q), _dsr(c))
    console.print(t)
    for line in fd.findings(study, len(job.thresholds)):
        console.print(f"- {line}", highlight=False)
    console.print(f"wrote {out_dir}/" + ", ".join(files), highlight=False)
