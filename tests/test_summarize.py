"""Summaries and timelines: every sentence quoted verbatim with its location, key facts first, cached by content.

Integration tests use the session `kb` (real model over a copy of docs/); the selection itself is also tested
with toy vectors, without the model.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from index.chunking import split_sentences
from index.documents import Block, Document
from index.kb import DocumentNotFound, KnowledgeBase, UserError
from index.summarize import (MATCH_THRESHOLD, SummaryConfig, fact_weight, match_documents, mmr, name_score,
                             select_summary, suggest_documents, summarize_document, trailer_start)

EFFECTIVENESS = "2017-03-02_hmic-effectiveness-requires-improvement.txt"
NEWS = "2017-09-07_news-failing-to-record-one-in-four-crimes.txt"
ROUNDUP = "2017-09-09_leicestershire-police-news-roundup-crime-recording.txt"
REINSPECTION = "2018_hmicfrs-crime-data-integrity-reinspection-press-release.txt"
PEEL = "hmicfrs-peel-public-contact-rated-adequate.txt"


def toy_vectors(texts):
    """Bag-of-words unit vectors: deterministic, model-free stand-ins for sentence embeddings."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, hash(w.strip(".,;:“”\"'")) % 256] += 1
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1)


def make_doc(text: str, doc: str = "toy.txt") -> Document:
    blocks, offset = [], 0
    for n, line in enumerate(text.split("\n"), 1):
        blocks.append(Block(offset, offset + len(line), line=n))
        offset += len(line) + 1
    return Document(doc=doc, path=None, kind="text", title="Toy", date=None, url=None, text=text, blocks=blocks)


# ---------------------------------------------------------------- selection without the model

def test_key_facts_are_recognised():
    assert fact_weight("HMICFRS has determined that the force’s performance is still ‘inadequate’.") == 1.0
    assert fact_weight("The force requires improvement.") == 1.0
    assert fact_weight("It gave the Force “good” grades in each of these areas.") == 1.0
    assert fact_weight("The force records around 76 per cent of crimes.") == 0.7
    assert fact_weight("It resulted in an additional 8,300 crimes.") == 0.7
    assert fact_weight("We now have 547 fewer police officers than we had in 2009.") == 0.7
    assert fact_weight("The force is in a good position to pick up the pace.") == 0.0
    assert fact_weight("The re-inspection took place in 2018.") == 0.0


def test_short_document_is_returned_whole():
    doc = make_doc("The force was rated good overall.\nIt answered calls quickly.")
    s = summarize_document(doc, toy_vectors, SummaryConfig(sentences=5))
    assert s.whole and [x.text for x in s.sentences] == ["The force was rated good overall.", "It answered calls quickly."]
    assert [x.location for x in s.sentences] == ["line 1", "line 2"]


def test_selection_is_in_document_order_without_repeats_and_within_the_character_budget():
    sentences = [f"The inspection of area {i} found that officers in district {i} recorded crime well." for i in range(8)]
    sentences[5] = sentences[3]  # an exact repeat must not be chosen twice
    texts = sentences + ["The inspection found that officers in each district recorded crime, but judged it inadequate.",
                         "Parking near the station is free on Sundays.", "The weather on the day was sunny and mild."]
    chosen, whole = select_summary(texts, toy_vectors(texts), SummaryConfig(), sentences=4)
    assert not whole and len(chosen) == 4 and chosen == sorted(chosen)
    assert len({texts[i] for i in chosen}) == 4
    assert 8 in chosen and 9 not in chosen  # the judgement is central enough; parking is not
    chosen, _ = select_summary(texts, toy_vectors(texts), SummaryConfig(), max_chars=200)
    assert sum(len(texts[i]) + 1 for i in chosen) - 1 <= 200


def test_mmr_prefers_a_different_sentence_over_a_near_copy():
    v = np.array([[1, 0, 0], [0.999, 0.0447, 0], [0, 1, 0]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert sorted(mmr(np.array([1.0, 0.99, 0.6]), v, 2)) == [0, 2]


def test_notes_to_editors_start_the_trailer():
    assert trailer_start(["News.", "More news.", "Notes to editors", "- About us."]) == 2
    assert trailer_start(["News only."]) == 1


# ---------------------------------------------------------------- the seed documents

def test_every_summary_sentence_is_a_verbatim_sentence_of_its_document(kb):
    snap = kb.searcher().snap
    for info in kb.documents():
        summary = kb.summary(info.doc)
        document = snap.document(info.doc)
        spans = set(split_sentences(document.text))
        raw = info.doc and (kb.cfg.docs_dir / info.doc).read_text(encoding="utf-8")
        assert summary.sentences and summary.doc == info.doc and summary.title == info.title
        boilerplate = [r for r in document.removed if r.strip() not in document.text]  # not a repeat of a kept line
        for s in summary.sentences:
            assert (s.start, s.end) in spans and document.text[s.start:s.end] == s.text
            assert " ".join(s.text.split()) in " ".join(raw.split())
            assert s.location.startswith("line")
            assert not any(r.strip() in s.text for r in boilerplate)
        starts = [s.start for s in summary.sentences]
        assert starts == sorted(starts)
    assert not any("Hide Ad" in s.text for s in kb.summary(PEEL).sentences)  # boilerplate the loader removed


def test_reinspection_summary_has_the_grade_and_the_figure(kb):
    text = " ".join(s.text for s in kb.summary("2018 re-inspection").sentences)
    assert "inadequate" in text and "8,300" in text


def test_effectiveness_summary_has_the_grade(kb):
    summary = kb.summary("effectiveness")
    assert summary.doc == EFFECTIVENESS
    assert "requires improvement" in " ".join(s.text for s in summary.sentences)


def test_summary_length_and_cache(kb):
    first = kb.summary(NEWS, sentences=3)
    again = kb.summary(NEWS, sentences=3)
    assert len(first.sentences) == 3 and again.cached
    assert [s.text for s in again.sentences] == [s.text for s in first.sentences]
    short = kb.summary(NEWS, chars=300)
    assert sum(len(s.text) for s in short.sentences) <= 300
    with pytest.raises(UserError):
        kb.summary(NEWS, sentences=0)


def test_topic_summary_groups_documents_newest_first_and_collapses_duplicates(kb):
    result = kb.topic_summary("crime recording")
    docs = [g.doc for g in result.groups]
    assert {NEWS, ROUNDUP, REINSPECTION} <= set(docs)
    dated = [g.date for g in result.groups if g.date]
    assert dated == sorted(dated, reverse=True)
    assert all(g.date is None for g in result.groups[len(dated):])  # undated last
    texts = [" ".join(s.text.split()) for g in result.groups for s in g.sentences]
    assert len(texts) == len(set(texts))
    for g in result.groups:
        assert [s.start for s in g.sentences] == sorted(s.start for s in g.sentences)


def test_timeline_orders_by_document_date_with_undated_last(kb):
    result = kb.timeline("crime recording")
    entries = result.entries
    assert entries
    dated = [e.date for e in entries if e.date]
    assert dated == sorted(dated) and all(e.date is None for e in entries[len(dated):])
    first_2017 = next(i for i, e in enumerate(entries) if e.date and e.date.year == 2017)
    first_2018 = next(i for i, e in enumerate(entries) if e.doc == REINSPECTION or "2018" in e.text)
    assert first_2017 < first_2018
    # the 2018 release has no date in its text; its file name "2018_…" places it in 2018, as a year only
    assert entries[first_2018].doc == REINSPECTION and entries[first_2018].date.isoformat() == "2018"
    assert all(e.location and e.title for e in entries)
    entries = kb.timeline("inspection findings").entries
    assert [e.doc for e in entries if e.date is None] == [e.doc for e in entries[-2:]] == [PEEL, PEEL]
    dated = [e.date for e in entries if e.date]
    assert dated == sorted(dated) and any(e.date.isoformat() == "2018" for e in entries[:-2])


# ---------------------------------------------------------------- bad input

def test_document_names_ambiguous_unknown_and_outside(kb):
    assert kb.resolve_document(REINSPECTION).doc == REINSPECTION
    assert kb.resolve_document("./" + REINSPECTION).doc == REINSPECTION
    assert kb.resolve_document("REINSPECTION").doc == REINSPECTION
    assert kb.resolve_document("rated adequate").doc == PEEL
    assert kb.resolve_document("efectivenes").doc == EFFECTIVENESS  # a typo, one clear winner
    with pytest.raises(DocumentNotFound) as info:
        kb.resolve_document("news")
    assert info.value.ambiguous and {d.doc for d in info.value.suggestions} == {NEWS, ROUNDUP}
    assert NEWS in str(info.value) and ROUNDUP in str(info.value)
    with pytest.raises(DocumentNotFound) as info:
        kb.resolve_document("parking wardens")
    assert not info.value.ambiguous and 1 <= len(info.value.suggestions) <= 5 and "did you mean" in str(info.value)
    for outside in ("../config.toml", "/etc/passwd", "docs/../../x.txt", "~/secret.txt"):
        with pytest.raises(UserError, match="outside the docs folder"):
            kb.summary(outside)
    with pytest.raises(UserError):
        kb.summary("   ")


def test_autocomplete_suggestions(kb):
    docs = kb.documents()
    assert suggest_documents("reinspection", docs, limit=2)[0].doc == REINSPECTION
    assert len(suggest_documents("", docs, limit=25)) == len(docs)
    assert len(kb.suggest_documents("police", limit=100)) <= 25
    matches, suggestions = match_documents("zzzz", docs)
    assert matches == [] and suggestions == []  # nothing is close enough to suggest


@pytest.mark.parametrize("name", ["annual report 2020", "no such report xyz", "annual report", "police 2020 audit"])
def test_a_name_matching_nothing_well_is_refused_with_up_to_five_choices(kb, name):
    """These once matched an unrelated report through one shared word ("report") and were summarised."""
    matches, suggestions = match_documents(name, kb.documents())
    assert matches == [] and 1 <= len(suggestions) <= 5
    with pytest.raises(DocumentNotFound, match="did you mean"):
        kb.summary(name)
    with pytest.raises(DocumentNotFound, match="did you mean"):
        kb.ask("what was the rating?", doc=name)


def test_the_match_threshold_takes_typos_and_nothing_weaker(kb):
    docs = {d.doc: d for d in kb.documents()}
    effectiveness = docs[EFFECTIVENESS]
    assert name_score("efectivenes", effectiveness) >= MATCH_THRESHOLD  # one letter short twice
    assert name_score("effectivness", effectiveness) >= MATCH_THRESHOLD
    assert name_score("annual report", effectiveness) < MATCH_THRESHOLD  # only "report" is there
    assert name_score("effectiveness 2020", effectiveness) < MATCH_THRESHOLD  # a word that is not there
    assert match_documents("crime data integrty", list(docs.values()))[0] == [docs[REINSPECTION]]


def test_ask_with_a_document_uses_the_same_names_as_summary(kb):
    answer = kb.ask("How was the force rated?", doc="rated adequate")
    assert answer.passages and {p.doc for p in answer.passages} == {PEEL}
    assert {p.doc for p in kb.ask("How was the force rated?", doc="2017-*").passages} <= {EFFECTIVENESS, NEWS, ROUNDUP}


# ---------------------------------------------------------------- cached with the index

def test_cached_summaries_are_rebuilt_with_the_index(tmp_path, embedder):
    from conftest import DOCS, make_config
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in (NEWS, PEEL):
        shutil.copy(DOCS / name, docs / name)
    kb = KnowledgeBase(make_config(docs, tmp_path / "index"), embedder=embedder)
    kb.build()
    old_hash = {d.doc: d.content_hash for d in kb.documents()}[NEWS]
    first = kb.summary(NEWS)
    assert not first.cached and kb.summary(NEWS).cached
    path = docs / NEWS
    path.write_text(path.read_text(encoding="utf-8").replace("21,200", "21,300"), encoding="utf-8")
    (docs / PEEL).unlink()
    kb.build()
    entries = kb.summary_cache.entries()
    new_hash = {d.doc: d.content_hash for d in kb.documents()}[NEWS]
    assert {e["content_hash"] for e in entries} == {new_hash} != {old_hash}  # remade during the build
    again = kb.summary(NEWS)
    assert again.cached and "21,300" in " ".join(s.text for s in again.sentences)


# ---------------------------------------------------------------- the command line

@pytest.fixture
def cli(kb, embedder, monkeypatch):
    """Run `citebot` against the session index with the session's model (no second load)."""
    from bot.cli import main
    monkeypatch.setattr("index.kb.Embedder", lambda cfg: embedder)
    args = ["--docs", str(kb.cfg.docs_dir), "--index", str(kb.cfg.index_dir)]
    return lambda *rest: main([*args, *rest])


def test_cli_summary_and_timeline(cli, capsys, kb):
    assert cli("summary", "re-inspection", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"doc", "title", "date", "sentences"} and out["doc"] == REINSPECTION and out["date"] == "2018"
    assert all(set(s) == {"text", "location"} for s in out["sentences"])
    assert cli("summary", EFFECTIVENESS, "--sentences", "5") == 0
    text = capsys.readouterr().out
    assert " 1. " in text and " 5. " in text and " 6. " not in text and "(line" in text and "5 of" in text
    assert cli("timeline", "crime recording", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["topic"] == "crime recording" and out["entries"]
    assert all(set(e) == {"date", "doc", "title", "text", "location"} for e in out["entries"])
    assert out["entries"][-1]["date"] == "2018"  # the year-only date of the 2018 release, the newest


def test_terminal_formats(kb):
    from bot.cli_summary import format_summary, format_timeline, format_topic
    text = format_timeline(kb.timeline("crime recording"))
    assert text.index("2017-09-07") < text.index("\n2018        Leicestershire") and "[1] “" in text
    text = format_timeline(kb.timeline("inspection findings"))
    assert text.index("\n2018  ") < text.index("\nundated") and "2018-01-01" not in text
    text = format_topic(kb.topic_summary("domestic abuse"))
    assert "newest first" in text and " 1. " in text
    text = format_summary(kb.summary(REINSPECTION))
    assert text.startswith("Leicestershire Police’s crime-recording progress") and f"{REINSPECTION} · 2018\n" in text


def test_cli_bad_input(cli, capsys):
    assert cli("summary", "news") == 1
    assert "matches 2 documents" in capsys.readouterr().err
    assert cli("summary", "../config.toml") == 1
    assert "outside the docs folder" in capsys.readouterr().err
    assert cli("summary") == 1
    assert cli("summary", "news", "--topic", "x") == 1
    with pytest.raises(SystemExit):
        cli("summary", NEWS, "--sentences", "0")
