"""Prometheus metrics of the bot, on a dedicated registry (no global state, so tests stay isolated).

Three kinds of inputs, so that components never import prometheus_client:

- events the app reports through methods: :meth:`BotMetrics.observe_analysis`, :meth:`~BotMetrics.signal_emitted`,
  :meth:`~BotMetrics.candle_closed` (or the :class:`ClosedCandleCounter` pipeline observer),
  :meth:`~BotMetrics.store_error`;
- totals that components already count (market feed, Discord service, spool), read at scrape time through the
  provider callables in :class:`MetricSources` (a provider that raises is skipped for that scrape and counted
  in ``wyeli_metric_source_errors_total``);
- the :class:`~src.bot.status.StatusSnapshot`, remembered by :meth:`BotMetrics.update_status` (the HTTP server
  passes a fresh one right before each scrape) and turned into gauges at scrape time.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` units); every name starts with ``wyeli_``.
The ``_created`` series are disabled. :class:`LoopLagMonitor` measures event-loop lag: it sleeps ``interval_s``
and records how much later than that it woke up.
"""

from __future__ import annotations

import asyncio
import math
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics import disable_created_metrics
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from src.analysis.types import Candle
from src.bot.status import StatusSnapshot

log = structlog.get_logger(__name__)

VERSION = "0.1.0"
ANALYSIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

NumberSource = Callable[[], float]
LabelledSource = Callable[[], Mapping[str, float]]


@dataclass
class MetricSources:
    """Provider callables read at scrape time; leave a field None when the component is absent.

    Each returns the component's own running total (counters must only grow while the process lives) or
    current value (gauges). The labelled ones return ``{label value: total}``.
    """

    frames_received: NumberSource | None = None  # WebSocket frames received, all connections
    reconnects_by_reason: LabelledSource | None = None  # {"stall": 2, "rotation": 1, "error": 3, ...}
    stalls: NumberSource | None = None  # streams/connections declared stalled (WS_STALL_TIMEOUT)
    gaps_backfilled: NumberSource | None = None  # gaps repaired over REST
    candles_backfilled: NumberSource | None = None  # candles fetched to repair gaps
    frames_rejected: NumberSource | None = None  # malformed / unknown-stream frames skipped
    used_weight_1m: NumberSource | None = None  # last X-MBX-USED-WEIGHT-1M seen (gauge)
    discord_sent: NumberSource | None = None  # signal messages delivered to Discord
    discord_failed: NumberSource | None = None  # failed delivery attempts (retried later)
    spool_depth: NumberSource | None = None  # writes waiting in the local spool while the store is down (gauge)
    outbox_pending: NumberSource | None = None  # signals not yet delivered to every sink (gauge)


# name, help, "counter"/"gauge", label name for labelled sources
_SOURCE_META: dict[str, tuple[str, str, str, str | None]] = {
    "frames_received": ("wyeli_ws_frames_received", "WebSocket frames received.", "counter", None),
    "reconnects_by_reason": ("wyeli_ws_reconnects", "WebSocket reconnects by reason.", "counter", "reason"),
    "stalls": ("wyeli_ws_stalls", "Streams or connections that went silent past WS_STALL_TIMEOUT.", "counter", None),
    "gaps_backfilled": ("wyeli_gaps_backfilled", "Candle gaps repaired from REST.", "counter", None),
    "candles_backfilled": ("wyeli_candles_backfilled", "Candles fetched from REST to repair gaps.", "counter", None),
    "frames_rejected": ("wyeli_ws_frames_rejected", "Malformed or unexpected frames skipped.", "counter", None),
    "used_weight_1m": ("wyeli_binance_used_weight_1m", "Last X-MBX-USED-WEIGHT-1M reported by Binance REST.", "gauge", None),
    "discord_sent": ("wyeli_discord_sent", "Signal messages delivered to Discord.", "counter", None),
    "discord_failed": ("wyeli_discord_failed", "Failed Discord delivery attempts.", "counter", None),
    "spool_depth": ("wyeli_spool_depth", "Writes waiting in the local spool for the store.", "gauge", None),
    "outbox_pending": ("wyeli_outbox_pending", "Signals not yet delivered to every sink.", "gauge", None),
}


def _finite(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]  # providers are typed, but guard against odd returns
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


class _SourceCollector(Collector):
    """Turns :class:`MetricSources` into metric families at scrape time."""

    def __init__(self, sources: MetricSources, on_error: Callable[[str], None]) -> None:
        self.sources = sources
        self._on_error = on_error

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read at registration time

    def collect(self) -> Iterable[Metric]:
        for f in fields(self.sources):
            provider = getattr(self.sources, f.name)
            if provider is None:
                continue
            name, doc, kind, label = _SOURCE_META[f.name]
            try:
                value = provider()
                family: Metric
                if label is not None:
                    family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, doc, labels=[label])
                    for key, total in sorted(dict(value).items()):
                        family.add_metric([str(key)], _finite(total))
                elif kind == "counter":
                    family = CounterMetricFamily(name, doc, value=_finite(value))
                else:
                    family = GaugeMetricFamily(name, doc, value=_finite(value))
            except Exception as exc:  # one broken provider must not break the whole scrape
                log.warning("metric source failed", metric=name, error=repr(exc))
                self._on_error(name)
                continue
            yield family


class _StatusCollector(Collector):
    """Gauges from :attr:`BotMetrics.last_status` (nothing before the first snapshot).

    The per-stream series (``wyeli_stream_last_candle_open_timestamp_seconds``) are left out when there are more
    than ``max_stream_series`` streams (default 300): with SYMBOLS=ALL on 4 timeframes they would be 1000+
    series costing ~30 ms per scrape on the event loop; /readyz still names the stale streams.
    """

    def __init__(self, metrics: BotMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        snap = self._metrics.last_status
        if snap is None:
            return
        yield GaugeMetricFamily("wyeli_uptime_seconds", "Seconds since the bot started.", value=snap.uptime_s)
        yield GaugeMetricFamily("wyeli_warmed_up", "1 once warm-up is done.", value=1 if snap.warmed_up else 0)
        store = GaugeMetricFamily("wyeli_store_healthy", "1 while the store is reachable.", labels=["backend"])
        store.add_metric([snap.store_backend], 1 if snap.store_healthy else 0)
        yield store
        fresh = sum(1 for st in snap.streams if st.fresh)
        streams = GaugeMetricFamily("wyeli_streams", "Streams by freshness.", labels=["state"])
        streams.add_metric(["fresh"], fresh)
        streams.add_metric(["stale"], len(snap.streams) - fresh)
        yield streams
        up = sum(1 for c in snap.connections if c.connected)
        conns = GaugeMetricFamily("wyeli_ws_connections", "WebSocket connections by state.", labels=["state"])
        conns.add_metric(["connected"], up)
        conns.add_metric(["disconnected"], len(snap.connections) - up)
        yield conns
        yield GaugeMetricFamily(
            "wyeli_signals_since_start", "Signals emitted since the process started.", value=snap.signals_total
        )
        role = GaugeMetricFamily("wyeli_instance_role", "1 for this instance's role (leader, follower or single) "
                                 "and shard (several instances share one Postgres, issue 16).", labels=["role", "shard"])
        role.add_metric([snap.role, snap.shard], 1)
        yield role
        yield GaugeMetricFamily("wyeli_leader", "1 while this instance is the acting leader (posts, trades).",
                                value=1 if snap.role in ("leader", "single") else 0)
        if snap.epoch is not None:
            yield GaugeMetricFamily("wyeli_lease_epoch", "The leader lease epoch this instance holds.", value=snap.epoch)
        if snap.lease_age_s is not None:
            yield GaugeMetricFamily("wyeli_lease_age_seconds", "Seconds since the leader's last successful lease renewal.",
                                    value=snap.lease_age_s)
        if len(snap.streams) <= self._metrics.max_stream_series:
            last = GaugeMetricFamily(
                "wyeli_stream_last_candle_open_timestamp_seconds",
                "Open time of the newest closed candle per stream (UTC epoch seconds).", labels=["symbol", "timeframe"],
            )
            for st in snap.streams:
                if st.last_candle_ms is not None:
                    last.add_metric([st.symbol, st.timeframe], st.last_candle_ms / 1000)
            yield last


class BotMetrics:
    """Owns the registry and every metric; see the module docstring for the three input paths.

    :param process_metrics: also export process_*/python_* (memory, CPU, fds, GC).
    :param max_stream_series: export per-stream series only up to this many streams (see ``_StatusCollector``).
    """

    def __init__(self, *, process_metrics: bool = True, max_stream_series: int = 300) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # module-wide, idempotent
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sources = MetricSources()
        # registered first: collection follows registration order, so a provider failure is already
        # counted in wyeli_metric_source_errors_total within the same scrape
        r.register(_SourceCollector(self.sources, self._source_failed))
        self.analysis_seconds = Histogram(
            "wyeli_analysis_seconds", "Time to analyse one closed candle (all analyzers + gate).",
            buckets=ANALYSIS_BUCKETS, registry=r,
        )
        self.signals_emitted = Counter(
            "wyeli_signals_emitted", "Trade calls and watch notes the gate emitted, by pattern and kind.",
            ["pattern", "kind"], registry=r
        )
        self.candles_closed = Counter(
            "wyeli_closed_candles", "Closed candles analysed, by timeframe.", ["timeframe"], registry=r
        )
        self.store_errors = Counter(
            "wyeli_store_errors", "Store operations that failed, by operation.", ["operation"], registry=r
        )
        self.source_errors = Counter(
            "wyeli_metric_source_errors", "Scrape-time metric providers that raised.", ["metric"], registry=r
        )
        self.loop_lag_last = Gauge(
            "wyeli_event_loop_lag_last_seconds", "Most recent event-loop lag measurement.", registry=r
        )
        self.loop_lag = Histogram(
            "wyeli_event_loop_lag_seconds", "Event-loop lag: how late a timed sleep woke up.",
            buckets=LOOP_LAG_BUCKETS, registry=r,
        )
        self.build_info = Gauge(
            "wyeli_build_info", "Always 1; labels carry the version.", ["version", "python"], registry=r
        )
        self.build_info.labels(VERSION, platform.python_version()).set(1)
        # from the status snapshot: a collector over the latest snapshot, so update_status is O(1)
        self.max_stream_series = max_stream_series
        self.last_status: StatusSnapshot | None = None
        r.register(_StatusCollector(self))
        if process_metrics:
            # process_* (memory, CPU, fds), python_info and python_gc_*: useful on a 1-2 GB VPS
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # ------------------------------------------------------------------ events
    def observe_analysis(self, seconds: float, candles: int = 1) -> None:
        """``seconds`` spent analysing a batch of ``candles`` closed candles (signature of the pipeline's
        ``on_analysis``). Recorded as ``candles`` observations of the per-candle mean, so the histogram's
        ``_count`` is the number of candles analysed and its ``_sum`` the total time."""
        if not (math.isfinite(seconds) and seconds >= 0) or candles <= 0:
            return
        per_candle = seconds / candles
        for _ in range(candles):
            self.analysis_seconds.observe(per_candle)

    def signal_emitted(self, pattern: str, kind: str = "trade") -> None:
        """One emitted signal: ``kind`` is 'trade' (a trade call) or 'watch' (a watch note)."""
        self.signals_emitted.labels(pattern, kind).inc()

    def candle_closed(self, timeframe: str) -> None:
        self.candles_closed.labels(timeframe).inc()

    def store_error(self, operation: str = "write") -> None:
        """A failed store call; ``operation`` is a fixed word (write, read, ping, ...), never user input."""
        self.store_errors.labels(operation).inc()

    def observe_loop_lag(self, seconds: float) -> None:
        lag = max(0.0, seconds)
        self.loop_lag_last.set(lag)
        self.loop_lag.observe(lag)

    def _source_failed(self, metric: str) -> None:
        self.source_errors.labels(metric).inc()

    # ------------------------------------------------------------------ status snapshot
    def update_status(self, snap: StatusSnapshot) -> None:
        """Remember the latest status snapshot; its gauges are built from it at scrape time."""
        self.last_status = snap

    def render(self) -> bytes:
        """The text exposition format (what /metrics serves)."""
        return generate_latest(self.registry)


class ClosedCandleCounter:
    """A pipeline candle observer (``async on_candles(candles)``) feeding ``wyeli_closed_candles_total{timeframe}``."""

    def __init__(self, metrics: BotMetrics) -> None:
        self.metrics = metrics

    async def on_candles(self, candles: Sequence[Candle]) -> None:
        for candle in candles:
            self.metrics.candle_closed(candle.timeframe)


class LoopLagMonitor:
    """Sleeps ``interval_s`` in a loop and records ``actual - interval_s`` as the event-loop lag.

    A loop blocked by CPU-bound work (or a slow synchronous call) shows up as lag; sustained lag above a
    second starves WebSocket pings and the Discord heartbeat.
    """

    def __init__(self, metrics: BotMetrics, interval_s: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.metrics = metrics
        self.interval_s = interval_s
        self._clock = clock
        self.last_lag_s = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            started = self._clock()
            await asyncio.sleep(self.interval_s)
            self.last_lag_s = max(0.0, self._clock() - started - self.interval_s)
            self.samples += 1
            self.metrics.observe_loop_lag(self.last_lag_s)

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="loop-lag-monitor")
        return self._task

    async def stop(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        await asyncio.wait([task])
