"""Configuration: one validated :class:`Config` from the environment, importable by every layer."""

from src.config.settings import DEFAULT_SYMBOLS, SECRET_FIELDS, Config, ConfigError, mask_secret

__all__ = ["DEFAULT_SYMBOLS", "SECRET_FIELDS", "Config", "ConfigError", "mask_secret"]
