"""Answers a reader can check: answer-sentence choice, passages merged by place, fragments, the confidence cut
calibrated per index, and the answer measures of `citebot eval`."""

from __future__ import annotations

import numpy as np
import pytest

from index import answering, calibration
from index.answer import Passage
from index.evaluate import Question, _Outcome, answer_metrics, auroc, split_half
from index.search import is_fragment, join_fragments, merge_locations
from tests.conftest import make_config

# ---------------------------------------------------------------- measures


def test_auroc_counts_pairs_and_ties():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.7], [0.5]) == 0.75  # one win, one tie
    assert auroc([], [0.3]) is None


def test_halves_split_by_document():
    qs = [Question(f"q{i}", [f"doc{i % 4}.txt"], ["a"]) for i in range(12)] + [Question("off", [], [])] * 2
    halves = split_half(qs)
    docs = {h: {q.docs[0] for q in qs_ if q.docs} for h, qs_ in halves.items()}
    assert docs["a"] and docs["b"] and not docs["a"] & docs["b"]
    assert sum(len(v) for v in halves.values()) == len(qs)


def test_answer_metrics_rates():
    q = Question("q", ["d"], ["x"])
    outcomes = [_Outcome(q, doc_hit1=True, answer1=True, answer3=True, passage1=True, passage3=True, confident=True,
                         confidence=0.8),
                _Outcome(q, doc_hit1=True, answer3=True, passage3=True, confidence=0.4)]
    rejected = [_Outcome(Question("r", [], [], None, False), confidence=0.3)]
    m = answer_metrics(outcomes, rejected)
    assert (m["doc_hit@1"], m["answer@1"], m["answer@3"], m["passage_answer@1"], m["confident"]) == (1.0, 0.5, 1.0, 0.5, 0.5)
    assert m["rejected"] == 1.0 and m["auroc"] == 1.0


# ---------------------------------------------------------------- pieces of an answer


def test_fragments_are_joined_to_their_sentence():
    text = "He doubted the claim made there. Warner was right.) Later it was shown. and then more"
    spans = [(0, 32), (33, 51), (52, 71), (72, 85)]
    assert is_fragment("right.)") and is_fragment(") the rest of it") and not is_fragment("Later it was shown today.")
    assert is_fragment("Warner was right.)")  # three words: a piece of the sentence before
    assert join_fragments([(33, 51)], spans, text) == [(0, 51)]
    assert join_fragments([(72, 85)], spans, text) == [(52, 85)]  # a lower-case piece joins the sentence before
    assert join_fragments([(52, 71)], spans, text) == [(52, 85)]  # ... and a fragment after a chosen one joins it
    assert join_fragments([(0, 32)], spans, text) == [(0, 51)]


def test_highlights_that_are_not_adjacent_are_joined_with_an_ellipsis():
    text = "First sentence here. Second one. Third sentence there."
    p = Passage(1, "d.txt", "t", None, None, "", text, 0, len(text), answer_spans=[(0, 20), (33, 54)])
    assert p.answer_text == "First sentence here. … Third sentence there."
    p.answer_spans = [(0, 20), (21, 32)]
    assert p.answer_text == "First sentence here. Second one."


def test_locations_of_merged_passages():
    assert merge_locations("lines 38–43", "lines 41–50") == "lines 38–50"
    assert merge_locations("line 3", "lines 5–9") == "lines 3–9"
    assert merge_locations("p. 2, § Findings", "p. 3, § Findings") == "pp. 2–3, § Findings"
    assert merge_locations("§ A", "§ B") == "§ A, § B"


def test_a_title_line_is_never_the_answer():
    qp = answering.profile("what did the inspection of the force find", str.split,
                           lambda terms: np.ones(len(terms)))
    facts = [answering.facts("Inspection of the force"), answering.facts("It found that 76 per cent were recorded.")]
    terms = [frozenset("inspection of the force".split()), frozenset("it found that 76 per cent were recorded".split())]
    features = answering.sentence_features(qp, facts, terms, np.array([0.9, 0.3]), [True, False], 0.5, 1.0, 0)
    assert int(np.argmax(answering.score(features))) == 1
    assert answering.evidence(features)[0] < 0
    assert answering.is_title_line("Inspection of the force", 0, "Inspection of the force")
    assert not answering.is_title_line("Inspection of the force", 40, "Inspection of the force")


def test_question_types_reward_the_kind_of_answer_asked_for():
    qp = answering.profile("How many crimes went unrecorded?", str.split, lambda terms: np.ones(len(terms)))
    assert qp.kinds["number"] and not qp.kinds["person"]
    f = answering.sentence_features(qp, [answering.facts("Some crimes went unrecorded."),
                                         answering.facts("About 21,200 crimes went unrecorded.")],
                                    [frozenset({"crimes"}), frozenset({"crimes"})], np.array([0.5, 0.5]),
                                    [False, False], 0.5, 1.0, 0)
    assert answering.score(f)[1] > answering.score(f)[0]


def test_answers_merge_overlapping_passages_of_one_document(kb):
    """No two sources of an answer are overlapping or adjacent windows of one document."""
    for question in ("How many crimes were going unrecorded every year?", "What did the 2018 re-inspection find?",
                     "How many of the seven recommendations were carried out?", "Why were officers dismissed?"):
        answer = kb.ask(question, 5)
        for i, a in enumerate(answer.passages):
            for b in answer.passages[i + 1:]:
                if a.doc == b.doc:
                    assert b.start > a.end + 2 or a.start > b.end + 2, (question, a.location, b.location)


def test_the_top_answer_names_what_the_question_asks_for(kb):
    answer = kb.ask("How many of the seven recommendations were carried out?", 3)
    assert "four of the seven" in answer.passages[0].answer_text


def test_reread_columns_read_the_question_word_piece_by_word_piece():
    """Each of the question's word pieces takes its best cosine with one of the sentence's; the columns average
    that over all pieces, over content words only, and weighted by the corpus's IDF of each word."""
    question = "When was the queen born?"
    starts = np.array([0, 5, 9, 13, 19, 23])  # when / was / the / queen / born / ?
    vectors = np.eye(6)
    idf = {"queen": 3.0, "born": 1.0}
    q = answering.question_pieces(question, vectors, starts, lambda w: [w.lower()] if w.lower() in idf else [],
                                  lambda terms: np.array([idf[t] for t in terms]))
    assert q.content.tolist() == [False, False, False, True, True, False]  # function words and "?" are not
    assert q.weights["idf"].tolist() == [0, 0, 0, 0.75, 0.25, 0]
    sentence = vectors[[3, 5]]  # holds "queen" and "?" only
    cols = answering.reread_columns(q, sentence)
    assert cols[0] == pytest.approx(2 / 6)          # all: 2 of 6 pieces found
    assert cols[1] == pytest.approx(1 / 2)          # content: queen, not born
    assert cols[2] == pytest.approx(0.75) and cols[3] == pytest.approx(0.75)  # by IDF: queen weighs 3 of 4
    assert cols[4] == pytest.approx(0.5)            # the sentence's pieces against the content words: 1 and 0
    assert not answering.reread_columns(q, np.zeros((0, 6))).any()
    assert len(answering.REREAD_WEIGHTS) == len(answering.REREAD_COLUMNS)


# ---------------------------------------------------------------- calibration on a corpus of its own

BEES = """Beekeeping notes

A honey bee colony has one queen, a few hundred drones and tens of thousands of worker bees.
The queen lays up to two thousand eggs a day in spring, in cells the workers have cleaned.
Workers live about six weeks in summer; those raised in autumn live through the winter.
Varroa mites are the main threat to colonies; beekeepers count mites on a sticky board each month.
A colony swarms when it runs out of space: the old queen leaves with half the workers.
Honey is taken off in late summer, leaving the bees at least twenty kilograms for the winter.
"""


def test_generic_questions_are_not_confident_on_a_corpus_of_its_own(embedder, tmp_path):
    from index.kb import KnowledgeBase, UserError
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bees.txt").write_text(BEES)
    kb = KnowledgeBase(make_config(docs, tmp_path / "index"), embedder=embedder)
    report = kb.build()
    assert report.calibration is not None and "confidence cut" in report.summary_line()
    searcher = kb.searcher()
    cal = searcher.snap.calibration
    assert cal["threshold"] == pytest.approx(searcher.min_score)
    assert cal["threshold"] <= cal["pseudo"]["q10"]
    # generic questions that are not in the bank: none of them is answered by notes on bees
    for q in ("Who painted the ceiling of the Sistine Chapel?", "What is the capital of Australia?",
              "How do I reset my router password?", "clear", "hello"):
        assert not kb.ask(q, 3).confident, q
    with pytest.raises(UserError, match="in words"):  # no word at all: refused before any search
        kb.ask("???", 3)
    for q in ("How many eggs does the queen lay?", "What is the main threat to bee colonies?",
              "When is honey harvested?"):
        assert kb.ask(q, 3).confident, q
    # nothing changed: the next build keeps the calibration without asking again
    again = kb.build()
    assert again.calibration == report.calibration


def test_calibration_in_worker_processes_gives_the_same_cut(kb):
    """Calibrating asks its 550 questions in forked processes on a multi-core build machine: each score, so the
    cut and both distributions, is the one the build's own process finds; the workers read the snapshot
    through SQLite connections of their own."""
    import dataclasses
    import os
    from index.search import Searcher
    from index.store import Snapshot
    snap = Snapshot(kb.searcher().snap.path)
    try:
        searcher = Searcher(snap, kb.embedder, dataclasses.replace(kb.cfg.retrieval, min_score=0.0))
        alone = calibration.calibrate(searcher, workers=1)
        assert calibration.calibrate(searcher, workers=2) == alone
        questions = calibration.bank_questions()[:60]
        with calibration.Workers(searcher, 2) as scatter:
            assert searcher.evidence_many(questions, 3, scatter) == searcher.evidence_many(questions, 3)
            pids = set(scatter.pool._processes)
        assert len(pids) == 2 and os.getpid() not in pids
        assert searcher.evidence_many(questions[:3], 3)  # this process's own connection still works
    finally:
        snap.close()


def test_calibration_whose_workers_die_or_hang_is_done_in_the_builds_process(kb, monkeypatch, caplog):
    """A worker killed mid-way (out of memory, say) or hung does not fail or stop the build: the cut is
    calibrated here."""
    import dataclasses
    import os
    import time
    from index.search import Searcher
    from index.store import Snapshot
    snap = Snapshot(kb.searcher().snap.path)
    try:
        searcher = Searcher(snap, kb.embedder, dataclasses.replace(kb.cfg.retrieval, min_score=0.0))
        alone = calibration.calibrate(searcher, workers=1)
        parent, real = os.getpid(), Searcher.evidence_of
        monkeypatch.setattr(Searcher, "evidence_of",  # forked, a worker has this too: it dies at once
                            lambda self, jobs, k=3: real(self, jobs, k) if os.getpid() == parent else os._exit(1))
        assert calibration.calibrate(searcher, workers=2) == alone
        assert "calibrating in 2 worker processes failed" in caplog.text
        # a worker that hangs (a lock held at the fork, say) is given up on after WORKER_TIMEOUT, not waited for
        monkeypatch.setattr(calibration, "WORKER_TIMEOUT", 1)
        monkeypatch.setattr(Searcher, "evidence_of",
                            lambda self, jobs, k=3: real(self, jobs, k) if os.getpid() == parent else time.sleep(600))
        started = time.monotonic()
        assert calibration.calibrate(searcher, workers=2) == alone and time.monotonic() - started < 30
    finally:
        snap.close()


def test_bank_is_shipped_and_generic():
    bank = calibration.bank_questions()
    assert len(bank) >= 300 and len(set(bank)) == len(bank)
    assert not [q for q in bank if "leicestershire" in q.casefold() or "police" in q.casefold()]


def test_threshold_rule():
    bank = [0.1] * 60 + [0.2] * 20 + [0.3] * 20           # q70 = 0.2
    assert calibration.threshold(bank, [0.7] * 20) == pytest.approx(0.2 + 0.4 * (0.7 - 0.2))
    assert calibration.threshold([0.5] * 100, [0.4] * 20) == 0.4  # never above the corpus's own questions
    assert calibration.threshold(bank, []) == pytest.approx(0.3)  # too small for pseudo-questions: bank q98
    assert calibration.threshold([], [0.7]) == 0.0


@pytest.mark.parametrize("junk", ["clear", "hello", "thanks"])
def test_one_word_is_not_a_confident_question(kb, junk):
    """One word found in a sentence is weak evidence: a single word gets a third of the lexical share."""
    assert not kb.ask(junk, 3).confident


def test_changed_retrieval_settings_calibrate_again(embedder, tmp_path):
    from index.kb import KnowledgeBase
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bees.txt").write_text(BEES)
    first = KnowledgeBase(make_config(docs, tmp_path / "index"), embedder=embedder).build()
    other = KnowledgeBase(make_config(docs, tmp_path / "index", retrieval={"dense_weight": 0.9}), embedder=embedder)
    second = other.build()
    assert second.embedded == 0 and other.searcher().snap.calibration["settings"]["dense_weight"] == 0.9
    assert first.calibration is not None and second.calibration is not None


def test_the_scorer_can_be_refitted_from_a_question_file(kb):
    """The way WEIGHTS were made (RETRIEVAL.md): candidates and features per question, gold labels, fit_weights."""
    from index.evaluate import load_questions
    from tests.test_retrieval import DATA
    searcher = kb.searcher()
    groups = []
    for q in [q for q in load_questions(DATA / "questions.jsonl") if q.answerable][:12]:
        qvec, passages = searcher.candidates(q.question)
        xs, ys = [], []
        for p, (spans, features, _) in zip(passages, searcher.sentence_features(q.question, qvec, passages)):
            xs.extend(features)
            ys.extend(q.phrase.casefold() in p.text[s:e].casefold() for s, e in spans)
        groups.append((np.array(xs), np.array(ys, bool)))
    weights = answering.fit_weights(groups)
    assert weights.shape == answering.WEIGHTS.shape and np.isfinite(weights).all()
    found = [y[int(np.argmax(answering.score(x, weights)))] for x, y in groups if y.any()]
    assert sum(found) / len(found) >= 0.5  # on the questions it was fitted on
