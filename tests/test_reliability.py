"""Faults: SIGKILL of `citebot index --rebuild` at several points never loses the live index; stale locks
are recovered; a second build in another process is refused. With both store backends: FAISS + SQLite files
(symlink swap) and Milvus Lite (alias switch)."""

from __future__ import annotations

import errno
import io
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
    Lite ignores). Builds only: not the library's build lease (`citebot_lease`)."""
    path = index / "milvus.db" / "collections"
    return {p.name for p in path.iterdir() if (started or (p / "schema.json").exists()) and p.name.startswith("citebot__")
            } if path.exists() else set()


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


# ---------------------------------------------------------------- faults, round 2 (a small index, copied per test)

SMALL = {"wardens.txt": "Parking wardens issued 4,000 tickets to bicycles in the city centre last spring. "
                        "The council said the wardens would now patrol the ring road as well.\n",
         "control-room.txt": "Call handlers answered most emergency calls within ten seconds. The control room "
                             "was short of staff on night shifts.\n"}


@pytest.fixture(scope="module")
def small(tmp_path_factory, embedder):
    """A two-document index, built once; `copy_small` gives each test its own copy to damage."""
    base = tmp_path_factory.mktemp("small")
    docs = base / "docs"
    docs.mkdir()
    for name, text in SMALL.items():
        (docs / name).write_text(text)
    KnowledgeBase(make_config(docs, base / "index"), embedder=embedder).build()
    return base


@pytest.fixture
def copy_small(small, tmp_path):
    shutil.copytree(small / "docs", tmp_path / "docs")
    shutil.copytree(small / "index", tmp_path / "index", symlinks=True)
    return tmp_path / "docs", tmp_path / "index"


def run_cli(capsys, docs, index, *argv, stdin=None, monkeypatch=None):
    import io
    from bot.cli import main
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["--docs", str(docs), "--index", str(index), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The one line on stderr, once the progress bars (redrawn with carriage returns, then cleared) are gone."""
    lines = [l.rsplit("\r", 1)[-1] for l in err.split("\n")]
    lines = [l for l in lines if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not what the index wrote" * 64)


@pytest.mark.parametrize("damage, name", [
    (_truncate, "vectors.faiss"), (_garbage, "vectors.faiss"), (_garbage, "index.sqlite"),
    (_truncate, "bm25/analyzer.json"), (_garbage, "bm25/params.index.json"), (_truncate, "bm25/data.csc.index.npy"),
])
def test_a_damaged_index_file_is_one_line_saying_what_to_run(copy_small, capsys, damage, name):
    docs, index = copy_small
    target = (index / "current").resolve() / name
    assert target.exists(), sorted(p.name for p in target.parent.iterdir())
    damage(target)
    for argv in (["ask", "parking tickets for bicycles"], ["docs"], ["ask", "--mode", "bm25", "bicycles"]):
        code, out, err = run_cli(capsys, docs, index, *argv)
        if code == 0:  # a damaged keyword index only shows once keywords are searched
            assert name.startswith("bm25") and argv == ["docs"]
            continue
        line = one_line(err)
        assert f"the index at {target.parent.parent if name.startswith('bm25') else target.parent} is damaged" \
               in line or "is damaged" in line
        assert line.endswith("run `citebot index --rebuild`") and len(line) < 300, line
    # and the rebuild it names mends it
    assert run_cli(capsys, docs, index, "index", "--rebuild")[0] == 0
    code, out, _ = run_cli(capsys, docs, index, "ask", "parking tickets for bicycles")
    assert code == 0 and "4,000 tickets" in out


def test_a_deleted_index_file_says_what_to_run(copy_small, capsys):
    docs, index = copy_small
    ((index / "current").resolve() / "vectors.faiss").unlink()
    code, _, err = run_cli(capsys, docs, index, "ask", "parking tickets")
    line = one_line(err)
    assert code == 1 and "is incomplete (vectors.faiss is missing); run `citebot index --rebuild`" in line


def test_a_damaged_index_is_logged_once_however_often_it_is_asked(copy_small, embedder, caplog):
    from index.kb import UserError
    docs, index = copy_small
    _garbage((index / "current").resolve() / "index.sqlite")
    kb = KnowledgeBase(make_config(docs, index), embedder=embedder)
    kb.warm_up(background=False)  # the bot's start-up opens the index first
    assert "is damaged" in kb.warm_error
    for _ in range(3):
        with pytest.raises(UserError, match="is damaged"):
            kb.ask("parking tickets")
    assert sum("is damaged" in r.getMessage() for r in caplog.records) == 1


def test_a_corrupt_summary_cache_heals_itself(copy_small, embedder):
    docs, index = copy_small
    kb = KnowledgeBase(make_config(docs, index), embedder=embedder)
    first = kb.summary("wardens.txt")
    _garbage(index / "summaries.sqlite")
    again = kb.summary("wardens.txt")  # read error: the cache is moved aside and made again
    assert [s.text for s in again.sentences] == [s.text for s in first.sentences] and not again.cached
    assert (index / "summaries.sqlite.damaged").exists()
    assert kb.summary("wardens.txt").cached
    _garbage(index / "summaries.sqlite")
    assert kb.build(rebuild=True).chunks == 2  # the build's refresh heals it too, without a warning to act on
    assert kb.summary("wardens.txt").sentences


def _refuse_writes_under(monkeypatch, folder: Path, code: int = errno.EROFS) -> None:
    """The OS boundary of a read-only mount: opening a file for writing or making a folder under `folder`
    fails with `code`. (The tests run as root, which ignores permission bits, so chmod cannot do it.)"""
    real_open, real_mkdir = os.open, os.mkdir

    def under(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(folder)

    def fake_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if under(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_a_read_only_index_folder_is_asked_but_not_updated(copy_small, capsys, monkeypatch):
    docs, index = copy_small
    (docs / "new.txt").write_text("A new report about horses in the park.\n")
    _refuse_writes_under(monkeypatch, index)
    code, out, err = run_cli(capsys, docs, index, "index")
    assert code == 1 and one_line(err) == f"citebot: cannot write to the index folder {index} (Read-only file system)"
    code, out, err = run_cli(capsys, docs, index, "chat", stdin="How many tickets did the wardens issue?\n",
                             monkeypatch=monkeypatch)
    assert code == 0 and "4,000 tickets" in out and "Traceback" not in err
    assert ("note: cannot write to the index folder" in err
            and "answering from the existing index, which cannot be updated" in err)
    code, out, _ = run_cli(capsys, docs, index, "ask", "tickets to bicycles")
    assert code == 0 and "4,000" in out


def test_an_index_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Some text about parking.\n")
    (tmp_path / "file").write_text("a file where the index folder's parent should be")
    code, _, err = run_cli(capsys, docs, tmp_path / "file" / "index", "index")
    assert code == 1 and one_line(err) == (f"citebot: cannot create the index folder {tmp_path / 'file' / 'index'} "
                                           "(Not a directory)")


def test_chat_while_another_process_builds_answers_from_the_live_index(copy_small, capsys, monkeypatch):
    from index.store import IndexRoot
    docs, index = copy_small
    with IndexRoot(index).lock():  # flock: held on another open file, as another process would hold it
        code, out, err = run_cli(capsys, docs, index, "chat", stdin="How many tickets did the wardens issue?\n",
                                 monkeypatch=monkeypatch)
    assert code == 0 and "4,000 tickets" in out
    assert "note: an update of the index is in progress" in err and "answering from the live index" in err


class _FullDiskFile(io.BytesIO):
    """A temporary file on a full disk: writes are buffered, flushing them fails, and so does closing it once
    (a buffered file flushes what is left as it closes)."""
    failed_close = False

    def flush(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self):
        if not self.failed_close:
            self.failed_close = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().close()


@pytest.mark.parametrize("where", ["sqlite", "faiss", "spool", "pieces"])
def test_a_full_disk_during_a_build_is_one_line_and_keeps_the_old_index(copy_small, capsys, monkeypatch, where):
    import sqlite3
    from index import store
    docs, index = copy_small
    (docs / "new.txt").write_text("A new report about horses in the park.\n")
    if where == "sqlite":
        def chunks(self, rows):
            raise sqlite3.OperationalError("database or disk is full")
        monkeypatch.setattr(store.BuildWriter, "chunks", chunks)
    elif where == "faiss":
        def finish(self, info, index):
            raise RuntimeError("Error in faiss::FileIOWriter: write error") from OSError(errno.ENOSPC, "No space left")
        monkeypatch.setattr(store.BuildWriter, "finish", finish)
    elif where == "spool":
        import pickle
        def dump(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(pickle, "dump", dump)
    else:  # the chunks' word pieces fill the disk, and their file fails again as the failed build is cleaned up
        from index import build
        real_init = build.PieceSpool.__init__

        def init(self, folder):
            real_init(self, folder)
            self._file.close()
            self._file = _FullDiskFile()
        monkeypatch.setattr(build.PieceSpool, "__init__", init)
    live = (index / "current").resolve()
    code, _, err = run_cli(capsys, docs, index, "index")
    line = one_line(err)
    assert code == 1 and line.startswith(f"citebot: no space left on the disk of the index folder {index} (")
    assert "it needed about" in line and "kB" in line and "the previous index is unchanged" in line
    assert (index / "current").resolve() == live and builds(index) == {live.name}
    code, out, _ = run_cli(capsys, docs, index, "ask", "tickets to bicycles")
    assert code == 0 and "4,000" in out


@pytest.mark.slow
def test_a_full_tmpfs_during_a_build_is_one_line(tmp_path, capsys, embedder):
    """The same on a real 3 MB filesystem (needs root and tmpfs; skipped elsewhere)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        docs = big_docs(tmp_path / "docs", extra=60)
        code, _, err = run_cli(capsys, docs, mount / "index", "index")
        line = one_line(err)
        assert code == 1 and "no space left on the disk of the index folder" in line and "MB" in line
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_an_unloadable_model_name_ends_at_once_with_one_line():
    """It used to deadlock: the tokenizer held the embedder's lock and then asked for the model, which takes it."""
    import threading
    from index.config import EmbeddingConfig
    from index.embedding import Embedder, EmbeddingError
    embedder = Embedder(EmbeddingConfig(model="all-MiniLM-L6-v3"))
    result = {}

    def count():
        try:
            embedder.count(["a few words"])
        except EmbeddingError as exc:
            result["error"] = str(exc)
    worker = threading.Thread(target=count, daemon=True)
    worker.start()
    worker.join(120)  # a guard against the hang, not a timing: it ends in about a second
    assert not worker.is_alive(), "Embedder.count deadlocked"
    message = result["error"]
    assert message.startswith("cannot load embedding model 'all-MiniLM-L6-v3': not the packaged all-MiniLM-L6-v2")
    assert "tried" in message and "\n" not in message


def test_a_vote_that_cannot_be_saved_is_one_line(copy_small, embedder):
    from index.kb import UserError
    docs, index = copy_small
    (index / "feedback.sqlite").mkdir()  # SQLite cannot open it, as on a read-only or broken disk
    kb = KnowledgeBase(make_config(docs, index), embedder=embedder)
    ids = [p.chunk_id for p in kb.ask("parking tickets").passages]
    with pytest.raises(UserError, match=r"^the vote could not be saved \(the index folder cannot be written\)"):
        kb.record_feedback("parking tickets", ids, "someone", 1)


def test_the_summary_cache_is_moved_aside_only_when_damaged(tmp_path):
    import sqlite3
    from index.store import SummaryCache
    cache = SummaryCache(tmp_path)
    cache.put("h", "m", "p", "a.txt", [(0, 5)], False, 3, 0.1)
    for error in (sqlite3.OperationalError("database is locked"),
                  sqlite3.OperationalError("attempt to write a readonly database"),
                  sqlite3.OperationalError("database or disk is full")):
        assert not cache._heal(error) and cache.get("h", "m", "p")["spans"] == [(0, 5)]
    assert cache._heal(sqlite3.DatabaseError("file is not a database"))
    assert cache.get("h", "m", "p") is None and (tmp_path / "summaries.sqlite.damaged").exists()


@pytest.mark.slow
def test_a_real_read_only_mount_of_the_index_is_asked_but_not_updated(copy_small, capsys, monkeypatch):
    """The same as the injected read-only case, on a read-only bind mount (needs root; skipped elsewhere)."""
    docs, index = copy_small
    if subprocess.run(["mount", "--bind", str(index), str(index)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(index)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        (docs / "new.txt").write_text("A new report about horses in the park.\n")
        code, _, err = run_cli(capsys, docs, index, "index")
        assert code == 1 and one_line(err) == f"citebot: cannot write to the index folder {index} (Read-only file system)"
        code, out, err = run_cli(capsys, docs, index, "chat", stdin="How many tickets did the wardens issue?\n",
                                 monkeypatch=monkeypatch)
        assert code == 0 and "4,000 tickets" in out and "which cannot be updated" in err
        code, out, _ = run_cli(capsys, docs, index, "summary", "wardens.txt")
        assert code == 0 and "4,000 tickets" in out  # the summary cache cannot be written: made, not kept
    finally:
        subprocess.run(["umount", "-l", str(index)], capture_output=True)  # lazily: the test still holds files open
