"""Where trade calls and watch notes go (WATCH_NOTES), and the console's wording of a signal."""

from __future__ import annotations

import io

import pytest

from src.bot.console import ConsoleSink, format_signal
from src.bot.sinks import KindFilter, SignalBatch, SignalRoutes
from src.config import Config
from tests.storage_contract import T0, make_evidence, make_signal


@pytest.mark.parametrize("route, console, signals, watch, discord", [
    ("off", {"trade"}, {"trade"}, set(), {"trade"}),
    ("console", {"trade", "watch"}, {"trade"}, set(), {"trade"}),
    ("signals", {"trade", "watch"}, {"trade", "watch"}, set(), {"trade", "watch"}),
    ("channel", {"trade", "watch"}, {"trade"}, {"watch"}, {"trade", "watch"}),
])
def test_watch_notes_route_to_the_destinations_the_setting_names(route, console, signals, watch, discord):
    r = SignalRoutes.from_config(Config(watch_notes=route))
    assert (set(r.console), set(r.discord_signals), set(r.discord_watch), set(r.discord)) == (console, signals, watch, discord)
    assert "gated" not in r.console | r.discord


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.batches: list[SignalBatch] = []
        self.closed = False

    async def publish(self, batch: SignalBatch) -> None:
        self.batches.append(batch)

    async def close(self) -> None:
        self.closed = True


async def test_kind_filter_passes_only_its_kinds_and_never_an_empty_batch():
    inner = Recording()
    sink = KindFilter(inner, {"trade", "gated"})
    trade = make_signal(candle_time_ms=T0)
    watch = make_signal(candle_time_ms=T0, pattern="b", kind="watch", gate_reason="no_edge")
    gated = make_signal(candle_time_ms=T0, pattern="c", kind="gated", gate_reason="cooldown")
    await sink.publish(SignalBatch((trade, watch, gated), (), historical=True))
    await sink.publish(SignalBatch((watch,), ()))
    assert [[s.id for s in b.signals] for b in inner.batches] == [[trade.id]]  # 'gated' is never let through
    assert inner.batches[0].historical and sink.name == "recording"
    await sink.close()
    assert inner.closed


def test_console_lines_name_the_kind_the_evidence_and_the_track_record_never_a_confidence():
    trade = format_signal(make_signal(confidence=0.83, evidence=make_evidence(p_win=0.57, expected_r=0.12, live_n=9)))
    lines = trade.splitlines()
    assert lines[0].startswith("TRADE CALL: LONG BTCUSDT 1h spring @ ")
    assert lines[1] == "  P(win) 57 % · E[R] +0.12 R [-0.08, +0.32] (80 %) · R:R 1 : 1.50 to TP1"
    assert "track record spring 1h: backtest (out of sample): n 120, mean +0.12 R, 95 % CI [-0.18, +0.42] · " \
           "live: n 9, mean +0.10 R" in trade
    watch = format_signal(make_signal(kind="watch", gate_reason="no_edge"), historical=True)
    assert watch.startswith("WATCH NOTE — not a trade call: LONG BTCUSDT 1h spring (caught up, not live)")
    assert "why not a trade call: the evidence does not show a positive expected R after fees" in watch
    assert "no evidence assessment" in watch
    for text in (trade, watch):
        assert "conf" not in text.lower() and "0.83" not in text


async def test_console_sink_prints_one_block_per_signal():
    out = io.StringIO()
    sink = ConsoleSink(out)
    await sink.publish(SignalBatch((make_signal(), make_signal(pattern="x", kind="watch")), ()))
    assert out.getvalue().count("TRADE CALL: ") == 1 and out.getvalue().count("WATCH NOTE") == 1 and sink.printed == 2


def test_numbers_that_round_to_zero_read_plus_zero_never_minus_zero():
    from src.analysis.types import Evidence
    from src.bot.evidence_text import evidence_line, fmt_r

    assert fmt_r(-0.004) == "+0.00 R" and fmt_r(-0.005) == "-0.01 R" and fmt_r(None) == "n/a"
    ev = Evidence(p_win=0.46, expected_r=-0.001, expected_r_lo=-0.33, expected_r_hi=0.0001, interval=0.8, model_version="m")
    assert evidence_line(ev) == "P(win) 46 % · E[R] +0.00 R [-0.33, +0.00] (80 %)"
