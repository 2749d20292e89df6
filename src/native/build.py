"""Builds the mypyc-compiled analysis core into ``.native/<tag>/`` (see :mod:`src.native.loader`).

Every module of ``src/analysis`` (the package ``__init__`` aside) is compiled as one mypyc group from a
copy of the sources in a temporary folder, so the repository tree never holds a compiled module next to its
source. The result replaces the previous build in one rename, with a manifest of the sha256 of every source
it was made from. Needs a C compiler and the Python headers; without them the build fails with the
compiler's message and the analysis runs from source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src.native.loader import MANIFEST, NATIVE_ROOT, ROOT, build_dir, source_digest, tag

PACKAGE = "src/analysis"
GROUP = "wyeli_analysis"
#: modules left to the interpreter, with the reason: the evidence fit runs offline (``backtest evidence fit``),
#: never per candle, and mypyc types ``sum()`` of its float generators as int (a TypeError at run time)
EXCLUDED: frozenset[str] = frozenset({"evidence_fit"})

SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
paths = sys.argv[1].split(",")
setup(name="wyeli-analysis-native", py_modules=[],
      ext_modules=mypycify(paths, opt_level="3", group_name={group!r}, multi_file=True),
      script_args=["build_ext", "--build-lib", "out", "--build-temp", "obj", "--parallel", sys.argv[2]])
"""


class BuildError(RuntimeError):
    """The native build failed; the message holds the compiler's or mypyc's output (tail)."""


def compiled_modules(root: Path = ROOT) -> list[str]:
    """The module names (without ``.py``) of ``src/analysis`` that the build compiles."""
    return sorted(p.stem for p in (root / PACKAGE).glob("*.py") if p.stem != "__init__" and p.stem not in EXCLUDED)


def build(root: Path = ROOT, out_root: Path = NATIVE_ROOT, jobs: int | None = None, log: bool = True) -> Path:
    """Compile the analysis core and install it as ``out_root/<tag>``; returns that folder."""
    modules = compiled_modules(root)
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wyeli-native-") as tmp:
        work = Path(tmp)
        (work / PACKAGE).mkdir(parents=True)
        shutil.copy2(root / "src" / "__init__.py", work / "src" / "__init__.py")
        digests: dict[str, str] = {}
        for src in (root / PACKAGE).glob("*.py"):  # every source: the excluded ones are type-checked too
            shutil.copy2(src, work / PACKAGE / src.name)
            if src.stem in modules:
                digests[src.stem] = source_digest(src)
        shutil.copytree(root / "src" / "native", work / "src" / "native")  # imported by the package __init__
        for data in (root / PACKAGE).iterdir():  # package data the modules read (the shipped model)
            if data.is_dir() and not data.name.startswith("__"):
                shutil.copytree(data, work / PACKAGE / data.name)
        paths = ",".join(f"{PACKAGE}/{m}.py" for m in modules)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
        proc = subprocess.run([sys.executable, "-c", SETUP.format(group=GROUP), paths, str(jobs)], cwd=work, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
            raise BuildError(f"mypyc build failed (exit {proc.returncode}):\n{tail}")
        built = work / "out"
        shared = sorted(p.name for p in built.glob(f"{GROUP}__mypyc*.so"))
        if len(shared) != 1:
            raise BuildError(f"mypyc build made no single shared library in {built}: {shared}")
        missing = [m for m in modules if not any((built / PACKAGE).glob(f"{m}.*.so"))]
        if missing:
            raise BuildError(f"mypyc build made no module for {', '.join(missing)}")
        manifest = {"tag": tag(), "shared_library": shared[0], "modules": digests, "python": sys.version,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "seconds": round(time.monotonic() - started, 1)}
        (built / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        target = build_dir(out_root)
        out_root.mkdir(parents=True, exist_ok=True)
        staged = out_root / f".{target.name}.new"
        old = out_root / f".{target.name}.old"
        for leftover in (staged, old):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(built, staged)
        if target.exists():
            target.rename(old)
        staged.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    if log:
        print(f"native build: {len(modules)} modules compiled into {target} in {time.monotonic() - started:.0f} s",
              file=sys.stderr)
    return target


def remove(out_root: Path = NATIVE_ROOT) -> bool:
    """Delete this interpreter's build (the analysis then runs from source); True if there was one."""
    target = build_dir(out_root)
    if not target.exists():
        return False
    shutil.rmtree(target)
    return True
