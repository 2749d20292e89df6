"""``python -m src.native build|status|remove``: the compiled build of the analysis core.

    build [--if-possible] [--jobs N]   compile src/analysis with mypyc into .native/<tag>/ (about a minute);
                                       --if-possible: no compiler or no mypyc is not an error (exit 0, the
                                       analysis runs from source) and an up-to-date build is kept
    status                             which build the analysis would run now, and why
    remove                             delete the build (the analysis runs from source)
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import sysconfig
from pathlib import Path

from src.native.build import BuildError, build, remove
from src.native.loader import ROOT, build_dir, check


def _status() -> str:
    return check(ROOT / "src" / "analysis", build_dir()).describe()


def _can_build() -> str:
    """'' when a build can be tried here, else why not."""
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed (it comes with mypy)"
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed (mypyc builds with it)"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    include = sysconfig.get_paths().get("include", "")
    if not (Path(include) / "Python.h").is_file():
        return f"no Python headers ({include}/Python.h)"
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.native", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile the analysis core")
    b.add_argument("--if-possible", action="store_true", help="a missing compiler or mypyc is not an error")
    b.add_argument("--jobs", type=int, default=None, help="parallel C compiles (default: CPUs, at most 4)")
    sub.add_parser("status", help="which build runs")
    sub.add_parser("remove", help="delete the build")
    args = ap.parse_args(argv)
    if args.cmd == "status":
        print(_status())
        return 0
    if args.cmd == "remove":
        print("removed" if remove() else "there was no native build")
        return 0
    if args.if_possible:
        why = _can_build()
        if why:
            print(f"native build skipped: {why}; the analysis runs as pure Python", file=sys.stderr)
            return 0
        if check(ROOT / "src" / "analysis", build_dir()).native:
            print("native build is up to date", file=sys.stderr)
            return 0
    print("compiling the analysis core with mypyc (about a minute, again only after the analysis code changes) ...",
          file=sys.stderr)
    try:
        build(jobs=args.jobs)
    except (BuildError, OSError) as exc:
        print(f"native build failed: {exc}", file=sys.stderr)
        if args.if_possible:
            print("the analysis runs as pure Python", file=sys.stderr)
            return 0
        return 1
    print(_status())
    return 0


if __name__ == "__main__":
    sys.exit(main())
