"""Several real bot processes (``python -m tests.fakes.bot_process``, i.e. ``src.bot.main``) on one real Postgres
schema, against the fake Binance and a recording Discord webhook, each behind its own TCP proxy to the database
(so one instance's database connection can be black-holed). Used by tests/test_several_instances.py and
benchmarks/failover.py.

What it measures and checks (from the outside only: the database, the webhook's record, the processes):
- the lease holder (``leader_lease``: INSTANCE_ID names the holder) and the take-over time: from the moment the
  leader is killed / frozen / cut off until another instance holds the lease (polled every 20 ms);
- every posted signal id (the embed footer starts with ``id <signal id>``) and how often it was posted;
- the signals still owed to the webhook (no 'sent'/'skipped' row) and the candles in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from tests.crash_harness import ROOT, Bot, until
from tests.fakes.binance import FakeBinance
from tests.fakes.tcp_proxy import TcpProxy

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TFS = ("1m", "5m")
WEBHOOK_ID = "123456789012345678"
WEBHOOK_TOKEN = "instancesTestToken_abcdefghijklmnopqrstuvwxyz0123456789_ABCDEFGHIJKLMNOP"
_FOOTER_ID = re.compile(r"^id (\S+)")


class RecordingWebhook:
    """Discord's execute-webhook endpoint, recording every posted message (payload) in order."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v10/webhooks/{id}/{token}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    async def _handle(self, request: web.Request) -> web.Response:
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            payload = json.loads(str(form["payload_json"]))
        else:
            payload = await request.json()
        mid = str(900_000_000_000_000_000 + len(self.posts))
        self.posts.append(payload)
        body = {"id": mid, "type": 0, "channel_id": "111111111111111111", "content": payload.get("content", ""),
                "author": {"id": WEBHOOK_ID, "username": "WyEli", "discriminator": "0000", "avatar": None, "bot": True},
                "embeds": payload.get("embeds", []), "attachments": [], "mentions": [], "mention_roles": [],
                "pinned": False, "mention_everyone": False, "tts": False, "timestamp": "2026-01-01T00:00:00+00:00",
                "edited_timestamp": None, "flags": 0, "webhook_id": WEBHOOK_ID}
        return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    def posted_ids(self) -> Counter[str]:
        """How often each signal id was posted (follow-ups name their signal in the title, not ``id`` footers)."""
        out: Counter[str] = Counter()
        for p in self.posts:
            for e in p.get("embeds", []):
                m = _FOOTER_ID.match(str((e.get("footer") or {}).get("text", "")))
                if m:
                    out[m.group(1)] += 1
        return out


class Cluster:
    """The fake Binance, the webhook, one Postgres schema and named bot instances (each behind its own proxy)."""

    def __init__(self, workdir: Path, postgres_url: str, *, ttl_s: float, renew_s: float, seed: int = 5) -> None:
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.schema = f"wyeli_inst_{secrets.token_hex(5)}"
        start_ms = int(time.time() // 300) * 300_000
        self.fake = FakeBinance(list(SYMBOLS), list(TFS), seed=seed, start_ms=start_ms, time_lead_ms=5_000)
        self.webhook = RecordingWebhook()
        self.bots: dict[str, Bot] = {}
        self.proxies: dict[str, TcpProxy] = {}
        self.runs: dict[str, int] = {}
        self._db: asyncpg.Connection | None = None

    async def __aenter__(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self.fake.start()
        await self.webhook.start()
        conn = await asyncpg.connect(self.postgres_url)
        await conn.execute(f'CREATE SCHEMA "{self.schema}"')
        await conn.close()
        self._db = await asyncpg.connect(self.postgres_url, server_settings={"search_path": self.schema})
        return self

    async def __aexit__(self, *exc: object) -> None:
        for bot in self.bots.values():
            if bot.proc is not None and bot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    bot.proc.send_signal(signal.SIGCONT)
            await bot.kill9()
        for proxy in self.proxies.values():
            await proxy.stop()
        if self._db is not None:
            await self._db.close()
        conn = await asyncpg.connect(self.postgres_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        await conn.close()
        await self.webhook.stop()
        await self.fake.stop()

    # ------------------------------------------------------------------ instances
    def env(self, name: str, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
        url = self.postgres_url.replace(":5432", f":{port}")
        sep = "&" if "?" in url else "?"
        return {
            "DATABASE_URL": f"{url}{sep}search_path={self.schema}", "SPOOL_PATH": str(self.workdir / f"spool-{name}.db"),
            "INSTANCE_ID": f"{name}-{self.runs.get(name, 0)}",
            "LEASE_TTL_SECONDS": str(self.ttl_s), "LEASE_RENEW_SECONDS": str(self.renew_s),
            "DISCORD_WEBHOOK_URL": f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}",
            "WYELI_TEST_DISCORD_BASE": self.webhook.base,
            "BINANCE_WS_URL": self.fake.ws_url, "BINANCE_REST_URL": self.fake.rest_url,
            "SYMBOLS": ",".join(SYMBOLS), "TIMEFRAMES": ",".join(TFS), "WARMUP_CANDLES": "150", "CANDLE_WINDOW": "500",
            "MIN_CONFIDENCE": "0.5", "TRADE_MIN_RR": "0", "WATCH_MIN_RR": "0", "WATCH_MIN_SCORE": "0",
            "SIGNAL_COOLDOWN_CANDLES": "0", "SIGNAL_COOLDOWN_SECONDS": "0", "OUTCOME_HORIZON_CANDLES": "12",
            "WS_RECONNECT_DELAY": "0.05", "WS_MAX_RECONNECT_DELAY": "0.2", "STATUS_INTERVAL_SECONDS": "0",
            "HTTP_PORT": "0", "LOG_FORMAT": "json", "DISCORD_FOLLOW_UPS": "off", "JOBS_LOCAL_WORKERS": "0",
            **(extra or {}),
        }

    async def start(self, name: str, extra: dict[str, str] | None = None) -> Bot:
        """Start (or restart) instance ``name``: a new process with a new INSTANCE_ID ``name-<run>``."""
        proxy = self.proxies.get(name)
        if proxy is None:
            proxy = self.proxies[name] = TcpProxy("127.0.0.1", 5432)
            await proxy.start()
        else:
            await proxy.restore()
        bot = Bot(self.workdir / name, self.env(name, proxy.port, extra), args=["--no-env-file"])
        bot.workdir.mkdir(parents=True, exist_ok=True)
        bot.env["PYTHONPATH"] = str(ROOT)
        run = self.runs.get(name, 0)
        self.runs[name] = run + 1
        bot.args = ["-m", "tests.fakes.bot_process", "--no-env-file"]
        await _start_module(bot, run)
        self.bots[name] = bot
        return bot

    def said(self, name: str, text: str) -> bool:
        return self.bots[name].said(self.runs[name] - 1, text)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.bots[name].workdir / f"run{self.runs[name] - 1:04d}.err"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # ------------------------------------------------------------------ the database, from outside
    async def holder(self) -> str | None:
        """The name (without run number) of the instance holding an unexpired lease, else None."""
        assert self._db is not None
        try:
            row = await self._db.fetchrow("SELECT holder FROM leader_lease WHERE expires_at > clock_timestamp()")
        except asyncpg.UndefinedTableError:  # migrations not applied yet
            return None
        return None if row is None else str(row[0]).rsplit("-", 1)[0]

    async def epoch(self) -> int | None:
        assert self._db is not None
        with contextlib.suppress(asyncpg.UndefinedTableError):
            value = await self._db.fetchval("SELECT epoch FROM leader_lease")
            return None if value is None else int(value)
        return None

    async def wait_holder(self, *, other_than: str | None = None, within_s: float = 90.0) -> tuple[str, float]:
        """Wait until an instance (not ``other_than``) holds the lease; returns it and the seconds waited."""
        t0 = time.monotonic()
        async with asyncio.timeout(within_s):
            while True:
                h = await self.holder()
                if h is not None and h != other_than:
                    return h, time.monotonic() - t0
                await asyncio.sleep(0.02)

    async def owed(self) -> int:
        """Deliveries the webhook still owes: rows not settled ('pending'/'failed'), and recent trade calls and watch
        notes (candle within the last 30 market minutes, well inside SIGNAL_MAX_AGE_SECONDS) without a row. Older
        ones from the warm-up history are skipped or never read by the outbox (its max-age window)."""
        assert self._db is not None
        try:
            return int(await self._db.fetchval(
                "SELECT (SELECT count(*) FROM signal_deliveries WHERE destination = 'webhook' "
                "        AND status IN ('pending', 'failed')) "
                "     + (SELECT count(*) FROM signals s WHERE s.kind IN ('trade', 'watch') "
                "        AND s.candle_time >= to_timestamp($1::float8 / 1000) AND NOT EXISTS (SELECT 1 FROM "
                "        signal_deliveries d WHERE d.signal_id = s.id AND d.destination = 'webhook'))",
                float(self.fake.now_ms - 1_800_000)))
        except asyncpg.UndefinedTableError:
            return -1

    async def sent_ids(self) -> set[str]:
        assert self._db is not None
        rows = await self._db.fetch("SELECT signal_id FROM signal_deliveries WHERE destination = 'webhook' "
                                    "AND status = 'sent'")
        return {str(r[0]) for r in rows}

    async def signal_count(self) -> int:
        assert self._db is not None
        return int(await self._db.fetchval("SELECT count(*) FROM signals WHERE kind IN ('trade', 'watch')"))

    async def candles(self) -> dict[tuple[str, str], list[int]]:
        """(symbol, timeframe) -> the stored open times (epoch ms), ascending."""
        assert self._db is not None
        rows = await self._db.fetch("SELECT symbol, timeframe, (EXTRACT(EPOCH FROM open_time) * 1000)::bigint "
                                    "FROM candles ORDER BY 1, 2, 3")
        out: dict[tuple[str, str], list[int]] = {}
        for r in rows:
            out.setdefault((r[0], r[1]), []).append(int(r[2]))
        return out

    async def caught_up(self) -> bool:
        """Every stream holds the fake's newest closed candle."""
        stored = await self.candles()
        for sym in SYMBOLS:
            for tf in TFS:
                newest = self.fake.closed_candles(sym, tf, since_ms=self.fake.now_ms - 3_600_000)[-1].open_time_ms
                if not stored.get((sym, tf)) or stored[(sym, tf)][-1] != newest:
                    return False
        return True

    async def wait_caught_up_and_delivered(self, within_s: float = 90.0) -> None:
        async with asyncio.timeout(within_s):
            while not (await self.caught_up() and await self.owed() == 0):  # noqa: ASYNC110 - state in the database
                await asyncio.sleep(0.05)

    async def missing_candles(self) -> list[str]:
        """Closed candles of the fake, from each stream's first stored one on, that the store lacks."""
        stored = await self.candles()
        missing = []
        for sym in SYMBOLS:
            for tf in TFS:
                have = stored.get((sym, tf), [])
                if not have:
                    missing.append(f"{sym} {tf}: nothing stored")
                    continue
                want = [c.open_time_ms for c in self.fake.closed_candles(sym, tf, since_ms=have[0])]
                missing += [f"{sym} {tf} {t}" for t in sorted(set(want) - set(have))]
        return missing


async def _start_module(bot: Bot, n: int) -> None:
    import sys

    out, err = bot._logs(n)
    try:
        bot.proc = await asyncio.create_subprocess_exec(sys.executable, *bot.args, cwd=bot.workdir, env=bot.env,
                                                        stdout=out, stderr=err)
    finally:
        out.close()
        err.close()
    bot.started = time.monotonic()


async def wait_warm(cluster: Cluster, name: str, within_s: float = 90.0) -> None:
    await until(lambda: cluster.said(name, "warm-up done"), within_s=within_s)
