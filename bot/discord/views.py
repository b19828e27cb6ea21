"""Buttons under the bot's messages: more sources, context, feedback votes, and document-list paging."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Sequence

import discord

from bot.discord.errors import NO_MENTIONS, library_for, report
from bot.discord.render import (citation_name, context_embed, documents_embed, page_count, page_passages,
                                sources_page_embed, why_embed)
from bot.discord.text import OPTION_LABEL, one_line, trim
from index.answer import Answer, Passage

log = logging.getLogger("citebot.discord")
CONTEXT_TIMEOUT = 600.0  # seconds the source menu under a context message stays active (bot.view_timeout_seconds)
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
    if not location.startswith(f"{p.doc},"):  # an answer kept from before a rebuild: the id is another passage's
        from index.kb import UserError
        raise UserError("that passage is no longer in the index; ask again")
    return context_embed(n, p, text, location)


ANSWER_BUTTONS = {"more": ("More sources", None), "ctx": ("Show context", None), "why": ("Why?", None),
                  "up": (None, "👍"), "down": (None, "👎")}  # action in the custom_id: (label, emoji)
EXPIRED = ("⌛ This answer has expired: only the newest answers are kept for their buttons. Ask again with /ask"
           "{question}.")


def confidence_threshold(kb: Any) -> float | None:
    """The confidence threshold of the knowledge base's live index (None if it does not say)."""
    threshold = getattr(kb, "confidence_threshold", None)
    return float(threshold()) if callable(threshold) else None


def new_answer_key() -> str:
    """A fresh key for an answer's buttons (16 hex digits in their custom_ids)."""
    return secrets.token_hex(8)


def expired_text(interaction: discord.Interaction) -> str:
    """The private reply to a button of an answer no longer kept, naming its question when the message shows it."""
    message = getattr(interaction, "message", None)
    embeds = getattr(message, "embeds", None) or []
    title = getattr(embeds[0], "title", None) if embeds else None
    return EXPIRED.format(question=f" question: “{trim(title, 300)}”" if isinstance(title, str) and title else "")


class AnswerButton(discord.ui.DynamicItem[discord.ui.Button],
                   template=r"citebot:a:(?P<key>[0-9a-f]{16}):(?P<action>more|ctx|why|up|down)"):
    """A button under an answer whose custom_id names the answer (its key) and the action, so that a press is
    understood after a restart too: the answer comes from memory, or else from the knowledge base's store."""

    def __init__(self, key: str, action: str, state: "AnswerView | None" = None, disabled: bool = False):
        label, emoji = ANSWER_BUTTONS[action]
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=discord.ButtonStyle.secondary,
                                           custom_id=f"citebot:a:{key}:{action}", disabled=disabled))
        self.key, self.action, self.state = key, action, state

    @property
    def disabled(self) -> bool:
        return self.item.disabled

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item,
                             match: re.Match[str], /) -> "AnswerButton":
        """The button of a press (discord.py calls this for every custom_id matching the template)."""
        return cls(match["key"], match["action"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Find the answer and run the action; an expired answer gets one private line offering to ask again."""
        try:
            state = self.state
            if state is None:
                answers = getattr(interaction.client, "answers", None)
                kb = library_for(interaction.client, interaction.guild_id)
                state = await answers.get(self.key, kb) if answers is not None else None
            if state is None:
                await interaction.response.send_message(expired_text(interaction), ephemeral=True,
                                                        allowed_mentions=NO_MENTIONS)
                return
            await state.press(self.action, interaction)
        except Exception as exc:  # the view made from the message only logs: show the presser one line
            await report(interaction, exc)


class AnswerView(discord.ui.View):
    """Under an answer: More sources (next page, for the presser), Show context, Why?, 👍 and 👎. The buttons
    are persistent (AnswerButton): the view itself is only the answer's state, kept by AnswerRegistry."""

    def __init__(self, kb: Any, answer: Answer, per_page: int, key: str | None = None,
                 offload: Offload = asyncio.to_thread, menu_timeout: float = CONTEXT_TIMEOUT):
        super().__init__(timeout=None)
        self.kb, self.answer, self.per_page, self.offload = kb, answer, per_page, offload
        self.menu_timeout = menu_timeout
        self.key = key or new_answer_key()
        self.pages = page_count(len(answer.passages), per_page)
        self._next_page: dict[int, int] = {}
        empty = not answer.passages
        self.more_sources = AnswerButton(self.key, "more", self, disabled=self.pages < 2)
        self.show_context = AnswerButton(self.key, "ctx", self, disabled=empty)
        self.why = AnswerButton(self.key, "why", self, disabled=empty)
        self.vote_up = AnswerButton(self.key, "up", self, disabled=empty)
        self.vote_down = AnswerButton(self.key, "down", self, disabled=empty)
        for item in (self.more_sources, self.show_context, self.why, self.vote_up, self.vote_down):
            self.add_item(item)

    @property
    def shown(self) -> list[tuple[int, Passage]]:
        """The numbered passages on the answer message itself."""
        return page_passages(self.answer, 0, self.per_page)

    async def press(self, action: str, interaction: discord.Interaction) -> None:
        """Run a button's action for `interaction`."""
        if action == "more":
            await self._more_sources(interaction)
        elif action == "ctx":
            await self._show_context(interaction)
        elif action == "why":
            await self._why(interaction)
        else:
            await self._vote(interaction, 1 if action == "up" else -1)

    async def _more_sources(self, interaction: discord.Interaction) -> None:
        """The next page of sources, only to the presser."""
        page = self._next_page.get(interaction.user.id, 1)
        if page >= self.pages:
            await interaction.response.send_message("That was the last page of sources for this question.",
                                                    ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        self._next_page[interaction.user.id] = page + 1
        await interaction.response.send_message(embed=sources_page_embed(self.answer, page, self.per_page),
                                                ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def _show_context(self, interaction: discord.Interaction) -> None:
        """The text around source [1], only to the presser, with a menu for the others."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        shown = self.shown
        embed = await load_context(self.kb, *shown[0], offload=self.offload)
        if len(shown) > 1:
            view = ContextView(self.kb, shown, timeout=self.menu_timeout, offload=self.offload)
            view.message = await interaction.followup.send(embed=embed, view=view, ephemeral=True, wait=True,
                                                           allowed_mentions=NO_MENTIONS)
        else:
            await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def _why(self, interaction: discord.Interaction) -> None:
        """Each source's scores and the confidence threshold, in plain words, only to the presser."""
        threshold = await self.offload(confidence_threshold, self.kb)
        await interaction.response.send_message(embed=why_embed(self.answer, self.per_page, threshold),
                                                ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def _vote(self, interaction: discord.Interaction, vote: int) -> None:
        """Store the vote with the question, the shown passages' ids and the voter id (an HMAC of the user id)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        ids = [p.chunk_id for _, p in self.shown]
        voter = await self.offload(self.kb.voter_id, interaction.user.id)  # an HMAC, never the id itself
        await self.offload(self.kb.record_feedback, self.answer.question, ids, voter, vote)
        await interaction.followup.send(THANKS[vote], ephemeral=True, allowed_mentions=NO_MENTIONS)


class AnswerRegistry:
    """The answers whose buttons work: the newest `capacity` in memory, every answer also saved through the
    knowledge base (save_answer / load_answer) so that a press after a restart or an eviction finds it."""

    def __init__(self, bot: Any, per_page: int, capacity: int):
        self.bot, self.per_page, self.capacity = bot, per_page, max(1, capacity)
        self.menu_timeout = float(bot.cfg.bot.view_timeout_seconds)  # the source menu under Show context
        self._views: OrderedDict[str, AnswerView] = OrderedDict()
        self._saving: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._views)

    def add(self, answer: Answer, kb: Any) -> AnswerView:
        """The buttons of a new answer from library `kb`; it is saved there in the background."""
        view = AnswerView(kb, answer, self.per_page, offload=self.bot.offload, menu_timeout=self.menu_timeout)
        self._remember(view)
        task = asyncio.get_running_loop().create_task(self._save(view))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)
        return view

    async def _save(self, view: AnswerView) -> None:
        try:
            await self.bot.offload(view.kb.save_answer, view.key, view.answer)
        except Exception:  # its buttons work until the bot restarts
            log.warning("answer %s not saved for its buttons", view.key, exc_info=True)

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait (up to `timeout` seconds) for the answers still being saved."""
        if self._saving:
            await asyncio.wait(list(self._saving), timeout=timeout)

    def _remember(self, view: AnswerView) -> None:
        self._views[view.key] = view
        self._views.move_to_end(view.key)
        while len(self._views) > self.capacity:
            self._views.popitem(last=False)

    async def get(self, key: str, kb: Any) -> AnswerView | None:
        """The answer with `key` of library `kb` (from memory, else from its store), or None when it has expired
        or belongs to another library (a server never sees another server's answers)."""
        view = self._views.get(key)
        if view is not None and view.kb is kb:
            self._views.move_to_end(key)
            return view
        answer = await self.bot.offload(kb.load_answer, key)
        if answer is None:
            return None
        view = AnswerView(kb, answer, self.per_page, key=key, offload=self.bot.offload,
                          menu_timeout=self.menu_timeout)
        self._remember(view)
        return view


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
