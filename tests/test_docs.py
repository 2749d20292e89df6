"""The documentation stays true to the code: every configuration variable is documented."""

from __future__ import annotations

from pathlib import Path

from src.config import Config

REPO = Path(__file__).resolve().parent.parent


def test_every_configuration_variable_is_in_the_runbook_and_env_example():
    runbook = (REPO / "RUNBOOK.md").read_text()
    example = (REPO / ".env.example").read_text()
    names = [name for name, _ in Config.from_env({}).describe()]
    assert len(names) > 40
    missing_rb = [n for n in names if f"`{n}`" not in runbook and n not in runbook]
    missing_ex = [n for n in names if n not in example]
    assert not missing_rb, missing_rb
    assert not missing_ex, missing_ex


def test_env_example_holds_placeholders_only():
    for line in (REPO / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            raise AssertionError(f".env.example must not set live values: {line}")
