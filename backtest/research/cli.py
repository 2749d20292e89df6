"""``python -m backtest research``: an event study of every analyzer pattern over many kline files.

    python -m backtest research --data ../shared/data/klines/*.csv --timeframe 15m 1h 4h --out-dir research/ --jobs 2

Per pattern (and timeframe): direction-signed forward returns in ATR at horizons 1..N and the net R of
each event graded as a trade (SPEC 7 rules, fees, slippage), against random entries matched on symbol,
timeframe and volatility decile with the same direction and exits; week-block bootstrap intervals, Holm
and Benjamini-Hochberg corrections, deflated Sharpe ratios counting every cell tried. Writes
DIR/report.md, DIR/summary.json, DIR/events.jsonl and PNG charts, and prints a summary table (a
progress bar on stderr when it is a terminal). See backtest/research/*.py for every rule.

Exit status: 0 on success, 2 for bad input (options, files, dates), 1 for an unexpected failure.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from backtest.inputs import InputError, parse_date
from backtest.research import report as rp
from backtest.research.run import ResearchJob, run_streams
from backtest.research.streams import ResearchStream, plan_streams
from backtest.research.study import run_study
from src.analysis import timeframes
from src.analysis.outcomes import OutcomeParams
from src.analysis.wyckoff import ALL_PATTERNS as WYCKOFF_PATTERNS

# the Elliott analyzer's setups (src/analysis/elliott.py, ElliottAnalyzer._setup)
ELLIOTT_PATTERNS: tuple[str, ...] = ("elliott_wave3", "elliott_wave5", "elliott_abc")
KNOWN_PATTERNS: tuple[str, ...] = (*WYCKOFF_PATTERNS, *ELLIOTT_PATTERNS)
DEFAULT_DECLUSTER_BARS = 24
DEFAULT_TWINS = 50
DEFAULT_BOOTSTRAP = 2000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="extend", nargs="+", default=[], metavar="FILE.csv", required=True,
                   help="kline CSVs named SYMBOL-INTERVAL-....csv (several per flag, flag repeatable)")
    p.add_argument("--timeframe", action="extend", nargs="+", metavar="TF",
                   help="analysis timeframes; files are aggregated up to them (default TIMEFRAMES, 15m 1h 4h)")
    p.add_argument("--symbol", help="symbol of a single --data file whose name does not say it")
    p.add_argument("--from", dest="date_from", metavar="DATE", help="first candle open time (UTC, inclusive)")
    p.add_argument("--to", dest="date_to", metavar="DATE", help="last bound (UTC, exclusive)")
    p.add_argument("--horizon", type=int, help="forward path length and trade expiry in candles "
                   "(default OUTCOME_HORIZON_CANDLES, 48)")
    p.add_argument("--out-dir", required=True, type=Path, help="directory for report.md, summary.json, charts")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes over streams (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random twins and the bootstrap (default 0)")
    p.add_argument("--patterns", action="extend", nargs="+", metavar="PATTERN",
                   help=f"patterns to study (default all: {', '.join(KNOWN_PATTERNS)})")
    p.add_argument("--commission", type=float, help="fee per side as a fraction (default BACKTEST_COMMISSION, 0.0004)")
    p.add_argument("--slippage-bps", type=float, default=0.0, help="adverse slippage per fill in bps (default 0)")
    p.add_argument("--decluster", type=int, default=DEFAULT_DECLUSTER_BARS, metavar="N",
                   help="candidates without a structure id: a repeat of a pattern+direction within N candles is "
                        f"the same event (default {DEFAULT_DECLUSTER_BARS})")
    p.add_argument("--random-reps", type=int, default=DEFAULT_TWINS, metavar="R",
                   help=f"matched random twins per event (default {DEFAULT_TWINS})")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="B",
                   help=f"week-block bootstrap replications (default {DEFAULT_BOOTSTRAP})")
    p.add_argument("--min-score", action="extend", nargs="+", type=float, metavar="X",
                   help="raw-score thresholds to study (default 0 = every event); each one multiplies the "
                        "trials the deflated Sharpe counts")
    p.add_argument("--split", metavar="DATE",
                   help="also measure every cell before and after DATE (UTC) and report how well the older "
                        "period's differences from random predict the newer one's")
    p.add_argument("--extra-trials", type=int, default=0, metavar="K",
                   help="variants tried outside this run, added to the deflated Sharpe's trial count (default 0)")


def build_job(args: argparse.Namespace) -> tuple[list[ResearchStream], ResearchJob]:
    """Validate every option (InputError on the first problem) and plan the streams."""
    from src.config import Config

    cfg = Config.from_env()
    tfs = list(args.timeframe or cfg.timeframes)
    streams = plan_streams(
        args.data, tfs, symbol=args.symbol,
        from_ms=parse_date(args.date_from, "--from"), to_ms=parse_date(args.date_to, "--to"),
    )
    patterns = frozenset(args.patterns or ())
    unknown = sorted(patterns - set(KNOWN_PATTERNS))
    if unknown:
        raise InputError(f"--patterns: unknown {', '.join(unknown)}; valid: {', '.join(KNOWN_PATTERNS)}")
    horizon = cfg.outcome_horizon_candles if args.horizon is None else args.horizon
    commission = cfg.backtest_commission if args.commission is None else args.commission
    try:
        params = OutcomeParams(horizon, commission, args.slippage_bps)
    except ValueError as exc:
        raise InputError(f"--horizon/--commission/--slippage-bps: {exc}") from None
    if args.jobs < 1:
        raise InputError("--jobs must be >= 1")
    if args.decluster < 0:
        raise InputError("--decluster must be >= 0")
    if not 1 <= args.random_reps <= 10_000:
        raise InputError("--random-reps must be in [1, 10000]")
    if not 1 <= args.bootstrap <= 100_000:
        raise InputError("--bootstrap must be in [1, 100000]")
    if args.extra_trials < 0:
        raise InputError("--extra-trials must be >= 0")
    thresholds = tuple(sorted(set(args.min_score or [0.0])))
    if any(not 0.0 <= t <= 1.0 for t in thresholds):
        raise InputError("--min-score values must be in [0, 1]")
    out_dir: Path = args.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir}: exists and is not a directory")
    base = cfg.analysis_settings()
    settings = replace(
        base,
        enable_wyckoff=not patterns or bool(patterns & set(WYCKOFF_PATTERNS)),
        enable_elliott=not patterns or bool(patterns & set(ELLIOTT_PATTERNS)),
    )
    job = ResearchJob(settings, params, args.decluster, patterns, args.random_reps, args.bootstrap, args.seed,
                      thresholds, args.extra_trials, parse_date(args.split, "--split"))
    return streams, job


def command_line(args: argparse.Namespace, streams: Sequence[ResearchStream], job: ResearchJob) -> str:
    """The full command with every effective option (defaults spelled out), for the report."""
    files = sorted({s.path for st in streams for s in st.sources})
    tfs = sorted({st.timeframe for st in streams}, key=timeframes.sort_key)
    parts = ["python", "-m", "backtest", "research", "--data", *files, "--timeframe", *tfs,
             "--horizon", str(job.params.horizon_candles), "--commission", f"{job.params.commission:g}",
             "--slippage-bps", f"{job.params.slippage_bps:g}", "--decluster", str(job.decluster_bars),
             "--random-reps", str(job.twin_reps), "--bootstrap", str(job.bootstrap_reps), "--seed", str(job.seed),
             "--min-score", *[f"{t:g}" for t in job.thresholds], "--out-dir", str(args.out_dir)]
    if job.patterns:
        parts += ["--patterns", *sorted(job.patterns)]
    if job.extra_trials:
        parts += ["--extra-trials", str(job.extra_trials)]
    if args.date_from:
        parts += ["--from", args.date_from]
    if args.date_to:
        parts += ["--to", args.date_to]
    if args.split:
        parts += ["--split", args.split]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        streams, job = build_job(args)
        outs = run_streams(streams, job, args.jobs)
    except InputError as exc:
        print(f"backtest research: {exc}", file=sys.stderr)
        return 2
    study = run_study(outs, horizon=job.params.horizon_candles, bootstrap_reps=job.bootstrap_reps, seed=job.seed,
                      thresholds=job.thresholds, extra_trials=job.extra_trials, split_ms=job.split_ms)
    out_dir: Path = args.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"backtest research: --out-dir {out_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    files = [[s.path for s in st.sources] for st in streams]
    rp.write_summary(out_dir / "summary.json", rp.summary_dict(study, job, files))
    rp.write_events(out_dir / "events.jsonl", study)
    charts = rp.write_charts(out_dir, study, job.thresholds[0])
    runtime = time.perf_counter() - started
    rp.write_markdown(out_dir / "report.md", study, job, files, command_line(args, streams, job), runtime, charts)
    rp.print_summary(study, job, out_dir, ["report.md", "summary.json", "events.jsonl", *charts])
    print(f"{len(streams)} streams, {sum(o.candles for o in outs)} candles, {sum(o.n for o in outs)} events "
          f"in {runtime:.1f} s ({args.jobs} job{'s' if args.jobs > 1 else ''})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backtest research", description=(__doc__ or "").splitlines()[0])
    add_arguments(p)
    try:
        ns = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return run(ns)


if __name__ == "__main__":
    raise SystemExit(main())
