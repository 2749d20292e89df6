"""Leader failover over many kills (issue 16): take-over time and double posts.

Two real bot processes (``src.bot.main``) on one real Postgres schema, against the fake Binance and a recording
Discord webhook (tests/instances_harness.py). Each round: the market moves (signals are produced and posted),
the leader is killed with SIGKILL, the market moves on while the standby takes over, the killed instance is
restarted (as systemd would) and becomes the standby. The take-over time is measured from the kill to the
moment the other instance holds the lease (the ``leader_lease`` row, polled every 20 ms). At the end every
posted message is counted per signal id: a signal posted more than once is a double post.

    .venv/bin/python -m benchmarks.failover [--kills 10] [--ttl 10] [--renew 2]

Defaults are the bot's defaults (LEASE_TTL_SECONDS=10, LEASE_RENEW_SECONDS=2): the take-over is bounded by
TTL + one renewal period (12 s) plus the promotion (starting the Discord side).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

from tests.instances_harness import Cluster, wait_warm


async def run(kills: int, ttl_s: float, renew_s: float, postgres_url: str) -> int:
    takeovers: list[float] = []
    with tempfile.TemporaryDirectory(prefix="wyeli-failover-") as tmp:
        async with Cluster(Path(tmp), postgres_url, ttl_s=ttl_s, renew_s=renew_s) as cluster:
            await cluster.start("a")
            leader, _ = await cluster.wait_holder()
            await cluster.start("b")
            await wait_warm(cluster, "a")
            await wait_warm(cluster, "b")
            for i in range(kills):
                await cluster.fake.advance(3)
                await cluster.wait_caught_up_and_delivered(within_s=120)
                proc = cluster.bots[leader].proc
                assert proc is not None
                t0 = time.monotonic()
                proc.send_signal(signal.SIGKILL)
                market = asyncio.create_task(cluster.fake.advance(2))
                new, _ = await cluster.wait_holder(other_than=leader, within_s=120)
                took = time.monotonic() - t0
                takeovers.append(took)
                await market
                await cluster.bots[leader].wait()
                print(f"kill {i + 1}/{kills}: {leader} killed, {new} took over in {took:.2f} s", flush=True)
                await cluster.start(leader)
                await wait_warm(cluster, leader)
                leader = new
            await cluster.fake.advance(3)
            await cluster.wait_caught_up_and_delivered(within_s=120)
            posted = cluster.webhook.posted_ids()
            doubles = sum(n - 1 for n in posted.values() if n > 1)
            missing = await cluster.missing_candles()
            for bot in cluster.bots.values():
                if bot.proc is not None and bot.proc.returncode is None:
                    await bot.stop()
    print(f"\nfailover over {len(takeovers)} kills (LEASE_TTL_SECONDS={ttl_s:g}, LEASE_RENEW_SECONDS={renew_s:g}):")
    print(f"  take-over time   min {min(takeovers):.2f} s   median {statistics.median(takeovers):.2f} s   "
          f"max {max(takeovers):.2f} s")
    print(f"  signals posted   {len(posted)} (messages {len(cluster.webhook.posts)})")
    print(f"  double posts     {doubles}")
    print(f"  candles missing  {len(missing)}")
    return 0 if doubles == 0 and not missing else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--ttl", type=float, default=10.0, help="LEASE_TTL_SECONDS (default 10, the bot's default)")
    p.add_argument("--renew", type=float, default=2.0, help="LEASE_RENEW_SECONDS (default 2, the bot's default)")
    p.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    return asyncio.run(run(args.kills, args.ttl, args.renew, args.postgres))


if __name__ == "__main__":
    raise SystemExit(main())
