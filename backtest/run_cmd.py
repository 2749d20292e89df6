"""``python -m backtest run``: replay candles through the live engine and gate, simulate every signal
with the outcome rules, size it on one account, compare with a random-entry baseline, write
DIR/report.json, DIR/trades.jsonl (+ the same as trades.csv), DIR/signals.jsonl (every trade call and watch
note), DIR/equity.png (and DIR/candidates.jsonl with ``--grade-all``),
and print a summary.

Exit status: 0 on success, 2 for bad input (options, files, dates), 1 for an unexpected failure.
See backtest/simulate.py (overlap and sizing), backtest/baseline.py (baseline) and
backtest/report.py (metric definitions). ``--jobs N`` runs streams (files/symbols) in N processes;
every random stream is seeded from (--seed, symbol, timeframe), so results equal ``--jobs 1``.
``--walk-forward N`` splits each stream's period into N consecutive equal folds and reports
metrics and a baseline (random entries drawn inside the same fold) per fold.

What is traded: the gate's TRADE calls (``--kinds trade``, the default; SPEC 5a: trading acts on trade calls
only); ``--kinds trade,watch`` also trades the watch notes (to see what they would have done). The gate
(MIN_CONFIDENCE, TRADE_MIN_RR, WATCH_MIN_RR, WATCH_MIN_SCORE, SIGNAL_COOLDOWN_CANDLES/SECONDS) comes from the
environment, ``--min-confidence`` overrides it; the evidence model is the shipped default or
``--evidence-model PATH`` (a file written by ``backtest evidence fit``). NOTE: the shipped model was fitted
on history that may overlap the period you replay; judge it out of sample with a model you fit yourself
before that period (``evidence fit --to DATE``). ``--grade-all`` also grades EVERY candidate on its own
(trade calls, watch notes and gated ones, ignoring position overlap) into DIR/candidates.jsonl: the signal
row plus ``r_multiple`` (net R by the SPEC 7 rules) and the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from backtest import baseline as bl
from backtest import report as rp
from backtest.inputs import InputError, StreamSpec, add_input_arguments, load_from_store, load_spec, stream_specs
from backtest.simulate import GradedSignal, StreamResult, atr_series, run_stream, size_trades
from src.analysis.engine import AnalysisSettings
from src.analysis.evidence import EvidenceFormatError, EvidenceModel, load_default_model
from src.analysis.outcomes import OutcomeParams, Resolution
from src.analysis.types import SIGNAL_KINDS, Signal, SignalKind, ms_to_iso

log = structlog.get_logger(__name__)
REPORT_VERSION = 1


@dataclass(frozen=True, slots=True)
class JobConfig:
    settings: AnalysisSettings
    params: OutcomeParams
    evidence_json: str | None  # None: the shipped default model
    baseline_reps: int
    seed: int
    folds: int
    kinds: tuple[SignalKind, ...] = ("trade",)
    grade_all: bool = False


@dataclass(slots=True)
class StreamOutput:
    result: StreamResult
    folds: list[tuple[int, int]]
    trade_fold: list[int]
    baseline: np.ndarray[Any, np.dtype[np.float64]] | None  # (reps, len(result.graded))
    extra: dict[str, Any] = field(default_factory=dict)


def fold_bounds(start_ms: int, end_ms: int, n: int) -> list[tuple[int, int]]:
    """``n`` consecutive [start, end) ranges of (nearly) equal length covering [start_ms, end_ms)."""
    n = max(1, n)
    span = end_ms - start_ms
    edges = [start_ms + (span * i) // n for i in range(n)] + [end_ms]
    return list(itertools.pairwise(edges))


def _fold_of(t: int, folds: list[tuple[int, int]]) -> int:
    for i, (_, e) in enumerate(folds):
        if t < e:
            return i
    return len(folds) - 1


def run_job(spec: StreamSpec, job: JobConfig, progress: Callable[[int], None] | None = None) -> StreamOutput:
    """Everything for one stream; a top-level function so worker processes can run it."""
    candles = load_spec(spec)
    folds = fold_bounds(candles[0].open_time_ms, candles[-1].close_time_ms + 1, job.folds)
    extra: dict[str, Any] = {}
    evidence = EvidenceModel.from_json(job.evidence_json) if job.evidence_json else None
    res = run_stream(
        spec.symbol, spec.timeframe, candles, job.settings, job.params, evidence,
        kinds=job.kinds, grade_all=job.grade_all, progress=progress,
    )
    trade_fold = [_fold_of(g.resolution.entry_time_ms, folds) for g in res.graded]
    baseline = None
    if job.baseline_reps > 0:
        atrs = atr_series(candles)
        first_atr = next((a for a in atrs if a), None)
        geoms: list[bl.Geometry] = []
        for g, f in zip(res.graded, trade_fold, strict=True):
            atr = g.atr or first_atr
            if not atr:
                geoms = []
                break
            s = g.signal
            k_tp = abs(s.take_profits[0] - s.entry) / atr if s.take_profits else None
            geoms.append(bl.Geometry(1 if s.direction == "LONG" else -1, s.risk / atr, k_tp, *folds[f]))
        if geoms or not res.graded:
            baseline = bl.random_baseline(
                bl.arrays(candles, atrs), geoms, job.params, job.baseline_reps,
                bl.stream_seed(job.seed, spec.symbol, spec.timeframe),
            )
    return StreamOutput(res, folds, trade_fold, baseline, extra)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    p.add_argument("--out-dir", required=True, type=Path, help="directory for report.json, trades.jsonl, ...")
    p.add_argument("--initial-balance", type=float, help="account start (default BACKTEST_INITIAL_BALANCE, 10000)")
    p.add_argument("--commission", type=float, help="fee per side as a fraction (default BACKTEST_COMMISSION, 0.0004)")
    p.add_argument("--slippage-bps", type=float, default=0.0, help="adverse slippage per fill in bps (default 0)")
    p.add_argument("--risk-per-trade", type=float, default=0.01, help="fraction of equity risked per trade")
    p.add_argument("--min-confidence", type=float,
                   help="P(E[net R] > 0) a trade call needs (default MIN_CONFIDENCE, 0.9)")
    p.add_argument("--horizon", type=int, help="expiry in candles (default OUTCOME_HORIZON_CANDLES, 48)")
    p.add_argument("--evidence-model", type=Path, metavar="PATH",
                   help="evidence model JSON from `backtest evidence fit` (default: the shipped model)")
    p.add_argument("--kinds", default="trade", help="emitted kinds to trade: trade (default) or trade,watch")
    p.add_argument("--grade-all", action="store_true",
                   help="also grade every candidate on its own into DIR/candidates.jsonl (ignores position overlap)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes over streams (default 1)")
    p.add_argument("--walk-forward", type=int, default=0, metavar="N", help="report N consecutive folds")
    p.add_argument("--seed", type=int, default=0, help="random baseline seed (default 0)")
    p.add_argument("--baseline-reps", type=int, default=1000, help="random baseline replications (default 1000)")


def build_job(args: argparse.Namespace) -> JobConfig:
    """Settings from the environment (Config.from_env) overridden by the command line."""
    from dataclasses import replace

    from src.config import Config

    cfg = Config.from_env()
    base = cfg.analysis_settings()
    min_conf = base.min_confidence if getattr(args, "min_confidence", None) is None else args.min_confidence
    if not 0.0 <= min_conf <= 1.0:
        raise InputError("--min-confidence must be in [0, 1]")
    settings = replace(base, min_confidence=min_conf)
    commission = cfg.backtest_commission if getattr(args, "commission", None) is None else args.commission
    horizon = cfg.outcome_horizon_candles if getattr(args, "horizon", None) is None else args.horizon
    try:
        params = OutcomeParams(horizon, commission, getattr(args, "slippage_bps", 0.0))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    evidence_json = read_evidence_model(getattr(args, "evidence_model", None))
    reps = getattr(args, "baseline_reps", 0)
    folds = getattr(args, "walk_forward", 0)
    if reps < 0 or folds < 0:
        raise InputError("--baseline-reps and --walk-forward must be >= 0")
    return JobConfig(settings, params, evidence_json, reps, getattr(args, "seed", 0), folds,
                     parse_kinds(getattr(args, "kinds", "trade")), bool(getattr(args, "grade_all", False)))


def parse_kinds(text: str) -> tuple[SignalKind, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in SIGNAL_KINDS or k == "gated"]
    if not kinds or bad:
        raise InputError(f"--kinds: expected trade or trade,watch, got {text!r}")
    return kinds  # type: ignore[return-value]


def read_evidence_model(path: Path | None) -> str | None:
    """The model file's text after validating it (None: the shipped default, validated too)."""
    try:
        if path is None:
            load_default_model()
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--evidence-model {path}: {exc.strerror or exc}") from None
        EvidenceModel.from_json(text)
        return text
    except EvidenceFormatError as exc:
        raise InputError(f"--evidence-model {path or 'default'}: {exc}") from None


def run_all(
    specs: Sequence[StreamSpec], job: JobConfig, jobs: int, *, show_progress: bool | None = None
) -> list[StreamOutput]:
    """Run every stream (in order), in-process for ``jobs <= 1``, else in a process pool."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tty = sys.stderr.isatty() if show_progress is None else show_progress
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not tty, transient=True) as prog:
        if jobs <= 1 or len(specs) <= 1:
            outs = []
            for spec in specs:
                task = prog.add_task(spec.label, total=None)

                def advance(n: int, task: Any = task) -> None:
                    prog.advance(task, n)

                outs.append(run_job(spec, job, advance))
                prog.update(task, total=outs[-1].result.candles, completed=outs[-1].result.candles)
            return outs
        task = prog.add_task("streams", total=len(specs))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_job, spec, job) for spec in specs]
            outs = []
            for f in futures:
                outs.append(f.result())
                prog.advance(task)
        return outs


# ---------------------------------------------------------------------------------------- report


def _baseline_for(pairs: list[tuple[GradedSignal, np.ndarray[Any, Any] | None]]) -> dict[str, Any] | None:
    cols = [(g, b) for g, b in pairs if b is not None]
    if not cols:
        return None
    strat = np.array([g.resolution.r_multiple for g, _ in cols], dtype=np.float64)
    rand = np.stack([b for _, b in cols], axis=1)
    s = bl.summarise(strat, rand)
    if s is None:
        return None
    d = s.to_dict()
    if len(cols) < len(pairs):
        d["trades_without_baseline"] = len(pairs) - len(cols)
    return d


def build_report(outs: list[StreamOutput], job: JobConfig, initial_balance: float, risk_per_trade: float) -> tuple[
    dict[str, Any], Any
]:
    graded = [g for o in outs for g in o.result.graded]
    starts = [o.result.first_open_ms for o in outs if o.result.first_open_ms is not None]
    ends = [o.result.last_close_ms for o in outs if o.result.last_close_ms is not None]
    start_ms, end_ms = min(starts), max(ends) + 1
    account = size_trades(graded, initial_balance, risk_per_trade, start_ms)
    if account.equity_curve[-1][0] < end_ms - 1:  # flat to the end of the data
        account.equity_curve.append((end_ms - 1, account.final_equity))
    summary = rp.account_metrics(account, start_ms, end_ms)
    summary["signals"] = sum(len(o.result.signals) for o in outs)
    summary["trade_calls"] = sum(1 for o in outs for x in o.result.emitted if x.kind == "trade")
    summary["watch_notes"] = sum(1 for o in outs for x in o.result.emitted if x.kind == "watch")
    summary["skipped_overlap"] = sum(len(o.result.skipped_overlap) for o in outs)
    summary["unresolved"] = sum(o.result.unresolved for o in outs)
    summary["invalid_geometry"] = sum(o.result.invalid_geometry for o in outs)
    summary["candles"] = sum(o.result.candles for o in outs)
    summary["start"] = start_ms
    summary["end"] = end_ms - 1

    # (graded signal, its baseline column, fold index), grouped by pattern / fold
    pairs: list[tuple[GradedSignal, Any, int]] = []
    for o in outs:
        for j, g in enumerate(o.result.graded):
            pairs.append((g, None if o.baseline is None else o.baseline[:, j], o.trade_fold[j]))
    by_trade = {t.signal.id: t for t in account.trades}
    per_pattern = rp.group_metrics(account.trades, lambda t: t.signal.pattern)
    for pattern, m in per_pattern.items():
        m["baseline"] = _baseline_for([(g, b) for g, b, _ in pairs if g.signal.pattern == pattern])
    n_folds = max(1, job.folds)
    walk: list[dict[str, Any]] = []
    if job.folds > 0:
        for k in range(n_folds):
            fold_pairs = [(g, b) for g, b, f in pairs if f == k]
            fold_trades = [by_trade[g.signal.id] for g, _ in fold_pairs]
            bounds = [o.folds[k] for o in outs if k < len(o.folds)]
            m = rp.r_metrics([t.resolution.r_multiple for t in fold_trades], [t.resolution.outcome for t in fold_trades])
            m["fold"] = k + 1
            m["start"] = min(b[0] for b in bounds)
            m["end"] = max(b[1] for b in bounds) - 1
            m["pnl"] = sum(t.pnl for t in fold_trades)
            m["baseline"] = _baseline_for(fold_pairs)
            walk.append(m)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        **summary,
        "params": {
            "min_confidence": job.settings.min_confidence,
            "trade_min_rr": job.settings.trade_min_rr,
            "watch_min_rr": job.settings.watch_min_rr,
            "watch_min_score": job.settings.watch_min_score,
            "cooldown_candles": job.settings.cooldown_candles,
            "cooldown_seconds": job.settings.cooldown_seconds,
            "kinds_traded": list(job.kinds),
            "evidence_model": (EvidenceModel.from_json(job.evidence_json) if job.evidence_json
                               else load_default_model()).version,
            "enable_wyckoff": job.settings.enable_wyckoff,
            "enable_elliott": job.settings.enable_elliott,
            "horizon_candles": job.params.horizon_candles,
            "commission": job.params.commission,
            "slippage_bps": job.params.slippage_bps,
            "risk_per_trade": risk_per_trade,
            "initial_balance": initial_balance,
            "baseline_replications": job.baseline_reps,
            "seed": job.seed,
            "walk_forward": job.folds,
            "target_policy": "first take-profit only, whole position",
            "overlap_policy": "one position per symbol+timeframe; later signals skipped until the exit candle closes",
        },
        "streams": [
            {
                "symbol": o.result.symbol,
                "timeframe": o.result.timeframe,
                "candles": o.result.candles,
                "start": o.result.first_open_ms,
                "end": o.result.last_close_ms,
                "signals": len(o.result.signals),
                "trade_calls": sum(1 for x in o.result.emitted if x.kind == "trade"),
                "watch_notes": sum(1 for x in o.result.emitted if x.kind == "watch"),
                "trades": len(o.result.graded),
                "skipped_overlap": len(o.result.skipped_overlap),
                "unresolved": o.result.unresolved,
                "invalid_geometry": o.result.invalid_geometry,
            }
            for o in outs
        ],
        "per_pattern": per_pattern,
        "per_symbol": rp.group_metrics(account.trades, lambda t: f"{t.signal.symbol} {t.signal.timeframe}"),
        "per_confidence": rp.group_metrics(account.trades, lambda t: rp.confidence_bucket(t.signal.confidence)),
        "per_direction": rp.group_metrics(account.trades, lambda t: t.signal.direction),
        "baseline": _baseline_for([(g, b) for g, b, _ in pairs]),
        "walk_forward": walk,
    }
    if job.grade_all:
        report["candidates"] = grade_all_summary(outs)
    return report, account


def candidate_record(signal: Signal, r: Resolution | None) -> dict[str, Any]:
    """A ``candidates.jsonl`` row: the signal row plus its own outcome (None fields when unresolved)."""
    row: dict[str, Any] = signal.to_dict()
    row.update({
        "r_multiple": None if r is None else r.r_multiple,
        "outcome": None if r is None else r.outcome,
        "exit_reason": None if r is None else r.reason,
        "entry_time": None if r is None else r.entry_time_ms,
        "exit_time": None if r is None else r.exit_time_ms,
        "fees_r": None if r is None else r.fees_r,
    })
    return row


def grade_all_summary(outs: list[StreamOutput]) -> dict[str, Any]:
    """Every candidate graded on its own: count and mean net R per kind (and per gate reason)."""
    groups: dict[str, list[float]] = {}
    unresolved = 0
    for o in outs:
        for sig, r in o.result.candidate_outcomes:
            if r is None:
                unresolved += 1
                continue
            for key in (f"kind:{sig.kind}", f"reason:{sig.gate_reason or 'trade'}"):
                groups.setdefault(key, []).append(r.r_multiple)
    return {
        "unresolved": unresolved,
        "groups": {k: {"n": len(v), "mean_r": sum(v) / len(v)} for k, v in sorted(groups.items())},
    }


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v * 100:.2f}%" if pct else f"{v:.3f}"
    return str(v)


def print_summary(report: dict[str, Any], out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    # a pipe or a log file gets the full table instead of rich's 80-column fallback
    console = Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title=f"backtest {ms_to_iso(report['start'])[:10]} .. {ms_to_iso(report['end'])[:10]}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key, pct in (
        ("candles", False), ("trade_calls", False), ("watch_notes", False), ("signals", False),
        ("trades", False), ("wins", False), ("losses", False),
        ("expired", False), ("skipped_overlap", False), ("unresolved", False), ("win_rate", True),
        ("profit_factor", False), ("expectancy_r", False), ("total_r", False), ("total_return", True),
        ("max_drawdown", True), ("sharpe", False), ("exposure", True), ("final_equity", False),
    ):
        t.add_row(key, _fmt(report.get(key), pct))
    be = report.get("break_even_commission")
    t.add_row("break-even commission/side", "-" if be is None else f"{be * 100:.4f}%")
    b = report.get("baseline")
    if b:
        t.add_row("random E[R] mean [p5, p95]", f"{b['random_expectancy_r_mean']:.3f} "
                  f"[{b['random_expectancy_r_p5']:.3f}, {b['random_expectancy_r_p95']:.3f}]")
        t.add_row("beats random (share / p)", f"{b['strategy_beats_share']:.3f} / {b['p_value']:.3f}")
    console.print(t)
    if report["per_pattern"]:
        pt = Table(title="per pattern (R after fees) vs random entries with the same exits")
        for col in ("pattern", "trades", "win rate", "E[R]", "PF", "random E[R] [p5, p95]", "beats"):
            pt.add_column(col, justify="left" if col == "pattern" else "right")
        for name, m in report["per_pattern"].items():
            pb = m.get("baseline")
            rnd = (f"{pb['random_expectancy_r_mean']:.3f} [{pb['random_expectancy_r_p5']:.3f}, "
                   f"{pb['random_expectancy_r_p95']:.3f}]") if pb else "-"
            pt.add_row(name, str(m["trades"]), _fmt(m["win_rate"], True), _fmt(m["expectancy_r"]),
                       _fmt(m["profit_factor"]), rnd, _fmt(pb["strategy_beats_share"]) if pb else "-")
        console.print(pt)
    if report["walk_forward"]:
        wt = Table(title="walk-forward folds")
        for col in ("fold", "from", "to", "trades", "win rate", "E[R]", "PF", "random E[R]", "beats"):
            wt.add_column(col, justify="right")
        for m in report["walk_forward"]:
            fb = m.get("baseline")
            wt.add_row(str(m["fold"]), ms_to_iso(m["start"])[:10], ms_to_iso(m["end"])[:10], str(m["trades"]),
                       _fmt(m["win_rate"], True), _fmt(m["expectancy_r"]), _fmt(m["profit_factor"]),
                       _fmt(fb["random_expectancy_r_mean"]) if fb else "-",
                       _fmt(fb["strategy_beats_share"]) if fb else "-")
        console.print(wt)
    cands = report.get("candidates")
    if cands:
        ct = Table(title="every candidate graded on its own (no position overlap): net R after fees")
        for col in ("group", "n", "mean R"):
            ct.add_column(col, justify="left" if col == "group" else "right")
        for key, g in cands["groups"].items():
            ct.add_row(key, str(g["n"]), f"{g['mean_r']:+.3f}")
        console.print(ct)
    extra = ", candidates.jsonl" if cands else ""
    console.print(f"wrote {out_dir}/report.json, trades.jsonl, trades.csv, signals.jsonl{extra}, equity.png")


def run(args: argparse.Namespace) -> int:
    try:
        specs = stream_specs(args)
        job = build_job(args)
        if args.jobs < 1:
            raise InputError("--jobs must be >= 1")
        from src.config import Config

        cfg = Config.from_env()
        balance = cfg.backtest_initial_balance if args.initial_balance is None else args.initial_balance
        if not balance > 0:
            raise InputError("--initial-balance must be > 0")
        if not 0 < args.risk_per_trade <= 1:
            raise InputError("--risk-per-trade must be in (0, 1]")
        if args.source == "db":
            specs = asyncio.run(load_from_store(specs))
        outs = run_all(specs, job, args.jobs)
    except InputError as exc:
        print(f"backtest run: {exc}", file=sys.stderr)
        return 2
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    report, account = build_report(outs, job, balance, args.risk_per_trade)
    rp.write_report(out_dir / "report.json", report)
    trades = sorted(account.trades, key=lambda t: (t.resolution.entry_time_ms, t.signal.symbol, t.signal.id))
    records = [rp.trade_record(t) for t in trades]
    rp.write_jsonl(out_dir / "trades.jsonl", records)
    rp.write_csv(out_dir / "trades.csv", records)
    rp.write_jsonl(out_dir / "signals.jsonl", (s.to_dict() for o in outs for s in o.result.emitted))
    if job.grade_all:
        rp.write_jsonl(out_dir / "candidates.jsonl",
                       (candidate_record(sig, r) for o in outs for sig, r in o.result.candidate_outcomes))
    title = ", ".join(sorted({f"{o.result.symbol} {o.result.timeframe}" for o in outs}))
    rp.plot_equity(out_dir / "equity.png", account.equity_curve, f"equity: {title}")
    print_summary(report, out_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backtest run", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
