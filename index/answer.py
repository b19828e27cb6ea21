"""The value every front end renders: an `Answer` made of quoted `Passage`s with their citations."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass
class Passage:
    """A chunk of a document quoted as evidence, with where it comes from and why it was chosen."""
    chunk_id: int
    doc: str                      # path relative to the docs folder
    title: str
    date: dt.date | None          # a `documents.YearOnly` (shown "2018") when only the year is known
    url: str | None
    location: str                 # "p. 3", "§ Findings", "lines 12–18"
    text: str                     # the chunk text, verbatim from the cleaned document
    start: int                    # character offsets of `text` inside the cleaned document
    end: int
    answer_spans: list[tuple[int, int]] = field(default_factory=list)  # offsets into `text`
    scores: dict[str, float] = field(default_factory=dict)              # dense, bm25, fused, sentence
    duplicates: list[str] = field(default_factory=list)                 # docs of near-duplicates folded in
    duplicate_ids: list[int] = field(default_factory=list)
    parts: list[tuple[int, int, int]] = field(default_factory=list, repr=False)  # (chunk id, start, end) merged

    @property
    def answer_text(self) -> str:
        """The answer sentence(s), joined with a space, or with " … " where text between them is left out."""
        out = ""
        for n, (s, e) in enumerate(self.answer_spans):
            if n:
                out += " " if not self.text[self.answer_spans[n - 1][1]:s].strip() else " … "
            out += self.text[s:e]
        return out

    def to_json(self) -> dict:
        return {
            "doc": self.doc,
            "title": self.title,
            "date": self.date.isoformat() if self.date else None,
            "url": self.url,
            "location": self.location,
            "text": self.text,
            "answer_spans": [[s, e] for s, e in self.answer_spans],
            "scores": {k: round(float(v), 4) for k, v in self.scores.items()},
            "duplicates": list(self.duplicates),
        }


@dataclass
class Answer:
    """The passages that answer `question`, best first; `confident` is False when none clears the bar."""
    question: str
    passages: list[Passage]
    confident: bool
    elapsed_ms: float
    mode: str = "dense"
    filters: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "confident": self.confident,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "passages": [p.to_json() for p in self.passages],
        }


def excerpt(passage: Passage, width: int = 420) -> list[tuple[str, bool]]:
    """A window of the passage around its answer sentence(s) as (text, is_answer) segments, cut on word
    boundaries with '…' where text was left out. Without answer spans, the passage start."""
    text = passage.text
    spans = [(s, e) for s, e in passage.answer_spans if 0 <= s < e <= len(text)]
    if not spans:
        cut = text[:width]
        if len(text) > width:
            cut = cut.rsplit(" ", 1)[0] + " …"
        return [(cut, False)]
    lo, hi = spans[0][0], spans[-1][1]
    room = max(0, width - (hi - lo)) // 2
    start, end = max(0, lo - room), min(len(text), hi + room)
    if start > 0:
        space = text.find(" ", start, lo)
        start = space + 1 if space >= 0 else lo
    if end < len(text):
        space = text.rfind(" ", hi, end)
        end = space if space >= 0 else hi
    segments: list[tuple[str, bool]] = [("… ", False)] if start > 0 else []
    pos = start
    for s, e in spans:
        if s > pos:
            segments.append((text[pos:s], False))
        segments.append((text[max(s, pos):e], True))
        pos = max(pos, e)
    if end > pos:
        segments.append((text[pos:end], False))
    if end < len(text):
        segments.append((" …", False))
    return segments
