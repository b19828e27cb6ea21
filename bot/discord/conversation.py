"""Questions from chat messages: stripping the bot's mention, and follow-ups in a thread that use its first question."""

from __future__ import annotations

import datetime as dt
import re
from collections import OrderedDict

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_WORD = re.compile(r"\w+")


def strip_mentions(content: str, bot_id: int) -> str:
    """Message text without the bot's mention(s) and surrounding whitespace."""
    return " ".join(re.sub(rf"<@!?{bot_id}>", " ", content).split())


def followup_question(previous: str, text: str, max_words: int = 8) -> str:
    """The question to search for: a short follow-up ("what about 2018?") is read together with the earlier question."""
    text = " ".join(text.split())
    if not previous or len(_WORD.findall(text)) > max_words:
        return text
    return f"{previous} {text}"


def year_filter(text: str) -> tuple[dt.date, dt.date] | None:
    """(1 Jan, 31 Dec) of the one year a follow-up names, like "what about 2018?", else None."""
    years = set(_YEAR.findall(text))
    if len(years) != 1:
        return None
    year = int(years.pop())
    return dt.date(year, 1, 1), dt.date(year, 12, 31)


class ThreadMemory:
    """The first question asked in each answer thread, for follow-ups (the most recent `size` threads)."""

    def __init__(self, size: int = 2000):
        self.size = size
        self._questions: OrderedDict[int, str] = OrderedDict()

    def remember(self, thread_id: int, question: str) -> None:
        """Keep `question` as the first question of thread `thread_id`."""
        self._questions[thread_id] = question
        self._questions.move_to_end(thread_id)
        while len(self._questions) > self.size:
            self._questions.popitem(last=False)

    def question(self, thread_id: int) -> str | None:
        """The first question of thread `thread_id`, if remembered."""
        return self._questions.get(thread_id)

    def __contains__(self, thread_id: int) -> bool:
        return thread_id in self._questions
