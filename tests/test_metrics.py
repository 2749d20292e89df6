"""BotMetrics: event methods, scrape-time providers, status gauges and the loop-lag monitor."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from src.bot.metrics import BotMetrics, ClosedCandleCounter, LoopLagMonitor
from src.bot.status import ConnectionStatus, StatusSnapshot, StreamStatus
from tests.candlegen import random_walk


def samples(metrics: BotMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


BASE = StatusSnapshot(
    started_at_ms=1_000_000,
    now_ms=1_060_000,
    mode="live",
    warmed_up=True,
    streams=(
        StreamStatus("BTCUSDT", "1h", 1_700_000_000_000, 1_700_000_100_000, True),
        StreamStatus("ETHUSDT", "1h", None, None, False),
    ),
    connections=(ConnectionStatus("shard-0", 2, True, 1_000_000, 1, 1_059_000),),
    signals_total=7,
    signals_by_symbol=(("BTCUSDT", 7),),
    last_signal_at=None,
    store_backend="sqlite",
    store_healthy=True,
    spool_depth=0,
    cache="off",
    trading="off (alerts only)",
    discord="off",
)


def snapshot(**overrides) -> StatusSnapshot:
    return replace(BASE, **overrides)


def test_event_methods_update_their_series():
    m = BotMetrics(process_metrics=False)
    m.observe_analysis(0.003)
    m.observe_analysis(float("nan"))  # ignored, not a crash
    m.signal_emitted("wyckoff_spring")
    m.signal_emitted("wyckoff_spring")
    m.signal_emitted("elliott_wave3", "watch")
    m.candle_closed("1h")
    m.store_error("write")
    s = samples(m)
    assert s[("wyeli_analysis_seconds_count", ())] == 1
    assert s[("wyeli_analysis_seconds_bucket", (("le", "0.005"),))] == 1
    assert s[("wyeli_signals_emitted_total", (("kind", "trade"), ("pattern", "wyckoff_spring")))] == 2
    assert s[("wyeli_signals_emitted_total", (("kind", "watch"), ("pattern", "elliott_wave3")))] == 1
    assert s[("wyeli_closed_candles_total", (("timeframe", "1h"),))] == 1
    assert s[("wyeli_store_errors_total", (("operation", "write"),))] == 1


def test_no_created_series_are_exported():
    m = BotMetrics(process_metrics=False)
    m.signal_emitted("x")
    m.observe_analysis(0.1)
    assert not any(name.endswith("_created") for name, _ in samples(m))


def test_providers_are_read_at_scrape_time():
    m = BotMetrics(process_metrics=False)
    frames = [10]
    m.sources.frames_received = lambda: frames[0]
    m.sources.reconnects_by_reason = lambda: {"stall": 2, "rotation": 1}
    m.sources.used_weight_1m = lambda: 37
    m.sources.discord_sent = lambda: 5
    m.sources.discord_failed = lambda: 1
    m.sources.spool_depth = lambda: 3
    assert samples(m)[("wyeli_ws_frames_received_total", ())] == 10
    frames[0] = 25
    s = samples(m)
    assert s[("wyeli_ws_frames_received_total", ())] == 25
    assert s[("wyeli_ws_reconnects_total", (("reason", "stall"),))] == 2
    assert s[("wyeli_ws_reconnects_total", (("reason", "rotation"),))] == 1
    assert s[("wyeli_binance_used_weight_1m", ())] == 37
    assert s[("wyeli_discord_sent_total", ())] == 5
    assert s[("wyeli_discord_failed_total", ())] == 1
    assert s[("wyeli_spool_depth", ())] == 3


def test_a_raising_or_garbage_provider_is_skipped_and_counted_without_breaking_the_scrape():
    m = BotMetrics(process_metrics=False)

    def broken() -> float:
        raise RuntimeError("feed gone")

    m.sources.frames_received = broken
    m.sources.stalls = lambda: float("nan")
    m.sources.reconnects_by_reason = lambda: 3  # type: ignore[assignment]
    m.sources.gaps_backfilled = lambda: 4
    s = samples(m)
    assert ("wyeli_ws_frames_received_total", ()) not in s
    assert ("wyeli_ws_stalls_total", ()) not in s
    assert s[("wyeli_gaps_backfilled_total", ())] == 4
    assert s[("wyeli_metric_source_errors_total", (("metric", "wyeli_ws_frames_received"),))] == 1
    assert s[("wyeli_metric_source_errors_total", (("metric", "wyeli_ws_stalls"),))] == 1
    assert s[("wyeli_metric_source_errors_total", (("metric", "wyeli_ws_reconnects"),))] == 1


def test_status_snapshot_becomes_gauges_and_vanished_streams_are_dropped():
    m = BotMetrics(process_metrics=False)
    m.update_status(snapshot())
    s = samples(m)
    assert s[("wyeli_uptime_seconds", ())] == 60
    assert s[("wyeli_warmed_up", ())] == 1
    assert s[("wyeli_streams", (("state", "fresh"),))] == 1
    assert s[("wyeli_streams", (("state", "stale"),))] == 1
    assert s[("wyeli_ws_connections", (("state", "connected"),))] == 1
    assert s[("wyeli_store_healthy", (("backend", "sqlite"),))] == 1
    key = ("wyeli_stream_last_candle_open_timestamp_seconds", (("symbol", "BTCUSDT"), ("timeframe", "1h")))
    assert s[key] == 1_700_000_000
    m.update_status(snapshot(streams=(), warmed_up=False, store_healthy=False))
    s = samples(m)
    assert key not in s
    assert s[("wyeli_warmed_up", ())] == 0
    assert s[("wyeli_store_healthy", (("backend", "sqlite"),))] == 0


def test_two_instances_have_independent_registries():
    a, b = BotMetrics(process_metrics=False), BotMetrics(process_metrics=False)
    a.signal_emitted("p")
    assert ("wyeli_signals_emitted_total", (("kind", "trade"), ("pattern", "p"))) not in samples(b)


def test_process_metrics_are_included_by_default():
    names = {name for name, _ in samples(BotMetrics())}
    assert "process_resident_memory_bytes" in names
    assert any(n.startswith("wyeli_build_info") for n in names)


async def test_loop_lag_monitor_records_a_blocked_loop():
    seen: list[float] = []
    two_samples = asyncio.Event()

    class Recording(BotMetrics):
        def observe_loop_lag(self, seconds: float) -> None:
            super().observe_loop_lag(seconds)
            seen.append(seconds)
            if len(seen) == 2:
                two_samples.set()

    m = Recording(process_metrics=False)
    # (start, wake) pairs: the first sleep woke 0.25 s late, the second and later ones on time
    ticks = iter([0.0, 0.35, 1.0, 1.1] + [2.0 + 0.1 * i for i in range(1000)])
    mon = LoopLagMonitor(m, interval_s=0.1, clock=lambda: next(ticks))
    task = mon.start()
    await asyncio.wait_for(two_samples.wait(), 10)
    await mon.stop()
    assert seen[:2] == [pytest.approx(0.25), pytest.approx(0.0, abs=1e-9)]
    assert task.done()
    s = samples(m)
    assert s[("wyeli_event_loop_lag_seconds_count", ())] == 2
    assert s[("wyeli_event_loop_lag_seconds_bucket", (("le", "0.25"),))] == 2  # 0.25 and 0.0 (le is inclusive)
    assert s[("wyeli_event_loop_lag_seconds_bucket", (("le", "0.1"),))] == 1
    assert s[("wyeli_event_loop_lag_last_seconds", ())] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        LoopLagMonitor(m, interval_s=0)


def test_per_stream_series_are_left_out_above_the_cap_but_totals_remain():
    m = BotMetrics(process_metrics=False, max_stream_series=1)
    m.update_status(snapshot())  # two streams > cap of one
    s = samples(m)
    assert not any(name == "wyeli_stream_last_candle_open_timestamp_seconds" for name, _ in s)
    assert s[("wyeli_streams", (("state", "stale"),))] == 1


def test_nothing_from_the_status_is_exported_before_the_first_snapshot():
    names = {name for name, _ in samples(BotMetrics(process_metrics=False))}
    assert "wyeli_warmed_up" not in names and "wyeli_streams" not in names


def test_a_batch_of_candles_counts_each_candle_with_the_mean_time():
    m = BotMetrics(process_metrics=False)
    m.observe_analysis(0.03, 3)  # three candles analysed together in 30 ms
    m.observe_analysis(0.5, 0)  # an empty batch is ignored
    s = samples(m)
    assert s[("wyeli_analysis_seconds_count", ())] == 3
    assert s[("wyeli_analysis_seconds_sum", ())] == pytest.approx(0.03)
    assert s[("wyeli_analysis_seconds_bucket", (("le", "0.01"),))] == 3


async def test_closed_candle_counter_observer_counts_by_timeframe():
    m = BotMetrics(process_metrics=False)
    await ClosedCandleCounter(m).on_candles(random_walk(4, timeframe="1m") + random_walk(1, timeframe="1h"))
    s = samples(m)
    assert s[("wyeli_closed_candles_total", (("timeframe", "1m"),))] == 4
    assert s[("wyeli_closed_candles_total", (("timeframe", "1h"),))] == 1
