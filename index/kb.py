"""The knowledge base as the front ends see it: ask, list, build, context, feedback. Blocking; thread-safe."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
import unicodedata
from pathlib import Path
from typing import Sequence

from index.answer import Answer
from index.backends import open_root
from index.build import BuildError, BuildReport, Progress, build_index, open_snapshot
from index.config import Config
from index.embedding import Embedder, EmbeddingError
from index.search import MODES, Filters, NoMatchingDocuments, Searcher
from index.store import (AnswerStore, BuildInProgress as _StoreBuildInProgress, DocInfo, FeedbackStore, IndexDamaged,
                         IndexMismatch, IndexMissing, IndexNotWritable, StoreUnavailable, SummaryCache)

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000


class UserError(ValueError):
    """Bad input or a state the user can fix; str() is one short line to show them."""


class BuildInProgress(UserError):
    """A build is already running."""


class IndexReadOnly(UserError):
    """The index folder cannot be written: the existing index can still be asked."""


class IndexDamagedError(UserError):
    """A file of the live index cannot be read; the message says which and what to run."""


def _index_errors(method):
    """A damaged live index is one line (a UserError) for the front ends, logged once per message."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except IndexDamaged as exc:
            text = str(exc)
            if text not in self._reported:
                self._reported.add(text)
                log.error("%s", text)
            raise IndexDamagedError(text) from None
    return wrapper


class DocumentNotFound(UserError):
    """A document name matches none (or several) of the indexed documents; `suggestions` are the closest."""

    def __init__(self, message: str, suggestions: Sequence[DocInfo] = (), ambiguous: bool = False):
        super().__init__(message)
        self.suggestions = list(suggestions)
        self.ambiguous = ambiguous


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


VOTER_KEY_FILE = "voter.key"


def voter_key(index_dir: Path) -> bytes:
    """This install's secret for voter ids: 32 random bytes in `index_dir`/voter.key (mode 0600), made on first
    use. Without it a voter id cannot be linked back to a member, even by someone holding the member list."""
    path = Path(index_dir) / VOTER_KEY_FILE
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    except ValueError:
        raise UserError(f"{path} is damaged (expected 64 hex digits); delete it and a new one is made") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made by another process meanwhile
        return voter_key(index_dir)
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secret.hex() + "\n")
    return secret


def user_hash(user_id: int | str, key: bytes) -> str:
    """A stable stand-in for a user id in feedback records: HMAC-SHA256 of the id under the install's secret."""
    return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()


class KnowledgeBase:
    """One configuration's index: the live searcher is swapped atomically after each build."""

    def __init__(self, cfg: Config, embedder: Embedder | None = None):
        self.cfg = cfg
        self.embedder = embedder or Embedder(cfg.embedding)
        self.root = open_root(cfg)
        self.feedback = FeedbackStore(cfg.index_dir)
        self._searcher: Searcher | None = None
        self._checked = 0.0  # when the shared store's live build was last checked (milvus.refresh_seconds)
        self._lock = threading.Lock()
        self._building = threading.Lock()
        self._warmed = threading.Event()
        self._warm_thread: threading.Thread | None = None
        self.warm_error: str | None = None
        self.summary_cache = SummaryCache(cfg.index_dir)
        self._sentence_vectors = None  # index.summarize.SentenceVectors, made on first use
        self._voter_key: bytes | None = None
        self.answers = AnswerStore(cfg.index_dir, cfg.bot.answers_kept)
        self._reported: set[str] = set()  # damaged-index messages already logged

    # ------------------------------------------------------------ state
    @property
    def building(self) -> bool:
        return self._building.locked() or self.root.is_locked()

    def has_index(self) -> bool:
        try:
            return self.root.current() is not None
        except StoreUnavailable as exc:  # Milvus not installed or not reachable: one line, not a traceback
            raise UserError(str(exc)) from None

    def follow_live(self) -> bool:
        """Swap in the live build if another process published a newer one since it was opened (a chat
        started while a build ran); True if it did."""
        with self._lock:
            searcher = self._searcher
        current = self.root.current()
        if searcher is None or current is None or current == self._opened(searcher):
            return False
        try:
            self.reload()
        except UserError:
            return False
        return True

    @staticmethod
    def _opened(searcher: Searcher):
        """What `root.current()` named when the searcher's build was opened: its folder, or its Milvus collection."""
        snap = searcher.snap
        return snap.path.resolve() if snap.path is not None else getattr(snap, "collection", None)

    def stale_settings(self) -> str | None:
        """A note when the live index was built with other chunk settings than the configuration's, else None."""
        info = self.searcher().snap.info
        built = (info.get("max_tokens"), info.get("overlap_sentences"))
        wanted = (self.cfg.chunking.max_tokens, self.cfg.chunking.overlap_sentences)
        if None in built or built == wanted:
            return None
        return (f"the index was built with chunking.max_tokens = {built[0]}, overlap_sentences = {built[1]} "
                f"(the configuration says {wanted[0]}, {wanted[1]}); `citebot index` will update it")

    @_index_errors
    def searcher(self) -> Searcher:
        """The live searcher, opened on first use; UserError if there is no usable index."""
        with self._lock:
            if self._searcher is None:
                self._searcher = self._open()
                self._checked = time.monotonic()
            elif self.cfg.store.backend == "milvus" and time.monotonic() - self._checked >= self.cfg.milvus.refresh_seconds:
                # another process may have published a build: serve it if the alias moved
                self._checked = time.monotonic()
                live = self.root.current()
                if live is not None and live != self._opened(self._searcher):
                    log.info("a new build was published (%s); switching to it", live)
                    self._searcher = self._open()
            return self._searcher

    def _open(self) -> Searcher:
        """Open the live build without loading the model (listing documents must stay quick)."""
        try:
            return Searcher(open_snapshot(self.cfg), self.embedder, self.cfg.retrieval)
        except (IndexMissing, IndexMismatch, StoreUnavailable) as exc:
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

    @_index_errors
    def reload(self) -> None:
        """Open the newest published build and swap it in; queries already running finish on the old one."""
        new = self._open()
        with self._lock:
            old, self._searcher = self._searcher, new
        # The old snapshot is left to the garbage collector: a query may still be reading it.
        del old

    # ------------------------------------------------------------ start-up
    @property
    def ready(self) -> bool:
        """True once questions are answered without loading anything first: `warm_up` has finished (even if it
        failed: then questions report the problem as usual) or the model is already loaded."""
        return self._warmed.is_set() or self.embedder.loaded

    def warm_up(self, background: bool = True) -> threading.Thread | None:
        """Load the model (and run it once) and open the live index with its keyword index, in a daemon thread
        unless `background` is false; `ready` turns true when it is done. A second call while one runs or
        after it finished does nothing. Failures are logged and kept in `warm_error`."""
        if self._warm_thread is not None or self._warmed.is_set():
            return self._warm_thread

        def work() -> None:
            try:
                self.embedder.encode(["warm up"])
                if self.has_index():
                    searcher = self.searcher()
                    getattr(searcher.snap, "keyword", None)
            except IndexDamagedError as exc:  # logged once already; reported again when a question needs it
                self.warm_error = str(exc)
            except Exception as exc:  # reported when a question needs what failed
                self.warm_error = str(exc) or type(exc).__name__
                log.warning("warm-up: %s", self.warm_error)
            finally:
                self._warmed.set()

        if not background:
            work()
            return None
        self._warm_thread = threading.Thread(target=work, name="citebot-warm-up", daemon=True)
        self._warm_thread.start()
        return self._warm_thread

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until warm-up has finished (or `timeout` seconds); returns `ready`."""
        if self._warm_thread is not None:
            self._warm_thread.join(timeout)
        return self.ready

    # ------------------------------------------------------------ questions
    @_index_errors
    def ask(self, question: str, k: int | None = None, *, doc: str | None = None, after: dt.date | None = None,
            before: dt.date | None = None, mode: str | None = None) -> Answer:
        """Answer `question` from the live index; `mode` (dense, bm25, hybrid) overrides retrieval.mode."""
        text = clean_question(question)
        if mode is not None and mode not in MODES:
            raise UserError(f"unknown mode '{mode}'; expected one of {', '.join(MODES)}")
        if k is not None and not 1 <= k <= 50:
            raise UserError("k must be between 1 and 50")
        if after and before and after > before:
            raise UserError("'after' is later than 'before'")
        searcher = self.searcher()
        if doc is not None and not any(ch in doc for ch in "*?["):
            doc = self._resolve(searcher.docs, doc).doc  # the rule of /summary too; a glob is taken as one
        self._check_model(searcher)
        try:
            answer = searcher.search(text, k, Filters(doc, after, before), mode=mode)
        except NoMatchingDocuments as exc:
            raise UserError(str(exc)) from None
        answer.question = question.strip() if question.strip() else text
        return answer

    @_index_errors
    def documents(self) -> list[DocInfo]:
        return self.searcher().docs

    @_index_errors
    def info(self) -> dict:
        s = self.searcher()
        return {"documents": len(s.docs), "chunks": s.snap.size, "built_at": s.snap.info.get("built_at"),
                "model": s.snap.info.get("model"), "build_seconds": s.snap.info.get("build_seconds"),
                "index_type": s.snap.info.get("index_type"), "confidence_cut": s.min_score,
                "cut_calibrated": s.cfg.min_score <= 0 and bool(s.snap.calibration),
                "cut_fixed": s.cfg.min_score > 0, "calibration_version": (s.snap.calibration or {}).get("version")}

    @_index_errors
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

    def confidence_threshold(self) -> float:
        """The score the best answer sentence must reach for a confident answer, as the live searcher applies
        it (an index may carry a calibrated one), else retrieval.min_score."""
        try:
            searcher = self.searcher()
        except UserError:
            return float(self.cfg.retrieval.min_score)
        for owner in (searcher, getattr(searcher, "cfg", None)):
            value = getattr(owner, "min_score", None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return float(self.cfg.retrieval.min_score)

    def add_upload(self, name: str, data: bytes, replace: bool = False) -> str:
        """Store an uploaded document in the docs folder (safe name, type checked by content); returns its name.
        The index changes with the next build."""
        from index.uploads import UploadError, store_upload
        try:
            return store_upload(self.cfg.docs_dir, name, data, replace)
        except UploadError as exc:
            raise UserError(str(exc)) from None

    def remove_document(self, name: str) -> str:
        """Delete the document `name` stands for (see resolve_document) from the docs folder; returns its path.
        The index changes with the next build."""
        doc = self.resolve_document(name).doc
        self.delete_file(doc)
        return doc

    def delete_file(self, doc: str) -> None:
        """Delete the file `doc` (a path relative to the docs folder, never outside it), indexed or not."""
        from index.uploads import UploadError, delete_document
        try:
            delete_document(self.cfg.docs_dir, doc)
        except UploadError as exc:
            raise UserError(str(exc)) from None

    def save_answer(self, key: str, answer: Answer) -> None:
        """Keep an answer shown with buttons under `key` (see AnswerStore), for presses after a restart."""
        self.answers.put(key, answer)

    def load_answer(self, key: str) -> Answer | None:
        """The answer kept under `key`, or None when it has expired."""
        return self.answers.get(key)

    def voter_id(self, user_id: int | str) -> str:
        """The id a member's votes are stored under (see `user_hash`; the secret is read once)."""
        with self._lock:
            if self._voter_key is None:
                self._voter_key = voter_key(self.cfg.index_dir)
        return user_hash(user_id, self._voter_key)

    @_index_errors
    def record_feedback(self, question: str, chunk_ids: Sequence[int], user_hash: str, vote: int) -> None:
        """Store a vote; a member's later vote on the same answer replaces their earlier one."""
        if vote not in (1, -1):
            raise UserError("a vote is +1 or -1")
        rows = self.searcher().snap.chunks(list(chunk_ids))
        passages = [f"{rows[i]['doc']}#{rows[i]['hash'][:16]}" for i in chunk_ids if i in rows]
        import sqlite3
        try:
            self.feedback.record(question, chunk_ids, passages, user_hash, vote)
        except (OSError, sqlite3.Error) as exc:  # a read-only or full disk: the vote is lost, said in one line
            log.warning("vote not saved to %s: %s", self.feedback.path, exc)
            raise UserError("the vote could not be saved (the index folder cannot be written); "
                            "the bot's operator can see why in its log") from None

    # ------------------------------------------------------------ building
    def build(self, rebuild: bool = False, progress: Progress | None = None, hooks=None) -> BuildReport:
        """Build (incrementally unless `rebuild`) and swap the new index in; questions meanwhile use the old one."""
        if not self._building.acquire(blocking=False):
            raise BuildInProgress("an index build is already running; try again when it ends")
        try:
            report = build_index(self.cfg, self.embedder, rebuild=rebuild, progress=progress, hooks=hooks)
        except _StoreBuildInProgress as exc:
            raise BuildInProgress(str(exc)) from None
        except IndexNotWritable as exc:
            raise IndexReadOnly(str(exc)) from None
        except (BuildError, EmbeddingError, StoreUnavailable) as exc:
            raise UserError(str(exc)) from None
        finally:
            self._building.release()
        self.reload()
        self._refresh_summaries(rebuild)
        return report

    # ------------------------------------------------------------ summaries and timelines
    @_index_errors
    def resolve_document(self, name: str) -> DocInfo:
        """The indexed document `name` stands for: a path relative to the docs folder, or a unique part of a
        file name or title (matched forgivingly). DocumentNotFound (a UserError) lists the closest matches
        when it is unknown or ambiguous; a path outside the docs folder is refused."""
        return self._resolve(self.searcher().docs, name)

    def _resolve(self, docs: Sequence[DocInfo], name: str) -> DocInfo:
        import os
        from pathlib import Path
        from index.summarize import match_documents
        if not isinstance(name, str) or not name.strip():
            raise UserError("name a document (a file name or a part of its title)")
        name = name.strip()
        if len(name) > 500:
            raise UserError("that document name is too long")
        if name.startswith(("/", "~", ".")) or "/" in name or "\\" in name or os.sep in name:
            root = self.cfg.docs_dir.resolve()
            path = Path(name.replace("\\", "/")).expanduser()
            full = (path if path.is_absolute() else root / path).resolve()
            if not full.is_relative_to(root):
                raise UserError(f"'{name}' is outside the docs folder; name a document inside it")
            if full != root:
                name = full.relative_to(root).as_posix()
        matches, suggestions = match_documents(name, docs)
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(f"{d.doc} ({d.title[:60]})" for d in matches[:5])
            raise DocumentNotFound(f"'{name}' matches {len(matches)} documents: {shown}; give more of the name",
                                   matches, ambiguous=True)
        hint = f"; did you mean: {', '.join(d.doc for d in suggestions)}?" if suggestions else \
            "; list the documents with /sources or `citebot docs`"
        raise DocumentNotFound(f"no indexed document matches '{name}'{hint}", suggestions)

    @_index_errors
    def suggest_documents(self, text: str, limit: int = 25) -> list[DocInfo]:
        """Documents whose title or file name best match `text` (fuzzy), at most `limit` (for autocomplete)."""
        from index.summarize import suggest_documents
        return suggest_documents(text or "", self.searcher().docs, limit=max(0, min(limit, 25)))

    def _vectors(self):
        from index.summarize import SentenceVectors
        with self._lock:
            if self._sentence_vectors is None:
                self._sentence_vectors = SentenceVectors(self.embedder.encode)
            return self._sentence_vectors

    @_index_errors
    def summary(self, name: str, sentences: int | None = None, chars: int | None = None):
        """The extractive summary (`index.summarize.Summary`) of the document `name` (see resolve_document):
        `sentences` sentences or at most `chars` characters, cached by the document's content hash."""
        import time
        from index import summarize as sm
        started = time.perf_counter()
        if sentences is not None and not 1 <= sentences <= 50:
            raise UserError("a summary has 1 to 50 sentences")
        if chars is not None and not 100 <= chars <= 20000:
            raise UserError("a summary's length in characters must be between 100 and 20000")
        searcher = self.searcher()
        info = self._resolve(searcher.docs, name)
        document = searcher.snap.document(info.doc)
        if document is None:
            raise UserError(f"{info.doc} is no longer in the index; try again")
        cfg = sm.summary_config(self.cfg)
        params = sm.summary_params(sentences, chars, cfg)
        model = self._summary_model(searcher)
        hit = self.summary_cache.get(info.content_hash, model, params)
        if hit and all(0 <= s < e <= len(document.text) for s, e in hit["spans"]):
            return sm.summary_from_spans(document, hit["spans"], hit["total"], hit["whole"], cached=True,
                                         elapsed_ms=(time.perf_counter() - started) * 1000)
        self._check_model(searcher)
        result = sm.summarize_document(document, self._vectors(), cfg, sentences, chars)
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            self.summary_cache.put(info.content_hash, model, params, info.doc,
                                   [(s.start, s.end) for s in result.sentences], result.whole, result.total,
                                   result.elapsed_ms / 1000)
        except Exception as exc:  # a read-only or full disk costs the cache, not the answer
            log.warning("summary cache not written: %s", exc)
        return result

    def _topic(self, topic: str):
        from index import summarize as sm
        text = clean_question(topic)
        searcher = self.searcher()
        self._check_model(searcher)
        cfg = sm.summary_config(self.cfg)
        scored = sm.topic_sentences(searcher, text, self._vectors(), searcher.snap.document, cfg)
        return text, scored, cfg, searcher.min_score

    @_index_errors
    def topic_summary(self, topic: str):
        """The sentences of each document that speaks to `topic`, grouped by document, newest first
        (`index.summarize.TopicSummary`); near-duplicates collapsed."""
        import time
        from index import summarize as sm
        started = time.perf_counter()
        text, scored, cfg, min_score = self._topic(topic)
        result = sm.topic_summary(topic.strip() or text, scored, cfg, min_score)
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result

    @_index_errors
    def timeline(self, topic: str):
        """The passages relevant to `topic` in order of their document's date, undated last
        (`index.summarize.Timeline`)."""
        import time
        from index import summarize as sm
        started = time.perf_counter()
        text, scored, cfg, min_score = self._topic(topic)
        result = sm.timeline(topic.strip() or text, scored, cfg, min_score)
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result

    def _summary_model(self, searcher: Searcher) -> str:
        """The summary cache's model key: the vectors (and so the choice) depend on the model and the backend."""
        info = searcher.snap.info
        return f"{info.get('model') or self.cfg.embedding.model}:{info.get('backend', 'torch')}"

    def _refresh_summaries(self, rebuild: bool = False) -> None:
        """After a build: drop cached summaries of documents that changed or left (all of them on a rebuild)
        and make the default summary again of each changed document that had one."""
        from index import summarize as sm
        try:
            searcher = self.searcher()
            model = self._summary_model(searcher)
            live = {d.content_hash for d in searcher.docs}
            gone = self.summary_cache.prune(set() if rebuild else live, model)
            default = sm.summary_params(None, None, sm.summary_config(self.cfg))
            current = {d.doc for d in searcher.docs}
            again = sorted({e["doc"] for e in gone if e["params"] == default and e["doc"] in current})
            for doc in again:
                self.summary(doc)
            if gone:
                log.info("summaries: %d stale dropped, %d made again", len(gone), len(again))
        except Exception as exc:  # the index is built and live; a summary can still be made on request
            log.warning("summaries not refreshed after the build: %s", exc)
