"""Out-of-sample check of the evidence model and the default gate on real klines.

    .venv/bin/python benchmarks/evidence_calibration.py [--data-dir DIR] [--cut 2024-07-01] [--jobs 2]

READS REAL DATA from ``DIR/klines`` (default: $WYELI_DATA_DIR, else ../shared/data relative to the repository):
every ``SYMBOL-INTERVAL-*.csv`` there, analysed on 15m, 1h and 4h (backtest/evidence_data.py). Without files it
says so and exits 0.

Split: the model is fitted ONLY on candidates confirmed before ``--cut`` whose trades resolved before
cut - embargo (the longest outcome horizon), with twins purged the same way; it is judged on every candidate
confirmed from the cut on. The files of symbols that only exist after the cut (the May-2025 1m files of
BNB, SOL and ADA) are therefore cross-symbol out-of-sample too. Prints, with the split:

- reliability of the shown p_win (ECE, 10 bins) against 1[net R > 0];
- per (pattern, timeframe) cell with n >= 20 in the hold-out: realised mean net R (cluster-robust SE), the
  predicted expected R and the shown 80 % interval; the share of cells whose realised mean lies inside it
  (acceptance: >= 0.8) and the share within the model's own expected-R uncertainty + the realised SE;
- the Spearman rank correlation of predicted and realised cell means;
- per symbol: ECE and coverage (cross-symbol check);
- the refinement checks (does raw score, R:R, stop distance, volatility decile or trend predict the excess
  over matched twins out of sample?);
- the default gate replayed on the hold-out with the cut model: trade calls and watch notes per symbol and
  timeframe per week and their realised mean net R (each graded on its own by the SPEC 7 rules).
Acceptance figures are marked PASS/FAIL. A fingerprint of the per-cell predictions makes runs comparable.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from backtest.evidence_data import StreamPlan, collect, fit_sets, load_stream, plan_streams
from backtest.evidence_validate import embargo_ms
from backtest.simulate import grade
from src.analysis.engine import AnalysisSettings, SignalGate, step
from src.analysis.evidence import EvidenceModel
from src.analysis.evidence_eval import REFINEMENT_FEATURES, evaluate, refinement_check
from src.analysis.evidence_fit import FitOptions, fit_model
from src.analysis.outcomes import InvalidSignalGeometry, OutcomeParams
from src.analysis.registry import build_engine
from src.analysis.types import Signal, iso_to_ms, ms_to_iso

WEEK_MS = 7 * 86_400_000


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("WYELI_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def gate_on_holdout(
    plans: list[StreamPlan], model: EvidenceModel, cut_ms: int, params: OutcomeParams
) -> list[tuple[str, str, str, float | None, float]]:
    """Replay every stream with the cut model and the default gate; keep the hold-out emissions, graded:
    (symbol, timeframe, kind or "none" for a stream without any, net R or None, weeks of hold-out)."""
    settings = AnalysisSettings()
    rows: list[tuple[str, str, str, float | None, float]] = []
    for plan in plans:
        candles = load_stream(plan)
        if not candles or candles[-1].open_time_ms < cut_ms:
            continue
        engine = build_engine(plan.symbol, plan.timeframe, settings, model)
        gate = SignalGate(settings)
        emitted: list[Signal] = []
        for c in candles:
            emitted.extend(s for s in step(engine, gate, c).emitted if s.candle_time_ms >= cut_ms)
        open_times = [c.open_time_ms for c in candles]
        first = max(cut_ms, candles[0].open_time_ms)
        weeks = (candles[-1].open_time_ms - first) / WEEK_MS
        for s in emitted:
            try:
                r = grade(s, candles, open_times, params)
            except InvalidSignalGeometry:
                r = None
            rows.append((plan.symbol, plan.timeframe, s.kind, None if r is None else r.r_multiple, weeks))
        if not emitted:
            rows.append((plan.symbol, plan.timeframe, "none", None, weeks))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="folder holding klines/ (default $WYELI_DATA_DIR or ../shared/data)")
    ap.add_argument("--cut", default="2024-07-01", help="fit strictly before this date, judge from it (UTC)")
    ap.add_argument("--timeframes", default="15m,1h,4h")
    ap.add_argument("--twins", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-gate", action="store_true", help="skip the gate replay on the hold-out")
    args = ap.parse_args()
    root = data_dir(args.data_dir) / "klines"
    paths = sorted(str(p) for p in root.glob("*-*.csv")) if root.is_dir() else []
    if not paths:
        print(f"no kline files found in {root} (this benchmark reads real data: set WYELI_DATA_DIR or --data-dir)")
        return 0
    t0 = time.perf_counter()
    cut = iso_to_ms(args.cut)
    params = OutcomeParams(48, 0.0004, 0.0)
    plans = plan_streams(paths, [t.strip() for t in args.timeframes.split(",")])
    streams = collect(plans, params, twins=args.twins, jobs=args.jobs)
    emb = embargo_ms(streams)
    train, twins = fit_sets(streams, to_ms=cut - emb)
    test, _ = fit_sets(streams, from_ms=cut)
    model, report = fit_model(train, twins, FitOptions())
    ev = evaluate(model, test)
    print(f"Python {platform.python_version()} on {platform.machine()}; numpy {np.__version__}; "
          f"{len(paths)} files in {root}")
    print(f"SPLIT: fit on candidates confirmed before {ms_to_iso(cut - emb)[:16]} (cut {args.cut} minus the "
          f"{emb / 3_600_000:.0f} h embargo) whose trades resolved by then: {len(train):,} candidates, {len(twins):,} "
          f"twins;\n       judged on {len(test):,} candidates confirmed from {args.cut} on "
          f"(never used to fit; BNB/SOL/ADA exist only here: cross-symbol out of sample)")
    print(f"model {model.version}: tau_rel {report.tau_rel}, interval {model.interval:.0%} for the average of "
          f"{model.reference_n} signals")
    print("\nreliability of the shown p_win on the hold-out (bins of p_win):")
    print("   bin        n   mean p_win   share net R > 0")
    for lo, hi, n, mp, hit in ev.reliability:
        print(f"  {lo:.1f}-{hi:.1f} {n:7,d}      {mp:.3f}            {hit:.3f}")
    print(f"ECE = {ev.ece:.4f}  (acceptance <= 0.05: {'PASS' if ev.ece <= 0.05 else 'FAIL'})")
    print("\ncells with n >= 20 in the hold-out (net R after fees):")
    print(f"  {'pattern':18s} {'tf':4s} {'n':>6s} {'realised':>9s} {'± se':>6s} {'predicted':>9s}   shown 80% interval"
          f"   covered")
    digest = hashlib.sha256()
    for c in ev.cells:
        digest.update(f"{c.pattern}|{c.timeframe}|{c.predicted:.4f}|{c.lo:.4f}|{c.hi:.4f}".encode())
        print(f"  {c.pattern:18s} {c.timeframe:4s} {c.n:6,d} {c.realised:+9.3f} {c.realised_se:6.3f} {c.predicted:+9.3f}"
              f"   [{c.lo:+.3f}, {c.hi:+.3f}]   {'yes' if c.covered else 'NO'}")
    print(f"interval coverage of realised cell means = {ev.coverage:.3f} over {len(ev.cells)} cells "
          f"(acceptance >= 0.8: {'PASS' if ev.coverage >= 0.8 else 'FAIL'})")
    print(f"realised within the model's expected-R uncertainty + the realised SE = {ev.coverage_of_mean:.3f}")
    print(f"Spearman(predicted, realised) over those cells = {ev.spearman:+.3f}")
    print("\nper symbol (hold-out):")
    for sym in sorted(set(test.symbol.tolist())):
        sub = test.subset(test.symbol == sym)
        e = evaluate(model, sub)
        cov = "-" if not e.cells else f"{e.coverage:.2f} of {len(e.cells)} cells"
        print(f"  {sym:8s} n {len(sub):6,d}  mean R {float(sub.r.mean()):+.3f}  ECE {e.ece:.3f}  coverage {cov}")
    print("\nrefinement checks (fitted before the cut, judged after): does the feature predict the excess over twins?")
    for name in REFINEMENT_FEATURES:
        rc = refinement_check(train, test, name)
        print(f"  {name:10s} slope {rc.slope:+.4f} R/sd  hold-out corr {rc.test_corr:+.3f}  mean R top fifth "
              f"{rc.top_fifth_r:+.3f} vs bottom fifth {rc.bottom_fifth_r:+.3f}")
    if not args.no_gate:
        rows = gate_on_holdout(plans, model, cut, params)
        st = AnalysisSettings()
        print(f"\nthe default gate on the hold-out with this model (MIN_CONFIDENCE {st.min_confidence}, TRADE_MIN_RR "
              f"{st.trade_min_rr}, WATCH_MIN_RR {st.watch_min_rr}, WATCH_MIN_SCORE {st.watch_min_score}, cooldown "
              f"{st.cooldown_candles} candles):")
        weeks: dict[tuple[str, str], float] = {}
        counts: dict[tuple[str, str, str], int] = defaultdict(int)
        rs: dict[str, list[float]] = defaultdict(list)
        for sym, tf, kind, r, w in rows:
            weeks[(sym, tf)] = w
            if kind == "none":
                continue
            counts[(sym, tf, kind)] += 1
            if r is not None:
                rs[kind].append(r)
        print(f"  {'symbol':8s} {'tf':4s} {'weeks':>6s} {'trade/wk':>9s} {'watch/wk':>9s}")
        for (sym, tf), w in sorted(weeks.items()):
            print(f"  {sym:8s} {tf:4s} {w:6.1f} {counts[(sym, tf, 'trade')] / w:9.2f} {counts[(sym, tf, 'watch')] / w:9.2f}")
        for kind in ("trade", "watch"):
            v = rs.get(kind, [])
            mean = f"{np.mean(v):+.3f}" if v else "-"
            print(f"  {kind} calls graded: n {len(v)}, mean net R {mean}" if kind == "trade"
                  else f"  {kind} notes graded: n {len(v)}, mean net R {mean}")
    print(f"\nfingerprint of the hold-out predictions: {digest.hexdigest()[:16]}; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
