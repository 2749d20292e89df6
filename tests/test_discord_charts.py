"""Chart rendering: PNG bytes that decode to the expected size, for signals, views and odd input."""

from __future__ import annotations

import io
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import pytest
from PIL import Image

from src.analysis.types import AnalyzerState
from src.bot.discord.charts import HEIGHT_PX, WIDTH_PX, ChartRenderer, ChartSpec, render_png, spec_for_signal, spec_for_view
from src.bot.status import MarketView
from tests.candlegen import random_walk
from tests.storage_contract import make_signal


def decode(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def test_signal_chart_is_a_png_of_the_configured_size() -> None:
    candles = random_walk(150, timeframe="1h", seed=3)
    sig = replace(make_signal(candle_time_ms=candles[119].open_time_ms), entry=candles[119].close,
                  stop_loss=candles[119].close * 0.98, take_profits=(candles[119].close * 1.03,))
    pivots = ((candles[90].open_time_ms, candles[90].high, "1"), (candles[100].open_time_ms, candles[100].low, "2"))
    states = [AnalyzerState("wyckoff", "Accumulation", levels=(("support", candles[100].low),), pivots=pivots)]
    spec = spec_for_signal(sig, candles, states)
    assert spec.candles[-1].open_time_ms == sig.candle_time_ms  # nothing after the signal candle is drawn
    img = decode(render_png(spec))
    assert img.format == "PNG" and img.size == (WIDTH_PX, HEIGHT_PX)


def test_view_chart_and_custom_size() -> None:
    candles = tuple(random_walk(60, timeframe="15m"))
    view = MarketView("BTCUSDT", "15m", candles, (), None)
    spec = replace(spec_for_view(view), width_px=640, height_px=360)
    assert decode(render_png(spec)).size == (640, 360)


def test_empty_and_degenerate_data_still_render() -> None:
    assert decode(render_png(ChartSpec(title="nothing", candles=()))).size == (WIDTH_PX, HEIGHT_PX)
    flat = [replace(c, open=1.0, high=1.0, low=1.0, close=1.0) for c in random_walk(5)]
    spec = ChartSpec(title="flat", candles=tuple(flat), entry=1.0, stop=math.nan, targets=(math.inf, 1e12), levels=(("x", -5.0),))
    assert decode(render_png(spec)).size == (WIDTH_PX, HEIGHT_PX)


@pytest.mark.parametrize("use_processes", [True, False], ids=["process", "thread"])
async def test_renderer_runs_in_a_worker_and_reports_failures_as_none(use_processes: bool) -> None:
    renderer = ChartRenderer(use_processes=use_processes)
    try:
        png = await renderer.render(ChartSpec(title="ok", candles=tuple(random_walk(30))))
        assert png is not None and decode(png).size == (WIDTH_PX, HEIGHT_PX)
        bad = await renderer.render(ChartSpec(title="bad", candles=tuple(random_walk(3)), width_px=0, height_px=0))
        assert bad is None and renderer.failed == 1 and renderer.rendered == 1
    finally:
        renderer.close()


async def test_renderer_falls_back_to_a_thread_when_worker_processes_cannot_start() -> None:
    from concurrent.futures.process import BrokenProcessPool

    class DeadPool(ThreadPoolExecutor):
        def submit(self, *args: object, **kwargs: object) -> Future[bytes]:  # type: ignore[override]
            f: Future[bytes] = Future()
            f.set_exception(BrokenProcessPool("worker died at start"))
            return f

    renderer = ChartRenderer(use_processes=True)
    renderer._executor.shutdown()
    renderer._executor = DeadPool()
    try:
        png = await renderer.render(ChartSpec(title="ok", candles=tuple(random_walk(20))))
        assert png is not None and decode(png).format == "PNG"
        assert not renderer.uses_processes and renderer.rendered == 1
    finally:
        renderer.close()


# ---------------------------------------------------------------------------- the signal's own structure (issue 14)
WYCKOFF_REASONS = (
    "Distribution range 29680 - 31568, phase D",
    "Events: PSY 2023-07-03 16:00 at 31395.2; BC 2023-07-06 08:00 at 31568; AR 2023-07-06 12:00 at 29865; "
    "ST 2023-07-10 20:00 at 31040; SOW 2023-07-24 08:00 at 29259.6; LPSY 2023-07-26 00:00 at 29414.6",
    "LPSY confirmed by the close 29205.3; invalid beyond 29474.1",
    "Evidence: climax 1.00, context 0.11",
)
ELLIOTT_REASONS = (
    "impulse down (degree 2, score 0.68): 0=22840 @ 2023-02-09T12:00:00.000Z, 1=21405 @ 2023-02-10T20:00:00.000Z, "
    "2=22080.9 @ 2023-02-12T16:00:00.000Z; invalid if price trades above 22840",
    "elliott_wave3 SHORT: entry 21771.1 on the close of the confirming candle 2023-02-12T20:00:00.000Z, stop 22840",
)


def iso(text: str) -> int:
    from src.analysis.types import iso_to_ms

    return iso_to_ms(text + ":00Z")


def test_a_wyckoff_signals_structure_is_its_range_and_its_events() -> None:
    from src.bot.discord.structure import structure_of

    sig = replace(make_signal(timeframe="4h", pattern="wyckoff_lpsy", direction="SHORT"), reasons=WYCKOFF_REASONS)
    st = structure_of(sig)
    assert (st.analyzer, st.range_side, st.support, st.resistance) == ("wyckoff", "distribution", 29680.0, 31568.0)
    assert [p[2] for p in st.points] == ["PSY", "BC", "AR", "ST", "SOW", "LPSY"]
    assert st.points[0] == (iso("2023-07-03T16:00"), 31395.2, "PSY") and st.start_ms == iso("2023-07-03T16:00")
    assert not st.connect and st.levels == ()


def test_an_elliott_signals_structure_is_its_count_and_its_invalidation() -> None:
    from src.bot.discord.structure import structure_of

    sig = replace(make_signal(timeframe="4h", pattern="elliott_wave3", direction="SHORT"), reasons=ELLIOTT_REASONS)
    st = structure_of(sig)
    assert [(p[2], p[1]) for p in st.points] == [("0", 22840.0), ("1", 21405.0), ("2", 22080.9)]
    assert st.connect and st.levels == (("invalid above", 22840.0),) and st.support is None


def test_unreadable_reasons_give_an_empty_structure_not_an_error() -> None:
    from src.bot.discord.structure import structure_of

    for reasons in ((), ("Events: ???", "range x - y"), ("0=abc @ nowhere",)):
        for pattern in ("wyckoff_spring", "elliott_abc", "other"):
            st = structure_of(replace(make_signal(pattern=pattern), reasons=reasons))
            assert st.points == () and st.support is None


def test_a_range_signals_chart_starts_before_the_climax_and_draws_only_its_own_structure() -> None:
    start = iso("2023-06-20T00:00")
    candles = random_walk(260, timeframe="4h", start_ms=start, seed=5, price=30000.0)
    at = next(c for c in candles if c.open_time_ms == iso("2023-07-26T04:00"))
    sig = replace(make_signal(timeframe="4h", candle_time_ms=at.open_time_ms, pattern="wyckoff_lpsy", direction="SHORT"),
                  reasons=WYCKOFF_REASONS, entry=at.close, stop_loss=at.close * 1.01,
                  take_profits=(at.close * 0.96, at.close * 0.9))
    elliott = AnalyzerState("elliott", "Wave 3", levels=(("invalidation (wave 1)", 1.0),),
                            pivots=((candles[250].open_time_ms, 99.0, "A"),))
    spec = spec_for_signal(sig, candles, [elliott], offset_minutes=120)
    assert spec.candles[0].open_time_ms < iso("2023-07-03T16:00")  # the whole range, from before the PSY
    assert spec.candles[-1].open_time_ms == sig.candle_time_ms
    assert [p[2] for p in spec.pivots] == ["PSY", "BC", "AR", "ST", "SOW", "LPSY"]  # the unrelated count is not drawn
    assert spec.levels == () and spec.band == (29680.0, 31568.0) and not spec.connect_pivots
    assert "Wyckoff last point of supply (LPSY)" in spec.title and "(10:00 UTC+2)" in spec.subtitle
    assert "your time: UTC+2" in spec.time_note


@pytest.mark.parametrize("price", [0.00001234, 1.2345, 98765.4321])
def test_no_label_is_clipped_whatever_the_prices_and_labels(price: float) -> None:
    from src.bot.discord.charts import build_figure

    candles = random_walk(200, timeframe="1h", seed=9, price=price)
    last = candles[-1]
    pivots = tuple((c.open_time_ms, c.high, "Spring test") for c in candles[::25])
    spec = ChartSpec(title="X" * 200, subtitle="y" * 300, candles=tuple(candles), pivots=pivots, connect_pivots=False,
                     levels=tuple((f"a very long level name {i}", last.close * (1 + i / 200)) for i in range(10)),
                     entry=last.close, stop=last.close * 0.99, targets=tuple(last.close * (1 + i / 50) for i in range(1, 7)),
                     band=(last.close * 0.97, last.close * 1.02), band_from_ms=candles[50].open_time_ms,
                     direction="LONG", marker_ms=last.open_time_ms, pad_right=12)
    fig = build_figure(spec)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    width, height = fig.bbox.width, fig.bbox.height
    texts = [t for ax in fig.axes for t in ax.texts] + list(fig.texts)
    assert len(texts) > 10
    for t in texts:
        box = t.get_window_extent(renderer)
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, t.get_text()
