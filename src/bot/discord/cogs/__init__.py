"""Command cogs of the WyEli Discord bot."""
