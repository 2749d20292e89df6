"""Discord: signal embeds and charts, the bot and its commands, exactly-once delivery, previews.

Entry points for the app: :func:`src.bot.discord.service.build_discord_service` /
:class:`src.bot.discord.service.DiscordService` and :class:`src.bot.discord.preview.DiscordPreview`.
"""
