"""Chooses the build of the analysis core at import: the mypyc-compiled modules, or the pure-Python source.

The compiled modules live outside the source tree, in ``.native/<tag>/`` (``tag`` = the interpreter's
extension suffix, e.g. ``cpython-311-x86_64-linux-gnu``), written by ``python -m src.native build``.
``src/analysis/__init__.py`` calls :func:`activate`, which puts that folder in front of the package's
``__path__`` only when every rule holds:

- ``WYELI_PURE_PYTHON`` is not set to ``1`` (the tests' and the user's switch to the fallback);
- ``manifest.json`` exists and was built for this interpreter (same extension suffix);
- the sha256 of EVERY compiled module's source equals the one recorded at build time, so an edited
  ``.py`` file is never shadowed by a stale compiled module (the whole build falls back, not one module:
  compiled modules call each other directly).

Otherwise the source runs, and :func:`describe` says why. The choice is made once per process. This module
imports nothing from the project: it sits below every layer.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NATIVE_ROOT = ROOT / ".native"
MANIFEST = "manifest.json"
PURE_ENV = "WYELI_PURE_PYTHON"


def tag() -> str:
    """This interpreter's extension-module tag, e.g. ``cpython-311-x86_64-linux-gnu``."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]  # ".cpython-311-x86_64-linux-gnu.so"
    return suffix.strip(".").rsplit(".", 1)[0] or "native"


def build_dir(root: Path = NATIVE_ROOT) -> Path:
    return root / tag()


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class BuildChoice:
    """What :func:`activate` chose: ``native`` True when the compiled modules run; ``reason`` says why not."""

    native: bool
    reason: str
    modules: tuple[str, ...] = ()
    folder: str = ""

    def describe(self) -> str:
        if self.native:
            return f"native (mypyc, {len(self.modules)} modules from {self.folder})"
        return f"pure Python ({self.reason})"


_choice: BuildChoice | None = None


def check(package_dir: Path, folder: Path) -> BuildChoice:
    """Whether the build in ``folder`` may replace the sources in ``package_dir`` (no side effects)."""
    if os.environ.get(PURE_ENV, "") == "1":
        return BuildChoice(False, f"{PURE_ENV}=1")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return BuildChoice(False, "no native build; `python -m src.native build` makes one")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        modules: dict[str, str] = dict(manifest["modules"])
        shared = str(manifest["shared_library"])
        built_tag = str(manifest["tag"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return BuildChoice(False, f"unreadable native manifest {manifest_path}: {exc}")
    if built_tag != tag():
        return BuildChoice(False, f"native build is for {built_tag}, this interpreter is {tag()}")
    if not (folder / shared).is_file():
        return BuildChoice(False, f"native build incomplete: {shared} missing")
    for name, digest in sorted(modules.items()):
        src = package_dir / f"{name}.py"
        if not src.is_file() or source_digest(src) != digest:
            return BuildChoice(False, f"native build stale: {name}.py changed since it was built; rebuild with "
                                      "`python -m src.native build`")
        if not any((folder / "src" / "analysis").glob(f"{name}.*.so")):
            return BuildChoice(False, f"native build incomplete: {name} missing")
    return BuildChoice(True, "", tuple(sorted(modules)), str(folder))


def activate(package: str, path: list[str], package_dir: Path, folder: Path | None = None) -> list[str]:
    """The ``__path__`` the analysis package should use (see the module docstring); loads the build's shared
    library module when the compiled modules are chosen."""
    global _choice
    folder = build_dir() if folder is None else folder
    choice = check(package_dir, folder)
    if choice.native:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        shared = str(manifest["shared_library"])
        name = shared.split(".", 1)[0]
        if name not in sys.modules:
            # the compiled modules import their shared library by its top-level name
            spec = importlib.util.spec_from_file_location(name, folder / shared)
            if spec is None or spec.loader is None:
                choice = BuildChoice(False, f"cannot load {folder / shared}")
            else:
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except ImportError as exc:
                    del sys.modules[name]
                    choice = BuildChoice(False, f"cannot load {folder / shared}: {exc}")
    _choice = choice
    if not choice.native:
        return list(path)
    return [str(folder / package.replace(".", os.sep)), *path]


def current() -> BuildChoice:
    """The build chosen when the analysis package was imported."""
    return _choice if _choice is not None else BuildChoice(False, "the analysis package is not imported yet")


def describe() -> str:
    """One line for logs and benchmarks: which build of the analysis core runs, and why."""
    return current().describe()
