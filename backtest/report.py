"""Backtest metrics and output files (report.json, trades.jsonl, signals.jsonl, equity.png, table).

Definitions (R = the signal's planned entry-stop distance; see src/analysis/outcomes.py):

- win_rate = wins / trades; expectancy_r = mean R after fees; total_r = sum of R;
- profit_factor = sum of positive R / |sum of negative R| (None when no losing R);
- total_return = final equity / initial balance - 1 (sized per backtest/simulate.py);
- max_drawdown = largest peak-to-trough fall of realised equity, as a fraction of the peak;
- sharpe = mean / standard deviation of DAILY returns of realised equity (UTC days, flat days
  included) * sqrt(365) (crypto trades every day); None with fewer than 2 days or no variance;
- exposure = share of the run's time span with at least one open position (entry open to exit
  candle close, union over streams);
- confidence buckets: [0, 0.5), [0.5, 0.6), ... [0.9, 1.0] on ``Signal.confidence`` (the evidence model's
  probability the gate compared with MIN_CONFIDENCE);
- break_even_commission = the commission per side at which total R after fees would be 0
  (ANALYSIS-NOTES 4.4: report the break-even cost); slippage stays as configured.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from backtest.simulate import Account, Trade

DAY_MS = 86_400_000
CONFIDENCE_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def r_metrics(rs: Sequence[float], outcomes: Sequence[str]) -> dict[str, Any]:
    """Counts and R statistics of a group of trades."""
    n = len(rs)
    wins = sum(1 for o in outcomes if o == "WIN")
    losses = sum(1 for o in outcomes if o == "LOSS")
    expired = sum(1 for o in outcomes if o == "EXPIRED")
    pos = sum(r for r in rs if r > 0)
    neg = -sum(r for r in rs if r < 0)
    return {
        "trades": n,
        "wins": wins,
        "losses": losses,
        "expired": expired,
        "win_rate": wins / n if n else None,
        "expectancy_r": sum(rs) / n if n else None,
        "total_r": sum(rs),
        "profit_factor": pos / neg if neg > 0 else None,
    }


def max_drawdown(curve: Sequence[tuple[int, float]]) -> float:
    peak = -math.inf
    worst = 0.0
    for _, eq in curve:
        peak = max(peak, eq)
        if peak > 0:
            worst = max(worst, (peak - eq) / peak)
    return worst


def daily_sharpe(curve: Sequence[tuple[int, float]], end_ms: int) -> float | None:
    if not curve:
        return None
    first_day = curve[0][0] // DAY_MS
    last_day = max(end_ms, curve[-1][0]) // DAY_MS
    if last_day - first_day < 2:
        return None
    closes: list[float] = []
    i = 0
    eq = curve[0][1]
    for day in range(first_day, last_day + 1):
        day_end = (day + 1) * DAY_MS
        while i < len(curve) and curve[i][0] < day_end:
            eq = curve[i][1]
            i += 1
        closes.append(eq)
    rets = [b / a - 1.0 for a, b in itertools.pairwise(closes) if a > 0]
    if len(rets) < 2:
        return None
    mean = sum(rets) / len(rets)
    var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
    if var <= 0:
        return None
    return mean / math.sqrt(var) * math.sqrt(365.0)


def exposure(trades: Iterable[Trade], start_ms: int, end_ms: int) -> float:
    spans = sorted((t.resolution.entry_time_ms, t.resolution.resolved_at_ms + 1) for t in trades)
    if end_ms <= start_ms:
        return 0.0
    covered = 0
    cur_s: int | None = None
    cur_e = 0
    for s, e in spans:
        if cur_s is None or s > cur_e:
            if cur_s is not None:
                covered += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_s is not None:
        covered += cur_e - cur_s
    return min(1.0, covered / (end_ms - start_ms))


def confidence_bucket(conf: float) -> str:
    for lo, hi in itertools.pairwise(CONFIDENCE_EDGES):
        if conf < hi or hi == CONFIDENCE_EDGES[-1]:
            return f"{lo:.1f}-{hi:.1f}"
    return f"{CONFIDENCE_EDGES[-2]:.1f}-1.0"


def break_even_commission(trades: Sequence[Trade]) -> float | None:
    """Commission per side at which the trades' total R after fees would be zero.

    Fees in R are linear in the commission: ``c * (entry + exit) / risk`` per trade, so the
    break-even is ``sum(gross R) / sum((entry + exit) / risk)``. None without trades, or when the
    trades lose before any fee (negative gross R)."""
    if not trades:
        return None
    gross = sum(t.resolution.gross_r for t in trades)
    weight = sum((t.resolution.entry_price + t.resolution.exit_price) / t.signal.risk for t in trades)
    if gross <= 0 or weight <= 0:
        return None
    return gross / weight


def group_metrics(trades: Sequence[Trade], key: Any) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Trade]] = defaultdict(list)
    for t in trades:
        groups[key(t)].append(t)
    out = {}
    for k, v in sorted(groups.items()):
        m = r_metrics([t.resolution.r_multiple for t in v], [t.resolution.outcome for t in v])
        m["break_even_commission"] = break_even_commission(v)
        out[k] = m
    return out


def account_metrics(account: Account, start_ms: int, end_ms: int) -> dict[str, Any]:
    trades = account.trades
    out = r_metrics([t.resolution.r_multiple for t in trades], [t.resolution.outcome for t in trades])
    out.update(
        {
            "initial_balance": account.initial_balance,
            "final_equity": account.final_equity,
            "total_return": account.final_equity / account.initial_balance - 1.0,
            "max_drawdown": max_drawdown(account.equity_curve),
            "sharpe": daily_sharpe(account.equity_curve, end_ms),
            "exposure": exposure(trades, start_ms, end_ms),
            "fees_paid": sum(t.fees for t in trades),
            "break_even_commission": break_even_commission(trades),
            "avg_bars_held": (sum(t.resolution.bars_held for t in trades) / len(trades)) if trades else None,
            "avg_mfe_r": (sum(t.resolution.mfe_r for t in trades) / len(trades)) if trades else None,
            "avg_mae_r": (sum(t.resolution.mae_r for t in trades) / len(trades)) if trades else None,
        }
    )
    return out


def trade_record(t: Trade) -> dict[str, Any]:
    s, r = t.signal, t.resolution
    return {
        "signal_id": s.id,
        "symbol": s.symbol,
        "timeframe": s.timeframe,
        "pattern": s.pattern,
        "direction": s.direction,
        "confidence": s.confidence,
        "signal_time": s.candle_time_ms,
        "stop_loss": s.stop_loss,
        "take_profit": s.take_profits[0] if s.take_profits else None,
        "entry_time": r.entry_time_ms,
        "entry_price": r.entry_price,
        "exit_time": r.exit_time_ms,
        "exit_price": r.exit_price,
        "exit_reason": r.reason,
        "outcome": r.outcome,
        "r_multiple": r.r_multiple,
        "gross_r": r.gross_r,
        "fees_r": r.fees_r,
        "fees": t.fees,
        "risk_amount": t.risk_amount,
        "pnl": t.pnl,
        "equity_before": t.equity_before,
        "mfe": r.mfe_r,
        "mae": r.mae_r,
        "bars_held": r.bars_held,
    }


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, allow_nan=False) + "\n")
            n += 1
    return n


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> int:
    """The same records as a CSV with a header (columns of the first row, in sorted order)."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        if not rows:
            return 0
        w = csv.DictWriter(fh, fieldnames=sorted(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def _clean(obj: Any) -> Any:
    """JSON cannot hold NaN/inf: they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(_clean(report), indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def plot_equity(path: Path, curve: Sequence[tuple[int, float]], title: str) -> None:
    """Equity (top) and drawdown (bottom) against UTC time; matplotlib with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.pyplot as plt

    times = [datetime.fromtimestamp(t / 1000, tz=UTC) for t, _ in curve]
    eq = [e for _, e in curve]
    peak = -math.inf
    dd = []
    for e in eq:
        peak = max(peak, e)
        dd.append(-(peak - e) / peak * 100 if peak > 0 else 0.0)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax1.step(times, eq, where="post", color="tab:blue")
    ax1.set_ylabel("equity")
    ax1.set_title(title)
    ax1.grid(alpha=0.3)
    ax2.fill_between(times, dd, 0, step="post", color="tab:red", alpha=0.4)
    ax2.set_ylabel("drawdown %")
    ax2.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
