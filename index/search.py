"""Retrieval: question -> top passages with their answer sentences and a confidence -> `Answer`."""

from __future__ import annotations

import datetime as dt
import fnmatch
import time
from dataclasses import dataclass

import numpy as np

from index.answer import Answer, Passage
from index.chunking import split_sentences
from index.config import RetrievalConfig
from index.embedding import Embedder
from index.store import Snapshot


class NoMatchingDocuments(ValueError):
    """The filters leave no document to search."""


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


class Searcher:
    """Answers questions from one published build (a `Snapshot`) with one embedding model."""

    def __init__(self, snapshot: Snapshot, embedder: Embedder, cfg: RetrievalConfig):
        self.snap = snapshot
        self.embedder = embedder
        self.cfg = cfg
        self.docs = snapshot.documents()

    def allowed_doc_ids(self, filters: Filters) -> list[int] | None:
        """Ids of the documents the filters admit (None: no filter)."""
        if not filters:
            return None
        docs = self.docs
        if filters.doc:
            pattern = filters.doc.strip().lstrip("./")
            by_name = [d for d in docs if fnmatch.fnmatchcase(d.doc, pattern) or d.doc == pattern
                       or fnmatch.fnmatchcase(d.doc, f"*/{pattern}")]
            docs = by_name or [d for d in docs if d.title.casefold() == filters.doc.strip().casefold()]
            if not docs:
                raise NoMatchingDocuments(f"no indexed document matches '{filters.doc}'")
        if filters.after:
            docs = [d for d in docs if d.date and d.date >= filters.after]
        if filters.before:
            docs = [d for d in docs if d.date and d.date <= filters.before]
        if not docs:
            raise NoMatchingDocuments("no indexed document is dated in that range")
        return [d.id for d in docs]

    def dense(self, qvec: np.ndarray, k: int, doc_ids: list[int] | None) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the `k` nearest chunks, within `doc_ids` if given."""
        import faiss
        k = min(k, self.snap.size)
        if k <= 0:
            return []
        params = None
        if doc_ids is not None:
            marks = ",".join("?" * len(doc_ids))
            ids = np.array([r["id"] for r in self.snap.query(f"SELECT id FROM chunks WHERE doc_id IN ({marks})",
                                                              doc_ids)], dtype=np.int64)
            if not len(ids):
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))
            k = min(k, len(ids))
        scores, ids = self.snap.index.search(qvec.reshape(1, -1).astype(np.float32), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def search(self, question: str, k: int | None = None, filters: Filters | None = None) -> Answer:
        """The best `k` passages for `question`, each with answer sentence spans; confident if the best clears the bar."""
        started = time.perf_counter()
        k = k or self.cfg.top_k
        filters = filters or Filters()
        doc_ids = self.allowed_doc_ids(filters)
        qvec = self.embedder.encode_query(question)
        hits = self.dense(qvec, k, doc_ids)
        rows = self.snap.chunks([i for i, _ in hits])
        passages = []
        for chunk_id, score in hits:
            r = rows[chunk_id]
            passages.append(Passage(
                chunk_id=chunk_id, doc=r["doc"], title=r["title"],
                date=dt.date.fromisoformat(r["date"]) if r["date"] else None, url=r["url"],
                location=r["location"], text=r["text"], start=r["start"], end=r["end"],
                scores={"dense": score}))
        self.pick_answer_sentences(qvec, passages)
        confident = bool(passages) and passages[0].scores["dense"] >= self.cfg.min_score
        return Answer(question, passages, confident, (time.perf_counter() - started) * 1000, mode="dense",
                      filters=filters.as_dict())

    def pick_answer_sentences(self, qvec: np.ndarray, passages: list[Passage]) -> None:
        """Mark in each passage the sentence most similar to the question, and a runner-up that is nearly as good."""
        spans = [split_sentences(p.text) for p in passages]
        texts = [p.text[s:e] for p, sp in zip(passages, spans) for s, e in sp]
        if not texts:
            return
        sims = self.embedder.encode(texts) @ qvec
        pos = 0
        for p, sp in zip(passages, spans):
            local = sims[pos:pos + len(sp)]
            pos += len(sp)
            if not len(sp):
                continue
            order = np.argsort(-local)
            chosen = [int(order[0])]
            if self.cfg.answer_sentences > 1 and len(order) > 1 and local[order[1]] >= local[order[0]] - 0.05:
                chosen.append(int(order[1]))
            p.answer_spans = sorted(sp[i] for i in chosen)
            p.scores["sentence"] = float(local[order[0]])
