"""Binance kline intervals and their bucket arithmetic (UTC).

Binance USDT-M serves 15 intervals: 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M.
Buckets align on UTC epoch boundaries, except: ``1w`` starts on Monday 00:00 UTC (the epoch was a
Thursday, so weekly buckets are offset by 4 days), ``3d`` aligns on the epoch, and ``1M`` is a
calendar month. ``1m`` (minute) and ``1M`` (month) differ only in case.
"""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE_MS = 60_000
_FIXED_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "2h": 120 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "6h": 360 * MINUTE_MS,
    "8h": 480 * MINUTE_MS,
    "12h": 720 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
    "3d": 3 * 1440 * MINUTE_MS,
    "1w": 7 * 1440 * MINUTE_MS,
}
INTERVALS: tuple[str, ...] = (*_FIXED_MS, "1M")
_WEEK_OFFSET_MS = 4 * 1440 * MINUTE_MS  # 1970-01-01 was a Thursday; Binance weeks start Monday


class UnknownInterval(ValueError):
    pass


def is_interval(name: str) -> bool:
    return name in _FIXED_MS or name == "1M"


def interval_ms(name: str) -> int:
    """Length in ms of a fixed interval; ``1M`` returns 31 days (an upper bound, for staleness)."""
    if name == "1M":
        return 31 * 1440 * MINUTE_MS
    try:
        return _FIXED_MS[name]
    except KeyError:
        raise UnknownInterval(f"unknown interval {name!r}; valid: {', '.join(INTERVALS)}") from None


def bucket_start(name: str, t_ms: int) -> int:
    """Open time (ms) of the ``name`` bucket containing instant ``t_ms``."""
    if name == "1M":
        dt = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
        return int(datetime(dt.year, dt.month, 1, tzinfo=UTC).timestamp() * 1000)
    size = interval_ms(name)
    offset = _WEEK_OFFSET_MS if name == "1w" else 0
    return ((t_ms - offset) // size) * size + offset


def next_open(name: str, open_ms: int) -> int:
    """Open time of the bucket after the one opening at ``open_ms``."""
    if name == "1M":
        dt = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
        year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
    return open_ms + interval_ms(name)


def close_time(name: str, open_ms: int) -> int:
    """Binance close time: the last millisecond of the bucket."""
    return next_open(name, open_ms) - 1


def sort_key(name: str) -> int:
    """Sort intervals by length (1m < 5m < ... < 1M)."""
    return interval_ms(name)
