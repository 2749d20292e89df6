"""Chart PNGs for signals and ``>signal``: candles + volume, the signal's own structure (the whole Wyckoff range
with its events, or the wave count with its invalidation), entry/stop/targets; times are candle closes in UTC.

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
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before any other matplotlib import: never pick a GUI backend on a server

import structlog
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from src.analysis import timeframes
from src.analysis.types import AnalyzerState, Candle, Signal
from src.bot.discord.structure import SignalStructure, structure_of
from src.bot.discord.wording import fmt_time, offset_label, pattern_words
from src.bot.status import MarketView
from src.bot.worker_guard import die_with_parent

log = structlog.get_logger(__name__)

WIDTH_PX = 1000
HEIGHT_PX = 560
DPI = 100
MAX_CANDLES = 360  # a whole Wyckoff range can be this long; more is unreadable at 1000 px (the newest are kept)

UP = "#26a69a"
DOWN = "#ef5350"
BG = "#131722"
FG = "#d1d4dc"
GRID = "#2a2e39"


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """Everything one chart needs, picklable so it can go to a worker process.

    ``levels`` span the whole chart (context levels); ``entry``/``stop``/``targets`` start at the signal candle
    (``marker_ms``) and run into the empty space right of it; ``pivots`` are connected by a line when
    ``connect_pivots`` (a wave count), else drawn as labelled markers (Wyckoff events); ``band`` is a shaded
    (low, high) price range from ``band_from_ms`` to the signal (a Wyckoff trading range). Times on the axis are
    candle CLOSE times in UTC; ``time_note`` says so (and names the user's offset)."""

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
    connect_pivots: bool = True
    band: tuple[float, float] | None = None
    band_label: str = ""
    band_from_ms: int | None = None
    subtitle: str = ""
    time_note: str = "candle close, UTC"
    pad_right: int = 0  # empty candle slots right of the last candle (room for the levels of a fresh signal)


MIN_SIGNAL_CANDLES = 60  # a signal's chart shows at least this many candles up to the signal


def structure_window_start(signal: Signal, structure: SignalStructure) -> int | None:
    """Open time of the first candle a signal's chart shows: the structure's first point (the climax, the count's
    origin) with context before it (a quarter of the structure's length, at least 8 candles), and at least
    :data:`MIN_SIGNAL_CANDLES` candles in all. None without a known timeframe."""
    if not timeframes.is_interval(signal.timeframe):
        return None
    interval = timeframes.interval_ms(signal.timeframe)
    first = signal.candle_time_ms - (MIN_SIGNAL_CANDLES - 1) * interval
    start = structure.start_ms
    if start is not None and start < signal.candle_time_ms:
        pad = max(8, (signal.candle_time_ms - start) // interval // 4)
        first = min(first, start - pad * interval)
    return first


def spec_for_signal(signal: Signal, candles: Sequence[Candle], states: Sequence[AnalyzerState] = (), *,
                    offset_minutes: int = 0) -> ChartSpec:
    """The chart of a signal: candles up to and including the signal candle (from before the start of its structure
    when the structure is known: the whole Wyckoff range from the climax, the whole wave count), the structure that
    PRODUCED it read from the signal (:mod:`src.bot.discord.structure`; the analyzers' states at posting time are not
    drawn: they may hold an unrelated count), then entry, stop and targets from the signal candle on."""
    structure = structure_of(signal)
    start = structure_window_start(signal, structure)
    upto = [c for c in candles if c.open_time_ms <= signal.candle_time_ms]
    if start is not None:
        upto = [c for c in upto if c.open_time_ms >= start] or upto
    upto = upto[-MAX_CANDLES:]
    band = None
    band_label = ""
    if structure.support is not None and structure.resistance is not None and structure.support < structure.resistance:
        band = (structure.support, structure.resistance)
        band_label = f"{structure.range_side} range" if structure.range_side else "range"
    kind = "trade call" if signal.kind == "trade" else "watch note (not a trade call)"
    close_ms = timeframes.next_open(signal.timeframe, signal.candle_time_ms) if timeframes.is_interval(
        signal.timeframe) else signal.candle_time_ms
    return ChartSpec(
        title=f"{signal.symbol} {signal.timeframe} · {pattern_words(signal.pattern)} · {signal.direction}",
        subtitle=f"{kind} · signal candle closed {fmt_time(close_ms, offset_minutes)}",
        candles=tuple(upto),
        levels=structure.levels,
        pivots=structure.points,
        connect_pivots=structure.connect,
        band=band,
        band_label=band_label,
        band_from_ms=structure.start_ms,
        entry=signal.entry,
        stop=signal.stop_loss,
        targets=signal.take_profits,
        direction=signal.direction,
        marker_ms=signal.candle_time_ms,
        time_note=_time_note(offset_minutes),
        pad_right=max(6, len(upto) // 12),
    )


def spec_for_view(view: MarketView, *, offset_minutes: int = 0) -> ChartSpec:
    """The chart of ``>signal``: recent candles with the analyzers' current levels and pivots (the market as it stands,
    every analyzer); the last signal's entry/stop/targets when it is inside the window."""
    candles = view.candles[-MAX_CANDLES:]
    sig = view.last_signal
    in_window = sig is not None and bool(candles) and sig.candle_time_ms >= candles[0].open_time_ms
    return ChartSpec(
        title=f"{view.symbol} {view.timeframe} · current analysis",
        subtitle=f"last candle closed {fmt_time(candles[-1].close_time_ms + 1, offset_minutes)}" if candles else "",
        candles=tuple(candles),
        levels=tuple(lv for st in view.states for lv in st.levels),
        pivots=tuple(p for st in view.states for p in st.pivots),
        entry=sig.entry if sig and in_window else None,
        stop=sig.stop_loss if sig and in_window else None,
        targets=sig.take_profits if sig and in_window else (),
        direction=sig.direction if sig and in_window else None,
        marker_ms=sig.candle_time_ms if sig and in_window else None,
        time_note=_time_note(offset_minutes),
        pad_right=4,
    )


def _time_note(offset_minutes: int) -> str:
    return "candle close, UTC" + (f" (your time: {offset_label(offset_minutes)})" if offset_minutes else "")


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


LABEL_CHARS = 22  # right-margin labels are cut to this: the margin is sized for it


def render_png(spec: ChartSpec) -> bytes:
    """Render ``spec`` to PNG bytes of exactly ``width_px`` x ``height_px``. Non-finite prices are skipped; an empty
    candle list gives a 'no data' chart instead of an error. Every label stays inside the image: price labels sit in a
    right margin sized for :data:`LABEL_CHARS` characters, point labels are kept inside the plot."""
    fig = build_figure(spec)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor=BG)
    return buf.getvalue()


def build_figure(spec: ChartSpec) -> Figure:
    """The chart as a matplotlib Figure on the Agg canvas (what :func:`render_png` saves)."""
    fig = Figure(figsize=(spec.width_px / DPI, spec.height_px / DPI), dpi=DPI, facecolor=BG)
    FigureCanvasAgg(fig)
    # the right margin holds LABEL_CHARS characters of 7 pt text (about 5 px each) whatever the width
    right = max(0.6, 1.0 - (LABEL_CHARS * 6.0 + 16) / spec.width_px)
    gs = fig.add_gridspec(2, 1, height_ratios=(4, 1), hspace=0.05, left=0.07, right=right, top=0.88, bottom=0.12)
    ax = fig.add_subplot(gs[0])
    axv = fig.add_subplot(gs[1], sharex=ax)
    for a in (ax, axv):
        a.set_facecolor(BG)
        a.tick_params(colors=FG, labelsize=8)
        a.grid(color=GRID, linewidth=0.5)
        for spine in a.spines.values():
            spine.set_color(GRID)
    fig.text(0.07, 0.955, spec.title[:110], color=FG, fontsize=11, ha="left", va="center")
    if spec.subtitle:
        fig.text(0.07, 0.915, spec.subtitle[:150], color="#949ba4", fontsize=8, ha="left", va="center")
    candles = [c for c in spec.candles[-MAX_CANDLES:] if all(math.isfinite(v) for v in (c.open, c.high, c.low, c.close))]

    if not candles:
        ax.text(0.5, 0.5, "no candle data", color=FG, ha="center", va="center", transform=ax.transAxes)
    else:
        _draw(ax, axv, spec, candles)
    for note_i, note in enumerate(spec.notes[:2]):
        fig.text(0.07, 0.01 + note_i * 0.025, note[:140], color=FG, fontsize=7)
    _keep_texts_inside(fig)
    return fig


def _keep_texts_inside(fig: Figure) -> None:
    """Shorten (with an ellipsis) any text that would reach past the image's right edge: a long title, a label of a
    wide price. Measured on the real renderer, so it holds for any font and any width."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    limit = fig.bbox.width - 2
    for text in [t for ax in fig.axes for t in ax.texts] + list(fig.texts):
        content = text.get_text()
        for _ in range(200):
            # the text alone: an annotation's leader line may run left of it, never right
            if text.get_window_extent(renderer).x1 <= limit or len(content) <= 2:
                break
            content = content[:-2] + "…"
            text.set_text(content)


def _draw(ax: Any, axv: Any, spec: ChartSpec, candles: list[Candle]) -> None:
    xs = list(range(len(candles)))
    colours = [UP if c.close >= c.open else DOWN for c in candles]
    ax.vlines(xs, [c.low for c in candles], [c.high for c in candles], colors=colours, linewidth=0.8)
    bottoms = [min(c.open, c.close) for c in candles]
    heights = [max(abs(c.close - c.open), (c.high - c.low) * 0.002 or 1e-12) for c in candles]
    width = 0.7 if len(candles) <= 250 else 0.9
    ax.bar(xs, heights, bottom=bottoms, color=colours, width=width, linewidth=0)
    vols = [c.volume if math.isfinite(c.volume) else 0.0 for c in candles]
    axv.bar(xs, vols, color=colours, width=width, linewidth=0, alpha=0.8)
    axv.set_ylabel("volume", color=FG, fontsize=8)
    axv.yaxis.set_major_formatter(_si_formatter())
    index = {c.open_time_ms: i for i, c in enumerate(candles)}
    lo = min(c.low for c in candles)
    hi = max(c.high for c in candles)
    span = hi - lo or hi * 0.01 or 1.0
    right_edge = len(candles) - 0.5 + spec.pad_right
    shown: list[float] = []  # prices inside the y range (for the limits)
    labels: list[tuple[float, str, str]] = []  # (price, colour, text) for the right margin, placed at the end

    def in_view(price: float, reach: float = 1.5) -> bool:
        # keep levels far outside the candles from squashing the chart into a line
        return lo - reach * span <= price <= hi + reach * span

    def label(price: float, colour: str, text: str) -> None:
        if not any(abs(price - p) < 1e-12 * max(1.0, abs(price)) for p, _, _ in labels):  # one label per price
            labels.append((price, colour, f"{text[:LABEL_CHARS - 9]} {_fmt(price)}"[:LABEL_CHARS]))

    def hline(price: float, colour: str, text: str, x_from: float, style: str = "--", reach: float = 1.5) -> None:
        if not in_view(price, reach):
            return
        ax.hlines(price, x_from, right_edge, colors=colour, linestyles=style, linewidth=0.9, alpha=0.9)
        shown.append(price)
        label(price, colour, text)

    signal_x = index.get(spec.marker_ms, len(candles) - 1) if spec.marker_ms is not None else -1.0
    # the signal's own levels first: their labels win over the structure's
    if _finite(spec.entry):
        hline(spec.entry, "#42a5f5", "entry", signal_x)  # type: ignore[arg-type]
    if _finite(spec.stop):
        hline(spec.stop, DOWN, "stop", signal_x)  # type: ignore[arg-type]
    for i, tp in enumerate(spec.targets[:6], 1):
        if _finite(tp):
            hline(tp, UP, f"TP{i}", signal_x, reach=3.0)  # the targets are what a trader looks for: further out
    if spec.band is not None and all(_finite(p) and in_view(p) for p in spec.band):
        x0 = index.get(spec.band_from_ms, 0) if spec.band_from_ms is not None else 0
        if spec.band_from_ms is not None and spec.band_from_ms not in index:
            x0 = next((i for i, c in enumerate(candles) if c.open_time_ms >= spec.band_from_ms), 0)
        x1 = signal_x if signal_x >= 0 else len(candles) - 1
        lo_b, hi_b = spec.band
        ax.fill_between([x0 - 0.5, x1 + 0.5], lo_b, hi_b, color="#b39ddb", alpha=0.10, linewidth=0)
        ax.hlines([lo_b, hi_b], x0 - 0.5, x1 + 0.5, colors="#b39ddb", linestyles=":", linewidth=1.0)
        shown += [lo_b, hi_b]
        label(hi_b, "#b39ddb", "range top")
        label(lo_b, "#b39ddb", "range bottom")
    for text, price in spec.levels[:12]:
        if _finite(price):
            hline(price, "#b39ddb", text, -0.5, ":")
    _draw_points(ax, spec, candles, index, lo, hi, shown)
    if spec.marker_ms in index:
        mx = index[spec.marker_ms]
        ax.axvspan(mx - 0.5, mx + 0.5, color="#42a5f5" if spec.direction == "LONG" else DOWN, alpha=0.18, linewidth=0)
    ax.set_xlim(-1, right_edge + 0.5)
    ylo, yhi = min([lo, *shown]), max([hi, *shown])
    pad = 0.07 * (yhi - ylo or span)
    ax.set_ylim(ylo - pad, yhi + pad)
    _place_labels(ax, labels, ylo - pad, yhi + pad)
    ax.yaxis.set_major_formatter(_price_formatter())
    step = max(1, len(xs) // 6)
    ticks = xs[::step]
    axv.set_xticks(ticks)
    axv.set_xticklabels([_tick_label(candles[i].close_time_ms + 1, candles) for i in ticks])
    axv.set_xlabel(spec.time_note, color="#949ba4", fontsize=7, loc="left")
    ax.tick_params(labelbottom=False)


def _place_labels(ax: Any, labels: list[tuple[float, str, str]], ylo: float, yhi: float) -> None:
    """Right-margin price labels, each at its price unless that would overlap the one below: then moved up just
    enough (a thin leader line points at the price); the stack is shifted down as a whole if it overflows the top.
    At most 14 labels (the lowest and highest kept when there are more)."""
    if not labels:
        return
    labels = sorted(labels)
    if len(labels) > 14:
        labels = labels[:7] + labels[-7:]
    gap = 0.045 * (yhi - ylo)
    ys: list[float] = []
    for price, _, _ in labels:
        ys.append(max(price, ys[-1] + gap) if ys else max(price, ylo + gap / 2))
    overflow = ys[-1] - (yhi - gap / 2)
    if overflow > 0:
        ys = [y - overflow for y in ys]
        for i in range(len(ys) - 2, -1, -1):  # keep the gaps after the shift
            ys[i] = min(ys[i], ys[i + 1] - gap)
    for (price, colour, text), y in zip(labels, ys, strict=True):
        ax.annotate(text, xy=(1.0, price), xycoords=("axes fraction", "data"), xytext=(1.012, y),
                    textcoords=("axes fraction", "data"), color=colour, fontsize=7, va="center",
                    annotation_clip=False,
                    arrowprops=None if abs(y - price) < gap / 4 else {"arrowstyle": "-", "color": colour, "lw": 0.5})


def _draw_points(ax: Any, spec: ChartSpec, candles: list[Candle], index: dict[int, int], lo: float, hi: float,
                 shown: list[float]) -> None:
    """The structure's points: a wave count connected by a line, Wyckoff events as markers, each labelled above a
    high or below a low (inside the plot: the y range leaves room for them)."""
    px, py = [], []
    placed: list[tuple[int, bool]] = []  # (x, above) of the labels so far: close ones are stacked, not overprinted
    near = max(3, len(candles) // 30)
    for t, price, text in spec.pivots:
        if t not in index or not _finite(price) or not (lo * 0.5 <= price <= hi * 1.5):
            continue
        i = index[t]
        c = candles[i]
        above = price >= (c.high + c.low) / 2
        px.append(i)
        py.append(price)
        shown.append(price)
        stack = sum(1 for x, side in placed if side == above and abs(x - i) <= near)
        placed.append((i, above))
        offset = (7 + 11 * stack) if above else -(9 + 11 * stack)
        ax.annotate(text[:16], xy=(i, price), xytext=(0, offset), textcoords="offset points",
                    color="#ffca28", fontsize=8, ha="center", va="bottom" if above else "top", fontweight="bold")
        if not spec.connect_pivots:
            ax.plot([i], [price], marker="v" if above else "^", color="#ffca28", markersize=5, linestyle="none")
    if spec.connect_pivots and len(px) >= 2:
        ax.plot(px, py, color="#ffca28", linewidth=1.1, alpha=0.85)


def _fmt(price: float) -> str:
    """Prices as the embeds write them (2 decimals above 1000, up to 8 significant digits below)."""
    if abs(price) >= 1000:
        return f"{price:,.2f}"
    if price == 0:
        return "0"
    decimals = min(10, max(2, 5 - math.floor(math.log10(abs(price)))))
    return f"{price:.{decimals}f}"


def _price_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: _fmt(v) if v > 0 else "")


def _si_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    def fmt(v: float, _pos: int) -> str:
        for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= div:
                return f"{v / div:.3g}{suffix}"
        return f"{v:.3g}"

    return FuncFormatter(fmt)


def _tick_label(close_ms: int, candles: Sequence[Candle]) -> str:
    """A candle close (UTC): month-day and time on short charts, the date on long ones."""
    from datetime import UTC, datetime

    dt = datetime.fromtimestamp(close_ms / 1000, tz=UTC)
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
