"""The `citebot` command line end to end with the real model: index, ask (text and JSON), chat, docs, errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
ANSWER_KEYS = {"question", "confident", "elapsed_ms", "passages"}
PASSAGE_KEYS = {"doc", "title", "date", "url", "location", "text", "answer_spans", "scores", "duplicates"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """docs/ copied and indexed once through the CLI."""
    import shutil
    base = tmp_path_factory.mktemp("cli")
    shutil.copytree(ROOT / "docs", base / "docs")
    return ["--docs", str(base / "docs"), "--index", str(base / "index")]


def run(capsys, *argv, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_index_ask_json_and_docs(built, capsys):
    code, out, err = run(capsys, *built, "index")
    assert code == 0
    assert out.startswith("files: 5 added, 0 changed, 0 removed, 0 skipped") and "chunks:" in out
    code, out, _ = run(capsys, *built, "index")
    assert "0 embedded" in out

    code, out, _ = run(capsys, *built, "ask", "How many crimes does the force fail to record each year?", "--json")
    assert code == 0
    answer = json.loads(out)
    assert set(answer) == ANSWER_KEYS and answer["confident"] is True
    top = answer["passages"][0]
    assert set(top) == PASSAGE_KEYS
    assert "21,200" in top["text"]
    # the inspector's statement is quoted by two outlets: one passage, the other outlet listed as a duplicate
    outlets = {"2017-09-07_news-failing-to-record-one-in-four-crimes.txt",
               "2017-09-09_leicestershire-police-news-roundup-crime-recording.txt"}
    assert {top["doc"], *top["duplicates"]} == outlets and top["date"] in ("2017-09-07", "2017-09-09")
    quoted = " ".join(top["text"][s:e] for s, e in top["answer_spans"])
    assert "21,200" in quoted  # the highlighted sentence is the one holding the figure
    assert top["location"].startswith("line")

    code, out, _ = run(capsys, *built, "ask", "How many crimes does the force fail to record each year?")
    assert "**" in out and "21,200" in out and "[1]" in out and "2017-09-09" in out and "also in:" in out

    code, out, _ = run(capsys, *built, "docs")
    assert "2017-03-02" in out and "hmicfrs-peel-public-contact-rated-adequate.txt" in out


def test_a_year_from_the_file_name_dates_the_2018_release(built, capsys):
    """The 2018 press release has no date in its text; its file name "2018_…" dates it as the year 2018."""
    release = "2018_hmicfrs-crime-data-integrity-reinspection-press-release.txt"
    run(capsys, *built, "index")
    code, out, _ = run(capsys, *built, "ask", "What did the 2018 re-inspection find?", "--after", "2018-01-01",
                       "--json")
    passages = json.loads(out)["passages"]
    assert code == 0 and passages and {p["doc"] for p in passages} == {release}
    assert {p["date"] for p in passages} == {"2018"}
    code, out, _ = run(capsys, *built, "ask", "What did the 2018 re-inspection find?", "--before", "2018-06-30")
    assert code == 0 and f"— 2018\n    {release}" in out and "2018-01-01" not in out
    code, out, _ = run(capsys, *built, "docs", "--json")
    assert {d["doc"]: d["date"] for d in json.loads(out)}[release] == "2018"
    code, out, _ = run(capsys, *built, "docs")
    assert "\n2018            " in out and "2018-01-01" not in out


def test_ask_reads_questions_from_stdin(built, capsys, monkeypatch):
    run(capsys, *built, "index")
    code, out, _ = run(capsys, *built, "ask", "--json", "-", "-k", "2", monkeypatch=monkeypatch,
                       stdin="What grade did the inspectors give?\n\n   \nWhat did the PCC say about funding?\n")
    lines = [json.loads(line) for line in out.splitlines()]
    # one output line per input line, blank ones included (an error object), so that they can be paired
    assert code == 1 and len(lines) == 4
    assert [a.get("error", "")[:30] for a in lines] == ["", "please ask a question in words", "please ask a "
                                                        "question in words", ""]
    assert lines[1]["question"] == "" and lines[2]["question"] == "   "
    assert all(len(a["passages"]) == 2 for a in (lines[0], lines[3]))
    assert lines[3]["question"] == "What did the PCC say about funding?"


def test_chat_answers_and_lists(built, capsys, monkeypatch):
    code, out, err = run(capsys, *built, "chat", monkeypatch=monkeypatch,
                         stdin="/docs\nHow many crimes went unrecorded?\n/history\n/k 0\n/bogus\n?!\n/quit\n")
    assert code == 0
    assert "5 documents" in out and "21,200" in out and "1. How many crimes went unrecorded?" in out
    assert "usage: /k N" in out and "unknown command /bogus" in out and "please ask a question in words" in out


@pytest.mark.parametrize("argv, message", [
    (["ask", ""], "please ask a question in words"),
    (["ask", "   "], "please ask a question in words"),
    (["ask", "what?"], "no index in"),
])
def test_bad_input_is_one_line_no_traceback(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, "--docs", str(ROOT / "docs"), "--index", str(tmp_path / "none"), *argv)
    assert code == 1 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_and_empty_docs_folder(tmp_path, capsys):
    code, _, err = run(capsys, "--docs", str(tmp_path / "nope"), "--index", str(tmp_path / "i"), "index")
    assert code == 1 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "--docs", str(tmp_path / "empty"), "--index", str(tmp_path / "i"), "index")
    assert code == 1 and "no readable documents" in err


def test_bad_config_names_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[retrieval]\ntop_k = 'five'\n")
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(cfg), "docs"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "retrieval.top_k" in proc.stderr and "Traceback" not in proc.stderr


HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime", "faiss", "bm25s")
IMPORTED = """
import sys
from bot.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("IMPORTED", code, *sorted(m for m in {heavy!r} if m in sys.modules))
""".format(heavy=HEAVY)


def test_commands_import_only_what_they_need(embedder, tmp_path):
    """--help and docs load no model library; index (int8 encoder) never imports torch or transformers, and
    with nothing changed does not load the model at all (PERFORMANCE.md, "Start-up")."""
    import os
    import shutil
    embedder.model  # the int8 export is cached (exporting is the one step that needs torch)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    where = ["--docs", str(tmp_path / "docs"), "--index", str(tmp_path / "index")]

    def imported(*argv):
        out = subprocess.run([sys.executable, "-c", IMPORTED, *where, *argv], capture_output=True, text=True,
                             cwd=ROOT, env={**os.environ, "CITEBOT_EMBEDDING_BACKEND": "onnx-int8"},
                             timeout=300).stdout
        line = next(l for l in out.splitlines() if l.startswith("IMPORTED"))
        code, *modules = line.split()[1:]
        assert code == "0", out
        return set(modules)

    assert imported("--help") == set()
    assert imported("index") == {"onnxruntime", "faiss", "bm25s"}  # 26 chunks embedded
    assert imported("index") == {"faiss", "bm25s"}  # nothing changed: the model is not loaded
    assert not imported("docs") & {"torch", "transformers", "sentence_transformers", "onnxruntime"}


# ---------------------------------------------------------------- faults and bad input, round 2

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m"


@pytest.fixture(scope="module")
def odd(tmp_path_factory, embedder):
    """A docs folder whose text and file names hold terminal escape sequences and a newline, indexed once."""
    from conftest import make_config
    from index.kb import KnowledgeBase
    base = tmp_path_factory.mktemp("odd")
    docs = base / "docs"
    docs.mkdir()
    (docs / f"evil{ESCAPES}.txt").write_text(f"Escapes {ESCAPES} title line here\nThe wardens issued {ESCAPES}"
                                             " 4,000 tickets to bicycles last spring.\n")
    (docs / "two\nlines.txt").write_text("A file whose name holds a newline, about horses in the park.\n")
    KnowledgeBase(make_config(docs, base / "index"), embedder=embedder).build()
    return ["--docs", str(docs), "--index", str(base / "index")]


def controls(text: str) -> list[str]:
    import re
    return re.findall(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)


def test_control_characters_are_never_printed_raw(odd, capsys, monkeypatch):
    for argv in (["ask", "how many tickets did the wardens issue to bicycles?"], ["docs"]):
        code, out, err = run(capsys, *odd, *argv)
        assert code == 0 and "4,000" in out or argv == ["docs"]
        assert not controls(out) and not controls(err), (argv, out)
    code, out, err = run(capsys, *odd, "chat", monkeypatch=monkeypatch,
                         stdin="/docs\nhow many tickets did the wardens issue?\n/history\n")
    assert code == 0 and "4,000" in out and not controls(out) and not controls(err.replace("\r", ""))
    # JSON keeps the text verbatim, every control character escaped
    code, out, _ = run(capsys, *odd, "ask", "--json", "how many tickets did the wardens issue to bicycles?")
    assert not controls(out) and "\\u001b]0;pwned\\u0007" in out and "\\u009b31m" in out
    answer = json.loads(out)
    assert any(ESCAPES in p["text"] or ESCAPES in p["doc"] for p in answer["passages"])
    code, out, _ = run(capsys, *odd, "docs", "--json")
    assert not controls(out) and {d["doc"] for d in json.loads(out)} == {f"evil{ESCAPES}.txt", "two\nlines.txt"}


def test_a_newline_in_a_file_name_keeps_the_docs_table_in_shape(odd, capsys):
    code, out, _ = run(capsys, *odd, "docs")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 + 2 * 2  # a header, then two lines per document
    assert "two lines.txt" in out


def test_docs_given_a_file_says_so(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("some text")
    code, _, err = run(capsys, "--docs", str(tmp_path / "a.txt"), "--index", str(tmp_path / "i"), "index")
    assert code == 1 and err.strip() == f"citebot: docs folder {tmp_path / 'a.txt'} is a file, not a folder"


def test_skip_warnings_are_printed_once(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("A short report about parking wardens and their tickets.\n")
    (tmp_path / "docs" / "b.pdf").write_text("not a pdf")
    proc = subprocess.run([sys.executable, "-m", "bot.cli", "--docs", str(tmp_path / "docs"), "--index",
                           str(tmp_path / "index"), "index"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr.count("b.pdf") == 1, proc.stderr
    assert "1 skipped" in proc.stdout


def test_ask_says_when_the_index_was_built_with_other_chunk_settings(built, capsys, monkeypatch):
    run(capsys, *built, "index")
    monkeypatch.setenv("CITEBOT_CHUNKING_MAX_TOKENS", "120")
    code, out, err = run(capsys, *built, "ask", "What grade did the inspectors give?")
    assert code == 0 and "[1]" in out
    assert err.strip() == ("note: the index was built with chunking.max_tokens = 200, overlap_sentences = 1 (the "
                           "configuration says 120, 1); `citebot index` will update it")
