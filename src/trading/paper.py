"""Paper trading: fills simulated on closed candles with the SPEC 7 outcome rules -- the very
:class:`~src.analysis.outcomes.TradeFollower` that ``backtest run`` and the outcome tracker use -- and
positions, orders and PnL recorded in the store like real ones (mode ``paper``). No key, no request.

Rules, in the order they apply to each closed candle (candles of all streams in close-time order):
1. open positions of the candle's stream see the candle: the first candle after the signal's confirming
   candle fills the entry at its OPEN; then stop (first), target, or the OUTCOME_HORIZON_CANDLES expiry
   close the position exactly as the backtest grades it (fees BACKTEST_COMMISSION per side, no slippage);
2. signals confirmed on this candle are decided: the safety limits, one position per symbol, a valid
   stop/target geometry; an accepted one waits for the next candle's open.
So a signal confirmed on the candle where the previous trade exited may enter (like the backtest), and
on a single stream paper trades equal ``backtest run``'s trades and R (tests/test_trading_paper_parity.py).
Size: POSITION_SIZE_USDT of notional at the entry fill; PnL = quantity x risk x R (after fees).
Equity for the daily loss limit: BACKTEST_INITIAL_BALANCE + realised + unrealised at the last closes; days
and "now" follow candle time, so a replay behaves like the live run it imitates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import structlog

from src.analysis import timeframes
from src.analysis.outcomes import InvalidSignalGeometry, OutcomeParams, Resolution, TradeFollower
from src.analysis.types import Candle, Signal
from src.storage.base import CandleStore, SignalStore
from src.storage.trading_records import OrderRecord, PositionRecord, TradingStore, position_key
from src.trading import client_ids
from src.trading.alerts import AlertSink
from src.trading.base import TraderBase, TraderSettings, wall_ms

log = structlog.get_logger(__name__)
_EXIT_REASON = {"stop": "stop", "stop_gap": "stop", "target": "target", "target_gap": "target", "horizon": "horizon"}


class PaperStore(TradingStore, SignalStore, CandleStore, Protocol):
    """What paper trading needs: its records, and the signals and candles to resume after a restart."""


class PaperTrader(TraderBase):
    """See the module docstring."""

    def __init__(self, settings: TraderSettings, store: PaperStore, alerts: AlertSink, *,
                 secrets: tuple[str, ...] = ()) -> None:
        super().__init__(settings, store, alerts, secrets=secrets, now_ms=self._candle_clock)
        self.paper_store = store
        self.params = OutcomeParams(settings.horizon_candles, settings.commission, 0.0)
        self._waiting: dict[tuple[str, str], list[Signal]] = defaultdict(list)
        self._followers: dict[str, TradeFollower] = {}
        self._last_close: dict[str, float] = {}
        self._candle_ms = 0
        self._realised_total = 0.0

    def _candle_clock(self) -> int:
        return self._candle_ms or wall_ms()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load the safety state and open paper positions, and catch those up on the stored candles."""
        await self.load()
        self._realised_total = sum(p.realized_pnl or 0.0 for p in await self.store.closed_positions("paper", limit=1_000_000))
        for p in list(self.positions.values()):
            await self._resume_position(p)
        self.started = True
        await self.audit.record("trader_started", open_positions=len(self.positions),
                                paused=None if self.safety.paused is None else self.safety.paused.reason)

    async def _resume_position(self, p: PositionRecord) -> None:
        signal = await self.paper_store.get_signal(p.signal_id)
        if signal is None:
            await self.save_position(replace(p, status="FAILED", note="signal not found in the store after a restart"))
            return
        try:
            self._followers[p.key] = TradeFollower.for_signal(signal, self.params)
        except InvalidSignalGeometry as exc:
            await self.save_position(replace(p, status="FAILED", note=str(exc)))
            return
        # the candles since the signal are replayed through the follower; an entry already recorded is not redone
        for c in await self.paper_store.load_candles(p.symbol, p.timeframe, start_ms=signal.candle_time_ms + 1):
            self._last_close[c.symbol] = c.close
            await self._follow(p.key, c)
            if p.key not in self._followers:
                break

    # ------------------------------------------------------------------ signals
    async def _consider(self, signal: Signal) -> None:
        key = position_key(self.mode, signal.id)
        if key in self.positions or any(s.id == signal.id for s in self._waiting[(signal.symbol, signal.timeframe)]):
            return
        if await self._stored_elsewhere(signal, key):
            return
        self._waiting[(signal.symbol, signal.timeframe)].append(signal)
        await self.audit.record("signal_received", symbol=signal.symbol, signal_id=signal.id, kind=signal.kind,
                                pattern=signal.pattern, direction=signal.direction, timeframe=signal.timeframe)

    # ------------------------------------------------------------------ candles
    async def on_candles(self, candles: Sequence[Candle]) -> None:
        async with self.lock:
            ordered = sorted((c for c in candles if c.closed),
                             key=lambda c: (c.close_time_ms, timeframes.sort_key(c.timeframe), c.symbol))
            for c in ordered:
                self._candle_ms = max(self._candle_ms, c.close_time_ms)
                self._last_close[c.symbol] = c.close
                for key in [k for k, p in self.positions.items() if (p.symbol, p.timeframe) == c.stream]:
                    await self._follow(key, c)
                waiting = self._waiting.get(c.stream)
                if waiting:
                    due = [s for s in waiting if s.candle_time_ms <= c.open_time_ms]
                    self._waiting[c.stream] = [s for s in waiting if s.candle_time_ms > c.open_time_ms]
                    for s in due:
                        await self._decide(s, c)
            if ordered:
                lifted = self.safety.roll(self._candle_ms)
                if lifted is not None:
                    await self.save_safety()
                    await self.audit.record("pause_lifted", reason=lifted.reason)
                await self.announce_pause(self.safety.observe_equity(self._equity_now(), self._candle_ms))

    async def _decide(self, signal: Signal, c: Candle) -> None:
        now = c.close_time_ms
        refusal = self.safety.entry_refusal(len(self.positions), now)
        busy = self.busy_symbol(signal.symbol)
        if refusal is None and busy is not None:
            refusal = f"already in a position on {signal.symbol} ({busy.timeframe} {busy.pattern})"
        follower: TradeFollower | None = None
        if refusal is None:
            try:
                follower = TradeFollower.for_signal(signal, self.params)
            except InvalidSignalGeometry as exc:
                refusal = f"invalid signal geometry: {exc}"
        if refusal is not None or follower is None:
            await self.refuse(signal, refusal or "no follower")
            return
        key = position_key(self.mode, signal.id)
        at = wall_ms()
        tp = signal.take_profits[0] if signal.take_profits else None
        p = PositionRecord(
            key=key, mode=self.mode, signal_id=signal.id, symbol=signal.symbol, timeframe=signal.timeframe,
            pattern=signal.pattern, direction=signal.direction, status="PENDING",
            quantity=self.settings.position_size_usdt / signal.entry, planned_entry=signal.entry, entry_price=None,
            stop_loss=signal.stop_loss, take_profit=tp, leverage=self.settings.leverage, risk_per_unit=signal.risk,
            opened_at_ms=None, closed_at_ms=None, exit_price=None, exit_reason=None, realized_pnl=None, fees=0.0,
            r_multiple=None, protection="simulated", stop_generation=0, note="fills at the next candle's open",
            created_at_ms=at, updated_at_ms=at,
        )
        self._followers[key] = follower
        await self.save_position(p)
        await self.save_order(self._order(p, client_ids.entry_id(signal.id), "entry", "MARKET", "NEW", at))
        self.signals_acted += 1
        await self.audit.record("entry_submit", symbol=signal.symbol, signal_id=signal.id,
                                ref=client_ids.entry_id(signal.id), simulated=True, direction=signal.direction,
                                quantity=p.quantity, stop=signal.stop_loss, target=tp)
        await self.announce_pause(self.safety.count_entry(now))
        await self.save_safety()
        if c.open_time_ms > signal.candle_time_ms:  # decided late: this candle is already the first after the signal
            await self._follow(key, c)

    async def _follow(self, key: str, c: Candle) -> None:
        follower = self._followers.get(key)
        p = self.positions.get(key)
        if follower is None or p is None:
            return
        was_in = follower.entered
        result = follower.on_candle(c)
        if not was_in and follower.entered and p.status == "PENDING":
            p = await self._opened(p, c)
        if result is not None:
            await self._closed(p, follower, result)

    async def _opened(self, p: PositionRecord, c: Candle) -> PositionRecord:
        fill = c.open  # no slippage in paper: TradeFollower's entry fill is the open itself
        qty = self.settings.position_size_usdt / fill
        p = await self.save_position(replace(p, status="OPEN", entry_price=fill, quantity=qty, opened_at_ms=c.open_time_ms,
                                             note=""))
        at = wall_ms()
        await self.save_order(replace(self._order(p, client_ids.entry_id(p.signal_id), "entry", "MARKET", "FILLED", at),
                                      filled_qty=qty, avg_price=fill))
        await self.save_order(self._order(p, client_ids.stop_id(p.signal_id, 0), "stop", "STOP_MARKET", "NEW", at))
        if p.take_profit is not None:
            await self.save_order(self._order(p, client_ids.target_id(p.signal_id, 0), "target", "TAKE_PROFIT_MARKET",
                                              "NEW", at))
        await self.audit.record("entry_filled", symbol=p.symbol, signal_id=p.signal_id,
                                ref=client_ids.entry_id(p.signal_id), simulated=True, price=fill, quantity=qty)
        await self.alerts.alert("info", f"PAPER opened {p.direction} {p.symbol} {p.timeframe} ({p.pattern}) "
                                        f"{qty:.6g} @ {fill:g}, stop {p.stop_loss:g}"
                                        + (f", target {p.take_profit:g}" if p.take_profit is not None else ""))
        return p

    async def _closed(self, p: PositionRecord, follower: TradeFollower, r: Resolution) -> None:
        self._followers.pop(p.key, None)
        reason = _EXIT_REASON[r.reason]
        qty = p.quantity
        pnl = qty * follower.risk * r.r_multiple
        fees = self.params.commission * qty * (r.entry_price + r.exit_price)
        self._realised_total += pnl
        await self.save_position(replace(p, status="CLOSED", entry_price=r.entry_price, opened_at_ms=r.entry_time_ms,
                                         closed_at_ms=r.resolved_at_ms, exit_price=r.exit_price, exit_reason=reason,
                                         realized_pnl=pnl, fees=fees, r_multiple=r.r_multiple))
        await self._settle_orders(p, reason, r.exit_price)
        await self.audit.record("position_closed", symbol=p.symbol, signal_id=p.signal_id, simulated=True,
                                reason=reason, exit_price=r.exit_price, r_multiple=r.r_multiple, pnl=pnl,
                                bars_held=r.bars_held)
        await self.alerts.alert("info", f"PAPER closed {p.direction} {p.symbol} {p.timeframe} by {reason} @ "
                                        f"{r.exit_price:g}: {r.r_multiple:+.2f} R, {pnl:+.2f} USDT")

    async def _settle_orders(self, p: PositionRecord, reason: str, price: float) -> None:
        at = wall_ms()
        stop = self._order(p, client_ids.stop_id(p.signal_id, 0), "stop", "STOP_MARKET", "CANCELED", at)
        target = self._order(p, client_ids.target_id(p.signal_id, 0), "target", "TAKE_PROFIT_MARKET", "CANCELED", at)
        if reason == "stop":
            stop = replace(stop, status="FINISHED", filled_qty=p.quantity, avg_price=price)
        elif reason == "target":
            target = replace(target, status="FINISHED", filled_qty=p.quantity, avg_price=price)
        else:
            close = self._order(p, client_ids.close_id(p.signal_id, 0), "close", "MARKET", "FILLED", at)
            await self.save_order(replace(close, reduce_only=True, filled_qty=p.quantity, avg_price=price))
        await self.save_order(stop)
        if p.take_profit is not None:
            await self.save_order(target)

    def _order(self, p: PositionRecord, cid: str, purpose: str, order_type: str, status: str, at: int) -> OrderRecord:
        entry_side = "BUY" if p.direction == "LONG" else "SELL"
        exit_side = "SELL" if p.direction == "LONG" else "BUY"
        stop_price = p.stop_loss if purpose == "stop" else p.take_profit if purpose == "target" else None
        return OrderRecord(
            client_order_id=cid, mode=self.mode, signal_id=p.signal_id, position_key=p.key, symbol=p.symbol,
            side=entry_side if purpose == "entry" else exit_side, order_type=order_type,  # type: ignore[arg-type]
            purpose=purpose, quantity=p.quantity, stop_price=stop_price, reduce_only=purpose == "close",  # type: ignore[arg-type]
            close_position=purpose in ("stop", "target"), algo=purpose in ("stop", "target"), status=status,
            filled_qty=0.0, avg_price=None, exchange_order_id=None, error=None, created_at_ms=at, updated_at_ms=at,
        )

    # ------------------------------------------------------------------ reports and controls
    def _unrealised_now(self) -> float:
        total = 0.0
        for p in self.positions.values():
            last = self._last_close.get(p.symbol)
            if p.status == "OPEN" and p.entry_price is not None and last is not None:
                sign = 1.0 if p.direction == "LONG" else -1.0
                total += (last - p.entry_price) * sign * p.quantity
        return total

    def _equity_now(self) -> float:
        return self.settings.initial_equity + self._realised_total + self._unrealised_now()

    async def unrealised(self) -> float | None:
        return self._unrealised_now()

    async def equity(self) -> float | None:
        return self._equity_now()

    async def flatten(self, actor: str) -> str:
        """Close every open paper position at its symbol's last close (fees as usual); pending ones are cancelled."""
        closed = 0
        async with self.lock:
            for p in list(self.positions.values()):
                self._followers.pop(p.key, None)
                last = self._last_close.get(p.symbol)
                if p.status != "OPEN" or p.entry_price is None or last is None:
                    await self.save_position(replace(p, status="FAILED", note=f"cancelled before entry by {actor}"))
                    continue
                sign = 1.0 if p.direction == "LONG" else -1.0
                fees_r = self.params.commission * (p.entry_price + last) / p.risk_per_unit
                r = (last - p.entry_price) * sign / p.risk_per_unit - fees_r
                pnl = p.quantity * p.risk_per_unit * r
                self._realised_total += pnl
                await self.save_position(replace(p, status="CLOSED", closed_at_ms=self._candle_clock(), exit_price=last,
                                                 exit_reason="flatten", realized_pnl=pnl, r_multiple=r,
                                                 fees=self.params.commission * p.quantity * (p.entry_price + last)))
                await self._settle_orders(p, "flatten", last)
                closed += 1
        await self.audit.record("flatten", actor=actor, closed=closed)
        await self.alerts.alert("warning", f"PAPER positions flattened by {actor}: {closed} closed at the last price.")
        return f"Flattened {closed} paper position(s) at the last close."

    def _status_extra(self) -> list[str]:
        return [f"equity {self._equity_now():.2f} USDT (paper)"]
