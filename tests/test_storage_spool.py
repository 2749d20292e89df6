"""SpoolStore: writes survive a primary outage, replay in order, persist across restarts.

The primary is a real SqliteStore behind a switch that makes every call raise StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.storage.base import Store, StoreUnavailable, StreamQuality
from src.storage.spool import SpoolStore
from src.storage.sqlite_store import SqliteStore
from tests.storage_contract import T0, StoreContract, delivery, make_candle, make_outcome, make_signal

_STORE_METHODS = frozenset(
    name for name in dir(Store) if not name.startswith("_") and name != "name"
)


class SwitchableStore(SqliteStore):
    """A real SQLite store whose every Store call raises StoreUnavailable while ``down`` is True."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.down = False
        self.hang = False  # calls never answer (a black-holed network)
        self.candle_batches: list[int] = []

    def __getattribute__(self, name: str) -> Any:
        if name in _STORE_METHODS and object.__getattribute__(self, "down"):
            async def unavailable(*args: Any, **kwargs: Any) -> Any:
                raise StoreUnavailable(f"test primary is down ({name})")

            return unavailable
        if name in _STORE_METHODS and name != "close" and object.__getattribute__(self, "hang"):
            async def no_answer(*args: Any, **kwargs: Any) -> Any:
                await asyncio.Event().wait()

            return no_answer
        return super().__getattribute__(name)

    async def upsert_candles(self, candles: Any) -> None:
        self.candle_batches.append(len(candles))
        await super().upsert_candles(candles)


async def drained(spool: SpoolStore) -> None:
    """Wait for the background flusher to empty the spool (a generous safety limit, not a timing assertion)."""
    async with asyncio.timeout(10):
        await spool.wait_drained()


@pytest.fixture
async def primary(tmp_path: Path) -> AsyncIterator[SwitchableStore]:
    p = SwitchableStore(tmp_path / "primary.db")
    yield p
    p.down = False
    await p.close()


@pytest.fixture
async def spool(primary: SwitchableStore, tmp_path: Path) -> AsyncIterator[SpoolStore]:
    s = SpoolStore(primary, tmp_path / "spool.db", retry_initial=0.01, retry_max=0.05, close_flush_timeout=2.0)
    await s.open()
    yield s
    primary.down = False
    await s.close()


class TestSpoolStoreContract(StoreContract):
    """With the primary up, the wrapper is a complete, faithful Store."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SpoolStore]:
        s = SpoolStore(SqliteStore(tmp_path / "primary.db"), tmp_path / "spool.db")
        await s.open()
        yield s
        await s.close()


async def test_writes_go_straight_to_an_available_primary(spool: SpoolStore, primary: SwitchableStore) -> None:
    cs = [make_candle(i=i) for i in range(5)]
    await spool.upsert_candles(cs)
    assert spool.depth == 0
    assert await primary.load_candles("BTCUSDT", "1m") == cs
    assert await spool.ping() is True


async def test_writes_during_an_outage_are_spooled_and_replayed_in_order(
    spool: SpoolStore, primary: SwitchableStore
) -> None:
    sig = make_signal()
    await spool.save_signal(make_signal(candle_time_ms=T0 - 3_600_000))  # before the outage
    primary.down = True
    await spool.upsert_candles([make_candle(i=0, price=100.0)])
    assert await spool.save_signal(sig) is True
    await spool.record_delivery(delivery(sig, "discord:1", "failed", error="HTTP 503"))
    await spool.upsert_candles([make_candle(i=0, price=150.0), make_candle(i=1)])  # same key again, newer values
    await spool.record_delivery(delivery(sig, "discord:1", "sent", attempts=2, message_id="42"))
    await spool.save_outcome(make_outcome(sig, "WIN", 2.0))
    await spool.save_stream_quality([StreamQuality("BTCUSDT", "1m", T0, 1, 2, 3, 4, T0)])
    assert spool.depth == 7
    assert spool.primary_up is False
    # reads never pretend: they raise while the primary is down
    with pytest.raises(StoreUnavailable):
        await spool.load_candles("BTCUSDT", "1m")
    with pytest.raises(StoreUnavailable):
        await spool.pending_deliveries("discord:1")
    assert await spool.ping() is False

    primary.down = False
    await drained(spool)
    assert spool.depth == 0
    assert spool.primary_up is True
    assert await spool.load_candles("BTCUSDT", "1m") == [make_candle(i=0, price=150.0), make_candle(i=1)]
    assert await spool.get_signal(sig.id) == sig
    assert await spool.get_delivery(sig.id, "discord:1") == delivery(sig, "discord:1", "sent", attempts=2,
                                                                     message_id="42")
    assert (await spool.get_outcome(sig.id)) == make_outcome(sig, "WIN", 2.0)
    assert await spool.stream_quality() == [StreamQuality("BTCUSDT", "1m", T0, 1, 2, 3, 4, T0)]
    assert spool.replayed_total == 7 and spool.dead_letter_total == 0


async def test_new_writes_queue_behind_the_backlog_even_when_the_primary_is_back(
    primary: SwitchableStore, tmp_path: Path
) -> None:
    # no background flusher: the backlog is still there when the primary returns
    spool = SpoolStore(primary, tmp_path / "spool.db", autoflush=False)
    await spool.open()
    try:
        primary.down = True
        await spool.upsert_candles([make_candle(i=0, price=100.0)])
        primary.down = False
        await spool.upsert_candles([make_candle(i=0, price=200.0)])  # must NOT overtake the spooled write
        assert spool.depth == 2
        assert await primary.load_candles("BTCUSDT", "1m") == []
        assert await spool.flush() == 2
        assert await primary.load_candles("BTCUSDT", "1m") == [make_candle(i=0, price=200.0)]
        await spool.upsert_candles([make_candle(i=1)])
        assert spool.depth == 0
    finally:
        await spool.close()


async def test_consecutive_spooled_candle_writes_replay_as_one_batch(spool: SpoolStore, primary: SwitchableStore) -> None:
    primary.down = True
    for i in range(20):
        await spool.upsert_candles([make_candle(i=2 * i), make_candle(i=2 * i + 1)])
    primary.candle_batches.clear()
    primary.down = False
    await drained(spool)
    assert spool.depth == 0
    assert primary.candle_batches == [40]
    assert len(await primary.load_candles("BTCUSDT", "1m")) == 40


async def test_spool_survives_a_restart_and_is_replayed_first(primary: SwitchableStore, tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    first = SpoolStore(primary, path, retry_initial=0.01, close_flush_timeout=0.5)
    await first.open()
    primary.down = True
    sig = make_signal()
    await first.save_signal(sig)
    await first.upsert_candles([make_candle(i=i) for i in range(3)])
    await first.close()  # the primary is still down: the spool stays on disk
    assert path.is_file()

    primary.down = False
    second = SpoolStore(primary, path, retry_initial=0.01)
    await second.open()
    try:
        assert second.depth == 0  # replayed during open, before any new write
        assert await second.get_signal(sig.id) == sig
        assert len(await second.load_candles("BTCUSDT", "1m")) == 3
    finally:
        await second.close()


async def test_a_primary_down_at_start_does_not_stop_the_bot(primary: SwitchableStore, tmp_path: Path) -> None:
    primary.down = True
    spool = SpoolStore(primary, tmp_path / "spool.db", retry_initial=0.01, retry_max=0.02)
    await spool.open()  # does not raise
    try:
        assert spool.primary_up is False
        await spool.upsert_candles([make_candle()])
        assert spool.depth == 1
        primary.down = False
        await drained(spool)
        assert spool.depth == 0 and spool.primary_up
        assert await spool.load_candles("BTCUSDT", "1m") == [make_candle()]
    finally:
        await spool.close()


async def test_an_entry_the_primary_refuses_is_dead_lettered_and_the_rest_replays(
    spool: SpoolStore, primary: SwitchableStore
) -> None:
    orphan = make_signal(pattern="never_saved")
    primary.down = True
    await spool.upsert_candles([make_candle(i=0)])
    # the primary refuses this permanently (its signal does not exist: foreign key)
    await spool.record_delivery(delivery(orphan, "discord:1", "sent"))
    await spool.upsert_candles([make_candle(i=1)])
    primary.down = False
    await drained(spool)
    assert spool.depth == 0
    assert spool.dead_letter_total == 1
    letters = await spool.dead_letters()
    assert [(op) for _, op, _ in letters] == ["delivery"]
    assert "FOREIGN KEY" in letters[0][2].upper()
    assert len(await primary.load_candles("BTCUSDT", "1m")) == 2


async def test_a_primary_that_stops_answering_is_treated_as_down(primary: SwitchableStore, tmp_path: Path) -> None:
    spool = SpoolStore(primary, tmp_path / "spool.db", write_timeout=0.05, replay_timeout=0.05,
                       retry_initial=0.01, retry_max=0.02)
    await spool.open()
    try:
        primary.hang = True
        await spool.upsert_candles([make_candle(i=0)])  # returns: the write is spooled, not stuck
        assert spool.depth == 1 and spool.primary_up is False
        primary.hang = False
        await drained(spool)
        assert await primary.load_candles("BTCUSDT", "1m") == [make_candle(i=0)]
    finally:
        await spool.close()


async def test_prune_runs_on_the_primary_only(spool: SpoolStore, primary: SwitchableStore) -> None:
    await spool.upsert_candles([make_candle(i=i) for i in range(4)])
    assert await spool.prune_candles(make_candle(i=2).open_time_ms) == 2
    primary.down = True
    with pytest.raises(StoreUnavailable):
        await spool.prune_candles(make_candle(i=4).open_time_ms)
    assert spool.depth == 0


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("candle"), st.integers(0, 1), st.floats(1.0, 1000.0, allow_nan=False)),
        st.tuples(st.just("delivery"), st.sampled_from(["pending", "failed", "sent", "skipped"]), st.integers(0, 9)),
        st.tuples(st.just("down")),
        st.tuples(st.just("up")),
        st.tuples(st.just("flush")),
    ),
    max_size=25,
)


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[tuple[SwitchableStore, SqliteStore, SpoolStore]]:
    """A switchable primary behind a spool without background flusher, and a reference store that gets
    the same writes with no outage. Shared by all examples: each example ends with both in the same state."""
    primary = SwitchableStore(tmp_path / "primary.db")
    reference = SqliteStore(tmp_path / "reference.db")
    spool = SpoolStore(primary, tmp_path / "spool.db", autoflush=False)
    await reference.open()
    await spool.open()
    yield primary, reference, spool
    primary.down = False
    await spool.close()
    await primary.close()
    await reference.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
async def test_any_sequence_of_writes_and_outages_ends_like_the_same_writes_without_outages(
    trio: tuple[SwitchableStore, SqliteStore, SpoolStore], ops: list[tuple[Any, ...]]
) -> None:
    primary, reference, spool = trio
    sig = make_signal()
    primary.down = False
    await spool.save_signal(sig)
    await reference.save_signal(sig)
    for op in ops:
        if op[0] == "candle":
            c = make_candle(i=op[1], price=op[2])
            await spool.upsert_candles([c])
            await reference.upsert_candles([c])
        elif op[0] == "delivery":
            dl = delivery(sig, "discord:1", op[1], attempts=op[2])
            await spool.record_delivery(dl)
            await reference.record_delivery(dl)
        elif op[0] == "down":
            primary.down = True
        elif op[0] == "up":
            primary.down = False
        elif op[0] == "flush":
            with contextlib.suppress(StoreUnavailable):
                await spool.flush()
    primary.down = False
    await spool.flush()
    assert spool.depth == 0
    assert await primary.load_candles("BTCUSDT", "1m") == await reference.load_candles("BTCUSDT", "1m")
    assert await primary.get_delivery(sig.id, "discord:1") == await reference.get_delivery(sig.id, "discord:1")


async def test_a_spooled_signal_with_a_non_finite_feature_is_replayed_not_dead_lettered(
    spool: SpoolStore, primary: SwitchableStore
) -> None:
    # JSON has no NaN: the spool payload carries null, which must read back as NaN like the stores do
    import dataclasses
    import math

    sig = dataclasses.replace(make_signal(), features=(("volume_ratio", math.nan), ("close_position", 0.8)))
    primary.down = True
    assert await spool.save_signal(sig) is True
    primary.down = False
    await drained(spool)
    assert await spool.dead_letters() == []
    got = await primary.get_signal(sig.id)
    assert got is not None and math.isnan(dict(got.features)["volume_ratio"])


async def test_a_write_cancelled_while_it_is_being_spooled_still_counts_and_keeps_its_place(
    spool: SpoolStore, primary: SwitchableStore
) -> None:
    # A caller cancelled (e.g. by a shutdown deadline) while its write is appended to the spool file: the
    # append still commits on the spool thread, so it must be counted, replayed, and stay ahead of later writes
    # (else a later direct write is overtaken by the stale spooled one on the next replay).
    import threading

    sig = make_signal()
    await spool.save_signal(sig)
    gate = threading.Event()
    blocker = asyncio.ensure_future(spool._spool.run(lambda c: gate.wait(10), "test: hold the spool thread"))
    primary.down = True
    write = asyncio.ensure_future(spool.record_delivery(delivery(sig, "discord:1", "failed", error="HTTP 503")))
    for _ in range(20):  # let the write reach its spool append (queued behind the blocker)
        await asyncio.sleep(0)
    write.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await write
    gate.set()
    await blocker
    primary.down = False
    await spool.record_delivery(delivery(sig, "discord:1", "sent", attempts=2, message_id="42"))
    await drained(spool)
    left = await spool._spool.run(lambda c: c.execute("SELECT COUNT(*) FROM spool").fetchone()[0], "test: count")
    assert left == 0 and spool.depth == 0
    assert await primary.get_delivery(sig.id, "discord:1") == delivery(sig, "discord:1", "sent", attempts=2,
                                                                       message_id="42")


async def test_a_primary_whose_open_never_answers_does_not_hold_up_the_start(
    primary: SwitchableStore, tmp_path: Path
) -> None:
    # e.g. a black-holed network to Supabase: its client retries 5 times with a 30 s timeout each
    primary.hang = True
    spool = SpoolStore(primary, tmp_path / "spool.db", open_timeout=0.05, retry_initial=0.01, retry_max=0.02)
    async with asyncio.timeout(5):  # a generous safety limit, not a timing assertion
        await spool.open()
    try:
        assert spool.primary_up is False
        await spool.upsert_candles([make_candle()])
        assert spool.depth == 1
        primary.hang = False
        await drained(spool)
        assert spool.primary_up and await primary.load_candles("BTCUSDT", "1m") == [make_candle()]
    finally:
        await spool.close()


async def test_an_analysis_commit_during_an_outage_is_one_spooled_entry_replayed_whole(
    spool: SpoolStore, primary: SwitchableStore
) -> None:
    a, b = make_signal(pattern="spring"), make_signal(pattern="sos")
    primary.down = True
    await spool.commit_analysis([a, b], {("BTCUSDT", "1h"): T0 + 3_600_000})
    assert spool.depth == 1
    primary.down = False
    await drained(spool)
    assert {s.id for s in await primary.recent_signals()} == {a.id, b.id}
    assert await primary.analysed_up_to("BTCUSDT", "1h") == T0 + 3_600_000
