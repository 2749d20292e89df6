"""Trade calls and watch notes of the default gate on driftless random walks (the null): there is no edge to find.

    .venv/bin/python benchmarks/null_gate.py [--series 20] [--bars 10000] [--timeframes 15m,1h,4h]

Seeded GBM series with Student-t innovations and a volume that rises with candle size
(backtest/synthetic.py ``random_walk``), analysed by the full stack with the shipped evidence model and the
default gate (AnalysisSettings()). Acceptance (issue 10): trade calls <= 0.1 per 1,000 bars. Also prints the
watch-note rate and the candidates per 1,000 bars; the same seeds give the same figures.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backtest.synthetic import random_walk_candles
from src.analysis.engine import AnalysisSettings, SignalGate, replay
from src.analysis.evidence import load_default_model
from src.analysis.registry import build_engine
from src.analysis.timeframes import interval_ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--bars", type=int, default=10_000)
    ap.add_argument("--timeframes", default="15m,1h,4h")
    args = ap.parse_args()
    settings = AnalysisSettings()
    model = load_default_model()
    print(f"Python {platform.python_version()}; model {model.version}; {args.series} series x {args.bars:,} bars per "
          f"timeframe; gate {settings}")
    t0 = time.perf_counter()
    worst = 0.0
    for k, tf in enumerate(t.strip() for t in args.timeframes.split(",")):
        trade = watch = cands = bars = 0
        by_pattern: Counter[str] = Counter()
        for seed in range(args.series):
            candles = random_walk_candles(50_000 + 1000 * k + seed, args.bars, symbol="NULLUSDT", timeframe=tf,
                                          step_ms=interval_ms(tf))
            c, e, _ = replay(candles, build_engine("NULLUSDT", tf, settings, model), SignalGate(settings))
            cands += len(c)
            trade += sum(1 for s in e if s.kind == "trade")
            by_pattern.update(f"{s.pattern} (R:R {s.risk_reward or 0:.1f}, E[R] {s.evidence.expected_r:+.3f})"
                              for s in e if s.kind == "trade" and s.evidence is not None)
            watch += sum(1 for s in e if s.kind == "watch")
            bars += len(candles)
        rate = 1000 * trade / bars
        worst = max(worst, rate)
        print(f"  {tf:4s} {bars:,} bars: candidates {1000 * cands / bars:.2f}, watch notes {1000 * watch / bars:.3f}, "
              f"trade calls {rate:.3f} per 1,000 bars ({trade} in all)")
        for what, n in sorted(by_pattern.items()):
            print(f"       trade call: {what} x{n}")
    print(f"trade calls per 1,000 bars, worst timeframe: {worst:.3f} (acceptance <= 0.1: "
          f"{'PASS' if worst <= 0.1 else 'FAIL'}); {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
