"""Parity of the shared analysis path (engine + gate) with the reference outputs in tests/fixtures.

Every candidate (with its gate verdict and evidence), every analysis event and the analyzer states of 26
seeded synthetic streams hash to the values recorded before the speed work of issue 15: a speed change
must not change a single byte. An INTENTIONAL analyzer change regenerates the reference with
``.venv/bin/python -m backtest.parity fixture`` (see backtest/parity.py) in the commit that makes it.
"""

from __future__ import annotations

import json

import pytest

from backtest import parity

REFERENCE = json.loads(parity.FIXTURE.read_text(encoding="utf-8"))
CASES = parity.synthetic_cases()


def test_the_reference_covers_every_synthetic_case() -> None:
    assert sorted(REFERENCE) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_candidate_event_and_state_is_byte_identical_to_the_reference(name: str) -> None:
    candles = CASES[name]()
    sha, n = parity.digest_lines(parity.all_lines(name, candles))
    ref = REFERENCE[name]
    assert (len(candles), n, sha) == (ref["candles"], ref["lines"], ref["sha256"]), (
        f"{name}: analysis output changed; if intended, regenerate with `python -m backtest.parity fixture`")


def test_the_hash_sees_a_one_candle_change() -> None:
    """The harness is sensitive: dropping the last candle of a stream changes its hash."""
    candles = CASES["candlegen-15m"]()
    sha, _ = parity.digest_lines(parity.all_lines("candlegen-15m", candles[:-1]))
    assert sha != REFERENCE["candlegen-15m"]["sha256"]
