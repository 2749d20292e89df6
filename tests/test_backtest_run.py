"""``backtest run`` end to end on seeded synthetic CSVs, the vectorised baseline against the outcome
rules, sizing and overlap, --jobs parity, seeds, and clear errors for bad input."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from backtest import baseline as bl
from backtest.run_cmd import fold_bounds, main
from backtest.simulate import GradedSignal, atr_series, run_stream, size_trades
from src.analysis.engine import AnalysisSettings, SignalGate, replay
from src.analysis.outcomes import OutcomeParams, Resolution, resolve
from src.analysis.registry import build_engine
from src.analysis.types import Signal
from src.market.klines_csv import write_klines_csv
from tests.candlegen import random_walk

FAST = ["--min-confidence", "0", "--baseline-reps", "40", "--seed", "5"]


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("klines")
    out = {}
    for sym, seed in (("BTCUSDT", 1), ("ETHUSDT", 2)):
        p = d / f"{sym}-1h-synthetic.csv"
        write_klines_csv(p, random_walk(1500, symbol=sym, timeframe="1h", seed=seed, vol=0.01))
        out[sym] = p
    return out


def run_cli(tmp: Path, name: str, *args: str) -> tuple[int, Path]:
    out = tmp / name
    return main([*args, "--timeframe", "1h", "--out-dir", str(out)]), out


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines()]


# ------------------------------------------------------------------------------ end to end


def test_run_writes_a_consistent_report_trades_signals_and_chart(tmp_path, csv_files):
    code, out = run_cli(tmp_path, "r", "--data", str(csv_files["BTCUSDT"]), "--walk-forward", "3", *FAST)
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    for key in ("trades", "wins", "losses", "expired", "win_rate", "profit_factor", "expectancy_r", "total_return",
                "max_drawdown", "sharpe", "exposure", "per_pattern", "per_confidence", "baseline", "walk_forward"):
        assert key in rep
    assert rep["trades"] > 0
    assert rep["wins"] + rep["losses"] + rep["expired"] == rep["trades"]
    assert sum(m["trades"] for m in rep["per_pattern"].values()) == rep["trades"]
    assert sum(m["trades"] for m in rep["per_confidence"].values()) == rep["trades"]
    assert sum(f["trades"] for f in rep["walk_forward"]) == rep["trades"] and len(rep["walk_forward"]) == 3
    assert rep["signals"] == rep["trades"] + rep["skipped_overlap"] + rep["unresolved"] + rep["invalid_geometry"]
    assert 0 <= rep["exposure"] <= 1 and 0 <= rep["max_drawdown"] < 1
    b = rep["baseline"]
    assert b["replications"] == 40 and b["random_expectancy_r_p5"] <= b["random_expectancy_r_mean"]
    assert b["random_expectancy_r_mean"] <= b["random_expectancy_r_p95"] and 0 <= b["strategy_beats_share"] <= 1

    trades = read_jsonl(out / "trades.jsonl")
    assert len(trades) == rep["trades"]
    for t in trades:
        for key in ("signal_id", "pattern", "direction", "entry_time", "entry_price", "exit_time", "exit_price",
                    "outcome", "r_multiple", "fees", "mfe", "mae"):
            assert key in t
        assert t["exit_time"] >= t["entry_time"] > t["signal_time"] and t["mfe"] >= 0 and t["mae"] >= 0
    assert sum(t["r_multiple"] for t in trades) == pytest.approx(rep["total_r"])
    import csv

    with (out / "trades.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["signal_id"] for r in rows] == [t["signal_id"] for t in trades]
    assert rep["final_equity"] == pytest.approx(rep["initial_balance"] + sum(t["pnl"] for t in trades))
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_signals_equal_a_direct_replay_through_engine_and_gate(tmp_path, csv_files, monkeypatch):
    monkeypatch.setenv("SIGNAL_COOLDOWN_SECONDS", "300")  # the old engine's default (the configuration's is 0 now)
    code, out = run_cli(tmp_path, "r", "--data", str(csv_files["BTCUSDT"]), *FAST)
    assert code == 0
    from src.market.klines_csv import read_klines_csv

    candles = read_klines_csv(csv_files["BTCUSDT"]).candles
    from dataclasses import replace

    from src.config import Config

    settings = replace(Config.from_env().analysis_settings(), min_confidence=0.0)
    _, emitted, _ = replay(candles, build_engine("BTCUSDT", "1h", settings), SignalGate(settings))
    assert read_jsonl(out / "signals.jsonl") == [s.to_dict() for s in emitted]
    assert len(emitted) > 0


def test_jobs_in_parallel_give_the_same_results_as_one_process(tmp_path, csv_files):
    files = ["--data", str(csv_files["BTCUSDT"]), "--data", str(csv_files["ETHUSDT"])]
    c1, one = run_cli(tmp_path, "one", *files, "--jobs", "1", *FAST)
    c2, two = run_cli(tmp_path, "two", *files, "--jobs", "2", *FAST)
    assert c1 == c2 == 0
    for name in ("report.json", "trades.jsonl", "signals.jsonl"):
        assert (one / name).read_text() == (two / name).read_text()
    rep = json.loads((one / "report.json").read_text())
    assert {s["symbol"] for s in rep["streams"]} == {"BTCUSDT", "ETHUSDT"}


def test_random_baseline_is_reproducible_with_a_seed_and_changes_with_another(tmp_path, csv_files):
    data = ["--data", str(csv_files["BTCUSDT"]), "--min-confidence", "0", "--baseline-reps", "30"]
    reps = []
    for i, seed in enumerate(("1", "1", "2")):
        code, out = run_cli(tmp_path, f"s{i}", *data, "--seed", seed)
        assert code == 0
        reps.append(json.loads((out / "report.json").read_text())["baseline"])
    assert reps[0] == reps[1]
    assert reps[0]["random_expectancy_r_mean"] != reps[2]["random_expectancy_r_mean"]


def test_one_minute_file_is_aggregated_to_the_requested_timeframe(tmp_path):
    p = tmp_path / "BTCUSDT-1m-x.csv"
    write_klines_csv(p, random_walk(60 * 400, timeframe="1m", seed=9, vol=0.002))
    code, out = run_cli(tmp_path, "agg", "--data", str(p), *FAST, "--baseline-reps", "0")
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["streams"][0]["timeframe"] == "1h" and rep["streams"][0]["candles"] == 400


def test_from_and_to_limit_the_period(tmp_path, csv_files):
    code, out = run_cli(tmp_path, "w", "--data", str(csv_files["BTCUSDT"]), *FAST,
                        "--from", "2023-11-20", "--to", "2023-12-10")
    assert code == 0
    s = json.loads((out / "report.json").read_text())["streams"][0]
    assert s["candles"] == 20 * 24


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent/x.csv"], "no such file"),
        (["--data", "{btc}", "--timeframe", "7h"], "unknown interval"),
        (["--data", "{btc}", "--from", "yesterday"], "--from"),
        (["--data", "{btc}", "--from", "2024-01-02", "--to", "2024-01-01"], "--to must be after"),
        (["--data", "{bad}"], "bad.csv"),
        (["--data", "{btc}", "--commission", "0.5"], "commission"),
        (["--data", "{btc}", "--jobs", "0"], "--jobs"),
        ([], "--data"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, csv_files, capsys, args, message):
    bad = tmp_path / "BTCUSDT-1h-bad.csv"
    bad.write_text("open_time,open\n1,2,3\n")
    args = [a.replace("{btc}", str(csv_files["BTCUSDT"])).replace("{bad}", str(bad)) for a in args]
    argv = [*args, "--out-dir", str(tmp_path / "o")]
    if "--timeframe" not in argv:
        argv += ["--timeframe", "1h"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------ baseline parity


def test_vectorised_grading_matches_the_outcome_rules_trade_by_trade():
    candles = random_walk(800, timeframe="1h", seed=11, vol=0.01)
    atrs = atr_series(candles)
    arr = bl.arrays(candles, atrs)
    rng = random.Random(4)
    for params in (OutcomeParams(horizon_candles=12, commission=0.0004, slippage_bps=3),
                   OutcomeParams(horizon_candles=48, commission=0.0, slippage_bps=0)):
        idx, sign, stop, tp, risk, sigs = [], [], [], [], [], []
        for k in range(400):
            i = rng.randrange(20, len(candles) - params.horizon_candles - 1)
            s = rng.choice((1.0, -1.0))
            ref, atr = candles[i].close, atrs[i]
            assert atr is not None
            r_ = rng.uniform(0.3, 3.0) * atr
            t = None if k % 7 == 0 else ref + s * rng.uniform(0.3, 5.0) * atr
            st = ref - s * r_
            idx.append(i)
            sign.append(s)
            stop.append(st)
            tp.append(np.nan if t is None else t)
            risk.append(r_)
            sigs.append(Signal(
                id=str(k), symbol="BTCUSDT", timeframe="1h", pattern="p", direction="LONG" if s > 0 else "SHORT",
                confidence=0.5, raw_confidence=0.5, entry=ref, stop_loss=st, take_profits=() if t is None else (t,),
                candle_time_ms=candles[i].open_time_ms, generated_at="", reasons=(), analyzer_version="", config_hash="",
            ))
        g = bl.grade_many(arr, np.array(idx), np.array(sign), np.array(stop), np.array(tp), np.array(risk), params)
        codes = {"LOSS": 0, "WIN": 1, "EXPIRED": 2}
        for k, sig in enumerate(sigs):
            want = resolve(sig, candles, params)
            assert want is not None
            assert g.outcome[k] == codes[want.outcome], k
            assert g.r[k] == pytest.approx(want.r_multiple, rel=1e-9, abs=1e-9), k


def test_baseline_keeps_directions_and_draws_inside_the_fold():
    candles = random_walk(600, timeframe="1h", seed=3, vol=0.01)
    arr = bl.arrays(candles, atr_series(candles))
    folds = fold_bounds(candles[0].open_time_ms, candles[-1].close_time_ms + 1, 3)
    geoms = [bl.Geometry(1, 1.0, 2.0, *folds[0]), bl.Geometry(-1, 1.5, None, *folds[2])]
    params = OutcomeParams(horizon_candles=10)
    a = bl.random_baseline(arr, geoms, params, 25, seed=1)
    b = bl.random_baseline(arr, geoms, params, 25, seed=1)
    assert a is not None and b is not None and a.shape == (25, 2)
    assert np.array_equal(a, b)
    lo, hi = bl.eligible_range(arr, *folds[2], 10)
    assert candles[lo].open_time_ms >= folds[2][0] and hi <= len(candles) - 10


# ------------------------------------------------------------------------------ sizing and overlap


def _graded(k: int, entry: int, exit_: int, r: float, symbol: str = "BTCUSDT") -> GradedSignal:
    sig = Signal(
        id=f"s{k}", symbol=symbol, timeframe="1h", pattern="p", direction="LONG", confidence=0.7, raw_confidence=0.7,
        entry=100.0, stop_loss=90.0, take_profits=(120.0,), candle_time_ms=entry - 1, generated_at="", reasons=(),
        analyzer_version="", config_hash="",
    )
    res = Resolution(f"s{k}", "WIN" if r > 0 else "LOSS", "target", entry, 100.0, exit_, 100.0, r, r, 0.0,
                     max(r, 0), max(-r, 0), 1, exit_)
    return GradedSignal(sig, res, 1.0)


def test_sizing_risks_a_fraction_of_realised_equity_at_entry():
    trades = [_graded(1, 10, 20, 2.0), _graded(2, 15, 30, -1.0, "ETHUSDT"), _graded(3, 25, 40, 1.0)]
    acc = size_trades(trades, 1000.0, 0.01, 0)
    # trade 2 enters before trade 1 has closed: it risks 1% of 1000, trade 3 of 1020
    assert [t.risk_amount for t in acc.trades] == pytest.approx([10.0, 10.0, 10.2])
    assert acc.final_equity == pytest.approx(1000 + 20 - 10 + 10.2)
    assert [e for _, e in acc.equity_curve] == pytest.approx([1000, 1020, 1010, 1020.2])


def test_one_position_per_stream_skips_overlapping_signals():
    candles = random_walk(1500, timeframe="1h", seed=1, vol=0.01)
    res = run_stream("BTCUSDT", "1h", candles, AnalysisSettings(min_confidence=0.0), OutcomeParams())
    assert res.skipped_overlap, "the fixture should produce overlapping signals"
    spans = sorted((g.resolution.entry_time_ms, g.resolution.resolved_at_ms) for g in res.graded)
    assert all(b[0] > a[1] for a, b in itertools.pairwise(spans))
    assert len(res.signals) == len(res.graded) + len(res.skipped_overlap) + res.unresolved + res.invalid_geometry


def test_run_signals_equal_the_backtest_signals_command(tmp_path, csv_files, capsys):
    from backtest.cli import main as cli_main

    data = ["--data", str(csv_files["BTCUSDT"]), "--timeframe", "1h", "--min-confidence", "0.3"]
    assert cli_main(["signals", *data, "--out", str(tmp_path / "s.jsonl")]) == 0
    assert cli_main(["run", *data, "--out-dir", str(tmp_path / "r"), "--baseline-reps", "0"]) == 0
    expected = read_jsonl(tmp_path / "s.jsonl")
    assert expected and read_jsonl(tmp_path / "r" / "signals.jsonl") == expected


def test_run_reads_candles_from_the_configured_store(tmp_path, csv_files, monkeypatch):
    import asyncio

    from src.market.klines_csv import read_klines_csv
    from src.storage.sqlite_store import SqliteStore

    db = tmp_path / "bot.db"

    async def fill() -> None:
        store = SqliteStore(db)
        await store.open()
        await store.upsert_candles(read_klines_csv(csv_files["BTCUSDT"]).candles)
        await store.close()

    asyncio.run(fill())
    for var in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SQLITE_PATH", str(db))
    code, from_db = run_cli(tmp_path, "db", "--source", "db", "--symbol", "BTCUSDT", *FAST)
    assert code == 0
    code, from_csv = run_cli(tmp_path, "csv", "--data", str(csv_files["BTCUSDT"]), *FAST)
    assert code == 0
    for name in ("trades.jsonl", "signals.jsonl"):
        assert (from_db / name).read_text() == (from_csv / name).read_text()
    assert run_cli(tmp_path, "none", "--source", "db", "--symbol", "ETHUSDT", *FAST)[0] == 2


def test_a_run_without_any_signal_still_writes_a_valid_report(tmp_path, csv_files):
    code, out = run_cli(tmp_path, "none", "--data", str(csv_files["BTCUSDT"]), "--min-confidence", "1.0",
                        "--walk-forward", "2", "--baseline-reps", "10")
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["trades"] == rep["signals"] == 0 and rep["total_return"] == 0.0 and rep["baseline"] is None
    assert rep["win_rate"] is None and rep["sharpe"] is None
    assert (out / "trades.jsonl").read_text() == "" and (out / "equity.png").exists()


def test_break_even_commission_zeroes_total_r(tmp_path, csv_files):
    from backtest.report import break_even_commission

    candles = random_walk(1500, timeframe="1h", seed=1, vol=0.01)
    res = run_stream("BTCUSDT", "1h", candles, AnalysisSettings(min_confidence=0.0), OutcomeParams(commission=0.0))
    acc = size_trades(res.graded, 1000.0, 0.01, 0)
    winners = [t for t in acc.trades if t.resolution.gross_r > 0]
    c = break_even_commission(winners)
    assert c is not None and c > 0
    total = 0.0
    for t in winners:
        r = resolve(t.signal, candles, OutcomeParams(commission=c))
        assert r is not None
        total += r.r_multiple
    assert total == pytest.approx(0.0, abs=1e-9)
    assert break_even_commission([t for t in acc.trades if t.resolution.gross_r < 0]) is None


def test_run_from_postgres_leaves_the_running_bots_outage_spool_alone(tmp_path, csv_files, monkeypatch, postgres_url):
    """--source db reads the database itself: a bot running next to it owns SPOOL_PATH, and replaying or
    deleting its pending writes from here would leave the bot's spool bookkeeping wrong."""
    import asyncio
    import sqlite3

    from src.market.klines_csv import read_klines_csv
    from src.storage.postgres_store import PostgresStore
    from src.storage.spool import SpoolStore
    from tests.test_storage_postgres import drop_schema, new_schema_name

    schema = new_schema_name()
    spool = tmp_path / "spool.db"
    candles = read_klines_csv(csv_files["BTCUSDT"]).candles

    async def prepare() -> None:
        store = PostgresStore(postgres_url, schema=schema)
        await store.open()
        await store.upsert_candles(candles)
        await store.close()
        # the bot's spool holds one write it could not deliver yet (its database was down)
        down = SpoolStore(PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1), spool,
                          autoflush=False, close_flush_timeout=0.1)
        await down.open()
        await down.upsert_candles(candles[:1])
        await down.close()

    asyncio.run(prepare())
    try:
        for var in ("SUPABASE_URL", "SUPABASE_SERVICE_KEY"):
            monkeypatch.delenv(var, raising=False)
        sep = "&" if "?" in postgres_url else "?"
        monkeypatch.setenv("DATABASE_URL", f"{postgres_url}{sep}search_path={schema}")
        monkeypatch.setenv("SPOOL_PATH", str(spool))
        monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "unused.db"))
        code, from_db = run_cli(tmp_path, "db", "--source", "db", "--symbol", "BTCUSDT", *FAST)
        assert code == 0
        code, from_csv = run_cli(tmp_path, "csv", "--data", str(csv_files["BTCUSDT"]), *FAST)
        assert code == 0
        assert (from_db / "signals.jsonl").read_text() == (from_csv / "signals.jsonl").read_text()
        with sqlite3.connect(spool) as conn:
            assert conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 1
    finally:
        asyncio.run(drop_schema(postgres_url, schema))
