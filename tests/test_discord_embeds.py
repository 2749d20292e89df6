"""Pure Discord builders: signal embeds and their limits, status/market/stats/list embeds, argument parsing."""

from __future__ import annotations

from dataclasses import replace

import discord
from hypothesis import given, settings
from hypothesis import strategies as st

from src.analysis.types import AnalyzerState
from src.bot.discord import embeds as E
from src.bot.discord.arguments import normalize_symbol, resolve_symbol, resolve_timeframe, sanitize
from src.bot.discord.messages import group_signals, message_content
from src.bot.status import ConnectionStatus, MarketView, StatusSnapshot, StreamStatus
from src.storage.base import PatternStats
from tests.candlegen import random_walk
from tests.storage_contract import T0, make_signal

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


def test_signal_embed_shows_trade_plan_colour_and_id_footer() -> None:
    sig = make_signal(direction="SHORT", confidence=0.81)
    e = E.signal_embed(sig, image_filename="x.png")
    d = e.to_dict()
    assert "BTCUSDT" in d["title"] and "1h" in d["title"] and "spring" in d["title"] and "SHORT" in d["title"]
    assert d["color"] == E.COLOUR_SHORT
    fields = {f["name"]: f["value"] for f in d["fields"]}
    assert fields["Confidence"] == "81%"
    assert fields["Entry"] == "100.000"
    assert "TP1 97.000" in fields["Targets"] and "TP2 94.000" in fields["Targets"]
    assert fields["Risk / reward"] == "1 : 1.50"
    assert "spring below support" in d["description"]
    assert E.FOOTER_ID_RE.search(d["footer"]["text"]).group(1) == sig.id  # type: ignore[union-attr]
    assert d["image"]["url"] == "attachment://x.png"
    assert E.signal_embed(make_signal()).to_dict()["color"] == E.COLOUR_LONG


def test_signal_embed_truncates_long_reasons_and_many_targets_within_limits() -> None:
    sig = replace(make_signal(), pattern="p" * 400, reasons=tuple("reason " * 200 for _ in range(60)),
                  take_profits=tuple(100.0 + i for i in range(1, 300)), analyzer_version="v" * 3000)
    e = E.signal_embed(sig)
    assert_within_limits([e])
    assert E.FOOTER_ID_RE.search(e.footer.text or "")  # the id survives footer truncation
    assert "more" in str(e.fields[3].value)


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
        trading="off (alerts only)", discord="connected",
    )


def test_status_embed_lists_health_facts_and_stale_streams_first() -> None:
    text = E.status_text(_snapshot())
    for needle in ("3d 00h", "1/1 connected", "reconnects 3", "gaps backfilled 8", "stalls 2", "7 total", "BTCUSDT 5",
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
    e = E.market_embed(MarketView("BTCUSDT", "1h", candles, states, make_signal()), image_filename="c.png")
    d = e.to_dict()
    assert "Accumulation, phase C" in d["description"] and "invalidation below 93.2" in d["description"]
    names = [f["name"] for f in d["fields"]]
    assert "Last close" in names and "wyckoff levels" in names and "Last signal" in names
    assert d["image"]["url"] == "attachment://c.png"
    empty = E.market_embed(MarketView("BTCUSDT", "1h", (), (), None))
    assert "warming up" in (empty.description or "")


def test_stats_and_signals_embeds_handle_empty_and_full_data() -> None:
    assert "No signals" in (E.stats_embed([]).description or "")
    stats = [PatternStats("spring", 10, 4, 3, 1, 0.4), PatternStats("utad", 3, 0, 0, 0, None)]
    d = E.stats_embed(stats).description or ""
    assert "spring" in d and "4/3/1" in d and "50%" in d and "+0.40" in d
    assert "No signals stored for ETHUSDT" in (E.signals_embed([], symbol="ETHUSDT").description or "")
    many = [make_signal(candle_time_ms=T0 + i * 3_600_000) for i in range(200)]
    assert_within_limits([E.signals_embed(many)])


def test_grouping_keeps_order_and_caps_ten_per_message() -> None:
    same = [make_signal(symbol=f"S{i}USDT") for i in range(13)]
    later = make_signal(candle_time_ms=T0 + 3_600_000)
    groups = group_signals([*same, later])
    assert [len(g) for g in groups] == [10, 3, 1]
    assert [s.id for g in groups for s in g] == [s.id for s in [*same, later]]
    assert "13" not in message_content(groups[0]) and "10 signals" in message_content(groups[0])


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
