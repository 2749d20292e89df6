"""Kill -9 the real bot (``python -m src.bot.main`` as a child process) at random points and compare its
SQLite store with an undisturbed run: candles, signals, outcomes and analysis watermarks must be identical.

Used by tests/test_crash_consistency.py (a few kills per scenario) and benchmarks/crash_consistency.py
(hundreds). Two scenarios:

- replay: a 1h kline CSV replayed at full speed; every restart replays the whole file again;
- live: the bot against the fake Binance (tests/fakes/binance.py) running in this process. Market time is
  wall-aligned and frozen between advances; the killed sequence first kills during the REST warm-up (the
  market does not move until every stream's warm-up is stored, so both runs warm up on the same window),
  then advances the market between and during runs, so restarts backfill and analyse what they missed.

Analysis state is rebuilt on restart from CANDLE_WINDOW (500) candles; both scenarios keep every stream
shorter than that, so a restart sees the whole history and the comparison can demand identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.binance import FakeBinance

ROOT = Path(__file__).resolve().parent.parent
CANDLE_COLS = ("symbol, timeframe, open_time, close_time, open, high, low, close, volume, quote_volume, trades, "
               "taker_buy_volume, taker_buy_quote_volume")
SIGNAL_COLS = ("id, symbol, timeframe, pattern, direction, confidence, raw_confidence, entry, stop_loss, take_profits, "
               "candle_time, generated_at, reasons, analyzer_version, config_hash, features")  # not created_at (wall clock)


@dataclass(frozen=True)
class Snapshot:
    """What a run left in the store, comparable with ``==``."""

    candles: tuple[tuple[Any, ...], ...]
    signals: tuple[tuple[Any, ...], ...]
    outcomes: tuple[tuple[Any, ...], ...]
    watermarks: tuple[tuple[Any, ...], ...]

    def differences(self, other: Snapshot) -> list[str]:
        out = []
        for name in ("candles", "signals", "outcomes", "watermarks"):
            a, b = set(getattr(self, name)), set(getattr(other, name))
            if a != b:
                out.append(f"{name}: {len(a - b)} only in the first, {len(b - a)} only in the second "
                           f"(e.g. {sorted(a - b)[:1]} / {sorted(b - a)[:1]})")
        return out


def _prepare(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)


def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def snapshot(db: Path) -> Snapshot:
    with contextlib.closing(_ro(db)) as c:
        return Snapshot(
            tuple(c.execute(f"SELECT {CANDLE_COLS} FROM candles ORDER BY symbol, timeframe, open_time")),
            tuple(c.execute(f"SELECT {SIGNAL_COLS} FROM signals ORDER BY id")),
            tuple(c.execute("SELECT * FROM signal_performance ORDER BY signal_id")),
            _watermarks(c),
        )


def _watermarks(c: sqlite3.Connection) -> tuple[tuple[Any, ...], ...]:
    try:
        return tuple(c.execute("SELECT symbol, timeframe, analysed_to FROM analysis_watermarks ORDER BY 1, 2"))
    except sqlite3.OperationalError:  # a schema from before migration 003 (benchmarks --code)
        return ()


def stream_state(db: Path) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    """(symbol, timeframe) -> (newest stored open time, analysed up to); {} before the store exists."""
    if not db.exists():
        return {}
    try:
        with contextlib.closing(_ro(db)) as c:
            newest = {(r[0], r[1]): r[2] for r in c.execute(
                "SELECT symbol, timeframe, MAX(open_time) FROM candles GROUP BY symbol, timeframe")}
            marks = {(r[0], r[1]): r[2] for r in _watermarks(c)} or newest  # no table: a schema before 003
    except sqlite3.Error:  # the schema is being created right now
        return {}
    return {k: (newest.get(k), marks.get(k)) for k in set(newest) | set(marks)}


@dataclass
class KillStats:
    """What a killed sequence did: kills, and how many of them hit a run before it stored anything."""

    kills: int = 0
    runs: int = 0
    kill_after_s: list[float] = field(default_factory=list)
    finished_before_kill: int = 0


class Bot:
    """One ``python -m src.bot.main`` child; its output goes to files in ``workdir`` (kept for debugging)."""

    def __init__(self, workdir: Path, env: dict[str, str], args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
                    "PYTHONDONTWRITEBYTECODE": "1", **env}
        self.args = list(args)
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0

    def _logs(self, n: int) -> tuple[Any, Any]:
        out = open(self.workdir / f"run{n:04d}.out", "wb")  # noqa: SIM115 - handed to the child
        err = open(self.workdir / f"run{n:04d}.err", "wb")  # noqa: SIM115
        return out, err

    async def start(self, n: int) -> None:
        out, err = self._logs(n)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "src.bot.main", *self.args, cwd=self.workdir, env=self.env, stdout=out, stderr=err)
        finally:
            out.close()
            err.close()
        self.started = time.monotonic()

    def said(self, n: int, text: str) -> bool:
        """True when run ``n`` has logged ``text`` (e.g. that it is streaming, so its signal handlers are in place)."""
        try:
            return text in (self.workdir / f"run{n:04d}.err").read_text(errors="replace")
        except FileNotFoundError:
            return False

    async def kill9(self) -> bool:
        """SIGKILL; True when the process was still running (a real kill)."""
        if self.proc is None:
            return False
        alive = self.proc.returncode is None
        if alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        return alive

    async def stop(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    async def wait(self, timeout_s: float = 120.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout_s)


async def until(cond: Callable[[], bool], within_s: float = 90.0, every_s: float = 0.05) -> None:
    """Poll ``cond`` (state lives in another process's database); a generous safety limit, not a timing assertion."""
    async with asyncio.timeout(within_s):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(every_s)


# ---------------------------------------------------------------------------- replay
def replay_env(workdir: Path) -> dict[str, str]:
    return {"SQLITE_PATH": str(workdir / "wyeli.db"), "SPOOL_PATH": str(workdir / "spool.db"), "TIMEFRAMES": "1h",
            # a permissive gate (every candidate with any reward a watch note), so the runs emit many signals
            "MIN_CONFIDENCE": "0.5", "TRADE_MIN_RR": "0", "WATCH_MIN_RR": "0", "WATCH_MIN_SCORE": "0",
            "SIGNAL_COOLDOWN_SECONDS": "300", "STATUS_INTERVAL_SECONDS": "0", "HTTP_PORT": "0", "LOG_FORMAT": "json"}


def replay_args(csv: Path, speed: float | None) -> list[str]:
    return ["--replay", str(csv), "--replay-into-store", *(["--speed", str(speed)] if speed else [])]


async def replay_undisturbed(workdir: Path, csv: Path, speed: float | None = None) -> tuple[Snapshot, float]:
    """The store after one whole replay, and how long that run took (seconds, start to exit). ``speed``: a
    paced replay (``--speed``), so every run spends about the same wall time replaying however fast the
    analysis is (at max speed a run resumed after a kill has less left to do than the first one)."""
    _prepare(workdir)
    bot = Bot(workdir, replay_env(workdir), replay_args(csv, speed))
    await bot.start(0)
    assert await bot.wait() == 0, (workdir / "run0000.err").read_text()[-2000:]
    return snapshot(workdir / "wyeli.db"), time.monotonic() - bot.started


async def replay_with_kills(workdir: Path, csv: Path, kills: int, rng: random.Random,
                            window_s: tuple[float, float] = (0.6, 2.4),
                            speed: float | None = None) -> tuple[Snapshot, KillStats]:
    """``kills`` runs killed at a random moment in ``window_s`` after their start (callers derive it from how
    long an undisturbed run took: the machine's load decides that), then one run to the end."""
    _prepare(workdir)
    stats = KillStats()
    bot = Bot(workdir, replay_env(workdir), replay_args(csv, speed))
    for _ in range(kills):
        await bot.start(stats.runs)
        stats.runs += 1
        await asyncio.sleep(rng.uniform(*window_s))
        if await bot.kill9():
            stats.kills += 1
            stats.kill_after_s.append(round(time.monotonic() - bot.started, 3))
        else:
            stats.finished_before_kill += 1
    await bot.start(stats.runs)
    stats.runs += 1
    assert await bot.wait() == 0, (workdir / f"run{stats.runs - 1:04d}.err").read_text()[-2000:]
    return snapshot(workdir / "wyeli.db"), stats


# ---------------------------------------------------------------------------- live
LIVE_SYMBOLS = ("BTCUSDT", "ETHUSDT")
LIVE_TFS = ("1m", "5m")


def live_env(workdir: Path, fake: FakeBinance) -> dict[str, str]:
    return {"SQLITE_PATH": str(workdir / "wyeli.db"), "SPOOL_PATH": str(workdir / "spool.db"),
            "BINANCE_WS_URL": fake.ws_url, "BINANCE_REST_URL": fake.rest_url, "SYMBOLS": ",".join(LIVE_SYMBOLS),
            "TIMEFRAMES": ",".join(LIVE_TFS), "WARMUP_CANDLES": "150", "CANDLE_WINDOW": "500",
            "MIN_CONFIDENCE": "0.5", "TRADE_MIN_RR": "0", "WATCH_MIN_RR": "0", "WATCH_MIN_SCORE": "0",
            "SIGNAL_COOLDOWN_CANDLES": "0", "SIGNAL_COOLDOWN_SECONDS": "0", "OUTCOME_HORIZON_CANDLES": "12",
            "WS_RECONNECT_DELAY": "0.05", "WS_MAX_RECONNECT_DELAY": "0.2", "STATUS_INTERVAL_SECONDS": "0",
            "HTTP_PORT": "0", "LOG_FORMAT": "json"}


def live_fake(seed: int, start_ms: int) -> FakeBinance:
    # the exchange's clock reads 5 s past the last close (beyond the bot's 1 s close margin): every run's warm-up
    # ends at the same closed candle, and the forming one would count as closed only after 56 s without a
    # re-measure, longer than any run here
    return FakeBinance(list(LIVE_SYMBOLS), list(LIVE_TFS), seed=seed, start_ms=start_ms, time_lead_ms=5_000)


def wall_aligned_start_ms() -> int:
    """A 5-minute boundary in the recent past: market time stays within a minute of the wall clock per run."""
    return int(time.time() // 300) * 300_000


def caught_up(fake: FakeBinance, db: Path) -> Callable[[], bool]:
    """Every stream holds the newest closed candle and has analysed it."""
    def check() -> bool:
        state = stream_state(db)
        for sym in LIVE_SYMBOLS:
            for tf in LIVE_TFS:
                newest = fake.closed_candles(sym, tf, since_ms=fake.now_ms - 3_600_000)[-1].open_time_ms
                if state.get((sym, tf)) != (newest, newest):
                    return False
        return True
    return check


def warm_up_stored(db: Path) -> Callable[[], bool]:
    """Every stream has candles stored (analysed or not)."""
    def check() -> bool:
        state = stream_state(db)
        return all(state.get((s, t), (None, None))[0] is not None for s in LIVE_SYMBOLS for t in LIVE_TFS)
    return check


async def live_undisturbed(workdir: Path, seed: int, start_ms: int, steps: Sequence[int]) -> Snapshot:
    _prepare(workdir)
    db = workdir / "wyeli.db"
    async with live_fake(seed, start_ms) as fake:
        bot = Bot(workdir, live_env(workdir, fake))
        await bot.start(0)
        try:
            await until(lambda: bot.said(0, "warm-up done"))  # a stop before that would hit Python's default handler
            await until(caught_up(fake, db))
            for minutes in steps:
                await fake.advance(minutes)
                await until(caught_up(fake, db))
            assert await bot.stop() == 0, (workdir / "run0000.err").read_text()[-2000:]
        finally:
            await bot.kill9()
    return snapshot(db)


async def live_with_kills(workdir: Path, seed: int, start_ms: int, steps: Sequence[int], warmup_kills: int,
                          rng: random.Random) -> tuple[Snapshot, KillStats]:
    """Kills during the warm-up (market frozen), one kill right after the warm-up was stored (while it is
    analysed), then per market step one run killed at random (the step happens before the run, or while it
    runs: frames), then one run to the end."""
    _prepare(workdir)
    db = workdir / "wyeli.db"
    stats = KillStats()
    async with live_fake(seed, start_ms) as fake:
        bot = Bot(workdir, live_env(workdir, fake))

        async def killed_run(before_kill: Callable[[], Awaitable[None]] | None, delay_s: float) -> None:
            await bot.start(stats.runs)
            stats.runs += 1
            if before_kill is not None:
                await before_kill()
            await asyncio.sleep(delay_s)
            if await bot.kill9():
                stats.kills += 1
                stats.kill_after_s.append(round(time.monotonic() - bot.started, 3))
            else:
                stats.finished_before_kill += 1

        async def warm_up_is_stored() -> None:
            await until(warm_up_stored(db))

        try:
            for _ in range(warmup_kills):
                await killed_run(None, rng.uniform(0.3, 2.5))
            if not warm_up_stored(db)():
                await killed_run(warm_up_is_stored, rng.uniform(0.0, 0.6))  # while the warm-up is analysed
            for minutes in steps:
                if rng.random() < 0.5:
                    await fake.advance(minutes, send=False)  # while no bot runs: the restart backfills it
                    await killed_run(None, rng.uniform(0.3, 2.5))
                else:

                    async def connected_then_advance(minutes: int = minutes) -> None:
                        with contextlib.suppress(TimeoutError):
                            await until(lambda: bool(fake.open_connections), within_s=15)
                        await fake.advance(minutes)  # frames to the running bot

                    await killed_run(connected_then_advance, rng.uniform(0.0, 1.5))
            await bot.start(stats.runs)
            stats.runs += 1
            await until(lambda: bot.said(stats.runs - 1, "warm-up done"))  # the previous run may have caught up already
            await until(caught_up(fake, db))
            assert await bot.stop() == 0, (workdir / f"run{stats.runs - 1:04d}.err").read_text()[-2000:]
        finally:
            await bot.kill9()
    return snapshot(db), stats
