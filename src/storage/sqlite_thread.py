"""The one worker thread an SQLite connection lives on, and the transaction helpers every SQLite table uses.

sqlite3 connections are bound to the thread that made them, so every call of a store runs on ONE dedicated
worker thread (:class:`SqliteThread`); the event loop only awaits futures and never blocks on disk. Errors
are mapped to StoreUnavailable (transient: lock contention, I/O, a full disk) or StoreError (permanent).
Shared by the store, its trading tables, the outage spool and the job queue.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from src.storage.base import StoreError, StoreUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
# sqlite3 errors that mean "try again later" rather than "this can never work"
_TRANSIENT_MARKERS = ("locked", "busy", "disk i/o", "unable to open", "disk is full", "database or disk is full")


def classify(exc: sqlite3.Error, what: str) -> StoreError:
    """Map a sqlite3 error to StoreUnavailable (transient: lock contention, I/O, full disk) or StoreError."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and any(m in text for m in _TRANSIENT_MARKERS):
        return StoreUnavailable(f"sqlite {what}: {exc}")
    return StoreError(f"sqlite {what}: {exc}")


class SqliteThread:
    """One sqlite3 connection owned by one worker thread; ``run(fn)`` executes ``fn(conn)`` there.

    Calls are queued FIFO on the single thread, so concurrent coroutines never interleave inside a
    transaction. The connection is in autocommit mode: ``fn`` wraps its writes in :func:`transaction`.
    A caller that is cancelled stops waiting, but a call already queued still runs to its end.
    """

    def __init__(self, path: Path, *, label: str, synchronous: str = "NORMAL",
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path
        self.label = label
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def start(self, init: Callable[[sqlite3.Connection], None]) -> None:
        """Open the connection on the worker thread and run ``init`` (schema). Idempotent."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{self.label}")
        if self._conn is not None:
            return

        def _open() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=self._busy_timeout_ms / 1000, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("sqlite_wal_unavailable", path=str(self.path), journal_mode=mode)
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                conn.execute("PRAGMA foreign_keys = ON")
                # isolation_level=None = autocommit; transactions are explicit BEGIN/COMMIT below
                init(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn

        try:
            await self._submit(_open)
        except sqlite3.Error as exc:
            raise classify(exc, f"open {self.path}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"sqlite open {self.path}: {exc}") from exc

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreError(f"sqlite store {self.label} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def run(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``fn(conn)`` on the worker thread; sqlite3 errors become StoreError/StoreUnavailable."""

        def _call() -> T:
            conn = self._conn
            if conn is None:
                raise StoreError(f"sqlite store {self.label} is not open")
            return fn(conn)

        try:
            return await self._submit(_call)
        except sqlite3.Error as exc:
            raise classify(exc, what) from exc

    async def stop(self) -> None:
        """Checkpoint the WAL, close the connection and end the thread. Idempotent."""
        if self._executor is None:
            return

        def _close() -> None:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if conn.in_transaction:
                    conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()

        try:
            await self._submit(_close)
        except sqlite3.Error as exc:
            log.warning("sqlite_close_failed", path=str(self.path), error=str(exc))
        finally:
            executor, self._executor = self._executor, None
            if executor is not None:
                # the close job has run (or, if we were cancelled, is queued and still runs): never block the loop
                executor.shutdown(wait=False)


def transaction(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
    """Run ``body`` inside BEGIN IMMEDIATE ... COMMIT (rolled back on any exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def write(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    """executemany ``rows`` in one transaction on the worker thread; returns the affected row count.

    The cursor is closed here: a cursor that escapes to the event-loop thread and is finalised there
    while the worker uses the connection is an sqlite3 API misuse.
    """

    def body() -> int:
        cur = conn.executemany(sql, rows)
        try:
            return cur.rowcount
        finally:
            cur.close()

    return transaction(conn, body)
