"""Shared pieces of the job-queue tests: requests, stores on both backends, synthetic candles, a finish log."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from src.jobs.model import DAY_MS, JobRequest
from tests.candlegen import random_walk

T_FROM = 1_700_006_400_000  # 2023-11-15 00:00 UTC
SYMBOL = "SYNUSDT"


def request(kind: str = "backtest", days: int = 30, **kw: Any) -> JobRequest:
    base: dict[str, Any] = {"kind": kind, "symbols": (SYMBOL,), "timeframe": "1h", "from_ms": T_FROM,
                            "to_ms": T_FROM + days * DAY_MS, "patterns": ("wyckoff_spring",) if kind == "research" else ()}
    base.update(kw)
    return JobRequest(**base)


def candles(days: int = 30, seed: int = 3, symbol: str = SYMBOL) -> list[Any]:
    """``days`` of 1h random-walk candles from T_FROM (enough for the store to cover a job's period)."""
    return random_walk(days * 24, symbol=symbol, timeframe="1h", start_ms=T_FROM, seed=seed, vol=0.01)


FINISH_LOG_SQLITE = """
CREATE TABLE IF NOT EXISTS finish_log (job_id INTEGER, state TEXT);
CREATE TRIGGER IF NOT EXISTS log_finish AFTER UPDATE OF state ON backtest_jobs
WHEN NEW.state IN ('done', 'failed', 'cancelled') AND OLD.state <> NEW.state
BEGIN INSERT INTO finish_log VALUES (NEW.id, NEW.state); END;
"""

FINISH_LOG_PG = """
CREATE TABLE IF NOT EXISTS finish_log (job_id bigint, state text);
CREATE OR REPLACE FUNCTION log_finish() RETURNS trigger AS $$
BEGIN
  IF NEW.state IN ('done', 'failed', 'cancelled') AND OLD.state <> NEW.state THEN
    INSERT INTO finish_log VALUES (NEW.id, NEW.state);
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS log_finish ON backtest_jobs;
CREATE TRIGGER log_finish AFTER UPDATE OF state ON backtest_jobs FOR EACH ROW EXECUTE FUNCTION log_finish();
"""


def install_finish_log_sqlite(path: Path) -> None:
    """Record every move of a job into a final state (the tests assert each job ends exactly once)."""
    with sqlite3.connect(path) as conn:
        conn.executescript(FINISH_LOG_SQLITE)


def finish_log_sqlite(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return [(int(a), str(b)) for a, b in conn.execute("SELECT job_id, state FROM finish_log ORDER BY job_id")]


async def install_finish_log_pg(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        await conn.execute(FINISH_LOG_PG)
    finally:
        await conn.close()


async def finish_log_pg(dsn: str, schema: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return [(int(r[0]), str(r[1])) for r in await conn.fetch("SELECT job_id, state FROM finish_log ORDER BY job_id")]
    finally:
        await conn.close()


async def wait_for(predicate: Any, limit_s: float, what: str, every: float = 0.2) -> Any:
    """Poll the async ``predicate`` until it returns something truthy (its value) or fail after ``limit_s`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(every)


