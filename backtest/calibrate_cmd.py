"""``python -m backtest calibrate``: fit the confidence calibration (src/analysis/calibration.py) on
history and store it where the live gate reads it (CALIBRATION_PATH, default ./data/calibration.json).

    python -m backtest calibrate --data BTCUSDT-1h.csv --data ETHUSDT-1h.csv --timeframe 1h \\
        --from 2021-01-01 --to 2024-01-01 [--holdout 0.3] [--out data/calibration.json]

Every CANDIDATE (raw score, before the gate: MIN_CONFIDENCE 0) is graded with the outcome rules
(label 1 = WIN) and the maps are fitted per (pattern, timeframe). ``--holdout F`` keeps the last F
of the labelled candidates (by candle time) out of the fit and reports them separately; training
candidates within ``horizon`` candles before the hold-out start are purged (their outcome could
overlap the hold-out period). Prints the reliability table and the Brier score before and after,
in-sample and on the hold-out. Exit status 0 ok, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from backtest.inputs import InputError, add_input_arguments, load_from_store, stream_specs
from backtest.run_cmd import build_job, run_all
from src.analysis import timeframes
from src.analysis.calibration import CalibrationSet, FileCalibrator, Sample, brier, ece, fit, reliability
from src.analysis.types import ms_to_iso


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_arguments(p)
    p.add_argument("--out", type=Path, help="calibration JSON to write (default CALIBRATION_PATH)")
    p.add_argument("--min-samples", type=int, default=30, help="isotonic fit from this many samples (default 30)")
    p.add_argument("--prior-strength", type=float, default=10.0, help="pseudo-observations of shrinkage (default 10)")
    p.add_argument("--holdout", type=float, default=0.0, help="share of the latest candidates kept out of the fit")
    p.add_argument("--horizon", type=int, help="expiry in candles (default OUTCOME_HORIZON_CANDLES, 48)")
    p.add_argument("--commission", type=float, help="fee per side (default BACKTEST_COMMISSION)")
    p.add_argument("--slippage-bps", type=float, default=0.0, help="adverse slippage per fill in bps")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes over streams")


def split(samples: list[Sample], holdout: float, purge_ms: int) -> tuple[list[Sample], list[Sample]]:
    """(train, test): the last ``holdout`` share by time is the test; train loses the purge window."""
    ordered = sorted(samples, key=lambda s: (s.time_ms, s.pattern, s.raw))
    if holdout <= 0 or len(ordered) < 2:
        return ordered, []
    cut = ordered[min(len(ordered) - 1, int(len(ordered) * (1 - holdout)))].time_ms
    train = [s for s in ordered if s.time_ms < cut - purge_ms]
    test = [s for s in ordered if s.time_ms >= cut]
    return train, test


def _print_eval(console: object, title: str, cal: CalibrationSet, samples: Sequence[Sample]) -> None:
    from rich.console import Console
    from rich.table import Table

    assert isinstance(console, Console)
    if not samples:
        return
    raw = [s.raw for s in samples]
    cald = [cal.calibrate(s.pattern, s.timeframe, s.raw) for s in samples]
    ys = [s.hit for s in samples]
    base = sum(ys) / len(ys)
    t = Table(title=f"{title}: {len(samples)} candidates, hit rate {base:.3f}")
    for col in ("bin", "n raw", "mean raw", "hit rate", "n calibrated", "mean cal.", "hit rate "):
        t.add_column(col, justify="right")
    r_rows = {round(r.lo, 1): r for r in reliability(raw, ys)}
    c_rows = {round(r.lo, 1): r for r in reliability(cald, ys)}
    for lo in sorted(set(r_rows) | set(c_rows)):
        a, b = r_rows.get(lo), c_rows.get(lo)
        t.add_row(f"{lo:.1f}-{lo + 0.1:.1f}",
                  str(a.n) if a else "", f"{a.mean_p:.3f}" if a else "", f"{a.hit_rate:.3f}" if a else "",
                  str(b.n) if b else "", f"{b.mean_p:.3f}" if b else "", f"{b.hit_rate:.3f}" if b else "")
    console.print(t)
    base_brier = brier([base] * len(ys), ys)
    console.print(f"  Brier raw {brier(raw, ys):.4f} -> calibrated {brier(cald, ys):.4f} "
                  f"(base-rate forecast {base_brier:.4f}); ECE raw {ece(raw, ys):.4f} -> {ece(cald, ys):.4f}")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from src.config import Config

    try:
        specs = stream_specs(args)
        if not 0.0 <= args.holdout < 1.0:
            raise InputError("--holdout must be in [0, 1)")
        if args.min_samples < 1 or args.prior_strength < 0:
            raise InputError("--min-samples must be >= 1 and --prior-strength >= 0")
        if args.jobs < 1:
            raise InputError("--jobs must be >= 1")
        ns = argparse.Namespace(**vars(args))
        ns.min_confidence, ns.baseline_reps, ns.walk_forward, ns.calibration = 0.0, 0, 0, None
        job = build_job(ns, label_candidates=True)
        out: Path = args.out or Config.from_env().calibration_path
        if args.source == "db":
            import asyncio

            specs = asyncio.run(load_from_store(specs))
        outs = run_all(specs, job, args.jobs)
    except InputError as exc:
        print(f"backtest calibrate: {exc}", file=sys.stderr)
        return 2
    samples = [s for o in outs for s in o.result.samples]
    if not samples:
        print("backtest calibrate: no graded candidates in that period: nothing to fit", file=sys.stderr)
        return 2
    purge = job.params.horizon_candles * timeframes.interval_ms(args.timeframe)
    train, test = split(samples, args.holdout, purge)
    if not train:
        print("backtest calibrate: the hold-out leaves no training candidates", file=sys.stderr)
        return 2
    fitted = fit(train, min_samples=args.min_samples, prior_strength=args.prior_strength)
    cal = FileCalibrator(maps=fitted.maps, skipped=fitted.skipped, meta={
        "fitted_at": ms_to_iso(int(time.time() * 1000)),
        "train_from": min(s.time_ms for s in train),
        "train_to": max(s.time_ms for s in train),
        "samples": len(train),
        "holdout_samples": len(test),
        "streams": [f"{o.result.symbol} {o.result.timeframe}" for o in outs],
        "min_samples": args.min_samples,
        "prior_strength": args.prior_strength,
        "horizon_candles": job.params.horizon_candles,
        "commission": job.params.commission,
        "slippage_bps": job.params.slippage_bps,
        "label": "WIN (first target before the stop, within the horizon) = 1, else 0",
    })
    try:
        cal.save(out)
    except OSError as exc:
        print(f"backtest calibrate: --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    # a pipe or a log file gets the full table instead of rich's 80-column fallback
    console = Console(width=None if sys.stdout.isatty() else 160)
    t = Table(title="calibration maps per pattern (fitted on the training period)")
    for col in ("pattern", "tf", "kind", "n", "hits", "hit rate", "Brier raw", "Brier cal.", "p(raw=0.5)", "p(raw=0.8)"):
        t.add_column(col, justify="left" if col in ("pattern", "tf", "kind") else "right")
    for (pattern, tf), m in sorted(cal.maps.items()):
        t.add_row(pattern, tf, m.kind, str(m.n), str(m.hits), f"{m.hits / m.n:.3f}", f"{m.brier_raw:.4f}",
                  f"{m.brier_calibrated:.4f}", f"{m(0.5):.3f}", f"{m(0.8):.3f}")
    console.print(t)
    for key, why in sorted(cal.skipped.items()):
        console.print(f"  not calibrated {key}: {why}")
    _print_eval(console, "in-sample (training)", cal, train)
    _print_eval(console, "hold-out (not used for the fit)", cal, test)
    console.print(f"wrote {out}")
    return 0
