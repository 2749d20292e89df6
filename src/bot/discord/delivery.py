"""What every outbox queue shares: its counters, the destination ports, and how a failed post is classified."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import discord

from src.bot.discord.messages import OutgoingMessage
from src.config.discord_routes import FollowUpMode

CANNOT_DM = 50007  # Discord's code for "Cannot send messages to this user" (DMs closed)


class Poster(Protocol):
    """One delivery destination."""

    destination: str  # outbox key, e.g. "discord:123" or "webhook"

    async def ready(self) -> bool:
        """True when a post can be attempted now (connected, channel resolved)."""

    async def post(self, message: OutgoingMessage) -> str:
        """Post and return the Discord message id; raise on failure."""

    async def find_posted(self, signal_ids: Sequence[str], since_ms: int) -> dict[str, str]:
        """signal id -> message id for those of ``signal_ids`` already posted by us since ``since_ms``."""


@runtime_checkable
class FollowUpPoster(Protocol):
    """A destination that can also post follow-ups and edit an original message."""

    destination: str

    async def post_follow_up(self, message: OutgoingMessage, original_message_id: str, mode: FollowUpMode) -> str:
        """Reply to (or post in the thread of) the original message; returns the new message id."""

    async def find_posted_follow_ups(self, keys: Sequence[tuple[str, str]], originals: Mapping[str, str],
                                     since_ms: int) -> dict[tuple[str, str], str]:
        """(signal id, event) -> message id of those already posted by us since ``since_ms``."""

    async def edit_status(self, original_message_id: str, signal_id: str, status: str) -> bool:
        """Set the status line of the signal's embed in the original message; False when not found."""


@dataclass(slots=True)
class OutboxStats:
    """Counters for metrics and ``>status`` (per destination)."""

    sent: int = 0  # signals posted (a grouped message counts each of its signals)
    messages: int = 0
    failed: int = 0  # failed attempts (each is retried)
    skipped: int = 0  # too old when first seen
    rejected: int = 0  # Discord refused the payload twice (skipped with the error)
    recovered: int = 0  # found already posted after a crash: recorded, not re-posted
    pending: int = 0  # waiting at the end of the last pass
    not_routed: int = 0  # signals / follow-ups this destination does not post (filters, mutes, notifications off)
    follow_ups: int = 0  # follow-ups posted
    notices: int = 0  # alarms and trading notices posted
    edits_failed: int = 0  # status-line edits of an original that failed (the next follow-up rewrites the line)
    last_error: str | None = None
    last_sent_at_ms: int | None = None


class DeliveryFailed(Exception):
    """A post failed; the sender backs off and retries the same (oldest) message."""


def is_rejection(exc: BaseException) -> bool:
    """Discord refused this payload (bad embed, too large) or this recipient (DMs closed): retrying the same bytes
    cannot succeed."""
    if isinstance(exc, discord.Forbidden):
        return exc.code == CANNOT_DM
    return isinstance(exc, discord.HTTPException) and exc.status in (400, 413)


def describe_error(exc: BaseException) -> str:
    """Short, secret-free error text (exception reprs of aiohttp can carry URLs with tokens)."""
    if isinstance(exc, discord.Forbidden):
        if exc.code == CANNOT_DM:
            return "403 Forbidden: the user does not accept DMs from the bot"
        return f"403 Forbidden (missing permission? {exc.text[:120]})"
    if isinstance(exc, discord.NotFound):
        return f"404 Not Found (wrong channel id or deleted webhook? {exc.text[:120]})"
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status}: {exc.text[:160]}"
    return type(exc).__name__ + (f": {str(exc)[:160]}" if "http" not in str(exc).lower() else "")
