"""The leader lease on the real Postgres (issue 16): expiry, renewal, epoch fencing of the outbox, and the
SQLite instance lock. Time is the database's (TTLs of a few hundred ms) and an injected monotonic clock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from src.bot.leadership import Leadership
from src.config import shards
from src.storage.base import Delivery, FencedOut, FollowUpDelivery, StoreUnavailable
from src.storage.instance_lock import InstanceLock, InstanceLocked
from src.storage.lease import LeaseError, PostgresLease
from src.storage.postgres_store import PostgresStore
from src.storage.spool import SpoolStore
from tests.fakes.tcp_proxy import TcpProxy
from tests.storage_contract import T0, make_signal
from tests.test_discord_outbox import FakeChannel, FakePoster, sender_for
from tests.test_storage_postgres import drop_schema, new_schema_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[tuple[str, PostgresStore]]:
    schema = new_schema_name()
    store = PostgresStore(postgres_url, schema=schema)
    await store.open()  # applies migration 008 (leader_lease)
    yield schema, store
    await store.close()
    await drop_schema(postgres_url, schema)


def lease(url: str, schema: str, holder: str, ttl_s: float = 0.6, *, margin_s: float = 0.2, op_timeout_s: float = 2.0,
          clock: Callable[[], float] = time.monotonic) -> PostgresLease:
    return PostgresLease(url, holder=holder, ttl_s=ttl_s, margin_s=margin_s, schema=schema, op_timeout_s=op_timeout_s,
                         clock=clock)


async def test_only_one_instance_takes_a_free_lease_and_the_other_takes_it_after_it_expires(
        postgres_url: str, pg: tuple[str, PostgresStore]) -> None:
    schema, _ = pg
    a, b = lease(postgres_url, schema, "a"), lease(postgres_url, schema, "b")
    try:
        got = await asyncio.gather(a.try_acquire(), b.try_acquire())
        assert sorted(got, key=lambda e: e or 0) == [None, 1]  # racing for a free lease: exactly one wins
        leader, other = (a, b) if got[0] == 1 else (b, a)
        assert await other.try_acquire() is None  # held and not expired
        await asyncio.sleep(0.8)  # no renewal: the lease expires (database clock)
        assert await other.try_acquire() == 2  # the take-over bumps the epoch
        assert await leader.renew() is False  # the old leader cannot renew a lost lease...
        assert leader.epoch is None and not leader.acting()
        assert await leader.try_acquire() is None  # ...nor take it back while the new leader holds it
        assert (await other.current())[:2] == (other.holder, 2)  # type: ignore[index]
    finally:
        await a.close()
        await b.close()


async def test_renewal_keeps_the_lease_beyond_its_ttl_and_release_hands_it_over_at_once(
        postgres_url: str, pg: tuple[str, PostgresStore]) -> None:
    schema, _ = pg
    a, b = lease(postgres_url, schema, "a"), lease(postgres_url, schema, "b")
    try:
        assert await a.try_acquire() == 1
        for _ in range(6):  # 1.2 s, twice the TTL, renewed every 0.2 s
            await asyncio.sleep(0.2)
            assert await a.renew() is True
            assert await b.try_acquire() is None
        assert a.epoch == 1
        await a.release()
        assert await b.try_acquire() == 2
    finally:
        await a.close()
        await b.close()


async def test_a_leader_stops_acting_ttl_minus_margin_after_its_last_renewal_started(
        postgres_url: str, pg: tuple[str, PostgresStore]) -> None:
    schema, _ = pg
    now = [100.0]
    a = lease(postgres_url, schema, "a", ttl_s=10.0, margin_s=2.0, clock=lambda: now[0])
    try:
        assert await a.try_acquire() == 1
        now[0] += 7.9
        assert a.acting() and a.lease_age_s() == pytest.approx(7.9)
        now[0] += 0.1  # 8 s = ttl - margin after the acquisition started: no more acting, renewal or not
        assert not a.acting()
        assert await a.renew() is True  # the row is still ours (the DB has not expired it): acting again
        assert a.acting() and a.lease_age_s() == 0.0
    finally:
        await a.close()


async def test_a_stale_leaders_outbox_claim_is_refused_by_the_store_and_the_new_leaders_is_accepted(
        postgres_url: str, pg: tuple[str, PostgresStore]) -> None:
    schema, store = pg
    sig = make_signal()
    await store.save_signal(sig)
    a, b = lease(postgres_url, schema, "a"), lease(postgres_url, schema, "b")
    try:
        e1 = await a.try_acquire()
        await store.record_delivery(Delivery(sig.id, "webhook", "pending", None, 1, "in flight", 1, e1))
        await asyncio.sleep(0.8)
        e2 = await b.try_acquire()
        assert e2 == 2
        # the old leader wakes up and claims again: the fence in the same statement refuses it, nothing changes
        with pytest.raises(FencedOut):
            await store.record_delivery(Delivery(sig.id, "webhook", "pending", None, 2, "in flight", 2, e1))
        with pytest.raises(FencedOut):
            await store.record_delivery(Delivery(sig.id, "webhook", "failed", None, 2, "boom", 2, e1))
        assert (await store.get_delivery(sig.id, "webhook")).attempts == 1  # type: ignore[union-attr]
        with pytest.raises(FencedOut):
            await store.record_follow_up_delivery(FollowUpDelivery(sig.id, "tp1", "webhook", "pending", None, 1,
                                                                   "in flight", 2, e1))
        # a message that exists is recorded whoever posted it (refusing it would only make it post twice)
        await store.record_delivery(Delivery(sig.id, "webhook", "sent", "m1", 2, None, 3, e1))
        await store.record_delivery(Delivery(sig.id, "webhook", "pending", None, 3, "in flight", 4, e2))
        assert (await store.get_delivery(sig.id, "webhook")).attempts == 3  # type: ignore[union-attr]
        # an expired lease fences its own holder too (nobody took over, but it may any moment)
        await asyncio.sleep(0.8)
        with pytest.raises(FencedOut):
            await store.record_delivery(Delivery(sig.id, "webhook", "pending", None, 4, "in flight", 5, e2))
    finally:
        await a.close()
        await b.close()


async def test_a_fenced_claim_is_never_spooled_while_the_database_is_out_of_reach(
        postgres_url: str, pg: tuple[str, PostgresStore], tmp_path: Path) -> None:
    schema, _ = pg
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    url = postgres_url.replace(":5432", f":{proxy.port}")
    spool = SpoolStore(PostgresStore(url, schema=schema, connect_timeout=1.0, command_timeout=1.0),
                       tmp_path / "spool.db", write_timeout=1.0, autoflush=False)
    a = lease(postgres_url, schema, "a", ttl_s=5.0)
    try:
        await spool.open()
        sig = make_signal()
        await spool.save_signal(sig)
        epoch = await a.try_acquire()
        await proxy.cut()
        with pytest.raises(StoreUnavailable):
            await spool.record_delivery(Delivery(sig.id, "webhook", "pending", None, 1, "in flight", 1, epoch))
        await spool.record_delivery(Delivery(sig.id, "webhook", "sent", "m1", 1, None, 2, epoch))  # spooled
        assert spool.depth == 1
    finally:
        await a.close()
        await spool.close()
        await proxy.stop()


async def test_a_black_holed_lease_connection_fails_within_its_deadline(postgres_url: str,
                                                                        pg: tuple[str, PostgresStore]) -> None:
    schema, _ = pg
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    a = lease(postgres_url.replace(":5432", f":{proxy.port}"), schema, "a", op_timeout_s=0.5)
    try:
        assert await a.try_acquire() == 1
        proxy.black_hole()
        with pytest.raises(LeaseError):
            await a.renew()
        assert a.epoch == 1  # kept locally: acting() ends by itself at ttl - margin
    finally:
        await a.close()
        await proxy.stop()


async def test_leadership_steps_down_when_the_lease_is_taken_and_its_fence_refuses_at_once(
        postgres_url: str, pg: tuple[str, PostgresStore]) -> None:
    schema, _ = pg
    promoted: list[int | None] = []
    demoted: list[str] = []

    async def promote(epoch: int | None) -> None:
        promoted.append(epoch)

    a = lease(postgres_url, schema, "a")
    leader = Leadership(a, renew_every_s=0.1, on_promote=promote, on_demote=demoted.append)
    b = lease(postgres_url, schema, "b")
    try:
        leader.start()
        async with asyncio.timeout(10):
            while not promoted:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert leader.role == "leader"
        assert leader.fence() == 1
        # an operator (or a split network) hands the lease to b behind a's back
        conn = await __import__("asyncpg").connect(postgres_url, server_settings={"search_path": schema})
        await conn.execute("UPDATE leader_lease SET expires_at = clock_timestamp()")
        await conn.close()
        assert await b.try_acquire() == 2
        async with asyncio.timeout(10):
            while not demoted:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert str(leader.role) == "follower" and not leader.acting()
        with pytest.raises(FencedOut):
            leader.fence()
    finally:
        await leader.close()
        await b.close()


def test_a_second_bot_on_the_same_sqlite_file_refuses_to_start_and_the_lock_goes_with_the_process(
        tmp_path: Path) -> None:
    db = tmp_path / "wyeli.db"
    first = InstanceLock(db)
    first.acquire()
    try:
        with pytest.raises(InstanceLocked, match="only one instance can run"):
            InstanceLock(db).acquire()
        # another process (as a second `python -m src.bot.main` would be) is refused too
        code = ("import sys; from pathlib import Path; from src.storage.instance_lock import InstanceLock, InstanceLocked\n"
                f"try:\n    InstanceLock(Path({str(db)!r})).acquire()\nexcept InstanceLocked as e:\n"
                "    print(e); sys.exit(7)\n")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
        assert out.returncode == 7 and "DATABASE_URL" in out.stdout
    finally:
        first.release()
    again = InstanceLock(db)
    again.acquire()  # released: the next start takes it
    again.release()


def test_a_symbol_keeps_its_shard_when_others_are_listed_and_the_shards_cover_each_symbol_once() -> None:
    names = [f"SYM{i}USDT" for i in range(500)]
    before = {s: shards.shard_of(s, 4) for s in names}
    listed = ["NEWUSDT", *names, "OTHERUSDT"]  # new listings anywhere in the list
    assert all(shards.shard_of(s, 4) == before[s] for s in names)
    parts = [shards.select(listed, (i, 4)) for i in range(4)]
    assert sorted(s for p in parts for s in p) == sorted(listed)
    assert min(len(p) for p in parts) > 80  # and the split is not lopsided
    assert shards.parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            shards.parse_shard(bad)


async def test_an_outbox_sender_of_a_stale_leader_posts_nothing_and_the_new_leader_posts_each_signal_once(
        postgres_url: str, pg: tuple[str, PostgresStore]) -> None:
    schema, store = pg
    first, second = make_signal(candle_time_ms=T0), make_signal(candle_time_ms=T0 + 3_600_000)
    await store.save_signal(first)
    a, b = lease(postgres_url, schema, "a"), lease(postgres_url, schema, "b")
    channel = FakeChannel()
    try:
        epoch_a = await a.try_acquire()
        # a's fence passes its check (a leader frozen right after checking its clock) and names its epoch
        sender_a = sender_for(store, FakePoster(channel), max_age_s=0, fence=lambda: epoch_a)  # type: ignore[arg-type]
        assert await sender_a.drain_once() == 1
        await asyncio.sleep(0.8)  # a's lease expires; b takes over; a new signal arrives
        assert await b.try_acquire() == 2
        await store.save_signal(second)
        with pytest.raises(FencedOut):  # the claim is refused by the store: the POST never happens
            await sender_a.drain_once()
        assert channel.signal_ids() == [first.id]
        sender_b = sender_for(store, FakePoster(channel), max_age_s=0, fence=lambda: b.epoch)  # type: ignore[arg-type]
        assert await sender_b.drain_once() == 1
        assert await sender_b.drain_once() == 0
        assert channel.signal_ids() == [first.id, second.id]
        # a leader's own clock check refuses before any store round trip once it is no longer acting
        late = sender_for(store, FakePoster(channel), max_age_s=0,  # type: ignore[arg-type]
                          fence=Leadership(a, renew_every_s=0.1, on_promote=_noop, on_demote=print).fence)
        await store.save_signal(make_signal(candle_time_ms=T0 + 7_200_000))
        with pytest.raises(FencedOut):
            await late.drain_once()
        assert len(channel.messages) == 2
    finally:
        await a.close()
        await b.close()


async def _noop(epoch: int | None) -> None:
    return None


async def test_a_second_live_bot_on_the_same_sqlite_file_exits_2_before_opening_the_store(tmp_path: Path) -> None:
    from src.bot.app import App, RunOptions
    from src.config import Config

    db = tmp_path / "wyeli.db"
    running = InstanceLock(db)  # the first bot
    running.acquire()
    try:
        env = {"SQLITE_PATH": str(db), "SPOOL_PATH": str(tmp_path / "spool.db"), "HTTP_PORT": "0",
               "STATUS_INTERVAL_SECONDS": "0", "BINANCE_REST_URL": "http://127.0.0.1:9", "LOG_FORMAT": "text"}
        app = App(Config.from_env(env, dotenv_path=None).validate(), RunOptions(http=False))
        assert await app.run() == 2
        assert app.store is None and not db.exists()  # refused before the store was opened
    finally:
        running.release()


async def test_a_stale_leaders_order_is_refused_before_it_is_sent_and_later_order_updates_are_kept(
        postgres_url: str, pg: tuple[str, PostgresStore]) -> None:
    from tests.trading_store_contract import make_order

    schema, store = pg
    s1, s2 = make_signal(candle_time_ms=T0), make_signal(candle_time_ms=T0 + 3_600_000)
    for sig in (s1, s2):
        await store.save_signal(sig)
    a, b = lease(postgres_url, schema, "a"), lease(postgres_url, schema, "b")
    try:
        epoch_a = await a.try_acquire()
        store.order_fence = lambda: epoch_a  # a's own clock check passed (it froze right after)
        await store.save_order(make_order(s1.id, status="PENDING_SUBMIT"))  # the leader's order, recorded
        await asyncio.sleep(0.8)
        assert await b.try_acquire() == 2
        with pytest.raises(FencedOut):  # a's next order never reaches "about to send"
            await store.save_order(make_order(s2.id, status="PENDING_SUBMIT"))
        assert await store.get_order(f"wyE-{s2.id}") is None
        # what the exchange answered for an order already sent is recorded whoever asks (no fence)
        await store.save_order(make_order(s1.id, status="FILLED"))
        assert (await store.get_order(f"wyE-{s1.id}")).status == "FILLED"  # type: ignore[union-attr]
        store.order_fence = lambda: b.epoch
        await store.save_order(make_order(s2.id, status="PENDING_SUBMIT"))
        assert await store.get_order(f"wyE-{s2.id}") is not None
    finally:
        store.order_fence = None
        await a.close()
        await b.close()


async def test_an_order_written_while_the_database_is_down_is_spooled_only_while_the_leader_acts_and_replayed_later(
        postgres_url: str, pg: tuple[str, PostgresStore], tmp_path: Path) -> None:
    from tests.trading_store_contract import make_order

    schema, store = pg
    s1, s2 = make_signal(candle_time_ms=T0), make_signal(candle_time_ms=T0 + 3_600_000)
    for sig in (s1, s2):
        await store.save_signal(sig)
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    primary = PostgresStore(postgres_url.replace(":5432", f":{proxy.port}"), schema=schema, connect_timeout=1.0,
                            command_timeout=1.0)
    spool = SpoolStore(primary, tmp_path / "spool.db", write_timeout=1.0, autoflush=False)
    a = lease(postgres_url, schema, "a", ttl_s=0.6)
    acting = [True]

    def fence() -> int | None:
        if not acting[0]:
            raise FencedOut("not acting")
        return a.epoch

    try:
        await spool.open()
        await a.try_acquire()
        primary.order_fence = fence
        await proxy.cut()
        await spool.save_order(make_order(s1.id, status="PENDING_SUBMIT"))  # acting by its clock: spooled
        assert spool.depth == 1
        acting[0] = False
        with pytest.raises(FencedOut):  # no longer acting: refused, not spooled
            await spool.save_order(make_order(s2.id, status="PENDING_SUBMIT"))
        assert spool.depth == 1
        await asyncio.sleep(0.8)  # the lease expires meanwhile; the replay still records the order that was sent
        await proxy.restore()
        assert await spool.flush() == 1
        assert await store.get_order(f"wyE-{s1.id}") is not None
        assert await store.get_order(f"wyE-{s2.id}") is None
    finally:
        primary.order_fence = None
        await a.close()
        await spool.close()
        await proxy.stop()


async def test_every_instance_is_listed_with_its_role_and_shard_for_the_leaders_status(
        postgres_url: str, pg: tuple[str, PostgresStore]) -> None:
    from dataclasses import replace

    from src.bot.discord import embeds
    from tests.test_discord_embeds import _snapshot

    schema, _ = pg
    a, b = lease(postgres_url, schema, "vps1"), lease(postgres_url, schema, "vps2")
    try:
        await a.try_acquire()
        await b.try_acquire()
        await b.heartbeat("shard 1/2", recent_s=30)
        seen = await a.heartbeat("shard 0/2", recent_s=30)
        assert [(i.instance_id, i.role, i.shard, i.epoch) for i in seen] == [
            ("vps1", "leader", "shard 0/2", 1), ("vps2", "follower", "shard 1/2", None)]  # the leader first
        leadership = Leadership(a, renew_every_s=0.1, on_promote=_noop, on_demote=print, shard="shard 0/2")
        leadership.instances = seen
        snap = replace(_snapshot(), role=leadership.role, role_text=leadership.describe(), shard="shard 0/2",
                       epoch=1, instances=leadership.instances_text())
        text = embeds.status_text(snap)
        assert "leader vps1, epoch 1" in text
        assert "vps1: leader (epoch 1), shard 0/2" in text and "vps2: follower, shard 1/2" in text
    finally:
        await a.close()
        await b.close()
