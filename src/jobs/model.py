"""What a backtest job is: the request, the stored row, its states and the queue limits (pure).

States: ``queued`` -> ``running`` -> ``done`` | ``failed``; ``queued``/``running`` -> ``cancelled``. A running
job whose worker stops answering goes back to ``queued`` for another attempt (at most ``max_attempts``
attempts in all), then ``failed`` with the reason. ``attempt`` numbers the runs: every write of a run names
its attempt, so a run that was given up on can never change the job afterwards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from src.analysis import timeframes
from src.analysis.types import ms_to_iso

JobKind = Literal["backtest", "research"]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("done", "failed", "cancelled")
KINDS: tuple[JobKind, ...] = ("backtest", "research")
DAY_MS = 86_400_000
MAX_FILE_BYTES = 8 * 1024 * 1024  # Discord's smallest upload limit; larger result files are not kept


class JobError(ValueError):
    """A request that cannot be queued (bad value or a limit); the message is for the user."""


class LimitReached(JobError):
    """A queue limit (per user or global) refuses the request."""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What to run. ``symbols`` has one entry for a backtest, one or more for research; ``from_ms`` inclusive,
    ``to_ms`` exclusive (candle open times, UTC)."""

    kind: JobKind
    symbols: tuple[str, ...]
    timeframe: str
    from_ms: int
    to_ms: int
    patterns: tuple[str, ...] = ()

    def validate(self) -> JobRequest:
        if self.kind not in KINDS:
            raise JobError(f"unknown job kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if not self.symbols or any(not s.isalnum() or len(s) > 20 for s in self.symbols):
            raise JobError("give at least one symbol (letters and digits only)")
        if self.kind == "backtest" and len(self.symbols) != 1:
            raise JobError("a backtest job runs one symbol")
        if not timeframes.is_interval(self.timeframe):
            raise JobError(f"unknown timeframe {self.timeframe!r}; valid: {', '.join(timeframes.INTERVALS)}")
        if self.to_ms <= self.from_ms:
            raise JobError("the period must end after it starts")
        if self.kind == "research" and not self.patterns:
            raise JobError("a research job studies at least one pattern")
        return self

    @property
    def days(self) -> float:
        return (self.to_ms - self.from_ms) / DAY_MS

    def label(self) -> str:
        what = ", ".join(self.patterns) if self.patterns else "all patterns"
        syms = ",".join(self.symbols)
        return f"{self.kind} {syms} {self.timeframe} {ms_to_iso(self.from_ms)[:10]}..{ms_to_iso(self.to_ms - 1)[:10]} ({what})"

    def to_json(self) -> str:
        d = asdict(self)
        d["symbols"] = list(self.symbols)
        d["patterns"] = list(self.patterns)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> JobRequest:
        d = json.loads(text) if isinstance(text, str) else dict(text)
        try:
            return cls(kind=d["kind"], symbols=tuple(d["symbols"]), timeframe=d["timeframe"], from_ms=int(d["from_ms"]),
                       to_ms=int(d["to_ms"]), patterns=tuple(d.get("patterns") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise JobError(f"stored job request is malformed: {exc}") from None


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked and where to answer (Discord ids; ``user_id`` 'shell' for the command line)."""

    user_id: str = "shell"
    user_name: str = ""
    channel_id: int | None = None
    guild_id: int | None = None
    admin: bool = False


@dataclass(frozen=True, slots=True)
class JobLimits:
    """Queue limits (JOBS_* settings). Admins (``Requester.admin``) are exempt from all three."""

    max_active_per_user: int = 2
    max_active_total: int = 20
    max_period_days: int = 366

    def check_period(self, request: JobRequest, requester: Requester) -> None:
        if not requester.admin and request.days > self.max_period_days + 1e-9:
            raise LimitReached(f"the period is {request.days:.0f} days; the limit is {self.max_period_days} days")


@dataclass(frozen=True, slots=True)
class JobFile:
    name: str
    content: bytes


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One row of ``backtest_jobs``."""

    id: int
    request: JobRequest
    state: JobState
    requester: Requester
    created_ms: int
    attempt: int = 0
    max_attempts: int = 2
    started_ms: int | None = None
    finished_ms: int | None = None
    heartbeat_ms: int | None = None
    worker: str | None = None
    progress: str = ""
    error: str | None = None
    summary: dict[str, Any] | None = None
    message_id: int | None = None
    notified_ms: int | None = None
    cancel_requested: bool = False
    files: tuple[str, ...] = field(default=())

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_row(cls, r: Any, files: tuple[str, ...] = ()) -> JobRecord:
        """A row of the stores' job SELECT, in this order: id, request, state, user_id, user_name, channel_id,
        guild_id, admin, created, attempt, max_attempts, started, finished, heartbeat (times as epoch ms),
        worker, progress, error, summary (JSON text), message_id, notified, cancel_requested."""
        return cls(
            id=int(r[0]), request=JobRequest.from_json(r[1]), state=r[2],
            requester=Requester(user_id=r[3], user_name=r[4], channel_id=r[5], guild_id=r[6], admin=bool(r[7])),
            created_ms=int(r[8]), attempt=int(r[9]), max_attempts=int(r[10]), started_ms=r[11], finished_ms=r[12],
            heartbeat_ms=r[13], worker=r[14], progress=r[15] or "", error=r[16],
            summary=None if r[17] is None else json.loads(r[17]), message_id=r[18], notified_ms=r[19],
            cancel_requested=bool(r[20]), files=files,
        )

    def status_dict(self, queue_position: int | None = None) -> dict[str, Any]:
        """The JSON of ``python -m backtest jobs status ID``."""
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.request.kind,
            "state": self.state,
            "symbols": list(self.request.symbols),
            "timeframe": self.request.timeframe,
            "from": ms_to_iso(self.request.from_ms),
            "to": ms_to_iso(self.request.to_ms),
            "patterns": list(self.request.patterns),
            "requested_by": self.requester.user_name or self.requester.user_id,
            "created": ms_to_iso(self.created_ms),
            "started": None if self.started_ms is None else ms_to_iso(self.started_ms),
            "finished": None if self.finished_ms is None else ms_to_iso(self.finished_ms),
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "worker": self.worker,
            "progress": self.progress,
        }
        if queue_position is not None:
            d["queue_position"] = queue_position
        if self.error and self.state == "failed":
            d["error"] = self.error
        elif self.error:  # an earlier attempt's end (e.g. its worker died); this one went on
            d["retried_after"] = self.error
        if self.state == "done":
            d["summary"] = self.summary
            d["files"] = list(self.files)
        return d
