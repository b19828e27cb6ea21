"""/reindex: rebuild the index from the documents folder, for Manage Server or a configured role."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.errors import NO_MENTIONS, NotAllowed, library_for
from bot.discord.render import progress_text, reindex_text
from bot.discord.text import fit_content

log = logging.getLogger("citebot.discord")
ALREADY_RUNNING = "⏳ A reindex is already running; questions are answered from the current index until it ends."


def may_reindex(member: Any, permissions: discord.Permissions, role: str) -> bool:
    """True if the member has Manage Server, or has the role named or numbered `role` (when one is configured)."""
    if permissions.manage_guild or permissions.administrator:
        return True
    role = str(role or "").strip()
    if not role:
        return False
    return any(str(r.id) == role or r.name == role for r in getattr(member, "roles", ()))


def refusal_text(role: str) -> str:
    """The one line a member without permission sees."""
    extra = f" or the “{role}” role" if role and not str(role).isdigit() else (" or the reindex role" if role else "")
    return f"/reindex needs the Manage Server permission{extra}."


def can_reindex() -> Callable:
    """A check: the member may run /reindex (raises NotAllowed with the reason otherwise)."""
    async def predicate(interaction: discord.Interaction) -> bool:
        role = str(interaction.client.cfg.bot.reindex_role or "")
        if interaction.guild is None:
            raise app_commands.NoPrivateMessage()
        if may_reindex(interaction.user, interaction.permissions, role):
            return True
        raise NotAllowed(refusal_text(role))
    return app_commands.check(predicate)


class AdminCog(commands.Cog, name="Admin"):
    """Index maintenance from Discord."""

    progress_interval = 2.0  # seconds between edits of the progress message (Discord rate-limits edits)

    def __init__(self, bot: Any):
        self.bot = bot
        self.running: set[int] = set()  # the libraries being rebuilt from here (by id)
        if not str(bot.cfg.bot.reindex_role or "").strip():
            # hidden from members without Manage Server in the client too (enforced at run time regardless)
            self.reindex.default_permissions = discord.Permissions(manage_guild=True)

    @app_commands.command(name="reindex", description="Update the index from the documents folder")
    @app_commands.describe(full="Embed every passage again instead of only new and changed ones")
    @app_commands.guild_only()
    @can_reindex()
    async def reindex(self, interaction: discord.Interaction, full: bool = False) -> None:
        """Rebuild the index, editing the reply with progress and ending with the files changed."""
        from index.kb import UserError
        kb = library_for(self.bot, interaction.guild_id)
        if id(kb) in self.running or getattr(kb, "building", False):
            await interaction.response.send_message(ALREADY_RUNNING, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        self.running.add(id(kb))
        try:
            await interaction.response.defer(thinking=True, ephemeral=True)
            log.info("reindex (full=%s) of server %s started by user %s", full, interaction.guild_id,
                     interaction.user.id)
            report = await self._build(interaction, kb, full)
            text = reindex_text(report)
            log.info("reindex done: %s", report.summary_line())
        except UserError as exc:
            text = fit_content(f"⚠️ {exc}")
        finally:
            self.running.discard(id(kb))
        await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)

    async def _build(self, interaction: discord.Interaction, kb: Any, full: bool) -> Any:
        """Run the build in a worker thread while a task edits the reply with its progress."""
        loop = asyncio.get_running_loop()
        latest = [progress_text("starting", 0, 0)]
        changed = asyncio.Event()
        changed.set()

        def progress(stage: str, done: int, total: int) -> None:  # called from the build thread
            latest[0] = progress_text(stage, done, total)
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # the loop has closed: the bot is shutting down
                pass

        async def show() -> None:
            shown = None
            while True:
                await changed.wait()
                changed.clear()
                if latest[0] != shown:
                    shown = latest[0]
                    try:
                        await interaction.edit_original_response(content=shown, allowed_mentions=NO_MENTIONS)
                    except discord.HTTPException:
                        log.debug("could not edit the reindex progress message", exc_info=True)
                await asyncio.sleep(self.progress_interval)

        editor = asyncio.create_task(show())
        try:
            # a thread outside the bot's worker pool: questions keep being answered while it builds
            return await asyncio.to_thread(kb.build, full, progress)
        finally:
            editor.cancel()
            await asyncio.gather(editor, return_exceptions=True)


async def setup(bot: commands.Bot) -> None:
    """Extension entry point: add the cog."""
    await bot.add_cog(AdminCog(bot))
