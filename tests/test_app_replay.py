"""The whole app in replay mode: the same candidates as the backtest CLI, preview payloads and charts, its own
replay database (the live store untouched), clean exit."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from backtest.cli import main as backtest_main
from backtest.synthetic import generate
from src.analysis.types import Candle, Signal
from src.bot.app import App, RunOptions, replay_database_path
from src.config import Config
from src.market.klines_csv import write_klines_csv
from src.storage.sqlite_store import SqliteStore

HOUR = 3_600_000


def _series(path: Path) -> list[Candle]:
    """Accumulation then distribution schematics, back to back, as one BTCUSDT 1h file."""
    candles: list[Candle] = []
    start = 1_600_000_000_000 - 1_600_000_000_000 % HOUR
    for i, kind in enumerate(("accumulation", "distribution", "accumulation2")):
        s = generate(kind, seed=7 + i, symbol="BTCUSDT", timeframe="1h", start_ms=start)
        candles.extend(s.candles)
        start = candles[-1].open_time_ms + HOUR
    write_klines_csv(path, candles)
    return candles


def _config(tmp_path: Path, **extra: str) -> Config:
    # the loosest gate the configuration allows, so the schematics give trade calls and watch notes
    env = {"SQLITE_PATH": str(tmp_path / "w.db"), "SPOOL_PATH": str(tmp_path / "s.db"), "TIMEFRAMES": "1h",
           "MIN_CONFIDENCE": "0.5", "TRADE_MIN_RR": "0", "WATCH_MIN_RR": "0", "WATCH_MIN_SCORE": "0",
           "STATUS_INTERVAL_SECONDS": "0", "HTTP_PORT": "0", **extra}
    return Config.from_env(env).validate()


async def _stored_signals(path: Path) -> list[Signal]:
    store = SqliteStore(path)
    await store.open()
    try:
        return sorted(await store.recent_signals(limit=10_000), key=lambda s: (s.candle_time_ms, s.id))
    finally:
        await store.close()


def _replay_dbs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "replays").glob("*.db"))


def _without_verdict(s: Signal) -> Signal:
    """The candidate itself (levels, evidence, structure), whatever the gate made of it (the config hash
    fingerprints the gate's settings too)."""
    return replace(s, kind="trade", gate_reason="", config_hash="")


async def test_replay_stores_every_candidate_the_backtest_finds_and_previews_the_posted_ones(tmp_path: Path, capsys):
    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    candles = _series(csv)
    preview = tmp_path / "preview"
    code = await App(_config(tmp_path), RunOptions(replay=[csv], discord_preview=preview, http=False)).run()
    assert code == 0
    [db] = _replay_dbs(tmp_path)
    assert db.name.startswith("BTCUSDT-1h-synthetic-") and not (tmp_path / "w.db").exists()
    stored = await _stored_signals(db)
    assert stored, "the synthetic schematics should produce candidates"

    out = tmp_path / "signals.jsonl"
    assert backtest_main(["signals", "--data", str(csv), "--symbol", "BTCUSDT", "--timeframe", "1h",
                          "--out", str(out), "--min-confidence", "0"]) == 0
    from_cli = [Signal.from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    assert sorted(map(_without_verdict, from_cli), key=lambda s: (s.candle_time_ms, s.id)) == [
        _without_verdict(s) for s in stored]

    posted = [s for s in stored if s.kind != "gated"]
    trades = sum(1 for s in posted if s.kind == "trade")
    assert posted, "the loosest gate should let some candidates through"
    printed = capsys.readouterr().out
    assert printed.count("TRADE CALL: ") == trades and printed.count("WATCH NOTE — not a trade call: ") == len(posted) - trades
    assert f"REPLAY database: {db}" in printed
    assert (f"candidates stored ({trades} trade calls, {len(posted) - trades} watch notes, "
            f"{len(stored) - len(posted)} gated) -> {db}") in printed
    stored_candles = SqliteStore(db)
    await stored_candles.open()
    assert await stored_candles.load_candles("BTCUSDT", "1h") == candles
    await stored_candles.close()

    assert {p.stem for p in preview.glob("*.json")} == {s.id for s in posted}  # gated ones are never previewed
    for s in posted:
        payload = json.loads((preview / f"{s.id}.json").read_text())
        assert payload["embeds"] and "BTCUSDT" in payload["embeds"][0]["title"]
        assert "onfidence" not in json.dumps(payload)
        png = Image.open(io.BytesIO((preview / f"{s.id}.png").read_bytes()))
        png.verify()
        assert png.size[0] >= 600 and png.size[1] >= 300


async def test_each_replay_gets_its_own_database_and_posts_the_same_signals_again(tmp_path: Path, capsys):
    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    _series(csv)
    assert await App(_config(tmp_path), RunOptions(replay=[csv], http=False)).run() == 0
    first = capsys.readouterr().out
    assert await App(_config(tmp_path), RunOptions(replay=[csv], http=False)).run() == 0
    second = capsys.readouterr().out
    a, b = _replay_dbs(tmp_path)
    assert a != b
    assert [s.id for s in await _stored_signals(a)] == [s.id for s in await _stored_signals(b)]
    calls = [line for line in first.splitlines() if line.startswith(("TRADE CALL", "WATCH NOTE"))]
    assert calls and calls == [line for line in second.splitlines() if line.startswith(("TRADE CALL", "WATCH NOTE"))]


async def test_a_replay_leaves_the_live_store_and_its_gate_memory_untouched(tmp_path: Path):
    from tests.storage_contract import make_signal

    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    candles = _series(csv)
    live = SqliteStore(tmp_path / "w.db")
    await live.open()
    mine = make_signal("BTCUSDT", "1h", candles[100].open_time_ms, "wyckoff_spring", kind="trade", structure_id="s1")
    await live.save_signal(mine)
    await live.upsert_candles(candles[:50])
    seed = await live.gate_seed(structure_window_ms=10**12)
    await live.close()

    assert await App(_config(tmp_path), RunOptions(replay=[csv], http=False)).run() == 0
    live = SqliteStore(tmp_path / "w.db")
    await live.open()
    try:
        assert await live.gate_seed(structure_window_ms=10**12) == seed
        assert await live.recent_signals(limit=100) == [mine]
        assert await live.load_candles("BTCUSDT", "1h") == candles[:50]
        assert await live.get_outcome(mine.id) is None
    finally:
        await live.close()
    [db] = _replay_dbs(tmp_path)
    assert len(await _stored_signals(db)) > 1


async def test_replaying_again_into_the_configured_store_emits_nothing_new(tmp_path: Path, capsys):
    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    _series(csv)
    into = RunOptions(replay=[csv], http=False, replay_into_store=True)
    assert await App(_config(tmp_path), into).run() == 0
    first = capsys.readouterr().out
    assert await App(_config(tmp_path), into).run() == 0
    second = capsys.readouterr().out
    assert not _replay_dbs(tmp_path) and (tmp_path / "w.db").exists()
    assert "REPLAY database" not in first and "the configured store (sqlite:" in first
    assert first.count("TRADE CALL") + first.count("WATCH NOTE") > 0
    assert second.count("TRADE CALL") + second.count("WATCH NOTE") == 0
    assert "0 candidates stored (0 trade calls, 0 watch notes, 0 gated)" in second  # the first verdicts stand


def test_replay_database_names_never_reuse_a_file(tmp_path: Path):
    from datetime import UTC, datetime

    cfg = _config(tmp_path)
    now = datetime(2026, 5, 3, 12, 5, 1, tzinfo=UTC)
    first = replay_database_path(cfg, [Path("x/BTCUSDT-1h.csv"), Path("ETHUSDT-1h.csv")], now)
    assert first == tmp_path / "replays" / "BTCUSDT-1h+1-20260503T120501Z.db"
    first.parent.mkdir(parents=True)
    first.touch()
    assert replay_database_path(cfg, [Path("x/BTCUSDT-1h.csv"), Path("ETHUSDT-1h.csv")], now).name == (
        "BTCUSDT-1h+1-20260503T120501Z-2.db")


@pytest.mark.parametrize(
    "content, message", [("garbage,row\n", "no kline rows"), ("1,2,3\n", "at least 7 columns"), (None, "cannot open")]
)
async def test_a_bad_replay_file_is_a_clear_error_with_exit_code_2(tmp_path: Path, content, message, capsys):
    csv = tmp_path / "BTCUSDT-1h.csv"
    if content is not None:
        csv.write_text(content)
    assert await App(_config(tmp_path), RunOptions(replay=[csv], http=False)).run() == 2
    captured = capsys.readouterr()
    assert message in captured.err + captured.out  # logs: stderr when configured, structlog's default otherwise


async def test_a_paced_replay_stops_during_its_wait_for_the_next_candle(tmp_path: Path):
    # speed 1 = real time: the next 1h candle is an hour away; a stop request must not wait for it
    import asyncio

    from src.bot.replay import replay_files
    from src.market.klines_csv import KlineFile

    candles = _series(tmp_path / "BTCUSDT-1h.csv")[:3]
    stop = asyncio.Event()
    first = asyncio.Event()
    fed_candles: list[Candle] = []

    class Sink:
        async def on_candles(self, batch, source):
            fed_candles.extend(batch)
            first.set()

    files = [KlineFile(tmp_path / "x.csv", "BTCUSDT", "1h", candles)]
    replay = asyncio.create_task(replay_files(files, Sink(), speed=1.0, stop=stop))
    await first.wait()  # the replay is now waiting an hour for the second candle
    stop.set()
    async with asyncio.timeout(30):  # guards against the hour-long wait, not a timing assertion
        fed = await replay
    assert fed == 1 and fed_candles == candles[:1]


async def test_a_store_that_cannot_answer_reads_at_start_is_waited_for_not_a_crash(tmp_path: Path, monkeypatch):
    # A network store down at start: the spool takes writes, but the gate seed and the live record (reads) fail;
    # the app must wait for the store (saying so), not die with a traceback.
    from src.bot.app import App as AppClass
    from src.storage.base import StoreUnavailable

    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    _series(csv)
    failures = {"gate_seed": 2, "live_track": 2}

    def flaky(name: str):
        original = getattr(SqliteStore, name)

        async def call(self, *args, **kwargs):
            if failures[name] > 0:
                failures[name] -= 1
                raise StoreUnavailable("postgres: connection refused")
            return await original(self, *args, **kwargs)

        return call

    for name in failures:
        monkeypatch.setattr(SqliteStore, name, flaky(name))
    monkeypatch.setattr(AppClass, "STORE_RETRY_S", 0.01)
    options = RunOptions(replay=[csv], http=False, replay_into_store=True)
    assert await App(_config(tmp_path), options).run() == 0
    assert failures == {"gate_seed": 0, "live_track": 0} and await _stored_signals(tmp_path / "w.db")
