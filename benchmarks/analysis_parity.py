"""Parity on real klines: this tree's analysis output against the output of another git revision.

    .venv/bin/python benchmarks/analysis_parity.py [--ref REV] [--data-dir DIR] [--limit N] [FILE.csv ...]

READS REAL DATA from ``DIR/klines`` (default: $WYELI_DATA_DIR, else ../shared/data relative to the repository);
default files: BTCUSDT 1m, 15m and 1h. For each file it writes the canonical JSONL of backtest/parity.py
(every candidate with its gate verdict under the default and a permissive gate, every event, the analyzer
states) twice: once from ``--ref`` (default ``main``; exported with ``git archive`` into a cache folder under
$TMPDIR/wyeli-parity/<commit>/, with this tree's backtest/parity.py copied in, run in a subprocess) and once
from this tree, and prints both sha256 hashes, the line counts and the first differing line if any.
Exit status 1 when a file differs. After an INTENTIONAL analyzer change, compare against the commit that
made it (``--ref HEAD`` once committed) and regenerate the synthetic fixture with
``.venv/bin/python -m backtest.parity fixture``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtest import parity  # noqa: E402
from backtest.parity import export_revision  # noqa: E402
from src.market.klines_csv import read_klines_csv  # noqa: E402

FILES = ("BTCUSDT-1m-2025-05.csv", "BTCUSDT-15m-2023-2025H1.csv", "BTCUSDT-1h-2019-2025H1.csv")


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("WYELI_DATA_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def reference_jsonl(tree: Path, path: Path, limit: int) -> Path:
    out = tree / f"ref-{path.stem}-{limit}.jsonl"
    if not out.is_file():
        tmp = out.with_suffix(".part")
        subprocess.run([sys.executable, "-m", "backtest.parity", "dump", "--out", str(tmp), "--data", str(path),
                        "--limit", str(limit)], cwd=tree, check=True)
        tmp.replace(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help=f"kline CSV names under DIR/klines (default: {', '.join(FILES)})")
    ap.add_argument("--ref", default="main", help="git revision producing the reference (default main)")
    ap.add_argument("--data-dir", help="folder holding klines/ (default $WYELI_DATA_DIR or ../shared/data)")
    ap.add_argument("--limit", type=int, default=0, help="first N candles of each file (0 = all)")
    args = ap.parse_args()
    root = data_dir(args.data_dir) / "klines"
    paths = [root / f for f in (args.files or FILES) if (root / f).is_file()]
    if not paths:
        print(f"no kline files found in {root} (this benchmark reads real data: set WYELI_DATA_DIR or --data-dir)")
        return 0
    tree = export_revision(args.ref)
    print(f"reference: {args.ref} = {tree.name[:12]} (tree {tree}); current: {ROOT}")
    differs = 0
    for path in paths:
        t = time.perf_counter()
        cached = (tree / f"ref-{path.stem}-{args.limit}.jsonl").is_file()
        ref_path = reference_jsonl(tree, path, args.limit)
        t_ref = time.perf_counter() - t
        candles = read_klines_csv(path).candles
        candles = candles[: args.limit] if args.limit else candles
        h_ref, h_cur = hashlib.sha256(), hashlib.sha256()
        first_diff: tuple[int, str, str] | None = None
        n_ref = n_cur = 0
        t = time.process_time()
        with ref_path.open(encoding="utf-8") as ref:
            for line in parity.all_lines(path.stem, candles):
                n_cur += 1
                h_cur.update(line.encode() + b"\n")
                r = ref.readline().rstrip("\n")
                if r:
                    n_ref += 1
                    h_ref.update(r.encode() + b"\n")
                if first_diff is None and r != line:
                    first_diff = (n_cur, r, line)
            for r in ref:
                n_ref += 1
                h_ref.update(r.encode())
                if first_diff is None:
                    first_diff = (n_ref, r.rstrip("\n"), "")
        cpu = time.process_time() - t
        same = h_ref.hexdigest() == h_cur.hexdigest() and n_ref == n_cur
        differs += not same
        print(f"{path.name}: {len(candles):,} candles; reference {n_ref:,} lines sha256 {h_ref.hexdigest()[:16]} "
              f"({'cached' if cached else f'{t_ref:.0f} s'}); current {n_cur:,} lines sha256 "
              f"{h_cur.hexdigest()[:16]} ({cpu:.1f} s CPU incl. both gate settings): "
              f"{'IDENTICAL' if same else 'DIFFERENT'}")
        if first_diff is not None:
            k, r, c = first_diff
            print(f"  first difference at line {k}:\n  ref: {r[:400]}\n  cur: {c[:400]}")
    return 1 if differs else 0


if __name__ == "__main__":
    raise SystemExit(main())
