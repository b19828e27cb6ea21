"""The knowledge base as the front ends see it: ask, list, build, context, feedback. Blocking; thread-safe."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import unicodedata
from typing import Sequence

from index.answer import Answer
from index.build import BuildError, BuildReport, Progress, build_index, open_snapshot
from index.config import Config
from index.embedding import Embedder, EmbeddingError
from index.search import Filters, NoMatchingDocuments, Searcher
from index.store import (BuildInProgress as _StoreBuildInProgress, DocInfo, FeedbackStore, IndexMismatch,
                         IndexMissing, IndexRoot)

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000


class UserError(ValueError):
    """Bad input or a state the user can fix; str() is one short line to show them."""


class BuildInProgress(UserError):
    """A build is already running."""


def clean_question(question: str, limit: int = MAX_QUESTION_CHARS) -> str:
    """The question with control characters removed and spacing normalised; UserError if nothing is left."""
    if not isinstance(question, str):
        raise UserError("the question must be text")
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in question)
    text = " ".join(text.split())
    if not any(ch.isalnum() for ch in text):
        raise UserError("please ask a question in words (it was empty or had no letters or digits)")
    if len(text) > limit:
        raise UserError(f"the question is too long ({len(text)} characters; the limit is {limit})")
    return text


def user_hash(user_id: int | str, salt: str = "citebot") -> str:
    """A stable, non-reversible stand-in for a user id, for feedback records."""
    return hashlib.sha256(f"{salt}:{user_id}".encode()).hexdigest()[:32]


class KnowledgeBase:
    """One configuration's index: the live searcher is swapped atomically after each build."""

    def __init__(self, cfg: Config, embedder: Embedder | None = None):
        self.cfg = cfg
        self.embedder = embedder or Embedder(cfg.embedding)
        self.root = IndexRoot(cfg.index_dir)
        self.feedback = FeedbackStore(cfg.index_dir)
        self._searcher: Searcher | None = None
        self._lock = threading.Lock()
        self._building = threading.Lock()

    # ------------------------------------------------------------ state
    @property
    def building(self) -> bool:
        return self._building.locked() or self.root.is_locked()

    def has_index(self) -> bool:
        return self.root.current() is not None

    def searcher(self) -> Searcher:
        """The live searcher, opened on first use; UserError if there is no usable index."""
        with self._lock:
            if self._searcher is None:
                self._searcher = self._open()
            return self._searcher

    def _open(self) -> Searcher:
        """Open the live build without loading the model (listing documents must stay quick)."""
        try:
            return Searcher(open_snapshot(self.cfg), self.embedder, self.cfg.retrieval)
        except (IndexMissing, IndexMismatch) as exc:
            raise UserError(str(exc)) from None

    def _check_model(self, searcher: Searcher) -> None:
        """Before the first question: the model loads and makes vectors of the index's dimension."""
        try:
            dim = self.embedder.dim
        except EmbeddingError as exc:
            raise UserError(str(exc)) from None
        if searcher.snap.info.get("dim") != dim:
            raise UserError(f"the index has vectors of dimension {searcher.snap.info.get('dim')} but model "
                            f"{self.cfg.embedding.model} makes {dim}; run `citebot index --rebuild`")

    def reload(self) -> None:
        """Open the newest published build and swap it in; queries already running finish on the old one."""
        new = self._open()
        with self._lock:
            old, self._searcher = self._searcher, new
        # The old snapshot is left to the garbage collector: a query may still be reading it.
        del old

    # ------------------------------------------------------------ questions
    def ask(self, question: str, k: int | None = None, *, doc: str | None = None, after: dt.date | None = None,
            before: dt.date | None = None) -> Answer:
        """Answer `question` from the live index."""
        text = clean_question(question)
        if k is not None and not 1 <= k <= 50:
            raise UserError("k must be between 1 and 50")
        if after and before and after > before:
            raise UserError("'after' is later than 'before'")
        searcher = self.searcher()
        self._check_model(searcher)
        try:
            answer = searcher.search(text, k, Filters(doc, after, before))
        except NoMatchingDocuments as exc:
            raise UserError(str(exc)) from None
        answer.question = question.strip() if question.strip() else text
        return answer

    def documents(self) -> list[DocInfo]:
        return self.searcher().docs

    def info(self) -> dict:
        s = self.searcher()
        return {"documents": len(s.docs), "chunks": s.snap.size, "built_at": s.snap.info.get("built_at"),
                "model": s.snap.info.get("model"), "build_seconds": s.snap.info.get("build_seconds"),
                "index_type": s.snap.info.get("index_type")}

    def context(self, chunk_id: int, chars: int = 600) -> tuple[str, str]:
        """The text around a chunk (up to `chars` on each side, cut at line ends) and the chunk's location."""
        s = self.searcher()
        rows = s.snap.chunks([chunk_id])
        if chunk_id not in rows:
            raise UserError("that passage is no longer in the index; ask again")
        r = rows[chunk_id]
        text = s.snap.document_text(r["doc_id"])
        lo = max(0, r["start"] - chars)
        hi = min(len(text), r["end"] + chars)
        if lo > 0:
            nl = text.find("\n", lo, r["start"])
            lo = nl + 1 if nl >= 0 else lo
        if hi < len(text):
            nl = text.rfind("\n", r["end"], hi)
            hi = nl if nl >= 0 else hi
        return text[lo:hi].strip(), f"{r['doc']}, {r['location']}"

    def record_feedback(self, question: str, chunk_ids: Sequence[int], user_hash: str, vote: int) -> None:
        if vote not in (1, -1):
            raise UserError("a vote is +1 or -1")
        rows = self.searcher().snap.chunks(list(chunk_ids))
        passages = [f"{rows[i]['doc']}#{rows[i]['hash'][:16]}" for i in chunk_ids if i in rows]
        self.feedback.record(question, chunk_ids, passages, user_hash, vote)

    # ------------------------------------------------------------ building
    def build(self, rebuild: bool = False, progress: Progress | None = None, hooks=None) -> BuildReport:
        """Build (incrementally unless `rebuild`) and swap the new index in; questions meanwhile use the old one."""
        if not self._building.acquire(blocking=False):
            raise BuildInProgress("an index build is already running; try again when it ends")
        try:
            report = build_index(self.cfg, self.embedder, rebuild=rebuild, progress=progress, hooks=hooks)
        except _StoreBuildInProgress as exc:
            raise BuildInProgress(str(exc)) from None
        except (BuildError, EmbeddingError) as exc:
            raise UserError(str(exc)) from None
        finally:
            self._building.release()
        self.reload()
        return report
