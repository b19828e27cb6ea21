"""Questions: /ask, mentions of the bot, messages in ask-channels, and follow-ups in the answer threads."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Optional

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.conversation import ThreadMemory, followup_question, strip_mentions, year_filter
from bot.discord.errors import GENERIC, NO_MENTIONS, NotServed, UserFacingError, library_for, send_error
from bot.discord.limits import Cooldowns, refusal
from bot.discord.options import AfterDate, BeforeDate, document_choices
from bot.discord.render import answer_embed
from bot.discord.text import THREAD_NAME, fit_content, one_line, trim
from bot.discord.views import AnswerButton, AnswerRegistry, AnswerView
from index.answer import Answer

log = logging.getLogger("citebot.discord")
EMPTY_MENTION = "Ask me a question after the mention, for example: “when was the force last inspected?”"
FOLLOW_UP_HINT = ("💡 I only see the messages that mention me here. To ask a follow-up, mention me: "
                  "“@{name} what about 2018?”")


class AskCog(commands.Cog, name="Ask"):
    """Answers questions with quoted, cited passages, from slash commands and from chat."""

    def __init__(self, bot: Any):
        self.bot = bot
        self.cfg = bot.cfg
        self.per_page = max(1, min(int(bot.cfg.retrieval.top_k), 10))
        self.k = min(50, self.per_page * 2)  # one extra page for "More sources"
        self.cooldowns = Cooldowns(bot.cfg.bot.cooldown_seconds)
        self.threads = ThreadMemory()
        self.hinted = ThreadMemory()  # threads where the follow-up hint was given (once each)
        # the answers whose buttons work: the newest bot.max_live_views in memory, all of them saved through the
        # knowledge base so that a press after a restart finds its answer (see AnswerButton)
        self.answers = AnswerRegistry(bot, self.per_page, bot.cfg.bot.max_live_views)
        bot.answers = self.answers

    async def cog_load(self) -> None:
        """Route presses of answer buttons, including those of messages sent before a restart."""
        self.bot.add_dynamic_items(AnswerButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(AnswerButton)

    def kb_for(self, guild_id: int | None) -> Any:
        """The library of server `guild_id` (None: a DM); NotServed (shown as one line) when it has none."""
        return library_for(self.bot, guild_id)

    # ------------------------------------------------------------ shared steps
    def refusal(self, kb: Any, user_id: int, question: str) -> str | None:
        """Why a question is refused before any work (see limits.refusal), or None."""
        return refusal(kb, self.cooldowns, user_id, question, self.cfg.bot.max_question_chars)

    async def answer(self, kb: Any, question: str, *, doc: str | None = None, after: dt.date | None = None,
                     before: dt.date | None = None) -> Answer:
        """Ask the knowledge base off the event loop."""
        return await self.bot.offload(kb.ask, question, self.k, doc=doc, after=after, before=before)

    def reply(self, answer: Answer, kb: Any) -> tuple[discord.Embed, AnswerView]:
        """The embed and the (persistent) buttons of an answer message from library `kb`."""
        return answer_embed(answer, self.per_page), self.answers.add(answer, kb)

    # ------------------------------------------------------------ /ask
    @app_commands.command(name="ask", description="Answer a question with passages quoted from the documents")
    @app_commands.describe(question="What you want to know", document="Only this document",
                           after="Only documents dated on or after this (YYYY, YYYY-MM or YYYY-MM-DD)",
                           before="Only documents dated on or before this (YYYY, YYYY-MM or YYYY-MM-DD)",
                           private="Show the answer only to you")
    async def ask(self, interaction: discord.Interaction, question: str, document: Optional[str] = None,
                  after: Optional[app_commands.Transform[dt.date, AfterDate]] = None,
                  before: Optional[app_commands.Transform[dt.date, BeforeDate]] = None,
                  private: bool = False) -> None:
        """Refuse what is wrong before any work privately and at once (the member keeps their turn); else defer,
        ask off the loop, then answer with a follow-up embed and buttons."""
        from index.kb import UserError, clean_question
        try:
            clean_question(question, limit=max(1, len(question)))  # empty, or no words (length: see refusal)
        except UserError as exc:
            await send_error(interaction, f"⚠️ {exc}")
            return
        kb = self.kb_for(interaction.guild_id)
        refusal = self.refusal(kb, interaction.user.id, question)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        if document is not None:
            try:  # quick (names only) and on its own thread, so a busy worker pool cannot delay the refusal
                document = (await asyncio.to_thread(kb.resolve_document, document)).doc
            except UserError as exc:
                self.cooldowns.reset(interaction.user.id)
                await send_error(interaction, f"⚠️ {exc}")
                return
        await interaction.response.defer(thinking=True, ephemeral=private)
        try:
            answer = await self.answer(kb, question, doc=document, after=after, before=before)
        except UserError as exc:
            self.cooldowns.reset(interaction.user.id)  # e.g. no document dated in that range: nothing was answered
            await send_error(interaction, f"⚠️ {exc}")
            return
        embed, view = self.reply(answer, kb)
        view.message = await interaction.followup.send(embed=embed, view=view, ephemeral=private, wait=True,
                                                       allowed_mentions=NO_MENTIONS)

    @ask.autocomplete("document")
    async def document_autocomplete(self, interaction: discord.Interaction,
                                    current: str) -> list[app_commands.Choice[str]]:
        """Indexed documents whose title or file name contain what is typed."""
        from index.kb import UserError
        try:
            docs = await self.bot.offload(self.kb_for(interaction.guild_id).documents)
        except (UserError, UserFacingError):
            return []
        return document_choices(docs, current)

    # ------------------------------------------------------------ chat
    def _sees_all_messages(self) -> bool:
        """True when the bot has the Message Content intent (it reads messages that do not mention it)."""
        intents = getattr(self.bot, "intents", None)
        return bool(intents is not None and intents.message_content)

    def _question_of(self, message: discord.Message) -> tuple[str, str | None] | None:
        """(the text asked, the thread's earlier question or None) for a message the bot should answer, else None."""
        me = self.bot.user
        channel = message.channel
        mentioned = any(u.id == me.id for u in message.mentions)
        earlier = self.threads.question(channel.id)
        if earlier is None and isinstance(channel, discord.Thread) and channel.owner_id == me.id:
            earlier = channel.name  # the bot names its threads after their question
        in_ask_channel = channel.id in self.bot.ask_channels
        if not (mentioned or earlier is not None or in_ask_channel):
            return None
        return strip_mentions(message.content, me.id), earlier

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Answer mentions, ask-channel messages and follow-ups in the bot's threads; ignore bots."""
        if message.author.bot or message.webhook_id or self.bot.user is None or message.author == self.bot.user:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        asked = self._question_of(message)
        if asked is None:
            return
        text, earlier = asked
        if not text:
            if any(u.id == self.bot.user.id for u in message.mentions):
                await message.reply(EMPTY_MENTION, mention_author=False, allowed_mentions=NO_MENTIONS)
            elif earlier is not None and not self._sees_all_messages() and message.channel.id not in self.hinted:
                # without the Message Content intent Discord sends no text for a message that does not mention
                # the bot: say once in this thread how to ask a follow-up, rather than ignore it silently
                self.hinted.remember(message.channel.id, "")
                await message.channel.send(FOLLOW_UP_HINT.format(name=self.bot.user.name),
                                           allowed_mentions=NO_MENTIONS)
            return
        try:
            kb = self.kb_for(message.guild.id if message.guild is not None else None)
        except NotServed as exc:
            await message.reply(str(exc), mention_author=False, allowed_mentions=NO_MENTIONS, delete_after=30)
            return
        refusal = self.refusal(kb, message.author.id, text)
        if refusal:
            await message.reply(refusal, mention_author=False, allowed_mentions=NO_MENTIONS, delete_after=10)
            return
        await self._answer_message(kb, message, text, earlier)

    async def _answer_message(self, kb: Any, message: discord.Message, text: str, earlier: str | None) -> None:
        """Answer a chat message in its thread, a new thread, or as a reply; errors become one line there."""
        from index.kb import UserError
        question = followup_question(earlier, text) if earlier else text
        years = year_filter(text) if earlier else None
        destination: discord.abc.Messageable = message.channel
        thread: discord.Thread | None = None
        if earlier is None and self.cfg.bot.use_threads and isinstance(message.channel, discord.TextChannel):
            try:
                thread = await message.create_thread(name=trim(one_line(text), THREAD_NAME) or "question",
                                                     auto_archive_duration=1440)
            except discord.HTTPException:
                log.warning("could not open a thread in channel %s; answering in the channel", message.channel.id)
            else:
                destination = thread
                self.threads.remember(thread.id, text)
        try:
            async with destination.typing():
                answer = await self._answer_with_years(kb, question, years)
            embed, view = self.reply(answer, kb)
            if thread is not None or isinstance(message.channel, discord.Thread):
                view.message = await destination.send(embed=embed, view=view, allowed_mentions=NO_MENTIONS)
            else:
                view.message = await message.reply(embed=embed, view=view, mention_author=False,
                                                   allowed_mentions=NO_MENTIONS)
        except UserError as exc:
            await destination.send(fit_content(f"⚠️ {exc}"), allowed_mentions=NO_MENTIONS)
        except Exception:
            log.exception("error answering message %s in channel %s", message.id, message.channel.id)
            try:
                await destination.send(GENERIC, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException:
                pass

    async def _answer_with_years(self, kb: Any, question: str, years: tuple[dt.date, dt.date] | None) -> Answer:
        """Ask within the years a follow-up names; without that filter if no document is dated then."""
        from index.kb import UserError
        if years:
            try:
                return await self.answer(kb, question, after=years[0], before=years[1])
            except UserError:
                pass
        return await self.answer(kb, question)


async def setup(bot: commands.Bot) -> None:
    """Extension entry point: add the cog."""
    await bot.add_cog(AskCog(bot))
