"""``signals`` and ``events``: replay one kline file through the live analysis path and write JSONL.

    python -m backtest signals --data FILE.csv --symbol BTCUSDT --timeframe 1h --out signals.jsonl \
        [--min-confidence X] [--all] [--evidence-model PATH]
    python -m backtest events  --data FILE.csv --symbol BTCUSDT --timeframe 1h --out events.jsonl
    python -m backtest signals --data BTCUSDT-1h-2024.csv --out signals.jsonl   # symbol and interval from the name

Both build the engine with ``src.analysis.registry.build_engine`` and feed every closed candle
through ``src.analysis.engine.step`` - the same per-candle step the bot runs live. ``signals``
applies the same :class:`SignalGate` (MIN_CONFIDENCE, TRADE_MIN_RR, WATCH_MIN_RR, WATCH_MIN_SCORE and
the cooldown from the environment unless overridden) and writes one ``Signal.to_dict()`` per line: the
trade calls and watch notes, each with ``kind``, ``gate_reason``, ``structure_id``, ``p_win``,
``expected_r``, ``expected_r_lo``, ``expected_r_hi`` and the whole ``evidence``. ``--all`` (or
``--min-confidence 0``, as before) writes EVERY candidate, the gated ones too, with the reason each was
gated. ``events`` writes every ``AnalysisEvent.to_dict()`` (Wyckoff events, confirmed pivots, Elliott
count changes).

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
from dataclasses import replace
from pathlib import Path
from typing import Any

from backtest.inputs import InputError, StreamSpec, load_csv, timeframe_from_names
from backtest.run_cmd import read_evidence_model
from src.analysis import timeframes
from src.analysis.engine import AnalysisSettings, SignalGate, step
from src.analysis.evidence import EvidenceModel
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
                   help="P(E[net R] > 0) a trade call needs, in [0, 1] (default MIN_CONFIDENCE, 0.9); 0 also writes "
                        "every candidate")
    p.add_argument("--all", action="store_true", help="write every candidate (gated ones too, with their reason)")
    p.add_argument("--cooldown-seconds", type=int, metavar="S", help="gate cooldown (default SIGNAL_COOLDOWN_SECONDS)")
    p.add_argument("--evidence-model", type=Path, metavar="PATH",
                   help="evidence model JSON from `backtest evidence fit` (default: the shipped model)")


def add_events_arguments(p: argparse.ArgumentParser) -> None:
    _common(p)


def _settings(min_confidence: float | None = None, cooldown: int | None = None) -> AnalysisSettings:
    from src.config import Config  # the environment's analysis switches, as the bot reads them

    base = Config.from_env().analysis_settings()
    if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
        raise InputError(f"--min-confidence must be in [0, 1], got {min_confidence}")
    if cooldown is not None and cooldown < 0:
        raise InputError(f"--cooldown-seconds must be >= 0, got {cooldown}")
    return replace(
        base,
        min_confidence=base.min_confidence if min_confidence is None else min_confidence,
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
    try:
        evidence_json = read_evidence_model(args.evidence_model)
    except InputError as exc:
        print(f"backtest signals: {exc}", file=sys.stderr)
        return 2
    evidence = EvidenceModel.from_json(evidence_json) if evidence_json else None
    engine = build_engine(symbol, tf, settings, evidence)
    gate = SignalGate(settings)
    every = args.all or settings.min_confidence <= 0.0
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
    weeks = years * 52.18
    kinds = Counter(s.kind for s in out)
    gate_text = (f"P(avg net R of {engine.evidence.reference_n} such signals > 0) >= {settings.min_confidence} and "
                 f"R:R >= {settings.trade_min_rr} for a trade call; "
                 f"cooldown {gate.cooldown_ms(tf) // 60_000} min per direction; model {engine.evidence.version}")
    what = "candidates (every one, with its gate verdict)" if every else "trade calls and watch notes"
    print(f"{symbol} {tf}: {len(candles)} candles over {years:.2f} years -> {n} {what} in {args.out}")
    print(f"  gate: {gate_text}")
    print("  " + ", ".join(f"{k} {kinds.get(k, 0)} ({kinds.get(k, 0) / weeks:.2f}/week)" for k in ("trade", "watch", "gated")))
    per = Counter((s.pattern, s.kind) for s in out)
    for (pattern, kind), k in sorted(per.items(), key=lambda kv: (kv[0][1], -kv[1], kv[0][0])):
        print(f"  {kind:6s} {pattern:24s} {k:6d}  ({k / years:.1f}/year)")
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
    gate = SignalGate(settings)  # events only: the gate's decisions are not written
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
