"""The on-disk index: each build is a directory (FAISS + SQLite) published by an atomic symlink swap.

Layout of the index root:
    builds/<id>/vectors.faiss   the FAISS index, row i = chunk id i
    builds/<id>/index.sqlite    documents, chunks, build info (and whatever else a build stores)
    current -> builds/<id>      the live build; replaced with os.replace, so readers never see half a build
    build.lock                  held (flock) by the process that is building; the kernel frees it if it dies
    feedback.sqlite             votes from users, kept across builds
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from index.documents import date_from_iso

SCHEMA = """
CREATE TABLE build_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY, doc TEXT NOT NULL UNIQUE, kind TEXT, title TEXT, date TEXT, url TEXT,
    content_hash TEXT NOT NULL, text TEXT NOT NULL, blocks TEXT NOT NULL, removed TEXT NOT NULL,
    n_chunks INTEGER NOT NULL);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id), ord INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, tokens INTEGER NOT NULL, page INTEGER, section TEXT,
    location TEXT NOT NULL, text TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX chunks_doc ON chunks(doc_id, ord);
CREATE INDEX chunks_hash ON chunks(hash);
CREATE TABLE sentences (chunk_id INTEGER PRIMARY KEY, spans TEXT NOT NULL, vectors BLOB NOT NULL);
"""
SENTENCE_DTYPE = np.float16  # sentence vectors: unit length, half precision (cosine error < 0.001)
log = logging.getLogger(__name__)
FAISS_FILE = "vectors.faiss"
SQLITE_FILE = "index.sqlite"
CALIBRATION_FILE = "calibration.json"


class IndexMissing(Exception):
    """There is no built index yet."""


class IndexMismatch(Exception):
    """The index was built with another model or dimension than the configuration asks for."""


class StoreUnavailable(Exception):
    """The configured store cannot be opened (e.g. Milvus not installed or not reachable); the message says why."""


class BuildInProgress(Exception):
    """Another build holds the lock."""


class IndexNotWritable(Exception):
    """The index folder cannot be written (a read-only disk, no permission, a file in the way)."""


class IndexDamaged(Exception):
    """A file of the live build cannot be read; str() is the one line to show, with what to run."""


def damaged(path: Path, what: str, exc: BaseException | None = None) -> IndexDamaged:
    """The one-line error for a build file that cannot be read: the index, the file and why, what to run."""
    why = ""
    if exc is not None:
        detail = " ".join(str(exc).split())
        if "faiss" in detail.lower() or len(detail) > 80:  # FAISS errors quote its C++ source: keep the gist
            detail = "cannot be read"
        why = f": {detail or type(exc).__name__}"
    return IndexDamaged(f"the index at {path} is damaged ({what}{why}); run `citebot index --rebuild`")


def _sqlite_damage(exc: BaseException) -> bool:
    """An SQLite error caused by the file (not by a query): a damaged or foreign database."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc).lower()
    return not isinstance(exc, sqlite3.OperationalError) or any(
        w in text for w in ("malformed", "not a database", "disk i/o", "no such table", "unable to open"))


@dataclass
class DocInfo:
    """A document as the index knows it."""
    id: int
    doc: str
    title: str
    date: dt.date | None  # a `documents.YearOnly` when only the year is known (stored as "2018")
    url: str | None
    chunks: int
    content_hash: str


class IndexRoot:
    """The folder that holds every build and the pointer to the live one."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def where(self) -> str:
        """Where the live index is, for messages."""
        return str(self.root)

    @property
    def current_link(self) -> Path:
        return self.root / "current"

    def current(self) -> Path | None:
        link = self.current_link
        if not link.exists():
            return None
        return link.resolve()

    def new_build_dir(self) -> Path:
        builds = self.root / "builds"
        builds.mkdir(parents=True, exist_ok=True)
        path = builds / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def publish(self, build_dir: Path) -> None:
        """Make `build_dir` the live build in one atomic step, then remove builds older than the previous one."""
        previous = self.current()
        tmp = self.root / f".current-{uuid.uuid4().hex[:8]}"
        os.symlink(os.path.relpath(build_dir, self.root), tmp)
        os.replace(tmp, self.current_link)
        _fsync_dir(self.root)
        keep = {build_dir.resolve()} | ({previous} if previous else set())
        for old in (self.root / "builds").iterdir():
            if old.resolve() not in keep:
                shutil.rmtree(old, ignore_errors=True)

    def discard(self, build_dir: Path) -> None:
        shutil.rmtree(build_dir, ignore_errors=True)

    def open(self, current, mmap: bool = False) -> "Snapshot":
        """The build `current()` named, opened for reading (`mmap`: see `Snapshot`)."""
        return Snapshot(current, mmap=mmap)

    def vectors_config(self, cfg):
        """The vector index settings a build writes with (the configured ones: this index is the one served)."""
        return cfg

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the build lock; raise BuildInProgress at once if someone else holds it, IndexNotWritable if
        the index folder cannot be made or written."""
        if self.root.exists() and not self.root.is_dir():
            raise IndexNotWritable(f"the index folder {self.root} is a file, not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / "build.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)) or not self.root.is_dir():
                raise IndexNotWritable(f"cannot create the index folder {self.root} ({why})") from None
            raise IndexNotWritable(f"cannot write to the index folder {self.root} ({why})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise BuildInProgress(f"another build is running (pid {holder}); try again when it ends") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def is_locked(self) -> bool:
        path = self.root / "build.lock"
        if not path.exists():
            return False
        try:
            fd = os.open(path, os.O_RDONLY)  # flock needs no write access: a read-only index can be asked
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BuildWriter:
    """Writes one build into `build_dir` as it is made: documents, chunks and sentence vectors go to SQLite in
    batches (one transaction, so memory stays flat however large the corpus), then `finish` adds the build
    info and the FAISS index and fsyncs. Nothing reads a build before it is published, and a build that fails
    is discarded whole, so SQLite's journal and per-statement syncs are off while writing."""

    def __init__(self, build_dir: Path):
        self.build_dir = Path(build_dir)
        self.con = sqlite3.connect(self.build_dir / SQLITE_FILE)
        self.con.execute("PRAGMA journal_mode = OFF")
        self.con.execute("PRAGMA synchronous = OFF")
        self.con.executescript(SCHEMA)

    def documents(self, rows: Iterable[dict]) -> None:
        self.con.executemany(
            "INSERT INTO documents VALUES (:id, :doc, :kind, :title, :date, :url, :content_hash, :text, :blocks,"
            " :removed, :n_chunks)", rows)

    def chunks(self, rows: Iterable[dict]) -> None:
        self.con.executemany(
            'INSERT INTO chunks VALUES (:id, :doc_id, :ord, :start, :end, :tokens, :page, :section, :location,'
            ' :text, :hash)', rows)

    def chunk_texts(self, start: int = 0, end: int | None = None, with_ids: bool = False) -> Iterator:
        """The texts of chunks `start` to `end` (exclusive; default: all) written so far, in id order, read
        lazily; `(id, text)` pairs if `with_ids`."""
        rows = self.con.execute("SELECT id, text FROM chunks WHERE id >= ? AND id < ? ORDER BY id",
                                (start, end if end is not None else 2 ** 62))
        return (tuple(r) for r in rows) if with_ids else (r[1] for r in rows)

    def sentences(self, rows: Iterable[tuple[int, str, bytes]]) -> None:
        """(chunk id, JSON of its sentence spans, their vectors as SENTENCE_DTYPE bytes) per chunk."""
        self.con.executemany("INSERT INTO sentences VALUES (?, ?, ?)", rows)

    def finish(self, info: dict, index) -> None:
        """Write the build info and the FAISS index, commit, and fsync every file of the build."""
        import faiss
        self.con.executemany("INSERT INTO build_info VALUES (?, ?)", [(k, json.dumps(v)) for k, v in info.items()])
        self.con.commit()
        self.close()
        faiss.write_index(index, str(self.build_dir / FAISS_FILE))
        for name in (SQLITE_FILE, FAISS_FILE):
            with open(self.build_dir / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(self.build_dir)

    def close(self) -> None:
        self.con.close()


# HNSW search depth by size (vectors.ef_search = 0): EF_AT_1M * (chunks / 1M) ** EF_EXPONENT. Measured recall@10
# against exact search on the bench's questions: 0.983 at 1M chunks with 1024, 0.983 at 100k with 512 (1024
# there: 0.992 in twice the time; the depth by size gives 514); PERFORMANCE.md, "Index type by size".
EF_AT_1M, EF_EXPONENT, EF_MIN = 1024, 0.3, 128


def search_depth(n: int, cfg=None) -> int:
    """ef_search for an HNSW graph of `n` vectors: `cfg.ef_search` when set, else by size as measured."""
    if cfg is not None and cfg.ef_search > 0:
        return cfg.ef_search
    return max(EF_MIN, math.ceil(EF_AT_1M * (max(n, 1) / 1_000_000) ** EF_EXPONENT))


class VectorIndex:
    """A build's FAISS index as searchers use it (`search`, `ntotal`, `d`, `reconstruct_batch` ...).

    A filtered search (params with an id selector, e.g. one document) on an HNSW index runs exactly over the
    graph's stored vectors instead: a graph walk that may visit only allowed nodes loses results.
    """

    def __init__(self, index):
        import faiss
        self.raw = index
        self.exact = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index

    def search(self, x: np.ndarray, k: int, params=None):
        if params is not None and getattr(params, "sel", None) is not None:
            return self.exact.search(x, k, params=params)
        return self.raw.search(x, k, params=params)

    def __getattr__(self, name: str):
        return getattr(self.raw, name)


class Snapshot:
    """One published build opened read-only: the FAISS index in memory and a SQLite connection."""

    def __init__(self, path: Path, mmap: bool = False):
        """Open the build at `path`; `mmap` maps the vectors from the file instead of reading them into memory
        (for a new build, which copies each reused vector once: it then holds no second copy of the live index
        in RAM beside the one being served)."""
        import faiss
        self.path = Path(path)
        for name in (SQLITE_FILE, FAISS_FILE):
            if not (self.path / name).exists():
                raise IndexMissing(f"the index at {self.path} is incomplete ({name} is missing); "
                                   "run `citebot index --rebuild`")
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            self.index = VectorIndex(faiss.read_index(str(self.path / FAISS_FILE), flags))
        except Exception as exc:
            raise damaged(self.path, FAISS_FILE, exc) from None
        self._lock = threading.Lock()
        self._keyword = None
        self._keyword_lock = threading.Lock()
        self._chunk_docs: np.ndarray | None = None
        self._calibration: dict | None = None
        try:
            self._con = self._connect()
            self.info = {r["key"]: json.loads(r["value"]) for r in self.query("SELECT key, value FROM build_info")}
            self.has_sentences = bool(self.query(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sentences'"))
        except IndexDamaged:
            raise
        except (sqlite3.Error, ValueError) as exc:
            raise damaged(self.path, SQLITE_FILE, exc) from None
        rows = self.info.get("chunks")
        if isinstance(rows, int) and rows != self.index.ntotal:
            raise damaged(self.path, f"{FAISS_FILE} has {self.index.ntotal} vectors for {rows} passages")

    @property
    def keyword(self):
        """The build's BM25 index (`index.bm25.KeywordIndex`), loaded on first use; a build made before
        keyword search existed gets one built in memory from its chunks."""
        if self._keyword is None:
            with self._keyword_lock:
                if self._keyword is None:
                    from index.bm25 import BM25_DIR, KeywordIndex, KeywordIndexError
                    if (self.path / BM25_DIR).is_dir():
                        try:
                            self._keyword = KeywordIndex.load(self.path / BM25_DIR)
                        except KeywordIndexError:
                            raise
                        except Exception as exc:  # a truncated or edited file: numpy, JSON or OS errors
                            raise damaged(self.path, f"keyword index {BM25_DIR}", exc) from None
                    else:
                        rows = self.query("SELECT text FROM chunks ORDER BY id")
                        self._keyword = KeywordIndex.build([r["text"] for r in rows])
        return self._keyword

    def query(self, sql: str, params: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._con.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if _sqlite_damage(exc):
                    raise damaged(self.path, SQLITE_FILE, exc) from None
                raise

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def in_forked_child(self) -> None:
        """Make this snapshot usable in a process forked from the one that opened it (`index.calibration`'s
        workers): a SQLite connection must not cross a fork, so the child opens its own and new locks; the
        parent's connection is kept, unused, so that the child never closes it. The vectors and the keyword
        index stay the parent's pages, shared until written (they never are)."""
        self._inherited = self._con
        self._lock, self._keyword_lock = threading.Lock(), threading.Lock()
        self._con = self._connect()

    def _connect(self) -> sqlite3.Connection:
        """A read-only connection to the build's SQLite file, rows by name."""
        con = sqlite3.connect(f"file:{self.path / SQLITE_FILE}?mode=ro", uri=True, check_same_thread=False)
        con.row_factory = sqlite3.Row
        return con

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def documents(self) -> list[DocInfo]:
        rows = self.query("SELECT id, doc, title, date, url, n_chunks, content_hash FROM documents ORDER BY doc")
        return [DocInfo(r["id"], r["doc"], r["title"], date_from_iso(r["date"]),
                        r["url"], r["n_chunks"], r["content_hash"]) for r in rows]

    def chunks(self, ids: Sequence[int]) -> dict[int, sqlite3.Row]:
        """Chunk rows joined with their document's metadata, by chunk id."""
        if not len(ids):
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.query(
            f'SELECT c.id, c.ord, c.start, c."end", c.page, c.section, c.location, c.text, c.hash, c.doc_id,'
            f' d.doc, d.title, d.date, d.url FROM chunks c JOIN documents d ON d.id = c.doc_id'
            f' WHERE c.id IN ({marks})', [int(i) for i in ids])
        return {r["id"]: r for r in rows}

    def document_text(self, doc_id: int) -> str:
        rows = self.query("SELECT text FROM documents WHERE id = ?", (doc_id,))
        return rows[0]["text"] if rows else ""

    def document_slice(self, doc_id: int, start: int, end: int) -> str:
        """Characters [start, end) of a document's cleaned text (what lies between two chunks)."""
        if end <= start:
            return ""
        rows = self.query("SELECT substr(text, ?, ?) AS part FROM documents WHERE id = ?", (start + 1, end - start, doc_id))
        return rows[0]["part"] if rows else ""

    @property
    def calibration(self) -> dict | None:
        """The confidence calibration recorded with this build (`index.calibration`), or None."""
        if self._calibration is None:
            path = self.path / CALIBRATION_FILE
            try:
                self._calibration = json.loads(path.read_text()) if path.exists() else {}
            except (OSError, ValueError) as exc:
                log.warning("calibration of %s unreadable (%s); using the default confidence cut", self.path, exc)
                self._calibration = {}
        return self._calibration or None

    def document(self, doc: str):
        """The cleaned `Document` `doc` (path relative to the docs folder) as this build stored it, or None."""
        from index.documents import Block, Document
        rows = self.query("SELECT doc, kind, title, date, url, text, blocks, removed FROM documents WHERE doc = ?",
                          (doc,))
        if not rows:
            return None
        r = rows[0]
        return Document(doc=r["doc"], path=Path(self.info.get("docs_dir") or ".") / r["doc"], kind=r["kind"],
                        title=r["title"], date=date_from_iso(r["date"]),
                        url=r["url"], text=r["text"], blocks=[Block(*b) for b in json.loads(r["blocks"])],
                        removed=json.loads(r["removed"]))

    def sentence_rows(self, ids: Sequence[int]) -> dict[int, tuple[str, bytes]]:
        """The stored (spans JSON, vector bytes) of chunk ids, as written (for reuse by the next build)."""
        if not self.has_sentences or not len(ids):
            return {}
        out = {}
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            rows = self.query(f"SELECT chunk_id, spans, vectors FROM sentences WHERE chunk_id IN "
                              f"({','.join('?' * len(part))})", part)
            out.update({r["chunk_id"]: (r["spans"], r["vectors"]) for r in rows})
        return out

    def sentences(self, ids: Sequence[int]) -> dict[int, tuple[list[tuple[int, int]], np.ndarray]]:
        """Sentence spans and unit vectors (float32) of chunk ids, pooled at build time; builds made before
        they were stored have none."""
        out = {}
        for chunk_id, (spans, blob) in self.sentence_rows(ids).items():
            pairs = [tuple(s) for s in json.loads(spans)]
            vectors = (np.frombuffer(blob, dtype=SENTENCE_DTYPE).astype(np.float32).reshape(len(pairs), -1)
                       if pairs else np.zeros((0, self.index.d), dtype=np.float32))
            out[chunk_id] = (pairs, vectors)
        return out

    def chunk_doc_ids(self) -> np.ndarray:
        """Document id of every chunk, indexed by chunk id (read once)."""
        if self._chunk_docs is None:
            rows = self.query("SELECT id, doc_id FROM chunks ORDER BY id")
            out = np.full(self.size, -1, dtype=np.int64)
            for r in rows:
                out[r["id"]] = r["doc_id"]
            self._chunk_docs = out
        return self._chunk_docs

    def dense(self, qvec: np.ndarray, k: int, doc_ids: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the `k` chunks nearest to `qvec`, within the documents `doc_ids` if given."""
        import faiss
        k = min(k, self.size)
        if k <= 0:
            return []
        params = None
        if doc_ids is not None:
            mask = np.isin(self.chunk_doc_ids(), np.asarray(doc_ids, dtype=np.int64))
            ids = np.flatnonzero(mask).astype(np.int64)
            if not len(ids):
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))
            k = min(k, len(ids))
        scores, ids = self.index.search(qvec.reshape(1, -1).astype(np.float32), k, params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def dense_many(self, qvecs: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """`dense` for many question vectors in one FAISS search (no document filter): calibrating a build asks
        550 questions, and one search of them all took 0.05 s on SciFact against 0.8 s one by one."""
        k = min(k, self.size)
        if k <= 0 or not len(qvecs):
            return [[] for _ in qvecs]
        scores, ids = self.index.search(np.asarray(qvecs, dtype=np.float32).reshape(len(qvecs), -1), k)
        return [[(int(i), float(s)) for i, s in zip(row_ids, row) if i >= 0] for row_ids, row in zip(ids, scores)]

    def chunk_ids_by_hash(self, hashes: Sequence[str]) -> dict[str, int]:
        """The lowest chunk id holding each of `hashes` (content hashes of chunk texts) that this build has."""
        out: dict[str, int] = {}
        hashes = list(hashes)
        for i in range(0, len(hashes), 900):
            part = hashes[i:i + 900]
            rows = self.query(f"SELECT hash, MIN(id) AS id FROM chunks WHERE hash IN ({','.join('?' * len(part))})"
                              " GROUP BY hash", part)
            out.update({r["hash"]: r["id"] for r in rows})
        return out

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of chunk ids (reconstructed from the FAISS index)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros((0, self.index.d), dtype=np.float32)
        return self.index.reconstruct_batch(ids)


class FeedbackStore:
    """Votes on answers (question, passage ids, a hash of the user id), kept across builds."""

    def __init__(self, root: Path):
        self.path = Path(root) / "feedback.sqlite"
        self._lock = threading.Lock()

    def record(self, question: str, chunk_ids: Sequence[int], passages: Sequence[str], user_hash: str,
               vote: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, sqlite3.connect(self.path) as con:
            con.execute("CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY, at TEXT NOT NULL,"
                        " question TEXT NOT NULL, chunk_ids TEXT NOT NULL, passages TEXT NOT NULL,"
                        " user_hash TEXT NOT NULL, vote INTEGER NOT NULL)")
            ids = json.dumps(list(map(int, chunk_ids)))
            # one vote per member and answer: 👍 then 👎 keeps only the 👎
            con.execute("DELETE FROM feedback WHERE question = ? AND chunk_ids = ? AND user_hash = ?",
                        (question, ids, user_hash))
            con.execute("INSERT INTO feedback (at, question, chunk_ids, passages, user_hash, vote)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), question,
                         ids, json.dumps(list(passages)), user_hash, int(vote)))

    def all(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self._lock, sqlite3.connect(self.path) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM feedback ORDER BY id")]


class SummaryCache:
    """Extractive summaries of whole documents, kept across builds in summaries.sqlite under the index root.

    Keyed by the document's content hash, the model and the summary's parameters; a value is the chosen
    sentence spans (offsets into the cleaned text), so a summary is re-read from the live build, never stored
    as text of its own. Entries of documents no longer in the live build are pruned after each build.
    """

    def __init__(self, root: Path):
        self.path = Path(root) / "summaries.sqlite"
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=10)
        con.execute("CREATE TABLE IF NOT EXISTS summaries (content_hash TEXT NOT NULL, model TEXT NOT NULL,"
                    " params TEXT NOT NULL, doc TEXT NOT NULL, spans TEXT NOT NULL, whole INTEGER NOT NULL,"
                    " total INTEGER NOT NULL, seconds REAL NOT NULL, at TEXT NOT NULL,"
                    " PRIMARY KEY (content_hash, model, params))")
        return con

    def _heal(self, exc: sqlite3.DatabaseError) -> bool:
        """A cache that cannot be read is moved aside (summaries.sqlite.damaged) and made again empty: True
        if that was done. Its entries are made again on request."""
        text = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError) and not ("malformed" in text or "not a database" in text):
            return False  # locked, read-only, disk full: the file is fine
        if not self.path.exists():
            return False
        aside = self.path.with_name(self.path.name + ".damaged")
        try:
            os.replace(self.path, aside)
            for extra in ("-journal", "-wal", "-shm"):
                Path(f"{self.path}{extra}").unlink(missing_ok=True)
        except OSError:
            return False
        log.warning("the summary cache %s could not be read (%s); moved to %s and started again",
                    self.path, exc, aside.name)
        return True

    def _run(self, work, default=None):
        """`work(con)` under the lock; a damaged cache is healed and the work done once more on the new one."""
        for attempt in (1, 2):
            try:
                with self._lock, closing(self._connect()) as con, con:
                    return work(con)
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or not self._heal(exc):
                    raise
        return default

    def get(self, content_hash: str, model: str, params: str) -> dict | None:
        """{"spans": [[start, end], ...], "whole": bool, "total": int, "seconds": float} or None."""
        if not self.path.exists():
            return None
        row = self._run(lambda con: con.execute(
            "SELECT spans, whole, total, seconds FROM summaries WHERE content_hash = ? AND model = ? AND"
            " params = ?", (content_hash, model, params)).fetchone())
        if row is None:
            return None
        try:
            return {"spans": [tuple(s) for s in json.loads(row[0])], "whole": bool(row[1]), "total": int(row[2]),
                    "seconds": float(row[3])}
        except (ValueError, TypeError):  # an edited row: made again
            return None

    def put(self, content_hash: str, model: str, params: str, doc: str, spans: Sequence[tuple[int, int]],
            whole: bool, total: int, seconds: float) -> None:
        self._run(lambda con: con.execute(
            "INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (content_hash, model, params, doc, json.dumps([list(s) for s in spans]), int(whole), int(total),
             float(seconds), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))))

    def entries(self) -> list[dict]:
        """Every cached summary's key and document, for pruning and reports."""
        if not self.path.exists():
            return []
        rows = self._run(lambda con: con.execute("SELECT content_hash, model, params, doc FROM summaries").fetchall())
        return [{"content_hash": h, "model": m, "params": p, "doc": d} for h, m, p, d in rows or []]

    def prune(self, live_hashes: set[str] | frozenset[str], model: str | None = None) -> list[dict]:
        """Remove entries whose content hash is not in `live_hashes` (or made with another model than
        `model`, if given); returns the removed entries."""
        gone = [e for e in self.entries()
                if e["content_hash"] not in live_hashes or (model is not None and e["model"] != model)]
        if gone:
            self._run(lambda con: con.executemany(
                "DELETE FROM summaries WHERE content_hash = ? AND model = ? AND params = ?",
                [(e["content_hash"], e["model"], e["params"]) for e in gone]))
        return gone


class AnswerStore:
    """Answers shown with buttons (Discord), kept by key in answers.sqlite under the index root so that their
    buttons keep working after a restart; only the newest `keep` answers are kept (zlib-compressed JSON,
    ~4 KB each)."""

    def __init__(self, root: Path, keep: int = 2000):
        self.path = Path(root) / "answers.sqlite"
        self.keep = max(1, int(keep))
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # a lost answer costs its buttons, nothing else
            con.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, at TEXT NOT NULL,"
                        " data BLOB NOT NULL)")
            self._con = con
        return self._con

    def put(self, key: str, answer) -> None:
        """Keep `answer` (an index.answer.Answer) under `key`; drop the oldest beyond `keep`."""
        import dataclasses
        import zlib

        def plain(value):
            return value.isoformat() if isinstance(value, dt.date) else str(value)
        data = zlib.compress(json.dumps(dataclasses.asdict(answer), default=plain).encode(), 6)
        with self._lock:
            con = self._connect()
            with con:
                con.execute("INSERT OR REPLACE INTO answers (key, at, data) VALUES (?, ?, ?)",
                            (key, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), data))
                con.execute("DELETE FROM answers WHERE rowid <= (SELECT MAX(rowid) FROM answers) - ?", (self.keep,))

    def get(self, key: str):
        """The answer kept under `key`, or None (never kept, or dropped as one of the oldest)."""
        import zlib
        from index.answer import Answer, Passage
        if not self.path.exists():
            return None
        with self._lock:
            row = self._connect().execute("SELECT data FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            raw = json.loads(zlib.decompress(row[0]))
            passages = []
            for p in raw.pop("passages"):
                p["date"] = date_from_iso(p.get("date"))  # "2018": a YearOnly
                p["answer_spans"] = [tuple(s) for s in p.get("answer_spans", [])]
                p["parts"] = [tuple(x) for x in p.get("parts", [])]
                passages.append(Passage(**p))
            return Answer(passages=passages, **raw)
        except (ValueError, TypeError, KeyError, zlib.error):  # written by another version: as if expired
            return None

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
