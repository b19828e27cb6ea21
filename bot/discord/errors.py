"""Errors shown to the user as one ephemeral line, and the helper that shows them."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

NO_MENTIONS = discord.AllowedMentions.none()
GENERIC = "⚠️ Something went wrong while answering; the details are in the bot's log."
log = logging.getLogger("citebot.discord")


class UserFacingError(app_commands.AppCommandError):
    """A problem the user can fix; str() is the one line they see."""


NOT_SERVED = "⛔ This server has no library to answer from; the bot's owner can map it in config.toml ([servers])."


class NotServed(UserFacingError):
    """The server (or a DM) has no library: it is not mapped and servers.default is "none"."""


def library_for(bot: object, guild_id: int | None):
    """The knowledge base for server `guild_id` (None: a DM): the bot's `kb_for`, or its one `kb`."""
    kb_for = getattr(bot, "kb_for", None)
    return kb_for(guild_id) if kb_for is not None else bot.kb  # type: ignore[attr-defined]


class NotAllowed(app_commands.CheckFailure):
    """The member may not run this command; str() says who may."""


def user_message(error: BaseException) -> str | None:
    """The line to show for an error the user caused, or None for a bug (which gets logged)."""
    from index.kb import UserError
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, (NotAllowed, NotServed)):
        return str(error) if str(error).startswith("⛔") else f"⛔ {error}"
    if isinstance(error, (UserFacingError, UserError)):
        return f"⚠️ {error}"
    if isinstance(error, app_commands.TransformerError):
        return f"⚠️ '{error.value}' is not a valid value for that option."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"⏳ Please wait {error.retry_after:.0f} s."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "⚠️ This command only works in a server."
    if isinstance(error, app_commands.CheckFailure):
        return "⛔ You are not allowed to use this command."
    return None


async def send_error(interaction: discord.Interaction, text: str) -> None:
    """Show `text` to the user who interacted, as an ephemeral message, whether or not the interaction was answered."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        if (interaction.type is discord.InteractionType.application_command
                and interaction.response.type is discord.InteractionResponseType.deferred_channel_message):
            # a public "thinking…" placeholder would turn the error public: remove it first
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
        await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
    except discord.HTTPException:
        log.warning("could not tell the user about an error (interaction %s)", interaction.id, exc_info=True)


async def report(interaction: discord.Interaction, error: BaseException) -> None:
    """Handle any error of an interaction: a user's mistake is shown as is; a bug is logged with its traceback."""
    text = user_message(error)
    if text is None:
        original = getattr(error, "original", error)
        command = interaction.command.qualified_name if interaction.command else interaction.data and \
            interaction.data.get("custom_id")
        log.error("error in %s (interaction %s)", command, interaction.id,
                  exc_info=(type(original), original, original.__traceback__))
        text = GENERIC
    await send_error(interaction, text)
