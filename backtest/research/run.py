"""Running the study's streams: load, replay through the analyzers, select events, measure; in this
process or in a pool of ``jobs`` processes (results are identical: every random draw is seeded from
(seed, symbol, timeframe), and the bootstrap runs afterwards in the parent)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from backtest.research.measure import StreamEvents, measure_events
from backtest.research.replay import EventFilter, replay_candidates
from backtest.research.streams import ResearchStream, load_stream
from src.analysis.engine import AnalysisSettings
from src.analysis.evidence import counts_in_track_record
from src.analysis.outcomes import OutcomeParams


@dataclass(frozen=True, slots=True)
class ResearchJob:
    """Everything a study run depends on (besides the data)."""

    settings: AnalysisSettings
    params: OutcomeParams
    decluster_bars: int
    patterns: frozenset[str]
    twin_reps: int
    bootstrap_reps: int
    seed: int
    thresholds: tuple[float, ...]
    extra_trials: int
    split_ms: int | None = None


def study_stream(stream: ResearchStream, job: ResearchJob, progress: Callable[[int], None] | None = None) -> StreamEvents:
    """One stream end to end; a top-level function so worker processes can run it."""
    candles = load_stream(stream)
    candidates = replay_candidates(stream.symbol, stream.timeframe, candles, job.settings, progress)
    events = EventFilter(stream.timeframe, job.decluster_bars, job.patterns, counts_in_track_record).select(candidates)
    return measure_events(
        stream.symbol, stream.timeframe, candles, events, len(candidates), job.params, job.twin_reps, job.seed
    )


def run_streams(
    streams: Sequence[ResearchStream], job: ResearchJob, jobs: int, *, show_progress: bool | None = None
) -> list[StreamEvents]:
    """Every stream in order; a progress bar on stderr when it is a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tty = sys.stderr.isatty() if show_progress is None else show_progress
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not tty, transient=True, console=Console(stderr=True)) as prog:
        if jobs <= 1 or len(streams) <= 1:
            outs = []
            for stream in streams:
                task = prog.add_task(f"{stream.label} candles", total=None)

                def advance(n: int, task: Any = task) -> None:
                    prog.advance(task, n)

                outs.append(study_stream(stream, job, advance))
                prog.update(task, total=outs[-1].candles, completed=outs[-1].candles)
            return outs
        task = prog.add_task("streams", total=len(streams))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(study_stream, stream, job) for stream in streams]
            for _ in as_completed(futures):
                prog.advance(task)
            return [f.result() for f in futures]
