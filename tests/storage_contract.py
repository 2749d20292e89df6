"""The shared Store contract: one suite every storage backend must pass (src/storage/base.py).

How a backend uses it (see tests/test_storage_sqlite.py)::

    from tests.storage_contract import StoreContract

    class TestMyStoreContract(StoreContract):
        @pytest.fixture
        async def store(self, ...):          # an OPENED store over EMPTY tables
            s = MyStore(...); await s.open()
            yield s
            await s.close()

Rules the suite checks (and nothing backend-specific): idempotent upserts on the natural keys,
read ordering/limit/range semantics, signal dedup (first row kept), outbox and outcome queries,
pattern statistics on a known data set, stream-quality round trip, ping/open idempotence,
concurrent overlapping writes, and exact round trips of Candle and Signal (hypothesis). Exact round
trip means: floats come back bit-equal, ``features`` keep their order, ``generated_at`` comes back
as the same ISO text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.analysis.timeframes import interval_ms
from src.analysis.types import SIGNAL_KINDS, Candle, Evidence, Signal, SignalKind, ms_to_iso, signal_id
from src.storage.base import Delivery, GateSeed, LiveTrack, SignalOutcome, Store, StreamQuality

T0 = 1_700_000_000_000 - (1_700_000_000_000 % 3_600_000)  # an hour boundary (2023-11-14T22:00Z)
MIN = 60_000
WATCH: tuple[SignalKind, ...] = ("watch",)
GATED: tuple[SignalKind, ...] = ("gated",)


def make_candle(symbol: str = "BTCUSDT", timeframe: str = "1m", i: int = 0, price: float = 100.0,
                volume: float = 10.0) -> Candle:
    """The i-th candle of a stream starting at T0, with prices around ``price``."""
    step = interval_ms(timeframe)
    o = T0 + i * step
    return Candle(symbol=symbol, timeframe=timeframe, open_time_ms=o, close_time_ms=o + step - 1, open=price,
                  high=price * 1.01, low=price * 0.99, close=price * 1.005, volume=volume, quote_volume=volume * price,
                  trades=7 + i, taker_buy_volume=volume / 2, taker_buy_quote_volume=volume * price / 2)


def make_evidence(p_win: float = 0.46, expected_r: float = 0.05, *, live_n: int = 0) -> Evidence:
    return Evidence(p_win=p_win, expected_r=expected_r, expected_r_lo=expected_r - 0.2, expected_r_hi=expected_r + 0.2,
                    interval=0.8, model_version="test-1", backtest_n=120, backtest_mean_r=expected_r,
                    backtest_ci=(expected_r - 0.3, expected_r + 0.3), live_n=live_n,
                    live_mean_r=None if live_n == 0 else 0.1)


def make_signal(symbol: str = "BTCUSDT", timeframe: str = "1h", candle_time_ms: int = T0, pattern: str = "spring",
                direction: str = "LONG", confidence: float = 0.8, *, kind: str = "trade", gate_reason: str = "",
                structure_id: str = "", evidence: Evidence | None = None) -> Signal:
    sid = signal_id(symbol, timeframe, candle_time_ms, pattern, direction)
    sign = 1 if direction == "LONG" else -1
    return Signal(
        id=sid, symbol=symbol, timeframe=timeframe, pattern=pattern, direction=direction,  # type: ignore[arg-type]
        confidence=confidence, raw_confidence=confidence - 0.05, entry=100.0, stop_loss=100.0 - sign * 2.0,
        take_profits=(100.0 + sign * 3.0, 100.0 + sign * 6.0), candle_time_ms=candle_time_ms,
        generated_at=ms_to_iso(candle_time_ms + interval_ms(timeframe) - 1),
        reasons=("selling climax at 98.1", "spring below support, volume 2.1x"), analyzer_version="wyckoff-1",
        config_hash="abc123", features=(("volume_ratio", 2.1), ("close_position", 0.8)),
        kind=kind, gate_reason=gate_reason, structure_id=structure_id, evidence=evidence,  # type: ignore[arg-type]
    )


def make_outcome(sig: Signal, outcome: str, r: float) -> SignalOutcome:
    return SignalOutcome(
        signal_id=sig.id, symbol=sig.symbol, timeframe=sig.timeframe, pattern=sig.pattern, direction=sig.direction,
        outcome=outcome,  # type: ignore[arg-type]
        entry_time_ms=sig.candle_time_ms + 3_600_000, entry_price=sig.entry, exit_time_ms=sig.candle_time_ms + 7_200_000,
        exit_price=sig.entry + r * sig.risk, r_multiple=r, mfe_r=max(r, 0.0) + 0.5, mae_r=0.25, fees=0.08, bars_held=3,
        confidence=sig.confidence, resolved_at_ms=sig.candle_time_ms + 7_200_000,
    )


def delivery(sig: Signal, destination: str, status: str, *, attempts: int = 1, message_id: str | None = None,
             error: str | None = None, at: int = T0) -> Delivery:
    return Delivery(signal_id=sig.id, destination=destination, status=status,  # type: ignore[arg-type]
                    message_id=message_id, attempts=attempts, last_error=error, updated_at_ms=at)


# ---------------------------------------------------------------------------- hypothesis strategies
_TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "1d")
_price = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False, allow_infinity=False)
_volume = st.floats(min_value=0.0, max_value=1e13, allow_nan=False, allow_infinity=False)
# Postgres text cannot hold NUL; surrogates are not valid UTF-8
_text = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=60)


@st.composite
def candles(draw: Any) -> Candle:
    tf = draw(st.sampled_from(_TIMEFRAMES))
    step = interval_ms(tf)
    open_time = draw(st.integers(min_value=0, max_value=4_000_000_000_000 // step)) * step
    p = sorted(draw(st.lists(_price, min_size=4, max_size=4)))
    o, c = draw(st.permutations([p[1], p[2]]))
    return Candle(
        symbol=draw(st.from_regex(r"[A-Z0-9]{1,10}USDT", fullmatch=True)), timeframe=tf, open_time_ms=open_time,
        close_time_ms=open_time + step - 1, open=o, high=p[3], low=p[0], close=c, volume=draw(_volume),
        quote_volume=draw(_volume), trades=draw(st.integers(min_value=0, max_value=2**31 - 1)),
        taker_buy_volume=draw(_volume), taker_buy_quote_volume=draw(_volume),
    )


@st.composite
def signals(draw: Any) -> Signal:
    tf = draw(st.sampled_from(_TIMEFRAMES))
    candle_time = draw(st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000))  # 2000..2100
    unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
    feats = draw(st.dictionaries(st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
                                 st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=6))
    return Signal(
        id=uuid.uuid4().hex[:24],  # unique per example: save_signal keeps the FIRST row of an id
        symbol=draw(st.from_regex(r"[A-Z0-9]{1,10}USDT", fullmatch=True)), timeframe=tf,
        pattern=draw(st.from_regex(r"[a-z][a-z_0-9]{0,30}", fullmatch=True)),
        direction=draw(st.sampled_from(("LONG", "SHORT"))), confidence=draw(unit), raw_confidence=draw(unit),
        entry=draw(_price), stop_loss=draw(_price), take_profits=tuple(draw(st.lists(_price, max_size=4))),
        candle_time_ms=candle_time, generated_at=ms_to_iso(candle_time + interval_ms(tf) - 1),
        reasons=tuple(draw(st.lists(_text, max_size=5))), analyzer_version=draw(_text), config_hash=draw(_text),
        features=tuple(feats.items()), kind=draw(st.sampled_from(SIGNAL_KINDS)),
        gate_reason=draw(st.sampled_from(("", "no_edge", "cooldown", "duplicate_structure"))),
        structure_id=draw(st.from_regex(r"[0-9a-f]{0,16}", fullmatch=True)), evidence=draw(st.none() | evidences()),
    )


@st.composite
def evidences(draw: Any) -> Evidence:
    unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
    r = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False)
    lo, mid, hi = sorted(draw(st.lists(r, min_size=3, max_size=3)))
    ci = draw(st.none() | st.tuples(r, r).map(lambda t: (min(t), max(t))))
    return Evidence(
        p_win=draw(unit), expected_r=mid, expected_r_lo=lo, expected_r_hi=hi, interval=draw(unit),
        model_version=draw(_text), backtest_n=draw(st.integers(min_value=0, max_value=10**6)),
        backtest_mean_r=draw(st.none() | r), backtest_ci=ci, live_n=draw(st.integers(min_value=0, max_value=10**6)),
        live_mean_r=draw(st.none() | r),
    )


# function_scoped_fixture: one store serves all examples of a test (keys are unique per example);
# differing_executors: every backend subclass runs the same inherited test method, by design
_hyp = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])


class StoreContract:
    """Base class of the contract tests; subclasses provide the ``store`` fixture (opened, empty)."""

    # ------------------------------------------------------------------ lifecycle
    async def test_store_satisfies_the_protocol_and_has_a_name(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.name, str) and store.name

    async def test_ping_answers_true_when_open(self, store: Store) -> None:
        assert await store.ping() is True

    async def test_open_twice_is_harmless_and_keeps_data(self, store: Store) -> None:
        await store.upsert_candles([make_candle(i=0)])
        await store.open()
        assert await store.ping() is True
        assert len(await store.load_candles("BTCUSDT", "1m")) == 1

    # ------------------------------------------------------------------ candles
    async def test_same_candle_twice_is_stored_once(self, store: Store) -> None:
        c = make_candle(i=3)
        await store.upsert_candles([c])
        await store.upsert_candles([c])
        await store.upsert_candles([c, c])
        assert await store.load_candles("BTCUSDT", "1m") == [c]

    async def test_later_write_of_same_candle_replaces_values(self, store: Store) -> None:
        first = make_candle(i=1, price=100.0, volume=5.0)
        second = make_candle(i=1, price=200.0, volume=9.0)
        await store.upsert_candles([first])
        await store.upsert_candles([second])
        assert await store.load_candles("BTCUSDT", "1m") == [second]

    async def test_empty_candle_batch_is_a_no_op(self, store: Store) -> None:
        await store.upsert_candles([])
        assert await store.load_candles("BTCUSDT", "1m") == []
        assert await store.last_open_time("BTCUSDT", "1m") is None

    async def test_a_candle_the_store_cannot_hold_is_refused_alone_never_the_batch(self, store: Store) -> None:
        # values no 64-bit column or timestamp can hold: refused one by one, counted; the rest of the batch lands
        good = [make_candle(i=0), make_candle("ETHUSDT", i=1), make_candle("SOLUSDT", i=2)]
        unstorable = [dataclasses.replace(make_candle("ETHUSDT", i=3), trades=2**63),
                      dataclasses.replace(make_candle("XRPUSDT", i=4), open_time_ms=2**60, close_time_ms=2**60 + 59_999)]
        before = getattr(store, "rejected_candles", 0)
        await store.upsert_candles([good[0], unstorable[0], good[1], unstorable[1], good[2]])
        assert await store.load_candles("BTCUSDT", "1m") == [good[0]]
        assert await store.load_candles("ETHUSDT", "1m") == [good[1]]
        assert await store.load_candles("SOLUSDT", "1m") == [good[2]]
        assert await store.load_candles("XRPUSDT", "1m") == []
        assert getattr(store, "rejected_candles", 0) - before == 2

    async def test_load_candles_returns_ascending_within_inclusive_range(self, store: Store) -> None:
        cs = [make_candle(i=i, price=100.0 + i) for i in range(10)]
        await store.upsert_candles(list(reversed(cs)))
        assert await store.load_candles("BTCUSDT", "1m") == cs
        got = await store.load_candles("BTCUSDT", "1m", start_ms=cs[2].open_time_ms, end_ms=cs[5].open_time_ms)
        assert got == cs[2:6]
        assert await store.load_candles("BTCUSDT", "1m", start_ms=cs[7].open_time_ms) == cs[7:]
        assert await store.load_candles("BTCUSDT", "1m", end_ms=cs[1].open_time_ms) == cs[:2]
        # bounds between two open times
        got = await store.load_candles("BTCUSDT", "1m", start_ms=cs[2].open_time_ms + 1, end_ms=cs[4].open_time_ms - 1)
        assert got == cs[3:4]
        assert await store.load_candles("BTCUSDT", "1m", start_ms=cs[9].open_time_ms + 1) == []

    async def test_load_candles_with_limit_returns_newest_in_ascending_order(self, store: Store) -> None:
        cs = [make_candle(i=i, price=100.0 + i) for i in range(10)]
        await store.upsert_candles(cs)
        assert await store.load_candles("BTCUSDT", "1m", limit=3) == cs[7:]
        assert await store.load_candles("BTCUSDT", "1m", limit=50) == cs
        assert await store.load_candles("BTCUSDT", "1m", end_ms=cs[5].open_time_ms, limit=2) == cs[4:6]
        assert await store.load_candles("BTCUSDT", "1m", start_ms=cs[1].open_time_ms, end_ms=cs[8].open_time_ms,
                                        limit=4) == cs[5:9]

    async def test_load_candles_keeps_streams_apart(self, store: Store) -> None:
        btc1 = [make_candle("BTCUSDT", "1m", i) for i in range(3)]
        btc5 = [make_candle("BTCUSDT", "5m", i) for i in range(2)]
        eth1 = [make_candle("ETHUSDT", "1m", i, price=2000.0) for i in range(4)]
        await store.upsert_candles(btc1 + btc5 + eth1)
        assert await store.load_candles("BTCUSDT", "1m") == btc1
        assert await store.load_candles("BTCUSDT", "5m") == btc5
        assert await store.load_candles("ETHUSDT", "1m") == eth1
        assert await store.load_candles("SOLUSDT", "1m") == []

    async def test_last_open_time_is_newest_open_time_or_none(self, store: Store) -> None:
        assert await store.last_open_time("BTCUSDT", "1m") is None
        cs = [make_candle(i=i) for i in (4, 1, 9, 2)]
        await store.upsert_candles(cs)
        await store.upsert_candles([make_candle("ETHUSDT", "1m", 20)])
        assert await store.last_open_time("BTCUSDT", "1m") == make_candle(i=9).open_time_ms
        assert await store.last_open_time("BTCUSDT", "5m") is None

    async def test_prune_removes_only_older_candles_and_counts_them(self, store: Store) -> None:
        cs = [make_candle(i=i) for i in range(10)] + [make_candle("ETHUSDT", "1h", i) for i in range(3)]
        await store.upsert_candles(cs)
        cutoff = make_candle(i=6).open_time_ms  # BTC 0..5 older; ETH 1h i=0 at T0 is older too
        removed = await store.prune_candles(cutoff)
        assert removed == 7
        assert [c.open_time_ms for c in await store.load_candles("BTCUSDT", "1m")] == [
            make_candle(i=i).open_time_ms for i in range(6, 10)
        ]
        assert len(await store.load_candles("ETHUSDT", "1h")) == 2
        assert await store.prune_candles(cutoff) == 0

    # ------------------------------------------------------------------ analysis watermark (issue 11)
    async def test_commit_analysis_stores_signals_and_moves_each_streams_watermark_forward_only(self, store: Store) -> None:
        h = 3_600_000
        assert await store.analysed_up_to("BTCUSDT", "1h") is None
        a, b = make_signal("BTCUSDT", "1h", T0, "spring"), make_signal("BTCUSDT", "1h", T0, "sos")
        c = make_signal("ETHUSDT", "4h", T0 + h, "utad", "SHORT")
        await store.commit_analysis([a, b, c], {("BTCUSDT", "1h"): T0 + 2 * h, ("ETHUSDT", "4h"): T0 + h})
        assert {s.id for s in await store.recent_signals(limit=10)} == {a.id, b.id, c.id}
        assert await store.get_signal(a.id) == a
        assert await store.analysed_up_to("BTCUSDT", "1h") == T0 + 2 * h
        assert await store.analysed_up_to("ETHUSDT", "4h") == T0 + h
        # an older watermark never moves it back; a signal committed twice keeps its first row
        changed = Signal.from_dict({**a.to_dict(), "confidence": 0.11})
        await store.commit_analysis([changed], {("BTCUSDT", "1h"): T0})
        assert await store.analysed_up_to("BTCUSDT", "1h") == T0 + 2 * h
        assert await store.get_signal(a.id) == a
        # a watermark without signals (a candle that emitted nothing)
        await store.commit_analysis([], {("SOLUSDT", "15m"): T0 + 5 * h})
        assert await store.analysed_up_to("SOLUSDT", "15m") == T0 + 5 * h
        seed = await store.gate_seed(structure_window_ms=10**12)
        assert seed.judged_until_ms == {("BTCUSDT", "1h"): T0, ("ETHUSDT", "4h"): T0 + h}

    async def test_drop_candles_after_removes_a_streams_newer_candles_and_moves_its_watermark_back(
            self, store: Store) -> None:
        cs = [make_candle(i=i) for i in range(10)]
        other = [make_candle("ETHUSDT", i=i) for i in range(10)]
        await store.upsert_candles(cs + other)
        await store.commit_analysis([], {("BTCUSDT", "1m"): cs[9].open_time_ms, ("ETHUSDT", "1m"): other[9].open_time_ms})
        assert await store.drop_candles_after("BTCUSDT", "1m", cs[6].open_time_ms) == 3
        assert await store.load_candles("BTCUSDT", "1m") == cs[:7]
        assert await store.analysed_up_to("BTCUSDT", "1m") == cs[6].open_time_ms
        assert await store.load_candles("ETHUSDT", "1m") == other  # other streams untouched
        assert await store.analysed_up_to("ETHUSDT", "1m") == other[9].open_time_ms
        assert await store.drop_candles_after("BTCUSDT", "1m", cs[6].open_time_ms) == 0

    # ------------------------------------------------------------------ signals
    async def test_save_signal_reports_new_then_existing_and_keeps_first_row(self, store: Store) -> None:
        s = make_signal()
        assert await store.save_signal(s) is True
        changed = Signal.from_dict({**s.to_dict(), "confidence": 0.99})
        assert await store.save_signal(changed) is False
        assert await store.get_signal(s.id) == s

    async def test_get_signal_of_unknown_id_is_none(self, store: Store) -> None:
        assert await store.get_signal("0" * 24) is None

    async def test_recent_signals_are_newest_first_with_filters_and_limit(self, store: Store) -> None:
        h = 3_600_000
        a = make_signal("BTCUSDT", "1h", T0, "spring")
        b = make_signal("BTCUSDT", "1h", T0 + h, "spring")
        c = make_signal("BTCUSDT", "4h", T0 + 2 * h, "utad", "SHORT")
        d = make_signal("ETHUSDT", "1h", T0 + 3 * h, "wave3")
        e = make_signal("ETHUSDT", "1h", T0 + 3 * h, "spring")  # same candle time as d: tie broken by id, desc
        for s in (c, a, e, b, d):
            assert await store.save_signal(s)
        tied = sorted([d, e], key=lambda s: s.id, reverse=True)
        assert await store.recent_signals() == [*tied, c, b, a]
        assert await store.recent_signals(limit=2) == tied
        assert await store.recent_signals(symbol="BTCUSDT") == [c, b, a]
        assert await store.recent_signals(symbol="BTCUSDT", timeframe="1h") == [b, a]
        assert await store.recent_signals(timeframe="1h", limit=3) == [*tied, b]
        assert await store.recent_signals(symbol="SOLUSDT") == []

    async def test_recent_signals_filter_by_kind(self, store: Store) -> None:
        h = 3_600_000
        trade = make_signal(candle_time_ms=T0, kind="trade", evidence=make_evidence())
        watch = make_signal(candle_time_ms=T0 + h, kind="watch", gate_reason="no_edge", evidence=make_evidence())
        gated = make_signal(candle_time_ms=T0 + 2 * h, kind="gated", gate_reason="cooldown", evidence=make_evidence())
        for s in (trade, watch, gated):
            await store.save_signal(s)
        assert await store.recent_signals() == [gated, watch, trade]
        assert await store.recent_signals(kinds=("trade", "watch")) == [watch, trade]
        assert await store.recent_signals(kinds=GATED, symbol="BTCUSDT", timeframe="1h") == [gated]
        assert await store.recent_signals(kinds=()) == []

    async def test_gate_seed_is_empty_for_an_empty_store(self, store: Store) -> None:
        assert await store.gate_seed(structure_window_ms=10**12) == GateSeed({}, {})

    async def test_gate_seed_remembers_the_newest_emission_per_stream_and_direction_ignoring_gated(self, store: Store) -> None:
        h = 3_600_000
        rows = [
            make_signal("BTCUSDT", "1h", T0, "spring", "LONG", kind="trade"),
            make_signal("BTCUSDT", "1h", T0 + 5 * h, "wave3", "LONG", kind="watch", gate_reason="no_edge"),
            make_signal("BTCUSDT", "1h", T0 + 9 * h, "wave3", "LONG", kind="gated", gate_reason="cooldown"),
            make_signal("BTCUSDT", "1h", T0 + 2 * h, "utad", "SHORT", kind="trade"),
            make_signal("BTCUSDT", "4h", T0 + 8 * h, "spring", "LONG", kind="watch", gate_reason="no_edge"),
            make_signal("ETHUSDT", "1h", T0 + 3 * h, "wave3", "SHORT", kind="gated", gate_reason="rr_below_min"),
        ]
        for s in rows:
            await store.save_signal(s)
        seed = await store.gate_seed(structure_window_ms=10**12)
        assert seed.last_emitted_ms == {
            ("BTCUSDT", "1h", "LONG"): T0 + 5 * h, ("BTCUSDT", "1h", "SHORT"): T0 + 2 * h, ("BTCUSDT", "4h", "LONG"): T0 + 8 * h,
        }
        # a watch note never holds back a trade call: the newest trade call is remembered on its own
        assert seed.last_trade_ms == {("BTCUSDT", "1h", "LONG"): T0, ("BTCUSDT", "1h", "SHORT"): T0 + 2 * h}
        # every stored candidate marks its candle as judged, gated ones too
        assert seed.judged_until_ms == {("BTCUSDT", "1h"): T0 + 9 * h, ("BTCUSDT", "4h"): T0 + 8 * h,
                                        ("ETHUSDT", "1h"): T0 + 3 * h}

    async def test_gate_seed_keeps_the_best_kind_per_recent_structure(self, store: Store) -> None:
        h = 3_600_000
        rows = [
            make_signal(candle_time_ms=T0, pattern="old", kind="trade", structure_id="s-old"),
            make_signal(candle_time_ms=T0 + 10 * h, pattern="a", kind="watch", gate_reason="no_edge", structure_id="s1"),
            make_signal(candle_time_ms=T0 + 11 * h, pattern="b", kind="trade", structure_id="s1"),
            make_signal(candle_time_ms=T0 + 12 * h, pattern="c", kind="watch", gate_reason="no_edge", structure_id="s2"),
            make_signal(candle_time_ms=T0 + 13 * h, pattern="d", kind="gated", gate_reason="duplicate_structure",
                        structure_id="s3"),
            make_signal(candle_time_ms=T0 + 14 * h, pattern="e", kind="trade", structure_id=""),
        ]
        for s in rows:
            await store.save_signal(s)
        # the newest emission is at T0 + 14h; a 5 h window reaches back to T0 + 9h
        seed = await store.gate_seed(structure_window_ms=5 * h)
        assert seed.structures == {"s1": "trade", "s2": "watch"}
        assert (await store.gate_seed(structure_window_ms=20 * h)).structures == {"s-old": "trade", "s1": "trade",
                                                                                   "s2": "watch"}

    # ------------------------------------------------------------------ outbox
    async def test_pending_deliveries_exclude_sent_and_skipped_oldest_first(self, store: Store) -> None:
        h = 3_600_000
        sigs = [make_signal("BTCUSDT", "1h", T0 + i * h) for i in range(5)]
        for s in reversed(sigs):
            await store.save_signal(s)
        dest = "discord:123"
        assert await store.pending_deliveries(dest) == sigs
        await store.record_delivery(delivery(sigs[0], dest, "sent", message_id="m0"))
        await store.record_delivery(delivery(sigs[1], dest, "skipped"))
        await store.record_delivery(delivery(sigs[2], dest, "failed", error="HTTP 503"))
        await store.record_delivery(delivery(sigs[3], dest, "pending", attempts=0))
        await store.record_delivery(delivery(sigs[4], "webhook", "sent"))  # another destination
        assert await store.pending_deliveries(dest) == sigs[2:]
        assert await store.pending_deliveries(dest, limit=2) == sigs[2:4]
        assert await store.pending_deliveries("webhook") == sigs[:4]

    async def test_pending_deliveries_return_only_the_kinds_asked_for_and_never_gated(self, store: Store) -> None:
        h = 3_600_000
        trade = make_signal(candle_time_ms=T0, pattern="a", kind="trade", evidence=make_evidence())
        watch = make_signal(candle_time_ms=T0 + h, pattern="b", kind="watch", gate_reason="no_edge")
        gated = make_signal(candle_time_ms=T0 + 2 * h, pattern="c", kind="gated", gate_reason="cooldown")
        for s in (gated, watch, trade):
            await store.save_signal(s)
        assert await store.pending_deliveries("discord:1") == [trade]  # trade calls only by default
        assert await store.pending_deliveries("discord:1", kinds=("trade", "watch")) == [trade, watch]
        assert await store.pending_deliveries("discord:2", kinds=WATCH) == [watch]
        assert await store.pending_deliveries("discord:1", kinds=("trade", "watch", "gated")) == [trade, watch]
        assert await store.pending_deliveries("discord:1", kinds=GATED) == []

    async def test_record_delivery_upserts_and_get_delivery_reads_it_back(self, store: Store) -> None:
        s = make_signal()
        await store.save_signal(s)
        assert await store.get_delivery(s.id, "discord:1") is None
        failed = delivery(s, "discord:1", "failed", attempts=1, error="timeout", at=T0 + 1000)
        await store.record_delivery(failed)
        assert await store.get_delivery(s.id, "discord:1") == failed
        sent = delivery(s, "discord:1", "sent", attempts=2, message_id="1234567890123456789", at=T0 + 5000)
        await store.record_delivery(sent)
        assert await store.get_delivery(s.id, "discord:1") == sent
        assert await store.get_delivery(s.id, "webhook") is None
        assert await store.pending_deliveries("discord:1") == []

    # ------------------------------------------------------------------ outcomes
    async def test_open_signals_exclude_resolved_ones_oldest_first(self, store: Store) -> None:
        h = 3_600_000
        sigs = [make_signal("BTCUSDT", "1h", T0 + i * h) for i in range(4)]
        for s in reversed(sigs):
            await store.save_signal(s)
        assert await store.open_signals() == sigs
        await store.save_outcome(make_outcome(sigs[1], "WIN", 2.0))
        await store.save_outcome(make_outcome(sigs[3], "EXPIRED", 0.1))
        assert await store.open_signals() == [sigs[0], sigs[2]]

    async def test_save_outcome_upserts_and_get_outcome_round_trips(self, store: Store) -> None:
        s = make_signal()
        await store.save_signal(s)
        assert await store.get_outcome(s.id) is None
        first = make_outcome(s, "EXPIRED", 0.3)
        await store.save_outcome(first)
        assert await store.get_outcome(s.id) == first
        second = make_outcome(s, "WIN", 1.4)
        await store.save_outcome(second)
        assert await store.get_outcome(s.id) == second

    async def test_open_signals_include_every_kind(self, store: Store) -> None:
        h = 3_600_000
        rows = [make_signal(candle_time_ms=T0 + i * h, kind=k, gate_reason="" if k == "trade" else "x")
                for i, k in enumerate(SIGNAL_KINDS)]
        for s in rows:
            await store.save_signal(s)
        assert await store.open_signals() == rows

    async def test_live_track_sums_graded_outcomes_per_cell_and_population(self, store: Store) -> None:
        h = 3_600_000
        ev = make_evidence()
        spring = [
            make_signal("BTCUSDT", "1h", T0, "spring", kind="trade", evidence=ev),                          # +2.0
            make_signal("BTCUSDT", "1h", T0 + h, "spring", kind="watch", gate_reason="no_edge", evidence=ev),  # -1.0
            make_signal("ETHUSDT", "1h", T0 + 2 * h, "spring", kind="gated", gate_reason="cooldown", evidence=ev),  # +0.5
            make_signal("ETHUSDT", "1h", T0 + 3 * h, "spring", kind="gated", gate_reason="duplicate_structure",
                        evidence=ev),                                                                         # -1.0
            make_signal("BTCUSDT", "1h", T0 + 4 * h, "spring", kind="trade"),  # no evidence: never tracked; open
        ]
        wave = make_signal("BTCUSDT", "4h", T0, "wave3", "SHORT", kind="trade", evidence=ev)  # open
        for s in (*spring, wave):
            await store.save_signal(s)
        for sig, r in zip(spring[:4], (2.0, -1.0, 0.5, -1.0), strict=True):
            await store.save_outcome(make_outcome(sig, "WIN" if r > 0 else "LOSS", r))
        tracked = {"", "no_edge", "cooldown"}
        cells = {(t.pattern, t.timeframe, t.population): t for t in await store.live_track(tracked)}
        assert set(cells) == {("spring", "1h", "trade"), ("spring", "1h", "watch"), ("spring", "1h", "tracked"),
                              ("wave3", "4h", "trade"), ("wave3", "4h", "tracked")}
        t = cells[("spring", "1h", "trade")]
        assert (t.candidates, t.graded, t.wins) == (2, 1, 1) and t.sum_r == pytest.approx(2.0)
        w = cells[("spring", "1h", "watch")]
        assert (w.candidates, w.graded, w.wins) == (1, 1, 0) and w.mean_r == pytest.approx(-1.0)
        k = cells[("spring", "1h", "tracked")]
        assert (k.candidates, k.graded, k.wins) == (3, 3, 2)
        assert k.sum_r == pytest.approx(1.5) and k.sum_r2 == pytest.approx(4.0 + 1.0 + 0.25)
        assert k.mean_r == pytest.approx(0.5) and k.win_rate == pytest.approx(2 / 3)
        assert cells[("wave3", "4h", "tracked")] == LiveTrack("wave3", "4h", "tracked", 1, 0, 0.0, 0.0, 0)
        # filters
        eth = await store.live_track(tracked, symbol="ETHUSDT")
        assert [(c.pattern, c.population, c.candidates, c.graded) for c in eth] == [("spring", "tracked", 1, 1)]
        only = await store.live_track(tracked, timeframe="4h", pattern="wave3")
        assert {c.population for c in only} == {"trade", "tracked"}
        assert await store.live_track(tracked, pattern="nothing") == []
        # no tracked reasons: no tracked population at all
        assert {c.population for c in await store.live_track(())} == {"trade", "watch"}

    async def test_live_track_of_empty_store_is_empty(self, store: Store) -> None:
        assert await store.live_track({""}) == []

    # ------------------------------------------------------------------ stream quality
    async def test_stream_quality_round_trips_and_upserts_per_stream(self, store: Store) -> None:
        assert await store.stream_quality() == []
        a = StreamQuality("BTCUSDT", "1h", T0, 1, 12, 0, 2, T0 + 5)
        b = StreamQuality("ETHUSDT", "15m", None, 0, 0, 3, 0, T0 + 6)
        await store.save_stream_quality([a, b])
        got = sorted(await store.stream_quality(), key=lambda q: (q.symbol, q.timeframe))
        assert got == [a, b]
        a2 = StreamQuality("BTCUSDT", "1h", T0 + 3_600_000, 2, 20, 1, 3, T0 + 99)
        await store.save_stream_quality([a2])
        await store.save_stream_quality([])
        got = sorted(await store.stream_quality(), key=lambda q: (q.symbol, q.timeframe))
        assert got == [a2, b]

    # ------------------------------------------------------------------ concurrency
    async def test_concurrent_overlapping_upserts_leave_no_duplicates(self, store: Store) -> None:
        cs = [make_candle(i=i, price=100.0 + i) for i in range(300)]
        batches = [cs[k : k + 100] for k in range(0, 300, 50)]  # every candle is in two batches
        await asyncio.gather(*(store.upsert_candles(b) for b in batches), *(store.upsert_candles(b) for b in batches))
        assert await store.load_candles("BTCUSDT", "1m") == cs
        sigs = [make_signal("BTCUSDT", "1h", T0 + i * 3_600_000) for i in range(10)]
        results = await asyncio.gather(*(store.save_signal(s) for s in sigs + sigs))
        assert sum(results) == 10
        assert len(await store.recent_signals(limit=100)) == 10

    # ------------------------------------------------------------------ round trips
    @_hyp
    @given(c=candles())
    async def test_any_valid_candle_round_trips_exactly(self, store: Store, c: Candle) -> None:
        await store.upsert_candles([c])
        got = await store.load_candles(c.symbol, c.timeframe, start_ms=c.open_time_ms, end_ms=c.open_time_ms)
        assert got == [c]
        assert await store.last_open_time(c.symbol, c.timeframe) is not None

    @_hyp
    @given(s=signals())
    async def test_any_signal_round_trips_exactly(self, store: Store, s: Signal) -> None:
        assert await store.save_signal(s) is True
        got = await store.get_signal(s.id)
        assert got == s
        assert got is not None and got.features == s.features and got.evidence == s.evidence

    async def test_kind_reason_structure_and_evidence_round_trip_through_every_read(self, store: Store) -> None:
        s = make_signal(kind="watch", gate_reason="no_edge", structure_id="abc123", evidence=make_evidence(live_n=7))
        g = make_signal(candle_time_ms=T0 + 3_600_000, pattern="utad", direction="SHORT", kind="gated",
                        gate_reason="cooldown")
        await store.save_signal(s)
        await store.save_signal(g)
        assert await store.get_signal(s.id) == s
        assert await store.recent_signals(limit=1) == [g]
        assert await store.open_signals() == [s, g]
        assert await store.pending_deliveries("x", kinds=WATCH) == [s]
