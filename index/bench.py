"""`citebot bench`: build and query speed, memory and index size on synthetic corpora of realistic chunks.

A corpus of N chunks is made of sentences of real documents (the docs folder, plus any `sources`), drawn at
random without repeats inside a document, one sentence per line, so chunk length and vocabulary are natural.

Per size the bench measures:
- build: the real pipeline (`build_index`: load, chunk, embed, SQLite, FAISS, BM25) against raw
  `model.encode` on the same chunk texts. Above `sample` chunks the encoder is timed on a sample of that size
  only (encoding 100k chunks takes over half an hour on 2 cores): the full-size build runs with synthetic vectors
  (each chunk's vector is the normalised mean of its sentences' real vectors, plus a little noise) and its
  time is that of the rest of the pipeline at full size plus N / (the encoder's chunks/s inside the sample
  build). The output says which it is ("build_estimated").
- queries: latency p50/p95/p99 end to end (`KnowledgeBase.ask`: question embedding, retrieval, answer
  sentences) for every mode the searcher supports, the first call excluded; the retrieval part alone
  (`Searcher.rank`, embedding included); and a breakdown by stage. They run in a fresh process, so its
  peak RSS is the memory of serving that index and its model-load time is a cold start.
- recall@10 of the index against exact search over the same stored vectors (1.0 for a flat index).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

DOC_CHUNKS = 25          # chunks per synthetic document
EF_SWEEP = (128, 256, 384, 512, 768, 1024)  # HNSW search depths whose recall the bench also reports
NOISE = 0.004            # per-dimension noise on synthetic vectors (cosine to the noiseless vector ~0.997)


@dataclass
class BenchOptions:
    """What to measure; see `citebot bench --help`."""
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000])
    queries: int = 100                 # timed questions per mode (after one untimed)
    sample: int = 2000                 # chunks encoded for real; larger corpora use synthetic vectors
    pool: int = 3000                   # sentences drawn from the sources
    sources: list[str] = field(default_factory=list)  # more folders / BEIR corpus.jsonl files of sentences
    workdir: str | None = None         # where corpora and indexes go (default: a temporary folder)
    keep: bool = False                 # keep the workdir
    seed: int = 13
    in_process: bool = False           # run queries in this process (tests; RSS and load time less meaningful)
    noop_rebuild: bool = True          # also time a rebuild of the docs folder with nothing changed


# ---------------------------------------------------------------- helpers

def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 of `values` (milliseconds), rounded to 0.01."""
    if not len(values):
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    a = np.asarray(values, dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (VmHWM: unlike ru_maxrss, not inherited from the
    parent across fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reset_peak_rss() -> None:
    """Start the peak (VmHWM) again from the current RSS, so each size's build reports its own peak (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


class TimedEmbedder:
    """An embedder that adds up the time spent in `encode` and `count` (the build's use of the model); `count`
    in this process only (a large corpus is counted by the chunking workers: `index.build.chunk_workers`)."""

    def __init__(self, inner):
        self.inner = inner
        self.encode_s = 0.0
        self.count_s = 0.0

    def _timed(self, total: str, fn: Callable, *a, **kw):
        """`fn(*a, **kw)`, its time added to the attribute `total`."""
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            setattr(self, total, getattr(self, total) + time.perf_counter() - t)

    def encode(self, texts, *a, **kw):
        return self._timed("encode_s", self.inner.encode, texts, *a, **kw)

    def encode_passages(self, texts, *a, **kw):
        return self._timed("encode_s", self.inner.encode_passages, texts, *a, **kw)

    def count(self, texts):
        return self._timed("count_s", self.inner.count, texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class SyntheticEmbedder(TimedEmbedder):
    """Counts word pieces with the real tokenizer, but "encodes" a chunk as the normalised mean of the real
    vectors of its sentences (one per line, from the pool) plus a little noise: realistic neighbourhoods
    without running the model."""

    def __init__(self, inner, sentences: Sequence[str], vectors: np.ndarray, seed: int = 0):
        super().__init__(inner)
        self.lookup = {s: i for i, s in enumerate(sentences)}
        self.vectors = vectors.astype(np.float32)
        self.rng = np.random.default_rng(seed)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def encode(self, texts, *a, **kw):
        t = time.perf_counter()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        n = len(self.vectors)
        for row, text in enumerate(texts):
            ids = [self.lookup.get(line, hash(line) % n) for line in text.split("\n") if line]
            out[row] = self.vectors[ids].mean(axis=0) if ids else self.vectors[hash(text) % n]
        out += self.rng.normal(0.0, NOISE, out.shape).astype(np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        self.encode_s += time.perf_counter() - t
        return out

    def encode_passages(self, texts, spans, *a, **kw):
        """Chunk vectors as `encode`; each sentence's vector is its pool sentence's real vector."""
        vectors = self.encode(texts)
        t = time.perf_counter()
        n = len(self.vectors)
        pooled = [self.vectors[[self.lookup.get(text[s:e].strip(), hash(text[s:e]) % n) for s, e in sp]]
                  if sp else np.zeros((0, self.dim), dtype=np.float32) for text, sp in zip(texts, spans)]
        self.encode_s += time.perf_counter() - t
        return vectors, pooled


class StageTimer:
    """A build progress callback that records when each stage (loading, chunking, embedding, writing) starts
    and the peak RSS of this process during each (VmHWM, reset as a stage starts)."""

    def __init__(self):
        self.starts: list[tuple[str, float]] = []
        self.peaks: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.starts or self.starts[-1][0] != stage:
            self.finish()
            reset_peak_rss()
            self.starts.append((stage, time.perf_counter()))

    def finish(self) -> None:
        """Record the peak of the stage under way (the build has ended, or the next stage begins)."""
        if self.starts:
            stage = self.starts[-1][0]
            self.peaks[stage] = max(self.peaks.get(stage, 0.0), peak_rss_mb())

    def seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (stage, t), (_, t2) in zip(self.starts, self.starts[1:]):
            out[stage] = round(out.get(stage, 0.0) + t2 - t, 3)
        return out


# ---------------------------------------------------------------- the synthetic corpus

def _source_texts(path: Path) -> list[str]:
    from index.documents import load_documents
    if path.is_dir():
        return [d.text for d in load_documents(path)[0]]
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        return [str(r.get("text") or "") for r in rows]
    return [path.read_text(encoding="utf-8", errors="replace")]


def sentence_pool(sources: Sequence[Path], counter, limit: int, seed: int, max_tokens: int) -> tuple[list[str], np.ndarray]:
    """Up to `limit` distinct sentences of the sources (4 to 60 words, at most a third of the chunk budget in
    word pieces) and their word-piece counts."""
    from index.chunking import split_sentences
    seen, sentences = set(), []
    for src in sources:
        for text in _source_texts(Path(src)):
            for s, e in split_sentences(text):
                sent = " ".join(text[s:e].split())
                if 4 <= len(sent.split()) <= 60 and any(c.isalpha() for c in sent) and sent not in seen:
                    seen.add(sent)
                    sentences.append(sent)
    if not sentences:
        raise ValueError("bench: no sentences found in the sources")
    rng = random.Random(seed)
    rng.shuffle(sentences)
    sentences = sentences[: limit * 2]
    counts = counter.count(sentences)
    keep = [(s, n) for s, n in zip(sentences, counts) if n <= max_tokens // 3][:limit]
    return [s for s, _ in keep], np.array([n for _, n in keep], dtype=np.int64)


def simulate_chunks(counts: Sequence[int], max_tokens: int, overlap: int) -> int:
    """How many chunks `chunk_document` makes of sentences with these word-piece counts (one page)."""
    n = i = 0
    while i < len(counts):
        j = total = 0
        j = i
        while j < len(counts) and total + counts[j] <= max_tokens:
            total += counts[j]
            j += 1
        j = max(j, i + 1)
        n += 1
        if j >= len(counts):
            break
        nxt = j
        while j - nxt < overlap and nxt - 1 > i:
            shared = sum(counts[nxt - 1:j])
            if shared > max_tokens // 2 or shared + counts[j] > max_tokens:
                break
            nxt -= 1
        i = nxt
    return n


def plan_corpus(counts: np.ndarray, n_chunks: int, max_tokens: int, overlap: int, seed: int) -> list[tuple[list[int], int]]:
    """Documents as lists of pool sentence indices (no repeats within one), with their chunk counts, until
    the corpus has at least `n_chunks` chunks."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1.0, max_tokens / float(counts.mean()) - overlap)
    docs, total = [], 0
    while total < n_chunks:
        # a small pool gives short documents: a short line in half the documents is dropped as boilerplate
        want = min(DOC_CHUNKS, n_chunks - total, max(1, int(len(counts) / (4 * per_chunk))))
        m = min(len(counts), max(2, int(round(want * per_chunk)) + overlap))
        ids = rng.choice(len(counts), size=m, replace=False).tolist()
        c = simulate_chunks(counts[ids].tolist(), max_tokens, overlap)
        while c > want and len(ids) > 1:  # trim the last document to land near n_chunks
            ids = ids[: max(1, int(len(ids) * want / c))]
            c = simulate_chunks(counts[ids].tolist(), max_tokens, overlap)
        docs.append((ids, c))
        total += c
    return docs


def write_corpus(folder: Path, docs: Sequence[tuple[list[int], int]], sentences: Sequence[str]) -> int:
    """Write the planned documents as .txt files (one sentence per line); returns the planned chunk count."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, (ids, _) in enumerate(docs):
        sub = folder / f"{n // 1000:04d}"
        sub.mkdir(exist_ok=True)
        (sub / f"report-{n:06d}.txt").write_text("\n".join(sentences[i] for i in ids) + "\n", encoding="utf-8")
    return sum(c for _, c in docs)


def make_questions(sentences: Sequence[str], n: int, seed: int) -> list[str]:
    """Question-like word windows (5 to 10 words) of pool sentences, all different."""
    rng = random.Random(seed + 1)
    out, seen = [], set()
    for _ in range(n * 20):
        words = re.findall(r"[\w'-]+", rng.choice(sentences))
        if len(words) < 5:
            continue
        w = rng.randint(5, min(10, len(words)))
        s = rng.randint(0, len(words) - w)
        q = " ".join(words[s:s + w]) + "?"
        if q not in seen:
            seen.add(q)
            out.append(q)
        if len(out) >= n:
            break
    return out


# ---------------------------------------------------------------- queries (in a fresh process by default)

def _modes() -> list[str]:
    import inspect
    from index import search
    if "mode" in inspect.signature(search.Searcher.search).parameters:
        return list(getattr(search, "MODES", ("dense",)))
    return ["dense"]


def measure_queries(cfg, questions: Sequence[str], n_queries: int) -> dict:
    """Load the model and the live index of `cfg`, then time questions per mode; see the module docstring."""
    t0 = time.perf_counter()
    from index.kb import KnowledgeBase
    kb = KnowledgeBase(cfg)
    kb.embedder.model
    kb.embedder.encode(["warm up"])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    searcher = kb.searcher()
    modes = _modes()
    if any(m != "dense" for m in modes):
        searcher.snap.keyword  # the BM25 index loads on first use
    open_s = time.perf_counter() - t0
    out: dict = {"load_s": round(load_s, 2), "open_index_s": round(open_s, 2), "modes": modes,
                 "query_ms": {}, "retrieval_ms": {}, "stages_ms": {}}
    qs = list(questions)
    step = n_queries + 1
    for m_i, mode in enumerate(modes):
        block = qs[m_i * step:(m_i + 1) * step] or qs[:step]
        kw = {"mode": mode} if mode != "dense" or len(modes) > 1 else {}
        kb.ask(block[0], **kw)  # the first call is excluded
        times = []
        for q in block[1:]:
            t = time.perf_counter()
            kb.ask(q, **kw)
            times.append((time.perf_counter() - t) * 1000)
        out["query_ms"][mode] = percentiles(times)
        # the retrieval part alone (question embedding + ranking), on questions not asked yet in this mode
        rank = getattr(searcher, "rank", None)
        if rank is not None:
            times = []
            for q in qs[(m_i + 1) * step:(m_i + 1) * step + max(2, n_queries // 2)] or block[1:]:
                t = time.perf_counter()
                rank(q, mode) if "mode" in kw else rank(q)
                times.append((time.perf_counter() - t) * 1000)
            out["retrieval_ms"][mode] = percentiles(times)
    out["stages_ms"] = _stages(searcher, kb.embedder, qs[-max(2, n_queries // 2):])
    out.update(_recall(searcher, kb.embedder, qs[: max(10, n_queries)]))
    out["threads"] = _threads(kb.cfg)
    out["rss_mb"] = peak_rss_mb()
    return out


def _threads(cfg) -> int:
    """The model's threads for a batch (a question runs on one with the ONNX encoder: OnnxEncoder.session_for)."""
    if cfg.embedding.backend == "torch":
        import torch
        return int(torch.get_num_threads())
    return cfg.embedding.threads or (os.cpu_count() or 1)


def _stages(searcher, embedder, questions: Sequence[str]) -> dict:
    """p50 milliseconds of each step of a hybrid answer, measured one by one on the same questions."""
    timings: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable):
        t = time.perf_counter()
        value = fn()
        timings.setdefault(name, []).append((time.perf_counter() - t) * 1000)
        return value

    depth = getattr(searcher.cfg, "candidates", 50)
    mode = {"mode": "hybrid"} if "hybrid" in _modes() else {}
    for q in questions:
        qvec = timed("embed_question", lambda: embedder.encode_query(q))
        timed("dense_faiss", lambda: searcher.dense(qvec, depth, None))
        if hasattr(searcher, "keyword"):
            timed("bm25_scores", lambda: searcher.keyword(q, depth, None))
        if hasattr(searcher, "rank"):
            hits = timed("rank_without_embedding", lambda: searcher.rank(q, mode.get("mode"), None, None, qvec))
            timed("fetch_chunks", lambda: searcher.snap.chunks([h.chunk_id for h in hits[:20]]))
        timed("search_end_to_end", lambda: searcher.search(q, **mode))
    out = {k: round(statistics.median(v), 2) for k, v in timings.items()}
    if "rank_without_embedding" in out:  # what search adds to ranking: mostly answer-sentence selection
        out["answer_sentences_etc"] = round(out["search_end_to_end"] - out["embed_question"]
                                            - out["rank_without_embedding"], 2)
    return out


def _recall(searcher, embedder, questions: Sequence[str], k: int = 10) -> dict:
    """recall@k of the index against exact search over its stored vectors, and both latencies."""
    index = searcher.snap.index
    if not hasattr(index, "search"):  # a store that searches itself (Milvus): against exact search of its vectors
        return _store_recall(searcher, embedder, questions, k)
    raw, exact = getattr(index, "raw", index), getattr(index, "exact", index)
    qv = np.ascontiguousarray(embedder.encode(list(questions)), dtype=np.float32)
    k = min(k, int(raw.ntotal))
    if k <= 0:
        return {"recall_at_10": 1.0}

    def run(idx):
        ids, times = [], []
        for v in qv:
            t = time.perf_counter()
            ids.append(idx.search(v.reshape(1, -1), k)[1][0])
            times.append((time.perf_counter() - t) * 1000)
        return ids, round(statistics.median(times), 3)

    got, ann_ms = run(raw)
    if exact is raw:
        return {"recall_at_10": 1.0, "faiss_ms": ann_ms, "exact_faiss_ms": ann_ms}
    truth, exact_ms = run(exact)

    def recall_of(found) -> float:
        return round(float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)])), 4)

    out = {"recall_at_10": recall_of(got), "faiss_ms": ann_ms, "exact_faiss_ms": exact_ms}
    hnsw = getattr(raw, "hnsw", None)
    if hnsw is not None:  # the recall and time of other search depths on the same graph (ef_search to choose)
        built, out["ef_search"] = hnsw.efSearch, {}
        try:
            for ef in EF_SWEEP:
                hnsw.efSearch = ef
                found, ms = run(raw)
                out["ef_search"][str(ef)] = {"recall_at_10": recall_of(found), "faiss_ms": ms}
        finally:
            hnsw.efSearch = built
    return out


def _store_recall(searcher, embedder, questions: Sequence[str], k: int = 10) -> dict:
    """recall@k of the store's own vector search (`snap.dense`) against exact search over its stored vectors."""
    snap = searcher.snap
    k = min(k, snap.size)
    if k <= 0:
        return {"recall_at_10": 1.0}
    vectors = np.concatenate([snap.vectors(range(i, min(i + 10_000, snap.size))) for i in range(0, snap.size, 10_000)])
    qv = np.ascontiguousarray(embedder.encode(list(questions)), dtype=np.float32)
    found, times = [], []
    for v in qv:
        t = time.perf_counter()
        found.append([i for i, _ in snap.dense(v, k)])
        times.append((time.perf_counter() - t) * 1000)
    truth = [np.argsort(-(vectors @ v), kind="stable")[:k] for v in qv]
    recall = float(np.mean([len(set(a) & set(b.tolist())) / k for a, b in zip(found, truth)]))
    return {"recall_at_10": round(recall, 4), "faiss_ms": round(statistics.median(times), 3), "exact_faiss_ms": None}


def _serve_main(job: str) -> None:
    """Entry point of the query process: read (cfg, questions, n) from the pickle `job`, write JSON beside it."""
    with open(job, "rb") as fh:
        cfg, questions, n = pickle.load(fh)
    result = measure_queries(cfg, questions, n)
    Path(job).with_suffix(".json").write_text(json.dumps(result))


def _queries_in_subprocess(cfg, questions: Sequence[str], n: int, workdir: Path) -> dict:
    job = workdir / "queries.pickle"
    with open(job, "wb") as fh:
        pickle.dump((cfg, list(questions), n), fh)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", f"from index.bench import _serve_main; _serve_main({str(job)!r})"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench: the query process failed:\n{proc.stderr[-2000:]}")
    return json.loads(job.with_suffix(".json").read_text())


# ---------------------------------------------------------------- one size

def _build(cfg, embedder, log: Callable[[str], None]) -> tuple[float, StageTimer, object]:
    from index.build import build_index
    timer = StageTimer()
    t = time.perf_counter()
    report = build_index(cfg, embedder, rebuild=True, progress=timer)
    timer.finish()
    return time.perf_counter() - t, timer, report


def bench_size(n: int, base_cfg, embedder, sentences: list[str], counts: np.ndarray, pool_vectors: np.ndarray,
               questions: list[str], opts: BenchOptions, workdir: Path,
               log: Callable[[str], None] = lambda s: None) -> dict:
    """Measure one corpus size; returns the result dict (the `--json` object)."""
    from index.build import open_snapshot
    cfg_max, overlap = base_cfg.chunking.max_tokens, base_cfg.chunking.overlap_sentences
    plan = plan_corpus(counts, n, cfg_max, overlap, opts.seed + n)
    here = workdir / f"n{n}"
    shutil.rmtree(here, ignore_errors=True)
    reset_peak_rss()

    def config(name: str):
        c = copy.deepcopy(base_cfg)
        c.paths.docs = str(here / name / "docs")
        c.paths.index = str(here / name / "index")
        return c

    # 1. the real pipeline on (a prefix of) the corpus, and raw model.encode on the same chunk texts
    sample_docs, total = [], 0
    for d in plan:
        if total >= min(n, opts.sample):
            break
        sample_docs.append(d)
        total += d[1]
    sample_cfg = config("sample")
    write_corpus(Path(sample_cfg.paths.docs), sample_docs, sentences)
    log(f"[{n}] real build of {total} chunks")
    timed = TimedEmbedder(embedder)
    sample_s, sample_timer, report = _build(sample_cfg, timed, log)
    build_peak = max(sample_timer.peaks.values())
    snap = open_snapshot(sample_cfg)
    texts = [r["text"] for _, r in sorted(snap.chunks(list(range(snap.size))).items())]
    snap.close()
    log(f"[{n}] raw model.encode of the same {len(texts)} chunks")
    t = time.perf_counter()
    embedder.model.encode(texts, batch_size=base_cfg.embedding.batch_size, normalize_embeddings=True,
                          convert_to_numpy=True, show_progress_bar=False)
    encode_s = time.perf_counter() - t
    encode_rate = len(texts) / encode_s
    sample_rate = report.chunks / sample_s
    result: dict = {
        "chunks": report.chunks, "documents": len(sample_docs),
        "build_chunks_per_s": round(sample_rate, 2), "encode_chunks_per_s": round(encode_rate, 2),
        "build_estimated": False, "sample_chunks": len(texts),
        "sample_build": {"seconds": round(sample_s, 2), "stages_s": sample_timer.seconds(),
                         "stages_rss_mb": sample_timer.peaks,
                         "encode_s": round(timed.encode_s, 2), "count_tokens_s": round(timed.count_s, 2)},
    }
    serve_cfg = sample_cfg

    # 2. the full size with synthetic vectors; the encoder's share is extrapolated from the sample build
    if n > total:
        full_cfg = config("full")
        write_corpus(Path(full_cfg.paths.docs), plan, sentences)
        shutil.rmtree(here / "sample" / "docs", ignore_errors=True)
        log(f"[{n}] full build with synthetic vectors")
        synth = SyntheticEmbedder(embedder, sentences, pool_vectors, opts.seed)
        full_s, full_timer, report = _build(full_cfg, synth, log)
        build_peak = max(build_peak, *full_timer.peaks.values())
        rest_s = full_s - synth.encode_s
        in_build_rate = total / max(timed.encode_s, 1e-9)
        est = rest_s + report.chunks / in_build_rate
        result.update({
            "chunks": report.chunks, "documents": len(plan), "build_estimated": True,
            "build_chunks_per_s": round(report.chunks / est, 2),
            "full_build": {"seconds_without_encoder": round(rest_s, 2), "stages_s": full_timer.seconds(),
                           "stages_rss_mb": full_timer.peaks,
                           "count_tokens_s": round(synth.count_s, 2),
                           "encoder_s_estimated": round(report.chunks / in_build_rate, 1),
                           "seconds_estimated": round(est, 1)},
        })
        serve_cfg = full_cfg
        shutil.rmtree(here / "full" / "docs", ignore_errors=True)
    result["build_vs_encode"] = round(result["build_chunks_per_s"] / result["encode_chunks_per_s"], 3)
    result["build_rss_mb"] = build_peak  # the largest of the stages' peaks, of either build

    snap = open_snapshot(serve_cfg)
    result["index_type"] = snap.info.get("index_type", "flat")
    result["store"] = serve_cfg.store.backend
    if snap.path is not None:
        result["index_bytes"] = dir_bytes(snap.path)
        result["faiss_bytes"] = (snap.path / "vectors.faiss").stat().st_size
    else:  # Milvus Lite: its folder (this index only); a server's disk is not ours to measure
        uri = Path(serve_cfg.milvus_uri)
        result["index_bytes"] = dir_bytes(uri) if uri.exists() else 0
        result["faiss_bytes"] = 0
    snap.close()
    if serve_cfg.store.backend == "milvus":  # the query process opens the Milvus Lite file (one process at a time)
        from index.milvus_store import release
        release(sample_cfg)
        release(serve_cfg)

    # 3. queries
    log(f"[{n}] queries")
    if opts.in_process:
        q = measure_queries(serve_cfg, questions, opts.queries)
    else:
        q = _queries_in_subprocess(serve_cfg, questions, opts.queries, here)
    result.update(q)
    return result


def noop_rebuild_seconds(base_cfg, embedder, workdir: Path) -> float:
    """Seconds to rebuild the docs folder when nothing changed (after a first build; model loaded)."""
    from index.build import build_index
    cfg = copy.deepcopy(base_cfg)
    cfg.paths.index = str(workdir / "docs-index")
    build_index(cfg, embedder)
    t = time.perf_counter()
    build_index(cfg, embedder)
    return round(time.perf_counter() - t, 2)


class PairedEmbedder(TimedEmbedder):
    """A `TimedEmbedder` that pairs each of the build's encoder calls (`encode_passages`: one build batch) with a
    raw `model.encode` of the same texts, before it on every second call and after it on the others, timed
    apart (`raw_s`, `raw_texts`): the raw encoder's speed measured beside the build's own calls, minute by
    minute, so that the machine's drift (a few per cent between runs minutes apart on a shared machine) falls
    on both alike."""

    def __init__(self, inner, batch_size: int):
        super().__init__(inner)
        self.batch_size = batch_size
        self.raw_s = 0.0
        self.raw_texts = 0
        self.calls = 0

    def _raw(self, texts) -> None:
        texts = [str(t) for t in texts]
        t = time.perf_counter()
        self.inner.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        self.raw_s += time.perf_counter() - t
        self.raw_texts += len(texts)

    def encode_passages(self, texts, *a, **kw):
        self.calls += 1
        if self.calls % 2 == 0:
            self._raw(texts)
        out = super().encode_passages(texts, *a, **kw)
        if self.calls % 2 == 1:
            self._raw(texts)
        return out


def bench_corpus(base_cfg, embedder, folder: Path, rounds: int = 2, workdir: Path | None = None,
                 log: Callable[[str], None] = lambda s: None) -> dict:
    """A real folder of documents built as `citebot index` builds it (a fresh index each round), each build
    batch's encoder call paired with a raw `model.encode` of the same chunk texts (`PairedEmbedder`); a build's
    time leaves out the raw calls. The figures at the top level are the last round's."""
    from index.build import open_snapshot
    folder = Path(folder)
    own = workdir is None
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="citebot-bench-"))
    cfg = copy.deepcopy(base_cfg)
    cfg.paths.docs, cfg.paths.index = str(folder.resolve()), str(workdir / "corpus-index")
    try:
        embedder.encode(["warm up"])
        embedder.model.encode(["warm up"] * 64, batch_size=base_cfg.embedding.batch_size, show_progress_bar=False)
        runs: list[dict] = []
        for n in range(max(1, rounds)):
            shutil.rmtree(cfg.index_dir, ignore_errors=True)
            log(f"build {n + 1} of {folder}, each encoder call paired with a raw model.encode of its chunks")
            paired = PairedEmbedder(embedder, base_cfg.embedding.batch_size)
            wall, timer, report = _build(cfg, paired, log)
            seconds = wall - paired.raw_s
            stages = timer.seconds()
            stages["embedding"] = round(stages.get("embedding", 0.0) - paired.raw_s, 3)
            rate, raw = report.chunks / seconds, paired.raw_texts / paired.raw_s if paired.raw_s else 0.0
            runs.append({"build_s": round(seconds, 2), "build_chunks_per_s": round(rate, 2),
                         "encoder_s": round(paired.encode_s, 2), "outside_encoder_s": round(seconds - paired.encode_s, 2),
                         "stages_s": stages, "raw_s": round(paired.raw_s, 2), "raw_chunks_per_s": round(raw, 2),
                         "build_vs_raw": round(rate / raw, 3) if raw else None})
        snap = open_snapshot(cfg)
        try:
            pieces = snap.query("SELECT SUM(tokens) AS n FROM chunks")[0]["n"] or 0
            documents = len(snap.documents())
        finally:
            snap.close()
        last = runs[-1]
        return {"corpus": str(folder), "documents": documents,
                "chunks": report.chunks, "word_pieces": pieces, "rounds": runs,
                "build_vs_raw": last["build_vs_raw"], "build_chunks_per_s": last["build_chunks_per_s"],
                "encode_chunks_per_s": last["raw_chunks_per_s"],
                "build_word_pieces_per_s": round(pieces / last["build_s"]),
                "backend": base_cfg.embedding.backend, "threads": _threads(base_cfg), "machine": machine(),
                "load_average": round(os.getloadavg()[0], 2)}
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def compare_backends(result: dict, other: dict) -> dict:
    """`result` (a `bench_corpus` run) with `other` (the same folder built with another backend) under "against",
    and "speedup": how many times the first backend's builds are as fast as the other's, in word pieces/s and
    documents/s, from each side's median build time over its rounds (the same chunks either way)."""
    def median_s(r: dict) -> float:
        return statistics.median(run["build_s"] for run in r["rounds"])
    mine, theirs = median_s(result), median_s(other)
    pieces = (result["word_pieces"] / mine, other["word_pieces"] / theirs)
    docs = (result["documents"] / mine, other["documents"] / theirs)
    return {**result, "against": other, "speedup": {
        "backends": [result["backend"], other["backend"]],
        "word_pieces_per_s": [round(v) for v in pieces], "word_pieces_ratio": round(pieces[0] / pieces[1], 2),
        "docs_per_s": [round(v, 1) for v in docs], "docs_ratio": round(docs[0] / docs[1], 2)}}


def format_corpus_result(r: dict) -> str:
    """A human-readable block for `bench_corpus` (and the other backend's, with `compare_backends`)."""
    lines = _corpus_lines(r)
    if "against" in r:
        s = r["speedup"]
        lines += [f"  the same folder with backend {r['against']['backend']}:", *_corpus_lines(r["against"])[1:]]
        lines.append(f"{s['backends'][0]} against {s['backends'][1]} (median builds): {s['word_pieces_per_s'][0]:,} "
                     f"against {s['word_pieces_per_s'][1]:,} word pieces/s = {s['word_pieces_ratio']:.2f}x; "
                     f"{s['docs_per_s'][0]:.1f} against {s['docs_per_s'][1]:.1f} docs/s")
    return "\n".join(lines)


def _corpus_lines(r: dict) -> list[str]:
    lines = [f"{r['corpus']}: {r['documents']:,} documents, {r['chunks']:,} chunks, {r['word_pieces']:,} word pieces"]
    for n, run in enumerate(r["rounds"], 1):
        lines.append(f"  build {n}: {run['build_s']:.1f} s, {run['build_chunks_per_s']:.1f} chunks/s "
                     f"({r['documents'] / run['build_s']:.1f} docs/s, {r['word_pieces'] / run['build_s']:,.0f} word "
                     f"pieces/s) against raw encode {run['raw_chunks_per_s']:.1f} chunks/s beside it = "
                     f"{run['build_vs_raw']:.3f}x; encoder {run['encoder_s']:.1f} s, the rest "
                     f"{run['outside_encoder_s']:.1f} s (" + ", ".join(f"{stage} {sec:.1f}" for stage, sec in
                                                              run["stages_s"].items()) + ")")
    lines.append(f"  machine: {r['machine']}; load average {r['load_average']}; backend {r['backend']}, "
                 f"{r['threads']} threads")
    return lines


def run_bench(base_cfg, embedder, opts: BenchOptions, log: Callable[[str], None] = lambda s: None,
              emit: Callable[[dict], None] | None = None) -> list[dict]:
    """Run the bench for every size in `opts.sizes` (ascending); `emit` is called with each result."""
    workdir = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="citebot-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        t = time.perf_counter()
        embedder.model
        embedder.encode(["warm up"])
        load_here = time.perf_counter() - t
        sources = [base_cfg.docs_dir, *map(Path, opts.sources)]
        log(f"sentence pool from {', '.join(str(s) for s in sources)}")
        sentences, counts = sentence_pool(sources, embedder, opts.pool, opts.seed, base_cfg.chunking.max_tokens)
        log(f"{len(sentences)} sentences, {counts.mean():.1f} word pieces on average; encoding them")
        pool_vectors = embedder.encode(sentences)
        n_q = (len(_modes()) + 1) * (opts.queries + 1) + max(2, opts.queries // 2) + 10
        questions = make_questions(sentences, n_q, opts.seed)
        noop = noop_rebuild_seconds(base_cfg, embedder, workdir) if opts.noop_rebuild else None
        for n in sorted(opts.sizes):
            r = bench_size(n, base_cfg, embedder, sentences, counts, pool_vectors, questions, opts, workdir, log)
            r["noop_rebuild_docs_s"] = noop
            r["pool_sentences"] = len(sentences)
            r["backend"] = base_cfg.embedding.backend
            r["bench_load_s"] = round(load_here, 2)
            r["machine"] = machine()
            r["load_average"] = round(os.getloadavg()[0], 2)
            results.append(r)
            if emit:
                emit(r)
    finally:
        if not opts.keep and not opts.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


def machine() -> str:
    """One line about this machine: CPU model, cores, memory."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GB"


# ---------------------------------------------------------------- output

def format_result(r: dict) -> str:
    """A human-readable block for one size."""
    est = " (estimated: encoder timed on a %d-chunk sample, rest of the pipeline at full size with synthetic " \
          "vectors)" % r["sample_chunks"] if r.get("build_estimated") else ""
    lines = [f"{r['chunks']:,} chunks in {r['documents']:,} documents; store {r.get('store', 'faiss')}, index "
             f"{r['index_type']}, {r['index_bytes'] / 2**20:,.1f} MB on disk"
             + (f" (FAISS {r['faiss_bytes'] / 2**20:,.1f} MB)" if r.get("faiss_bytes") else ""),
             f"  build {r['build_chunks_per_s']:.1f} chunks/s vs raw encode {r['encode_chunks_per_s']:.1f} "
             f"chunks/s = {r['build_vs_encode']:.2f}x{est}",
             f"  model load {r['load_s']:.1f} s; peak RSS serving {r['rss_mb']:,.0f} MB, building "
             f"{r['build_rss_mb']:,.0f} MB (the bench process, model loaded)",
             f"  recall@10 vs exact {r['recall_at_10']:.3f} (vector search {r.get('faiss_ms') or 0:.2f} ms, exact "
             f"{r.get('exact_faiss_ms') or 0:.2f} ms)"]
    build = r.get("full_build") or r.get("sample_build") or {}
    if build.get("stages_s"):
        lines.append("  build stages" + (" (full size, synthetic vectors)" if "full_build" in r else "") + ": "
                     + ", ".join(f"{stage} {sec:.1f} s / {build.get('stages_rss_mb', {}).get(stage, 0):,.0f} MB"
                                 for stage, sec in build["stages_s"].items()))
    if r.get("ef_search"):
        lines.append("  HNSW " + ", ".join(f"ef_search {ef}: recall {v['recall_at_10']:.3f} in {v['faiss_ms']:.2f} ms"
                                         for ef, v in r["ef_search"].items()))
    for mode, p in r["query_ms"].items():
        ret = r.get("retrieval_ms", {}).get(mode)
        lines.append(f"  {mode:<7} end to end p50 {p['p50']:7.1f}  p95 {p['p95']:7.1f}  p99 {p['p99']:7.1f} ms"
                     + (f";  retrieval only p50 {ret['p50']:6.1f}  p95 {ret['p95']:6.1f} ms" if ret else ""))
    if r.get("stages_ms"):
        lines.append("  hybrid stages (p50 ms): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_ms"].items()))
    if r.get("noop_rebuild_docs_s") is not None:
        lines.append(f"  rebuild of the docs folder with nothing changed: {r['noop_rebuild_docs_s']:.2f} s")
    lines.append(f"  machine: {r.get('machine')}; load average {r.get('load_average')}; backend {r.get('backend')}, "
                 f"{r.get('threads')} threads" + (" (1 for a question)" if r.get("backend") == "onnx-int8" else ""))
    return "\n".join(lines)


def json_result(r: dict) -> dict:
    """The result with the keys of the issue first (all other measurements follow)."""
    keys = ("chunks", "build_chunks_per_s", "encode_chunks_per_s", "query_ms", "load_s", "rss_mb", "index_bytes",
            "index_type")
    return {**{k: r.get(k) for k in keys}, **{k: v for k, v in r.items() if k not in keys}}
