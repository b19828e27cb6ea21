"""Pure functions that turn an `Answer`, documents and build reports into Discord embeds and message text."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, Sequence

import discord

from bot.discord.text import (CONTENT, DESCRIPTION, FIELD_VALUE, FOOTER, TITLE, escape, fit_embed,
                              markdown_excerpt, one_line, trim)
from bot.quotes import marks_for
from index.answer import Answer, Passage, excerpt

CONFIDENT_COLOUR = discord.Colour(0x2E7D32)
UNSURE_COLOUR = discord.Colour(0x757575)
INFO_COLOUR = discord.Colour(0x1565C0)
NOT_ANSWERED = "The documents do not answer this. The closest passages are shown below as possibly related only."
NO_PASSAGES = "No passage in the documents matches this question."
_SAFE_URL = re.compile(r"^https?://[^\s()<>\[\]]+$")


# ------------------------------------------------------------------ citations (reusable by other cogs)
def date_text(date: dt.date | None) -> str:
    """A document date as shown in citations: ISO, or 'undated'."""
    return date.isoformat() if date else "undated"


def source_link(doc: str, url: str | None) -> str:
    """The file name in code style, or a Markdown link to `url` when it is a plain http(s) address."""
    name = escape(doc)
    if url and _SAFE_URL.match(url):
        return f"[{name}]({url})"
    return f"`{doc.replace('`', 'ˋ')}`"


def citation_name(n: int, title: str, suffix: str = "") -> str:
    """A numbered source heading such as '[2] Title' for an embed field name."""
    head = f"[{n}] "
    return head + trim(escape(one_line(title)) or "untitled", 256 - len(head) - len(suffix)) + suffix


def citation_meta(date: dt.date | None, location: str, doc: str, url: str | None) -> str:
    """'date · location · file-or-link', the line under a numbered source."""
    parts = [date_text(date), escape(one_line(location)) if location else "", source_link(doc, url)]
    return " · ".join(p for p in parts if p)


def source_field(n: int, p: Passage, possibly_related: bool = False, limit: int = FIELD_VALUE) -> tuple[str, str]:
    """(name, value) of the embed field citing `p` as source `n`: metadata, then the excerpt, answer in bold."""
    name = citation_name(n, p.title, " (possibly related)" if possibly_related else "")
    meta = citation_meta(p.date, p.location, p.doc, p.url)
    if len(meta) > limit // 2:
        meta = trim(meta, limit // 2)
    room = limit - len(meta) - 1
    body = markdown_excerpt(excerpt(p, width=max(60, min(420, room * 9 // 10 - 8))), room)
    return name, f"{meta}\n{body}" if body else meta


def quote_block(text: str, n: int, limit: int) -> str:
    """`text` as a Markdown quote ending with its citation marker [n], within `limit` characters."""
    marker = f" [{n}]"
    opening, closing = marks_for(one_line(text))
    body = trim(escape(one_line(text)), limit - len(marker) - 4)
    return f"> {opening}{body}{closing}{marker}"


def duplicates_note(passages: Sequence[Passage]) -> str:
    """'near-duplicates folded in: a.txt, b.txt' for the near-duplicate documents folded into `passages`, or '';
    a document cited among `passages` itself (such as [1]) is not listed again."""
    cited = {p.doc for p in passages}
    seen: list[str] = []
    for p in passages:
        for d in p.duplicates:
            if d not in seen and d not in cited:
                seen.append(d)
    return trim(f"near-duplicates folded in: {', '.join(seen)}", 300) if seen else ""


def answer_footer(answer: Answer, shown: Sequence[Passage]) -> str:
    """The footer line of an answer: time taken, filters, and the collapsed near-duplicates."""
    parts = [f"{answer.elapsed_ms:.0f} ms"]
    if answer.filters:
        parts.append("filters: " + ", ".join(f"{k} {v}" for k, v in answer.filters.items()))
    dup = duplicates_note(shown)
    if dup:
        parts.append(dup)
    return trim(" · ".join(parts), FOOTER)


# ------------------------------------------------------------------ answers
def page_count(total: int, per_page: int) -> int:
    """How many pages of `per_page` sources `total` passages make (at least 1)."""
    return max(1, math.ceil(total / max(1, per_page)))


def page_passages(answer: Answer, page: int, per_page: int) -> list[tuple[int, Passage]]:
    """The (number, passage) pairs on page `page` (0-based) of the answer's sources."""
    start = page * per_page
    return [(start + i + 1, p) for i, p in enumerate(answer.passages[start:start + per_page])]


def answer_embed(answer: Answer, per_page: int = 5) -> discord.Embed:
    """The answer message: the quoted answer sentence(s) on top, then numbered sources, then a footer."""
    title = trim(escape(one_line(answer.question)), TITLE)
    if not answer.passages:
        return fit_embed(discord.Embed(title=title, description=NO_PASSAGES, colour=UNSURE_COLOUR))
    shown = page_passages(answer, 0, per_page)
    if answer.confident:
        best = answer.passages[0]
        quote = best.answer_text or best.text
        embed = discord.Embed(title=title, description=quote_block(quote, 1, 1500), colour=CONFIDENT_COLOUR)
    else:
        embed = discord.Embed(title=title, description=NOT_ANSWERED, colour=UNSURE_COLOUR)
    _add_sources(embed, shown, not answer.confident)
    embed.set_footer(text=answer_footer(answer, [p for _, p in shown]))
    return fit_embed(embed)


def sources_page_embed(answer: Answer, page: int, per_page: int = 5) -> discord.Embed:
    """Page `page` (0-based) of an answer's sources, numbered on from the pages before it."""
    pages = page_count(len(answer.passages), per_page)
    page = min(max(page, 0), pages - 1)
    shown = page_passages(answer, page, per_page)
    first, last = (shown[0][0], shown[-1][0]) if shown else (0, 0)
    embed = discord.Embed(title=trim(f"Sources {first}–{last} · {escape(one_line(answer.question))}", TITLE),
                          colour=CONFIDENT_COLOUR if answer.confident else UNSURE_COLOUR)
    _add_sources(embed, shown, not answer.confident)
    embed.set_footer(text=f"page {page + 1} of {pages}")
    return fit_embed(embed)


def _add_sources(embed: discord.Embed, shown: Sequence[tuple[int, Passage]], possibly_related: bool) -> None:
    """Add one field per source; each gets an equal share of the 6000-character embed budget."""
    names = [citation_name(n, p.title, " (possibly related)" if possibly_related else "") for n, p in shown]
    room = 5400 - len(embed.title or "") - len(embed.description or "") - sum(len(n) for n in names)
    share = max(200, min(FIELD_VALUE, room // max(1, len(shown))))
    for n, p in shown:
        name, value = source_field(n, p, possibly_related, limit=share)
        embed.add_field(name=name, value=value, inline=False)


def context_embed(n: int, p: Passage, context: str, location: str) -> discord.Embed:
    """The text around source `n`, its answer sentence(s) in bold, for the 'Show context' button."""
    spans: list[tuple[str, bool]] = []
    answers = [p.text[s:e] for s, e in p.answer_spans if 0 <= s < e <= len(p.text)]
    rest = context
    for a in answers:
        i = rest.find(a)
        if i < 0:
            continue
        spans += [(rest[:i], False), (a, True)]
        rest = rest[i + len(a):]
    spans.append((rest, False))
    body = "\n".join(_paragraphs(spans))
    embed = discord.Embed(title=citation_name(n, p.title), description=trim(body, DESCRIPTION - 100),
                          colour=INFO_COLOUR)
    embed.set_footer(text=trim(f"{location} · {date_text(p.date)}", FOOTER))
    return fit_embed(embed)


def _paragraphs(spans: list[tuple[str, bool]], limit: int = DESCRIPTION - 200) -> list[str]:
    """Escaped lines of `spans`, answer text in bold, line breaks of the document kept (at most `limit` chars)."""
    lines: list[list[tuple[str, bool]]] = [[]]
    for text, bold in spans:
        pieces = text.split("\n")
        for i, piece in enumerate(pieces):
            if i:
                lines.append([])
            if piece.strip():
                lines[-1].append((piece, bold))
    out, used = [], 0
    for line in lines:
        if not line:
            continue
        rendered = markdown_excerpt(line, max(0, limit - used))
        if not rendered:
            break
        out.append(rendered)
        used += len(rendered) + 1
    return out


# ------------------------------------------------------------------ library and admin
def documents_embed(docs: Sequence[Any], page: int, per_page: int = 10) -> discord.Embed:
    """Page `page` (0-based) of the indexed documents: title, date, chunk count and file name."""
    pages = page_count(len(docs), per_page)
    page = min(max(page, 0), pages - 1)
    chunk_total = sum(int(getattr(d, "chunks", 0) or 0) for d in docs)
    embed = discord.Embed(title="Indexed documents", colour=INFO_COLOUR)
    if not docs:
        embed.description = "No documents are indexed yet. Someone with Manage Server can run /reindex."
        return fit_embed(embed)
    lines = []
    for i, d in enumerate(docs[page * per_page:(page + 1) * per_page], page * per_page + 1):
        title = trim(escape(one_line(d.title or d.doc)), 200)
        lines.append(f"**{i}. {title}**\n{date_text(d.date)} · {d.chunks} chunks · "
                     f"{source_link(d.doc, getattr(d, 'url', None))}")
    embed.description = trim("\n".join(lines), DESCRIPTION)
    embed.set_footer(text=f"page {page + 1} of {pages} · {len(docs)} documents · {chunk_total} chunks")
    return fit_embed(embed)


def help_embed(info: dict | None, ask_channels: Sequence[int] = (), error: str | None = None) -> discord.Embed:
    """What the bot knows (documents, chunks, last build, model) and how to ask it."""
    embed = discord.Embed(title="citebot", colour=INFO_COLOUR, description=(
        "I answer questions with passages quoted word for word from a folder of documents, each with a "
        "numbered source you can check. I never write an answer of my own."))
    if info:
        embed.add_field(name="Documents", value=str(info.get("documents", "?")))
        embed.add_field(name="Passages", value=str(info.get("chunks", "?")))
        embed.add_field(name="Last build", value=_when(info.get("built_at")))
        embed.add_field(name="Model", value=trim(escape(str(info.get("model") or "?")), 200))
        if info.get("confidence_cut") is not None:
            how = "calibrated for these documents" if info.get("cut_calibrated") else "set in config.toml"
            embed.add_field(name="Confidence cut", value=f"{info['confidence_cut']:.3f} ({how})")
    else:
        embed.add_field(name="Index", value=trim(escape(error or "not built yet"), 500), inline=False)
    usage = ["`/ask question` — quoted passages with sources (filters: document, after, before; private)",
             "`/sources` — the indexed documents",
             "`/reindex`, `/upload`, `/remove` — update the index, add or delete documents (Manage Server)",
             "Mention me with a question to get the answer in a thread."]
    if ask_channels:
        usage.append("Every message in " + ", ".join(f"<#{c}>" for c in ask_channels) + " is a question.")
    embed.add_field(name="How to ask", value="\n".join(usage), inline=False)
    return fit_embed(embed)


def _when(iso: str | None) -> str:
    """An ISO timestamp as a Discord relative timestamp, or '?'."""
    if not iso:
        return "?"
    try:
        moment = dt.datetime.fromisoformat(iso)
    except ValueError:
        return escape(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return f"<t:{int(moment.timestamp())}:f> (<t:{int(moment.timestamp())}:R>)"


_STAGE_UNITS = {"embedding": "passages"}


def progress_text(stage: str, done: int, total: int) -> str:
    """The /reindex reply while a build runs, e.g. '⏳ Reindexing… embedding 40/120 passages'."""
    if total > 0 and stage == "chunking":  # counted in characters of text: a share reads better
        return f"⏳ Reindexing… {stage} {min(100, done * 100 // total)}%"
    if total > 0:
        return trim(f"⏳ Reindexing… {stage} {done}/{total} {_STAGE_UNITS.get(stage, '')}".rstrip(), CONTENT)
    return trim(f"⏳ Reindexing… {stage}", CONTENT)


def reindex_text(report: Any) -> str:
    """The final /reindex reply: files added, changed and removed, chunks embedded, warnings."""
    def names(label: str, files: Sequence[str]) -> str:
        listed = ", ".join(source_link(f, None) for f in files[:10])
        if len(files) > 10:
            listed += f" and {len(files) - 10} more"
        return f"{label} ({len(files)}): {listed}" if files else ""

    lines = [f"✅ Index updated in {report.seconds:.1f} s: {len(report.added)} added, {len(report.changed)} changed, "
             f"{len(report.removed)} removed; {report.embedded} passages embedded, {report.reused} reused."]
    lines += [t for t in (names("Added", report.added), names("Changed", report.changed),
                          names("Removed", report.removed)) if t]
    if report.skipped:  # files skipped, and metadata left out of files that were indexed (a bad sidecar)
        skipped = sum(1 for s in report.skipped if s.endswith("skipped"))
        label = f"{skipped} skipped" + (f", {len(report.skipped) - skipped} warnings" if skipped < len(report.skipped)
                                        else "")
        lines.append(f"⚠️ {label}: " + "; ".join(escape(one_line(s)) for s in report.skipped[:5]))
    return trim("\n".join(lines), CONTENT)


# ------------------------------------------------------------------ why (the scores behind an answer)
SCORE_NAMES = (("dense", "meaning"), ("bm25", "keywords"), ("fused", "fused"), ("sentence", "sentence"))
WHY_LEGEND = ("meaning: cosine similarity of the passage with the question · keywords: BM25 match of the question's "
              "words · fused: the two combined, which ranks the passages · sentence: the best sentence's score, "
              "which decides confidence")


def _score(value: Any) -> str:
    return f"{float(value):.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def why_text(answer: Answer, threshold: float | None) -> str:
    """In plain words, why the answer was or was not confident."""
    if not answer.passages:
        return "No passage matched the question at all, so there is nothing to quote."
    best_n, best = max(enumerate(answer.passages, 1), key=lambda item: item[1].scores.get("sentence", 0.0))
    score = float(best.scores.get("sentence", 0.0))
    if threshold is None:
        where = "(this index's threshold is not available)"
    elif score >= threshold:
        where = f"at or above this index's confidence threshold of {threshold:.3f}"
    else:
        where = f"below this index's confidence threshold of {threshold:.3f}"
    head = f"The best answer sentence, in source [{best_n}], scores {score:.3f}: {where}."
    if answer.confident:
        return head + " So the answer is confident and that sentence is quoted on top."
    return head + (" So the answer is not confident: no sentence is quoted as the answer, and the sources are "
                   "shown as possibly related only.")


def why_embed(answer: Answer, per_page: int, threshold: float | None) -> discord.Embed:
    """The 'Why?' button: each shown source's dense, keyword, fused and sentence scores, the threshold, and why
    the answer was or was not confident."""
    embed = discord.Embed(title=trim(f"Why: {escape(one_line(answer.question))}", TITLE),
                          description=why_text(answer, threshold),
                          colour=CONFIDENT_COLOUR if answer.confident else UNSURE_COLOUR)
    for n, p in page_passages(answer, 0, per_page):
        scores = " · ".join(f"{label} {_score(p.scores.get(key))}" for key, label in SCORE_NAMES)
        embed.add_field(name=citation_name(n, p.title), value=trim(f"{scores}\n{source_link(p.doc, p.url)}",
                                                                   FIELD_VALUE), inline=False)
    mode = getattr(answer, "mode", "") or ""
    embed.set_footer(text=trim(f"search mode: {mode} · " + WHY_LEGEND if mode else WHY_LEGEND, FOOTER))
    return fit_embed(embed)
