"""The bot's configuration entry points, kept under their documented names.

``from src.bot.config import Config`` and ``python -m src.bot.config --check [--online]`` (SPEC 1) use the
configuration package :mod:`src.config`, which every layer imports directly; ``--online`` (symbols against
Binance) is wired here, where the market layer may be imported.
"""

import sys

from src.config import DEFAULT_SYMBOLS, SECRET_FIELDS, Config, ConfigError, mask_secret
from src.config.check import main as check_main

__all__ = ["DEFAULT_SYMBOLS", "SECRET_FIELDS", "Config", "ConfigError", "main", "mask_secret"]


def main(argv: list[str] | None = None) -> int:
    """``--check`` with ``--online`` wired to Binance (the configuration package cannot reach the market layer)."""
    from src.market.symbols import check_symbols_online

    return check_main(argv, online=check_symbols_online)


if __name__ == "__main__":
    sys.exit(main())
