"""Keyword index: BM25 (bm25s) over the same chunks as the vectors, saved inside each build directory.

Row i of the keyword index is chunk id i, exactly as row i of the FAISS index, so the two rankings can be fused
chunk by chunk. Text is analysed the same way at build and at query time: lower case, digit groups joined
("21,200" -> "21200"), Lucene's 33 English stop words dropped, Snowball English stemming (PyStemmer) when it is
installed. The analyser used for a build is saved with it, so a query is always analysed like the index.
"""

from __future__ import annotations

import json
import logging
import os
import re
from array import array
from collections import deque
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)


def _bm25s():
    """The bm25s module, imported on first use; it sets its own logger to DEBUG on import, so quieten it after."""
    import bm25s
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s

BM25_DIR = "bm25"
ANALYZER_FILE = "analyzer.json"
# k1 = 1.2, b = 0.75 (Robertson's and Lucene's classic values), chosen on half of the SciFact queries over Anserini's
# k1 = 0.9, b = 0.4 (nDCG@10 0.651 against 0.632 for keywords alone, 0.694 against 0.684 fused; 1.5/0.75 was level
# with 1.2 on that half and lost on squad-dev): chunks vary in length (a heading, a table row, 200 word pieces)
# and a long chunk should not win on one repeated word. RETRIEVAL.md, "Keyword leg and fusion: before and after".
K1, B = 1.2, 0.75

_WORD = re.compile(r"\w+")
_DIGIT_GROUP = re.compile(r"(?<=\d)[,\u202f\u00a0](?=\d{3}(?!\d))")


class KeywordIndexError(RuntimeError):
    """The keyword index cannot be used as saved (e.g. it was stemmed and PyStemmer is missing)."""


def _stemmer(name: str | None):
    if not name:
        return None
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer(name)


class Analyzer:
    """Text -> index terms: lower case, digit groups joined, stop words dropped, stemmed if `stemmer` is set."""

    def __init__(self, stemmer: str | None = "english"):
        from bm25s.stopwords import STOPWORDS_EN
        self._stem = _stemmer(stemmer)
        if stemmer and self._stem is None:
            log.warning("PyStemmer is not installed: keyword search runs without stemming")
        self.stemmer = stemmer if self._stem is not None else None
        self.stopwords = frozenset(STOPWORDS_EN)

    def words(self, text: str) -> list[str]:
        """The unstemmed, lower-case content words of `text`."""
        text = _DIGIT_GROUP.sub("", text.casefold())
        return [w for w in _WORD.findall(text) if w not in self.stopwords]

    def __call__(self, text: str) -> list[str]:
        words = self.words(text)
        return self._stem.stemWords(words) if self._stem is not None and words else words

    def config(self) -> dict:
        return {"stemmer": self.stemmer, "stopwords": "lucene-en-33", "version": 1}


class _Postings:
    """Each chunk's distinct terms and their counts, kept compactly: the chunks' raw term ids are gathered
    BLOCK chunks at a time, then counted into (term id int32, count uint16) pairs, about 6 bytes a posting
    instead of a Python object per term."""
    BLOCK = 8192

    def __init__(self):
        self.n_docs = 0
        self._lengths = array("i")  # terms per chunk, repeats counted
        self._blocks: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()  # (per-chunk sizes, terms, counts)
        self._raw = array("i")      # the open block's term ids, chunk after chunk
        self._counted = 0           # chunks whose terms are counted into blocks

    def add(self, term_ids: list[int]) -> None:
        """The next chunk's terms (ids, repeats kept)."""
        self._raw.extend(term_ids)
        self._lengths.append(len(term_ids))
        self.n_docs += 1
        if self.n_docs % self.BLOCK == 0:
            self._close()

    def _close(self) -> None:
        """Count the open block's terms chunk by chunk (terms in id order within a chunk)."""
        first, n = self._counted, self.n_docs - self._counted
        if not n:
            return
        raw = np.frombuffer(self._raw, dtype=np.int32) if len(self._raw) else np.zeros(0, dtype=np.int32)
        lengths = np.frombuffer(self._lengths, dtype=np.int32)[first:]
        bound = int(raw.max(initial=0)) + 1
        keys = np.repeat(np.arange(n, dtype=np.int64), lengths) * bound + raw
        keys, counts = np.unique(keys, return_counts=True)
        sizes = np.bincount(keys // bound, minlength=n).astype(np.int32)
        self._blocks.append((sizes, (keys % bound).astype(np.int32),
                             np.minimum(counts, 65535).astype(np.uint16)))  # past this a score no longer changes
        self._raw = array("i")
        self._counted = self.n_docs

    def first_doc_gets_term(self, term_id: int) -> None:
        """Give the first chunk one occurrence of `term_id` (for a corpus without any term, which bm25s refuses)."""
        self._close()
        if not self._blocks:  # no chunks at all: nothing to give it to
            return
        sizes = np.zeros(len(self._blocks[0][0]), dtype=np.int32)
        sizes[0] = 1
        self._blocks[0] = (sizes, np.array([term_id], dtype=np.int32), np.array([1], dtype=np.uint16))
        self._lengths[0] = 1

    def lengths(self) -> np.ndarray:
        """Terms per chunk (repeats counted), in chunk order."""
        return np.frombuffer(self._lengths, dtype=np.int32) if self.n_docs else np.zeros(0, dtype=np.int32)

    def doc_freqs(self, n_terms: int) -> np.ndarray:
        """In how many chunks each term occurs."""
        self._close()
        df = np.zeros(n_terms, dtype=np.int64)
        for _, terms, _ in self._blocks:
            df += np.bincount(terms, minlength=n_terms)
        return df

    def drain(self):
        """(chunk id, term id, count) arrays a block at a time, in chunk order; each block is let go once read."""
        self._close()
        first = 0
        while self._blocks:
            sizes, terms, counts = self._blocks.popleft()
            yield np.repeat(np.arange(first, first + len(sizes), dtype=np.int32), sizes), terms, counts
            first += len(sizes)


class KeywordBuilder:
    """`KeywordIndex.build` a chunk at a time: `add` each chunk's text (or `add_terms`, its terms as the
    analyser gave them, analysed elsewhere: the build's chunking workers), in chunk-id order, then `finish`."""

    def __init__(self, analyzer: Analyzer | None = None):
        self.analyzer = analyzer or Analyzer()
        self.vocab: dict[str, int] = {}
        self.postings = _Postings()

    def add(self, text: str) -> None:
        self.add_terms(self.analyzer(text))

    def add_terms(self, terms: Iterable[str]) -> None:
        vocab = self.vocab
        terms = terms if isinstance(terms, list) else list(terms)
        ids = list(map(vocab.get, terms))  # most terms are known once a corpus is under way: a loop in C
        if None in ids:  # new terms take the next ids in the order they first come
            ids = [vocab.setdefault(w, len(vocab)) if i is None else i for w, i in zip(terms, ids)]
        self.postings.add(ids)

    def finish(self) -> KeywordIndex:
        """The index of every chunk added (the postings are let go as they are read)."""
        bm25s = _bm25s()
        from bm25s.scoring import _build_idf_array, _select_idf_scorer, _select_tfc_scorer
        analyzer, vocab, postings = self.analyzer, self.vocab, self.postings
        if not vocab:  # bm25s needs one term somewhere
            vocab["\x00empty"] = 0
            postings.first_doc_gets_term(0)
        size = postings.n_docs
        retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
        df = postings.doc_freqs(len(vocab))
        idf = _build_idf_array(dict(enumerate(df.tolist())), size, _select_idf_scorer(retriever.idf_method),
                               retriever.dtype)
        tfc = _select_tfc_scorer(retriever.method)
        lengths = postings.lengths()
        mean_length = float(lengths.mean()) if size else 0.0
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        data = np.empty(int(indptr[-1]), dtype=retriever.dtype)
        indices = np.empty(int(indptr[-1]), dtype=retriever.int_dtype)
        cursor = indptr[:-1].copy()  # where each term's next posting goes (chunks come in id order)
        for docs, terms, tfs in postings.drain():
            # in float64 like bm25s (its lengths are Python and NumPy float64 scalars), stored as float32
            scores = idf[terms] * tfc(tf_array=tfs.astype(np.float64), l_d=lengths[docs].astype(np.float64),
                                      l_avg=mean_length, k1=K1, b=B)
            order = np.argsort(terms, kind="stable")  # by term, chunk ids still ascending within each
            terms = terms[order]
            first, counts = np.unique(terms, return_index=True, return_counts=True)[1:]
            where = cursor[terms] + (np.arange(len(terms)) - np.repeat(first, counts))
            data[where] = scores[order]
            indices[where] = docs[order]
            cursor[terms[first]] += counts
        retriever.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": size}
        retriever.vocab_dict = vocab
        retriever.unique_token_ids_set = set(vocab.values())
        retriever.nonoccurrence_array = None
        return KeywordIndex(retriever, analyzer, size)


class KeywordIndex:
    """BM25 scores of every chunk for a query; row i = chunk id i."""

    def __init__(self, retriever, analyzer: Analyzer, size: int):
        self.retriever = retriever
        self.analyzer = analyzer
        self.size = size

    @classmethod
    def build(cls, texts: Iterable[str], analyzer: Analyzer | None = None) -> "KeywordIndex":
        """Index `texts` (chunk texts in chunk-id order; any iterable, read once).

        bm25s's own `index()` holds every posting three times over while it sorts them into its score matrix
        (scores, document and term ids, then 64-bit sort keys and their order: ~3.3 GB for the 80 million
        postings of a million chunks). This makes the same matrix with bm25s's own scoring functions in two
        passes that hold the postings once, compactly: each text's distinct terms and their counts as it is
        read, then the scores written straight to their places in the matrix, a block of chunks at a time."""
        builder = KeywordBuilder(analyzer)
        for text in texts:
            builder.add(text)
        return builder.finish()

    def save(self, path: Path) -> None:
        """Write the index into the folder `path` (created) and fsync every file."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(path), show_progress=False)
        (path / ANALYZER_FILE).write_text(json.dumps({**self.analyzer.config(), "size": self.size,
                                                      "k1": float(self.retriever.k1), "b": float(self.retriever.b)}))
        for f in path.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: Path) -> "KeywordIndex":
        bm25s = _bm25s()
        path = Path(path)
        meta = json.loads((path / ANALYZER_FILE).read_text())
        analyzer = Analyzer(meta.get("stemmer"))
        if meta.get("stemmer") and analyzer.stemmer is None:
            raise KeywordIndexError("the keyword index was built with stemming but PyStemmer is not installed "
                                    "(pip install PyStemmer, or run `citebot index --rebuild`)")
        retriever = bm25s.BM25.load(str(path), show_progress=False, verbosity=0)
        return cls(retriever, analyzer, int(meta["size"]))

    def query_terms(self, query: str) -> list[str]:
        """The analysed query terms that occur in the index (repeats kept: BM25 counts them)."""
        vocab = self.retriever.vocab_dict
        return [t for t in self.analyzer(query) if t in vocab]

    def idf(self, terms) -> np.ndarray:
        """BM25's inverse document frequency of each analysed term in this index (Lucene's form,
        log(1 + (N - df + 0.5) / (df + 0.5))); a term the index does not hold gets the IDF of df = 0."""
        indptr = self.retriever.scores["indptr"]
        vocab = self.retriever.vocab_dict
        df = np.array([indptr[vocab[t] + 1] - indptr[vocab[t]] if t in vocab else 0 for t in terms], dtype=np.float64)
        return np.log1p((self.size - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for `query` (float32, length = number of chunks); all 0 without a known term."""
        terms = self.query_terms(query)
        if not terms:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.retriever.get_scores(terms), dtype=np.float32)[: self.size]
