"""Answer sentences: which sentence of the retrieved passages answers the question, by a small linear scorer
over features that hold on any corpus; and the evidence score that confidence is calibrated on.

Every highlighted sentence is a sentence of a document: this only chooses among them.

The scorer is a conditional logit (a softmax over all candidate sentences of one question) fitted on one half of
squad-dev (the articles in odd positions of the sorted list are held out) and checked on the other; the weights
below are plain numbers, refitted with `fit_weights` (RETRIEVAL.md, "Answer sentences"). Features:

- cos: cosine of the question with the sentence vector (pooled at build time from the chunk's own tokens);
- share / idf_share: the share of the question's words in the sentence, plain and weighted by the corpus's
  inverse document frequency (a rare word counts more than a common one);
- novel: how many words the sentence has that the question does not (a sentence that only repeats the
  question does not answer it);
- type_*: the question asks for a number, a time, a person or a place, and the sentence has one that the
  question does not mention (a figure, a year or month, a capitalised name);
- short, log_len: fragments and very long sentences;
- dense, bm25, rank: how well the sentence's passage was retrieved;
- rarest: the sentence holds the question's rarest word;
- neighbour_cos: the best cosine of the sentences either side (an answer often follows its topic sentence);
- first, title: the passage's first sentence; a document's title line (never chosen).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

FEATURES = ("cos", "share", "idf_share", "novel", "type_number", "type_time", "type_person", "type_place",
            "short", "log_len", "dense", "rank", "bm25", "rarest", "neighbour_cos", "first", "title")

# Fitted 2026-11-30 by `fit_weights` (L2 1.0) on squad-dev half a (the 7 articles at even positions of the sorted
# list, 2,500 questions; candidates: every sentence of the folded and merged passages `Searcher.search` scores,
# default configuration). Held-out half b (6 articles, 2,057 questions): RETRIEVAL.md, "Answer sentences".
WEIGHTS = np.array([14.7104, -0.7790, 9.7476, 0.0682, 2.8036, 2.2546, 1.1908, 1.7351, -3.5920, -0.2889,
                    -0.2802, -0.2374, 4.3352, 0.2909, 3.5681, -0.7257, -1.6751])
TITLE_PENALTY = 1e3          # a title line is never the answer
LEXICAL_WEIGHT = 0.2         # evidence = cosine + this x share of the question's words (the confidence score)
MIN_TERMS = 3                # ... in full for questions of at least this many words

_QUESTION_TYPES = (
    ("number", re.compile(r"\b(how (many|much|long|old|far|large|big|tall|high|often|fast|deep)|what (percentage|"
                          r"percent|proportion|share|number|amount|fraction))\b")),
    ("time", re.compile(r"\b(when|what (year|date|day|month|century|decade|time|period|era)|which (year|century|"
                        r"decade|month|day))\b")),
    ("person", re.compile(r"\b(who|whom|whose)\b")),
    ("place", re.compile(r"\b(where|what (city|country|state|town|place|region|county|location|area)|which (city|"
                         r"country|state|town|place|region|county))\b")),
)
_NUMBER = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
                     r"fifty|hundred|thousand|million|billion|half|third|quarter|dozen)\b", re.I)
_TIME = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})s?\b|\b(january|february|march|april|may|june|july|august|september|"
                   r"october|november|december|century|decade)\b", re.I)
_CAPITAL = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+")
_WORD = re.compile(r"\w+")
_DIGITS = re.compile(r"\d+")


@dataclass
class QuestionProfile:
    """What the scorer needs of a question, worked out once per question."""
    text: str
    terms: frozenset[str]                       # analysed (stemmed) words
    weights: dict[str, float]                   # term -> IDF in this corpus
    mass: float                                 # sum of the weights
    rarest: str | None
    kinds: dict[str, bool]                      # number / time / person / place asked for
    words: frozenset[str] = field(default_factory=frozenset)   # lower-case surface words
    numbers: frozenset[str] = field(default_factory=frozenset)  # digit runs in the question


def profile(question: str, analyzer: Callable[[str], list[str]], idf: Callable[[Sequence[str]], np.ndarray]) -> QuestionProfile:
    """The question's terms with their IDF, the kind of answer it asks for, its words and numbers."""
    terms = frozenset(analyzer(question))
    ordered = sorted(terms)
    values = idf(ordered) if ordered else np.zeros(0)
    weights = {t: float(v) for t, v in zip(ordered, values)}
    low = question.casefold()
    return QuestionProfile(question, terms, weights, sum(weights.values()),
                           max(ordered, key=lambda t: (weights[t], t)) if ordered else None,
                           {name: bool(rx.search(low)) for name, rx in _QUESTION_TYPES},
                           frozenset(_WORD.findall(low)), frozenset(_DIGITS.findall(question)))


def is_title_line(sentence: str, absolute_start: int, title: str) -> bool:
    """A document's title (or a heading-like first line) at the very start of the document."""
    if absolute_start != 0:
        return False
    s = sentence.strip()
    return s.casefold() == title.strip().casefold() or not s.endswith((".", "!", "?", '"', "”", "’", "'", ")"))


class SentenceFacts:
    """What the scorer reads of a sentence whatever the question, each worked out when a question first needs it
    (most questions ask for no particular kind of answer, so most sentences never need the patterns) and kept
    with the sentence."""
    __slots__ = ("text", "words", "_capitals", "_digits", "_number", "_time")

    def __init__(self, text: str):
        self.text = text
        self.words = len(_WORD.findall(text))    # words in the sentence
        self._capitals = self._digits = self._number = self._time = None

    @property
    def capitals(self) -> frozenset[str]:
        """Capitalised words not at its start, lower-cased."""
        if self._capitals is None:
            self._capitals = frozenset(w.casefold() for w in _CAPITAL.findall(self.text))
        return self._capitals

    @property
    def digits(self) -> frozenset[str]:
        if self._digits is None:
            self._digits = frozenset(_DIGITS.findall(self.text))
        return self._digits

    @property
    def number(self) -> bool:
        """A figure or a number word."""
        if self._number is None:
            self._number = bool(_NUMBER.search(self.text))
        return self._number

    @property
    def time(self) -> bool:
        """A year, month, century or decade."""
        if self._time is None:
            self._time = bool(_TIME.search(self.text))
        return self._time


def facts(sentence: str) -> SentenceFacts:
    return SentenceFacts(sentence)


def sentence_features(qp: QuestionProfile, sentences: Sequence[SentenceFacts], terms: Sequence[frozenset],
                      cos: np.ndarray, titles: Sequence[bool], dense: float, bm25: float, rank: int) -> np.ndarray:
    """The feature matrix (len(sentences) x len(FEATURES)) of one passage's sentences; `bm25` is the passage's
    BM25 score over the best in the candidate pool (0-1), `rank` its 0-based retrieval rank."""
    n = len(sentences)
    out = np.zeros((n, len(FEATURES)))
    if not n:
        return out
    nq = max(len(qp.terms), 1)
    kinds = qp.kinds
    for i, (f, ts) in enumerate(zip(sentences, terms)):
        common = qp.terms & ts
        named = bool(f.capitals - qp.words) if kinds["person"] or kinds["place"] else False
        neighbours = [cos[j] for j in (i - 1, i + 1) if 0 <= j < n]
        out[i] = (cos[i], len(common) / nq,
                  sum(qp.weights[t] for t in common) / qp.mass if qp.mass else 0.0,
                  math.log1p(len(ts - qp.terms)),
                  kinds["number"] and (f.number or bool(f.digits - qp.numbers)), kinds["time"] and f.time,
                  kinds["person"] and named, kinds["place"] and named,
                  f.words < 6, math.log1p(f.words), dense, 1.0 / (1 + rank), bm25,
                  qp.rarest is not None and qp.rarest in ts, max(neighbours) if neighbours else 0.0,
                  i == 0, titles[i])
    return out


def score(features: np.ndarray, weights: np.ndarray = WEIGHTS) -> np.ndarray:
    """The scorer's logit per sentence; a title line is pushed out of reach."""
    if not len(features):
        return np.zeros(0)
    return features @ weights - TITLE_PENALTY * features[:, FEATURES.index("title")]


def evidence(features: np.ndarray, lexical_weight: float = LEXICAL_WEIGHT, terms: int = 3) -> np.ndarray:
    """cosine + lexical_weight x share of the question's words: the confidence score of each sentence (title
    lines excluded). A question of fewer than MIN_TERMS words gets that share in proportion (one word found in
    a sentence is weak evidence that the sentence answers anything: "clear", "hello")."""
    if not len(features):
        return np.zeros(0)
    ev = features[:, 0] + lexical_weight * features[:, 1] * min(1.0, terms / MIN_TERMS)
    return np.where(features[:, FEATURES.index("title")] > 0, -1.0, ev)


# ---------------------------------------------------------------- re-reading close calls word piece by word piece

# When the scorer's best two sentences are within REREAD_MARGIN of each other, its best `retrieval.reread` (over all
# the scored passages) and the question go through the model in one run, and each sentence is scored again from
# MaxSim: every word piece of the question takes its best cosine with one of the sentence's word pieces, and these
# are averaged (REREAD_COLUMNS: over all pieces, over content words, weighted by the corpus's IDF of the word,
# both; and the sentence's pieces against the question's content words). The second stage is a conditional logit
# over [first-stage logit, the five columns]; fitted like WEIGHTS (RETRIEVAL.md, "Re-reading close calls").
REREAD_COLUMNS = ("logit", "all", "content", "idf", "content_idf", "sentence_to_content")
# Fitted 2026-12-01 by `fit_weights` (L2 1.0) on squad-dev half a (2,500 questions; candidates: the best 5
# sentences of the passages `Searcher.search` scores at k = 5, read in one run with the question); REREAD_MARGIN
# chosen on half a from 0.5-3 (re-reads 35-38 % of the questions).
REREAD_WEIGHTS = np.array([0.5776, -1.3917, 3.4367, 11.0321, -4.4412, -2.2478])
REREAD_MARGIN = 1.5
_FUNCTION_WORDS = frozenset("""a an and are as at be but by for if in into is it no not of on or such that the their
then there these they this to was will with what which who whom whose when where why how did does do done were has
have had been being am can could would should shall may might must its it's from about than also s he she his her
him them we you your our i me my us don't doesn't didn't isn't aren't wasn't weren't""".split())
_QUESTION_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")


@dataclass
class QuestionPieces:
    """The question's word pieces as the model read them, with the weights the re-reading columns give them."""
    vectors: np.ndarray          # unit vectors, one row per word piece
    weights: dict[str, np.ndarray]  # "all", "content", "idf", "content_idf": each sums to 1
    content: np.ndarray          # which pieces belong to content words


def question_pieces(question: str, vectors: np.ndarray, starts: np.ndarray, analyzer: Callable[[str], list[str]],
                    idf: Callable[[Sequence[str]], np.ndarray]) -> QuestionPieces:
    """Weights of the question's word pieces (`starts`: where each begins in `question`): a piece of a content
    word (not a function word) counts for "content"; "idf" weighs each piece by the corpus's IDF of its word's
    analysed term (0 for a word the keyword index drops). A weighting that leaves nothing falls back to all."""
    words = [(m.start(), m.end(), m.group(0)) for m in _QUESTION_WORD.finditer(question)]
    content = np.zeros(len(starts), dtype=bool)
    weight = np.zeros(len(starts))
    cache: dict[str, float] = {}
    for n, at in enumerate(starts):
        word = next((w for a, b, w in words if a <= at < b), None)
        if word is None:
            continue
        content[n] = word.casefold().replace("’", "'") not in _FUNCTION_WORDS
        if word not in cache:
            terms = analyzer(word)
            cache[word] = float(np.max(idf(terms))) if terms else 0.0
        weight[n] = cache[word]
    every = np.ones(len(starts))
    raw = {"all": every, "content": content.astype(float), "idf": weight, "content_idf": weight * content}
    out = {}
    for name, w in raw.items():
        w = w if w.sum() > 0 else every
        out[name] = w / max(w.sum(), 1e-12)
    return QuestionPieces(vectors, out, content if content.any() else np.ones(len(starts), dtype=bool))


def reread_columns(q: QuestionPieces, sentence: np.ndarray) -> np.ndarray:
    """The five MaxSim columns of one sentence (its word pieces' unit vectors, read alone) for the question."""
    out = np.zeros(len(REREAD_COLUMNS) - 1)
    if not len(sentence) or not len(q.vectors):
        return out
    sim = q.vectors @ sentence.T
    best = sim.max(1)
    for n, name in enumerate(("all", "content", "idf", "content_idf")):
        out[n] = float(best @ q.weights[name])
    out[4] = float(sim[q.content].max(0).mean())
    return out


def fit_weights(groups: Sequence[tuple[np.ndarray, np.ndarray]], l2: float = 1.0) -> np.ndarray:
    """Fit WEIGHTS by conditional logit: `groups` holds, per question, the feature matrix of its candidate
    sentences and a boolean vector of which contain a gold answer (questions with none are skipped). Features are
    standardised while fitting and the weights returned on the raw scale. Needs SciPy (installed with
    sentence-transformers)."""
    from scipy.optimize import minimize
    used = [(x, y) for x, y in groups if len(y) and y.any()]
    if not used:
        raise ValueError("no question has a candidate sentence holding its answer")
    stacked = np.vstack([x for x, _ in used])
    mu, sd = stacked.mean(0), stacked.std(0) + 1e-9
    norm = [((x - mu) / sd, y) for x, y in used]

    def loss(w):
        total, grad = 0.0, np.zeros_like(w)
        for x, y in norm:
            z = x @ w
            p = np.exp(z - z.max())
            p /= p.sum()
            hit = p[y].sum() + 1e-12
            total -= math.log(hit)
            grad -= (np.where(y, p, 0.0) / hit - p) @ x
        return total + l2 * w @ w, grad + 2 * l2 * w

    w = minimize(loss, np.zeros(stacked.shape[1]), jac=True, method="L-BFGS-B").x
    return w / sd
