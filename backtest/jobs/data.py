"""Candles for a job: the store's where they cover the period, else Binance REST through a disk cache.

- Coverage: the store must hold at least 99 % of the period's candle slots (up to the last closed candle),
  the first within one interval of the start and the last within one interval of the end; then the job
  reads the store itself (``backtest run --source db``, exactly what the issue's status summary names).
- Otherwise the candles are downloaded per calendar month into ``JOBS_CACHE_DIR``
  (``SYMBOL-TF-YYYY-MM.csv``, Binance's kline CSV layout); a month that has fully closed is downloaded once
  and reused by every later job, the current month is fetched again each time and not cached.
- REST weight: the job's client pauses whenever the IP's 1-minute weight (Binance's
  ``X-MBX-USED-WEIGHT-1M`` header, which counts every process on this IP, the live bot included) would pass
  ``JOBS_REST_WEIGHT_LIMIT`` (default 1000 of 2400). The live client pauses at 2000, so jobs can never take
  the last 1000 weight of a minute from the live stream, however many workers share the IP.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from src.analysis import timeframes
from src.analysis.types import Candle
from src.config import Config
from src.market.binance_rest import BinanceRestClient, RestSettings
from src.market.klines_csv import read_klines_csv, write_klines_csv

COVERAGE = 0.99


@dataclass(frozen=True, slots=True)
class JobData:
    """Where a stream's candles come from: the store, or a CSV file in the job's directory."""

    symbol: str
    source: str  # "store" or "binance-rest"
    candles: int
    path: Path | None = None


def expected_slots(timeframe: str, from_ms: int, to_ms: int) -> int:
    """Candle open times t with from_ms <= t < to_ms on the interval's grid."""
    n = 0
    t = timeframes.bucket_start(timeframe, from_ms)
    if t < from_ms:
        t = timeframes.next_open(timeframe, t)
    while t < to_ms:
        n += 1
        t = timeframes.next_open(timeframe, t)
    return n


def covers(candles: list[Candle], timeframe: str, from_ms: int, to_ms: int) -> bool:
    """True when ``candles`` cover [from_ms, to_ms) well enough to backtest from the store (module docstring)."""
    want = expected_slots(timeframe, from_ms, to_ms)
    if want == 0 or not candles:
        return False
    step = timeframes.interval_ms(timeframe) if timeframe != "1M" else 31 * 86_400_000
    return (len(candles) >= COVERAGE * want and candles[0].open_time_ms - from_ms <= step
            and to_ms - candles[-1].open_time_ms <= 2 * step)


def rest_settings(cfg: Config) -> RestSettings:
    """The job client's settings: stop at JOBS_REST_WEIGHT_LIMIT of the IP's 2400/min."""
    budget = RestSettings().weight_budget_1m
    return RestSettings(base_url=cfg.binance_rest_url, weight_budget_1m=budget,
                        weight_safety_margin=max(0, budget - cfg.jobs_rest_weight_limit))


def month_starts(from_ms: int, to_ms: int) -> list[int]:
    """UTC month starts of every month overlapping [from_ms, to_ms)."""
    d = datetime.fromtimestamp(from_ms / 1000, UTC)
    y, m = d.year, d.month
    out: list[int] = []
    while True:
        start = int(datetime(y, m, 1, tzinfo=UTC).timestamp() * 1000)
        if start >= to_ms:
            return out
        out.append(start)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def _month_end(start_ms: int) -> int:
    d = datetime.fromtimestamp(start_ms / 1000, UTC)
    days = calendar.monthrange(d.year, d.month)[1]
    return start_ms + days * 86_400_000


async def download_cached(
    client: BinanceRestClient, cache_dir: Path, symbol: str, timeframe: str, from_ms: int, to_ms: int, *,
    progress: Callable[[str], None] | None = None, now_ms: int | None = None,
) -> list[Candle]:
    """Candles with from_ms <= open < to_ms from the month cache, downloading the months it lacks."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cache_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - runs in the job process, no loop to block
    out: list[Candle] = []
    months = month_starts(from_ms, to_ms)
    for i, start in enumerate(months, 1):
        end = _month_end(start)
        label = datetime.fromtimestamp(start / 1000, UTC).strftime("%Y-%m")
        path = cache_dir / f"{symbol}-{timeframe}-{label}.csv"
        complete = end + timeframes.interval_ms(timeframe) <= now  # the month's last candle has closed
        if complete and path.is_file():
            month = read_klines_csv(path, symbol, timeframe).candles
        else:
            if progress is not None:
                progress(f"downloading {symbol} {timeframe} {label} from Binance ({i}/{len(months)})")
            month = await client.klines(symbol, timeframe, start, end - 1, now_ms=now)
            if complete:
                tmp = path.with_name(path.name + ".part")
                write_klines_csv(tmp, month)
                tmp.replace(path)
        out.extend(c for c in month if from_ms <= c.open_time_ms < to_ms)
    return out
