"""`citebot eval`: retrieval quality on a BEIR dataset or on the team's question set, per mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODES = ("dense", "bm25", "hybrid")


def add_commands(sub) -> dict:
    """Add `eval` to the `citebot` sub-commands; returns {"eval": handler}."""
    p = sub.add_parser("eval", help="measure retrieval (nDCG@10, Recall@10/100, MRR@10) on a BEIR dataset folder, "
                       "or top-3 hit rate on a question set (.jsonl) over the docs folder")
    p.add_argument("dataset", metavar="DATASET", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) "
                   "or a question set .jsonl (question, docs, phrase)")
    p.add_argument("--mode", action="append", metavar="MODE",
                   help="dense, bm25 or hybrid (repeat or comma-separate; default: all three). Variants: "
                        "hybrid:rrf, hybrid:convex:W (W = dense weight)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N queries (a quick look)")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--halves", action="store_true", help="also nDCG@10 on alternate halves of the queries")
    return {"eval": cmd_eval}


def _modes(args) -> list[str]:
    out = []
    for value in args.mode or [",".join(MODES)]:
        out.extend(m.strip() for m in value.split(",") if m.strip())
    return list(dict.fromkeys(out))


def _progress():
    """tqdm bars on stderr, one per stage (indexing stages and one per mode's queries)."""
    from tqdm import tqdm
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        if total <= 0 or stage in ("loading", "writing", "done"):
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return progress


def format_beir(report: dict) -> str:
    rows = [f"{report['dataset']}: {report['documents']} documents, {report['chunks']} chunks, "
            f"{report['queries']} queries; indexed in {report['index_seconds']:.0f} s "
            f"(model {report['model']}; documents scored by their best chunk)",
            "",
            f"{'mode':<18} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'ms/query':>9}"]
    for mode, r in report["results"].items():
        extra = "".join(f"  {k[-6:]} {v:.3f}" for k, v in r.items() if k.startswith("ndcg@10_half"))
        rows.append(f"{mode:<18} {r['ndcg@10']:>8.3f} {r['recall@10']:>7.3f} {r['recall@100']:>7.3f} "
                    f"{r['mrr@10']:>7.3f} {r['ms_per_query']:>9.1f}{extra}")
    return "\n".join(rows)


def format_questions(report: dict, name: str) -> str:
    rows = [f"{name}: {report['questions']} questions over the docs folder, {report['offtopic']} off-topic; "
            f"retrieval.min_score = {report['min_score']}", "",
            f"{'mode':<8} {'top-3 doc':>9} {'phrase top-3':>12} {'in answer':>9} {'ms':>6}  confidence (answerable | off-topic)"]
    for mode, r in report["modes"].items():
        c = r["confidence"]
        a, o = c["answerable"], c["offtopic"]
        dist = (f"{a.get('min', 0):.2f}/{a.get('median', 0):.2f}/{a.get('max', 0):.2f} | "
                f"{o.get('min', 0):.2f}/{o.get('median', 0):.2f}/{o.get('max', 0):.2f}" if a and o else "")
        rows.append(f"{mode:<8} {r['top3_hit_rate']:>9.1%} {r['phrase_in_top3']:>12.1%} "
                    f"{r['phrase_in_answer_sentences']:>9.1%} {r['median_ms'] or 0:>6.0f}  {dist}  "
                    f"(best cut {c['threshold_fit']}; confident {c['answerable_confident']:.0%} of answerable, "
                    f"not confident {c['offtopic_not_confident']:.0%} of off-topic)")
        for miss in r["misses"]:
            rows.append(f"         miss: {miss}")
    s = report["answer_sentences"]
    rows.append("")
    rows.append("answer sentence contains the phrase (passages that contain it: %d): %s" % (
        s.get("passages", 0), ", ".join(f"{k} {v:.0%}" for k, v in s.items() if k != "passages")))
    return "\n".join(rows)


def cmd_eval(kb, args) -> int:
    from bot.cli import CliError
    from index.evaluate import DatasetError, evaluate_beir, evaluate_questions, load_questions
    path = Path(args.dataset)
    modes = _modes(args)
    try:
        if path.is_file():
            from index.search import MODES as KNOWN
            bad = [m for m in modes if m not in KNOWN]
            if bad:
                raise CliError(f"unknown mode {bad[0]}; a question set takes dense, bm25 or hybrid")
            questions = load_questions(path)
            if not kb.has_index():  # otherwise the live index is used as it is (run `citebot index` to update it)
                kb.build(progress=_progress())
            searcher = kb.searcher()
            kb._check_model(searcher)
            report = evaluate_questions(searcher, questions, modes)
            report["dataset"] = path.name
            print(json.dumps(report, indent=1) if args.json else format_questions(report, path.name))
            return 0
        if not path.is_dir():
            raise CliError(f"{path} is neither a BEIR dataset folder nor a question set file")
        report = evaluate_beir(path, kb.cfg, kb.embedder, modes, progress=_progress(), limit=args.limit,
                               split=args.split, halves=args.halves)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_beir(report))
    return 0
