"""What the paper and the exchange traders share: settings, the open positions, safety and the pause,
the admin controls (kill, resume, reports) and the status line.

A trader is a SignalSink (``publish`` gets every stored, emitted batch) and a candle observer
(``on_candles``); it acts only on the signals :func:`~src.trading.policy.acts_on` allows, never on
signals found while catching up (``batch.historical``: warm-up and backfill), and opens at most one
position per symbol (Binance's one-way mode holds one per symbol; paper trading follows the same rule).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson
import structlog

from src.analysis.types import Candle, Signal
from src.storage.base import FencedOut, StoreError
from src.storage.trading_records import OrderRecord, PositionRecord, TradingMode, TradingStore
from src.trading.alerts import AlertLevel, AlertSink
from src.trading.audit import Auditor
from src.trading.policy import acts_on
from src.trading.safety import Pause, Safety, SafetyLimits, SafetyState, utc_day

log = structlog.get_logger(__name__)


class SignalBatchLike(Protocol):
    """What the trader reads from the pipeline's SignalBatch (src/bot/sinks.py), without importing the bot."""

    @property
    def signals(self) -> tuple[Signal, ...]: ...

    @property
    def historical(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class TraderSettings:
    """Everything a trader takes from the configuration.

    :param words: the mode in plain words (Config.trading_words), for status and alerts.
    :param commission: fee per side as a fraction (BACKTEST_COMMISSION), used by paper fills and, on the
        exchange, only where Binance did not report the commission.
    """

    mode: TradingMode
    words: str
    act_on: str = "trade"
    position_size_usdt: float = 100.0
    leverage: int = 1
    margin_type: str = "ISOLATED"
    commission: float = 0.0004
    horizon_candles: int = 48
    initial_equity: float = 10_000.0
    limits: SafetyLimits = field(default_factory=SafetyLimits)


@dataclass(frozen=True, slots=True)
class PnlReport:
    """What ``>pnl`` shows. Money in USDT after fees; ``r_*`` in R (multiples of the planned risk)."""

    mode: str
    day: str
    trades_today: int
    wins_today: int
    realised_today: float
    r_today: float
    trades_total: int
    realised_total: float
    r_total: float
    open_positions: int
    unrealised: float | None
    equity: float | None
    day_start_equity: float | None
    daily_loss_pct: float | None
    daily_loss_limit_pct: float
    paused: str | None


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class TraderBase:
    """See the module docstring. Subclasses implement ``_consider`` (a signal to act on), ``flatten`` and
    the mode's own start/stop work."""

    name = "trading"

    def __init__(self, settings: TraderSettings, store: TradingStore, alerts: AlertSink, *,
                 secrets: tuple[str, ...] = (), now_ms: Callable[[], int] = wall_ms) -> None:
        self.settings = settings
        self.mode: TradingMode = settings.mode
        self.store = store
        self.alerts = alerts
        self.now_ms = now_ms
        self.audit = Auditor(store, settings.mode, secrets=secrets, clock=wall_ms)
        self.safety = Safety(settings.limits)
        self.positions: dict[str, PositionRecord] = {}  # PENDING and OPEN, by key
        self.lock = asyncio.Lock()
        self.signals_acted = 0
        self.signals_refused = 0
        self.started = False

    @property
    def _state_key(self) -> str:
        return f"safety:{self.mode}"

    async def _stored_elsewhere(self, signal: Signal, key: str) -> bool:
        """True (and audited) when the store already holds a position for this signal, e.g. opened by the run
        before a restart. A store error answers False: the position key is unique in the store and the entry's
        client id is derived from the signal, so a second entry is refused further down anyway."""
        try:
            if await self.store.get_position(key) is None:
                return False
        except StoreError:
            return False
        await self.audit.record("signal_ignored", symbol=signal.symbol, signal_id=signal.id,
                                reason="a position for this signal exists already")
        return True

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        """Read the persisted safety state and the open positions (raises StoreError when the store cannot)."""
        raw = await self.store.get_trading_state(self._state_key)
        if raw:
            try:
                self.safety.state = SafetyState.from_dict(orjson.loads(raw))
            except (ValueError, TypeError, KeyError) as exc:
                log.error("trading_state_unreadable", key=self._state_key, error=str(exc))
        for p in await self.store.open_positions(self.mode):
            self.positions[p.key] = p
        if self.safety.paused is not None:
            await self.alerts.alert("warning", f"{self.settings.words}: starting PAUSED ({self.safety.paused.reason}); "
                                               "`>resume` to allow new entries")

    async def start(self) -> None:
        raise NotImplementedError

    async def save_safety(self) -> None:
        try:
            await self.store.set_trading_state(self._state_key, orjson.dumps(self.safety.state.to_dict()).decode())
        except StoreError as exc:
            log.warning("trading_state_not_saved", error=str(exc)[:200])

    async def close(self) -> None:
        await self.audit.flush()

    # ------------------------------------------------------------------ the sink
    async def publish(self, batch: SignalBatchLike) -> None:
        for signal in batch.signals:
            if not acts_on(signal, self.mode, self.settings.act_on):
                continue
            if batch.historical:
                await self.audit.record("signal_ignored", symbol=signal.symbol, signal_id=signal.id,
                                        reason="found while catching up (warm-up or backfill), not on a live close")
                continue
            try:
                await self._consider(signal)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the pipeline; it is logged and audited
                log.exception("trading_signal_failed", signal_id=signal.id)
                await self.audit.record("error", symbol=signal.symbol, signal_id=signal.id,
                                        error=f"{type(exc).__name__}: {exc}")

    async def on_candles(self, candles: Sequence[Candle]) -> None:
        """Candle observer hook (paper fills); the exchange trader needs none."""

    async def _consider(self, signal: Signal) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def busy_symbol(self, symbol: str) -> PositionRecord | None:
        return next((p for p in self.positions.values() if p.symbol == symbol), None)

    async def refuse(self, signal: Signal, reason: str, *, alert: bool = False) -> None:
        self.signals_refused += 1
        await self.audit.record("entry_refused", symbol=signal.symbol, signal_id=signal.id, reason=reason)
        log.info("trading_entry_refused", signal_id=signal.id, symbol=signal.symbol, reason=reason)
        if alert:
            await self.alerts.alert("warning", f"{signal.symbol} {signal.direction} not entered: {reason}")

    async def announce_pause(self, pause: Pause | None) -> None:
        if pause is None:
            return
        await self.save_safety()
        await self.audit.record("paused", actor=pause.by, kind=pause.kind, reason=pause.reason)
        level: AlertLevel = "alarm" if pause.kind in ("ip_ban", "errors") else "warning"
        await self.alerts.alert(level, f"Trading PAUSED ({self.mode}): {pause.reason}. New entries stop; open "
                                       "positions keep their stops.")

    async def save_position(self, p: PositionRecord) -> PositionRecord:
        p = replace(p, updated_at_ms=wall_ms())
        if p.is_open:
            self.positions[p.key] = p
        else:
            self.positions.pop(p.key, None)
        try:
            await self.store.save_position(p)
        except StoreError as exc:
            log.error("position_record_not_saved", key=p.key, error=str(exc)[:200])
            await self.audit.record("store_error", symbol=p.symbol, signal_id=p.signal_id, what="save_position",
                                    error=str(exc)[:200])
        return p

    async def save_order(self, o: OrderRecord) -> OrderRecord:
        o = replace(o, updated_at_ms=wall_ms())
        try:
            await self.store.save_order(o)
        except FencedOut:
            raise  # not the leader any more (issue 16): the order must not be sent
        except StoreError as exc:
            log.error("order_record_not_saved", client_order_id=o.client_order_id, error=str(exc)[:200])
            await self.audit.record("store_error", symbol=o.symbol, signal_id=o.signal_id, ref=o.client_order_id,
                                    what="save_order", error=str(exc)[:200])
        return o

    # ------------------------------------------------------------------ admin controls
    async def kill(self, actor: str, reason: str = "kill switch") -> str:
        # no lock: the pause takes effect at once, even while an entry is waiting for the exchange (the entry
        # path checks the pause before it sends)
        pause = self.safety.pause("kill", f"{reason} by {actor}", actor, self.now_ms())
        await self.save_safety()
        await self.audit.record("kill", actor=actor, reason=reason)
        await self.alerts.alert("warning", f"Trading PAUSED ({self.mode}) by {actor}: new entries stop; open positions "
                                           "keep their stops. `>resume` to continue.")
        return f"Trading paused: {pause.reason}. Open positions keep their stops."

    async def resume(self, actor: str) -> str:
        refusal = self.resume_refusal()
        if refusal is not None:
            await self.audit.record("resume_refused", actor=actor, reason=refusal)
            return refusal
        lifted = self.safety.resume()
        await self.save_safety()
        await self.audit.record("resume", actor=actor, lifted=None if lifted is None else lifted.reason)
        if lifted is None:
            return "Trading was not paused."
        await self.alerts.alert("info", f"Trading RESUMED ({self.mode}) by {actor} (was: {lifted.reason}).")
        return f"Trading resumed (was paused: {lifted.reason})."

    def resume_refusal(self) -> str | None:
        """Why ``>resume`` cannot resume now (e.g. an IP ban still running), or None."""
        return None

    async def flatten(self, actor: str) -> str:
        raise NotImplementedError

    async def open_position_list(self) -> list[PositionRecord]:
        return sorted(self.positions.values(), key=lambda p: (p.created_at_ms, p.key))

    async def recent_order_list(self, limit: int = 15) -> list[OrderRecord]:
        return await self.store.recent_orders(self.mode, limit=limit)

    async def unrealised(self) -> float | None:
        return None

    async def equity(self) -> float | None:
        return None

    async def pnl(self) -> PnlReport:
        now = self.now_ms()
        day = utc_day(now)
        day_start = now - now % 86_400_000
        closed = await self.store.closed_positions(self.mode, limit=10_000)
        today = [p for p in closed if (p.closed_at_ms or 0) >= day_start]
        unreal = await self.unrealised()
        eq = await self.equity()
        pause = self.safety.paused
        return PnlReport(
            mode=self.mode, day=day, trades_today=len(today),
            wins_today=sum(1 for p in today if (p.realized_pnl or 0) > 0),
            realised_today=sum(p.realized_pnl or 0.0 for p in today), r_today=sum(p.r_multiple or 0.0 for p in today),
            trades_total=len(closed), realised_total=sum(p.realized_pnl or 0.0 for p in closed),
            r_total=sum(p.r_multiple or 0.0 for p in closed), open_positions=len(self.positions), unrealised=unreal,
            equity=eq, day_start_equity=self.safety.state.day_start_equity,
            daily_loss_pct=None if eq is None else self.safety.daily_loss_pct(eq),
            daily_loss_limit_pct=self.settings.limits.daily_loss_limit_pct,
            paused=None if pause is None else pause.reason,
        )

    def status_line(self) -> str:
        st = self.safety.state
        parts = [self.settings.words,
                 f"{len(self.positions)} open / max {self.settings.limits.max_open_positions}",
                 f"{st.entries_today} entries today / max {self.settings.limits.max_orders_per_day}"]
        parts.extend(self._status_extra())
        if self.safety.paused is not None:
            parts.append(f"PAUSED: {self.safety.paused.reason}")
        return "; ".join(parts)

    def _status_extra(self) -> list[str]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "open": len(self.positions), "acted": self.signals_acted,
                "refused": self.signals_refused, "audit_pending": self.audit.pending}
