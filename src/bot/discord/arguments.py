"""Parsing of user-supplied command arguments (pure): symbols and timeframes.

Users type anything: ``BTC``, ``btc``, ``BTCUSDT``, ``btc/usdt``, ``@everyone``, 2000 characters of
markdown. Only ``[A-Za-z0-9]`` survive, at most 20 characters, and the result must be a configured
symbol; nothing the user typed is echoed back except that sanitised form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from src.analysis import timeframes
from src.bot.discord.wording import KNOWN_PATTERNS

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


# ---------------------------------------------------------------------------------------------- issue 14
_DURATION_RE = re.compile(r"^(\d{1,4})([mhdw])$")
_DURATION_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_PERIOD_RE = re.compile(r"^(\d{1,4})([dw])$")
_PAGE_RE = re.compile(r"^p(?:age)?(\d{1,4})$")
OUTCOME_WORDS = {"win": "WIN", "wins": "WIN", "won": "WIN", "tp": "WIN", "loss": "LOSS", "losses": "LOSS", "lost": "LOSS",
                 "stopped": "LOSS", "expired": "EXPIRED", "open": "OPEN"}
SCOPE_WORDS = {"dm": "dm", "me": "dm", "mine": "dm", "here": "channel", "channel": "channel"}


def parse_duration_ms(text: str) -> int | None:
    """'30m' / '12h' / '2d' / '1w' -> milliseconds; None for anything else."""
    m = _DURATION_RE.match(sanitize(text, 8).lower())
    if not m or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)) * _DURATION_MS[m.group(2)]


def fmt_duration_words(ms: int) -> str:
    """12 h, 2 d 4 h, 30 min."""
    minutes = ms // 60_000
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{mins} min" if mins and not days else ""]
    return " ".join(p for p in parts if p) or "0 min"


@dataclass(frozen=True, slots=True)
class MarketWords:
    """What ``>watch`` / ``>unwatch`` / ``>mute`` / ``>unmute`` were given."""

    symbol: str | None = None
    timeframe: str | None = None
    duration_ms: int | None = None
    scope: str | None = None  # "dm", "channel" or None (the place the command was typed in)


def parse_market_words(words: Sequence[str | None], symbols: Sequence[str], timeframes_: Sequence[str], *,
                       any_symbol: bool = False, duration: bool = False) -> MarketWords:
    """Words in any order -> symbol, timeframe, scope (``dm``/``me`` or ``here``) and, with ``duration``, the LAST word
    that reads as a duration (``30m``, ``12h``, ``2d``, ``1w``; so ``>mute ETH 4h 12h`` is ETH 4h for 12 hours and
    ``>mute ETH 1h`` is ETH on every timeframe for an hour). Raises ValueError naming the word it cannot place."""
    clean = [w.strip() for w in words if w and w.strip()]
    dur_index = None
    if duration:
        for i in range(len(clean) - 1, -1, -1):
            if parse_duration_ms(clean[i]) is not None:
                dur_index = i
                break
    symbol = timeframe = scope = None
    duration_ms = parse_duration_ms(clean[dur_index]) if dur_index is not None else None
    for i, word in enumerate(clean):
        if i == dur_index:
            continue
        low = sanitize(word, 10).lower()
        if low in SCOPE_WORDS and scope is None:
            scope = SCOPE_WORDS[low]
            continue
        tf = resolve_timeframe(word, timeframes_)
        if tf is not None:
            if timeframe is not None:
                raise ValueError(f"two timeframes given: `{timeframe}` and `{tf}`")
            timeframe = tf
            continue
        sym = resolve_symbol(word, symbols, any_symbol=any_symbol)
        if sym is not None:
            if symbol is not None:
                raise ValueError(f"two symbols given: `{symbol}` and `{sym}`")
            symbol = sym
            continue
        raise ValueError(f"`{sanitize(word) or 'that'}` is neither a watched symbol nor a configured timeframe")
    return MarketWords(symbol, timeframe, duration_ms, scope)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """``>signals`` filters and page (1-based)."""

    symbol: str | None = None
    timeframe: str | None = None
    pattern: str | None = None
    outcome: str | None = None  # WIN, LOSS, EXPIRED, OPEN
    page: int = 1

    def describe(self) -> str:
        return " ".join(x for x in (self.symbol, self.timeframe, self.pattern, self.outcome and self.outcome.lower()) if x)


def parse_history_words(text: str | None, symbols: Sequence[str], timeframes_: Sequence[str], *,
                        any_symbol: bool = False) -> HistoryQuery:
    """``>signals`` words in any order: a symbol, a timeframe, an outcome (win, loss, expired, open), ``page N`` (or
    ``pN``), and a pattern fragment. Raises ValueError naming the word it cannot place."""
    words = [w for w in (text or "")[:300].split() if w.strip()]
    symbol = timeframe = pattern = outcome = None
    page = 1
    i = 0
    while i < len(words):
        word = words[i]
        low = sanitize(word, 12).lower()
        if low == "page" and i + 1 < len(words) and sanitize(words[i + 1], 4).isdigit():
            page = max(1, int(sanitize(words[i + 1], 4)))
            i += 2
            continue
        if m := _PAGE_RE.match(low):
            page = max(1, int(m.group(1)))
        elif low in OUTCOME_WORDS:
            if outcome is not None:
                raise ValueError(f"two outcomes given: `{outcome.lower()}` and `{low}`")
            outcome = OUTCOME_WORDS[low]
        elif (tf := resolve_timeframe(word, timeframes_)) is not None:
            if timeframe is not None:
                raise ValueError(f"two timeframes given: `{timeframe}` and `{tf}`")
            timeframe = tf
        elif (sym := _history_symbol(word, symbols, any_symbol)) is not None:
            if symbol is not None:
                raise ValueError(f"two symbols given: `{symbol}` and `{sym}`")
            symbol = sym
        else:
            frag = _PATTERN_RE.sub("", word.lower())[:40]
            if not frag:
                raise ValueError(f"`{sanitize(word) or 'that'}` is neither a symbol, timeframe, outcome nor pattern")
            if pattern is not None:
                raise ValueError(f"two patterns given: `{pattern}` and `{frag}`")
            pattern = frag
        i += 1
    return HistoryQuery(symbol, timeframe, pattern, outcome, page)


def _history_symbol(word: str, symbols: Sequence[str], any_symbol: bool) -> str | None:
    """A symbol, unless (with SYMBOLS=ALL, where any word could be one) the word is part of a pattern name."""
    frag = _PATTERN_RE.sub("", word.lower())
    if any_symbol and frag and any(frag in p for p in KNOWN_PATTERNS):
        return None
    return resolve_symbol(word, symbols, any_symbol=any_symbol)


def split_period(words: Sequence[str | None], timeframes_: Sequence[str]) -> tuple[list[str | None], int | None, str]:
    """Take a period word (``30d``, ``12w``; a configured timeframe wins over it) out of ``>stats`` words: (the other
    words, the period in ms or None, the period as typed)."""
    rest: list[str | None] = []
    period: int | None = None
    shown = ""
    for word in words:
        ms = parse_period_ms(word) if word and period is None and resolve_timeframe(word, timeframes_) is None else None
        if ms is not None and word is not None:
            period, shown = ms, sanitize(word, 8).lower()
        else:
            rest.append(word)
    return rest, period, shown


def parse_period_ms(text: str) -> int | None:
    """'30d' / '12w' -> milliseconds (at most 5 years); None otherwise."""
    m = _PERIOD_RE.match(sanitize(text, 8).lower())
    if not m or int(m.group(1)) <= 0:
        return None
    return min(int(m.group(1)) * _DURATION_MS[m.group(2)], 5 * 366 * 86_400_000)
