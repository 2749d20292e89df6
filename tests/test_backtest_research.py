"""``backtest research`` end to end on seeded synthetic data: a planted edge is found and driftless data
shows none, matched twins share the event's volatility decile, events are graded by the outcome rules,
files are merged per stream, outputs are written, --jobs does not change results, bad input exits 2."""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from backtest import baseline as bl
from backtest.cli import main as backtest_main
from backtest.inputs import InputError
from backtest.research.cli import main
from backtest.research.measure import (
    StreamArrays,
    forward_paths,
    matched_twins,
    measure_events,
    volatility_deciles,
)
from backtest.research.replay import EventFilter, replay_candidates
from backtest.research.streams import load_stream, plan_streams
from backtest.research.study import ALL, run_study, spearman
from src.analysis import timeframes
from src.analysis.engine import AnalysisSettings
from src.analysis.outcomes import OutcomeParams, resolve
from src.analysis.registry import build_engine
from src.analysis.types import Candle, Signal
from src.market.klines_csv import write_klines_csv
from tests.candlegen import random_walk

FAST = ["--random-reps", "10", "--bootstrap", "200", "--seed", "3"]
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC, a Monday


def planted_candles(n: int, seed: int, *, edge: float, symbol: str = "BTCUSDT", timeframe: str = "1h",
                    sigma: float = 0.01, hold: int = 24) -> list[Candle]:
    """Driftless GBM candles with volume tied to the bar's move; with ``edge`` > 0 every analyzer
    candidate is followed by ``hold`` candles drifting ``edge * sigma`` per candle in its direction
    (a planted edge the study must find). The engine sees each candle as it is generated."""
    rng = np.random.default_rng(seed)
    engine = build_engine(symbol, timeframe, AnalysisSettings())
    drift: deque[float] = deque([0.0] * (hold + 1), maxlen=hold + 1)
    out: list[Candle] = []
    price, t = 100.0, START_MS
    for _ in range(n):
        mu = drift.popleft()
        drift.append(0.0)
        r = mu + sigma * float(rng.standard_normal())
        close = price * math.exp(r)
        high = max(price, close) * math.exp(abs(float(rng.normal(0, sigma / 2))))
        low = min(price, close) * math.exp(-abs(float(rng.normal(0, sigma / 2))))
        vol = 1000.0 * math.exp(float(rng.normal(0, 0.3))) * (1 + abs(r) / sigma)
        c = Candle(symbol, timeframe, t, timeframes.close_time(timeframe, t), price, high, low, close, round(vol, 3))
        out.append(c)
        for s in engine.on_candle(c).signals:
            d = 1.0 if s.direction == "LONG" else -1.0
            for k in range(hold):
                drift[k] += d * edge * sigma
        price, t = close, timeframes.next_open(timeframe, t)
    return out


def write(tmp: Path, name: str, candles: list[Candle]) -> str:
    p = tmp / name
    write_klines_csv(p, candles)
    return str(p)


@pytest.fixture(scope="module")
def gbm_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("research")
    return [write(d, f"{sym}-1h-gbm.csv", planted_candles(3600, seed, edge=0.0, symbol=sym))
            for sym, seed in (("BTCUSDT", 1), ("ETHUSDT", 2))]


def study_of(files: list[str], tf: str = "1h", reps: int = 20, boot: int = 400, thresholds: tuple[float, ...] = (0.0,)):
    params = OutcomeParams(24, 0.0004)
    outs = []
    for stream in plan_streams(files, [tf]):
        candles = load_stream(stream)
        cands = replay_candidates(stream.symbol, tf, candles, AnalysisSettings())
        events = EventFilter(tf, 24).select(cands)
        outs.append(measure_events(stream.symbol, tf, candles, events, len(cands), params, reps, seed=1))
    return run_study(outs, horizon=24, bootstrap_reps=boot, seed=2, thresholds=thresholds), outs


# ------------------------------------------------------------------------------ the study's verdicts


def test_a_planted_edge_is_found_and_driftless_data_shows_none(tmp_path, gbm_files):
    planted = [write(tmp_path, f"{s}-1h-edge.csv", planted_candles(3600, seed, edge=0.3, symbol=s))
               for s, seed in (("BTCUSDT", 5), ("ETHUSDT", 6))]
    edge, _ = study_of(planted)
    e = edge.find(ALL, "1h")
    assert e is not None and e.n >= 40
    assert e.diff_r.lo > 0 and e.p_beats < 0.01 and e.holm_p < 0.05
    assert e.excess_path.lo[-1] > 1.0  # about 0.3 sigma per candle over 24 candles ~ 4 ATR, well above 1
    null, _ = study_of(gbm_files)
    z = null.find(ALL, "1h")
    assert z is not None and z.n >= 40
    assert z.diff_r.covers(0.0) and z.excess_path.lo[-1] < 0 < z.excess_path.hi[-1]
    assert not any(c.holm_p < 0.05 for c in null.cells if c.tested)


def test_every_threshold_tried_counts_as_a_trial(gbm_files):
    one, _ = study_of(gbm_files)
    two, _ = study_of(gbm_files, thresholds=(0.0, 0.3))
    assert {c.min_score for c in two.cells} == {0.0, 0.3}
    assert two.trials == len(two.cells) > one.trials == len(one.cells)
    assert all(c.n <= next(d.n for d in two.cells if (d.pattern, d.timeframe, d.min_score) == (c.pattern, c.timeframe, 0.0))
               for c in two.cells if c.min_score == 0.3)


def test_a_split_date_measures_every_cell_before_and_after_it_outside_the_test_family(gbm_files):
    whole, outs = study_of(gbm_files)
    split = int(np.median(np.concatenate([o.time_ms for o in outs])))
    study = run_study(outs, horizon=24, bootstrap_reps=400, seed=2, split_ms=split)
    assert study.family == whole.family and study.trials == whole.trials  # a diagnostic, not more tests
    assert study.stability and study.split_ms == split
    for before, after in study.stability:
        cell = study.find(before.pattern, before.timeframe)
        assert cell is not None and before.n + after.n == cell.n
    assert study.stability_cells >= 1


def test_spearman_matches_hand_computed_values():
    assert spearman([1, 2, 3, 4], [2, 4, 6, 9]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [9, 6, 4, 2]) == pytest.approx(-1.0)
    # ties share their mean rank: x ranks 1, 2.5, 2.5, 4 against 1, 2, 3, 4 -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


# ------------------------------------------------------------------------------ measurements


def test_volatility_deciles_use_only_the_past():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=1500)
    d = volatility_deciles(x, window=300, min_history=50)
    assert np.all(d[:50] == -1) and np.all((d[50:] >= 0) & (d[50:] <= 9))
    y = x.copy()
    y[700:] *= 10  # changing the future leaves earlier deciles alone
    assert np.array_equal(volatility_deciles(y, window=300, min_history=50)[:700], d[:700])
    assert np.all(volatility_deciles(np.arange(1.0, 200.0), min_history=10)[10:] == 9)  # a new high each candle
    assert np.all(volatility_deciles(np.arange(200.0, 1.0, -1), min_history=10)[10:] == 0)


def test_matched_random_entries_share_the_event_volatility_decile():
    candles = random_walk(3000, timeframe="1h", seed=9, vol=0.01)
    sa = StreamArrays.build(candles, 24)
    events = np.flatnonzero(sa.eligible)[::97]
    twins = matched_twins(sa.decile, sa.eligible, events, 40, np.random.default_rng(1))
    assert twins.shape == (events.size, 40) and np.all(twins >= 0)
    assert np.all(sa.decile[twins] == sa.decile[events][:, None])
    assert np.all(sa.eligible[twins])
    assert len(set(sa.decile[events].tolist())) >= 5  # the check covers many deciles, not one


def test_forward_path_is_direction_signed_in_atr_from_the_next_open():
    a = bl.Arrays(np.arange(4, dtype=np.int64), np.array([10.0, 11.0, 12.0, 9.0]), np.full(4, 13.0),
                  np.full(4, 8.0), np.array([10.5, 11.5, 12.5, 8.5]), np.array([2.0, 2.0, 2.0, 2.0]))
    long_ = forward_paths(a, np.array([0]), np.array([1.0]), 3)
    short = forward_paths(a, np.array([0]), np.array([-1.0]), 3)
    assert long_.tolist() == [[(11.5 - 11.0) / 2, (12.5 - 11.0) / 2, (8.5 - 11.0) / 2]]
    assert short.tolist() == [[-v for v in long_[0]]]


def test_events_are_graded_by_the_outcome_rules_and_twins_copy_their_direction(gbm_files):
    stream = plan_streams(gbm_files[:1], ["1h"])[0]
    candles = load_stream(stream)
    params = OutcomeParams(24, 0.0004, 2.0)
    cands = replay_candidates(stream.symbol, "1h", candles, AnalysisSettings())
    events = EventFilter("1h", 24).select(cands)
    out = measure_events(stream.symbol, "1h", candles, events, len(cands), params, 8, seed=4)
    by_id = {s.id: s for s in events}
    assert out.n > 20 and out.n + sum(out.excluded.values()) == len(events)
    for k in range(out.n):
        want = resolve(by_id[out.signal_id[k]], candles, params)
        assert want is not None and out.r[k] == pytest.approx(want.r_multiple)
    assert np.all(np.isfinite(out.twin_r)) and np.all((out.twin_win >= 0) & (out.twin_win <= 1))
    again = measure_events(stream.symbol, "1h", candles, events, len(cands), params, 8, seed=4)
    assert np.array_equal(out.twin_r, again.twin_r)  # seeded by (seed, symbol, timeframe)


def _sig(t: int, pattern: str = "elliott_wave3", direction: str = "LONG", structure: str = "") -> Signal:
    return Signal(id=f"{t}{pattern}{direction}", symbol="BTCUSDT", timeframe="1h", pattern=pattern,
                  direction=direction, confidence=0.5, raw_confidence=0.5, entry=100.0, stop_loss=99.0,  # type: ignore[arg-type]
                  take_profits=(102.0,), candle_time_ms=START_MS + t * 3_600_000, generated_at="", reasons=(),
                  analyzer_version="", config_hash="", structure_id=structure)


def test_repeats_of_a_pattern_and_direction_within_the_window_are_one_event():
    f = EventFilter("1h", 5)
    cands = [_sig(0), _sig(3), _sig(7), _sig(20), _sig(3, direction="SHORT"), _sig(4, pattern="elliott_abc")]
    cands.sort(key=lambda s: s.candle_time_ms)
    kept = f.select(cands)
    # t=3 and t=7 continue the run that started at t=0 (each within 5 candles of the previous one)
    runs = [s for s in kept if s.pattern == "elliott_wave3" and s.direction == "LONG"]
    assert [(s.candle_time_ms - START_MS) // 3_600_000 for s in runs] == [0, 20]
    assert len(kept) == 4
    assert len(EventFilter("1h", 0).select(cands)) == len(cands)


def test_candidates_with_a_structure_id_count_once_per_structure_and_pattern():
    cands = [_sig(0, structure="s1"), _sig(30, structure="s1"), _sig(31, pattern="elliott_wave5", structure="s1"),
             _sig(32, structure="s2"), _sig(40, pattern="elliott_wave5", structure="s1")]
    kept = EventFilter("1h", 5).select(cands)
    assert [(s.structure_id, s.pattern, (s.candle_time_ms - START_MS) // 3_600_000) for s in kept] == [
        ("s1", "elliott_wave3", 0), ("s1", "elliott_wave5", 31), ("s2", "elliott_wave3", 32)]
    assert [s.pattern for s in EventFilter("1h", 5, frozenset({"elliott_wave5"})).select(cands)] == ["elliott_wave5"]
    # only the population ``tracked`` admits is studied (e.g. the evidence model's track-record population)
    first_gone = EventFilter("1h", 5, tracked=lambda s: s.candle_time_ms != START_MS).select(cands)
    assert (first_gone[0].pattern, (first_gone[0].candle_time_ms - START_MS) // 3_600_000) == ("elliott_wave3", 30)


# ------------------------------------------------------------------------------ streams


def test_files_are_aggregated_up_and_merged_with_native_candles_winning(tmp_path):
    one_min = random_walk(600, symbol="BTCUSDT", timeframe="1m", start_ms=START_MS, seed=1)
    hourly = random_walk(4, symbol="BTCUSDT", timeframe="1h", start_ms=START_MS + 6 * 3_600_000, seed=2, price=500.0)
    f1 = write(tmp_path, "BTCUSDT-1m-a.csv", one_min)
    f2 = write(tmp_path, "BTCUSDT-1h-b.csv", hourly)
    streams = plan_streams([f2, f1], ["15m", "1h"])
    assert [(s.symbol, s.timeframe, [Path(x.path).name for x in s.sources]) for s in streams] == [
        ("BTCUSDT", "15m", ["BTCUSDT-1m-a.csv"]), ("BTCUSDT", "1h", ["BTCUSDT-1m-a.csv", "BTCUSDT-1h-b.csv"])]
    h = load_stream(streams[1])
    assert [c.open_time_ms for c in h] == [START_MS + k * 3_600_000 for k in range(10)]
    assert [c.close for c in h[6:]] == [c.close for c in hourly]  # the native file wins where both have the hour
    assert h[0].open == one_min[0].open and h[0].close == one_min[59].close  # built from 1m where only 1m has it
    assert len(load_stream(streams[0])) == 40


def test_a_file_named_without_symbol_and_interval_needs_both_from_the_command_line(tmp_path):
    f = write(tmp_path, "prices.csv", random_walk(30, symbol="XRPUSDT", timeframe="1h"))
    [stream] = plan_streams([f], ["1h"], symbol="xrpusdt")
    assert (stream.symbol, stream.timeframe, stream.sources[0].interval) == ("XRPUSDT", "1h", "1h")
    assert len(load_stream(stream)) == 30


def test_a_file_that_supplies_no_requested_timeframe_is_an_error(tmp_path):
    f = write(tmp_path, "BTCUSDT-4h-x.csv", random_walk(10, timeframe="4h"))
    with pytest.raises(InputError, match="cannot give any of 1h"):
        plan_streams([f], ["1h"])


# ------------------------------------------------------------------------------ the command


def test_research_writes_report_summary_events_and_charts(tmp_path, gbm_files, capsys):
    out = tmp_path / "r"
    argv = ["--data", *gbm_files, "--timeframe", "1h", "--horizon", "24", "--split", "2024-03-01", "--out-dir", str(out)]
    assert main([*argv, *FAST]) == 0
    printed = capsys.readouterr().out
    assert "event study" in printed and "No pattern beats matched random" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == len(summary["cells"]) and summary["family"] >= 1
    assert [s["symbol"] for s in summary["streams"]] == ["BTCUSDT", "ETHUSDT"]
    cell = next(c for c in summary["cells"] if c["pattern"] == ALL)
    for key in ("n", "net_r", "random_r", "diff_r", "p_beats", "holm_p", "bh_q", "dsr", "path", "random_path"):
        assert key in cell
    assert len(cell["path"]["mean"]) == 24 and cell["net_r"]["lo"] <= cell["net_r"]["mean"] <= cell["net_r"]["hi"]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == sum(s["events"] for s in summary["streams"]) == cell["n"]
    assert cell["net_r"]["mean"] == pytest.approx(np.mean([e["r_multiple"] for e in events]))
    assert cell["random_r"]["mean"] == pytest.approx(np.mean([e["random_r"] for e in events]))
    assert cell["excess_path"]["mean"][-1] == pytest.approx(np.mean([e["forward_atr"] - e["random_forward_atr"] for e in events]))
    report = (out / "report.md").read_text()
    assert summary["split"]["date"].startswith("2024-03-01") and summary["split"]["rows"]
    for heading in ("## Findings", "## Per pattern", "## Event study", "## Stability", "## Data", "## Method", "Holm p"):
        assert heading in report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "net_r.png" in pngs and "path_all.png" in pngs
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert all(f"]({p})" in report for p in pngs)


def test_results_are_identical_for_one_and_two_jobs(tmp_path, gbm_files):
    base = ["--data", *gbm_files, "--timeframe", "1h", "--horizon", "24", "--split", "2024-03-01", *FAST]
    assert main([*base, "--out-dir", str(tmp_path / "a"), "--jobs", "1"]) == 0
    assert main([*base, "--out-dir", str(tmp_path / "b"), "--jobs", "2"]) == 0
    for name in ("summary.json", "events.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


def test_progress_is_shown_on_a_terminal_in_one_process_and_in_a_pool(gbm_files, capsys):
    from backtest.research.run import ResearchJob, run_streams

    job = ResearchJob(AnalysisSettings(), OutcomeParams(24), 24, frozenset(), 5, 50, 0, (0.0,), 0)
    streams = plan_streams(gbm_files, ["1h"])
    one = run_streams(streams, job, 1, show_progress=True)
    two = run_streams(streams, job, 2, show_progress=True)
    assert [o.n for o in one] == [o.n for o in two] and all(o.n > 0 for o in one)
    assert capsys.readouterr().out == ""  # the bar goes to stderr, never into the report on stdout


def test_a_study_without_events_still_writes_a_report_that_says_so(tmp_path, capsys):
    f = write(tmp_path, "BTCUSDT-1h-short.csv", random_walk(60, timeframe="1h", vol=0.01))
    out = tmp_path / "r"
    assert main(["--data", f, "--timeframe", "1h", "--patterns", "wyckoff_test", "--out-dir", str(out), *FAST]) == 0
    assert "nothing can be concluded" in (out / "report.md").read_text()
    assert json.loads((out / "summary.json").read_text())["cells"] == []
    assert "0 events" in capsys.readouterr().out


def test_research_is_a_backtest_subcommand(capsys):
    assert backtest_main(["research", "--help"]) == 0
    assert "--patterns" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "nope.csv"], "no such file"),
        (["--data", "{btc}", "--timeframe", "7h"], "unknown interval"),
        (["--data", "{btc}", "--timeframe", "15m"], "cannot give any of 15m"),
        (["--data", "{btc}", "--patterns", "wyckoff_bogus"], "unknown wyckoff_bogus"),
        (["--data", "{btc}", "--horizon", "0"], "horizon"),
        (["--data", "{btc}", "--commission", "0.5"], "commission"),
        (["--data", "{btc}", "--jobs", "0"], "--jobs"),
        (["--data", "{btc}", "--min-score", "2"], "--min-score"),
        (["--data", "{btc}", "--random-reps", "0"], "--random-reps"),
        (["--data", "{btc}", "--bootstrap", "0"], "--bootstrap"),
        (["--data", "{btc}", "--decluster", "-1"], "--decluster"),
        (["--data", "{btc}", "--from", "yesterday"], "--from"),
        (["--data", "{btc}", "--from", "2024-02-01", "--to", "2024-01-01"], "--to must be after"),
        (["--data", "{btc}", "--from", "2031-01-01"], "no candles in the chosen period"),
        (["--data", "{btc}", "--split", "soon"], "--split"),
        (["--data", "{btc}", "{eth}", "--symbol", "XRPUSDT"], "--symbol"),
        (["--data", "{noname}", "--symbol", "BTCUSDT", "--timeframe", "1h", "4h"], "interval unknown"),
        (["--data", "{bad}"], "bad.csv"),
        (["--data", "{btc}", "{btc}"], "given twice"),
        (["--data", "{btc}", "--out-dir-is-file"], "not a directory"),
        ([], "--data"),
    ],
)
def test_bad_input_exits_2_with_a_one_line_message(tmp_path, gbm_files, capsys, args, message):
    bad = tmp_path / "BTCUSDT-1h-bad.csv"
    bad.write_text("open_time,open\n1,2,3\n")
    noname = tmp_path / "prices.csv"
    noname.write_text(Path(gbm_files[0]).read_text())
    out = tmp_path / "o"
    if "--out-dir-is-file" in args:
        out.write_text("x")
        args = [a for a in args if a != "--out-dir-is-file"]
    subst = {"{btc}": gbm_files[0], "{eth}": gbm_files[1], "{bad}": str(bad), "{noname}": str(noname)}
    argv = [*FAST, *(subst.get(a, a) for a in args), "--out-dir", str(out)]
    if "--timeframe" not in argv:
        argv += ["--timeframe", "1h"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    if args:  # our own messages are one line (argparse prints its usage for a missing flag)
        assert err.count("\n") == 0 and err.startswith("backtest research: ")
