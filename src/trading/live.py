"""Demo and live trading on Binance USDT-M futures: entries, protection, the user-data stream and
reconciliation, with the exchange as the source of truth.

The life of a trade call (all state changes under one lock; every step audited):
1. checks: a position for this signal exists? stale signal (its candle closed more than one interval ago,
   at least 2 min)? paused / MAX_OPEN_POSITIONS / MAX_ORDERS_PER_DAY? symbol already in a position? valid
   geometry? quantity within LOT_SIZE / MARKET_LOT_SIZE / MIN_NOTIONAL? leverage and margin type set for the
   symbol (once, before its first order; the leverage Binance confirms must equal LEVERAGE)?
2. write-ahead: the PENDING position and the PENDING_SUBMIT entry order are stored BEFORE the request;
3. MARKET entry with ``newClientOrderId = wyE-<signal id>``. A refusal is recorded (FAILED); an ambiguous
   answer (timeout, 5xx, connection lost after sending) is NEVER re-sent: the order is queried by its client
   id (and the user-data stream watched) until its fate is known; "not found" counts only once Binance's
   recvWindow for the request has passed (it can no longer be accepted): the entry is then NOT_PLACED;
4. on a fill: the position is OPEN with the filled size (partial fills included), and the stop
   (STOP_MARKET) and target (TAKE_PROFIT_MARKET, the first take-profit) are placed at once through the
   Algo Order API with ``closePosition=true``; a stop that would trigger immediately (price already beyond
   it) means the stop has been breached: the position is closed with a reduce-only market order, as the
   stop would have done. A position without a live stop is an ALARM until one is placed;
5. the close (stop, target, by hand, liquidation, flatten) is seen on the user-data stream (ACCOUNT_UPDATE
   size 0) or by reconciliation; PnL = (exit - entry) x size x side - fees (Binance's commission when the
   stream reported it, else BACKTEST_COMMISSION), R = PnL / (size x the signal's planned risk); what is
   left of the protection is cancelled.
Reconciliation (src/trading/reconcile.py) runs at start, after every user-data (re)connect and every
``reconcile_every_s``; the account is polled every ``account_every_s`` for the daily loss limit.
The bot never closes a position it did not open and never flattens on its own (``>kill flatten`` is an
admin's decision).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal, Protocol

import structlog

from src.analysis import timeframes
from src.analysis.outcomes import InvalidSignalGeometry, check_geometry
from src.analysis.types import Signal
from src.storage.base import StoreError
from src.storage.trading_records import OrderRecord, PositionRecord, TradingStore, position_key
from src.trading import client_ids
from src.trading.alerts import AlertLevel, AlertSink
from src.trading.base import TraderBase, TraderSettings, wall_ms
from src.trading.clock import ExchangeClock
from src.trading.errors import (
    CLOSE_POSITION_ORDER_EXISTS,
    DUPLICATE_CLIENT_ORDER_ID,
    MARGIN_INSUFFICIENT,
    REDUCE_ONLY_REJECTED,
    WOULD_IMMEDIATELY_TRIGGER,
    AmbiguousResult,
    ExchangeError,
    IpBanned,
    LocalRejection,
    NotSent,
    RateLimited,
    TradingError,
)
from src.trading.events import AccountUpdate, AlgoUpdate, OrderUpdate, UserEvent
from src.trading.exchange import AccountSnapshot, AlgoOrder, BinanceFuturesExchange, ExchangeOrder, ExchangePosition
from src.trading.filters import SymbolRules, market_quantity, trigger_price
from src.trading.reconcile import Finding, plan
from src.trading.user_stream import UserDataStream

log = structlog.get_logger(__name__)
Role = Literal["stop", "target"]
RULES_MAX_AGE_MS = 3_600_000


class ExchangeStore(TradingStore, Protocol):
    """What the exchange trader needs from the store."""


@dataclass
class _Fill:
    """Cumulative fills of one order that reduced one of our positions."""

    qty: float = 0.0
    avg: float = 0.0
    fee: float = 0.0
    fee_reported: bool = False


class ExchangeTrader(TraderBase):
    """See the module docstring. ``start()`` connects, reconciles and starts the background tasks."""

    def __init__(self, settings: TraderSettings, store: ExchangeStore, alerts: AlertSink,
                 exchange: BinanceFuturesExchange, clock: ExchangeClock, *, ws_url: str, secrets: tuple[str, ...] = (),
                 reconcile_every_s: float = 300.0, account_every_s: float = 60.0, queue_size: int = 100,
                 resolve_max_delay_s: float = 10.0, not_found_grace_ms: int = 5_000,
                 stream_factory: Callable[..., UserDataStream] | None = None) -> None:
        super().__init__(settings, store, alerts, secrets=secrets, now_ms=clock.now_ms)
        self.exchange = exchange
        self.clock = clock
        self.ws_url = ws_url
        self.reconcile_every_s = reconcile_every_s
        self.account_every_s = account_every_s
        self.resolve_max_delay_s = resolve_max_delay_s
        self.not_found_grace_ms = not_found_grace_ms
        self._queue: asyncio.Queue[Signal] = asyncio.Queue(maxsize=queue_size)
        self._rules: dict[str, SymbolRules] = {}
        self._rules_at = 0
        self._prepared: set[str] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._order_seen: dict[str, asyncio.Event] = {}
        self._exit_fills: dict[str, dict[str, _Fill]] = {}
        self._entry_fee: dict[str, float] = {}
        self._closing: dict[str, str] = {}
        self._close_seq: dict[str, int] = {}
        self._reported: set[str] = set()
        self._last_account: AccountSnapshot | None = None
        self.last_reconcile_ms: int | None = None
        self.reconciles = 0
        self.unprotected: set[str] = set()  # keys of OPEN positions without a live stop (alarm)
        make_stream = stream_factory or UserDataStream
        self.stream = make_stream(exchange, ws_url, on_event=self._on_event, on_connected=self._on_stream_connected,
                                  on_disconnected=self._on_stream_down)
        exchange.rest.audit = self._audit_exchange

    async def _audit_exchange(self, action: str, details: dict[str, Any]) -> None:
        await self.audit.record(action, actor="exchange" if action == "exchange_answer" else "bot", **details)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.load()
        blocked_s = (self.safety.state.rate_blocked_until_wall_ms - wall_ms()) / 1000
        if blocked_s > 0:  # a 429/418 before the restart: wait it out instead of provoking a longer ban
            log.warning("trading_start_waits_for_binance_rate_limit", wait_s=round(blocked_s, 1))
            await self.audit.record("start_waits_for_rate_limit", wait_s=round(blocked_s, 1))
            await asyncio.sleep(blocked_s)
        await self.clock.resync()
        await self._refresh_rules()
        account = await self.exchange.account()  # proves the key works before anything else happens
        self._last_account = account
        await self.announce_pause(self.safety.observe_equity(account.margin_balance, self.clock.now_ms()))
        await self.save_safety()
        await self.audit.record("trader_started", words=self.settings.words, open_positions=len(self.positions),
                                equity=account.margin_balance,
                                paused=None if self.safety.paused is None else self.safety.paused.reason)
        await self.reconcile("start")
        self.started = True
        for coro, name in ((self._worker(), "trading-entries"), (self.stream.run(), "trading-user-stream"),
                           (self.clock.run(), "trading-clock"), (self._every(self.reconcile_every_s, self._periodic_reconcile),
                                                                 "trading-reconcile"),
                           (self._every(self.account_every_s, self._check_account), "trading-account")):
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        await self.alerts.alert("info", f"Trading started: {self.settings.words}. Equity {account.margin_balance:.2f} "
                                        f"USDT, {len(self.positions)} open position(s).")

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("trading_task_failed", task=task.get_name(), error=repr(task.exception()))

    async def stop(self) -> None:
        """Stop the background work; positions and their protective orders stay on the exchange."""
        for t in [*self._tasks, *self._resolving.values()]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._resolving.values(), return_exceptions=True)
        self._tasks.clear()
        self._resolving.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.exchange.close_listen_key(), 2.0)
        await self.audit.record("trader_stopped", open_positions=len(self.positions))
        await self.exchange.rest.close()
        await self.audit.flush()

    async def close(self) -> None:
        await self.stop()

    async def _every(self, every_s: float, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trading_periodic_failed", job=getattr(fn, "__name__", "?"))

    # ------------------------------------------------------------------ signals in
    async def _consider(self, signal: Signal) -> None:
        try:
            self._queue.put_nowait(signal)
        except asyncio.QueueFull:
            await self.refuse(signal, "the entry queue is full (the exchange is slow or unreachable)", alert=True)

    async def _worker(self) -> None:
        while True:
            signal = await self._queue.get()
            try:
                async with self.lock:
                    await self._enter(signal)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("trading_entry_failed", signal_id=signal.id)
                await self.audit.record("error", symbol=signal.symbol, signal_id=signal.id,
                                        error=f"{type(exc).__name__}: {exc}")

    async def _enter(self, signal: Signal) -> None:
        key = position_key(self.mode, signal.id)
        if key in self.positions:
            return
        if await self._stored_elsewhere(signal, key):
            return
        now = self.clock.now_ms()
        interval = timeframes.interval_ms(signal.timeframe)
        age_ms = now - timeframes.close_time(signal.timeframe, signal.candle_time_ms)
        refusal = None
        if age_ms > max(interval, 120_000):
            refusal = f"stale: its candle closed {age_ms / 1000:.0f} s ago"
        refusal = refusal or self.safety.entry_refusal(len(self.positions), now)
        busy = self.busy_symbol(signal.symbol)
        if refusal is None and busy is not None:
            refusal = f"already in a position on {signal.symbol} ({busy.timeframe} {busy.pattern})"
        if refusal is None:
            try:
                check_geometry(signal.direction, signal.entry, signal.stop_loss, signal.take_profits)
            except InvalidSignalGeometry as exc:
                refusal = f"invalid signal geometry: {exc}"
        qty: Decimal | None = None
        if refusal is None:
            try:
                rules = await self._rules_for(signal.symbol)
                qty = market_quantity(rules, self.settings.position_size_usdt, signal.entry)
                trigger_price(rules, signal.stop_loss)
                await self._prepare_symbol(signal.symbol)
            except LocalRejection as exc:
                refusal = str(exc)
            except TradingError as exc:
                refusal = f"symbol set-up failed: {exc}"
                await self._exchange_failed(exc, f"set-up of {signal.symbol}")
        if refusal is not None or qty is None:
            await self.refuse(signal, refusal or "no quantity")
            return
        await self._send_entry(signal, key, qty, now)

    async def _send_entry(self, signal: Signal, key: str, qty: Decimal, now: int) -> None:
        cid = client_ids.entry_id(signal.id)
        at = wall_ms()
        tp = signal.take_profits[0] if signal.take_profits else None
        side = "BUY" if signal.direction == "LONG" else "SELL"
        p = PositionRecord(
            key=key, mode=self.mode, signal_id=signal.id, symbol=signal.symbol, timeframe=signal.timeframe,
            pattern=signal.pattern, direction=signal.direction, status="PENDING", quantity=float(qty),
            planned_entry=signal.entry, entry_price=None, stop_loss=signal.stop_loss, take_profit=tp,
            leverage=self.settings.leverage, risk_per_unit=signal.risk, opened_at_ms=None, closed_at_ms=None,
            exit_price=None, exit_reason=None, realized_pnl=None, fees=0.0, r_multiple=None, protection="none",
            stop_generation=0, note="entry sent", created_at_ms=at, updated_at_ms=at,
        )
        order = OrderRecord(
            client_order_id=cid, mode=self.mode, signal_id=signal.id, position_key=key, symbol=signal.symbol,
            side=side, order_type="MARKET", purpose="entry", quantity=float(qty), stop_price=None,  # type: ignore[arg-type]
            reduce_only=False, close_position=False, algo=False, status="PENDING_SUBMIT", filled_qty=0.0,
            avg_price=None, exchange_order_id=None, error=None, created_at_ms=at, updated_at_ms=at,
        )
        p = await self.save_position(p)  # write-ahead: recorded before the request leaves
        order = await self.save_order(order)
        self.signals_acted += 1
        await self.announce_pause(self.safety.count_entry(now))
        await self.save_safety()
        await self.audit.record("entry_submit", symbol=signal.symbol, signal_id=signal.id, ref=cid, side=side,
                                quantity=float(qty), stop=signal.stop_loss, target=tp, kind=signal.kind)
        sent_at = self.clock.now_ms()
        try:
            result = await self.exchange.new_market_order(signal.symbol, side, qty, cid)  # type: ignore[arg-type]
        except AmbiguousResult as exc:
            await self.save_order(replace(order, status="UNKNOWN", error=str(exc)[:300]))
            await self.audit.record("entry_ambiguous", symbol=signal.symbol, signal_id=signal.id, ref=cid, error=str(exc),
                                    next_step="querying the client id; never re-sent")
            await self._exchange_failed(exc, "entry")
            self._spawn_resolution(key, cid, signal.symbol, sent_at)
            return
        except ExchangeError as exc:
            if exc.code == DUPLICATE_CLIENT_ORDER_ID:  # it was accepted before: find out what became of it
                self._spawn_resolution(key, cid, signal.symbol, sent_at)
                return
            note = "insufficient margin (-2019)" if exc.code == MARGIN_INSUFFICIENT else f"refused: {exc}"
            await self.save_order(replace(order, status="REJECTED", error=str(exc)[:300]))
            await self.save_position(replace(p, status="FAILED", note=note))
            await self._exchange_failed(exc, "entry")
            await self.alerts.alert("warning", f"{signal.symbol} {signal.direction} entry refused by Binance: {note}")
            return
        except NotSent as exc:
            await self.save_order(replace(order, status="NOT_PLACED", error=str(exc)[:300]))
            await self.save_position(replace(p, status="FAILED", note=f"not sent: {exc}"))
            await self._exchange_failed(exc, "entry")
            return
        await self._apply_entry(key, result)

    # ------------------------------------------------------------------ symbols
    async def _refresh_rules(self) -> None:
        rules, limits = await self.exchange.exchange_info()
        self._rules, self._rules_at = rules, self.clock.now_ms()
        self.exchange.rest.budget.set_limits(limits)

    async def _rules_for(self, symbol: str) -> SymbolRules:
        """The symbol's filters (exchangeInfo, refreshed hourly); LocalRejection for a symbol that does not trade."""
        if not self._rules or self.clock.now_ms() - self._rules_at > RULES_MAX_AGE_MS:
            await self._refresh_rules()
        rules = self._rules.get(symbol)
        if rules is None:
            raise LocalRejection(f"{symbol} is not a TRADING symbol on {self.exchange.rest.base_url}")
        return rules

    async def _prepare_symbol(self, symbol: str) -> None:
        """Margin type and leverage, once per symbol before its first order; Binance must confirm LEVERAGE."""
        if symbol in self._prepared:
            return
        await self.exchange.set_margin_type(symbol, self.settings.margin_type)
        leverage = await self.exchange.set_leverage(symbol, self.settings.leverage)
        if leverage != self.settings.leverage:
            raise LocalRejection(f"Binance set {symbol} leverage to {leverage}, not LEVERAGE={self.settings.leverage}")
        self._prepared.add(symbol)
        await self.audit.record("symbol_prepared", symbol=symbol, leverage=leverage, margin_type=self.settings.margin_type)

    # ------------------------------------------------------------------ entry fate
    def _spawn_resolution(self, key: str, cid: str, symbol: str, sent_at_ms: int) -> None:
        if cid in self._resolving and not self._resolving[cid].done():
            return
        task = asyncio.create_task(self._resolve_entry(key, cid, symbol, sent_at_ms), name=f"resolve-{cid}")
        task.add_done_callback(lambda t: self._resolving.pop(cid, None))
        self._resolving[cid] = task

    async def _resolve_entry(self, key: str, cid: str, symbol: str, sent_at_ms: int) -> None:
        """Query the entry by its client id until its fate is known (see the module docstring)."""
        delay = 0.25
        proof_after = sent_at_ms + self.exchange.rest.recv_window_ms + self.not_found_grace_ms
        seen = self._order_seen.setdefault(cid, asyncio.Event())
        while True:
            p = self.positions.get(key)
            if p is None or p.status != "PENDING":
                return
            order: ExchangeOrder | None = None
            failed = False
            try:
                order = await self.exchange.query_order(symbol, cid)
            except TradingError as exc:
                failed = True
                await self._exchange_failed(exc, "entry query")
            async with self.lock:
                p = self.positions.get(key)
                if p is None or p.status != "PENDING":
                    return
                if order is not None:
                    await self._apply_entry(key, order)
                    p = self.positions.get(key)
                    if p is None or p.status != "PENDING":
                        return
                elif not failed and self.clock.now_ms() > proof_after:
                    await self._entry_not_placed(p, cid)
                    return
            seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.wait(), timeout=delay)
            delay = min(self.resolve_max_delay_s, delay * 2)

    async def _entry_not_placed(self, p: PositionRecord, cid: str) -> None:
        rec = await self.store.get_order(cid)
        if rec is not None:
            await self.save_order(replace(rec, status="NOT_PLACED", error="not found after its recvWindow passed"))
        await self.save_position(replace(p, status="FAILED", note="entry never reached the exchange (not found by its "
                                                                   "client id after recvWindow); not re-sent"))
        await self.audit.record("entry_not_placed", symbol=p.symbol, signal_id=p.signal_id, ref=cid)
        await self.alerts.alert("warning", f"{p.symbol} {p.direction} entry was lost on the way (proved not placed); "
                                           "it is not sent again.")

    async def _apply_entry(self, key: str, order: ExchangeOrder) -> None:
        p = self.positions.get(key)
        rec = await self.store.get_order(order.client_order_id) if p is not None else None
        if rec is not None:
            await self.save_order(replace(rec, status=order.status, filled_qty=order.executed_qty,
                                          avg_price=order.avg_price or None, exchange_order_id=order.order_id or None))
        if p is None:
            return
        if p.status == "OPEN":
            if order.executed_qty > p.quantity:  # further fills of our own entry (partial fills)
                await self.save_position(replace(p, quantity=order.executed_qty, entry_price=order.avg_price or p.entry_price))
            return
        if p.status != "PENDING":
            return
        if order.executed_qty > 0 and (order.final or order.status == "PARTIALLY_FILLED"):
            opened = order.update_time_ms or self.clock.now_ms()
            note = "" if order.status == "FILLED" else f"entry {order.status}: {order.executed_qty:g} of {order.orig_qty:g}"
            p = await self.save_position(replace(p, status="OPEN", quantity=order.executed_qty, entry_price=order.avg_price,
                                                 opened_at_ms=opened, note=note))
            await self.audit.record("entry_filled", symbol=p.symbol, signal_id=p.signal_id, ref=order.client_order_id,
                                    status=order.status, quantity=order.executed_qty, price=order.avg_price)
            await self.alerts.alert("info", f"{self.mode.upper()} opened {p.direction} {p.symbol} {p.timeframe} "
                                            f"({p.pattern}) {p.quantity:g} @ {p.entry_price:g}, stop {p.stop_loss:g}"
                                            + (f", target {p.take_profit:g}" if p.take_profit is not None else "")
                                            + (f" [{note}]" if note else ""))
            await self._protect(p)
        elif order.final:
            await self.save_position(replace(p, status="FAILED", note=f"entry {order.status} without a fill"))
            await self.audit.record("entry_unfilled", symbol=p.symbol, signal_id=p.signal_id, ref=order.client_order_id,
                                    status=order.status)

    # ------------------------------------------------------------------ protection
    async def _protect(self, p: PositionRecord) -> None:
        stop_ok = await self._place_protective(p, "stop")
        p = self.positions.get(p.key, p)
        if p.status != "OPEN":
            return
        target_ok = p.take_profit is None or await self._place_protective(p, "target")
        await self._set_protection(p.key, stop_ok, target_ok)

    async def _set_protection(self, key: str, stop_ok: bool, target_ok: bool) -> None:
        p = self.positions.get(key)
        if p is None or p.status != "OPEN":
            self.unprotected.discard(key)
            return
        state = ("stop+target" if target_ok and p.take_profit is not None else "stop") if stop_ok else "none"
        if state != p.protection:
            await self.save_position(replace(p, protection=state))
        if stop_ok:
            self.unprotected.discard(key)
        elif key not in self.unprotected:
            self.unprotected.add(key)
            await self.alerts.alert("alarm", f"POSITION WITHOUT STOP: {p.direction} {p.symbol} {p.quantity:g} (signal "
                                             f"{p.signal_id}). The bot keeps trying to place it (every reconciliation); "
                                             "check the position on Binance.")

    async def _place_protective(self, p: PositionRecord, role: Role) -> bool:
        """Place the stop or target of ``p``; True when a live one is on the exchange afterwards."""
        make = client_ids.stop_id if role == "stop" else client_ids.target_id
        gen = p.stop_generation
        while await self._used(make(p.signal_id, gen)) and gen < client_ids.MAX_GENERATION:
            gen += 1
        if gen != p.stop_generation:
            p = await self.save_position(replace(p, stop_generation=gen))
        cid = make(p.signal_id, gen)
        rules = await self._rules_for(p.symbol)
        price = p.stop_loss if role == "stop" else p.take_profit
        assert price is not None
        trigger = trigger_price(rules, price)
        side = "SELL" if p.direction == "LONG" else "BUY"
        kind = "STOP_MARKET" if role == "stop" else "TAKE_PROFIT_MARKET"
        at = wall_ms()
        rec = await self.save_order(OrderRecord(
            client_order_id=cid, mode=self.mode, signal_id=p.signal_id, position_key=p.key, symbol=p.symbol,
            side=side, order_type=kind, purpose=role, quantity=p.quantity, stop_price=float(trigger),  # type: ignore[arg-type]
            reduce_only=False, close_position=True, algo=True, status="PENDING_SUBMIT", filled_qty=0.0, avg_price=None,
            exchange_order_id=None, error=None, created_at_ms=at, updated_at_ms=at))
        await self.audit.record("protect_submit", symbol=p.symbol, signal_id=p.signal_id, ref=cid, role=role,
                                trigger=float(trigger), side=side)
        for attempt in range(4):
            sent_at = self.clock.now_ms()
            try:
                algo = await self.exchange.new_protective_order(p.symbol, side, kind, trigger, cid)  # type: ignore[arg-type]
            except RateLimited as exc:
                await self._exchange_failed(exc, f"{role} placement")
                await asyncio.sleep(min(15.0, exc.retry_after_s))
                continue
            except IpBanned as exc:
                await self._exchange_failed(exc, f"{role} placement")
                await self.save_order(replace(rec, status="NOT_PLACED", error=str(exc)[:300]))
                return False
            except NotSent as exc:
                await self._exchange_failed(exc, f"{role} placement")
                await asyncio.sleep(0.5 * 2 ** attempt)
                continue
            except AmbiguousResult as exc:
                await self.save_order(replace(rec, status="UNKNOWN", error=str(exc)[:300]))
                await self._exchange_failed(exc, f"{role} placement")
                return await self._resolve_protective(p, rec, sent_at)
            except ExchangeError as exc:
                await self.save_order(replace(rec, status="REJECTED", error=str(exc)[:300]))
                await self._exchange_failed(exc, f"{role} placement")
                if exc.code == WOULD_IMMEDIATELY_TRIGGER:
                    await self._breached(p, role)
                    return False
                if exc.code == CLOSE_POSITION_ORDER_EXISTS:
                    await self.alerts.alert("alarm", f"{p.symbol}: a close-position {kind} not placed by this bot blocks "
                                                     f"the bot's {role}; remove it on Binance or keep it as the {role}.")
                return False
            await self.save_order(replace(rec, status=algo.status or "NEW", exchange_order_id=algo.algo_id or None))
            return True
        await self.save_order(replace(rec, status="NOT_PLACED", error="rate limited or unreachable"))
        return False

    async def _used(self, cid: str) -> bool:
        try:
            return await self.store.get_order(cid) is not None
        except StoreError:
            return False

    async def _resolve_protective(self, p: PositionRecord, rec: OrderRecord, sent_at_ms: int) -> bool:
        """An ambiguous protective order: query it (never re-send the same id) until found or proved absent;
        proved absent -> a new generation is placed."""
        delay = 0.25
        proof_after = sent_at_ms + self.exchange.rest.recv_window_ms + self.not_found_grace_ms
        for _ in range(12):
            await asyncio.sleep(delay)
            delay = min(self.resolve_max_delay_s, delay * 2)
            try:
                algo = await self.exchange.query_algo(rec.client_order_id)
            except TradingError as exc:
                await self._exchange_failed(exc, "protective order query")
                continue
            if algo is not None:
                await self.save_order(replace(rec, status=algo.status, exchange_order_id=algo.algo_id or None, error=None))
                return algo.live
            if self.clock.now_ms() > proof_after:
                await self.save_order(replace(rec, status="NOT_PLACED", error="not found after its recvWindow passed"))
                current = self.positions.get(p.key)
                if current is None or current.status != "OPEN":
                    return False
                return await self._place_protective(current, "stop" if rec.purpose == "stop" else "target")
        return False  # still unknown: reconciliation looks again

    async def _breached(self, p: PositionRecord, role: Role) -> None:
        """The stop (target) would trigger at once: the price is already beyond it. Close as it would have."""
        what = "stop breached before the stop could be placed" if role == "stop" else "target reached before it could be placed"
        await self.alerts.alert("alarm", f"{p.symbol} {p.direction}: {what}: closing with a reduce-only market order, "
                                         "as the order would have.")
        await self._close_at_market(p, "stop" if role == "stop" else "target", note=what)

    async def _close_at_market(self, p: PositionRecord, reason: str, *, note: str) -> None:
        n = self._close_seq.get(p.key, 0)
        self._close_seq[p.key] = n + 1
        cid = client_ids.close_id(p.signal_id, min(n, client_ids.MAX_GENERATION))
        rules = await self._rules_for(p.symbol)
        qty = Decimal(str(p.quantity)).quantize(rules.market_step_size)
        side = "SELL" if p.direction == "LONG" else "BUY"
        at = wall_ms()
        rec = await self.save_order(OrderRecord(
            client_order_id=cid, mode=self.mode, signal_id=p.signal_id, position_key=p.key, symbol=p.symbol, side=side,  # type: ignore[arg-type]
            order_type="MARKET", purpose="close", quantity=float(qty), stop_price=None, reduce_only=True,
            close_position=False, algo=False, status="PENDING_SUBMIT", filled_qty=0.0, avg_price=None,
            exchange_order_id=None, error=None, created_at_ms=at, updated_at_ms=at))
        self._closing[p.key] = reason
        await self.audit.record("close_submit", symbol=p.symbol, signal_id=p.signal_id, ref=cid, reason=reason, note=note)
        try:
            result = await self.exchange.new_market_order(p.symbol, side, qty, cid, reduce_only=True)  # type: ignore[arg-type]
        except AmbiguousResult as exc:
            await self.save_order(replace(rec, status="UNKNOWN", error=str(exc)[:300]))
            await self._exchange_failed(exc, "close")
            return  # the stream or the next reconciliation shows whether the position is gone
        except ExchangeError as exc:
            await self.save_order(replace(rec, status="REJECTED", error=str(exc)[:300]))
            self._closing.pop(p.key, None)  # refused: whatever closes the position later, it is not this order
            if exc.code != REDUCE_ONLY_REJECTED:  # -2022: nothing left to reduce, the position is already gone
                await self._exchange_failed(exc, "close")
            return
        except NotSent as exc:
            await self.save_order(replace(rec, status="NOT_PLACED", error=str(exc)[:300]))
            self._closing.pop(p.key, None)
            await self._exchange_failed(exc, "close")
            return
        await self.save_order(replace(rec, status=result.status, filled_qty=result.executed_qty,
                                      avg_price=result.avg_price or None, exchange_order_id=result.order_id or None))
        if result.executed_qty > 0:
            self._note_exit_fill(p.key, cid, result.executed_qty, result.avg_price, None)
        if result.executed_qty >= p.quantity - 1e-12:
            await self._finalize_close(p.key)

    # ------------------------------------------------------------------ the user-data stream
    async def _on_stream_connected(self) -> None:
        await self.audit.record("user_stream_connected", connects=self.stream.connects)
        await self.reconcile("user-data stream (re)connected")

    async def _on_stream_down(self, reason: str) -> None:
        await self.audit.record("user_stream_down", reason=reason)

    async def _on_event(self, event: UserEvent) -> None:
        await self.audit.record("stream_event", actor="exchange", event=type(event).__name__,
                                **{k: v for k, v in _event_fields(event).items() if v not in (None, "", 0, 0.0)})
        async with self.lock:
            if isinstance(event, OrderUpdate):
                await self._on_order_update(event)
            elif isinstance(event, AlgoUpdate):
                await self._on_algo_update(event)
            elif isinstance(event, AccountUpdate):
                await self._on_account_update(event)

    async def _on_order_update(self, u: OrderUpdate) -> None:
        cid = client_ids.parse(u.client_order_id)
        if cid is not None and cid.role == "E":
            key = position_key(self.mode, cid.signal_id)
            if u.execution_type == "TRADE":
                self._entry_fee[key] = self._entry_fee.get(key, 0.0) + u.commission
            ev = self._order_seen.get(u.client_order_id)
            if ev is not None:
                ev.set()
            await self._apply_entry(key, ExchangeOrder(u.client_order_id, u.order_id, u.symbol, u.side, u.order_type,
                                                       u.status, 0.0, u.cum_qty, u.avg_price, u.reduce_only, u.event_ms))
            return
        p = self.busy_symbol(u.symbol)
        if p is None or p.status != "OPEN" or u.execution_type != "TRADE":
            return
        reducing = (u.side == "SELL") == (p.direction == "LONG")
        if reducing:
            self._note_exit_fill(p.key, u.order_id or u.client_order_id, u.cum_qty, u.avg_price, u.commission)

    def _note_exit_fill(self, key: str, ref: str, cum_qty: float, avg: float, commission: float | None) -> None:
        fills = self._exit_fills.setdefault(key, {})
        f = fills.setdefault(ref, _Fill())
        if cum_qty >= f.qty:
            f.qty, f.avg = cum_qty, avg or f.avg
        if commission is not None:
            f.fee += commission
            f.fee_reported = True

    async def _on_algo_update(self, u: AlgoUpdate) -> None:
        cid = client_ids.parse(u.client_algo_id)
        if cid is None or cid.role not in ("S", "T"):
            return
        rec = await self.store.get_order(u.client_algo_id)
        if rec is not None:
            await self.save_order(replace(rec, status=u.status, filled_qty=u.executed_qty, avg_price=u.avg_price or None,
                                          exchange_order_id=u.algo_id or rec.exchange_order_id))
        key = position_key(self.mode, cid.signal_id)
        p = self.positions.get(key)
        if p is None or p.status != "OPEN":
            return
        role: Role = "stop" if cid.role == "S" else "target"
        if u.status in ("TRIGGERED", "FINISHED", "TRIGGERING"):
            self._closing.setdefault(key, role)
        elif u.status in ("CANCELED", "EXPIRED", "REJECTED") and key not in self._closing:
            await self.audit.record("protection_lost", symbol=p.symbol, signal_id=p.signal_id, ref=u.client_algo_id,
                                    status=u.status, reason=u.reason)
            level: AlertLevel = "alarm" if role == "stop" else "warning"
            await self.alerts.alert(level, f"{p.symbol}: the {role} order was {u.status.lower()} on the exchange; placing a "
                                           "new one.")
            placed = await self._place_protective(p, role)
            if role == "stop":
                await self._set_protection(key, placed, p.protection == "stop+target")

    async def _on_account_update(self, u: AccountUpdate) -> None:
        for change in u.positions:
            p = self.busy_symbol(change.symbol)
            if p is not None and p.status == "OPEN" and change.amount == 0:
                await self._finalize_close(p.key)

    # ------------------------------------------------------------------ closing
    async def _finalize_close(self, key: str, *, algo_orders: list[AlgoOrder] | None = None) -> None:
        p = self.positions.get(key)
        if p is None or p.status != "OPEN":
            return
        reason = self._closing.pop(key, None)
        fired: AlgoOrder | None = None
        if reason is None or reason in ("stop", "target"):
            fired = await self._fired_protection(p, reason)
            if fired is not None:
                reason = "stop" if fired.client_algo_id.startswith("wyS") else "target"
        fills = self._exit_fills.pop(key, {})
        qty = sum(f.qty for f in fills.values())
        exit_price: float | None = sum(f.qty * f.avg for f in fills.values()) / qty if qty > 0 else None
        if exit_price is None and fired is not None and fired.avg_price > 0:
            exit_price = fired.avg_price
        entry = p.entry_price or p.planned_entry
        commission = self.settings.commission
        exit_fee = sum(f.fee for f in fills.values()) if fills and all(f.fee_reported for f in fills.values()) else (
            commission * p.quantity * exit_price if exit_price is not None else 0.0)
        entry_fee = self._entry_fee.pop(key, commission * p.quantity * entry)
        pnl = r = None
        if exit_price is not None:
            sign = 1.0 if p.direction == "LONG" else -1.0
            pnl = (exit_price - entry) * sign * p.quantity - entry_fee - exit_fee
            r = pnl / (p.quantity * p.risk_per_unit)
        why = reason or "closed outside the bot (by hand or liquidation)"
        self.unprotected.discard(key)
        await self.save_position(replace(p, status="CLOSED", closed_at_ms=self.clock.now_ms(), exit_price=exit_price,
                                         exit_reason=why, realized_pnl=pnl, fees=entry_fee + exit_fee, r_multiple=r,
                                         protection="none"))
        await self._cancel_protection(p, algo_orders)
        await self.audit.record("position_closed", symbol=p.symbol, signal_id=p.signal_id, reason=why,
                                exit_price=exit_price, pnl=pnl, r_multiple=r)
        level: AlertLevel = "info" if reason is not None else "warning"
        money = f": {r:+.2f} R, {pnl:+.2f} USDT" if r is not None and pnl is not None else " (exit price unknown)"
        await self.alerts.alert(level, f"{self.mode.upper()} closed {p.direction} {p.symbol} {p.timeframe} by {why}"
                                       + (f" @ {exit_price:g}" if exit_price is not None else "") + money)

    async def _fired_protection(self, p: PositionRecord, hint: str | None) -> AlgoOrder | None:
        """Our stop or target for ``p`` that fired (TRIGGERED/FINISHED), if any."""
        roles = ("stop", "target") if hint is None else (hint,)
        for role in roles:
            make = client_ids.stop_id if role == "stop" else client_ids.target_id
            for gen in range(p.stop_generation, -1, -1):
                cid = make(p.signal_id, gen)
                if not await self._used(cid):
                    continue
                try:
                    algo = await self.exchange.query_algo(cid)
                except TradingError as exc:
                    await self._exchange_failed(exc, "protective order query")
                    continue
                if algo is not None and algo.fired:
                    return algo
        return None

    async def _cancel_protection(self, p: PositionRecord, algo_orders: list[AlgoOrder] | None) -> None:
        """Cancel every live protective order of ours for the closed position (a stale close-position stop would
        close the next position on the symbol). The candidates are the ids of its generations (weight 1 per
        cancel, not 40 for listing open algo orders); one that is no longer live answers -2011 and is skipped."""
        if algo_orders is not None:
            candidates = [a.client_algo_id for a in algo_orders
                          if a.live and (parsed := client_ids.parse(a.client_algo_id)) is not None
                          and parsed.signal_id == p.signal_id]
        else:
            candidates = []
            for gen in range(p.stop_generation + 1):
                for cid in (client_ids.stop_id(p.signal_id, gen), client_ids.target_id(p.signal_id, gen)):
                    rec = await self._record(cid)
                    if rec is not None and rec.status in ("NEW", "TRIGGERING", "UNKNOWN", "PENDING_SUBMIT"):
                        candidates.append(cid)
        for cid in candidates:
            try:
                cancelled = await self.exchange.cancel_algo(cid)
            except TradingError as exc:
                await self._exchange_failed(exc, "cancel protection")  # reconciliation retries (stale_protection)
                continue
            rec = await self._record(cid)
            if rec is not None:
                await self.save_order(replace(rec, status=cancelled.status if cancelled else "CANCELED"))

    async def _record(self, cid: str) -> OrderRecord | None:
        try:
            return await self.store.get_order(cid)
        except StoreError:
            return None

    # ------------------------------------------------------------------ reconciliation
    async def _periodic_reconcile(self) -> None:
        await self.reconcile("periodic")

    async def reconcile(self, trigger: str) -> list[Finding]:
        """Compare the exchange with the open positions and repair what may be repaired (src/trading/reconcile.py)."""
        async with self.lock:
            for p in list(self.positions.values()):
                if p.status == "PENDING":
                    self._spawn_resolution(p.key, client_ids.entry_id(p.signal_id), p.symbol, p.created_at_ms)
            try:
                ex_positions = await self.exchange.positions()
                algos = await self.exchange.open_algo_orders()
            except TradingError as exc:
                await self._exchange_failed(exc, "reconcile")
                await self.audit.record("reconcile_failed", trigger=trigger, error=str(exc))
                return []
            findings = plan(list(self.positions.values()), ex_positions, algos)
            for f in findings:
                await self._repair(f, ex_positions, algos)
            self.last_reconcile_ms = self.clock.now_ms()
            self.reconciles += 1
            await self.audit.record("reconcile", trigger=trigger, positions=len(self.positions),
                                    exchange_positions=len(ex_positions), findings=[f"{f.kind}:{f.symbol}" for f in findings])
            return findings

    async def _repair(self, f: Finding, ex_positions: list[ExchangePosition], algos: list[AlgoOrder]) -> None:
        p = self.positions.get(f.position_key) if f.position_key else None
        await self.audit.record("reconcile_finding", symbol=f.symbol, signal_id=None if p is None else p.signal_id,
                                ref=f.client_id, kind=f.kind, detail=f.detail)
        if f.kind == "closed_while_away" and p is not None:
            await self._finalize_close(p.key, algo_orders=algos)
        elif f.kind == "stop_missing" and p is not None:
            await self._set_protection(p.key, False, False)
            placed = await self._place_protective(p, "stop")
            await self._set_protection(p.key, placed, p.protection == "stop+target")
        elif f.kind == "target_missing" and p is not None:
            placed = await self._place_protective(p, "target")
            current = self.positions.get(p.key)
            if current is not None:
                await self._set_protection(p.key, current.key not in self.unprotected, placed)
        elif f.kind in ("stop_adopt", "target_adopt") and p is not None:
            if f.kind == "stop_adopt":
                await self._set_protection(p.key, True, p.protection == "stop+target")
        elif f.kind == "stale_protection" and f.client_id is not None:
            try:
                await self.exchange.cancel_algo(f.client_id)
            except TradingError as exc:
                await self._exchange_failed(exc, "cancel stale protection")
        elif f.kind in ("size_mismatch", "unexpected_position"):
            tag = f"{f.kind}:{f.symbol}:{f.detail}"
            if tag not in self._reported:
                self._reported.add(tag)
                what = "SIZE MISMATCH" if f.kind == "size_mismatch" else "POSITION NOT OPENED BY THE BOT"
                await self.alerts.alert("alarm", f"{what} on {f.symbol}: {f.detail}. Left alone: the bot never closes or "
                                                 "resizes it on its own.")

    # ------------------------------------------------------------------ account and errors
    async def _check_account(self) -> None:
        try:
            account = await self.exchange.account()
        except TradingError as exc:
            await self._exchange_failed(exc, "account")
            return
        async with self.lock:
            self._last_account = account
            now = self.clock.now_ms()
            lifted = self.safety.roll(now)
            if lifted is not None:
                await self.save_safety()
                await self.audit.record("pause_lifted", reason=lifted.reason)
                await self.alerts.alert("info", f"New UTC day: entries allowed again (was paused: {lifted.reason}).")
            pause = self.safety.observe_equity(account.margin_balance, now)
            await self.announce_pause(pause)
            await self.save_safety()

    async def _exchange_failed(self, exc: BaseException, where: str) -> None:
        now = self.clock.now_ms()
        if isinstance(exc, RateLimited | IpBanned):
            budget = self.exchange.rest.budget
            until_wall = max(budget.blocked_until_ms, budget.banned_until_ms) - self.clock.offset_ms
            if until_wall > self.safety.state.rate_blocked_until_wall_ms:
                self.safety.state.rate_blocked_until_wall_ms = until_wall
                await self.save_safety()
        if isinstance(exc, IpBanned):
            if self.safety.paused is not None and self.safety.paused.kind == "ip_ban":
                return  # announced once
            pause = self.safety.pause("ip_ban", f"Binance banned this IP (HTTP 418) until "
                                                f"{exc.until_ms // 1000} (epoch s): too many requests", "bot", now)
            await self.announce_pause(pause)
            return
        await self.announce_pause(self.safety.record_error(f"{where}: {exc}", now))

    def resume_refusal(self) -> str | None:
        budget = self.exchange.rest.budget
        now = self.clock.now_ms()
        if budget.banned(now):
            return f"Binance's IP ban (418) is still running for {(budget.banned_until_ms - now) / 1000:.0f} s; try later."
        return None

    # ------------------------------------------------------------------ reports and controls
    async def unrealised(self) -> float | None:
        try:
            mine = {p.symbol for p in self.positions.values()}
            return sum(x.unrealized_pnl for x in await self.exchange.positions() if x.symbol in mine)
        except TradingError:
            return None

    async def equity(self) -> float | None:
        return None if self._last_account is None else self._last_account.margin_balance

    async def flatten(self, actor: str) -> str:
        """Close every OPEN position of this bot with a reduce-only market order (an admin's decision, confirmed
        in Discord); PENDING entries are left to their resolution."""
        async with self.lock:
            targets = [p for p in self.positions.values() if p.status == "OPEN"]
            await self.audit.record("flatten", actor=actor, positions=[p.symbol for p in targets])
            for p in targets:
                await self._close_at_market(p, "flatten", note=f"flatten by {actor}")
        await self.alerts.alert("warning", f"{self.mode.upper()}: flatten by {actor}: close orders sent for "
                                           f"{len(targets)} position(s).")
        return f"Close orders sent for {len(targets)} position(s); their fate shows in `>positions` and the alerts."

    def _status_extra(self) -> list[str]:
        extra = [f"user stream {'up' if self.stream.connected else 'DOWN'}"]
        if self.unprotected:
            extra.append(f"ALARM: {len(self.unprotected)} position(s) without a stop")
        return extra


def _event_fields(event: UserEvent) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(event)
    if isinstance(event, AccountUpdate):
        d["positions"] = [f"{p.symbol}:{p.amount:g}" for p in event.positions]
    return d
