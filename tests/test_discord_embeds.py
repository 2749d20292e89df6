"""Pure Discord builders: signal embeds and their limits, status/market/stats/list embeds, argument parsing."""

from __future__ import annotations

import json
from dataclasses import replace

import discord
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.types import SIGNAL_KINDS, AnalyzerState, Evidence, Signal
from src.bot.discord import embeds as E
from src.bot.discord.arguments import (
    normalize_symbol,
    parse_stats_filters,
    resolve_symbol,
    resolve_timeframe,
    sanitize,
)
from src.bot.discord.messages import group_signals, message_content
from src.bot.status import ConnectionStatus, MarketView, StatusSnapshot, StreamStatus
from src.storage.base import LiveTrack
from tests.candlegen import random_walk
from tests.fakes.evidence import FakeTrackRecord
from tests.storage_contract import T0, evidences, make_evidence, make_signal

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TFS = ("15m", "1h", "4h")


def assert_within_limits(embeds: list[discord.Embed]) -> None:
    assert len(embeds) <= E.EMBEDS_PER_MESSAGE
    assert sum(len(e) for e in embeds) <= E.TOTAL_MAX
    for e in embeds:
        assert len(e.title or "") <= E.TITLE_MAX
        assert len(e.description or "") <= E.DESCRIPTION_MAX
        assert len(e.fields) <= E.FIELDS_MAX
        for f in e.fields:
            assert 0 < len(str(f.name)) <= E.FIELD_NAME_MAX
            assert 0 < len(str(f.value)) <= E.FIELD_VALUE_MAX
        assert len(e.footer.text or "") <= E.FOOTER_MAX


def test_a_trade_call_embed_shows_the_kind_evidence_interval_track_record_plan_and_id() -> None:
    ev = Evidence(p_win=0.46, expected_r=-0.04, expected_r_lo=-0.21, expected_r_hi=0.12, interval=0.8, model_version="m1",
                  backtest_n=212, backtest_mean_r=-0.05, backtest_ci=(-0.18, 0.08), live_n=14, live_mean_r=0.1)
    sig = make_signal(direction="SHORT", confidence=0.81, evidence=ev)
    e = E.signal_embed(sig, image_filename="x.png")
    d = e.to_dict()
    assert d["title"].startswith("🔴 TRADE CALL · ")
    assert "BTCUSDT" in d["title"] and "1h" in d["title"] and "spring" in d["title"] and "SHORT" in d["title"]
    assert d["color"] == E.COLOUR_SHORT
    fields = {f["name"]: f["value"] for f in d["fields"]}
    assert fields["Evidence · net R after fees"] == "P(win) 46 % · E[R] -0.04 R [-0.21, +0.12] (80 %)"
    assert fields["Entry"] == "100.000"
    assert "TP1 97.000" in fields["Targets"] and "TP2 94.000" in fields["Targets"]
    assert fields["Risk / reward to TP1"] == "1 : 1.50"
    assert fields["Track record · spring 1h"] == (
        "backtest (out of sample): n 212, mean -0.05 R, 95 % CI [-0.18, +0.08]\nlive: n 14, mean +0.10 R")
    assert "spring below support" in d["description"] and "Not a trade call" not in d["description"]
    assert E.FOOTER_ID_RE.search(d["footer"]["text"]).group(1) == sig.id  # type: ignore[union-attr]
    assert d["image"]["url"] == "attachment://x.png"
    assert E.signal_embed(make_signal()).to_dict()["color"] == E.COLOUR_LONG
    assert "onfidence" not in json.dumps(d)


def test_a_watch_note_embed_says_it_is_not_a_trade_call_and_why() -> None:
    sig = make_signal(kind="watch", gate_reason="no_edge", evidence=make_evidence(p_win=0.41, expected_r=-0.1))
    d = E.signal_embed(sig).to_dict()
    assert d["title"].startswith("👁 WATCH NOTE — not a trade call · ")
    assert d["color"] == E.COLOUR_WATCH
    assert d["description"].startswith("**Not a trade call:** the evidence does not show a positive expected R after fees")
    content = message_content([sig])
    assert content.startswith("**WATCH NOTE** (not a trade call) BTCUSDT 1h spring LONG · P(win) 41 %")


def test_a_signal_without_evidence_says_so_instead_of_showing_a_score() -> None:
    d = E.signal_embed(make_signal(confidence=0.8)).to_dict()
    fields = {f["name"]: f["value"] for f in d["fields"]}
    assert fields["Evidence · net R after fees"].startswith("no evidence assessment")
    assert "80" not in fields["Evidence · net R after fees"] and "onfidence" not in json.dumps(d)


def test_signal_embed_truncates_long_reasons_and_many_targets_within_limits() -> None:
    sig = replace(make_signal(), pattern="p" * 400, reasons=tuple("reason " * 200 for _ in range(60)),
                  take_profits=tuple(100.0 + i for i in range(1, 300)), analyzer_version="v" * 3000)
    e = E.signal_embed(sig)
    assert_within_limits([e])
    assert E.FOOTER_ID_RE.search(e.footer.text or "")  # the id survives footer truncation
    targets = next(f for f in e.fields if f.name == "Targets")
    assert "more" in str(targets.value)


@settings(max_examples=60, deadline=None)
@given(
    reasons=st.lists(st.text(min_size=0, max_size=3000), max_size=40),
    n_targets=st.integers(0, 80),
    n_signals=st.integers(1, 14),
    pattern=st.text(min_size=1, max_size=300),
)
def test_any_group_of_signal_embeds_fits_one_message(reasons: list[str], n_targets: int, n_signals: int, pattern: str) -> None:
    sigs = [replace(make_signal(candle_time_ms=T0 + i), pattern=pattern, reasons=tuple(reasons),
                    take_profits=tuple(101.0 + j for j in range(n_targets))) for i in range(n_signals)]
    fitted = E.fit_total([E.signal_embed(s) for s in sigs])
    assert_within_limits(fitted)
    assert fitted  # never drops everything
    assert all(E.FOOTER_ID_RE.search(e.footer.text or "") for e in fitted)


def _text(min_size: int = 0, max_size: int = 300) -> st.SearchStrategy[str]:
    """Any text a user or analyzer might produce, except the one word no embed may contain on its own."""
    return st.text(min_size=min_size, max_size=max_size).filter(lambda t: "onfidence" not in t.lower())


@st.composite
def any_signal(draw: st.DrawFn) -> Signal:
    return replace(
        make_signal(candle_time_ms=T0 + draw(st.integers(0, 10**6))),
        pattern=draw(_text(1, 300)), symbol=draw(_text(1, 60)),
        reasons=tuple(draw(st.lists(_text(0, 1500), max_size=20))),
        take_profits=tuple(101.0 + j for j in range(draw(st.integers(0, 60)))),
        kind=draw(st.sampled_from(SIGNAL_KINDS)), gate_reason=draw(_text(0, 400)),
        evidence=draw(st.none() | evidences()), analyzer_version=draw(_text(0, 200)),
    )


@settings(max_examples=40, deadline=None)
@given(sigs=st.lists(any_signal(), min_size=1, max_size=12))
def test_every_signal_message_with_the_evidence_fields_fits_discords_limits(sigs: list[Signal]) -> None:
    """Titles, fields, footers, 6000 characters over all embeds, 10 embeds, 2000 characters of content; the id
    survives; nothing reads 'Confidence'."""
    fitted = E.fit_total([E.signal_embed(s) for s in sigs])
    assert_within_limits(fitted)
    assert fitted and all(E.FOOTER_ID_RE.search(e.footer.text or "") for e in fitted)
    for group in group_signals(sigs):
        content = message_content(group)
        assert len(content) <= E.CONTENT_MAX and "onfidence" not in content
    assert "onfidence" not in json.dumps([e.to_dict() for e in fitted], ensure_ascii=False)


def test_fit_total_keeps_small_messages_unchanged() -> None:
    es = [E.signal_embed(make_signal(candle_time_ms=T0 + i)) for i in range(3)]
    before = [e.to_dict() for e in es]
    assert [e.to_dict() for e in E.fit_total(es)] == before


def test_price_formatting_adapts_to_magnitude() -> None:
    assert E.fmt_price(43210.123) == "43,210.12"
    assert E.fmt_price(1.23456789) == "1.23457"
    assert E.fmt_price(0.000012345) == "0.0000123450"
    assert E.fmt_price(float("nan")) == "n/a"


def _snapshot(n_streams: int = 4, *, stale: int = 1) -> StatusSnapshot:
    streams = tuple(
        StreamStatus(f"S{i}USDT", "1h", T0 - 3_600_000, T0, fresh=i >= stale, reconnects=1, gaps_backfilled=2,
                     candles_backfilled=5, stalls=i % 2)
        for i in range(n_streams)
    )
    return StatusSnapshot(
        started_at_ms=T0 - 3 * 86_400_000, now_ms=T0, mode="live", warmed_up=True, streams=streams,
        connections=(ConnectionStatus("ws-0", n_streams, True, T0 - 1000, 3, T0),),
        signals_total=7, signals_by_symbol=(("BTCUSDT", 5), ("ETHUSDT", 2)), last_signal_at="2023-11-15T00:59:59.999Z",
        store_backend="sqlite:./data/wyeli.db", store_healthy=True, spool_depth=0, cache="off",
        trading="off (alerts only)", discord="connected", trade_calls=2, watch_notes=5, candidates=40,
        evidence_model="evidence-2026.1",
    )


def test_status_embed_lists_health_facts_and_stale_streams_first() -> None:
    text = E.status_text(_snapshot())
    for needle in ("3d 00h", "1/1 connected", "reconnects 3", "gaps backfilled 8", "stalls 2",
                   "trade calls 2 · watch notes 5 · candidates 40", "evidence-2026.1", "BTCUSDT 5",
                   "2023-11-15T00:59:59.999Z", "sqlite:./data/wyeli.db: ok", "off (alerts only)", "3/4 fresh"):
        assert needle in text, needle
    assert text.index("STALE S0USDT") < text.index("ok    S1USDT")


def test_status_embed_with_thousands_of_streams_stays_within_limits() -> None:
    e = E.status_embed(_snapshot(2400, stale=30))
    assert_within_limits([e])
    assert "more streams" in (e.description or "")


def test_market_embed_shows_states_levels_and_last_signal() -> None:
    candles = tuple(random_walk(50, timeframe="1h"))
    states = (
        AnalyzerState("wyckoff", "Accumulation, phase C", ("SC at 95.1", "Spring at 94.0"), (("support", 94.5),)),
        AnalyzerState("elliott", "Impulse wave 3 in progress", ("invalidation below 93.2",), (),
                      ((candles[10].open_time_ms, 99.0, "1"),)),
    )
    last = make_signal(evidence=make_evidence(p_win=0.52))
    candidates = (
        make_signal(candle_time_ms=T0 + 7_200_000, pattern="wave3", kind="gated", gate_reason="duplicate_structure",
                    evidence=make_evidence()),
        make_signal(candle_time_ms=T0 + 3_600_000, pattern="abc", kind="watch", gate_reason="no_edge"),
        last,
    )
    e = E.market_embed(MarketView("BTCUSDT", "1h", candles, states, last, candidates), image_filename="c.png")
    d = e.to_dict()
    assert "Accumulation, phase C" in d["description"] and "invalidation below 93.2" in d["description"]
    fields = {f["name"]: f["value"] for f in d["fields"]}
    assert "Last close" in fields and "wyckoff levels" in fields
    assert "P(win) 52 %" in fields["Last trade call"]
    listed = fields["Latest candidates (every kind)"].splitlines()
    assert ("wave3 LONG · **gated**: another candidate of the same structure on the same candle was kept · P(win) 46 %"
            in listed[0])
    assert "abc LONG · **WATCH**: the evidence does not show a positive expected R after fees" in listed[1]
    assert "spring LONG · **TRADE** · P(win) 52 %" in listed[2]
    assert d["image"]["url"] == "attachment://c.png"
    assert "onfidence" not in json.dumps(d)
    empty = E.market_embed(MarketView("BTCUSDT", "1h", (), (), None))
    assert "warming up" in (empty.description or "")


def test_stats_embed_shows_the_model_cells_and_the_live_record_per_pattern_and_timeframe() -> None:
    assert "Nothing to show yet" in (E.stats_embed([], []).description or "")
    records = [FakeTrackRecord("wyckoff_spring", "1h", backtest_n=212, backtest_mean_r=-0.05, backtest_ci=(-0.18, 0.08),
                               p_win=0.44, expected_r=-0.04, expected_r_lo=-0.21, expected_r_hi=0.12),
               FakeTrackRecord("elliott_wave3", "4h", backtest_n=0)]
    live = [LiveTrack("wyckoff_spring", "1h", "tracked", 20, 14, 1.4, 9.0, 6),
            LiveTrack("wyckoff_spring", "1h", "trade", 3, 2, 1.0, 1.0, 1),
            LiveTrack("wyckoff_utad", "15m", "tracked", 2, 0, 0.0, 0.0, 0)]
    d = E.stats_embed(records, live).description or ""
    assert "wyckoff_spring 1h" in d
    assert "backtest (out of sample): n 212, mean -0.05 R, 95 % CI [-0.18, +0.08]" in d
    assert "now: P(win) 44 % · E[R] -0.04 R [-0.21, +0.12]" in d
    assert "live: n 14, mean +0.10 R · trade calls n 2, mean +0.50 R" in d
    assert "wyckoff_utad 15m" in d and "live: no graded signals yet" in d
    assert "elliott_wave3 4h" in d and "backtest (out of sample): no trades" in d
    narrowed = E.stats_embed(records, live, symbol="BTCUSDT", timeframe="1h", pattern="spring")
    assert narrowed.title == "Track record per pattern · BTCUSDT 1h spring"
    assert "utad" not in (narrowed.description or "") and "wave3" not in (narrowed.description or "")
    assert "for BTCUSDT" in (narrowed.footer.text or "")
    many = [FakeTrackRecord(f"pattern_{i}", tf, backtest_n=i) for i in range(60) for tf in TFS]
    assert_within_limits([E.stats_embed(many, [])])
    assert "onfidence" not in json.dumps(E.stats_embed(records, live).to_dict())


def test_signals_embed_lists_kinds_and_evidence_within_limits() -> None:
    assert "No trade calls or watch notes stored for ETHUSDT" in (E.signals_embed([], symbol="ETHUSDT").description or "")
    rows = [make_signal(candle_time_ms=T0, evidence=make_evidence(p_win=0.61, expected_r=0.2)),
            make_signal(candle_time_ms=T0 + 3_600_000, kind="watch", gate_reason="no_edge")]
    d = E.signals_embed(rows).description or ""
    assert "· TRADE · P(win) 61 % · E[R] +0.20 R [+0.00, +0.40] (80 %)" in d
    assert "👁" in d and "· WATCH · no evidence" in d
    many = [make_signal(candle_time_ms=T0 + i * 3_600_000, evidence=make_evidence()) for i in range(200)]
    assert_within_limits([E.signals_embed(many)])


def test_grouping_keeps_order_and_caps_ten_per_message() -> None:
    same = [make_signal(symbol=f"S{i}USDT") for i in range(13)]
    later = make_signal(candle_time_ms=T0 + 3_600_000)
    groups = group_signals([*same, later])
    assert [len(g) for g in groups] == [10, 3, 1]
    assert [s.id for g in groups for s in g] == [s.id for s in [*same, later]]
    assert "13" not in message_content(groups[0]) and "10 trade calls" in message_content(groups[0])
    mixed = message_content([make_signal(), make_signal(pattern="utad", kind="watch", gate_reason="no_edge")])
    assert mixed.startswith("**1 trade call, 1 watch note** on the ") and "utad (watch note)" in mixed


def test_user_arguments_are_normalised_and_hostile_input_is_neutralised() -> None:
    assert normalize_symbol("btc") == "BTCUSDT"
    assert normalize_symbol("BTCUSDT") == "BTCUSDT"
    assert normalize_symbol("eth/usdt") == "ETHUSDT"
    assert resolve_symbol("sol", SYMBOLS) == "SOLUSDT"
    assert resolve_symbol("doge", SYMBOLS) is None
    assert resolve_symbol("doge", SYMBOLS, any_symbol=True) == "DOGEUSDT"
    assert resolve_symbol("@everyone", SYMBOLS) is None
    assert resolve_symbol("x" * 5000, SYMBOLS) is None
    assert sanitize("**<@123>** `x`" * 100) == "123x123x123x123x123x"[:20]
    assert resolve_timeframe("1h", TFS) == "1h"
    assert resolve_timeframe("1H", TFS) == "1h"
    assert resolve_timeframe("2h", TFS) is None
    assert resolve_timeframe("1M", ("1m", "1M")) == "1M"
    assert resolve_timeframe("1m", ("1m", "1M")) == "1m"
    assert resolve_timeframe("nonsense", TFS) is None


def test_stats_arguments_are_read_in_any_order() -> None:
    patterns = ["wyckoff_spring", "wyckoff_sos", "elliott_abc"]
    assert parse_stats_filters(("btc", "1h", "spring"), SYMBOLS, TFS, patterns) == ("BTCUSDT", "1h", "spring")
    assert parse_stats_filters(("4h", None, None), SYMBOLS, TFS, patterns) == (None, "4h", None)
    assert parse_stats_filters(("Wyckoff_SOS", "eth"), SYMBOLS, TFS, patterns) == ("ETHUSDT", None, "wyckoff_sos")
    # with SYMBOLS=ALL any word could be a coin: a known pattern name wins
    assert parse_stats_filters(("sos",), (), TFS, patterns, any_symbol=True) == (None, None, "sos")
    assert parse_stats_filters(("doge",), (), TFS, patterns, any_symbol=True) == ("DOGEUSDT", None, None)
    with pytest.raises(ValueError, match="two timeframes"):
        parse_stats_filters(("1h", "4h"), SYMBOLS, TFS, patterns)
    with pytest.raises(ValueError, match="neither a symbol"):
        parse_stats_filters(("@@@",), SYMBOLS, TFS, patterns)


@given(st.lists(st.text(max_size=60), max_size=3))
def test_stats_arguments_never_crash_and_never_echo_markdown(words: list[str]) -> None:
    try:
        _, _, pattern = parse_stats_filters(words, SYMBOLS, TFS, ["wyckoff_spring"])
    except ValueError as exc:
        assert "@" not in str(exc) and "*" not in str(exc)
        return
    assert pattern is None or (len(pattern) <= 40 and all(c.isalnum() or c == "_" for c in pattern))


@given(st.text(max_size=500))
def test_sanitize_never_returns_markdown_or_mentions(text: str) -> None:
    out = sanitize(text)
    assert len(out) <= 20 and out.isascii() and (out == "" or out.isalnum())


def test_invite_url_has_the_scopes_and_permissions_wyeli_needs() -> None:
    from src.bot.discord.__main__ import app_id_from_token, invite_url

    url = invite_url(123456789012345678)
    assert "client_id=123456789012345678" in url and "scope=bot+applications.commands" in url
    assert "permissions=117760" in url
    token_head = "MTIzNDU2Nzg5MDEyMzQ1Njc4"  # base64("123456789012345678")
    assert app_id_from_token(f"{token_head}.GaBcDe.{'x' * 38}") == 123456789012345678
    assert app_id_from_token("not a token") is None
