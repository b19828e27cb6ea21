"""`citebot ask --mode` and `citebot eval` end to end (a tiny BEIR-format dataset in tests/data/beir-tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def kb_args(kb):
    return ["--docs", str(kb.cfg.docs_dir), "--index", str(kb.cfg.index_dir)]


def test_ask_mode_flag(kb_args, capsys):
    for mode in ("dense", "bm25", "hybrid"):
        assert main([*kb_args, "ask", "--mode", mode, "--json", "-k", "3",
                     "How many extra crimes got logged because of the first report?"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["passages"] and {"dense", "bm25", "fused"} <= set(answer["passages"][0]["scores"])
    with pytest.raises(SystemExit):
        main([*kb_args, "ask", "--mode", "sparse", "x"])


def test_ask_offtopic_says_the_documents_do_not_answer(kb_args, capsys):
    assert main([*kb_args, "ask", "--mode", "hybrid", "How do I reverse a list in Python?"]) == 0
    out = capsys.readouterr().out
    assert "answer" in out and "possibly related" in out.lower()


def test_eval_beir_json(tmp_path, capsys):
    cfg_args = ["--index", str(tmp_path / "unused-index")]
    assert main([*cfg_args, "eval", str(DATA / "beir-tiny"), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["dataset"] == "beir-tiny" and report["queries"] == 4 and report["documents"] == 8
    assert set(report["results"]) == {"dense", "bm25", "hybrid"}
    for scores in report["results"].values():
        assert {"ndcg@10", "recall@10", "recall@100", "mrr@10"} <= set(scores)
        assert 0.5 <= scores["ndcg@10"] <= 1.0
    assert report["results"]["bm25"]["mrr@10"] == 1.0  # every claim shares its key words with its abstract
    assert not (tmp_path / "unused-index").exists()  # the dataset is indexed in a temporary folder


def test_eval_table_and_errors(tmp_path, capsys):
    assert main(["eval", str(DATA / "beir-tiny"), "--mode", "hybrid:rrf", "--mode", "bm25"]) == 0
    out = capsys.readouterr().out
    assert "nDCG@10" in out and "hybrid:rrf" in out and "bm25" in out and "\ndense" not in out
    assert main(["eval", str(tmp_path)]) == 1
    assert "corpus.jsonl is missing" in capsys.readouterr().err
    assert main(["eval", str(DATA / "beir-tiny"), "--mode", "sparse"]) == 1
    assert "unknown mode" in capsys.readouterr().err


def test_eval_question_set(kb_args, capsys):
    assert main([*kb_args, "eval", str(DATA / "questions.jsonl"), "--mode", "hybrid", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    result = report["results"]["hybrid"]
    assert result["all"]["doc_hit@3"] >= 0.9 and result["all"]["rejected"] == 1.0
    assert result["all"]["auroc"] == 1.0  # every answerable question scores above every off-topic one
    for half in ("half_a", "half_b"):  # by document: each half has its own documents' questions
        assert 0 < result[half]["questions"] < result["all"]["questions"]
    assert result["half_a"]["questions"] + result["half_b"]["questions"] == result["all"]["questions"]


def test_eval_with_foreign_questions(kb_args, capsys, tmp_path):
    """`--foreign FILE`: another corpus's questions, each of which must come back not confident here."""
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("".join(json.dumps({"question": q, "doc": "Nikola_Tesla.txt", "answers": ["x"]}) + "\n" for q in (
        "In what year did Tesla move to New York?", "Which company bought the patents for the induction motor?",
        "Where was the Super Bowl held?")))
    assert main([*kb_args, "eval", str(DATA / "questions.jsonl"), "--mode", "hybrid", "--foreign", str(foreign)]) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "half a" in out and "that must not be answered" in out
    assert main([*kb_args, "eval", str(DATA / "questions.jsonl"), "--mode", "hybrid", "--json",
                 "--foreign", str(foreign)]) == 0
    result = json.loads(capsys.readouterr().out)["results"]["hybrid"]["all"]
    assert result["unanswerable"] == 14 + 3 and result["rejected"] == 1.0
