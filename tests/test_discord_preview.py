"""The preview (per destination: the channel's message sequence with follow-ups and edits) and Discord's limits on
every payload the bot builds (hypothesis over hostile signals and follow-ups)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.analysis.follow_ups import FOLLOW_UP_EVENTS, FollowUp
from src.analysis.types import Evidence, Signal, ms_to_iso
from src.bot.discord.charts import ChartRenderer
from src.bot.discord.embeds import with_status
from src.bot.discord.messages import MessageBuilder
from src.bot.discord.preview import DiscordPreview
from src.bot.sinks import SignalBatch
from src.config import Config
from src.storage.base import PendingFollowUp
from src.storage.sqlite_store import SqliteStore
from tests.candlegen import random_walk
from tests.discord_limits import payload_problems
from tests.storage_contract import T0, make_evidence, make_follow_up, make_signal

HOUR = 3_600_000
HOOK = "https://discord.com/api/webhooks/123456789012345678/" + "T" * 68


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "preview.db")
    await s.open()
    yield s
    await s.close()


def sequence(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / "messages.jsonl").read_text().splitlines()]


async def test_each_route_gets_its_own_sequence_with_replies_and_edits(tmp_path: Path, store: SqliteStore) -> None:
    config = Config.from_env({"DISCORD_ROUTES": f"btc-only: webhook={HOOK}; symbols=BTC; kinds=trade,follow_up | "
                                                f"everything: webhook={HOOK.replace('1234', '2234')}; kinds=trade,watch",
                              "DISPLAY_UTC_OFFSET": "+2"}).validate()
    await store.upsert_candles(random_walk(80, timeframe="1h", start_ms=T0 - 79 * HOUR))
    btc = make_signal("BTCUSDT", candle_time_ms=T0, evidence=make_evidence())
    eth = make_signal("ETHUSDT", candle_time_ms=T0 + HOUR, kind="watch", gate_reason="no_edge")
    for s in (btc, eth):
        await store.save_signal(s)
    preview = DiscordPreview(tmp_path / "out", config, store, renderer=ChartRenderer(use_processes=False))
    await preview.publish(SignalBatch((btc,), ()))
    await preview.publish(SignalBatch((eth,), ()))
    await store.save_follow_up(make_follow_up(btc, "tp1", bars=2, r=1.46))
    await store.save_follow_up(make_follow_up(eth, "stopped", bars=1, r=-1.0))
    preview.follow_up_recorded(btc, make_follow_up(btc, "tp1"))
    await preview.close()
    btc_only = sequence(tmp_path / "out" / "btc-only")
    assert [(e["type"], e["signal_ids"]) for e in btc_only] == [("signal", [btc.id]), ("follow_up", [btc.id]),
                                                                ("edit", [btc.id])]
    assert btc_only[1]["reply_to"] == btc_only[0]["message_id"] and btc_only[1]["event"] == "tp1"
    original = json.loads((tmp_path / "out" / "btc-only" / str(btc_only[0]["file"])).read_text())
    status = next(f["value"] for f in original["embeds"][0]["fields"] if f["name"] == "Status")
    assert status == "🎯 TP1 hit +1.46 R at 103.000, 11-15 01:00 UTC (03:00 UTC+2)"  # DISPLAY_UTC_OFFSET=+2
    everything = sequence(tmp_path / "out" / "everything")
    assert [(e["type"], e["signal_ids"]) for e in everything] == [("signal", [btc.id]), ("signal", [eth.id])]
    # this route takes no follow-ups: its signals carry no status line that would never change
    payload = json.loads((tmp_path / "out" / "everything" / str(everything[0]["file"])).read_text())
    assert all(f["name"] != "Status" for f in payload["embeds"][0]["fields"])
    assert "btc-only" in (tmp_path / "out" / "index.html").read_text()
    assert preview.progress() == "preview: 3 signal message(s), 1 follow-up(s) in 2 destination(s)"


# ---------------------------------------------------------------------------- Discord's limits (hypothesis)
_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=3000)
_price = st.floats(min_value=1e-8, max_value=1e7, allow_nan=False, allow_infinity=False)


@st.composite
def hostile_signals(draw: st.DrawFn) -> Signal:
    entry = draw(_price)
    long = draw(st.booleans())
    stop = entry * (0.9 if long else 1.1)
    targets = tuple(entry * (1 + (0.05 * (i + 1)) * (1 if long else -1)) for i in range(draw(st.integers(0, 40))))
    ev = draw(st.none() | st.builds(Evidence, p_win=st.floats(0, 1), expected_r=st.floats(-50, 50),
                                    expected_r_lo=st.floats(-50, 50), expected_r_hi=st.floats(-50, 50),
                                    interval=st.floats(0, 1), model_version=_text, backtest_n=st.integers(0, 10**7),
                                    live_n=st.integers(0, 10**7)))
    t = T0 + draw(st.integers(0, 1000)) * HOUR
    return Signal(
        id=draw(st.from_regex(r"[0-9a-f]{24}", fullmatch=True)),
        symbol=draw(st.from_regex(r"[A-Z0-9]{2,16}USDT", fullmatch=True)),
        timeframe=draw(st.sampled_from(("1m", "15m", "1h", "4h", "1d", "1w"))), pattern=draw(_text.map(lambda x: x[:300] or "p")),
        direction="LONG" if long else "SHORT", confidence=0.9, raw_confidence=0.7, entry=entry, stop_loss=stop,
        take_profits=targets, candle_time_ms=t, generated_at=ms_to_iso(t + HOUR),
        reasons=tuple(draw(st.lists(_text, max_size=30))), analyzer_version=draw(_text), config_hash="c",
        kind=draw(st.sampled_from(("trade", "watch"))), gate_reason=draw(st.sampled_from(("", "no_edge", "x" * 500))),
        evidence=ev,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(signals=st.lists(hostile_signals(), min_size=1, max_size=12), roles=st.lists(st.integers(1, 10**19), max_size=30),
       event=st.sampled_from([e for e in FOLLOW_UP_EVENTS if e != "tp2_missed"]), r=st.floats(-1e6, 1e6),
       offset=st.integers(-720, 840))
async def test_every_message_the_bot_builds_fits_discords_limits(signals: list[Signal], roles: list[int], event: str,
                                                                 r: float, offset: int) -> None:
    builder = MessageBuilder(None, utc_offset_minutes=offset)
    same_close = [Signal.from_dict({**s.to_dict(), "generated_at": signals[0].generated_at}) for s in signals]
    message = (await builder.build(same_close, status=True)).with_mentions(roles)
    assert payload_problems(message.payload()) == []
    assert len(message.embeds) <= 10 and set(message.signal_ids) <= {s.id for s in same_close}
    s = signals[0]
    f = FollowUp(s.id, event, s.candle_time_ms + HOUR, s.entry * 1.01, r, 3, s.entry)  # type: ignore[arg-type]
    reply = builder.follow_up(PendingFollowUp(f, s, "123"))
    assert payload_problems(reply.payload()) == []
    history = [f, FollowUp(s.id, "tp2", f.event_time_ms, s.entry * 2, r, 4, s.entry)]
    edited = with_status(list(message.embeds), message.signal_ids[0], builder.status(s, history))
    assert edited is not None
    assert payload_problems({"content": message.content, "embeds": [e.to_dict() for e in edited]}) == []


def test_a_status_edit_changes_only_its_own_signals_embed() -> None:
    a, b = make_signal(pattern="a"), make_signal(pattern="b")
    embeds = [discord.Embed(title="A").set_footer(text=f"id {a.id} · x"), discord.Embed(title="B").set_footer(
        text=f"id {b.id} · x")]
    edited = with_status(embeds, b.id, "🛑 Stopped out")
    assert edited is not None and not edited[0].fields and edited[1].fields[0].value == "🛑 Stopped out"
    assert with_status(embeds, "0" * 24, "x") is None
