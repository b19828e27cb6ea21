"""Extractive summaries: the central sentences of one document, a topic across documents, and timelines.

Nothing is written here, only chosen: every sentence returned is a verbatim sentence of a cleaned document
(boilerplate the loader removed is not in that text), with its location.

- Document summary: sentences scored for centrality (cosine with the document's centroid, averaged with a
  LexRank-style PageRank over the sentence-similarity graph), lifted when they carry a judgement or grade
  (outstanding, good, adequate, requires improvement, inadequate) or a figure (a percentage, a count, money),
  and chosen with maximal marginal relevance so the summary does not repeat itself; returned in document
  order. A document with no more sentences than asked for is returned whole.
- Topic summary: the sentences of the retrieved passages scored against the topic (cosine plus the share of
  the topic's words, as answer sentences are), the best few of each document that reaches the confidence bar,
  near-duplicates across documents collapsed, documents newest first.
- Timeline: the same relevant sentences ordered by their document's date; undated documents last, marked so.
  No date is ever inferred from a document's text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from index.chunking import split_sentences
from index.config import SummaryConfig
from index.documents import Document

SUMMARY_VERSION = 1     # part of the cache key: bump when the selection changes
VECTOR_CACHE = 50000    # sentence vectors kept in memory (by sentence text)


def summary_config(cfg) -> SummaryConfig:
    """The summary settings of a `Config` (its `summary` section if it has one, else the defaults)."""
    return getattr(cfg, "summary", None) or SummaryConfig()


# ---------------------------------------------------------------- values

@dataclass
class Sentence:
    """One quoted sentence: verbatim text, offsets into the cleaned document, human location."""
    text: str
    start: int
    end: int
    location: str
    score: float = 0.0
    duplicates: list[str] = field(default_factory=list)  # docs of near-duplicates folded into this one

    def to_json(self) -> dict:
        return {"text": self.text, "location": self.location}


@dataclass
class Summary:
    """The summary of one document: its chosen sentences in document order."""
    doc: str
    title: str
    date: dt.date | None
    url: str | None
    sentences: list[Sentence]
    total: int                  # sentences in the document
    whole: bool                 # the document was short enough to be returned whole
    cached: bool = False
    elapsed_ms: float = 0.0

    def to_json(self) -> dict:
        return {"doc": self.doc, "title": self.title, "date": self.date.isoformat() if self.date else None,
                "sentences": [s.to_json() for s in self.sentences]}


@dataclass
class TopicGroup:
    """The sentences of one document that speak to a topic, in document order."""
    doc: str
    title: str
    date: dt.date | None
    url: str | None
    sentences: list[Sentence]

    def to_json(self) -> dict:
        return {"doc": self.doc, "title": self.title, "date": self.date.isoformat() if self.date else None,
                "sentences": [s.to_json() | ({"duplicates": s.duplicates} if s.duplicates else {})
                              for s in self.sentences]}


@dataclass
class TopicSummary:
    """A topic across documents: one group per document that speaks to it, newest first (undated last)."""
    topic: str
    groups: list[TopicGroup]
    elapsed_ms: float = 0.0

    def to_json(self) -> dict:
        return {"topic": self.topic, "groups": [g.to_json() for g in self.groups]}


@dataclass
class TimelineEntry:
    """A relevant sentence placed at its document's date (None: the document is undated)."""
    date: dt.date | None
    doc: str
    title: str
    url: str | None
    text: str
    location: str
    start: int
    end: int
    score: float = 0.0
    duplicates: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"date": self.date.isoformat() if self.date else None, "doc": self.doc, "title": self.title,
                "text": self.text, "location": self.location}


@dataclass
class Timeline:
    """Relevant sentences in date order of their documents; undated ones last."""
    topic: str
    entries: list[TimelineEntry]
    elapsed_ms: float = 0.0

    def to_json(self) -> dict:
        return {"topic": self.topic, "entries": [e.to_json() for e in self.entries]}


# ---------------------------------------------------------------- sentences and key facts

def document_sentences(document: Document) -> list[tuple[int, int]]:
    """Sentence spans of the document's cleaned text (the same segmenter the chunker uses)."""
    return split_sentences(document.text)


def is_candidate(text: str, min_words: int = 5) -> bool:
    """A sentence a summary may choose: enough words, not a label ("Notes to editors", "X said:")."""
    stripped = text.strip()
    if len(stripped.split()) < min_words or stripped.endswith(":"):
        return False
    return sum(ch.isalpha() for ch in stripped) >= 0.5 * len(stripped)


_GRADE = re.compile(r"\b(outstanding|inadequate|adequate|requires?\s+improvement|requiring\s+improvement)\b", re.I)
_GOOD = re.compile(r"[“\"‘'](good)[”\"’']|\b(grade[ds]?|rated|rating|judged|assessed)\W+(?:\w+\W+){0,3}?good\b"
                   r"|\bgood\W+(grade|rating)s?\b", re.I)
_FIGURE = re.compile(
    r"\d+(?:\.\d+)?\s*(?:%|per\s?cent\b|percent\b)"           # 76 per cent, 76%
    r"|[£$€]\s?\d"                                           # money
    r"|\b\d{1,3}(?:,\d{3})+\b"                               # 21,200
    r"|\b\d+(?:\.\d+)?\s*(?:million|billion|thousand|bn|m)\b"   # 2.5 million
    r"|\b(?:one|two|three|a)\s+in\s+(?:two|three|four|five|six|seven|eight|nine|ten|\d+)\b"  # one in four
    r"|\ba\s+(?:third|quarter|half)\b"
    r"|\b(?!(?:19|20)\d\d\b)[1-9]\d{0,2}\s+(?:fewer|more|extra|additional|of\s+the|per|out\s+of|new)?\s*"
    r"(?:[a-z]+\s+)?(?:officers|crimes|offences|forces|staff|victims|cases|calls|recommendations|arrests|"
    r"reports|people|incidents|police|services)\b", re.I)


def fact_weight(text: str) -> float:
    """1 for a sentence with a grade or judgement, 0.7 for one with a figure (and no grade), else 0."""
    if _GRADE.search(text) or _GOOD.search(text):
        return 1.0
    if _FIGURE.search(text):
        return 0.7
    return 0.0


# ---------------------------------------------------------------- selection

def centrality(vectors: np.ndarray, damping: float = 0.85, iterations: int = 50) -> np.ndarray:
    """How central each sentence is, in [0, 1]: the mean of its cosine with the centroid and its LexRank
    (PageRank over the graph of positive cosine similarities), each min-max scaled."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.ones(1)
    centroid = vectors.mean(axis=0)
    norm = np.linalg.norm(centroid)
    to_centroid = vectors @ (centroid / norm) if norm > 0 else np.zeros(n)
    sim = np.clip(vectors @ vectors.T, 0.0, None)
    np.fill_diagonal(sim, 0.0)
    rows = sim.sum(axis=1, keepdims=True)
    trans = np.divide(sim, rows, out=np.full_like(sim, 1.0 / n), where=rows > 0)
    rank = np.full(n, 1.0 / n)
    for _ in range(iterations):
        new = (1 - damping) / n + damping * (trans.T @ rank)
        if np.abs(new - rank).sum() < 1e-9:
            rank = new
            break
        rank = new
    return 0.5 * _minmax(to_centroid) + 0.5 * _minmax(rank)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi > lo else np.ones_like(x, dtype=np.float64)


def trailer_start(texts: Sequence[str]) -> int:
    """Index of the first sentence of a press release's trailer ("Notes to editors", "About us", "Ends"),
    or len(texts) if there is none: what follows is about the publisher, not the news."""
    for i, t in enumerate(texts):
        if _TRAILER.match(t.strip()):
            return i
    return len(texts)


_TRAILER = re.compile(r"^-*\s*(notes?\s+(to|for)\s+editors?|editor'?s\s+notes?|about\s+(us|hmicfrs|hmic)|ends|"
                      r"media\s+enquiries|press\s+office)\s*-*:?$", re.I)


def relevance(texts: Sequence[str], vectors: np.ndarray, cfg: SummaryConfig,
              trailer: int | None = None) -> np.ndarray:
    """Summary-worthiness of each sentence: centrality, plus a lift for a key fact (grade or figure) that
    shrinks with the sentence's distance from the centre (`fact_gate`), plus a small lift for the opening
    sentences; halved from `trailer` on (a press release's notes to editors)."""
    n = len(texts)
    central = centrality(vectors)
    facts = np.array([fact_weight(t) for t in texts], dtype=np.float64)
    lead = 1.0 - np.arange(n) / max(n, 1)
    gate = np.minimum(1.0, central / cfg.fact_gate) if cfg.fact_gate > 0 else np.ones(n)
    rel = central + cfg.fact_boost * facts * gate + cfg.lead_weight * lead
    if trailer is not None and trailer < n:
        rel[trailer:] *= 0.5
    return rel


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float = 0.3,
        lengths: Sequence[int] | None = None, max_chars: int = 0, duplicate: float = 0.9) -> list[int]:
    """Greedy maximal marginal relevance: up to `k` indices, each maximising
    (1 - diversity) * score - diversity * (highest cosine with one already chosen). A sentence nearly the
    same as a chosen one (cosine >= `duplicate`) is never chosen; with `max_chars`, neither is one that
    would make the total length exceed it."""
    n = len(scores)
    chosen: list[int] = []
    used = 0
    redundancy = np.zeros(n)
    available = np.ones(n, dtype=bool)
    while len(chosen) < k and available.any():
        value = np.where(available, (1 - diversity) * scores - diversity * redundancy, -np.inf)
        best = int(np.argmax(value))
        available[best] = False
        if max_chars and lengths is not None:
            extra = lengths[best] + (1 if chosen else 0)
            if used + extra > max_chars:
                continue
            used += extra
        chosen.append(best)
        sims = vectors @ vectors[best]
        redundancy = np.maximum(redundancy, sims)
        available &= sims < duplicate
    return chosen


def select_summary(texts: Sequence[str], vectors: np.ndarray, cfg: SummaryConfig, sentences: int | None = None,
                   max_chars: int | None = None) -> tuple[list[int], bool]:
    """Indices (in document order) of the sentences summarising a document, and whether that is all of it.

    `texts` are every sentence of the document in order, `vectors` their unit vectors. Only candidate
    sentences (`is_candidate`) are chosen; a document with no more candidates than asked for (or text
    shorter than `max_chars`) is returned whole.
    """
    n_want = sentences if sentences is not None else cfg.sentences
    chars = cfg.max_chars if max_chars is None else max_chars
    if sentences is None and max_chars:  # a character budget alone: as many sentences as fit
        n_want = len(texts)
    candidates = [i for i, t in enumerate(texts) if is_candidate(t, cfg.min_words)]
    total_chars = sum(len(t) for t in texts) + max(len(texts) - 1, 0)
    if len(candidates) <= n_want and (not chars or total_chars <= chars):
        return list(range(len(texts))), True
    if not candidates:
        return list(range(len(texts))), True
    sub = vectors[candidates]
    cut = trailer_start(texts)
    rel = relevance([texts[i] for i in candidates], sub, cfg, trailer=sum(1 for i in candidates if i < cut))
    picked = mmr(rel, sub, n_want, cfg.diversity, [len(texts[i]) for i in candidates], chars or 0)
    return sorted(candidates[i] for i in picked), False


# ---------------------------------------------------------------- sentence vectors

class SentenceVectors:
    """Unit vectors of sentences by their text, computed once per model with the shared `Embedder`."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], limit: int = VECTOR_CACHE):
        self._encode = encode
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        with self._lock:
            missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            by_key = {k: t for k, t in zip(keys, texts)}
            vectors = self._encode([by_key[k] for k in missing])
            with self._lock:
                for k, v in zip(missing, vectors):
                    self._cache[k] = v
                while len(self._cache) > self.limit:
                    self._cache.popitem(last=False)
        with self._lock:
            rows = []
            for k in keys:
                v = self._cache.get(k)
                if v is None:  # evicted meanwhile by another thread: encode it again
                    v = self._encode([texts[keys.index(k)]])[0]
                rows.append(v)
        if not rows:
            return np.zeros((0, 1), dtype=np.float32)
        return np.vstack(rows).astype(np.float32)


# ---------------------------------------------------------------- one document

def summary_params(sentences: int | None, max_chars: int | None, cfg: SummaryConfig) -> str:
    """The cache key part that says which summary of a document this is."""
    n = cfg.sentences if sentences is None else sentences
    c = cfg.max_chars if max_chars is None else max_chars
    if sentences is None and max_chars:
        n = 0
    return (f"v{SUMMARY_VERSION};n={n};c={c};d={cfg.diversity};f={cfg.fact_boost};l={cfg.lead_weight};"
            f"g={cfg.fact_gate};w={cfg.min_words}")


def summarize_document(document: Document, vectors: Callable[[Sequence[str]], np.ndarray],
                       cfg: SummaryConfig | None = None, sentences: int | None = None,
                       max_chars: int | None = None) -> Summary:
    """The extractive summary of `document`; `vectors(texts)` gives unit sentence vectors."""
    started = time.perf_counter()
    cfg = cfg or SummaryConfig()
    spans = document_sentences(document)
    texts = [document.text[s:e] for s, e in spans]
    if len(spans) <= 1:
        chosen, whole = list(range(len(spans))), True
    else:
        chosen, whole = select_summary(texts, vectors(texts), cfg, sentences, max_chars)
    return summary_from_spans(document, [spans[i] for i in chosen], len(spans), whole,
                              elapsed_ms=(time.perf_counter() - started) * 1000)


def summary_from_spans(document: Document, spans: Sequence[tuple[int, int]], total: int, whole: bool,
                       cached: bool = False, elapsed_ms: float = 0.0) -> Summary:
    """A `Summary` of `document` made of the sentences at `spans` (offsets into its cleaned text)."""
    sentences = [Sentence(document.text[s:e], s, e, document.location(s, e)) for s, e in spans]
    return Summary(document.doc, document.title, document.date, document.url, sentences, total, whole,
                   cached=cached, elapsed_ms=elapsed_ms)


# ---------------------------------------------------------------- a topic across documents

@dataclass
class Scored:
    """A sentence of a document scored against a topic."""
    doc: Document
    start: int
    end: int
    score: float

    @property
    def text(self) -> str:
        return self.doc.text[self.start:self.end]


def topic_sentences(searcher, topic: str, vectors: Callable[[Sequence[str]], np.ndarray],
                    load: Callable[[str], Document | None], cfg: SummaryConfig,
                    qvec: np.ndarray | None = None) -> list[Scored]:
    """The candidate sentences of the passages retrieved for `topic`, each scored like an answer sentence
    (cosine with the topic plus the weighted share of its words), best first."""
    if qvec is None:
        qvec = searcher.embedder.encode_query(topic)
    hits = searcher.rank(topic, depth=cfg.candidates, qvec=qvec)
    rows = searcher.snap.chunks([h.chunk_id for h in hits])
    ranges: dict[str, list[tuple[int, int]]] = {}
    for h in hits:
        r = rows.get(h.chunk_id)
        if r is not None:
            ranges.setdefault(r["doc"], []).append((r["start"], r["end"]))
    found: list[Scored] = []
    for doc_id, spans in ranges.items():
        document = load(doc_id)
        if document is None:
            continue
        for s, e in document_sentences(document):
            if any(s < hi and e > lo for lo, hi in spans) and is_candidate(document.text[s:e], cfg.min_words):
                found.append(Scored(document, s, e, 0.0))
    if not found:
        return []
    texts = [f.text for f in found]
    analyzer = searcher.snap.keyword.analyzer
    scores = searcher.sentence_scores(topic, qvec, vectors(texts), [frozenset(analyzer(t)) for t in texts])
    for f, score in zip(found, scores):
        f.score = float(score)
    found.sort(key=lambda f: (-f.score, f.doc.doc, f.start))
    return found


def _shingles(text: str) -> frozenset:
    from index.search import shingles
    return shingles(text)


def _same(a: frozenset, b: frozenset, threshold: float = 0.6) -> bool:
    if not a or not b:
        return False
    return len(a & b) / min(len(a), len(b)) >= threshold


def pick_relevant(scored: list[Scored], per_doc: int, max_docs: int, min_score: float, margin: float,
                  relative: float = 0.0, prefer_older: bool = False) -> dict[str, list[tuple[Scored, list[str]]]]:
    """Per document whose best sentence reaches `min_score` and `relative` times the best overall: its best sentences (at most `per_doc`, within `margin` of its
    best), near-duplicates across documents collapsed into the first kept (best score; with `prefer_older`,
    the older document's copy wins, so a quotation is placed where it first appeared).

    Returns {doc: [(sentence, docs of collapsed duplicates)]}, documents in order of their best score."""
    order = scored
    if prefer_older:
        order = sorted(scored, key=lambda f: (f.doc.date is None, f.doc.date or dt.date.max, f.doc.doc, -f.score))
    best: dict[str, float] = {}
    for f in scored:
        best[f.doc.doc] = max(best.get(f.doc.doc, -1.0), f.score)
    bar = max(min_score, relative * max(best.values(), default=0.0))
    docs = [d for d, s in sorted(best.items(), key=lambda kv: -kv[1]) if s >= bar][:max_docs]
    allowed = set(docs)
    kept: list[tuple[Scored, frozenset, list[str]]] = []
    per: dict[str, int] = {}
    for f in order:
        d = f.doc.doc
        if d not in allowed or f.score < max(min_score, best[d] - margin):
            continue
        sh = _shingles(f.text)
        twin = next((k for k in kept if _same(sh, k[1])), None)
        if twin is not None:
            if twin[0].doc.doc != d and d not in twin[2]:
                twin[2].append(d)
            continue
        if per.get(d, 0) >= per_doc:
            continue
        per[d] = per.get(d, 0) + 1
        kept.append((f, sh, []))
    out: dict[str, list[tuple[Scored, list[str]]]] = {d: [] for d in docs}
    for f, _, dups in kept:
        out[f.doc.doc].append((f, dups))
    for d in out:
        out[d].sort(key=lambda item: item[0].start)
    return {d: items for d, items in out.items() if items}


def _date_key(date: dt.date | None) -> tuple[bool, int]:
    """Sort key: newest first, undated last."""
    return (date is None, 0 if date is None else -date.toordinal())


def topic_summary(topic: str, scored: list[Scored], cfg: SummaryConfig, min_score: float) -> TopicSummary:
    """Group the relevant sentences by document, newest first (undated last), sentences in document order."""
    picked = pick_relevant(scored, cfg.topic_per_doc, cfg.topic_docs, min_score, cfg.margin, cfg.relative)
    groups = []
    for d, items in picked.items():
        doc = items[0][0].doc
        groups.append(TopicGroup(doc.doc, doc.title, doc.date, doc.url, [
            Sentence(f.text, f.start, f.end, doc.location(f.start, f.end), f.score, dups) for f, dups in items]))
    groups.sort(key=lambda g: (_date_key(g.date), g.doc))
    return TopicSummary(topic, groups)


def timeline(topic: str, scored: list[Scored], cfg: SummaryConfig, min_score: float) -> Timeline:
    """The relevant sentences in order of their document's date (oldest first); undated documents last."""
    picked = pick_relevant(scored, cfg.timeline_per_doc, cfg.timeline_entries, min_score, cfg.margin,
                           cfg.relative, prefer_older=True)
    entries = [TimelineEntry(f.doc.date, f.doc.doc, f.doc.title, f.doc.url, f.text,
                             f.doc.location(f.start, f.end), f.start, f.end, f.score, dups)
               for items in picked.values() for f, dups in items]
    if len(entries) > cfg.timeline_entries:
        entries = sorted(entries, key=lambda e: -e.score)[:cfg.timeline_entries]
    entries.sort(key=lambda e: (e.date is None, e.date or dt.date.max, e.doc, e.start))
    return Timeline(topic, entries)


# ---------------------------------------------------------------- finding a document by name

def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    return " ".join(re.sub(r"[^\w]+|_", " ", text).split())


def _names(doc) -> list[str]:
    """The normalised names a document answers to: its path, file name without extension, and title."""
    stem = doc.doc.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return [_norm(doc.doc), _norm(stem), _norm(doc.title)]


def match_documents(name: str, docs: Sequence) -> tuple[list, list]:
    """(matches, suggestions) for a document `name`, the one matching rule of every front end (/ask `document`,
    /summary, `citebot summary`, `citebot ask --doc`): the exact path; a part of a path, file name or title
    (case, accents, punctuation and spacing ignored, words in any order); a misspelt name when one document
    clearly matches best (every word of the name within a typo or two of a word of the document: `name_score`
    at least MATCH_THRESHOLD, and FUZZY_LEAD ahead of the next); else nothing, with up to SUGGESTIONS of the
    closest documents (best first) as "did you mean" choices."""
    raw = name.strip().removeprefix("./")
    exact = [d for d in docs if d.doc == raw] or [d for d in docs if d.doc.casefold() == raw.casefold()]
    if exact:
        return exact[:1], []
    q = _norm(raw)
    if not q:
        return [], []
    qc = q.replace(" ", "")
    names = {d.doc: _names(d) for d in docs}
    whole = [d for d in docs if any(q == n for n in names[d.doc])]
    if whole:
        return whole, []
    part = [d for d in docs if any(q in n or qc in n.replace(" ", "") for n in names[d.doc])]
    if not part:
        words = q.split()
        part = [d for d in docs if all(any(w in n for n in names[d.doc]) for w in words)]
    if part:
        return part, []
    scored = sorted(((name_score(q, d), d) for d in docs), key=lambda item: (-item[0], item[1].title))
    if scored and scored[0][0] >= MATCH_THRESHOLD and (len(scored) == 1 or scored[1][0] <= scored[0][0] - FUZZY_LEAD):
        return [scored[0][1]], []  # one clear winner despite a typo
    return [], [d for score, d in _fuzzy(raw, docs) if score >= SUGGEST_FLOOR][:SUGGESTIONS]


MATCH_THRESHOLD = 80  # a misspelt name is taken when each of its words scores this much against the document ...
FUZZY_LEAD = 10       # ... and the document is this much ahead of the next
SUGGEST_FLOOR = 40    # "did you mean": documents whose names score at least this much (rapidfuzz WRatio) ...
SUGGESTIONS = 5       # ... at most this many


def name_score(query: str, doc) -> float:
    """How well a (normalised) name stands for `doc`, 0-100: its whole text against one of the document's
    names (rapidfuzz ratio), or else its weakest word against the closest word of those names. So every word
    must be nearly there: "efectivenes" scores 92 against "effectiveness", while "annual report 2020" scores
    low against a title that only shares "report"."""
    from rapidfuzz import fuzz, process
    names = [n for n in _names(doc) if n]
    whole = max((fuzz.ratio(query, n) for n in names), default=0.0)
    vocabulary = sorted({w for n in names for w in n.split()})
    words = query.split()
    if not words or not vocabulary:
        return whole
    weakest = min(process.extractOne(w, vocabulary, scorer=fuzz.ratio)[1] for w in words)
    return max(whole, weakest)


def _fuzzy(text: str, docs: Sequence) -> list[tuple[float, object]]:
    """(score 0-100, document) best first: the best fuzzy match of `text` with any of the document's names."""
    from rapidfuzz import fuzz
    q = _norm(text)
    scored = []
    for d in docs:
        score = max(max(fuzz.WRatio(q, n), fuzz.partial_ratio(q, n) if len(q) >= 4 else 0) for n in _names(d) if n)
        scored.append((score, d))
    scored.sort(key=lambda item: (-item[0], item[1].title))
    return scored


def suggest_documents(text: str, docs: Sequence, limit: int = 25, cutoff: float = 0) -> list:
    """Documents whose title or file name best match `text` (fuzzy; all documents, newest first, when
    `text` is empty), at most `limit`."""
    if not _norm(text):
        return sorted(docs, key=lambda d: (_date_key(d.date), d.title))[:limit]
    return [d for score, d in _fuzzy(text, docs) if score >= cutoff][:limit]
