"""The compiled (mypyc) build of the analysis core and its pure-Python fallback (src/native).

scripts/test builds the native core when it can and tells the suite which build it expects in
WYELI_EXPECT_BUILD; the analysis tests then run a second time with WYELI_PURE_PYTHON=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import src.analysis.wyckoff as wyckoff_module
from src.native import loader

PACKAGE = loader.ROOT / "src" / "analysis"


def test_the_suite_runs_the_build_it_was_told_to() -> None:
    expected = os.environ.get("WYELI_EXPECT_BUILD", "")
    choice = loader.current()
    if expected == "native":
        assert choice.native, choice.describe()
        assert wyckoff_module.__file__ is not None and wyckoff_module.__file__.endswith(".so")
    elif expected == "python":
        assert not choice.native
        assert wyckoff_module.__file__ is not None and wyckoff_module.__file__.endswith(".py")
    else:
        pytest.skip("WYELI_EXPECT_BUILD not set (scripts/test sets it)")


def _fake_build(folder: Path, package_dir: Path, modules: list[str], shared: str = "wyeli_analysis__mypyc.so") -> None:
    (folder / "src" / "analysis").mkdir(parents=True)
    for m in modules:
        (folder / "src" / "analysis" / f"{m}.{loader.tag()}.so").write_bytes(b"")
    (folder / shared).write_bytes(b"")
    manifest = {"tag": loader.tag(), "shared_library": shared,
                "modules": {m: loader.source_digest(package_dir / f"{m}.py") for m in modules}}
    (folder / loader.MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name in ("pivots", "indicators"):
        shutil.copy2(PACKAGE / f"{name}.py", pkg / f"{name}.py")
    return pkg


def test_an_up_to_date_build_is_chosen(tmp_path: Path, package_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loader.PURE_ENV, raising=False)
    _fake_build(tmp_path / "b", package_copy, ["pivots", "indicators"])
    choice = loader.check(package_copy, tmp_path / "b")
    assert choice.native and choice.modules == ("indicators", "pivots")
    assert choice.describe().startswith("native (mypyc, 2 modules")


def test_an_edited_source_makes_the_whole_build_fall_back(tmp_path: Path, package_copy: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loader.PURE_ENV, raising=False)
    _fake_build(tmp_path / "b", package_copy, ["pivots", "indicators"])
    with (package_copy / "pivots.py").open("a", encoding="utf-8") as f:
        f.write("\n# edited after the build\n")
    choice = loader.check(package_copy, tmp_path / "b")
    assert not choice.native
    assert "stale: pivots.py changed" in choice.describe()


def test_a_deleted_source_makes_the_build_stale(tmp_path: Path, package_copy: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loader.PURE_ENV, raising=False)
    _fake_build(tmp_path / "b", package_copy, ["pivots", "indicators"])
    (package_copy / "indicators.py").unlink()
    assert "stale: indicators.py" in loader.check(package_copy, tmp_path / "b").reason


@pytest.mark.parametrize("damage", ["no manifest", "bad json", "other interpreter", "no shared library",
                                    "a module missing"])
def test_a_broken_build_falls_back_with_its_reason(tmp_path: Path, package_copy: Path, damage: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loader.PURE_ENV, raising=False)
    folder = tmp_path / "b"
    _fake_build(folder, package_copy, ["pivots", "indicators"])
    manifest = folder / loader.MANIFEST
    expected = {"no manifest": "no native build", "bad json": "unreadable native manifest",
                "other interpreter": "native build is for cpython-399", "no shared library": "incomplete",
                "a module missing": "incomplete: pivots missing"}[damage]
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "bad json":
        manifest.write_text("{", encoding="utf-8")
    elif damage == "other interpreter":
        m = json.loads(manifest.read_text(encoding="utf-8"))
        manifest.write_text(json.dumps({**m, "tag": "cpython-399-x86_64-linux-gnu"}), encoding="utf-8")
    elif damage == "no shared library":
        (folder / "wyeli_analysis__mypyc.so").unlink()
    else:
        next((folder / "src" / "analysis").glob("pivots.*.so")).unlink()
    choice = loader.check(package_copy, folder)
    assert not choice.native
    assert expected in choice.reason


def test_the_pure_python_switch_wins_over_a_good_build(tmp_path: Path, package_copy: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_build(tmp_path / "b", package_copy, ["pivots"])
    monkeypatch.setenv(loader.PURE_ENV, "1")
    choice = loader.check(package_copy, tmp_path / "b")
    assert not choice.native and choice.describe() == "pure Python (WYELI_PURE_PYTHON=1)"


def test_the_real_build_is_refused_for_an_edited_copy_of_the_sources(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The stale guard on the real artefacts: the build in .native matches the sources, and stops matching
    as soon as one byte of one compiled module's source changes."""
    monkeypatch.delenv(loader.PURE_ENV, raising=False)
    folder = loader.build_dir()
    if not (folder / loader.MANIFEST).is_file():
        if os.environ.get("WYELI_EXPECT_BUILD") == "native":
            pytest.fail(f"no native build in {folder}")
        pytest.skip("no native build here")
    assert loader.check(PACKAGE, folder).native
    copy = tmp_path / "analysis"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "gate.py").write_bytes((copy / "gate.py").read_bytes().replace(b"\n", b"\n ", 1)[:-1] + b"\n")
    assert "stale: gate.py changed" in loader.check(copy, folder).reason


def test_a_fresh_interpreter_logs_the_build_it_chose() -> None:
    """What the bot's start-up line prints: the same choice in a new process, honouring the switch."""
    code = "import src.analysis; from src.native import loader; print(loader.describe())"
    env = {**os.environ, loader.PURE_ENV: "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=loader.ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "pure Python (WYELI_PURE_PYTHON=1)"


def test_the_status_command_names_the_build() -> None:
    out = subprocess.run([sys.executable, "-m", "src.native", "status"], cwd=loader.ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith(("native (mypyc", "pure Python ("))


def test_frozen_analysis_objects_survive_pickling_as_the_process_pools_send_them() -> None:
    """Backtests send settings, candles and signals between processes; a compiled frozen dataclass cannot be
    unpickled field by field (src/analysis/pickling.py rebuilds it by its constructor)."""
    import pickle

    from src.analysis.engine import SignalGate, step
    from src.analysis.evidence import load_default_model
    from src.analysis.registry import build_engine
    from src.analysis.settings import AnalysisSettings
    from tests.candlegen import random_walk

    settings = AnalysisSettings(min_confidence=0.0, trade_min_rr=0.0)
    candles = random_walk(600, timeframe="15m", seed=4)
    engine, gate = build_engine("BTCUSDT", "15m", settings), SignalGate(settings)
    signals, events = [], []
    for c in candles:
        r = step(engine, gate, c)
        signals.extend(r.candidates)
        events.extend(r.events)
    assert signals and events
    model = load_default_model()
    for obj in (settings, candles[-1], signals, events, model.hyper, list(model.cells.values())[:3]):
        assert pickle.loads(pickle.dumps(obj)) == obj
    again = pickle.loads(pickle.dumps(model))
    assert again.to_json() == model.to_json()
