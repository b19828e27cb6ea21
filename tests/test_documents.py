"""Loaders, cleaning and metadata: every supported type, broken files, and the seed corpus's quirks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from index.documents import YearOnly, date_from_iso, date_from_name, date_span, find_date, load_documents
from pdfgen import make_pdf

DOCS = Path(__file__).resolve().parent.parent / "docs"


def by_name(docs, name):
    return next(d for d in docs if d.doc.endswith(name))


def test_txt_with_front_matter_overrides_metadata(tmp_path):
    (tmp_path / "a.txt").write_text("---\ntitle: Custom title\ndate: 2019-05-04\nurl: https://example.org/r\n---\n"
                                    "Saturday, September 09, 2017\nFirst line of the body here.\nMore text.\n")
    docs, warnings = load_documents(tmp_path)
    assert warnings == []
    d = docs[0]
    assert (d.title, d.date, d.url) == ("Custom title", dt.date(2019, 5, 4), "https://example.org/r")
    assert d.text.startswith("First line of the body here.")
    assert d.location(0, 5) == "line 7"  # source line numbers count the front matter


def test_sidecar_overrides_metadata(tmp_path):
    (tmp_path / "b.txt").write_text("Headline of the story\nBody text of the story.\n")
    (tmp_path / "b.txt.meta.toml").write_text('title = "From sidecar"\ndate = 2018-06-01\n')
    docs, warnings = load_documents(tmp_path)
    assert warnings == [] and len(docs) == 1
    assert docs[0].title == "From sidecar" and docs[0].date == dt.date(2018, 6, 1)


def test_markdown_headings_become_sections(tmp_path):
    (tmp_path / "r.md").write_text("# Annual report\n\nIntro words here.\n\n## Findings\n\nThe force was "
                                   "[rated good](https://x.org). Another sentence.\n")
    d = load_documents(tmp_path)[0][0]
    assert d.title == "Annual report"
    start = d.text.index("The force")
    assert "§ Findings" in d.location(start, start + 10)
    assert "rated good" in d.text and "https://x.org" not in d.text


def test_html_drops_scripts_and_navigation(tmp_path):
    (tmp_path / "p.html").write_text(
        "<html><head><title>Inspection news</title><meta property='article:published_time' "
        "content='2021-03-04T10:00:00Z'><link rel='canonical' href='https://news.example/x'></head><body>"
        "<nav>Home | News</nav><script>var ad = 1;</script><h1>Force rated good</h1>"
        "<p>The inspectorate rated the force <b>good</b> overall.</p><p>Hide Ad</p>"
        "<footer>Copyright 2021</footer></body></html>")
    d = load_documents(tmp_path)[0][0]
    assert d.title == "Inspection news"
    assert d.date == dt.date(2021, 3, 4) and d.url == "https://news.example/x"
    assert "The inspectorate rated the force good overall." in d.text
    for gone in ("var ad", "Home | News", "Copyright", "Hide Ad"):
        assert gone not in d.text


def test_pdf_keeps_page_numbers(tmp_path):
    (tmp_path / "r.pdf").write_bytes(make_pdf([["Report on policing.", "Page one text."],
                                               ["Page two says 8,300 crimes were added."]], title="PDF report"))
    d = load_documents(tmp_path)[0][0]
    assert d.title == "PDF report"
    start = d.text.index("8,300")
    assert d.page_at(start) == 2 and d.location(start, start + 5).startswith("p. 2")
    assert d.page_at(0) == 1


def test_docx_paragraphs_headings_and_tables(tmp_path):
    import docx
    document = docx.Document()
    document.add_heading("Crime data report", level=1)
    document.add_paragraph("The force recorded 76 per cent of crimes.")
    document.add_heading("Recommendations", level=2)
    document.add_paragraph("Improve the recording of violent crime.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Grade", "Inadequate"
    document.save(tmp_path / "r.docx")
    d = load_documents(tmp_path)[0][0]
    assert d.title == "Crime data report"
    assert "76 per cent" in d.text and "Grade | Inadequate" in d.text
    start = d.text.index("Improve")
    assert "§ Recommendations" in d.location(start, start + 7)


def test_broken_and_unknown_files_are_reported_and_skipped(tmp_path):
    (tmp_path / "good.txt").write_text("A good document with words in it.\n")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "broken.docx").write_bytes(b"PK not a zip")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "empty.md").write_text("")
    docs, warnings = load_documents(tmp_path)
    assert [d.doc for d in docs] == ["good.txt"]
    text = "\n".join(warnings)
    for name in ("broken.pdf", "broken.docx", "image.png", "binary.txt", "empty.md"):
        assert name in text
    assert "unsupported file type '.png'" in text


def test_encrypted_pdf_is_reported(tmp_path):
    from io import BytesIO
    from pypdf import PdfReader, PdfWriter
    writer = PdfWriter(clone_from=PdfReader(BytesIO(make_pdf([["secret text"]]))))
    writer.encrypt("pw")
    with open(tmp_path / "locked.pdf", "wb") as fh:
        writer.write(fh)
    docs, warnings = load_documents(tmp_path)
    assert docs == [] and "locked.pdf" in warnings[0] and "encrypted" in warnings[0]


def test_latin1_text_and_nested_folders(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "old.txt").write_bytes("Café report from the força.\n".encode("latin-1"))
    d = load_documents(tmp_path)[0][0]
    assert d.doc == "a/b/old.txt" and "Café" in d.text


def test_dates_in_the_seed_formats():
    assert find_date("Saturday, September 09, 2017")[0] == dt.date(2017, 9, 9)
    assert find_date(" date 2017-09-07 Leicestershire")[0] == dt.date(2017, 9, 7)
    assert find_date("Issued on 2/3/17 at 12:00 a.m.")[0] == dt.date(2017, 3, 2)  # UK order
    assert find_date("Police said on 4 March 2021 that")[0] == dt.date(2021, 3, 4)
    assert find_date("a re-inspection in 2018") is None
    assert find_date("9 Sept. 2017, then SEPTEMBER 30th 2017")[0] == dt.date(2017, 9, 9)
    assert find_date("to their dismay 5 2017 records") is None  # a month name must be a word of its own


@pytest.mark.parametrize("name, date", [
    ("2017-09-07_news.txt", dt.date(2017, 9, 7)),
    ("2017_09_07_news.txt", dt.date(2017, 9, 7)),
    ("20170907-news.md", dt.date(2017, 9, 7)),
    ("2017.09.07.report.pdf", dt.date(2017, 9, 7)),
    ("minutes 2018-3-4.docx", dt.date(2018, 3, 4)),
    ("minutes_20180304.txt", dt.date(2018, 3, 4)),
    ("annual_2017_minutes_2018-03-04.txt", dt.date(2018, 3, 4)),  # a whole date wins over a year
    ("2018_press-release.txt", YearOnly(2018)),
    ("report-2018.txt", YearOnly(2018)),
    ("report.1999.txt", YearOnly(1999)),
    ("Annual report (2016).pdf", YearOnly(2016)),
    ("2018-02-30_notes.txt", YearOnly(2018)),  # no such day: the year alone
])
def test_date_from_a_file_name(name, date):
    found = date_from_name(name)
    assert found == date and type(found) is type(date)


@pytest.mark.parametrize("name", [
    "report-50.txt", "doc-0001.txt", "12345678.txt", "v20180907b.txt", "photo_1920x1080.png", "ab2018.txt",
    "2018ab.txt", "1899_old.txt", "2999_far.txt", "3018_x.txt", "id-87654321.txt", "notes.txt",
])
def test_no_date_from_numbers_that_are_not_dates(name):
    assert date_from_name(name) is None


def test_next_year_is_the_latest_year_a_file_name_can_give():
    year = dt.date.today().year
    assert date_from_name(f"{year + 1}_plan.txt") == YearOnly(year + 1)
    assert date_from_name(f"{year + 2}_plan.txt") is None


def test_year_only_is_a_date_written_as_its_year():
    year = YearOnly(2018)
    assert isinstance(year, dt.date) and year == dt.date(2018, 1, 1)
    assert (year.isoformat(), str(year), f"{year}", repr(year)) == ("2018", "2018", "2018", "YearOnly(2018)")
    assert sorted([dt.date(2018, 3, 1), year, dt.date(2017, 12, 31)])[1] is year  # sorts as the year's start
    assert date_span(year) == (dt.date(2018, 1, 1), dt.date(2018, 12, 31))
    assert date_span(dt.date(2018, 3, 1)) == (dt.date(2018, 3, 1), dt.date(2018, 3, 1))
    assert type(year + dt.timedelta(days=40)) is dt.date and year + dt.timedelta(days=40) == dt.date(2018, 2, 10)
    assert type(year.replace(month=3)) is dt.date
    import copy
    import pickle
    assert repr(pickle.loads(pickle.dumps(year))) == repr(copy.deepcopy(year)) == "YearOnly(2018)"
    assert repr(date_from_iso("2018")) == "YearOnly(2018)" and date_from_iso("2018-06-01") == dt.date(2018, 6, 1)
    assert date_from_iso(None) is None


def _dated(tmp_path, name, body="Body of the report with enough words.\n", front=None, sidecar=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = (f"---\ndate: {front}\n---\n" if front else "") + body
    (tmp_path / name).write_text(text)
    if sidecar:
        (tmp_path / (name + ".meta.toml")).write_text(f"date = {sidecar}\n")
    docs, warnings = load_documents(tmp_path)
    assert warnings == []
    return by_name(docs, name).date


def test_date_precedence_metadata_then_text_then_file_name(tmp_path):
    dateline = "Saturday, September 09, 2017\nBody of the report with enough words.\n"
    assert _dated(tmp_path / "1", "2016_r.md", dateline, front="2019-05-04", sidecar="2020-01-02") \
        == dt.date(2020, 1, 2)  # the sidecar, written to correct the file, wins over its front matter
    assert _dated(tmp_path / "2", "2016_r.md", dateline, front="2019-05-04") == dt.date(2019, 5, 4)
    assert _dated(tmp_path / "3", "2016_r.txt", dateline, sidecar="2020-01-02") == dt.date(2020, 1, 2)
    assert _dated(tmp_path / "4", "2016_r.txt", dateline) == dt.date(2017, 9, 9)
    assert _dated(tmp_path / "5", "2016_r.txt", "It happened on 4 March 2021, the report says.\n") \
        == dt.date(2021, 3, 4)
    assert _dated(tmp_path / "6", "2016_r.txt", "A re-inspection in 2018 found more.\n") == YearOnly(2016)
    assert _dated(tmp_path / "7", "r.txt", "A re-inspection in 2018 found more.\n") is None
    # a year alone in the front matter or a sidecar is kept as a year
    assert repr(_dated(tmp_path / "8", "r.md", front="2015")) == "YearOnly(2015)"
    assert repr(_dated(tmp_path / "9", "r.txt", sidecar="2014")) == "YearOnly(2014)"


def test_file_name_date_wins_over_a_pdf_or_word_creation_date(tmp_path):
    import docx
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        document = docx.Document()
        document.add_paragraph("Body of the report with enough words.")
        document.core_properties.created = dt.datetime(2024, 5, 6, 7, 8)
        document.save(tmp_path / folder / ("2018_report.docx" if folder == "a" else "report.docx"))
        (tmp_path / folder / ("2018_scan.pdf" if folder == "a" else "scan.pdf")).write_bytes(
            make_pdf([["Body of the scanned report."]], created="D:20240506070809"))
    named = {d.doc: d.date for d in load_documents(tmp_path / "a")[0]}
    assert named == {"2018_report.docx": YearOnly(2018), "2018_scan.pdf": YearOnly(2018)}
    assert all(type(d) is YearOnly for d in named.values())
    unnamed = {d.doc: d.date for d in load_documents(tmp_path / "b")[0]}
    assert unnamed == {"report.docx": dt.date(2024, 5, 6), "scan.pdf": dt.date(2024, 5, 6)}


def test_a_dateline_is_dropped_but_a_sentence_with_a_date_is_kept(tmp_path):
    (tmp_path / "a.txt").write_text(
        "Inspection findings\nPublished on Wednesday, 13 September 2017\n"
        "On 4 March 2021 the inspectorate said the force had improved the way it records crimes reported to it.\n"
        "The force was rated good for effectiveness.\n")
    d = load_documents(tmp_path)[0][0]
    assert d.date == dt.date(2017, 9, 13)
    assert d.removed == ["Published on Wednesday, 13 September 2017"]
    assert "On 4 March 2021 the inspectorate said" in d.text


def test_seed_cleaning_and_metadata():
    docs, warnings = load_documents(DOCS)
    assert warnings == [] and len(docs) == 5
    peel = by_name(docs, "hmicfrs-peel-public-contact-rated-adequate.txt")
    headline = "Leicestershire Police’s response to dealing with the public has been rated just “adequate” by a 999 watchdog"
    assert peel.title == headline
    assert peel.text.count("rated just “adequate” by a 999 watchdog") == 1  # repeated headline appears once
    assert "Hide Ad" not in peel.text and peel.removed.count("Hide Ad") == 10
    roundup = by_name(docs, "2017-09-09_leicestershire-police-news-roundup-crime-recording.txt")
    assert roundup.date == dt.date(2017, 9, 9) and "Get the report" not in roundup.text
    assert roundup.title == "Leicestershire Police Not Much Good In The News This Week"
    news = by_name(docs, "2017-09-07_news-failing-to-record-one-in-four-crimes.txt")
    assert news.date == dt.date(2017, 9, 7) and not news.text.startswith("date")
    effectiveness = by_name(docs, "2017-03-02_hmic-effectiveness-requires-improvement.txt")
    assert effectiveness.date == dt.date(2017, 3, 2)
    assert effectiveness.url == "https://www.justiceinspectorates.gov.uk/hmic/leicestershire/"
    assert effectiveness.text.count("HMIC conclude that the Force needs to:") == 2  # a lead-in, not a headline
    reinspection = by_name(docs, "2018_hmicfrs-crime-data-integrity-reinspection-press-release.txt")
    assert reinspection.text.count("Leicestershire Police: Crime Data Integrity re-inspection 2018") == 1
    # the text names a year only (never taken as its date); the file name "2018_…" gives the year
    assert isinstance(reinspection.date, YearOnly) and reinspection.date.isoformat() == "2018"
    assert by_name(docs, "hmicfrs-peel-public-contact-rated-adequate.txt").date is None


def test_missing_docs_folder(tmp_path):
    from index.documents import LoadError
    with pytest.raises(LoadError, match="does not exist"):
        load_documents(tmp_path / "nope")


def test_symlink_loop_is_skipped(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("Some text in a nested file.\n")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)
    docs, warnings = load_documents(tmp_path)
    assert [d.doc for d in docs] == ["sub/a.txt"]
    assert any("symlink loop" in w for w in warnings)


def test_stream_cleans_one_document_at_a_time_with_lines_common_to_the_folder(tmp_path):
    from index.documents import DocumentStream
    for n in range(4):  # a footer in every file is boilerplate; a short line in one file is not
        (tmp_path / f"r{n}.txt").write_text(f"Report {n} on the force.\nThe force recorded {n} crimes.\n"
                                            "Follow us on social media\n" + ("Short note here\n" if n == 0 else ""))
    (tmp_path / "bad.txt").write_bytes(b"%PDF-1.4 binary")
    spool = tmp_path / "spool"
    spool.mkdir()
    with DocumentStream(tmp_path, spool_dir=spool) as stream:
        assert len(stream) == 4 and stream.warnings == ["bad.txt: a PDF file with a text file's name; rename it; skipped"]
        assert list(spool.iterdir()) == []  # the spool has no name: nothing is left behind, even on a crash
        it = iter(stream)
        first = next(it)
        assert first.doc == "r0.txt" and "Short note here" in first.text and "Follow us" not in first.text
        assert [d.doc for d in it] == ["r1.txt", "r2.txt", "r3.txt"]
    docs, warnings = load_documents(tmp_path)
    assert [d.text for d in docs][0] == first.text and len(warnings) == 1


# ---------------------------------------------------------------- faults and bad input, round 2

def test_links_to_files_and_folders_outside_the_docs_folder_are_not_read(tmp_path):
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    (docs / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "passwd.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (outside / "notes.md").write_text("# Private\n\nroot:secret outside the docs folder.\n")
    (docs / "report.txt").write_text("The report inside the docs folder speaks of parking.\n")
    (docs / "sub" / "inner.txt").write_text("An inner note about bicycles.\n")
    (docs / "passwd.txt").symlink_to(outside / "passwd.txt")          # a file outside
    (docs / "linked").symlink_to(outside)                              # a folder outside
    (docs / "again.txt").symlink_to(docs / "report.txt")               # inside: the same file a second time
    (docs / "alias").symlink_to(docs / "sub")                          # inside: a folder, followed once
    loaded, warnings = load_documents(docs)
    assert sorted(d.doc for d in loaded) == ["report.txt", "sub/inner.txt"]
    assert not any("root:" in d.text for d in loaded)
    text = "\n".join(warnings)
    assert "passwd.txt: link to a file outside the docs folder; skipped" in text
    assert "linked: link to a folder outside the docs folder; skipped" in text
    assert "again.txt: the same file as report.txt (a link); skipped" in text
    assert "alias: link to the folder sub, which is read as itself; skipped" in text
    assert sum("outside the docs folder" in w for w in warnings) == 2  # once per link


def test_an_index_folder_inside_the_docs_folder_is_not_read(tmp_path, embedder):
    from conftest import make_config
    from index.kb import KnowledgeBase
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "report.txt").write_text("The report speaks of parking wardens and bicycles in the city.\n")
    kb = KnowledgeBase(make_config(docs, docs / "index"), embedder=embedder)
    kb.build()
    (docs / "index" / "stray.txt").write_text("A text file that happens to lie in the index folder.\n")
    report = kb.build()
    assert [d.doc for d in kb.documents()] == ["report.txt"] and report.skipped == []


def test_a_folder_that_cannot_be_read_is_warned_by_name(tmp_path, monkeypatch):
    import errno
    import os
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.txt").write_text("A readable note about parking.\n")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.txt").write_text("A note nobody may read.\n")
    real = os.scandir

    def scandir(path="."):  # tests run as root, which reads any folder: refuse it at the OS boundary instead
        if str(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    docs, warnings = load_documents(tmp_path)
    assert [d.doc for d in docs] == ["open/a.txt"]
    assert warnings == ["locked/: folder cannot be read (Permission denied); skipped"]


def test_a_sidecar_with_a_syntax_error_is_warned_about_and_left_out(tmp_path):
    (tmp_path / "a.txt").write_text("A report about the force's call handling in the spring.\n")
    (tmp_path / "a.txt.meta.toml").write_text('title = "unclosed\n')
    docs, warnings = load_documents(tmp_path)
    assert [d.doc for d in docs] == ["a.txt"]  # the document is indexed, from its own text
    assert len(warnings) == 1 and warnings[0].startswith("a.txt: sidecar a.txt.meta.toml is not valid TOML")
    assert warnings[0].endswith("indexed without it")


def test_metadata_of_the_wrong_type_is_warned_about_and_ignored(tmp_path):
    (tmp_path / "a.md").write_text("---\ntitle: [a, b]\ndate: {day: 1}\n---\n# The real heading\n\nBody text here.\n")
    (tmp_path / "b.txt").write_text("Second report about the control room.\n")
    (tmp_path / "b.txt.meta.toml").write_text('title = ["x", "y"]\nurl = 5\n')
    docs, warnings = load_documents(tmp_path)
    a, b = by_name(docs, "a.md"), by_name(docs, "b.txt")
    assert a.title == "The real heading" and a.date is None
    assert b.title == "Second report about the control room." and b.url is None
    assert sorted(warnings) == [
        "a.md: front matter: date = {'day': 1} is a dict, expected a date, a year or text; ignored",
        "a.md: front matter: title = ['a', 'b'] is a list, expected text; ignored",
        "b.txt: sidecar b.txt.meta.toml: title = ['x', 'y'] is a list, expected text; ignored",
        "b.txt: sidecar b.txt.meta.toml: url = 5 is a int, expected text; ignored"]


def _encrypted_pdf(path, user: str, algorithm: str) -> None:
    from io import BytesIO
    from pypdf import PdfReader, PdfWriter
    writer = PdfWriter(clone_from=PdfReader(BytesIO(make_pdf([["The encrypted report on crime recording."]]))))
    writer.encrypt(user, "owner-secret", algorithm=algorithm)
    with open(path, "wb") as fh:
        writer.write(fh)


def test_aes_encrypted_pdfs_are_read_and_a_password_is_asked_for_in_words(tmp_path):
    _encrypted_pdf(tmp_path / "aes128.pdf", "", "AES-128")      # opens without a password, as RC4 ones do
    _encrypted_pdf(tmp_path / "aes256.pdf", "", "AES-256")
    _encrypted_pdf(tmp_path / "locked.pdf", "pw", "AES-256")    # really needs one
    docs, warnings = load_documents(tmp_path)
    assert sorted(d.doc for d in docs) == ["aes128.pdf", "aes256.pdf"]
    assert all("crime recording" in d.text for d in docs)
    assert warnings == ["locked.pdf: encrypted PDF that needs a password to open; save a copy without one; skipped"]


def test_utf16_text_is_decoded_and_binary_without_nul_bytes_is_skipped(tmp_path):
    import random
    text = "Rapport über die Polizei in Leicester, été 2019: 21,200 crimes.\n" * 3
    (tmp_path / "le.txt").write_bytes(text.encode("utf-16"))           # with its byte-order mark
    (tmp_path / "be.md").write_bytes("\ufeff# Titre\n\nUn texte en UTF-16 BE.\n".encode("utf-16-be"))
    noise = bytes(b for b in random.Random(7).randbytes(60000) if b)  # no NUL byte anywhere
    (tmp_path / "noise.txt").write_bytes(noise)
    docs, warnings = load_documents(tmp_path)
    assert sorted(d.doc for d in docs) == ["be.md", "le.txt"]
    assert "21,200 crimes" in by_name(docs, "le.txt").text and by_name(docs, "be.md").title == "Titre"
    assert len(warnings) == 1 and warnings[0].startswith("noise.txt: binary file (")
    assert warnings[0].endswith("control characters), not text; skipped")


def test_locations_are_found_by_binary_search_exactly_as_by_a_scan():
    import random
    from index.documents import Block, Document
    rng = random.Random(3)
    blocks, offset = [], 0
    for i in range(300):
        n = rng.randint(1, 40)
        blocks.append(Block(offset, offset + n, page=i // 50 + 1, section=f"s{i // 7}", line=i + 1))
        offset += n + 1
    d = Document("d.txt", Path("d.txt"), "text", "t", None, None, "x" * offset, blocks)
    for _ in range(500):
        a = rng.randint(0, offset)
        b = rng.randint(a, offset + 1)
        after = [x for x in blocks if x.end > a]
        assert d.page_at(a) == (after[0].page if after else blocks[-1].page)
        assert d.section_at(a) == (after[0].section if after else None)
        inside = [x for x in blocks if x.end > a and x.start < b] or blocks[:1]
        lines = [x.line for x in inside]
        expected = f"line {lines[0]}" if len(lines) == 1 else f"lines {lines[0]}–{lines[-1]}"
        assert d.location(a, b).endswith(expected)


def test_a_lines_identity_for_repeats_ignores_case_spacing_and_trailing_punctuation():
    import re
    from hypothesis import given, settings, strategies as st
    from index.documents import _norm

    def by_regex(line):  # the definition; _norm reaches it without regular expressions
        return re.sub(r"[\s.!?…:;,]+$", "", re.sub(r"\s+", " ", line).strip().casefold())

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.one_of(st.characters(), st.sampled_from(
        [" ", "\t", "\n", "\u00a0", "\u2003", "\x1c", ".", "…", ";", "ß", "İ", "Σ", "Headline"])), max_size=30).map("".join))
    def same(line):
        assert _norm(line) == by_regex(line)
    same()
    assert _norm("  Police  Report:. ") == _norm("police report") == "police report"
