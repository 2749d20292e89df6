"""Embedded SQLite backend: the zero-setup default store (SPEC 6).

Layout and rules:
- The file is created on first use at ``path`` (parent directories too), in WAL mode with a 5 s
  busy timeout and ``synchronous=NORMAL`` (in WAL mode a committed transaction survives a process
  crash or SIGTERM; only an OS crash / power cut can lose the last commits).
- The schema is built by the numbered files in ``sqlite_migrations/`` (``NNN_name.sql``), each applied
  once, in its own transaction, and recorded in the ``schema_migrations`` ledger; ``PRAGMA
  user_version`` holds the highest version applied (:data:`SCHEMA_VERSION` once up to date). A file
  that records a version this program does not have (written by a newer one) is refused with
  :class:`StoreError`.
- Times: candle times and every ``*_time``/``updated_at``/``resolved_at`` column are UTC epoch
  milliseconds (INTEGER); ``signals.generated_at`` and ``signals.created_at`` are ISO-8601 UTC text.
  ``take_profits``, ``reasons`` and ``features`` are JSON text (features as an object, like
  ``Signal.to_dict``).
- Every write is an idempotent upsert on the natural key, and a batch is one ``executemany`` in one
  transaction: all of it lands or none of it does.
- sqlite3 connections are bound to the thread that made them, so every call runs on ONE dedicated
  worker thread (:class:`SqliteThread`); the event loop only awaits futures and never blocks on disk.
- ``close()`` commits, checkpoints the WAL into the main file and closes; nothing written is lost.
- Candles that fail ``Candle.validate()``, are not closed, or hold what no column can
  (:func:`~src.storage.base.storage_problem`: a 2**63 trade count, a time past year 9999) are skipped and
  counted (``rejected_candles``) with a warning, so one bad row never sinks a batch; a batch SQLite
  refuses for any other permanent reason is written row by row and only the refused rows are dropped.
  Validation and row building run on the worker thread as well.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from src.analysis.types import Candle, InvalidCandle, Signal, SignalKind
from src.storage.base import (
    TRADE_CALLS_ONLY,
    Delivery,
    FollowUp,
    FollowUpDelivery,
    FollowUpEvent,
    GateSeed,
    HistoryOutcome,
    LiveTrack,
    Mute,
    PendingFollowUp,
    SignalOutcome,
    StoreError,
    StoreUnavailable,
    StreamQuality,
    Subscription,
    evidence_columns,
    evidence_dict,
    evidence_from,
    follow_up_event,
    follow_up_sort_key,
    plainly_valid,
    population,
    signal_kind,
    storage_problem,
)
from src.storage.migration_files import discover_in
from src.storage.sqlite_thread import BUSY_TIMEOUT_MS, SqliteThread, classify, transaction, write
from src.storage.sqlite_trading import SqliteTradingMixin

log = structlog.get_logger(__name__)

T = TypeVar("T")

MIGRATIONS = discover_in(Path(__file__).with_name("sqlite_migrations"))
SCHEMA_VERSION = MIGRATIONS[-1].version


_LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


def _apply_schema(conn: sqlite3.Connection) -> None:
    """Apply the pending migrations in version order, each in one transaction with its ledger row."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(f"database schema version {version} is newer than this program's {SCHEMA_VERSION}")
    conn.execute(_LEDGER_DDL)
    done = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
    if version >= 1 and not done:
        # a file from before the ledger existed: user_version 1 meant the whole first schema
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                     (1, MIGRATIONS[0].name, MIGRATIONS[0].checksum, _now_iso()))
        done.add(1)
    unknown = done - {m.version for m in MIGRATIONS}
    if unknown:
        raise StoreError(f"database has schema migrations {sorted(unknown)} that this program does not know (newer version?)")
    for m in MIGRATIONS:
        if m.version in done:
            continue
        # one transaction per file: the script and its ledger row land together or not at all
        # (executescript would commit on its own, so the statements run one by one inside BEGIN)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(m.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?, ?)", (m.version, m.name, m.checksum, _now_iso()))
            conn.execute(f"PRAGMA user_version = {m.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("sqlite_migration_applied", migration=m.name)


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements (sqlite3.complete_statement decides where one ends)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if stmt and not all(part.strip().startswith("--") or not part.strip() for part in stmt.splitlines()):
                out.append(stmt)
            buf = ""
    if buf.strip() and not all(part.strip().startswith("--") or not part.strip() for part in buf.splitlines()):
        raise StoreError(f"incomplete statement at the end of a migration: {buf.strip()[:80]!r}")
    return out


def _now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def _now_iso() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_CANDLE_COLS = (
    "symbol, timeframe, open_time, close_time, open, high, low, close, volume, quote_volume, trades, "
    "taker_buy_volume, taker_buy_quote_volume"
)
_UPSERT_CANDLE = (
    f"INSERT INTO candles ({_CANDLE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET close_time=excluded.close_time, open=excluded.open, "
    "high=excluded.high, low=excluded.low, close=excluded.close, volume=excluded.volume, "
    "quote_volume=excluded.quote_volume, trades=excluded.trades, taker_buy_volume=excluded.taker_buy_volume, "
    "taker_buy_quote_volume=excluded.taker_buy_quote_volume"
)
_SIGNAL_COLS = (
    "id, symbol, timeframe, pattern, direction, confidence, raw_confidence, entry, stop_loss, take_profits, "
    "candle_time, generated_at, reasons, analyzer_version, config_hash, features, kind, gate_reason, structure_id, "
    "p_win, expected_r, expected_r_lo, expected_r_hi, evidence"
)
_SIGNAL_PARAMS = ",".join("?" * (_SIGNAL_COLS.count(",") + 1))
_OUTCOME_COLS = (
    "signal_id, symbol, timeframe, pattern, direction, outcome, entry_time, entry_price, exit_time, exit_price, "
    "r_multiple, mfe_r, mae_r, fees, bars_held, confidence, resolved_at"
)
_QUALITY_COLS = "symbol, timeframe, last_candle_ms, gaps_backfilled, candles_backfilled, stalls, reconnects, updated_at"


def _candle_row(c: Candle) -> tuple[Any, ...]:
    return (
        c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close, c.volume,
        c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume,
    )


def _row_candle(r: Sequence[Any]) -> Candle:
    # _CANDLE_COLS is in Candle's field order, so the row maps positionally (2x faster than keywords)
    return Candle(*r)


def _signal_row(s: Signal) -> tuple[Any, ...]:
    ev = evidence_dict(s)
    return (
        s.id, s.symbol, s.timeframe, s.pattern, s.direction, s.confidence, s.raw_confidence, s.entry, s.stop_loss,
        json.dumps(list(s.take_profits)), s.candle_time_ms, s.generated_at, json.dumps(list(s.reasons)),
        s.analyzer_version, s.config_hash, json.dumps(dict(s.features)), s.kind, s.gate_reason, s.structure_id,
        *evidence_columns(s), None if ev is None else json.dumps(ev),
    )


def _row_signal(r: Sequence[Any]) -> Signal:
    direction = r[4]
    if direction not in ("LONG", "SHORT"):
        raise StoreError(f"signal {r[0]} has invalid direction {direction!r}")
    return Signal(
        id=r[0], symbol=r[1], timeframe=r[2], pattern=r[3], direction=direction, confidence=r[5],
        raw_confidence=r[6], entry=r[7], stop_loss=r[8], take_profits=tuple(float(x) for x in json.loads(r[9])),
        candle_time_ms=r[10], generated_at=r[11], reasons=tuple(str(x) for x in json.loads(r[12])),
        analyzer_version=r[13], config_hash=r[14],
        features=tuple((str(k), float(v)) for k, v in json.loads(r[15]).items()),
        kind=signal_kind(r[16], r[0]), gate_reason=r[17], structure_id=r[18], evidence=evidence_from(r[23], r[0]),
    )


def _outcome_row(o: SignalOutcome) -> tuple[Any, ...]:
    return (
        o.signal_id, o.symbol, o.timeframe, o.pattern, o.direction, o.outcome, o.entry_time_ms, o.entry_price,
        o.exit_time_ms, o.exit_price, o.r_multiple, o.mfe_r, o.mae_r, o.fees, o.bars_held, o.confidence,
        o.resolved_at_ms,
    )


def _row_outcome(r: Sequence[Any]) -> SignalOutcome:
    return SignalOutcome(
        signal_id=r[0], symbol=r[1], timeframe=r[2], pattern=r[3], direction=r[4], outcome=r[5],
        entry_time_ms=r[6], entry_price=r[7], exit_time_ms=r[8], exit_price=r[9], r_multiple=r[10], mfe_r=r[11],
        mae_r=r[12], fees=r[13], bars_held=r[14], confidence=r[15], resolved_at_ms=r[16],
    )


def _row_delivery(r: Sequence[Any]) -> Delivery:
    return Delivery(
        signal_id=r[0], destination=r[1], status=r[2], message_id=r[3], attempts=r[4], last_error=r[5],
        updated_at_ms=r[6],
    )


def _row_quality(r: Sequence[Any]) -> StreamQuality:
    return StreamQuality(
        symbol=r[0], timeframe=r[1], last_candle_ms=r[2], gaps_backfilled=r[3], candles_backfilled=r[4],
        stalls=r[5], reconnects=r[6], updated_at_ms=r[7],
    )


def _marks(values: Collection[str]) -> str:
    """'?,?,?' for an IN list of ``values`` (never empty: callers handle that)."""
    return ",".join("?" * len(values))


_FOLLOW_UP_COLS = "signal_id, event, event_time, price, r_multiple, bars, entry_price"
_S_SIGNAL_COLS = ", ".join(f"s.{c.strip()}" for c in _SIGNAL_COLS.split(","))  # for queries that join other tables
_EVENT_RANK_SQL = ("CASE f.event WHEN 'invalidated' THEN 0 WHEN 'stopped' THEN 1 WHEN 'tp1' THEN 2 WHEN 'expired' THEN 3 "
                   "WHEN 'tp2' THEN 4 ELSE 5 END")


def _row_follow_up(r: Sequence[Any]) -> FollowUp:
    return FollowUp(signal_id=r[0], event=follow_up_event(r[1], r[0]), event_time_ms=r[2], price=r[3], r_multiple=r[4],
                    bars=r[5], entry_price=r[6])


class SqliteStore(SqliteTradingMixin):
    """The Store protocol on one SQLite file (see the module docstring for the rules); the TradingStore
    methods come from :class:`~src.storage.sqlite_trading.SqliteTradingMixin`."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self.rejected_candles = 0
        self._db = SqliteThread(self.path, label="store", synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Create the file and schema on first run; a second call does nothing."""
        was_open = self._db.is_open
        await self._db.start(_apply_schema)
        if not was_open:
            log.info("sqlite_store_opened", path=str(self.path), schema_version=SCHEMA_VERSION)

    async def close(self) -> None:
        await self._db.stop()

    async def ping(self) -> bool:
        try:
            return await self._db.run(lambda c: c.execute("SELECT 1").fetchone()[0] == 1, "ping")
        except StoreError:
            return False

    # ------------------------------------------------------------------ candles
    async def upsert_candles(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return
        batch = list(candles)  # a snapshot: the caller may reuse its list while the worker runs

        def reject(c: Candle, reason: str) -> None:
            self.rejected_candles += 1
            log.warning("candle_rejected", symbol=c.symbol, timeframe=c.timeframe, open_time_ms=c.open_time_ms,
                        reason=reason, rejected_total=self.rejected_candles)

        def q(conn: sqlite3.Connection) -> None:
            # validation and row building run on the worker thread too: the event loop only awaits
            accepted: list[tuple[Candle, tuple[Any, ...]]] = []
            for c in batch:
                try:
                    if not c.closed:
                        raise InvalidCandle(f"candle {c.key} is not closed")
                    if not plainly_valid(c):
                        c.validate()  # raises with the exact reason
                    problem = storage_problem(c)
                    if problem is not None:
                        raise InvalidCandle(f"candle {c.key}: {problem}")
                except InvalidCandle as exc:
                    reject(c, str(exc))
                    continue
                accepted.append((c, _candle_row(c)))
            if not accepted:
                return
            try:
                write(conn, _UPSERT_CANDLE, [row for _, row in accepted])
            except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
                if isinstance(exc, sqlite3.Error) and isinstance(classify(exc, ""), StoreUnavailable):
                    raise  # lock contention, I/O, full disk: the whole batch is retried by the caller
                # refused for a reason no check foresaw: write the candles one by one, refuse only the bad ones
                for c, row in accepted:
                    try:
                        write(conn, _UPSERT_CANDLE, [row])
                    except (sqlite3.Error, OverflowError, ValueError, TypeError) as one:
                        if isinstance(one, sqlite3.Error) and isinstance(classify(one, ""), StoreUnavailable):
                            raise
                        reject(c, f"{type(one).__name__}: {one}")

        await self._db.run(q, "upsert_candles")

    async def last_open_time(self, symbol: str, timeframe: str) -> int | None:
        def q(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT MAX(open_time) FROM candles WHERE symbol = ? AND timeframe = ?", (symbol, timeframe)
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return await self._db.run(q, "last_open_time")

    async def load_candles(
        self,
        symbol: str,
        timeframe: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        where = "symbol = ? AND timeframe = ?"
        args: list[Any] = [symbol, timeframe]
        if start_ms is not None:
            where += " AND open_time >= ?"
            args.append(start_ms)
        if end_ms is not None:
            where += " AND open_time <= ?"
            args.append(end_ms)
        if limit is not None:
            if limit <= 0:
                return []
            sql = f"SELECT {_CANDLE_COLS} FROM candles WHERE {where} ORDER BY open_time DESC LIMIT ?"
            args.append(limit)
        else:
            sql = f"SELECT {_CANDLE_COLS} FROM candles WHERE {where} ORDER BY open_time ASC"

        def q(conn: sqlite3.Connection) -> list[Candle]:
            out = [_row_candle(r) for r in conn.execute(sql, args)]
            if limit is not None:
                out.reverse()
            return out

        return await self._db.run(q, "load_candles")

    async def prune_candles(self, older_than_ms: int) -> int:
        def q(conn: sqlite3.Connection) -> int:
            def body() -> int:
                # per stream, so each DELETE is a range scan on the primary key, not a full-table scan
                streams = conn.execute("SELECT DISTINCT symbol, timeframe FROM candles").fetchall()
                removed = 0
                for sym, tf in streams:
                    cur = conn.execute(
                        "DELETE FROM candles WHERE symbol = ? AND timeframe = ? AND open_time < ?",
                        (sym, tf, older_than_ms),
                    )
                    removed += cur.rowcount
                return removed

            return transaction(conn, body)

        return await self._db.run(q, "prune_candles")

    # ------------------------------------------------------------------ signals
    async def save_signal(self, signal: Signal) -> bool:
        row = (*_signal_row(signal), _now_iso())

        sql = (
            f"INSERT INTO signals ({_SIGNAL_COLS}, created_at) VALUES ({_SIGNAL_PARAMS},?) "
            "ON CONFLICT (id) DO NOTHING"
        )
        return await self._db.run(lambda conn: write(conn, sql, [row]) == 1, "save_signal")

    # ------------------------------------------------------------------ analysis watermark
    async def commit_analysis(self, signals: Sequence[Signal], analysed_to: Mapping[tuple[str, str], int]) -> None:
        created = _now_iso()
        rows = [(*_signal_row(s), created) for s in signals]
        marks = [(sym, tf, ms, _now_ms()) for (sym, tf), ms in analysed_to.items()]
        insert = (f"INSERT INTO signals ({_SIGNAL_COLS}, created_at) VALUES ({','.join('?' * len(rows[0]))}) "
                  "ON CONFLICT (id) DO NOTHING") if rows else ""
        upsert = ("INSERT INTO analysis_watermarks (symbol, timeframe, analysed_to, updated_at) VALUES (?,?,?,?) "
                  "ON CONFLICT (symbol, timeframe) DO UPDATE SET analysed_to = MAX(analysed_to, excluded.analysed_to), "
                  "updated_at = excluded.updated_at")

        def q(conn: sqlite3.Connection) -> None:
            def body() -> None:
                if rows:
                    conn.executemany(insert, rows).close()
                if marks:
                    conn.executemany(upsert, marks).close()

            transaction(conn, body)

        await self._db.run(q, "commit_analysis")

    async def analysed_up_to(self, symbol: str, timeframe: str) -> int | None:
        def q(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT analysed_to FROM analysis_watermarks WHERE symbol = ? AND timeframe = ?",
                               (symbol, timeframe)).fetchone()
            return None if row is None else int(row[0])

        return await self._db.run(q, "analysed_up_to")

    async def drop_candles_after(self, symbol: str, timeframe: str, after_ms: int) -> int:
        def q(conn: sqlite3.Connection) -> int:
            def body() -> int:
                cur = conn.execute("DELETE FROM candles WHERE symbol = ? AND timeframe = ? AND open_time > ?",
                                   (symbol, timeframe, after_ms))
                removed = cur.rowcount
                cur.close()
                conn.execute("UPDATE analysis_watermarks SET analysed_to = ?, updated_at = ? WHERE symbol = ? "
                             "AND timeframe = ? AND analysed_to > ?",
                             (after_ms, _now_ms(), symbol, timeframe, after_ms)).close()
                return removed

            return transaction(conn, body)

        return await self._db.run(q, "drop_candles_after")

    async def get_signal(self, signal_id: str) -> Signal | None:
        def q(conn: sqlite3.Connection) -> Signal | None:
            r = conn.execute(f"SELECT {_SIGNAL_COLS} FROM signals WHERE id = ?", (signal_id,)).fetchone()
            return None if r is None else _row_signal(r)

        return await self._db.run(q, "get_signal")

    async def recent_signals(
        self, *, symbol: str | None = None, timeframe: str | None = None, limit: int = 20,
        kinds: Collection[SignalKind] | None = None,
    ) -> list[Signal]:
        where: list[str] = []
        args: list[Any] = []
        if symbol is not None:
            where.append("symbol = ?")
            args.append(symbol)
        if timeframe is not None:
            where.append("timeframe = ?")
            args.append(timeframe)
        if kinds is not None:
            where.append(f"kind IN ({_marks(kinds)})")
            args.extend(kinds)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_SIGNAL_COLS} FROM signals {clause} ORDER BY candle_time DESC, id DESC LIMIT ?"
        args.append(max(0, limit))
        return await self._db.run(lambda conn: [_row_signal(r) for r in conn.execute(sql, args)], "recent_signals")

    async def gate_seed(self, *, structure_window_ms: int) -> GateSeed:
        def q(conn: sqlite3.Connection) -> GateSeed:
            last: dict[tuple[str, str, str], int] = {}
            trades: dict[tuple[str, str, str], int] = {}
            for r in conn.execute(
                "SELECT symbol, timeframe, direction, MAX(candle_time), MAX(CASE WHEN kind = 'trade' THEN candle_time END) "
                "FROM signals WHERE kind IN ('trade', 'watch') GROUP BY symbol, timeframe, direction"
            ):
                last[(r[0], r[1], r[2])] = int(r[3])
                if r[4] is not None:
                    trades[(r[0], r[1], r[2])] = int(r[4])
            judged = {(r[0], r[1]): int(r[2]) for r in conn.execute(
                "SELECT symbol, timeframe, MAX(candle_time) FROM signals GROUP BY symbol, timeframe")}
            # MIN(kind): 'trade' < 'watch', the best kind emitted for the structure
            structures = {
                str(r[0]): signal_kind(r[1], str(r[0])) for r in conn.execute(
                    "SELECT structure_id, MIN(kind) FROM signals WHERE kind IN ('trade', 'watch') AND structure_id <> '' "
                    "AND candle_time >= (SELECT MAX(candle_time) FROM signals WHERE kind IN ('trade', 'watch')) - ? "
                    "GROUP BY structure_id", (structure_window_ms,))
            }
            return GateSeed(last, structures, trades, judged)

        return await self._db.run(q, "gate_seed")

    # ------------------------------------------------------------------ outbox
    async def pending_deliveries(
        self, destination: str, *, kinds: Collection[SignalKind] = TRADE_CALLS_ONLY, limit: int = 50,
        since_ms: int | None = None,
    ) -> list[Signal]:
        wanted = [k for k in kinds if k != "gated"]  # gated candidates are never delivered
        if not wanted:
            return []
        since = "" if since_ms is None else (
            "AND (candle_time >= ? OR EXISTS (SELECT 1 FROM signal_deliveries a WHERE a.signal_id = s.id "
            "AND a.destination = ?)) ")
        sql = (
            f"SELECT {_SIGNAL_COLS} FROM signals s WHERE kind IN ({_marks(wanted)}) {since}AND NOT EXISTS ("
            "SELECT 1 FROM signal_deliveries d WHERE d.signal_id = s.id AND d.destination = ? "
            "AND d.status IN ('sent', 'skipped')) ORDER BY candle_time ASC, id ASC LIMIT ?"
        )
        window: tuple[Any, ...] = () if since_ms is None else (since_ms, destination)
        args = (*wanted, *window, destination, max(0, limit))
        return await self._db.run(lambda conn: [_row_signal(r) for r in conn.execute(sql, args)], "pending_deliveries")

    async def record_delivery(self, delivery: Delivery) -> None:
        d = delivery
        row = (d.signal_id, d.destination, d.status, d.message_id, d.attempts, d.last_error, d.updated_at_ms)
        sql = (
            "INSERT INTO signal_deliveries (signal_id, destination, status, message_id, attempts, last_error, "
            "updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (signal_id, destination) DO UPDATE SET "
            "status=excluded.status, message_id=excluded.message_id, attempts=excluded.attempts, "
            "last_error=excluded.last_error, updated_at=excluded.updated_at"
        )
        await self._db.run(lambda conn: write(conn, sql, [row]), "record_delivery")

    async def get_delivery(self, signal_id: str, destination: str) -> Delivery | None:
        sql = (
            "SELECT signal_id, destination, status, message_id, attempts, last_error, updated_at "
            "FROM signal_deliveries WHERE signal_id = ? AND destination = ?"
        )

        def q(conn: sqlite3.Connection) -> Delivery | None:
            r = conn.execute(sql, (signal_id, destination)).fetchone()
            return None if r is None else _row_delivery(r)

        return await self._db.run(q, "get_delivery")

    # ------------------------------------------------------------------ outcomes
    async def open_signals(self) -> list[Signal]:
        sql = (
            f"SELECT {_SIGNAL_COLS} FROM signals s WHERE NOT EXISTS "
            "(SELECT 1 FROM signal_performance p WHERE p.signal_id = s.id) ORDER BY candle_time ASC, id ASC"
        )
        return await self._db.run(lambda conn: [_row_signal(r) for r in conn.execute(sql)], "open_signals")

    async def save_outcome(self, outcome: SignalOutcome) -> None:
        row = _outcome_row(outcome)
        updates = ", ".join(f"{c.strip()}=excluded.{c.strip()}" for c in _OUTCOME_COLS.split(",")[1:])
        sql = (
            f"INSERT INTO signal_performance ({_OUTCOME_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            f"ON CONFLICT (signal_id) DO UPDATE SET {updates}"
        )
        await self._db.run(lambda conn: write(conn, sql, [row]), "save_outcome")

    async def get_outcome(self, signal_id: str) -> SignalOutcome | None:
        def q(conn: sqlite3.Connection) -> SignalOutcome | None:
            r = conn.execute(f"SELECT {_OUTCOME_COLS} FROM signal_performance WHERE signal_id = ?",
                             (signal_id,)).fetchone()
            return None if r is None else _row_outcome(r)

        return await self._db.run(q, "get_outcome")

    async def live_track(
        self, tracked_reasons: Collection[str], *, symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, since_ms: int | None = None, resolved_before_ms: int | None = None,
    ) -> list[LiveTrack]:
        reasons = sorted(set(tracked_reasons))
        tracked = f"(s.p_win IS NOT NULL AND s.gate_reason IN ({_marks(reasons)}))" if reasons else "0"
        where: list[str] = []
        args: list[Any] = [*reasons]
        for column, value in (("symbol", symbol), ("timeframe", timeframe), ("pattern", pattern)):
            if value is not None:
                where.append(f"s.{column} = ?")
                args.append(value)
        if since_ms is not None:
            where.append("s.candle_time >= ?")
            args.append(since_ms)
        clause = f"AND {' AND '.join(where)}" if where else ""
        resolved = "" if resolved_before_ms is None else f"AND p.resolved_at < {int(resolved_before_ms)}"
        sql = (
            "SELECT s.pattern, s.timeframe, g.population, COUNT(*), COUNT(p.signal_id), COALESCE(SUM(p.r_multiple), 0), "
            "COALESCE(SUM(p.r_multiple * p.r_multiple), 0), COALESCE(SUM(p.r_multiple > 0), 0) "
            f"FROM signals s LEFT JOIN signal_performance p ON p.signal_id = s.id {resolved} "
            "JOIN (SELECT 'trade' AS population UNION ALL SELECT 'watch' UNION ALL SELECT 'tracked') g "
            f"ON (g.population = s.kind AND s.kind <> 'gated') OR (g.population = 'tracked' AND {tracked}) "
            f"WHERE 1 {clause} GROUP BY s.pattern, s.timeframe, g.population ORDER BY s.pattern, s.timeframe, g.population"
        )

        def q(conn: sqlite3.Connection) -> list[LiveTrack]:
            return [
                LiveTrack(pattern=r[0], timeframe=r[1], population=population(r[2]),
                          candidates=int(r[3]), graded=int(r[4]), sum_r=float(r[5]), sum_r2=float(r[6]), wins=int(r[7]))
                for r in conn.execute(sql, args)
            ]

        return await self._db.run(q, "live_track")

    # ------------------------------------------------------------------ stream quality
    async def save_stream_quality(self, rows: Sequence[StreamQuality]) -> None:
        data = [
            (q.symbol, q.timeframe, q.last_candle_ms, q.gaps_backfilled, q.candles_backfilled, q.stalls, q.reconnects,
             q.updated_at_ms)
            for q in rows
        ]
        if not data:
            return
        sql = (
            f"INSERT INTO stream_quality ({_QUALITY_COLS}) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (symbol, timeframe) "
            "DO UPDATE SET last_candle_ms=excluded.last_candle_ms, gaps_backfilled=excluded.gaps_backfilled, "
            "candles_backfilled=excluded.candles_backfilled, stalls=excluded.stalls, reconnects=excluded.reconnects, "
            "updated_at=excluded.updated_at"
        )
        await self._db.run(lambda conn: write(conn, sql, data), "save_stream_quality")

    async def stream_quality(self) -> list[StreamQuality]:
        sql = f"SELECT {_QUALITY_COLS} FROM stream_quality ORDER BY symbol, timeframe"
        return await self._db.run(lambda conn: [_row_quality(r) for r in conn.execute(sql)], "stream_quality")


    # ------------------------------------------------------------------ follow-ups (issue 14)
    async def save_follow_up(self, follow_up: FollowUp) -> bool:
        f = follow_up
        row = (f.signal_id, f.event, f.event_time_ms, f.price, f.r_multiple, f.bars, f.entry_price, _now_ms())
        sql = (f"INSERT INTO signal_follow_ups ({_FOLLOW_UP_COLS}, created_at) VALUES (?,?,?,?,?,?,?,?) "
               "ON CONFLICT (signal_id, event) DO NOTHING")
        return await self._db.run(lambda conn: write(conn, sql, [row]) == 1, "save_follow_up")

    async def follow_ups(self, signal_id: str) -> list[FollowUp]:
        sql = f"SELECT {_FOLLOW_UP_COLS} FROM signal_follow_ups WHERE signal_id = ?"
        rows = await self._db.run(lambda conn: [_row_follow_up(r) for r in conn.execute(sql, (signal_id,))], "follow_ups")
        return sorted(rows, key=follow_up_sort_key)

    async def open_tp2_watches(self) -> list[tuple[Signal, FollowUp]]:
        cols = ", ".join(f"f.{c.strip()}" for c in _FOLLOW_UP_COLS.split(","))
        sql = (
            f"SELECT {_S_SIGNAL_COLS}, {cols} FROM signals s JOIN signal_follow_ups f ON f.signal_id = s.id "
            "AND f.event = 'tp1' WHERE json_array_length(s.take_profits) >= 2 AND NOT EXISTS (SELECT 1 FROM "
            "signal_follow_ups g WHERE g.signal_id = s.id AND g.event IN ('tp2', 'tp2_missed')) "
            "ORDER BY s.candle_time ASC, s.id ASC"
        )
        n = _SIGNAL_COLS.count(",") + 1

        def q(conn: sqlite3.Connection) -> list[tuple[Signal, FollowUp]]:
            return [(_row_signal(r[:n]), _row_follow_up(r[n:])) for r in conn.execute(sql)]

        return await self._db.run(q, "open_tp2_watches")

    async def pending_follow_ups(self, destination: str, *, limit: int = 50) -> list[PendingFollowUp]:
        cols = ", ".join(f"f.{c.strip()}" for c in _FOLLOW_UP_COLS.split(","))
        sql = (
            f"SELECT {_S_SIGNAL_COLS}, {cols}, d.message_id FROM signal_follow_ups f "
            "JOIN signals s ON s.id = f.signal_id "
            "JOIN signal_deliveries d ON d.signal_id = f.signal_id AND d.destination = ? AND d.status = 'sent' "
            "AND d.message_id IS NOT NULL "
            "WHERE f.event <> 'tp2_missed' AND NOT EXISTS (SELECT 1 FROM follow_up_deliveries x WHERE "
            "x.signal_id = f.signal_id AND x.event = f.event AND x.destination = ? AND x.status IN ('sent', 'skipped')) "
            f"ORDER BY f.event_time ASC, f.signal_id ASC, {_EVENT_RANK_SQL} LIMIT ?"
        )
        n = _SIGNAL_COLS.count(",") + 1
        m = n + _FOLLOW_UP_COLS.count(",") + 1

        def q(conn: sqlite3.Connection) -> list[PendingFollowUp]:
            return [PendingFollowUp(_row_follow_up(r[n:m]), _row_signal(r[:n]), str(r[m]))
                    for r in conn.execute(sql, (destination, destination, max(0, limit)))]

        return await self._db.run(q, "pending_follow_ups")

    async def record_follow_up_delivery(self, delivery: FollowUpDelivery) -> None:
        d = delivery
        row = (d.signal_id, d.event, d.destination, d.status, d.message_id, d.attempts, d.last_error, d.updated_at_ms)
        sql = (
            "INSERT INTO follow_up_deliveries (signal_id, event, destination, status, message_id, attempts, last_error, "
            "updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (signal_id, event, destination) DO UPDATE SET "
            "status=excluded.status, message_id=excluded.message_id, attempts=excluded.attempts, "
            "last_error=excluded.last_error, updated_at=excluded.updated_at"
        )
        await self._db.run(lambda conn: write(conn, sql, [row]), "record_follow_up_delivery")

    async def get_follow_up_delivery(self, signal_id: str, event: FollowUpEvent, destination: str) -> FollowUpDelivery | None:
        sql = (
            "SELECT signal_id, event, destination, status, message_id, attempts, last_error, updated_at "
            "FROM follow_up_deliveries WHERE signal_id = ? AND event = ? AND destination = ?"
        )

        def q(conn: sqlite3.Connection) -> FollowUpDelivery | None:
            r = conn.execute(sql, (signal_id, event, destination)).fetchone()
            return None if r is None else FollowUpDelivery(r[0], follow_up_event(r[1], r[0]), r[2], r[3], r[4], r[5],
                                                            r[6], r[7])

        return await self._db.run(q, "get_follow_up_delivery")

    # ------------------------------------------------------------------ subscriptions and mutes (issue 14)
    async def save_subscription(self, subscription: Subscription) -> bool:
        s = subscription
        sql = ("INSERT INTO discord_subscriptions (destination, symbol, timeframe, created_by, created_at) "
               "VALUES (?,?,?,?,?) ON CONFLICT (destination, symbol, timeframe) DO NOTHING")
        row = (s.destination, s.symbol, s.timeframe, s.created_by, s.created_at_ms)
        return await self._db.run(lambda conn: write(conn, sql, [row]) == 1, "save_subscription")

    async def delete_subscriptions(self, destination: str, *, symbol: str | None = None,
                                   timeframe: str | None = None) -> int:
        return await self._delete_keyed("discord_subscriptions", destination, symbol, timeframe)

    async def subscriptions(self, destination: str | None = None) -> list[Subscription]:
        where, args = ("WHERE destination = ?", (destination,)) if destination is not None else ("", ())
        sql = ("SELECT destination, symbol, timeframe, created_by, created_at FROM discord_subscriptions "
               f"{where} ORDER BY destination, symbol, timeframe")
        return await self._db.run(lambda conn: [Subscription(*r) for r in conn.execute(sql, args)], "subscriptions")

    async def save_mute(self, mute: Mute) -> None:
        m = mute
        sql = ("INSERT INTO discord_mutes (destination, symbol, timeframe, until, created_by, created_at) "
               "VALUES (?,?,?,?,?,?) ON CONFLICT (destination, symbol, timeframe) DO UPDATE SET until=excluded.until, "
               "created_by=excluded.created_by, created_at=excluded.created_at")
        row = (m.destination, m.symbol, m.timeframe, m.until_ms, m.created_by, m.created_at_ms)
        await self._db.run(lambda conn: write(conn, sql, [row]), "save_mute")

    async def delete_mutes(self, destination: str, *, symbol: str | None = None, timeframe: str | None = None) -> int:
        return await self._delete_keyed("discord_mutes", destination, symbol, timeframe)

    async def mutes(self, destination: str | None = None) -> list[Mute]:
        where, args = ("WHERE destination = ?", (destination,)) if destination is not None else ("", ())
        sql = ("SELECT destination, symbol, timeframe, until, created_by, created_at FROM discord_mutes "
               f"{where} ORDER BY destination, symbol, timeframe")
        return await self._db.run(lambda conn: [Mute(*r) for r in conn.execute(sql, args)], "mutes")

    async def _delete_keyed(self, table: str, destination: str, symbol: str | None, timeframe: str | None) -> int:
        where = ["destination = ?"]
        args: list[Any] = [destination]
        for column, value in (("symbol", symbol), ("timeframe", timeframe)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"DELETE FROM {table} WHERE {' AND '.join(where)}"
        return await self._db.run(lambda conn: write(conn, sql, [args]), f"delete from {table}")

    # ------------------------------------------------------------------ history (issue 14)
    async def signal_history(
        self, *, kinds: Collection[SignalKind], symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, outcome: HistoryOutcome | None = None, offset: int = 0, limit: int = 10,
    ) -> list[tuple[Signal, SignalOutcome | None]]:
        if not kinds:
            return []
        where = [f"s.kind IN ({_marks(kinds)})"]
        args: list[Any] = list(kinds)
        for column, value in (("symbol", symbol), ("timeframe", timeframe)):
            if value is not None:
                where.append(f"s.{column} = ?")
                args.append(value)
        if pattern is not None:
            where.append("instr(s.pattern, ?) > 0")
            args.append(pattern)
        if outcome == "OPEN":
            where.append("p.signal_id IS NULL")
        elif outcome is not None:
            where.append("p.outcome = ?")
            args.append(outcome)
        outcome_cols = ", ".join(f"p.{c.strip()}" for c in _OUTCOME_COLS.split(","))
        sql = (f"SELECT {_S_SIGNAL_COLS}, {outcome_cols} FROM signals s LEFT JOIN signal_performance p ON p.signal_id = s.id "
               f"WHERE {' AND '.join(where)} ORDER BY s.candle_time DESC, s.id DESC LIMIT ? OFFSET ?")
        args += [max(0, limit), max(0, offset)]
        n = _SIGNAL_COLS.count(",") + 1

        def q(conn: sqlite3.Connection) -> list[tuple[Signal, SignalOutcome | None]]:
            return [(_row_signal(r[:n]), None if r[n] is None else _row_outcome(r[n:])) for r in conn.execute(sql, args)]

        return await self._db.run(q, "signal_history")
