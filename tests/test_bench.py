"""`citebot bench` at a tiny size (shape and sanity, no timings asserted), the index type by size, and warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import make_config

KEYS = {"chunks", "build_chunks_per_s", "encode_chunks_per_s", "query_ms", "load_s", "rss_mb", "index_bytes",
        "index_type"}


def test_bench_tiny_corpus_with_hnsw_forced(embedder, docs_copy, tmp_path):
    from index.bench import BenchOptions, format_result, json_result, run_bench
    from index.search import MODES
    cfg = make_config(docs_copy, tmp_path / "unused", vectors={"exact_below": 0})
    opts = BenchOptions(sizes=[300], queries=2, sample=30, pool=150, in_process=True, noop_rebuild=False,
                        workdir=str(tmp_path / "bench"))
    [result] = run_bench(cfg, embedder, opts)
    out = json_result(result)
    assert KEYS <= set(out) and list(out)[:len(KEYS)] == [k for k in out if k in KEYS]
    assert 250 <= out["chunks"] <= 330
    assert out["index_type"] == "hnsw"
    assert result["recall_at_10"] >= 0.97
    sweep = result["ef_search"]  # recall by search depth on the same graph, to choose ef_search with
    assert set(sweep) == {"128", "256", "384", "512", "768", "1024"}
    assert all(0 < v["recall_at_10"] <= 1 and v["faiss_ms"] > 0 for v in sweep.values())
    assert sweep["1024"]["recall_at_10"] == result["recall_at_10"]  # the configured depth, measured twice
    assert "ef_search 128: recall" in format_result(result)
    assert result["build_estimated"] and result["sample_chunks"] >= 30
    assert out["build_chunks_per_s"] > 0 and out["encode_chunks_per_s"] > 0 and out["index_bytes"] > 0
    assert set(out["query_ms"]) == set(MODES)
    for p in out["query_ms"].values():
        assert set(p) == {"p50", "p95", "p99"} and 0 < p["p50"] <= p["p95"] <= p["p99"]
    assert {"embed_question", "dense_faiss", "search_end_to_end"} <= set(result["stages_ms"])
    peaks = result["full_build"]["stages_rss_mb"]  # peak memory by build stage, the largest reported as the build's
    assert {"loading", "chunking", "keywords", "embedding", "writing"} <= set(peaks) and min(peaks.values()) > 0
    assert result["build_rss_mb"] == max(*peaks.values(), *result["sample_build"]["stages_rss_mb"].values())
    assert "build stages (full size, synthetic vectors): loading" in format_result(result)


def test_bench_of_a_real_folder_pairs_each_encoder_call_with_a_raw_encode(embedder, docs_copy, tmp_path, capsys):
    """`citebot bench --corpus DIR`: the folder built as `citebot index` builds it, each build batch's encoder
    call paired with a raw model.encode of the same chunks, timed apart from the build."""
    from bot.cli import CliError, build_parser
    from bot.cli_bench import cmd_bench
    from index import build
    from index.bench import PairedEmbedder, TimedEmbedder, bench_corpus, format_corpus_result
    from index.kb import KnowledgeBase
    cfg = make_config(tmp_path / "unused", tmp_path / "unused-index")
    calls: list[tuple[str, int]] = []  # ("raw" or "build", texts), in order
    real_raw, real_build = PairedEmbedder._raw, TimedEmbedder.encode_passages

    def raw(self, texts):
        calls.append(("raw", len(texts)))
        return real_raw(self, texts)

    def build_call(self, texts, *a, **kw):
        calls.append(("build", len(texts)))
        return real_build(self, texts, *a, **kw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PairedEmbedder, "_raw", raw)
        mp.setattr(TimedEmbedder, "encode_passages", build_call)
        mp.setattr(build, "EMBED_BATCH", 8)  # several build batches: raw calls before and after theirs
        r = bench_corpus(cfg, embedder, docs_copy, rounds=2, workdir=tmp_path / "bench")
    seeds = _seed_chunks(embedder)
    chunks = len(seeds)
    assert (r["documents"], r["chunks"], r["word_pieces"]) == (5, chunks, sum(c.tokens for c in seeds))
    # each build batch's call paired with a raw call of as many texts, the raw one after it, then before it, ...
    rounds = [calls[:len(calls) // 2], calls[len(calls) // 2:]]
    for made in rounds:
        pairs = [made[i:i + 2] for i in range(0, len(made), 2)]
        assert len(pairs) >= 3 and [p[0][0] for p in pairs] == ["build", "raw"] * (len(pairs) // 2) + ["build"] * (len(pairs) % 2)
        assert all(a[1] == b[1] <= 8 for a, b in pairs) and sum(p[0][1] for p in pairs) == chunks
    for run in r["rounds"]:
        assert run["build_vs_raw"] == pytest.approx(run["build_chunks_per_s"] / run["raw_chunks_per_s"], abs=2e-3)
        assert run["raw_chunks_per_s"] == pytest.approx(chunks / run["raw_s"], rel=2e-2)
        assert 0 < run["encoder_s"] < run["build_s"] and {"chunking", "embedding", "calibrating"} <= set(run["stages_s"])
        assert run["stages_s"]["embedding"] < run["build_s"]  # the raw calls left out
    assert r["build_vs_raw"] == r["rounds"][1]["build_vs_raw"] and not (tmp_path / "unused-index").exists()
    assert "build 2:" in format_corpus_result(r) and "beside it = " in format_corpus_result(r)
    kb = KnowledgeBase(cfg, embedder=embedder)
    with pytest.raises(CliError, match="not a folder"):
        cmd_bench(kb, build_parser().parse_args(["bench", "--corpus", str(tmp_path / "nowhere")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliError, match="no readable documents"):
        cmd_bench(kb, build_parser().parse_args(["bench", "--corpus", str(tmp_path / "empty"), "--rounds", "1"]))


def test_bench_of_a_real_folder_against_the_other_backend_in_one_run(embedder, docs_copy, tmp_path, capsys):
    """`citebot bench --corpus DIR --against torch`: the same folder built with each backend in one run, and how
    many times faster the first is, from each side's median build."""
    import json
    import statistics
    from bot.cli import CliError, build_parser
    from bot.cli_bench import cmd_bench
    from index.kb import KnowledgeBase
    kb = KnowledgeBase(make_config(tmp_path / "unused", tmp_path / "unused-index"), embedder=embedder)
    args = ["bench", "--corpus", str(docs_copy), "--rounds", "2", "--workdir", str(tmp_path / "work")]
    assert cmd_bench(kb, build_parser().parse_args([*args, "--against", "torch", "--json"])) == 0
    r = json.loads(capsys.readouterr().out)
    other = r["against"]
    assert (r["backend"], other["backend"]) == ("onnx-int8", "torch") and len(other["rounds"]) == 2
    seeds = _seed_chunks(embedder)
    assert (other["documents"], other["chunks"], other["word_pieces"]) == (r["documents"], r["chunks"], r["word_pieces"]) == (
        5, len(seeds), sum(c.tokens for c in seeds))
    mine = r["word_pieces"] / statistics.median(run["build_s"] for run in r["rounds"])
    theirs = r["word_pieces"] / statistics.median(run["build_s"] for run in other["rounds"])
    s = r["speedup"]
    assert s["backends"] == ["onnx-int8", "torch"] and s["word_pieces_per_s"] == [round(mine), round(theirs)]
    assert s["word_pieces_ratio"] == pytest.approx(mine / theirs, abs=0.006) and s["docs_ratio"] == pytest.approx(s["word_pieces_ratio"], abs=0.011)
    assert all(run["raw_chunks_per_s"] > 0 for run in other["rounds"])  # torch's builds paired with raw torch encodes
    from index.bench import format_corpus_result
    text = format_corpus_result(r)
    assert "the same folder with backend torch:" in text and f"= {s['word_pieces_ratio']:.2f}x" in text
    assert text.count("build 2:") == 2 and "backend torch, " in text
    with pytest.raises(CliError, match="--against compares two builds of a folder"):
        cmd_bench(kb, build_parser().parse_args(["bench", "--against", "torch"]))
    with pytest.raises(CliError, match="is the backend being measured"):
        cmd_bench(kb, build_parser().parse_args([*args, "--against", "onnx-int8"]))


def _seed_chunks(embedder):
    from index.chunking import chunk_document
    from index.documents import load_documents
    from tests.conftest import DOCS
    docs, _ = load_documents(DOCS)
    return [c for d in docs for c in chunk_document(d, embedder, 200, 1)]


def test_bench_tiny_corpus_in_milvus_lite(embedder, docs_copy, tmp_path):
    """`citebot --store milvus bench`: the same measurements with the index in Milvus Lite (HNSW forced, so
    Milvus's own graph search is measured against exact search of its stored vectors)."""
    from index.bench import BenchOptions, format_result, json_result, run_bench
    cfg = make_config(docs_copy, tmp_path / "unused", store={"backend": "milvus"}, vectors={"exact_below": 0})
    opts = BenchOptions(sizes=[300], queries=2, sample=30, pool=150, in_process=True, noop_rebuild=False,
                        workdir=str(tmp_path / "bench"))
    [result] = run_bench(cfg, embedder, opts)
    out = json_result(result)
    assert out["store"] == "milvus" and out["index_type"] == "milvus-hnsw" and out["index_bytes"] > 0
    assert 0.9 <= result["recall_at_10"] <= 1.0 and result["faiss_ms"] > 0
    assert all(0 < p["p50"] <= p["p95"] for p in out["query_ms"].values())
    assert "store milvus, index milvus-hnsw" in format_result(result)


def test_synthetic_corpus_plans_the_asked_size():
    from index.bench import plan_corpus, simulate_chunks
    counts = np.random.default_rng(0).integers(8, 40, size=500)
    docs = plan_corpus(counts, 1000, 200, 1, seed=1)
    assert 1000 <= sum(c for _, c in docs) <= 1000 + 25
    assert all(len(set(ids)) == len(ids) for ids, _ in docs)  # no sentence twice in one document
    assert simulate_chunks([100, 100, 100], 200, 1) == 2


def test_index_type_by_size_and_filtered_hnsw_search():
    import faiss
    from index.build import make_faiss_index
    from index.config import VectorsConfig
    from index.store import VectorIndex
    x = np.random.default_rng(0).normal(size=(600, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert make_faiss_index(x, 32, VectorsConfig(exact_below=601))[1] == "flat"
    assert make_faiss_index(x, 32, VectorsConfig(exact_below=600))[1] == "hnsw"
    assert make_faiss_index(x, 32, VectorsConfig(exact_below=600, storage="float16"))[1] == "hnsw-fp16"
    index = VectorIndex(make_faiss_index(x, 32, VectorsConfig(exact_below=0))[0])
    allowed = np.arange(590, 600, dtype=np.int64)  # a filter the graph walk would mostly miss
    params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
    _, ids = index.search(x[:1], 5, params=params)
    exact = np.argsort(-(x[allowed] @ x[0]))[:5] + 590
    assert ids[0].tolist() == exact.tolist()


def test_an_index_filled_in_batches_answers_like_one_filled_at_once():
    """The build adds vectors batch by batch as they are embedded; every index type must take that."""
    from index.build import make_faiss_index, new_vector_index
    from index.config import VectorsConfig
    x = np.random.default_rng(1).normal(size=(700, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for storage in ("float32", "float16"):
        for exact_below, kind in ((701, "flat"), (700, "hnsw")):
            cfg = VectorsConfig(exact_below=exact_below, storage=storage)
            whole, _ = make_faiss_index(x, 32, cfg)
            parts, name = new_vector_index(len(x), 32, cfg)
            for i in range(0, len(x), 128):
                parts.add(x[i:i + 128])
            assert name == kind + ("-fp16" if storage == "float16" else "") and parts.ntotal == len(x)
            truth = np.argsort(-(x[:50] @ x.T), axis=1)[:, :10]
            _, got = parts.search(x[:50], 10)
            assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]) >= 0.97
            if kind == "flat":
                assert np.array_equal(got, whole.search(x[:50], 10)[1])


def test_build_records_index_type(embedder, docs_copy, tmp_path):
    from index.kb import KnowledgeBase
    kb = KnowledgeBase(make_config(docs_copy, tmp_path / "index", vectors={"exact_below": 1}), embedder=embedder)
    kb.build()
    assert kb.info()["index_type"] == "hnsw"
    assert kb.searcher().snap.info["vectors"]["exact_below"] == 1
    answer = kb.ask("How many crimes went unrecorded?", doc="2017-09-07_news-failing-to-record-one-in-four-crimes.txt")
    assert answer.passages and all(p.doc.startswith("2017-09-07") for p in answer.passages)


def test_warm_up_loads_model_and_index_in_background(kb):
    from index.embedding import Embedder
    from index.kb import KnowledgeBase
    fresh = KnowledgeBase(kb.cfg, embedder=Embedder(kb.cfg.embedding))
    assert not fresh.ready
    thread = fresh.warm_up()
    assert thread is not None and fresh.warm_up() is thread
    assert fresh.wait_ready(timeout=120)
    assert fresh.warm_error is None and fresh.embedder.loaded and fresh._searcher is not None


def test_warm_up_without_index_is_ready_and_questions_explain(embedder, tmp_path, docs_copy):
    from index.kb import KnowledgeBase, UserError
    kb = KnowledgeBase(make_config(docs_copy, tmp_path / "none"), embedder=embedder)
    kb.warm_up(background=False)
    assert kb.ready
    with pytest.raises(UserError, match="citebot index"):
        kb.ask("anything?")


def test_bench_cli_sizes():
    from bot.cli import build_parser
    from bot.cli_bench import requested_sizes
    args = build_parser().parse_args(["bench", "--chunks", "10k,100000", "--chunks", "1M", "--json"])
    assert requested_sizes(args) == [10_000, 100_000, 1_000_000]
    args = build_parser().parse_args(["bench", "--chunks", "100k", "10k", "1m", "100_000", "--json"])
    assert requested_sizes(args) == [10_000, 100_000, 1_000_000] and args.json
    assert requested_sizes(build_parser().parse_args(["bench"])) == [10_000, 100_000]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--chunks", "lots"])


def test_hnsw_search_depth_by_size_is_recorded_with_the_build(docs_copy, tmp_path, embedder):
    from index.build import build_index, new_vector_index, search_depth
    from index.config import VectorsConfig
    from index.store import Snapshot
    assert [search_depth(n) for n in (10, 50_000, 100_000, 1_000_000, 2_000_000)] == [128, 417, 514, 1024, 1261]
    assert search_depth(100_000, VectorsConfig(ef_search=300)) == 300  # a configured depth wins
    assert new_vector_index(100_000, 8, VectorsConfig(exact_below=0))[0].hnsw.efSearch == 514
    cfg = make_config(docs_copy, tmp_path / "index", vectors={"exact_below": 0})
    report = build_index(cfg, embedder)
    snap = Snapshot(report.build_dir)
    try:
        assert snap.info["index_type"] == "hnsw" and snap.index.raw.hnsw.efSearch == 128
        assert snap.info["vectors"]["ef_search"] == 128  # the depth in use, not the 0 of "by size"
    finally:
        snap.close()
