"""Retrieval evaluation: a BEIR dataset (nDCG@10, Recall@10, Recall@100, MRR@10 per mode, via trec_eval's
measures in pytrec_eval) and the team's question set over the docs folder (top-3 hit rate, answer sentences,
confidence calibration).

BEIR documents are indexed by the real pipeline (written as text files, loaded, chunked, embedded, BM25) into
a temporary index. A document longer than the chunk budget becomes several chunks; a document's score for a
query is the score of its best chunk (max-pooling over the fused chunk ranking).
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

MEASURES = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
EVAL_DEPTH = 400  # chunks each ranking contributes per query: enough for 100 distinct documents


class DatasetError(ValueError):
    """The dataset folder or file is not in the expected format; the message says what is wrong."""


# ---------------------------------------------------------------- BEIR

@dataclass
class BeirDataset:
    """A BEIR dataset: corpus (id -> (title, text)), queries (id -> text) and relevance judgements."""
    name: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _read_jsonl(path: Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path.name} line {n}: not JSON ({exc.msg})") from None


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Read corpus.jsonl, queries.jsonl and qrels/<split>.tsv; only queries with judgements are kept."""
    path = Path(path)
    needed = [path / "corpus.jsonl", path / "queries.jsonl", path / "qrels" / f"{split}.tsv"]
    for f in needed:
        if not f.is_file():
            raise DatasetError(f"{path} is not a BEIR dataset: {f.relative_to(path)} is missing "
                               "(expected corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    corpus = {}
    for row in _read_jsonl(needed[0]):
        if "_id" not in row:
            raise DatasetError("corpus.jsonl: a line has no _id")
        corpus[str(row["_id"])] = (str(row.get("title") or ""), str(row.get("text") or ""))
    queries = {str(r["_id"]): str(r.get("text") or "") for r in _read_jsonl(needed[1]) if "_id" in r}
    qrels: dict[str, dict[str, int]] = {}
    with open(needed[2], encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or (n == 1 and not parts[2].strip().lstrip("-").isdigit()):
                continue  # the header (query-id corpus-id score) or a blank line
            qid, did, score = parts[0], parts[1], int(parts[2])
            qrels.setdefault(qid, {})[did] = score
    queries = {q: t for q, t in queries.items() if q in qrels}
    if not queries:
        raise DatasetError(f"{needed[2].name}: no judged query has a text in queries.jsonl")
    return BeirDataset(path.resolve().name, corpus, queries, {q: qrels[q] for q in queries})


def _safe_name(doc_id: str, seen: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", doc_id)[:100] or "doc"
    name, n = f"{base}.txt", 1
    while name.casefold() in seen:
        n += 1
        name = f"{base}~{n}.txt"
    seen.add(name.casefold())
    return name


def write_corpus(corpus: dict[str, tuple[str, str]], docs_dir: Path) -> dict[str, str]:
    """Write each document as a text file (title, blank line, text); returns file name -> document id."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    seen: set[str] = set()
    for doc_id, (title, text) in corpus.items():
        name = _safe_name(doc_id, seen)
        body = f"{title.strip()}\n\n{text.strip()}" if title.strip() else text.strip()
        (docs_dir / name).write_text(body or doc_id, encoding="utf-8")
        names[name] = doc_id
    return names


def trec_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-query nDCG@10, Recall@10, Recall@100 and MRR@10 (trec_eval via pytrec_eval).

    MRR@10 is trec_eval's recip_rank over each query's 10 best documents. A query with no results scores 0.
    """
    try:
        import pytrec_eval
    except ImportError:
        raise DatasetError("evaluation needs pytrec_eval (pip install pytrec-eval-terrier)") from None
    run = {q: (dict(run[q]) if run.get(q) else {"\x00none": 0.0}) for q in qrels}
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]) for q, docs in run.items()}
    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    return {q: {"ndcg@10": main[q]["ndcg_cut_10"], "recall@10": main[q]["recall_10"],
                "recall@100": main[q]["recall_100"], "mrr@10": rr[q]["recip_rank"]} for q in qrels}


def mean_metrics(per_query: dict[str, dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([v[m] for v in per_query.values()])) if per_query else 0.0 for m in MEASURES}


def parse_variant(spec: str, retrieval):
    """"hybrid:rrf" / "hybrid:convex:0.6" / "dense" -> (mode, a RetrievalConfig copy with that fusion)."""
    from index.search import MODES
    parts = spec.split(":")
    mode, out = parts[0], copy.copy(retrieval)
    if mode not in MODES or (len(parts) > 1 and (mode != "hybrid" or parts[1] not in ("rrf", "convex"))):
        raise DatasetError(f"unknown mode '{spec}'; expected dense, bm25, hybrid, hybrid:rrf or hybrid:convex:W")
    if len(parts) > 1:
        out.fusion = parts[1]
        if len(parts) > 2:
            try:
                value = float(parts[2])
            except ValueError:
                raise DatasetError(f"mode '{spec}': '{parts[2]}' is not a number") from None
            if out.fusion == "rrf":
                out.rrf_k = int(value)
            else:
                out.dense_weight = value
    return mode, out


def pool_documents(hits, chunk_doc: np.ndarray, doc_names: Sequence[str], n: int = 100) -> dict[str, float]:
    """Document scores from a chunk ranking by max-pooling: each document scores as its best chunk; top `n`."""
    out: dict[str, float] = {}
    for h in hits:  # best first, so the first chunk seen of a document is its best
        name = doc_names[chunk_doc[h.chunk_id]]
        if name not in out:
            out[name] = h.fused
            if len(out) >= n:
                break
    return out


def evaluate_beir(path: str | Path, cfg, embedder, modes: Sequence[str] = ("dense", "bm25", "hybrid"),
                  progress: Callable[[str, int, int], None] | None = None, limit: int | None = None,
                  depth: int = EVAL_DEPTH, split: str = "test", halves: bool = False) -> dict:
    """Index the dataset's corpus into a temporary index and score every judged query in each mode.

    Returns {"dataset", "documents", "chunks", "queries", "index_seconds", "results": {mode: {measure: value,
    "ms_per_query": ...}}}. `limit` keeps the first `limit` queries (for a quick look).
    A mode may name a fusion variant: "hybrid:rrf", "hybrid:convex:0.6" (dense weight 0.6); `halves` adds
    nDCG@10 on alternate halves of the queries (choose a setting on one, check it on the other).
    """
    from index.build import build_index, open_snapshot
    from index.search import Searcher

    progress = progress or (lambda stage, done, total: None)
    for spec in modes:  # a typo should fail before minutes of indexing
        parse_variant(spec, cfg.retrieval)
    data = load_beir(path, split)
    qids = sorted(data.queries, key=lambda q: (len(q), q))[: limit or None]
    qrels = {q: data.qrels[q] for q in qids}
    with tempfile.TemporaryDirectory(prefix="citebot-eval-") as tmp:
        work = copy.deepcopy(cfg)
        work.paths.docs = str(Path(tmp) / "docs")
        work.paths.index = str(Path(tmp) / "index")
        names = write_corpus(data.corpus, Path(work.paths.docs))
        started = time.perf_counter()
        report = build_index(work, embedder, rebuild=True, progress=progress)
        index_seconds = time.perf_counter() - started
        snap = open_snapshot(work)
        try:
            searcher = Searcher(snap, embedder, work.retrieval)
            doc_names = {d.id: names[d.doc] for d in searcher.docs}
            names_by_id = [doc_names.get(i, "") for i in range(max(doc_names) + 1)]
            chunk_doc = searcher.chunk_doc_ids()
            snap.keyword  # load before timing
            results = {}
            for spec in modes:
                mode, retrieval = parse_variant(spec, work.retrieval)
                searcher.cfg = retrieval
                run, elapsed = {}, 0.0
                for n, qid in enumerate(qids, 1):
                    t0 = time.perf_counter()
                    hits = searcher.rank(data.queries[qid], mode, depth)
                    elapsed += time.perf_counter() - t0
                    run[qid] = pool_documents(hits, chunk_doc, names_by_id)
                    progress(f"queries ({spec})", n, len(qids))
                per_query = trec_metrics(qrels, run)
                scores = mean_metrics(per_query)
                scores["ms_per_query"] = 1000 * elapsed / max(len(qids), 1)
                if halves:  # for choosing a setting on one half of the queries and checking it on the other
                    for half, keep in (("a", 0), ("b", 1)):
                        part = {q: v for i, (q, v) in enumerate(sorted(per_query.items())) if i % 2 == keep}
                        scores[f"ndcg@10_half_{half}"] = mean_metrics(part)["ndcg@10"]
                results[spec] = scores
        finally:
            snap.close()
    return {"dataset": data.name, "documents": len(data.corpus), "chunks": report.chunks,
            "queries": len(qids), "index_seconds": round(index_seconds, 1), "depth": depth,
            "fusion": cfg.retrieval.fusion, "dense_weight": cfg.retrieval.dense_weight,
            "model": cfg.embedding.model, "results": results}


# ---------------------------------------------------------------- the team's question set

@dataclass
class Question:
    """A question in a user's words, the document(s) that answer it and a phrase the answer must contain.
    Without documents it is off-topic: the documents cannot answer it."""
    question: str
    docs: list[str] = field(default_factory=list)
    phrase: str | None = None
    topic: str | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.docs)


def load_questions(path: str | Path) -> list[Question]:
    out = []
    for n, row in enumerate(_read_jsonl(Path(path)), 1):
        if not isinstance(row, dict) or not row.get("question"):
            raise DatasetError(f"{Path(path).name} line {n}: expected an object with a 'question'")
        out.append(Question(row["question"], list(row.get("docs") or []), row.get("phrase"), row.get("topic")))
    return out


def calibrate(answerable: Sequence[float], offtopic: Sequence[float]) -> float:
    """The threshold that best separates the two score lists (most correct calls; among equals, the middle of
    the widest gap), rounded to 0.01."""
    points = sorted(set(answerable) | set(offtopic))
    cuts = [points[0] - 0.01] + [(a + b) / 2 for a, b in zip(points, points[1:])] + [points[-1] + 0.01]
    def correct(t): return sum(s >= t for s in answerable) + sum(s < t for s in offtopic)
    best = max(correct(t) for t in cuts)
    good = [t for t in cuts if correct(t) == best]
    # the middle of the run of equally good cuts
    return round(good[len(good) // 2], 2)


def _summary(values: Sequence[float]) -> dict:
    if not values:
        return {}
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def evaluate_questions(searcher, questions: Sequence[Question], modes: Sequence[str] = ("dense", "bm25", "hybrid"),
                       top: int = 3, sentence_weights: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)) -> dict:
    """Top-`top` document hit rate and phrase rates per mode, confidence distributions, and the answer-sentence
    choice for several lexical weights (on the configured mode's passages)."""
    answerable = [q for q in questions if q.answerable]
    offtopic = [q for q in questions if not q.answerable]
    report: dict = {"questions": len(answerable), "offtopic": len(offtopic), "modes": {}}
    for mode in modes:
        hits = phrase_in_passages = phrase_in_answer = 0
        misses, ms = [], []
        conf_pos, conf_neg = [], []
        for q in answerable:
            answer = searcher.search(q.question, top, mode=mode)
            ms.append(answer.elapsed_ms)
            conf_pos.append(searcher.confidence(answer.passages))
            docs = [p.doc for p in answer.passages]
            if any(d in q.docs for d in docs):
                hits += 1
            else:
                misses.append(q.question)
            phrase = (q.phrase or "").casefold()
            relevant = [p for p in answer.passages if p.doc in q.docs and phrase in p.text.casefold()]
            if relevant:
                phrase_in_passages += 1
                if phrase in relevant[0].answer_text.casefold():
                    phrase_in_answer += 1
        for q in offtopic:
            answer = searcher.search(q.question, top, mode=mode)
            conf_neg.append(searcher.confidence(answer.passages))
        report["modes"][mode] = {
            "top3_hit_rate": hits / max(len(answerable), 1), "misses": misses,
            "phrase_in_top3": phrase_in_passages / max(len(answerable), 1),
            "phrase_in_answer_sentences": phrase_in_answer / max(phrase_in_passages, 1),
            "median_ms": round(statistics.median(ms), 1) if ms else None,
            "confidence": {"answerable": _summary(conf_pos), "offtopic": _summary(conf_neg),
                           "threshold_fit": calibrate(conf_pos, conf_neg) if conf_pos and conf_neg else None,
                           "answerable_confident": sum(c >= searcher.cfg.min_score for c in conf_pos) / max(len(conf_pos), 1),
                           "offtopic_not_confident": sum(c < searcher.cfg.min_score for c in conf_neg) / max(len(conf_neg), 1)},
        }
    report["answer_sentences"] = sentence_choice(searcher, answerable, sentence_weights)
    report["min_score"] = searcher.cfg.min_score
    return report


def sentence_choice(searcher, questions: Sequence[Question], weights: Sequence[float]) -> dict:
    """How often the answer sentence(s) contain the question's phrase, for the first sentence and for each
    lexical weight, over the passages (from the expected documents) that contain the phrase."""
    cases = []
    for q in questions:
        answer = searcher.search(q.question, 3)
        phrase = (q.phrase or "").casefold()
        p = next((p for p in answer.passages if p.doc in q.docs and phrase in p.text.casefold()), None)
        if p is not None:
            cases.append((q, p))
    out = {"passages": len(cases)}
    if not cases:
        return out
    from index.chunking import split_sentences
    first = sum(q.phrase.casefold() in p.text[slice(*split_sentences(p.text)[0])].casefold() for q, p in cases)
    out["first_sentence"] = first / len(cases)
    for w in weights:
        good = 0
        for q, p in cases:
            qvec = searcher.embedder.encode_query(q.question)
            searcher.pick_answer_sentences(q.question, qvec, [p], lexical_weight=w)
            good += q.phrase.casefold() in p.answer_text.casefold()
        out[f"lexical_{w:g}"] = good / len(cases)
    return out
