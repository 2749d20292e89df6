"""``python -m src.bot.discord invite``: print the bot's invite URL with the scopes and permissions WyEli needs.

The application id comes from ``--app-id`` or, when omitted, from DISCORD_TOKEN (a bot token's first
segment is the base64 of the bot user's id, which equals the application id). Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys

import discord

from src.config import Config

PERMISSIONS = discord.Permissions(view_channel=True, send_messages=True, embed_links=True, attach_files=True,
                                  read_message_history=True, create_public_threads=True, send_messages_in_threads=True)
SCOPES = ("bot", "applications.commands")


def app_id_from_token(token: str) -> int | None:
    """The application id encoded in a bot token, or None when the token does not look like one."""
    first = token.split(".", 1)[0]
    try:
        text = base64.b64decode(first + "=" * (-len(first) % 4), altchars=b"-_", validate=False).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text) if text.isdigit() and 15 <= len(text) <= 21 else None


def invite_url(app_id: int) -> str:
    """OAuth2 URL: scopes bot + applications.commands; View Channel, Send Messages, Embed Links,
    Attach Files, Read Message History, Create Public Threads and Send Messages in Threads (for follow-ups in
    threads; permissions integer 309237763072)."""
    return discord.utils.oauth_url(app_id, permissions=PERMISSIONS, scopes=SCOPES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.bot.discord", description="WyEli Discord helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    inv = sub.add_parser("invite", help="print the invite URL for your bot")
    inv.add_argument("--app-id", type=int, help="Application ID (Developer Portal > General Information)")
    inv.add_argument("--env-file", default=".env")
    args = parser.parse_args(argv)
    app_id = args.app_id
    if app_id is None:
        token = Config.from_env(dotenv_path=args.env_file).discord_token
        app_id = app_id_from_token(token) if token else None
    if app_id is None:
        print("No application id: pass --app-id (Developer Portal > General Information > Application ID) "
              "or set DISCORD_TOKEN.", file=sys.stderr)
        return 2
    print(invite_url(app_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
