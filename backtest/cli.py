"""``python -m backtest <command> ...``: subcommand dispatch.

Each subcommand lives in its own module, imported only when it is run (so ``--help`` stays fast
and one broken command cannot break the others). To add one, add a line to :data:`SUBCOMMANDS`:
``name: (one-line help, module, add-arguments function, handler function)``, where the module
defines ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
``handler(args: argparse.Namespace) -> int`` (the exit status) under the names given.

Exit status: 0 on success, 2 for a user error (bad flag, file or value; the handlers print a
one-line message, never a traceback), 1 for anything else.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "signals": ("replay a kline file through the engine + gate; write signals as JSONL", "backtest.signals_cmd",
                "add_signals_arguments", "run_signals"),
    "events": ("replay a kline file; write the analysis trail (Wyckoff events, pivots, counts) as JSONL",
               "backtest.signals_cmd", "add_events_arguments", "run_events"),
    "run": ("backtest: replay, gate, simulate trades, report", "backtest.run_cmd", "add_arguments", "run"),
    "evidence": ("fit the evidence model on kline files (evidence fit) or print one (evidence show)",
                 "backtest.evidence_cmd", "add_arguments", "run"),
    "calibrate": ("retired: replaced by `evidence fit` (prints where the replacement is)", "backtest.calibrate_cmd",
                  "add_arguments", "run"),
    "download": ("download closed klines from Binance REST into a CSV", "backtest.download_cmd", "add_arguments", "run"),
    "research": ("event study per pattern vs matched random entries over many files", "backtest.research.cli",
                 "add_arguments", "run"),
    # backtest jobs queue (src/jobs): requests from Discord or the shell, run by workers anywhere
    "jobs": ("queue backtests for the workers: submit, status, list, cancel", "backtest.jobs.cli", "add_arguments", "run"),
    "worker": ("run queued backtest jobs (Postgres: procrastinate; SQLite: this machine)", "backtest.jobs.cli",
               "add_worker_arguments", "run_worker"),
}


def usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["usage: python -m backtest <command> [options]   (python -m backtest <command> --help)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {spec[0]}" for name, spec in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name = args[0]
    if name not in SUBCOMMANDS:
        print(f"python -m backtest: unknown command {name!r}; valid: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    help_text, module_name, add_name, handler_name = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    add_arguments = cast(Callable[[argparse.ArgumentParser], None], getattr(module, add_name))
    handler = cast(Callable[[argparse.Namespace], int], getattr(module, handler_name))
    parser = argparse.ArgumentParser(prog=f"python -m backtest {name}", description=help_text)
    add_arguments(parser)
    try:
        if getattr(module, "ACCEPTS_ANY_ARGUMENTS", False):  # a retired command answers whatever it is given
            ns, _ = parser.parse_known_args(args[1:])
        else:
            ns = parser.parse_args(args[1:])
    except SystemExit as exc:  # argparse: 0 for --help, 2 for a bad flag (message already printed)
        return int(exc.code or 0)
    return handler(ns)
