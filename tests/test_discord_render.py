"""Rendering for Discord: escaping untrusted text, trimming on word boundaries, and every Discord limit met."""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

import discord
import pytest
from hypothesis import given, settings, strategies as st

from bot.discord import render
from bot.discord.text import (CONTENT, DESCRIPTION, EMBED_TOTAL, FIELD_NAME, FIELD_VALUE, FIELDS, FOOTER, TITLE,
                              escape, fit_embed, markdown_excerpt, trim)
from index.answer import Answer, Passage

HOSTILE = "**bold** _it_ ~~s~~ ||spoiler|| `code` [click](https://evil.example) <@123> @everyone\n# Heading\n> quote"


def passage(n: int = 1, text: str | None = None, title: str | None = None, spans=None, **kw) -> Passage:
    text = text if text is not None else f"Intro sentence {n}. The force recorded 8,300 more crimes in 2018. Outro."
    if spans is None:
        i = text.find("The force")
        spans = [(i, text.find(".", i) + 1)] if i >= 0 else []
    return Passage(chunk_id=n, doc=kw.pop("doc", f"report-{n}.txt"), title=title or f"Report {n}",
                   date=kw.pop("date", dt.date(2018, 3, n % 28 + 1)), url=kw.pop("url", None),
                   location=kw.pop("location", f"lines {n}–{n + 5}"), text=text, start=0, end=len(text),
                   answer_spans=spans, **kw)


def answer(passages, confident=True, question="How many crimes were recorded?") -> Answer:
    return Answer(question=question, passages=list(passages), confident=confident, elapsed_ms=123.4)


def assert_limits(embed: discord.Embed) -> None:
    """Every Discord embed limit."""
    d = embed.to_dict()
    assert len(d.get("title", "")) <= TITLE
    assert len(d.get("description", "")) <= DESCRIPTION
    assert len(d.get("fields", [])) <= FIELDS
    for f in d.get("fields", []):
        assert 0 < len(f["name"]) <= FIELD_NAME and 0 < len(f["value"]) <= FIELD_VALUE
    assert len(d.get("footer", {}).get("text", "")) <= FOOTER
    assert len(embed) <= EMBED_TOTAL


def bold_balanced(text: str) -> bool:
    return re.sub(r"\\.", "", text).count("**") % 2 == 0


# ------------------------------------------------------------------ text helpers
def test_escape_makes_markdown_mentions_and_links_literal():
    out = escape(HOSTILE)
    assert "\\*\\*bold\\*\\*" in out and "\\_it\\_" in out and "\\~\\~s\\~\\~" in out and "\\|\\|spoiler" in out
    assert "\\`code\\`" in out and "\\[click\\](" in out and "\\<@123>" in out
    assert "\n\\# Heading" in out and "\n\\> quote" in out
    assert escape("see https://example.org/a_b_c for more") == "see https://example.org/a_b_c for more"
    assert escape("1. first") == "1\\. first" and escape("- item") == "\\- item"


def test_trim_cuts_on_a_word_boundary_with_an_ellipsis():
    assert trim("short", 10) == "short"
    assert trim("hello world this is long", 12) == "hello world…"
    assert trim("hello wonderful world", 12) == "hello…"
    assert trim("x" * 50, 10) == "x" * 9 + "…"
    assert trim("anything", 0) == ""
    assert not trim("a **bold and long text** here", 16).count("**") % 2
    assert not trim("ends with escape \\* star and more", 19).rstrip("…").endswith("\\")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=500), st.integers(0, 300))
def test_trim_never_exceeds_the_limit(text, limit):
    from bot.printable import printable
    out = trim(text, limit)
    assert len(out) <= limit
    if len(printable(text)) <= limit:
        assert out == printable(text)  # control characters are never sent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="ab *_`[]()<>#\\|~-\n.", max_size=80), st.booleans()), max_size=6),
       st.integers(1, 300))
def test_markdown_excerpt_fits_and_keeps_bold_balanced(segments, limit):
    out = markdown_excerpt(segments, limit)
    assert len(out) <= limit
    assert bold_balanced(out)
    assert "\n" not in out


def test_markdown_excerpt_bolds_only_the_answer():
    out = markdown_excerpt([("Before **fake** ", False), ("the answer.", True), (" After", False)], 200)
    assert out == "Before \\*\\*fake\\*\\* **the answer.** After"


# ------------------------------------------------------------------ answers
def test_confident_answer_quotes_the_answer_and_numbers_the_sources():
    a = answer([passage(1), passage(2, url="https://example.org/r2", duplicates=["copy-of-2.txt"])])
    embed = render.answer_embed(a, per_page=5)
    d = embed.to_dict()
    assert d["title"] == "How many crimes were recorded?"
    assert d["description"].startswith("> “The force recorded 8,300 more crimes in 2018.”") and \
        d["description"].endswith("[1]")
    names = [f["name"] for f in d["fields"]]
    assert names == ["[1] Report 1", "[2] Report 2"]
    first, second = (f["value"] for f in d["fields"])
    assert first.startswith("2018-03-02 · lines 1–6 · `report-1.txt`")
    assert "**The force recorded 8,300 more crimes in 2018.**" in first
    assert "[report-2.txt](https://example.org/r2)" in second
    assert d["footer"]["text"] == "123 ms · near-duplicates folded in: copy-of-2.txt"
    assert_limits(embed)


def test_not_confident_says_so_plainly_and_marks_sources_possibly_related():
    embed = render.answer_embed(answer([passage(1), passage(2)], confident=False), per_page=5)
    d = embed.to_dict()
    assert d["description"].startswith("The documents do not answer this.")
    assert all(f["name"].endswith("(possibly related)") for f in d["fields"])
    assert "> “" not in d["description"]


def test_no_passages():
    embed = render.answer_embed(answer([], confident=False))
    assert embed.description == render.NO_PASSAGES and not embed.fields


def test_untrusted_document_text_cannot_format_link_or_mention():
    p = passage(1, text=f"{HOSTILE} The force recorded 8,300 more crimes.", title=HOSTILE, location="**p. 1**",
                doc="we`ird [name](x).txt", url="javascript:alert(1)")
    d = render.answer_embed(answer([p], question=HOSTILE)).to_dict()
    everything = " ".join([d["title"], d["description"]] + [f["name"] + f["value"] for f in d["fields"]])
    assert "[click](" not in everything and "<@123>" not in everything.replace("\\<@123>", "")
    assert "javascript:" not in everything
    value = d["fields"][0]["value"]
    assert value.count("**") == 2 and "**The force recorded 8,300 more crimes.**" in value


def test_huge_passage_title_and_question_meet_every_limit():
    huge = ("word " * 50_000) + "The force recorded 8,300 more crimes. " + ("tail " * 50_000)
    p = passage(1, text=huge, title="T" * 5000, location="L" * 3000, doc="d" * 3000 + ".txt")
    a = answer([p], question="Q " * 3000)
    for embed in (render.answer_embed(a), render.sources_page_embed(a, 0)):
        assert_limits(embed)
        assert bold_balanced(embed.fields[0].value)
    assert "**The force recorded 8,300 more crimes.**" in render.answer_embed(a).fields[0].value


@pytest.mark.parametrize("confident", [True, False])
def test_thirty_sources_meet_every_limit(confident):
    big = [passage(n, text=("filler " * 300) + "The force recorded 8,300 more crimes. " + ("more " * 300),
                   title=f"A rather long document title number {n} " * 8, duplicates=[f"dup-{n}-{i}.txt" for i in range(20)])
           for n in range(1, 31)]
    a = answer(big, confident=confident)
    for embed in (render.answer_embed(a, per_page=30), render.sources_page_embed(a, 0, per_page=30),
                  render.sources_page_embed(a, 1, per_page=12)):
        assert_limits(embed)
    embed = render.answer_embed(a, per_page=30)
    assert len(embed.fields) <= FIELDS and embed.footer.text.startswith(f"{30 - len(embed.fields)} more not shown")
    assert all("**The force recorded 8,300 more crimes.**" in f.value for f in embed.fields)


def test_sources_pages_continue_the_numbering():
    a = answer([passage(n) for n in range(1, 8)])
    assert render.page_count(7, 3) == 3
    page = render.sources_page_embed(a, 1, per_page=3)
    assert [f.name for f in page.fields] == ["[4] Report 4", "[5] Report 5", "[6] Report 6"]
    assert page.footer.text == "page 2 of 3" and page.title.startswith("Sources 4–6")
    last = render.sources_page_embed(a, 99, per_page=3)
    assert [f.name for f in last.fields] == ["[7] Report 7"]


def test_fit_embed_trims_every_part():
    embed = discord.Embed(title="t " * 500, description="d " * 5000)
    embed.set_footer(text="f " * 2000)
    for i in range(40):
        embed.add_field(name="n " * 300, value="v " * 1000)
    fit_embed(embed)
    assert_limits(embed)


# ------------------------------------------------------------------ other messages
def test_context_embed_bolds_the_answer_inside_the_surrounding_text():
    p = passage(3)
    context = "Earlier paragraph.\n" + p.text + "\nLater paragraph with *stars*."
    embed = render.context_embed(3, p, context, "report-3.txt, lines 3–8")
    assert embed.title == "[3] Report 3"
    assert "**The force recorded 8,300 more crimes in 2018.**" in embed.description
    assert "Earlier paragraph." in embed.description and "\\*stars\\*" in embed.description
    assert embed.footer.text == "report-3.txt, lines 3–8 · 2018-03-04"
    huge = render.context_embed(1, passage(1), "x " * 10_000, "loc")
    assert_limits(huge)


def doc(n: int, **kw):
    return SimpleNamespace(doc=f"doc-{n}.txt", title=kw.get("title", f"Document {n}"), date=kw.get("date"),
                           url=None, chunks=n)


def test_documents_embed_lists_title_date_chunks_and_file_paged():
    docs = [doc(n, date=dt.date(2017, 1, n)) for n in range(1, 24)]
    first = render.documents_embed(docs, 0, per_page=10)
    assert first.description.startswith("**1. Document 1**\n2017-01-01 · 1 chunks · `doc-1.txt`")
    assert first.footer.text == "page 1 of 3 · 23 documents · 276 chunks"
    assert "**21. Document 21**" in render.documents_embed(docs, 2, per_page=10).description
    assert "No documents" in render.documents_embed([], 0).description
    assert_limits(render.documents_embed([doc(n, title="x" * 3000) for n in range(30)], 0))


def test_a_year_only_date_is_shown_as_the_year():
    from index.documents import YearOnly
    assert render.date_text(YearOnly(2018)) == "2018" and render.date_text(None) == "undated"
    field = render.answer_embed(answer([passage(1, date=YearOnly(2018))])).to_dict()["fields"][0]
    assert field["value"].startswith("2018 · lines 1–6 · `report-1.txt`")
    p = passage(2, date=YearOnly(2018))
    assert render.context_embed(2, p, p.text, "loc").footer.text == "loc · 2018"
    listed = render.documents_embed([doc(1, date=YearOnly(2018))], 0).description
    assert listed.startswith("**1. Document 1**\n2018 · 1 chunks") and "2018-01-01" not in listed


def test_help_embed_shows_what_the_bot_knows():
    info = {"documents": 5, "chunks": 26, "built_at": "2024-05-01T10:00:00+00:00", "model": "all-MiniLM-L6-v2"}
    fields = {f.name: f.value for f in render.help_embed(info, [42]).fields}
    assert fields["Documents"] == "5" and fields["Passages"] == "26" and fields["Model"] == "all-MiniLM-L6-v2"
    assert fields["Last build"].startswith("<t:1714557600:f>")
    assert "<#42>" in fields["How to ask"]
    missing = render.help_embed(None, error="no index yet; run `citebot index`")
    assert "no index yet" in missing.fields[0].value
    info.update(confidence_cut=0.2871, cut_calibrated=True)
    fields = {f.name: f.value for f in render.help_embed(info, []).fields}
    assert fields["Confidence cut"] == "0.287 (calibrated for these documents)"


def test_the_index_reports_its_calibrated_cut(kb):
    info = kb.info()
    assert info["cut_calibrated"] and info["confidence_cut"] == kb.searcher().snap.calibration["threshold"]


def test_progress_and_reindex_texts():
    assert render.progress_text("embedding", 40, 120) == "⏳ Reindexing… embedding 40/120 passages"
    assert render.progress_text("starting", 0, 0) == "⏳ Reindexing… starting"
    assert render.progress_text("chunking", 2_500_000, 10_000_000) == "⏳ Reindexing… chunking 25%"  # characters
    report = SimpleNamespace(added=["a.txt"], changed=[], removed=[f"old-{i}.txt" for i in range(400)],
                             skipped=["bad.pdf: not a PDF; skipped"], embedded=12, reused=30, seconds=3.21)
    text = render.reindex_text(report)
    assert text.startswith("✅ Index updated in 3.2 s: 1 added, 0 changed, 400 removed; 12 passages embedded")
    assert "Added (1): `a.txt`" in text and "and 390 more" in text and "⚠️ 1 skipped: bad.pdf" in text
    report.skipped.append("c.txt: sidecar c.txt.meta.toml is not valid TOML (…); indexed without it")
    assert "⚠️ 1 skipped, 1 warnings: bad.pdf" in render.reindex_text(report)
    assert len(text) <= CONTENT


# ------------------------------------------------------------------ quotation marks and the duplicates footer
QUOTED_SENTENCE = "“The force was rated adequate,” the inspector said."
ALL_QUOTED = "\"We are proud of our officers.\""


@pytest.mark.parametrize("sentence", [QUOTED_SENTENCE, ALL_QUOTED, "He called it “a credit to leadership”"])
def test_a_sentence_with_its_own_quotation_marks_is_not_quoted_twice(sentence):
    from bot.console import format_answer
    from bot.discord.cogs.summary import timeline_embed
    from index.summarize import Timeline, TimelineEntry
    a = answer([passage(1, text=sentence, spans=[(0, len(sentence))])])
    description = render.answer_embed(a).description
    assert description == f"> {sentence} [1]"
    assert sentence in format_answer(a) and not re.search(r"[“”\"]{2}", format_answer(a).replace(sentence, ""))
    entry = TimelineEntry(dt.date(2018, 1, 1), "a.txt", "A", None, sentence, "line 1", 0, len(sentence), 1.0, [])
    field = timeline_embed(Timeline("topic", [entry])).fields[0].value
    assert field.startswith(f"{sentence} [1]") and not re.search(r"[“”\"]{2}", field)
    from bot.cli_summary import format_timeline
    terminal = " ".join(format_timeline(Timeline("topic", [entry])).split())
    assert f"[1] {sentence}" in terminal and not re.search(r"[“”\"]{2}", terminal)
    plain = answer([passage(1)])  # a sentence without marks of its own still gets “…”
    assert render.answer_embed(plain).description.startswith("> “The force recorded")


def test_the_duplicates_footer_never_lists_a_file_already_cited():
    first = passage(1, doc="press-release.txt", duplicates=["news-copy.txt"])
    second = passage(2, doc="news-copy.txt", duplicates=["press-release.txt", "third-copy.txt"])
    footer = render.answer_embed(answer([first, second])).footer.text
    assert footer == "123 ms · near-duplicates folded in: third-copy.txt"
    alone = passage(1, doc="a.txt", duplicates=["a.txt"])
    assert render.answer_embed(answer([alone])).footer.text == "123 ms"


# ------------------------------------------------------------------ why
def test_why_shows_each_sources_scores_and_says_in_plain_words_why_it_was_confident():
    scored = [passage(1, scores={"dense": 0.61, "bm25": 7.25, "fused": 0.9, "sentence": 0.42}),
              passage(2, scores={"dense": 0.5, "bm25": 0.0, "fused": 0.4, "sentence": 0.2})]
    embed = render.why_embed(answer(scored), per_page=5, threshold=0.29)
    assert embed.description.startswith("The best answer sentence, in source [1], scores 0.420: at or above this "
                                        "index's confidence threshold of 0.290.")
    assert "confident and that sentence is quoted" in embed.description
    assert embed.fields[0].value.startswith("meaning 0.610 · keywords 7.250 · fused 0.900 · sentence 0.420")
    assert [f.name for f in embed.fields] == ["[1] Report 1", "[2] Report 2"] and "BM25" in embed.footer.text
    unsure = render.why_embed(answer(scored, confident=False), per_page=5, threshold=0.5)
    assert "below this index's confidence threshold of 0.500" in unsure.description
    assert "not confident" in unsure.description and "possibly related" in unsure.description
    assert render.why_text(answer([], confident=False), 0.29).startswith("No passage matched")
    assert_limits(render.why_embed(answer([passage(n, title="t" * 300) for n in range(1, 11)]), 10, None))


def test_terminal_control_sequences_in_documents_are_never_sent():
    evil = "Title \x1b]0;pwned\x07 \x1b[2J\x9b31m"
    p = passage(1, text="Intro \x1b[2J sentence. The force recorded 8,300 more crimes in 2018.\x07 Outro.",
                title=evil, doc="odd\x1b[31m\nname.txt", location="line \x9b3")
    embeds = [render.answer_embed(answer([p])), render.documents_embed([doc(1, title=evil)], 0),
              render.context_embed(1, p, "Before \x1b[2J the force recorded 8,300 more crimes.", "line \x1b7")]
    for embed in embeds:
        text = str(embed.to_dict())
        parts = [embed.title or "", embed.description or "", embed.footer.text or ""]
        parts += [f.name + f.value for f in embed.fields]
        assert not any(re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", part) for part in parts), text
    assert "8,300" in str(embeds[0].to_dict()) and "pwned" in (embeds[0].fields[0].name + str(embeds[0].to_dict()))
