"""The chaos test of issue 13 at CI size: 200 trade calls with random faults (see tests/trading_chaos.py).
A longer run: ``.venv/bin/python benchmarks/trading_chaos.py --signals 2000``."""

from __future__ import annotations

from pathlib import Path

from tests.trading_chaos import run_chaos


async def test_chaos_200_signals_no_duplicate_entry_no_unprotected_position_everything_audited(tmp_path: Path) -> None:
    report = await run_chaos(tmp_path, n_signals=200, seed=7)
    text = "\n".join(report.lines())
    assert report.signals >= 200, text
    assert sum(report.faults.values()) >= 40 and report.events, text
    assert report.entries_accepted >= 50 and report.positions_closed >= 20, text
    assert report.duplicate_entries == 0, text
    assert report.unprotected_after_reconcile == 0, text
    assert report.unknown_positions == 0, text
    assert report.audit_missing_submits == 0 and report.audit_missing_requests == 0, text
