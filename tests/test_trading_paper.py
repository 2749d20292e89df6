"""Paper trading on hand-made candles: entry at the next open, SPEC 7 exits, the records and alerts, one
position per symbol, a restart resuming open positions from stored candles, the kill switch, flatten, the
limits, and the signals it must not act on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from src.analysis.outcomes import OutcomeParams, resolve
from src.analysis.types import Candle, Signal, ms_to_iso, signal_id
from src.bot.sinks import SignalBatch
from src.storage.sqlite_store import SqliteStore
from src.trading import client_ids
from src.trading.alerts import LogAlerts
from src.trading.base import TraderSettings
from src.trading.paper import PaperTrader
from src.trading.safety import SafetyLimits

H = 3_600_000
T0 = 1_767_571_200_000


def candle(i: int, o: float, h: float, lo: float, c: float, symbol: str = "BTCUSDT") -> Candle:
    t = T0 + i * H
    return Candle(symbol, "1h", t, t + H - 1, o, h, lo, c, 10.0)


def sig(i: int, entry: float = 100.0, stop: float = 95.0, target: float = 110.0, direction: str = "LONG",
        symbol: str = "BTCUSDT", kind: str = "trade", pattern: str = "spring") -> Signal:
    t = T0 + i * H
    return Signal(id=signal_id(symbol, "1h", t, pattern, direction), symbol=symbol, timeframe="1h", pattern=pattern,
                  direction=direction, confidence=0.8, raw_confidence=0.8, entry=entry, stop_loss=stop,  # type: ignore[arg-type]
                  take_profits=(target,), candle_time_ms=t, generated_at=ms_to_iso(t + H - 1), reasons=("t",),
                  analyzer_version="t", config_hash="t", kind=kind)  # type: ignore[arg-type]


def settings(**limits: float) -> TraderSettings:
    return TraderSettings(mode="paper", words="PAPER trading", position_size_usdt=1000.0, commission=0.0004,
                          horizon_candles=5, initial_equity=10_000.0,
                          limits=SafetyLimits(**{"max_open_positions": 5, "max_orders_per_day": 100,
                                                 "daily_loss_limit_pct": 50.0, **limits}))  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "p.db")
    await s.open()
    yield s
    await s.close()


async def make(store: SqliteStore, **limits: float) -> tuple[PaperTrader, LogAlerts]:
    alerts = LogAlerts()
    t = PaperTrader(settings(**limits), store, alerts)
    await t.start()
    return t, alerts


async def feed(t: PaperTrader, store: SqliteStore, *candles: Candle, signals: tuple[Signal, ...] = ()) -> None:
    """What the pipeline does for a batch: store candles and signals, publish, then observers see the candles."""
    await store.upsert_candles(list(candles))
    for s in signals:
        await store.save_signal(s)
    if signals:
        await t.publish(SignalBatch(signals, ()))
    await t.on_candles(list(candles))


async def test_a_paper_trade_enters_at_the_next_open_and_exits_by_the_spec_7_rules(store: SqliteStore) -> None:
    t, alerts = await make(store)
    s = sig(0)
    candles = [candle(0, 99, 101, 98, 100), candle(1, 100.5, 103, 99, 102), candle(2, 102, 104, 94, 96)]
    await feed(t, store, candles[0], signals=(s,))
    assert (await store.open_positions("paper"))[0].status == "PENDING"
    await feed(t, store, candles[1])
    p = (await store.open_positions("paper"))[0]
    assert p.status == "OPEN" and p.entry_price == 100.5 and p.quantity == pytest.approx(1000 / 100.5)
    await feed(t, store, candles[2])
    closed = (await store.closed_positions("paper"))[0]
    expected = resolve(s, candles, OutcomeParams(5, 0.0004, 0.0))
    assert expected is not None and closed.exit_reason == "stop" and closed.exit_price == 95.0
    assert closed.r_multiple == expected.r_multiple
    assert closed.realized_pnl == pytest.approx(closed.quantity * 5.0 * expected.r_multiple)
    orders = {o.client_order_id: o for o in await store.recent_orders("paper")}
    assert orders[client_ids.entry_id(s.id)].status == "FILLED"
    assert orders[client_ids.stop_id(s.id, 0)].status == "FINISHED"
    assert orders[client_ids.target_id(s.id, 0)].status == "CANCELED"
    assert [lvl for lvl, _ in alerts.sent] == ["info", "info"] and "PAPER closed" in alerts.sent[-1][1]
    report = await t.pnl()
    assert report.trades_total == 1 and report.r_total == expected.r_multiple


async def test_one_position_per_symbol_but_a_signal_on_the_exit_candle_may_enter(store: SqliteStore) -> None:
    t, _ = await make(store)
    await feed(t, store, candle(0, 99, 101, 98, 100), signals=(sig(0),))
    await feed(t, store, candle(1, 100, 101, 99, 100), signals=(sig(1, pattern="sos"),))  # busy: refused
    await feed(t, store, candle(2, 100, 111, 99, 110), signals=(sig(2, 110, 105, 120, pattern="lps"),))  # target hit; may enter
    await feed(t, store, candle(3, 110, 111, 109, 110))
    closed = await store.closed_positions("paper")
    open_now = await store.open_positions("paper")
    assert [p.exit_reason for p in closed] == ["target"] and [p.pattern for p in open_now] == ["lps"]
    refused = [e for e in await store.audit_entries() if e.action == "entry_refused"]
    assert len(refused) == 1 and "already in a position on BTCUSDT" in refused[0].data["reason"]


async def test_a_restart_resumes_open_paper_positions_from_stored_candles(store: SqliteStore) -> None:
    t1, _ = await make(store)
    await feed(t1, store, candle(0, 99, 101, 98, 100), signals=(sig(0),))
    await feed(t1, store, candle(1, 100, 102, 99, 101))
    await store.upsert_candles([candle(2, 101, 102, 100, 101)])  # stored while the trader was down
    t2, alerts = await make(store)
    assert next(iter(t2.positions.values())).status == "OPEN"
    await feed(t2, store, candle(3, 101, 112, 100, 111))
    closed = (await store.closed_positions("paper"))[0]
    assert closed.exit_reason == "target" and closed.opened_at_ms == T0 + H
    assert not [a for a in alerts.sent if "opened" in a[1]]  # the open is not announced twice


async def test_kill_pauses_paper_entries_and_flatten_closes_at_the_last_price(store: SqliteStore) -> None:
    t, _ = await make(store)
    await feed(t, store, candle(0, 99, 101, 98, 100), signals=(sig(0),))
    await feed(t, store, candle(1, 100, 102, 99, 101))
    await t.kill("discord:7")
    await feed(t, store, candle(2, 101, 102, 100, 102), signals=(sig(2, symbol="ETHUSDT"),))
    assert [p.symbol for p in await store.open_positions("paper")] == ["BTCUSDT"]
    assert "Flattened 1" in await t.flatten("discord:7")
    closed = (await store.closed_positions("paper"))[0]
    assert closed.exit_reason == "flatten" and closed.exit_price == 102
    assert closed.r_multiple == pytest.approx((102 - 100) / 5 - 0.0004 * (100 + 102) / 5)
    assert "resumed" in (await t.resume("discord:7")).lower()
    t2, _ = await make(store)  # the pause was lifted for good, also after a restart
    assert t2.safety.paused is None


async def test_the_paper_daily_loss_limit_uses_candle_time_and_equity(store: SqliteStore) -> None:
    t, alerts = await make(store, daily_loss_limit_pct=0.5)
    await feed(t, store, candle(0, 99, 101, 98, 100), signals=(sig(0, stop=90),))
    await feed(t, store, candle(1, 100, 101, 99, 100))
    await feed(t, store, candle(2, 100, 100, 93, 94))  # -6 % on a 1000 USDT position: -60 USDT of 10 000
    assert t.safety.paused is not None and t.safety.paused.kind == "daily_loss"
    assert any("PAUSED" in text for _, text in alerts.sent)


async def test_watch_notes_gated_candidates_and_catch_up_signals_are_not_paper_traded(store: SqliteStore) -> None:
    t, _ = await make(store)
    await store.save_signal(sig(0))
    await t.publish(SignalBatch((sig(0),), (), historical=True))
    await feed(t, store, candle(0, 99, 101, 98, 100),
               signals=(sig(0, symbol="ETHUSDT", kind="watch"), sig(0, symbol="SOLUSDT", kind="gated")))
    await feed(t, store, candle(1, 100, 101, 99, 100))
    assert await store.open_positions("paper") == []
    all_on = PaperTrader(TraderSettings(mode="paper", words="PAPER", act_on="all"), store, LogAlerts())
    await all_on.start()
    await feed(all_on, store, candle(0, 99, 101, 98, 100, "ETHUSDT"), signals=(sig(0, symbol="ETHUSDT", kind="watch"),))
    assert [p.symbol for p in await store.open_positions("paper")] == ["ETHUSDT"]
