"""Retrieval: question -> dense + BM25 rankings -> fusion -> near-duplicate collapse -> answer sentences ->
confidence -> `Answer`.

- Dense: cosine similarity of the question's vector with each chunk's (exact FAISS inner product).
- BM25: `index.bm25.KeywordIndex`, built from the same chunks; row i = chunk id i in both.
- Hybrid: each ranking contributes its best `retrieval.candidates` chunks; every chunk of that pool gets both
  scores exactly, and they are fused by a convex combination of min-max normalised scores (the default,
  measured best; see RETRIEVAL.md) or by reciprocal rank fusion.
- Near-duplicates (the same quotation in two outlets) are shown once: the strongest passage, with the
  documents of the others in `duplicates`.
- One source per place: chunks of one document that overlap or adjoin are merged into one passage.
- Answer sentences: every sentence of the pool is scored by `index.answering` (a fitted linear scorer over
  corpus-independent features); each passage highlights its best, and the passages are ordered by it. Sentence
  vectors are pooled at build time from the chunk's own token embeddings (in context, at no extra model cost)
  and read from the build, so choosing them costs no model run at question time.
- Confidence: the best sentence's evidence (cosine + a weighted share of the question's words) must reach the
  index's own cut, calibrated when it was built (`index.calibration`), or `retrieval.min_score` when set.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from index import answering
from index.answer import Answer, Passage
from index.chunking import split_sentences
from index.config import RetrievalConfig
from index.documents import date_from_iso, date_span
from index.embedding import Embedder
from index.store import Snapshot

MODES = ("dense", "bm25", "hybrid")
SHINGLE = 5              # words per shingle for near-duplicate detection
ANSWER_DUPLICATE = 0.8   # answer sentences sharing this share of shingles say the same thing
SENTENCE_CACHE = 20000   # chunks whose sentence vectors are kept in memory
RUNNER_UP = 1.0          # a second answer sentence is highlighted when its logit is within this of the best
MERGE_MAX = 3            # chunks merged into one passage at most
SCORED_PER_K = 2         # sentences are scored in the best 2k + 2 passages; the rest only fill k (by cosine)
MERGE_GAP = 2            # characters between two chunks of one document that still make them adjacent
LEGACY_MIN_SCORE = 0.29  # the confidence cut of an index built before calibration (measured on docs/ only)


class NoMatchingDocuments(ValueError):
    """The filters leave no document to search."""


class UnknownMode(ValueError):
    """A retrieval mode other than dense, bm25 or hybrid."""


@dataclass
class Filters:
    """Restrict a question to documents: `doc` is a path, glob or title; `after`/`before` bound the date."""
    doc: str | None = None
    after: dt.date | None = None
    before: dt.date | None = None

    def __bool__(self) -> bool:
        return bool(self.doc or self.after or self.before)

    def as_dict(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in vars(self).items() if v}


@dataclass
class Hit:
    """A chunk ranked for a question, with the scores that put it there."""
    chunk_id: int
    dense: float
    bm25: float
    fused: float

    @property
    def scores(self) -> dict[str, float]:
        return {"dense": self.dense, "bm25": self.bm25, "fused": self.fused}


# ---------------------------------------------------------------- fusion (pure functions)

def minmax(x: np.ndarray) -> np.ndarray:
    """Scores scaled to [0, 1] over the candidate pool; all 0 when they are all equal."""
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return x
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based rank of each score, highest first (ties broken by position)."""
    order = np.argsort(-np.asarray(x), kind="stable")
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(1, len(order) + 1)
    return out


def fuse_convex(dense: np.ndarray, bm25: np.ndarray, dense_weight: float) -> np.ndarray:
    """w * minmax(dense) + (1 - w) * minmax(bm25)."""
    return dense_weight * minmax(dense) + (1.0 - dense_weight) * minmax(bm25)


def fuse_rrf(dense: np.ndarray, bm25: np.ndarray, k: int = 60) -> np.ndarray:
    """Reciprocal rank fusion: 1/(k + rank_dense) + 1/(k + rank_bm25); a chunk BM25 does not match gets no
    BM25 term."""
    bm25 = np.asarray(bm25)
    return 1.0 / (k + ranks(dense)) + np.where(bm25 > 0, 1.0 / (k + ranks(bm25)), 0.0)


# ---------------------------------------------------------------- near-duplicates (pure functions)

_WORDS = re.compile(r"\w+")


def shingles(text: str, n: int = SHINGLE) -> frozenset[int]:
    """The word n-grams of `text` (case and punctuation ignored), each as its hash (comparable within one
    process; a third of the time of keeping the tuples); the words for texts shorter than n words."""
    words = _WORDS.findall(text.casefold())
    if len(words) < n:
        return frozenset(hash((w,)) for w in words)
    return frozenset(map(hash, zip(*(words[i:] for i in range(n)))))


def overlap(a: frozenset, b: frozenset) -> float:
    """Share of the smaller set found in the other (the overlap coefficient): 1.0 when one contains the other."""
    if not a or not b or a.isdisjoint(b):  # (most pairs: no set made for them)
        return 0.0
    return len(a & b) / min(len(a), len(b))


def collapse_duplicates(passages: list[Passage], threshold: float, cache: dict | None = None) -> list[Passage]:
    """Passages in order with near-duplicates folded into the first (strongest) of their group.

    Two passages are near-duplicates when `threshold` of the shorter one's word 5-grams occur in the other, or
    when their answer sentences are nearly the same (so no two passages of an answer say the same thing).
    The folded passage's document goes into `duplicates` (unless it is the keeper's own document) and its
    chunk id into `duplicate_ids`. `cache` (a dict kept for one question) saves computing a passage's 5-grams
    again when its passages are folded more than once.
    """
    cache = {} if cache is None else cache
    kept: list[tuple[Passage, frozenset, frozenset]] = []
    for p in passages:
        where = (p.chunk_id, p.start, p.end)  # a merged passage is another text than its first chunk
        key = (*where, tuple(p.answer_spans))
        if key not in cache:
            sh = cache[where] if where in cache else shingles(p.text)
            cache[where] = sh
            cache[key] = (sh, shingles(p.answer_text) if p.answer_spans else frozenset())
        sh, ans = cache[key]
        for keeper, ksh, kans in kept:
            if overlap(sh, ksh) >= threshold or (ans and kans and overlap(ans, kans) >= ANSWER_DUPLICATE):
                keeper.duplicate_ids.extend([p.chunk_id, *p.duplicate_ids])
                for doc in (p.doc, *p.duplicates):
                    if doc != keeper.doc and doc not in keeper.duplicates:
                        keeper.duplicates.append(doc)
                break
        else:
            kept.append((p, sh, ans))
    return [p for p, _, _ in kept]


# ---------------------------------------------------------------- the searcher

class Searcher:
    """Answers questions from one published build (a `Snapshot`) with one embedding model."""

    def __init__(self, snapshot: Snapshot, embedder: Embedder, cfg: RetrievalConfig):
        self.snap = snapshot
        self.embedder = embedder
        self.cfg = cfg
        self.docs = snapshot.documents()
        # chunk id -> (sentence spans, their vectors, their analysed words and facts: None until a question needs them)
        self._sentences: OrderedDict[int, tuple[list[tuple[int, int]], np.ndarray, list[frozenset | None],
                                                list[answering.SentenceFacts | None]]] = OrderedDict()
        self._shingles: OrderedDict[int, frozenset[int]] = OrderedDict()  # chunk id -> its word 5-grams
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------ filters
    def allowed_doc_ids(self, filters: Filters) -> list[int] | None:
        """Ids of the documents the filters admit (None: no filter).

        `doc` matches, in this order: the exact path, a glob on the path (also below any folder), the same
        case-insensitively, then the title (case-insensitive). Dates are inclusive; an undated document is
        excluded by any date bound, and a year-only date counts as that whole year.
        """
        if not filters:
            return None
        docs = self.docs
        if filters.doc:
            raw = filters.doc.strip()
            pattern = raw.removeprefix("./")
            by_name = [d for d in docs if d.doc == pattern or fnmatch.fnmatchcase(d.doc, pattern)
                       or fnmatch.fnmatchcase(d.doc, f"*/{pattern}")]
            if not by_name:
                low = pattern.casefold()
                by_name = [d for d in docs if fnmatch.fnmatchcase(d.doc.casefold(), low)
                           or fnmatch.fnmatchcase(d.doc.casefold(), f"*/{low}")]
            docs = by_name or [d for d in docs if d.title.casefold() == raw.casefold()]
            if not docs:
                raise NoMatchingDocuments(f"no indexed document matches '{filters.doc}'")
        # a date known only to its year stands for the whole year: after 2018-06-01 and before it both admit 2018
        if filters.after:
            docs = [d for d in docs if d.date and date_span(d.date)[1] >= filters.after]
        if filters.before:
            docs = [d for d in docs if d.date and date_span(d.date)[0] <= filters.before]
        if not docs:
            raise NoMatchingDocuments("no indexed document is dated in that range"
                                      + (f" among those matching '{filters.doc}'" if filters.doc else ""))
        return [d.id for d in docs]

    def chunk_doc_ids(self) -> np.ndarray:
        """Document id of every chunk, indexed by chunk id."""
        return self.snap.chunk_doc_ids()

    def _chunk_mask(self, doc_ids: list[int] | None) -> np.ndarray | None:
        if doc_ids is None:
            return None
        return np.isin(self.chunk_doc_ids(), np.asarray(doc_ids, dtype=np.int64))

    # ------------------------------------------------------------ rankings
    def dense(self, qvec: np.ndarray, k: int, doc_ids: list[int] | None) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the `k` nearest chunks, within `doc_ids` if given (searched by the store)."""
        return self.snap.dense(qvec, k, doc_ids)

    def keyword(self, question: str, k: int, doc_ids: list[int] | None) -> tuple[list[tuple[int, float]], np.ndarray]:
        """(chunk id, BM25) of the `k` best chunks with a positive score, within `doc_ids`; and all scores."""
        scores = self.snap.keyword.scores(question)
        mask = self._chunk_mask(doc_ids)
        allowed = scores if mask is None else np.where(mask, scores, 0.0)
        positive = np.flatnonzero(allowed > 0)
        if len(positive) > k:
            positive = positive[np.argpartition(-allowed[positive], k - 1)[:k]]
        best = positive[np.argsort(-allowed[positive], kind="stable")]
        return [(int(i), float(scores[i])) for i in best], scores

    def rank(self, question: str, mode: str | None = None, depth: int | None = None,
             doc_ids: list[int] | None = None, qvec: np.ndarray | None = None,
             nearest: list[tuple[int, float]] | None = None) -> list[Hit]:
        """Chunks for `question`, best first, each with its dense, BM25 and fused score.

        Each ranking the mode uses contributes its `depth` best chunks; both scores are computed exactly for
        every chunk of that pool, so fusion never has to guess a missing score. `nearest`: the dense ranking
        already found (at least `depth` deep, no filter; `evidence_many`).
        """
        mode = mode or self.cfg.mode
        if mode not in MODES:
            raise UnknownMode(f"unknown retrieval mode '{mode}'; expected one of {', '.join(MODES)}")
        depth = depth or self.cfg.candidates
        if self.snap.size == 0:
            return []
        if qvec is None:
            qvec = self.embedder.encode_query(question)
        pool: set[int] = set()
        if mode in ("dense", "hybrid"):
            found = nearest[:depth] if nearest is not None and doc_ids is None else self.dense(qvec, depth, doc_ids)
            pool.update(i for i, _ in found)
        keyword_hits, bm25_all = self.keyword(question, depth, doc_ids)
        if mode in ("bm25", "hybrid"):
            pool.update(i for i, _ in keyword_hits)
        if not pool:
            return []
        ids = np.fromiter(sorted(pool), dtype=np.int64)
        dense = self.snap.vectors(ids) @ qvec.astype(np.float32)
        bm25 = bm25_all[ids].astype(np.float64)
        if mode == "dense":
            fused = dense.astype(np.float64)
        elif mode == "bm25":
            fused = bm25
        elif self.cfg.fusion == "rrf":
            fused = fuse_rrf(dense, bm25, self.cfg.rrf_k)
        else:
            fused = fuse_convex(dense, bm25, self.cfg.dense_weight)
        # ties (e.g. equal BM25) are broken by the dense score, then by chunk id
        order = np.lexsort((ids, -dense, -fused))
        return [Hit(int(ids[j]), float(dense[j]), float(bm25[j]), float(fused[j])) for j in order]

    # ------------------------------------------------------------ the answer
    @property
    def min_score(self) -> float:
        """The confidence cut in force: `retrieval.min_score` when set above 0 (an override), else this index's
        own, calibrated when it was built (`index.calibration`), else the legacy constant."""
        if self.cfg.min_score > 0:
            return float(self.cfg.min_score)
        calibrated = (self.snap.calibration or {}).get("threshold")
        return float(calibrated) if calibrated is not None else LEGACY_MIN_SCORE

    def search(self, question: str, k: int | None = None, filters: Filters | None = None,
               mode: str | None = None, qvec: np.ndarray | None = None,
               nearest: list[tuple[int, float]] | None = None, reread: bool = True) -> Answer:
        """The best `k` passages for `question`, each with its answer sentence(s) highlighted; confident only
        if the evidence clears this index's confidence cut (`min_score`).

        The retrieved pool (3k + 5 chunks) is folded (near-identical texts in two documents shown once) and
        merged (overlapping or adjacent chunks of one document become one passage, so sources are different
        places); the sentences of the best 2k + 2 passages are scored (`index.answering`) and the passages are
        ordered by their best sentence, so source [1] holds the sentence most likely to answer."""
        started = time.perf_counter()
        k = k or self.cfg.top_k
        mode = mode or self.cfg.mode
        filters = filters or Filters()
        doc_ids = self.allowed_doc_ids(filters)
        if qvec is None:
            qvec = self.embedder.encode_query(question)
        hits = self.rank(question, mode, max(self.cfg.candidates, 3 * k), doc_ids, qvec, nearest)
        folded: dict = {}
        passages = self._passages(hits[: 3 * k + 5], folded)  # enough to fill k after folding and merging
        scored = passages[: SCORED_PER_K * k + 2]
        candidates = self.pick_answer_sentences(question, qvec, scored)
        self.pick_by_cosine(qvec, passages[SCORED_PER_K * k + 2:])
        passages.sort(key=lambda p: -p.scores["answer"])  # measured: better than adding the fused score
        # fold again on the answer sentences themselves: no two sources say the same thing
        passages = collapse_duplicates(passages, self.cfg.duplicate_threshold, folded)
        # confidence over the sources as the scorer ordered them, as calibration measured it
        confident = self.confidence(passages[:k]) >= self.min_score
        first = self.reread(question, candidates) if reread else None
        if first is not None and any(p is first for p in passages):  # (not when folded into another source)
            passages.remove(first)  # a close call settled by reading word piece by word piece: its passage leads
            passages.insert(0, first)
        passages = passages[:k]
        for p in passages:
            p.scores.pop("rank", None)
        return Answer(question, passages, confident, (time.perf_counter() - started) * 1000, mode=mode,
                      filters=filters.as_dict())

    def evidence(self, question: str, qvec: np.ndarray, k: int = 3,
                 nearest: list[tuple[int, float]] | None = None) -> float:
        """The confidence score of `question` (its vector given) over the whole index: for calibration (which
        re-reads no close call: that changes which sentence leads, not the confidence score)."""
        return self.confidence(self.search(question, k, qvec=qvec, nearest=nearest, reread=False).passages)

    def evidence_many(self, questions: Sequence[str], k: int = 3, scatter: Callable | None = None) -> list[float]:
        """`evidence` of many questions, embedded in one batch and their nearest chunks found in one search;
        `scatter(jobs, k)`, if given, computes the evidence of the (question, vector, nearest chunks) triples
        in their order elsewhere (calibration's worker processes: `index.calibration.Workers`)."""
        if not questions:
            return []
        vectors = self.embedder.encode(list(questions))
        nearest = self.snap.dense_many(vectors, max(self.cfg.candidates, 3 * k))
        jobs = list(zip(questions, vectors, nearest))
        return scatter(jobs, k) if scatter is not None else self.evidence_of(jobs, k)

    def evidence_of(self, jobs: Sequence[tuple[str, np.ndarray, list[tuple[int, float]]]], k: int = 3) -> list[float]:
        """`evidence` of each (question, its vector, its nearest chunks) triple, in order."""
        return [self.evidence(q, v, k, found) for q, v, found in jobs]

    @staticmethod
    def confidence(passages: list[Passage]) -> float:
        """The evidence score compared with the confidence cut: the best sentence's cosine with the question plus
        0.2 x the share of the question's words it holds, among the passages."""
        return max((p.scores.get("sentence", 0.0) for p in passages), default=0.0)

    # ------------------------------------------------------------ passages of one document merged
    def merge_neighbours(self, passages: list[Passage], doc_of: dict[int, int]) -> list[Passage]:
        """Passages in order, with each chunk that overlaps or adjoins a better-ranked passage of the same
        document merged into it (one citation for the union of their text and lines, at most MERGE_MAX chunks;
        a further window beside a passage that long is left out). A chunk that bridges two passages joins them."""
        kept: list[Passage] = []
        for p in passages:
            p.parts = [(p.chunk_id, p.start, p.end)]
            touching = [q for q in kept if q.doc == p.doc and self._touch(p, q)]
            if not touching:
                kept.append(p)
                continue
            into = touching[0]
            if len(into.parts) >= MERGE_MAX:
                continue  # a window beside a passage already as long as it may get: not another source
            self._absorb(into, p, doc_of[p.chunk_id])
            for q in touching[1:]:  # a bridge: the passages on both sides become one
                if self._touch(into, q):  # even past MERGE_MAX: two sources must not be neighbours
                    self._absorb(into, q, doc_of[p.chunk_id])
                    kept.remove(q)
        return kept

    @staticmethod
    def _touch(a: Passage, b: Passage) -> bool:
        return a.start <= b.end + MERGE_GAP and b.start <= a.end + MERGE_GAP

    def _absorb(self, into: Passage, p: Passage, doc_id: int) -> None:
        """Merge passage `p` (of the same document, overlapping or adjoining) into `into`."""
        if p.end > into.end:
            gap = self.snap.document_slice(doc_id, into.end, p.start) if p.start > into.end else ""
            into.text += gap + p.text[max(0, into.end - p.start):]
            into.end = p.end
        if p.start < into.start:
            if into.start > p.end:
                into.text = p.text + self.snap.document_slice(doc_id, p.end, into.start) + into.text
            else:
                into.text = p.text[: into.start - p.start] + into.text
            into.start = p.start
        into.parts.extend(p.parts)
        into.location = merge_locations(into.location, p.location)
        into.duplicate_ids.extend(p.duplicate_ids)
        for d in p.duplicates:
            if d not in into.duplicates and d != into.doc:
                into.duplicates.append(d)

    # ------------------------------------------------------------ answer sentences
    def _sentence_data(self, passages: list[Passage]) -> list[tuple[list[tuple[int, int]], np.ndarray, list, list]]:
        """Per chunk of `passages` (by chunk id): sentence spans, their unit vectors and their analysed words
        (cached by chunk id; words filled in by `_sentence_terms` when a question first needs them).

        The vectors were pooled at build time (`Embedder.encode_passages`), so this reads them; a build made
        before they were stored gets its sentences embedded here, once per chunk."""
        with self._cache_lock:
            missing = [p for p in passages if p.chunk_id not in self._sentences]
        if missing:
            found = self.snap.sentences([p.chunk_id for p in missing])
            unstored = [p for p in missing if p.chunk_id not in found]
            if unstored:
                spans = {p.chunk_id: split_sentences(p.text) for p in unstored}
                texts = [p.text[s:e] for p in unstored for s, e in spans[p.chunk_id]]
                vectors = self.embedder.encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
                pos = 0
                for p in unstored:
                    n = len(spans[p.chunk_id])
                    found[p.chunk_id] = (spans[p.chunk_id], vectors[pos:pos + n])
                    pos += n
            with self._cache_lock:
                for p in missing:
                    sp, vecs = found[p.chunk_id]
                    self._sentences[p.chunk_id] = (sp, vecs, [None] * len(sp), [None] * len(sp))
                while len(self._sentences) > SENTENCE_CACHE:
                    self._sentences.popitem(last=False)
        with self._cache_lock:
            out = []
            for p in passages:
                data = self._sentences[p.chunk_id]
                self._sentences.move_to_end(p.chunk_id)
                out.append(data)
            return out

    def passage_sentences(self, p: Passage, analyse: bool = True) -> tuple[list[tuple[int, int]], np.ndarray, list[frozenset],
                                                     list[answering.SentenceFacts]]:
        """The sentences of a (possibly merged) passage as spans into its text, their vectors, analysed words and
        facts (`index.answering.facts`); a sentence repeated by overlapping chunks appears once."""
        parts = p.parts or [(p.chunk_id, p.start, p.end)]
        # each merged chunk's text is a slice of the merged text (chunks are verbatim slices of the document)
        stand_ins = [Passage(cid, p.doc, "", None, None, "", p.text[start - p.start:end - p.start], start, end)
                     for cid, start, end in parts]
        spans, vectors, terms, facts, seen = [], [], [], [], set()
        analyzer = self.snap.keyword.analyzer
        for q, (sp, vecs, words, known) in zip(stand_ins, self._sentence_data(stand_ins)):
            shift = q.start - p.start
            for i, (s, e) in enumerate(sp):
                if s + shift in seen or not 0 <= s + shift < e + shift <= len(p.text):
                    continue
                seen.add(s + shift)
                if words[i] is None and analyse:
                    words[i] = frozenset(analyzer(q.text[s:e]))
                    known[i] = answering.facts(q.text[s:e])
                spans.append((s + shift, e + shift))
                vectors.append(vecs[i])
                terms.append(words[i])
                facts.append(known[i])
        order = sorted(range(len(spans)), key=lambda j: spans[j])
        dim = self.snap.index.d
        return ([spans[j] for j in order], np.array([vectors[j] for j in order], dtype=np.float32).reshape(-1, dim),
                [terms[j] for j in order], [facts[j] for j in order])

    def sentence_scores(self, question: str, qvec: np.ndarray, vectors: np.ndarray,
                        terms: Sequence[frozenset]) -> np.ndarray:
        """Evidence of sentences given their vectors and analysed words: cosine with the question plus 0.2 x the
        share of the question's words each holds (summaries and timelines rank sentences by it)."""
        cos = vectors @ qvec if len(vectors) else np.zeros(0)
        qterms = frozenset(self.snap.keyword.analyzer(question))
        if not qterms:
            return cos
        share = np.array([len(qterms & t) / len(qterms) for t in terms]) if len(terms) else np.zeros(0)
        return cos + self.cfg.sentence_lexical_weight * share

    def question_profile(self, question: str) -> answering.QuestionProfile:
        keyword = self.snap.keyword
        return answering.profile(question, keyword.analyzer, keyword.idf)

    def sentence_features(self, question: str, qvec: np.ndarray, passages: list[Passage]
                          ) -> list[tuple[list[tuple[int, int]], np.ndarray, list[bool]]]:
        """Per passage: its sentence spans, their feature matrix (`index.answering.FEATURES`) and which are title
        lines."""
        qp = self.question_profile(question)
        top_bm25 = max((p.scores.get("bm25", 0.0) for p in passages), default=0.0) or 1.0
        out = []
        for p in passages:
            spans, vectors, terms, facts = self.passage_sentences(p)
            titles = [p.start + s == 0 and answering.is_title_line(p.text[s:e], 0, p.title) for s, e in spans]
            features = answering.sentence_features(qp, facts, terms, vectors @ qvec if spans else np.zeros(0), titles,
                                                   p.scores.get("dense", 0.0), p.scores.get("bm25", 0.0) / top_bm25,
                                                   p.scores.get("rank", 0))
            out.append((spans, features, titles))
        return out

    def pick_answer_sentences(self, question: str, qvec: np.ndarray, passages: list[Passage]
                              ) -> list[tuple[float, Passage, int, list[tuple[int, int]]]]:
        """Score every sentence of `passages` (`index.answering`) and mark in each its best sentence, and the
        runner-up when it scores nearly as well; a fragment is joined to the sentence it belongs to. Sets the
        passage's scores "answer" (the scorer's best logit) and "sentence" (its best evidence: cosine + 0.2 x
        the share of the question's words). Returns every sentence that could be the answer (not a title line)
        as (logit, passage, its index, the passage's sentence spans), best first, for `reread`."""
        terms = len(set(self.snap.keyword.analyzer(question)))
        candidates = []
        for p, (spans, features, titles) in zip(passages, self.sentence_features(question, qvec, passages)):
            if not spans:
                p.answer_spans, p.scores["answer"], p.scores["sentence"] = [], -1e9, 0.0
                continue
            logit = answering.score(features)
            candidates.extend((float(logit[i]), p, i, spans) for i in range(len(spans)) if not titles[i])
            order = np.argsort(-logit, kind="stable")
            chosen = [int(order[0])]
            if (self.cfg.answer_sentences > 1 and len(order) > 1 and not titles[order[1]]
                    and logit[order[1]] >= logit[order[0]] - RUNNER_UP):
                chosen.append(int(order[1]))
            p.answer_spans = join_fragments(sorted(spans[i] for i in chosen), spans, p.text)
            p.scores["answer"] = float(logit[order[0]])
            p.scores["sentence"] = float(answering.evidence(features, self.cfg.sentence_lexical_weight, terms).max())
        candidates.sort(key=lambda c: -c[0])
        return candidates

    def reread_features(self, question: str, top: list[tuple[float, Passage, int, list[tuple[int, int]]]]
                        ) -> np.ndarray:
        """`answering.REREAD_COLUMNS` of candidate sentences (from `pick_answer_sentences`), from one run of the
        model over the question and the sentences, each read alone."""
        texts = [p.text[slice(*spans[i])] for _, p, i, spans in top]
        pieces = self.embedder.word_pieces([question, *texts])
        keyword = self.snap.keyword
        q = answering.question_pieces(question, *pieces[0], keyword.analyzer, keyword.idf)
        return np.array([[logit, *answering.reread_columns(q, vectors)]
                         for (logit, *_), (vectors, _) in zip(top, pieces[1:])])

    def reread(self, question: str, candidates: list[tuple[float, Passage, int, list[tuple[int, int]]]]
               ) -> Passage | None:
        """A close call settled by reading again (`index.answering`, "re-reading close calls"): when the best two
        candidate sentences are within REREAD_MARGIN, the best `retrieval.reread` of them and the question go
        through the model in one run and are scored again from their word pieces (MaxSim). The winner becomes
        its passage's highlight (with a re-read sentence of the same passage whose first logit is within
        RUNNER_UP of the winner's, as in `pick_answer_sentences`); returns that passage, or None when nothing was
        re-read or the scorer's own choice stands. One run of the model over the question and up to `reread`
        sentences (measured in RETRIEVAL.md). The confidence score does not depend on it (`search`)."""
        n = self.cfg.reread
        if n < 2 or len(candidates) < 2 or candidates[0][0] - candidates[1][0] >= answering.REREAD_MARGIN:
            return None
        top = candidates[:n]
        z = self.reread_features(question, top) @ answering.REREAD_WEIGHTS
        best = int(np.argmax(z))
        if best == 0:
            return None
        logit, p, i, spans = top[best]
        chosen = [spans[i]]
        if self.cfg.answer_sentences > 1:
            close = [(z[k], top[k][2]) for k in range(len(top))
                     if k != best and top[k][1] is p and top[k][0] >= logit - RUNNER_UP]
            if close:
                chosen.append(spans[max(close)[1]])
        p.answer_spans = join_fragments(sorted(chosen), spans, p.text)
        p.scores["reread"] = float(z[best])
        return p

    def pick_by_cosine(self, qvec: np.ndarray, passages: list[Passage]) -> None:
        """The passages past the scored ones (there to fill k when folding leaves too few): each highlights its
        sentence nearest the question, and they rank after every scored passage."""
        for p in passages:
            spans, vectors, _, _ = self.passage_sentences(p, analyse=False)
            if not spans:
                p.answer_spans, p.scores["answer"], p.scores["sentence"] = [], -1e9, 0.0
                continue
            cos = vectors @ qvec
            best = int(np.argmax(cos))
            p.answer_spans = [spans[best]]
            p.scores["answer"] = -1e6 + float(cos[best])
            p.scores["sentence"] = float(cos[best])

    def candidates(self, question: str, k: int | None = None, mode: str | None = None) -> tuple[np.ndarray, list[Passage]]:
        """The question's vector and its folded and merged passages before answer sentences are chosen (what
        `search` scores; for fitting the scorer)."""
        k = k or self.cfg.top_k
        qvec = self.embedder.encode_query(question)
        hits = self.rank(question, mode or self.cfg.mode, max(self.cfg.candidates, 3 * k), None, qvec)
        return qvec, self._passages(hits[: 3 * k + 5])

    def _passages(self, pool: list[Hit], folded: dict | None = None) -> list[Passage]:
        rows = self.snap.chunks([h.chunk_id for h in pool])
        passages = []
        for rank, h in enumerate(pool):
            r = rows[h.chunk_id]
            passages.append(Passage(
                chunk_id=h.chunk_id, doc=r["doc"], title=r["title"],
                date=date_from_iso(r["date"]), url=r["url"],
                location=r["location"], text=r["text"], start=r["start"], end=r["end"],
                scores={**h.scores, "rank": rank}))
        folded = {} if folded is None else folded
        for p in passages:  # a chunk's 5-grams are the same for every question: kept across questions
            folded[(p.chunk_id, p.start, p.end)] = self._chunk_shingles(p.chunk_id, p.text)
        passages = collapse_duplicates(passages, self.cfg.duplicate_threshold, folded)
        merged = self.merge_neighbours(passages, {h.chunk_id: rows[h.chunk_id]["doc_id"] for h in pool})
        for p in merged:
            if len(p.parts) > 1:  # the union of its chunks' 5-grams (those across a seam are too few to matter)
                folded[(p.chunk_id, p.start, p.end)] = frozenset().union(
                    *(self._chunk_shingles(cid, p.text[a - p.start:b - p.start]) for cid, a, b in p.parts))
        return merged

    def _chunk_shingles(self, chunk_id: int, text: str) -> frozenset[int]:
        with self._cache_lock:
            found = self._shingles.get(chunk_id)
            if found is not None:
                self._shingles.move_to_end(chunk_id)
                return found
        found = shingles(text)
        with self._cache_lock:
            self._shingles[chunk_id] = found
            while len(self._shingles) > SENTENCE_CACHE:
                self._shingles.popitem(last=False)
        return found


def join_fragments(chosen: list[tuple[int, int]], spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """Chosen sentence spans with each fragment ("Warner was right.)", a clause the segmenter cut off) joined
    to the sentence before it, and a fragment that follows a chosen sentence joined to it."""
    index = {s: i for i, s in enumerate(spans)}
    out = []
    for span in chosen:
        s, e = span
        i = index.get(span)
        if i is not None:
            if i > 0 and is_fragment(text[s:e]):
                s = spans[i - 1][0]
            if i + 1 < len(spans) and is_fragment(text[slice(*spans[i + 1])]):
                e = spans[i + 1][1]
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


_FRAGMENT_START = re.compile(r"^\s*[a-z)\]}”’\"',;:.]")


def is_fragment(sentence: str) -> bool:
    """A piece of a sentence rather than a sentence: under four words, or starting in lower case or with
    closing punctuation."""
    return len(_WORDS.findall(sentence)) < 4 or bool(_FRAGMENT_START.match(sentence))


_LOCATION_PART = re.compile(r"^(?:(?P<page>pp?\. (?P<p1>\d+)(?:–(?P<p2>\d+))?)|(?P<lines>lines? (?P<l1>\d+)(?:–(?P<l2>\d+))?)"
                            r"|(?P<chars>chars (?P<c1>\d+)–(?P<c2>\d+))|(?P<section>§ .*))$")


def merge_locations(a: str, b: str) -> str:
    """The location of two merged passages: pages and lines as one range, sections listed once each."""
    pages, lines, chars, sections = [], [], [], []
    for loc in (a, b):
        for part in loc.split(", "):
            m = _LOCATION_PART.match(part)
            if m is None or m["section"]:
                if part not in sections:
                    sections.append(part)
            elif m["page"]:
                pages += [int(m["p1"]), int(m["p2"] or m["p1"])]
            elif m["lines"]:
                lines += [int(m["l1"]), int(m["l2"] or m["l1"])]
            else:
                chars += [int(m["c1"]), int(m["c2"])]
    out = []
    if pages:
        out.append(f"p. {min(pages)}" if min(pages) == max(pages) else f"pp. {min(pages)}–{max(pages)}")
    out += sections
    if lines:
        out.append(f"line {min(lines)}" if min(lines) == max(lines) else f"lines {min(lines)}–{max(lines)}")
    if chars and not (pages or lines or sections):
        out.append(f"chars {min(chars)}–{max(chars)}")
    return ", ".join(out)
