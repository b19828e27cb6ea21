"""The index in Milvus (store.backend = "milvus"): Milvus Lite in a file, or a Milvus server by URL.

The same seam as the FAISS store: `MilvusRoot` stands for `IndexRoot` and `MilvusSnapshot` for `Snapshot`, with
the methods build and search call. Everything above the store (fusion, folding, answer sentences, confidence,
summaries) is the shared code of index/search.py and index/summarize.py.

A build is made as always (index/build.py writes documents, chunks, sentence vectors and the vectors into a
staging build in paths.index/milvus-staging, under the same build lock); `MilvusRoot.publish` then copies it
into two new collections and switches the alias in one call:

    <prefix>                 the alias: the live build, switched with alter_alias (atomic on the server)
    <prefix>__<build>        chunks: id (= row of the keyword index), doc_id, offsets, location, text, hash,
                             sentence spans and float16 vectors (JSON/base64), vector (FLAT below
                             vectors.exact_below chunks, else HNSW, inner product = cosine)
    <prefix>__<build>_meta   build info and confidence calibration, documents (metadata, text, blocks), and
                             the sentences of a chunk too long for its field, in parts of at most PART characters

A build killed before the switch leaves the alias on the old collections; its half-written collections are
dropped by the next publish. After the switch, builds older than the previous one are dropped (the previous
one is kept for processes that have not yet seen the alias move) and the staging folder is emptied. Keyword
search (BM25) is the project's own `KeywordIndex`, built in memory from the chunk texts when a process opens a
build: fusion needs the BM25 score of every chunk in the candidate pool, and answer sentences use its analyser
(PERFORMANCE.md, "Milvus: past one machine"; RETRIEVAL.md, "Milvus full-text search").
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from index.documents import date_from_iso
from index.store import (CALIBRATION_FILE, FAISS_FILE, SQLITE_FILE, BuildInProgress, DocInfo, IndexMissing, IndexRoot,
                         Snapshot, StoreUnavailable,
                         search_depth)

log = logging.getLogger(__name__)

PART = 16000          # characters per stored text part (VARCHAR holds 65,535 bytes; UTF-8 is at most 4 a character)
TEXT_BYTES = 65535    # the longest chunk text a VARCHAR field holds
BATCH = 1000          # rows per insert
QUERY_IDS = 2000      # ids per `id in [...]` query
PAGE = 10000          # ids per page when every row is read
SENTENCE_CHARS = 65000  # a chunk's sentence spans and vectors longer than this go to the meta collection
IN_META = "@meta"
META = "_meta"
LEASE = "_lease"      # <prefix>_lease: the builder's lease (one row)
SETTLE = 1.0          # seconds between writing a lease claim and reading it back (a server; see BuildLease)
STAGING = "milvus-staging"  # in paths.index


class MilvusUnavailable(StoreUnavailable):
    """pymilvus is not installed, or the Milvus at milvus.uri cannot be reached or opened."""


_clients: dict[tuple[str, str], object] = {}
_clients_lock = threading.Lock()
_lease_lock = threading.Lock()


def _is_server(uri: str) -> bool:
    """milvus.uri names a Milvus server (http/https), not a Milvus Lite file."""
    return uri.startswith(("http://", "https://"))


def client(cfg):
    """One MilvusClient per (uri, token) in this process, shared by every KnowledgeBase on it (Milvus Lite lets
    one process open a file; clients inside it share its server)."""
    uri, token = cfg.milvus_uri, cfg.milvus_token()
    key = (uri, token)
    with _clients_lock:
        if key in _clients:
            return _clients[key]
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise MilvusUnavailable("store.backend = 'milvus' needs pymilvus and milvus-lite: "
                                    "pip install 'citebot[milvus]'") from None
        local = not _is_server(uri)
        if local:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            made = MilvusClient(uri, token=token) if token else MilvusClient(uri)
        except Exception as exc:
            why = ("another process has this Milvus Lite file open (one process per file; use a Milvus server "
                   "to share an index)" if local else type(exc).__name__)
            raise MilvusUnavailable(f"cannot open Milvus at {uri}: {why}") from None
        _clients[key] = made
        return made


def release(cfg) -> None:
    """Close this process's client of milvus.uri and, for Milvus Lite, free the file for another process."""
    uri = cfg.milvus_uri
    with _clients_lock:
        for key in [k for k in _clients if k[0] == uri]:
            try:
                _clients.pop(key).close()
            except Exception:
                pass
    if not _is_server(uri):
        try:
            from milvus_lite.server_manager import server_manager_instance
            server_manager_instance.release_server(uri)
        except ImportError:
            pass


def _name(build_dir: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", Path(build_dir).name)


def _parts(text: str) -> list[str]:
    return [text[i:i + PART] for i in range(0, len(text), PART)] or [""]


def _in(ids: Iterable[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


class MilvusRoot(IndexRoot):
    """The library's alias in Milvus; builds are staged (and locked) in paths.index as with FAISS."""

    def __init__(self, cfg):
        super().__init__(cfg.index_dir)
        self.cfg = cfg
        self.alias = cfg.milvus.collection
        self._lease: BuildLease | None = None

    @property
    def where(self) -> str:
        return f"Milvus {self.cfg.milvus_uri} (collection {self.alias})"

    @property
    def staging(self) -> Path:
        """Where builds are made before they are published (beside, never inside, a FAISS store's builds/)."""
        return self.root / STAGING

    def new_build_dir(self) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.staging))
        return path

    @property
    def client(self):
        return client(self.cfg)

    def current(self) -> str | None:
        """The collection the alias points to (the live build), or None before the first build."""
        c = self.client
        if self.alias not in c.list_aliases().get("aliases", []):
            return None
        return c.describe_alias(self.alias)["collection_name"]

    @contextmanager
    def lock(self):
        """The local build lock (paths.index/build.lock, as with FAISS), then the library's lease in Milvus, so
        builders on other hosts sharing this Milvus are refused too (`BuildLease`)."""
        with super().lock():
            lease = BuildLease(self.client, self.alias, self.cfg.milvus.lease_seconds,
                               settle=SETTLE if _is_server(self.cfg.milvus_uri) else 0.0)
            try:
                lease.acquire()
            except BuildInProgress:
                raise
            except Exception as exc:  # Milvus went away between opening and building
                raise MilvusUnavailable(f"cannot take the build lease in Milvus at {self.cfg.milvus_uri}: "
                                        f"{type(exc).__name__}") from None
            self._lease = lease
            try:
                yield
            finally:
                self._lease = None
                lease.release()

    def open(self, current, mmap: bool = False) -> "MilvusSnapshot":
        return MilvusSnapshot(self.client, current)

    def vectors_config(self, cfg):
        """The staging build keeps its vectors in a flat FAISS index (appended, never searched): Milvus makes the
        index that is served."""
        import dataclasses
        return dataclasses.replace(cfg, exact_below=2 ** 62, storage="float32")

    def publish(self, build_dir: Path) -> None:
        """Copy the staged build into new collections, switch the alias to them in one call, then drop the
        collections of older builds than the previous one (and any left by a killed build) and the staging
        folder."""
        c = self.client
        lease = self._lease
        if lease is not None:
            lease.check()
        previous = self.current()
        name = f"{self.alias}__{_name(build_dir)}"
        for stale in (name, name + META):
            if c.has_collection(stale):
                c.drop_collection(stale)
        try:
            _upload(c, Path(build_dir), name, self.cfg)
        except Exception as upload_error:
            # a stall past the lease: the builder that took it over may have dropped these half-made collections
            # as a killed build's, so the upload fails; say that rather than Milvus's "collection not found"
            if lease is not None:
                try:
                    lease.check()
                except BuildInProgress:
                    raise
                except Exception:  # Milvus unreachable: the upload's own error says what happened
                    raise upload_error from None
            raise
        if lease is not None:
            lease.check()
        if previous is None:
            c.create_alias(collection_name=name, alias=self.alias)
        else:
            c.alter_alias(collection_name=name, alias=self.alias)
        # the previous build stays until the next publish (as the FAISS store keeps the previous folder): other
        # processes serve it until they see the alias move (milvus.refresh_seconds)
        keep = {name, name + META} | ({previous, previous + META} if previous else set())
        for other in c.list_collections():
            if other.startswith(f"{self.alias}__") and other not in keep:
                try:
                    c.drop_collection(other)
                except Exception as exc:  # a reader may still hold it; the next publish drops it
                    log.warning("old collection %s not dropped yet: %s", other, exc)
        for old in self.staging.iterdir():
            shutil.rmtree(old, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """This boot of this machine and this process-id space: a pid is only comparable where they match (containers
    may share a host name)."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text().strip())
        except OSError:
            return ""
    return uuid.uuid5(uuid.NAMESPACE_OID, "|".join(parts)).hex[:12]


def _owner_parts(owner: str) -> tuple[str, str, str, str]:
    """A lease owner "host:pid:tag:machine" as its four parts ("" for any missing)."""
    host, pid, tag, machine = (owner.split(":") + ["", "", "", ""])[:4]
    return host, pid, tag, machine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


class BuildLease:
    """One builder at a time per library, across hosts: the row of `<prefix>_lease` names its owner (host, pid,
    a random tag) and when its lease runs out. A builder claims a free or run-out lease, renews it every third of
    `seconds` while it builds, checks it is still its own before publishing, and deletes it at the end. One
    killed outright blocks builders on other hosts until its lease runs out; on its own host (the same host name,
    boot and process-id space), where its process can be seen to be gone, its lease is taken over at once.

    Milvus has no compare-and-set, so a claim is Fischer's mutual exclusion: read (free), write the claim, wait
    `settle` seconds, read again; only the builder whose claim is still there goes on. That holds as long as a
    rival's read and write are less than `settle` apart. With Milvus Lite (one process per file, already under
    the local build lock) no rival can exist and `settle` is 0."""

    def __init__(self, c, alias: str, seconds: float, settle: float = SETTLE):
        self.c, self.name, self.seconds, self.settle = c, alias + LEASE, float(seconds), float(settle)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_machine()}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _ensure(self) -> None:
        with _lease_lock:  # threads of one process make it once
            for attempt in range(5):
                try:
                    if not self.c.has_collection(self.name):
                        self._create()
                    self.c.load_collection(self.name)
                    return
                except Exception:  # another process is making it at this moment
                    if attempt == 4:
                        raise
                    time.sleep(0.2)

    def _create(self) -> None:
        from pymilvus import DataType
        s = self.c.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("owner", DataType.VARCHAR, max_length=512)
        s.add_field("expires", DataType.DOUBLE)
        s.add_field("v", DataType.FLOAT_VECTOR, dim=2)         # Milvus needs a vector field; unused
        vp = self.c.prepare_index_params()
        vp.add_index(field_name="v", index_type="FLAT", metric_type="IP")
        _create(self.c, self.name, s, vp)

    def holder(self) -> dict | None:
        """The lease's row ({"owner", "expires"}) while it runs and its owner may be alive, else None. An owner on
        this host whose process is gone (killed during a build) holds nothing."""
        if not self.c.has_collection(self.name):
            return None
        rows = self.c.query(self.name, filter="id == 0", output_fields=["owner", "expires"],
                            consistency_level="Strong")
        if not rows or rows[0]["expires"] <= time.time():
            return None
        host, pid, _, machine = _owner_parts(rows[0]["owner"])
        if (host == socket.gethostname() and machine and machine == _machine() and pid.isdigit()
                and not _alive(int(pid))):
            return None
        return rows[0]

    def _write(self) -> None:
        self.c.upsert(self.name, [{"id": 0, "owner": self.owner, "expires": time.time() + self.seconds,
                                   "v": [0.0, 0.0]}])

    @staticmethod
    def refusal(row: dict) -> BuildInProgress:
        host, pid, _, _ = _owner_parts(row["owner"])
        left = max(0, round(row["expires"] - time.time()))
        return BuildInProgress(f"another build is running (host {host}, pid {pid}; its lease runs out in {left} s "
                               "if it has stopped); try again when it ends")

    def acquire(self) -> None:
        """Claim the lease or raise BuildInProgress naming the builder that holds it."""
        self._ensure()
        row = self.holder()
        if row is not None and row["owner"] != self.owner:
            raise self.refusal(row)
        self._write()
        if self.settle:
            time.sleep(self.settle)
            row = self.holder()
            if row is None or row["owner"] != self.owner:
                raise self.refusal(row) if row else BuildInProgress(
                    "another build claimed this library at the same moment; try again when it ends")
        self._renewer = threading.Thread(target=self._renew, name="citebot-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                row = self.holder()
                if row is not None and row["owner"] != self.owner:
                    log.error("the build lease of %s was taken by %s; this build will not be published",
                              self.name, row["owner"])
                    return
                self._write()
            except Exception as exc:  # Milvus briefly unreachable: try again at the next beat
                log.warning("could not renew the build lease %s: %s", self.name, exc)

    def check(self) -> None:
        """Raise BuildInProgress if this builder no longer holds the lease (it ran out and another took it)."""
        row = self.holder()
        if row is None or row["owner"] != self.owner:
            raise BuildInProgress("this build's lease in Milvus ran out" + (
                f" and {_owner_parts(row['owner'])[0]} is building" if row else "") + "; nothing was published")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=self.seconds)
        try:  # only our own row: if ours ran out and another builder took it, theirs stays
            self.c.delete(self.name, filter=f'id == 0 and owner == "{self.owner}"')
        except Exception as exc:
            log.warning("could not release the build lease %s (it runs out by itself): %s", self.name, exc)


def _chunk_schema(c, dim: int):
    from pymilvus import DataType
    s = c.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("doc_id", DataType.INT64)
    s.add_field("ord", DataType.INT64)
    s.add_field("start", DataType.INT64)
    s.add_field("end", DataType.INT64)
    s.add_field("page", DataType.INT64)          # -1: none
    s.add_field("section", DataType.VARCHAR, max_length=4096)
    s.add_field("location", DataType.VARCHAR, max_length=4096)
    s.add_field("text", DataType.VARCHAR, max_length=TEXT_BYTES)
    s.add_field("hash", DataType.VARCHAR, max_length=128)
    s.add_field("sentences", DataType.VARCHAR, max_length=65535)  # JSON [spans, base64 float16 vectors], IN_META
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return s


def _meta_schema(c):
    from pymilvus import DataType
    s = c.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("kind", DataType.VARCHAR, max_length=16)   # info, doc, text, blocks, sent
    s.add_field("ref", DataType.INT64)                     # document id (doc, text, blocks) or chunk id (sent)
    s.add_field("part", DataType.INT64)
    s.add_field("data", DataType.VARCHAR, max_length=65535)
    s.add_field("v", DataType.FLOAT_VECTOR, dim=2)         # Milvus needs a vector field; unused
    return s


def _upload(c, build_dir: Path, name: str, cfg) -> None:
    """The staged build (SQLite + flat FAISS index) as collections `name` (chunks) and `name`_meta."""
    import sqlite3
    import faiss
    con = sqlite3.connect(f"file:{build_dir / SQLITE_FILE}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        info = {r["key"]: json.loads(r["value"]) for r in con.execute("SELECT key, value FROM build_info")}
        vectors = faiss.read_index(str(build_dir / FAISS_FILE), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        n, dim = int(vectors.ntotal), int(info["dim"])
        vcfg = cfg.vectors
        ip = c.prepare_index_params()
        if n < vcfg.exact_below:
            kind = "milvus-flat"
            ip.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        else:
            kind = "milvus-hnsw"
            ip.add_index(field_name="vector", index_type="HNSW", metric_type="IP",
                         params={"M": vcfg.hnsw_m, "efConstruction": vcfg.ef_construction})
            info.setdefault("vectors", {})["ef_search"] = search_depth(n, vcfg)
        info.update({"index_type": kind, "store": "milvus", "collection": name})
        _create(c, name, _chunk_schema(c, dim), ip)
        rows, overflow = [], []
        for r in con.execute('SELECT c.id, c.doc_id, c.ord, c.start, c."end", c.page, c.section, c.location, c.text,'
                             ' c.hash, s.spans, s.vectors FROM chunks c LEFT JOIN sentences s ON s.chunk_id = c.id'
                             ' ORDER BY c.id'):
            if len(r["text"].encode()) > TEXT_BYTES:
                raise ValueError(f"chunk {r['id']} is longer than Milvus's {TEXT_BYTES}-byte text field")
            r = dict(r)
            sent = "" if r["spans"] is None else json.dumps([json.loads(r["spans"]),
                                                             base64.b64encode(r["vectors"]).decode()])
            if len(sent) > SENTENCE_CHARS:  # a chunk of very many sentences: kept in the meta collection
                overflow.append((r["id"], sent))
                sent = IN_META
            r["sentences"] = sent
            rows.append(r)
            if len(rows) == BATCH:
                _insert_chunks(c, name, rows, vectors)
                rows = []
        if rows:
            _insert_chunks(c, name, rows, vectors)

        meta = name + META
        vp = c.prepare_index_params()
        vp.add_index(field_name="v", index_type="FLAT", metric_type="IP")
        _create(c, meta, _meta_schema(c), vp)
        writer = _MetaWriter(c, meta)
        writer.add("info", 0, json.dumps(info))
        for d in con.execute("SELECT * FROM documents ORDER BY id"):
            writer.add("doc", d["id"], json.dumps({k: d[k] for k in ("id", "doc", "kind", "title", "date", "url",
                                                                     "content_hash", "n_chunks")}))
            writer.add("text", d["id"], d["text"])
            writer.add("blocks", d["id"], json.dumps({"blocks": json.loads(d["blocks"]),
                                                      "removed": json.loads(d["removed"])}))
        if (build_dir / CALIBRATION_FILE).exists():  # the confidence cut calibrated for this build
            writer.add("calibration", 0, (build_dir / CALIBRATION_FILE).read_text())
        for chunk_id, sent in overflow:
            writer.add("sent", chunk_id, sent)
        writer.flush()
        c.flush(name)
        c.flush(meta)
    finally:
        con.close()


def _create(c, name: str, schema, index_params) -> None:
    """A new collection with its index, loaded. The index is made without waiting on it (pymilvus waits with a
    timestamp call that Milvus Lite does not have; the load that follows waits in any case)."""
    c.create_collection(name, schema=schema)
    c.create_index(name, index_params, sync=False)
    c.load_collection(name)


def _insert_chunks(c, name: str, rows, vectors) -> None:
    ids = np.array([r["id"] for r in rows], dtype=np.int64)
    vecs = vectors.reconstruct_batch(ids)
    c.insert(name, [{"id": r["id"], "doc_id": r["doc_id"], "ord": r["ord"], "start": r["start"], "end": r["end"],
                     "page": -1 if r["page"] is None else r["page"], "section": r["section"] or "",
                     "location": r["location"], "text": r["text"], "hash": r["hash"],
                     "sentences": r["sentences"], "vector": v}
                    for r, v in zip(rows, vecs)])


class _MetaWriter:
    """Rows of the meta collection, inserted BATCH at a time; a long value is split into parts."""

    def __init__(self, c, name: str):
        self.c, self.name, self.rows, self.next_id = c, name, [], 0

    def add(self, kind: str, ref: int, data: str) -> None:
        for part, text in enumerate(_parts(data)):
            self.rows.append({"id": self.next_id, "kind": kind, "ref": int(ref), "part": part, "data": text,
                              "v": [0.0, 0.0]})
            self.next_id += 1
        if len(self.rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.c.insert(self.name, self.rows)
            self.rows = []


class _Dim:
    """What searchers read of a snapshot's `index`: the dimension and the number of vectors."""

    def __init__(self, d: int, ntotal: int):
        self.d, self.ntotal = d, ntotal


class MilvusSnapshot(Snapshot):
    """One published build in Milvus (the collections the alias named when it was opened), read-only."""

    def __init__(self, c, collection: str):
        self.client, self.collection, self.meta = c, collection, collection + META
        self.path = None
        try:
            for name in (self.collection, self.meta):
                c.load_collection(name)
            info = self._blobs("info", [0]).get(0)
        except Exception as exc:
            raise IndexMissing(f"index collection {collection} is unreadable ({type(exc).__name__}); "
                               "run `citebot index --rebuild`") from None
        if info is None:
            raise IndexMissing(f"index collection {collection} is incomplete; run `citebot index --rebuild`")
        self.info = json.loads(info)
        self.index = _Dim(int(self.info["dim"]), int(self.info.get("chunks", 0)))
        self.has_sentences = True
        self._lock = threading.Lock()
        self._keyword = None
        self._keyword_lock = threading.Lock()
        self._chunk_docs = None
        self._docs: list[dict] | None = None
        self._calibration: dict | None = None
        self._texts: dict[int, str] = {}
        ef = (self.info.get("vectors") or {}).get("ef_search") or 0
        self._search_params = {"metric_type": "IP", "params": {"ef": int(ef)} if ef else {}}

    # ------------------------------------------------------------ reading
    def _query(self, name: str, filter: str, fields: list[str]) -> list[dict]:
        """Every row of `name` matching `filter`, read PAGE ids at a time (ids are 0 to rows - 1; a query
        returns at most 16,384 rows, and Milvus Lite has no query iterator)."""
        n = int(self.client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])
        out: list[dict] = []
        for start in range(0, n, PAGE):
            where = f"id >= {start} and id < {start + PAGE}" + (f" and ({filter})" if filter else "")
            out.extend(self.client.query(name, filter=where, output_fields=fields))
        return out

    def _by_ids(self, name: str, field: str, ids: Sequence[int], fields: list[str], extra: str = "") -> list[dict]:
        out: list[dict] = []
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), QUERY_IDS):
            out.extend(self.client.query(name, filter=f"{extra}{field} in {_in(ids[i:i + QUERY_IDS])}",
                                         output_fields=fields))
        return out

    def _blobs(self, kind: str, refs: Sequence[int] | None) -> dict[int, str]:
        """The stored values of `kind` by ref (every one if `refs` is None), their parts joined."""
        fields = ["ref", "part", "data"]
        if refs is None:
            rows = self._query(self.meta, f'kind == "{kind}"', fields)
        else:
            rows = self._by_ids(self.meta, "ref", refs, fields, extra=f'kind == "{kind}" and ')
        parts: dict[int, list[tuple[int, str]]] = {}
        for r in rows:
            parts.setdefault(int(r["ref"]), []).append((int(r["part"]), r["data"]))
        return {ref: "".join(t for _, t in sorted(p)) for ref, p in parts.items()}

    def query(self, sql: str, params: Sequence = ()):
        raise NotImplementedError("a Milvus build is read through the Snapshot methods, not SQL")

    def close(self) -> None:
        """Nothing to close: the client is shared by the process (`release` frees it)."""

    @property
    def size(self) -> int:
        return self.index.ntotal

    @property
    def keyword(self):
        """The project's BM25 index of the chunk texts (row i = chunk i), built in memory on first use."""
        if self._keyword is None:
            with self._keyword_lock:
                if self._keyword is None:
                    from index.bm25 import KeywordIndex
                    rows = self._query(self.collection, "", ["id", "text"])
                    texts = [""] * self.size
                    for r in rows:
                        texts[int(r["id"])] = r["text"]
                    self._keyword = KeywordIndex.build(texts)
        return self._keyword

    def _doc_rows(self) -> list[dict]:
        if self._docs is None:
            self._docs = sorted((json.loads(v) for v in self._blobs("doc", None).values()), key=lambda d: d["doc"])
        return self._docs

    def documents(self) -> list[DocInfo]:
        return [DocInfo(d["id"], d["doc"], d["title"], date_from_iso(d["date"]), d["url"], d["n_chunks"],
                        d["content_hash"]) for d in self._doc_rows()]

    @property
    def calibration(self) -> dict | None:
        """The confidence calibration recorded with this build (`index.calibration`), or None."""
        if self._calibration is None:
            raw = self._blobs("calibration", [0]).get(0)
            try:
                self._calibration = json.loads(raw) if raw else {}
            except ValueError as exc:
                log.warning("calibration of %s unreadable (%s); using the default confidence cut", self.collection, exc)
                self._calibration = {}
        return self._calibration or None

    def chunks(self, ids: Sequence[int]) -> dict[int, dict]:
        """Chunk rows with their document's metadata, by chunk id (the keys `Snapshot.chunks` gives)."""
        if not len(ids):
            return {}
        docs = {d["id"]: d for d in self._doc_rows()}
        out = {}
        for r in self._by_ids(self.collection, "id", ids, ["id", "doc_id", "ord", "start", "end", "page", "section",
                                                           "location", "text", "hash"]):
            d = docs[int(r["doc_id"])]
            out[int(r["id"])] = {
                "id": int(r["id"]), "ord": r["ord"], "start": r["start"], "end": r["end"],
                "page": None if r["page"] < 0 else r["page"], "section": r["section"] or None,
                "location": r["location"], "text": r["text"], "hash": r["hash"], "doc_id": int(r["doc_id"]),
                "doc": d["doc"], "title": d["title"], "date": d["date"], "url": d["url"]}
        return out

    def document_text(self, doc_id: int) -> str:
        """A document's cleaned text (the last few read are kept: passages of one document are often merged)."""
        doc_id = int(doc_id)
        with self._lock:
            if doc_id in self._texts:
                return self._texts[doc_id]
        text = self._blobs("text", [doc_id]).get(doc_id, "")
        with self._lock:
            self._texts[doc_id] = text
            while len(self._texts) > 8:
                self._texts.pop(next(iter(self._texts)))
        return text

    def document_slice(self, doc_id: int, start: int, end: int) -> str:
        """Characters [start, end) of a document's cleaned text (what lies between two chunks)."""
        return self.document_text(doc_id)[start:end] if end > start else ""

    def document(self, doc: str):
        from index.documents import Block, Document
        found = [d for d in self._doc_rows() if d["doc"] == doc]
        if not found:
            return None
        d = found[0]
        extra = json.loads(self._blobs("blocks", [d["id"]]).get(d["id"], '{"blocks": [], "removed": []}'))
        return Document(doc=d["doc"], path=Path(self.info.get("docs_dir") or ".") / d["doc"], kind=d["kind"],
                        title=d["title"], date=date_from_iso(d["date"]),
                        url=d["url"], text=self.document_text(d["id"]),
                        blocks=[Block(*b) for b in extra["blocks"]], removed=extra["removed"])

    def sentence_rows(self, ids: Sequence[int]) -> dict[int, tuple[str, bytes]]:
        """(spans JSON, float16 vector bytes) by chunk id, read with the chunks by primary key (a chunk of very
        many sentences from the meta collection)."""
        values = {int(r["id"]): r["sentences"] for r in self._by_ids(self.collection, "id", ids, ["id", "sentences"])}
        far = [i for i, v in values.items() if v == IN_META]
        if far:
            values.update(self._blobs("sent", far))
        out = {}
        for chunk_id, value in values.items():
            if value and value != IN_META:
                spans, blob = json.loads(value)
                out[chunk_id] = (json.dumps(spans), base64.b64decode(blob))
        return out

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.index.d), dtype=np.float32)
        rows = {int(r["id"]): r["vector"] for r in self._by_ids(self.collection, "id", ids, ["id", "vector"])}
        return np.array([rows[i] for i in ids], dtype=np.float32)

    def chunk_doc_ids(self) -> np.ndarray:
        if self._chunk_docs is None:
            out = np.full(self.size, -1, dtype=np.int64)
            for r in self._query(self.collection, "", ["id", "doc_id"]):
                out[int(r["id"])] = int(r["doc_id"])
            self._chunk_docs = out
        return self._chunk_docs

    def chunk_ids_by_hash(self, hashes: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        hashes = list(hashes)
        for i in range(0, len(hashes), QUERY_IDS):
            part = hashes[i:i + QUERY_IDS]
            rows = self.client.query(self.collection, filter=f"hash in {json.dumps(part)}",
                                     output_fields=["id", "hash"], limit=16384)
            for r in rows:
                h, cid = r["hash"], int(r["id"])
                if h not in out or cid < out[h]:
                    out[h] = cid
        return out

    # ------------------------------------------------------------ searching
    def dense(self, qvec: np.ndarray, k: int, doc_ids: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """Milvus's own vector search; the document and date filters arrive as the documents they admit and
        are applied by Milvus as the filter expression `doc_id in [...]`."""
        if doc_ids is not None and not len(doc_ids):
            return []
        kwargs = {"filter": f"doc_id in {_in(doc_ids)}"} if doc_ids is not None else {}
        return self._search(np.asarray(qvec, dtype=np.float32).reshape(1, -1), k, **kwargs)[0]

    def dense_many(self, qvecs: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """`dense` for many question vectors in one Milvus search (no filter)."""
        return self._search(np.asarray(qvecs, dtype=np.float32), k)

    def _search(self, vectors: np.ndarray, k: int, **kwargs) -> list[list[tuple[int, float]]]:
        k = min(k, self.size, 16384)
        if k <= 0 or not len(vectors):
            return [[] for _ in vectors]
        hits = self.client.search(self.collection, data=vectors.tolist(), limit=k, output_fields=[],
                                  search_params=self._search_params, **kwargs)
        return [[(int(h["id"]), float(h["distance"])) for h in row] for row in hits]
