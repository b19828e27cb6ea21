"""Quotation marks around quoted sentences, never doubled: a sentence that already opens or closes with its own
quotation mark is shown as it is (the front ends' `--json` output keeps the text verbatim regardless)."""

from __future__ import annotations

OPENING, CLOSING = "“", "”"
OWN_MARKS = frozenset('"“”„‟«»〝〞「」『』')  # double-style marks only: a final ' is usually an apostrophe


def has_own_quotes(text: str) -> bool:
    """True when `text` (stripped) starts or ends with a quotation mark of its own."""
    text = text.strip()
    return bool(text) and (text[0] in OWN_MARKS or text[-1] in OWN_MARKS)


def marks_for(text: str) -> tuple[str, str]:
    """The (opening, closing) marks to put around `text`: “ and ”, or none when it has its own."""
    return ("", "") if has_own_quotes(text) else (OPENING, CLOSING)


def in_quotes(text: str) -> str:
    """`text` between “ and ” unless it already opens or closes with a quotation mark."""
    opening, closing = marks_for(text)
    return f"{opening}{text.strip()}{closing}"
