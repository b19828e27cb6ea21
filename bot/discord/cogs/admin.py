"""/reindex: rebuild the index from the documents folder, for Manage Server or a configured role."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional, Sequence
from urllib.parse import urlsplit

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.errors import NO_MENTIONS, NotAllowed, UserFacingError, library_for
from bot.discord.options import document_choices
from bot.discord.render import progress_text, reindex_text
from bot.discord.text import fit_content

log = logging.getLogger("citebot.discord")
ALREADY_RUNNING = "⏳ A reindex is already running; questions are answered from the current index until it ends."


DISCORD_FILE_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")


def attachment_url_allowed(url: str) -> bool:
    """True for Discord's attachment addresses (https on its file hosts; the REST host discord.py is pointed at,
    which is Discord itself unless a test points it at a stand-in)."""
    import discord.http
    parts = urlsplit(url or "")
    base = urlsplit(discord.http.Route.BASE)
    if (parts.scheme, parts.hostname) == (base.scheme, base.hostname) and parts.port == base.port:
        return True
    return parts.scheme == "https" and parts.hostname in DISCORD_FILE_HOSTS


def may_reindex(member: Any, permissions: discord.Permissions, role: str) -> bool:
    """True if the member has Manage Server, or has the role named or numbered `role` (when one is configured)."""
    if permissions.manage_guild or permissions.administrator:
        return True
    role = str(role or "").strip()
    if not role:
        return False
    return any(str(r.id) == role or r.name == role for r in getattr(member, "roles", ()))


def refusal_text(role: str, command: str = "reindex") -> str:
    """The one line a member without permission sees."""
    extra = f" or the “{role}” role" if role and not str(role).isdigit() else (" or the reindex role" if role else "")
    return f"/{command} needs the Manage Server permission{extra}."


def can_reindex() -> Callable:
    """A check: the member may run /reindex (raises NotAllowed with the reason otherwise)."""
    async def predicate(interaction: discord.Interaction) -> bool:
        role = str(interaction.client.cfg.bot.reindex_role or "")
        if interaction.guild is None:
            raise app_commands.NoPrivateMessage()
        if may_reindex(interaction.user, interaction.permissions, role):
            return True
        raise NotAllowed(refusal_text(role, getattr(interaction.command, 'name', None) or 'reindex'))
    return app_commands.check(predicate)


class AdminCog(commands.Cog, name="Admin"):
    """Index maintenance from Discord."""

    progress_interval = 2.0  # seconds between edits of the progress message (Discord rate-limits edits)

    def __init__(self, bot: Any):
        self.bot = bot
        self.running: set[int] = set()  # the libraries being rebuilt from here (by id)
        if not str(bot.cfg.bot.reindex_role or "").strip():
            # hidden from members without Manage Server in the client too (enforced at run time regardless)
            for command in (self.reindex, self.upload, self.remove):
                command.default_permissions = discord.Permissions(manage_guild=True)

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

    # ------------------------------------------------------------ /upload and /remove
    @app_commands.command(name="upload", description="Add documents to this server's library and update the index")
    @app_commands.describe(file="A txt, md, html, pdf or docx document", file2="Another document",
                           file3="Another document", replace="Overwrite a document of the same name")
    @app_commands.guild_only()
    @can_reindex()
    async def upload(self, interaction: discord.Interaction, file: discord.Attachment,
                     file2: Optional[discord.Attachment] = None, file3: Optional[discord.Attachment] = None,
                     replace: bool = False) -> None:
        """Check each attachment (size, name, type by content), store it, reindex; a file that fails to load is
        removed again with its reason. Everything is answered privately; each step is logged with who did it."""
        from index.kb import UserError
        kb = library_for(self.bot, interaction.guild_id)
        files = [f for f in (file, file2, file3) if f is not None]
        limit = int(self.bot.cfg.bot.max_upload_mb * 1024 * 1024)
        too_big = [f.filename for f in files if f.size > limit]
        if too_big:
            await interaction.response.send_message(
                f"⚠️ {', '.join(too_big)}: larger than the limit of {self.bot.cfg.bot.max_upload_mb:g} MB "
                "(bot.max_upload_mb)", ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        if id(kb) in self.running or getattr(kb, "building", False):
            await interaction.response.send_message(ALREADY_RUNNING, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        await interaction.response.defer(thinking=True, ephemeral=True)
        stored, refused = [], []
        for f in files:
            try:
                if not attachment_url_allowed(f.url):
                    raise UserError(f"{f.filename}: not a Discord attachment address")
                data = await f.read()  # from Discord's attachment URL only; the size was checked above
                if len(data) > limit:
                    raise UserError(f"{f.filename}: larger than the limit of {self.bot.cfg.bot.max_upload_mb:g} MB")
                name = await asyncio.to_thread(kb.add_upload, f.filename, data, replace)
            except (UserError, discord.HTTPException) as exc:
                refused.append(f"⚠️ {exc}")
                log.info("upload refused in server %s by user %s: %s", interaction.guild_id, interaction.user.id, exc)
                continue
            stored.append(name)
            log.info("upload by user %s in server %s: %s (%d bytes%s)", interaction.user.id, interaction.guild_id,
                     name, len(data), ", replacing" if replace else "")
        if not stored:
            await interaction.edit_original_response(content=fit_content("\n".join(refused)),
                                                     allowed_mentions=NO_MENTIONS)
            return
        text = await self._reindex(interaction, kb, False, uploaded=stored)
        await interaction.edit_original_response(content=fit_content("\n".join(refused + [text])),
                                                 allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="remove", description="Delete a document from this server's library and update "
                                                     "the index")
    @app_commands.describe(document="The document (start typing its title or file name)")
    @app_commands.guild_only()
    @can_reindex()
    async def remove(self, interaction: discord.Interaction, document: str) -> None:
        """Delete the document, then reindex (privately, with progress); logged with who did it."""
        from index.kb import UserError
        kb = library_for(self.bot, interaction.guild_id)
        if id(kb) in self.running or getattr(kb, "building", False):
            await interaction.response.send_message(ALREADY_RUNNING, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        try:
            doc = await asyncio.to_thread(kb.remove_document, document)
        except UserError as exc:
            await interaction.response.send_message(fit_content(f"⚠️ {exc}"), ephemeral=True,
                                                    allowed_mentions=NO_MENTIONS)
            return
        log.info("remove by user %s in server %s: %s", interaction.user.id, interaction.guild_id, doc)
        await interaction.response.defer(thinking=True, ephemeral=True)
        text = await self._reindex(interaction, kb, False)
        await interaction.edit_original_response(content=fit_content(f"🗑️ Removed {doc}.\n{text}"),
                                                 allowed_mentions=NO_MENTIONS)

    @remove.autocomplete("document")
    async def remove_autocomplete(self, interaction: discord.Interaction,
                                  current: str) -> list[app_commands.Choice[str]]:
        """This server's documents matching what is typed."""
        from index.kb import UserError
        try:
            docs = await self.bot.offload(library_for(self.bot, interaction.guild_id).documents)
        except (UserError, UserFacingError):
            return []
        return document_choices(docs, current)

    async def _reindex(self, interaction: discord.Interaction, kb: Any, full: bool,
                       uploaded: Sequence[str] = ()) -> str:
        """An incremental build with progress in the reply; the final text. An uploaded file that fails to load
        is deleted again (it never entered the index) and its reason shown."""
        from index.kb import UserError
        self.running.add(id(kb))
        try:
            report = await self._build(interaction, kb, full)
        except UserError as exc:
            return f"⚠️ {exc}"
        finally:
            self.running.discard(id(kb))
        log.info("reindex done: %s", report.summary_line())
        lines = []
        for name in uploaded:
            reasons = [w for w in report.skipped if w.startswith(f"{name}: ")]
            if reasons:
                await asyncio.to_thread(kb.delete_file, name)  # it never entered the index
                lines.append(f"❌ {name} could not be read and was removed again: "
                             f"{reasons[0][len(name) + 2:].removesuffix('; skipped')}")
                log.info("upload %s removed again: %s", name, reasons[0])
        if uploaded and len(lines) < len(uploaded):
            lines.insert(0, "📥 Added: " + ", ".join(n for n in uploaded if not any(n in l for l in lines)))
        return "\n".join(lines + [reindex_text(report)])

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
