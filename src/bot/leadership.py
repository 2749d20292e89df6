"""Roles of several instances (issue 16, SPEC 13): who posts, answers commands and trades.

- ``single``: no lease (SQLite, whose file lock allows one instance, or Supabase REST, which cannot hold a
  lease): the instance is always the leader; writes carry no epoch.
- ``follower`` / ``leader``: with Postgres (DATABASE_URL) every instance ingests, analyses and stores (its shard);
  only the holder of the lease (src/storage/lease.py) connects to the Discord gateway, sends the outbox,
  posts follow-ups and trades.

The loop: a follower tries to take the lease every ``renew_every_s``; the leader renews it at the same pace.
When the lease is taken, ``on_promote(epoch)`` runs (in its own task: a slow Discord or exchange start never
delays a renewal). The leader steps down, ``on_demote(reason)``, when a renewal finds the lease gone, or when
it could not renew in time: at ``ttl - margin`` after the start of its last successful renewal (monotonic
clock), which is before any other instance can take the lease. :meth:`fence` is what every action checks
first (the outbox before each claim and each POST, the trader before each signal): it returns the epoch the
store must fence the write with, or raises :class:`FencedOut` once this instance may no longer act, even if
the loop has not run yet (the process was frozen and just woke up).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog

from src.storage.base import FencedOut
from src.storage.lease import InstanceSeen, LeaseError, PostgresLease

log = structlog.get_logger(__name__)

Role = Literal["single", "leader", "follower"]


class Leadership:
    """The lease loop and the role of this instance (see the module docstring). ``lease`` None = ``single``."""

    def __init__(self, lease: PostgresLease | None, *, renew_every_s: float,
                 on_promote: Callable[[int | None], Awaitable[None]], on_demote: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic, shard: str = "all symbols") -> None:
        self.lease = lease
        self.shard = shard
        # every instance the database heard of recently (the heartbeat after each lease attempt), for >status
        self.instances: list[InstanceSeen] = []
        self.renew_every_s = renew_every_s
        self.on_promote = on_promote
        self.on_demote = on_demote
        self.clock = clock
        self.demoted: str | None = None  # why this instance stepped down (it acts no more)
        self.promoted_at: float | None = None
        self.takeovers = 0
        self._promote_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error: str | None = None

    # ------------------------------------------------------------------ state
    @property
    def role(self) -> Role:
        if self.lease is None:
            return "single"
        return "leader" if self.lease.epoch is not None and self.demoted is None else "follower"

    @property
    def epoch(self) -> int | None:
        return None if self.lease is None else self.lease.epoch

    def lease_age_s(self) -> float | None:
        return None if self.lease is None else self.lease.lease_age_s()

    def acting(self) -> bool:
        """True when this instance may post and trade now."""
        if self.lease is None:
            return self.demoted is None
        return self.demoted is None and self.lease.acting()

    def fence(self) -> int | None:
        """The epoch to fence a leader's write with (None without a lease); raises FencedOut when not acting."""
        if not self.acting():
            raise FencedOut(f"this instance is not the acting leader ({self.describe()})")
        return self.epoch

    def describe(self) -> str:
        """One line for ``>status`` and the console: role, epoch, lease age."""
        if self.lease is None:
            return "single instance (always leader)"
        if self.demoted is not None:
            return f"stepped down ({self.demoted})"
        if self.lease.epoch is None:
            if self._last_error is not None:
                return f"follower {self.lease.holder} (lease unreachable: {self._last_error})"
            return f"follower {self.lease.holder} (standby: another instance leads)"
        age = self.lease.lease_age_s()
        renewed = f", lease renewed {age:.1f} s ago" if age is not None else ""
        return f"leader {self.lease.holder}, epoch {self.lease.epoch}{renewed}"

    # ------------------------------------------------------------------ loop
    def start(self) -> None:
        """Run the lease loop in a task of its own (with a lease); :meth:`close` ends it."""
        if self.lease is not None and self._task is None:
            self._task = asyncio.create_task(self.run(), name="leader-lease")

    async def start_single(self) -> None:
        """No lease: the instance leads from the start."""
        self.promoted_at = self.clock()
        await self.on_promote(None)

    async def run(self) -> None:
        """Take, renew and give up the lease until cancelled (with a lease only)."""
        lease = self.lease
        assert lease is not None
        while self.demoted is None:
            if lease.epoch is None:
                await self._try_take(lease)
            else:
                await self._renew(lease)
            if self.demoted is not None:
                return
            await self._heartbeat(lease)
            wait = self.renew_every_s
            if lease.epoch is not None:  # wake in time to step down when renewals keep failing
                wait = max(0.0, min(wait, lease.acting_until() - self.clock()))
            await asyncio.sleep(wait)

    async def _try_take(self, lease: PostgresLease) -> None:
        try:
            epoch = await lease.try_acquire()
        except LeaseError as exc:
            if self._last_error is None:
                log.warning("leader_lease_unreachable", error=str(exc)[:200])
            self._last_error = str(exc)[:120]
            return
        self._last_error = None
        if epoch is None:
            return
        self.takeovers += 1
        self.promoted_at = self.clock()
        log.warning("leader_lease_acquired: this instance is now the leader (posts, answers commands, trades)",
                    epoch=epoch, holder=lease.holder, ttl_s=lease.ttl_s)
        self._promote_task = asyncio.create_task(self._promote(epoch), name="leader-promote")

    async def _promote(self, epoch: int) -> None:
        try:
            await self.on_promote(epoch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("leader_promotion_failed")
            self._step_down(f"the leader's start failed: {type(exc).__name__}: {exc}")

    async def _renew(self, lease: PostgresLease) -> None:
        try:
            ok = await lease.renew()
        except LeaseError as exc:
            ok = None
            log.warning("leader_lease_renewal_failed", error=str(exc)[:200], epoch=lease.epoch,
                        acting_for_s=round(lease.acting_until() - self.clock(), 2))
        if ok is False:
            self._step_down("the lease was taken over or expired")
        elif not lease.acting():
            self._step_down(f"no renewal for {lease.ttl_s - lease.margin_s:g} s (the lease may expire for the others)")

    async def _heartbeat(self, lease: PostgresLease) -> None:
        """Say this instance is alive and read who else is (after the lease statement: never delays a renewal)."""
        if lease.epoch is not None and lease.acting_until() - self.clock() < lease.op_timeout_s:
            return  # close to the acting deadline: the next renewal attempt comes first
        try:
            self.instances = await lease.heartbeat(self.shard, recent_s=3 * lease.ttl_s)
        except LeaseError as exc:
            log.debug("instance_heartbeat_failed", error=str(exc)[:200])

    def instances_text(self) -> tuple[str, ...]:
        """One line per instance seen recently: id, role (epoch), shard, when seen (for >status)."""
        return tuple(f"{i.instance_id}: {i.role}{f' (epoch {i.epoch})' if i.epoch is not None else ''}, {i.shard}, "
                     f"seen {i.seen_s_ago:.0f} s ago" for i in self.instances)

    def _step_down(self, reason: str) -> None:
        if self.demoted is not None:
            return
        self.demoted = reason
        if self.lease is not None:
            self.lease.drop()
        log.error("leader_lease_lost: this instance stops posting and trading and exits (a restart makes it a follower)",
                  reason=reason)
        self.on_demote(reason)

    async def close(self) -> None:
        """Stop the loop and any promotion; give the lease back (a standby takes over at its next attempt) and close
        the connection."""
        for task in (self._task, self._promote_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.lease is not None:
            if self.demoted is None:
                await self.lease.release()
            await self.lease.close()

    def snapshot(self) -> dict[str, Any]:
        """Role, epoch and lease age for /metrics and /readyz."""
        return {"role": self.role, "epoch": self.epoch, "lease_age_s": self.lease_age_s(), "acting": self.acting()}
