"""Building: incremental reuse by content hash, atomic swap, the build lock, and model checks."""

from __future__ import annotations

import threading
import time

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


# ------------------------------------------------------------------ sentence vectors (answer sentences)
def stored_sentences(kb) -> dict[str, tuple[str, bytes]]:
    """chunk hash → (spans JSON, vector bytes) of the live build."""
    from index.store import Snapshot
    snap = Snapshot(kb.root.current())
    try:
        rows = snap.query("SELECT c.hash, s.spans, s.vectors FROM chunks c JOIN sentences s ON s.chunk_id = c.id")
        return {r["hash"]: (r["spans"], r["vectors"]) for r in rows}
    finally:
        snap.close()


def test_sentence_vectors_are_pooled_at_build_time_and_read_at_question_time(docs_copy, tmp_path, embedder,
                                                                            monkeypatch):
    import numpy as np
    from index.chunking import split_sentences
    from index.store import Snapshot
    kb = new_kb(docs_copy, tmp_path, embedder)
    report = kb.build()
    snap = Snapshot(kb.root.current())
    rows = snap.query("SELECT id, text FROM chunks ORDER BY id")
    stored = snap.sentences([r["id"] for r in rows])
    snap.close()
    assert len(stored) == report.chunks
    own_best = total = 0
    diagonal, others = [], []
    for r in rows:
        spans, vectors = stored[r["id"]]
        assert spans == split_sentences(r["text"]) and vectors.shape == (len(spans), embedder.dim)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
        # each pooled vector stands for its own sentence: nearest to that sentence's own encoding
        alone = embedder.encode([r["text"][s:e] for s, e in spans])
        cos = vectors @ alone.T
        own_best += int((cos.argmax(axis=1) == np.arange(len(spans))).sum())
        total += len(spans)
        diagonal += list(np.diag(cos))
        others += list(cos[~np.eye(len(spans), dtype=bool)])
    # in context a sentence borrows from its neighbours, yet it stays nearest to its own text far more often
    # than chance (~1 in 7) and much closer to it than to the others (measured: 72 %, 0.73 against 0.45)
    assert own_best / total >= 0.6, f"{own_best}/{total}"
    assert np.mean(diagonal) > np.mean(others) + 0.2, (np.mean(diagonal), np.mean(others))

    calls = []
    encode = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda texts, *a, **kw: calls.append(list(texts)) or encode(texts, *a, **kw))
    answer = kb.ask("How many crimes were going unrecorded every year?", k=5)
    assert calls == [["How many crimes were going unrecorded every year?"]]  # only the question is embedded
    assert all(p.answer_spans for p in answer.passages) and "21,200" in answer.passages[0].answer_text


def test_reused_chunks_keep_their_sentence_vectors(docs_copy, tmp_path, embedder):
    kb = new_kb(docs_copy, tmp_path, embedder)
    kb.build()
    before = stored_sentences(kb)
    target = docs_copy / "2017-09-07_news-failing-to-record-one-in-four-crimes.txt"
    target.write_text(target.read_text().replace("about 21,200 a year", "about 99,999 a year"))
    report = kb.build()
    after = stored_sentences(kb)
    assert 1 <= report.embedded < report.chunks and len(after) == len(set(after))
    kept = set(before) & set(after)
    assert len(kept) >= report.reused - 1 and all(before[h] == after[h] for h in kept)


def test_an_index_without_sentence_vectors_still_highlights_and_is_upgraded(docs_copy, tmp_path, embedder,
                                                                           caplog):
    import sqlite3
    kb = new_kb(docs_copy, tmp_path, embedder)
    kb.build()
    con = sqlite3.connect(kb.root.current() / "index.sqlite")
    con.execute("DROP TABLE sentences")
    con.execute("UPDATE build_info SET value = 'null' WHERE key = 'sentence_vectors'")
    con.commit()
    con.close()
    old = new_kb(docs_copy, tmp_path, embedder)  # as a build made before sentence vectors were stored
    answer = old.ask("How many crimes were going unrecorded every year?", k=3)
    assert all(p.answer_spans for p in answer.passages) and "21,200" in answer.passages[0].answer_text
    report = old.build()
    assert report.embedded == report.chunks and "no sentence vectors" in caplog.text
    assert len(stored_sentences(old)) == report.chunks


def test_pool_spans_averages_the_tokens_inside_each_span():
    import numpy as np
    from index.embedding import pool_spans
    tokens = np.array([[9, 9], [1, 0], [3, 0], [0, 2], [9, 9]], dtype=np.float32)  # [CLS] a b c [SEP]
    offsets = np.array([[0, 0], [0, 3], [4, 7], [9, 12], [0, 0]])
    special = np.array([1, 0, 0, 0, 1])
    out = pool_spans(tokens, offsets, special, [(1, 9), (10, 14), (20, 30)], shift=1)  # text has 1 leading space
    assert np.allclose(out[0], [1, 0]) and np.allclose(out[1], [0, 1]) and not out[2].any()


def test_pool_spans_gives_the_same_bits_as_the_mean_of_a_mask():
    """Each span's tokens are found as a run of rows (the pieces' offsets ascend); the vectors are the plain
    mask-and-mean ones bit for bit, empty pieces, special tokens, overlapping and empty spans included."""
    import numpy as np
    from index.embedding import pool_spans
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        starts = np.sort(rng.integers(0, 300, n))
        ends = starts + rng.integers(0, 6, n)  # a width of 0: an empty piece, never pooled
        offsets = np.stack([starts, ends], axis=1)
        special = (rng.random(n) < 0.1).astype(np.int64)
        tokens = rng.normal(size=(n, 8)).astype(np.float32)
        spans = [tuple(sorted(map(int, rng.integers(0, 320, 2)))) for _ in range(int(rng.integers(1, 8)))]
        shift = int(rng.integers(0, 3))
        expected = np.zeros((len(spans), 8), dtype=np.float32)
        real = (special == 0) & (ends > starts)
        for k, (s, e) in enumerate(spans):
            inside = real & (starts + shift >= s) & (starts + shift < e)
            if inside.any():
                v = tokens[inside].mean(0)
                expected[k] = v / float(np.linalg.norm(v))
        assert np.array_equal(pool_spans(tokens, offsets, special, spans, shift), expected)


def test_slices_for_the_model_hold_texts_of_like_length_in_word_pieces(embedder):
    """Texts go to sentence-transformers (the torch backend) in slices ordered by word pieces, longest first,
    not by characters: a long word is one text's many pieces, short words another's few."""
    texts = ["a b c d e f g h i j k l", "internationalisation's counterrevolutionaries", "police", "x y"]
    counts = embedder.count(texts)
    assert len(texts[1]) > len(texts[0]) and counts[1] != counts[0]  # the two orders differ
    rows = [int(i) for part in embedder._slices(texts, 2, None) for i in part]
    assert sorted(rows) == [0, 1, 2, 3]
    assert [counts[i] for i in rows] == sorted(counts, reverse=True)


def test_a_build_written_in_small_batches_matches_one_batch(docs_copy, tmp_path, embedder, monkeypatch):
    """The build embeds and writes EMBED_BATCH chunks at a time: with batches of 4 (reused and new chunks mixed
    inside them after an edit) every chunk keeps its own vector and sentence row, and progress adds up."""
    import numpy as np
    from index import build
    from index.chunking import split_sentences
    from index.store import Snapshot

    def stored(kb):
        snap = Snapshot(kb.root.current())
        rows = snap.query("SELECT id, text FROM chunks ORDER BY id")
        ids = [r["id"] for r in rows]
        out = {r["text"]: (vec, snap.sentences([r["id"]])[r["id"]]) for r, vec in zip(rows, snap.vectors(ids))}
        snap.close()
        return out

    whole = new_kb(docs_copy, tmp_path / "whole", embedder)
    whole.build()
    expected = stored(whole)
    monkeypatch.setattr(build, "EMBED_BATCH", 4)
    small = new_kb(docs_copy, tmp_path / "small", embedder)
    seen = []
    report = small.build(progress=lambda stage, done, total: seen.append((done, total)) if stage == "embedding" else None)
    assert report.embedded == report.chunks > 8 and seen[-1] == (report.chunks, report.chunks)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    got = stored(small)
    assert got.keys() == expected.keys()
    for text, (vec, (spans, sentence_vectors)) in got.items():
        assert spans == split_sentences(text) and spans == expected[text][1][0]
        # int8 ONNX quantises activations per batch, so a vector moves a little with its batch companions
        # (cosine 0.989 at worst here); row for row it is still its own chunk's and sentences' vector
        cos = vec @ np.stack([v for v, _ in expected.values()]).T
        assert cos.max() > 0.98 and list(expected)[int(cos.argmax())] == text
        assert (np.sum(sentence_vectors * expected[text][1][1], axis=1) > 0.97).all()

    target = docs_copy / "2017-09-07_news-failing-to-record-one-in-four-crimes.txt"
    target.write_text(target.read_text().replace("about 21,200 a year", "about 99,999 a year"))
    again = small.build()
    assert 1 <= again.embedded < again.chunks and again.reused == again.chunks - again.embedded
    for text, (vec, (spans, sentence_vectors)) in stored(small).items():
        assert spans == split_sentences(text)
        if text in expected:  # copied from the previous build, row for row
            assert np.array_equal(vec, got[text][0]) and np.array_equal(sentence_vectors, got[text][1][1])
        else:
            assert "99,999" in text


def test_an_index_made_before_file_name_dates_opens_and_is_dated_by_the_next_build(docs_copy, tmp_path, embedder):
    """A build from before dates were read from file names holds ISO dates only (the 2018 release undated): it
    still answers, and the next ordinary build dates the release "2018" without embedding anything again."""
    import datetime as dt
    import sqlite3
    release = "2018_hmicfrs-crime-data-integrity-reinspection-press-release.txt"
    kb = new_kb(docs_copy, tmp_path, embedder)
    kb.build()
    assert {d.doc: d.date.isoformat() for d in kb.documents() if d.date}[release] == "2018"
    con = sqlite3.connect(kb.root.current() / "index.sqlite")
    con.execute("UPDATE documents SET date = NULL, content_hash = 'old' WHERE doc = ?", (release,))
    con.commit()
    con.close()
    old = new_kb(docs_copy, tmp_path, embedder)
    assert {d.doc: d.date for d in old.documents()}[release] is None
    assert old.ask("crime recording", 3, after=dt.date(2017, 1, 1)).passages
    report = old.build()
    assert report.changed == [release] and report.embedded == 0
    assert {d.doc: str(d.date) for d in old.documents()}[release] == "2018"


def test_progress_moves_within_one_large_file(tmp_path, embedder, monkeypatch):
    """Chunking reports characters as it goes, not one step per file (a 50 MB file sat at 0/1 for minutes)."""
    from index import chunking, documents
    monkeypatch.setattr(chunking, "COUNT_SLICE", 4)  # sentences counted at a time; 5000 in real use
    monkeypatch.setattr(documents, "CLEAN_STEP", 5)  # lines cleaned between reports; 20000 in real use
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "one.txt").write_text("\n".join(f"Sentence number {i} is about parking." for i in range(40)))
    seen = []
    kb = KnowledgeBase(make_config(tmp_path / "docs", tmp_path / "index"), embedder=embedder)
    kb.build(progress=lambda stage, done, total: seen.append((done, total)) if stage == "chunking" else None)
    total = seen[-1][1]
    inside = [done for done, _ in seen if 0 < done < total]
    assert seen[-1][0] == total and total > 1000 and inside == sorted(inside)  # never backwards
    cleaning = [done for done in inside if done <= 0.4 * total]
    assert len(set(cleaning)) >= 5 and len(set(inside) - set(cleaning)) >= 5  # both steps of one file move


def test_a_large_corpus_is_cleaned_and_chunked_in_worker_processes_with_the_same_result(docs_copy, tmp_path,
                                                                                        embedder, monkeypatch):
    """The same documents, chunks, sentence rows and keyword index (its terms analysed in the workers)."""
    import sqlite3
    from index import build
    from index.documents import DocumentStream
    (docs_copy / "only-an-advert.txt").write_text("Advertisement\n")  # cleaning leaves nothing: skipped

    def rows(kb):
        """Every row of the build's documents, chunks and sentences, and its keyword index's files."""
        snap = build.open_snapshot(kb.cfg)
        try:
            con = sqlite3.connect(snap.path / "index.sqlite")
            return ([con.execute(f"SELECT * FROM {table} ORDER BY id").fetchall() for table in ("documents", "chunks")]
                    + [con.execute("SELECT * FROM sentences ORDER BY chunk_id").fetchall(),
                       {f.name: f.read_bytes() for f in (snap.path / "bm25").iterdir()}])
        finally:
            snap.close()

    here = new_kb(docs_copy, tmp_path / "here", embedder)
    alone = here.build()
    with DocumentStream(docs_copy) as stream:  # docs/ is small: chunked in the build's own process
        assert build.chunk_workers(here.cfg, embedder, stream) == 1
        monkeypatch.setattr(build, "CHUNK_IN_WORKERS_CHARS", 0)
        monkeypatch.setattr(build.os, "sched_getaffinity", lambda pid: {0, 1})
        assert build.chunk_workers(here.cfg, embedder, stream) == 2
        assert build.chunk_workers(here.cfg, object(), stream) == 1  # counting a worker could not repeat

    monkeypatch.setattr(build, "CHUNK_BATCH_CHARS", 3000)  # several batches, some in flight while others are written
    used = []
    real = build._chunk_in_workers
    monkeypatch.setattr(build, "_chunk_in_workers", lambda *a: (used.append(a[2]), real(*a))[1])
    there = new_kb(docs_copy, tmp_path / "there", embedder)
    shared = there.build()
    assert used == [2]
    assert rows(there) == rows(here) and len(rows(there)[1]) == shared.chunks == alone.chunks
    assert shared.skipped == alone.skipped and any(w.startswith("only-an-advert.txt:") for w in shared.skipped)
    assert shared.added == alone.added and "only-an-advert.txt" not in shared.added


def _chunking_worker_dies(records, batch=-1):
    import os
    os._exit(1)


def _built_then_chunked_in_workers(docs_copy, tmp_path, embedder, monkeypatch):
    """A knowledge base built once; its next build cleans and chunks docs/ in two worker processes."""
    from index import build
    kb = new_kb(docs_copy, tmp_path, embedder)
    kb.build()
    monkeypatch.setattr(build, "CHUNK_IN_WORKERS_CHARS", 0)
    monkeypatch.setattr(build.os, "sched_getaffinity", lambda pid: {0, 1})
    return kb, kb.root.current()


def test_a_chunking_worker_that_dies_stops_the_build_with_a_clear_message(docs_copy, tmp_path, embedder,
                                                                          monkeypatch):
    from index import chunking
    from index.kb import UserError
    kb, before = _built_then_chunked_in_workers(docs_copy, tmp_path, embedder, monkeypatch)
    monkeypatch.setattr(chunking, "clean_and_chunk", _chunking_worker_dies)  # what the workers are sent
    with pytest.raises(UserError, match="ended unexpectedly .* the index is unchanged"):
        kb.build(rebuild=True)
    assert kb.root.current() == before and kb.ask("crime recording", 3).passages



def _sends_a_large_result(marker: str) -> bytes:
    from pathlib import Path
    Path(marker).touch()
    return b"x" * (64 << 20)


def test_ending_a_pool_whose_worker_is_killed_halfway_through_sending_a_result_does_not_hang(tmp_path):
    """A worker killed while its result is half sent (a build stopped while chunks come back): the pool's own thread
    must see the pipe end, fail the future and finish, not wait forever for the rest of the message."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from index.workers import end_processes
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    marker = tmp_path / "sending"
    future = pool.submit(_sends_a_large_result, str(marker))
    for _ in range(600):
        if marker.exists():
            break
        time.sleep(0.01)
    manager = pool._executor_manager_thread
    busy_until = time.perf_counter() + 0.3  # hold the GIL, so the pool's thread reads the 64 MB slowly (~13 MB/s)
    while time.perf_counter() < busy_until:
        pass
    end_processes(pool, wait=20)
    assert marker.exists() and not manager.is_alive()
    assert isinstance(future.exception(timeout=1), BrokenProcessPool)

STUCK = "2018_hmicfrs-crime-data-integrity-reinspection-press-release.txt"


def _stuck_on_one_file(document, *args, **kwargs):
    from index import chunking
    if document.doc == STUCK:
        time.sleep(120)  # twice what `_build_ends` waits: the build must not wait for it
    return chunking._real_chunk_document(document, *args, **kwargs)


def _build_ends(kb, **kwargs) -> BaseException | None:
    """Build in a thread; the exception it raised (None if none), once it has ended within 60 s (asserted)."""
    outcome = []

    def build():
        try:
            kb.build(rebuild=True, **kwargs)
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and len(outcome) == 1  # a stuck worker sleeps for 120 s
    return outcome[0]


def test_a_chunking_worker_stuck_on_a_file_is_stopped_and_the_file_named(docs_copy, tmp_path, embedder,
                                                                         monkeypatch):
    import multiprocessing
    from index import build, chunking
    from index.kb import UserError
    kb, before = _built_then_chunked_in_workers(docs_copy, tmp_path, embedder, monkeypatch)
    monkeypatch.setattr(build, "CHUNK_BATCH_CHARS", 3000)  # several batches: the others finish
    monkeypatch.setattr(build, "CHUNK_TIMEOUT", 5.0)
    monkeypatch.setattr(build, "CHUNK_SLOWEST", 10 ** 9)
    monkeypatch.setattr(chunking, "_real_chunk_document", chunking.chunk_document, raising=False)
    monkeypatch.setattr(chunking, "chunk_document", _stuck_on_one_file)  # what the workers call
    error = _build_ends(kb)
    assert isinstance(error, UserError) and str(error).startswith(
        f"cleaning and chunking {STUCK} took more than 5 s and was stopped; the index is unchanged")
    assert not multiprocessing.active_children()  # the workers were ended, not left behind
    assert kb.root.current() == before and kb.ask("crime recording", 3).passages
    monkeypatch.setattr(chunking, "chunk_document", chunking._real_chunk_document)
    assert kb.build(rebuild=True).chunks  # and the next build works


LAST = "hmicfrs-peel-public-contact-rated-adequate.txt"


def _stuck_on_the_last_file(document, *args, **kwargs):
    from index import chunking
    if document.doc == LAST:
        chunking._stuck_marker.touch()
        time.sleep(120)
    return chunking._real_chunk_document(document, *args, **kwargs)


def test_a_build_stopped_while_a_chunking_worker_is_stuck_ends_the_workers_at_once(docs_copy, tmp_path, embedder,
                                                                                   monkeypatch):
    """An error while the chunks are written (or Ctrl-C) ends the workers at once: it does not wait for a batch
    in flight, which a stuck worker would never finish (nor would the program's exit)."""
    import multiprocessing
    from index import build, chunking
    kb, before = _built_then_chunked_in_workers(docs_copy, tmp_path, embedder, monkeypatch)
    monkeypatch.setattr(build, "CHUNK_BATCH_CHARS", 3000)  # one batch a file, all four batches sent at once
    marker = tmp_path / "a worker is stuck"
    monkeypatch.setattr(chunking, "_stuck_marker", marker, raising=False)
    monkeypatch.setattr(chunking, "_real_chunk_document", chunking.chunk_document, raising=False)
    monkeypatch.setattr(chunking, "chunk_document", _stuck_on_the_last_file)

    def stop(stage, done, total):  # the first file written, once a worker sits on the last one
        if stage == "chunking" and done:
            for _ in range(300):
                if marker.exists():
                    raise RuntimeError("stopped while writing")
                time.sleep(0.1)

    error = _build_ends(kb, progress=stop)
    assert isinstance(error, RuntimeError) and str(error) == "stopped while writing" and marker.exists()
    assert not multiprocessing.active_children()
    assert kb.root.current() == before


@pytest.mark.parametrize("workers", [False, True])
def test_chunks_are_read_from_their_word_pieces_with_the_same_result(docs_copy, tmp_path, embedder, monkeypatch,
                                                                     workers):
    """Chunking hands each chunk's word pieces (`Chunk.pieces`, spooled in the new build until it is embedded)
    to the int8 encoder, which reads them instead of tokenizing the chunk again: the same vectors and sentence
    rows as a build that tokenizes every chunk, in the build's own process or from chunking workers."""
    import numpy as np
    from index import build
    from index.embedding import Embedder
    if workers:
        monkeypatch.setattr(build, "CHUNK_IN_WORKERS_CHARS", 0)
        monkeypatch.setattr(build.os, "sched_getaffinity", lambda pid: {0, 1})
    model = embedder.model
    tokenized = []
    real = model._word_pieces
    monkeypatch.setattr(model, "_word_pieces", lambda part, parallel: tokenized.extend(part) or real(part, parallel))

    def built(name: str):
        kb = new_kb(docs_copy, tmp_path / name, embedder)
        report = kb.build()
        snap = build.open_snapshot(kb.cfg)
        try:
            texts = {r["text"].strip() for r in snap.query("SELECT text FROM chunks")}
            read = [t for t in tokenized if t in texts]  # chunks tokenized (not calibration's questions)
            tokenized.clear()
            return report, read, snap.vectors(list(range(snap.size))), stored_sentences(kb)
        finally:
            snap.close()

    report, read, vectors, sentences = built("pieces")
    assert report.embedded == report.chunks and not read
    monkeypatch.setattr(Embedder, "word_piece_ids", lambda self, texts: None)  # no pieces: every chunk tokenized
    _, read, plain_vectors, plain_sentences = built("text")
    assert len(read) == report.chunks
    assert np.array_equal(vectors, plain_vectors) and sentences == plain_sentences


def test_the_piece_spool_gives_back_each_chunks_pieces_and_counts(tmp_path):
    """`PieceSpool`: each chunk's ids and its sentences' counts as added, read back while more are written; a
    chunk without pieces (or with more sentences than a count can say) gives None. Its file has no name."""
    import numpy as np
    from index.build import PieceSpool
    from index.embedding import PIECE_DTYPE

    def ids(*values):
        return np.asarray(values, dtype=PIECE_DTYPE).tobytes()
    spool = PieceSpool(tmp_path)
    spool.add((ids(5, 6), ids(7)))
    spool.add(None)
    spool.add((ids(),) * (np.iinfo(PIECE_DTYPE).max + 1))
    got = spool[0]
    assert got[0].tolist() == [5, 6, 7] and got[1].tolist() == [2, 1]
    assert spool[1] is None and spool[2] is None
    spool.add((ids(30000, 1, 2),))
    assert spool[3][0].tolist() == [30000, 1, 2] and spool[3][1].tolist() == [3]
    assert spool[0][0].tolist() == [5, 6, 7]
    assert not list(tmp_path.iterdir())
    spool.close()
