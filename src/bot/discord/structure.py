"""The structure behind a signal, read back from the signal itself (pure): what its chart draws.

A chart of a signal shows the structure that PRODUCED it and nothing else (no Elliott count on a Wyckoff signal),
and the same chart live, after a restart and in a replay, so it is built from the stored signal rather than from the
analyzers' state at some later moment. The analyzers write their structure into the reasons:

- Wyckoff: ``Accumulation range 22516.6 - 23837.4, phase C`` and ``Events: SC 2023-01-25 20:00 at 23837.4; AR ...``
  (event candle OPEN times, UTC);
- Elliott: ``impulse down (...): 0=22840 @ 2023-02-09T12:00:00.000Z, 1=21405 @ ...; invalid if price trades above
  22840`` (pivot candle open times).

Whatever cannot be read is left out: a chart then shows the candles, entry, stop and targets only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from src.analysis.types import Signal

_RANGE_RE = re.compile(r"\b(accumulation|distribution) range ([0-9.eE+-]+) - ([0-9.eE+-]+)", re.IGNORECASE)
_EVENT_RE = re.compile(r"([A-Za-z][A-Za-z ()]*?) (\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2})(?::\d{2}(?:\.\d+)?Z?)? at ([0-9.eE+-]+)")
_WAVE_RE = re.compile(r"\b([0-9A-Za-z]{1,3})=([0-9.eE+-]+) @ (\d{4}-\d{2}-\d{2}T\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?Z?")
_INVALID_RE = re.compile(r"invalid if price trades ([^\n]+)")
_SIDE_PRICE_RE = re.compile(r"(above|below) ([0-9.eE+-]+)")


@dataclass(frozen=True, slots=True)
class SignalStructure:
    """What to draw for a signal: the Wyckoff range (support, resistance) and side, labelled points (candle open
    time, price, label) in time order, and labelled levels (e.g. an Elliott invalidation)."""

    analyzer: str
    range_side: str = ""  # "accumulation" | "distribution" | ""
    support: float | None = None
    resistance: float | None = None
    points: tuple[tuple[int, float, str], ...] = ()
    levels: tuple[tuple[str, float], ...] = ()
    connect: bool = False  # draw a line through the points (an Elliott count), not single markers (Wyckoff events)

    @property
    def start_ms(self) -> int | None:
        """Open time of the structure's first point (the climax, the count's origin)."""
        return min((t for t, _, _ in self.points), default=None)


def _ms(text: str) -> int | None:
    try:
        dt = datetime.fromisoformat(text.replace(" ", "T")[:16] + ":00+00:00")
    except ValueError:
        return None
    return int(dt.astimezone(UTC).timestamp() * 1000)


def _num(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 and value == value and value != float("inf") else None


def structure_of(signal: Signal) -> SignalStructure:
    """Read the signal's structure from its reasons (see the module docstring)."""
    analyzer = signal.pattern.partition("_")[0] if "_" in signal.pattern else ""
    text = "\n".join(signal.reasons)
    if analyzer == "wyckoff":
        return _wyckoff(text)
    if analyzer == "elliott":
        return _elliott(text)
    return SignalStructure(analyzer)


def _wyckoff(text: str) -> SignalStructure:
    side, support, resistance = "", None, None
    if m := _RANGE_RE.search(text):
        side, support, resistance = m.group(1).lower(), _num(m.group(2)), _num(m.group(3))
    points: list[tuple[int, float, str]] = []
    for line in text.splitlines():
        if not line.startswith("Events:"):
            continue
        for item in line.removeprefix("Events:").split(";"):
            m = _EVENT_RE.search(item.strip())
            if not m:
                continue
            t, price = _ms(m.group(2)), _num(m.group(3))
            if t is not None and price is not None:
                points.append((t, price, m.group(1).strip()[:14]))
    return SignalStructure("wyckoff", side, support, resistance, tuple(sorted(points)))


def _elliott(text: str) -> SignalStructure:
    points: list[tuple[int, float, str]] = []
    first_line = next((line for line in text.splitlines() if _WAVE_RE.search(line)), "")
    for m in _WAVE_RE.finditer(first_line):
        t, price = _ms(m.group(3)), _num(m.group(2))
        if t is not None and price is not None:
            points.append((t, price, m.group(1)))
    levels: list[tuple[str, float]] = []
    if inv := _INVALID_RE.search(first_line):
        for side, price_text in _SIDE_PRICE_RE.findall(inv.group(1)):
            price = _num(price_text.rstrip(".;,"))
            if price is not None:
                levels.append((f"invalid {side}", price))
    return SignalStructure("elliott", points=tuple(sorted(points)), levels=tuple(levels), connect=True)
