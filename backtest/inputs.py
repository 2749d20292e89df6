"""Candle inputs of ``backtest run``: kline CSV files or the store.

- ``--data FILE`` (repeatable): Binance-layout CSV read by ``src.market.klines_csv.read_klines_csv``.
  The file's interval comes from its name (``BTCUSDT-1m-...``) or else is taken to be ``--timeframe``;
  without ``--timeframe`` the analysis timeframe is the interval the file names say (all the same);
  a smaller interval is aggregated to ``--timeframe`` with ``src.market.aggregator.TimeframeBuilder``
  (Binance's own kline construction); a larger or incompatible one is an error.
- ``--source db``: the configured store (``src.storage.factory.build_store(Config.from_env())``),
  one stream per ``--symbol`` (comma-separated allowed); a network store is read directly, never
  through the bot's outage spool.
- ``--from`` / ``--to`` (ISO date or date-time, UTC): keep candles with from <= open time < to.

Every problem raises :class:`InputError` with a message naming the file or option; the commands
turn it into exit status 2.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from src.analysis import timeframes
from src.analysis.types import Candle, iso_to_ms
from src.market.aggregator import TimeframeBuilder, can_build
from src.market.klines_csv import KlineFileError, infer_symbol_interval, read_klines_csv


class InputError(ValueError):
    """Bad command-line input (file, option, date): reported with exit status 2."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One stream to analyse: a CSV path (read inside the worker) or candles already loaded."""

    symbol: str
    timeframe: str
    path: str | None = None
    candles: tuple[Candle, ...] | None = None
    from_ms: int | None = None
    to_ms: int | None = None

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.timeframe}" + (f" ({Path(self.path).name})" if self.path else "")


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", default=[], metavar="FILE.csv", help="kline CSV (repeatable)")
    p.add_argument("--source", choices=("csv", "db"), default="csv", help="csv files (default) or the configured store")
    p.add_argument("--symbol", help="symbol (default: from each file name); with --source db, comma-separated list")
    p.add_argument("--timeframe", help="analysis timeframe, e.g. 15m, 1h, 4h (default: the interval in the file "
                                       "names, SYMBOL-INTERVAL-....csv; required with --source db)")
    p.add_argument("--from", dest="date_from", metavar="DATE", help="first candle open time (UTC, inclusive)")
    p.add_argument("--to", dest="date_to", metavar="DATE", help="last bound (UTC, exclusive)")


def parse_date(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        return iso_to_ms(text)
    except ValueError:
        raise InputError(f"{option}: not an ISO date or date-time: {text!r} (e.g. 2024-01-31 or 2024-01-31T12:00)") from None


def timeframe_from_names(paths: list[str], option: str = "--timeframe") -> str:
    """The interval the file names say (``BTCUSDT-1h-....csv``), when ``--timeframe`` is omitted; every file
    must say one and they must agree."""
    said = {raw: infer_symbol_interval(Path(raw))[1] for raw in paths}
    unnamed = [raw for raw, tf in said.items() if tf is None]
    if unnamed:
        raise InputError(f"{option} is needed: the file name {Path(unnamed[0]).name!r} does not say the interval "
                         "(name it SYMBOL-INTERVAL-....csv, e.g. BTCUSDT-1h-2024.csv)")
    found = sorted({tf for tf in said.values() if tf is not None}, key=timeframes.sort_key)
    if len(found) != 1:
        raise InputError(f"the files have different intervals ({', '.join(found)}): pass {option}")
    return found[0]


def stream_specs(args: argparse.Namespace) -> list[StreamSpec]:
    """Validate the input options; CSV files are checked for existence and interval, not read yet. An omitted
    ``--timeframe`` is taken from the file names (``args.timeframe`` is then set to it)."""
    if args.timeframe is None:
        if args.source == "db":
            raise InputError("--source db needs --timeframe")
        missing = [raw for raw in args.data if not Path(raw).is_file()]
        if missing:
            raise InputError(f"--data {missing[0]}: no such file")
        if not args.data:
            raise InputError("give at least one --data FILE.csv (or --source db)")
        args.timeframe = timeframe_from_names(list(args.data))
    tf: str = args.timeframe
    if not timeframes.is_interval(tf):
        raise InputError(f"--timeframe: unknown interval {tf!r}; valid: {', '.join(timeframes.INTERVALS)}")
    from_ms = parse_date(args.date_from, "--from")
    to_ms = parse_date(args.date_to, "--to")
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise InputError("--to must be after --from")
    if args.source == "db":
        if args.data:
            raise InputError("--data and --source db exclude each other")
        if not args.symbol:
            raise InputError("--source db needs --symbol (comma-separated for several)")
        return [
            StreamSpec(s.strip().upper(), tf, from_ms=from_ms, to_ms=to_ms) for s in args.symbol.split(",") if s.strip()
        ]
    if not args.data:
        raise InputError("give at least one --data FILE.csv (or --source db)")
    specs: list[StreamSpec] = []
    for raw in args.data:
        path = Path(raw)
        if not path.is_file():
            raise InputError(f"--data {raw}: no such file")
        name_symbol, name_tf = infer_symbol_interval(path)
        symbol = (args.symbol or name_symbol or "").upper()
        if not symbol:
            raise InputError(f"--data {raw}: symbol unknown: pass --symbol or name the file SYMBOL-INTERVAL-....csv")
        file_tf = name_tf or tf
        if file_tf != tf and not can_build(file_tf, tf):
            raise InputError(f"--data {raw}: {file_tf} candles cannot be aggregated to {tf}")
        specs.append(StreamSpec(symbol, tf, path=str(path), from_ms=from_ms, to_ms=to_ms))
    keys = [(s.symbol, s.timeframe) for s in specs]
    if len(set(keys)) != len(keys):
        raise InputError("two --data files give the same symbol and timeframe; merge them into one file")
    return specs


def _window(candles: list[Candle], from_ms: int | None, to_ms: int | None) -> list[Candle]:
    return [
        c for c in candles if (from_ms is None or c.open_time_ms >= from_ms) and (to_ms is None or c.open_time_ms < to_ms)
    ]


def load_csv(spec: StreamSpec) -> list[Candle]:
    """Read, aggregate to the spec's timeframe if needed, and window one CSV stream."""
    assert spec.path is not None
    path = Path(spec.path)
    _, name_tf = infer_symbol_interval(path)
    file_tf = name_tf or spec.timeframe
    try:
        kf = read_klines_csv(path, spec.symbol, file_tf)
    except KlineFileError as exc:
        raise InputError(str(exc)) from None
    candles = kf.candles
    if file_tf != spec.timeframe:
        builder = TimeframeBuilder(file_tf, spec.timeframe)
        built: list[Candle] = []
        for c in candles:
            built.extend(builder.add(c))
        candles = built  # a trailing partial bucket is not emitted: only complete (closed) candles count
    candles = _window(candles, spec.from_ms, spec.to_ms)
    if not candles:
        raise InputError(f"--data {spec.path}: no candles in the chosen period")
    return candles


def load_spec(spec: StreamSpec) -> list[Candle]:
    if spec.candles is not None:
        return list(spec.candles)
    return load_csv(spec)


async def load_from_store(specs: list[StreamSpec]) -> list[StreamSpec]:
    """Fill ``candles`` of db specs from the configured store."""
    from src.config import Config
    from src.storage.base import StoreError
    from src.storage.factory import build_store
    from src.storage.spool import SpoolStore

    cfg = Config.from_env()
    if cfg.problems:
        raise InputError("configuration problems: " + "; ".join(cfg.problems))
    try:
        store = build_store(cfg)
        # read the database itself: a bot running on this host owns the outage spool (SPOOL_PATH), and
        # opening it here would replay and delete the bot's pending writes behind its back
        store = store.primary if isinstance(store, SpoolStore) else store
        await store.open()
    except StoreError as exc:
        raise InputError(f"store: {exc}") from None
    try:
        out = []
        for s in specs:
            end = None if s.to_ms is None else s.to_ms - 1
            candles = await store.load_candles(s.symbol, s.timeframe, start_ms=s.from_ms, end_ms=end)
            candles = [c.validate() for c in _window(candles, s.from_ms, s.to_ms)]
            if not candles:
                raise InputError(f"store {store.name}: no {s.symbol} {s.timeframe} candles in the chosen period")
            out.append(StreamSpec(s.symbol, s.timeframe, candles=tuple(candles), from_ms=s.from_ms, to_ms=s.to_ms))
        return out
    except StoreError as exc:
        raise InputError(f"store {store.name}: {exc}") from None
    finally:
        await store.close()
