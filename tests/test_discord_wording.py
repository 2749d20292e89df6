"""Trader words and the one time convention (candle close, UTC, then the user's offset)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from src.bot.discord.embeds import reason_lines, signal_embed, signal_footer
from src.bot.discord.wording import fmt_time, offset_label, pattern_words, reason_words
from tests.storage_contract import T0, make_signal


def test_times_are_utc_with_the_users_offset_when_set() -> None:
    assert fmt_time(T0) == "2023-11-14 22:00 UTC"
    assert fmt_time(T0, 120) == "2023-11-14 22:00 UTC (11-15 00:00 UTC+2)"  # another day: the date is shown
    assert fmt_time(T0, -330) == "2023-11-14 22:00 UTC (16:30 UTC-5:30)"
    assert fmt_time(T0, short=True) == "11-14 22:00 UTC"
    assert offset_label(0) == "UTC+0" and offset_label(345) == "UTC+5:45"


def test_analyzer_times_become_candle_closes_and_internal_words_trader_words() -> None:
    wave = "impulse up (degree 4.5, score 0.71): 0=100 @ 2023-11-14T22:00:00.000Z, 1=105 @ 2023-11-15T01:00:00.000Z"
    assert reason_words(wave, "1h") == ("impulse up (swings of 4.5 ATR or more): 0=100 @ 11-14 23:00 UTC, "
                                        "1=105 @ 11-15 02:00 UTC")
    assert "(swings of 2 % or more)" in reason_words("x (degree 0.02, score 0.5)", "1h")
    events = "Events: SC 2023-11-14 22:00 at 98.1; AR 2023-11-15 02:00 at 101"
    assert reason_words(events, "4h", 60) == ("Events: SC 11-15 02:00 UTC (03:00 UTC+1) at 98.1; "
                                              "AR 11-15 06:00 UTC (07:00 UTC+1) at 101")
    assert reason_words("no time here", "1h") == "no time here"


def test_the_embed_speaks_trader_words_and_keeps_the_footer_id_first() -> None:
    sig = replace(make_signal(pattern="wyckoff_spring"), reasons=("Evidence: climax 1.00, effort 0.80",))
    assert reason_lines(sig) == ["Checklist (1 = textbook): climax 1.00, effort 0.80"]
    e = signal_embed(sig, offset_minutes=120)
    assert "Wyckoff spring" in str(e.title) and "wyckoff_spring" not in str(e.title)
    assert signal_footer(sig, 120) == (f"id {sig.id} · wyckoff_spring · wyckoff-1 · candle close 2023-11-14 23:00 UTC "
                                       "(11-15 01:00 UTC+2)")
    assert pattern_words("elliott_abc") == "Elliott end of an A-B-C correction" and pattern_words("x_y") == "x y"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.sampled_from(("1m", "1h", "4h", "1w", "1M")), st.integers(-720, 840))
def test_property_reason_words_never_fail(text: str, timeframe: str, offset: int) -> None:
    assert isinstance(reason_words(text, timeframe, offset), str)
