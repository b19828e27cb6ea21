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


# ---------------------------------------------------------------- question sets with answers

@dataclass
class Question:
    """A question in a user's words, the document(s) that answer it and the string(s) an answer must contain.
    Without documents, or with `answerable` false, the documents cannot answer it."""
    question: str
    docs: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    topic: str | None = None
    answerable_flag: bool | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.docs) if self.answerable_flag is None else self.answerable_flag

    @property
    def phrase(self) -> str | None:
        """The first gold string (the team's set has exactly one per question)."""
        return self.answers[0] if self.answers else None


def load_questions(path: str | Path) -> list[Question]:
    """A question file: one JSON object a line with `question`, and `docs` (list) or `doc` (a file name),
    `answers` (gold strings) or `phrase` (one), optionally `answerable` (false: must not be answered)."""
    out = []
    for n, row in enumerate(_read_jsonl(Path(path)), 1):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise DatasetError(f"{Path(path).name} line {n}: expected an object with a 'question'")
        docs = row.get("docs") or ([row["doc"]] if row.get("doc") else [])
        answers = row.get("answers") or ([row["phrase"]] if row.get("phrase") else [])
        if not isinstance(docs, list) or not isinstance(answers, list):
            raise DatasetError(f"{Path(path).name} line {n}: 'docs' and 'answers' must be lists")
        flag = row.get("answerable")
        out.append(Question(row["question"], [str(d) for d in docs], [str(a) for a in answers if str(a).strip()],
                            row.get("topic"), None if flag is None else bool(flag)))
    return out


def split_half(questions: Sequence[Question]) -> dict[str, list[Question]]:
    """Two halves by document (article): the distinct first documents in sorted order alternate between half
    a and half b, so no document is in both; questions without a document alternate by position. Choose a
    setting on one half, report it on the other."""
    firsts = sorted({sorted(q.docs)[0] for q in questions if q.docs})
    side = {d: "ab"[i % 2] for i, d in enumerate(firsts)}
    halves: dict[str, list[Question]] = {"a": [], "b": []}
    loose = 0
    for q in questions:
        if q.docs:
            halves[side[sorted(q.docs)[0]]].append(q)
        else:
            halves["ab"[loose % 2]].append(q)
            loose += 1
    return halves


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


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties
    count half); None without both kinds."""
    if not len(positive) or not len(negative):
        return None
    pos, neg = np.sort(np.asarray(positive, float)), np.asarray(negative, float)
    below = np.searchsorted(pos, neg, side="left")   # positives strictly below each negative
    ties = np.searchsorted(pos, neg, side="right") - below
    wins = (len(pos) - below - ties).sum() + 0.5 * ties.sum()
    return float(wins / (len(pos) * len(neg)))


def _summary(values: Sequence[float]) -> dict:
    if not values:
        return {}
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def _contains(text: str, answers: Sequence[str]) -> bool:
    low = text.casefold()
    return any(a.casefold() in low for a in answers)


@dataclass
class _Outcome:
    """What one question got: the measures that `answer_metrics` averages."""
    question: Question
    doc_hit1: bool = False
    doc_hit3: bool = False
    answer1: bool = False
    answer3: bool = False
    passage1: bool = False
    passage3: bool = False
    confident: bool = False
    confidence: float = 0.0
    ms: float = 0.0


def ask_outcome(searcher, q: Question, mode: str, top: int = 3) -> _Outcome:
    """Ask `q` and record what the reader sees: the top document, the highlighted sentences, confidence."""
    answer = searcher.search(q.question, top, mode=mode)
    out = _Outcome(q, confident=answer.confident, confidence=searcher.confidence(answer.passages),
                   ms=answer.elapsed_ms)
    ps = answer.passages
    if q.docs:
        def right(p): return p.doc in q.docs or any(d in q.docs for d in p.duplicates)
        out.doc_hit1 = bool(ps) and right(ps[0])
        out.doc_hit3 = any(right(p) for p in ps[:3])
    if q.answers:
        out.answer1 = bool(ps) and _contains(ps[0].answer_text, q.answers)
        out.answer3 = any(_contains(p.answer_text, q.answers) for p in ps[:3])
        out.passage1 = bool(ps) and _contains(ps[0].text, q.answers)
        out.passage3 = any(_contains(p.text, q.answers) for p in ps[:3])
    return out


def answer_metrics(outcomes: Sequence[_Outcome], rejected: Sequence[_Outcome] = ()) -> dict:
    """Rates over the answerable outcomes, and rejection rate and AUROC against the ones that must not be
    answered (`rejected`: off-topic or foreign questions)."""
    n = max(len(outcomes), 1)
    def rate(attr): return round(sum(getattr(o, attr) for o in outcomes) / n, 4)
    out = {"questions": len(outcomes), "doc_hit@1": rate("doc_hit1"), "doc_hit@3": rate("doc_hit3"),
           "answer@1": rate("answer1"), "answer@3": rate("answer3"),
           "passage_answer@1": rate("passage1"), "passage_answer@3": rate("passage3"),
           "confident": rate("confident")}
    if rejected:
        out["unanswerable"] = len(rejected)
        out["rejected"] = round(sum(not o.confident for o in rejected) / len(rejected), 4)
        roc = auroc([o.confidence for o in outcomes], [o.confidence for o in rejected])
        out["auroc"] = None if roc is None else round(roc, 4)
    return out


def evaluate_questions(searcher, questions: Sequence[Question], modes: Sequence[str] = ("dense", "bm25", "hybrid"),
                       foreign: Sequence[Question] = (), top: int = 3,
                       progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Answer quality per mode on a question set over the searcher's index, for all questions and for each
    half of `split_half` (by document): doc hit@1/@3, answer@1/@3 (a gold string inside the highlighted
    sentences of the top / top-3 passages), passage-answer@1/@3 (anywhere in those passages), the confident
    rate; against the unanswerable questions (`answerable: false`, no document, or `foreign`: another
    corpus's questions, all unanswerable here) the rejection rate and the AUROC of the confidence score.

    Returns {"questions", "unanswerable", "min_score", "results": {mode: {"all": {...}, "half_a": {...},
    "half_b": {...}, "median_ms", "confidence": {...}, "misses": [...]}}}."""
    progress = progress or (lambda stage, done, total: None)
    answerable = [q for q in questions if q.answerable]
    unanswerable = [q for q in questions if not q.answerable] + [
        Question(q.question, [], [], q.topic, False) for q in foreign]
    halves = split_half(answerable + unanswerable)
    report: dict = {"questions": len(answerable), "unanswerable": len(unanswerable),
                    "min_score": threshold_of(searcher), "results": {}}
    everything = answerable + unanswerable
    for mode in modes:
        outcomes = []
        for n, q in enumerate(everything, 1):
            outcomes.append(ask_outcome(searcher, q, mode, top))
            progress(f"questions ({mode})", n, len(everything))
        pos = [o for o in outcomes if o.question.answerable]
        neg = [o for o in outcomes if not o.question.answerable]
        result = {"all": answer_metrics(pos, neg)}
        for half, members in halves.items():
            ids = {id(q) for q in members}
            result[f"half_{half}"] = answer_metrics([o for o in pos if id(o.question) in ids],
                                                    [o for o in neg if id(o.question) in ids])
        result["median_ms"] = round(statistics.median(o.ms for o in outcomes), 1) if outcomes else None
        result["confidence"] = {"answerable": _summary([o.confidence for o in pos]),
                                "unanswerable": _summary([o.confidence for o in neg]),
                                "threshold_fit": calibrate([o.confidence for o in pos], [o.confidence for o in neg])
                                if pos and neg else None}
        result["misses"] = [o.question.question for o in pos if o.question.answers and not o.answer3][:20]
        report["results"][mode] = result
    return report


def threshold_of(searcher) -> float:
    """The confidence cut the searcher applies."""
    return float(getattr(searcher, "min_score", searcher.cfg.min_score))
