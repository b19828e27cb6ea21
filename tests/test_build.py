"""Building: incremental reuse by content hash, atomic swap, the build lock, and model checks."""

from __future__ import annotations

import threading

import pytest

from conftest import make_config
from index.kb import BuildInProgress, KnowledgeBase, UserError


def new_kb(docs, tmp_path, embedder, **sections):
    return KnowledgeBase(make_config(docs, tmp_path / "index", **sections), embedder=embedder)


def test_incremental_build_reuses_vectors(docs_copy, tmp_path, embedder):
    kb = new_kb(docs_copy, tmp_path, embedder)
    first = kb.build()
    assert len(first.added) == 5 and first.reused == 0 and first.embedded == first.chunks > 0

    second = kb.build()
    assert second.embedded == 0 and second.reused == first.chunks and len(second.unchanged) == 5

    target = docs_copy / "2017-09-07_news-failing-to-record-one-in-four-crimes.txt"
    target.write_text(target.read_text().replace("about 21,200 a year", "about 99,999 a year"))
    doc_chunks = next(d.chunks for d in kb.documents() if d.doc == target.name)
    third = kb.build()
    assert third.changed == [target.name] and third.added == third.removed == []
    # only chunks of the changed file that contain the edit are embedded again
    assert 1 <= third.embedded <= doc_chunks and third.reused == third.chunks - third.embedded
    assert any("99,999" in p.text for p in kb.ask("unrecorded crimes total a year", k=3).passages)

    (docs_copy / "hmicfrs-peel-public-contact-rated-adequate.txt").unlink()
    fourth = kb.build()
    assert fourth.removed == ["hmicfrs-peel-public-contact-rated-adequate.txt"] and fourth.embedded == 0
    answer = kb.ask("How was the force's handling of 999 calls rated?", k=10)
    assert all(p.doc != "hmicfrs-peel-public-contact-rated-adequate.txt" for p in answer.passages)
    assert "4 unchanged" in fourth.summary_line() and "1 removed" in fourth.summary_line()


def test_rebuild_embeds_everything(docs_copy, tmp_path, embedder):
    kb = new_kb(docs_copy, tmp_path, embedder)
    kb.build()
    report = kb.build(rebuild=True)
    assert report.reused == 0 and report.embedded == report.chunks


def test_failed_build_leaves_the_old_index_answering(docs_copy, tmp_path, embedder):
    kb = new_kb(docs_copy, tmp_path, embedder)
    kb.build()
    before = kb.ask("How many crimes went unrecorded?").passages[0].doc
    live = kb.root.current()
    (docs_copy / "new.txt").write_text("A brand new document about traffic wardens and parking.\n")

    def boom():
        raise RuntimeError("disk full")

    for point in ("loaded", "embedded", "written"):
        with pytest.raises(RuntimeError, match="disk full"):
            kb.build(hooks={point: boom})
        assert kb.root.current() == live
        fresh = new_kb(docs_copy, tmp_path, embedder)  # a new process would see the old build
        assert fresh.ask("How many crimes went unrecorded?").passages[0].doc == before
        assert len(fresh.documents()) == 5
    assert len(list((tmp_path / "index" / "builds").iterdir())) == 1  # half-written builds are removed


def test_a_second_build_is_refused_while_one_runs(docs_copy, tmp_path, embedder):
    kb = new_kb(docs_copy, tmp_path, embedder)
    kb.build()
    other = new_kb(docs_copy, tmp_path, embedder)  # like a second process: a separate lock holder
    started, release = threading.Event(), threading.Event()
    errors = []

    def slow():
        started.set()
        release.wait(30)

    worker = threading.Thread(target=lambda: kb.build(rebuild=True, hooks={"embedded": slow}))
    worker.start()
    try:
        assert started.wait(60)
        with pytest.raises(BuildInProgress, match="already running"):
            kb.build()
        with pytest.raises(BuildInProgress, match="another build is running"):
            other.build()
        assert kb.building
        # questions are answered from the old index meanwhile
        assert kb.ask("How many crimes went unrecorded?").passages
    finally:
        release.set()
        worker.join(60)
    assert not errors and not kb.building
    assert other.build().embedded == 0  # the lock is free again


def test_index_of_another_model_is_refused(docs_copy, tmp_path, embedder):
    new_kb(docs_copy, tmp_path, embedder).build()
    other = new_kb(docs_copy, tmp_path, embedder, embedding={"model": "some/other-model"})
    with pytest.raises(UserError, match="built with model all-MiniLM-L6-v2.*--rebuild"):
        other.ask("anything at all?")


def test_missing_index_and_empty_docs(tmp_path, embedder):
    (tmp_path / "empty").mkdir()
    kb = new_kb(tmp_path / "empty", tmp_path, embedder)
    with pytest.raises(UserError, match="no index .* run `citebot index`"):
        kb.ask("what happened?")
    with pytest.raises(UserError, match="no readable documents"):
        kb.build()
    with pytest.raises(UserError, match="does not exist"):
        new_kb(tmp_path / "missing", tmp_path, embedder).build()
    assert not kb.has_index()
