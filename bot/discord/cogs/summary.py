"""Summaries and timelines: /summary (one report, or a topic across reports) and /timeline.

Every line shown is a sentence quoted from a document with a numbered citation, as /ask shows its answers.
The render functions are pure (Summary / TopicSummary / Timeline -> Embed) and respect Discord's limits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional, Sequence

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.errors import NO_MENTIONS, UserFacingError, library_for, send_error
from bot.discord.limits import Cooldowns, refusal
from bot.discord.render import INFO_COLOUR, citation_meta, date_text, source_link
from bot.discord.text import (AUTOCOMPLETE, CHOICE, DESCRIPTION, FIELD_VALUE, FIELDS, FOOTER, TITLE, escape,
                              fit_embed, one_line, trim)
from bot.quotes import marks_for

log = logging.getLogger("citebot.discord")
MAX_LENGTH = 15          # sentences in a /summary of one report
NO_TOPIC = "No document speaks to this topic."


# ------------------------------------------------------------------ rendering (pure)
def quoted(text: str, n: int, limit: int) -> str:
    """'“sentence” [n]' with Markdown made literal, within `limit` characters."""
    marker = f" [{n}]"
    opening, closing = marks_for(one_line(text))
    return f"{opening}{trim(escape(one_line(text)), max(20, limit - len(marker) - 2))}{closing}{marker}"


def _numbered_lines(items: Sequence[tuple[int, str]], budget: int) -> str:
    """Quoted sentences one per line, sharing `budget` characters fairly (short ones give their room away)."""
    lines, left = [], budget
    for i, (n, text) in enumerate(items):
        share = max(60, left // max(1, len(items) - i))
        line = quoted(text, n, share)
        lines.append(line)
        left -= len(line) + 1
    return "\n".join(lines)


def summary_embed(summary: Any) -> discord.Embed:
    """One report's summary: its sentences numbered in the description; the source and where each sentence
    is ([n] location) in fields; a footer saying how much of the document this is."""
    embed = discord.Embed(title=trim(escape(one_line(summary.title)) or "untitled", TITLE), colour=INFO_COLOUR)
    items = [(i, s.text) for i, s in enumerate(summary.sentences, 1)]
    embed.description = _numbered_lines(items, DESCRIPTION - 200) if items else "This document has no text."
    embed.add_field(name="Source", value=trim(citation_meta(summary.date, "", summary.doc, summary.url), FIELD_VALUE),
                    inline=False)
    if items:
        where = " · ".join(f"[{i}] {escape(one_line(s.location))}" for i, s in enumerate(summary.sentences, 1))
        embed.add_field(name="Where", value=trim(where, FIELD_VALUE), inline=False)
    if summary.whole:
        what = "the whole document (too short to summarise)"
    else:
        what = f"{len(summary.sentences)} of {summary.total} sentences, quoted"
    embed.set_footer(text=trim(f"{what} · {summary.elapsed_ms:.0f} ms" + (" (cached)" if summary.cached else ""),
                               FOOTER))
    return fit_embed(embed)


def topic_embed(result: Any) -> discord.Embed:
    """A topic across documents: one field per document (newest first), its sentences numbered on."""
    embed = discord.Embed(title=trim(f"Summary: {escape(one_line(result.topic))}", TITLE), colour=INFO_COLOUR)
    if not result.groups:
        embed.description = NO_TOPIC
        return fit_embed(embed)
    groups = result.groups[:FIELDS]
    embed.description = f"{len(result.groups)} document{'s' if len(result.groups) != 1 else ''}, newest first."
    share = max(300, min(FIELD_VALUE, 5000 // len(groups)))
    n = 0
    for g in groups:
        meta = citation_meta(g.date, "", g.doc, g.url)
        items = []
        for s in g.sentences:
            n += 1
            items.append((n, s.text))
        where = " · ".join(f"[{k}] {escape(one_line(s.location))}" for (k, _), s in zip(items, g.sentences))
        head = trim(f"{meta} · {where}", share // 3)
        body = _numbered_lines(items, share - len(head) - 1)
        embed.add_field(name=trim(escape(one_line(g.title)) or "untitled", 256), value=trim(f"{head}\n{body}", share),
                        inline=False)
    embed.set_footer(text=f"{result.elapsed_ms:.0f} ms · every sentence is quoted from its document")
    return fit_embed(embed)


def timeline_embed(result: Any) -> discord.Embed:
    """A timeline: one field per entry, oldest first; undated entries last and marked so."""
    embed = discord.Embed(title=trim(f"Timeline: {escape(one_line(result.topic))}", TITLE), colour=INFO_COLOUR)
    if not result.entries:
        embed.description = NO_TOPIC
        return fit_embed(embed)
    entries = result.entries[:FIELDS]
    share = max(200, min(FIELD_VALUE, 5000 // len(entries)))
    for n, e in enumerate(entries, 1):
        name = trim(f"{date_text(e.date)} · {escape(one_line(e.title))}", 256)
        meta = f"{escape(one_line(e.location))} · {source_link(e.doc, e.url)}"
        embed.add_field(name=name, value=f"{quoted(e.text, n, share - len(meta) - 1)}\n{meta}", inline=False)
    notes = [f"{result.elapsed_ms:.0f} ms"]
    if any(e.date is None for e in entries):
        notes.append("undated: the document has no date of its own, so it is listed last")
    embed.set_footer(text=" · ".join(notes))
    return fit_embed(embed)


def report_choices(docs: Sequence[Any]) -> list[app_commands.Choice[str]]:
    """Autocomplete choices for documents (title and date shown, path sent), at most 25."""
    choices = []
    for d in list(docs)[:AUTOCOMPLETE]:
        title = one_line(d.title or d.doc)
        label = f"{title} ({d.date.isoformat()})" if d.date else title
        value = d.doc if len(d.doc) <= CHOICE else title[:CHOICE]
        choices.append(app_commands.Choice(name=trim(label, CHOICE), value=value))
    return choices


# ------------------------------------------------------------------ the cog
class SummaryCog(commands.Cog, name="Summary"):
    """Summaries of reports and topics, and timelines, made of quoted sentences."""

    def __init__(self, bot: Any):
        self.bot = bot
        self.cfg = bot.cfg
        self.cooldowns = Cooldowns(bot.cfg.bot.cooldown_seconds)

    def refusal(self, kb: Any, user_id: int, topic: str | None) -> str | None:
        """Why a request is refused before any work (a topic without words, see also limits.refusal), or None."""
        if topic is not None:
            from index.kb import UserError, clean_question
            try:
                clean_question(topic, limit=max(1, len(topic)))
            except UserError as exc:
                return f"⚠️ {exc}"
        return refusal(kb, self.cooldowns, user_id, topic, self.cfg.bot.max_question_chars)

    async def _respond(self, interaction: discord.Interaction, private: bool, work) -> None:
        """Defer at once, run `work` off the loop, send its embed as a follow-up (a UserError as one line)."""
        from index.kb import UserError
        await interaction.response.defer(thinking=True, ephemeral=private)
        try:
            embed = await self.bot.offload(work)
        except UserError as exc:
            self.cooldowns.reset(interaction.user.id)  # a mistyped name should not cost the user a turn
            await send_error(interaction, f"⚠️ {exc}")
            return
        await interaction.followup.send(embed=embed, ephemeral=private, allowed_mentions=NO_MENTIONS)

    @app_commands.command(name="summary", description="Summarise a report, or a topic across reports, in quoted "
                                                      "sentences")
    @app_commands.describe(report="The report (start typing its title or file name)",
                           length=f"Sentences in the summary (1 to {MAX_LENGTH}; default 5)",
                           topic="Instead of one report: what every report says about this",
                           private="Show the summary only to you")
    async def summary(self, interaction: discord.Interaction, report: Optional[str] = None,
                      length: Optional[app_commands.Range[int, 1, MAX_LENGTH]] = None,
                      topic: Optional[str] = None, private: bool = False) -> None:
        """/summary report:… [length:…] or /summary topic:…"""
        report = (report or "").strip() or None
        topic = (topic or "").strip() or None
        if bool(report) == bool(topic):
            await interaction.response.send_message("⚠️ Choose a report, or give a topic (not both).", ephemeral=True,
                                                    allowed_mentions=NO_MENTIONS)
            return
        kb = library_for(self.bot, interaction.guild_id)
        refusal = self.refusal(kb, interaction.user.id, topic)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        if topic:
            await self._respond(interaction, private, lambda: topic_embed(kb.topic_summary(topic)))
            return
        from index.kb import UserError
        try:  # an unknown or ambiguous name is refused privately at once, with "did you mean" choices
            doc = (await asyncio.to_thread(kb.resolve_document, report)).doc
        except UserError as exc:
            self.cooldowns.reset(interaction.user.id)
            await send_error(interaction, f"⚠️ {exc}")
            return
        await self._respond(interaction, private, lambda: summary_embed(kb.summary(doc, sentences=length)))

    @summary.autocomplete("report")
    async def report_autocomplete(self, interaction: discord.Interaction,
                                  current: str) -> list[app_commands.Choice[str]]:
        """Documents whose title or file name match what is typed (fuzzy), at most 25."""
        from index.kb import UserError
        try:
            kb = library_for(self.bot, interaction.guild_id)
            docs = await self.bot.offload(kb.suggest_documents, current or "", AUTOCOMPLETE)
        except (UserError, UserFacingError):
            return []
        return report_choices(docs)

    @app_commands.command(name="timeline", description="What the reports say about a topic, in date order")
    @app_commands.describe(topic="The topic, e.g. crime recording", private="Show the timeline only to you")
    async def timeline(self, interaction: discord.Interaction, topic: str, private: bool = False) -> None:
        """/timeline topic:…"""
        topic = topic.strip()
        kb = library_for(self.bot, interaction.guild_id)
        refusal = self.refusal(kb, interaction.user.id, topic)
        if refusal:
            await interaction.response.send_message(refusal, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        await self._respond(interaction, private, lambda: timeline_embed(kb.timeline(topic)))


async def setup(bot: commands.Bot) -> None:
    """Extension entry point: add the cog."""
    await bot.add_cog(SummaryCog(bot))
