"""Confidence calibrated per index: where "the documents answer this" begins is measured on each build, not
fixed once for one corpus.

A broad corpus (an encyclopaedia) gives some evidence for almost any question; a narrow one (five police
reports) gives little for anything off its subject. So each build asks two sets of questions of itself:

- the bank: a few hundred generic questions written for the project (`data/generic_questions.txt`: cooking,
  sport, science, money, history ...), which almost no corpus answers;
- pseudo-questions: word sequences taken from the corpus's own sentences (a third of each left out), which the
  corpus certainly answers.

The cut lies between the two: from the bank's BANK_QUANTILE quantile (where the generic questions thin out), a
share BETWEEN of the way up to the pseudo-questions' PSEUDO_QUANTILE quantile, and so never above it (a corpus
about the bank's own subjects, cooking say, must still answer questions about itself). Pseudo-questions copy
their sentence's words, so they score well above questions people write; the cut stays near the bank's end. A
corpus too small for pseudo-questions gets the bank's FALLBACK_QUANTILE quantile.

The three constants were chosen on two corpora (squad-dev and docs/: the largest smallest margin over the four
confidence targets, each corpus's own questions and the other's) and checked on a third, SciFact, never used to
choose (RETRIEVAL.md, "How each index calibrates its cut"). The threshold and both distributions are recorded
with the build (`calibration.json`) and shown by `citebot index` and `/help`; `retrieval.min_score` above 0
overrides it.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

import numpy as np

BANK_FILE = Path(__file__).resolve().parent / "data" / "generic_questions.txt"
PSEUDO_QUESTIONS = 150
BANK_QUANTILE = 0.70
PSEUDO_QUANTILE = 0.10
BETWEEN = 0.4
FALLBACK_QUANTILE = 0.98
VERSION = 3
log = logging.getLogger(__name__)
_WORD = re.compile(r"[^\W_]+(?:[’'][^\W_]+)?")


def bank_questions() -> list[str]:
    return [line.strip() for line in BANK_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def pseudo_questions(searcher, n: int = PSEUDO_QUESTIONS, seed: int = 0) -> list[str]:
    """Up to `n` questions made from the corpus's own sentences (8 to 40 words; not title lines): each keeps its
    words in order with a third of them, in one run, left out, as a reader who half remembers a sentence would
    ask for it. Chunks are drawn at random (the same ones for the same build)."""
    snap = searcher.snap
    size = snap.size
    if not size:
        return []
    rng = random.Random(seed * 1_000_003 + size)
    ids = rng.sample(range(size), min(size, 3 * n))
    rows = snap.chunks(ids)
    data = {}
    for cid in ids:
        found = snap.sentences([cid]).get(cid)
        data[cid] = found[0] if found else []
    out: list[str] = []
    for cid in ids:
        text = rows[cid]["text"]
        spans = [(s, e) for s, e in (data.get(cid) or []) if not (rows[cid]["start"] + s == 0)]
        if not spans:
            continue
        s, e = spans[rng.randrange(len(spans))]
        words = _WORD.findall(text[s:e])
        if not 8 <= len(words) <= 40:
            continue
        cut = max(1, len(words) // 3)
        at = rng.randrange(len(words) - cut + 1)
        out.append(" ".join(words[:at] + words[at + cut:]))
        if len(out) >= n:
            break
    return out


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values)
    return {"n": len(values), **{f"q{int(q * 100):02d}": round(float(np.quantile(a, q)), 4)
                                 for q in (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98)},
            "max": round(float(a.max()), 4)}


def threshold(bank: list[float], pseudo: list[float]) -> float:
    """The cut between the two score lists (see the module's docstring)."""
    if not bank:
        return 0.0
    if not pseudo:
        return round(float(np.quantile(bank, FALLBACK_QUANTILE)), 4)
    low, high = float(np.quantile(bank, BANK_QUANTILE)), float(np.quantile(pseudo, PSEUDO_QUANTILE))
    return round(min(low + BETWEEN * max(0.0, high - low), high), 4)


class Workers:
    """Computes evidence scores (`Searcher.evidence_of`) in `n` processes forked from this one, each with the
    searcher as it stood (its snapshot given a SQLite connection of its own: `Snapshot.in_forked_child`), a
    batch of EVIDENCE_BATCH questions at a time; the scores are the same as the searcher's own, in the same
    order. A context manager: the processes end with it."""

    def __init__(self, searcher, n: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        searcher.snap.keyword  # loaded once, here: the workers share its pages instead of each loading a copy
        # forked (as the build's chunking workers: `index.build.fork_workers`); the workers run only search
        # code on this new build, which no other thread of this process is using
        self.pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"),
                                        initializer=_start_worker, initargs=(searcher,))

    def __call__(self, jobs: list, k: int) -> list[float]:
        parts = [jobs[i:i + EVIDENCE_BATCH] for i in range(0, len(jobs), EVIDENCE_BATCH)]
        return [score for part in self.pool.map(_evidence_of, parts, [k] * len(parts), timeout=WORKER_TIMEOUT)
                for score in part]

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.pool.shutdown()
            return
        from index.workers import end_processes
        end_processes(self.pool)  # a worker died, hung or could not be reached: end them all now


EVIDENCE_BATCH = 25
WORKER_TIMEOUT = 300  # seconds for all of one set's questions (SciFact's 400 take about 1 s on 2 cores)
_worker: dict = {}


def _start_worker(searcher) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the build's to handle: it stops the workers
    searcher.snap.in_forked_child()
    _worker["searcher"] = searcher


def _evidence_of(jobs: list, k: int) -> list[float]:
    return _worker["searcher"].evidence_of(jobs, k)


def calibrate(searcher, k: int = 3, workers: int = 1) -> dict:
    """Ask the bank and the pseudo-questions of `searcher`'s index; the cut and both distributions. With
    `workers` > 1 and a FAISS snapshot, the questions' evidence is computed in that many forked processes
    (`Workers`): the same scores, sooner on several cores."""
    from concurrent.futures.process import BrokenProcessPool
    bank_q, pseudo_q = bank_questions(), pseudo_questions(searcher)
    bank = pseudo = None
    if workers > 1 and hasattr(searcher.snap, "in_forked_child"):
        try:
            with Workers(searcher, workers) as scatter:
                bank = searcher.evidence_many(bank_q, k, scatter)
                pseudo = searcher.evidence_many(pseudo_q, k, scatter)
        except (BrokenProcessPool, OSError) as exc:  # a worker killed (out of memory?), hung (TimeoutError is an
            # OSError) or none could start
            log.warning("calibrating in %d worker processes failed (%s); calibrating in this one", workers,
                        exc or type(exc).__name__)
    if bank is None or pseudo is None:
        bank = searcher.evidence_many(bank_q, k)
        pseudo = searcher.evidence_many(pseudo_q, k)
    return {"version": VERSION, "threshold": threshold(bank, pseudo), "bank": _quantiles(bank),
            "pseudo": _quantiles(pseudo), "rule": f"bank q{BANK_QUANTILE:g} + {BETWEEN:g} x (pseudo q{PSEUDO_QUANTILE:g} - bank q{BANK_QUANTILE:g})"}


def write(path: Path, result: dict) -> None:
    path.write_text(json.dumps(result, indent=1))
