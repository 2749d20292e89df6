"""The Store protocol on PostgreSQL through asyncpg (``DATABASE_URL``), e.g. Supabase's database.

Rules:
- ``open()`` creates a pool (min 1, max 5 connections) and applies pending migrations
  (``src/storage/migrate.py``); with ``schema=...`` it creates that schema and puts it first on
  ``search_path`` (tests use a throw-away schema per run);
- candles are written per chunk of up to 5,000 rows: small chunks in one statement
  (``INSERT ... SELECT FROM unnest($1::text[], ...) ON CONFLICT DO UPDATE``), chunks of 500+ rows by
  COPY into a temp table and one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``; identical rows are
  not rewritten, duplicates inside a batch collapse to the last one, rows
  go in key order (concurrent overlapping batches cannot deadlock);
  invalid, unclosed or unstorable candles are skipped and counted (``rejected_candles``); a batch
  Postgres refuses permanently is written row by row and only the refused rows are dropped;
- times: the API speaks epoch ms, the tables timestamptz; the conversion happens in SQL, exactly
  (``'epoch' + ms * 1 ms`` and ``EXTRACT(EPOCH ...) * 1000``);
- errors: an unreachable/restarting server, a dropped connection or a timeout raises
  :class:`StoreUnavailable` (the spool takes over); anything else from Postgres raises
  :class:`StoreError`. A store whose ``open()`` failed re-opens itself on the next call.

Supabase: use the direct connection (``db.<ref>.supabase.co:5432``, IPv6) or the session pooler
(``<region>.pooler.supabase.com:5432``). The transaction pooler (port 6543) cannot keep prepared
statements: the store then sets asyncpg's ``statement_cache_size=0`` by itself (also settable with
``?statement_cache_size=0`` in the URL), but that mode is not recommended for a long-running bot.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import re
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import orjson
import structlog

from src.analysis.types import Candle, Signal, SignalKind, iso_to_ms, ms_to_iso
from src.storage.base import (
    TRADE_CALLS_ONLY,
    Delivery,
    FencedOut,
    FollowUp,
    FollowUpDelivery,
    FollowUpEvent,
    GateSeed,
    HistoryOutcome,
    LiveTrack,
    Mute,
    PendingFollowUp,
    RejectingCandleWriter,
    SignalOutcome,
    StoreError,
    StoreUnavailable,
    StreamQuality,
    Subscription,
    evidence_columns,
    evidence_dict,
    evidence_from,
    fenced,
    follow_up_event,
    follow_up_sort_key,
    population,
    signal_kind,
)
from src.storage.fence import fence_sql
from src.storage.migrate import apply_migrations
from src.storage.postgres_trading import PostgresTradingMixin

log = structlog.get_logger(__name__)

CHUNK_ROWS = 5000
TRANSACTION_POOLER_PORT = 6543
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _ts(expr: str) -> str:
    """SQL: epoch ms (bigint) -> timestamptz, exact."""
    return f"('epoch'::timestamptz + ({expr}) * interval '1 millisecond')"


def _ms(expr: str) -> str:
    """SQL: timestamptz -> epoch ms (bigint), exact (EXTRACT returns numeric on Postgres 14+)."""
    return f"(EXTRACT(EPOCH FROM {expr}) * 1000)::bigint"


def split_dsn(dsn: str) -> tuple[str, int | None]:
    """Remove our ``statement_cache_size`` query option from the DSN (asyncpg would send it to the server
    as a setting) and return (dsn, statement_cache_size or None)."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    cache: int | None = None
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == "statement_cache_size":
            try:
                cache = int(value)
            except ValueError as exc:
                raise StoreError(f"statement_cache_size in DATABASE_URL must be an integer, got {value!r}") from exc
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), cache


def describe_dsn(dsn: str) -> str:
    """'postgres:host:port/db' without user or password (for logs and ``>status``)."""
    try:
        parts = urlsplit(dsn)
        return f"postgres:{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
    except ValueError:
        return "postgres:<unparsable url>"


def _is_unavailable(exc: BaseException) -> bool:
    """True for errors that go away when the server is back (connection, restart, overload, timeout)."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        code = getattr(exc, "sqlstate", "") or ""
        # 08 connection exception, 53 insufficient resources (too many connections), 57P operator
        # intervention (admin shutdown, crash, cannot connect now), 57014 query canceled (a server
        # statement_timeout on a busy database, as Supabase sets), 40 serialization/deadlock.
        return code.startswith(("08", "53", "57P", "57014", "40"))
    return False


def _candle_upsert(source: str) -> str:
    """INSERT ... ON CONFLICT DO UPDATE of candles from ``source`` (a query with the stage-table columns);
    also registers unseen symbols; identical rows are skipped (no dead tuples on a warm-up replay)."""
    return f"""
WITH r AS ({source}), new_symbols AS (
    INSERT INTO symbols (symbol) SELECT DISTINCT symbol FROM r ON CONFLICT (symbol) DO NOTHING
)
INSERT INTO candles AS c (symbol, timeframe, open_time, close_time, open, high, low, close, volume, quote_volume,
                          trades, taker_buy_volume, taker_buy_quote_volume)
SELECT symbol, timeframe, {_ts("open_ms")}, {_ts("close_ms")}, open, high, low, close, volume, quote_volume, trades,
       taker_buy_volume, taker_buy_quote_volume
FROM r
ON CONFLICT (symbol, timeframe, open_time) DO UPDATE SET
    close_time = EXCLUDED.close_time, open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
    close = EXCLUDED.close, volume = EXCLUDED.volume, quote_volume = EXCLUDED.quote_volume, trades = EXCLUDED.trades,
    taker_buy_volume = EXCLUDED.taker_buy_volume, taker_buy_quote_volume = EXCLUDED.taker_buy_quote_volume
WHERE (c.close_time, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades, c.taker_buy_volume,
       c.taker_buy_quote_volume)
      IS DISTINCT FROM
      (EXCLUDED.close_time, EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume,
       EXCLUDED.quote_volume, EXCLUDED.trades, EXCLUDED.taker_buy_volume, EXCLUDED.taker_buy_quote_volume)
"""


CANDLE_SQL = _candle_upsert(
    "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::float8[], $6::float8[], $7::float8[], "
    "$8::float8[], $9::float8[], $10::float8[], $11::bigint[], $12::float8[], $13::float8[]) "
    "AS t(symbol, timeframe, open_ms, close_ms, open, high, low, close, volume, quote_volume, trades, "
    "taker_buy_volume, taker_buy_quote_volume)"
)

# Bulk path (warm-up, backfill): COPY into a transaction-scoped temp table, then one INSERT ... SELECT.
# About twice as fast as the unnest statement for thousands of rows, but three round trips, so small
# batches (a live candle close) keep the one-statement unnest path.
COPY_MIN_ROWS = 500
_STAGE = "wyeli_candles_in"
_STAGE_COLS = ("symbol", "timeframe", "open_ms", "close_ms", "open", "high", "low", "close", "volume", "quote_volume",
               "trades", "taker_buy_volume", "taker_buy_quote_volume")
STAGE_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (symbol text, timeframe text, open_ms bigint, close_ms bigint, "
    "open float8, high float8, low float8, close float8, volume float8, quote_volume float8, trades bigint, "
    "taker_buy_volume float8, taker_buy_quote_volume float8) ON COMMIT DROP"
)
STAGE_SQL = _candle_upsert(f"SELECT * FROM {_STAGE}")

_CANDLE_SELECT = (
    f"SELECT symbol, timeframe, {_ms('open_time')} AS open_ms, {_ms('close_time')} AS close_ms, open, high, low, close, "
    "volume, quote_volume, trades, taker_buy_volume, taker_buy_quote_volume FROM candles"
)
_SIGNAL_COLS = (
    f"s.id, s.symbol, s.timeframe, s.pattern, s.direction, s.confidence, s.raw_confidence, s.entry, s.stop_loss, "
    f"s.take_profits, {_ms('s.candle_time')} AS candle_ms, {_ms('s.generated_at')} AS generated_ms, s.reasons, "
    f"s.analyzer_version, s.config_hash, s.features, s.kind, s.gate_reason, s.structure_id, s.evidence"
)
_OUTCOME_COLS = (
    f"signal_id, symbol_name, timeframe, pattern, direction, outcome, {_ms('entry_time')} AS entry_ms, entry_price, "
    f"{_ms('exit_time')} AS exit_ms, exit_price, r_multiple, mfe, mae, fees, bars_held, confidence, "
    f"{_ms('resolved_at')} AS resolved_ms"
)


_SIGNAL_WIDTH = _SIGNAL_COLS.count(",") + 1  # columns of a signal row; columns read after them start here
_HISTORY_OUTCOME_COLS = (
    f"p.signal_id, p.symbol_name, p.timeframe, p.pattern, p.direction, p.outcome, {_ms('p.entry_time')}, p.entry_price, "
    f"{_ms('p.exit_time')}, p.exit_price, p.r_multiple, p.mfe, p.mae, p.fees, p.bars_held, p.confidence, "
    f"{_ms('p.resolved_at')}"
)
_FOLLOW_UP_COLS = f"f.signal_id, f.event, {_ms('f.event_time')}, f.price, f.r_multiple, f.bars, f.entry_price"


def _row_follow_up(r: Sequence[Any] | asyncpg.Record) -> FollowUp:
    return FollowUp(signal_id=r[0], event=follow_up_event(r[1], r[0]), event_time_ms=int(r[2]), price=r[3],
                    r_multiple=r[4], bars=r[5], entry_price=r[6])


def _row_candle(r: asyncpg.Record) -> Candle:
    return Candle(
        symbol=r[0], timeframe=r[1], open_time_ms=r[2], close_time_ms=r[3], open=r[4], high=r[5], low=r[6], close=r[7],
        volume=r[8], quote_volume=r[9], trades=r[10], taker_buy_volume=r[11], taker_buy_quote_volume=r[12],
    )


def _row_signal(r: asyncpg.Record) -> Signal:
    direction = r[4]
    if direction not in ("LONG", "SHORT"):
        raise StoreError(f"signal {r[0]} has invalid direction {direction!r}")
    features = orjson.loads(r[15]) if r[15] else {}
    return Signal(
        id=r[0], symbol=r[1], timeframe=r[2], pattern=r[3], direction=direction, confidence=r[5], raw_confidence=r[6],
        entry=r[7], stop_loss=r[8], take_profits=tuple(r[9] or ()), candle_time_ms=r[10], generated_at=ms_to_iso(r[11]),
        reasons=tuple(r[12] or ()), analyzer_version=r[13], config_hash=r[14],
        features=tuple((str(k), _feature(v)) for k, v in dict(features).items()),
        kind=signal_kind(r[16], r[0]), gate_reason=r[17], structure_id=r[18],
        evidence=evidence_from(None if r[19] is None else orjson.loads(r[19]), r[0]),
    )


def _feature(value: Any) -> float:
    """A stored feature value; JSON has no NaN/inf, so a non-finite feature was stored as null."""
    return math.nan if value is None else float(value)


def _row_outcome(r: Sequence[Any] | asyncpg.Record) -> SignalOutcome:
    return SignalOutcome(
        signal_id=r[0], symbol=r[1], timeframe=r[2], pattern=r[3], direction=r[4], outcome=r[5], entry_time_ms=r[6],
        entry_price=r[7], exit_time_ms=r[8], exit_price=r[9], r_multiple=r[10], mfe_r=r[11], mae_r=r[12], fees=r[13],
        bars_held=r[14], confidence=r[15], resolved_at_ms=r[16],
    )


def _row_delivery(r: asyncpg.Record) -> Delivery:
    return Delivery(
        signal_id=r[0], destination=r[1], status=r[2], message_id=r[3], attempts=r[4], last_error=r[5], updated_at_ms=r[6],
    )


def _row_quality(r: asyncpg.Record) -> StreamQuality:
    return StreamQuality(
        symbol=r[0], timeframe=r[1], last_candle_ms=r[2], gaps_backfilled=r[3], candles_backfilled=r[4], stalls=r[5],
        reconnects=r[6], updated_at_ms=r[7],
    )


def candle_columns(candles: Sequence[Candle]) -> list[list[Any]]:
    """Column arrays for CANDLE_SQL (13 lists, one per parameter)."""
    cols: list[list[Any]] = [[] for _ in range(13)]
    for c in candles:
        row = (c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close, c.volume,
               c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume)
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


def candle_records(candles: Sequence[Candle]) -> list[tuple[Any, ...]]:
    """Rows for the COPY into the stage table (its column order)."""
    return [
        (c.symbol, c.timeframe, c.open_time_ms, c.close_time_ms, c.open, c.high, c.low, c.close, c.volume,
         c.quote_volume, c.trades, c.taker_buy_volume, c.taker_buy_quote_volume)
        for c in candles
    ]


class PostgresStore(PostgresTradingMixin, RejectingCandleWriter):
    """The Store protocol on PostgreSQL (see the module docstring for the rules); the TradingStore methods
    come from :class:`~src.storage.postgres_trading.PostgresTradingMixin`."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 5,
        statement_cache_size: int | None = None,
        command_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        migrate: bool = True,
    ) -> None:
        if schema is not None and not _SCHEMA_RE.match(schema):
            raise StoreError(f"schema name must match {_SCHEMA_RE.pattern}, got {schema!r}")
        self._dsn, dsn_cache = split_dsn(dsn)
        port = urlsplit(self._dsn).port
        cache = statement_cache_size if statement_cache_size is not None else dsn_cache
        if cache is None and port == TRANSACTION_POOLER_PORT:
            cache = 0
            log.warning("postgres_transaction_pooler", port=port,
                        hint="prepared statements disabled (statement_cache_size=0); prefer the session pooler on 5432")
        self._statement_cache_size = 100 if cache is None else cache
        self.schema = schema
        self.name = describe_dsn(self._dsn) + (f" schema={schema}" if schema else "")
        self.rejected_candles = 0
        self._min_size = min_size
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._migrate = migrate
        self._pool: asyncpg.Pool | None = None
        self._open_lock = asyncio.Lock()
        self._closed = False
        # the connection of the transaction this task is in (commit_analysis), so save_signal joins it
        self._tx_conn: contextvars.ContextVar[asyncpg.Connection | None] = contextvars.ContextVar(
            f"wyeli_pg_tx_{id(self)}", default=None)

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Create the pool and apply pending migrations; a second call does nothing."""
        async with self._open_lock:
            if self._pool is not None:
                return
            self._closed = False
            settings = {"search_path": self.schema} if self.schema else None
            try:
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    statement_cache_size=self._statement_cache_size,
                    command_timeout=self._command_timeout,
                    timeout=self._connect_timeout,
                    server_settings=settings,
                )
            except Exception as exc:
                raise self._translate(exc, "connect") from exc
            try:
                async with pool.acquire() as conn:
                    if self.schema:
                        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    if self._migrate:
                        await apply_migrations(conn)
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, Exception):
                    raise self._translate(exc, "migrate") from exc
                raise
            self._pool = pool
            log.info("postgres_store_opened", store=self.name)

    async def close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                pool.terminate()

    async def ping(self) -> bool:
        try:
            async with self._conn("ping") as conn:
                return bool(await conn.fetchval("SELECT 1", timeout=5) == 1)
        except StoreError:
            return False

    def _translate(self, exc: BaseException, what: str) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        text = f"postgres {what} failed: {type(exc).__name__}: {exc}"
        if _is_unavailable(exc):
            return StoreUnavailable(text)
        return StoreError(text)

    @asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[asyncpg.Connection]:
        bound = self._tx_conn.get()
        if bound is not None:  # inside commit_analysis: every statement joins its one transaction
            yield bound
            return
        if self._closed:
            raise StoreError(f"{self.name} is closed")
        if self._pool is None:
            await self.open()  # self-heal after a failed open (server was down at start)
        assert self._pool is not None
        try:
            async with self._pool.acquire(timeout=self._connect_timeout) as conn:
                yield conn
        except StoreError:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    # ------------------------------------------------------------------ candles
    async def upsert_candles(self, candles: Sequence[Candle]) -> None:
        rows = self._accept(candles)
        if not rows:
            return
        try:
            await self._upsert_rows(rows)
        except StoreUnavailable:
            raise
        except StoreError as exc:  # refused permanently: only the rows Postgres refuses are dropped
            await self._write_each(rows, self._upsert_rows, exc)

    async def _upsert_rows(self, rows: Sequence[Candle]) -> None:
        async with self._conn("upsert_candles") as conn, conn.transaction():
            staged = False
            for i in range(0, len(rows), CHUNK_ROWS):
                chunk = rows[i:i + CHUNK_ROWS]
                if len(chunk) < COPY_MIN_ROWS:
                    await conn.execute(CANDLE_SQL, *candle_columns(chunk))
                    continue
                if staged:
                    await conn.execute(f"TRUNCATE {_STAGE}")
                else:
                    await conn.execute(STAGE_DDL)
                    staged = True
                await conn.copy_records_to_table(_STAGE, records=candle_records(chunk), columns=_STAGE_COLS)
                await conn.execute(STAGE_SQL)

    async def last_open_time(self, symbol: str, timeframe: str) -> int | None:
        async with self._conn("last_open_time") as conn:
            value = await conn.fetchval(
                f"SELECT {_ms('open_time')} FROM candles WHERE symbol = $1 AND timeframe = $2 "
                "ORDER BY open_time DESC LIMIT 1",
                symbol, timeframe,
            )
        return None if value is None else int(value)

    async def load_candles(
        self,
        symbol: str,
        timeframe: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        where = ["symbol = $1", "timeframe = $2"]
        args: list[Any] = [symbol, timeframe]
        if start_ms is not None:
            args.append(start_ms)
            where.append(f"open_time >= {_ts(f'${len(args)}::bigint')}")
        if end_ms is not None:
            args.append(end_ms)
            where.append(f"open_time <= {_ts(f'${len(args)}::bigint')}")
        sql = f"{_CANDLE_SELECT} WHERE {' AND '.join(where)}"
        if limit is not None:
            args.append(max(0, limit))
            sql = f"{sql} ORDER BY open_time DESC LIMIT ${len(args)}"
        else:
            sql = f"{sql} ORDER BY open_time ASC"
        async with self._conn("load_candles") as conn:
            rows = await conn.fetch(sql, *args)
        out = [_row_candle(r) for r in rows]
        if limit is not None:
            out.reverse()
        return out

    async def prune_candles(self, older_than_ms: int) -> int:
        async with self._conn("prune_candles") as conn:
            status = await conn.execute(f"DELETE FROM candles WHERE open_time < {_ts('$1::bigint')}", older_than_ms)
        return int(status.split()[-1])

    # ------------------------------------------------------------------ signals
    async def save_signal(self, signal: Signal) -> bool:
        s = signal
        sql = f"""
            WITH new_symbol AS (INSERT INTO symbols (symbol) VALUES ($2) ON CONFLICT (symbol) DO NOTHING)
            INSERT INTO signals (id, symbol, timeframe, pattern, direction, confidence, raw_confidence, entry, stop_loss,
                                 take_profits, candle_time, generated_at, reasons, analyzer_version, config_hash, features,
                                 kind, gate_reason, structure_id, p_win, expected_r, expected_r_lo, expected_r_hi, evidence)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, {_ts('$11::bigint')}, {_ts('$12::bigint')}, $13, $14, $15,
                    $16::json, $17, $18, $19, $20, $21, $22, $23, $24::json)
            ON CONFLICT (id) DO NOTHING RETURNING id"""
        try:
            generated_ms = iso_to_ms(s.generated_at)
        except ValueError as exc:
            raise StoreError(f"signal {s.id}: generated_at {s.generated_at!r} is not ISO-8601") from exc
        features = orjson.dumps(dict(s.features)).decode()  # NaN/inf become null (read back as NaN)
        ev = evidence_dict(s)
        evidence = None if ev is None else orjson.dumps(ev).decode()
        async with self._conn("save_signal") as conn:
            new_id = await conn.fetchval(
                sql, s.id, s.symbol, s.timeframe, s.pattern, s.direction, s.confidence, s.raw_confidence, s.entry,
                s.stop_loss, list(s.take_profits), s.candle_time_ms, generated_ms, list(s.reasons), s.analyzer_version,
                s.config_hash, features, s.kind, s.gate_reason, s.structure_id, *evidence_columns(s), evidence,
            )
        return new_id is not None

    # ------------------------------------------------------------------ analysis watermark
    async def commit_analysis(self, signals: Sequence[Signal], analysed_to: Mapping[tuple[str, str], int]) -> None:
        sql = (
            f"INSERT INTO analysis_watermarks AS w (symbol, timeframe, analysed_to, updated_at) "
            f"SELECT s, t, {_ts('m')}, now() FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(s, t, m) "
            "ON CONFLICT (symbol, timeframe) DO UPDATE SET analysed_to = GREATEST(w.analysed_to, EXCLUDED.analysed_to), "
            "updated_at = now()"
        )
        marks = list(analysed_to.items())
        async with self._conn("commit_analysis") as conn, conn.transaction():
            token = self._tx_conn.set(conn)
            try:
                for s in signals:
                    await self.save_signal(s)  # the same statement as a single save, inside this transaction
                if marks:
                    await conn.execute(sql, [k[0] for k, _ in marks], [k[1] for k, _ in marks], [m for _, m in marks])
            finally:
                self._tx_conn.reset(token)

    async def analysed_up_to(self, symbol: str, timeframe: str) -> int | None:
        async with self._conn("analysed_up_to") as conn:
            value = await conn.fetchval(
                f"SELECT {_ms('analysed_to')} FROM analysis_watermarks WHERE symbol = $1 AND timeframe = $2",
                symbol, timeframe)
        return None if value is None else int(value)

    async def drop_candles_after(self, symbol: str, timeframe: str, after_ms: int) -> int:
        async with self._conn("drop_candles_after") as conn:
            removed = await conn.fetchval(
                f"SELECT wyeli_drop_candles_after($1, $2, {_ts('$3::bigint')})", symbol, timeframe, after_ms)
        return int(removed)

    async def get_signal(self, signal_id: str) -> Signal | None:
        async with self._conn("get_signal") as conn:
            row = await conn.fetchrow(f"SELECT {_SIGNAL_COLS} FROM signals s WHERE s.id = $1", signal_id)
        return None if row is None else _row_signal(row)

    async def recent_signals(
        self, *, symbol: str | None = None, timeframe: str | None = None, limit: int = 20,
        kinds: Collection[SignalKind] | None = None,
    ) -> list[Signal]:
        where: list[str] = []
        args: list[Any] = []
        if symbol is not None:
            args.append(symbol)
            where.append(f"s.symbol = ${len(args)}")
        if timeframe is not None:
            args.append(timeframe)
            where.append(f"s.timeframe = ${len(args)}")
        if kinds is not None:
            args.append(list(kinds))
            where.append(f"s.kind = ANY(${len(args)}::text[])")
        args.append(max(0, limit))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_SIGNAL_COLS} FROM signals s {clause} ORDER BY s.candle_time DESC, s.id DESC LIMIT ${len(args)}"
        async with self._conn("recent_signals") as conn:
            rows = await conn.fetch(sql, *args)
        return [_row_signal(r) for r in rows]

    async def gate_seed(self, *, structure_window_ms: int) -> GateSeed:
        async with self._conn("gate_seed") as conn:
            last = await conn.fetch(
                f"SELECT symbol, timeframe, direction, {_ms('candle_time')}, {_ms('trade_time')} FROM wyeli_last_emitted()")
            structures = await conn.fetch("SELECT structure_id, kind FROM wyeli_recent_structures($1)", structure_window_ms)
            judged = await conn.fetch(f"SELECT symbol, timeframe, {_ms('candle_time')} FROM wyeli_last_signal_times()")
        return GateSeed(
            {(r[0], r[1], r[2]): int(r[3]) for r in last},
            {str(r[0]): signal_kind(r[1], str(r[0])) for r in structures},
            {(r[0], r[1], r[2]): int(r[4]) for r in last if r[4] is not None},
            {(r[0], r[1]): int(r[2]) for r in judged},
        )

    # ------------------------------------------------------------------ outbox
    async def pending_deliveries(
        self, destination: str, *, kinds: Collection[SignalKind] = TRADE_CALLS_ONLY, limit: int = 50,
        since_ms: int | None = None,
    ) -> list[Signal]:
        wanted = [k for k in kinds if k != "gated"]  # gated candidates are never delivered
        if not wanted:
            return []
        since = "" if since_ms is None else (
            f"AND (s.candle_time >= {_ts('$4::bigint')} OR EXISTS (SELECT 1 FROM signal_deliveries a "
            "WHERE a.signal_id = s.id AND a.destination = $1)) ")
        sql = (
            f"SELECT {_SIGNAL_COLS} FROM signals s WHERE s.kind = ANY($3::text[]) {since}AND NOT EXISTS ("
            "SELECT 1 FROM signal_deliveries d WHERE d.signal_id = s.id AND d.destination = $1 "
            "AND d.status IN ('sent', 'skipped')) ORDER BY s.candle_time ASC, s.id ASC LIMIT $2"
        )
        args: list[Any] = [destination, max(0, limit), wanted] + ([] if since_ms is None else [since_ms])
        async with self._conn("pending_deliveries") as conn:
            rows = await conn.fetch(sql, *args)
        return [_row_signal(r) for r in rows]

    async def record_delivery(self, delivery: Delivery) -> None:
        """Upsert the row; a fenced row (``base.fenced``: it names a lease epoch) is written only while that epoch
        holds the lease, checked in the same statement, else :class:`FencedOut`."""
        d = delivery
        is_fenced = fenced(d.status, d.epoch)
        sql = (
            "INSERT INTO signal_deliveries (signal_id, destination, status, message_id, attempts, last_error, updated_at) "
            f"SELECT $1, $2, $3, $4, $5, $6, {_ts('$7::bigint')}"
            + (f" WHERE {fence_sql('$8::bigint')}" if is_fenced else "")
            + " ON CONFLICT (signal_id, destination) DO UPDATE SET "
            "status = EXCLUDED.status, message_id = EXCLUDED.message_id, attempts = EXCLUDED.attempts, "
            "last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at"
        )
        args: list[Any] = [d.signal_id, d.destination, d.status, d.message_id, d.attempts, d.last_error, d.updated_at_ms]
        async with self._conn("record_delivery") as conn:
            result = await conn.execute(sql, *args, *([d.epoch] if is_fenced else []))
        if is_fenced and result.endswith(" 0"):
            raise FencedOut(f"delivery of {d.signal_id} to {d.destination} refused: lease epoch {d.epoch} is stale")

    async def get_delivery(self, signal_id: str, destination: str) -> Delivery | None:
        sql = (
            f"SELECT signal_id, destination, status, message_id, attempts, last_error, {_ms('updated_at')} "
            "FROM signal_deliveries WHERE signal_id = $1 AND destination = $2"
        )
        async with self._conn("get_delivery") as conn:
            row = await conn.fetchrow(sql, signal_id, destination)
        return None if row is None else _row_delivery(row)

    # ------------------------------------------------------------------ outcomes
    async def open_signals(self) -> list[Signal]:
        sql = (
            f"SELECT {_SIGNAL_COLS} FROM signals s WHERE NOT EXISTS "
            "(SELECT 1 FROM signal_performance p WHERE p.signal_id = s.id) ORDER BY s.candle_time ASC, s.id ASC"
        )
        async with self._conn("open_signals") as conn:
            rows = await conn.fetch(sql)
        return [_row_signal(r) for r in rows]

    async def save_outcome(self, outcome: SignalOutcome) -> None:
        o = outcome
        sql = f"""
            INSERT INTO signal_performance (signal_id, symbol_name, timeframe, pattern, direction, outcome, entry_time,
                entry_price, exit_time, exit_price, r_multiple, mfe, mae, fees, bars_held, confidence, resolved_at)
            VALUES ($1, $2, $3, $4, $5, $6, {_ts('$7::bigint')}, $8, {_ts('$9::bigint')}, $10, $11, $12, $13, $14, $15,
                    $16, {_ts('$17::bigint')})
            ON CONFLICT (signal_id) DO UPDATE SET symbol_name = EXCLUDED.symbol_name, timeframe = EXCLUDED.timeframe,
                pattern = EXCLUDED.pattern, direction = EXCLUDED.direction, outcome = EXCLUDED.outcome,
                entry_time = EXCLUDED.entry_time, entry_price = EXCLUDED.entry_price, exit_time = EXCLUDED.exit_time,
                exit_price = EXCLUDED.exit_price, r_multiple = EXCLUDED.r_multiple, mfe = EXCLUDED.mfe, mae = EXCLUDED.mae,
                fees = EXCLUDED.fees, bars_held = EXCLUDED.bars_held, confidence = EXCLUDED.confidence,
                resolved_at = EXCLUDED.resolved_at"""
        async with self._conn("save_outcome") as conn:
            await conn.execute(
                sql, o.signal_id, o.symbol, o.timeframe, o.pattern, o.direction, o.outcome, o.entry_time_ms, o.entry_price,
                o.exit_time_ms, o.exit_price, o.r_multiple, o.mfe_r, o.mae_r, o.fees, o.bars_held, o.confidence,
                o.resolved_at_ms,
            )

    async def get_outcome(self, signal_id: str) -> SignalOutcome | None:
        async with self._conn("get_outcome") as conn:
            row = await conn.fetchrow(f"SELECT {_OUTCOME_COLS} FROM signal_performance WHERE signal_id = $1", signal_id)
        return None if row is None else _row_outcome(row)

    async def live_track(
        self, tracked_reasons: Collection[str], *, symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, since_ms: int | None = None, resolved_before_ms: int | None = None,
    ) -> list[LiveTrack]:
        async with self._conn("live_track") as conn:
            if since_ms is None:
                rows = await conn.fetch(f"SELECT * FROM wyeli_live_track($1::text[], $2, $3, $4, {_ts('$5::bigint')})",
                                        sorted(set(tracked_reasons)), symbol, timeframe, pattern, resolved_before_ms)
            else:
                rows = await conn.fetch(
                    f"SELECT * FROM wyeli_live_track_since($1::text[], $2, $3, $4, $5::bigint, {_ts('$6::bigint')})",
                    sorted(set(tracked_reasons)), symbol, timeframe, pattern, since_ms, resolved_before_ms)
        return [
            LiveTrack(pattern=r[0], timeframe=r[1], population=population(r[2]), candidates=int(r[3]),
                      graded=int(r[4]), sum_r=float(r[5]), sum_r2=float(r[6]), wins=int(r[7]))
            for r in rows
        ]

    # ------------------------------------------------------------------ stream quality
    async def save_stream_quality(self, rows: Sequence[StreamQuality]) -> None:
        if not rows:
            return
        latest = {(q.symbol, q.timeframe): q for q in rows}  # one row per stream per statement
        data = [
            (q.symbol, q.timeframe, q.last_candle_ms, q.gaps_backfilled, q.candles_backfilled, q.stalls, q.reconnects,
             q.updated_at_ms)
            for q in latest.values()
        ]
        sql = (
            "INSERT INTO stream_quality (symbol, timeframe, last_candle_time, gaps_backfilled, candles_backfilled, stalls, "
            f"reconnects, updated_at) VALUES ($1, $2, {_ts('$3::bigint')}, $4, $5, $6, $7, {_ts('$8::bigint')}) "
            "ON CONFLICT (symbol, timeframe) DO UPDATE SET last_candle_time = EXCLUDED.last_candle_time, "
            "gaps_backfilled = EXCLUDED.gaps_backfilled, candles_backfilled = EXCLUDED.candles_backfilled, "
            "stalls = EXCLUDED.stalls, reconnects = EXCLUDED.reconnects, updated_at = EXCLUDED.updated_at"
        )
        async with self._conn("save_stream_quality") as conn, conn.transaction():
            await conn.executemany(sql, data)

    async def stream_quality(self) -> list[StreamQuality]:
        sql = (
            f"SELECT symbol, timeframe, {_ms('last_candle_time')}, gaps_backfilled, candles_backfilled, stalls, reconnects, "
            f"{_ms('updated_at')} FROM stream_quality ORDER BY symbol, timeframe"
        )
        async with self._conn("stream_quality") as conn:
            rows = await conn.fetch(sql)
        return [_row_quality(r) for r in rows]


    # ------------------------------------------------------------------ follow-ups (issue 14)
    async def save_follow_up(self, follow_up: FollowUp) -> bool:
        f = follow_up
        sql = (
            "INSERT INTO signal_follow_ups (signal_id, event, event_time, price, r_multiple, bars, entry_price) "
            f"VALUES ($1, $2, {_ts('$3::bigint')}, $4, $5, $6, $7) ON CONFLICT (signal_id, event) DO NOTHING RETURNING 1"
        )
        async with self._conn("save_follow_up") as conn:
            new = await conn.fetchval(sql, f.signal_id, f.event, f.event_time_ms, f.price, f.r_multiple, f.bars,
                                      f.entry_price)
        return new is not None

    async def follow_ups(self, signal_id: str) -> list[FollowUp]:
        async with self._conn("follow_ups") as conn:
            rows = await conn.fetch(f"SELECT {_FOLLOW_UP_COLS} FROM signal_follow_ups f WHERE f.signal_id = $1", signal_id)
        return sorted((_row_follow_up(r) for r in rows), key=follow_up_sort_key)

    async def open_tp2_watches(self) -> list[tuple[Signal, FollowUp]]:
        sql = (
            f"SELECT {_SIGNAL_COLS}, {_FOLLOW_UP_COLS} FROM signals s JOIN signal_follow_ups f ON f.signal_id = s.id "
            "AND f.event = 'tp1' WHERE cardinality(s.take_profits) >= 2 AND NOT EXISTS (SELECT 1 FROM signal_follow_ups g "
            "WHERE g.signal_id = s.id AND g.event IN ('tp2', 'tp2_missed')) ORDER BY s.candle_time, s.id"
        )
        async with self._conn("open_tp2_watches") as conn:
            rows = await conn.fetch(sql)
        return [(_row_signal(r), _row_follow_up(tuple(r)[_SIGNAL_WIDTH:])) for r in rows]

    async def pending_follow_ups(self, destination: str, *, limit: int = 50) -> list[PendingFollowUp]:
        sql = (
            f"SELECT {_SIGNAL_COLS}, {_FOLLOW_UP_COLS}, d.message_id FROM signal_follow_ups f "
            "JOIN signals s ON s.id = f.signal_id "
            "JOIN signal_deliveries d ON d.signal_id = f.signal_id AND d.destination = $1 AND d.status = 'sent' "
            "AND d.message_id IS NOT NULL "
            "WHERE f.event <> 'tp2_missed' AND NOT EXISTS (SELECT 1 FROM follow_up_deliveries x WHERE "
            "x.signal_id = f.signal_id AND x.event = f.event AND x.destination = $1 AND x.status IN ('sent', 'skipped')) "
            "ORDER BY f.event_time, f.signal_id, "
            "array_position(ARRAY['invalidated', 'stopped', 'tp1', 'expired', 'tp2'], f.event) LIMIT $2"
        )
        async with self._conn("pending_follow_ups") as conn:
            rows = await conn.fetch(sql, destination, max(0, limit))
        return [PendingFollowUp(_row_follow_up(tuple(r)[_SIGNAL_WIDTH:]), _row_signal(r), str(r[_SIGNAL_WIDTH + 7]))
                for r in rows]

    async def record_follow_up_delivery(self, delivery: FollowUpDelivery) -> None:
        d = delivery
        is_fenced = fenced(d.status, d.epoch)
        sql = (
            "INSERT INTO follow_up_deliveries (signal_id, event, destination, status, message_id, attempts, last_error, "
            f"updated_at) SELECT $1, $2, $3, $4, $5, $6, $7, {_ts('$8::bigint')}"
            + (f" WHERE {fence_sql('$9::bigint')}" if is_fenced else "")
            + " ON CONFLICT (signal_id, event, destination) DO UPDATE SET status = EXCLUDED.status, "
            "message_id = EXCLUDED.message_id, attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, "
            "updated_at = EXCLUDED.updated_at"
        )
        args: list[Any] = [d.signal_id, d.event, d.destination, d.status, d.message_id, d.attempts, d.last_error,
                           d.updated_at_ms]
        async with self._conn("record_follow_up_delivery") as conn:
            result = await conn.execute(sql, *args, *([d.epoch] if is_fenced else []))
        if is_fenced and result.endswith(" 0"):
            raise FencedOut(f"follow-up {d.event} of {d.signal_id} to {d.destination} refused: lease epoch {d.epoch} "
                            "is stale")

    async def get_follow_up_delivery(self, signal_id: str, event: FollowUpEvent, destination: str) -> FollowUpDelivery | None:
        sql = (
            f"SELECT signal_id, event, destination, status, message_id, attempts, last_error, {_ms('updated_at')} "
            "FROM follow_up_deliveries WHERE signal_id = $1 AND event = $2 AND destination = $3"
        )
        async with self._conn("get_follow_up_delivery") as conn:
            r = await conn.fetchrow(sql, signal_id, event, destination)
        if r is None:
            return None
        return FollowUpDelivery(r[0], follow_up_event(r[1], r[0]), r[2], r[3], r[4], r[5], r[6], r[7])

    # ------------------------------------------------------------------ subscriptions and mutes (issue 14)
    async def save_subscription(self, subscription: Subscription) -> bool:
        s = subscription
        sql = (
            "INSERT INTO discord_subscriptions (destination, symbol, timeframe, created_by, created_at) "
            f"VALUES ($1, $2, $3, $4, {_ts('$5::bigint')}) ON CONFLICT (destination, symbol, timeframe) DO NOTHING RETURNING 1"
        )
        async with self._conn("save_subscription") as conn:
            new = await conn.fetchval(sql, s.destination, s.symbol, s.timeframe, s.created_by, s.created_at_ms)
        return new is not None

    async def delete_subscriptions(self, destination: str, *, symbol: str | None = None,
                                   timeframe: str | None = None) -> int:
        return await self._delete_keyed("discord_subscriptions", destination, symbol, timeframe)

    async def subscriptions(self, destination: str | None = None) -> list[Subscription]:
        sql = (f"SELECT destination, symbol, timeframe, created_by, {_ms('created_at')} FROM discord_subscriptions "
               "WHERE ($1::text IS NULL OR destination = $1) ORDER BY destination, symbol, timeframe")
        async with self._conn("subscriptions") as conn:
            rows = await conn.fetch(sql, destination)
        return [Subscription(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    async def save_mute(self, mute: Mute) -> None:
        m = mute
        sql = (
            "INSERT INTO discord_mutes (destination, symbol, timeframe, until, created_by, created_at) "
            f"VALUES ($1, $2, $3, {_ts('$4::bigint')}, $5, {_ts('$6::bigint')}) ON CONFLICT (destination, symbol, timeframe) "
            "DO UPDATE SET until = EXCLUDED.until, created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at"
        )
        async with self._conn("save_mute") as conn:
            await conn.execute(sql, m.destination, m.symbol, m.timeframe, m.until_ms, m.created_by, m.created_at_ms)

    async def delete_mutes(self, destination: str, *, symbol: str | None = None, timeframe: str | None = None) -> int:
        return await self._delete_keyed("discord_mutes", destination, symbol, timeframe)

    async def mutes(self, destination: str | None = None) -> list[Mute]:
        sql = (f"SELECT destination, symbol, timeframe, {_ms('until')}, created_by, {_ms('created_at')} FROM discord_mutes "
               "WHERE ($1::text IS NULL OR destination = $1) ORDER BY destination, symbol, timeframe")
        async with self._conn("mutes") as conn:
            rows = await conn.fetch(sql, destination)
        return [Mute(r[0], r[1], r[2], int(r[3]), r[4], int(r[5])) for r in rows]

    async def _delete_keyed(self, table: str, destination: str, symbol: str | None, timeframe: str | None) -> int:
        sql = (f"DELETE FROM {table} WHERE destination = $1 AND ($2::text IS NULL OR symbol = $2) "
               "AND ($3::text IS NULL OR timeframe = $3)")
        async with self._conn(f"delete from {table}") as conn:
            status = await conn.execute(sql, destination, symbol, timeframe)
        return int(status.split()[-1])

    # ------------------------------------------------------------------ history (issue 14)
    async def signal_history(
        self, *, kinds: Collection[SignalKind], symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, outcome: HistoryOutcome | None = None, offset: int = 0, limit: int = 10,
    ) -> list[tuple[Signal, SignalOutcome | None]]:
        if not kinds:
            return []
        sql = (
            f"SELECT {_SIGNAL_COLS}, {_HISTORY_OUTCOME_COLS} FROM signals s LEFT JOIN signal_performance p ON p.signal_id = s.id "
            "WHERE s.kind = ANY($1::text[]) AND ($2::text IS NULL OR s.symbol = $2) AND ($3::text IS NULL OR s.timeframe = $3) "
            "AND ($4::text IS NULL OR strpos(s.pattern, $4) > 0) "
            "AND ($5::text IS NULL OR ($5 = 'OPEN' AND p.signal_id IS NULL) OR p.outcome = $5) "
            "ORDER BY s.candle_time DESC, s.id DESC OFFSET $6 LIMIT $7"
        )
        async with self._conn("signal_history") as conn:
            rows = await conn.fetch(sql, list(kinds), symbol, timeframe, pattern, outcome, max(0, offset), max(0, limit))
        return [(_row_signal(r), None if r[_SIGNAL_WIDTH] is None else _row_outcome(tuple(r)[_SIGNAL_WIDTH:]))
                for r in rows]
