"""``python -m backtest jobs submit|status|list|cancel`` and ``python -m backtest worker``.

    python -m backtest jobs submit --symbol SOLUSDT --timeframe 1h --from 2024-01-01 --to 2025-01-01
    python -m backtest jobs status 12        # one JSON object: state, progress, and the summary when done
    python -m backtest jobs list --state queued
    python -m backtest jobs cancel 12
    python -m backtest jobs files 12 --out-dir out/job12   # equity.png, report.json, trades.csv
    python -m backtest worker --concurrency 2

The queue is the configured store's (DATABASE_URL: Postgres + procrastinate; else SQLITE_PATH + the local
runner), see src/jobs. Jobs submitted here belong to user ``shell`` and are exempt from the Discord limits
(operators only reach this command). ``--from`` defaults to ``--to`` minus 365 days, ``--to`` to now.

Exit status: 0 ok, 2 bad input or unknown job, 1 the store is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import structlog

from backtest.inputs import InputError, parse_date
from src.analysis import timeframes
from src.config import Config
from src.jobs.model import DAY_MS, STATES, JobError, JobFile, JobKind, JobRequest, Requester
from src.jobs.patterns import KNOWN_PATTERNS, resolve_pattern
from src.jobs.queue import JobQueue, build_job_queue
from src.storage.base import StoreError

T = TypeVar("T")
DEFAULT_DAYS = 365


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{submit,status,list,cancel,files}")
    s = sub.add_parser("submit", help="queue a backtest (or --research) job; prints its id")
    s.add_argument("--symbol", required=True, help="e.g. SOLUSDT; with --research a comma-separated list")
    s.add_argument("--timeframe", required=True, help="e.g. 1h")
    s.add_argument("--from", dest="date_from", metavar="DATE", help="first candle open time (UTC; default --to - 365 days)")
    s.add_argument("--to", dest="date_to", metavar="DATE", help="end, exclusive (UTC; default now)")
    s.add_argument("--pattern", action="append", default=[], metavar="NAME",
                   help=f"only these patterns (repeatable; e.g. spring, utad, wave3); valid: {', '.join(KNOWN_PATTERNS)}")
    s.add_argument("--research", action="store_true", help="run the event study (backtest research) instead")
    st = sub.add_parser("status", help="one job as JSON")
    st.add_argument("id", type=int)
    ls = sub.add_parser("list", help="recent jobs, newest first")
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("id", type=int)
    f = sub.add_parser("files", help="write a finished job's result files (equity.png, report.json, ...) to a directory")
    f.add_argument("id", type=int)
    f.add_argument("--out-dir", required=True, type=Path)


def build_request(args: argparse.Namespace, now_ms: int) -> JobRequest:
    tf = args.timeframe
    if not timeframes.is_interval(tf):
        raise InputError(f"--timeframe: unknown interval {tf!r}; valid: {', '.join(timeframes.INTERVALS)}")
    to_ms = parse_date(args.date_to, "--to") or now_ms
    from_ms = parse_date(args.date_from, "--from")
    if from_ms is None:
        from_ms = to_ms - DEFAULT_DAYS * DAY_MS
    patterns = []
    for raw in args.pattern:
        p = resolve_pattern(raw)
        if p is None:
            raise InputError(f"--pattern: unknown {raw!r}; valid: {', '.join(KNOWN_PATTERNS)}")
        patterns.append(p)
    symbols = tuple(s.strip().upper() for s in args.symbol.split(",") if s.strip())
    kind: JobKind = "research" if args.research else "backtest"
    try:
        return JobRequest(kind, symbols, tf, from_ms, to_ms, tuple(dict.fromkeys(patterns))).validate()
    except JobError as exc:
        raise InputError(str(exc)) from None


async def _with_queue(cfg: Config, body: Callable[[JobQueue], Awaitable[T]]) -> T:
    queue = build_job_queue(cfg)
    await queue.open()
    try:
        return await body(queue)
    finally:
        await queue.close()


def _line(d: dict[str, Any]) -> str:
    return (f"#{d['id']:<5} {d['state']:<9} {d['kind']:<8} {','.join(d['symbols'])} {d['timeframe']} "
            f"{d['from'][:10]}..{d['to'][:10]} {d['requested_by']} {d.get('progress') or d.get('error') or ''}").rstrip()


@contextlib.contextmanager
def logs_to_stderr() -> Iterator[None]:
    """structlog's default prints to stdout; scripts read the job id / JSON from stdout, so logs go to stderr."""
    if structlog.is_configured():
        yield
        return
    old = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        yield
    finally:
        structlog.configure(**old)


def run(args: argparse.Namespace) -> int:
    with logs_to_stderr():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    cfg = Config.from_env()
    try:
        if cfg.problems:
            raise InputError("configuration problems: " + "; ".join(cfg.problems))
        if args.action == "submit":
            request = build_request(args, int(time.time() * 1000))

            async def submit(q: JobQueue) -> dict[str, Any]:
                rec = await q.submit(request, Requester(user_id="shell", user_name="shell", admin=True))
                return rec.status_dict(await q.store.queue_position(rec.id))

            d = asyncio.run(_with_queue(cfg, submit))
            print(d["id"])
            print(f"queued #{d['id']} ({request.label()}), position {d.get('queue_position')}", file=sys.stderr)
            return 0
        if args.action == "files":
            async def files(q: JobQueue) -> list[JobFile] | None:
                rec = await q.store.get(args.id)
                return None if rec is None else await q.store.files(args.id)

            got_files = asyncio.run(_with_queue(cfg, files))
            if got_files is None:
                raise InputError(f"no job #{args.id}")
            out: Path = args.out_dir
            out.mkdir(parents=True, exist_ok=True)
            for jf in got_files:
                (out / Path(jf.name).name).write_bytes(jf.content)
                print(out / Path(jf.name).name)
            return 0
        if args.action in ("status", "cancel"):
            async def one(q: JobQueue) -> dict[str, Any] | None:
                rec = await (q.store.cancel(args.id) if args.action == "cancel" else q.store.get(args.id))
                return None if rec is None else rec.status_dict(await q.store.queue_position(rec.id))

            got = asyncio.run(_with_queue(cfg, one))
            if got is None:
                raise InputError(f"no job #{args.id}")
            print(json.dumps(got, sort_keys=True))
            return 0

        async def many(q: JobQueue) -> list[dict[str, Any]]:
            recs = await q.store.list_jobs(states=[args.state] if args.state else None, limit=max(1, args.limit))
            return [r.status_dict() for r in recs]

        for d in asyncio.run(_with_queue(cfg, many)):
            print(json.dumps(d, sort_keys=True) if args.json else _line(d))
        return 0
    except (InputError, JobError, ValueError) as exc:
        print(f"backtest jobs: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"backtest jobs: store unavailable: {exc}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------------------------- worker


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, help="jobs at once (default JOBS_LOCAL_WORKERS, at least 1)")
    p.add_argument("--heartbeat", type=float, default=10.0, metavar="S",
                   help="worker heartbeat every S seconds (default 10; a running job's own heartbeat is at most 2 s)")
    p.add_argument("--stalled-after", type=float, default=30.0, metavar="S",
                   help="a worker silent for S seconds is dead: its jobs are retried or failed (default 30)")
    p.add_argument("--recover-every", type=float, default=15.0, metavar="S",
                   help="look for dead workers' jobs every S seconds (default 15)")


def run_worker(args: argparse.Namespace) -> int:
    with logs_to_stderr():
        return _run_worker(args)


def _run_worker(args: argparse.Namespace) -> int:
    cfg = Config.from_env()
    if cfg.problems:
        print("backtest worker: configuration problems: " + "; ".join(cfg.problems), file=sys.stderr)
        return 2
    concurrency = args.concurrency or max(1, cfg.jobs_local_workers)
    if concurrency < 1 or args.heartbeat <= 0 or args.stalled_after <= args.heartbeat or args.recover_every <= 0:
        print("backtest worker: need --concurrency >= 1, --heartbeat > 0, --stalled-after > --heartbeat, "
              "--recover-every > 0", file=sys.stderr)
        return 2
    try:
        queue = build_job_queue(cfg)
    except ValueError as exc:
        print(f"backtest worker: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_work(queue, concurrency, args))
    except StoreError as exc:
        print(f"backtest worker: store unavailable: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


async def _work(queue: JobQueue, concurrency: int, args: argparse.Namespace) -> None:
    await queue.open()
    try:
        if queue.engine_name == "procrastinate":
            from src.jobs.pg_queue import PgQueue

            assert isinstance(queue.engine, PgQueue)
            await queue.engine.run_worker(concurrency=concurrency, heartbeat_s=args.heartbeat,
                                          stalled_after_s=args.stalled_after, recover_every_s=args.recover_every)
            return
        from src.jobs.local_runner import LocalJobRunner
        from src.jobs.supervisor import AttemptSettings

        # the row heartbeat of each attempt (every 2 s at most) is what other runners judge liveness by
        runner = LocalJobRunner(queue.store, slots=concurrency, stale_after_s=args.stalled_after,
                                attempt=AttemptSettings(heartbeat_s=min(2.0, args.heartbeat)))
        task = asyncio.create_task(runner.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        print(f"backtest worker: running jobs from {queue.store.name} ({concurrency} at once); Ctrl-C stops "
              f"(jobs in flight go back to the queue)", file=sys.stderr)
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await queue.close()
