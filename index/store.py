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
import os
import shutil
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

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
"""
FAISS_FILE = "vectors.faiss"
SQLITE_FILE = "index.sqlite"


class IndexMissing(Exception):
    """There is no built index yet."""


class IndexMismatch(Exception):
    """The index was built with another model or dimension than the configuration asks for."""


class BuildInProgress(Exception):
    """Another build holds the lock."""


@dataclass
class DocInfo:
    """A document as the index knows it."""
    id: int
    doc: str
    title: str
    date: dt.date | None
    url: str | None
    chunks: int
    content_hash: str


class IndexRoot:
    """The folder that holds every build and the pointer to the live one."""

    def __init__(self, root: Path):
        self.root = Path(root)

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

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the build lock; raise BuildInProgress at once if someone else holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "build.lock", os.O_RDWR | os.O_CREAT, 0o644)
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
        fd = os.open(path, os.O_RDWR)
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


def write_build(build_dir: Path, info: dict, documents: Sequence[dict], chunks: Sequence[dict],
                index) -> None:
    """Write one complete build (SQLite rows and a FAISS index) into `build_dir` and fsync it."""
    import faiss
    db_path = build_dir / SQLITE_FILE
    con = sqlite3.connect(db_path)
    try:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO build_info VALUES (?, ?)", [(k, json.dumps(v)) for k, v in info.items()])
        con.executemany(
            "INSERT INTO documents VALUES (:id, :doc, :kind, :title, :date, :url, :content_hash, :text, :blocks,"
            " :removed, :n_chunks)", documents)
        con.executemany(
            'INSERT INTO chunks VALUES (:id, :doc_id, :ord, :start, :end, :tokens, :page, :section, :location,'
            ' :text, :hash)', chunks)
        con.commit()
    finally:
        con.close()
    faiss.write_index(index, str(build_dir / FAISS_FILE))
    for name in (SQLITE_FILE, FAISS_FILE):
        with open(build_dir / name, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(build_dir)


class Snapshot:
    """One published build opened read-only: the FAISS index in memory and a SQLite connection."""

    def __init__(self, path: Path):
        import faiss
        self.path = Path(path)
        if not (self.path / SQLITE_FILE).exists() or not (self.path / FAISS_FILE).exists():
            raise IndexMissing(f"index at {self.path} is incomplete")
        self.index = faiss.read_index(str(self.path / FAISS_FILE))
        self._con = sqlite3.connect(f"file:{self.path / SQLITE_FILE}?mode=ro", uri=True, check_same_thread=False)
        self._con.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self.info = {r["key"]: json.loads(r["value"]) for r in self.query("SELECT key, value FROM build_info")}

    def query(self, sql: str, params: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def documents(self) -> list[DocInfo]:
        rows = self.query("SELECT id, doc, title, date, url, n_chunks, content_hash FROM documents ORDER BY doc")
        return [DocInfo(r["id"], r["doc"], r["title"], dt.date.fromisoformat(r["date"]) if r["date"] else None,
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
            con.execute("INSERT INTO feedback (at, question, chunk_ids, passages, user_hash, vote)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), question,
                         json.dumps(list(map(int, chunk_ids))), json.dumps(list(passages)), user_hash, int(vote)))

    def all(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self._lock, sqlite3.connect(self.path) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM feedback ORDER BY id")]
