"""The bot's configuration entry points, kept under their documented names.

``from src.bot.config import Config`` and ``python -m src.bot.config --check`` (SPEC 1) use the
configuration package :mod:`src.config`, which every layer imports directly.
"""

import sys

from src.config import DEFAULT_SYMBOLS, SECRET_FIELDS, Config, ConfigError, mask_secret
from src.config.check import main

__all__ = ["DEFAULT_SYMBOLS", "SECRET_FIELDS", "Config", "ConfigError", "main", "mask_secret"]

if __name__ == "__main__":
    sys.exit(main())
