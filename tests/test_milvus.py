"""The Milvus store (Milvus Lite in a temporary folder): several readers of one library see a new build, libraries
in one Milvus never see each other's chunks, and the states Milvus Lite refuses are one clear line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import DOCS, make_config
from index.kb import BuildInProgress, KnowledgeBase, UserError

NEW_DOC = ("2019-05-01_bridge-report.txt", "Bridge inspection report\n\nThe Ashby footbridge was closed after divers"
           " found that three of its timber piles had rotted through below the waterline.\n")
QUESTION = "Why was the Ashby footbridge closed?"


def milvus_config(docs, index, **milvus):
    return make_config(docs, index, store={"backend": "milvus"}, milvus=milvus)


@pytest.fixture
def library(tmp_path, embedder):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    yield docs, tmp_path / "index"
    from index.milvus_store import release
    release(milvus_config(docs, tmp_path / "index"))


def test_readers_of_one_library_serve_a_new_build(library, embedder):
    """Two bot processes' worth of KnowledgeBase on one Milvus Lite file (Milvus Lite opens a file in one process
    only, so both live in this one): the builder publishes, the reader that checks the alias on every question
    (refresh_seconds = 0) answers from the new build at once; one on a long timer keeps answering from the
    previous build, which stays until the next publish, and switches on reload."""
    docs, index = library
    builder = KnowledgeBase(milvus_config(docs, index), embedder=embedder)
    builder.build()
    every_question = KnowledgeBase(milvus_config(docs, index, refresh_seconds=0.0), embedder=embedder)
    on_timer = KnowledgeBase(milvus_config(docs, index, refresh_seconds=3600.0), embedder=embedder)
    for reader in (every_question, on_timer):
        assert NEW_DOC[0] not in {p.doc for p in reader.ask(QUESTION, 3).passages}
    first = every_question.searcher().snap.collection

    (docs / NEW_DOC[0]).write_text(NEW_DOC[1])
    report = builder.build()
    assert report.added == [NEW_DOC[0]] and report.reused > 0
    answer = every_question.ask(QUESTION, 3)
    assert answer.passages[0].doc == NEW_DOC[0] and "rotted" in answer.passages[0].answer_text
    assert every_question.searcher().snap.collection != first
    # the timer has not run out: the previous build answers (it was kept), then a reload switches
    assert on_timer.searcher().snap.collection == first
    assert NEW_DOC[0] not in {p.doc for p in on_timer.ask(QUESTION, 3).passages}
    on_timer.reload()
    assert on_timer.ask(QUESTION, 3).passages[0].doc == NEW_DOC[0]


def test_libraries_in_one_milvus_never_see_each_others_chunks(tmp_path, embedder):
    """Each library is its own alias and collections (milvus.collection): a question to one finds nothing of
    the other, with no filter, with a document filter naming the other's file, and in the document list."""
    from index.milvus_store import release
    uri = str(tmp_path / "shared.db")
    reports, bridges = tmp_path / "reports", tmp_path / "bridges"
    shutil.copytree(DOCS, reports)
    bridges.mkdir()
    (bridges / NEW_DOC[0]).write_text(NEW_DOC[1])
    a = KnowledgeBase(milvus_config(reports, tmp_path / "a", uri=uri, collection="server_1"), embedder=embedder)
    b = KnowledgeBase(milvus_config(bridges, tmp_path / "b", uri=uri, collection="server_2"), embedder=embedder)
    try:
        a.build()
        b.build()
        assert NEW_DOC[0] not in {d.doc for d in a.documents()}
        assert {d.doc for d in b.documents()} == {NEW_DOC[0]}
        assert all(p.doc != NEW_DOC[0] for p in a.ask(QUESTION, 10).passages)
        with pytest.raises(UserError, match="no indexed document matches"):
            a.ask(QUESTION, doc=NEW_DOC[0])
        assert {p.doc for p in b.ask("How many crimes does the force fail to record?", 10).passages} == {NEW_DOC[0]}
    finally:
        release(a.cfg)


def test_a_milvus_lite_file_open_in_another_process_is_one_clear_line(library, embedder):
    docs, index = library
    cfg = milvus_config(docs, index)
    index.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; "
                               "MilvusClient(sys.argv[1]); print('open', flush=True); time.sleep(60)",
                               cfg.milvus_uri], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        kb = KnowledgeBase(cfg, embedder=embedder)
        with pytest.raises(UserError) as info:
            kb.searcher()
        message = str(info.value)
        assert "another process has this Milvus Lite file open" in message and "\n" not in message
        with pytest.raises(UserError, match="another process has this Milvus Lite file open"):
            kb.has_index()  # citebot doctor asks this first
    finally:
        holder.kill()
        holder.wait()


def test_faiss_and_milvus_builds_in_one_index_folder_leave_each_other_alone(library, embedder):
    """Trying Milvus on an index folder that holds a FAISS index (citebot --store milvus index) stages its builds
    beside the FAISS builds, never sweeping them; the FAISS index still answers."""
    docs, index = library
    faiss = KnowledgeBase(make_config(docs, index), embedder=embedder)
    faiss.build()
    live = (index / "current").resolve()
    KnowledgeBase(milvus_config(docs, index), embedder=embedder).build()
    assert (index / "current").resolve() == live and live.is_dir()
    assert faiss.ask(QUESTION, 3).passages and not list((index / "milvus-staging").iterdir())


def test_server_libraries_get_their_own_collections(tmp_path):
    """[servers.<id>] libraries sharing one Milvus server each get their own alias (from their index folder);
    two servers mapped to one index folder share it."""
    from index.config import load_config
    from index.libraries import library_config
    path = tmp_path / "config.toml"
    path.write_text('[store]\nbackend = "milvus"\n[milvus]\nuri = "http://milvus.internal:19530"\n'
                    '[servers.111]\ndocs = "a/docs"\nindex = "a/index"\n'
                    '[servers.222]\ndocs = "b/docs"\nindex = "b/index"\n'
                    '[servers.333]\ndocs = "b/docs"\nindex = "b/index"\n')
    cfg = load_config(path, env={})
    names = {g: library_config(cfg, g).milvus.collection for g in (111, 222, 333)}
    assert names[111] != names[222] == names[333] != cfg.milvus.collection
    assert all(n.startswith("citebot_") and n.replace("_", "").isalnum() for n in names.values())
    assert cfg.milvus.collection == "citebot"  # the default library keeps the configured alias


def test_sentences_too_long_for_their_field_are_kept_in_the_meta_collection(library, embedder, monkeypatch,
                                                                           tmp_path_factory):
    """A chunk's sentence vectors normally travel with the chunk (read by primary key); a chunk whose sentences
    do not fit the field keeps them in the meta collection. Either way the answers are FAISS's."""
    import index.milvus_store as ms
    from conftest import library as built
    docs, index = library
    monkeypatch.setattr(ms, "SENTENCE_CHARS", 4000)  # some chunks in the meta collection, some not
    kb = KnowledgeBase(milvus_config(docs, index), embedder=embedder)
    kb.build()
    snap = kb.searcher().snap
    fields = snap.client.query(snap.collection, filter="id >= 0", output_fields=["id", "sentences"])
    assert {r["sentences"] == ms.IN_META for r in fields} == {True, False}
    faiss = built("faiss", embedder, tmp_path_factory)
    for q in ("How many crimes does the force fail to record each year?", "Who chaired the disciplinary hearing?"):
        got, want = kb.ask(q, 3), faiss.ask(q, 3)
        assert [(p.doc, p.answer_spans) for p in got.passages] == [(p.doc, p.answer_spans) for p in want.passages]


def test_a_builder_on_another_host_is_refused_by_the_lease_in_milvus(tmp_path, library, embedder):
    """Two hosts sharing one Milvus each have their own paths.index, so the local build lock cannot see the
    other: the lease in Milvus refuses the second builder while the first builds and names it; once the first
    ends, the second builds."""
    from index.milvus_store import release
    docs, index = library
    uri = str(tmp_path / "shared.db")
    first = KnowledgeBase(milvus_config(docs, index, uri=uri), embedder=embedder)
    second = KnowledgeBase(milvus_config(docs, tmp_path / "other-host", uri=uri), embedder=embedder)
    started, go = threading.Event(), threading.Event()

    def slow():
        started.set()
        go.wait(120)

    worker = threading.Thread(target=lambda: first.build(hooks={"embedded": slow}))
    worker.start()
    try:
        assert started.wait(120)
        with pytest.raises(BuildInProgress, match=rf"another build is running \(host .+, pid {os.getpid()}; its "
                                                  r"lease runs out in \d+ s"):
            second.build()
    finally:
        go.set()
        worker.join()
    try:
        second.build()
        assert second.ask("How many crimes does the force fail to record?", 3).passages
    finally:
        release(first.cfg)


def test_a_killed_builders_lease_refuses_others_until_it_runs_out(library, embedder):
    """A builder on another host killed outright cannot let its lease go: others are refused, naming it, until
    the lease runs out; then the next builder takes it over and publishes. On this host a builder whose process
    is gone holds nothing (the kill -9 test in test_reliability builds again at once)."""
    from index.milvus_store import BuildLease, client
    docs, index = library
    cfg = milvus_config(docs, index)
    kb = KnowledgeBase(cfg, embedder=embedder)
    dead = BuildLease(client(cfg), cfg.milvus.collection, seconds=600.0, settle=0)
    dead.owner = "gone-host:4242:deadbeef:"
    dead.acquire()
    dead._stop.set()  # killed: no more renewals, no release
    with pytest.raises(BuildInProgress, match="host gone-host, pid 4242"):
        kb.build()
    # its lease runs out
    client(cfg).upsert(cfg.milvus.collection + "_lease", [{"id": 0, "owner": dead.owner, "expires": time.time() - 1,
                                                           "v": [0.0, 0.0]}])
    assert dead.holder() is None
    kb.build()
    assert kb.ask(QUESTION, 3).passages
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = BuildLease(client(cfg), cfg.milvus.collection, seconds=60.0, settle=0)
    host, _, _, machine = here.owner.split(":")
    here.owner = f"{host}:{int(gone.stdout)}:0ddba11:{machine}"
    here.acquire()
    here._stop.set()
    kb.build()


def test_two_builders_claiming_the_lease_at_once_get_one_lease(library):
    """Fischer's claim: both read a free lease and write theirs at the same moment; after the settle time
    exactly one still finds its own claim and goes on, the other is refused."""
    from index.milvus_store import BuildLease, client
    from index.store import BuildInProgress
    docs, index = library
    c = client(milvus_config(docs, index))
    leases = [BuildLease(c, "racing", seconds=30, settle=1.0) for _ in range(2)]
    leases[0]._ensure()
    barrier, results = threading.Barrier(2), []
    write = BuildLease._write

    def write_after_both_read(self):  # both have found the lease free before either writes its claim
        barrier.wait()
        write(self)

    BuildLease._write = write_after_both_read

    def claim(lease):
        try:
            lease.acquire()
            results.append("won")
        except BuildInProgress:
            results.append("refused")

    threads = [threading.Thread(target=claim, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    finally:
        BuildLease._write = write
    assert sorted(results) == ["refused", "won"]
    for lease in leases:
        lease.release()
    assert leases[0].holder() is None


def test_a_build_whose_lease_was_taken_publishes_nothing(library, embedder, monkeypatch):
    """If a build's lease ran out (a long stall) and another builder took it, the build stops before switching
    the alias: the live build stays, and the message says why. The same when the builder that took over has
    already dropped the stalled build's half-made collections (as a killed build's), so that its upload fails
    inside Milvus; an upload failing while the lease is still its own raises Milvus's error as before."""
    from index import milvus_store
    from index.milvus_store import client
    docs, index = library
    cfg = milvus_config(docs, index)
    kb = KnowledgeBase(cfg, embedder=embedder)
    kb.build()
    live = kb.root.current()
    (docs / NEW_DOC[0]).write_text(NEW_DOC[1])

    def taken():
        client(cfg).upsert(cfg.milvus.collection + "_lease", [{"id": 0, "owner": "other-host:7:cafe",
                                                               "expires": time.time() + 60, "v": [0.0, 0.0]}])

    def upload_cut_short(c, build_dir, name, cfg_):
        taken()
        raise RuntimeError(f"collection not found[collection={name}]")  # what the drop leaves the upload with

    def upload_failing(c, build_dir, name, cfg_):
        raise RuntimeError("segment flush failed")

    with pytest.raises(BuildInProgress, match="lease in Milvus ran out and other-host is building; nothing was "
                                              "published"):
        kb.build(hooks={"embedded": taken})
    client(cfg).delete(cfg.milvus.collection + "_lease", filter="id == 0")
    monkeypatch.setattr(milvus_store, "_upload", upload_cut_short)
    with pytest.raises(BuildInProgress, match="lease in Milvus ran out and other-host is building"):
        kb.build()
    client(cfg).delete(cfg.milvus.collection + "_lease", filter="id == 0")
    monkeypatch.setattr(milvus_store, "_upload", upload_failing)
    with pytest.raises(RuntimeError, match="segment flush failed"):
        kb.build()
    # ... and also when Milvus cannot be asked about the lease any more (it went away mid-upload)
    real_check = milvus_store.BuildLease.check

    def unreachable_after_the_upload(self):  # the check before uploading answers; the one after cannot
        if getattr(self, "_asked", False):
            raise ConnectionError("connection refused")
        self._asked = True
        return real_check(self)
    monkeypatch.setattr(milvus_store.BuildLease, "check", unreachable_after_the_upload)
    with pytest.raises(RuntimeError, match="segment flush failed"):
        kb.build()
    monkeypatch.undo()
    assert kb.root.current() == live
    assert NEW_DOC[0] not in {d.doc for d in kb.documents()}


def test_milvus_failing_when_the_lease_is_taken_is_one_line(library, embedder, monkeypatch):
    from index.milvus_store import BuildLease
    docs, index = library
    kb = KnowledgeBase(milvus_config(docs, index), embedder=embedder)

    def broken(self):
        raise ConnectionError("connection reset")

    monkeypatch.setattr(BuildLease, "_ensure", broken)
    with pytest.raises(UserError, match=r"^cannot take the build lease in Milvus at .+: ConnectionError$"):
        kb.build()
