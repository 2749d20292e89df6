"""Parsing ``>backtest SYMBOL [TF] [period] [pattern...]`` and ``>research PATTERN [TF] [period]`` (pure).

Tokens may come in any order after the symbol: a timeframe (``1h``), a period, pattern names. Periods:

- ``30d``, ``12w``, ``6m`` / ``6mo``, ``1y``: the last N days/weeks/months/years up to now (a token that is
  a Binance interval, e.g. ``1d``, ``3d``, ``1w``, is a timeframe, never a period);
- ``2024``: that calendar year; ``2024-03``: that month; ``ytd`` (or ``thisyear``): 1 January to now;
- ``2024-01-01..2024-06-30`` / ``2024-01..2024-06``: from the first day to the END of the last one.

Every period ends at most now; the default is the last 365 days. Errors are :class:`ArgumentProblem` with a
message for the user that echoes only sanitised text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from src.analysis import timeframes
from src.bot.discord.arguments import resolve_symbol, resolve_timeframe, sanitize
from src.jobs.model import DAY_MS
from src.jobs.patterns import KNOWN_PATTERNS, resolve_pattern, short_name

DEFAULT_DAYS = 365
MAX_TOKENS = 12
_REL = re.compile(r"^(\d{1,4})(d|w|m|mo|y)$")
_YEAR = re.compile(r"^(\d{4})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


class ArgumentProblem(ValueError):
    """A friendly message about the command's arguments."""


@dataclass(frozen=True, slots=True)
class ParsedJob:
    symbols: tuple[str, ...]
    timeframe: str
    from_ms: int
    to_ms: int
    patterns: tuple[str, ...]
    period_text: str


def _ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)


def _add_months(d: datetime, months: int) -> datetime:
    y, m = divmod(d.month - 1 + months, 12)
    return d.replace(year=d.year + y, month=m + 1, day=1)


def _bound(text: str, *, end: bool) -> datetime | None:
    """A date's start (``end`` False) or the start of the day/month/year after it (``end`` True)."""
    try:
        if m := _DAY.match(text):
            d = datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC)
            return d + timedelta(days=1) if end else d
        if m := _MONTH.match(text):
            d = datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)
            return _add_months(d, 1) if end else d
        if m := _YEAR.match(text):
            d = datetime(int(m[1]), 1, 1, tzinfo=UTC)
            return d.replace(year=d.year + 1) if end else d
    except ValueError:
        return None
    return None


def parse_period(text: str, now_ms: int) -> tuple[int, int] | None:
    """[from, to) in ms for a period token (module docstring), or None when ``text`` is not one."""
    t = text.lower()
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    if t in ("ytd", "thisyear"):
        return _ms(datetime(now.year, 1, 1, tzinfo=UTC)), now_ms
    if timeframes.is_interval(text):
        return None  # '1d', '3d', '1w' are timeframes (see the module docstring)
    if m := _REL.match(t):
        n, unit = int(m[1]), m[2]
        if n < 1:
            return None
        days = {"d": 1, "w": 7, "m": 30.4375, "mo": 30.4375, "y": 365}[unit] * n
        return now_ms - int(days * DAY_MS), now_ms
    if ".." in t:
        a, _, b = t.partition("..")
        start, stop = _bound(a, end=False), _bound(b, end=True)
        if start is None or stop is None:
            return None
        return _ms(start), min(_ms(stop), now_ms)
    start, stop = _bound(t, end=False), _bound(t, end=True)
    if start is None or stop is None:
        return None
    return _ms(start), min(_ms(stop), now_ms)


def _tokens(text: str) -> list[str]:
    toks = [re.sub(r"[^A-Za-z0-9_.\-/]", "", t)[:25] for t in text.split()]
    return [t for t in toks if t][:MAX_TOKENS]


def _rest(tokens: Sequence[str], now_ms: int, configured_tfs: Sequence[str], any_tf: bool,
          patterns_required: bool) -> tuple[str | None, tuple[int, int] | None, str, list[str]]:
    tf: str | None = None
    period: tuple[int, int] | None = None
    period_text = ""
    patterns: list[str] = []
    for tok in tokens:
        if tf is None and (got := resolve_timeframe(tok, configured_tfs) or
                           (tok if any_tf and timeframes.is_interval(tok) else None)):
            tf = got
            continue
        if period is None and (p := parse_period(tok, now_ms)) is not None:
            period, period_text = p, tok
            continue
        if (pat := resolve_pattern(tok)) is not None:
            if pat not in patterns:
                patterns.append(pat)
            continue
        shown = sanitize(tok, 20) or "that"
        if timeframes.is_interval(tok) or re.match(r"^\d+[a-zA-Z]$", tok):
            raise ArgumentProblem(f"`{shown}` is not a timeframe I can backtest; timeframes: {', '.join(configured_tfs)}")
        raise ArgumentProblem(f"I don't understand `{shown}`: expected a timeframe ({', '.join(configured_tfs)}), "
                              "a period (e.g. `90d`, `1y`, `2024`, `2024-03`, `ytd`, `2024-01-01..2024-06-30`) or a "
                              f"pattern ({', '.join(short_name(p) for p in KNOWN_PATTERNS)})")
    if patterns_required and not patterns:
        raise ArgumentProblem(f"name a pattern: {', '.join(short_name(p) for p in KNOWN_PATTERNS)}")
    return tf, period, period_text, patterns


def _finish(symbols: tuple[str, ...], tf: str | None, period: tuple[int, int] | None, period_text: str,
            patterns: list[str], configured_tfs: Sequence[str], now_ms: int, default_tf: str) -> ParsedJob:
    tf = tf or default_tf
    if period is None:
        period, period_text = (now_ms - DEFAULT_DAYS * DAY_MS, now_ms), f"last {DEFAULT_DAYS} days"
    start, stop = period
    if stop <= start:
        raise ArgumentProblem("that period is empty (or lies in the future)")
    if stop - start < 2 * timeframes.interval_ms(tf):
        raise ArgumentProblem(f"that period holds fewer than two {tf} candles")
    return ParsedJob(symbols, tf, start, stop, tuple(patterns), period_text)


def parse_backtest(text: str, *, symbols: Sequence[str], tfs: Sequence[str], now_ms: int, any_symbol: bool = False,
                   any_tf: bool = False) -> ParsedJob:
    """``SYMBOL [TF] [period] [pattern...]``; the default timeframe is 1h when configured, else the first."""
    toks = _tokens(text)
    if not toks:
        raise ArgumentProblem("which market? e.g. `>backtest SOL 1h 2024 spring`")
    sym = resolve_symbol(toks[0], symbols, any_symbol=any_symbol)
    if sym is None:
        raise ArgumentProblem(f"I don't watch `{sanitize(toks[0]) or 'that'}`; symbols: "
                              f"{', '.join(s.removesuffix('USDT') for s in symbols) or 'any USDT perpetual'}")
    tf, period, ptext, patterns = _rest(toks[1:], now_ms, tfs, any_tf, patterns_required=False)
    return _finish((sym,), tf, period, ptext, patterns, tfs, now_ms, "1h" if "1h" in tfs else tfs[0])


def parse_research(text: str, *, symbols: Sequence[str], tfs: Sequence[str], now_ms: int,
                   any_tf: bool = False) -> ParsedJob:
    """``PATTERN [TF] [period]`` over the configured symbols."""
    if not symbols:
        raise ArgumentProblem("research runs over the configured symbols, and none are configured (SYMBOLS=ALL)")
    tf, period, ptext, patterns = _rest(_tokens(text), now_ms, tfs, any_tf, patterns_required=True)
    return _finish(tuple(symbols), tf, period, ptext, patterns, tfs, now_ms, "1h" if "1h" in tfs else tfs[0])
