"""Confidence calibration (SPEC 5 last bullet): raw analyzer score -> observed hit rate, per pattern.

Label: 1 when the signal's outcome was a WIN (first target before the stop, see outcomes.py), else 0.

Fit, per (pattern, timeframe), on labelled candidates (raw scores, not gated):

- fewer than ``min_samples`` (default 30) labelled samples -> a CONSTANT map: the pattern's hit
  rate shrunk toward the base rate of all patterns of that timeframe with ``prior_strength``
  (default 10) pseudo-observations: ``(hits + k * base) / (n + k)``;
- otherwise ISOTONIC regression (pool-adjacent-violators, non-decreasing in the raw score), each
  pooled block shrunk toward the pattern's own hit rate the same way ``(sum_b + k * p) / (n_b + k)``
  (blocks of different sizes move by different amounts, so neighbours that shrinkage put out of
  order are pooled again with weights ``n_b + k``: the map stays monotone);
- a map is only kept when its in-sample Brier score is not worse than the raw score's (otherwise
  the pattern stays uncalibrated and the raw score passes through), so calibration never makes the
  training data look worse.

Evaluation is a step function inside each pooled block's raw-score range and linear between
blocks, clamped at both ends. Patterns without a map pass the raw score through unchanged.
The JSON layout (``to_json``/``from_json``) is versioned (``"version": 1``). :class:`FileCalibrator`
is the one I/O edge here: it reads/writes that JSON at CALIBRATION_PATH for the live engine.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

CALIBRATION_FORMAT_VERSION = 1
MapKind = Literal["isotonic", "constant"]


class CalibrationFormatError(ValueError):
    """A calibration document that is not valid version-1 JSON."""


@dataclass(frozen=True, slots=True)
class Block:
    """One pooled run of samples: raw scores in [lo, hi], ``n`` samples with mean label ``value``."""

    lo: float
    hi: float
    n: int
    value: float


def _pool(runs: list[list[float]]) -> list[list[float]]:
    """Weighted PAV over ascending runs [lo, hi, weight, weighted_sum, count]: merge while a run's
    mean is >= the next one's, so the means are strictly increasing afterwards."""
    stack: list[list[float]] = []
    for run in runs:
        stack.append(list(run))
        while len(stack) > 1 and stack[-2][3] / stack[-2][2] >= stack[-1][3] / stack[-1][2]:
            lo, _, w, sm, n = stack.pop(-2)
            top = stack[-1]
            stack[-1] = [lo, top[1], w + top[2], sm + top[3], n + top[4]]
    return stack


def pav(scores: Sequence[float], labels: Sequence[float]) -> list[Block]:
    """Pool-adjacent-violators: the non-decreasing least-squares fit of labels on scores.

    Equal scores are pooled first (one x gets one value). O(n log n) for the sort, O(n) after.
    """
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    runs: list[list[float]] = []
    for x, y in sorted(zip(scores, labels, strict=True)):
        if runs and runs[-1][1] == x:
            runs[-1][2] += 1
            runs[-1][3] += y
            runs[-1][4] += 1
        else:
            runs.append([x, x, 1, y, 1])
    return [Block(lo, hi, int(n), sm / w) for lo, hi, w, sm, n in _pool(runs)]


def brier(probs: Sequence[float], labels: Sequence[float]) -> float:
    """Mean squared error of probabilities against 0/1 labels (lower is better); NaN when empty."""
    if not probs:
        return float("nan")
    return sum((p - y) ** 2 for p, y in zip(probs, labels, strict=True)) / len(probs)


@dataclass(frozen=True, slots=True)
class ReliabilityRow:
    lo: float
    hi: float
    n: int
    mean_p: float
    hit_rate: float


def reliability(probs: Sequence[float], labels: Sequence[float], bins: int = 10) -> list[ReliabilityRow]:
    """Equal-width bins on [0, 1] (the last one closed); empty bins are left out."""
    acc: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for p, y in zip(probs, labels, strict=True):
        b = min(bins - 1, max(0, int(p * bins)))
        acc[b][0] += 1
        acc[b][1] += p
        acc[b][2] += y
    return [
        ReliabilityRow(b / bins, (b + 1) / bins, int(n), sp / n, sy / n) for b, (n, sp, sy) in sorted(acc.items())
    ]


def ece(probs: Sequence[float], labels: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean |mean p - hit rate| over the bins."""
    rows = reliability(probs, labels, bins)
    total = sum(r.n for r in rows)
    return sum(r.n * abs(r.mean_p - r.hit_rate) for r in rows) / total if total else float("nan")


@dataclass(frozen=True, slots=True)
class CalibrationMap:
    """The fitted map of one (pattern, timeframe); see the module docstring."""

    pattern: str
    timeframe: str
    kind: MapKind
    n: int
    hits: int
    base_rate: float
    blocks: tuple[Block, ...]
    brier_raw: float
    brier_calibrated: float

    def __call__(self, raw: float) -> float:
        blocks = self.blocks
        i = bisect_left([b.hi for b in blocks], raw)
        if i == len(blocks):
            return blocks[-1].value
        b = blocks[i]
        if raw >= b.lo or i == 0:
            return b.value
        a = blocks[i - 1]
        # between two blocks: linear, which keeps the map monotone
        t = (raw - a.hi) / (b.lo - a.hi)
        return a.value + t * (b.value - a.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "timeframe": self.timeframe,
            "kind": self.kind,
            "n": self.n,
            "hits": self.hits,
            "base_rate": self.base_rate,
            "blocks": [[b.lo, b.hi, b.n, b.value] for b in self.blocks],
            "brier_raw": self.brier_raw,
            "brier_calibrated": self.brier_calibrated,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationMap:
        kind = d["kind"]
        if kind not in ("isotonic", "constant"):
            raise CalibrationFormatError(f"unknown map kind {kind!r}")
        blocks = tuple(Block(float(lo), float(hi), int(n), float(v)) for lo, hi, n, v in d["blocks"])
        if not blocks:
            raise CalibrationFormatError(f"map {d.get('pattern')!r} has no blocks")
        for a, b in pairwise(blocks):
            if b.value < a.value or b.lo < a.hi:
                raise CalibrationFormatError(f"map {d.get('pattern')!r} is not monotone")
        if any(not 0.0 <= b.value <= 1.0 for b in blocks):
            raise CalibrationFormatError(f"map {d.get('pattern')!r} has a value outside [0, 1]")
        return cls(
            pattern=str(d["pattern"]),
            timeframe=str(d["timeframe"]),
            kind=kind,
            n=int(d["n"]),
            hits=int(d["hits"]),
            base_rate=float(d["base_rate"]),
            blocks=blocks,
            brier_raw=float(d["brier_raw"]),
            brier_calibrated=float(d["brier_calibrated"]),
        )


@dataclass(slots=True)
class CalibrationSet:
    """All maps; implements the engine's ``Calibrator`` protocol (unknown patterns pass through)."""

    maps: dict[tuple[str, str], CalibrationMap] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # "pattern|timeframe" -> why not calibrated

    def calibrate(self, pattern: str, timeframe: str, raw: float) -> float:
        m = self.maps.get((pattern, timeframe))
        return raw if m is None else m(raw)

    def to_json(self) -> str:
        doc = {
            "version": CALIBRATION_FORMAT_VERSION,
            "meta": self.meta,
            "maps": [m.to_dict() for _, m in sorted(self.maps.items())],
            "skipped": dict(sorted(self.skipped.items())),
        }
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CalibrationSet:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationFormatError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != CALIBRATION_FORMAT_VERSION:
            raise CalibrationFormatError(f"expected a version-{CALIBRATION_FORMAT_VERSION} calibration document")
        try:
            maps = [CalibrationMap.from_dict(d) for d in doc.get("maps", [])]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CalibrationFormatError):
                raise
            raise CalibrationFormatError(f"bad map entry: {exc!r}") from None
        return cls(
            maps={(m.pattern, m.timeframe): m for m in maps},
            meta=dict(doc.get("meta") or {}),
            skipped={str(k): str(v) for k, v in dict(doc.get("skipped") or {}).items()},
        )


class FileCalibrator(CalibrationSet):
    """The calibration stored at CALIBRATION_PATH, for the live engine: ``FileCalibrator.load(path)``."""

    @classmethod
    def load(cls, path: str | Path) -> FileCalibrator:
        """Read and validate the JSON file; CalibrationFormatError names the path on any problem."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise CalibrationFormatError(f"{p}: cannot read ({exc.strerror or exc})") from None
        try:
            loaded = CalibrationSet.from_json(text)
        except CalibrationFormatError as exc:
            raise CalibrationFormatError(f"{p}: {exc}") from None
        return cls(maps=loaded.maps, meta=loaded.meta, skipped=loaded.skipped)

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file + rename) so the bot never reads half a file."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(p)


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled candidate: raw score in [0, 1] and hit (1 = WIN, 0 = otherwise)."""

    pattern: str
    timeframe: str
    raw: float
    hit: int
    time_ms: int = 0  # the confirming candle's open time (for time-ordered hold-out splits)


def _shrink(total: float, n: int, prior: float, k: float) -> float:
    return (total + k * prior) / (n + k)


def fit(samples: Sequence[Sample], *, min_samples: int = 30, prior_strength: float = 10.0) -> CalibrationSet:
    """Fit one map per (pattern, timeframe); see the module docstring for the rules."""
    if min_samples < 1 or prior_strength < 0:
        raise ValueError("min_samples must be >= 1 and prior_strength >= 0")
    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    per_tf: dict[str, list[int]] = defaultdict(list)
    for s in samples:
        groups[(s.pattern, s.timeframe)].append(s)
        per_tf[s.timeframe].append(s.hit)
    out = CalibrationSet()
    for (pattern, tf), group in sorted(groups.items()):
        tf_hits = per_tf[tf]
        base = sum(tf_hits) / len(tf_hits)
        raws = [s.raw for s in group]
        ys = [float(s.hit) for s in group]
        hits = sum(s.hit for s in group)
        n = len(group)
        if n < min_samples:
            value = _shrink(hits, n, base, prior_strength)
            blocks: tuple[Block, ...] = (Block(min(raws), max(raws), n, value),)
            kind: MapKind = "constant"
            prior = base
        else:
            prior = hits / n
            # shrink each block; blocks of different sizes move by different amounts, so pool again
            # (weights n_b + k) wherever shrinkage put two neighbours out of order
            runs = []
            for blk in pav(raws, ys):
                w = blk.n + prior_strength
                runs.append([blk.lo, blk.hi, w, w * _shrink(blk.value * blk.n, blk.n, prior, prior_strength), blk.n])
            blocks = tuple(Block(lo, hi, int(c), sm / w) for lo, hi, w, sm, c in _pool(runs))
            kind = "isotonic"
        m = CalibrationMap(pattern, tf, kind, n, hits, prior, blocks, brier(raws, ys), 0.0)
        m = CalibrationMap(pattern, tf, kind, n, hits, prior, blocks, m.brier_raw, brier([m(r) for r in raws], ys))
        if m.brier_calibrated > m.brier_raw:
            out.skipped[f"{pattern}|{tf}"] = (
                f"in-sample Brier {m.brier_calibrated:.4f} would be worse than raw {m.brier_raw:.4f} (n={n})"
            )
            continue
        out.maps[(pattern, tf)] = m
    return out
