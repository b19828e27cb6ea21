"""Faults: SIGKILL of `citebot index --rebuild` at several points never loses the live index; stale locks
are recovered; a second build in another process is refused. With both store backends: FAISS + SQLite files
(symlink swap) and Milvus Lite (alias switch)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BACKENDS, make_config
from index.kb import KnowledgeBase

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "The inspectorate visited the force control room in the spring of that year.",
    "Officers said that staffing levels on night shifts had fallen sharply.",
    "Victims of burglary were not always told about the progress of their case.",
    "The report found that neighbourhood teams were often taken away for other duties.",
    "Call handlers answered most emergency calls within ten seconds.",
    "Inspectors examined a sample of incident records from the previous six months.",
]


def big_docs(target: Path, extra: int = 40) -> Path:
    """docs/ plus `extra` synthetic reports, so a rebuild lasts long enough to be interrupted."""
    shutil.copytree(ROOT / "docs", target)
    for i in range(extra):
        body = " ".join(SENTENCES[(i + j) % len(SENTENCES)] + f" Paragraph {i}-{j}." for j in range(40))
        (target / f"synthetic-{i:02d}.txt").write_text(f"Synthetic report number {i}\n{body}\n")
    return target


def citebot(*args, docs: Path, index: Path, backend: str = "faiss", **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bot.cli", "--docs", str(docs), "--index", str(index), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CITEBOT_STORE_BACKEND": backend}, **kw)


def config(docs: Path, index: Path, backend: str):
    return make_config(docs, index, store={"backend": backend})


def release(docs: Path, index: Path, backend: str) -> None:
    """Let go of the Milvus Lite file, so that a `citebot` process can open it (one process per file)."""
    if backend == "milvus":
        from index.milvus_store import release as release_milvus
        release_milvus(config(docs, index, backend))


def live_build(docs: Path, index: Path, backend: str) -> str:
    """The live build: the folder `current` points to, or the collection the Milvus alias points to."""
    if backend == "faiss":
        return (index / "current").resolve().name
    from index.milvus_store import MilvusRoot
    try:
        return MilvusRoot(config(docs, index, backend)).current()
    finally:
        release(docs, index, backend)


def collections(index: Path, started: bool = False) -> set[str]:
    """The collections in the Milvus Lite file (its folders, read without opening it); with `started`, also the
    folder of one being created (a kill inside create_collection leaves only its schema.json.tmp, which Milvus
    Lite ignores)."""
    path = index / "milvus.db" / "collections"
    return {p.name for p in path.iterdir() if started or (p / "schema.json").exists()} if path.exists() else set()


def wait_for(condition, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return False


def builds(index: Path) -> set[str]:
    """Build folders: published or being made (FAISS), being made before they are published (Milvus)."""
    return {p.name for folder in (index / "builds", index / "milvus-staging") if folder.exists()
            for p in folder.iterdir()}


_CORPORA: dict[str, tuple[Path, Path, str]] = {}


@pytest.fixture(params=BACKENDS)
def corpus(request, tmp_path_factory, embedder):
    """docs/ and 40 synthetic reports, indexed with the backend `request.param` (built once per backend)."""
    backend = request.param
    if backend not in _CORPORA:
        base = tmp_path_factory.mktemp(f"faults-{backend}")
        docs = big_docs(base / "docs")
        index = base / "index"
        kb = KnowledgeBase(config(docs, index, backend), embedder=embedder)
        kb.build()
        release(docs, index, backend)
        _CORPORA[backend] = (docs, index, backend)
    return _CORPORA[backend]


def assert_live_index_answers(docs, index, embedder, backend="faiss"):
    kb = KnowledgeBase(config(docs, index, backend), embedder=embedder)
    try:
        answer = kb.ask("How many crimes does the force fail to record each year?")
        assert any("21,200" in p.text for p in answer.passages)
        assert len(kb.documents()) == 45
    finally:
        release(docs, index, backend)


# Milvus builds are staged by the same code as FAISS builds (so "start" and "chunking" are the same case there);
# "publishing" is its own: the new collections are being written but the alias has not moved. The other Milvus
# cases run with `make test-slow` (make test stays under five minutes).
SLOW = pytest.mark.slow
KILLS = [("faiss", p) for p in ("start", "chunking", "embedding", "writing")] + [
    pytest.param("milvus", "embedding", marks=SLOW), pytest.param("milvus", "writing", marks=SLOW),
    ("milvus", "publishing")]


@pytest.mark.parametrize("corpus, point", KILLS, indirect=["corpus"])
def test_sigkill_during_rebuild_keeps_the_old_index(corpus, embedder, point):
    docs, index, backend = corpus
    live = live_build(docs, index, backend)
    before, before_collections = builds(index), collections(index, started=True)
    proc = citebot("index", "--rebuild", docs=docs, index=index, backend=backend)
    try:
        if point == "start":
            time.sleep(0.3)
        elif point == "writing":  # the new build directory exists but is not yet published
            assert wait_for(lambda: builds(index) - before or proc.poll() is not None)
        elif point == "publishing":  # the new build's collections are being written into Milvus
            assert wait_for(lambda: collections(index, started=True) - before_collections or proc.poll() is not None)
        else:  # the progress bar of that stage is on stderr
            fd = proc.stderr.fileno()
            os.set_blocking(fd, False)
            seen = b""

            def stage_started():
                nonlocal seen
                try:
                    seen += os.read(fd, 65536)
                except BlockingIOError:
                    pass
                return point.encode() in seen or proc.poll() is not None
            assert wait_for(stage_started)
        assert proc.poll() is None, "the build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # never half a build: the old one, or (if the kill came just after the swap) the complete new one
    assert live_build(docs, index, backend) == live or point == "writing"
    assert_live_index_answers(docs, index, embedder, backend)
    # the lock died with the process: the next build runs (and sweeps the half-written directory or collections)
    done = citebot("index", docs=docs, index=index, backend=backend)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "0 embedded" in out
    now = live_build(docs, index, backend)
    if backend == "faiss":
        assert builds(index) <= {live, now}
    else:  # the live and the previous build's collections are left (not the half-written ones), no staging folder
        assert collections(index) == {now, now + "_meta", live, live + "_meta"} and not builds(index)
    assert_live_index_answers(docs, index, embedder, backend)


@pytest.mark.parametrize("corpus", ["faiss", pytest.param("milvus", marks=SLOW)], indirect=True)
def test_a_second_build_process_is_refused(corpus):
    docs, index, backend = corpus
    first = citebot("index", "--rebuild", docs=docs, index=index, backend=backend)
    try:
        lock = index / "build.lock"
        assert wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
        second = citebot("index", docs=docs, index=index, backend=backend)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 1
        assert f"another build is running (pid {first.pid})" in err and "Traceback" not in err
    finally:
        first.communicate(timeout=300)
    assert first.returncode == 0
