"""The bad-input matrix: each case gets a short clear message (or a normal answer) and nothing is lost."""

from __future__ import annotations

import shutil
from io import BytesIO
from pathlib import Path

import pytest

from conftest import make_config
from index.kb import KnowledgeBase, UserError
from pdfgen import make_pdf

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("question, message", [
    ("", "please ask a question in words"),
    ("   \n\t ", "please ask a question in words"),
    ("😀🚓👮", "please ask a question in words"),
    ("\x00\x00", "please ask a question in words"),
    ("why " * 2499 + "why?", "the question is too long (10000 characters; the limit is 2000)"),
])
def test_questions_refused_with_a_short_message(kb, question, message):
    with pytest.raises(UserError) as err:
        kb.ask(question)
    assert str(err.value) == message or str(err.value).startswith(message)
    assert len(str(err.value)) < 120 and "\n" not in str(err.value)


@pytest.mark.parametrize("question", [
    "**How many** crimes were _not_ recorded?",
    "```\nhow many crimes were not recorded\n```",
    "@everyone how many crimes were not recorded?",
    "<@123> <@&456> how many crimes were not recorded?",
    "كم عدد الجرائم التي لم تسجل؟ how many crimes unrecorded",
    "how many\x00 crimes were not recorded?",
])
def test_odd_but_valid_questions_are_answered(kb, question):
    answer = kb.ask(question)
    assert answer.passages and answer.question == question.strip()
    assert any("21,200" in p.text or "21,000" in p.text for p in answer.passages)


def test_bad_documents_are_skipped_and_good_ones_kept(tmp_path, embedder):
    from pypdf import PdfReader, PdfWriter
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    (docs / "empty.txt").write_text("")
    (docs / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (docs / "really-a-pdf.txt").write_bytes(make_pdf([["hello"]]))       # misnamed: binary in a .txt
    (docs / "really-text.pdf").write_text("just some text, not a PDF")   # misnamed: text in a .pdf
    (docs / "corrupt.pdf").write_bytes(make_pdf([["fine"]])[:120])
    writer = PdfWriter(clone_from=PdfReader(BytesIO(make_pdf([["secret"]]))))
    writer.encrypt("pw")
    buf = BytesIO()
    writer.write(buf)
    (docs / "encrypted.pdf").write_bytes(buf.getvalue())
    # one long line (the 5 MB case is loaded and chunked in test_huge_single_line; embedding 5 MB takes minutes)
    (docs / "one-line.txt").write_text("The long line speaks of parking wardens and bicycles. " * 400)
    (docs / "latin1.txt").write_bytes("Rapport sur la força de police à Leicester, été 2019.\n".encode("latin-1"))
    (docs / "nested" / "deeper").mkdir(parents=True)
    (docs / "nested" / "deeper" / "note.md").write_text("# Nested note\n\nA note about horses in the park.\n")
    (docs / "nested" / "loop").symlink_to(docs)
    (docs / "picture.jpg").write_bytes(b"\xff\xd8\xff")

    kb = KnowledgeBase(make_config(docs, tmp_path / "index"), embedder=embedder)
    report = kb.build()
    indexed = {d.doc for d in kb.documents()}
    assert {"latin1.txt", "nested/deeper/note.md", "one-line.txt"} <= indexed
    assert len(indexed) == 8  # the five seed documents and the three odd but valid ones
    warnings = "\n".join(report.skipped)
    for name in ("empty.txt", "binary.txt", "really-a-pdf.txt", "really-text.pdf", "corrupt.pdf", "encrypted.pdf",
                 "picture.jpg", "symlink loop"):
        assert name in warnings
    assert all(len(w) < 200 for w in report.skipped)
    assert kb.ask("horses in the park").passages[0].doc == "nested/deeper/note.md"
    assert kb.ask("Leicester police summer 2019 report").passages
    assert any("21,200" in p.text for p in kb.ask("How many crimes went unrecorded each year?").passages)


def test_huge_single_line_is_loaded_and_chunked(tmp_path, embedder):
    from index.chunking import chunk_document
    from index.documents import load_documents
    (tmp_path / "huge.txt").write_text(("Parking wardens issued tickets to bicycles " * 120000)[:5_000_000])
    docs, warnings = load_documents(tmp_path)
    assert warnings == [] and len(docs[0].text) == 5_000_000
    chunks = chunk_document(docs[0], embedder, max_tokens=200, overlap=1)
    assert all(c.tokens <= 200 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(docs[0].text)
    text = docs[0].text
    assert all(not text[a.end:b.start].strip() for a, b in zip(chunks, chunks[1:]))  # no text left out


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "docs/../../config.toml", "../README.md"])
def test_no_document_name_reads_a_file_outside_the_docs_folder(kb, name):
    with pytest.raises(UserError) as err:
        kb.ask("what does it say?", doc=name)
    assert "root:" not in str(err.value)
    with pytest.raises(UserError) as err:
        kb.summary(name)
    assert "root:" not in str(err.value) and len(str(err.value)) < 300
