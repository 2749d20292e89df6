"""Paper trading on a replayed file gives the same trades and R as ``backtest run`` on that file (issue 13).

The whole app runs in replay mode with TRADING_MODE=paper on a generated file (Wyckoff schematics of every kind
back to back, plus random walk); ``python -m backtest run`` runs on the same file with the same gate, horizon
and commission. Every backtest trade is a closed paper position with the same entry and exit times and
prices and the same R, and nothing else was closed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backtest.cli import main as backtest_main
from backtest.synthetic import KINDS, generate
from src.analysis.types import Candle
from src.bot.app import App, RunOptions
from src.config import Config
from src.market.klines_csv import write_klines_csv
from src.storage.sqlite_store import SqliteStore

HOUR = 3_600_000
COMMISSION = "0.0004"
HORIZON = "48"
# no pattern has shown an edge, so the shipped evidence model makes (almost) no trade calls: paper acts on
# watch notes too (TRADING_ACT_ON=all) and backtest run trades the same kinds (--kinds trade,watch)
MIN_CONFIDENCE = "0.5"


def _series(path: Path, seeds: range) -> list[Candle]:
    candles: list[Candle] = []
    start = 1_600_000_000_000 - 1_600_000_000_000 % HOUR
    for seed in seeds:
        for kind in KINDS:
            s = generate(kind, seed=seed, symbol="BTCUSDT", timeframe="1h", start_ms=start)
            candles.extend(s.candles)
            start = candles[-1].open_time_ms + HOUR
    write_klines_csv(path, candles)
    return candles


def _paper_config(tmp_path: Path) -> Config:
    env = {"SQLITE_PATH": str(tmp_path / "w.db"), "SPOOL_PATH": str(tmp_path / "s.db"), "TIMEFRAMES": "1h",
           "MIN_CONFIDENCE": MIN_CONFIDENCE, "STATUS_INTERVAL_SECONDS": "0", "HTTP_PORT": "0",
           "TRADING_MODE": "paper", "TRADING_ACT_ON": "all", "MAX_OPEN_POSITIONS": "100",
           "MAX_ORDERS_PER_DAY": "10000", "DAILY_LOSS_LIMIT_PCT": "100", "BACKTEST_COMMISSION": COMMISSION,
           "OUTCOME_HORIZON_CANDLES": HORIZON, "POSITION_SIZE_USDT": "1000"}
    return Config.from_env(env).validate()


async def test_paper_trades_on_a_replayed_file_equal_backtest_run_trades(tmp_path: Path) -> None:
    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    _series(csv, range(2))
    assert await App(_paper_config(tmp_path), RunOptions(replay=[csv], http=False, replay_db=tmp_path / "w.db")).run() == 0

    out = tmp_path / "bt"
    assert backtest_main(["run", "--data", str(csv), "--symbol", "BTCUSDT", "--timeframe", "1h", "--out-dir", str(out),
                          "--min-confidence", MIN_CONFIDENCE, "--kinds", "trade,watch", "--commission", COMMISSION,
                          "--horizon", HORIZON, "--baseline-reps", "0"]) == 0
    trades = [json.loads(line) for line in (out / "trades.jsonl").read_text().splitlines()]
    assert len(trades) >= 5, "the generated file should give a handful of trades"

    store = SqliteStore(tmp_path / "w.db")
    await store.open()
    try:
        closed = {p.signal_id: p for p in await store.closed_positions("paper", limit=100_000)}
        audit = await store.audit_entries(mode="paper", limit=1_000_000)
    finally:
        await store.close()
    assert set(closed) == {t["signal_id"] for t in trades}
    for t in trades:
        p = closed[t["signal_id"]]
        assert p.opened_at_ms == t["entry_time"] and p.entry_price == t["entry_price"]
        assert p.exit_price == t["exit_price"]
        assert p.r_multiple == pytest.approx(t["r_multiple"], abs=1e-12)
        assert p.exit_reason == {"stop_gap": "stop", "target_gap": "target"}.get(t["exit_reason"], t["exit_reason"])
        assert p.realized_pnl == pytest.approx(p.quantity * p.risk_per_unit * t["r_multiple"])
    assert sum(p.r_multiple or 0 for p in closed.values()) == pytest.approx(sum(t["r_multiple"] for t in trades))
    filled = {e.signal_id for e in audit if e.action == "entry_filled"}
    closed_audit = {e.signal_id for e in audit if e.action == "position_closed"}
    assert set(closed) <= filled and set(closed) == closed_audit
