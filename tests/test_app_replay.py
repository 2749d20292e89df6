"""The whole app in replay mode: same signals as the backtest CLI, preview payloads and charts, clean exit."""

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
from src.bot.app import App, RunOptions
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
    env = {"SQLITE_PATH": str(tmp_path / "w.db"), "SPOOL_PATH": str(tmp_path / "s.db"), "TIMEFRAMES": "1h",
           "MIN_CONFIDENCE": "0.3", "STATUS_INTERVAL_SECONDS": "0", "HTTP_PORT": "0",
           "CALIBRATION_PATH": str(tmp_path / "none.json"), **extra}
    return Config.from_env(env).validate()


async def _stored_signals(path: Path) -> list[Signal]:
    store = SqliteStore(path)
    await store.open()
    try:
        return sorted(await store.recent_signals(limit=10_000), key=lambda s: (s.candle_time_ms, s.id))
    finally:
        await store.close()


async def test_replay_stores_the_same_signals_as_backtest_signals_and_writes_previews(tmp_path: Path, capsys):
    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    candles = _series(csv)
    preview = tmp_path / "preview"
    code = await App(_config(tmp_path), RunOptions(replay=[csv], discord_preview=preview, http=False)).run()
    assert code == 0
    stored = await _stored_signals(tmp_path / "w.db")
    assert stored, "the synthetic schematics should produce signals at MIN_CONFIDENCE 0.3"

    out = tmp_path / "signals.jsonl"
    assert backtest_main(["signals", "--data", str(csv), "--symbol", "BTCUSDT", "--timeframe", "1h",
                          "--out", str(out), "--min-confidence", "0.3", "--cooldown-seconds", "300"]) == 0
    from_cli = [Signal.from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    # the stores do not persist kind, gate_reason, structure_id and evidence yet (issue 10, PRODUCT's part):
    # compare what they keep
    def kept(s: Signal) -> Signal:
        return replace(s, kind="trade", gate_reason="", structure_id="", evidence=None)

    assert [kept(s) for s in sorted(from_cli, key=lambda s: (s.candle_time_ms, s.id))] == [kept(s) for s in stored]

    printed = capsys.readouterr().out
    assert printed.count("SIGNAL ") == len(stored)
    stored_candles = SqliteStore(tmp_path / "w.db")
    await stored_candles.open()
    assert await stored_candles.load_candles("BTCUSDT", "1h") == candles
    await stored_candles.close()

    for s in stored:
        payload = json.loads((preview / f"{s.id}.json").read_text())
        assert payload["embeds"] and "BTCUSDT" in payload["embeds"][0]["title"]
        png = Image.open(io.BytesIO((preview / f"{s.id}.png").read_bytes()))
        png.verify()
        assert png.size[0] >= 600 and png.size[1] >= 300


async def test_replaying_again_into_the_same_store_emits_nothing_new(tmp_path: Path, capsys):
    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    _series(csv)
    assert await App(_config(tmp_path), RunOptions(replay=[csv], http=False)).run() == 0
    first = capsys.readouterr().out.count("SIGNAL ")
    assert await App(_config(tmp_path), RunOptions(replay=[csv], http=False)).run() == 0
    assert first > 0 and capsys.readouterr().out.count("SIGNAL ") == 0


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
    # A network store down at start: the spool takes writes, but the cooldown seeds (a read) fail;
    # the app must wait for the store (saying so), not die with a traceback.
    from src.bot.app import App as AppClass
    from src.storage.base import StoreUnavailable

    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    _series(csv)
    original = SqliteStore.last_signal_times
    failures = {"left": 2}

    async def flaky(self):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise StoreUnavailable("postgres: connection refused")
        return await original(self)

    monkeypatch.setattr(SqliteStore, "last_signal_times", flaky)
    monkeypatch.setattr(AppClass, "STORE_RETRY_S", 0.01)
    assert await App(_config(tmp_path), RunOptions(replay=[csv], http=False)).run() == 0
    assert failures["left"] == 0 and await _stored_signals(tmp_path / "w.db")
