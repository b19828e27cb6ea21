"""Slash-command option helpers: date bounds (YYYY, YYYY-MM or YYYY-MM-DD) and document autocompletion."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any, Sequence

import discord
from discord import app_commands

from bot.discord.errors import UserFacingError
from bot.discord.text import AUTOCOMPLETE, CHOICE, one_line, trim

_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")


def parse_bound(text: str, end: bool) -> dt.date:
    """A date from 'YYYY', 'YYYY-MM' or 'YYYY-MM-DD': the first day of that period, or the last if `end`."""
    m = _DATE.match(text.strip())
    if not m:
        raise UserFacingError(f"'{trim(text, 40)}' is not a date; use YYYY, YYYY-MM or YYYY-MM-DD")
    year, month, day = int(m.group(1)), m.group(2), m.group(3)
    try:
        if day:
            return dt.date(year, int(month), int(day))
        if month:
            month_n = int(month)
            return dt.date(year, month_n, calendar.monthrange(year, month_n)[1] if end else 1)
        return dt.date(year, 12, 31) if end else dt.date(year, 1, 1)
    except ValueError:
        raise UserFacingError(f"'{trim(text, 40)}' is not a real date") from None


class AfterDate(app_commands.Transformer):
    """An 'after' option: the first day of the given year, month or day."""

    async def transform(self, interaction: discord.Interaction, value: str) -> dt.date:
        """The date the option's text names."""
        return parse_bound(value, end=False)


class BeforeDate(app_commands.Transformer):
    """A 'before' option: the last day of the given year, month or day."""

    async def transform(self, interaction: discord.Interaction, value: str) -> dt.date:
        """The date the option's text names."""
        return parse_bound(value, end=True)


def document_choices(docs: Sequence[Any], current: str) -> list[app_commands.Choice[str]]:
    """Up to 25 autocomplete choices (title shown, path sent) of the documents matching `current`."""
    needle = current.casefold().strip()
    ranked = []
    for d in docs:
        title = one_line(d.title or d.doc)
        hay = f"{title} {d.doc}".casefold()
        if needle and needle not in hay:
            continue
        starts = title.casefold().startswith(needle) or d.doc.casefold().startswith(needle)
        ranked.append((not starts, title.casefold(), d, title))
    ranked.sort(key=lambda r: (r[0], r[1]))
    choices = []
    for _, _, d, title in ranked[:AUTOCOMPLETE]:
        label = f"{title} ({d.date.isoformat()})" if d.date else title
        value = d.doc if len(d.doc) <= CHOICE else title[:CHOICE]
        choices.append(app_commands.Choice(name=trim(label, CHOICE), value=value))
    return choices
