"""A local fake of Binance USDT-M market data: combined-stream WebSocket + ``/fapi/v1`` REST, one market.

Use it from any test (no internet needed)::

    from tests.fakes.binance import FakeBinance

    async with FakeBinance(["BTCUSDT", "ETHUSDT"], ["1m", "5m"], seed=7) as fake:
        feed = BinanceKlineFeed(settings_with(ws=fake.ws_url, rest=fake.rest_url), sink, last_open,
                                clock=fake.clock)          # market time, not wall time
        task = asyncio.create_task(feed.run())
        await fake.wait_for_connections(1)
        await fake.advance(10)                             # 10 market minutes: updates + closed frames
        expected = fake.closed_candles("BTCUSDT", "1m")    # every closed candle so far, ascending

Market and time
    ``SyntheticMarket(seed)`` gives deterministic 1m candles per symbol, computed from
    (seed, symbol, open time) alone; higher timeframes are aggregated from them (open of the first,
    close of the last, max high, min low, summed volumes and trades), so WebSocket and REST agree.
    Market time starts at ``start_ms`` (default 2026-01-05 00:00 UTC) and moves only through
    :meth:`FakeBinance.advance`; ``fake.clock()`` returns it in seconds (inject it as the feed's clock).
    REST serves history from ``history_start_ms`` (default ``start_ms`` - 3 days).
    ``GET /fapi/v1/time`` answers ``{"serverTime": <market time>}`` (weight 1).

    Without clock injection (the app as a subprocess, e.g. a SIGTERM test), start the market at the
    wall clock: ``FakeBinance(..., start_ms=int(time.time() // 300) * 300_000)``. The bot measures the
    exchange's clock (``GET /fapi/v1/time`` answers market time) and judges "closed" by it; market time is
    frozen between ``advance`` calls while the bot's estimate moves on with the wall clock, so keep runs
    shorter than a minute between advances (a closed frame ahead of the estimate makes the bot re-measure).
    The store's retention (CANDLE_RETENTION_DAYS, 90) measures age on the wall clock.

    ``time_lead_ms``: ``GET /fapi/v1/time`` answers market time plus this (e.g. 30 000: the exchange's "now"
    sits mid-minute after the last close, as it usually does, so a bot that measures it sees that candle
    closed beyond its clock margin; market time itself, frames and REST rows are unchanged).

    ``clock_offset_ms``: how far the exchange's clock is ahead of the machine's (negative: behind).
    ``machine_clock()`` returns market time minus it: inject it as the bot's clock to play a machine whose
    clock is off (``clock()`` stays market = exchange time).

WebSocket (``fake.ws_url`` = ``ws://127.0.0.1:<port>/market``)
    ``/market/stream?streams=btcusdt@kline_1m/...`` subscribes those streams (unknown symbols are accepted
    and stay silent, like Binance). Any other path is accepted and sends nothing (the legacy-URL
    symptom). Per market minute, each subscribed stream gets ``updates_per_candle`` (3) non-closed
    updates of its forming candle, then a closed frame (``"x": true``) when its bucket ends.
    Controls (attributes / methods):

    - ``await send_partials()``: send non-closed updates for the forming candles (then drop = mid-candle);
    - ``await drop_connections()``: abort every client connection without a close frame;
    - ``silent = True``: stay connected but send nothing (a stall); market time still moves;
    - ``muted_streams``: a set of (symbol, timeframe) that get no frames at all (one silent stream);
    - ``await advance(n, send=False)``: frames of those minutes are never sent (a hole, no disconnect);
    - ``duplicate_closed = True``: every closed frame is sent twice;
    - ``resend_previous_closed = True``: after each closed frame, re-send the previous one (out-of-order/late);
    - ``garbage = True``: also send an invalid frame before each closed one;
    - ``await send_raw(text)``: send any text to every connection (e.g. an oversize frame);
    - ``await send_closed()``: send the closed frames of the buckets that end at the current market time
      (after ``advance(n, send=False)``: the close frames arrive late, e.g. after an injected bogus one);
    - ``max_connection_age_s``: the server closes connections older than this (Binance's 24 h cut);
    - ``connections_total``, ``open_connections``, ``await wait_for_connections(n)``.

REST (``fake.rest_url`` = ``http://127.0.0.1:<port>``)
    ``GET /fapi/v1/exchangeInfo``: the market's symbols as TRADING USDT perpetuals, plus a settling
    symbol, a quarterly contract and a BTC-quoted one (all non-tradable). ``GET /fapi/v1/klines``:
    Binance rows (strings for decimals), ascending, at most ``limit`` (default 500, max 1500), the forming
    candle included as Binance does; unknown symbol -> 400 ``{"code": -1121}``. Every response carries
    ``X-MBX-USED-WEIGHT-1M`` (``used_weight`` + the request's weight: 1/2/5/10 by limit).
    ``fail_next(status, retry_after=None, times=1)`` queues error responses (429, 418, 500...);
    ``rest_requests`` records ``(path, params)`` of every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve

from src.analysis import timeframes
from src.analysis.types import Candle

MINUTE = 60_000
DEFAULT_START_MS = 1_767_571_200_000  # 2026-01-05 00:00 UTC, a Monday


class SyntheticMarket:
    """Deterministic random-access candles: 1m from (seed, symbol, open time); larger ones aggregated."""

    def __init__(self, seed: int = 7) -> None:
        self.seed = seed
        self._minute = lru_cache(maxsize=200_000)(self._make_minute)

    def _close_at(self, symbol: str, t: int) -> float:
        rnd = random.Random(f"{self.seed}|{symbol}|{t}|c")
        base = 10.0 + (sum(symbol.encode()) * 37 % 4000)
        x = 0.03 * math.sin(2 * math.pi * t / 86_400_000) + 0.01 * math.sin(2 * math.pi * t / 5_820_000)
        return round(base * math.exp(x + rnd.uniform(-0.002, 0.002)), 4)

    def _make_minute(self, symbol: str, t: int) -> Candle:
        rnd = random.Random(f"{self.seed}|{symbol}|{t}|x")
        o = self._close_at(symbol, t - MINUTE)
        c = self._close_at(symbol, t)
        h = round(max(o, c) * (1 + rnd.uniform(0, 0.001)), 4)
        lo = round(min(o, c) * (1 - rnd.uniform(0, 0.001)), 4)
        v = round(rnd.uniform(1, 500), 3)
        q = round(v * (o + c) / 2, 4)
        bv = round(v * rnd.uniform(0.2, 0.8), 3)
        return Candle(symbol, "1m", t, t + MINUTE - 1, o, h, lo, c, v, q, rnd.randint(1, 300), bv, round(bv * c, 4))

    def minute(self, symbol: str, t: int) -> Candle:
        return self._minute(symbol, t)

    def candle(self, symbol: str, tf: str, open_ms: int, upto_ms: int | None = None, partial: float = 1.0) -> Candle:
        """Candle of ``tf`` opening at ``open_ms``, built from the minutes before ``upto_ms`` (default: all),
        plus ``partial`` (0..1) of the minute starting at ``upto_ms``. Closed only when complete."""
        end = timeframes.next_open(tf, open_ms)
        stop = end if upto_ms is None else min(end, upto_ms)
        parts = [self.minute(symbol, t) for t in range(open_ms, stop, MINUTE)]
        if upto_ms is not None and upto_ms < end and partial > 0:
            parts.append(_partial_minute(self.minute(symbol, upto_ms), partial))
        complete = stop == end
        return aggregate(symbol, tf, open_ms, parts, closed=complete)


def _partial_minute(m: Candle, f: float) -> Candle:
    c = round(m.open + (m.close - m.open) * f, 4)
    return Candle(m.symbol, "1m", m.open_time_ms, m.close_time_ms, m.open, max(m.open, c), min(m.open, c), c,
                  round(m.volume * f, 3), round(m.quote_volume * f, 4), int(m.trades * f),
                  round(m.taker_buy_volume * f, 3), round(m.taker_buy_quote_volume * f, 4), closed=False)


def aggregate(symbol: str, tf: str, open_ms: int, parts: Sequence[Candle], closed: bool) -> Candle:
    """Binance's aggregation of consecutive candles into one of ``tf``."""
    return Candle(
        symbol, tf, open_ms, timeframes.close_time(tf, open_ms),
        parts[0].open, max(p.high for p in parts), min(p.low for p in parts), parts[-1].close,
        sum(p.volume for p in parts), sum(p.quote_volume for p in parts), sum(p.trades for p in parts),
        sum(p.taker_buy_volume for p in parts), sum(p.taker_buy_quote_volume for p in parts), closed,
    )


def kline_frame(candle: Candle, event_ms: int) -> str:
    """The exact combined-stream frame Binance sends for ``candle``."""
    k = {
        "t": candle.open_time_ms, "T": candle.close_time_ms, "s": candle.symbol, "i": candle.timeframe,
        "f": 1000, "L": 1000 + candle.trades, "o": repr(candle.open), "c": repr(candle.close),
        "h": repr(candle.high), "l": repr(candle.low), "v": repr(candle.volume), "n": candle.trades,
        "x": candle.closed, "q": repr(candle.quote_volume), "V": repr(candle.taker_buy_volume),
        "Q": repr(candle.taker_buy_quote_volume), "B": "0",
    }
    data = {"e": "kline", "E": event_ms, "s": candle.symbol, "k": k}
    return orjson.dumps({"stream": f"{candle.symbol.lower()}@kline_{candle.timeframe}", "data": data}).decode()


def rest_row(candle: Candle) -> list[Any]:
    return [candle.open_time_ms, repr(candle.open), repr(candle.high), repr(candle.low), repr(candle.close),
            repr(candle.volume), candle.close_time_ms, repr(candle.quote_volume), candle.trades,
            repr(candle.taker_buy_volume), repr(candle.taker_buy_quote_volume), "0"]


def klines_weight(limit: int) -> int:
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


@dataclass(eq=False)
class FakeConnection:
    ws: ServerConnection
    streams: tuple[tuple[str, str], ...]
    opened_at: float
    sent: int = 0


@dataclass
class _Failure:
    status: int
    retry_after: float | None


@dataclass
class FakeBinance:
    symbols: Sequence[str]
    timeframes: Sequence[str]
    seed: int = 7
    start_ms: int = DEFAULT_START_MS
    history_start_ms: int | None = None
    updates_per_candle: int = 3
    clock_offset_ms: int = 0
    time_lead_ms: int = 0
    market: SyntheticMarket = field(init=False)
    now_ms: int = field(init=False)
    # WebSocket controls
    silent: bool = False
    duplicate_closed: bool = False
    resend_previous_closed: bool = False
    garbage: bool = False
    max_connection_age_s: float | None = None
    muted_streams: set[tuple[str, str]] = field(default_factory=set)
    # REST controls / records
    used_weight: int = 0
    rest_requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    connections_total: int = 0

    def __post_init__(self) -> None:
        self.market = SyntheticMarket(self.seed)
        self.now_ms = self.start_ms
        if self.history_start_ms is None:
            self.history_start_ms = self.start_ms - 3 * 1440 * MINUTE
        self.symbols = [s.upper() for s in self.symbols]
        self.open_connections: list[FakeConnection] = []
        self._failures: deque[_Failure] = deque()
        self._ws_server: Server | None = None
        self._runner: web.AppRunner | None = None
        self._conn_changed = asyncio.Condition()
        self.ws_port = 0
        self.rest_port = 0

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> FakeBinance:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._ws_server = await serve(self._ws_handler, "127.0.0.1", 0, ping_interval=None)
        self.ws_port = next(iter(self._ws_server.sockets)).getsockname()[1]
        app = web.Application()
        app.router.add_get("/fapi/v1/klines", self._klines)
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/fapi/v1/time", self._time)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.rest_port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()
            with contextlib.suppress(Exception):
                await self._ws_server.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/market"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def clock(self) -> float:
        """Market time in seconds (inject as the feed's clock)."""
        return self.now_ms / 1000

    def machine_clock(self) -> float:
        """The clock of a machine that is ``clock_offset_ms`` behind the exchange, in seconds."""
        return (self.now_ms - self.clock_offset_ms) / 1000

    # ------------------------------------------------------------------ market
    def closed_candles(self, symbol: str, tf: str, since_ms: int | None = None) -> list[Candle]:
        """Every candle of (symbol, tf) closed by now, from ``since_ms`` (default: history start)."""
        t = timeframes.bucket_start(tf, since_ms if since_ms is not None else self.history_start_ms or 0)
        out = []
        while timeframes.next_open(tf, t) <= self.now_ms:
            out.append(self.market.candle(symbol, tf, t))
            t = timeframes.next_open(tf, t)
        return out

    async def send_partials(self) -> None:
        """Non-closed updates of every forming candle (the minute starting now), to every connection."""
        if self.silent:
            return
        for conn in list(self.open_connections):
            for sym, tf in conn.streams:
                if (sym, tf) in self.muted_streams:
                    continue
                bucket = timeframes.bucket_start(tf, self.now_ms)
                for j in range(1, self.updates_per_candle + 1):
                    c = self.market.candle(sym, tf, bucket, upto_ms=self.now_ms, partial=j / (self.updates_per_candle + 1))
                    await self._send(conn, kline_frame(c, self.now_ms + j))

    async def advance(self, minutes: int = 1, *, send: bool = True) -> None:
        """Move market time by ``minutes``; with ``send`` each minute sends partials then closed frames."""
        for _ in range(minutes):
            if send:
                await self.send_partials()
            self.now_ms += MINUTE
            if send and not self.silent:
                await self._send_closed()
            await self._enforce_age()
        await asyncio.sleep(0)

    async def send_closed(self) -> None:
        if not self.silent:
            await self._send_closed()

    async def send_raw(self, text: str) -> None:
        for conn in list(self.open_connections):
            await self._send(conn, text)

    async def _send_closed(self) -> None:
        for conn in list(self.open_connections):
            for sym, tf in conn.streams:
                if (sym, tf) in self.muted_streams or timeframes.bucket_start(tf, self.now_ms) != self.now_ms:
                    continue  # the bucket did not end at this minute
                prev_open = timeframes.bucket_start(tf, self.now_ms - 1)
                if self.garbage:
                    await self._send(conn, '{"stream": "x", "data": {"e": "kline", "k": {"t": "NaN"}}}')
                frame = kline_frame(self.market.candle(sym, tf, prev_open), self.now_ms)
                await self._send(conn, frame)
                if self.duplicate_closed:
                    await self._send(conn, frame)
                if self.resend_previous_closed:
                    older = timeframes.bucket_start(tf, prev_open - 1)
                    await self._send(conn, kline_frame(self.market.candle(sym, tf, older), self.now_ms))

    async def _send(self, conn: FakeConnection, frame: str) -> None:
        try:
            await conn.ws.send(frame)
            conn.sent += 1
        except Exception:
            self._forget(conn)

    async def _enforce_age(self) -> None:
        if self.max_connection_age_s is None:
            return
        now = asyncio.get_running_loop().time()
        for conn in list(self.open_connections):
            if now - conn.opened_at > self.max_connection_age_s:
                self._forget(conn)
                with contextlib.suppress(Exception):
                    await conn.ws.close(1001, "connection age limit")

    # ------------------------------------------------------------------ WebSocket
    def _forget(self, conn: FakeConnection) -> None:
        if conn in self.open_connections:
            self.open_connections.remove(conn)

    async def drop_connections(self) -> None:
        """Abort every connection without a close frame (a network drop)."""
        for conn in list(self.open_connections):
            self._forget(conn)
            conn.ws.transport.abort()
        await asyncio.sleep(0)

    async def wait_for_connections(self, total: int) -> None:
        """Wait until ``connections_total`` (every connection ever accepted) reaches ``total``.
        Wrap it in ``asyncio.timeout(...)`` in tests."""
        async with self._conn_changed:
            await self._conn_changed.wait_for(lambda: self.connections_total >= total)

    async def _ws_handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        parts = urlsplit(path)
        streams: list[tuple[str, str]] = []
        if parts.path == "/market/stream":
            for name in parse_qs(parts.query).get("streams", [""])[0].split("/"):
                sym, _, rest = name.partition("@kline_")
                if sym and rest and sym.upper() in self.symbols:
                    streams.append((sym.upper(), rest))
        conn = FakeConnection(ws, tuple(streams), asyncio.get_running_loop().time())
        self.open_connections.append(conn)
        async with self._conn_changed:
            self.connections_total += 1
            self._conn_changed.notify_all()
        try:
            async for _ in ws:  # clients send nothing; keep reading to answer close frames
                pass
        except Exception:
            pass
        finally:
            self._forget(conn)

    # ------------------------------------------------------------------ REST
    def fail_next(self, status: int, retry_after: float | None = None, times: int = 1) -> None:
        for _ in range(times):
            self._failures.append(_Failure(status, retry_after))

    def _respond(self, body: Any, weight: int, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        self.used_weight += weight
        h = {"X-MBX-USED-WEIGHT-1M": str(self.used_weight), **(headers or {})}
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=h)

    def _failure(self, weight: int) -> web.Response | None:
        if not self._failures:
            return None
        f = self._failures.popleft()
        headers = {"Retry-After": str(int(f.retry_after))} if f.retry_after is not None else {}
        return self._respond({"code": -1003, "msg": f"forced HTTP {f.status}"}, weight, f.status, headers)

    async def _exchange_info(self, request: web.Request) -> web.Response:
        self.rest_requests.append((request.path, dict(request.query)))
        if (failed := self._failure(1)) is not None:
            return failed
        def entry(sym: str, status: str = "TRADING", ct: str = "PERPETUAL", quote: str = "USDT") -> dict[str, Any]:
            return {"symbol": sym, "pair": sym, "contractType": ct, "status": status, "quoteAsset": quote,
                    "marginAsset": quote, "filters": [], "unknownKey": 1}
        symbols = [entry(s) for s in self.symbols]
        symbols += [entry("OLDUSDT", status="SETTLING"), entry("BTCUSDT_260327", ct="CURRENT_QUARTER"),
                    entry("ETHBTC", quote="BTC")]
        body = {"timezone": "UTC", "serverTime": self.now_ms,
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}],
                "symbols": symbols}
        return self._respond(body, 1)

    async def _time(self, request: web.Request) -> web.Response:
        self.rest_requests.append((request.path, dict(request.query)))
        if (failed := self._failure(1)) is not None:
            return failed
        return self._respond({"serverTime": self.now_ms + self.time_lead_ms}, 1)

    async def _klines(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.rest_requests.append((request.path, q))
        try:
            limit = int(q.get("limit", "500"))
        except ValueError:
            return self._respond({"code": -1100, "msg": "Illegal characters found in parameter 'limit'"}, 1, 400)
        weight = klines_weight(limit)
        if (failed := self._failure(weight)) is not None:
            return failed
        sym, tf = q.get("symbol", ""), q.get("interval", "")
        if sym not in self.symbols:
            return self._respond({"code": -1121, "msg": "Invalid symbol."}, weight, 400)
        if not timeframes.is_interval(tf):
            return self._respond({"code": -1120, "msg": "Invalid interval."}, weight, 400)
        if not 1 <= limit <= 1500:
            return self._respond({"code": -1130, "msg": "Data sent for paramter 'limit' is not valid."}, weight, 400)
        return self._respond([rest_row(c) for c in self._rows(sym, tf, q, limit)], weight)

    def _rows(self, sym: str, tf: str, q: dict[str, str], limit: int) -> Iterable[Candle]:
        first = timeframes.bucket_start(tf, self.history_start_ms or 0)
        if first < (self.history_start_ms or 0):
            first = timeframes.next_open(tf, first)
        newest = timeframes.bucket_start(tf, self.now_ms)  # the forming candle, included like Binance does
        end = min(int(q["endTime"]), newest) if "endTime" in q else newest
        if "startTime" in q:
            t = max(first, timeframes.bucket_start(tf, int(q["startTime"])))
            if t < int(q["startTime"]):
                t = timeframes.next_open(tf, t)
        else:
            t = end
            for _ in range(limit - 1):
                prev = timeframes.bucket_start(tf, t - 1)
                if prev < first:
                    break
                t = prev
        out: list[Candle] = []
        while t <= end and len(out) < limit:
            out.append(self.market.candle(sym, tf, t, upto_ms=self.now_ms, partial=0.5))
            t = timeframes.next_open(tf, t)
        return out
