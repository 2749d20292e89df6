"""``python -m src.bot.config --check [--online]``: the configuration as read (secrets masked), every problem
marked once, and with ``--online`` the symbols checked against Binance's exchangeInfo.

- The table shows each variable's effective value; a variable that could not be used shows the value that
  was READ, marked ``<- invalid: expected ...`` (never the default it fell back to). Problems that belong to
  no single row (a key missing for a URL that is set) are listed below the table. Each problem once.
- ``--env-file PATH`` names the dotenv file; a named file that does not exist is a problem. Without it
  ``./.env`` is read when present; ``--no-env-file`` reads none.
- ``--online`` (needs the market-data layer, so it is wired by :mod:`src.bot.config`): SYMBOLS against
  ``GET /fapi/v1/exchangeInfo`` (TRADING USDT perpetuals), with the closest tradable name suggested.

Exit status: 0 valid; 2 invalid (the problems say what to fix); 1 the online check could not reach Binance
(the reason is printed; the offline part passed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from src.config.settings import Config

OnlineCheck = Callable[[Config], "OnlineResult"]
ExtraCheck = Callable[[Config], list[str]]


class OnlineResult:
    """What an online check found: ``problems`` (config errors) and ``unreachable`` (why it could not run)."""

    def __init__(self, problems: list[str], unreachable: str | None = None, summary: str = "") -> None:
        self.problems = problems
        self.unreachable = unreachable
        self.summary = summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.bot.config", description="Check the WyEli configuration.")
    parser.add_argument("--check", action="store_true", help="print the effective configuration and every problem (default)")
    parser.add_argument("--online", action="store_true", help="also check SYMBOLS against Binance's exchangeInfo")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--env-file", help="dotenv file to load first (default: ./.env when present)")
    group.add_argument("--no-env-file", action="store_true", help="load no dotenv file")
    return parser.parse_args(argv)


def load(args: argparse.Namespace) -> Config:
    """The configuration as the bot would read it with these options."""
    if args.no_env_file:
        return Config.from_env(dotenv_path=None)
    if args.env_file is not None:
        return Config.from_env(dotenv_path=args.env_file, dotenv_required=True)
    return Config.from_env(dotenv_path=".env")


def main(argv: list[str] | None = None, online: OnlineCheck | None = None,
         extra_checks: Sequence[ExtraCheck] = ()) -> int:
    """``online`` and ``extra_checks`` come from layers above configuration (the market layer checking SYMBOLS,
    the bot loading the evidence model); extra checks run only when the configuration itself is valid."""
    args = parse_args(argv)
    config = load(args)
    rows = config.describe()
    width = max(len(k) for k, _ in rows)
    inline: set[str] = set()
    for key, value in rows:
        bad = config.invalid.get(key)
        if bad is None:
            print(f"{key.ljust(width)}  {value}")
            continue
        read, problems = bad
        inline.update(problems)
        # one problem for the whole value: "expected ..."; several (items of a list): each with its item
        marks = "; ".join(p.split(": ", 1)[-1] if len(problems) == 1 else p.split("=", 1)[-1] for p in problems)
        print(f"{key.ljust(width)}  {read}  <- invalid: {marks}")
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
    unreachable: str | None = None
    if args.online:
        if online is None:
            problems.append("--online needs the market-data layer: run python -m src.bot.config --check --online")
        elif "BINANCE_REST_URL" not in config.invalid:  # the other problems are reported together with these
            result = online(config)
            problems += result.problems
            unreachable = result.unreachable
            if result.summary:
                print(result.summary)
    others = [p for p in problems if p not in inline]
    if problems:
        marked = len(problems) - len(others)
        head = f"\n{len(problems)} problem(s)" + (f", {marked} marked in the table above" if marked else "")
        print(head + (":" if others else ""), file=sys.stderr)
        for p in others:
            print(f"  - {p}", file=sys.stderr)
        return 2
    if unreachable is not None:
        print(f"\nBinance unreachable, symbols not checked: {unreachable}", file=sys.stderr)
        return 1
    print("configuration OK")
    return 0
