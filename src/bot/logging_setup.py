"""Logging: structlog for our code, the stdlib ``logging`` records of libraries (discord.py, asyncpg,
websockets, aiohttp) rendered through the same chain, secrets masked in every record.

- Format: ``json`` (one object per line), ``text`` (readable, coloured on a terminal) or ``auto``
  (text when stderr is a TTY, else JSON). Level from LOG_LEVEL.
- Tracebacks are rendered as plain text WITHOUT local variables (structlog's rich/dict tracebacks
  may include frame locals, i.e. tokens and DSNs).
- :class:`SecretMasker` runs last before rendering, on our records and on foreign ones, and
  replaces: values under secret-looking keys; passwords in ``scheme://user:PASSWORD@`` URLs;
  Discord webhook tokens; Supabase ``sb_secret_``/``sb_publishable_`` keys; JWT-like
  ``eyJ...`` tokens; Discord bot tokens; ``Bearer`` credentials; and every configured secret
  value verbatim (Config.secret_values()).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"
_SECRET_KEYS = re.compile(
    r"(token|password|passwd|secret|api_?key|apikey|authorization|dsn|service_?key|service_role|webhook|credential|database_url)",
    re.IGNORECASE,
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(@)", re.IGNORECASE), r"\1" + MASK + r"\2"),
    (re.compile(r"(discord(?:app)?\.com/api/(?:v\d+/)?webhooks/\d+/)[A-Za-z0-9_.-]+"), r"\1" + MASK),
    (re.compile(r"\bsb_(secret|publishable)_[A-Za-z0-9_-]+"), r"sb_\1_" + MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\b[MNO][A-Za-z\d_-]{23,25}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,}"), MASK),  # Discord bot token
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE), r"\1" + MASK),
    (re.compile(r"((?:api[_-]?key|signature|secret)=)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), r"\1" + MASK),
)
_MAX_DEPTH = 6


class SecretMasker:
    """structlog processor masking secrets (see the module docstring); configured secrets are added at start."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            if s and len(s) >= 6 and s not in self.secrets:
                self.secrets.append(s)
        self.secrets.sort(key=len, reverse=True)  # longest first so a DSN is masked before its password

    def mask_text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def _mask(self, value: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, dict):
            return {k: (MASK if _secret_key(k, v) else self._mask(v, depth + 1)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._mask(v, depth + 1) for v in value)
        if isinstance(value, BaseException):
            return self.mask_text(repr(value))
        return value

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            value = event_dict[key]
            if key not in ("event", "exception") and _secret_key(key, value):
                event_dict[key] = MASK
            else:
                event_dict[key] = self._mask(value, 0)
        return event_dict


def _secret_key(key: object, value: object) -> bool:
    return isinstance(key, str) and value not in (None, "", False) and bool(_SECRET_KEYS.search(key))


MASKER = SecretMasker()


def _drop_color_message(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    level: str = "INFO", fmt: str = "auto", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Configure structlog + stdlib logging once for the process (idempotent; safe to call again in tests)."""
    out = stream or sys.stderr
    MASKER.add(secrets)
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # plain traceback text, never frame locals
        _drop_color_message,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, MASKER, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_wyeli", False):
            root.removeHandler(h)
    handler._wyeli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries: keep their warnings, drop their per-frame debug noise unless we debug.
    for name in ("websockets", "asyncio", "discord.gateway", "discord.http", "httpx", "hpack", "matplotlib"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" and name != "hpack" else logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

