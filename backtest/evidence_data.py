"""What the evidence fit learns from: every graded candidate and its matched random twins, per stream.

Streams: per (symbol, timeframe), the candles of every given kline file whose interval equals the timeframe
or builds it (1m -> 15m, 1h -> 4h, ... with Binance's own kline construction), merged by open time; where
files overlap, the file with the larger native interval wins (native 4h over 4h built from 1h, 1h over 1h
built from 1m), so no candle counts twice.

Candidates: the live code path (``registry.build_engine`` + ``SignalGate`` at default settings, through
``engine.step``) with the uninformed evidence model (the fit must not depend on an earlier fit). The
population is what the gate tracks (``counts_in_track_record``: every candidate except the same-candle
duplicates of a structure). Each is graded on its own (no position overlap) by the SPEC 7 rules
(``TradeFollower``); candidates still open at the end of the data, or without ATR, are left out.

Matched random twins (ANALYSIS-NOTES 4.4): for every candidate, ``twins`` random confirming candles of the
SAME stream, the SAME calendar half-year and the SAME decile of ATR(14)/close (deciles computed per stream
and half-year); half the twins LONG and half SHORT (the baseline is direction-neutral: it assumes no drift),
each with the candidate's stop and first-target distances in ATR, graded by the same rules (vectorised,
backtest/baseline.grade_many). Seeds derive from (seed, symbol, timeframe).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backtest import baseline as bl
from backtest.inputs import InputError
from backtest.simulate import atr_series, grade
from src.analysis import timeframes
from src.analysis.engine import AnalysisSettings, SignalGate, analyzers_fingerprint, step
from src.analysis.evidence import CTX_ATR, EvidenceModel, counts_in_track_record
from src.analysis.evidence_fit import Samples, Twins, half_year
from src.analysis.outcomes import InvalidSignalGeometry, OutcomeParams
from src.analysis.registry import build_analyzers, build_engine
from src.analysis.types import Candle
from src.market.aggregator import TimeframeBuilder, can_build
from src.market.klines_csv import KlineFileError, infer_symbol_interval, read_klines_csv

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
DEFAULT_TWINS = 16
VOL_DECILES = 10
TREND_EMA = 100


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One input file as recorded in the model: name, sha256, symbol, native interval, span (ms)."""

    path: str
    sha256: str
    symbol: str
    interval: str
    rows: int
    first_open_ms: int
    last_open_ms: int


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """One (symbol, timeframe) stream and the files it is built from (native interval first)."""

    symbol: str
    timeframe: str
    files: tuple[tuple[str, str], ...]  # (path, native interval), larger interval first


@dataclass(slots=True)
class StreamData:
    """Every population candidate of one stream with its outcome, and its twins. Plain arrays (pickles fast).

    Candidates (length n): ``time_ms`` (confirming candle open), ``resolved_ms``, ``pattern``, ``direction``
    (+1/-1), ``raw``, ``rr``, ``stop_atr``, ``cost_r``, ``r`` (net R), ``structure``, ``vol_decile``, ``trend``
    (features kept for the refinement checks); twins (length m):
    ``twin_of`` (candidate index), ``twin_time_ms``, ``twin_sign`` (+1 LONG / -1 SHORT), ``twin_cost_r``,
    ``twin_r``."""

    symbol: str
    timeframe: str
    candles: int
    first_open_ms: int
    last_open_ms: int
    analyzers: str
    time_ms: IntArray
    resolved_ms: IntArray
    pattern: list[str]
    direction: IntArray
    raw: FloatArray
    rr: FloatArray
    stop_atr: FloatArray
    cost_r: FloatArray
    r: FloatArray
    structure: list[str]
    vol_decile: IntArray  # decile of ATR(14) / close within the stream's half-year (-1: unknown)
    trend: FloatArray  # direction x (close - EMA(100) of closes) / ATR(14) at the confirming candle
    twin_of: IntArray
    twin_time_ms: IntArray
    twin_sign: IntArray
    twin_cost_r: FloatArray
    twin_r: FloatArray
    horizon_candles: int = 48
    unresolved: int = 0
    invalid_geometry: int = 0
    no_atr: int = 0
    duplicates: int = 0


def file_info(path: str) -> FileInfo:
    p = Path(path)
    symbol, interval = infer_symbol_interval(p)
    if symbol is None or interval is None:
        raise InputError(f"--data {path}: name it SYMBOL-INTERVAL-....csv (e.g. BTCUSDT-1h-2019-2025H1.csv)")
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    try:
        kf = read_klines_csv(p, symbol, interval)
    except KlineFileError as exc:
        raise InputError(str(exc)) from None
    if not kf.candles:
        raise InputError(f"--data {path}: no candles")
    return FileInfo(p.name, h.hexdigest(), symbol, interval, len(kf.candles), kf.candles[0].open_time_ms,
                    kf.candles[-1].open_time_ms)


def plan_streams(paths: Sequence[str], tfs: Sequence[str]) -> list[StreamPlan]:
    """One plan per (symbol, timeframe) that at least one file can build; InputError on unusable files."""
    by_symbol: dict[str, list[tuple[str, str]]] = {}
    for raw in paths:
        p = Path(raw)
        if not p.is_file():
            raise InputError(f"--data {raw}: no such file")
        symbol, interval = infer_symbol_interval(p)
        if symbol is None or interval is None:
            raise InputError(f"--data {raw}: name it SYMBOL-INTERVAL-....csv (e.g. BTCUSDT-1h-2019-2025H1.csv)")
        by_symbol.setdefault(symbol, []).append((str(p), interval))
    plans = []
    for symbol, files in sorted(by_symbol.items()):
        for tf in tfs:
            usable = [(path, iv) for path, iv in files if iv == tf or can_build(iv, tf)]
            if usable:
                usable.sort(key=lambda f: (-timeframes.interval_ms(f[1]), f[0]))
                plans.append(StreamPlan(symbol, tf, tuple(usable)))
    return plans


def load_stream(plan: StreamPlan, from_ms: int | None = None, to_ms: int | None = None) -> list[Candle]:
    """The merged candles of a plan (see the module docstring), windowed to [from_ms, to_ms)."""
    merged: dict[int, Candle] = {}
    for path, interval in plan.files:  # larger native interval first: it wins every overlap
        try:
            candles = read_klines_csv(Path(path), plan.symbol, interval).candles
        except KlineFileError as exc:
            raise InputError(str(exc)) from None
        if interval != plan.timeframe:
            builder = TimeframeBuilder(interval, plan.timeframe)
            built: list[Candle] = []
            for c in candles:
                built.extend(builder.add(c))
            candles = built
        for c in candles:
            merged.setdefault(c.open_time_ms, c)
    out = [merged[t] for t in sorted(merged)]
    return [c for c in out if (from_ms is None or c.open_time_ms >= from_ms) and (to_ms is None or c.open_time_ms < to_ms)]


def stream_seed(seed: int, symbol: str, timeframe: str) -> int:
    return int.from_bytes(hashlib.sha256(f"evidence|{seed}|{symbol}|{timeframe}".encode()).digest()[:8], "big")


def collect_stream(
    plan: StreamPlan,
    params: OutcomeParams,
    *,
    twins: int = DEFAULT_TWINS,
    seed: int = 0,
    from_ms: int | None = None,
    to_ms: int | None = None,
    settings: AnalysisSettings | None = None,
) -> StreamData:
    """Replay, grade every population candidate, draw and grade its matched twins (module docstring)."""
    candles = load_stream(plan, from_ms, to_ms)
    if len(candles) < params.horizon_candles + 30:
        raise InputError(f"{plan.symbol} {plan.timeframe}: only {len(candles)} candles: too short to grade anything")
    settings = settings or AnalysisSettings()
    engine = build_engine(plan.symbol, plan.timeframe, settings, EvidenceModel.uninformed(params.commission,
                                                                                          params.slippage_bps))
    gate = SignalGate(settings)
    cost_side = params.commission + params.slippage_bps / 10_000.0
    open_times = [c.open_time_ms for c in candles]
    a = bl.arrays(candles, atr_series(candles))
    blocks, decile = _vol_deciles(a, params.horizon_candles)
    ema = _ema(a.close, TREND_EMA)
    rows: list[tuple[int, int, str, int, float, float, float, float, float, str]] = []
    unresolved = invalid = no_atr = dupes = 0
    for c in candles:
        for s in step(engine, gate, c).candidates:
            if not counts_in_track_record(s):
                dupes += 1
                continue
            atr = next((v for k, v in reversed(s.features) if k == CTX_ATR), None)
            if not atr or not s.take_profits:
                no_atr += 1
                continue
            try:
                res = grade(s, candles, open_times, params)
            except InvalidSignalGeometry:
                invalid += 1
                continue
            if res is None:
                unresolved += 1
                continue
            rr = s.risk_reward or 0.0
            rows.append((s.candle_time_ms, res.resolved_at_ms, s.pattern, 1 if s.direction == "LONG" else -1,
                         s.raw_confidence, rr, s.risk / atr, 2.0 * cost_side * s.entry / s.risk, res.r_multiple,
                         s.structure_id))
    n = len(rows)
    cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [() for _ in range(10)]
    pos = np.searchsorted(a.open_time, np.array(cols[0], dtype=np.int64))
    direction = np.array(cols[3], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        trend = direction * (a.close[pos] - ema[pos]) / a.atr[pos]
    data = StreamData(
        symbol=plan.symbol,
        timeframe=plan.timeframe,
        candles=len(candles),
        first_open_ms=candles[0].open_time_ms,
        last_open_ms=candles[-1].open_time_ms,
        analyzers=analyzers_fingerprint(build_analyzers(plan.symbol, plan.timeframe, settings)),
        time_ms=np.array(cols[0], dtype=np.int64),
        resolved_ms=np.array(cols[1], dtype=np.int64),
        pattern=[str(x) for x in cols[2]],
        direction=direction,
        raw=np.array(cols[4], dtype=np.float64),
        rr=np.array(cols[5], dtype=np.float64),
        stop_atr=np.array(cols[6], dtype=np.float64),
        cost_r=np.array(cols[7], dtype=np.float64),
        r=np.array(cols[8], dtype=np.float64),
        structure=[str(x) for x in cols[9]],
        vol_decile=decile[pos],
        trend=np.nan_to_num(trend.astype(np.float64)),
        twin_of=np.zeros(0, dtype=np.int64),
        twin_time_ms=np.zeros(0, dtype=np.int64),
        twin_sign=np.zeros(0, dtype=np.int64),
        twin_cost_r=np.zeros(0, dtype=np.float64),
        twin_r=np.zeros(0, dtype=np.float64),
        horizon_candles=params.horizon_candles,
        unresolved=unresolved,
        invalid_geometry=invalid,
        no_atr=no_atr,
        duplicates=dupes,
    )
    if n and twins > 0:
        _draw_twins(data, a, blocks, decile, params, twins, stream_seed(seed, plan.symbol, plan.timeframe), cost_side)
    return data


def _ema(x: FloatArray, period: int) -> FloatArray:
    out = np.empty_like(x)
    k = 2.0 / (period + 1)
    acc = float(x[0]) if x.size else 0.0
    for i, v in enumerate(x.tolist()):
        acc = acc + k * (v - acc)
        out[i] = acc
    return out


def _vol_deciles(a: bl.Arrays, horizon: int) -> tuple[IntArray, IntArray]:
    """(half-year block, decile of ATR/close within it) per candle; -1 where the ATR is unknown or no
    trade of ``horizon`` candles fits before the end of the data."""
    n_candles = a.open_time.shape[0]
    blocks = np.array([half_year(int(t)) for t in a.open_time], dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        vol = a.atr / a.close
    eligible = np.isfinite(vol) & (vol > 0)
    eligible[max(0, n_candles - horizon):] = False
    decile = np.full(n_candles, -1, dtype=np.int64)
    for b in np.unique(blocks):
        m = eligible & (blocks == b)
        if m.sum() < VOL_DECILES:
            continue
        edges = np.quantile(vol[m], np.linspace(0, 1, VOL_DECILES + 1)[1:-1])
        decile[m] = np.searchsorted(edges, vol[m], side="right")
    return blocks, decile


def _draw_twins(data: StreamData, a: bl.Arrays, blocks: IntArray, decile: IntArray, params: OutcomeParams,
                twins: int, seed: int, cost_side: float) -> None:
    """Fill the twin arrays of ``data`` (module docstring); candidates with no eligible twin get none."""
    pools: dict[tuple[int, int], IntArray] = {}
    for b in np.unique(blocks):
        for d in range(VOL_DECILES):
            idx = np.flatnonzero((blocks == b) & (decile == d))
            if idx.size:
                pools[(int(b), d)] = idx
    rng = np.random.default_rng(seed)
    pos = np.searchsorted(a.open_time, data.time_ms)
    cand_idx: list[int] = []
    twin_idx: list[int] = []
    for j, i in enumerate(pos.tolist()):
        key = (int(blocks[i]), int(decile[i]))
        pool = pools.get(key)
        if pool is None:  # the candidate's own candle has no decile (e.g. the end of the data): same block, any decile
            any_pool = [p for (b, _), p in pools.items() if b == key[0]]
            if not any_pool:
                continue
            pool = np.concatenate(any_pool)
        picks = pool[rng.integers(0, pool.size, size=twins)]
        cand_idx.extend([j] * twins)
        twin_idx.extend(picks.tolist())
    if not twin_idx:
        return
    of = np.array(cand_idx, dtype=np.int64)
    idx = np.array(twin_idx, dtype=np.int64)
    sign = np.where(np.arange(idx.size) % 2 == 0, 1.0, -1.0)  # half LONG, half SHORT
    k_stop = data.stop_atr[of]
    k_tp = data.rr[of] * k_stop
    ref = a.close[idx]
    atr = a.atr[idx]
    risk = k_stop * atr
    graded = bl.grade_many(a, idx, sign, ref - sign * risk, ref + sign * k_tp * atr, risk, params)
    data.twin_of = of
    data.twin_time_ms = a.open_time[idx]
    data.twin_sign = sign.astype(np.int64)
    data.twin_cost_r = 2.0 * cost_side * ref / risk
    data.twin_r = graded.r


def collect(
    plans: Sequence[StreamPlan],
    params: OutcomeParams,
    *,
    twins: int = DEFAULT_TWINS,
    seed: int = 0,
    from_ms: int | None = None,
    to_ms: int | None = None,
    jobs: int = 1,
    progress: Callable[[StreamPlan, StreamData], None] | None = None,
) -> list[StreamData]:
    """:func:`collect_stream` for every plan, in plan order (``jobs`` > 1: in worker processes)."""
    out: list[StreamData] = []
    if jobs <= 1 or len(plans) <= 1:
        for plan in plans:
            out.append(collect_stream(plan, params, twins=twins, seed=seed, from_ms=from_ms, to_ms=to_ms))
            if progress is not None:
                progress(plan, out[-1])
        return out
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(collect_stream, plan, params, twins=twins, seed=seed, from_ms=from_ms, to_ms=to_ms)
                   for plan in plans]
        for plan, f in zip(plans, futures, strict=True):
            out.append(f.result())
            if progress is not None:
                progress(plan, out[-1])
    return out


def fit_sets(streams: Sequence[StreamData], from_ms: int | None = None, to_ms: int | None = None) -> tuple[Samples, Twins]:
    """Concatenate streams into the fit's arrays, keeping candidates confirmed in [from_ms, to_ms) and their
    twins; with ``to_ms``, candidates (and twins) whose trade resolves at or after ``to_ms`` are purged too,
    so nothing in the set depends on a price at or after the cut. Each candidate carries the mean net R and
    the win share of its twins of the SAME direction (NaN without such twins)."""
    parts_s: list[Samples] = []
    parts_t: list[Twins] = []
    for d in streams:
        n_all = d.time_ms.shape[0]
        keep = np.ones(n_all, dtype=bool)
        if from_ms is not None:
            keep &= d.time_ms >= from_ms
        if to_ms is not None:
            keep &= (d.time_ms < to_ms) & (d.resolved_ms < to_ms)
        tk = keep[d.twin_of] if d.twin_of.size else np.zeros(0, dtype=bool)
        if to_ms is not None and d.twin_of.size:
            tk &= d.twin_time_ms < to_ms - d.horizon_candles * timeframes.interval_ms(d.timeframe)
        same = tk & (d.twin_sign == d.direction[d.twin_of]) if d.twin_of.size else tk
        cnt = np.bincount(d.twin_of[same], minlength=n_all).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            twin_mean = np.bincount(d.twin_of[same], weights=d.twin_r[same], minlength=n_all) / cnt
            twin_win = np.bincount(d.twin_of[same], weights=(d.twin_r[same] > 0).astype(np.float64),
                                   minlength=n_all) / cnt
        n = int(keep.sum())
        parts_s.append(Samples(
            np.array([d.symbol] * n, dtype=np.str_), np.array([d.timeframe] * n, dtype=np.str_),
            np.array(d.pattern, dtype=np.str_)[keep] if d.pattern else np.zeros(0, dtype=np.str_),
            d.time_ms[keep], d.resolved_ms[keep], d.direction[keep], d.rr[keep], d.stop_atr[keep], d.cost_r[keep],
            d.r[keep], twin_mean[keep], twin_win[keep], d.raw[keep], d.vol_decile[keep], d.trend[keep],
        ))
        of = d.twin_of[tk]
        parts_t.append(Twins(
            np.array([d.timeframe] * int(tk.sum()), dtype=np.str_), d.twin_time_ms[tk], d.rr[of], d.stop_atr[of],
            d.twin_cost_r[tk], d.twin_r[tk],
        ))
    s = Samples(*(np.concatenate([getattr(p, f.name) for p in parts_s]) for f in fields(Samples)))
    t = Twins(*(np.concatenate([getattr(p, f.name) for p in parts_t]) for f in fields(Twins)))
    return s, t
