"""How the Discord side words times, patterns and follow-ups for a trader (pure functions, no I/O).

One time convention everywhere: a candle is named by its CLOSE time, in UTC, written ``2024-05-03 14:00 UTC``,
followed by the user's offset when DISPLAY_UTC_OFFSET is set (``2024-05-03 14:00 UTC (16:00 UTC+2)``). Analyzer
texts that carry candle OPEN times (``2024-05-03T13:00:00.000Z`` or ``2024-05-03 13:00``) are rewritten to the
close of that candle, and internal words become trader words (``degree 4.5`` -> ``swings of 4.5 ATR``,
``wyckoff_spring`` -> ``Wyckoff spring``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from src.analysis import timeframes
from src.analysis.follow_ups import FollowUp
from src.analysis.types import Signal

_ISO_RE = re.compile(r"\b(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?Z?\b")
_DEGREE_RE = re.compile(r"\(degree ([0-9.]+), score ([0-9.]+)\)")
_PATTERN_WORDS = {
    "wyckoff_spring": "Wyckoff spring", "wyckoff_utad": "Wyckoff UTAD", "wyckoff_test": "Wyckoff test of the spring",
    "wyckoff_utad_test": "Wyckoff test of the UTAD", "wyckoff_sos": "Wyckoff sign of strength (SOS)",
    "wyckoff_sow": "Wyckoff sign of weakness (SOW)", "wyckoff_lps": "Wyckoff last point of support (LPS)",
    "wyckoff_lpsy": "Wyckoff last point of supply (LPSY)", "elliott_wave3": "Elliott wave 3 entry",
    "elliott_wave5": "Elliott wave 5 entry", "elliott_abc": "Elliott end of an A-B-C correction",
}
KNOWN_PATTERNS: tuple[str, ...] = tuple(_PATTERN_WORDS)
EVENT_TITLES = {
    "tp1": "🎯 TP1 hit", "tp2": "🎯 TP2 reached", "stopped": "🛑 Stopped out", "invalidated": "⚠️ Invalidated before entry",
    "expired": "⌛ Expired",
}
EVENT_COLOURS = {"tp1": 0x2ECC71, "tp2": 0x27AE60, "stopped": 0xE74C3C, "invalidated": 0xE67E22, "expired": 0x95A5A6}


def pattern_words(pattern: str) -> str:
    """'wyckoff_spring' -> 'Wyckoff spring'; an unknown name with its underscores as spaces."""
    return _PATTERN_WORDS.get(pattern, pattern.replace("_", " "))


def analyzer_of(pattern: str) -> str:
    """'wyckoff' or 'elliott' from the pattern name (the part before the first '_'), '' when it has none."""
    head, sep, _ = pattern.partition("_")
    return head if sep else ""


def offset_label(offset_minutes: int) -> str:
    """'UTC+2', 'UTC-5:30'."""
    sign = "+" if offset_minutes >= 0 else "-"
    h, m = divmod(abs(offset_minutes), 60)
    return f"UTC{sign}{h}" + (f":{m:02d}" if m else "")


def fmt_time(ms: int, offset_minutes: int = 0, *, short: bool = False) -> str:
    """A moment (epoch ms, UTC): '2024-05-03 14:00 UTC', plus '(16:00 UTC+2)' with an offset (the date too when it
    differs). ``short`` drops the year."""
    try:
        dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return "n/a"
    fmt = "%m-%d %H:%M" if short else "%Y-%m-%d %H:%M"
    text = dt.strftime(fmt) + " UTC"
    if offset_minutes:
        local = dt + timedelta(minutes=offset_minutes)
        shown = local.strftime("%H:%M") if local.date() == dt.date() else local.strftime("%m-%d %H:%M")
        text += f" ({shown} {offset_label(offset_minutes)})"
    return text


def candle_close_ms(timeframe: str, open_ms: int) -> int:
    """The close of the candle opening at ``open_ms`` (the next candle's open)."""
    return timeframes.next_open(timeframe, open_ms)


def close_time_text(timeframe: str, open_ms: int, offset_minutes: int = 0, *, short: bool = False) -> str:
    return fmt_time(candle_close_ms(timeframe, open_ms), offset_minutes, short=short)


def reason_words(text: str, timeframe: str, offset_minutes: int = 0) -> str:
    """An analyzer's reason line for a trader: candle open times become that candle's close in the one time
    convention (short: month-day, the year is in the footer), '(degree 4.5, score 0.71)' becomes '(swings of 4.5 ATR or
    more)'; everything else is kept."""

    def at_close(m: re.Match[str]) -> str:
        try:
            dt = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}:00+00:00")
        except ValueError:
            return m.group(0)
        try:
            return close_time_text(timeframe, int(dt.timestamp() * 1000), offset_minutes, short=True)
        except ValueError:  # an unknown timeframe: leave the time as it was written
            return m.group(0)

    text = _DEGREE_RE.sub(lambda m: f"(swings of {_swing(float(m.group(1)))} or more)", text)
    return _ISO_RE.sub(at_close, text)


def _swing(degree: float) -> str:
    """The Elliott analyzer's degree threshold: ATR multiples (the default, 2 to 6.75), or a fraction of the price
    in its 'pct' mode (below 1)."""
    return f"{degree * 100:g} %" if degree < 1 else f"{degree:g} ATR"


def fmt_r(value: float) -> str:
    """'+1.42 R' / '−1.05 R' (a value that rounds to zero reads +0.00)."""
    if not math.isfinite(value):
        return "n/a"
    rounded = round(value, 2)
    return f"{rounded if rounded != 0 else 0.0:+.2f} R".replace("-", "−")


def follow_up_sentence(signal: Signal, f: FollowUp, price_text: str) -> str:
    """What happened, in one or two sentences, with R (net of fees) and price."""
    entry = f"entry {price_text_of(f.entry_price, price_text)}"
    bars = f"{f.bars} candle{'s' * (f.bars != 1)}"
    px = f"**{price_text}**"
    if f.event == "tp1":
        return (f"The first target was hit: the trade closed at {px} for **{fmt_r(f.r_multiple)}** after fees "
                f"({entry}, {bars}).")
    if f.event == "tp2":
        return (f"The second target was reached at {px}: holding to it would have made **{fmt_r(f.r_multiple)}** after "
                "fees. (The rules closed the trade at TP1; this is for the record.)")
    if f.event == "stopped":
        return f"Stopped out at {px}: **{fmt_r(f.r_multiple)}** after fees ({entry}, {bars})."
    if f.event == "invalidated":
        return (f"The candle after the signal opened at {px}, beyond the stop: the setup broke before a fair entry. "
                f"Graded as a loss at that open: **{fmt_r(f.r_multiple)}** after fees.")
    if f.event == "expired":
        return (f"Neither the stop nor TP1 within {bars}: the trade closed at {px} for **{fmt_r(f.r_multiple)}** "
                "after fees.")
    return f"{f.event} at {px}: {fmt_r(f.r_multiple)}"


def price_text_of(price: float, template: str) -> str:
    """``price`` with as many decimals as ``template`` (another price of the same market, already formatted)."""
    decimals = len(template.split(".", 1)[1]) if "." in template else 0
    return f"{price:,.{decimals}f}" if abs(price) >= 1000 else f"{price:.{decimals}f}"


def status_line(signal: Signal, history: Sequence[FollowUp], prices: Sequence[str], offset_minutes: int = 0) -> str:
    """The original message's status after ``history`` (its follow-ups so far, in order; ``prices`` formatted)."""
    parts = []
    for f, px in zip(history, prices, strict=True):
        if f.event == "tp2_missed":
            continue
        when = close_time_text(signal.timeframe, f.event_time_ms, offset_minutes, short=True)
        title = EVENT_TITLES.get(f.event, f.event)
        parts.append(f"{title} {fmt_r(f.r_multiple)} at {px}, {when}")
    return "\n".join(parts) if parts else "open: results will be posted as replies"
