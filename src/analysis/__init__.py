"""The analysis core. Runs the compiled build of these modules when an up-to-date one exists (see
src/native/loader.py), else this source; both are the same code."""

from pathlib import Path

from src.native import loader as _loader

__path__ = _loader.activate(__name__, __path__, Path(__file__).resolve().parent)
