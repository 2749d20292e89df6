"""The study's conclusions in plain words, derived only from its numbers (never written by hand)."""

from __future__ import annotations

import math

from backtest.research.study import ALL, MIN_TEST_EVENTS, MIN_TEST_WEEKS, SIGNIFICANCE, Cell, Study
from src.analysis.types import ms_to_iso

DSR_BAR = 0.95


def cell_name(c: Cell, thresholds: int = 1) -> str:
    if c.pattern == ALL and c.timeframe == ALL:
        name = "all patterns, all timeframes"
    elif c.pattern == ALL:
        name = f"all patterns {c.timeframe}"
    elif c.timeframe == ALL:
        name = f"{c.pattern} (all timeframes)"
    else:
        name = f"{c.pattern} {c.timeframe}"
    return name + (f" (raw score >= {c.min_score:g})" if thresholds > 1 else "")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _names(cells: list[Cell], k: int) -> str:
    return ", ".join(cell_name(c, k) for c in cells)


def findings(study: Study, thresholds: int = 1) -> list[str]:
    """Bullet sentences: the data used, whether anything beats random after correction, whether anything
    is worse, whether anything is profitable after deflation, and what the pooled rows say."""
    k = thresholds
    out: list[str] = []
    streams = study.streams
    n_events = sum(s.n for s in streams)
    starts = [s.first_open_ms for s in streams if s.first_open_ms is not None]
    ends = [s.last_close_ms for s in streams if s.last_close_ms is not None]
    symbols = sorted({s.symbol for s in streams})
    span = f"{ms_to_iso(min(starts))[:10]} .. {ms_to_iso(max(ends))[:10]}" if starts else "no data"
    out.append(
        f"Data: {n_events} events from {_count(len(streams), 'stream')} ({_count(len(symbols), 'symbol')}: "
        f"{', '.join(symbols)}), "
        f"{span}, {study.weeks} weeks."
    )
    tested = [c for c in study.cells if c.tested]
    if not tested:
        out.append(f"No cell has the {MIN_TEST_EVENTS} events over {MIN_TEST_WEEKS} weeks a test needs: nothing can be "
                   "concluded from this data.")
        return out
    beats = [c for c in tested if c.holm_p < SIGNIFICANCE]
    if beats:
        out.append(
            f"Beats matched random entries after fees and Holm correction (family of {study.family} tests, 5 %): "
            f"{_names(beats, k)}. Check that it holds on data the study did not see before trusting it."
        )
    else:
        best = min(tested, key=lambda c: (c.holm_p, c.p_beats))
        out.append(
            f"No pattern beats matched random entries after fees and multiple-testing correction: the smallest "
            f"Holm-adjusted p is {best.holm_p:.2f} ({cell_name(best, k)}, raw p {best.p_beats:.3f}) over a family "
            f"of {study.family} tests."
        )
    bh_only = [c for c in tested if c.bh_q < SIGNIFICANCE and not c.holm_p < SIGNIFICANCE]
    if bh_only:
        out.append(
            f"Benjamini-Hochberg at 5 % (which tolerates 5 % false discoveries among its picks) also flags: "
            f"{_names(bh_only, k)}."
        )
    worse = [c for c in tested if c.holm_p_worse < SIGNIFICANCE]
    if worse:
        out.append(f"Significantly WORSE than matched random entries after Holm correction: {_names(worse, k)}.")
    above = [c for c in tested if c.diff_r.lo > 0]
    below = [c for c in tested if c.diff_r.hi < 0]
    if above or below:
        parts = ([f"above 0 for {_names(above, k)}"] if above else []) + ([f"below 0 for {_names(below, k)}"] if below else [])
        out.append(
            f"Without correction, the 95 % CI of the difference from random lies {' and '.join(parts)}; by chance alone "
            f"about {0.05 * len(tested):.1f} of the {len(tested)} tested cells would (5 %), which is why the corrected "
            "p-values decide."
        )
    profit = [c for c in tested if c.net_r.lo > 0]
    deflated = [c for c in tested if c.dsr >= DSR_BAR]
    if deflated:
        out.append(
            f"Mean net R after fees above 0 with a deflated Sharpe ratio >= {DSR_BAR} ({study.trials} trials): "
            f"{_names(deflated, k)}."
        )
    else:
        top = max(tested, key=lambda c: c.dsr if math.isfinite(c.dsr) else -1.0)
        extra = f"; the 95 % CI of mean net R lies above 0 only for {_names(profit, k)}" if profit else ""
        out.append(
            f"No pattern is reliably profitable after fees: no deflated Sharpe ratio reaches {DSR_BAR} "
            f"({study.trials} trials counted; the best is {top.dsr:.2f}, {cell_name(top, k)}){extra}."
        )
    if study.split_ms is not None:
        both = [(a, b) for a, b in study.stability if a.tested and b.tested and ALL not in (a.pattern, a.timeframe)]
        agree = sum((a.diff_r.mean > 0) == (b.diff_r.mean > 0) for a, b in both)
        rho = "-" if not math.isfinite(study.stability_rho) else f"{study.stability_rho:+.2f}"
        out.append(
            f"Stability (split at {ms_to_iso(study.split_ms)[:10]}): over the {len(both)} pattern x timeframe cells with "
            f"{MIN_TEST_EVENTS}+ events in both periods, the Spearman correlation between the older and the newer "
            f"difference from random is {rho}, and their signs agree in {agree} of {len(both)} (a real, stable edge "
            "would show up as a clearly positive correlation)."
        )
    for c in study.cells:
        if c.pattern == ALL and c.tested:
            out.append(
                f"{cell_name(c, k).capitalize()}: mean net R {c.net_r.mean:+.3f} [{c.net_r.lo:+.3f}, {c.net_r.hi:+.3f}] "
                f"against {c.random_r.mean:+.3f} for matched random entries (n {c.n}); fees cost a median "
                f"{c.cost_atr:.3f} ATR per round trip."
            )
    return out
