"""Discord settings that need a parser of their own (issue 14): routes, notification modes, the display offset.

Pure functions: text in, frozen dataclasses and a list of problems out (never an exception), so the
configuration reader can report every mistake at once.

``DISCORD_ROUTES``: routes separated by ``|`` (or new lines in a ``.env`` file), each ``NAME: key=value; ...``::

    DISCORD_ROUTES="majors: channel=123456789012345678; kinds=trade,follow_up; symbols=BTC,ETH; min_expected_r=0.05 |
                    alts-webhook: webhook=https://discord.com/api/webhooks/<id>/<token>; kinds=trade,watch; timeframes=4h"

====================  ===========================================================================================
key                   value
====================  ===========================================================================================
``channel``           the channel id (needs DISCORD_TOKEN); exactly one of channel / webhook
``webhook``           a webhook URL (a secret: shown masked)
``kinds``             any of ``trade`` (trade calls), ``watch`` (watch notes), ``follow_up`` (results of posted
                      signals), ``trading`` (trading fills), ``alarm`` (bot alarms); default ``trade,follow_up``
``symbols``           ``BTC``, ``btcusdt``, ... (default: every symbol)
``timeframes``        e.g. ``1h,4h`` (default: every timeframe)
``patterns``          pattern names or parts of them, e.g. ``spring,wyckoff_sos`` (default: every pattern)
``directions``        ``long`` and/or ``short`` (default: both)
``min_expected_r``    signals whose expected net R (the evidence model's) is below this are not posted here;
                      a signal without an evidence assessment never passes this filter
``mention``           role ids to mention on the route's signals, comma-separated (default: none)
====================  ===========================================================================================

``DISCORD_NOTIFICATIONS``: ``kind=mode`` pairs, comma-separated, mode ``on`` | ``off`` | ``silent`` (posted without
a push notification), kinds as above; unlisted kinds are ``on``. ``DISPLAY_UTC_OFFSET``: ``+02:00``, ``-5``,
``+5:30`` (hours -12..+14): times are also shown in that offset beside UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from src.analysis import timeframes

RouteKind = Literal["trade", "watch", "follow_up", "trading", "alarm"]
ROUTE_KINDS: tuple[RouteKind, ...] = ("trade", "watch", "follow_up", "trading", "alarm")
DEFAULT_ROUTE_KINDS: tuple[RouteKind, ...] = ("trade", "follow_up")
NotifyMode = Literal["on", "off", "silent"]
NOTIFY_MODES: tuple[NotifyMode, ...] = ("on", "off", "silent")
FollowUpMode = Literal["reply", "thread", "off"]
FOLLOW_UP_MODES: tuple[FollowUpMode, ...] = ("reply", "thread", "off")
RESERVED_ROUTE_NAMES = ("signals", "watch", "webhook")  # the routes of DISCORD_SIGNALS_CHANNEL_ID & co.

ROUTE_KEYS = ("channel", "webhook", "kinds", "symbols", "timeframes", "patterns", "directions", "min_expected_r", "mention")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
_PATTERN_RE = re.compile(r"^[a-z0-9_]{1,40}$")
# the form discord.Webhook.from_url accepts (id: 17-20 digits, token: 60+ characters)
WEBHOOK_URL_RE = re.compile(r"^https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api/(?:v\d+/)?webhooks/([0-9]{17,20})/"
                            r"[A-Za-z0-9._-]{60,}$")
_OFFSET_RE = re.compile(r"^(?:UTC)?([+-])?(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def mask_webhook(url: str) -> str:
    """The webhook URL with its token hidden (the id is not secret)."""
    m = WEBHOOK_URL_RE.match(url)
    return f"https://discord.com/api/webhooks/{m.group(1)}/***" if m else "***"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One destination with its filters; empty filter tuples mean 'any'."""

    name: str
    channel_id: int | None = None
    webhook_url: str | None = None
    kinds: tuple[RouteKind, ...] = DEFAULT_ROUTE_KINDS
    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()
    min_expected_r: float | None = None
    mention_roles: tuple[int, ...] = ()

    def __repr__(self) -> str:  # never the webhook token, whatever prints this
        return f"RouteSpec({self.describe()})"

    @property
    def webhook_id(self) -> str | None:
        m = WEBHOOK_URL_RE.match(self.webhook_url or "")
        return m.group(1) if m else None

    @property
    def destination(self) -> str:
        """The outbox key of the route: ``discord:<channel id>`` or ``webhook:<webhook id>``."""
        return f"discord:{self.channel_id}" if self.channel_id is not None else f"webhook:{self.webhook_id}"

    def describe(self) -> str:
        """The route in its own syntax, webhook token masked."""
        where = (f"channel={self.channel_id}" if self.channel_id is not None
                 else f"webhook={mask_webhook(self.webhook_url or '')}")
        parts = [where, "kinds=" + ",".join(self.kinds)]
        for key, values in (("symbols", self.symbols), ("timeframes", self.timeframes), ("patterns", self.patterns),
                            ("directions", self.directions)):
            if values:
                parts.append(f"{key}={','.join(values)}")
        if self.min_expected_r is not None:
            parts.append(f"min_expected_r={self.min_expected_r:g}")
        if self.mention_roles:
            parts.append("mention=" + ",".join(str(r) for r in self.mention_roles))
        return f"{self.name}: " + "; ".join(parts)


def _split_routes(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"[|\n]", text) if part.strip()]


def _words(value: str) -> list[str]:
    return [w.strip() for w in value.split(",") if w.strip()]


def _snowflake(text: str) -> int | None:
    return int(text) if text.isdigit() and 1 <= len(text) <= 22 and int(text) > 0 else None


def parse_routes(text: str, *, symbols: tuple[str, ...] = (), symbols_all: bool = False,
                 configured_timeframes: tuple[str, ...] = ()) -> tuple[list[RouteSpec], list[str], list[str]]:
    """``DISCORD_ROUTES`` -> (routes, problems, warnings). Every problem names the route and the key."""
    routes: list[RouteSpec] = []
    problems: list[str] = []
    warnings: list[str] = []
    for i, chunk in enumerate(_split_routes(text), 1):
        name, sep, body = chunk.partition(":")
        name = name.strip()
        where = f"DISCORD_ROUTES route {i}"
        if not sep or not _NAME_RE.match(name):
            problems.append(f"{where}: expected 'NAME: key=value; ...' with a NAME of letters, digits, '-' or '_' "
                            f"(at most 32), got {chunk[:40]!r}{'…' if len(chunk) > 40 else ''}")
            continue
        where = f"DISCORD_ROUTES route '{name}'"
        if name.lower() in RESERVED_ROUTE_NAMES:
            problems.append(f"{where}: the names {', '.join(RESERVED_ROUTE_NAMES)} are taken by DISCORD_SIGNALS_CHANNEL_ID, "
                            "DISCORD_WATCH_CHANNEL_ID and DISCORD_WEBHOOK_URL; pick another")
        if any(r.name.lower() == name.lower() for r in routes):
            problems.append(f"{where}: a route of that name comes earlier; names must differ")
        route, errors, notes = _parse_route(name, body, symbols=symbols, symbols_all=symbols_all,
                                            configured_timeframes=configured_timeframes)
        problems += [f"{where}: {e}" for e in errors]
        warnings += [f"{where}: {w}" for w in notes]
        if route is not None and not errors:
            routes.append(route)
    seen: dict[str, str] = {}
    for r in routes:
        other = seen.get(r.destination)
        if other is not None:
            problems.append(f"DISCORD_ROUTES routes '{other}' and '{r.name}' post to the same "
                            f"{'channel' if r.channel_id is not None else 'webhook'}: merge them into one route")
        seen[r.destination] = r.name
    return routes, problems, warnings


def _parse_route(name: str, body: str, *, symbols: tuple[str, ...], symbols_all: bool,
                 configured_timeframes: tuple[str, ...]) -> tuple[RouteSpec | None, list[str], list[str]]:
    errors: list[str] = []
    notes: list[str] = []
    values: dict[str, str] = {}
    for option in (o.strip() for o in body.split(";")):
        if not option:
            continue
        key, eq, value = option.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if not eq or key not in ROUTE_KEYS:
            shown = "(a URL)" if "http" in key or "/" in key else key[:30]  # never echo a webhook token
            errors.append(f"'{shown}' is not a route setting (expected key=value with a key from {', '.join(ROUTE_KEYS)})")
            continue
        if key in values:
            errors.append(f"{key} is given twice")
        values[key] = value
    channel_id = webhook = None
    if "channel" in values and "webhook" in values:
        errors.append("give either channel= or webhook=, not both")
    elif "channel" in values:
        channel_id = _snowflake(values["channel"])
        if channel_id is None:
            errors.append(f"channel={values['channel'][:30]!r}: expected a channel id (a number; right-click the "
                          "channel > Copy Channel ID)")
    elif "webhook" in values:
        webhook = values["webhook"]
        if not WEBHOOK_URL_RE.match(webhook):
            errors.append(f"webhook={mask_webhook(webhook)!r}: expected a Discord webhook URL "
                          "(https://discord.com/api/webhooks/<id>/<token>)")
    else:
        errors.append("needs channel=<channel id> or webhook=<webhook URL>")
    kinds: tuple[RouteKind, ...] = DEFAULT_ROUTE_KINDS
    if "kinds" in values:
        picked: list[RouteKind] = []
        for word in _words(values["kinds"].lower()):
            kind = next((k for k in ROUTE_KINDS if k == word.replace("-", "_")), None)
            if kind is None:
                errors.append(f"kinds: {word[:30]!r} is not one of {', '.join(ROUTE_KINDS)}")
            elif kind not in picked:
                picked.append(kind)
        if not picked and not any(e.startswith("kinds") for e in errors):
            errors.append(f"kinds: expected at least one of {', '.join(ROUTE_KINDS)}")
        kinds = tuple(picked)
    syms: list[str] = []
    for word in _words(values.get("symbols", "")):
        clean = re.sub(r"[^A-Za-z0-9]", "", word).upper()
        sym = clean if clean.endswith("USDT") or clean in symbols else clean + "USDT"
        if not re.fullmatch(r"[A-Za-z0-9/_-]+", word) or not _SYMBOL_RE.match(sym):
            errors.append(f"symbols: {word[:30]!r} is not a symbol like BTC or BTCUSDT")
        elif sym not in syms:
            syms.append(sym)
            if not symbols_all and symbols and sym not in symbols:
                notes.append(f"symbols: {sym} is not in SYMBOLS, so this filter never matches it")
    tfs: list[str] = []
    for word in _words(values.get("timeframes", "")):
        if not timeframes.is_interval(word):
            errors.append(f"timeframes: {word[:10]!r} is not a Binance interval ({', '.join(timeframes.INTERVALS)})")
        elif word not in tfs:
            tfs.append(word)
            if configured_timeframes and word not in configured_timeframes:
                notes.append(f"timeframes: {word} is not in TIMEFRAMES, so this filter never matches it")
    patterns: list[str] = []
    for word in _words(values.get("patterns", "").lower()):
        if not _PATTERN_RE.match(word):
            errors.append(f"patterns: {word[:30]!r}: expected a pattern name or part of one (letters, digits, '_')")
        elif word not in patterns:
            patterns.append(word)
    directions: list[str] = []
    for word in _words(values.get("directions", "").upper()):
        if word not in ("LONG", "SHORT"):
            errors.append(f"directions: {word[:10]!r} is not long or short")
        elif word not in directions:
            directions.append(word)
    min_r: float | None = None
    if "min_expected_r" in values:
        try:
            min_r = float(values["min_expected_r"])
            if not -10 <= min_r <= 10:
                raise ValueError
        except ValueError:
            errors.append(f"min_expected_r={values['min_expected_r'][:20]!r}: expected a number of R between -10 and 10, "
                          "e.g. 0.05")
            min_r = None
    roles: list[int] = []
    for word in _words(values.get("mention", "")):
        role = _snowflake(word.removeprefix("<@&").removesuffix(">"))
        if role is None:
            errors.append(f"mention: {word[:30]!r} is not a role id (Server Settings > Roles > right-click > Copy Role ID)")
        elif role not in roles:
            roles.append(role)
    if errors:
        return None, errors, notes
    return RouteSpec(name=name, channel_id=channel_id, webhook_url=webhook, kinds=kinds, symbols=tuple(syms),
                     timeframes=tuple(tfs), patterns=tuple(patterns), directions=tuple(directions),
                     min_expected_r=min_r, mention_roles=tuple(roles)), [], notes


def parse_notifications(text: str) -> tuple[dict[RouteKind, NotifyMode], list[str]]:
    """``DISCORD_NOTIFICATIONS`` -> (mode per kind, every kind present; problems)."""
    modes: dict[RouteKind, NotifyMode] = dict.fromkeys(ROUTE_KINDS, "on")
    problems: list[str] = []
    for item in _words(text):
        key, eq, value = item.partition("=")
        kind = next((k for k in ROUTE_KINDS if k == key.strip().lower().replace("-", "_")), None)
        mode = next((m for m in NOTIFY_MODES if m == value.strip().lower()), None)
        if not eq or kind is None or mode is None:
            problems.append(f"DISCORD_NOTIFICATIONS={item[:40]!r}: expected kind=mode with a kind from "
                            f"{', '.join(ROUTE_KINDS)} and a mode from on, off, silent (e.g. watch=silent)")
            continue
        modes[kind] = mode
    return modes, problems


def parse_utc_offset(text: str) -> int | None:
    """'+02:00' / '-5' / '+5:30' / 'UTC+1' / '0' -> minutes east of UTC; None when it is not an offset in -12..+14 h."""
    m = _OFFSET_RE.match(text.strip())
    if not m:
        return None
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if minutes >= 60:
        return None
    total = (hours * 60 + minutes) * (-1 if m.group(1) == "-" else 1)
    return total if -12 * 60 <= total <= 14 * 60 else None
