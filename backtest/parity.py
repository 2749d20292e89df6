"""Analysis parity: every candidate, event and analyzer state of the shared analysis path as canonical JSONL.

The stream is run exactly as live, replay and every backtest command run it: ``registry.build_engine`` +
``SignalGate`` + ``engine.step`` per closed candle. Each line is ``json.dumps(sort_keys=True)`` of

- ``{"line": "candidate", "stream": name, "settings": label, ...Signal.to_dict()}`` for EVERY candidate the
  gate judged (trade calls, watch notes and gated ones, with their reason), in the order ``step`` returns them;
- ``{"line": "event", "stream": name, ...AnalysisEvent.to_dict()}`` for every analysis event;
- ``{"line": "state", "stream": name, "candle": i, "states": [...]}``: ``engine.states()`` every
  :data:`STATE_EVERY` candles and after the last one (what ``>signal`` shows).

Two gate settings run per stream: the product defaults and a permissive gate (every threshold 0, no cooldown)
so the trade-call paths of the gate are covered even when the evidence model gates everything. The sha256 of
the lines is the parity hash: a speed change must leave it unchanged; an intentional analyzer change (a new
detector, a refitted evidence model) changes it and the reference is regenerated with::

    .venv/bin/python -m backtest.parity fixture        # rewrites tests/fixtures/analysis_parity.json

This module imports only the public analysis API (``registry.build_engine``, ``SignalGate``, ``step``,
``to_dict``) and the synthetic generators, so ``benchmarks/analysis_parity.py`` can run it inside an older
revision's tree to produce a reference JSONL for real kline files.

    .venv/bin/python -m backtest.parity dump --out FILE.jsonl [--data KLINES.csv ...] [--limit N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from src.analysis.engine import AnalysisSettings, SignalGate, step
from src.analysis.registry import build_engine
from src.analysis.types import Candle

STATE_EVERY = 1000
_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = _ROOT / "tests" / "fixtures" / "analysis_parity.json"

SETTINGS: dict[str, AnalysisSettings] = {
    "default": AnalysisSettings(),
    "permissive": AnalysisSettings(min_confidence=0.0, trade_min_rr=0.0, watch_min_rr=0.0, watch_min_score=0.0,
                                   cooldown_candles=0),
}


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"))


def stream_lines(name: str, candles: list[Candle], label: str, settings: AnalysisSettings) -> Iterator[str]:
    """The canonical lines of one stream under one gate setting (see the module docstring)."""
    if not candles:
        return
    engine = build_engine(candles[0].symbol, candles[0].timeframe, settings)
    gate = SignalGate(settings)
    last = len(candles) - 1
    for i, candle in enumerate(candles):
        r = step(engine, gate, candle)
        for s in r.candidates:
            yield _dumps({"line": "candidate", "stream": name, "settings": label, **s.to_dict()})
        if label == "default":  # events do not depend on the gate: written once
            for e in r.events:
                yield _dumps({"line": "event", "stream": name, **e.to_dict()})
        if (i + 1) % STATE_EVERY == 0 or i == last:
            yield _dumps({"line": "state", "stream": name, "settings": label, "candle": i,
                          "states": [asdict(st) for st in engine.states()]})


def all_lines(name: str, candles: list[Candle]) -> Iterator[str]:
    for label, settings in SETTINGS.items():
        yield from stream_lines(name, candles, label, settings)


def _synthetic(kind: str) -> list[Candle]:
    from backtest import synthetic

    return synthetic.generate(kind, 31, length=900).candles


def _wyckoff(side: str, variant: str) -> list[Candle]:
    from backtest import synthetic_wyckoff

    return synthetic_wyckoff.generate(side, variant, 41).candles


def _textbook(side: str) -> list[Candle]:
    from backtest import synthetic_textbook

    return synthetic_textbook.make(side, 51).candles


def _elliott(seed: int, direction: int, negative: Any) -> list[Candle]:
    from backtest import synthetic_elliott

    return synthetic_elliott.impulse_series(seed, direction=direction, depth=2, negative=negative).candles


def synthetic_cases() -> dict[str, Callable[[], list[Candle]]]:
    """Seeded synthetic streams from the project's generators: name -> candles (built lazily)."""
    from backtest import synthetic, synthetic_elliott, synthetic_wyckoff
    from tests.candlegen import random_walk

    cases: dict[str, Callable[[], list[Candle]]] = {
        "candlegen-1m": lambda: random_walk(3000, timeframe="1m", seed=11, vol=0.002),
        "candlegen-15m": lambda: random_walk(2000, timeframe="15m", seed=12, vol=0.005),
        "candlegen-1h": lambda: random_walk(2000, timeframe="1h", seed=13, vol=0.01),
        "elliott-null": lambda: synthetic_elliott.null_series(21, n=2500).candles,
    }
    for kind in synthetic.KINDS:
        cases[f"synthetic-{kind}"] = partial(_synthetic, kind)
    for side in synthetic_wyckoff.SIDES:
        for variant in synthetic_wyckoff.VARIANTS:
            cases[f"wyckoff-{side}-{variant}"] = partial(_wyckoff, side, variant)
        cases[f"textbook-{side}"] = partial(_textbook, side)
    for seed, direction, negative in ((61, 1, None), (62, -1, None), (63, 1, "overlap"), (64, -1, "deep2")):
        cases[f"elliott-{seed}"] = partial(_elliott, seed, direction, negative)
    return cases


def digest_lines(lines: Iterator[str]) -> tuple[str, int]:
    """(sha256 hex of the lines, each followed by a newline; number of lines)."""
    h = hashlib.sha256()
    n = 0
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
        n += 1
    return h.hexdigest(), n


def synthetic_digests() -> dict[str, dict[str, Any]]:
    """name -> {"sha256", "lines", "candles"} for every synthetic case."""
    out: dict[str, dict[str, Any]] = {}
    for name, make in synthetic_cases().items():
        candles = make()
        sha, n = digest_lines(all_lines(name, candles))
        out[name] = {"sha256": sha, "lines": n, "candles": len(candles)}
    return out


def _read(path: Path, limit: int) -> tuple[str, list[Candle]]:
    from src.market.klines_csv import read_klines_csv

    candles = read_klines_csv(path).candles
    return path.stem, candles[:limit] if limit else candles


def export_revision(rev: str) -> Path:
    """The tree of ``rev`` in a cache folder (exported once per commit), with this tree's parity module."""
    sha = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"], check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = Path(tempfile.gettempdir()) / "wyeli-parity" / sha
    if not (dest / ".exported").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(_ROOT), "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        (dest / ".exported").write_text(sha + "\n")
    shutil.copyfile(_ROOT / "backtest" / "parity.py", dest / "backtest" / "parity.py")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backtest.parity", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    fx = sub.add_parser("fixture", help="rewrite the synthetic reference hashes (after an intentional change)")
    fx.add_argument("--out", type=Path, default=FIXTURE)
    dp = sub.add_parser("dump", help="write the canonical JSONL of kline files (or of the synthetic cases)")
    dp.add_argument("--out", type=Path, required=True)
    dp.add_argument("--data", type=Path, nargs="*", default=[], help="kline CSVs (none: the synthetic cases)")
    dp.add_argument("--limit", type=int, default=0, help="first N candles of each file (0 = all)")
    args = ap.parse_args(argv)
    if args.cmd == "fixture":
        digests = synthetic_digests()
        args.out.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        total = sum(d["candles"] for d in digests.values())
        print(f"{len(digests)} synthetic streams, {total:,} candles -> {args.out}")
        return 0
    with args.out.open("w", encoding="utf-8") as fh:
        if args.data:
            for path in args.data:
                name, candles = _read(path, args.limit)
                for line in all_lines(name, candles):
                    fh.write(line + "\n")
        else:
            for name, make in synthetic_cases().items():
                for line in all_lines(name, make()):
                    fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
