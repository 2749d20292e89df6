"""Domain types shared by every layer: closed candles, candidate signals, signals, analysis events.

All times are UTC epoch milliseconds (names end in ``_ms``) except ``Signal.generated_at``,
which is ISO-8601 UTC text as the public signal format requires. Prices and volumes are floats:
Binance sends decimal strings, which parse to the nearest double (15-17 significant digits,
more than any USDT-M tick size needs).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Literal

from src.analysis.pickling import register_frozen

Direction = Literal["LONG", "SHORT"]
DIRECTIONS: tuple[Direction, ...] = ("LONG", "SHORT")
SignalKind = Literal["trade", "watch", "gated"]
SIGNAL_KINDS: tuple[SignalKind, ...] = ("trade", "watch", "gated")


class InvalidCandle(ValueError):
    """A candle whose numbers cannot be real market data (NaN, negative, high < low, ...)."""


@dataclass(frozen=True, slots=True)
class Candle:
    """One kline of ``timeframe`` for ``symbol``, keyed by ``open_time_ms``.

    ``close_time_ms`` follows Binance: open_time + interval - 1 ms. ``closed`` is False only for
    an in-progress kline seen on the WebSocket; analyzers never receive such a candle.
    """

    symbol: str
    timeframe: str
    open_time_ms: int
    close_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float = 0.0
    trades: int = 0
    taker_buy_volume: float = 0.0
    taker_buy_quote_volume: float = 0.0
    closed: bool = True

    def validate(self) -> Candle:
        """Raise InvalidCandle unless prices are finite and > 0, low <= open,close <= high,
        volumes finite and >= 0, and close_time > open_time. Returns self for chaining.

        Every analyzer validates the candle it is handed, so one candle is checked several times per step:
        the last candle that passed is remembered (by identity; a Candle is immutable) and passes again
        for free. A passing candle costs one chain of comparisons (NaN fails every comparison, so
        ``0 < low <= open <= high < inf`` also proves finiteness); the detailed checks run only to word
        the error."""
        global _last_valid
        if self is _last_valid:
            return self
        lo, hi = self.low, self.high
        if (0.0 < lo <= self.open <= hi < _INF and lo <= self.close <= hi
                and 0.0 <= self.volume < _INF and 0.0 <= self.quote_volume < _INF
                and 0.0 <= self.taker_buy_volume < _INF and 0.0 <= self.taker_buy_quote_volume < _INF
                and self.trades >= 0 and self.close_time_ms > self.open_time_ms):
            _last_valid = self
            return self
        prices = (self.open, self.high, self.low, self.close)
        if not all(math.isfinite(p) and p > 0 for p in prices):
            raise InvalidCandle(f"non-positive or non-finite price in {self.key}: {prices}")
        if not (self.low <= min(self.open, self.close) and max(self.open, self.close) <= self.high):
            raise InvalidCandle(f"inconsistent OHLC in {self.key}: {prices}")
        vols = (self.volume, self.quote_volume, self.taker_buy_volume, self.taker_buy_quote_volume)
        if not all(math.isfinite(v) and v >= 0 for v in vols) or self.trades < 0:
            raise InvalidCandle(f"negative or non-finite volume in {self.key}")
        if self.close_time_ms <= self.open_time_ms:
            raise InvalidCandle(f"close_time <= open_time in {self.key}")
        return self

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.symbol, self.timeframe, self.open_time_ms)

    @property
    def stream(self) -> tuple[str, str]:
        return (self.symbol, self.timeframe)


_INF = math.inf
_last_valid: Candle | None = None  # the last candle Candle.validate passed (see there)


@dataclass(slots=True, unsafe_hash=True)
class SignalCandidate:
    """What an analyzer proposes on one closed candle, before the evidence model and the gate.

    ``raw_score`` is in [0, 1] (how textbook the setup looks; not a probability) and is kept on the final
    signal as ``raw_confidence``. ``features`` are (name, value) pairs of the evidence that made the score.
    ``structure`` names the market structure the setup comes from (a Wyckoff range, an Elliott count's
    origin), the same for every candidate of that structure whatever the pattern or pivot degree, so
    the gate can give one structure one signal; "" when the analyzer cannot tell.
    """

    analyzer: Final[str]
    pattern: Final[str]
    direction: Final[Direction]
    raw_score: Final[float]
    entry: Final[float]
    stop_loss: Final[float]
    take_profits: Final[tuple[float, ...]]
    reasons: Final[tuple[str, ...]]
    features: Final[tuple[tuple[str, float], ...]]
    structure: Final[str]

    def __init__(self, analyzer: str, pattern: str, direction: Direction, raw_score: float, entry: float,
                 stop_loss: float, take_profits: tuple[float, ...], reasons: tuple[str, ...],
                 features: tuple[tuple[str, float], ...] = (), structure: str = "") -> None:
        # explicit __init__ with Final fields instead of frozen=True: mypyc compiles it (a frozen dataclass's
        # generated __init__ runs interpreted, one object.__setattr__ per field); mypy still rejects assignments
        self.analyzer = analyzer
        self.pattern = pattern
        self.direction = direction
        self.raw_score = raw_score
        self.entry = entry
        self.stop_loss = stop_loss
        self.take_profits = take_profits
        self.reasons = reasons
        self.features = features
        self.structure = structure


@dataclass(slots=True, unsafe_hash=True)
class Evidence:
    """What the evidence model says about one signal (SPEC 5a): estimates of the trade's net R after fees
    under the SPEC 7 outcome rules, fitted out of sample, never a raw score.

    ``p_win`` = P(net R > 0); ``expected_r`` = E[net R] with the interval ``[expected_r_lo, expected_r_hi]``
    (``interval`` is its central coverage, e.g. 0.8; with ``reference_n`` > 0 it is the range of the AVERAGE
    net R of that many such signals, which is what a track record can be checked against). The track record
    is the pattern's (pattern, timeframe) cell: the out-of-sample backtest (``backtest_n`` trades, mean net R and its 95 % CI) and
    the live record from the store (``live_n`` graded signals and their mean net R).
    """

    p_win: Final[float]
    expected_r: Final[float]
    expected_r_lo: Final[float]
    expected_r_hi: Final[float]
    interval: Final[float]
    model_version: Final[str]
    backtest_n: Final[int]
    backtest_mean_r: Final[float | None]
    backtest_ci: Final[tuple[float, float] | None]
    live_n: Final[int]
    live_mean_r: Final[float | None]
    reference_n: Final[int]

    def __init__(self, p_win: float, expected_r: float, expected_r_lo: float, expected_r_hi: float, interval: float,
                 model_version: str, backtest_n: int = 0, backtest_mean_r: float | None = None,
                 backtest_ci: tuple[float, float] | None = None, live_n: int = 0, live_mean_r: float | None = None,
                 reference_n: int = 0) -> None:
        # explicit __init__ with Final fields instead of frozen=True: mypyc compiles it (a frozen dataclass's
        # generated __init__ runs interpreted, one object.__setattr__ per field); mypy still rejects assignments
        self.p_win = p_win
        self.expected_r = expected_r
        self.expected_r_lo = expected_r_lo
        self.expected_r_hi = expected_r_hi
        self.interval = interval
        self.model_version = model_version
        self.backtest_n = backtest_n
        self.backtest_mean_r = backtest_mean_r
        self.backtest_ci = backtest_ci
        self.live_n = live_n
        self.live_mean_r = live_mean_r
        self.reference_n = reference_n

    def to_dict(self) -> dict[str, Any]:
        return {
            "p_win": self.p_win,
            "expected_r": self.expected_r,
            "expected_r_lo": self.expected_r_lo,
            "expected_r_hi": self.expected_r_hi,
            "interval": self.interval,
            "model_version": self.model_version,
            "backtest_n": self.backtest_n,
            "backtest_mean_r": self.backtest_mean_r,
            "backtest_ci": None if self.backtest_ci is None else list(self.backtest_ci),
            "live_n": self.live_n,
            "live_mean_r": self.live_mean_r,
            "reference_n": self.reference_n,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        ci = d.get("backtest_ci")
        bmr, lmr = d.get("backtest_mean_r"), d.get("live_mean_r")
        return cls(
            p_win=float(d["p_win"]),
            expected_r=float(d["expected_r"]),
            expected_r_lo=float(d["expected_r_lo"]),
            expected_r_hi=float(d["expected_r_hi"]),
            interval=float(d.get("interval", 0.8)),
            model_version=str(d.get("model_version", "")),
            backtest_n=int(d.get("backtest_n", 0)),
            backtest_mean_r=None if bmr is None else float(bmr),
            backtest_ci=None if ci is None else (float(ci[0]), float(ci[1])),
            live_n=int(d.get("live_n", 0)),
            live_mean_r=None if lmr is None else float(lmr),
            reference_n=int(d.get("reference_n") or 0),
        )


# copied per id: hashlib.sha256() looks the digest up in OpenSSL by name on every call, a third of its cost
_SHA256: Final = hashlib.sha256()


def signal_id(symbol: str, timeframe: str, candle_time_ms: int, pattern: str, direction: str) -> str:
    """Deterministic signal id: first 24 hex chars of sha256("symbol|timeframe|candle_time_ms|pattern|direction")."""
    h = _SHA256.copy()
    h.update(f"{symbol}|{timeframe}|{candle_time_ms}|{pattern}|{direction}".encode())
    return h.hexdigest()[:24]


# below 2**32 s, ms / 1000 is within 0.48 us of the exact time, so datetime rounds it back to the exact millisecond
_ISO_FAST_MAX_MS: Final = 4_294_967_296_000
# zero-padded fields by lookup: a format spec per field ("{x:02d}") costs a generic __format__ call under mypyc
_D2: Final[tuple[str, ...]] = tuple(f"{i:02d}" for i in range(100))
_D3: Final[tuple[str, ...]] = tuple(f"{i:03d}" for i in range(1000))


@lru_cache(maxsize=4096)
def ms_to_iso(ms: int) -> str:
    """Epoch ms -> ISO-8601 UTC with millisecond precision and a ``Z`` suffix.

    Memoised (4,096 entries): the same pivot and candle times are written into many reasons. From 1970 to 2106
    the date is computed in integers (H. Hinnant's days -> civil date), the same text as datetime's and about
    ten times cheaper; other times go through datetime."""
    if not 0 <= ms < _ISO_FAST_MAX_MS:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    secs = ms // 1000  # native integer ops (divmod is a generic call under mypyc)
    milli = ms - secs * 1000
    days = secs // 86_400
    sod = secs - days * 86_400
    z = days + 719_468  # days since 0000-03-01
    era = z // 146_097
    doe = z - era * 146_097  # day of the 400-year era
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of the March-based year
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    hh = sod // 3600
    rem = sod - hh * 3600
    mm = rem // 60
    ss = rem - mm * 60
    # a 4-digit year from 1970 to 2106: str(year) is its "{:04d}"
    return (str(year) + "-" + _D2[month] + "-" + _D2[day] + "T" + _D2[hh] + ":" + _D2[mm] + ":" + _D2[ss] + "."
            + _D3[milli] + "Z")


def iso_to_ms(text: str) -> int:
    """ISO-8601 (``Z`` or offset; naive means UTC) -> epoch ms."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def reward_risk(entry: float, stop_loss: float, take_profits: tuple[float, ...]) -> float | None:
    """|TP1 - entry| / |entry - stop|; None without targets or risk (``Signal.risk_reward``, from the fields)."""
    risk = abs(entry - stop_loss)
    if not take_profits or risk == 0:
        return None
    return abs(take_profits[0] - entry) / risk


@dataclass(slots=True, unsafe_hash=True)
class Signal:
    """A gated signal, as stored, posted and graded.

    ``candle_time_ms`` is the open time of the candle that confirmed the setup; ``generated_at`` is
    that candle's close (ISO-8601 UTC). ``confidence`` is the evidence model's probability that the gate
    compared with MIN_CONFIDENCE (src/analysis/evidence.py: P(the average net R of 20 such signals > 0));
    ``raw_confidence`` is the analyzer's raw score.

    ``kind`` is the gate's verdict: a ``"trade"`` call, a ``"watch"`` note (not a trade call), or
    ``"gated"`` (kept in the store with ``gate_reason``, never posted). ``structure_id`` is the same
    for every candidate from one structure; ``evidence`` holds the evidence model's estimates.
    """

    id: Final[str]
    symbol: Final[str]
    timeframe: Final[str]
    pattern: Final[str]
    direction: Final[Direction]
    confidence: Final[float]
    raw_confidence: Final[float]
    entry: Final[float]
    stop_loss: Final[float]
    take_profits: Final[tuple[float, ...]]
    candle_time_ms: Final[int]
    generated_at: Final[str]
    reasons: Final[tuple[str, ...]]
    analyzer_version: Final[str]
    config_hash: Final[str]
    features: Final[tuple[tuple[str, float], ...]]
    kind: Final[SignalKind]
    gate_reason: Final[str]
    structure_id: Final[str]
    evidence: Final[Evidence | None]

    def __init__(self, id: str, symbol: str, timeframe: str, pattern: str, direction: Direction, confidence: float,
                 raw_confidence: float, entry: float, stop_loss: float, take_profits: tuple[float, ...],
                 candle_time_ms: int, generated_at: str, reasons: tuple[str, ...], analyzer_version: str,
                 config_hash: str, features: tuple[tuple[str, float], ...] = (), kind: SignalKind = "trade",
                 gate_reason: str = "", structure_id: str = "", evidence: Evidence | None = None) -> None:
        # explicit __init__ with Final fields instead of frozen=True: mypyc compiles it (a frozen dataclass's
        # generated __init__ runs interpreted, one object.__setattr__ per field); mypy still rejects assignments
        self.id = id
        self.symbol = symbol
        self.timeframe = timeframe
        self.pattern = pattern
        self.direction = direction
        self.confidence = confidence
        self.raw_confidence = raw_confidence
        self.entry = entry
        self.stop_loss = stop_loss
        self.take_profits = take_profits
        self.candle_time_ms = candle_time_ms
        self.generated_at = generated_at
        self.reasons = reasons
        self.analyzer_version = analyzer_version
        self.config_hash = config_hash
        self.features = features
        self.kind = kind
        self.gate_reason = gate_reason
        self.structure_id = structure_id
        self.evidence = evidence

    def with_verdict(self, kind: SignalKind, gate_reason: str) -> Signal:
        """A copy with the gate's ``kind`` and ``gate_reason`` (what ``dataclasses.replace`` would build,
        without its per-call field introspection: the gate judges every candidate of every candle)."""
        return Signal(self.id, self.symbol, self.timeframe, self.pattern, self.direction, self.confidence,
                      self.raw_confidence, self.entry, self.stop_loss, self.take_profits, self.candle_time_ms,
                      self.generated_at, self.reasons, self.analyzer_version, self.config_hash, self.features,
                      kind, gate_reason, self.structure_id, self.evidence)

    @property
    def risk(self) -> float:
        """Distance entry -> stop in price units (always > 0 for a valid signal)."""
        return abs(self.entry - self.stop_loss)

    @property
    def risk_reward(self) -> float | None:
        """Reward of the first target over the risk; None without targets or risk."""
        return reward_risk(self.entry, self.stop_loss, self.take_profits)

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape (``backtest signals`` lines, previews, REST rows).

        The evidence is flattened into ``p_win``, ``expected_r``, ``expected_r_lo`` and ``expected_r_hi``
        (the measurement contract) and kept whole under ``evidence``."""
        ev = self.evidence
        return {
            "id": self.id,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "pattern": self.pattern,
            "direction": self.direction,
            "confidence": self.confidence,
            "raw_confidence": self.raw_confidence,
            "entry": self.entry,
            "stop_loss": self.stop_loss,
            "take_profits": list(self.take_profits),
            "candle_time": self.candle_time_ms,
            "generated_at": self.generated_at,
            "reasons": list(self.reasons),
            "analyzer_version": self.analyzer_version,
            "config_hash": self.config_hash,
            "features": {k: v for k, v in self.features},
            "kind": self.kind,
            "gate_reason": self.gate_reason,
            "structure_id": self.structure_id,
            "p_win": None if ev is None else ev.p_win,
            "expected_r": None if ev is None else ev.expected_r,
            "expected_r_lo": None if ev is None else ev.expected_r_lo,
            "expected_r_hi": None if ev is None else ev.expected_r_hi,
            "evidence": None if ev is None else ev.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signal:
        direction = d["direction"]
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be LONG or SHORT, got {direction!r}")
        feats = d.get("features") or {}
        kind = d.get("kind") or "trade"
        if kind not in SIGNAL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(SIGNAL_KINDS)}, got {kind!r}")
        ev = d.get("evidence")
        return cls(
            id=str(d["id"]),
            symbol=str(d["symbol"]),
            timeframe=str(d["timeframe"]),
            pattern=str(d["pattern"]),
            direction=direction,
            confidence=float(d["confidence"]),
            raw_confidence=float(d.get("raw_confidence", d["confidence"])),
            entry=float(d["entry"]),
            stop_loss=float(d["stop_loss"]),
            take_profits=tuple(float(x) for x in d["take_profits"]),
            candle_time_ms=int(d["candle_time"]),
            generated_at=str(d["generated_at"]),
            reasons=tuple(str(r) for r in d["reasons"]),
            analyzer_version=str(d.get("analyzer_version", "")),
            config_hash=str(d.get("config_hash", "")),
            # JSON has no NaN/inf: a non-finite feature travels as null (orjson, REST rows) and reads back as NaN
            features=tuple((str(k), math.nan if v is None else float(v)) for k, v in dict(feats).items()),
            kind=kind,
            gate_reason=str(d.get("gate_reason") or ""),
            structure_id=str(d.get("structure_id") or ""),
            evidence=None if not ev else Evidence.from_dict(dict(ev)),
        )


EventKind = Literal["wyckoff_event", "pivot", "elliott_count"]


@dataclass(slots=True, unsafe_hash=True)
class AnalysisEvent:
    """One entry of the analysis trail (``backtest events``).

    ``candle_time_ms`` is the bar the event refers to (e.g. the spring's low bar, the pivot bar);
    ``recognised_ms`` is the open time of the closed bar on which the analyzer recognised it
    (>= candle_time_ms: recognition never precedes the data that proves it).
    """

    kind: Final[EventKind]
    type: Final[str]
    symbol: Final[str]
    timeframe: Final[str]
    candle_time_ms: Final[int]
    recognised_ms: Final[int]
    price: Final[float]
    phase: Final[str]
    details: Final[tuple[tuple[str, str], ...]]

    def __init__(self, kind: EventKind, type: str, symbol: str, timeframe: str, candle_time_ms: int,
                 recognised_ms: int, price: float, phase: str = "",
                 details: tuple[tuple[str, str], ...] = ()) -> None:
        # explicit __init__ with Final fields instead of frozen=True: mypyc compiles it (a frozen dataclass's
        # generated __init__ runs interpreted, one object.__setattr__ per field); mypy still rejects assignments
        self.kind = kind
        self.type = type
        self.symbol = symbol
        self.timeframe = timeframe
        self.candle_time_ms = candle_time_ms
        self.recognised_ms = recognised_ms
        self.price = price
        self.phase = phase
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "candle_time": self.candle_time_ms,
            "recognised_at": self.recognised_ms,
            "price": self.price,
            "phase": self.phase,
            "details": {k: v for k, v in self.details},
        }


@dataclass(frozen=True, slots=True)
class AnalyzerState:
    """A human-readable snapshot of one analyzer for ``>signal`` (even below the threshold).

    ``summary`` is one line (e.g. "Accumulation, phase C"); ``lines`` hold the recent events or the
    leading count with its invalidation level; ``levels`` are (label, price) pairs a chart can draw.
    """

    analyzer: str
    summary: str
    lines: tuple[str, ...] = ()
    levels: tuple[tuple[str, float], ...] = ()
    pivots: tuple[tuple[int, float, str], ...] = ()  # (open_time_ms, price, label)


register_frozen(Candle, SignalCandidate, Evidence, Signal, AnalysisEvent, AnalyzerState)

