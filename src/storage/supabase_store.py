"""The Store protocol over Supabase's REST API (PostgREST) with the supabase-py async client.

CONTRACT-TESTED ONLY: no Supabase or PostgREST server is reachable from the test machines. The
requests are checked against a local fake (``tests/fakes/postgrest.py``) that verifies paths,
query strings (``on_conflict``, ``columns``, filters, order, limit), ``Prefer`` and auth headers and
JSON bodies, and answers like PostgREST; the SQL functions it calls are tested on real Postgres.
Prefer ``DATABASE_URL`` (PostgresStore) when the host can reach the database directly.

Rules:
- the schema is the same as PostgresStore's: paste the numbered files of ``src/storage/migrations``
  (``001_create_schema.sql``, ``003_analysis_watermarks.sql``, ...) into the Supabase SQL editor, in
  order; ``open()`` checks every one is recorded and names the files still to run;
- only a key that bypasses RLS may write: ``sb_secret_...`` or the legacy ``service_role`` JWT. An
  ``anon``/``authenticated`` JWT or an ``sb_publishable_...`` key is refused with a clear message
  (the JWT payload is decoded WITHOUT verification, only to read its role). The key is never logged;
- writes are upserts on the natural key (``on_conflict``), at most 1,000 rows per request,
  ``Prefer: return=minimal``; rows repeated inside one batch collapse to the last one (Postgres
  refuses to update a row twice in one statement); unstorable candles are skipped and counted, and a
  candle batch refused permanently is written row by row (only the refused rows are dropped);
- supabase-py retries only reads, so every request goes through our own retry: up to
  ``max_attempts`` tries with jittered exponential backoff (``retry_initial`` doubling up to
  ``retry_max`` seconds) on network errors, timeouts, HTTP 408/425/429/5xx; then
  :class:`StoreUnavailable`. Other errors (4xx: constraint, permission, bad request) raise
  :class:`StoreError` at once;
- reads page through PostgREST's row cap (1,000 by default): candles by open_time keyset, other
  lists by offset, until an empty page, so a lower server cap never truncates a result;
- queries PostgREST cannot express as filters (anti-joins, aggregates) are SQL functions called
  through ``/rpc``: ``wyeli_open_signals`` (001), ``wyeli_pending_deliveries_by_kind``, ``wyeli_last_emitted``,
  ``wyeli_recent_structures`` and ``wyeli_live_track`` (002), ``wyeli_pending_follow_ups``,
  ``wyeli_open_tp2_watches``, ``wyeli_pending_deliveries_since``, ``wyeli_signal_history`` and
  ``wyeli_live_track_since`` (005); and so is what must be one transaction (``wyeli_commit_analysis``: a
  batch's candidates with the streams' "analysed up to" watermarks; ``wyeli_drop_candles_after``; migration 003);
- times: timestamptz columns carry ISO-8601 text; conversion to and from epoch ms is exact.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import json
import math
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import structlog
from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from src.analysis.types import Candle, Signal, SignalKind, iso_to_ms, ms_to_iso
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
    RejectingCandleWriter,
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
    population,
    signal_kind,
)
from src.storage.migration_files import discover_in
from src.storage.rest_times import ms_to_ts, ts_to_ms
from src.storage.supabase_trading import SupabaseTradingMixin

log = structlog.get_logger(__name__)

T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# the numbered Postgres migrations this program needs (the REST store cannot apply them: the user pastes them)

MAX_BATCH_ROWS = 1000
_RETRY_STATUS = frozenset({408, 425, 429})
# SQLSTATE classes / PostgREST codes that go away by themselves: connection (08), resources (53),
# operator intervention (57), serialization/deadlock (40); PGRST000-003: database unreachable,
# schema cache not loaded, pool timeout.
_RETRY_CODES = ("08", "53", "57", "40", "PGRST000", "PGRST001", "PGRST002", "PGRST003")
# The HTTP status of the last response in this task (set by an httpx hook: APIError does not carry it).
_last_status: contextvars.ContextVar[int] = contextvars.ContextVar("wyeli_supabase_last_status", default=0)

_CANDLE_COLS = ("symbol,timeframe,open_time,close_time,open,high,low,close,volume,quote_volume,trades,"
                "taker_buy_volume,taker_buy_quote_volume")
_SIGNAL_COLS = ("id,symbol,timeframe,pattern,direction,confidence,raw_confidence,entry,stop_loss,take_profits,"
                "candle_time,generated_at,reasons,analyzer_version,config_hash,features,kind,gate_reason,structure_id,"
                "p_win,expected_r,expected_r_lo,expected_r_hi,evidence")
_OUTCOME_COLS = ("signal_id,symbol_name,timeframe,pattern,direction,outcome,entry_time,entry_price,exit_time,exit_price,"
                 "r_multiple,mfe,mae,fees,bars_held,confidence,resolved_at")
_DELIVERY_COLS = "signal_id,destination,status,message_id,attempts,last_error,updated_at"
_QUALITY_COLS = "symbol,timeframe,last_candle_time,gaps_backfilled,candles_backfilled,stalls,reconnects,updated_at"


# ---------------------------------------------------------------------------- keys
def key_role(key: str) -> str:
    """'secret', 'publishable', or the ``role`` claim of a legacy JWT key (decoded, NOT verified).

    Raises StoreError for something that is neither (the message never contains the key).
    """
    if key.startswith("sb_secret_"):
        return "secret"
    if key.startswith("sb_publishable_"):
        return "publishable"
    parts = key.split(".")
    if len(parts) == 3:
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("role"), str):
            return str(payload["role"])
    raise StoreError(
        f"SUPABASE_SERVICE_KEY is not a Supabase API key ({len(key)} chars): expected an sb_secret_... key "
        "or the legacy service_role JWT (Project Settings -> API keys)"
    )


def check_write_key(key: str) -> str:
    """Return the key's role if it may write (bypasses RLS); raise StoreError otherwise."""
    role = key_role(key)
    if role in ("secret", "service_role"):
        return role
    raise StoreError(
        f"SUPABASE_SERVICE_KEY is a {role!r} key: it cannot write (RLS blocks it, by design). Use the secret key "
        "(sb_secret_...) or the legacy service_role key from Project Settings -> API keys, and keep it server-side"
    )


# ---------------------------------------------------------------------------- conversions
def _opt_ms(value: Any) -> int | None:
    return None if value is None else ts_to_ms(str(value))


def candle_row(c: Candle) -> dict[str, Any]:
    return {
        "symbol": c.symbol, "timeframe": c.timeframe, "open_time": ms_to_ts(c.open_time_ms),
        "close_time": ms_to_ts(c.close_time_ms), "open": c.open, "high": c.high, "low": c.low, "close": c.close,
        "volume": c.volume, "quote_volume": c.quote_volume, "trades": c.trades, "taker_buy_volume": c.taker_buy_volume,
        "taker_buy_quote_volume": c.taker_buy_quote_volume,
    }


def row_candle(r: dict[str, Any]) -> Candle:
    return Candle(
        symbol=r["symbol"], timeframe=r["timeframe"], open_time_ms=ts_to_ms(r["open_time"]),
        close_time_ms=ts_to_ms(r["close_time"]), open=float(r["open"]), high=float(r["high"]), low=float(r["low"]),
        close=float(r["close"]), volume=float(r["volume"]), quote_volume=float(r["quote_volume"]), trades=int(r["trades"]),
        taker_buy_volume=float(r["taker_buy_volume"]), taker_buy_quote_volume=float(r["taker_buy_quote_volume"]),
    )


def signal_row(s: Signal) -> dict[str, Any]:
    try:
        generated = ms_to_ts(iso_to_ms(s.generated_at))
    except ValueError as exc:
        raise StoreError(f"signal {s.id}: generated_at {s.generated_at!r} is not ISO-8601") from exc
    return {
        "id": s.id, "symbol": s.symbol, "timeframe": s.timeframe, "pattern": s.pattern, "direction": s.direction,
        "confidence": s.confidence, "raw_confidence": s.raw_confidence, "entry": s.entry, "stop_loss": s.stop_loss,
        "take_profits": list(s.take_profits), "candle_time": ms_to_ts(s.candle_time_ms), "generated_at": generated,
        "reasons": list(s.reasons), "analyzer_version": s.analyzer_version, "config_hash": s.config_hash,
        "features": {k: v if math.isfinite(v) else None for k, v in s.features},  # JSON has no NaN/inf
        "kind": s.kind, "gate_reason": s.gate_reason, "structure_id": s.structure_id,
        **dict(zip(("p_win", "expected_r", "expected_r_lo", "expected_r_hi"), evidence_columns(s), strict=True)),
        "evidence": evidence_dict(s),
    }


def row_signal(r: dict[str, Any]) -> Signal:
    direction = r["direction"]
    if direction not in ("LONG", "SHORT"):
        raise StoreError(f"signal {r['id']} has invalid direction {direction!r}")
    features = r.get("features") or {}
    if isinstance(features, str):  # a json column some proxies hand back as text
        features = json.loads(features)
    return Signal(
        id=r["id"], symbol=r["symbol"], timeframe=r["timeframe"], pattern=r["pattern"], direction=direction,
        confidence=float(r["confidence"]), raw_confidence=float(r["raw_confidence"]), entry=float(r["entry"]),
        stop_loss=float(r["stop_loss"]), take_profits=tuple(float(x) for x in r["take_profits"] or ()),
        candle_time_ms=ts_to_ms(r["candle_time"]), generated_at=ms_to_iso(ts_to_ms(r["generated_at"])),
        reasons=tuple(str(x) for x in r["reasons"] or ()), analyzer_version=r["analyzer_version"],
        config_hash=r["config_hash"],
        features=tuple((str(k), math.nan if v is None else float(v)) for k, v in dict(features).items()),
        kind=signal_kind(r.get("kind", "trade"), r["id"]), gate_reason=r.get("gate_reason") or "",
        structure_id=r.get("structure_id") or "", evidence=evidence_from(r.get("evidence"), r["id"]),
    )


def outcome_row(o: SignalOutcome) -> dict[str, Any]:
    return {
        "signal_id": o.signal_id, "symbol_name": o.symbol, "timeframe": o.timeframe, "pattern": o.pattern,
        "direction": o.direction, "outcome": o.outcome, "entry_time": ms_to_ts(o.entry_time_ms),
        "entry_price": o.entry_price, "exit_time": ms_to_ts(o.exit_time_ms), "exit_price": o.exit_price,
        "r_multiple": o.r_multiple, "mfe": o.mfe_r, "mae": o.mae_r, "fees": o.fees, "bars_held": o.bars_held,
        "confidence": o.confidence, "resolved_at": ms_to_ts(o.resolved_at_ms),
    }


def row_outcome(r: dict[str, Any]) -> SignalOutcome:
    return SignalOutcome(
        signal_id=r["signal_id"], symbol=r["symbol_name"], timeframe=r["timeframe"], pattern=r["pattern"],
        direction=r["direction"], outcome=r["outcome"], entry_time_ms=ts_to_ms(r["entry_time"]),
        entry_price=float(r["entry_price"]), exit_time_ms=ts_to_ms(r["exit_time"]), exit_price=float(r["exit_price"]),
        r_multiple=float(r["r_multiple"]), mfe_r=float(r["mfe"]), mae_r=float(r["mae"]), fees=float(r["fees"]),
        bars_held=int(r["bars_held"]), confidence=float(r["confidence"]), resolved_at_ms=ts_to_ms(r["resolved_at"]),
    )


def delivery_row(d: Delivery) -> dict[str, Any]:
    return {
        "signal_id": d.signal_id, "destination": d.destination, "status": d.status, "message_id": d.message_id,
        "attempts": d.attempts, "last_error": d.last_error, "updated_at": ms_to_ts(d.updated_at_ms),
    }


def row_delivery(r: dict[str, Any]) -> Delivery:
    return Delivery(
        signal_id=r["signal_id"], destination=r["destination"], status=r["status"], message_id=r["message_id"],
        attempts=int(r["attempts"]), last_error=r["last_error"], updated_at_ms=ts_to_ms(r["updated_at"]),
    )


def quality_row(q: StreamQuality) -> dict[str, Any]:
    return {
        "symbol": q.symbol, "timeframe": q.timeframe,
        "last_candle_time": None if q.last_candle_ms is None else ms_to_ts(q.last_candle_ms),
        "gaps_backfilled": q.gaps_backfilled, "candles_backfilled": q.candles_backfilled, "stalls": q.stalls,
        "reconnects": q.reconnects, "updated_at": ms_to_ts(q.updated_at_ms),
    }


def row_quality(r: dict[str, Any]) -> StreamQuality:
    return StreamQuality(
        symbol=r["symbol"], timeframe=r["timeframe"], last_candle_ms=_opt_ms(r["last_candle_time"]),
        gaps_backfilled=int(r["gaps_backfilled"]), candles_backfilled=int(r["candles_backfilled"]),
        stalls=int(r["stalls"]), reconnects=int(r["reconnects"]), updated_at_ms=ts_to_ms(r["updated_at"]),
    )


_FOLLOW_UP_COLS = "signal_id,event,event_time,price,r_multiple,bars,entry_price"
_FOLLOW_UP_DELIVERY_COLS = "signal_id,event,destination,status,message_id,attempts,last_error,updated_at"


def follow_up_row(f: FollowUp) -> dict[str, Any]:
    return {"signal_id": f.signal_id, "event": f.event, "event_time": ms_to_ts(f.event_time_ms), "price": f.price,
            "r_multiple": f.r_multiple, "bars": f.bars, "entry_price": f.entry_price}


def row_follow_up(r: dict[str, Any]) -> FollowUp:
    return FollowUp(signal_id=r["signal_id"], event=follow_up_event(r["event"], r["signal_id"]),
                    event_time_ms=ts_to_ms(r["event_time"]), price=float(r["price"]), r_multiple=float(r["r_multiple"]),
                    bars=int(r["bars"]), entry_price=float(r["entry_price"]))


def follow_up_delivery_row(d: FollowUpDelivery) -> dict[str, Any]:
    return {"signal_id": d.signal_id, "event": d.event, "destination": d.destination, "status": d.status,
            "message_id": d.message_id, "attempts": d.attempts, "last_error": d.last_error,
            "updated_at": ms_to_ts(d.updated_at_ms)}


def row_follow_up_delivery(r: dict[str, Any]) -> FollowUpDelivery:
    return FollowUpDelivery(signal_id=r["signal_id"], event=follow_up_event(r["event"], r["signal_id"]),
                            destination=r["destination"], status=r["status"], message_id=r["message_id"],
                            attempts=int(r["attempts"]), last_error=r["last_error"], updated_at_ms=ts_to_ms(r["updated_at"]))


def is_transient(exc: BaseException, status: int) -> bool:
    """True when retrying may succeed: network errors, timeouts, 408/425/429/5xx, or a transient SQLSTATE."""
    if isinstance(exc, httpx.TransportError | TimeoutError | OSError):
        return True
    if isinstance(exc, RuntimeError) and "client has been closed" in str(exc):
        return True  # httpx: our client was closed under the request (a concurrent failed open); retry on a new one
    if isinstance(exc, APIError):
        code = str(exc.code or "")
        if not status and code.isdigit() and len(code) == 3:
            status = int(code)  # a non-JSON error page: postgrest-py puts the HTTP status in ``code``
        return status in _RETRY_STATUS or status >= 500 or code.startswith(_RETRY_CODES)
    return False


async def _record_status(response: httpx.Response) -> None:
    _last_status.set(response.status_code)


class SupabaseRestStore(SupabaseTradingMixin, RejectingCandleWriter):
    """The Store protocol over Supabase REST (see the module docstring; contract-tested only); the TradingStore
    methods come from :class:`~src.storage.supabase_trading.SupabaseTradingMixin`."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        batch_rows: int = MAX_BATCH_ROWS,
        page_rows: int = 1000,
        max_attempts: int = 5,
        retry_initial: float = 0.5,
        retry_max: float = 8.0,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 1 <= batch_rows <= MAX_BATCH_ROWS:
            raise StoreError(f"batch_rows must be between 1 and {MAX_BATCH_ROWS}, got {batch_rows}")
        self.key_role = check_write_key(key)
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise StoreError("SUPABASE_URL must look like https://<project-ref>.supabase.co")
        self.url = url.rstrip("/")
        self.name = f"supabase:{parts.hostname}"
        self.rejected_candles = 0
        self._key = key
        self._batch_rows = batch_rows
        self._page_rows = page_rows
        self._max_attempts = max(1, max_attempts)
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._timeout = timeout
        self._sleep = sleep
        self._client: AsyncClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._open_lock = asyncio.Lock()
        self._closed = False
        self._known_symbols: set[str] = set()

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Create the client and check the schema is installed; a second call does nothing."""
        async with self._open_lock:
            if self._client is not None:
                return
            self._closed = False
            http = httpx.AsyncClient(timeout=self._timeout, http2=True, follow_redirects=True,
                                     event_hooks={"response": [_record_status]})
            options = AsyncClientOptions(httpx_client=http, postgrest_client_retry=False, auto_refresh_token=False,
                                         persist_session=False)
            try:
                client = await acreate_client(self.url, self._key, options=options)
            except Exception as exc:
                await http.aclose()
                raise StoreError(f"supabase client for {self.name} could not be created: {type(exc).__name__}") from exc
            # The client is published only once the schema check passed: a concurrent call must never get a
            # half-opened client that a failed (or timed-out) open then closes under it.
            try:
                # every recorded version, not just the newest: numbered files can be pasted out of order
                res = await self._call("check schema", lambda c: c.table("schema_migrations").select("version")
                                       .order("version", desc=True).limit(1000).execute(), client=client)
            except BaseException:
                await http.aclose()
                raise
            applied = {int(r["version"]) for r in res}
            missing = [m.name for m in discover_in(MIGRATIONS_DIR) if m.version not in applied]
            if missing:
                await http.aclose()
                raise StoreError(f"{self.name}: the schema is incomplete; paste these files from src/storage/migrations "
                                 f"into the Supabase SQL editor and run them, in order: "
                                 f"{', '.join(name + '.sql' for name in missing)}")
            self._client, self._http = client, http
            log.info("supabase_store_opened", store=self.name, key_role=self.key_role, schema_version=max(applied))

    async def _drop_client(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.aclose()

    async def close(self) -> None:
        self._closed = True
        await self._drop_client()

    async def ping(self) -> bool:
        try:
            client = await self._ready()
            await client.table("symbols").select("symbol").limit(1).execute()
            return True
        except Exception:
            return False

    async def _ready(self) -> AsyncClient:
        if self._closed:
            raise StoreError(f"{self.name} is closed")
        if self._client is None:
            await self.open()  # self-heal after a failed open (network was down at start)
        assert self._client is not None
        return self._client

    # ------------------------------------------------------------------ the one request path
    async def _call(self, what: str, request: Callable[[AsyncClient], Awaitable[Any]],
                    client: AsyncClient | None = None) -> list[dict[str, Any]]:
        """Run ``request`` with retries; return the response rows (``data``), or [] for minimal responses.
        ``client``: the one being opened (the schema check), else the store's own (opened on demand)."""
        if client is None:
            client = await self._ready()
        delay = self._retry_initial
        for attempt in range(1, self._max_attempts + 1):
            _last_status.set(0)
            try:
                response = await request(client)
            except Exception as exc:
                status = _last_status.get()
                if isinstance(exc, APIError) and exc.code in ("PGRST205", "42P01", "42883", "PGRST202"):
                    raise StoreError(
                        f"supabase {what} failed: {exc.message} - is the schema installed? Run every numbered file "
                        "of src/storage/migrations (001_create_schema.sql first) in the Supabase SQL editor"
                    ) from exc
                text = _describe(exc, status)
                if not is_transient(exc, status):
                    if status in (401, 403) or (isinstance(exc, APIError) and exc.code in ("42501", "PGRST301")):
                        raise StoreError(f"supabase {what} refused ({text}): check SUPABASE_SERVICE_KEY is the "
                                         "secret/service_role key of this project") from exc
                    raise StoreError(f"supabase {what} failed: {text}") from exc
                if attempt == self._max_attempts:
                    raise StoreUnavailable(f"supabase {what} failed after {attempt} attempts: {text}") from exc
                log.warning("supabase_retry", what=what, attempt=attempt, error=text, delay=round(delay, 3))
                await self._sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._retry_max)
                continue
            data = getattr(response, "data", None)
            return data if isinstance(data, list) else []
        raise AssertionError("unreachable")  # pragma: no cover

    async def _scalar_call(self, what: str, request: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
        """:meth:`_call` for an RPC that returns one value (PostgREST sends it bare, not as a list of rows)."""
        holder: list[Any] = []

        async def run(c: AsyncClient) -> Any:
            response = await request(c)
            holder.append(getattr(response, "data", None))
            return response

        await self._call(what, run)
        return holder[-1] if holder else None

    async def _count_call(self, what: str, request: Callable[[AsyncClient], Awaitable[Any]]) -> int:
        holder: list[int] = []

        async def run(c: AsyncClient) -> Any:
            response = await request(c)
            holder.append(int(response.count or 0))
            return response

        await self._call(what, run)
        return holder[-1]

    async def _upsert(self, what: str, table: str, rows: list[dict[str, Any]], on_conflict: str) -> None:
        for i in range(0, len(rows), self._batch_rows):
            chunk = rows[i:i + self._batch_rows]
            await self._call(what, partial(_upsert_request, table, chunk, on_conflict))

    async def _pages(self, what: str, page: Callable[[AsyncClient, int, int], Awaitable[Any]]) -> list[dict[str, Any]]:
        """Offset paging until an empty page (a lower server row cap never truncates the result)."""
        out: list[dict[str, Any]] = []
        while True:
            offset = len(out)
            rows = await self._call(what, partial(_page_request, page, offset, self._page_rows))
            if not rows:
                return out
            out.extend(rows)

    async def _register_symbols(self, symbols: set[str]) -> None:
        new = sorted(symbols - self._known_symbols)
        if not new:
            return
        await self._call("register symbols", lambda c: c.table("symbols").upsert(
            [{"symbol": s} for s in new], on_conflict="symbol", returning=ReturnMethod.minimal,
            ignore_duplicates=True).execute())
        self._known_symbols.update(new)

    # ------------------------------------------------------------------ candles
    async def upsert_candles(self, candles: Sequence[Candle]) -> None:
        rows = self._accept(candles)
        if not rows:
            return
        await self._register_symbols({c.symbol for c in rows})
        try:
            await self._upsert_rows(rows)
        except StoreUnavailable:
            raise
        except StoreError as exc:  # refused permanently: only the rows PostgREST refuses are dropped
            await self._write_each(rows, self._upsert_rows, exc)

    async def _upsert_rows(self, rows: Sequence[Candle]) -> None:
        try:
            data = [candle_row(c) for c in rows]
        except (OverflowError, ValueError) as exc:
            raise StoreError(f"supabase upsert candles: {type(exc).__name__}: {exc}") from exc
        await self._upsert("upsert candles", "candles", data, "symbol,timeframe,open_time")

    async def last_open_time(self, symbol: str, timeframe: str) -> int | None:
        rows = await self._call("last open time", lambda c: c.table("candles").select("open_time").eq("symbol", symbol)
                                .eq("timeframe", timeframe).order("open_time", desc=True).limit(1).execute())
        return ts_to_ms(rows[0]["open_time"]) if rows else None

    async def load_candles(
        self,
        symbol: str,
        timeframe: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        newest_first = limit is not None
        wanted = max(0, limit) if limit is not None else None
        out: list[Candle] = []
        cursor: int | None = None  # keyset: the open time of the last row received
        while wanted is None or len(out) < wanted:
            size = self._page_rows if wanted is None else min(self._page_rows, wanted - len(out))

            def page(c: AsyncClient, cursor: int | None = cursor, size: int = size) -> Awaitable[Any]:
                q = c.table("candles").select(_CANDLE_COLS).eq("symbol", symbol).eq("timeframe", timeframe)
                if start_ms is not None:
                    q = q.gte("open_time", ms_to_ts(start_ms))
                if end_ms is not None:
                    q = q.lte("open_time", ms_to_ts(end_ms))
                if cursor is not None:
                    q = q.lt("open_time", ms_to_ts(cursor)) if newest_first else q.gt("open_time", ms_to_ts(cursor))
                return q.order("open_time", desc=newest_first).limit(size).execute()

            rows = await self._call("load candles", page)
            if not rows:
                break
            batch = [row_candle(r) for r in rows]
            out.extend(batch)
            cursor = batch[-1].open_time_ms
        if newest_first:
            out.reverse()
        return out

    async def prune_candles(self, older_than_ms: int) -> int:
        return await self._count_call("prune candles", lambda c: c.table("candles").delete(
            count=CountMethod.exact, returning=ReturnMethod.minimal).lt("open_time", ms_to_ts(older_than_ms)).execute())

    # ------------------------------------------------------------------ signals
    async def save_signal(self, signal: Signal) -> bool:
        """True if the row was inserted. (A retried insert whose first answer was lost reports False; the
        row is stored either way.)"""
        row = signal_row(signal)
        await self._register_symbols({signal.symbol})
        inserted = await self._call("save signal", lambda c: c.table("signals").upsert(
            [row], on_conflict="id", returning=ReturnMethod.representation, ignore_duplicates=True).execute())
        return bool(inserted)

    # ------------------------------------------------------------------ analysis watermark
    async def commit_analysis(self, signals: Sequence[Signal], analysed_to: Mapping[tuple[str, str], int]) -> None:
        """One ``wyeli_commit_analysis`` call: one transaction on the server (retried whole: it is idempotent)."""
        rows = [signal_row(s) for s in signals]
        marks = [{"symbol": sym, "timeframe": tf, "analysed_to": ms_to_ts(ms)} for (sym, tf), ms in analysed_to.items()]
        if not rows and not marks:
            return
        await self._scalar_call("commit analysis", lambda c: c.rpc(
            "wyeli_commit_analysis", {"p_signals": rows, "p_watermarks": marks}).execute())

    async def analysed_up_to(self, symbol: str, timeframe: str) -> int | None:
        rows = await self._call("analysed up to", lambda c: c.table("analysis_watermarks").select("analysed_to")
                                .eq("symbol", symbol).eq("timeframe", timeframe).limit(1).execute())
        return ts_to_ms(rows[0]["analysed_to"]) if rows else None

    async def drop_candles_after(self, symbol: str, timeframe: str, after_ms: int) -> int:
        removed = await self._scalar_call("drop candles after", lambda c: c.rpc("wyeli_drop_candles_after", {
            "p_symbol": symbol, "p_timeframe": timeframe, "p_after": ms_to_ts(after_ms)}).execute())
        return int(removed or 0)

    async def get_signal(self, signal_id: str) -> Signal | None:
        rows = await self._call("get signal", lambda c: c.table("signals").select(_SIGNAL_COLS).eq("id", signal_id)
                                .limit(1).execute())
        return row_signal(rows[0]) if rows else None

    async def recent_signals(
        self, *, symbol: str | None = None, timeframe: str | None = None, limit: int = 20,
        kinds: Collection[SignalKind] | None = None,
    ) -> list[Signal]:
        wanted = max(0, limit)
        if kinds is not None and not kinds:
            return []

        def page(c: AsyncClient, offset: int, size: int) -> Awaitable[Any]:
            q = c.table("signals").select(_SIGNAL_COLS)
            if symbol is not None:
                q = q.eq("symbol", symbol)
            if timeframe is not None:
                q = q.eq("timeframe", timeframe)
            if kinds is not None:
                q = q.in_("kind", sorted(set(kinds)))
            return q.order("candle_time", desc=True).order("id", desc=True).range(
                offset, offset + min(size, wanted - offset) - 1).execute()

        out: list[dict[str, Any]] = []
        while len(out) < wanted:
            offset = len(out)
            rows = await self._call("recent signals", partial(_page_request, page, offset, self._page_rows))
            if not rows:
                break
            out.extend(rows)
        return [row_signal(r) for r in out[:wanted]]

    async def gate_seed(self, *, structure_window_ms: int) -> GateSeed:
        last = await self._pages("gate seed", lambda c, off, n: c.rpc("wyeli_last_emitted", {})
                                 .order("symbol").order("timeframe").order("direction").range(off, off + n - 1).execute())
        structures = await self._pages("gate seed", lambda c, off, n: c.rpc(
            "wyeli_recent_structures", {"p_window_ms": structure_window_ms})
            .order("structure_id").range(off, off + n - 1).execute())
        judged = await self._pages("gate seed", lambda c, off, n: c.rpc("wyeli_last_signal_times", {})
                                   .order("symbol").order("timeframe").range(off, off + n - 1).execute())
        return GateSeed(
            {(r["symbol"], r["timeframe"], r["direction"]): ts_to_ms(r["candle_time"]) for r in last},
            {str(r["structure_id"]): signal_kind(r["kind"], str(r["structure_id"])) for r in structures},
            {(r["symbol"], r["timeframe"], r["direction"]): ts_to_ms(r["trade_time"]) for r in last
             if r["trade_time"] is not None},
            {(r["symbol"], r["timeframe"]): ts_to_ms(r["candle_time"]) for r in judged},
        )

    # ------------------------------------------------------------------ outbox
    async def pending_deliveries(
        self, destination: str, *, kinds: Collection[SignalKind] = TRADE_CALLS_ONLY, limit: int = 50,
        since_ms: int | None = None,
    ) -> list[Signal]:
        wanted = max(0, limit)
        kind_list = sorted({k for k in kinds if k != "gated"})  # gated candidates are never delivered
        if wanted == 0 or not kind_list:
            return []
        if since_ms is None:
            fn, args = "wyeli_pending_deliveries_by_kind", {"p_destination": destination, "p_kinds": kind_list,
                                                           "p_limit": wanted}
        else:
            fn, args = "wyeli_pending_deliveries_since", {"p_destination": destination, "p_kinds": kind_list,
                                                         "p_since_ms": since_ms, "p_limit": wanted}
        rows = await self._pages("pending deliveries", lambda c, off, n: c.rpc(fn, args)
                                 .order("candle_time").order("id").range(off, off + n - 1).execute())
        return [row_signal(r) for r in rows[:wanted]]

    async def record_delivery(self, delivery: Delivery) -> None:
        await self._upsert("record delivery", "signal_deliveries", [delivery_row(delivery)], "signal_id,destination")

    async def get_delivery(self, signal_id: str, destination: str) -> Delivery | None:
        rows = await self._call("get delivery", lambda c: c.table("signal_deliveries").select(_DELIVERY_COLS)
                                .eq("signal_id", signal_id).eq("destination", destination).limit(1).execute())
        return row_delivery(rows[0]) if rows else None

    # ------------------------------------------------------------------ outcomes
    async def open_signals(self) -> list[Signal]:
        rows = await self._pages("open signals", lambda c, off, n: c.rpc("wyeli_open_signals", {})
                                 .order("candle_time").order("id").range(off, off + n - 1).execute())
        return [row_signal(r) for r in rows]

    async def save_outcome(self, outcome: SignalOutcome) -> None:
        await self._upsert("save outcome", "signal_performance", [outcome_row(outcome)], "signal_id")

    async def get_outcome(self, signal_id: str) -> SignalOutcome | None:
        rows = await self._call("get outcome", lambda c: c.table("signal_performance").select(_OUTCOME_COLS)
                                .eq("signal_id", signal_id).limit(1).execute())
        return row_outcome(rows[0]) if rows else None

    async def live_track(
        self, tracked_reasons: Collection[str], *, symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, since_ms: int | None = None, resolved_before_ms: int | None = None,
    ) -> list[LiveTrack]:
        args: dict[str, Any] = {"p_tracked": sorted(set(tracked_reasons)), "p_symbol": symbol, "p_timeframe": timeframe,
                                "p_pattern": pattern,
                                "p_resolved_before": None if resolved_before_ms is None else ms_to_ts(resolved_before_ms)}
        fn = "wyeli_live_track"
        if since_ms is not None:
            fn, args["p_since_ms"] = "wyeli_live_track_since", since_ms
        rows = await self._pages("live track", lambda c, off, n: c.rpc(fn, args)
                                 .order("pattern").order("timeframe").order("population").range(off, off + n - 1).execute())
        return [
            LiveTrack(pattern=r["pattern"], timeframe=r["timeframe"], population=population(r["population"]),
                      candidates=int(r["candidates"]), graded=int(r["graded"]), sum_r=float(r["sum_r"]),
                      sum_r2=float(r["sum_r2"]), wins=int(r["wins"]))
            for r in rows
        ]

    # ------------------------------------------------------------------ stream quality
    async def save_stream_quality(self, rows: Sequence[StreamQuality]) -> None:
        if not rows:
            return
        latest = {(q.symbol, q.timeframe): q for q in rows}
        await self._upsert("save stream quality", "stream_quality", [quality_row(q) for q in latest.values()],
                           "symbol,timeframe")

    async def stream_quality(self) -> list[StreamQuality]:
        rows = await self._pages("stream quality", lambda c, off, n: c.table("stream_quality").select(_QUALITY_COLS)
                                 .order("symbol").order("timeframe").range(off, off + n - 1).execute())
        return [row_quality(r) for r in rows]

    # ------------------------------------------------------------------ follow-ups (issue 14)
    async def save_follow_up(self, follow_up: FollowUp) -> bool:
        row = follow_up_row(follow_up)
        inserted = await self._call("save follow-up", lambda c: c.table("signal_follow_ups").upsert(
            [row], on_conflict="signal_id,event", returning=ReturnMethod.representation, ignore_duplicates=True).execute())
        return bool(inserted)

    async def follow_ups(self, signal_id: str) -> list[FollowUp]:
        rows = await self._pages("follow-ups", lambda c, off, n: c.table("signal_follow_ups").select(_FOLLOW_UP_COLS)
                                 .eq("signal_id", signal_id).order("event_time").order("event")
                                 .range(off, off + n - 1).execute())
        return sorted((row_follow_up(r) for r in rows), key=follow_up_sort_key)

    async def open_tp2_watches(self) -> list[tuple[Signal, FollowUp]]:
        rows = await self._pages("open tp2 watches", lambda c, off, n: c.rpc("wyeli_open_tp2_watches", {})
                                 .order("candle_time").order("id").range(off, off + n - 1).execute())
        signals = [row_signal(r) for r in rows]
        tp1 = {f.signal_id: f for f in await self._follow_ups_of([s.id for s in signals], event="tp1")}
        return [(s, tp1[s.id]) for s in signals if s.id in tp1]

    async def _follow_ups_of(self, signal_ids: Sequence[str], *, event: str) -> list[FollowUp]:
        rows = await self._rows_in("follow-ups", "signal_follow_ups", _FOLLOW_UP_COLS, "signal_id", signal_ids,
                                   ("event", event))
        return [row_follow_up(r) for r in rows]

    async def _rows_in(self, what: str, table: str, columns: str, key: str, values: Sequence[str],
                       eq: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        """Rows whose ``key`` is one of ``values`` (100 per request: keeps the query string short)."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(values), 100):
            chunk = list(values[i:i + 100])

            def page(c: AsyncClient, off: int, n: int, chunk: list[str] = chunk) -> Awaitable[Any]:
                q = c.table(table).select(columns).in_(key, chunk)
                if eq is not None:
                    q = q.eq(eq[0], eq[1])
                return q.order(key).range(off, off + n - 1).execute()

            out += await self._pages(what, page)
        return out

    async def pending_follow_ups(self, destination: str, *, limit: int = 50) -> list[PendingFollowUp]:
        wanted = max(0, limit)
        if wanted == 0:
            return []
        rows = await self._pages("pending follow-ups", lambda c, off, n: c.rpc(
            "wyeli_pending_follow_ups", {"p_destination": destination, "p_limit": wanted})
            .range(off, off + n - 1).execute())
        rows = rows[:wanted]
        signals = {s.id: s for s in await self._signals_by_id(sorted({str(r["signal_id"]) for r in rows}))}
        return [PendingFollowUp(row_follow_up(r), signals[r["signal_id"]], str(r["original_message_id"]))
                for r in rows if r["signal_id"] in signals]

    async def _signals_by_id(self, ids: Sequence[str]) -> list[Signal]:
        return [row_signal(r) for r in await self._rows_in("signals by id", "signals", _SIGNAL_COLS, "id", ids)]

    async def record_follow_up_delivery(self, delivery: FollowUpDelivery) -> None:
        await self._upsert("record follow-up delivery", "follow_up_deliveries", [follow_up_delivery_row(delivery)],
                           "signal_id,event,destination")

    async def get_follow_up_delivery(self, signal_id: str, event: FollowUpEvent, destination: str) -> FollowUpDelivery | None:
        rows = await self._call("get follow-up delivery", lambda c: c.table("follow_up_deliveries")
                                .select(_FOLLOW_UP_DELIVERY_COLS).eq("signal_id", signal_id).eq("event", event)
                                .eq("destination", destination).limit(1).execute())
        return row_follow_up_delivery(rows[0]) if rows else None

    # ------------------------------------------------------------------ subscriptions and mutes (issue 14)
    async def save_subscription(self, subscription: Subscription) -> bool:
        s = subscription
        row = {"destination": s.destination, "symbol": s.symbol, "timeframe": s.timeframe, "created_by": s.created_by,
               "created_at": ms_to_ts(s.created_at_ms)}
        inserted = await self._call("save subscription", lambda c: c.table("discord_subscriptions").upsert(
            [row], on_conflict="destination,symbol,timeframe", returning=ReturnMethod.representation,
            ignore_duplicates=True).execute())
        return bool(inserted)

    async def delete_subscriptions(self, destination: str, *, symbol: str | None = None,
                                   timeframe: str | None = None) -> int:
        return await self._delete_keyed("discord_subscriptions", destination, symbol, timeframe)

    async def subscriptions(self, destination: str | None = None) -> list[Subscription]:
        def page(c: AsyncClient, off: int, n: int) -> Awaitable[Any]:
            q = c.table("discord_subscriptions").select("destination,symbol,timeframe,created_by,created_at")
            if destination is not None:
                q = q.eq("destination", destination)
            return q.order("destination").order("symbol").order("timeframe").range(off, off + n - 1).execute()

        rows = await self._pages("subscriptions", page)
        return [Subscription(r["destination"], r["symbol"], r["timeframe"], r["created_by"], ts_to_ms(r["created_at"]))
                for r in rows]

    async def save_mute(self, mute: Mute) -> None:
        m = mute
        row = {"destination": m.destination, "symbol": m.symbol, "timeframe": m.timeframe, "until": ms_to_ts(m.until_ms),
               "created_by": m.created_by, "created_at": ms_to_ts(m.created_at_ms)}
        await self._upsert("save mute", "discord_mutes", [row], "destination,symbol,timeframe")

    async def delete_mutes(self, destination: str, *, symbol: str | None = None, timeframe: str | None = None) -> int:
        return await self._delete_keyed("discord_mutes", destination, symbol, timeframe)

    async def mutes(self, destination: str | None = None) -> list[Mute]:
        def page(c: AsyncClient, off: int, n: int) -> Awaitable[Any]:
            q = c.table("discord_mutes").select("destination,symbol,timeframe,until,created_by,created_at")
            if destination is not None:
                q = q.eq("destination", destination)
            return q.order("destination").order("symbol").order("timeframe").range(off, off + n - 1).execute()

        rows = await self._pages("mutes", page)
        return [Mute(r["destination"], r["symbol"], r["timeframe"], ts_to_ms(r["until"]), r["created_by"],
                     ts_to_ms(r["created_at"])) for r in rows]

    async def _delete_keyed(self, table: str, destination: str, symbol: str | None, timeframe: str | None) -> int:
        def request(c: AsyncClient) -> Awaitable[Any]:
            q = c.table(table).delete(count=CountMethod.exact, returning=ReturnMethod.minimal).eq("destination", destination)
            if symbol is not None:
                q = q.eq("symbol", symbol)
            if timeframe is not None:
                q = q.eq("timeframe", timeframe)
            return q.execute()

        return await self._count_call(f"delete from {table}", request)

    # ------------------------------------------------------------------ history (issue 14)
    async def signal_history(
        self, *, kinds: Collection[SignalKind], symbol: str | None = None, timeframe: str | None = None,
        pattern: str | None = None, outcome: HistoryOutcome | None = None, offset: int = 0, limit: int = 10,
    ) -> list[tuple[Signal, SignalOutcome | None]]:
        wanted = max(0, limit)
        if not kinds or wanted == 0:
            return []
        args = {"p_kinds": sorted(set(kinds)), "p_symbol": symbol, "p_timeframe": timeframe, "p_pattern": pattern,
                "p_outcome": outcome, "p_offset": max(0, offset), "p_limit": wanted}
        rows = await self._pages("signal history", lambda c, off, n: c.rpc("wyeli_signal_history", args)
                                 .range(off, off + n - 1).execute())
        signals = [row_signal(r) for r in rows[:wanted]]
        found = await self._rows_in("signal history outcomes", "signal_performance", _OUTCOME_COLS, "signal_id",
                                    [s.id for s in signals])
        outcomes = {r["signal_id"]: row_outcome(r) for r in found}
        return [(s, outcomes.get(s.id)) for s in signals]



def _upsert_request(table: str, rows: list[dict[str, Any]], on_conflict: str, c: AsyncClient) -> Awaitable[Any]:
    return c.table(table).upsert(
        rows, on_conflict=on_conflict, returning=ReturnMethod.minimal, ignore_duplicates=False).execute()


def _page_request(page: Callable[[AsyncClient, int, int], Awaitable[Any]], offset: int, size: int,
                  c: AsyncClient) -> Awaitable[Any]:
    return page(c, offset, size)


def _describe(exc: BaseException, status: int) -> str:
    """A short error text without headers, keys or bodies of our requests."""
    if isinstance(exc, APIError):
        return f"HTTP {status or '?'} {exc.code or ''} {exc.message or ''}".strip()
    return f"{type(exc).__name__}: {exc}"
