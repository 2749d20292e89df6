"""DISCORD_ROUTES, DISCORD_NOTIFICATIONS, DISCORD_FOLLOW_UPS and DISPLAY_UTC_OFFSET: parsed, validated with every
error listed, never a crash, and webhook tokens never shown."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from src.config import Config
from src.config.discord_routes import RouteSpec, parse_notifications, parse_routes, parse_utc_offset

HOOK = "https://discord.com/api/webhooks/123456789012345678/" + "T" * 68
BOT = {"DISCORD_TOKEN": "t" * 40, "DISCORD_SIGNALS_CHANNEL_ID": "111"}


def test_routes_parse_every_key_into_a_route_with_normalised_values():
    routes, problems, warnings = parse_routes(
        "majors: channel=222; kinds=trade,follow-up; symbols=btc, ETHUSDT; timeframes=1h,4h; patterns=Spring;"
        " directions=long; min_expected_r=0.05; mention=<@&333>,444 | alts: webhook=" + HOOK + "; kinds=watch",
        symbols=("BTCUSDT", "ETHUSDT"), configured_timeframes=("1h", "4h"))
    assert problems == [] and warnings == []
    assert routes == [
        RouteSpec("majors", channel_id=222, kinds=("trade", "follow_up"), symbols=("BTCUSDT", "ETHUSDT"),
                  timeframes=("1h", "4h"), patterns=("spring",), directions=("LONG",), min_expected_r=0.05,
                  mention_roles=(333, 444)),
        RouteSpec("alts", webhook_url=HOOK, kinds=("watch",)),
    ]
    assert [r.destination for r in routes] == ["discord:222", "webhook:123456789012345678"]


def test_a_route_without_kinds_gets_trade_calls_and_follow_ups_and_newlines_separate_routes_too():
    routes, problems, _ = parse_routes("a: channel=1\nb: channel=2")
    assert problems == [] and [r.kinds for r in routes] == [("trade", "follow_up")] * 2


def test_every_mistake_is_listed_with_the_route_and_the_key():
    _, problems, _ = parse_routes(
        "ok: channel=5 | bad one: channel=5 | x: chanel=9; kinds=trades | y: channel=abc; webhook=" + HOOK
        + " | z: symbols=B!; timeframes=7h; directions=up; min_expected_r=lots; mention=@mods | signals: channel=6"
        + " | dup: channel=5")
    text = "\n".join(problems)
    assert "route 2: expected 'NAME: key=value; ...'" in text
    assert "route 'x': 'chanel' is not a route setting" in text and "route 'x': kinds: 'trades' is not one of" in text
    assert "route 'y': give either channel= or webhook=, not both" in text
    for piece in ("route 'z': needs channel=", "symbols: 'B!'", "timeframes: '7h'", "directions: 'UP'",
                  "min_expected_r='lots'", "mention: '@mods'"):
        assert piece in text, piece
    assert "route 'signals': the names signals, watch, webhook are taken" in text
    assert "routes 'ok' and 'dup' post to the same channel" in text


def test_filters_on_symbols_or_timeframes_the_bot_does_not_watch_are_warnings():
    _, problems, warnings = parse_routes("a: channel=1; symbols=DOGE; timeframes=1d", symbols=("BTCUSDT",),
                                         configured_timeframes=("1h",))
    assert problems == []
    assert any("DOGEUSDT is not in SYMBOLS" in w for w in warnings) and any("1d is not in TIMEFRAMES" in w for w in warnings)


def test_webhook_tokens_never_appear_in_problems_descriptions_or_the_config_check():
    bad_hook = "https://example.com/api/webhooks/1/" + "S" * 70
    _, problems, _ = parse_routes(f"a: webhook={bad_hook} | b: webhook {HOOK}")
    assert problems and not any("S" * 20 in p or "T" * 20 in p for p in problems)
    cfg = Config.from_env({**BOT, "DISCORD_ROUTES": f"hooked: webhook={HOOK}"}).validate()
    shown = dict(cfg.describe())["DISCORD_ROUTES"]
    assert shown == "hooked: webhook=https://discord.com/api/webhooks/123456789012345678/***; kinds=trade,follow_up"
    assert "T" * 20 not in repr(cfg.discord_routes) and HOOK in cfg.secret_values()


def test_config_checks_routes_against_the_bot_and_the_legacy_channels():
    c = Config.from_env({"DISCORD_ROUTES": "a: channel=5"})
    assert any("route 'a': channel= needs DISCORD_TOKEN" in p for p in c.problems)
    c = Config.from_env({**BOT, "DISCORD_ROUTES": "a: channel=111"})
    assert any("channel 111 is already DISCORD_SIGNALS_CHANNEL_ID" in p for p in c.problems)
    # a bot with routes only needs no DISCORD_SIGNALS_CHANNEL_ID
    c = Config.from_env({"DISCORD_TOKEN": "t" * 40, "DISCORD_ROUTES": "a: channel=5"}).validate()
    assert [r.name for r in c.discord_routes] == ["a"]


def test_notification_modes_default_to_on_and_accept_silent_and_off():
    c = Config.from_env({"DISCORD_NOTIFICATIONS": "watch=silent, follow_up=off"}).validate()
    assert c.discord_notifications == {"trade": "on", "watch": "silent", "follow_up": "off", "trading": "on", "alarm": "on"}
    modes, problems = parse_notifications("watch=loud, sigs=on, trade")
    assert len(problems) == 3 and modes["watch"] == "on"


def test_follow_up_mode_and_display_offset_are_validated():
    c = Config.from_env({"DISCORD_FOLLOW_UPS": "THREAD", "DISPLAY_UTC_OFFSET": "+05:30"}).validate()
    assert (c.discord_follow_ups, c.display_utc_offset) == ("thread", 330)
    c = Config.from_env({"DISCORD_FOLLOW_UPS": "sometimes", "DISPLAY_UTC_OFFSET": "+15"})
    assert any("DISCORD_FOLLOW_UPS='sometimes'" in p for p in c.problems)
    assert any("DISPLAY_UTC_OFFSET='+15'" in p for p in c.problems)
    assert [parse_utc_offset(x) for x in ("0", "+2", "-5", "UTC+1", "-03:30", "+1130", "+14:01", "2:75", "x")] == [
        0, 120, -300, 60, -210, 690, None, None, None]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_property_any_routes_text_gives_routes_or_problems_never_an_exception(text: str):
    routes, problems, _ = parse_routes(text)
    assert all(isinstance(r, RouteSpec) for r in routes) and all(isinstance(p, str) for p in problems)
    c = Config.from_env({**BOT, "DISCORD_ROUTES": text, "DISCORD_NOTIFICATIONS": text[:50], "DISPLAY_UTC_OFFSET": text[:9]})
    assert isinstance(c.problems, list)
