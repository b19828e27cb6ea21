"""Incremental build: load docs, chunk, embed only new chunk texts (reused by content hash), publish atomically."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import json
import logging
import math
import os
import shutil
import sqlite3
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from index.chunking import Chunk, chunk_document, chunk_terms
from index.config import Config
from index.documents import Document, DocumentStream, LoadError, chars_read
from index.embedding import PIECE_DTYPE, Embedder
from index.backends import open_root
from index.bm25 import BM25_DIR, KeywordBuilder
from index.store import (CALIBRATION_FILE, SENTENCE_DTYPE, BuildWriter, IndexMismatch, IndexMissing, IndexRoot,
                         Snapshot, search_depth)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)
CHUNKER_VERSION = 1
SENTENCE_VECTORS = "late-pooled-1"  # how the stored sentence vectors were made (Embedder.encode_passages)
EMBED_BATCH = 2048  # chunks embedded (or copied from the previous build) and written at a time
CLEAN_SHARE = 0.4  # of a file's part of the chunking progress bar: cleaning it (the rest: chunking it)


class BuildError(Exception):
    """The build cannot start or finish; the message says why. The previous index is untouched."""


@dataclass
class BuildReport:
    """What a build did, for the one summary line and for the bot's /reindex reply."""
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # warnings: "file: reason; skipped"
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0
    build_dir: Path | None = None
    calibration: float | None = None  # the confidence cut calibrated for this build
    bytes_written: int = 0  # size of the new build when it failed (for the disk-full message) or was written

    def summary_line(self) -> str:
        skipped = sum(1 for w in self.skipped if w.endswith("skipped"))  # others: metadata left out
        return (f"files: {len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed, "
                f"{skipped} skipped, {len(self.unchanged)} unchanged; chunks: {self.embedded} embedded, "
                f"{self.reused} reused, {self.chunks} in index; "
                + (f"confidence cut {self.calibration:.3f} (calibrated); " if self.calibration is not None else "")
                + f"{self.seconds:.1f} s")


def _folder_bytes(path: Path) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC (or EDQUOT) however it surfaces: an OSError, SQLite's "database or disk is full", or a FAISS
    write error naming it (chained exceptions included)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc).lower()
        if "disk is full" in text or "no space left" in text or "disk quota" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _mb(n: int) -> str:
    return f"{n / 1e3:.0f} kB" if n < 1e6 else f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _no_space(index_dir: Path, report: "BuildReport | None") -> str:
    """The one line for a build stopped by a full disk: where, how much it needed, how much is free."""
    written = report.bytes_written if report else 0
    previous = 0
    current = IndexRoot(index_dir).current()
    if current is not None:
        previous = _folder_bytes(current)
    try:
        free = shutil.disk_usage(index_dir).free
    except OSError:
        free = 0
    need = (f"it needed about {_mb(max(previous, written))} (the previous build's size)" if previous >= written
            else f"it needed more than the {_mb(written)} it had written")
    return (f"no space left on the disk of the index folder {index_dir} ({_mb(free)} free): {need}; "
            f"the previous index is unchanged. Free some space and run `citebot index` again")


def build_info(cfg: Config, dim: int, index_type: str) -> dict:
    return {
        "model": cfg.embedding.model,
        "backend": cfg.embedding.backend,
        "dim": dim,
        "max_tokens": cfg.chunking.max_tokens,
        "overlap_sentences": cfg.chunking.overlap_sentences,
        "chunker_version": CHUNKER_VERSION,
        "sentence_vectors": SENTENCE_VECTORS,
        "index_type": index_type,
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def new_vector_index(n: int, dim: int, cfg=None):
    """An empty inner-product index for `n` unit vectors (so scores are cosines) and its type name.

    Exact search ("flat") below `cfg.exact_below` chunks, HNSW from there on (see PERFORMANCE.md, for the
    measurements behind the defaults); `cfg.storage = "float16"` halves the memory ("flat-fp16", "hnsw-fp16").
    Vectors are added in batches as they are made, so the build never holds a second copy of them.
    """
    import faiss
    from index.config import VectorsConfig
    cfg = cfg or VectorsConfig()
    half = cfg.storage == "float16"
    ip = faiss.METRIC_INNER_PRODUCT
    if n < cfg.exact_below:
        kind = "flat"
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, ip) if half else faiss.IndexFlatIP(dim)
    else:
        kind = "hnsw"
        index = (faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, cfg.hnsw_m, ip) if half
                 else faiss.IndexHNSWFlat(dim, cfg.hnsw_m, ip))
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = search_depth(n, cfg)  # saved in the index file: the build decides
    if not index.is_trained:  # the fp16 scalar quantiser has nothing to learn
        index.train(np.zeros((1, dim), dtype=np.float32))
    return index, kind + ("-fp16" if half else "")


def make_faiss_index(vectors: np.ndarray, dim: int, cfg=None):
    """`new_vector_index` for `vectors`, with them added."""
    index, kind = new_vector_index(len(vectors), dim, cfg)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index, kind


# Cleaning and chunking go to worker processes (one per core, or `embedding.threads` of them when set; at most
# CHUNK_WORKERS_MAX) when a corpus has at least CHUNK_IN_WORKERS_CHARS characters: below that the build's own
# process is done about as soon. Files go to them CHUNK_BATCH_CHARS at a time, at most two batches a worker in
# flight, so memory stays flat. Measured in PERFORMANCE.md ("Build speed").
CHUNK_IN_WORKERS_CHARS = 1_000_000
CHUNK_WORKERS_MAX = 8
CHUNK_BATCH_CHARS = 250_000
# A batch whose result has not come CHUNK_TIMEOUT seconds plus one second a CHUNK_SLOWEST characters after the
# build began to wait for it stops the build (a worker stuck on a file, or deadlocked): a batch takes about 0.1 s
# (1-2M characters a second a worker on SciFact), so this is hundreds of times what a slow file needs
CHUNK_TIMEOUT = 300.0
CHUNK_SLOWEST = 10_000


class SentenceSpans:
    """Each chunk's sentence spans (`Chunk.sentences`), kept from chunking until the chunk is embedded: two
    32-bit offsets a sentence (about 70 MB for a million chunks), not Python tuples."""

    def __init__(self):
        self._flat = array("i")
        self._at = array("q", [0])

    def add(self, spans) -> None:
        """The next chunk's spans."""
        for s, e in spans:
            self._flat.append(s)
            self._flat.append(e)
        self._at.append(len(self._flat))

    def __getitem__(self, i: int) -> list[tuple[int, int]]:
        flat = self._flat[self._at[i]:self._at[i + 1]]
        return list(zip(flat[::2], flat[1::2]))


class PieceSpool:
    """Each chunk's word pieces (`Chunk.pieces`), kept from chunking until the chunk is embedded, in an unnamed
    temporary file in `folder` (gone when closed, or when the process ends): per chunk its sentences' counts
    and then their ids, one after another (PIECE_DTYPE: 2 bytes a piece); in memory only where each chunk's
    record starts and its length (12 bytes a chunk)."""

    def __init__(self, folder: Path):
        import tempfile
        self._file = tempfile.TemporaryFile(dir=folder)
        self._at = array("q")
        self._length = array("i")  # in bytes; 0: the chunk has no pieces
        self._unread = False  # written since the last flush

    def add(self, pieces: tuple[bytes, ...] | None) -> None:
        """The next chunk's pieces (None: it has none)."""
        self._at.append(self._file.tell())
        if pieces is None or len(pieces) > np.iinfo(PIECE_DTYPE).max:  # (thousands of sentences without a piece)
            self._length.append(0)
            return
        head = np.array([len(pieces), *(len(b) // PIECE_DTYPE.itemsize for b in pieces)], dtype=PIECE_DTYPE)
        record = head.tobytes() + b"".join(pieces)
        self._file.write(record)
        self._length.append(len(record))
        self._unread = True

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Chunk i's (ids, each sentence's count), or None."""
        if not self._length[i]:
            return None
        if self._unread:
            self._file.flush()  # written ahead of os.pread
            self._unread = False
        record = np.frombuffer(os.pread(self._file.fileno(), self._length[i], self._at[i]), dtype=PIECE_DTYPE)
        n = int(record[0])
        return record[1 + n:], record[1:1 + n]

    def close(self) -> None:
        """Let the file go; what is still buffered is not written (closing must not fail on a full disk, where
        a failed build is being cleaned up)."""
        with contextlib.suppress(OSError):
            self._file.close()


def fork_workers(cfg: Config) -> int:
    """How many forked worker processes a build may use: one per CPU this process may run on, or
    `embedding.threads` when set, at most CHUNK_WORKERS_MAX; 1 (none: the build's own process) outside Linux
    or where the program chose another way to start processes (a spawned worker would import the caller's
    main module again: a script without a __main__ guard would build again in each)."""
    import multiprocessing
    if sys.platform != "linux" or multiprocessing.get_start_method(allow_none=True) not in (None, "fork"):
        return 1
    cores = len(os.sched_getaffinity(0)) or 1  # the CPUs this process may run on (a container's, not the host's)
    cores = min(cores, cfg.embedding.threads) if cfg.embedding.threads > 0 else cores
    return max(1, min(cores, CHUNK_WORKERS_MAX))


def chunk_workers(cfg: Config, embedder, documents: DocumentStream) -> int:
    """How many processes clean and chunk this corpus (`fork_workers`): 1 (this one) also for a small corpus
    or with an embedder whose word-piece counting a worker cannot repeat from the configuration (one that is
    not, or does not wrap, an `Embedder` of `cfg.embedding`)."""
    if (documents.chars < CHUNK_IN_WORKERS_CHARS or len(documents) < 2
            or getattr(embedder, "cfg", None) != cfg.embedding):
        return 1
    return fork_workers(cfg)


def _chunk_in_workers(cfg: Config, documents: DocumentStream, workers: int, analyzer
                      ) -> Iterator[tuple[Document | None, list[Chunk], list[str] | None, int]]:
    """`index.chunking.clean_and_chunk` over the spooled files in `workers` processes, in file order: (Document,
    chunks, each chunk's keyword terms by `analyzer` joined by spaces, characters read) per file, or (None, [],
    None, characters read) for a file that cleaning left empty (its warning added to the stream's, as the
    stream itself does). A worker that dies, or a batch that takes longer than its time (CHUNK_TIMEOUT), stops
    the build with a BuildError naming what happened (and the file a stuck worker was on)."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from index import chunking
    from index.workers import end_processes

    def batches() -> Iterator[tuple[list[tuple], int]]:
        batch, size = [], 0
        for record in documents.records():
            batch.append(record)
            size += chars_read(record[2])
            if size >= CHUNK_BATCH_CHARS:
                yield batch, size
                batch, size = [], 0
        if batch:
            yield batch, size

    # forked (why and where: `fork_workers`). The workers run only the cleaning and chunking code and a
    # tokenizer of their own, so no lock another thread of this process holds (the encoder's, the bot's) is
    # taken in them
    context = multiprocessing.get_context("fork")
    busy = context.Array("q", [-1] * (2 * workers))  # each worker's batch number and the file of it it is on
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=chunking.start_worker,
                               initargs=(cfg.embedding, documents.common, cfg.chunking.max_tokens,
                                         cfg.chunking.overlap_sentences, analyzer, busy, context.Value("i", 0)))
    todo, pending = enumerate(batches()), deque()  # pending: (batch number, its files' names, its time, future)

    def submit() -> bool:
        for number, (batch, size) in todo:
            pending.append((number, [record[0] for record in batch], CHUNK_TIMEOUT + size / CHUNK_SLOWEST,
                            pool.submit(chunking.clean_and_chunk, batch, number)))
            return True
        return False

    def take(number: int, names: list[str], seconds: float, future) -> list[tuple]:
        try:
            return future.result(timeout=seconds)
        except TimeoutError:  # a worker stuck (on a file, or deadlocked): this build stops
            marks = busy[:]  # the file of this batch a worker is on now (as it last said), if any
            files = [names[i] for b, i in zip(marks[::2], marks[1::2]) if b == number and 0 <= i < len(names)]
            if files:
                raise BuildError(f"cleaning and chunking {', '.join(files)} took more than {seconds:.0f} s and was "
                                 f"stopped; the index is unchanged. Check that file or move it out of the documents "
                                 f"folder, then build again") from None
            raise BuildError(f"a process chunking the documents made no progress for {seconds:.0f} s and was "
                             f"stopped; the index is unchanged. Build again; with embedding.threads = 1 the build "
                             f"chunks in its own process") from None

    try:
        try:
            while len(pending) < 2 * workers and submit():
                pass
            while pending:
                results = take(*pending.popleft())
                submit()  # keep the workers fed while this batch is written
                for rel, document, chunks, terms, raw in results:
                    if document is None:
                        documents.warnings.append(f"{rel}: {chunks}; skipped")
                        yield None, [], None, raw
                    else:
                        yield document, chunks, terms, raw
        except BrokenProcessPool:  # a worker killed (out of memory?), seen by a result or a submit: this build stops
            raise BuildError("a process chunking the documents ended unexpectedly (out of memory?); the index is "
                             "unchanged. Build again; with embedding.threads = 1 the build chunks in its own "
                             "process") from None
    except BaseException:  # stopped (a dead or stuck worker, an error while writing, Ctrl-C): end the workers now,
        end_processes(pool)  # rather than wait for batches in flight, which a stuck worker would never finish
        raise
    pool.shutdown()


def build_index(cfg: Config, embedder: Embedder, rebuild: bool = False, progress: Progress | None = None,
                hooks: dict[str, Callable[[], None]] | None = None) -> BuildReport:
    """Build the index of cfg.docs_dir into a new directory and publish it; reuse vectors unless `rebuild`.

    `hooks` (for tests) are called at named points: "loaded", "embedded", "written".
    """
    started = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    hooks = hooks or {}
    limit = getattr(embedder, "max_tokens", None)
    if isinstance(limit, int) and cfg.chunking.max_tokens > limit:
        raise BuildError(f"config: chunking.max_tokens = {cfg.chunking.max_tokens} is more than model "
                         f"{cfg.embedding.model} reads ({limit} word pieces besides its 2 special tokens); "
                         f"expected 1 to {limit}")
    root = open_root(cfg)
    with root.lock():
        report = BuildReport()
        progress("loading", 0, 0)
        try:
            # read every file now; each document is cleaned and chunked in turn below, then let go
            documents = DocumentStream(cfg.docs_dir, spool_dir=root.root, exclude=[root.root])
        except LoadError as exc:
            raise BuildError(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise BuildError(_no_space(root.root, None)) from None
            raise
        try:
            report.skipped = documents.warnings
            if not len(documents):
                raise BuildError(f"no readable documents in {cfg.docs_dir} (supported: .txt .md .html .htm .pdf .docx)")
            hooks.get("loaded", lambda: None)()
            return _build(cfg, embedder, root, documents, report, rebuild, progress, hooks, started)
        except (OSError, sqlite3.OperationalError, RuntimeError) as exc:
            if _is_disk_full(exc):
                raise BuildError(_no_space(root.root, report)) from None
            raise
        finally:
            documents.close()


def _build(cfg: Config, embedder: Embedder, root: IndexRoot, documents: DocumentStream, report: BuildReport,
           rebuild: bool, progress: Progress, hooks: dict[str, Callable[[], None]], started: float) -> BuildReport:
    """The rest of `build_index`, under its lock, once the files have been read."""
    old = None
    current = root.current()
    if current is not None:
        try:
            old = root.open(current, mmap=True)
        except Exception as exc:  # a damaged old build must not stop a new one
            log.warning("previous index unreadable (%s); building from scratch", exc)
    try:
        old_docs = {d.doc: d for d in old.documents()} if old else {}
        reuse_ok = (bool(old) and not rebuild and old.info.get("model") == cfg.embedding.model
                    and old.info.get("backend", "torch") == cfg.embedding.backend
                    and old.info.get("sentence_vectors") == SENTENCE_VECTORS)
        if old and not rebuild and not reuse_ok and old.info.get("sentence_vectors") != SENTENCE_VECTORS:
            log.warning("the previous index has no sentence vectors: every chunk is embedded again (once)")
        elif old and not rebuild and not reuse_ok:
            log.warning("model or backend changed (%s/%s to %s/%s): every chunk is embedded again",
                        old.info.get("model"), old.info.get("backend", "torch"), cfg.embedding.model,
                        cfg.embedding.backend)

        build_dir = root.new_build_dir()
        try:
            writer = BuildWriter(build_dir)
        except BaseException:
            root.discard(build_dir)
            raise
    except BaseException:
        if old is not None:
            old.close()
        raise
    spool = None
    try:
        # chunk each document and write its rows at once; only the chunks' hashes and sentence spans stay in memory
        hashes: list[str] = []
        sentences = SentenceSpans()
        spool = PieceSpool(build_dir)
        keywords = KeywordBuilder()  # the keyword index of the same chunks, made as they come
        seen: set[str] = set()
        # progress in characters of text read, within each file too: cleaning takes CLEAN_SHARE of a file's
        # part of the bar, chunking the rest (measured on a 50 MB file: 25 s cleaning, 40 s chunking)
        n_chars, done_chars = max(documents.chars, 1), 0

        def at(position: float) -> None:
            progress("chunking", min(int(position), n_chars), n_chars)
        progress("chunking", 0, n_chars)
        documents.on_clean = lambda share: at(done_chars + CLEAN_SHARE * documents.current_chars * share)

        def chunked() -> Iterator[tuple[Document, list[Chunk], list[str], int]]:
            """Each document cleaned and chunked, with its chunks' keyword terms (`chunk_terms`: joined by
            spaces) and the characters read for it: in worker processes when the corpus is large enough to
            repay them (`chunk_workers`), else here, with progress inside files."""
            nonlocal done_chars
            workers = chunk_workers(cfg, embedder, documents)
            if workers > 1:
                with contextlib.closing(_chunk_in_workers(cfg, documents, workers, keywords.analyzer)) as results:
                    for document, chunks, terms, raw in results:
                        if document is None:  # skipped: its characters still count towards the bar
                            done_chars += raw
                            continue
                        yield document, chunks, terms, raw
                return
            for document in documents:
                raw, length = documents.current_chars, max(len(document.text), 1)
                chunks = chunk_document(
                    document, embedder, cfg.chunking.max_tokens, cfg.chunking.overlap_sentences,
                    progress=lambda offset: at(done_chars + raw * (CLEAN_SHARE + (1 - CLEAN_SHARE) * offset / length)))
                yield document, chunks, chunk_terms(chunks, keywords.analyzer), raw

        stream = chunked()
        try:
            for doc_id, (document, chunks, terms, raw) in enumerate(stream):
                seen.add(document.doc)
                before = old_docs.get(document.doc)
                if before is None:
                    report.added.append(document.doc)
                elif before.content_hash != document.content_hash:
                    report.changed.append(document.doc)
                else:
                    report.unchanged.append(document.doc)
                chunk_hashes = [c.hash for c in chunks]
                writer.documents([{
                    "id": doc_id, "doc": document.doc, "kind": document.kind, "title": document.title,
                    "date": document.date.isoformat() if document.date else None, "url": document.url,
                    "content_hash": document.content_hash, "text": document.text,
                    "blocks": json.dumps([[b.start, b.end, b.page, b.section, b.line] for b in document.blocks]),
                    "removed": json.dumps(document.removed), "n_chunks": len(chunks)}])
                writer.chunks({"id": len(hashes) + n, "doc_id": doc_id, "ord": c.ord, "start": c.start,
                               "end": c.end, "tokens": c.tokens, "page": c.page, "section": c.section,
                               "location": c.location, "text": c.text, "hash": h}
                              for n, (c, h) in enumerate(zip(chunks, chunk_hashes)))
                hashes.extend(chunk_hashes)
                for c, chunk_line in zip(chunks, terms):
                    sentences.add(c.sentences)
                    spool.add(c.pieces)
                    keywords.add_terms(chunk_line.split())
                done_chars += raw
                at(done_chars)
        finally:  # on an error or Ctrl-C the chunking workers end now, not when the traceback is let go
            stream.close()
        for warning in report.skipped:  # the front end shows them (once); logged here for -v
            log.info("%s", warning)
        n_docs = len(seen)
        if not n_docs:
            raise BuildError(f"no readable documents in {cfg.docs_dir}: "
                             + "; ".join(report.skipped[:3]) + ("; …" if len(report.skipped) > 3 else ""))
        progress("chunking", n_chars, n_chars)
        report.removed = sorted(d for d in old_docs if d not in seen)
        del seen
        report.chunks = len(hashes)

        # the keyword index of the same chunks, saved and let go before embedding
        progress("keywords", 0, 0)
        keywords.finish().save(build_dir / BM25_DIR)
        del keywords

        reusable: dict[str, int] = {}
        old_hashes = old.size if old is not None else -1
        if reuse_ok:
            reusable = old.chunk_ids_by_hash(sorted(set(hashes)))
        # with nothing to embed, the model need not load: the old build knows the dimension
        dim = int(old.info["dim"]) if reuse_ok and all(h in reusable for h in hashes) else embedder.dim

        # the same chunks as the build before (nothing embedded, added or removed): its calibration still holds
        unchanged = bool(reuse_ok and all(h in reusable for h in hashes) and old_hashes == len(hashes))
        old_calibration = old.calibration if old is not None else None
        index, index_type = new_vector_index(len(hashes), dim, root.vectors_config(cfg.vectors))
        _embed_and_write(hashes, sentences, spool, reusable, old, embedder, index, writer, report, progress)
        spool.close()
        del hashes, sentences, reusable
        if old is not None:
            old.close()
            old = None
        hooks.get("embedded", lambda: None)()

        progress("writing", 0, 1)
        report.bytes_written = _folder_bytes(build_dir)
        report.seconds = time.perf_counter() - started
        info = build_info(cfg, dim, index_type)
        vectors = dataclasses.asdict(cfg.vectors)
        if hasattr(index, "hnsw"):
            vectors["ef_search"] = int(index.hnsw.efSearch)  # the depth in use, also when chosen by size
        info.update({"documents": n_docs, "chunks": report.chunks, "build_seconds": round(report.seconds, 2),
                     "docs_dir": str(cfg.docs_dir), "vectors": vectors})
        writer.finish(info, index)
        del index
        hooks.get("written", lambda: None)()
        if cfg.retrieval.calibrate:
            progress("calibrating", 0, 0)
            report.calibration = _calibrate(cfg, embedder, build_dir, old_calibration if unchanged else None)
        root.publish(build_dir)
    except BaseException:
        writer.close()
        if spool is not None:
            spool.close()
        report.bytes_written = max(report.bytes_written, _folder_bytes(build_dir))
        root.discard(build_dir)
        raise
    finally:
        if old is not None:
            old.close()
    report.build_dir = build_dir
    report.seconds = time.perf_counter() - started
    progress("done", 1, 1)
    return report


def _calibrate(cfg: Config, embedder: Embedder, build_dir: Path, previous: dict | None) -> float | None:
    """Calibrate the new build's confidence cut (`index.calibration`) and record it in the build; the previous
    build's result when the chunks, the retrieval settings and the calibration's version are the same."""
    from index import calibration
    from index.search import Searcher
    from index.bm25 import B, K1
    settings = {**dataclasses.asdict(cfg.retrieval), "min_score": None, "bm25": [K1, B]}
    if previous and previous.get("version") == calibration.VERSION and previous.get("settings") == settings:
        result = previous
    else:
        snap = Snapshot(build_dir)
        try:
            result = calibration.calibrate(Searcher(snap, embedder, dataclasses.replace(cfg.retrieval, min_score=0.0)),
                                           workers=fork_workers(cfg))
        finally:
            snap.close()
        result["settings"] = settings  # a change of retrieval settings calibrates again
    path = build_dir / CALIBRATION_FILE
    calibration.write(path, result)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    return result.get("threshold")


def _embed_and_write(hashes: list[str], sentences: SentenceSpans, pieces: PieceSpool, reusable: dict[str, int],
                     old: Snapshot | None, embedder: Embedder, index, writer: BuildWriter, report: BuildReport,
                     progress: Progress) -> None:
    """Add every chunk's vector to `index` (row i = chunk i) and write its sentence spans (`sentences`, from
    chunking) and vectors, EMBED_BATCH chunks at a time: a chunk whose text the old build has is copied from
    it, the others are read back from the build and embedded (the chunk vector and, from the same run of the
    model, a vector per sentence for the answer sentences; from their word pieces, `pieces`, where chunking
    gave them). Only one batch of texts and sentence vectors is held at a time; chunk vectors go straight into
    `index`."""
    todo_total = sum(1 for h in hashes if h not in reusable)
    done = 0
    progress("embedding", 0, todo_total)
    for start in range(0, len(hashes), EMBED_BATCH):
        batch = range(start, min(start + EMBED_BATCH, len(hashes)))
        vectors = np.zeros((len(batch), index.d), dtype=np.float32)
        rows: dict[int, tuple[str, bytes]] = {}
        reuse = [(i, reusable[hashes[i]]) for i in batch if hashes[i] in reusable]
        if reuse:
            vectors[[i - start for i, _ in reuse]] = old.vectors([j for _, j in reuse])
            stored = old.sentence_rows([j for _, j in reuse])
            rows = {i: stored[j] for i, j in reuse if j in stored}
        report.reused += len(rows)
        todo = [i for i in batch if i not in rows]
        if todo:
            todo_total += len([i for i in todo if hashes[i] in reusable])  # an old row without sentences
            texts = dict(writer.chunk_texts(todo[0], todo[-1] + 1, with_ids=True))
            texts = [texts[i] for i in todo]
            spans = [sentences[i] for i in todo]
            vectors[[i - start for i in todo]], pooled = embedder.encode_passages(
                texts, spans, progress=lambda n, total: progress("embedding", done + n, todo_total),
                pieces=[pieces[i] for i in todo])
            for i, sp, vecs in zip(todo, spans, pooled):
                rows[i] = (json.dumps(sp), vecs.astype(SENTENCE_DTYPE).tobytes())
            done += len(todo)
            report.embedded += len(todo)
        index.add(vectors)
        writer.sentences((i, *rows[i]) for i in batch)
    progress("embedding", done, todo_total)


def open_snapshot(cfg: Config, dim: int | None = None) -> Snapshot:
    """Open the live build, checking that it was made with the configured model (and dimension, if known)."""
    root = open_root(cfg)
    current = root.current()
    if current is None:
        raise IndexMissing(f"no index in {root.where}; run `citebot index` to build it")
    snap = root.open(current)
    model = snap.info.get("model")
    if model != cfg.embedding.model or (dim is not None and snap.info.get("dim") != dim):
        snap.close()
        raise IndexMismatch(
            f"the index was built with model {model} (dimension {snap.info.get('dim')}), but the configuration asks"
            f" for {cfg.embedding.model}; run `citebot index --rebuild`")
    return snap
