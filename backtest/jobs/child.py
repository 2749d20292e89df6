"""One attempt of one job, in its own process: ``python -m backtest.jobs.child WORKDIR``.

Reads ``WORKDIR/request.json`` (``{"request": JobRequest}``), gets the candles (:mod:`backtest.jobs.data`),
runs the existing commands' entry points in this process (``backtest run`` for a backtest,
``backtest research`` for research; their own output goes to ``WORKDIR/command.log``), and writes
``WORKDIR/result.json``: ``{"summary": ..., "files": [...], "data": [...]}``, or ``{"error": "..."}`` for a
problem the requester must fix (no such symbol, no candles in the period). Progress goes to stdout, one
JSON object per line (``{"progress": "..."}``), read by :mod:`src.jobs.supervisor`.

Exit status: 0 with a result (done or a user error), anything else is a crash (the supervisor retries
the job or fails it). The process exits by itself when its parent (the worker) dies, so a killed worker
leaves no orphan running on.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TextIO

from backtest.jobs.data import JobData, covers, download_cached, rest_settings
from backtest.jobs.summary import backtest_summary, research_summary
from src.analysis.types import ms_to_iso
from src.bot.logging_setup import configure_logging
from src.config import Config
from src.jobs.model import JobError, JobRequest
from src.jobs.patterns import ELLIOTT_PATTERNS, WYCKOFF_PATTERNS
from src.market.binance_rest import BinanceRestClient, RestRequestError, RestUnavailable
from src.market.klines_csv import write_klines_csv

RESULT_FILES_BACKTEST = ("equity.png", "report.json", "trades.csv")
MAX_RESEARCH_CHARTS = 3


class UserFacingError(Exception):
    """A problem the requester can act on; ends the job as failed without a retry."""


class Progress:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, text: str) -> None:
        self.out.write(json.dumps({"progress": text[:200]}) + "\n")
        self.out.flush()


PARENT_ENV = "WYELI_JOB_PARENT_PID"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def exit_with_parent(workdir: Path, poll_s: float = 0.5) -> Callable[[], bool]:
    """End this process (removing its work directory, which a dead worker can no longer clean up) as soon as its
    worker is gone: the worker's pid comes in WYELI_JOB_PARENT_PID, so a worker that died while this process was
    still starting is noticed too (the parent pid is then already a reaper's). Returns the "worker gone" test,
    for the exits that come before the next poll (a write into the dead worker's pipe)."""
    raw = os.environ.get(PARENT_ENV, "")
    parent = int(raw) if raw.isdigit() else os.getppid()

    def gone() -> bool:
        return os.getppid() != parent

    if gone():
        leave(workdir)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if gone():
                leave(workdir)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    return gone


def leave(workdir: Path) -> NoReturn:
    """Exit at once (status 3) without a result, removing the work directory."""
    shutil.rmtree(workdir, ignore_errors=True)
    os._exit(3)


async def _store_candles(cfg: Config, symbol: str, timeframe: str, from_ms: int, to_ms: int) -> list[Any]:
    from src.storage.base import StoreError
    from src.storage.factory import build_store
    from src.storage.spool import SpoolStore

    try:
        store = build_store(cfg)
        store = store.primary if isinstance(store, SpoolStore) else store  # never open the bot's spool
        await store.open()
    except StoreError:
        return []
    try:
        return await store.load_candles(symbol, timeframe, start_ms=from_ms, end_ms=to_ms - 1)
    except StoreError:
        return []
    finally:
        await store.close()


async def gather_data(cfg: Config, req: JobRequest, workdir: Path, progress: Progress, *,
                      want_files: bool) -> list[JobData]:
    """Per symbol: the store when it covers the period (and ``want_files`` is False), else a CSV in ``workdir``."""
    out: list[JobData] = []
    client: BinanceRestClient | None = None
    try:
        for sym in req.symbols:
            progress(f"reading {sym} {req.timeframe} candles from the store")
            stored = await _store_candles(cfg, sym, req.timeframe, req.from_ms, req.to_ms)
            path = workdir / f"{sym}-{req.timeframe}-job.csv"
            if covers(stored, req.timeframe, req.from_ms, req.to_ms):
                if not want_files:
                    out.append(JobData(sym, "store", len(stored)))
                    continue
                write_klines_csv(path, stored)
                out.append(JobData(sym, "store", len(stored), path))
                continue
            if client is None:
                client = BinanceRestClient(rest_settings(cfg))
            try:
                candles = await download_cached(client, cfg.jobs_cache_dir, sym, req.timeframe, req.from_ms,
                                                req.to_ms, progress=progress)
            except RestRequestError as exc:
                raise UserFacingError(f"Binance refused {sym} {req.timeframe}: {exc}") from None
            except RestUnavailable as exc:
                raise RuntimeError(f"Binance unavailable: {exc}") from None  # temporary: the job is retried
            if not candles:
                raise UserFacingError(f"no {sym} {req.timeframe} candles in "
                                      f"{ms_to_iso(req.from_ms)[:10]}..{ms_to_iso(req.to_ms - 1)[:10]}")
            write_klines_csv(path, candles)
            out.append(JobData(sym, "binance-rest", len(candles), path))
    finally:
        if client is not None:
            await client.close()
    return out


def _analyzer_env(patterns: tuple[str, ...]) -> None:
    """Run only the analyzers the requested patterns come from (the run command reads ENABLE_* from the env)."""
    if not patterns:
        return
    os.environ["ENABLE_WYCKOFF"] = "true" if any(p in WYCKOFF_PATTERNS for p in patterns) else "false"
    os.environ["ENABLE_ELLIOTT"] = "true" if any(p in ELLIOTT_PATTERNS for p in patterns) else "false"


def _call(main: Any, argv: list[str], log_path: Path) -> None:
    """Run a command's ``main(argv)`` with its output in ``log_path``; exit 2 becomes a UserFacingError."""
    err = io.StringIO()
    with log_path.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(err):
        code = main(argv)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(err.getvalue())
    if code == 2:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        raise UserFacingError(lines[-1] if lines else "the command refused its input")
    if code != 0:
        raise RuntimeError(f"command exited {code}: {err.getvalue()[-500:]}")


def run_job(req: JobRequest, workdir: Path, progress: Progress) -> dict[str, Any]:
    cfg = Config.from_env()
    span = ["--from", ms_to_iso(req.from_ms), "--to", ms_to_iso(req.to_ms)]
    out_dir = workdir / "out"
    log_path = workdir / "command.log"
    if req.kind == "backtest":
        data = asyncio.run(gather_data(cfg, req, workdir, progress, want_files=False))
        d = data[0]
        inputs = ["--source", "db", "--symbol", d.symbol] if d.path is None else ["--data", str(d.path)]
        _analyzer_env(req.patterns)
        progress(f"backtesting {d.candles} candles ({'store' if d.path is None else 'Binance'} data)")
        from backtest import run_cmd

        _call(run_cmd.main, [*inputs, "--timeframe", req.timeframe, *span, "--out-dir", str(out_dir)], log_path)
        progress("writing the report")
        summary = backtest_summary(out_dir, req.patterns)
        files = [n for n in RESULT_FILES_BACKTEST if (out_dir / n).is_file()]
    else:
        data = asyncio.run(gather_data(cfg, req, workdir, progress, want_files=True))
        progress(f"event study over {sum(d.candles for d in data)} candles of {len(data)} symbols")
        from backtest.research import cli as research_cli

        argv = ["--data", *[str(d.path) for d in data], "--timeframe", req.timeframe, *span,
                "--patterns", *req.patterns, "--out-dir", str(out_dir)]
        _call(research_cli.main, argv, log_path)
        summary = research_summary(out_dir, req.patterns)
        charts = sorted(p.name for p in out_dir.glob("*.png"))[:MAX_RESEARCH_CHARTS]
        files = [n for n in ("report.md", "summary.json", *charts) if (out_dir / n).is_file()]
    summary["data"] = [{"symbol": d.symbol, "source": d.source, "candles": d.candles} for d in data]
    return {"summary": summary, "files": files}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m backtest.jobs.child WORKDIR", file=sys.stderr)
        return 2
    workdir = Path(args[0])
    worker_gone = exit_with_parent(workdir)
    # stdout carries the progress protocol to the worker and nothing else: log lines go to stderr.log
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    configure_logging(level if level in LOG_LEVELS else "INFO", "json", stream=sys.stderr)
    progress = Progress(sys.stdout)
    try:
        req = JobRequest.from_json(json.loads((workdir / "request.json").read_text(encoding="utf-8"))["request"])
        req.validate()
        result = run_job(req, workdir, progress)
    except (UserFacingError, JobError) as exc:
        result = {"error": str(exc)}
    except BrokenPipeError:
        # only the worker reads our stdout: it is dying (its pid can outlive its pipes by a moment)
        leave(workdir)
    except BaseException:
        if worker_gone():
            leave(workdir)
        raise
    (workdir / "result.json").write_text(json.dumps(result, allow_nan=False, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
