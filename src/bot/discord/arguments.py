"""Parsing of user-supplied command arguments (pure): symbols and timeframes.

Users type anything: ``BTC``, ``btc``, ``BTCUSDT``, ``btc/usdt``, ``@everyone``, 2000 characters of
markdown. Only ``[A-Za-z0-9]`` survive, at most 20 characters, and the result must be a configured
symbol; nothing the user typed is echoed back except that sanitised form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from src.analysis import timeframes

QUOTE = "USDT"
MAX_ARG_CHARS = 20
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")


def sanitize(text: str | None, limit: int = MAX_ARG_CHARS) -> str:
    """Only ASCII letters and digits, at most ``limit`` of them (safe to show inside a reply)."""
    if not text:
        return ""
    return re.sub(r"[^A-Za-z0-9]", "", text[:200])[:limit]


def normalize_symbol(text: str | None) -> str | None:
    """'btc' / 'BTC' / 'BTCUSDT' / 'btc-usdt' -> 'BTCUSDT'; None when nothing symbol-like is left."""
    clean = sanitize(text, 40).upper()
    if not clean:
        return None
    if not clean.endswith(QUOTE):
        clean += QUOTE
    return clean if _SYMBOL_RE.match(clean) else None


def resolve_symbol(text: str | None, configured: Sequence[str], *, any_symbol: bool = False) -> str | None:
    """The configured symbol the user meant, or None. With ``any_symbol`` (SYMBOLS=ALL) any well-formed
    USDT symbol is accepted (the market view provider then says whether it has data)."""
    sym = normalize_symbol(text)
    if sym is None:
        return None
    if sym in configured or any_symbol:
        return sym
    raw = sanitize(text, 40).upper()
    return raw if raw in configured else None  # e.g. a non-USDT symbol configured verbatim


def resolve_timeframe(text: str | None, configured: Sequence[str]) -> str | None:
    """The configured timeframe meant by ``text``: exact match first ('1M' is a month, '1m' a minute),
    then a case-insensitive match when it is unambiguous ('1H' -> '1h')."""
    clean = sanitize(text, 4)
    if not clean or (not timeframes.is_interval(clean) and not any(tf.lower() == clean.lower() for tf in configured)):
        return None
    if clean in configured:
        return clean
    matches = [tf for tf in configured if tf.lower() == clean.lower()]
    return matches[0] if len(matches) == 1 else None


_PATTERN_RE = re.compile(r"[^a-z0-9_]")


def parse_stats_filters(
    words: Sequence[str | None], symbols: Sequence[str], timeframes_: Sequence[str], patterns: Sequence[str] = (), *,
    any_symbol: bool = False,
) -> tuple[str | None, str | None, str | None]:
    """``>stats`` arguments in any order -> (symbol, timeframe, pattern fragment). A configured timeframe is the
    timeframe; a word found in a known pattern name (``patterns``) is a pattern; a watched symbol is the symbol
    (with SYMBOLS=ALL: any symbol); anything else is a pattern fragment (lowercase letters, digits, '_', at most
    40). Raises ValueError naming the argument when two words claim the same role or a word is empty."""
    symbol = timeframe = pattern = None
    for word in words:
        if not word or not word.strip():
            continue
        frag = _PATTERN_RE.sub("", word.lower())[:40]
        tf = resolve_timeframe(word, timeframes_)
        if tf is not None:
            if timeframe is not None:
                raise ValueError(f"two timeframes given: `{timeframe}` and `{tf}`")
            timeframe = tf
            continue
        sym = None if frag and any(frag in p for p in patterns) else resolve_symbol(word, symbols, any_symbol=any_symbol)
        if sym is not None:
            if symbol is not None:
                raise ValueError(f"two symbols given: `{symbol}` and `{sym}`")
            symbol = sym
            continue
        if not frag:
            raise ValueError(f"`{sanitize(word) or 'that'}` is neither a symbol, a timeframe nor a pattern")
        if pattern is not None:
            raise ValueError(f"two patterns given: `{pattern}` and `{frag}`")
        pattern = frag
    return symbol, timeframe, pattern
