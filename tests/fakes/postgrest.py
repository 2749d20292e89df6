"""A local fake of Supabase's REST API (PostgREST behind ``/rest/v1``), strict about the requests.

It implements what the bot's Supabase store uses, the way PostgREST does it:
- ``GET /rest/v1/<table>?select=..&<col>=<op>.<value>&order=..&limit=..&offset=..`` (ops eq, neq, gt, gte,
  lt, lte, in); the row cap ``max_rows`` (PostgREST's max-rows, 1000 on Supabase) truncates silently;
- ``POST /rest/v1/<table>?on_conflict=..&columns=..`` with ``Prefer: return=minimal|representation,
  resolution=merge-duplicates|ignore-duplicates``: upsert (201); ``representation`` returns the rows
  written (for ignore-duplicates only the inserted ones);
- ``DELETE /rest/v1/<table>?<filters>`` with ``Prefer: count=exact`` -> 204 and ``Content-Range: */N``;
- ``POST /rest/v1/rpc/<fn>`` for the ``wyeli_*`` SQL functions of 001_create_schema.sql,
  002_signal_kinds_and_evidence.sql and 003_analysis_watermarks.sql (``wyeli_commit_analysis`` is
  all-or-nothing, like its one transaction; scalar results come back as a bare JSON value, as PostgREST does);
- timestamptz values come back in Postgres's JSON form (``2023-11-14T22:00:00.123+00:00``).

Every request must carry ``apikey: <key>`` and ``Authorization: Bearer <key>`` and name the schema
(``Accept-Profile``/``Content-Profile: public``). Errors are PostgREST's JSON
``{"code", "message", "details", "hint"}`` with its HTTP statuses: constraint and type errors 400,
unique/foreign-key 409, unknown table 404 (PGRST205), unknown column 400 (PGRST204), ``on_conflict``
without a matching unique key 400 (42P10), a row updated twice by one upsert 400 (21000).
``fail_next()`` queues canned failures (e.g. 503) to exercise retries; ``requests`` records every
request for assertions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from src.storage.migrate import discover

# column types: text, ts (timestamptz), float, int, bool, float[], text[], json
TABLES: dict[str, dict[str, Any]] = {
    "schema_migrations": {
        "columns": {"version": "int", "name": "text", "checksum": "text", "applied_at": "ts"},
        "key": ("version",), "not_null": {"version", "name", "applied_at"}, "defaults": {"applied_at": "now"},
    },
    "symbols": {
        "columns": {"symbol": "text", "base_asset": "text", "quote_asset": "text", "status": "text",
                    "tick_size": "float", "step_size": "float", "first_seen": "ts", "updated_at": "ts"},
        "key": ("symbol",), "not_null": {"symbol", "first_seen", "updated_at"},
        "defaults": {"first_seen": "now", "updated_at": "now"},
    },
    "candles": {
        "columns": {"symbol": "text", "timeframe": "text", "open_time": "ts", "close_time": "ts", "open": "float",
                    "high": "float", "low": "float", "close": "float", "volume": "float", "quote_volume": "float",
                    "trades": "int", "taker_buy_volume": "float", "taker_buy_quote_volume": "float"},
        "key": ("symbol", "timeframe", "open_time"),
        "not_null": {"symbol", "timeframe", "open_time", "close_time", "open", "high", "low", "close", "volume",
                     "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume"},
        "defaults": {"quote_volume": 0.0, "trades": 0, "taker_buy_volume": 0.0, "taker_buy_quote_volume": 0.0},
    },
    "signals": {
        "columns": {"id": "text", "symbol": "text", "timeframe": "text", "pattern": "text", "direction": "text",
                    "confidence": "float", "raw_confidence": "float", "entry": "float", "stop_loss": "float",
                    "take_profits": "float[]", "candle_time": "ts", "generated_at": "ts", "reasons": "text[]",
                    "analyzer_version": "text", "config_hash": "text", "features": "json", "created_at": "ts",
                    # migration 002
                    "kind": "text", "gate_reason": "text", "structure_id": "text", "p_win": "float", "expected_r": "float",
                    "expected_r_lo": "float", "expected_r_hi": "float", "evidence": "json"},
        "key": ("id",),
        "not_null": {"id", "symbol", "timeframe", "pattern", "direction", "confidence", "raw_confidence", "entry",
                     "stop_loss", "take_profits", "candle_time", "generated_at", "reasons", "analyzer_version",
                     "config_hash", "features", "created_at", "kind", "gate_reason", "structure_id"},
        "defaults": {"take_profits": [], "reasons": [], "analyzer_version": "", "config_hash": "", "features": {},
                     "created_at": "now", "kind": "trade", "gate_reason": "", "structure_id": ""},
        "checks": {"direction": ("LONG", "SHORT"), "kind": ("trade", "watch", "gated")},
    },
    "signal_deliveries": {
        "columns": {"signal_id": "text", "destination": "text", "status": "text", "message_id": "text",
                    "attempts": "int", "last_error": "text", "updated_at": "ts"},
        "key": ("signal_id", "destination"), "not_null": {"signal_id", "destination", "status", "attempts", "updated_at"},
        "defaults": {"attempts": 0, "updated_at": "now"}, "checks": {"status": ("pending", "sent", "skipped", "failed")},
        "fk": {"signal_id": ("signals", "id")},
    },
    "signal_performance": {
        "columns": {"signal_id": "text", "symbol_name": "text", "timeframe": "text", "pattern": "text",
                    "direction": "text", "outcome": "text", "entry_time": "ts", "entry_price": "float", "exit_time": "ts",
                    "exit_price": "float", "r_multiple": "float", "mfe": "float", "mae": "float", "fees": "float",
                    "bars_held": "int", "confidence": "float", "resolved_at": "ts"},
        "key": ("signal_id",),
        "not_null": {"signal_id", "symbol_name", "timeframe", "pattern", "direction", "outcome", "entry_time",
                     "entry_price", "exit_time", "exit_price", "r_multiple", "mfe", "mae", "fees", "bars_held",
                     "confidence", "resolved_at"},
        "defaults": {"fees": 0.0, "bars_held": 0},
        "checks": {"direction": ("LONG", "SHORT"), "outcome": ("WIN", "LOSS", "EXPIRED")},
        "fk": {"signal_id": ("signals", "id")},
    },
    "stream_quality": {
        "columns": {"symbol": "text", "timeframe": "text", "last_candle_time": "ts", "gaps_backfilled": "int",
                    "candles_backfilled": "int", "stalls": "int", "reconnects": "int", "updated_at": "ts"},
        "key": ("symbol", "timeframe"),
        "not_null": {"symbol", "timeframe", "gaps_backfilled", "candles_backfilled", "stalls", "reconnects", "updated_at"},
        "defaults": {"gaps_backfilled": 0, "candles_backfilled": 0, "stalls": 0, "reconnects": 0, "updated_at": "now"},
    },
    "analysis_watermarks": {  # migration 003
        "columns": {"symbol": "text", "timeframe": "text", "analysed_to": "ts", "updated_at": "ts"},
        "key": ("symbol", "timeframe"), "not_null": {"symbol", "timeframe", "analysed_to", "updated_at"},
        "defaults": {"updated_at": "now"},
    },
}

# ---- trading tables (migration 004_trading.sql); ids generated by Postgres (positions.id, audit_log.id) are
# not modelled because the bot never writes or reads them
TRADING_TABLES: dict[str, dict[str, Any]] = {
    "orders": {
        "columns": {"client_order_id": "text", "exchange_order_id": "text", "signal_id": "text", "symbol": "text",
                    "side": "text", "order_type": "text", "quantity": "float", "price": "float", "stop_price": "float",
                    "reduce_only": "bool", "status": "text", "testnet": "bool", "raw": "json", "created_at": "ts",
                    "updated_at": "ts", "mode": "text", "position_key": "text", "purpose": "text",
                    "close_position": "bool", "algo": "bool", "filled_qty": "float", "avg_price": "float", "error": "text"},
        "key": ("client_order_id",),
        "not_null": {"client_order_id", "symbol", "side", "order_type", "quantity", "reduce_only", "status", "testnet",
                     "created_at", "updated_at", "mode", "purpose", "close_position", "algo", "filled_qty"},
        "defaults": {"reduce_only": False, "status": "NEW", "testnet": True, "created_at": "now", "updated_at": "now",
                     "mode": "demo", "purpose": "entry", "close_position": False, "algo": False, "filled_qty": 0.0},
        "checks": {"side": ("BUY", "SELL"), "mode": ("paper", "demo", "live"),
                   "purpose": ("entry", "stop", "target", "close")},
        "fk": {"signal_id": ("signals", "id")},
    },
    "positions": {
        "columns": {"key": "text", "signal_id": "text", "symbol": "text", "direction": "text", "quantity": "float",
                    "entry_price": "float", "stop_loss": "float", "take_profit": "float", "leverage": "int",
                    "status": "text", "realized_pnl": "float", "testnet": "bool", "opened_at": "ts", "closed_at": "ts",
                    "mode": "text", "timeframe": "text", "pattern": "text", "planned_entry": "float",
                    "risk_per_unit": "float", "exit_price": "float", "exit_reason": "text", "fees": "float",
                    "r_multiple": "float", "protection": "text", "stop_generation": "int", "note": "text",
                    "created_at": "ts", "updated_at": "ts"},
        "key": ("key",),
        "not_null": {"symbol", "direction", "quantity", "leverage", "status", "testnet", "mode", "timeframe", "pattern",
                     "fees", "protection", "stop_generation", "note", "created_at", "updated_at"},
        "defaults": {"leverage": 1, "status": "OPEN", "testnet": True, "mode": "demo", "timeframe": "", "pattern": "",
                     "fees": 0.0, "protection": "none", "stop_generation": 0, "note": "", "created_at": "now",
                     "updated_at": "now"},
        "checks": {"direction": ("LONG", "SHORT"), "status": ("PENDING", "OPEN", "CLOSED", "FAILED"),
                   "mode": ("paper", "demo", "live")},
        "fk": {"signal_id": ("signals", "id")},
    },
    "audit_log": {
        "columns": {"event_id": "text", "at": "ts", "actor": "text", "action": "text", "details": "json", "mode": "text",
                    "symbol": "text", "signal_id": "text", "ref": "text"},
        "key": ("event_id",), "not_null": {"at", "actor", "action", "details", "mode"},
        "defaults": {"at": "now", "details": {}, "mode": ""},
    },
    "trading_state": {
        "columns": {"key": "text", "value": "json", "updated_at": "ts"},
        "key": ("key",), "not_null": {"key", "value", "updated_at"}, "defaults": {"updated_at": "now"},
    },
}
TABLES.update(TRADING_TABLES)

RPC_ARGS = {
    # 001
    "wyeli_pending_deliveries": {"p_destination", "p_limit"},
    "wyeli_open_signals": set(),
    "wyeli_last_signal_times": set(),
    "wyeli_pattern_stats": set(),
    # 002
    "wyeli_pending_deliveries_by_kind": {"p_destination", "p_kinds", "p_limit"},
    "wyeli_last_emitted": set(),
    "wyeli_recent_structures": {"p_window_ms"},
    "wyeli_live_track": {"p_tracked", "p_symbol", "p_timeframe", "p_pattern"},
    "wyeli_commit_analysis": {"p_signals", "p_watermarks"},  # migration 003
    "wyeli_drop_candles_after": {"p_symbol", "p_timeframe", "p_after"},
}
EMITTED = ("trade", "watch")


class PgError(Exception):
    def __init__(self, status: int, code: str | None, message: str, details: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.hint = status, code, message, details, hint

    def response(self) -> web.Response:
        body = {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}
        return web.json_response(body, status=self.status)


@dataclass
class Recorded:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)


@dataclass
class Failure:
    status: int
    body: Any = None  # dict -> JSON; str -> text/html; None -> empty


def parse_ts(value: Any) -> datetime:
    if not isinstance(value, str):
        raise PgError(400, "22007", f'invalid input syntax for type timestamp with time zone: "{value}"')
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PgError(400, "22007", f'invalid input syntax for type timestamp with time zone: "{value}"') from exc
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def format_ts(dt: datetime) -> str:
    """Postgres's JSON text of a timestamptz in a UTC session: fraction trimmed, '+00:00' offset."""
    dt = dt.astimezone(UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += ("." + f"{dt.microsecond:06d}").rstrip("0")
    return text + "+00:00"


def _coerce(table: str, col: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    bad = PgError(400, "22P02", f"invalid input syntax for column {col} of {table} ({kind}): {value!r}")
    if kind == "ts":
        return parse_ts(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        if not -(2**63) <= value < 2**63:  # bigint, like Postgres
            raise PgError(400, "22003", f'value "{value}" is out of range for type bigint')
        return value
    if kind == "text":
        if not isinstance(value, str):
            raise bad
        return value
    if kind == "float[]":
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
            raise bad
        return [float(v) for v in value]
    if kind == "text[]":
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise bad
        return list(value)
    if kind == "json":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    raise AssertionError(kind)


def _filter_value(kind: str, text: str) -> Any:
    if kind == "ts":
        return parse_ts(text)
    if kind == "float":
        return float(text)
    if kind == "int":
        return int(text)
    if kind == "bool":
        return text == "true"
    return text


_OPS = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
}
_RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}


@dataclass
class FakePostgrest:
    """The fake server; ``await start()`` then use ``url``; data lives in ``tables[name][key] = row``."""

    key: str
    max_rows: int = 1000
    schema: str = "public"
    tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    hidden_tables: set[str] = field(default_factory=set)  # tables "not created yet" (404 PGRST205)
    url: str = ""
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        for name in TABLES:
            self.tables.setdefault(name, {})
        now = datetime.now(tz=UTC)
        for m in discover():  # the fake serves the schema of every migration file in the tree
            self.tables["schema_migrations"][(m.version,)] = {"version": m.version, "name": m.name, "checksum": None,
                                                               "applied_at": now}

    # ------------------------------------------------------------------ server
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/rest/v1/{name:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fail_next(self, count: int, status: int = 503, body: Any = None) -> None:
        self.failures.extend(Failure(status, body) for _ in range(count))

    def rows(self, table: str) -> list[dict[str, Any]]:
        return list(self.tables[table].values())

    # ------------------------------------------------------------------ dispatch
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return PgError(400, "PGRST102", "Empty or invalid json").response()
        self.requests.append(Recorded(request.method, request.path, list(request.query.items()),
                                      {k.lower(): v for k, v in request.headers.items()}, body))
        if request.headers.get("apikey") != self.key:
            return web.json_response({"message": "Invalid API key",
                                      "hint": "Double check your Supabase `anon` or `service_role` API key."}, status=401)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return PgError(401, "PGRST301", "JWT could not be decoded").response()
        if self.failures:
            f = self.failures.pop(0)
            if isinstance(f.body, dict):
                return web.json_response(f.body, status=f.status)
            return web.Response(status=f.status, text=f.body or "", content_type="text/html")
        profile = request.headers.get("Accept-Profile" if request.method in ("GET", "HEAD") else "Content-Profile")
        if profile is not None and profile != self.schema:
            return PgError(406, "PGRST106", f"The schema must be one of the following: {self.schema}").response()
        name = request.match_info["name"]
        prefer = dict(_prefer_item(p) for p in request.headers.get("Prefer", "").split(",") if p.strip())
        try:
            if name.startswith("rpc/"):
                if request.method != "POST":
                    raise PgError(405, None, "only POST is supported here")
                return self._rpc(name[4:], request, body)
            if request.method == "POST" and request.content_type != "application/json":
                raise PgError(415, "PGRST107", f"Content-Type not acceptable: {request.content_type}")
            if name not in TABLES or name in self.hidden_tables:
                raise PgError(404, "PGRST205", f"Could not find the table '{self.schema}.{name}' in the schema cache")
            if request.method == "GET":
                return self._select(name, request)
            if request.method == "POST":
                return self._upsert(name, request, body, prefer)
            if request.method == "DELETE":
                return self._delete(name, request, prefer)
            raise PgError(405, None, f"{request.method} is not supported by the fake")
        except PgError as exc:
            return exc.response()

    # ------------------------------------------------------------------ reads
    def _filters(self, table: str, request: web.Request) -> list[tuple[str, str, Any]]:
        cols = TABLES[table]["columns"] if table in TABLES else None
        out = []
        for k, v in request.query.items():
            if k in _RESERVED:
                continue
            op, _, text = v.partition(".")
            kind = (cols or {}).get(k, "text")
            if cols is not None and k not in cols:
                raise PgError(400, "42703", f"column {table}.{k} does not exist")
            if op == "in":
                values = [_filter_value(kind, x.strip('"')) for x in text.strip("()").split(",") if x]
                out.append((k, "in", values))
            elif op in _OPS:
                out.append((k, op, _filter_value(kind, text)))
            else:
                raise PgError(400, "PGRST100", f'"failed to parse filter ({v})" (line 1, column 1)')
        return out

    @staticmethod
    def _matches(row: dict[str, Any], filters: list[tuple[str, str, Any]]) -> bool:
        for col, op, value in filters:
            have = row.get(col)
            if have is None:
                return False
            if op == "in":
                if have not in value:
                    return False
            elif not _OPS[op](have, value):
                return False
        return True

    def _shape(self, rows: list[dict[str, Any]], request: web.Request, known: set[str] | None) -> web.Response:
        order = request.query.get("order")
        if order:
            for term in reversed(order.split(",")):
                col, _, direction = term.partition(".")
                if known is not None and col not in known:
                    raise PgError(400, "42703", f"column {col} does not exist")
                desc = direction.startswith("desc")
                rows = sorted(rows, key=partial(_sort_key, col), reverse=desc)
        offset = int(request.query.get("offset", "0"))
        limit = request.query.get("limit")
        rows = rows[offset:]
        if limit is not None:
            rows = rows[: int(limit)]
        rows = rows[: self.max_rows]
        select = request.query.get("select", "*")
        if select != "*":
            cols = select.split(",")
            if known is not None:
                for c in cols:
                    if c not in known:
                        raise PgError(400, "42703", f"column {c} does not exist")
            rows = [{c: r.get(c) for c in cols} for r in rows]
        end = offset + len(rows) - 1
        headers = {"Content-Range": f"{offset}-{end}/*" if rows else "*/*"}
        return web.Response(status=200, body=json.dumps([_out(r) for r in rows]), content_type="application/json",
                            headers=headers)

    def _select(self, table: str, request: web.Request) -> web.Response:
        filters = self._filters(table, request)
        rows = [r for r in self.tables[table].values() if self._matches(r, filters)]
        return self._shape(rows, request, set(TABLES[table]["columns"]))

    # ------------------------------------------------------------------ writes
    def _upsert(self, table: str, request: web.Request, body: Any, prefer: dict[str, str]) -> web.Response:
        spec = TABLES[table]
        rows = body if isinstance(body, list) else [body]
        if not rows or any(not isinstance(r, dict) for r in rows):
            raise PgError(400, "PGRST102", "All object keys must match")
        columns_param = request.query.get("columns")
        keys_in_body = {k for r in rows for k in r}
        if columns_param is not None:
            columns = [c.strip('"') for c in columns_param.split(",")]
            if set(columns) != keys_in_body:
                raise PgError(400, "PGRST102", "the columns parameter does not match the keys of the body")
        else:
            columns = sorted(keys_in_body)
        for c in columns:
            if c not in spec["columns"]:
                raise PgError(400, "PGRST204", f"Could not find the '{c}' column of '{table}' in the schema cache")
        resolution = prefer.get("resolution")
        on_conflict = request.query.get("on_conflict")
        if on_conflict is not None and tuple(on_conflict.split(",")) != spec["key"]:
            raise PgError(400, "42P10",
                          "there is no unique or exclusion constraint matching the ON CONFLICT specification")
        prepared = [self._prepare(table, r, columns) for r in rows]
        keys = [tuple(r[k] for k in spec["key"]) for r in prepared]
        if resolution == "merge-duplicates" and len(set(keys)) != len(keys):
            raise PgError(400, "21000", "ON CONFLICT DO UPDATE command cannot affect row a second time",
                          hint="Ensure that no rows proposed for insertion within the same command have duplicate "
                               "constrained values.")
        store = self.tables[table]
        # validate everything before writing anything: one statement, all or nothing
        for k in keys:
            if k in store and resolution is None:
                raise PgError(409, "23505", f'duplicate key value violates unique constraint "{table}_pkey"',
                              details=f"Key {spec['key']}=({k}) already exists.")
        written: list[dict[str, Any]] = []
        for r, k in zip(prepared, keys, strict=True):
            if k in store:
                if resolution == "ignore-duplicates":
                    continue
                merged = dict(store[k])
                merged.update({c: r[c] for c in columns})
                store[k] = merged
            else:
                store[k] = r
            written.append(store[k])
        if prefer.get("return") == "representation":
            return web.Response(status=201, body=json.dumps([_out(r) for r in written]), content_type="application/json")
        return web.Response(status=201)

    def _prepare(self, table: str, row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
        spec = TABLES[table]
        out: dict[str, Any] = {}
        for col, kind in spec["columns"].items():
            if col in columns:
                out[col] = _coerce(table, col, kind, row.get(col))
            else:
                default = spec.get("defaults", {}).get(col)
                out[col] = datetime.now(tz=UTC) if default == "now" else default
        for col in spec["not_null"]:
            if out[col] is None:
                raise PgError(400, "23502", f'null value in column "{col}" of relation "{table}" violates not-null '
                                            "constraint")
        for col, allowed in spec.get("checks", {}).items():
            if out[col] not in allowed:
                raise PgError(400, "23514", f'new row for relation "{table}" violates check constraint "{table}_{col}_check"')
        for col, (ref_table, ref_col) in spec.get("fk", {}).items():
            if not any(r[ref_col] == out[col] for r in self.tables[ref_table].values()):
                raise PgError(409, "23503", f'insert or update on table "{table}" violates foreign key constraint '
                                            f'"{table}_{col}_fkey"', details=f"Key ({col})=({out[col]}) is not present.")
        return out

    def _delete(self, table: str, request: web.Request, prefer: dict[str, str]) -> web.Response:
        filters = self._filters(table, request)
        if not filters:
            raise PgError(400, "21000", "DELETE requires a WHERE clause")
        store = self.tables[table]
        doomed = [k for k, r in store.items() if self._matches(r, filters)]
        for k in doomed:
            del store[k]
        headers = {"Content-Range": f"*/{len(doomed)}"} if prefer.get("count") == "exact" else {}
        return web.Response(status=204, headers=headers)

    # ------------------------------------------------------------------ functions
    def _commit_analysis(self, signals: list[dict[str, Any]], marks: list[dict[str, Any]]) -> web.Response:
        """wyeli_commit_analysis: every row checked first, then all written (one transaction)."""
        sig_cols = TABLES["signals"]["columns"]
        prepared = []
        for row in signals:
            if not isinstance(row, dict) or "id" not in row:
                raise PgError(400, "22023", "p_signals must be an array of signal objects")
            prepared.append(self._prepare("signals", row, [c for c in row if c in sig_cols]))
        staged = []
        for m in marks:
            staged.append((m["symbol"], m["timeframe"], parse_ts(m["analysed_to"])))
        inserted = 0
        for row in prepared:
            self.tables["symbols"].setdefault((row["symbol"],), {
                "symbol": row["symbol"], "base_asset": None, "quote_asset": None, "status": None, "tick_size": None,
                "step_size": None, "first_seen": datetime.now(tz=UTC), "updated_at": datetime.now(tz=UTC)})
            if (row["id"],) not in self.tables["signals"]:
                self.tables["signals"][(row["id"],)] = row
                inserted += 1
        wm = self.tables["analysis_watermarks"]
        for sym, tf, at in staged:
            old = wm.get((sym, tf))
            if old is None or old["analysed_to"] < at:
                wm[(sym, tf)] = {"symbol": sym, "timeframe": tf, "analysed_to": at, "updated_at": datetime.now(tz=UTC)}
        return _scalar(inserted)

    def _drop_candles_after(self, symbol: str, timeframe: str, after: datetime) -> web.Response:
        candles = self.tables["candles"]
        doomed = [k for k, r in candles.items() if r["symbol"] == symbol and r["timeframe"] == timeframe
                  and r["open_time"] > after]
        for k in doomed:
            del candles[k]
        mark = self.tables["analysis_watermarks"].get((symbol, timeframe))
        if mark is not None and mark["analysed_to"] > after:
            mark["analysed_to"] = after
        return _scalar(len(doomed))

    def _rpc(self, fn: str, request: web.Request, body: Any) -> web.Response:
        args = body or {}
        if fn not in RPC_ARGS or set(args) != RPC_ARGS[fn]:
            raise PgError(404, "PGRST202", f"Could not find the function {self.schema}.{fn}({', '.join(sorted(args))}) "
                                           "in the schema cache")
        if fn == "wyeli_commit_analysis":
            return self._commit_analysis(args["p_signals"] or [], args["p_watermarks"] or [])
        if fn == "wyeli_drop_candles_after":
            return self._drop_candles_after(args["p_symbol"], args["p_timeframe"], parse_ts(args["p_after"]))
        signals = sorted(self.tables["signals"].values(), key=lambda s: (s["candle_time"], s["id"]))
        perf = self.tables["signal_performance"]
        if fn in ("wyeli_pending_deliveries_by_kind", "wyeli_last_emitted", "wyeli_recent_structures", "wyeli_live_track"):
            rows, known = self._rpc_002(fn, args, signals, perf)
        elif fn == "wyeli_pending_deliveries":
            done = {r["signal_id"] for r in self.tables["signal_deliveries"].values()
                    if r["destination"] == args["p_destination"] and r["status"] in ("sent", "skipped")}
            rows = [s for s in signals if s["id"] not in done][: max(int(args["p_limit"]), 0)]
            known = set(TABLES["signals"]["columns"])
        elif fn == "wyeli_open_signals":
            rows = [s for s in signals if (s["id"],) not in perf]
            known = set(TABLES["signals"]["columns"])
        elif fn == "wyeli_last_signal_times":
            last: dict[tuple[str, str], datetime] = {}
            for s in signals:
                k = (s["symbol"], s["timeframe"])
                last[k] = max(last.get(k, s["candle_time"]), s["candle_time"])
            rows = [{"symbol": k[0], "timeframe": k[1], "candle_time": v} for k, v in sorted(last.items())]
            known = {"symbol", "timeframe", "candle_time"}
        else:
            stats: dict[str, dict[str, Any]] = {}
            for s in signals:
                st = stats.setdefault(s["pattern"], {"pattern": s["pattern"], "signals": 0, "wins": 0, "losses": 0,
                                                     "expired": 0, "_r": []})
                st["signals"] += 1
                p = perf.get((s["id"],))
                if p is not None:
                    st[{"WIN": "wins", "LOSS": "losses", "EXPIRED": "expired"}[p["outcome"]]] += 1
                    st["_r"].append(p["r_multiple"])
            rows = []
            for name in sorted(stats):
                st = stats[name]
                r_values = st.pop("_r")
                st["avg_r"] = sum(r_values) / len(r_values) if r_values else None
                rows.append(st)
            known = {"pattern", "signals", "wins", "losses", "expired", "avg_r"}
        return self._shape(rows, request, known)

    def _rpc_002(self, fn: str, args: dict[str, Any], signals: list[dict[str, Any]],
                 perf: dict[tuple[Any, ...], dict[str, Any]]) -> tuple[list[dict[str, Any]], set[str]]:
        """The functions of 002_signal_kinds_and_evidence.sql, as that file defines them."""
        if fn == "wyeli_pending_deliveries_by_kind":
            done = {r["signal_id"] for r in self.tables["signal_deliveries"].values()
                    if r["destination"] == args["p_destination"] and r["status"] in ("sent", "skipped")}
            kinds = set(args["p_kinds"]) - {"gated"}
            rows = [s for s in signals if s["kind"] in kinds and s["id"] not in done][: max(int(args["p_limit"]), 0)]
            return rows, set(TABLES["signals"]["columns"])
        emitted = [s for s in signals if s["kind"] in EMITTED]
        if fn == "wyeli_last_emitted":
            last: dict[tuple[str, str, str], datetime] = {}
            trade: dict[tuple[str, str, str], datetime] = {}
            for s in emitted:
                k = (s["symbol"], s["timeframe"], s["direction"])
                last[k] = max(last.get(k, s["candle_time"]), s["candle_time"])
                if s["kind"] == "trade":
                    trade[k] = max(trade.get(k, s["candle_time"]), s["candle_time"])
            rows = [{"symbol": k[0], "timeframe": k[1], "direction": k[2], "candle_time": v, "trade_time": trade.get(k)}
                    for k, v in sorted(last.items())]
            return rows, {"symbol", "timeframe", "direction", "candle_time", "trade_time"}
        if fn == "wyeli_recent_structures":
            if not emitted:
                return [], {"structure_id", "kind"}
            newest = max(s["candle_time"] for s in emitted)
            best: dict[str, str] = {}
            for s in emitted:
                age_ms = (newest - s["candle_time"]).total_seconds() * 1000
                if s["structure_id"] and age_ms <= int(args["p_window_ms"]):
                    best[s["structure_id"]] = min(best.get(s["structure_id"], s["kind"]), s["kind"])
            return [{"structure_id": k, "kind": v} for k, v in sorted(best.items())], {"structure_id", "kind"}
        cells: dict[tuple[str, str, str], dict[str, Any]] = {}
        tracked = set(args["p_tracked"])
        for s in signals:
            if any(args[f"p_{c}"] is not None and s[c] != args[f"p_{c}"] for c in ("symbol", "timeframe", "pattern")):
                continue
            pops = [s["kind"]] if s["kind"] in EMITTED else []
            if s["p_win"] is not None and s["gate_reason"] in tracked:
                pops.append("tracked")
            p = perf.get((s["id"],))
            for pop in pops:
                c = cells.setdefault((s["pattern"], s["timeframe"], pop), {
                    "pattern": s["pattern"], "timeframe": s["timeframe"], "population": pop, "candidates": 0, "graded": 0,
                    "sum_r": 0.0, "sum_r2": 0.0, "wins": 0})
                c["candidates"] += 1
                if p is not None:
                    c["graded"] += 1
                    c["sum_r"] += p["r_multiple"]
                    c["sum_r2"] += p["r_multiple"] ** 2
                    c["wins"] += p["r_multiple"] > 0
        return [cells[k] for k in sorted(cells)], {"pattern", "timeframe", "population", "candidates", "graded", "sum_r",
                                                   "sum_r2", "wins"}


def _scalar(value: Any) -> web.Response:
    return web.Response(status=200, body=json.dumps(value), content_type="application/json")


def _sort_key(col: str, row: dict[str, Any]) -> tuple[bool, Any]:
    return (row.get(col) is None, row.get(col))


def _prefer_item(item: str) -> tuple[str, str]:
    name, _, value = item.strip().partition("=")
    return name, value


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {k: format_ts(v) if isinstance(v, datetime) else v for k, v in row.items()}
