"""Out-of-sample checks of the evidence fit: purged, embargoed walk-forward over time, and across symbols.

Walk-forward: for every half-year cut after the first ``min_train_blocks`` half-years of data, a model is
fitted on the candidates confirmed before the cut whose trades RESOLVED before it (purge: no training
outcome overlaps the test period) and that were confirmed at least ``embargo`` before it (embargo: the
last horizon of candles before the cut is left out, so serially correlated trades at the seam do not leak),
with twins purged the same way; it is judged on the next half-year (src/analysis/evidence_eval.evaluate).
Across symbols: at one cut, a model fitted on the OTHER symbols only is judged on each symbol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from backtest.evidence_data import StreamData, fit_sets
from src.analysis import timeframes
from src.analysis.evidence_eval import Evaluation, evaluate
from src.analysis.evidence_fit import FitOptions, fit_model


@dataclass(frozen=True, slots=True)
class Fold:
    cut_ms: int
    end_ms: int
    train_n: int
    evaluation: Evaluation

    def to_dict(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "test_from": _iso(self.cut_ms), "test_to": _iso(self.end_ms), "train_n": self.train_n, "test_n": ev.n,
            "ece": round(ev.ece, 4), "cells": len(ev.cells), "coverage": _r(ev.coverage),
            "coverage_of_mean": _r(ev.coverage_of_mean), "spearman": _r(ev.spearman),
            "trade_calls": ev.trade_calls, "trade_mean_r": None if ev.trade_mean_r is None else round(ev.trade_mean_r, 4),
        }


def _r(x: float) -> float | None:
    return None if x != x else round(x, 4)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def half_year_cuts(start_ms: int, end_ms: int) -> list[int]:
    """UTC Jan 1 and Jul 1 instants strictly inside (start_ms, end_ms]."""
    first = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    out: list[int] = []
    y, m = first.year, (7 if first.month < 7 else 13)
    while True:
        if m == 13:
            y, m = y + 1, 1
        t = int(datetime(y, m, 1, tzinfo=UTC).timestamp() * 1000)
        if t > end_ms:
            return out
        if t > start_ms:
            out.append(t)
        m += 6


def embargo_ms(streams: Sequence[StreamData]) -> int:
    """The longest outcome horizon among the streams, in ms."""
    return max((d.horizon_candles * timeframes.interval_ms(d.timeframe) for d in streams), default=0)


def train_set(streams: Sequence[StreamData], cut_ms: int, embargo: int) -> Any:
    """Training arrays for a cut: purged (resolved before the cut) and embargoed (confirmed before cut - embargo)."""
    return fit_sets(streams, to_ms=cut_ms - embargo)


def walk_forward(streams: Sequence[StreamData], opts: FitOptions, *, min_train_blocks: int = 2,
                 min_n: int = 20, min_confidence: float = 0.9, trade_min_rr: float = 1.0) -> list[Fold]:
    """See the module docstring; folds whose training or test set is empty are skipped."""
    if not streams:
        return []
    start = min(d.first_open_ms for d in streams)
    end = max(d.last_open_ms for d in streams)
    cuts = half_year_cuts(start, end)
    emb = embargo_ms(streams)
    folds = []
    for i, cut in enumerate(cuts):
        if i + 1 < min_train_blocks:
            continue
        stop = cuts[i + 1] if i + 1 < len(cuts) else end + 1
        tr_s, tr_t = train_set(streams, cut, emb)
        te_s, _ = fit_sets(streams, from_ms=cut, to_ms=stop)
        if len(tr_s) < 50 or len(tr_t) < 50 or len(te_s) == 0:
            continue
        model, _ = fit_model(tr_s, tr_t, opts)
        folds.append(Fold(cut, stop, len(tr_s), evaluate(model, te_s, min_n=min_n, min_confidence=min_confidence,
                                                         trade_min_rr=trade_min_rr)))
    return folds


def cross_symbol(streams: Sequence[StreamData], opts: FitOptions, cut_ms: int, end_ms: int | None = None,
                 min_n: int = 20) -> dict[str, Evaluation]:
    """Per symbol with data after ``cut_ms``: a model fitted before the cut on the OTHER symbols, judged on
    this symbol's candidates from the cut on (to ``end_ms``)."""
    emb = embargo_ms(streams)
    out: dict[str, Evaluation] = {}
    for symbol in sorted({d.symbol for d in streams}):
        others = [d for d in streams if d.symbol != symbol]
        mine = [d for d in streams if d.symbol == symbol]
        te_s, _ = fit_sets(mine, from_ms=cut_ms, to_ms=end_ms)
        if not others or len(te_s) == 0:
            continue
        tr_s, tr_t = train_set(others, cut_ms, emb)
        if len(tr_s) < 50 or len(tr_t) < 50:
            continue
        model, _ = fit_model(tr_s, tr_t, opts)
        out[symbol] = evaluate(model, te_s, min_n=min_n)
    return out


def pooled(folds: Sequence[Fold]) -> dict[str, Any]:
    """Summary over folds: candidates, count-weighted ECE, pooled cell coverage (both readings)."""
    cells = [c for f in folds for c in f.evaluation.cells]
    n = sum(f.evaluation.n for f in folds)
    return {
        "folds": len(folds),
        "test_n": n,
        "ece_weighted": round(sum(f.evaluation.ece * f.evaluation.n for f in folds) / n, 4) if n else None,
        "cells": len(cells),
        "coverage": round(float(np.mean([c.covered for c in cells])), 4) if cells else None,
        "trade_calls": sum(f.evaluation.trade_calls for f in folds),
    }
