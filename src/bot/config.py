"""The bot's configuration entry points, kept under their documented names.

``from src.bot.config import Config`` and ``python -m src.bot.config --check [--online]`` (SPEC 1) use the
configuration package :mod:`src.config`, which every layer imports directly; ``--online`` (symbols against
Binance) is wired here, where the market layer may be imported.
"""

import sys

from src.config import DEFAULT_SYMBOLS, SECRET_FIELDS, Config, ConfigError, mask_secret
from src.config.check import main as check_main


def evidence_model_problems(config: Config) -> list[str]:
    """The evidence model the bot would load (EVIDENCE_MODEL_PATH or the shipped one) must load."""
    from src.bot.analysis_api import ModelError, load_model

    try:
        load_model(config.evidence_model_path)
    except ModelError as exc:
        return [str(exc)]
    return []


def main(argv: list[str] | None = None) -> int:
    """``--check`` plus what the configuration package cannot do itself: loading the evidence model, and with
    ``--online`` the symbols against Binance (the market layer)."""
    from src.market.symbols import check_symbols_online

    return check_main(argv, online=check_symbols_online, extra_checks=[evidence_model_problems])


__all__ = ["DEFAULT_SYMBOLS", "SECRET_FIELDS", "Config", "ConfigError", "evidence_model_problems", "main", "mask_secret"]


if __name__ == "__main__":
    sys.exit(main())
