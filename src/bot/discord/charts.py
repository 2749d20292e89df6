"""Chart PNGs for signals and ``>signal``: candles + volume, levels, wave pivots, entry/stop/targets.

Pure rendering with matplotlib's object API on the Agg canvas (no pyplot, no global figure state,
so it is also safe in a worker thread). :class:`ChartRenderer` runs :func:`render_png` in a worker
process by default so the event loop and the Discord gateway heartbeat never wait for matplotlib:
a 120-candle chart costs 0.3-0.9 s of CPU on a small (loaded) 2-core machine.
"""

from __future__ import annotations

import asyncio
import io
import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # before any other matplotlib import: never pick a GUI backend on a server

import structlog
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from src.analysis.types import AnalyzerState, Candle, Signal
from src.bot.status import MarketView
from src.bot.worker_guard import die_with_parent

log = structlog.get_logger(__name__)

WIDTH_PX = 1000
HEIGHT_PX = 560
DPI = 100
MAX_CANDLES = 200  # more than this is unreadable at 1000 px; the newest are kept

UP = "#26a69a"
DOWN = "#ef5350"
BG = "#131722"
FG = "#d1d4dc"
GRID = "#2a2e39"


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """Everything one chart needs, picklable so it can go to a worker process."""

    title: str
    candles: tuple[Candle, ...]
    levels: tuple[tuple[str, float], ...] = ()
    pivots: tuple[tuple[int, float, str], ...] = ()  # (open_time_ms, price, label)
    entry: float | None = None
    stop: float | None = None
    targets: tuple[float, ...] = ()
    direction: str | None = None
    marker_ms: int | None = None  # candle of the signal, highlighted
    width_px: int = WIDTH_PX
    height_px: int = HEIGHT_PX
    notes: tuple[str, ...] = field(default=())


def spec_for_signal(signal: Signal, candles: Sequence[Candle], states: Sequence[AnalyzerState] = ()) -> ChartSpec:
    """The chart of a signal: candles up to and including the signal candle, the analyzers' levels and
    pivots (when a live view is at hand), entry/stop/targets."""
    upto = tuple(c for c in candles if c.open_time_ms <= signal.candle_time_ms)
    return ChartSpec(
        title=f"{signal.symbol} {signal.timeframe} · {signal.pattern} {signal.direction}",
        candles=upto[-MAX_CANDLES:],
        levels=tuple(lv for st in states for lv in st.levels),
        pivots=tuple(p for st in states for p in st.pivots),
        entry=signal.entry,
        stop=signal.stop_loss,
        targets=signal.take_profits,
        direction=signal.direction,
        marker_ms=signal.candle_time_ms,
    )


def spec_for_view(view: MarketView) -> ChartSpec:
    """The chart of ``>signal``: recent candles with the current levels and pivots; the last signal's
    entry/stop/targets when it is inside the window."""
    candles = view.candles[-MAX_CANDLES:]
    sig = view.last_signal
    in_window = sig is not None and bool(candles) and sig.candle_time_ms >= candles[0].open_time_ms
    return ChartSpec(
        title=f"{view.symbol} {view.timeframe}",
        candles=tuple(candles),
        levels=tuple(lv for st in view.states for lv in st.levels),
        pivots=tuple(p for st in view.states for p in st.pivots),
        entry=sig.entry if sig and in_window else None,
        stop=sig.stop_loss if sig and in_window else None,
        targets=sig.take_profits if sig and in_window else (),
        direction=sig.direction if sig and in_window else None,
        marker_ms=sig.candle_time_ms if sig and in_window else None,
    )


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def render_png(spec: ChartSpec) -> bytes:
    """Render ``spec`` to PNG bytes of exactly ``width_px`` x ``height_px``. Non-finite prices are
    skipped; an empty candle list gives a 'no data' chart instead of an error."""
    fig = Figure(figsize=(spec.width_px / DPI, spec.height_px / DPI), dpi=DPI, facecolor=BG)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 1, height_ratios=(4, 1), hspace=0.05, left=0.06, right=0.86, top=0.92, bottom=0.08)
    ax = fig.add_subplot(gs[0])
    axv = fig.add_subplot(gs[1], sharex=ax)
    for a in (ax, axv):
        a.set_facecolor(BG)
        a.tick_params(colors=FG, labelsize=8)
        a.grid(color=GRID, linewidth=0.5)
        for spine in a.spines.values():
            spine.set_color(GRID)
    ax.set_title(spec.title[:120], color=FG, fontsize=11, loc="left")
    candles = [c for c in spec.candles[-MAX_CANDLES:] if all(math.isfinite(v) for v in (c.open, c.high, c.low, c.close))]

    if not candles:
        ax.text(0.5, 0.5, "no candle data", color=FG, ha="center", va="center", transform=ax.transAxes)
    else:
        xs = list(range(len(candles)))
        colours = [UP if c.close >= c.open else DOWN for c in candles]
        ax.vlines(xs, [c.low for c in candles], [c.high for c in candles], colors=colours, linewidth=0.8)
        bottoms = [min(c.open, c.close) for c in candles]
        heights = [max(abs(c.close - c.open), (c.high - c.low) * 0.002 or 1e-12) for c in candles]
        ax.bar(xs, heights, bottom=bottoms, color=colours, width=0.7, linewidth=0)
        vols = [c.volume if math.isfinite(c.volume) else 0.0 for c in candles]
        axv.bar(xs, vols, color=colours, width=0.7, linewidth=0, alpha=0.8)
        axv.set_ylabel("volume", color=FG, fontsize=8)
        index = {c.open_time_ms: i for i, c in enumerate(candles)}
        lo = min(c.low for c in candles)
        hi = max(c.high for c in candles)
        span = hi - lo or hi * 0.01 or 1.0
        right = len(candles) - 0.5
        drawn: list[float] = []  # prices whose label is printed
        lines: list[float] = []  # every horizontal line (for the y limits)

        def hline(price: float, colour: str, label: str, style: str = "--") -> None:
            # keep levels far outside the candles from squashing the chart into a line
            if not (lo - 1.5 * span <= price <= hi + 1.5 * span):
                return
            ax.axhline(price, color=colour, linestyle=style, linewidth=0.9, alpha=0.9)
            lines.append(price)
            # labels closer than ~3 % of the price span would print on top of each other: the first one wins
            if any(abs(price - d) < 0.03 * span for d in drawn):
                return
            drawn.append(price)
            ax.annotate(f"{label} {price:.6g}", xy=(1.0, price), xycoords=("axes fraction", "data"), xytext=(4, 0),
                        textcoords="offset points", color=colour, fontsize=7, va="center")

        # the signal's own levels first: their labels win over the analyzers' context levels
        if _finite(spec.entry):
            hline(spec.entry, "#42a5f5", "entry")  # type: ignore[arg-type]
        if _finite(spec.stop):
            hline(spec.stop, DOWN, "stop")  # type: ignore[arg-type]
        for i, tp in enumerate(spec.targets[:6], 1):
            if _finite(tp):
                hline(tp, UP, f"TP{i}")
        for label, price in spec.levels[:12]:
            if _finite(price):
                hline(price, "#b39ddb", label[:24], ":")
        px, py = [], []
        for t, price, label in spec.pivots:
            if t in index and _finite(price):
                px.append(index[t])
                py.append(price)
                ax.annotate(label[:12], xy=(index[t], price), xytext=(0, 6 if price >= candles[index[t]].close else -12),
                            textcoords="offset points", color="#ffca28", fontsize=8, ha="center", fontweight="bold")
        if len(px) >= 2:
            ax.plot(px, py, color="#ffca28", linewidth=1.0, alpha=0.8)
        if spec.marker_ms in index:
            mx = index[spec.marker_ms]
            ax.axvspan(mx - 0.5, mx + 0.5, color="#42a5f5" if spec.direction == "LONG" else DOWN, alpha=0.15)
        ax.set_xlim(-1, right + 1)
        ylo, yhi = min([lo, *lines]), max([hi, *lines])
        pad = 0.05 * (yhi - ylo or span)
        ax.set_ylim(ylo - pad, yhi + pad)
        ticks = xs[:: max(1, len(xs) // 6)]
        axv.set_xticks(ticks)
        axv.set_xticklabels([_tick_label(candles[i].open_time_ms, candles) for i in ticks])
        ax.tick_params(labelbottom=False)
    for note_i, note in enumerate(spec.notes[:3]):
        fig.text(0.06, 0.01 + note_i * 0.025, note[:140], color=FG, fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor=BG)
    return buf.getvalue()


def _tick_label(ms: int, candles: Sequence[Candle]) -> str:
    from datetime import UTC, datetime

    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    span_ms = candles[-1].open_time_ms - candles[0].open_time_ms if candles else 0
    return dt.strftime("%m-%d %H:%M") if span_ms < 20 * 86_400_000 else dt.strftime("%Y-%m-%d")


class ChartRenderer:
    """Renders charts off the event loop.

    :param use_processes: True (default) = a 1-worker process pool (spawn start method: safe next to the
        store's threads; the worker starts on the first chart and costs ~60-80 MB RAM; it dies with the bot,
        kill -9 included: :func:`~src.bot.worker_guard.die_with_parent`); False = a 1-worker
        thread. Measured with benchmarks/chart_render.py on 2 loaded cores: a thread still holds the GIL
        through much of matplotlib's drawing (loop lag max 240-300 ms, above the 100 ms bar), a process
        keeps the loop's lag under 30 ms. One worker: charts queue up instead of competing for 1-2 cores.
    """

    def __init__(self, *, use_processes: bool = True, executor: Executor | None = None) -> None:
        self._own = executor is None
        self._use_processes = use_processes
        self._executor: Executor = executor if executor is not None else self._new_executor()
        self.rendered = 0
        self.failed = 0
        self._broken = 0  # consecutive worker deaths

    def _new_executor(self) -> Executor:
        if self._use_processes:
            # the worker ends with the bot, also after a kill -9 (no orphan per killed run)
            return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=die_with_parent, initargs=(os.getpid(),))
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="chart")

    async def render(self, spec: ChartSpec) -> bytes | None:
        """PNG bytes, or None when rendering failed (logged and counted: a signal is posted without chart
        rather than not at all).

        A worker process that dies (OOM killer) is replaced. If it dies before it ever rendered, or three
        times in a row, processes do not work in this environment (spawn re-imports the main module, which
        fails when Python runs from stdin or an unusual launcher): the renderer then switches to a thread
        for good and renders the chart there."""
        loop = asyncio.get_running_loop()
        for _attempt in range(2):
            try:
                png = await loop.run_in_executor(self._executor, render_png, spec)
            except asyncio.CancelledError:
                raise
            except BrokenExecutor as exc:
                self._broken += 1
                if not self._own:
                    self.failed += 1
                    log.error("chart_worker_died", error=type(exc).__name__)
                    return None
                self._executor.shutdown(wait=False, cancel_futures=True)
                if self._use_processes and (self.rendered == 0 or self._broken >= 3):
                    log.warning("chart_worker_process_unusable_switching_to_thread", deaths=self._broken)
                    self._use_processes = False
                    self._executor = self._new_executor()
                    continue  # render this chart in the thread
                log.error("chart_worker_died", error=type(exc).__name__)
                self._executor = self._new_executor()
                self.failed += 1
                return None
            except Exception as exc:  # matplotlib errors on odd data must never stop a delivery
                self.failed += 1
                log.warning("chart_render_failed", title=spec.title, error=repr(exc)[:300])
                return None
            self._broken = 0
            self.rendered += 1
            return png
        self.failed += 1
        return None

    @property
    def uses_processes(self) -> bool:
        return self._use_processes

    def close(self) -> None:
        if self._own:
            self._executor.shutdown(wait=False, cancel_futures=True)
