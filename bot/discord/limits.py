"""Per-user question limits: a cooldown between questions and a maximum question length."""

from __future__ import annotations

import time
from typing import Callable


class Cooldowns:
    """Remembers when each user last asked; a user may ask again `seconds` later."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = max(0.0, float(seconds))
        self.clock = clock
        self._last: dict[int, float] = {}

    def take(self, user_id: int) -> float:
        """0.0 and the user's turn is used, or the seconds they must still wait (their turn is not used)."""
        if self.seconds <= 0:
            return 0.0
        now = self.clock()
        wait = self._last.get(user_id, -1e18) + self.seconds - now
        if wait > 0:
            return wait
        self._last[user_id] = now
        if len(self._last) > 10_000:
            self._last = {u: t for u, t in self._last.items() if t + self.seconds > now}
        return 0.0

    def reset(self, user_id: int) -> None:
        """Give a user their turn back (their question was refused before any work was done)."""
        self._last.pop(user_id, None)


def cooldown_message(wait: float) -> str:
    """The one line shown to a user who asks again too soon."""
    return f"⏳ Please wait {max(1, round(wait + 0.49))} s before asking another question."


def length_message(question: str, limit: int) -> str | None:
    """The one line shown when `question` is longer than `limit` characters, else None."""
    if len(question) > limit:
        return f"✂️ Questions can be at most {limit} characters; yours has {len(question)}."
    return None


WARMING_UP = "⏳ I'm still warming up (loading the language model). Ask again in a few seconds."


def warming_message(kb: object) -> str | None:
    """The warming-up reply while the knowledge base is still loading its model (see KnowledgeBase.warm_up)."""
    return None if getattr(kb, "ready", True) else WARMING_UP


def refusal(kb: object, cooldowns: Cooldowns, user_id: int, text: str | None, max_chars: int) -> str | None:
    """Why a request is refused before any work (text too long, model still loading, or the member asked too
    recently), or None; only an accepted request uses up the member's turn."""
    too_long = length_message(text, max_chars) if text else None
    if too_long:
        return too_long
    warming = warming_message(kb)
    if warming:
        return warming
    wait = cooldowns.take(user_id)
    return cooldown_message(wait) if wait else None
