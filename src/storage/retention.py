"""Candle retention: delete candles older than CANDLE_RETENTION_DAYS (default 90) in the background.

Signals, deliveries and outcomes are never pruned: they are the record. :func:`run_retention`
prunes once at start and then every ``interval_s`` (1 h by default), logs how many candles went,
and keeps running when the store is unavailable (it tries again on the next round).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from src.storage.base import CandleStore, StoreError

log = structlog.get_logger(__name__)

DAY_MS = 86_400_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def prune_once(store: CandleStore, retention_days: int, *, now_ms: int | None = None) -> int:
    """Delete candles with open_time < now - retention_days; returns how many (raises StoreError)."""
    if retention_days < 1:
        raise ValueError(f"retention_days must be >= 1, got {retention_days}")
    cutoff = (now_ms if now_ms is not None else _wall_ms()) - retention_days * DAY_MS
    removed = await store.prune_candles(cutoff)
    log.info("candles_pruned", removed=removed, retention_days=retention_days, cutoff_ms=cutoff)
    return removed


async def run_retention(
    store: CandleStore,
    retention_days: int,
    *,
    interval_s: float = 3600.0,
    stop: asyncio.Event | None = None,
    clock: Callable[[], int] = _wall_ms,
) -> None:
    """Prune now and then every ``interval_s`` until ``stop`` is set (or the task is cancelled)."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await prune_once(store, retention_days, now_ms=clock())
        except StoreError as exc:
            log.warning("candle_prune_failed", error=str(exc), retry_in_s=interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
