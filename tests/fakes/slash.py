"""Slash commands through the bot's real command tree, offline.

dpytest has no interactions, so this builds the INTERACTION_CREATE payload Discord would send (an application
command with its options, the member with its permissions in the channel), makes a :class:`discord.Interaction` on
the bot's connection state (dpytest's), and hands it to ``bot.tree._call`` exactly as the gateway handler does: the
tree finds the command, converts the options, runs the checks and the hybrid command's callback. Only the two
objects that would talk to Discord's HTTP API (``interaction.response`` and ``interaction.followup``) are replaced by
recorders."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import discord
from discord.ext import commands


@dataclass
class SlashReplies:
    """What the command answered: deferrals, and every message (content + keyword arguments) in order."""

    deferred: bool = False
    sent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        assert self.sent, "the command sent nothing"
        return self.sent[-1]

    def text(self) -> str:
        """Content and embed texts of every reply, for simple assertions."""
        out = []
        for m in self.sent:
            out.append(str(m.get("content") or ""))
            embeds = [m["embed"]] if isinstance(m.get("embed"), discord.Embed) else []
            embeds += [e for e in (m.get("embeds") or []) if isinstance(e, discord.Embed)]
            out += [str(e.to_dict()) for e in embeds]
        return "\n".join(out)


class _Response:
    def __init__(self, replies: SlashReplies) -> None:
        self.replies = replies
        self.done = False

    def is_done(self) -> bool:
        return self.done

    async def defer(self, **kwargs: Any) -> None:
        self.done = True
        self.replies.deferred = True

    async def send_message(self, content: str | None = None, **kwargs: Any) -> Any:
        self.done = True
        self.replies.sent.append({"content": content, **kwargs})
        return SimpleNamespace(resource=MagicMock(spec=discord.InteractionMessage))


class _Followup:
    def __init__(self, replies: SlashReplies) -> None:
        self.replies = replies

    async def send(self, content: str | None = None, **kwargs: Any) -> Any:
        self.replies.sent.append({"content": content, **kwargs})
        return MagicMock(spec=discord.WebhookMessage)


async def invoke_slash(bot: commands.Bot, name: str, options: dict[str, str] | None = None, *,
                       channel: discord.TextChannel, member: discord.Member,
                       permissions: discord.Permissions | None = None) -> SlashReplies:
    """Run ``/name option:value ...`` typed by ``member`` in ``channel``; returns what the bot answered."""
    assert bot.user is not None
    perms = permissions if permissions is not None else channel.permissions_for(member)
    payload: dict[str, Any] = {
        "id": str(discord.utils.time_snowflake(discord.utils.utcnow())), "application_id": str(bot.user.id), "type": 2,
        "token": "interaction-token", "version": 1,
        "data": {"id": "1", "name": name, "type": 1,
                 "options": [{"name": k, "type": 3, "value": v} for k, v in (options or {}).items()]},
        "guild_id": str(channel.guild.id), "channel_id": str(channel.id), "channel": {"id": str(channel.id), "type": 0},
        "member": {"user": {"id": str(member.id), "username": member.name, "discriminator": "0001", "avatar": None},
                   "roles": [], "flags": 0, "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                   "permissions": str(perms.value)},
        "app_permissions": str(discord.Permissions.all().value), "attachment_size_limit": 10485760, "locale": "en-US",
        "guild_locale": "en-US", "entitlements": [],
    }
    interaction: discord.Interaction[Any] = discord.Interaction(data=payload, state=bot._connection)  # type: ignore[arg-type]
    replies = SlashReplies()
    # the cached slots behind ``interaction.response`` / ``interaction.followup``
    setattr(interaction, "_cs_response", _Response(replies))  # noqa: B010
    setattr(interaction, "_cs_followup", _Followup(replies))  # noqa: B010
    await bot.tree._call(interaction)
    return replies
