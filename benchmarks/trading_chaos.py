"""The trading chaos run (issue 13) at any size, with its figures: trade calls against the fake exchange
(tests/fakes/binance_trading.py) with random faults, stream drops, hand actions, clock jumps and kill -9
restarts; then duplicate entries, positions without a stop after reconciliation and audit completeness.

    .venv/bin/python benchmarks/trading_chaos.py [--signals 2000] [--seed 7] [--per-round 5]

The CI test (tests/test_trading_chaos.py) runs 200 signals with seed 7. Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    import structlog

    from tests.trading_chaos import run_chaos

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--signals", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--log-level", default="CRITICAL", help="the bot's log level during the run (default CRITICAL)")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, args.log_level.upper())))
    with tempfile.TemporaryDirectory() as tmp:
        report = asyncio.run(run_chaos(Path(tmp), n_signals=args.signals, seed=args.seed, per_round=args.per_round))
    print(f"trading chaos: seed {args.seed}, {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}")
    for line in report.lines():
        print("  " + line)
    bad = (report.duplicate_entries or report.unprotected_after_reconcile or report.unknown_positions
           or report.audit_missing_submits or report.audit_missing_requests)
    print("RESULT:", "FAIL" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
