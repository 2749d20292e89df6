"""Wyckoff detection benchmark on seeded synthetic series (no external data needed).

    .venv/bin/python benchmarks/detection.py [--n 40] [--noise 1.0] [--null-series 40] [--null-bars 5000]

1. Labelled schematics from ``backtest.synthetic`` (accumulation #1/#2, distribution #1/#2) plus
   hard negatives (failed accumulation/distribution, V-reversal), each embedded in random-walk
   background, are replayed through the Wyckoff analyzer. Detected events are matched one-to-one
   (greedy, same type, within a tolerance window around the true event bar: SC/BC, AR, ST, test,
   LPS +-3 bars; spring/UTAD +-2; SOS/SOW +-3). Unmatched detections - including any in the random
   background or in hard negatives - are false positives. Latency = recognition bar - the
   label's recognisable bar (0 = as early as a causal rule can know).
2. Null: driftless random walks with the same volume model. Reports candidates per 1,000 bars
   whose raw score clears MIN_CONFIDENCE (0.65), and signals the full engine + gate emit (all
   registered analyzers, cooldown 300 s).
3. If ``benchmarks/detection_elliott.py`` exists it is run too, so one command prints everything.

Targets: F1 >= 0.7 for spring/UTAD and SOS/SOW; < 1 signal per 1,000 null bars.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backtest.synthetic import generate
from src.analysis.engine import AnalysisSettings, SignalGate, replay
from src.analysis.registry import build_engine
from src.analysis.types import AnalysisEvent
from src.analysis.wyckoff import WyckoffAnalyzer

TEMPLATES = ("accumulation", "accumulation2", "distribution", "distribution2")
NEGATIVES = ("failed_accumulation", "failed_distribution", "v_reversal")
TOLERANCE = {"sc": 3, "bc": 3, "ar": 3, "st": 3, "spring": 2, "utad": 2, "test": 3, "utad_test": 3, "sos": 3, "sow": 3,
             "lps": 3, "lpsy": 3, "lps_c": 3, "lpsy_c": 3}
SAME = {"shakeout": "spring", "bu": "lps"}  # detector names that count as the label's type
REPORT_ORDER = ("sc", "bc", "ar", "st", "spring", "utad", "test", "utad_test", "lps_c", "lpsy_c", "sos", "sow", "lps", "lpsy")
THRESHOLD = 0.65


def _type(e: AnalysisEvent) -> str:
    return SAME.get(e.type, e.type)


def run_series(kind: str, seed: int, noise: float) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """(detections as (type, event bar, recognition bar), labels as (type, bar, recognisable bar))."""
    s = generate(kind, seed, noise=noise)
    t0 = s.candles[0].open_time_ms
    step = s.candles[1].open_time_ms - t0
    a = WyckoffAnalyzer("SYN", "1h")
    det: list[tuple[str, int, int]] = []
    for c in s.candles:
        for e in a.on_candle(c).events:
            det.append((_type(e), (e.candle_time_ms - t0) // step, (e.recognised_ms - t0) // step))
    return det, [(e.type, e.bar, e.recognisable) for e in s.events]


def evaluate(n: int, noise: float) -> None:
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    lat: dict[str, list[int]] = defaultdict(list)
    digest = hashlib.sha256()
    for kind in TEMPLATES + NEGATIVES:
        for seed in range(n):
            det, labels = run_series(kind, 10_000 + seed, noise)
            digest.update(repr((kind, seed, det)).encode())
            det = [d for d in det if d[0] in TOLERANCE]
            used = [False] * len(det)
            for ltype, bar, rec in labels:
                best = None
                for j, (dtype, dbar, _) in enumerate(det):
                    if used[j] or dtype != ltype or abs(dbar - bar) > TOLERANCE[ltype]:
                        continue
                    if best is None or abs(dbar - bar) < abs(det[best][1] - bar):
                        best = j
                if best is None:
                    fn[ltype] += 1
                else:
                    used[best] = True
                    tp[ltype] += 1
                    lat[ltype].append(det[best][2] - rec)
            for j, (dtype, _, _) in enumerate(det):
                if not used[j]:
                    fp[dtype] += 1
    print(f"\nEvent detection: {n} series per kind x {len(TEMPLATES)} schematics + {len(NEGATIVES)} hard negatives, "
          f"noise {noise}")
    head = ("event", "TP", "FP", "FN", "prec", "recall", "F1", "lat med", "lat p90")
    print(f"{head[0]:10s} " + " ".join(f"{h:>{w}s}" for h, w in zip(head[1:], (5, 5, 5, 6, 6, 6, 8, 8), strict=True)))
    for t in REPORT_ORDER:
        a, b, c = tp[t], fp[t], fn[t]
        if a + b + c == 0:
            continue
        prec = a / (a + b) if a + b else 0.0
        recall = a / (a + c) if a + c else 0.0
        f1 = 2 * prec * recall / (prec + recall) if prec + recall else 0.0
        ls = sorted(lat[t])
        med = f"{statistics.median(ls):.1f}" if ls else "-"
        p90 = f"{ls[int(0.9 * (len(ls) - 1))]:.0f}" if ls else "-"
        print(f"{t:10s} {a:5d} {b:5d} {c:5d} {prec:6.2f} {recall:6.2f} {f1:6.2f} {med:>8s} {p90:>8s}")
    print(f"fingerprint of every detection: {digest.hexdigest()[:16]} (changes whenever any detection changes)")


def null_rate(series: int, bars: int) -> None:
    total = 0
    confident: dict[str, int] = defaultdict(int)
    emitted: dict[str, int] = defaultdict(int)
    for k in range(series):
        candles = generate("random_walk", 90_000 + k, length=bars).candles
        total += len(candles)
        engine = build_engine("NULL", "1h", AnalysisSettings())
        cands, out, _ = replay(candles, engine, SignalGate(AnalysisSettings()))
        for s in cands:
            if s.raw_confidence >= THRESHOLD:
                confident[s.pattern.split("_")[0]] += 1
        for s in out:
            emitted[f"{s.pattern.split('_')[0]} {s.kind}"] += 1
    print(f"\nNull (driftless random walks): {series} series x {bars} bars = {total} bars")
    for name in sorted(set(confident) | {"wyckoff"}):
        print(f"  {name:8s} raw >= {THRESHOLD}: {1000 * confident[name] / total:.3f} per 1,000 bars")
    for name in sorted(emitted):
        print(f"  emitted by engine + gate at defaults, {name}: {1000 * emitted[name] / total:.3f} per 1,000 bars")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="series per schematic / negative kind")
    ap.add_argument("--noise", type=float, default=1.0, help="bridge noise multiplier (1.0 = moderate)")
    ap.add_argument("--null-series", type=int, default=40)
    ap.add_argument("--null-bars", type=int, default=5000)
    args = ap.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()}, seeds fixed")
    t = time.perf_counter()
    evaluate(args.n, args.noise)
    null_rate(args.null_series, args.null_bars)
    print(f"\n(wyckoff part took {time.perf_counter() - t:.1f} s)")
    elliott = Path(__file__).with_name("detection_elliott.py")
    if elliott.exists():
        print("\n=== benchmarks/detection_elliott.py ===", flush=True)
        return subprocess.call([sys.executable, str(elliott)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
