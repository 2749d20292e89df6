"""Parsing of >backtest / >research arguments: periods, timeframes, patterns, friendly errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.bot.discord.job_arguments import ArgumentProblem, parse_backtest, parse_period, parse_research
from src.jobs.model import DAY_MS
from src.jobs.patterns import resolve_pattern

NOW = int(datetime(2025, 6, 15, 12, tzinfo=UTC).timestamp() * 1000)
SYMS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TFS = ("15m", "1h", "4h")


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc, arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("2024", (ms(2024, 1, 1), ms(2025, 1, 1))),
    ("2024-03", (ms(2024, 3, 1), ms(2024, 4, 1))),
    ("2024-12", (ms(2024, 12, 1), ms(2025, 1, 1))),
    ("2024-01-01..2024-06-30", (ms(2024, 1, 1), ms(2024, 7, 1))),
    ("2024-01..2024-06", (ms(2024, 1, 1), ms(2024, 7, 1))),
    ("ytd", (ms(2025, 1, 1), NOW)),
    ("2025", (ms(2025, 1, 1), NOW)),  # a year in progress ends now
    ("90d", (NOW - 90 * DAY_MS, NOW)),
    ("2w", (NOW - 14 * DAY_MS, NOW)),
    ("1y", (NOW - 365 * DAY_MS, NOW)),
])
def test_periods_cover_the_named_span_and_never_pass_now(text: str, expected: tuple[int, int]) -> None:
    assert parse_period(text, NOW) == expected


@pytest.mark.parametrize("text", ["2024-13", "2024-02-30", "0d", "abc", "2024..x", "1x", "1d", "1w", "3d"])
def test_malformed_periods_are_not_periods(text: str) -> None:
    assert parse_period(text, NOW) is None


def test_a_full_backtest_request_in_any_order() -> None:
    p = parse_backtest("sol spring 2024 4h utad", symbols=SYMS, tfs=TFS, now_ms=NOW)
    assert p.symbols == ("SOLUSDT",) and p.timeframe == "4h" and (p.from_ms, p.to_ms) == (ms(2024, 1, 1), ms(2025, 1, 1))
    assert p.patterns == ("wyckoff_spring", "wyckoff_utad")


def test_defaults_are_1h_and_the_last_365_days() -> None:
    p = parse_backtest("BTC", symbols=SYMS, tfs=TFS, now_ms=NOW)
    assert p.timeframe == "1h" and p.to_ms == NOW and p.from_ms == NOW - 365 * DAY_MS and p.patterns == ()


def test_unknown_symbol_and_junk_get_a_friendly_message_that_echoes_only_safe_text() -> None:
    with pytest.raises(ArgumentProblem, match="I don't watch `doge`"):
        parse_backtest("doge 1h", symbols=SYMS, tfs=TFS, now_ms=NOW)
    with pytest.raises(ArgumentProblem, match="I don't understand `everyone`") as e:
        parse_backtest("btc @everyone", symbols=SYMS, tfs=TFS, now_ms=NOW)
    assert "@" not in str(e.value)
    with pytest.raises(ArgumentProblem, match="which market"):
        parse_backtest("", symbols=SYMS, tfs=TFS, now_ms=NOW)


def test_timeframes_outside_the_configured_ones_need_an_admin() -> None:
    with pytest.raises(ArgumentProblem, match="not a timeframe I can backtest"):
        parse_backtest("btc 1d", symbols=SYMS, tfs=TFS, now_ms=NOW)
    assert parse_backtest("btc 1d", symbols=SYMS, tfs=TFS, now_ms=NOW, any_tf=True).timeframe == "1d"
    assert parse_backtest("pepe", symbols=SYMS, tfs=TFS, now_ms=NOW, any_symbol=True).symbols == ("PEPEUSDT",)


def test_a_period_in_the_future_or_too_short_is_refused() -> None:
    with pytest.raises(ArgumentProblem, match="empty"):
        parse_backtest("btc 2030", symbols=SYMS, tfs=TFS, now_ms=NOW)
    with pytest.raises(ArgumentProblem, match="fewer than two 1d candles"):
        parse_backtest("btc 1d 2025-06-01..2025-06-01", symbols=SYMS, tfs=TFS, now_ms=NOW, any_tf=True)


def test_research_needs_a_pattern_and_runs_over_the_configured_symbols() -> None:
    p = parse_research("wave3 4h 1y", symbols=SYMS, tfs=TFS, now_ms=NOW)
    assert p.symbols == SYMS and p.patterns == ("elliott_wave3",) and p.timeframe == "4h"
    with pytest.raises(ArgumentProblem, match="name a pattern"):
        parse_research("4h", symbols=SYMS, tfs=TFS, now_ms=NOW)


@pytest.mark.parametrize(("text", "pattern"), [("springs", "wyckoff_spring"), ("UTAD", "wyckoff_utad"),
                                                ("utad_test", "wyckoff_utad_test"), ("wave-5", "elliott_wave5"),
                                                ("abc", "elliott_abc"), ("lpsy", "wyckoff_lpsy"), ("nope", None)])
def test_pattern_names_users_type(text: str, pattern: str | None) -> None:
    assert resolve_pattern(text) == pattern


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_input_gives_a_valid_request_or_a_friendly_problem(text: str) -> None:
    try:
        p = parse_backtest(text, symbols=SYMS, tfs=TFS, now_ms=NOW)
    except ArgumentProblem as exc:
        assert len(str(exc)) < 1000 and "@" not in str(exc).split("`")[1 if "`" in str(exc) else 0]
        return
    assert p.from_ms < p.to_ms <= NOW and p.symbols[0] in SYMS and p.timeframe in TFS


@settings(max_examples=200, deadline=None)
@given(st.integers(2000, 2030), st.integers(1, 12), st.integers(1, 12))
def test_month_ranges_are_ordered_and_end_at_the_end_of_the_last_month(y: int, m1: int, m2: int) -> None:
    a, b = sorted((m1, m2))
    got = parse_period(f"{y}-{a:02d}..{y}-{b:02d}", ms(2031, 1, 1))
    assert got is not None
    end = ms(y + 1, 1, 1) if b == 12 else ms(y, b + 1, 1)
    assert got == (ms(y, a, 1), end)
