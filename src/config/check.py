"""``python -m src.bot.config --check``: print the effective configuration (secrets masked) and every problem.

Exit status 0 when the configuration is valid, 2 when it is not.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from src.config.settings import Config

ExtraCheck = Callable[[Config], list[str]]


def main(argv: list[str] | None = None, extra_checks: Sequence[ExtraCheck] = ()) -> int:
    """``extra_checks`` add problems found by layers above configuration (e.g. the bot parsing the evidence model)."""
    parser = argparse.ArgumentParser(prog="python -m src.bot.config", description="Check the WyEli configuration.")
    parser.add_argument("--check", action="store_true", help="print the effective configuration and every problem (default)")
    parser.add_argument("--env-file", default=".env", help="dotenv file to load first (default: .env)")
    args = parser.parse_args(argv)
    config = Config.from_env(dotenv_path=args.env_file)
    width = max(len(k) for k, _ in config.describe())
    for key, value in config.describe():
        print(f"{key.ljust(width)}  {value}")
    print()
    print(f"storage backend: {config.storage_backend}; discord: {'on' if config.discord_enabled else 'off'}; "
          f"trading: {config.trading_words}")
    problems = list(config.problems)
    if not problems:
        for check in extra_checks:
            problems += check(config)
    if config.warnings:
        print(f"\n{len(config.warnings)} warning(s):")
        for w in config.warnings:
            print(f"  - {w}")
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 2
    print("configuration OK")
    return 0
