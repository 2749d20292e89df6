"""``python -m backtest download``: closed klines from Binance USDT-M REST into a CSV the other
commands read (header + Binance's 12 columns, see src/market/klines_csv.py).

    python -m backtest download --symbol BTCUSDT --timeframe 1h --days 365 --out BTCUSDT-1h.csv
    python -m backtest download --symbol ETHUSDT --timeframe 15m --from 2024-01-01 --to 2024-07-01 --out eth.csv

Paging, the weight budget, 429 (wait Retry-After) and 418 (stop until the ban ends) are handled by
``src.market.binance_rest.BinanceRestClient`` (the bot's own client; pages of 1000). The REST base
URL is ``--rest-url`` or BINANCE_REST_URL (default https://fapi.binance.com). Only closed candles are
written; the file is written to a temporary name and renamed, so a failed download leaves no
half file. Exit status: 0 ok, 2 bad options or a request Binance refuses (e.g. unknown symbol),
1 when Binance stays unreachable or the IP is banned.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

from src.analysis import timeframes
from src.analysis.types import Candle, ms_to_iso
from src.market.binance_rest import BinanceRestClient, RestRequestError, RestSettings, RestUnavailable
from src.market.klines_csv import write_klines_csv

DAY_MS = 86_400_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
    p.add_argument("--timeframe", required=True, help="kline interval, e.g. 1m, 15m, 1h")
    p.add_argument("--days", type=int, help="the last N days (default 365 unless --from is given)")
    p.add_argument("--from", dest="date_from", metavar="DATE", help="first open time (UTC)")
    p.add_argument("--to", dest="date_to", metavar="DATE", help="last open time bound (UTC, exclusive; default now)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.csv")
    p.add_argument("--rest-url", help="REST base URL (default BINANCE_REST_URL)")


async def download(
    symbol: str,
    timeframe: str,
    start_ms: int,
    end_ms: int | None,
    out: Path,
    rest_url: str,
    *,
    clock: Callable[[], float] = time.time,
    on_page: Callable[[int], None] | None = None,
) -> list[Candle]:
    """Fetch closed candles with start_ms <= open time < end_ms and write them to ``out``."""
    candles: list[Candle] = []
    async with BinanceRestClient(RestSettings(base_url=rest_url), clock=clock) as client:
        last = None if end_ms is None else end_ms - 1
        async for page in client.iter_klines(symbol, timeframe, start_ms, last):
            candles.extend(page)
            if on_page is not None:
                on_page(len(page))
    tmp = out.with_name(out.name + ".part")
    write_klines_csv(tmp, candles)
    tmp.replace(out)
    return candles


def count_gaps(candles: list[Candle], timeframe: str) -> int:
    """Missing candles between the first and the last one."""
    missing = 0
    for a, b in itertools.pairwise(candles):
        t = timeframes.next_open(timeframe, a.open_time_ms)
        while t < b.open_time_ms:
            missing += 1
            t = timeframes.next_open(timeframe, t)
    return missing


def run(args: argparse.Namespace) -> int:
    from backtest.inputs import InputError, parse_date
    from src.config import Config

    try:
        tf = args.timeframe
        if not timeframes.is_interval(tf):
            raise InputError(f"--timeframe: unknown interval {tf!r}; valid: {', '.join(timeframes.INTERVALS)}")
        symbol = args.symbol.strip().upper()
        if not symbol.isalnum():
            raise InputError(f"--symbol: not a symbol: {args.symbol!r}")
        start = parse_date(args.date_from, "--from")
        end = parse_date(args.date_to, "--to")
        if start is not None and args.days is not None:
            raise InputError("give --days or --from, not both")
        if args.days is not None and args.days < 1:
            raise InputError("--days must be >= 1")
        if start is None:
            now = int(time.time() * 1000) if end is None else end
            start = timeframes.bucket_start(tf, now - (args.days or 365) * DAY_MS)
        if end is not None and end <= start:
            raise InputError("--to must be after --from")
        if not args.out.parent.exists():
            raise InputError(f"--out {args.out}: directory {args.out.parent} does not exist")
        rest_url = (args.rest_url or Config.from_env().binance_rest_url).rstrip("/")
        if not rest_url.startswith(("http://", "https://")):
            raise InputError(f"--rest-url: expected an http(s) URL, got {rest_url!r}")
    except InputError as exc:
        print(f"backtest download: {exc}", file=sys.stderr)
        return 2
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description} {task.completed} candles"),
                  disable=not sys.stderr.isatty(), transient=True) as prog:
        task = prog.add_task(f"{symbol} {tf}")
        try:
            candles = asyncio.run(download(symbol, tf, start, end, args.out, rest_url,
                                           on_page=lambda n: prog.advance(task, n)))
        except RestRequestError as exc:
            print(f"backtest download: Binance refused the request: {exc}", file=sys.stderr)
            return 2
        except RestUnavailable as exc:
            print(f"backtest download: Binance unavailable: {exc}", file=sys.stderr)
            return 1
    if not candles:
        print(f"{symbol} {tf}: no closed candles in that period; wrote a header-only {args.out}")
        return 0
    gaps = count_gaps(candles, tf)
    print(f"{symbol} {tf}: {len(candles)} candles {ms_to_iso(candles[0].open_time_ms)} .. "
          f"{ms_to_iso(candles[-1].open_time_ms)} -> {args.out}" + (f" ({gaps} missing candles)" if gaps else ""))
    return 0
