"""The int8 ONNX encoder: exported once from the packaged model, cached, vectors close to the float model's."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = [
    "Police recorded crime figures were found to be unreliable by the inspectorate.",
    "The force failed to record around one in four crimes reported to it.",
    "How many crimes went unrecorded?",
    "Public contact was rated adequate in the PEEL inspection, though call handling needed work.",
    "Leicestershire Police said it had already made changes to the way it records crime, and that victims "
    "were still supported even when a crime was not recorded. " * 3,
]
DOCS_TEXT = " ".join(TEXTS) * 4  # far over the model's 256 word pieces


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory):
    import os
    from index.config import EmbeddingConfig
    from index.embedding import Embedder
    old = os.environ.get("CITEBOT_CACHE_DIR")
    os.environ["CITEBOT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    try:
        e = Embedder(EmbeddingConfig(backend="onnx-int8"))
        e.model
        yield e
    finally:
        if old is None:
            os.environ.pop("CITEBOT_CACHE_DIR", None)
        else:
            os.environ["CITEBOT_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def torch_embedder():
    """The float model through sentence-transformers (the session's `embedder` is the int8 default)."""
    from index.config import EmbeddingConfig
    from index.embedding import Embedder
    e = Embedder(EmbeddingConfig(backend="torch"))
    e.model
    return e


def test_int8_vectors_match_float_model(onnx_embedder, torch_embedder):
    got = onnx_embedder.encode(TEXTS)
    want = torch_embedder.encode(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cos = (got * want).sum(axis=1)
    assert cos.min() >= 0.99, cos
    assert onnx_embedder.encode_query(TEXTS[2]) @ want[2] >= 0.99


def test_batching_changes_vectors_only_slightly(onnx_embedder):
    # dynamic quantisation scales activations per batch, so batch mates move a vector a little
    alone = np.stack([onnx_embedder.encode([t])[0] for t in TEXTS])
    together = onnx_embedder.encode(TEXTS, batch_size=2)
    assert (alone * together).sum(axis=1).min() >= 0.99


def test_export_is_cached(onnx_embedder):
    from index.config import EmbeddingConfig
    from index.embedding import Embedder
    path = onnx_embedder.model.path
    stamp = path.stat().st_mtime_ns
    again = Embedder(EmbeddingConfig(backend="onnx-int8"))
    assert again.model.path == path and path.stat().st_mtime_ns == stamp
    assert again.count(["two words"]) == onnx_embedder.count(["two words"]) == [2]


def test_idle_workers_do_not_spin_and_a_question_runs_on_one(onnx_embedder):
    # spinning ONNX Runtime workers took the CPU from the rest of each question on 2 cores (PERFORMANCE.md)
    model = onnx_embedder.model
    for n_texts in (1, 2):
        options = model.session_for(n_texts).get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert model.session_for(1).get_session_options().intra_op_num_threads == 1
    assert model.session.get_session_options().intra_op_num_threads == model.threads >= 1
    # a text alone gives the same vector on either session (batch mates move it a little: see above)
    enc = model.tokenizer(["How many crimes went unrecorded?"], return_tensors="np")
    feed = {i.name: enc[i.name].astype(np.int64) for i in model.session.get_inputs()}
    one, many = (model.session_for(n).run(None, feed)[0] for n in (1, 2))
    assert np.allclose(one, many, atol=1e-5)


def test_a_batchs_runs_side_by_side_give_the_vectors_of_one_run_at_a_time(onnx_embedder, monkeypatch):
    """A batch's runs are encoded side by side, one worker each (faster on 2 cores than one run at a time on
    both); every run holds the same texts either way, so every vector and token output is the same, bit for bit."""
    import threading
    from index import onnx_encoder
    from index.chunking import split_sentences
    model = onnx_embedder.model
    monkeypatch.setattr(model, "threads", 2)
    texts = [DOCS_TEXT[i:i + 300 + 7 * i] for i in range(0, 1200, 40)]  # 30 texts of different lengths: 4 runs
    spans = [split_sentences(t) for t in texts]
    seen = set()
    real_run = model.session_for(1).run

    def run(*a, **kw):
        seen.add(threading.current_thread().name)
        return real_run(*a, **kw)
    monkeypatch.setattr(model.session_for(1), "run", run)
    side = onnx_embedder.encode_passages(texts, spans)
    assert any(name.startswith("citebot-encode") for name in seen)
    monkeypatch.setattr(onnx_encoder, "SIDE_BY_SIDE", False)
    alone = onnx_embedder.encode_passages(texts, spans)
    assert np.array_equal(side[0], alone[0])
    assert all(np.array_equal(a, b) for a, b in zip(side[1], alone[1]))


def test_passages_pooled_as_each_run_ends_are_those_pooled_after(onnx_embedder, monkeypatch):
    """`encode_passages` with the int8 encoder: one call, each text pooled on the worker that ran it as its run
    ends, with progress as runs finish: the vectors of `encode` and the sentence vectors pooled afterwards from
    the token outputs of the same runs, bit for bit."""
    from index.chunking import split_sentences
    from index.embedding import pool_spans
    monkeypatch.setattr(onnx_embedder.model, "threads", 2)
    texts = [DOCS_TEXT[i:i + 40 + (i * 7) % 260] for i in range(0, 300 * 13, 13)]
    spans = [split_sentences(t) for t in texts]
    steps = []
    streamed = onnx_embedder.encode_passages(texts, spans, progress=lambda done, total: steps.append((done, total)))
    assert steps == sorted(steps) and len(steps) > 2 and steps[-1] == (300, 300)
    rows = onnx_embedder.model.encode(texts, batch_size=onnx_embedder.cfg.batch_size, output_value=None)
    after = [pool_spans(r["token_embeddings"], r["offset_mapping"], r["special_tokens_mask"], sp, len(t) - len(t.lstrip()))
             for r, sp, t in zip(rows, spans, texts)]
    assert all(np.array_equal(a, b) for a, b in zip(streamed[1], after))
    assert np.array_equal(streamed[0], np.stack([r["sentence_embedding"] for r in rows]))
    assert np.array_equal(streamed[0], onnx_embedder.encode(texts))  # and the vectors of `encode`


def test_runs_hold_texts_of_like_length_in_word_pieces_padded_as_the_tokenizer_pads(onnx_embedder, monkeypatch):
    """The int8 encoder tokenizes a block of texts once, then makes its runs of texts of like length in word
    pieces, longest first; each run is padded to its longest text exactly as the tokenizer itself pads."""
    from index import onnx_encoder
    model = onnx_embedder.model
    monkeypatch.setattr(onnx_encoder, "BLOCK_TEXTS", 40)  # two blocks and a bit
    texts = [("word " * (3 + (i * 37) % 90)).strip() + "." if i % 3 else DOCS_TEXT[i * 50:i * 50 + 400]
             for i in range(90)]
    session = model.session_for(1)
    feeds = []
    real = session.run

    def run(names, feed):
        feeds.append({k: v.copy() for k, v in feed.items()})
        return real(names, feed)
    monkeypatch.setattr(model, "threads", 1)  # one run at a time, in order
    monkeypatch.setattr(session, "run", run)
    monkeypatch.setattr(model, "session_for", lambda n: session)
    vectors = model.encode(texts, batch_size=32)
    assert len(feeds) == 5 + 5 + 2  # blocks of 40, 40 and 10 texts; runs of 8
    width = [f["attention_mask"].sum(1) for f in feeds]
    for block in (width[:5], width[5:10], width[10:]):  # longest first within a block, across its runs
        assert (np.diff(np.concatenate(block)) <= 0).all()
    text_of = {tuple(model._tokenize.encode(t).ids): t for t in texts}
    padding = onnx_encoder.batch_tokenizer(model.model_dir, model.max_seq_length)  # as sentence-transformers pads
    seen = []
    for f in feeds:  # each run exactly as the padded tokenizer gives the same texts
        run_texts = [text_of[tuple(r[m == 1])] for r, m in zip(f["input_ids"], f["attention_mask"])]
        padded = padding.encode_batch(run_texts)
        assert np.array_equal(f["input_ids"], [e.ids for e in padded])
        assert np.array_equal(f["attention_mask"], [e.attention_mask for e in padded])
        assert np.array_equal(f["token_type_ids"], [e.type_ids for e in padded])
        seen += run_texts
    assert sorted(seen) == sorted(texts)
    rows = model.encode(texts, output_value=None)  # token outputs: each text's own offsets and special flags, unpadded
    for t, r in zip(texts, rows):
        e = model._tokenize.encode(t.strip())  # offsets into the stripped text, as documented
        assert np.array_equal(r["offset_mapping"], np.array(e.offsets).reshape(-1, 2))
        assert np.array_equal(r["special_tokens_mask"], e.special_tokens_mask)
        assert len(r["token_embeddings"]) == len(e.ids)
    alone = np.stack([model.encode([t])[0] for t in texts[:3]])
    assert np.allclose(vectors[:3], alone, atol=0.05)  # padding and run mates change an int8 vector a little only


def test_the_batch_tokenizer_gives_what_transformers_gives(onnx_embedder):
    # the encoder tokenizes with the Rust tokenizer alone (no transformers import); it must match the
    # transformers tokenizer called as sentence-transformers calls it, padding and truncation included
    from index.onnx_encoder import batch_tokenizer
    model = onnx_embedder.model
    tokenize = batch_tokenizer(model.model_dir, model.max_seq_length)
    texts = [DOCS_TEXT, "", "Leicestershire Police", "21,200 crimes — “inadequate”, café naïve 東京 \u200b", "a " * 400]
    for batch in (texts, texts[1:3], texts[:1]):
        want = model.tokenizer(batch, padding=True, truncation="longest_first", max_length=model.max_seq_length,
                               return_tensors="np", return_offsets_mapping=True, return_special_tokens_mask=True)
        got = tokenize.encode_batch(batch)
        assert np.array_equal(want["input_ids"], [e.ids for e in got])
        assert np.array_equal(want["attention_mask"], [e.attention_mask for e in got])
        assert np.array_equal(want["token_type_ids"], [e.type_ids for e in got])
        assert np.array_equal(want["special_tokens_mask"], [e.special_tokens_mask for e in got])
        assert np.array_equal(want["offset_mapping"], [e.offsets for e in got])
    assert len(tokenize.encode_batch([DOCS_TEXT])[0].ids) == model.max_seq_length  # truncated, not 128
    assert len(model._tokenize.encode(DOCS_TEXT).ids) == model.max_seq_length  # the encoder's own, too


def test_missing_onnxruntime_is_a_clear_error(monkeypatch):
    from index.config import EmbeddingConfig
    from index.embedding import Embedder, EmbeddingError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EmbeddingError, match="onnxruntime"):
        Embedder(EmbeddingConfig(backend="onnx-int8")).model


@pytest.mark.parametrize("backend", ["onnx-int8", "torch"])
def test_encode_passages_pools_each_sentence_from_the_same_run(backend, onnx_embedder, torch_embedder):
    from index.chunking import split_sentences
    e = onnx_embedder if backend == "onnx-int8" else torch_embedder
    texts = [" ".join(TEXTS[:4]), "  " + TEXTS[0] + " " + TEXTS[1], TEXTS[4]]  # leading spaces: offsets into stripped text
    spans = [split_sentences(t) for t in texts]
    vectors, pooled = e.encode_passages(texts, spans)
    assert np.allclose(vectors, e.encode(texts), atol=0.02)  # the same chunk vectors as encode
    for text, sp, vecs in zip(texts, spans, pooled):
        assert vecs.shape == (len(sp), 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
        alone = e.encode([text[s:t] for s, t in sp])
        cos = vecs @ alone.T
        if text == TEXTS[4]:  # one sentence three times: each copy stands for it
            assert cos.min() >= 0.8, cos.round(2)
        else:  # distinct sentences: each is nearest its own
            assert (cos.argmax(axis=1) == np.arange(len(sp))).all(), cos.round(2)
    if backend == "torch":  # both backends pool alike
        other, other_pooled = onnx_embedder.encode_passages(texts, spans)
        assert ((other * vectors).sum(axis=1) >= 0.99).all()
        assert min(float((a * b).sum(axis=1).min()) for a, b in zip(pooled, other_pooled)) >= 0.95


@pytest.mark.parametrize("backend", ["onnx-int8", "torch"])
def test_word_pieces_are_read_in_context_with_where_each_starts(backend, onnx_embedder, torch_embedder):
    """`word_pieces`: one run over the texts; each text's word pieces as unit vectors (special tokens left out)
    and where each starts in the text as given (leading spaces counted); the two backends agree."""
    e = onnx_embedder if backend == "onnx-int8" else torch_embedder
    texts = ["  How many crimes?", TEXTS[1]]
    got = e.word_pieces(texts)
    vectors, starts = got[0]
    assert starts.tolist() == [2, 6, 11, 17] and vectors.shape == (4, 384)  # how / many / crimes / ?
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [texts[1][a] for a in got[1][1][:3]] == ["T", "f", "f"]  # The / force / failed
    assert e.word_pieces([]) == []
    if backend == "torch":
        other = onnx_embedder.word_pieces(texts)
        assert all(a[1].tolist() == b[1].tolist() for a, b in zip(got, other))
        assert min(float((a[0] * b[0]).sum(axis=1).min()) for a, b in zip(got, other)) >= 0.95


def test_the_export_has_no_per_score_mask_work(onnx_embedder):
    # the SDPA export checked every attention score for NaN (IsNaN, then Where): 22 % of the graph's time
    import onnx
    ops = {node.op_type for node in onnx.load(str(onnx_embedder.model.path)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops or "MatMulIntegerToFloat" in ops
    assert "IsNaN" not in ops


def test_bulk_encoding_runs_small_batches(onnx_embedder, monkeypatch):
    # the int8 graph encodes runs of RUN_TEXTS texts ~1.4x faster than runs of 32 (PERFORMANCE.md)
    from index import onnx_encoder
    model = onnx_embedder.model
    session = model.session
    sizes = []

    class Spy:
        def run(self, names, feed):
            sizes.append(len(feed["input_ids"]))
            return session.run(names, feed)

    monkeypatch.setattr(model, "session_for", lambda n: Spy())
    texts = TEXTS * 4
    got = model.encode(texts, batch_size=32)
    assert sizes and max(sizes) <= onnx_encoder.RUN_TEXTS < 32 and sum(sizes) == len(texts)
    monkeypatch.undo()
    want = onnx_embedder.encode(texts[:5], batch_size=1)
    assert (got[:5] * want).sum(axis=1).min() >= 0.99


def test_passages_read_from_their_word_pieces_are_those_read_from_their_text(onnx_embedder, monkeypatch):
    """Chunks whose word pieces chunking gave (`Chunk.pieces`) are read from them, not tokenized again: the
    same chunk and sentence vectors, bit for bit. A text whose pieces would not fit the model's window is
    tokenized (and cut by it) as before."""
    from pathlib import Path
    from index.chunking import chunk_document
    from index.documents import load_documents
    from index.embedding import PIECE_DTYPE
    from index.documents import Block, Document
    docs, _ = load_documents(Path(__file__).resolve().parent.parent / "docs")
    odd = ("Ünïcödé café naïve. 中文文本 and かな! A typed [CLS] and [SEP] token. " + "qz" * 60 + " is [UNK]. "
           "İstanbul, Straße, ΣΊΣΥΦΟΣ. Emoji 🚓 here.\tTab\r\nnext line with 21,200 crimes. ") * 3
    docs.append(Document("odd.txt", Path("odd.txt"), "text", "odd", None, None, odd, [Block(0, len(odd), line=1)]))
    chunks = [c for d in docs for c in chunk_document(d, onnx_embedder, 200)]
    chunks += chunk_document(docs[-1], onnx_embedder, 30)  # short: cut sentences too
    assert sum(c.pieces is not None for c in chunks) > 0.8 * len(chunks)
    texts, spans = [c.text for c in chunks] + [DOCS_TEXT], [list(c.sentences) for c in chunks]
    spans.append([(0, 400), (400, len(DOCS_TEXT))])
    long_ids = onnx_embedder.word_piece_ids([DOCS_TEXT[:400], DOCS_TEXT[400:]])

    def read(sentences):
        return np.frombuffer(b"".join(sentences), dtype=PIECE_DTYPE), [len(b) // PIECE_DTYPE.itemsize for b in sentences]
    pieces = [None if c.pieces is None else read(c.pieces) for c in chunks] + [read(long_ids)]
    model = onnx_embedder.model
    tokenized = []
    real = model._word_pieces
    monkeypatch.setattr(model, "_word_pieces", lambda part, parallel: tokenized.extend(part) or real(part, parallel))
    given = onnx_embedder.encode_passages(texts, spans, pieces=pieces)
    assert sorted(tokenized) == sorted([c.text for c in chunks if c.pieces is None] + [DOCS_TEXT.strip()])
    plain = onnx_embedder.encode_passages(texts, spans)
    assert np.array_equal(given[0], plain[0])
    assert all(np.array_equal(a, b) for a, b in zip(given[1], plain[1]))
