"""Check the aggregator against Binance's own klines on real files.

Builds 15m, 1h and 4h candles from each 1m file and compares them with the 15m/1h/4h files of the
same symbol where the dates overlap: open, high, low, close must be equal, volume equal to 1e-9
relative (decimal sums in float). Usage:

    .venv/bin/python scripts/check_aggregation.py [DATA_DIR]    (default ../shared/data/klines)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from src.market.aggregator import CandleAggregator  # noqa: E402
from src.market.klines_csv import infer_symbol_interval, read_klines_csv  # noqa: E402


def main() -> int:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "klines"
    if not data.is_dir():
        print(f"no data folder at {data}; nothing to check")
        return 0
    files = {infer_symbol_interval(p): p for p in sorted(data.glob("*.csv"))}
    failures = 0
    for (symbol, interval), path in files.items():
        if interval != "1m":
            continue
        ones = read_klines_csv(path).candles
        targets = [tf for tf in ("15m", "1h", "4h") if (symbol, tf) in files]
        agg = CandleAggregator(targets, window=100_000)
        built = {}
        for c in ones:
            for b in agg.add(c):
                built[(b.timeframe, b.open_time_ms)] = b
        for tf in targets:
            ref = {c.open_time_ms: c for c in read_klines_csv(files[(symbol, tf)]).candles}
            # skip the first bucket: the 1m file may start mid-bucket
            keys = sorted(t for (f, t) in built if f == tf)[1:]
            common = [t for t in keys if t in ref]
            bad = [
                t for t in common
                if (built[(tf, t)].open, built[(tf, t)].high, built[(tf, t)].low, built[(tf, t)].close)
                != (ref[t].open, ref[t].high, ref[t].low, ref[t].close)
                or not math.isclose(built[(tf, t)].volume, ref[t].volume, rel_tol=1e-9, abs_tol=1e-9)
            ]
            failures += len(bad)
            status = "OK" if not bad else f"{len(bad)} MISMATCHES (first at {bad[0]})"
            print(f"{symbol} 1m -> {tf}: {len(common)} overlapping candles compared: {status}")
    print("all equal" if failures == 0 else f"{failures} mismatching candles")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
