"""The trading chaos run: many trade calls against the fake exchange with random faults, then the checks
that matter (issue 13). Used by tests/test_trading_chaos.py (CI size) and benchmarks/trading_chaos.py
(longer runs, printed figures).

Each round publishes a few trade calls on random symbols (one position per symbol on the exchange, so some
are refused as busy) after queueing random faults on the order and algo endpoints (a timeout after the order
was accepted, a connection cut after it was accepted, 5xx after accepting, 5xx before, 429), sometimes a
partial fill; then the market moves (stops and targets fire), and sometimes: the user-data stream drops,
events are lost while a stop is cancelled by hand, a position is closed by hand, Binance's clock jumps, or
the trader is killed (kill -9: none of its tasks runs another step) and a new one starts on the same store.
At the end a fresh trader starts (it reconciles) and the run is judged:

- duplicate entries: an entry client id SUBMITTED again after the exchange had accepted it (must be 0);
- positions without a stop after reconciliation: exchange positions with no live STOP_MARKET close-position
  order of the bot on the closing side (must be 0);
- actions missing from audit_log: accepted client ids of the bot without their ``*_submit`` audit entry, and
  write requests the exchange received beyond the ``exchange_request`` entries (both must be 0);
- positions the bot does not know (exchange position without an OPEN record; must be 0).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.bot.sinks import SignalBatch
from src.storage.sqlite_store import SqliteStore
from src.trading import client_ids
from src.trading.alerts import LogAlerts
from src.trading.errors import NotSent
from src.trading.live import ExchangeTrader
from tests.fakes.binance_trading import FakeBinanceTrading, SymbolSpec
from tests.trading_harness import demo_config, make_trader, near_signal, settle, until

SYMBOLS = [f"C{i}USDT" for i in range(20)]
ORDER_FAULTS = ("timeout_after_accept", "reset_after_accept", "5xx_after_accept", "5xx", "429")
FAULT_WEIGHTS = (0.27, 0.22, 0.22, 0.21, 0.08)


@dataclass
class ChaosReport:
    signals: int = 0
    rounds: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    entries_accepted: int = 0
    positions_opened: int = 0
    positions_closed: int = 0
    exit_reasons: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    duplicate_entries: int = 0
    unprotected_after_reconcile: int = 0
    unknown_positions: int = 0
    audit_missing_submits: int = 0
    audit_missing_requests: int = 0
    audit_entries: int = 0
    alarms: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"signals published: {self.signals} in {self.rounds} rounds ({self.seconds:.1f} s)",
            f"faults injected: {dict(sorted(self.faults.items()))}",
            f"other chaos: {dict(sorted(self.events.items()))}",
            f"entries accepted by the exchange: {self.entries_accepted}; positions opened {self.positions_opened}, "
            f"closed {self.positions_closed} {dict(sorted(self.exit_reasons.items()))}; entries refused {self.refused}",
            f"duplicate entries: {self.duplicate_entries}",
            f"positions without a stop after reconciliation: {self.unprotected_after_reconcile}",
            f"exchange positions unknown to the bot: {self.unknown_positions}",
            f"actions missing from audit_log: {self.audit_missing_submits} submits, {self.audit_missing_requests} "
            f"write requests (audit_log holds {self.audit_entries} entries)",
            f"alarms raised: {self.alarms}",
        ]


def _fake() -> FakeBinanceTrading:
    rng = random.Random(1)
    specs = {s: SymbolSpec("0.01", "0.001", "0.001", "100000", "5") for s in SYMBOLS}
    prices = {s: round(rng.uniform(20, 200), 2) for s in SYMBOLS}
    return FakeBinanceTrading(prices=prices, symbols=specs, wallet=1_000_000.0, hang_s=0.8, ban_s=2.0, retry_after_s=1)


async def run_chaos(tmp_path: Path, n_signals: int = 200, seed: int = 7, per_round: int = 5) -> ChaosReport:
    rng = random.Random(seed)
    report = ChaosReport()
    started = time.monotonic()
    alerts = LogAlerts()
    async with _fake() as fake:
        store = SqliteStore(tmp_path / "chaos.db")
        await store.open()
        config = demo_config(fake, tmp_path, POSITION_SIZE_USDT="50", MAX_OPEN_POSITIONS=str(len(SYMBOLS)),
                             TRADING_RECV_WINDOW_MS="1000")
        traders: list[ExchangeTrader] = []

        async def new_trader() -> ExchangeTrader:
            t = make_trader(config, store, alerts=alerts, timeout_s=0.3)
            t.exchange.rest.recv_window_ms = 300  # an unanswered order is proved absent sooner (the fake allows it)
            traders.append(t)
            for _attempt in range(20):  # as TradingRunner does: a rate-limited start is retried
                try:
                    await t.start()
                    break
                except NotSent:
                    report.events["start retried after a rate limit"] += 1
                    await asyncio.sleep(1.0)
            await until(lambda: t.stream.connected, within_s=90)
            return t

        trader = await new_trader()
        i = 0
        while report.signals < n_signals:
            report.rounds += 1
            batch = []
            for _ in range(min(per_round, n_signals - report.signals)):
                sym = rng.choice(SYMBOLS)
                direction = rng.choice(("LONG", "SHORT"))
                batch.append(near_signal(fake, sym, direction, risk_pct=rng.uniform(0.005, 0.02), salt=i))
                i += 1
            report.signals += len(batch)
            for _ in range(len(batch)):
                if rng.random() < 0.35:
                    kind = rng.choices(ORDER_FAULTS, FAULT_WEIGHTS)[0]
                    path = rng.choice(("/fapi/v1/order", "/fapi/v1/algoOrder"))
                    fake.fail_next("POST", path, kind)
                    report.faults[f"{path.rsplit('/', 1)[-1]}:{kind}"] += 1
            if rng.random() < 0.1:
                fake.partial_fill_next(rng.uniform(0.3, 0.9))
                report.faults["partial_fill"] += 1
            crash_now = rng.random() < 0.06
            if crash_now:
                report.events["kill -9 during entries"] += 1
                await trader.publish(SignalBatch(tuple(batch), ()))
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                trader = await _restart(trader, traders, new_trader)
            else:
                await trader.publish(SignalBatch(tuple(batch), ()))
            await settle(trader, within_s=60)
            fake._faults.clear()  # faults not consumed this round do not leak into the next
            held = [s for s in SYMBOLS if fake.position(s) != 0]
            for sym in rng.sample(held, min(len(held), 6)):  # stops and targets fire
                await fake.set_price(sym, round(fake.prices[sym] * (1 + rng.uniform(-0.04, 0.04)), 2))
            roll = rng.random()
            if roll < 0.08:
                report.events["user stream dropped"] += 1
                await fake.drop_user_streams()
            elif roll < 0.14:
                live = [a for a in fake.open_algo() if a["orderType"] == "STOP_MARKET"]
                if live:
                    report.events["stop cancelled by hand, event lost"] += 1
                    fake.mute_stream = True
                    await fake.cancel_algo_by_hand(rng.choice(live)["clientAlgoId"])
                    fake.mute_stream = False
                    await trader.reconcile("chaos")
            elif roll < 0.18:
                held = [s for s in SYMBOLS if fake.position(s) != 0]
                if held:
                    report.events["position closed by hand"] += 1
                    await fake.close_by_hand(rng.choice(held))
            elif roll < 0.21:
                report.events["exchange clock jumped"] += 1
                fake.clock_offset_ms += rng.choice((-1, 1)) * rng.randint(1_000, 5_000)
            elif roll < 0.25:
                report.events["kill -9 between rounds"] += 1
                trader = await _restart(trader, traders, new_trader)
            await until(trader_connected(trader), within_s=90)  # the weight budget may hold requests up to a minute
            await settle(trader, within_s=60)
        # the end: a fresh process reconciles
        trader = await _restart(trader, traders, new_trader)
        await settle(trader, within_s=60)
        await _judge(fake, store, report, alerts)
        for t in traders:
            await t.stop()
        await store.close()
    report.seconds = time.monotonic() - started
    return report


def trader_connected(trader: ExchangeTrader) -> Callable[[], bool]:
    return lambda: trader.stream.connected


async def _restart(trader: ExchangeTrader, traders: list[ExchangeTrader], new_trader: Any) -> ExchangeTrader:
    for task in [*trader._tasks, *trader._resolving.values()]:  # kill -9: nothing of it runs another step
        task.cancel()
    await asyncio.gather(*trader._tasks, *trader._resolving.values(), return_exceptions=True)
    traders.remove(trader)
    await trader.exchange.rest.close()
    t: ExchangeTrader = await new_trader()
    return t


async def _judge(fake: FakeBinanceTrading, store: SqliteStore, report: ChaosReport, alerts: LogAlerts) -> None:
    audit = await store.audit_entries(mode="demo", limit=10_000_000)
    report.audit_entries = len(audit)
    ours = [cid for cid in dict.fromkeys(fake.accepted) if client_ids.parse(cid) is not None]
    entries = [cid for cid in ours if cid.startswith("wyE-")]
    report.entries_accepted = len(entries)
    # a submission counted by the fake after the id had been accepted is a duplicate (the fake refuses it with -4116)
    report.duplicate_entries = sum(fake.duplicate_after_accept[cid] for cid in entries)
    submitted = {e.ref for e in audit if e.action in ("entry_submit", "protect_submit", "close_submit")}
    report.audit_missing_submits = sum(1 for cid in ours if cid not in submitted)
    writes = sum(1 for r in fake.requests if r.method in ("POST", "PUT", "DELETE"))
    audited = sum(1 for e in audit if e.action == "exchange_request")
    report.audit_missing_requests = max(0, writes - audited)
    open_records = {p.symbol: p for p in await store.open_positions("demo") if p.status == "OPEN"}
    for sym in SYMBOLS:
        amount = fake.position(sym)
        if amount == 0:
            continue
        closing_side = "SELL" if amount > 0 else "BUY"
        stops = [a for a in fake.open_algo(sym) if a["orderType"] == "STOP_MARKET" and a["side"] == closing_side
                 and client_ids.parse(a["clientAlgoId"]) is not None]
        if not stops:
            report.unprotected_after_reconcile += 1
        if sym not in open_records:
            report.unknown_positions += 1
    closed = await store.closed_positions("demo", limit=1_000_000)
    report.positions_closed = len(closed)
    report.exit_reasons = Counter((p.exit_reason or "?").split(" (")[0] for p in closed)
    report.positions_opened = len(closed) + len(open_records)
    report.refused = sum(1 for e in audit if e.action == "entry_refused")
    report.alarms = sum(1 for level, _ in alerts.sent if level == "alarm")
