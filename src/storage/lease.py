"""The leader lease on Postgres (issue 16, SPEC 13): several bot instances share one database, one of them leads.

The lease is a row of ``leader_lease`` (migration 008) with a holder, an epoch and an expiry, all judged by
the DATABASE's clock, on a connection of its own (a busy or broken store pool never delays a renewal):

- :meth:`PostgresLease.try_acquire` takes the row when it is missing or expired and bumps ``epoch`` by one (one
  statement: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at <= clock_timestamp()``; two instances
  racing serialise on the row lock and only one wins);
- :meth:`PostgresLease.renew` moves ``expires_at`` to now + ``ttl_s`` while the row still names this holder
  and epoch and has not expired; a lost row is never taken back by a renewal (that is an acquisition, with a
  new epoch);
- :meth:`PostgresLease.release` (graceful stop) expires the row at once, so a standby takes over within one
  attempt instead of a whole TTL.

Fencing by time: the database sets ``expires_at`` = (its clock when the statement ran) + ``ttl_s``, which is
after the moment this process STARTED the statement. So a leader that measures from the start of its last
successful renewal, on the monotonic clock, and stops acting at start + ``ttl_s`` - ``margin_s``
(:meth:`acting`) stops at least ``margin_s`` before any other instance can take the lease (clock rates of
the two machines differ by far less than ``margin_s`` over one TTL). The monotonic clock keeps running while
the process is frozen (SIGSTOP, a VM pause), so a leader that wakes up late sees at once that it is no longer
acting. Fencing by epoch (the store refuses writes naming an older epoch, :func:`src.storage.fence.fence_sql`) covers the rest:
a write that was already on its way when the leader froze.

Every statement has a deadline (``op_timeout_s``); a connection that failed or timed out is dropped and a
new one is opened on the next call (a black-holed network cannot hang the renewal loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from src.storage.fence import LEASE_NAME
from src.storage.postgres_store import split_dsn

log = structlog.get_logger(__name__)


_ACQUIRE_SQL = """
INSERT INTO leader_lease AS l (name, holder, epoch, acquired_at, renewed_at, expires_at)
VALUES ($1, $2, 1, clock_timestamp(), clock_timestamp(), clock_timestamp() + $3 * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = l.epoch + 1, acquired_at = EXCLUDED.acquired_at,
    renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= clock_timestamp()
RETURNING epoch
"""
_RENEW_SQL = """
UPDATE leader_lease SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + $4 * interval '1 millisecond'
WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()
RETURNING epoch
"""
_RELEASE_SQL = ("UPDATE leader_lease SET expires_at = clock_timestamp() "
                "WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()")
_HOLDER_SQL = ("SELECT holder, epoch, (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000)::bigint "
               "FROM leader_lease WHERE name = $1")


_HEARTBEAT_SQL = """
INSERT INTO bot_instances AS i (instance_id, role, shard, epoch, started_at, seen_at)
VALUES ($1, $2, $3, $4, clock_timestamp(), clock_timestamp())
ON CONFLICT (instance_id) DO UPDATE SET role = EXCLUDED.role, shard = EXCLUDED.shard, epoch = EXCLUDED.epoch,
    seen_at = EXCLUDED.seen_at
"""
_INSTANCES_SQL = """
SELECT instance_id, role, shard, epoch, (EXTRACT(EPOCH FROM clock_timestamp() - seen_at) * 1000)::bigint
FROM bot_instances WHERE seen_at > clock_timestamp() - $1 * interval '1 millisecond'
ORDER BY role = 'leader' DESC, instance_id
"""
_FORGET_SQL = "DELETE FROM bot_instances WHERE seen_at < clock_timestamp() - interval '1 day'"


@dataclass(frozen=True, slots=True)
class InstanceSeen:
    """One bot instance as the database last heard of it (table ``bot_instances``)."""

    instance_id: str
    role: str
    shard: str
    epoch: int | None
    seen_s_ago: float


def instance_id() -> str:
    """A holder name unique to this process: host, pid and a random suffix (a restarted process on the same
    host is another holder, so it never renews its dead predecessor's lease)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaseError(Exception):
    """The lease could not be read or written now (connection, timeout, refused)."""


class PostgresLease:
    """The lease of ``name`` for ``holder``; see the module docstring for the rules and the fencing argument.

    :param ttl_s: how long a renewal keeps the lease (database clock).
    :param margin_s: the leader stops acting this long before its lease can expire (``0 < margin_s < ttl_s``).
    :param op_timeout_s: deadline of one statement (connecting included).
    :param schema: Postgres schema put first on ``search_path`` (tests use a throw-away schema).
    :param clock: monotonic clock in seconds (injected for tests).
    """

    def __init__(self, dsn: str, *, holder: str | None = None, name: str = LEASE_NAME, ttl_s: float = 10.0,
                 margin_s: float = 2.0, op_timeout_s: float = 2.0, schema: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < margin_s < ttl_s:
            raise ValueError(f"lease margin must be in (0, ttl): margin {margin_s}, ttl {ttl_s}")
        self._dsn, cache = split_dsn(dsn)
        self._statement_cache_size = 100 if cache is None else cache
        self.holder = holder or instance_id()
        self.name = name
        self.ttl_s = ttl_s
        self.margin_s = margin_s
        self.op_timeout_s = op_timeout_s
        self.schema = schema
        self.clock = clock
        self.epoch: int | None = None  # the epoch held (None: not the leader)
        self._renewed_at: float | None = None  # monotonic start of the last successful acquire/renew
        self._conn: Any = None

    # ------------------------------------------------------------------ state
    def acting(self) -> bool:
        """True while this instance may act as the leader: it holds an epoch and less than ``ttl_s - margin_s``
        passed since the start of its last successful renewal (monotonic clock, frozen time included)."""
        return self.epoch is not None and self._renewed_at is not None and self.clock() < self.acting_until()

    def acting_until(self) -> float:
        """Monotonic time at which the leader stops acting unless it renews first."""
        return (self._renewed_at or 0.0) + self.ttl_s - self.margin_s

    def lease_age_s(self) -> float | None:
        """Seconds since the start of the last successful acquire/renew (None when not the leader)."""
        if self.epoch is None or self._renewed_at is None:
            return None
        return max(0.0, self.clock() - self._renewed_at)

    def drop(self) -> None:
        """Forget the lease locally (the leader stepped down); the row expires by itself or by :meth:`release`."""
        self.epoch = None
        self._renewed_at = None

    # ------------------------------------------------------------------ statements
    async def try_acquire(self) -> int | None:
        """Take the lease if it is free or expired; returns the new epoch, or None when another holder has it.
        Raises :class:`LeaseError` when the database cannot answer in time."""
        started = self.clock()
        epoch = await self._run("acquire", lambda c: c.fetchval(_ACQUIRE_SQL, self.name, self.holder,
                                                                 int(self.ttl_s * 1000)))
        if epoch is None:
            return None
        self.epoch = int(epoch)
        self._renewed_at = started
        return self.epoch

    async def renew(self) -> bool:
        """Extend the held lease; False (and :meth:`drop`) when the row no longer names this holder and epoch or
        it expired. Raises :class:`LeaseError` when the database cannot answer in time (the lease is kept
        locally: :meth:`acting` turns False by itself when the deadline passes)."""
        if self.epoch is None:
            return False
        started = self.clock()
        epoch = self.epoch
        got = await self._run("renew", lambda c: c.fetchval(_RENEW_SQL, self.name, self.holder, epoch,
                                                             int(self.ttl_s * 1000)))
        if got is None:
            self.drop()
            return False
        if self.epoch == epoch:
            self._renewed_at = started
        return True

    async def release(self) -> None:
        """Expire the held lease now (graceful stop: a standby takes over at its next attempt); best effort."""
        epoch = self.epoch
        self.drop()
        if epoch is None:
            return
        with contextlib.suppress(LeaseError):
            await self._run("release", lambda c: c.execute(_RELEASE_SQL, self.name, self.holder, epoch))

    async def current(self) -> tuple[str, int, float] | None:
        """(holder, epoch, seconds until expiry, negative when expired) of the row, or None when there is none."""
        row = await self._run("read", lambda c: c.fetchrow(_HOLDER_SQL, self.name))
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]) / 1000.0)

    async def heartbeat(self, shard: str, *, recent_s: float) -> list[InstanceSeen]:
        """Record this instance as alive (role, shard, epoch) and return every instance seen within ``recent_s``
        (the leader also forgets instances not seen for a day). Raises :class:`LeaseError`."""
        role = "leader" if self.epoch is not None else "follower"
        epoch = self.epoch

        async def beat(c: Any) -> list[InstanceSeen]:
            await c.execute(_HEARTBEAT_SQL, self.holder, role, shard, epoch)
            if epoch is not None:
                await c.execute(_FORGET_SQL)
            rows = await c.fetch(_INSTANCES_SQL, int(recent_s * 1000))
            return [InstanceSeen(str(r[0]), str(r[1]), str(r[2]), None if r[3] is None else int(r[3]),
                                 max(0.0, int(r[4]) / 1000.0)) for r in rows]

        result: list[InstanceSeen] = await self._run("heartbeat", beat)
        return result

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # never waits on a network that may be black-holed

    async def _run(self, what: str, op: Callable[[Any], Any]) -> Any:
        try:
            async with asyncio.timeout(self.op_timeout_s):
                if self._conn is None or self._conn.is_closed():
                    settings = {"search_path": self.schema} if self.schema else None
                    self._conn = await asyncpg.connect(self._dsn, timeout=self.op_timeout_s,
                                                       statement_cache_size=self._statement_cache_size,
                                                       server_settings=settings)
                return await op(self._conn)
        except (Exception, TimeoutError) as exc:
            await self.close()  # a connection in an unknown state is never reused
            raise LeaseError(f"lease {what} failed: {type(exc).__name__}: {exc}") from None
