"""``python -m tests.fakes.bot_process [args]``: the real bot (``src.bot.main``) with discord.py's API base moved to
``WYELI_TEST_DISCORD_BASE`` (a local recording webhook server), for tests that run the bot as a child process.
Nothing else differs from ``python -m src.bot.main``."""

from __future__ import annotations

import os
import sys

import discord.http

from src.bot.main import main

if __name__ == "__main__":
    base = os.environ.get("WYELI_TEST_DISCORD_BASE")
    if base:
        discord.http.Route.BASE = base
    sys.exit(main())
