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
