"""The SQL of the leader-lease fence (issue 16), shared by the lease (src/storage/lease.py) and the Postgres store.

A leader's write names its epoch; the statement carries :func:`fence_sql` in its WHERE clause, so it changes
nothing when that epoch no longer holds the lease (a newer leader bumped it) or the lease has expired by the
database's clock. The check and the write are one statement: no other leader can slip in between.
"""

from __future__ import annotations

from contextvars import ContextVar

LEASE_NAME = "leader"

# True while the outage spool replays a write that was already judged (and fenced by the leader's clock) when
# it was made: the replay must not be refused because the lease changed since (the order it records was sent).
# A context variable: it holds for the replaying task only, never for live writes in other tasks.
replaying: ContextVar[bool] = ContextVar("wyeli_spool_replaying", default=False)


def fence_sql(epoch_param: str) -> str:
    """SQL true while the lease ``LEASE_NAME`` has epoch ``epoch_param`` (a placeholder like ``$8``) and is
    not expired."""
    return (f"EXISTS (SELECT 1 FROM leader_lease WHERE name = '{LEASE_NAME}' AND epoch = {epoch_param} "
            "AND expires_at > clock_timestamp())")
