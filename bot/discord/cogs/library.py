"""What the bot knows: /sources (the indexed documents, paged) and /help."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.errors import NO_MENTIONS, library_for
from bot.discord.render import help_embed
from bot.discord.views import DocumentsView

DOCS_PER_PAGE = 10


class LibraryCog(commands.Cog, name="Library"):
    """Lists the documents and describes the index."""

    def __init__(self, bot: Any):
        self.bot = bot

    @app_commands.command(name="sources", description="List the documents I answer from, with date and size")
    async def sources(self, interaction: discord.Interaction) -> None:
        """The indexed documents, ten to a page."""
        kb = library_for(self.bot, interaction.guild_id)
        await interaction.response.defer(thinking=True)
        docs = await self.bot.offload(kb.documents)
        view = DocumentsView(docs, DOCS_PER_PAGE, timeout=self.bot.cfg.bot.view_timeout_seconds)
        if view.pages > 1:
            view.message = await interaction.followup.send(embed=view.embed(), view=view, wait=True,
                                                           allowed_mentions=NO_MENTIONS)
        else:
            await interaction.followup.send(embed=view.embed(), allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="help", description="What I know (documents, passages, last build) and how to ask")
    async def help(self, interaction: discord.Interaction) -> None:
        """What the bot knows and how to ask it (only to the asker)."""
        from index.kb import UserError
        kb = library_for(self.bot, interaction.guild_id)
        await interaction.response.defer(thinking=True, ephemeral=True)
        try:
            info, error = await self.bot.offload(kb.info), None
        except UserError as exc:
            info, error = None, str(exc)
        await interaction.followup.send(embed=help_embed(info, sorted(self.bot.ask_channels), error), ephemeral=True,
                                        allowed_mentions=NO_MENTIONS)


async def setup(bot: commands.Bot) -> None:
    """Extension entry point: add the cog."""
    await bot.add_cog(LibraryCog(bot))
