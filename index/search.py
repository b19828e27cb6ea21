"""Retrieval: question -> dense + BM25 rankings -> fusion -> near-duplicate collapse -> answer sentences ->
confidence -> `Answer`.

- Dense: cosine similarity of the question's vector with each chunk's (exact FAISS inner product).
- BM25: `index.bm25.KeywordIndex`, built from the same chunks; row i = chunk id i in both.
- Hybrid: each ranking contributes its best `retrieval.candidates` chunks; every chunk of that pool gets both
  scores exactly, and they are fused by a convex combination of min-max normalised scores (the default,
  measured best; see RETRIEVAL.md) or by reciprocal rank fusion.
- Near-duplicates (the same quotation in two outlets) are shown once: the strongest passage, with the
  documents of the others in `duplicates`.
- Answer sentences: in each passage, the sentence(s) scoring best on cosine with the question plus a weighted
  share of the question's words they contain. Sentence vectors are pooled at build time from the chunk's own
  token embeddings (in context, at no extra model cost) and read from the build, so choosing them costs
  no model run at question time.
- Confidence: the best answer sentence's score among the returned passages must reach `retrieval.min_score`
  (calibrated on the team's question set against off-topic questions; see RETRIEVAL.md).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

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
RUNNER_UP = 0.05         # a second answer sentence is highlighted when it scores within this of the best


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
    if not a or not b:
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
        key = (p.chunk_id, tuple(p.answer_spans))
        if key not in cache:
            sh = cache[p.chunk_id] if p.chunk_id in cache else shingles(p.text)
            cache[p.chunk_id] = sh
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
        self._chunk_docs: np.ndarray | None = None
        # chunk id -> (sentence spans, their vectors, their analysed words: None until a question needs them)
        self._sentences: OrderedDict[int, tuple[list[tuple[int, int]], np.ndarray, list[frozenset | None]]] = OrderedDict()
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
        if self._chunk_docs is None:
            rows = self.snap.query("SELECT id, doc_id FROM chunks ORDER BY id")
            out = np.full(self.snap.size, -1, dtype=np.int64)
            for r in rows:
                out[r["id"]] = r["doc_id"]
            self._chunk_docs = out
        return self._chunk_docs

    def _chunk_mask(self, doc_ids: list[int] | None) -> np.ndarray | None:
        if doc_ids is None:
            return None
        return np.isin(self.chunk_doc_ids(), np.asarray(doc_ids, dtype=np.int64))

    # ------------------------------------------------------------ rankings
    def dense(self, qvec: np.ndarray, k: int, doc_ids: list[int] | None) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the `k` nearest chunks, within `doc_ids` if given."""
        import faiss
        k = min(k, self.snap.size)
        if k <= 0:
            return []
        params = None
        if doc_ids is not None:
            ids = np.flatnonzero(self._chunk_mask(doc_ids)).astype(np.int64)
            if not len(ids):
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))
            k = min(k, len(ids))
        scores, ids = self.snap.index.search(qvec.reshape(1, -1).astype(np.float32), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

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
             doc_ids: list[int] | None = None, qvec: np.ndarray | None = None) -> list[Hit]:
        """Chunks for `question`, best first, each with its dense, BM25 and fused score.

        Each ranking the mode uses contributes its `depth` best chunks; both scores are computed exactly for
        every chunk of that pool, so fusion never has to guess a missing score.
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
            pool.update(i for i, _ in self.dense(qvec, depth, doc_ids))
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
    def search(self, question: str, k: int | None = None, filters: Filters | None = None,
               mode: str | None = None) -> Answer:
        """The best `k` passages for `question` (near-duplicates folded), each with answer sentence spans;
        confident only if the evidence clears `retrieval.min_score`."""
        started = time.perf_counter()
        k = k or self.cfg.top_k
        mode = mode or self.cfg.mode
        filters = filters or Filters()
        doc_ids = self.allowed_doc_ids(filters)
        qvec = self.embedder.encode_query(question)
        hits = self.rank(question, mode, max(self.cfg.candidates, 3 * k), doc_ids, qvec)
        pool = hits[: 3 * k + 5]  # enough to fill k after folding near-duplicates
        rows = self.snap.chunks([h.chunk_id for h in pool])
        passages = []
        for h in pool:
            r = rows[h.chunk_id]
            passages.append(Passage(
                chunk_id=h.chunk_id, doc=r["doc"], title=r["title"],
                date=date_from_iso(r["date"]), url=r["url"],
                location=r["location"], text=r["text"], start=r["start"], end=r["end"],
                scores=h.scores))
        # Fold near-identical texts first (cheap), so answer sentences are embedded only for passages that
        # can be shown; then fold again on the answer sentences themselves.
        folded: dict = {}
        passages = collapse_duplicates(passages, self.cfg.duplicate_threshold, folded)
        shown: list[Passage] = []
        while passages and len(shown) < k:
            batch, passages = passages[: k - len(shown) + 1], passages[k - len(shown) + 1:]
            self.pick_answer_sentences(question, qvec, batch)
            shown = collapse_duplicates(shown + batch, self.cfg.duplicate_threshold, folded)
        passages = shown[:k]
        confident = self.confidence(passages) >= self.cfg.min_score
        return Answer(question, passages, confident, (time.perf_counter() - started) * 1000, mode=mode,
                      filters=filters.as_dict())

    @staticmethod
    def confidence(passages: list[Passage]) -> float:
        """The evidence score compared with `retrieval.min_score`: the best answer sentence's score (cosine with
        the question plus the weighted share of its words) among the passages."""
        return max((p.scores.get("sentence", 0.0) for p in passages), default=0.0)

    # ------------------------------------------------------------ answer sentences
    def _sentence_data(self, passages: list[Passage]) -> list[tuple[list[tuple[int, int]], np.ndarray, list[frozenset | None]]]:
        """Per passage: sentence spans, their unit vectors and their analysed words (cached by chunk id; the
        words of a sentence are filled in by `_sentence_terms` when a question first needs them).

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
                    self._sentences[p.chunk_id] = (sp, vecs, [None] * len(sp))
                while len(self._sentences) > SENTENCE_CACHE:
                    self._sentences.popitem(last=False)
        with self._cache_lock:
            out = []
            for p in passages:
                data = self._sentences[p.chunk_id]
                self._sentences.move_to_end(p.chunk_id)
                out.append(data)
            return out

    def _sentence_terms(self, text: str, spans: list[tuple[int, int]], terms: list[frozenset | None],
                        wanted: Iterable[int]) -> None:
        """Fill in `terms[i]` (the analysed words of sentence i of `text`) for each wanted i not done yet."""
        analyzer = self.snap.keyword.analyzer
        for i in wanted:
            if terms[i] is None:
                s, e = spans[i]
                terms[i] = frozenset(analyzer(text[s:e]))

    def sentence_scores(self, question: str, qvec: np.ndarray, vectors: np.ndarray, terms: Sequence[frozenset | None],
                        lexical_weight: float | None = None) -> np.ndarray:
        """cosine(sentence, question) + w * (share of the question's distinct words in the sentence); a sentence
        whose words are not given (None) gets its cosine alone."""
        w = self.cfg.sentence_lexical_weight if lexical_weight is None else lexical_weight
        cos = vectors @ qvec if len(vectors) else np.zeros(0)
        return self._with_words(cos, frozenset(self.snap.keyword.analyzer(question)), terms, w)

    @staticmethod
    def _with_words(cos: np.ndarray, qterms: frozenset, terms: Sequence[frozenset | None], w: float) -> np.ndarray:
        """`cos` plus w * the share of `qterms` among each sentence's words (None: its cosine alone)."""
        if not qterms or w == 0:
            return cos
        lexical = np.array([len(qterms & t) / len(qterms) if t is not None else 0.0 for t in terms])
        return cos + w * lexical

    def pick_answer_sentences(self, question: str, qvec: np.ndarray, passages: list[Passage],
                              lexical_weight: float | None = None) -> None:
        """Mark in each passage its best sentence, and a runner-up that scores nearly as well."""
        w = self.cfg.sentence_lexical_weight if lexical_weight is None else lexical_weight
        qterms = frozenset(self.snap.keyword.analyzer(question))  # once for all the passages
        for p, (spans, vectors, terms) in zip(passages, self._sentence_data(passages)):
            if not spans:
                continue
            cos = vectors @ qvec
            if qterms and w:
                # Words are analysed only for sentences that could be chosen: one whose cosine is more than
                # w + RUNNER_UP below the best cosine scores under best - RUNNER_UP even with every question word,
                # so it can be neither the best nor the runner-up (profiled: analysing every sentence was a fifth
                # of a question).
                self._sentence_terms(p.text, spans, terms, np.flatnonzero(cos >= cos.max() - w - RUNNER_UP - 1e-6))
            local = self._with_words(cos, qterms, terms, w)
            order = np.argsort(-local, kind="stable")
            chosen = [int(order[0])]
            if self.cfg.answer_sentences > 1 and len(order) > 1 and local[order[1]] >= local[order[0]] - RUNNER_UP:
                chosen.append(int(order[1]))
            p.answer_spans = sorted(spans[i] for i in chosen)
            p.scores["sentence"] = float(local[order[0]])
