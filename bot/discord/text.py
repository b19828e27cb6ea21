"""Discord's size limits and the text helpers that respect them: escaping, word-boundary trimming, embed fitting."""

from __future__ import annotations

import re
from typing import Iterable

import discord

from bot.printable import printable

CONTENT = 2000
TITLE = 256
DESCRIPTION = 4096
FIELDS = 25
FIELD_NAME = 256
FIELD_VALUE = 1024
FOOTER = 2048
AUTHOR = 256
EMBED_TOTAL = 6000
THREAD_NAME = 100
CHOICE = 100        # autocomplete choice name and value
LABEL = 80          # button label
OPTION_LABEL = 100  # select option label and description
AUTOCOMPLETE = 25   # choices in one autocomplete answer
ELLIPSIS = "…"
BLANK = "\u200b"    # a zero-width space: Discord rejects empty field names and values

_URL = r"(?:https?)://[^\s<]+[^<.,:;\"'\]\s)]"
_INLINE = r"[\\*_~|`\[\]<]"
_LINE_START = r"(?m:^[ \t]*(?:#{1,3}|>|[-+]|\d+\.)(?=\s))"
_ESCAPE = re.compile(rf"(?P<url>{_URL})|(?P<start>{_LINE_START})|(?P<char>{_INLINE})")


def escape(text: str) -> str:
    """`text` with every Markdown construct (bold, links, mentions, headings, quotes, lists) made literal (and
    control characters removed)."""
    text = printable(text)

    def repl(m: re.Match) -> str:
        if m.group("url"):
            return m.group("url")
        if m.group("start"):
            whole = m.group("start")
            stripped = whole.lstrip()
            indent = whole[: len(whole) - len(stripped)]
            if stripped[0].isdigit():
                return indent + stripped[:-1] + "\\."
            return indent + "\\" + stripped
        return "\\" + m.group("char")
    return _ESCAPE.sub(repl, text)


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def _unclosed_code(text: str) -> int:
    """Where an inline code span opens that `text` never closes (an unescaped backtick), or -1."""
    opened, i = -1, 0
    while i < len(text):
        if opened < 0 and text[i] == "\\":
            i += 2
            continue
        if text[i] == "`":
            opened = i if opened < 0 else -1
        i += 1
    return opened


def _clean_cut(text: str) -> str:
    """A cut-off piece of Markdown made safe: no unclosed code span, no dangling backslash, no unclosed bold."""
    opened = _unclosed_code(text)
    if opened >= 0:  # its text is not escaped (code shows it literally): drop it rather than let it render
        text = text[:opened]
    text = text.rstrip()
    trailing = len(text) - len(text.rstrip("\\"))
    if trailing % 2:
        text = text[:-1].rstrip()
    if text.count("**") % 2:
        i = text.rfind("**")
        text = (text[:i] + text[i + 2:]).rstrip()
    return text


def trim(text: str, limit: int, ellipsis: str = ELLIPSIS) -> str:
    """`text` if it fits in `limit` characters, else cut on a word boundary and ended with an ellipsis."""
    if limit <= 0:
        return ""
    text = printable(text)
    if len(text) <= limit:
        return text
    if limit <= len(ellipsis):
        return ellipsis[:limit]
    cut = text[: limit - len(ellipsis)]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if not text[len(cut)].isspace() and space >= len(cut) // 2:
        cut = cut[:space]
    return _clean_cut(cut) + ellipsis


def _escaped_prefix(raw: str, budget: int) -> str:
    """The longest escaped word-boundary prefix of `raw` that fits in `budget` characters."""
    n = min(len(raw), budget)
    while n > 0:
        cut = raw[:n]
        if n < len(raw) and not raw[n].isspace() and cut.rfind(" ") > 0:
            cut = cut[:cut.rfind(" ")]
        out = _clean_cut(escape(cut))
        if len(out) <= budget:
            return out
        n = len(cut) - (len(out) - budget)
    return ""


def _merge_bold(segments: Iterable[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Segments with bold runs separated only by whitespace joined into one bold run."""
    out: list[tuple[str, bool]] = []
    for text, bold in segments:
        if bold and len(out) >= 2 and out[-2][1] and not out[-1][1] and not out[-1][0].strip():
            gap = out.pop()[0]
            out[-1] = (out[-1][0] + gap + text, True)
        elif bold and out and out[-1][1]:
            out[-1] = (out[-1][0] + text, True)
        else:
            out.append((text, bold))
    return out


def markdown_excerpt(segments: Iterable[tuple[str, bool]], limit: int) -> str:
    """(text, bold) segments as one line of escaped Markdown, bold ones in **, at most `limit` characters."""
    parts: list[str] = []
    used = 0
    merged = _merge_bold(segments)
    for index, (raw, bold) in enumerate(merged):
        raw = re.sub(r"\s+", " ", raw)
        if not raw.strip():
            if raw and parts and not parts[-1].endswith(" "):
                parts.append(" ")
                used += 1
            continue
        lead = " " if raw[0] == " " and parts and not parts[-1].endswith(" ") else ""
        tail = " " if raw[-1] == " " else ""
        core = raw.strip()
        marks = 4 if bold else 0
        piece = escape(core)
        reserve = 0 if index == len(merged) - 1 else len(ELLIPSIS) + 1  # room to say that text was left out
        if used + len(lead) + len(piece) + marks + len(tail) + reserve <= limit:
            parts.append(lead + (f"**{piece}**" if bold else piece) + tail)
            used += len(parts[-1])
            continue
        budget = limit - used - len(lead) - marks - len(ELLIPSIS) - 1
        piece = _escaped_prefix(core, budget) if budget > 0 else ""
        if piece:
            parts.append(lead + (f"**{piece}**" if bold else piece) + " " + ELLIPSIS)
        elif used + len(ELLIPSIS) + 1 <= limit:
            parts.append((" " if parts and not parts[-1].endswith(" ") else "") + ELLIPSIS)
        break
    text = "".join(parts).strip()
    return text if len(text) <= limit else trim(text, limit)


def fit_embed(embed: discord.Embed) -> discord.Embed:
    """`embed` changed in place (and returned) so that it meets every Discord embed limit.

    Over the 6000-character total, the longest field value, the description, the longest field name and the footer
    are shortened in turn (never below a readable size), and only then are the last fields dropped, with a note.
    Control characters (terminal escape sequences in a document) are removed from every part (`trim` does it).
    """
    if embed.title:
        embed.title = trim(embed.title, TITLE)
    if embed.description:
        embed.description = trim(embed.description, DESCRIPTION)
    if embed.author and embed.author.name:
        embed.set_author(name=trim(embed.author.name, AUTHOR), url=embed.author.url, icon_url=embed.author.icon_url)
    footer = embed.footer.text if embed.footer and embed.footer.text else ""
    dropped = max(0, len(embed.fields) - FIELDS)
    for _ in range(dropped):
        embed.remove_field(FIELDS)
    for i, f in enumerate(embed.fields):
        embed.set_field_at(i, name=trim(f.name or BLANK, FIELD_NAME) or BLANK,
                           value=trim(f.value or BLANK, FIELD_VALUE) or BLANK, inline=f.inline)

    def set_footer() -> None:
        note = f"{dropped} more not shown" if dropped else ""
        text = " · ".join(t for t in (note, footer) if t)
        if text:
            embed.set_footer(text=trim(text, FOOTER), icon_url=embed.footer.icon_url if embed.footer else None)

    set_footer()
    while len(embed) > EMBED_TOTAL:
        over = len(embed) - EMBED_TOTAL
        fields = embed.fields
        by_value = max(range(len(fields)), key=lambda i: len(fields[i].value or ""), default=None)
        by_name = max(range(len(fields)), key=lambda i: len(fields[i].name or ""), default=None)
        if by_value is not None and len(fields[by_value].value or "") > 200:
            f = fields[by_value]
            embed.set_field_at(by_value, name=f.name, value=trim(f.value, max(200, len(f.value) - over)),
                               inline=f.inline)
        elif embed.description and len(embed.description) > 200:
            embed.description = trim(embed.description, max(200, len(embed.description) - over))
        elif by_name is not None and len(fields[by_name].name or "") > 80:
            f = fields[by_name]
            embed.set_field_at(by_name, name=trim(f.name, max(80, len(f.name) - over)), value=f.value,
                               inline=f.inline)
        elif len(footer) > 200:
            footer = trim(footer, max(200, len(footer) - over))
            set_footer()
        elif fields:
            embed.remove_field(len(fields) - 1)
            dropped += 1
            set_footer()
        else:  # only a short title, description and footer are left: unreachable with Discord's limits
            break
    return embed


def fit_content(text: str) -> str:
    """Message content trimmed to Discord's 2000 characters."""
    return trim(text, CONTENT)
