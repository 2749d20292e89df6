"""Entry point: ``python -m src.bot.main [--replay FILE ...] [--speed N|max] [--discord-preview DIR]
[--replay-db PATH | --replay-into-store] [--no-http]``.

Exit codes: 0 clean stop (signal, or replay finished); 1 a component failed (a restart may help; the
error is one log record, never a raw traceback); 2 something the operator must fix first: bad
configuration or input, a store that refuses the credentials or lacks its schema, no valid symbol, or
Binance refusing this location (HTTP 451); 3 a leader that lost its lease to another instance (several
instances on one Postgres, RUNBOOK section 5.1): it stopped posting and trading, and a restart brings it back as a
follower. The systemd unit does not restart on 2 (``RestartPreventExitStatus=2``), so StartLimitBurst is not used
up by a fault a restart cannot fix; it restarts on 3 like on 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from src.bot.app import RunOptions, run_app
from src.bot.logging_setup import configure_logging
from src.config.check import load as load_config


def _speed(value: str) -> float | None:
    if value.lower() == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a positive number or 'max', got {value!r}") from None
    if not speed > 0:
        raise argparse.ArgumentTypeError("--speed must be > 0 (a time multiplier: 60 = one market minute per second)")
    return speed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m src.bot.main", description="WyEli: Wyckoff + Elliott-wave signal bot.")
    p.add_argument("--replay", action="append", type=Path, default=[], metavar="FILE",
                   help="feed a kline CSV file through the pipeline instead of Binance (repeatable)")
    p.add_argument("--symbol", help="symbol of the replay files (default: from the file name)")
    p.add_argument("--interval", help="interval of the replay files (default: from the file name)")
    p.add_argument("--speed", type=_speed, default=None, metavar="N|max",
                   help="replay pace as a time multiplier (60 = a market minute per second); default max")
    p.add_argument("--discord-preview", type=Path, metavar="DIR",
                   help="write each Discord message as DIR/<signal id>.json + .png instead of posting")
    into = p.add_mutually_exclusive_group()
    into.add_argument("--replay-db", type=Path, metavar="PATH",
                      help="the replay's SQLite database (default: a new file under <SQLITE_PATH folder>/replays/)")
    into.add_argument("--replay-into-store", action="store_true",
                      help="replay into the configured store (SQLite/Postgres/Supabase) instead of the replay's own "
                           "database: its candles, signals, cooldowns and outcomes")
    p.add_argument("--no-http", action="store_true", help="do not start the health/metrics HTTP server")
    env = p.add_mutually_exclusive_group()
    env.add_argument("--env-file", help="dotenv file to load (default: ./.env when present; the environment wins); "
                                        "a named file that does not exist is an error")
    env.add_argument("--no-env-file", action="store_true", help="load no dotenv file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args)
    configure_logging(config.log_level, config.log_format, secrets=config.secret_values())
    if config.problems:
        print("WyEli cannot start: the configuration has problems:", file=sys.stderr)
        for problem in config.problems:
            print(f"  - {problem}", file=sys.stderr)
        print("Fix them (environment or .env) and check with: python -m src.bot.config --check", file=sys.stderr)
        return 2
    options = RunOptions(
        replay=list(args.replay),
        replay_symbol=args.symbol,
        replay_timeframe=args.interval,
        speed=args.speed,
        discord_preview=args.discord_preview,
        http=not args.no_http,
        replay_into_store=args.replay_into_store,
        replay_db=args.replay_db,
        own_process=True,
    )
    try:
        return run_app(config, options)
    except KeyboardInterrupt:  # a Ctrl-C before the signal handlers were installed
        return 130
    except Exception:
        # never a raw traceback outside the log: one structured record (JSON under systemd), then exit 1
        structlog.get_logger("src.bot.main").critical("fatal error: the bot stopped", exc_info=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
