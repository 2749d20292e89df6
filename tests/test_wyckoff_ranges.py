"""Wyckoff candidate ranges: formation without a climax, several ranges at once, structure keys, the broad
synthetic family, the independent textbook generator and the real-chart label fixture."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import pytest

from backtest.synthetic import random_walk_candles
from backtest.synthetic_textbook import make
from backtest.synthetic_wyckoff import HELD_OUT_SEEDS, SIDES, TUNING_SEEDS, VARIANTS, generate
from src.analysis.types import Candle, SignalCandidate
from src.analysis.wyckoff import WyckoffAnalyzer
from tests.wyckoff_tape import accumulation_tape

LABELS = Path(__file__).parent / "fixtures" / "wyckoff_real_labels.csv"
PATTERN_EVENT = {"wyckoff_spring": "spring", "wyckoff_utad": "utad", "wyckoff_sos": "sos", "wyckoff_sow": "sow"}


def candidates(candles: list[Candle]) -> list[tuple[int, SignalCandidate]]:
    a = WyckoffAnalyzer("TESTUSDT", "1h")
    return [(i, cand) for i, c in enumerate(candles) for cand in a.on_candle(c).candidates]


def test_a_range_without_a_selling_climax_still_gives_spring_test_and_sos():
    with_climax = candidates(accumulation_tape().candles)
    without = candidates(accumulation_tape(climax_volume=1000.0).candles)
    assert [c.pattern for _, c in without] == [c.pattern for _, c in with_climax]  # phase C and D still happen
    for (_, a), (_, b) in zip(with_climax, without, strict=True):
        assert dict(b.features)["mu_climax"] < dict(a.features)["mu_climax"]  # the climax only adds evidence
        assert b.raw_score < a.raw_score


def test_every_candidate_of_one_range_names_the_same_structure():
    tape = accumulation_tape()
    cands = [c for _, c in candidates(tape.candles)]
    assert len(cands) == 4
    assert {c.structure for c in cands} == {f"wyckoff:accumulation:{tape.time('sc')}"}


def test_several_ranges_stay_alive_at_once_but_never_more_than_the_cap():
    a = WyckoffAnalyzer("TESTUSDT", "1h")
    most = 0
    for c in random_walk_candles(7, 3000):
        a.on_candle(c)
        for tracker in a._sides:
            assert len(tracker.ranges) <= a.params.max_ranges
            most = max(most, len(tracker.ranges))
    assert most >= 2


def test_one_setup_seen_by_two_ranges_is_proposed_once_per_candle():
    seen: set[tuple[int, str]] = set()
    for seed in range(4):
        for i, c in candidates(generate("accumulation", "spring", seed).candles):
            key = (seed * 10_000 + i, c.pattern)
            assert key not in seen
            seen.add(key)


def test_the_broad_family_is_deterministic_and_its_labels_follow_their_events():
    for side in SIDES:
        for variant in VARIANTS:
            a = generate(side, variant, 3)
            b = generate(side, variant, 3)
            assert a.candles == b.candles and a.labels == b.labels
            for lab in a.labels:
                assert 0 <= lab.bar <= lab.confirm < len(a.candles)
            types = [lab.type for lab in a.labels]
            assert ("sos" in types) == (side == "accumulation") and ("sow" in types) == (side == "distribution")
            if variant == "lps":
                assert "spring" not in types and "utad" not in types
    assert not set(TUNING_SEEDS) & set(HELD_OUT_SEEDS)
    with pytest.raises(ValueError):
        generate("sideways", "spring", 0)


@pytest.mark.parametrize("side", SIDES)
def test_broad_family_springs_and_breakouts_are_mostly_found(side):
    found = total = 0
    for variant in ("spring", "spring_test"):
        for seed in list(TUNING_SEEDS)[:5]:
            s = generate(side, variant, seed)
            got = [(i, PATTERN_EVENT[c.pattern]) for i, c in candidates(s.candles) if c.pattern in PATTERN_EVENT]
            for lab in s.labels:
                if lab.type in PATTERN_EVENT.values():
                    total += 1
                    found += any(t == lab.type and lab.bar <= i <= lab.confirm + 6 for i, t in got)
    assert found >= 0.7 * total


def test_the_textbook_generator_is_deterministic_and_mirrors_distribution():
    acc, dist = make("accumulation", 2), make("distribution", 2)
    assert acc.candles == make("accumulation", 2).candles
    assert [lab.event for lab in acc.labels] == ["sc", "ar", "st", "spring", "test", "sos", "lps"]
    assert [lab.event for lab in dist.labels] == ["bc", "ar", "st", "utad", "utad_test", "sow", "lpsy"]
    for c in acc.candles + dist.candles:
        c.validate()
    spring = next(lab for lab in acc.labels if lab.event == "spring")
    assert spring.confirm_bar - spring.bar in (0, 1)


def test_the_real_label_fixture_has_thirty_structures_with_ordered_dated_events():
    with LABELS.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"structure", "file", "side", "event", "event_time", "confirm_time", "reason"}  # no prices
    structures = {r["structure"] for r in rows}
    assert len(structures) >= 30
    for r in rows:
        assert r["side"] in SIDES and r["reason"]
        assert r["event"] in {"sc", "bc", "ar", "st", "spring", "utad", "sos", "sow", "lps"}
        event = datetime.fromisoformat(r["event_time"].replace("Z", "+00:00"))
        confirm = datetime.fromisoformat(r["confirm_time"].replace("Z", "+00:00"))
        assert confirm >= event
        assert r["file"].endswith(".csv") and "-" in r["file"]
    tradeable = [r for r in rows if r["event"] in PATTERN_EVENT.values()]
    assert len(tradeable) >= 40
