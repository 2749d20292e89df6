"""Where messages go and which ones: destinations, their filters, subscriptions and mutes (pure, no I/O).

A destination is one outbox key with one sender: ``discord:<channel id>`` (a channel through the bot),
``webhook`` (DISCORD_WEBHOOK_URL) or ``webhook:<id>`` (a route's webhook), ``dm:<user id>`` (a user's DMs).
It posts a message when:

1. the message's kind (``trade`` call, ``watch`` note, ``follow_up``) is one of the destination's kinds and
   DISCORD_NOTIFICATIONS does not turn that kind ``off`` (``silent`` posts it without a push notification);
2. the signal passes the destination's route filter (symbols, timeframes, patterns as substrings, directions,
   minimum expected net R), OR one of the destination's ``>watch`` subscriptions (symbol, and timeframe or every
   timeframe); a destination with a route and subscriptions takes the union;
3. no active ``>mute`` of the destination covers the signal's symbol and timeframe.

A follow-up goes only where its signal was posted (it replies to that message), so rule 2 does not apply to it;
rules 1 and 3 do. Everything a destination does not post is recorded as 'skipped' with the reason, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from src.analysis.types import Signal
from src.config import Config
from src.config.discord_routes import ROUTE_KINDS, FollowUpMode, NotifyMode, RouteKind, RouteSpec
from src.storage.base import Mute, Subscription

SIGNAL_KINDS_ROUTED: dict[str, RouteKind] = {"trade": "trade", "watch": "watch"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Post it (``silent``: without a push notification) or not (``reason`` says why)."""

    post: bool
    silent: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Destination:
    """One outbox destination: its key, what it takes, and how it posts.

    ``route`` is the configured route (None for a destination that exists only through subscriptions);
    ``subscribable`` destinations (bot channels and DMs) also take their ``>watch`` subscriptions."""

    key: str
    name: str
    kinds: frozenset[RouteKind]
    route: RouteSpec | None = None
    channel_id: int | None = None
    webhook_url: str | None = None
    user_id: int | None = None
    mention_roles: tuple[int, ...] = ()
    notifications: Mapping[RouteKind, NotifyMode] = field(default_factory=lambda: dict.fromkeys(ROUTE_KINDS, "on"))
    follow_up_mode: FollowUpMode = "reply"

    def __repr__(self) -> str:  # the webhook URL holds a token
        return f"Destination({self.key!r}, {self.name!r})"

    @property
    def subscribable(self) -> bool:
        return self.key.startswith(("discord:", "dm:"))

    @property
    def signal_kinds(self) -> tuple[str, ...]:
        """The signal kinds to read from the outbox for this destination (sorted)."""
        return tuple(sorted(k for k in ("trade", "watch") if k in self.kinds))

    @property
    def posts_follow_ups(self) -> bool:
        return "follow_up" in self.kinds and self.follow_up_mode != "off" and self.notifications.get("follow_up") != "off"


def route_matches(route: RouteSpec, signal: Signal) -> str:
    """'' when ``signal`` passes the route's filters, else the reason it does not."""
    if route.symbols and signal.symbol not in route.symbols:
        return f"route {route.name}: symbol {signal.symbol} not in {','.join(route.symbols)}"
    if route.timeframes and signal.timeframe not in route.timeframes:
        return f"route {route.name}: timeframe {signal.timeframe} not in {','.join(route.timeframes)}"
    if route.patterns and not any(p in signal.pattern for p in route.patterns):
        return f"route {route.name}: pattern {signal.pattern} matches none of {','.join(route.patterns)}"
    if route.directions and signal.direction not in route.directions:
        return f"route {route.name}: direction {signal.direction}"
    if route.min_expected_r is not None:
        ev = signal.evidence
        if ev is None or not ev.expected_r >= route.min_expected_r:
            shown = "no evidence" if ev is None else f"E[R] {ev.expected_r:+.3f}"
            return f"route {route.name}: {shown} below min_expected_r {route.min_expected_r:g}"
    return ""


def subscribed(subscriptions: Sequence[Subscription], signal: Signal) -> bool:
    return any(s.symbol == signal.symbol and s.timeframe in ("", signal.timeframe) for s in subscriptions)


def active_mute(mutes: Sequence[Mute], symbol: str, timeframe: str, now_ms: int) -> Mute | None:
    """The mute covering (symbol, timeframe) at ``now_ms`` that lasts longest, or None."""
    hits = [m for m in mutes if m.until_ms > now_ms and m.symbol in ("", symbol) and m.timeframe in ("", timeframe)]
    return max(hits, key=lambda m: m.until_ms) if hits else None


def _mode(dest: Destination, kind: RouteKind) -> Verdict | None:
    if kind not in dest.kinds:
        return Verdict(False, reason=f"{kind} messages are not routed to {dest.name}")
    mode = dest.notifications.get(kind, "on")
    if mode == "off":
        return Verdict(False, reason=f"DISCORD_NOTIFICATIONS turns {kind} off")
    return None if mode == "on" else Verdict(True, silent=True)


def signal_verdict(dest: Destination, signal: Signal, subscriptions: Sequence[Subscription], mutes: Sequence[Mute],
                   now_ms: int) -> Verdict:
    """Whether ``dest`` posts ``signal`` now (rules 1-3 of the module docstring)."""
    kind = SIGNAL_KINDS_ROUTED.get(signal.kind)
    if kind is None:
        return Verdict(False, reason=f"a {signal.kind} candidate is never posted")
    mode = _mode(dest, kind)
    if mode is not None and not mode.post:
        return mode
    reason = "no route or subscription covers it"
    if dest.route is not None:
        reason = route_matches(dest.route, signal)
    if reason and dest.subscribable and subscribed(subscriptions, signal):
        reason = ""
    if reason:
        return Verdict(False, reason=reason)
    mute = active_mute(mutes, signal.symbol, signal.timeframe, now_ms)
    if mute is not None:
        return Verdict(False, reason=f"muted until {mute.until_ms}")
    return mode or Verdict(True)


def follow_up_verdict(dest: Destination, signal: Signal, mutes: Sequence[Mute], now_ms: int) -> Verdict:
    """Whether ``dest`` posts a follow-up of ``signal`` (which it posted) now."""
    if dest.follow_up_mode == "off":
        return Verdict(False, reason="DISCORD_FOLLOW_UPS=off")
    mode = _mode(dest, "follow_up")
    if mode is not None and not mode.post:
        return mode
    mute = active_mute(mutes, signal.symbol, signal.timeframe, now_ms)
    if mute is not None:
        return Verdict(False, reason=f"muted until {mute.until_ms}")
    return mode or Verdict(True)


def discord_signal_kinds(config: Config) -> frozenset[RouteKind]:
    """The kinds the signals channel (and the webhook, and subscriptions) take: trade calls and their follow-ups, and
    watch notes when WATCH_NOTES=signals (subscriptions also with WATCH_NOTES=channel)."""
    kinds: set[RouteKind] = {"trade", "follow_up", "trading", "alarm"}
    if config.watch_notes == "signals":
        kinds.add("watch")
    return frozenset(kinds)


def configured_destinations(config: Config) -> list[Destination]:
    """The destinations of the configuration: DISCORD_SIGNALS_CHANNEL_ID ('signals'), DISCORD_WATCH_CHANNEL_ID with
    WATCH_NOTES=channel ('watch'), DISCORD_WEBHOOK_URL ('webhook', outbox key ``webhook``), then DISCORD_ROUTES."""
    notify = dict(config.discord_notifications)
    mode = config.discord_follow_ups
    out: list[Destination] = []
    default_kinds = discord_signal_kinds(config)
    listed = tuple(k for k in ROUTE_KINDS if k in default_kinds)
    if config.discord_token and config.discord_signals_channel_id:
        cid = config.discord_signals_channel_id
        out.append(Destination(f"discord:{cid}", "signals", default_kinds, route=RouteSpec("signals", channel_id=cid,
                               kinds=listed), channel_id=cid, notifications=notify, follow_up_mode=mode))
    if config.discord_token and config.discord_watch_channel_id and config.watch_notes == "channel":
        cid = config.discord_watch_channel_id
        out.append(Destination(f"discord:{cid}", "watch", frozenset({"watch", "follow_up"}),
                               route=RouteSpec("watch", channel_id=cid, kinds=("watch", "follow_up")), channel_id=cid,
                               notifications=notify, follow_up_mode=mode))
    if config.discord_webhook_url:
        out.append(Destination("webhook", "webhook", default_kinds,
                               route=RouteSpec("webhook", webhook_url=config.discord_webhook_url, kinds=listed),
                               webhook_url=config.discord_webhook_url, notifications=notify, follow_up_mode=mode))
    for r in config.discord_routes:
        out.append(Destination(r.destination, r.name, frozenset(r.kinds), route=r, channel_id=r.channel_id,
                               webhook_url=r.webhook_url, mention_roles=r.mention_roles, notifications=notify,
                               follow_up_mode=mode))
    return out


def subscription_destination(key: str, config: Config) -> Destination:
    """A destination that exists only through ``>watch``: a bot channel or a user's DMs."""
    kinds = set(discord_signal_kinds(config)) - {"trading", "alarm"}
    if config.watch_notes == "channel":
        kinds.add("watch")
    kind, _, ident = key.partition(":")
    return Destination(key, f"subscriptions of {key}", frozenset(kinds),
                       channel_id=int(ident) if kind == "discord" else None,
                       user_id=int(ident) if kind == "dm" else None,
                       notifications=dict(config.discord_notifications), follow_up_mode=config.discord_follow_ups)
