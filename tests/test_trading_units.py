"""The trading building blocks on their own: client ids, filters and rounding, signatures, the rate budget,
the server clock, user-data events, safety limits, the reconciliation plan, the signal policy, the audit
scrubbing, the REST client's refusals against the fake exchange, and the configuration contract."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given
from hypothesis import strategies as st

from src.analysis.types import signal_id
from src.config import Config
from src.storage.sqlite_store import SqliteStore
from src.trading import client_ids
from src.trading.audit import Auditor
from src.trading.budget import RequestBudget
from src.trading.clock import ExchangeClock
from src.trading.errors import ExchangeError, LocalRejection
from src.trading.events import AccountUpdate, AlgoUpdate, ListenKeyExpired, OrderUpdate, parse_event
from src.trading.exchange import AlgoOrder, BinanceFuturesExchange, ExchangePosition
from src.trading.filters import SymbolRules, fmt, market_quantity, rules_from_symbol, trigger_price
from src.trading.policy import acts_on
from src.trading.reconcile import plan
from src.trading.rest import BinanceTradeRest
from src.trading.safety import Safety, SafetyLimits, SafetyState
from src.trading.service import build_trader
from src.trading.signing import Ed25519Signer, HmacSigner
from tests.fakes.binance_trading import FakeBinanceTrading
from tests.trading_contract_data import position
from tests.trading_harness import near_signal

DAY = 86_400_000
T = 1_767_571_200_000  # 2026-01-05 00:00 UTC


# ---------------------------------------------------------------------------- client ids
@given(st.text("0123456789abcdef", min_size=24, max_size=24), st.integers(0, 99), st.sampled_from("ESTX"))
def test_client_ids_fit_binance_and_parse_back(sid: str, gen: int, role: str) -> None:
    make = {"E": lambda s, g: client_ids.entry_id(s), "S": client_ids.stop_id, "T": client_ids.target_id,
            "X": client_ids.close_id}[role]
    cid = make(sid, gen)
    assert len(cid) <= 36 and client_ids.BINANCE_ID_RE.match(cid)
    parsed = client_ids.parse(cid)
    assert parsed is not None and parsed.role == role and parsed.signal_id == sid
    assert parsed.generation == (0 if role == "E" else gen)


def test_ids_of_other_tools_are_not_ours() -> None:
    for cid in ("web_123", "autoclose-1", "x-AbC", "wyE-NOTHEX", "", "algo-1002", "manual-7"):
        assert client_ids.parse(cid) is None


def test_an_entry_id_is_the_same_for_the_same_signal() -> None:
    sid = signal_id("BTCUSDT", "1h", T, "spring", "LONG")
    assert client_ids.entry_id(sid) == client_ids.entry_id(sid) == f"wyE-{sid}"


# ---------------------------------------------------------------------------- filters
RULES = SymbolRules("BTCUSDT", Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), Decimal("1000"), Decimal("0.001"),
                    Decimal("0.001"), Decimal("120"), Decimal("100"))


@given(st.floats(101, 50_000), st.floats(1_000, 100_000))
def test_market_quantity_is_on_the_step_never_above_the_budget_and_in_range(notional: float, price: float) -> None:
    try:
        qty = market_quantity(RULES, notional, price)
    except LocalRejection as exc:
        assert "minimum" in str(exc) or "maximum" in str(exc)
        return
    assert qty % RULES.market_step_size == 0
    assert qty * Decimal(str(price)) <= Decimal(str(notional)) + Decimal("1e-9")
    assert RULES.market_min_qty <= qty <= RULES.market_max_qty
    assert qty * Decimal(str(price)) >= RULES.min_notional


def test_too_small_a_position_is_refused_with_the_numbers() -> None:
    with pytest.raises(LocalRejection, match=r"below the minimum quantity 0\.001"):
        market_quantity(RULES, 20, 50_000)
    with pytest.raises(LocalRejection, match="below the minimum 100 USDT"):
        market_quantity(RULES, 99, 50_000)


@given(st.floats(0.5, 1e6))
def test_trigger_prices_land_on_the_tick(price: float) -> None:
    p = trigger_price(RULES, price)
    assert p % RULES.tick_size == 0 and abs(float(p) - price) <= 0.05 + 1e-9
    assert "E" not in fmt(p) and "e" not in fmt(p)


def test_rules_are_read_from_exchange_info_and_missing_filters_are_named() -> None:
    entry = {"symbol": "X", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01"},
                                        {"filterType": "LOT_SIZE", "stepSize": "1", "minQty": "1", "maxQty": "9"},
                                        {"filterType": "MIN_NOTIONAL", "notional": "5"}]}
    r = rules_from_symbol(entry)
    assert (r.tick_size, r.market_step_size, r.min_notional) == (Decimal("0.01"), Decimal("1"), Decimal("5"))
    with pytest.raises(ValueError, match="no LOT_SIZE"):
        rules_from_symbol({"symbol": "Y", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "1"}]})
    assert fmt(Decimal("0.00100")) == "0.001" and fmt(Decimal("1E+2")) == "100"


# ---------------------------------------------------------------------------- signing
def test_hmac_signature_matches_binances_documented_example() -> None:
    signer = HmacSigner("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j")
    payload = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
               "&timestamp=1499827319559")
    assert signer.sign(payload) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    assert "Nhq" not in repr(signer) and "Nhq" not in str(signer)


def test_ed25519_keys_sign_and_bad_files_are_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    signer = Ed25519Signer.from_file(pem)
    key.public_key().verify(base64.b64decode(signer.sign("a=1")), b"a=1")
    assert repr(signer) == "Ed25519Signer(***)"
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ValueError, match="PKCS#8 PEM"):
        Ed25519Signer.from_file(tmp_path / "bad.pem")


# ---------------------------------------------------------------------------- budget and clock
def test_the_budget_waits_for_the_next_window_near_the_limit_and_after_a_429() -> None:
    b = RequestBudget(weight_per_minute=100, orders_per_10s=5, headroom=0.9)
    now = T + 30_000
    b.observe({"X-MBX-USED-WEIGHT-1M": "85"}, now)
    assert b.wait_ms(5, False, now) == 0
    assert b.wait_ms(6, False, now) == 30_050  # 91 > 90: wait for the next minute
    b.observe({"X-MBX-ORDER-COUNT-10S": "4"}, now)
    assert b.wait_ms(1, True, now) > 0 and b.wait_ms(1, False, now) == 0
    b.back_off(2, now)
    assert b.wait_ms(1, False, now) == 2_500
    b.ban(120, now)
    assert b.banned(now + 119_000) and not b.banned(now + 121_000)
    b.set_limits([{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400}])
    assert b.weight.limit == 2400


async def test_the_clock_offset_is_measured_half_way_through_the_round_trip() -> None:
    ticks = iter([1_000, 1_100])

    async def server() -> int:
        return 51_050

    clock = ExchangeClock(server, local_ms=lambda: next(ticks))
    await clock.resync()
    assert clock.offset_ms == 50_000 and clock.round_trip_ms == 100


# ---------------------------------------------------------------------------- events
def test_user_data_events_parse_and_garbage_does_not() -> None:
    o = parse_event('{"e":"ORDER_TRADE_UPDATE","E":5,"T":4,"o":{"s":"BTCUSDT","c":"wyE-ab","S":"BUY","o":"MARKET",'
                    '"x":"TRADE","X":"FILLED","i":8,"l":"0.5","z":"1","L":"100","ap":"99","n":"0.04","rp":"0","R":false}}')
    assert isinstance(o, OrderUpdate) and (o.cum_qty, o.avg_price, o.commission, o.status) == (1.0, 99.0, 0.04, "FILLED")
    a = parse_event('{"e":"ALGO_UPDATE","E":6,"o":{"caid":"wyS0-ab","aid":3,"s":"BTCUSDT","S":"SELL","o":"STOP_MARKET",'
                    '"X":"CANCELED","tp":"90","aq":"0","ap":"0","new_field":1}}')
    assert isinstance(a, AlgoUpdate) and (a.client_algo_id, a.status, a.trigger_price) == ("wyS0-ab", "CANCELED", 90.0)
    u = parse_event('{"e":"ACCOUNT_UPDATE","E":7,"a":{"m":"ORDER","B":[{"a":"USDT","wb":"10"}],'
                    '"P":[{"s":"BTCUSDT","pa":"0","ep":"0","up":"0","ps":"BOTH"}]}}')
    assert isinstance(u, AccountUpdate) and u.wallet_balance == 10.0 and u.positions[0].amount == 0
    assert isinstance(parse_event('{"e":"listenKeyExpired","E":1,"listenKey":"x"}'), ListenKeyExpired)
    for junk in ("", "[]", "{", '{"e":"MARGIN_CALL"}', '{"e":"ORDER_TRADE_UPDATE","o":"x"}', "null"):
        assert parse_event(junk) is None, junk


# ---------------------------------------------------------------------------- safety
def test_limits_pause_and_day_scoped_pauses_lift_on_the_next_utc_day() -> None:
    s = Safety(SafetyLimits(max_open_positions=2, max_orders_per_day=2, daily_loss_limit_pct=5, error_limit=3,
                            error_window_s=60))
    assert s.entry_refusal(0, T) is None
    assert "MAX_OPEN_POSITIONS=2" in (s.entry_refusal(2, T) or "")
    assert s.count_entry(T) is None
    pause = s.count_entry(T + 1)
    assert pause is not None and pause.kind == "orders_per_day" and "paused" in (s.entry_refusal(0, T + 2) or "")
    assert s.roll(T + DAY) is not None and s.entry_refusal(0, T + DAY) is None  # a new day
    assert s.observe_equity(1000, T + DAY) is None  # the day's start equity
    assert s.observe_equity(960, T + DAY + 1) is None
    loss = s.observe_equity(950, T + DAY + 2)
    assert loss is not None and loss.kind == "daily_loss" and "5.00%" in loss.reason


def test_the_error_breaker_counts_errors_within_its_window_and_needs_a_resume() -> None:
    s = Safety(SafetyLimits(error_limit=3, error_window_s=60))
    assert s.record_error("a", T) is None and s.record_error("b", T + 20_000) is None
    assert s.record_error("c", T + 70_000) is None  # the first fell out of the window
    pause = s.record_error("d", T + 71_000)
    assert pause is not None and pause.kind == "errors"
    assert s.roll(T + DAY) is None and s.paused is not None  # not lifted by a new day
    assert s.resume() is pause and s.paused is None


def test_the_kill_switch_wins_over_an_earlier_pause_and_the_state_round_trips() -> None:
    s = Safety(SafetyLimits())
    s.pause("errors", "x", "bot", T)
    s.pause("kill", "kill switch by discord:1", "discord:1", T + 1)
    state = SafetyState.from_dict(orjson.loads(orjson.dumps(s.state.to_dict())))
    assert state.pause is not None and state.pause.kind == "kill" and state.pause.by == "discord:1"


# ---------------------------------------------------------------------------- reconciliation plan
SID = "0123456789abcdef01234567"


def algo(cid: str, status: str = "NEW", symbol: str = "BTCUSDT", side: str = "SELL") -> AlgoOrder:
    return AlgoOrder(cid, "1", symbol, side, "STOP_MARKET" if cid.startswith("wyS") else "TAKE_PROFIT_MARKET", status,
                     100.0, True, 0.0, 0.0)


def test_the_plan_repairs_protection_and_reports_what_it_must_leave_alone() -> None:
    p = position(SID, quantity=0.02)
    ex = [ExchangePosition("BTCUSDT", 0.02, 100, 100, 0), ExchangePosition("ETHUSDT", -1, 10, 10, 0)]
    kinds = {(f.kind, f.symbol) for f in plan([p], ex, [algo(client_ids.target_id(SID, 0)), algo("foreign-1")])}
    assert kinds == {("stop_missing", "BTCUSDT"), ("unexpected_position", "ETHUSDT")}
    assert plan([p], ex[:1], [algo(client_ids.stop_id(SID, 0)), algo(client_ids.target_id(SID, 0))]) == []
    adopt = plan([p], ex[:1], [algo(client_ids.stop_id(SID, 3)), algo(client_ids.target_id(SID, 0))])
    assert [f.kind for f in adopt] == ["stop_adopt"]
    gone = plan([p], [], [algo(client_ids.stop_id(SID, 0))])
    assert sorted(f.kind for f in gone) == ["closed_while_away", "stale_protection"]
    wrong = plan([p], [ExchangePosition("BTCUSDT", 0.03, 100, 100, 0)],
                 [algo(client_ids.stop_id(SID, 0)), algo(client_ids.target_id(SID, 0))])
    assert [f.kind for f in wrong] == ["size_mismatch"]
    dead = plan([p], ex[:1], [algo(client_ids.stop_id(SID, 0), "CANCELED"), algo(client_ids.target_id(SID, 0))])
    assert [f.kind for f in dead] == ["stop_missing"]


# ---------------------------------------------------------------------------- policy
def test_trade_calls_only_unless_act_on_all_outside_live() -> None:
    fake = FakeBinanceTrading()
    trade, watch, gated = (near_signal(fake, kind=k) for k in ("trade", "watch", "gated"))
    assert acts_on(trade, "live", "trade") and not acts_on(watch, "demo", "trade") and not acts_on(gated, "paper", "all")
    assert acts_on(watch, "paper", "all") and acts_on(watch, "demo", "all") and not acts_on(watch, "live", "all")


# ---------------------------------------------------------------------------- audit
async def test_the_audit_masks_secrets_and_keys_named_like_secrets(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.open()
    try:
        auditor = Auditor(store, "demo", secrets=("supersecretvalue",))
        await auditor.record("x", note="the key supersecretvalue leaked?", api_key="abc", nested={"secret": "s3"})
        (entry,) = await store.audit_entries()
        assert "supersecretvalue" not in entry.details and entry.data["api_key"] == "***"
        assert entry.data["nested"]["secret"] == "***"
    finally:
        await store.close()


# ---------------------------------------------------------------------------- REST against the fake
@pytest.fixture
async def fake() -> AsyncIterator[FakeBinanceTrading]:
    async with FakeBinanceTrading() as f:
        yield f


def rest_for(fake: FakeBinanceTrading, signer: Any = None) -> BinanceTradeRest:
    class Clock:
        def now_ms(self) -> int:
            return fake.now_ms()

        async def resync(self) -> None:
            return None

    return BinanceTradeRest(fake.rest_url, fake.api_key, signer or HmacSigner(fake.api_secret), Clock())


async def test_a_wrong_secret_is_refused_with_minus_1022_and_the_old_endpoint_with_minus_4120(fake: FakeBinanceTrading) -> None:
    bad = rest_for(fake, HmacSigner("not-the-secret"))
    with pytest.raises(ExchangeError) as e:
        await bad.signed("GET", "/fapi/v3/account")
    assert e.value.code == -1022
    good = rest_for(fake)
    with pytest.raises(ExchangeError) as e:
        await good.signed("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                                                     "stopPrice": "100", "closePosition": "true"}, order=True)
    assert e.value.code == -4120
    await bad.close()
    await good.close()


async def test_ed25519_requests_are_accepted_by_an_ed25519_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    async with FakeBinanceTrading(ed25519_public_key=key.public_key()) as f:
        rest = rest_for(f, Ed25519Signer(key))
        account = await BinanceFuturesExchange(rest).account()
        assert account.wallet_balance == 10_000.0
        await rest.close()


def test_the_configuration_contract_for_trading_modes(tmp_path: Path) -> None:
    keys = {"BINANCE_API_KEY": "k" * 12, "BINANCE_API_SECRET": "s" * 12}
    assert Config.from_env({}).trading_mode == "off"
    c = Config.from_env({"ENABLE_TRADING": "true", **keys}).validate()
    assert c.trading_mode == "demo" and c.trade_rest_url == "https://demo-fapi.binance.com"
    assert c.trade_ws_url == "wss://fstream.binancefuture.com/private"
    t = Config.from_env({"TRADING_MODE": "demo", "TRADING_DEMO_VENUE": "testnet", **keys}).validate()
    assert t.trade_rest_url == "https://testnet.binancefuture.com"
    live = Config.from_env({"ENABLE_TRADING": "true", "BINANCE_TESTNET": "false", "ENABLE_LIVE_TRADING": "true",
                            **keys}).validate()
    assert live.trading_mode == "live" and live.trade_rest_url == "https://fapi.binance.com"
    assert live.trade_ws_url == "wss://fstream.binance.com/private" and "REAL MONEY" in live.trading_words
    no_second_switch = Config.from_env({"ENABLE_TRADING": "true", "BINANCE_TESTNET": "false", **keys})
    assert any("ENABLE_LIVE_TRADING=true" in p for p in no_second_switch.problems)
    assert any("TRADING_ACT_ON=all is refused in live" in p for p in Config.from_env(
        {"ENABLE_TRADING": "true", "BINANCE_TESTNET": "false", "ENABLE_LIVE_TRADING": "true", "TRADING_ACT_ON": "all",
         **keys}).problems)
    assert Config.from_env({"TRADING_MODE": "paper"}).validate().trading_mode == "paper"  # no keys needed
    assert any("BINANCE_API_KEY" in p for p in Config.from_env({"TRADING_MODE": "demo"}).problems)
    over = Config.from_env({"TRADING_MODE": "demo", "BINANCE_TRADE_REST_URL": "http://127.0.0.1:9/",
                            "BINANCE_TRADE_WS_URL": "ws://127.0.0.1:9/private", **keys}).validate()
    assert (over.trade_rest_url, over.trade_ws_url) == ("http://127.0.0.1:9", "ws://127.0.0.1:9/private")
    bad = Config.from_env({"TRADING_MODE": "yolo", "MARGIN_TYPE": "x", "DAILY_LOSS_LIMIT_PCT": "0",
                           "BINANCE_PRIVATE_KEY_PATH": str(tmp_path / "missing.pem")}).problems
    for name in ("TRADING_MODE", "MARGIN_TYPE", "DAILY_LOSS_LIMIT_PCT", "BINANCE_PRIVATE_KEY_PATH"):
        assert any(p.startswith(name + "=") for p in bad), name
    assert "s" * 12 not in repr(c.describe())


def test_off_builds_no_trader_at_all() -> None:
    assert build_trader(Config.from_env({"BINANCE_API_KEY": "k" * 12, "BINANCE_API_SECRET": "s" * 12}), object(),
                        None) is None  # type: ignore[arg-type]
