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
# Anserini's defaults (k1=0.9, b=0.4), the setting behind Pyserini's published BEIR BM25 numbers.
K1, B = 0.9, 0.4

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


class KeywordIndex:
    """BM25 scores of every chunk for a query; row i = chunk id i."""

    def __init__(self, retriever, analyzer: Analyzer, size: int):
        self.retriever = retriever
        self.analyzer = analyzer
        self.size = size

    @classmethod
    def build(cls, texts: Iterable[str], analyzer: Analyzer | None = None) -> "KeywordIndex":
        """Index `texts` (chunk texts in chunk-id order; any iterable, read once).

        Each text becomes an array of term ids as it is read, so a million chunks hold ~4 bytes a term
        rather than a Python string per term (the list-of-tokens route of bm25s kept ~2 KB a chunk)."""
        bm25s = _bm25s()
        analyzer = analyzer or Analyzer()
        vocab: dict[str, int] = {}
        ids = [array("i", [vocab.setdefault(w, len(vocab)) for w in analyzer(t)]) for t in texts]
        size = len(ids)
        if not vocab:  # bm25s needs one term somewhere
            vocab["\x00empty"] = 0
            ids[0:1] = [array("i", [0])]
        retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
        retriever.index((ids, vocab), show_progress=False)
        return cls(retriever, analyzer, size)

    def save(self, path: Path) -> None:
        """Write the index into the folder `path` (created) and fsync every file."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(path), show_progress=False)
        (path / ANALYZER_FILE).write_text(json.dumps({**self.analyzer.config(), "size": self.size}))
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

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for `query` (float32, length = number of chunks); all 0 without a known term."""
        terms = self.query_terms(query)
        if not terms:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self.retriever.get_scores(terms), dtype=np.float32)[: self.size]
