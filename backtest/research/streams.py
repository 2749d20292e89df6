"""Which (symbol, timeframe) streams a study analyses, and loading them from kline files.

Every ``--data`` file is analysed at every requested timeframe it can supply: its own interval, or a
larger one built from it with Binance's kline construction (``TimeframeBuilder``), e.g. a 1m file gives
15m and 1h streams. Files of one symbol that supply the same timeframe are MERGED into one stream by
candle open time, so overlapping files never count an event twice: where several files have the
same candle, the one closest to the timeframe wins (a native file over one aggregated from 15m, that
over one aggregated from 1m). A file that supplies no requested timeframe is an error.

Symbol and interval come from the file name (``SYMBOL-INTERVAL-....csv``); ``--symbol`` names the
symbol of a single file, and a file whose name gives no interval is taken to be the only requested
timeframe. ``--from`` / ``--to`` keep candles with from <= open time < to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backtest.inputs import InputError, StreamSpec, load_csv
from src.analysis import timeframes
from src.analysis.types import Candle
from src.market.aggregator import can_build
from src.market.klines_csv import infer_symbol_interval


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One kline file and its own interval."""

    path: str
    interval: str


@dataclass(frozen=True, slots=True)
class ResearchStream:
    """One (symbol, timeframe) of the study and the files that supply it (in merge priority order:
    later files win where candles overlap)."""

    symbol: str
    timeframe: str
    sources: tuple[SourceFile, ...]
    from_ms: int | None = None
    to_ms: int | None = None

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.timeframe}"


def plan_streams(
    files: Sequence[str],
    tfs: Sequence[str],
    *,
    symbol: str | None = None,
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> list[ResearchStream]:
    """Validate files and timeframes and group them into streams (files are checked, not read)."""
    if not files:
        raise InputError("give at least one --data FILE.csv")
    if not tfs:
        raise InputError("give at least one --timeframe")
    for tf in tfs:
        if not timeframes.is_interval(tf):
            raise InputError(f"--timeframe: unknown interval {tf!r}; valid: {', '.join(timeframes.INTERVALS)}")
    if symbol is not None and len(files) > 1:
        raise InputError("--symbol names the symbol of a single --data file; name several files SYMBOL-INTERVAL-....csv")
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise InputError("--to must be after --from")
    wanted = sorted(set(tfs), key=timeframes.sort_key)
    groups: dict[tuple[str, str], list[SourceFile]] = defaultdict(list)
    seen: set[str] = set()
    for raw in files:
        path = Path(raw)
        if not path.is_file():
            raise InputError(f"--data {raw}: no such file")
        key = str(path.resolve())
        if key in seen:
            raise InputError(f"--data {raw}: given twice")
        seen.add(key)
        name_symbol, name_tf = infer_symbol_interval(path)
        sym = (symbol or name_symbol or "").upper()
        if not sym:
            raise InputError(f"--data {raw}: symbol unknown: name the file SYMBOL-INTERVAL-....csv (or pass --symbol)")
        if name_tf is None:
            if len(wanted) != 1:
                raise InputError(f"--data {raw}: interval unknown: name the file SYMBOL-INTERVAL-....csv "
                                 "or request a single --timeframe")
            name_tf = wanted[0]
        supplied = [tf for tf in wanted if tf == name_tf or can_build(name_tf, tf)]
        if not supplied:
            raise InputError(f"--data {raw}: {name_tf} candles cannot give any of {', '.join(wanted)}")
        for tf in supplied:
            groups[(sym, tf)].append(SourceFile(str(path), name_tf))
    out = []
    for (sym, tf), sources in sorted(groups.items(), key=lambda kv: (kv[0][0], timeframes.sort_key(kv[0][1]))):
        # merge priority: the finest (most aggregated) source first, the native file last
        ordered = sorted(sources, key=lambda s: (timeframes.sort_key(s.interval), s.path))
        out.append(ResearchStream(sym, tf, tuple(ordered), from_ms, to_ms))
    return out


def load_stream(stream: ResearchStream) -> list[Candle]:
    """The stream's closed candles, ascending, merged from its sources (see the module docstring)."""
    by_time: dict[int, Candle] = {}
    for src in stream.sources:
        for c in load_csv(StreamSpec(stream.symbol, stream.timeframe, path=src.path)):
            if (stream.from_ms is None or c.open_time_ms >= stream.from_ms) and (
                stream.to_ms is None or c.open_time_ms < stream.to_ms
            ):
                by_time[c.open_time_ms] = c
    if not by_time:
        files = ", ".join(Path(s.path).name for s in stream.sources)
        raise InputError(f"{stream.label}: no candles in the chosen period ({files})")
    return [by_time[t] for t in sorted(by_time)]
