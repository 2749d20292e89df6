"""The result embeds: what a user needs to judge a backtest or a study, within Discord's limits."""

from __future__ import annotations

from src.bot.discord.job_embeds import queue_embed, result_embed, state_text
from src.jobs.model import JobRecord, Requester
from tests.jobs_helpers import request

SUMMARY = {
    "trades": 33, "wins": 8, "losses": 9, "expired": 16, "win_rate": 8 / 33, "expectancy_r": 0.0147,
    "expectancy_r_ci95": [-0.21, 0.25], "max_drawdown": 0.0357, "total_return": 0.0035, "candles": 8784,
    "baseline": {"random_expectancy_r_mean": -0.0568, "random_expectancy_r_p5": -0.3648,
                 "random_expectancy_r_p95": 0.2726, "strategy_beats_share": 0.656, "p_value": 0.34},
    "patterns": ["wyckoff_spring", "wyckoff_utad"],
    "per_pattern": {"wyckoff_spring": {"trades": 1, "win_rate": 1.0, "expectancy_r": 2.34, "expectancy_r_ci95": None,
                                       "baseline": {"random_expectancy_r_mean": -0.02}}},
    "data": [{"symbol": "SYNUSDT", "source": "store", "candles": 8784}],
}


def job(state: str = "done", summary: dict | None = SUMMARY, kind: str = "backtest", **kw) -> JobRecord:
    return JobRecord(id=7, request=request(kind=kind), state=state, requester=Requester(user_id="1", user_name="al"),  # type: ignore[arg-type]
                     created_ms=0, summary=summary, **kw)


def test_a_backtest_embed_shows_trades_win_rate_expected_r_with_ci_random_entries_and_drawdown() -> None:
    fields = {f.name: f.value for f in result_embed(job()).fields}
    assert fields["Trades"] == "33 (8 won, 9 lost, 16 expired)"
    assert fields["Win rate"] == "24.2%"
    assert fields["Expected R per trade (95% CI)"] == "+0.015 R [-0.21, +0.25]"
    assert fields["Random entries, same exits"] == "-0.057 R [-0.36, +0.27]; beats 66% of random runs"
    assert fields["Max drawdown"] == "3.6%"
    lines = (fields["Requested patterns"] or "").splitlines()
    assert lines == ["**spring**: 1 trades, win 100.0%, E[R] +2.340 R; random -0.02 R", "**utad**: no trades"]


def test_a_report_without_a_baseline_still_renders() -> None:
    fields = {f.name: f.value for f in result_embed(job(summary={"trades": 0})).fields}
    assert fields["Random entries, same exits"] == "-" and fields["Expected R per trade (95% CI)"] == "-"


def test_research_failed_and_cancelled_embeds() -> None:
    cells = {"cells": [{"pattern": "wyckoff_spring", "timeframe": "1h", "min_score": 0.0, "n": 4,
                        "net_r": {"mean": -0.2, "lo": -1.06, "hi": 0.65}, "random_r": {"mean": -0.21},
                        "holm_p": 0.5}], "data": []}
    assert "**spring 1h**: 4 events, net -0.200 R [-1.06, +0.65], random -0.210 R, Holm p 0.500" in (
        result_embed(job(kind="research", summary=cells)).description or "")
    assert result_embed(job("failed", None, error="no candles")).description == "Failed: no candles"
    assert result_embed(job("cancelled", None)).description == "Cancelled."


def test_progress_texts_and_the_queue() -> None:
    assert "Queued: position 3 in the queue (1 running)" in state_text(job("queued", None), 3, 1)
    assert "Running (attempt 2): backtesting" in state_text(job("running", None, attempt=2, progress="backtesting"))
    retry = state_text(job("queued", None, progress="retrying: worker w stopped responding"), 1)
    assert "retrying: worker w stopped responding" in retry
    e = queue_embed([job("running", None, progress="backtesting"), job("queued", None)], {"running": 1, "queued": 1})
    assert (e.description or "").count("#7") == 2 and e.footer.text == "queued 1 · running 1"
