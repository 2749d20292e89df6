"""``python -m backtest calibrate``: RETIRED. It calibrated "first target before the stop", a target that
depends on where the first target sits (a wave-5 target at 0.03 R "wins" while losing money after fees).
The evidence model replaces it: ``python -m backtest evidence fit`` estimates P(net R > 0) and E[net R] after
fees, out of sample (docs/analysis.md). This command prints that and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

MESSAGE = (
    "backtest calibrate: retired. Confidence is no longer a calibrated 'TP1 before the stop' rate: the evidence "
    "model estimates P(net R > 0) and the expected net R after fees, out of sample.\n"
    "  fit your own:   python -m backtest evidence fit --data FILE.csv [FILE.csv ...] --out evidence.json\n"
    "  use it live:    EVIDENCE_MODEL_PATH=evidence.json\n"
    "  look at one:    python -m backtest evidence show [--model evidence.json]"
)


ACCEPTS_ANY_ARGUMENTS = True  # the old flags must reach the message below, not an argparse error


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options: every old flag is accepted and ignored."""


def run(args: argparse.Namespace) -> int:
    print(MESSAGE, file=sys.stderr)
    return 2
