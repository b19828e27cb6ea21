"""citebot's Discord front end: run the bot, sync its slash commands, and tell whether a token is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Iterator

from bot.discord.credentials import read_token, token_configured

__all__ = ["run", "serve", "sync", "sync_commands", "token_configured", "create_bot"]
log = logging.getLogger("citebot.discord")


def create_bot(cfg: Any, kb: Any, **options: Any):
    """A new citebot client (see bot.discord.client.create_bot)."""
    from bot.discord.client import create_bot as _create
    return _create(cfg, kb, **options)


def _setup_logging(token: str) -> None:
    """Log the bot's progress at INFO (to existing handlers, or a new one) with the token redacted everywhere."""
    import discord
    from bot.discord.credentials import install_redaction
    if not logging.getLogger().handlers:
        discord.utils.setup_logging(level=logging.INFO, root=True)
    for name in ("discord", "citebot"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    install_redaction(token)


@contextlib.contextmanager
def _discord_errors() -> Iterator[None]:
    """Turn Discord's refusals of the bot's setup into configuration errors that say what to change."""
    import discord
    from index.config import ConfigError
    try:
        yield
    except discord.LoginFailure:
        raise ConfigError("config: Discord rejected the bot token (from DISCORD_TOKEN or bot.token_file); "
                          "copy it again from the Developer Portal (Bot → Reset Token)") from None
    except discord.PrivilegedIntentsRequired:
        raise ConfigError("config: bot.ask_channels needs the Message Content intent: enable it in the Developer "
                          "Portal (Bot → Privileged Gateway Intents) or empty bot.ask_channels") from None


async def serve(cfg: Any, kb: Any = None, token: str | None = None, **options: Any) -> None:
    """Connect to Discord and answer until cancelled or closed."""
    token = token or read_token(cfg)
    _setup_logging(token)
    if kb is None:
        from index.kb import KnowledgeBase
        kb = await asyncio.to_thread(KnowledgeBase, cfg)
    bot = create_bot(cfg, kb, **options)
    with _discord_errors():
        async with bot:
            await bot.start(token)


def run(cfg: Any, kb: Any = None) -> None:
    """Run the Discord bot until interrupted (blocking); the token comes from DISCORD_TOKEN or bot.token_file."""
    try:
        asyncio.run(serve(cfg, kb))
    except KeyboardInterrupt:
        log.info("stopped")


async def sync(cfg: Any, guild_id: int | None = None, token: str | None = None, **options: Any) -> list[str]:
    """Register the slash commands with Discord, for one server (instant) or globally; returns their names."""
    import discord
    token = token or read_token(cfg)
    _setup_logging(token)
    bot = create_bot(cfg, None, **options)
    with _discord_errors():
        async with bot:
            await bot.login(token)  # runs setup_hook, which loads the cogs and their commands
            if guild_id is not None:
                guild = discord.Object(id=guild_id)
                bot.tree.copy_global_to(guild=guild)
                synced = await bot.tree.sync(guild=guild)
            else:
                synced = await bot.tree.sync()
    return [command.name for command in synced]


def sync_commands(cfg: Any, guild_id: int | None = None) -> list[str]:
    """`citebot sync [--guild ID]`: register the slash commands (blocking); returns their names."""
    return asyncio.run(sync(cfg, guild_id))
