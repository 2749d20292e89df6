"""Reading and writing kline CSV files in Binance's layout.

Columns: open_time, open, high, low, close, volume, close_time, then optionally quote_volume,
trades, taker_buy_volume, taker_buy_quote_volume, ignore. A header row is optional (detected when
the first field is not a number). Times are epoch milliseconds UTC; Binance's newer public dumps
use microseconds for some markets, which are detected (> 1e14) and converted. The first seven
columns are required; a row that cannot be parsed, or whose candle fails ``Candle.validate``, is a
:class:`KlineFileError` naming the file and line: a file is never half-read silently.

Symbol and interval come from the caller or from a ``SYMBOL-INTERVAL...`` file name
(e.g. ``BTCUSDT-1m-2025-05.csv``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from src.analysis import timeframes
from src.analysis.types import Candle, InvalidCandle

_NAME_RE = re.compile(r"^(?P<symbol>[A-Za-z0-9]{2,20})-(?P<interval>\d{1,2}[mhdwM])(?:[-_.]|$)")
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,trades,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


class KlineFileError(ValueError):
    """A kline file that cannot be read as Binance-layout klines."""


@dataclass(frozen=True, slots=True)
class KlineFile:
    path: Path
    symbol: str
    timeframe: str
    candles: list[Candle]


def infer_symbol_interval(path: Path) -> tuple[str | None, str | None]:
    """``BTCUSDT-1m-2025-05.csv`` -> ("BTCUSDT", "1m"); (None, None) when the name does not say."""
    m = _NAME_RE.match(path.name)
    if not m or not timeframes.is_interval(m["interval"]):
        return None, None
    return m["symbol"].upper(), m["interval"]


def _ms(value: str) -> int:
    t = int(float(value)) if "." in value or "e" in value.lower() else int(value)
    return t // 1000 if t > 100_000_000_000_000 else t  # microsecond timestamps


def iter_klines(path: Path, symbol: str, timeframe: str) -> Iterator[Candle]:
    """Yield validated closed candles from ``path`` in file order."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise KlineFileError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if lineno == 1 and not row[0].strip().lstrip("-").isdigit():
                continue  # header
            if len(row) < 7:
                raise KlineFileError(f"{path}:{lineno}: expected at least 7 columns, got {len(row)}")
            try:
                extra = row[7:11] + [""] * (4 - len(row[7:11]))
                candle = Candle(
                    symbol=symbol,
                    timeframe=timeframe,
                    open_time_ms=_ms(row[0]),
                    close_time_ms=_ms(row[6]),
                    open=float(row[1]),
                    high=float(row[2]),
                    low=float(row[3]),
                    close=float(row[4]),
                    volume=float(row[5]),
                    quote_volume=float(extra[0] or 0.0),
                    trades=int(float(extra[1] or 0)),
                    taker_buy_volume=float(extra[2] or 0.0),
                    taker_buy_quote_volume=float(extra[3] or 0.0),
                ).validate()
            except InvalidCandle as exc:
                raise KlineFileError(f"{path}:{lineno}: {exc}") from None
            except ValueError:
                raise KlineFileError(f"{path}:{lineno}: not a kline row: {','.join(row)[:120]!r}") from None
            yield candle


def read_klines_csv(path: str | Path, symbol: str | None = None, timeframe: str | None = None) -> KlineFile:
    """Read a whole kline file; candles are sorted by open time and de-duplicated (last row wins).

    Raises KlineFileError for a missing/unreadable file, a bad row, an unknown interval, or when
    the symbol/interval are neither given nor in the file name.
    """
    p = Path(path)
    name_symbol, name_interval = infer_symbol_interval(p)
    sym = (symbol or name_symbol or "").upper()
    tf = timeframe or name_interval
    if not sym:
        raise KlineFileError(f"{p}: symbol unknown: pass it explicitly or name the file SYMBOL-INTERVAL-....csv")
    if not tf:
        raise KlineFileError(f"{p}: interval unknown: pass it explicitly or name the file SYMBOL-INTERVAL-....csv")
    if not timeframes.is_interval(tf):
        raise KlineFileError(f"{p}: unknown interval {tf!r}; valid: {', '.join(timeframes.INTERVALS)}")
    by_time: dict[int, Candle] = {}
    for candle in iter_klines(p, sym, tf):
        by_time[candle.open_time_ms] = candle
    if not by_time:
        raise KlineFileError(f"{p}: no kline rows (expected Binance layout: open_time,open,high,low,close,volume,close_time)")
    candles = [by_time[t] for t in sorted(by_time)]
    return KlineFile(path=p, symbol=sym, timeframe=tf, candles=candles)


def candle_row(c: Candle) -> list[str]:
    """Binance's 12-column layout for one candle."""
    return [
        str(c.open_time_ms), repr(c.open), repr(c.high), repr(c.low), repr(c.close), repr(c.volume),
        str(c.close_time_ms), repr(c.quote_volume), str(c.trades), repr(c.taker_buy_volume),
        repr(c.taker_buy_quote_volume), "0",
    ]


def write_klines_csv(path: str | Path, candles: Iterable[Candle], header: bool = True) -> int:
    """Write candles in Binance's layout (with a header row by default); returns the row count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(HEADER.split(","))
        for c in candles:
            w.writerow(candle_row(c))
            n += 1
    return n
