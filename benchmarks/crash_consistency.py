"""Crash consistency under hundreds of kill -9: the real bot killed at random points, replay and live against
the fake Binance, compared with undisturbed runs (candles, signals, outcomes, analysis watermarks).

    .venv/bin/python benchmarks/crash_consistency.py --replay-rounds 20 --live-rounds 12
    .venv/bin/python benchmarks/crash_consistency.py --code /tmp/wyeli-old   # the same against another checkout

Data: a synthetic 1h schematic file (tests/test_app_replay._series, 1,202 candles, seeded) for replay; the fake
Binance's seeded market (2 symbols x 1m/5m, 150-candle warm-up + 15 market minutes) for live. Nothing here
is tuned on these runs. ``--code DIR`` runs the bot from another checkout (e.g. ``git archive <commit>``) to
measure the same scenario before a fix (replay only: a bot without exchange time cannot follow the fake's
frozen market clock; the snapshot then lacks watermarks if that schema has none).
Prints one line per round and the totals: kills, rounds identical, signals lost / extra per round.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import crash_harness
from tests.crash_harness import (
    Snapshot,
    live_undisturbed,
    live_with_kills,
    replay_undisturbed,
    replay_with_kills,
    wall_aligned_start_ms,
)
from tests.test_app_replay import _series

STEPS = (3, 2, 4, 1, 5)


def _line(kind: str, i: int, kills: int, expected: Snapshot, got: Snapshot, seconds: float) -> tuple[bool, int, int]:
    lost = len(set(expected.signals) - set(got.signals))
    extra = len(set(got.signals) - set(expected.signals))
    diffs = got.differences(expected)
    print(f"{kind:6s} round {i:3d}: kills {kills:3d}  identical {'yes' if not diffs else 'NO '}  "
          f"signals {len(got.signals)}/{len(expected.signals)} lost {lost} extra {extra}  "
          f"outcomes {len(got.outcomes)}/{len(expected.outcomes)}  {seconds:5.1f} s"
          + ("" if not diffs else "  | " + "; ".join(diffs)), flush=True)
    return not diffs, lost, extra


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replay-rounds", type=int, default=20)
    ap.add_argument("--replay-kills", type=int, default=10, help="kills per replay round")
    ap.add_argument("--live-rounds", type=int, default=12)
    ap.add_argument("--live-warmup-kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--code", type=Path, help="run the bot from this checkout instead of this one")
    ap.add_argument("--workdir", type=Path, help="keep every run's store and logs here (default: a temporary dir)")
    args = ap.parse_args()
    if args.code is not None:
        crash_harness.ROOT = args.code.resolve()
    rng = random.Random(args.seed)
    print(f"python {platform.python_version()} on {platform.machine()}, bot code: {crash_harness.ROOT}")
    totals = {"replay": [0, 0, 0, 0, 0], "live": [0, 0, 0, 0, 0]}  # rounds, identical, kills, lost, extra
    with tempfile.TemporaryDirectory(prefix="wyeli-crash-") as tmp:
        root = args.workdir or Path(tmp)
        if args.replay_rounds:
            csv = root / "BTCUSDT-1h-synthetic.csv"
            _series(csv)
            expected, took_s = await replay_undisturbed(root / "replay-undisturbed", csv)
            window = (0.3 * took_s, 0.95 * took_s)  # after start-up, before the replay ends
            for i in range(args.replay_rounds):
                t0 = time.monotonic()
                got, stats = await replay_with_kills(root / f"replay-{i}", csv, args.replay_kills, rng, window)
                ok, lost, extra = _line("replay", i, stats.kills, expected, got, time.monotonic() - t0)
                for k, v in enumerate((1, ok, stats.kills, lost, extra)):
                    totals["replay"][k] += int(v)
        for i in range(args.live_rounds):
            t0 = time.monotonic()
            start_ms = wall_aligned_start_ms()
            seed = rng.randrange(1_000_000)
            expected = await live_undisturbed(root / f"live-{i}-undisturbed", seed, start_ms, STEPS)
            got, stats = await live_with_kills(root / f"live-{i}-killed", seed, start_ms, STEPS,
                                               args.live_warmup_kills, rng)
            ok, lost, extra = _line("live", i, stats.kills, expected, got, time.monotonic() - t0)
            for k, v in enumerate((1, ok, stats.kills, lost, extra)):
                totals["live"][k] += int(v)
    for kind, (rounds, identical, kills, lost, extra) in totals.items():
        if rounds:
            print(f"{kind}: {rounds} rounds, {kills} kills, {identical}/{rounds} stores identical to the undisturbed "
                  f"run, signals lost {lost}, extra {extra}")
    return 0 if all(t[0] == t[1] for t in totals.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
