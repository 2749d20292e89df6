"""``signals`` and ``events``: replay one kline file through the live analysis path and write JSONL.

    python -m backtest signals --data FILE.csv --symbol BTCUSDT --timeframe 1h --out signals.jsonl [--min-confidence X]
    python -m backtest events  --data FILE.csv --symbol BTCUSDT --timeframe 1h --out events.jsonl
    python -m backtest signals --data BTCUSDT-1h-2024.csv --out signals.jsonl   # symbol and interval from the name

Both build the engine with ``src.analysis.registry.build_engine`` and feed every closed candle
through ``src.analysis.engine.step`` - the same per-candle step the bot runs live. ``signals``
applies the same :class:`SignalGate` (MIN_CONFIDENCE and SIGNAL_COOLDOWN_SECONDS from the
environment unless overridden) and writes one ``Signal.to_dict()`` per line; with
``--min-confidence 0`` it writes EVERY candidate (no threshold, no cooldown) with its raw score,
which is what calibration and threshold studies need. ``events`` writes every
``AnalysisEvent.to_dict()`` (Wyckoff events, confirmed pivots, Elliott count changes).

The CSV is Binance's layout (header optional, first seven columns required). When the file name
says its interval (``BTCUSDT-1m-...``) and it is smaller than ``--timeframe``, candles are
aggregated with Binance's own kline construction; otherwise the file is taken to be
``--timeframe``. Bad files, flags or values exit with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from backtest.inputs import InputError, StreamSpec, load_csv, timeframe_from_names
from src.analysis import timeframes
from src.analysis.engine import AnalysisSettings, SignalGate, step
from src.analysis.registry import build_engine
from src.analysis.types import Candle
from src.market.aggregator import can_build
from src.market.klines_csv import infer_symbol_interval

YEAR_MS = 365.25 * 86_400_000


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="FILE.csv", help="Binance-layout kline CSV")
    p.add_argument("--symbol", help="symbol (default: from the file name, e.g. BTCUSDT-1h-....csv)")
    p.add_argument("--timeframe", help="analysis timeframe, e.g. 15m, 1h, 4h (default: the interval in the file name, "
                                       "SYMBOL-INTERVAL-....csv)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.jsonl", help="output JSON lines")


def add_signals_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--min-confidence", type=float, metavar="X",
                   help="gate threshold in [0, 1] (default MIN_CONFIDENCE, 0.65); 0 = every candidate, no gate")
    p.add_argument("--cooldown-seconds", type=int, metavar="S", help="gate cooldown (default SIGNAL_COOLDOWN_SECONDS, 300)")


def add_events_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)


def _settings(min_confidence: float | None = None, cooldown: int | None = None) -> AnalysisSettings:
    from src.config import Config  # the environment's analysis switches, as the bot reads them

    base = Config.from_env().analysis_settings()
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise InputError(f"--min-confidence must be in [0, 1], got {min_confidence}")
    if cooldown is not None and cooldown < 0:
        raise InputError(f"--cooldown-seconds must be >= 0, got {cooldown}")
    return AnalysisSettings(
        min_confidence=base.min_confidence if min_confidence is None else min_confidence,
        enable_wyckoff=base.enable_wyckoff,
        enable_elliott=base.enable_elliott,
        cooldown_seconds=base.cooldown_seconds if cooldown is None else cooldown,
    )


def load(args: argparse.Namespace) -> tuple[str, str, list[Candle]]:
    """Validate --data/--symbol/--timeframe (omitted: from the file name) and return (symbol, timeframe, closed
    candles)."""
    if args.timeframe is None:
        if not Path(args.data).is_file():
            raise InputError(f"--data {args.data}: no such file")
        args.timeframe = timeframe_from_names([args.data])
    tf: str = args.timeframe
    if not timeframes.is_interval(tf):
        raise InputError(f"--timeframe: unknown interval {tf!r}; valid: {', '.join(timeframes.INTERVALS)}")
    path = Path(args.data)
    if not path.is_file():
        raise InputError(f"--data {args.data}: no such file")
    name_symbol, name_tf = infer_symbol_interval(path)
    symbol = (args.symbol or name_symbol or "").upper()
    if not symbol:
        raise InputError(f"--data {args.data}: symbol unknown: pass --symbol or name the file SYMBOL-INTERVAL-....csv")
    if name_tf and name_tf != tf and timeframes.interval_ms(name_tf) > timeframes.interval_ms(tf):
        raise InputError(f"--data {args.data}: {name_tf} candles cannot be split into {tf}")
    if name_tf and name_tf != tf and not can_build(name_tf, tf):
        raise InputError(f"--data {args.data}: {name_tf} candles cannot be aggregated to {tf}")
    candles = load_csv(StreamSpec(symbol, tf, path=str(path)))
    return symbol, tf, candles


def _check_out(path: Path) -> None:
    if path.exists() and path.is_dir():
        raise InputError(f"--out {path}: is a directory")
    if not path.parent.exists():
        raise InputError(f"--out {path}: directory {path.parent} does not exist")


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")
            n += 1
    return n


def _span_years(candles: list[Candle]) -> float:
    return max(1e-9, (candles[-1].open_time_ms - candles[0].open_time_ms) / YEAR_MS)


def run_signals(args: argparse.Namespace) -> int:
    try:
        _check_out(args.out)
        settings = _settings(args.min_confidence, args.cooldown_seconds)
        symbol, tf, candles = load(args)
    except InputError as exc:
        print(f"backtest signals: {exc}", file=sys.stderr)
        return 2
    engine = build_engine(symbol, tf, settings)
    gate = SignalGate(settings.min_confidence, settings.cooldown_seconds)
    every = settings.min_confidence <= 0.0
    out = []
    for candle in candles:
        r = step(engine, gate, candle)
        out.extend(r.candidates if every else r.emitted)
    try:
        n = _write_jsonl(args.out, (s.to_dict() for s in out))
    except OSError as exc:
        print(f"backtest signals: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    years = _span_years(candles)
    per = Counter(s.pattern for s in out)
    gate_text = f"confidence >= {settings.min_confidence}, cooldown {settings.cooldown_seconds}s"
    what = "candidates (no gate)" if every else f"signals ({gate_text})"
    print(f"{symbol} {tf}: {len(candles)} candles over {years:.2f} years -> {n} {what} in {args.out}")
    for pattern, k in sorted(per.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {pattern:24s} {k:6d}  ({k / years:.1f}/year)")
    return 0


def run_events(args: argparse.Namespace) -> int:
    try:
        _check_out(args.out)
        settings = _settings()
        symbol, tf, candles = load(args)
    except InputError as exc:
        print(f"backtest events: {exc}", file=sys.stderr)
        return 2
    engine = build_engine(symbol, tf, settings)
    gate = SignalGate(1.1, settings.cooldown_seconds)  # events only: the gate's decisions are not needed
    events = []
    for candle in candles:
        events.extend(step(engine, gate, candle).events)
    try:
        n = _write_jsonl(args.out, (e.to_dict() for e in events))
    except OSError as exc:
        print(f"backtest events: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    per = Counter(f"{e.kind}:{e.type}" for e in events)
    print(f"{symbol} {tf}: {len(candles)} candles -> {n} events in {args.out}")
    for key, k in sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))[:30]:
        print(f"  {key:32s} {k:7d}")
    return 0
