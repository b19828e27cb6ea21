"""`citebot eval`: retrieval quality on a BEIR dataset or on the team's question set, per mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODES = ("dense", "bm25", "hybrid")


def add_commands(sub) -> dict:
    """Add `eval` to the `citebot` sub-commands; returns {"eval": handler}."""
    p = sub.add_parser("eval", help="measure retrieval (nDCG@10, Recall@10/100, MRR@10) on a BEIR dataset folder, "
                       "or answers (doc hit, answer@1/@3, confidence) on a question set (.jsonl) over the docs folder")
    p.add_argument("dataset", metavar="DATASET", help="a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) "
                   "or a question set .jsonl (question, doc/docs, answers/phrase, answerable)")
    p.add_argument("--mode", action="append", metavar="MODE",
                   help="dense, bm25 or hybrid (repeat or comma-separate; default: all three). Variants: "
                        "hybrid:rrf, hybrid:convex:W (W = dense weight)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N queries (a quick look)")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--halves", action="store_true", help="also nDCG@10 on alternate halves of the queries")
    p.add_argument("--foreign", metavar="FILE", help="with a question set: another corpus's questions, each of "
                   "which must come back not confident here (rejection rate, AUROC)")
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
    rows = [f"{name}: {report['questions']} answerable questions over the docs folder, {report['unanswerable']} "
            f"that must not be answered; confidence cut {report['min_score']:.3f}",
            "halves a/b: the documents alternate between them (choose on one, report the other)", "",
            f"{'mode':<7} {'part':<7} {'doc@1':>6} {'ans@1':>6} {'ans@3':>6} {'psg@1':>6} {'psg@3':>6} "
            f"{'conf':>6} {'reject':>6} {'AUROC':>6}"]
    def pct(v): return "     –" if v is None else f"{v:>6.3f}"
    for mode, r in report["results"].items():
        for part in ("all", "half_a", "half_b"):
            m = r[part]
            rows.append(f"{mode if part == 'all' else '':<7} {part.replace('half_', 'half '):<7} "
                        f"{pct(m['doc_hit@1'])} {pct(m['answer@1'])} {pct(m['answer@3'])} "
                        f"{pct(m['passage_answer@1'])} {pct(m['passage_answer@3'])} {pct(m['confident'])} "
                        f"{pct(m.get('rejected'))} {pct(m.get('auroc'))}")
        c = r["confidence"]
        a, u = c["answerable"], c["unanswerable"]
        if a and u:
            rows.append(f"{'':<7} confidence min/median/max: answerable {a['min']:.2f}/{a['median']:.2f}/"
                        f"{a['max']:.2f}, unanswerable {u['min']:.2f}/{u['median']:.2f}/{u['max']:.2f} "
                        f"(best cut {c['threshold_fit']}); median {r['median_ms']} ms a question")
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
            foreign = load_questions(args.foreign) if args.foreign else []
            if not kb.has_index():  # otherwise the live index is used as it is (run `citebot index` to update it)
                kb.build(progress=_progress())
            searcher = kb.searcher()
            kb._check_model(searcher)
            report = evaluate_questions(searcher, questions, modes, foreign, progress=_progress())
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
