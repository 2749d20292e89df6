"""Crash consistency (issue 11): the real bot, killed with SIGKILL at random points over many runs, replay
and live against the fake Binance, ends with a store identical to an undisturbed run: the same candles,
signals, outcomes and analysis watermarks. benchmarks/crash_consistency.py runs the same with hundreds of
kills; here a few per scenario keep the suite fast."""

from __future__ import annotations

import random
from pathlib import Path

from tests.crash_harness import live_undisturbed, live_with_kills, replay_undisturbed, replay_with_kills, wall_aligned_start_ms
from tests.test_app_replay import _series

REPLAY_SPEED = 2.5e6  # market seconds per second
STEPS = (3, 2, 4, 1, 5)  # market minutes between the live runs (16 1m candles after a 150-candle warm-up)


async def test_a_replay_killed_nine_times_at_random_stores_exactly_what_an_undisturbed_replay_stores(tmp_path: Path) -> None:
    csv = tmp_path / "BTCUSDT-1h-synthetic.csv"
    _series(csv)
    # paced (1,202 hourly candles in about 1.7 s): every run replays for about as long, so the kills land inside
    # the replay whatever the build (pure Python or compiled) and the machine's load
    expected, took_s = await replay_undisturbed(tmp_path / "undisturbed", csv, speed=REPLAY_SPEED)
    assert expected.signals and expected.outcomes  # a comparison that can fail
    # kill between the end of start-up (about a third of a run) and the end of the replay
    window = (0.3 * took_s, 0.95 * took_s)
    got, stats = await replay_with_kills(tmp_path / "killed", csv, kills=9, rng=random.Random(11), window_s=window,
                                         speed=REPLAY_SPEED)
    assert stats.kills >= 6, stats
    assert got.differences(expected) == []


async def test_a_live_bot_killed_at_random_in_warm_up_backfill_and_live_stores_exactly_what_an_undisturbed_one_does(
        tmp_path: Path) -> None:
    start_ms = wall_aligned_start_ms()
    expected = await live_undisturbed(tmp_path / "undisturbed", seed=5, start_ms=start_ms, steps=STEPS)
    assert expected.signals and expected.outcomes
    got, stats = await live_with_kills(tmp_path / "killed", seed=5, start_ms=start_ms, steps=STEPS, warmup_kills=2,
                                       rng=random.Random(7))
    assert stats.kills >= 5, stats
    assert got.differences(expected) == []
