"""``python -m backtest evidence fit|show``: fit the evidence model on kline files; print a model's cells.

    python -m backtest evidence fit --data ../shared/data/klines/*.csv --out my-evidence.json \\
        [--timeframes 15m,1h,4h] [--from DATE] [--to DATE] [--horizon 48] [--commission 0.0004] \\
        [--slippage-bps 0] [--twins 16] [--seed 0] [--jobs 2] [--no-validate]
    python -m backtest evidence show [--model PATH]

``fit`` replays every file through the live analysis path, grades every candidate by the SPEC 7 rules, draws
matched random twins (backtest/evidence_data.py), fits the model (src/analysis/evidence_fit.py) on ALL the
data given, and checks the method out of sample (purged, embargoed half-year walk-forward and across
symbols, backtest/evidence_validate.py). The file records the exact command, every input file with its
sha256 and span, the streams, the fold scheme, the outcome parameters, the analyzer version and parameter
fingerprints, the fit's hyper-parameters and the validation; the model version is a hash of its content, so
the same files and flags give the same file. Point EVIDENCE_MODEL_PATH at it to use it live, or pass
``--evidence-model`` to ``backtest run`` / ``backtest signals``. The shipped default
(src/analysis/models/evidence-default.json) is made this way from ../shared/data/klines/*.csv (docs/analysis.md).

Exit status: 0 ok, 2 bad input (files, flags, nothing to fit).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from backtest.evidence_data import DEFAULT_TWINS, collect, file_info, plan_streams
from backtest.evidence_validate import cross_symbol, embargo_ms, pooled, walk_forward
from backtest.inputs import InputError, parse_date
from src.analysis import timeframes
from src.analysis.engine import ANALYZER_VERSION
from src.analysis.evidence import DEFAULT_INTERVAL, EvidenceFormatError, EvidenceModel, load_default_model
from src.analysis.evidence_eval import REFINEMENT_FEATURES, refinement_check
from src.analysis.evidence_fit import FitOptions, fit_model
from src.analysis.outcomes import OutcomeParams
from src.analysis.types import ms_to_iso

DEFAULT_TIMEFRAMES = "15m,1h,4h"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="fit|show")
    f = sub.add_parser("fit", help="fit the evidence model on kline files and write it as JSON",
                       description="fit the evidence model on kline files and write it as JSON")
    f.add_argument("--data", nargs="+", action="extend", default=[], metavar="FILE.csv", required=True,
                   help="Binance-layout kline CSVs named SYMBOL-INTERVAL-....csv (repeatable)")
    f.add_argument("--out", required=True, type=Path, metavar="PATH.json", help="model file to write")
    f.add_argument("--timeframes", default=DEFAULT_TIMEFRAMES, help=f"timeframes to fit (default {DEFAULT_TIMEFRAMES})")
    f.add_argument("--from", dest="date_from", metavar="DATE", help="first candle open time (UTC, inclusive)")
    f.add_argument("--to", dest="date_to", metavar="DATE", help="last bound (UTC, exclusive)")
    f.add_argument("--horizon", type=int, default=48, help="expiry in candles (default 48, as OUTCOME_HORIZON_CANDLES)")
    f.add_argument("--commission", type=float, default=0.0004, help="fee per side (default 0.0004)")
    f.add_argument("--slippage-bps", type=float, default=0.0, help="adverse slippage per fill in bps (default 0)")
    f.add_argument("--twins", type=int, default=DEFAULT_TWINS, help=f"random twins per candidate (default {DEFAULT_TWINS})")
    f.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="central coverage of the shown interval (0.8)")
    f.add_argument("--seed", type=int, default=0, help="twin sampling seed (default 0)")
    f.add_argument("--jobs", type=int, default=1, help="parallel processes over streams (default 1)")
    f.add_argument("--no-validate", action="store_true", help="skip the walk-forward and cross-symbol checks")
    s = sub.add_parser("show", help="print a model's cells (the track record table)",
                       description="print a model's cells (the track record table)")
    s.add_argument("--model", type=Path, help="model file (default: the shipped default)")
    s.add_argument("--markdown", action="store_true", help="print the cells as a Markdown table (for the docs)")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        return show(args)
    return fit(args)


def _options(args: argparse.Namespace) -> tuple[list[str], OutcomeParams, FitOptions, int | None, int | None]:
    tfs = [t.strip() for t in args.timeframes.split(",") if t.strip()]
    bad = [t for t in tfs if not timeframes.is_interval(t)]
    if not tfs or bad:
        raise InputError(f"--timeframes: unknown interval(s) {', '.join(bad) or '(none)'}; "
                         f"valid: {', '.join(timeframes.INTERVALS)}")
    try:
        params = OutcomeParams(args.horizon, args.commission, args.slippage_bps)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.twins < 2 or args.twins % 2:
        raise InputError("--twins must be an even number >= 2 (half LONG, half SHORT)")
    if not 0.5 <= args.interval < 1.0:
        raise InputError("--interval must be in [0.5, 1)")
    if args.jobs < 1:
        raise InputError("--jobs must be >= 1")
    from_ms, to_ms = parse_date(args.date_from, "--from"), parse_date(args.date_to, "--to")
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise InputError("--to must be after --from")
    opts = FitOptions(interval=args.interval, cost_per_side=args.commission + args.slippage_bps / 10_000.0)
    return tfs, params, opts, from_ms, to_ms


def fit(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    try:
        tfs, params, opts, from_ms, to_ms = _options(args)
        out: Path = args.out
        if out.exists() and out.is_dir():
            raise InputError(f"--out {out}: is a directory")
        if not out.parent.exists():
            raise InputError(f"--out {out}: directory {out.parent} does not exist")
        plans = plan_streams(args.data, tfs)
        if not plans:
            raise InputError("no file can build any of the timeframes " + ", ".join(tfs))
        files = [file_info(p) for p in dict.fromkeys(args.data)]
        console.print(f"evidence fit: {len(files)} files -> {len(plans)} streams; grading every candidate ...")

        def progress(plan: Any, d: Any) -> None:
            console.print(f"  {plan.symbol} {plan.timeframe}: {d.candles:,} candles, {len(d.r):,} graded candidates, "
                          f"{len(d.twin_r):,} twins")

        streams = collect(plans, params, twins=args.twins, seed=args.seed, from_ms=from_ms, to_ms=to_ms,
                          jobs=args.jobs, progress=progress)
    except InputError as exc:
        print(f"backtest evidence fit: {exc}", file=sys.stderr)
        return 2
    from backtest.evidence_data import fit_sets

    samples, twins = fit_sets(streams)
    if len(samples) < 50:
        print(f"backtest evidence fit: only {len(samples)} graded candidates: too few to fit", file=sys.stderr)
        return 2
    validation: dict[str, Any] = {}
    if not args.no_validate:
        console.print("walk-forward (purged, embargoed, half-year folds) and cross-symbol checks ...")
        folds = walk_forward(streams, opts)
        validation = {"walk_forward": [f.to_dict() for f in folds], "pooled": pooled(folds)}
        if folds:
            last = folds[-1]
            xs = cross_symbol(streams, opts, last.cut_ms, last.end_ms)
            validation["cross_symbol"] = {
                sym: {"test_n": ev.n, "ece": round(ev.ece, 4), "coverage": None if ev.coverage != ev.coverage
                      else round(ev.coverage, 4), "cells": len(ev.cells)} for sym, ev in xs.items()
            }
            tr, _ = fit_sets(streams, to_ms=last.cut_ms - embargo_ms(streams))
            te, _ = fit_sets(streams, from_ms=last.cut_ms)
            validation["refinements"] = {
                name: {"slope": round(c.slope, 5), "test_corr": round(c.test_corr, 4),
                       "top_fifth_r": round(c.top_fifth_r, 4), "bottom_fifth_r": round(c.bottom_fifth_r, 4)}
                for name in REFINEMENT_FEATURES for c in [refinement_check(tr, te, name)]
            }
    meta = {
        "command": "python -m backtest evidence " + " ".join(shlex.quote(a) for a in _argv(args)),
        "files": [asdict(f) for f in files],
        "streams": [{"symbol": d.symbol, "timeframe": d.timeframe, "candles": d.candles, "from": ms_to_iso(d.first_open_ms),
                     "to": ms_to_iso(d.last_open_ms), "candidates": len(d.r), "unresolved": d.unresolved,
                     "same_candle_duplicates": d.duplicates, "analyzers": d.analyzers} for d in streams],
        "outcome": {"horizon_candles": params.horizon_candles, "commission": params.commission,
                    "slippage_bps": params.slippage_bps, "rules": "SPEC 7 (src/analysis/outcomes.py)"},
        "analyzer_version": ANALYZER_VERSION,
        "population": "every candidate except same-candle duplicates of a structure (TRACKED_GATE_REASONS)",
        "twins": {"per_candidate": args.twins, "seed": args.seed,
                  "matching": "same stream, half-year and ATR/close decile; half LONG, half SHORT; same stop and TP1 in ATR"},
        "folds": {"scheme": "half-year walk-forward", "purge": "training trades resolved before the cut",
                  "embargo_ms": embargo_ms(streams), "cross_symbol": "last fold, fitted on the other symbols"},
        "validation": validation,
    }
    model, _ = fit_model(samples, twins, opts, meta)
    try:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(model.to_json() + "\n", encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        print(f"backtest evidence fit: --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print_model(model)
    if validation.get("pooled"):
        pl = validation["pooled"]
        print(f"walk-forward: {pl['folds']} half-year folds, {pl['test_n']:,} test candidates: ECE {pl['ece_weighted']}, "
              f"cell interval coverage {pl['coverage']} over {pl['cells']} cells (n >= 20), trade calls {pl['trade_calls']}")
    print(f"wrote {out} (model {model.version})")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line that reproduces this fit (file paths as given)."""
    argv = ["fit", "--data", *args.data, "--out", str(args.out), "--timeframes", args.timeframes,
            "--horizon", str(args.horizon), "--commission", str(args.commission),
            "--slippage-bps", str(args.slippage_bps), "--twins", str(args.twins), "--interval", str(args.interval),
            "--seed", str(args.seed)]
    if args.date_from:
        argv += ["--from", args.date_from]
    if args.date_to:
        argv += ["--to", args.date_to]
    if args.no_validate:
        argv.append("--no-validate")
    return argv


def _fmt(x: float | None, sign: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:+.3f}" if sign else f"{x:.3f}"


def _cells(model: EvidenceModel) -> list[list[str]]:
    rows = []
    for r in model.track_records():
        ci = "-" if r.backtest_ci is None else f"{r.backtest_ci[0]:+.3f} .. {r.backtest_ci[1]:+.3f}"
        interval = "-" if r.expected_r_lo is None or r.expected_r_hi is None else \
            f"{r.expected_r_lo:+.3f} .. {r.expected_r_hi:+.3f}"
        rows.append([r.pattern, r.timeframe, str(r.backtest_n), _fmt(r.backtest_mean_r), ci, str(r.live_n),
                     _fmt(r.live_mean_r), _fmt(r.expected_r), interval, _fmt(r.p_win, sign=False)])
    return rows


SHOW_COLUMNS = ("pattern", "tf", "backtest n", "mean R", "95% CI", "live n", "live R", "expected R", "interval", "p_win")


def print_markdown(model: EvidenceModel) -> None:
    """The cells as a Markdown table; minus signs as U+2212 so the numbers read as in print."""
    print(f"| {' | '.join(SHOW_COLUMNS)} |")
    print("|" + "|".join("---" if c in ("pattern", "tf") else "---:" for c in SHOW_COLUMNS) + "|")
    for row in _cells(model):
        cells = (c.replace("-", "\u2212") if i >= 3 and c != "-" else c for i, c in enumerate(row))
        print("| " + " | ".join(cells) + " |")
    print(f"\nModel {model.version}, {model.interval:.0%} interval of a {model.reference_n}-signal average.")


def print_model(model: EvidenceModel) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title=f"evidence model {model.version}: net R after fees per (pattern, timeframe); "
                    f"expected R with its {model.interval:.0%} interval")
    for col in SHOW_COLUMNS:
        t.add_column(col, justify="left" if col in ("pattern", "tf") else "right")
    for row in _cells(model):
        t.add_row(*row)
    console.print(t)
    meta = model.meta
    if meta.get("command"):
        console.print(f"made by: {meta['command']}")
    streams = meta.get("streams") or []
    if streams:
        spans = ", ".join(f"{s['symbol']} {s['timeframe']} {s['from'][:10]}..{s['to'][:10]}" for s in streams)
        console.print(f"data: {spans}")
    out = meta.get("outcome") or {}
    if out:
        console.print(f"outcome: horizon {out.get('horizon_candles')} candles, commission {out.get('commission')} per side, "
                      f"slippage {out.get('slippage_bps')} bps per fill")


def show(args: argparse.Namespace) -> int:
    try:
        if args.model is None:
            model = load_default_model()
        else:
            try:
                text = args.model.read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"--model {args.model}: {exc.strerror or exc}") from None
            model = EvidenceModel.from_json(text)
    except (InputError, EvidenceFormatError) as exc:
        print(f"backtest evidence show: {exc}", file=sys.stderr)
        return 2
    if args.markdown:
        print_markdown(model)
    else:
        print_model(model)
    return 0
