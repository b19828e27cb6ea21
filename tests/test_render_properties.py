"""Property tests of the Discord renderers: whatever a document says, every embed and message the bot renders
meets Discord's limits, never raises, and never turns document text into a working mention.

Document text is untrusted. `text.escape` makes mention syntax literal with a backslash (`\\<@123>`), so no
`<@…>`, `<@&…>` or `<#…>` may survive unescaped outside a code span. `@everyone` and `@here` are left as they
are: they cannot ping from inside an embed (Discord never notifies from embeds) and every message the bot sends
carries `AllowedMentions.none()` — that last line of defence is asserted here too.
"""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

import discord
from hypothesis import HealthCheck, given, settings, strategies as st

from bot.discord import render
from bot.discord.cogs import summary as summary_cog
from bot.discord.errors import NO_MENTIONS
from bot.discord.text import (AUTHOR, CONTENT, DESCRIPTION, EMBED_TOTAL, FIELD_NAME, FIELD_VALUE, FIELDS, FOOTER,
                              TITLE)
from index.answer import Answer, Passage
from index.documents import YearOnly
from index.summarize import Sentence, Summary, Timeline, TimelineEntry, TopicGroup, TopicSummary

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------ untrusted text
HOSTILE = [
    "@everyone", "@here", "<@123>", "<@!123>", "<@&456>", "<#789>", "</ask:1>", "<t:0:R>", "<:e:1>",
    "**", "__", "*", "_", "~~", "||", "`", "```", "``", "\\", "\\\\", "[", "]", "(", ")", "[x](https://evil.example)",
    "# ", "## ", "> ", ">>> ", "- ", "1. ", "https://example.org/a_b*c", "http://x.y/<@1>", "https://t.co/@everyone",
    "\x00", "\u202e", "\u200b", "\u200f", "مرحبا بالعالم", "שלום", "👍🏽", "👨‍👩‍👧", "🇬🇧", "é", "\r\n", "\t",
    "\u2028", "…", "“", "”",
]
SEPARATORS = st.sampled_from(["", " ", "  ", "\n", "\n\n", " \n "])
LONG_WORD = st.builds(lambda c, n: c * n, st.sampled_from(["a", "x", "@", "<", "*", "\\", "`", "é", "👍"]),
                      st.integers(50, 2000))
PLAIN = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
FRAGMENT = st.one_of(st.sampled_from(HOSTILE), PLAIN, st.sampled_from(["The force", "recorded", "8,300", "crimes."]),
                     LONG_WORD)


def untrusted(max_parts: int = 30) -> st.SearchStrategy[str]:
    """Text as a hostile document might contain it: Markdown, mentions, URLs, RTL, emoji, NUL, long words."""
    return st.lists(st.tuples(FRAGMENT, SEPARATORS), max_size=max_parts).map(
        lambda parts: "".join(f + s for f, s in parts))


SHORT = untrusted(6)
DATES = st.one_of(st.none(), st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)),
                  st.integers(1900, 2100).map(YearOnly))  # a date known only to its year
URLS = st.one_of(st.none(), st.sampled_from([
    "https://example.org/report.pdf", "http://example.org/a_b_(c)", "javascript:alert(1)",
    "https://x.example/<@123>", "https://x.example/ path", "https://example.org/@everyone", ""]), SHORT)


@st.composite
def spans(draw, text: str) -> list[tuple[int, int]]:
    """0–3 valid, sorted, non-overlapping answer spans inside `text`."""
    if not text:
        return []
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6, unique=True)))
    pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2) if cuts[i] < cuts[i + 1]]
    return pairs


@st.composite
def passages(draw, n: int) -> Passage:
    text = draw(untrusted(40))
    return Passage(chunk_id=n, doc=draw(SHORT), title=draw(SHORT), date=draw(DATES), url=draw(URLS),
                   location=draw(SHORT), text=text, start=0, end=len(text), answer_spans=draw(spans(text)),
                   duplicates=draw(st.lists(SHORT, max_size=4)))


@st.composite
def answers(draw) -> Answer:
    count = draw(st.integers(0, 40))
    return Answer(question=draw(untrusted(20)), passages=[draw(passages(i)) for i in range(count)],
                  confident=draw(st.booleans()), elapsed_ms=draw(st.floats(0, 1e7)),
                  filters=draw(st.dictionaries(st.sampled_from(["doc", "after", "before"]), SHORT, max_size=3)))


# ------------------------------------------------------------------ checks
_MENTION = re.compile(r"<(?:@|#)")


def unescaped_mentions(text: str) -> list[str]:
    """Mention syntax (<@…>, <@!…>, <@&…>, <#…>) that Discord would render as a mention: not backslash-escaped
    and not inside a closed inline code span."""
    found, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "`":
            close = text.find("`", i + 1)
            if close > 0:
                i = close + 1  # a code span: shown literally
                continue
        if _MENTION.match(text, i):
            found.append(text[max(0, i - 10):i + 12])
        i += 1
    return found


def assert_embed_safe(embed: discord.Embed) -> None:
    """Every Discord embed limit, no empty field, and no working mention anywhere in the embed."""
    assert isinstance(embed, discord.Embed)
    d = embed.to_dict()
    footer = d.get("footer", {}).get("text", "")  # plain text in Discord: no Markdown, no mentions rendered
    texts = [d.get("title", ""), d.get("description", ""), footer, d.get("author", {}).get("name", "")]
    assert len(texts[0]) <= TITLE, texts[0]
    assert len(texts[1]) <= DESCRIPTION
    assert len(texts[2]) <= FOOTER
    assert len(texts[3]) <= AUTHOR
    fields = d.get("fields", [])
    assert len(fields) <= FIELDS
    for f in fields:
        assert 0 < len(f["name"]) <= FIELD_NAME, f["name"]
        assert 0 < len(f["value"]) <= FIELD_VALUE, f["value"]
        texts += [f["name"], f["value"]]
    assert len(embed) <= EMBED_TOTAL
    assert sum(len(t) for t in texts) <= EMBED_TOTAL
    for t in texts:
        if t is not footer:
            assert not unescaped_mentions(t), (unescaped_mentions(t), t)


def assert_content_safe(text: str) -> None:
    assert isinstance(text, str) and len(text) <= CONTENT
    assert not unescaped_mentions(text), unescaped_mentions(text)


def test_the_mention_check_itself():
    assert len(unescaped_mentions("hi <@123> and <#7>")) == 2
    assert not unescaped_mentions("\\<@123> `<@&5>` \\\\\\<#7>")
    assert unescaped_mentions("\\\\<@1>") and unescaped_mentions("`<@1>")
    assert NO_MENTIONS.everyone is False and NO_MENTIONS.users is False and NO_MENTIONS.roles is False


# ------------------------------------------------------------------ answers
@SETTINGS
@given(answers(), st.integers(1, 10))
def test_answer_embed_meets_every_limit_and_neutralises_mentions(answer, per_page):
    embed = render.answer_embed(answer, per_page)
    assert_embed_safe(embed)
    if answer.passages:
        assert len(embed.fields) >= 1
        assert embed.fields[0].name.startswith("[1] ")


@SETTINGS
@given(answers(), st.integers(-3, 12), st.integers(1, 10))
def test_sources_pages_meet_every_limit(answer, page, per_page):
    assert_embed_safe(render.sources_page_embed(answer, page, per_page))


@SETTINGS
@given(st.data(), st.integers(1, 60), untrusted(60), SHORT)
def test_context_embed_meets_every_limit(data, n, context, location):
    p = data.draw(passages(n))
    # the context the knowledge base returns contains the passage text; sometimes it does not (edited file)
    if data.draw(st.booleans()):
        context = context[: len(context) // 2] + p.text + context[len(context) // 2:]
    assert_embed_safe(render.context_embed(n, p, context, location))


@SETTINGS
@given(st.integers(1, 99), SHORT, SHORT, DATES, URLS, st.booleans(), st.integers(0, 1024))
def test_citation_pieces_fit(n, title, doc, date, url, related, limit):
    name = render.citation_name(n, title, " (possibly related)" if related else "")
    assert 0 < len(name) <= FIELD_NAME and not unescaped_mentions(name)
    meta = render.citation_meta(date, title, doc, url)
    assert not unescaped_mentions(meta)
    assert not unescaped_mentions(render.source_link(doc, url))


# ------------------------------------------------------------------ library, admin and help
DOCS = st.lists(st.builds(SimpleNamespace, doc=SHORT, title=st.one_of(st.none(), SHORT), date=DATES,
                          chunks=st.integers(0, 10**6), url=URLS), max_size=40)


@SETTINGS
@given(DOCS, st.integers(-2, 6), st.integers(1, 25))
def test_documents_embed_meets_every_limit(docs, page, per_page):
    assert_embed_safe(render.documents_embed(docs, page, per_page))


@SETTINGS
@given(st.one_of(st.none(), st.fixed_dictionaries({
    "documents": st.integers(), "chunks": st.integers(),  # counts, from kb.info()
    "built_at": st.one_of(st.none(), SHORT, st.datetimes().map(dt.datetime.isoformat)),
    "model": st.one_of(st.none(), SHORT)})), st.one_of(st.none(), untrusted(20)))
def test_help_embed_meets_every_limit(info, error):
    assert_embed_safe(render.help_embed(info, (), error))
    with_channels = render.help_embed(info, [1100000000000000021 + i for i in range(30)], error)
    d = with_channels.to_dict()
    assert len(with_channels) <= EMBED_TOTAL and all(len(f["value"]) <= FIELD_VALUE for f in d["fields"])


@SETTINGS
@given(st.builds(SimpleNamespace, seconds=st.floats(0, 1e6), added=st.lists(SHORT, max_size=30),
                 changed=st.lists(SHORT, max_size=30), removed=st.lists(SHORT, max_size=30),
                 embedded=st.integers(0, 10**7), reused=st.integers(0, 10**7), skipped=st.lists(untrusted(10), max_size=12)),
       SHORT, st.integers(-5, 10**6), st.integers(-5, 10**6))
def test_reindex_and_progress_messages_fit_in_one_message(report, stage, done, total):
    assert_content_safe(render.reindex_text(report))
    assert len(render.progress_text(stage, done, total)) <= CONTENT or len(stage) > CONTENT


# ------------------------------------------------------------------ summaries and timelines
SENTENCES = st.lists(st.builds(Sentence, text=untrusted(20), start=st.just(0), end=st.just(0), location=SHORT),
                     max_size=20)


@SETTINGS
@given(st.builds(Summary, doc=SHORT, title=SHORT, date=DATES, url=URLS, sentences=SENTENCES,
                 total=st.integers(0, 10**5), whole=st.booleans(), cached=st.booleans(), elapsed_ms=st.floats(0, 1e6)))
def test_summary_embed_meets_every_limit(summary):
    assert_embed_safe(summary_cog.summary_embed(summary))


@SETTINGS
@given(st.builds(TopicSummary, topic=untrusted(10), elapsed_ms=st.floats(0, 1e6), groups=st.lists(
    st.builds(TopicGroup, doc=SHORT, title=SHORT, date=DATES, url=URLS, sentences=SENTENCES.map(lambda s: s[:6])),
    max_size=30)))
def test_topic_embed_meets_every_limit(result):
    assert_embed_safe(summary_cog.topic_embed(result))


@SETTINGS
@given(st.builds(Timeline, topic=untrusted(10), elapsed_ms=st.floats(0, 1e6), entries=st.lists(
    st.builds(TimelineEntry, date=DATES, doc=SHORT, title=SHORT, url=URLS, text=untrusted(20), location=SHORT,
              start=st.just(0), end=st.just(0)), max_size=35)))
def test_timeline_embed_meets_every_limit(result):
    assert_embed_safe(summary_cog.timeline_embed(result))
