"""The exchange trader (demo/live) against the fake Binance trading server: entries, protection through the
Algo Order API, closes, ambiguous answers never re-sent, partial fills, refusals, rate limits, the user-data
stream, reconciliation, the kill switch and flatten, and the safety limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from src.bot.sinks import SignalBatch
from src.storage.sqlite_store import SqliteStore
from src.trading import client_ids
from src.trading.alerts import LogAlerts
from src.trading.live import ExchangeTrader
from tests.fakes.binance_trading import FakeBinanceTrading
from tests.trading_harness import demo_config, make_trader, near_signal, settle, until


class Rig:
    def __init__(self, fake: FakeBinanceTrading, store: SqliteStore, tmp_path: Path) -> None:
        self.fake, self.store, self.tmp_path = fake, store, tmp_path
        self.alerts = LogAlerts()
        self.traders: list[ExchangeTrader] = []

    async def trader(self, **env: str) -> ExchangeTrader:
        kw: dict[str, Any] = {k: v for k, v in env.items() if not k.isupper()}
        env = {k: v for k, v in env.items() if k.isupper()}
        t = make_trader(demo_config(self.fake, self.tmp_path, **env), self.store, alerts=self.alerts, **kw)
        self.traders.append(t)
        await t.start()
        await until(lambda: t.stream.connected)
        await settle(t)
        return t

    def alarms(self) -> list[str]:
        return [text for level, text in self.alerts.sent if level == "alarm"]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakeBinanceTrading(hang_s=2.0)
    await fake.start()
    store = SqliteStore(tmp_path / "t.db")
    await store.open()
    r = Rig(fake, store, tmp_path)
    yield r
    for t in r.traders:
        await t.stop()
    await store.close()
    await fake.stop()


async def enter(t: ExchangeTrader, *signals: Any) -> None:
    await t.publish(SignalBatch(tuple(signals), ()))
    await settle(t)


def live_stops(fake: FakeBinanceTrading, symbol: str = "BTCUSDT") -> list[dict[str, Any]]:
    return [a for a in fake.open_algo(symbol) if a["orderType"] == "STOP_MARKET"]


async def test_an_entry_fills_and_gets_a_stop_and_a_target_through_the_algo_order_api(rig: Rig) -> None:
    t = await rig.trader()
    s = near_signal(rig.fake)
    await enter(t, s)
    assert rig.fake.position("BTCUSDT") == pytest.approx(0.02)  # 1000 USDT / 50000, on the 0.001 step
    algos = {a["clientAlgoId"]: a for a in rig.fake.open_algo()}
    assert set(algos) == {client_ids.stop_id(s.id, 0), client_ids.target_id(s.id, 0)}
    stop = algos[client_ids.stop_id(s.id, 0)]
    assert (stop["orderType"], stop["side"], stop["closePosition"]) == ("STOP_MARKET", "SELL", True)
    assert stop["triggerPrice"] == "49500"
    paths = [(r.method, r.path) for r in rig.fake.requests]
    # leverage and margin type before the first order; conditional orders never on the old endpoint
    assert paths.index(("POST", "/fapi/v1/marginType")) < paths.index(("POST", "/fapi/v1/order"))
    assert paths.index(("POST", "/fapi/v1/leverage")) < paths.index(("POST", "/fapi/v1/order"))
    assert rig.fake.leverage["BTCUSDT"] == 2 and rig.fake.margin_type["BTCUSDT"] == "ISOLATED"
    assert not [r for r in rig.fake.requests if r.path == "/fapi/v1/order" and r.params.get("type") != "MARKET"]
    order = next(r for r in rig.fake.requests if r.path == "/fapi/v1/order" and r.method == "POST")
    assert order.params["newClientOrderId"] == client_ids.entry_id(s.id) and len(order.params["newClientOrderId"]) <= 36
    p = (await rig.store.open_positions("demo"))[0]
    assert (p.status, p.quantity, p.entry_price, p.protection) == ("OPEN", 0.02, 50_000.0, "stop+target")
    actions = [e.action for e in await rig.store.audit_entries()]
    for a in ("trader_started", "symbol_prepared", "entry_submit", "exchange_request", "exchange_answer", "entry_filled",
              "protect_submit", "reconcile"):
        assert a in actions, a


async def test_the_stop_closes_the_position_with_its_r_and_the_target_is_cancelled(rig: Rig) -> None:
    t = await rig.trader()
    s = near_signal(rig.fake)
    await enter(t, s)
    await rig.fake.set_price("BTCUSDT", 49_500.0)
    await until(lambda: not t.positions)
    await settle(t)
    closed = (await rig.store.closed_positions("demo"))[0]
    assert closed.exit_reason == "stop" and closed.exit_price == 49_500.0
    # -1 R gross minus the fees Binance reported (0.04 % per side on the notional)
    fees = 0.0004 * 0.02 * (50_000 + 49_500)
    assert closed.r_multiple == pytest.approx((-500 * 0.02 - fees) / (0.02 * 500))
    assert rig.fake.open_algo() == []  # the target was cancelled
    assert rig.fake.algo[client_ids.target_id(s.id, 0)]["algoStatus"] == "CANCELED"


async def test_the_target_closes_the_position_in_profit(rig: Rig) -> None:
    t = await rig.trader()
    await enter(t, near_signal(rig.fake))
    await rig.fake.set_price("BTCUSDT", 51_000.0)
    await until(lambda: not t.positions)
    await settle(t)
    closed = (await rig.store.closed_positions("demo"))[0]
    assert closed.exit_reason == "target" and closed.r_multiple is not None and closed.r_multiple > 1.9


@pytest.mark.parametrize("fault", ["timeout_after_accept", "reset_after_accept", "5xx_after_accept"])
async def test_an_ambiguous_entry_is_never_resent_but_resolved_by_its_client_id(rig: Rig, fault: str) -> None:
    t = await rig.trader()
    s = near_signal(rig.fake)
    rig.fake.fail_next("POST", "/fapi/v1/order", fault)
    await enter(t, s)
    await until(lambda: any(p.status == "OPEN" for p in t.positions.values()))
    await settle(t)
    assert rig.fake.entry_submissions[client_ids.entry_id(s.id)] == 1
    assert rig.fake.position("BTCUSDT") == pytest.approx(0.02)
    assert len(live_stops(rig.fake)) == 1
    queries = [r for r in rig.fake.requests if r.method == "GET" and r.path == "/fapi/v1/order"]
    assert queries and queries[0].params["origClientOrderId"] == client_ids.entry_id(s.id)
    assert "entry_ambiguous" in [e.action for e in await rig.store.audit_entries()]


async def test_an_entry_lost_before_the_exchange_is_proved_not_placed_and_not_resent(rig: Rig) -> None:
    t = await rig.trader(TRADING_RECV_WINDOW_MS="1000")
    s = near_signal(rig.fake)
    rig.fake.fail_next("POST", "/fapi/v1/order", "5xx")  # 503 without executing
    await enter(t, s)
    await until(lambda: not t.positions, within_s=15)
    assert rig.fake.entry_submissions[client_ids.entry_id(s.id)] == 1 and rig.fake.position("BTCUSDT") == 0
    order = await rig.store.get_order(client_ids.entry_id(s.id))
    assert order is not None and order.status == "NOT_PLACED"
    p = await rig.store.get_position(f"demo:{s.id}")
    assert p is not None and p.status == "FAILED" and "not re-sent" in p.note


async def test_a_partial_fill_opens_the_filled_size_and_protects_it(rig: Rig) -> None:
    t = await rig.trader()
    rig.fake.partial_fill_next(0.5)
    await enter(t, near_signal(rig.fake))
    p = next(iter(t.positions.values()))
    assert p.status == "OPEN" and p.quantity == pytest.approx(0.01) and "EXPIRED" in p.note
    assert rig.fake.position("BTCUSDT") == pytest.approx(0.01) and len(live_stops(rig.fake)) == 1


async def test_insufficient_margin_is_recorded_and_announced(rig: Rig) -> None:
    rig.fake.wallet = 5.0
    t = await rig.trader()
    s = near_signal(rig.fake)
    await enter(t, s)
    p = await rig.store.get_position(f"demo:{s.id}")
    assert p is not None and p.status == "FAILED" and "-2019" in p.note
    assert any("insufficient margin" in text for _, text in rig.alerts.sent)


async def test_429_is_not_an_order_and_418_pauses_trading_with_an_alarm(rig: Rig) -> None:
    t = await rig.trader()
    s1, s2 = near_signal(rig.fake), near_signal(rig.fake, "ETHUSDT")
    rig.fake.fail_next("POST", "/fapi/v1/order", "429")
    await enter(t, s1)
    p = await rig.store.get_position(f"demo:{s1.id}")
    assert p is not None and p.status == "FAILED" and rig.fake.position("BTCUSDT") == 0
    rig.fake.fail_next("GET", "/fapi/v3/positionRisk", "418")
    await t.reconcile("test")
    assert t.safety.paused is not None and t.safety.paused.kind == "ip_ban"
    assert any("418" in a for a in rig.alarms())
    assert "ban" in await t.resume("discord:1")  # refused while the ban runs
    await asyncio.sleep(2.2)  # Retry-After of the 429 (the budget blocks requests until then)
    await enter(t, s2)
    assert rig.fake.position("ETHUSDT") == 0  # paused: no entry
    refused = [e for e in await rig.store.audit_entries() if e.action == "entry_refused" and e.signal_id == s2.id]
    assert refused and "paused" in refused[0].data["reason"]


async def test_a_clock_gone_wrong_is_resynced_on_minus_1021_and_the_request_goes_through(rig: Rig) -> None:
    t = await rig.trader()
    syncs = t.clock.syncs
    rig.fake.clock_offset_ms = 20_000  # Binance's clock jumps 20 s ahead of what the bot measured
    await enter(t, near_signal(rig.fake))
    assert t.clock.syncs > syncs and rig.fake.position("BTCUSDT") == pytest.approx(0.02)
    assert next(r.status for r in rig.fake.requests if r.method == "POST" and r.path == "/fapi/v1/marginType") == 400


async def test_a_stop_cancelled_while_the_stream_was_down_is_replaced_on_reconnect(rig: Rig) -> None:
    t = await rig.trader()
    s = near_signal(rig.fake)
    await enter(t, s)
    rig.fake.mute_stream = True
    await rig.fake.cancel_algo_by_hand(client_ids.stop_id(s.id, 0))  # the event is lost
    assert live_stops(rig.fake) == []
    rig.fake.mute_stream = False
    connects = t.stream.connects
    await rig.fake.drop_user_streams()
    await until(lambda: t.stream.connects > connects and t.stream.connected)
    await until(lambda: len(live_stops(rig.fake)) == 1)
    assert live_stops(rig.fake)[0]["clientAlgoId"] == client_ids.stop_id(s.id, 1)  # a new generation, never a resend
    assert any("stop_missing" in str(e.details) for e in await rig.store.audit_entries())


async def test_a_stop_cancelled_by_hand_is_replaced_from_the_stream_event(rig: Rig) -> None:
    t = await rig.trader()
    s = near_signal(rig.fake)
    await enter(t, s)
    await rig.fake.cancel_algo_by_hand(client_ids.stop_id(s.id, 0))
    await until(lambda: len(live_stops(rig.fake)) == 1)
    await settle(t)
    assert any("stop order was canceled" in a for a in rig.alarms())


async def test_an_expired_listen_key_reconnects_with_a_new_one(rig: Rig) -> None:
    t = await rig.trader()
    connects = t.stream.connects
    await rig.fake.expire_listen_keys()
    await until(lambda: t.stream.connects > connects and t.stream.connected)
    await enter(t, near_signal(rig.fake))
    assert rig.fake.position("BTCUSDT") == pytest.approx(0.02)


async def test_a_position_closed_by_hand_is_recorded_and_its_protection_cancelled(rig: Rig) -> None:
    t = await rig.trader()
    await enter(t, near_signal(rig.fake))
    await rig.fake.set_price("BTCUSDT", 50_200.0)
    await rig.fake.close_by_hand("BTCUSDT")
    await until(lambda: not t.positions)
    await settle(t)
    closed = (await rig.store.closed_positions("demo"))[0]
    assert closed.exit_reason is not None and "outside the bot" in closed.exit_reason
    assert closed.exit_price == 50_200.0 and closed.realized_pnl is not None
    assert rig.fake.open_algo() == []


async def test_a_position_closed_while_the_bot_was_away_is_found_by_reconciliation(rig: Rig) -> None:
    t = await rig.trader()
    s = near_signal(rig.fake)
    await enter(t, s)
    rig.fake.mute_stream = True
    await rig.fake.set_price("BTCUSDT", 49_000.0)  # the stop fires; nobody hears it
    rig.fake.mute_stream = False
    await t.reconcile("test")
    await settle(t)
    closed = (await rig.store.closed_positions("demo"))[0]
    assert closed.exit_reason == "stop" and closed.exit_price == 49_000.0 and rig.fake.open_algo() == []


async def test_unexpected_positions_and_size_mismatches_are_reported_and_left_alone(rig: Rig) -> None:
    t = await rig.trader()
    await enter(t, near_signal(rig.fake))
    await rig.fake.open_by_hand("ETHUSDT", 1.0)
    await rig.fake.open_by_hand("BTCUSDT", 0.005)
    before = len([r for r in rig.fake.requests if r.method in ("POST", "DELETE")])
    await t.reconcile("test")
    await settle(t)
    alarms = " ".join(rig.alarms())
    assert "POSITION NOT OPENED BY THE BOT on ETHUSDT" in alarms and "SIZE MISMATCH on BTCUSDT" in alarms
    assert len([r for r in rig.fake.requests if r.method in ("POST", "DELETE")]) == before  # nothing sent
    assert rig.fake.position("ETHUSDT") == 1.0 and rig.fake.position("BTCUSDT") == pytest.approx(0.025)
    await t.reconcile("again")
    assert len(rig.alarms()) == 2  # reported once


def kill9(trader: ExchangeTrader) -> None:
    """The process is gone at once: none of its tasks runs another step."""
    for task in [*trader._tasks, *trader._resolving.values()]:
        if task is not asyncio.current_task():
            task.cancel()


async def test_a_crash_between_entry_and_protection_is_repaired_on_restart(rig: Rig) -> None:
    """kill -9 after the entry left: the new process finds the PENDING entry, learns it filled, places the stop."""

    class Crash(BaseException):
        pass

    t1 = await rig.trader()
    real = t1.exchange.new_market_order

    async def send_then_die(*args: Any, **kwargs: Any) -> Any:
        rig.fake.mute_stream = True  # what the exchange sends from here on reaches no one
        await real(*args, **kwargs)
        kill9(t1)
        raise Crash

    t1.exchange.new_market_order = send_then_die  # type: ignore[method-assign]
    s = near_signal(rig.fake)
    await t1.publish(SignalBatch((s,), ()))
    await until(lambda: rig.fake.position("BTCUSDT") != 0)
    await asyncio.gather(*t1._tasks, return_exceptions=True)
    rig.fake.mute_stream = False
    rig.traders.remove(t1)
    await t1.exchange.rest.close()
    assert live_stops(rig.fake) == [] and (await rig.store.open_positions("demo"))[0].status == "PENDING"

    t2 = await rig.trader()
    await until(lambda: len(live_stops(rig.fake)) == 1)
    await settle(t2)
    p = (await rig.store.open_positions("demo"))[0]
    assert p.status == "OPEN" and p.protection == "stop+target"
    assert rig.fake.entry_submissions[client_ids.entry_id(s.id)] == 1


async def test_a_crash_after_the_fill_was_recorded_places_the_missing_stop_on_restart(rig: Rig) -> None:
    t1 = await rig.trader()

    async def no_protection(p: Any) -> None:
        kill9(t1)  # dies right before placing the stop
        raise asyncio.CancelledError

    t1._protect = no_protection  # type: ignore[method-assign]
    await t1.publish(SignalBatch((near_signal(rig.fake),), ()))
    await until(lambda: any(p.status == "OPEN" for p in t1.positions.values()))
    await asyncio.gather(*t1._tasks, return_exceptions=True)
    rig.traders.remove(t1)
    await t1.exchange.rest.close()
    assert live_stops(rig.fake) == []
    await rig.trader()
    assert len(live_stops(rig.fake)) == 1
    assert any("POSITION WITHOUT STOP" in a for a in rig.alarms())


async def test_a_stop_already_breached_closes_the_position_as_the_stop_would(rig: Rig) -> None:
    t = await rig.trader()
    s = near_signal(rig.fake, entry=50_000.0)
    await rig.fake.set_price("BTCUSDT", 49_400.0)  # the market fell through the stop before the entry
    await enter(t, s)
    await until(lambda: not t.positions)
    closed = (await rig.store.closed_positions("demo"))[0]
    assert closed.exit_reason == "stop" and rig.fake.position("BTCUSDT") == 0
    assert any("stop breached" in a for a in rig.alarms())


async def test_kill_pauses_entries_keeps_stops_and_flatten_closes_with_reduce_only_orders(rig: Rig) -> None:
    t = await rig.trader()
    await enter(t, near_signal(rig.fake))
    assert "paused" in (await t.kill("discord:42")).lower()
    await enter(t, near_signal(rig.fake, "ETHUSDT"))
    assert rig.fake.position("ETHUSDT") == 0 and len(live_stops(rig.fake)) == 1
    await t.flatten("discord:42")
    await until(lambda: not t.positions)
    assert rig.fake.position("BTCUSDT") == 0 and rig.fake.open_algo() == []
    close = [r for r in rig.fake.requests if r.path == "/fapi/v1/order" and r.params.get("reduceOnly") == "true"]
    assert len(close) == 1
    assert (await rig.store.closed_positions("demo"))[0].exit_reason == "flatten"
    assert "resumed" in (await t.resume("discord:42")).lower()
    await enter(t, near_signal(rig.fake, "ETHUSDT", salt=1))
    assert rig.fake.position("ETHUSDT") != 0
    actions = [(e.actor, e.action) for e in await rig.store.audit_entries()]
    assert ("discord:42", "kill") in actions and ("discord:42", "flatten") in actions and ("discord:42", "resume") in actions


async def test_limits_refuse_entries_and_the_daily_loss_limit_pauses(rig: Rig) -> None:
    t = await rig.trader(MAX_OPEN_POSITIONS="1", DAILY_LOSS_LIMIT_PCT="1")
    await enter(t, near_signal(rig.fake), near_signal(rig.fake, "ETHUSDT"))
    assert rig.fake.position("ETHUSDT") == 0
    assert any("MAX_OPEN_POSITIONS" in str(e.details) for e in await rig.store.audit_entries())
    rig.fake.wallet -= 150  # equity 1.5 % below the day's start
    await t._check_account()
    assert t.safety.paused is not None and t.safety.paused.kind == "daily_loss"
    assert any("Trading PAUSED" in text for _, text in rig.alerts.sent)


def paused_kind(t: ExchangeTrader) -> str | None:
    return None if t.safety.paused is None else t.safety.paused.kind


async def test_max_orders_per_day_and_the_error_breaker_pause_entries(rig: Rig) -> None:
    t = await rig.trader(MAX_ORDERS_PER_DAY="1", TRADING_ERROR_LIMIT="2")
    await enter(t, near_signal(rig.fake))
    assert paused_kind(t) == "orders_per_day"
    t.safety.resume()
    t.safety.state.entries_today = 0
    t.safety.limits = type(t.safety.limits)(max_open_positions=10, max_orders_per_day=100, error_limit=2)
    for _ in range(2):
        rig.fake.fail_next("GET", "/fapi/v3/positionRisk", "5xx")
        await t.reconcile("test")
    assert paused_kind(t) == "errors"


async def test_stale_signals_watch_notes_and_gated_candidates_are_not_traded(rig: Rig) -> None:
    t = await rig.trader()
    await enter(t, near_signal(rig.fake, minutes_ago=10), near_signal(rig.fake, "ETHUSDT", kind="watch"),
            near_signal(rig.fake, "SOLUSDT", kind="gated"))
    assert not rig.fake.positions or all(v[0] == 0 for v in rig.fake.positions.values())
    assert any("stale" in str(e.details) for e in await rig.store.audit_entries())


async def test_trading_act_on_all_also_trades_watch_notes_in_demo(rig: Rig) -> None:
    t = await rig.trader(TRADING_ACT_ON="all")
    await enter(t, near_signal(rig.fake, "ETHUSDT", kind="watch"), near_signal(rig.fake, "SOLUSDT", kind="gated"))
    assert rig.fake.position("ETHUSDT") != 0 and rig.fake.position("SOLUSDT") == 0


async def test_signals_found_while_catching_up_are_not_traded(rig: Rig) -> None:
    t = await rig.trader()
    await t.publish(SignalBatch((near_signal(rig.fake),), (), historical=True))
    await settle(t)
    assert rig.fake.position("BTCUSDT") == 0


async def test_a_quantity_below_the_exchange_minimum_is_refused_before_sending(rig: Rig) -> None:
    t = await rig.trader(POSITION_SIZE_USDT="20")  # 0.0004 BTC < 0.001 minimum
    s = near_signal(rig.fake)
    await enter(t, s)
    assert not [r for r in rig.fake.requests if r.path == "/fapi/v1/order"]
    assert any("minimum quantity" in str(e.details) for e in await rig.store.audit_entries())


async def test_keys_never_reach_the_audit_log_or_the_alerts(rig: Rig) -> None:
    t = await rig.trader()
    await enter(t, near_signal(rig.fake))
    await rig.fake.set_price("BTCUSDT", 49_000.0)
    await until(lambda: not t.positions)
    text = " ".join(e.details + e.action + (e.ref or "") for e in await rig.store.audit_entries())
    text += " ".join(t for _, t in rig.alerts.sent) + repr(t.exchange.rest)
    assert rig.fake.api_key not in text and rig.fake.api_secret not in text and "signature" not in text


async def test_a_flatten_refused_as_reduce_only_minus_2022_is_recorded_and_the_close_found_by_reconciliation(
        rig: Rig) -> None:
    t = await rig.trader()
    s = near_signal(rig.fake)
    await enter(t, s)
    rig.fake.mute_stream = True  # closed by hand; the bot does not hear it
    await rig.fake.close_by_hand("BTCUSDT")
    rig.fake.mute_stream = False
    await t.flatten("discord:1")
    close = await rig.store.get_order(client_ids.close_id(s.id, 0))
    assert close is not None and close.status == "REJECTED" and "-2022" in (close.error or "")
    await t.reconcile("test")
    await settle(t)
    closed = (await rig.store.closed_positions("demo"))[0]
    assert closed.exit_reason is not None and "outside the bot" in closed.exit_reason and rig.fake.open_algo() == []
