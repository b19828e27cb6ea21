"""Buttons under the bot's messages: more sources, context, feedback votes, and document-list paging."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Sequence

import discord

from bot.discord.errors import NO_MENTIONS, report
from bot.discord.render import (citation_name, context_embed, documents_embed, page_count, page_passages,
                                sources_page_embed)
from bot.discord.text import OPTION_LABEL, one_line, trim
from index.answer import Answer, Passage

log = logging.getLogger("citebot.discord")
THANKS = {1: "👍 Thanks — noted that these sources helped.", -1: "👎 Thanks — noted that these sources did not help."}


class ExpiringView(discord.ui.View):
    """A view that greys out its buttons on the message when it times out, and reports its errors."""

    message: discord.Message | None = None

    async def on_timeout(self) -> None:
        """Disable every item and show that on the message."""
        for item in self.children:
            if isinstance(item, (discord.ui.Button, discord.ui.Select)):
                item.disabled = True
        if self.message is not None:
            try:
                await self.message.edit(view=self, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException:
                log.debug("could not disable the buttons of message %s", self.message.id)

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        """Show the presser one line; log a bug's traceback."""
        await report(interaction, error)


Offload = Callable[..., Awaitable[Any]]  # runs a blocking call off the event loop (the bot's `offload`)


async def load_context(kb: Any, n: int, p: Passage, offload: Offload = asyncio.to_thread) -> discord.Embed:
    """The 'Show context' embed of source `n`, its text read off the event loop."""
    text, location = await offload(kb.context, p.chunk_id, 600)
    return context_embed(n, p, text, location)


class AnswerView(ExpiringView):
    """Under an answer: More sources (next page, for the presser), Show context, 👍 and 👎."""

    def __init__(self, kb: Any, answer: Answer, per_page: int, timeout: float,
                 offload: Offload = asyncio.to_thread):
        super().__init__(timeout=timeout)
        self.kb, self.answer, self.per_page, self.offload = kb, answer, per_page, offload
        self.pages = page_count(len(answer.passages), per_page)
        self._next_page: dict[int, int] = {}
        self.more_sources.disabled = self.pages < 2
        if not answer.passages:
            for button in (self.show_context, self.vote_up, self.vote_down):
                button.disabled = True

    @property
    def shown(self) -> list[tuple[int, Passage]]:
        """The numbered passages on the answer message itself."""
        return page_passages(self.answer, 0, self.per_page)

    @discord.ui.button(label="More sources", style=discord.ButtonStyle.secondary)
    async def more_sources(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """The next page of sources, only to the presser."""
        page = self._next_page.get(interaction.user.id, 1)
        if page >= self.pages:
            await interaction.response.send_message("That was the last page of sources for this question.",
                                                    ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        self._next_page[interaction.user.id] = page + 1
        await interaction.response.send_message(embed=sources_page_embed(self.answer, page, self.per_page),
                                                ephemeral=True, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="Show context", style=discord.ButtonStyle.secondary)
    async def show_context(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """The text around source [1], only to the presser, with a menu for the others."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        shown = self.shown
        embed = await load_context(self.kb, *shown[0], offload=self.offload)
        if len(shown) > 1:
            view = ContextView(self.kb, shown, timeout=self.timeout, offload=self.offload)
            view.message = await interaction.followup.send(embed=embed, view=view, ephemeral=True, wait=True,
                                                           allowed_mentions=NO_MENTIONS)
        else:
            await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(emoji="👍", style=discord.ButtonStyle.secondary)
    async def vote_up(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Record that the sources helped."""
        await self._vote(interaction, 1)

    @discord.ui.button(emoji="👎", style=discord.ButtonStyle.secondary)
    async def vote_down(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Record that the sources did not help."""
        await self._vote(interaction, -1)

    async def _vote(self, interaction: discord.Interaction, vote: int) -> None:
        """Store the vote with the question, the shown passages' ids and a hash of the user id."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        ids = [p.chunk_id for _, p in self.shown]
        voter = await self.offload(self.kb.voter_id, interaction.user.id)  # an HMAC, never the id itself
        await self.offload(self.kb.record_feedback, self.answer.question, ids, voter, vote)
        await interaction.followup.send(THANKS[vote], ephemeral=True, allowed_mentions=NO_MENTIONS)


class ContextSelect(discord.ui.Select):
    """A menu to see the context of another source of the same answer."""

    def __init__(self, shown: Sequence[tuple[int, Passage]]):
        options = [discord.SelectOption(label=trim(one_line(citation_name(n, p.title)), OPTION_LABEL),
                                        description=trim(f"{p.doc}, {p.location}", OPTION_LABEL), value=str(n))
                   for n, p in shown[:25]]
        super().__init__(placeholder="Show the context of another source…", options=options)
        self.by_number = dict(shown)

    async def callback(self, interaction: discord.Interaction) -> None:
        """Show the context of the chosen source in the same message."""
        view: ContextView = self.view  # type: ignore[assignment]
        n = int(self.values[0])
        await interaction.response.defer()
        embed = await load_context(view.kb, n, self.by_number[n], offload=view.offload)
        await interaction.edit_original_response(embed=embed, view=view, allowed_mentions=NO_MENTIONS)


class ContextView(ExpiringView):
    """Under a context message: a menu of the answer's other sources."""

    def __init__(self, kb: Any, shown: Sequence[tuple[int, Passage]], timeout: float | None,
                 offload: Offload = asyncio.to_thread):
        super().__init__(timeout=timeout)
        self.kb, self.offload = kb, offload
        self.add_item(ContextSelect(shown))


class DocumentsView(ExpiringView):
    """◀ and ▶ under the /sources list, turning its pages in place."""

    def __init__(self, docs: Sequence[Any], per_page: int, timeout: float):
        super().__init__(timeout=timeout)
        self.docs, self.per_page, self.page = list(docs), per_page, 0
        self.pages = page_count(len(self.docs), per_page)
        self._update()

    def _update(self) -> None:
        self.previous_page.disabled = self.page <= 0
        self.next_page.disabled = self.page >= self.pages - 1

    def embed(self) -> discord.Embed:
        """The current page of the list."""
        return documents_embed(self.docs, self.page, self.per_page)

    async def _turn(self, interaction: discord.Interaction, step: int) -> None:
        self.page = min(max(0, self.page + step), self.pages - 1)
        self._update()
        await interaction.response.edit_message(embed=self.embed(), view=self, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="◀", style=discord.ButtonStyle.secondary)
    async def previous_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Turn to the previous page."""
        await self._turn(interaction, -1)

    @discord.ui.button(label="▶", style=discord.ButtonStyle.secondary)
    async def next_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Turn to the next page."""
        await self._turn(interaction, 1)
