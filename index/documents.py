"""Documents: loaders by file type, cleaning of boilerplate, and metadata (title, date, URL, page/section)."""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import json
import logging
import os
import pickle
import re
import stat
import tempfile
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

SUPPORTED = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
             ".pdf": "pdf", ".docx": "docx"}
SIDECAR_SUFFIX = ".meta.toml"
IGNORED_NAMES = {"README.md", "readme.md"}  # the docs folder may explain itself without being indexed


class LoadError(Exception):
    """A file could not be read; the message says why in a few words."""


@dataclass(slots=True)  # millions of them in a large corpus: no __dict__ each
class RawLine:
    """One line of a file before cleaning, with where it came from."""
    text: str
    page: int | None = None
    section: str | None = None
    line: int | None = None  # 1-based line number in the source file (text formats only)


@dataclass(slots=True)
class Block:
    """One kept line of the cleaned text: its character span and where it came from."""
    start: int
    end: int
    page: int | None = None
    section: str | None = None
    line: int | None = None


@dataclass
class Document:
    """A cleaned document: text the chunker and the search see, and its metadata."""
    doc: str                     # path relative to the docs folder, with forward slashes
    path: Path
    kind: str
    title: str
    date: dt.date | None         # a `YearOnly` when only the year is known (a file named "2018_…")
    url: str | None
    text: str
    blocks: list[Block]
    removed: list[str] = field(default_factory=list)  # lines the cleaning dropped, for reports
    _starts: list[int] | None = field(default=None, init=False, repr=False, compare=False)
    _ends: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def content_hash(self) -> str:
        meta = json.dumps([self.title, self.date.isoformat() if self.date else None, self.url, self.kind])
        return hashlib.sha256((meta + "\n" + self.text).encode("utf-8")).hexdigest()

    def location(self, start: int, end: int) -> str:
        """A human location for the character span [start, end): pages, section and source lines."""
        starts, ends = self._bounds()
        inside = self.blocks[bisect.bisect_right(ends, start):bisect.bisect_left(starts, end)] or self.blocks[:1]
        parts = []
        pages = sorted({b.page for b in inside if b.page is not None})
        if pages:
            parts.append(f"p. {pages[0]}" if len(pages) == 1 else f"pp. {pages[0]}–{pages[-1]}")
        section = next((b.section for b in inside if b.section), None)
        if section:
            parts.append(f"§ {section}")
        lines = [b.line for b in inside if b.line is not None]
        if lines:
            lo, hi = min(lines), max(lines)
            parts.append(f"line {lo}" if lo == hi else f"lines {lo}–{hi}")
        if not parts:
            parts.append(f"chars {start}–{end}")
        return ", ".join(parts)

    def _bounds(self) -> tuple[list[int], list[int]]:
        """The blocks' starts and ends (both ascending: blocks follow each other), made once: the lookups below
        are binary searches (a linear scan per chunk made chunking a 5 MB file take 27 s instead of 3 s)."""
        if self._starts is None or len(self._starts) != len(self.blocks):
            self._starts = [b.start for b in self.blocks]
            self._ends = [b.end for b in self.blocks]
        return self._starts, self._ends

    def _block_at(self, offset: int) -> Block | None:
        """The first block ending after `offset`, or None."""
        i = bisect.bisect_right(self._bounds()[1], offset)
        return self.blocks[i] if i < len(self.blocks) else None

    def page_at(self, offset: int) -> int | None:
        b = self._block_at(offset)
        if b is not None:
            return b.page
        return self.blocks[-1].page if self.blocks else None

    def section_at(self, offset: int) -> str | None:
        b = self._block_at(offset)
        return b.section if b is not None else None


# ---------------------------------------------------------------- reading files

_MAGIC = {b"%PDF-": "a PDF", b"PK\x03\x04": "a zip/Office", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image",
          b"GIF8": "a GIF image", b"\xd0\xcf\x11\xe0": "an old Office"}


_BOMS = [(b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
         (b"\xfe\xff", "utf-16")]  # longest first: a UTF-32 LE mark starts with the UTF-16 LE one
# A text file has almost no control characters besides tab, newlines and form feed; binary data decoded as
# cp1252 or latin-1 has about one in eight (random bytes: 11 % to 24 %). Above this share, it is not text.
MAX_CONTROL_SHARE = 0.05
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def _decode(data: bytes, name: str) -> str:
    head = data[:8192]
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise LoadError(f"{what} file with a text file's name; rename it")
    for bom, encoding in _BOMS:  # UTF-16/32 text has NUL bytes but says what it is
        if head.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                raise LoadError(f"damaged {encoding.upper()} text (it starts with a byte-order mark)") from None
    if b"\x00" in head:
        raise LoadError("binary file (NUL bytes), not text")
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        sample = text[:65536]
        controls = len(_CONTROL.findall(sample))
        if controls >= 16 and controls / len(sample) > MAX_CONTROL_SHARE:  # a few escapes in a short note pass
            raise LoadError(f"binary file ({controls / len(sample):.0%} control characters), not text")
        return text
    raise LoadError("unknown text encoding")  # unreachable: latin-1 decodes any byte string


_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


def _split_front_matter(text: str) -> tuple[dict, str, int]:
    """YAML front matter between '---' lines: (metadata, rest of text, number of lines consumed)."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text, 0
    import yaml
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError:
        return {}, text, 0
    if not isinstance(meta, dict):
        return {}, text, 0
    return meta, text[m.end():], m.group(0).count("\n")


def _read_text(path: Path, markdown: bool) -> tuple[list[RawLine], dict]:
    text = _decode(path.read_bytes(), path.name)
    meta, text, skipped = _split_front_matter(text)
    lines, section = [], None
    for number, line in enumerate(text.splitlines(), start=1 + skipped):
        if markdown:
            heading = re.match(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
            if heading:
                line = heading.group(2)
                section = line.strip() or section
                meta.setdefault("_first_heading", line.strip())
            line = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", line)  # [text](url) -> text
        lines.append(RawLine(line, section=section, line=number))
    return lines, meta


_HTML_DROP = ["script", "style", "noscript", "nav", "footer", "form", "aside", "svg", "template", "iframe"]
_HTML_BLOCK = ["p", "div", "li", "tr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
               "section", "article", "header", "table", "ul", "ol", "dd", "dt", "figcaption", "title"]


def _read_html(path: Path) -> tuple[list[RawLine], dict]:
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(_decode(path.read_bytes(), path.name), "html.parser")
    meta: dict = {}
    if soup.title and soup.title.get_text(strip=True):
        meta["_title"] = soup.title.get_text(" ", strip=True)
    for attrs, key in (({"property": "og:title"}, "_title"), ({"property": "article:published_time"}, "_date"),
                       ({"name": "date"}, "_date"), ({"name": "dc.date"}, "_date"), ({"property": "og:url"}, "_url")):
        tag = soup.find("meta", attrs=attrs)
        if tag and tag.get("content"):
            meta.setdefault(key, tag["content"].strip())
    canonical = soup.find("link", rel="canonical")
    if canonical and canonical.get("href"):
        meta.setdefault("_url", canonical["href"].strip())
    time_tag = soup.find("time", attrs={"datetime": True})
    if time_tag:
        meta.setdefault("_date", time_tag["datetime"])
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    if soup.head:
        soup.head.decompose()
    headings = {}
    for h in soup.find_all(["h1", "h2", "h3"]):
        text = h.get_text(" ", strip=True)
        if text:
            headings.setdefault(re.sub(r"\s+", " ", text), h.name)
            if h.name == "h1":
                meta.setdefault("_first_heading", text)
    for tag in soup.find_all(_HTML_BLOCK):
        tag.insert_before("\n")
        tag.insert_after("\n")
    lines, section = [], None
    for raw in soup.get_text().splitlines():
        norm = re.sub(r"\s+", " ", raw).strip()
        if norm in headings:
            section = norm
        lines.append(RawLine(raw, section=section))
    return lines, meta


def _read_pdf(path: Path) -> tuple[list[RawLine], dict]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise LoadError("encrypted PDF that needs a password to open; save a copy without one")
            except LoadError:
                raise
            except Exception:
                raise LoadError("encrypted PDF (cannot decrypt)") from None
        meta: dict = {}
        info = reader.metadata
        if info:
            if info.title and str(info.title).strip():
                meta["_title"] = str(info.title).strip()
            try:
                if info.creation_date:
                    meta["_date_weak"] = info.creation_date.date().isoformat()
            except Exception:  # malformed date strings are common in PDFs
                pass
        lines = []
        for number, page in enumerate(reader.pages, start=1):
            for line in (page.extract_text() or "").splitlines():
                lines.append(RawLine(line, page=number))
        return lines, meta
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(f"corrupt or unreadable PDF ({type(exc).__name__})") from None


def _read_docx(path: Path) -> tuple[list[RawLine], dict]:
    import zipfile
    import docx
    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise LoadError(f"corrupt or unreadable .docx ({type(exc).__name__})") from None
    except Exception as exc:  # python-docx raises several private exception types on broken packages
        raise LoadError(f"corrupt or unreadable .docx ({type(exc).__name__})") from None
    meta: dict = {}
    props = document.core_properties
    if props.title:
        meta["_title"] = props.title.strip()
    if props.created:
        meta["_date_weak"] = props.created.date().isoformat()
    lines, section = [], None
    for para in document.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        text = para.text
        if style == "Title" and text.strip():
            meta.setdefault("_first_heading", text.strip())
        if style.startswith("Heading") and text.strip():
            section = text.strip()
            meta.setdefault("_first_heading", text.strip())
        lines.extend(RawLine(t, section=section) for t in text.splitlines() or [""])
    for table in document.tables:
        for row in table.rows:
            cells = []
            for cell in row.cells:
                if cell.text.strip() and cell.text.strip() not in cells:
                    cells.append(cell.text.strip())
            if cells:
                lines.append(RawLine(" | ".join(cells), section=section))
    return lines, meta


READERS: dict[str, Callable[[Path], tuple[list[RawLine], dict]]] = {
    "text": lambda p: _read_text(p, markdown=False),
    "markdown": lambda p: _read_text(p, markdown=True),
    "html": _read_html,
    "pdf": _read_pdf,
    "docx": _read_docx,
}


# ---------------------------------------------------------------- dates

_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"], start=1)}
_MONTHS.update({m[:3]: i for m, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9
# Month names and their abbreviations (Sept too), written as a tree: an alternation of 23 whole words, case
# blind, was tried at every character and took two thirds of the time of finding no date in a long text.
_MONTH_RE = (r"\b(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
             r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
# (pattern, what a text must contain for it to match at all, whether it needs four digits in a row, its match as
# (year, month, day))
_DATE_PATTERNS: list[tuple[re.Pattern, str, bool, Callable[[re.Match], tuple[int, int, int]]]] = [
    # 2017-09-07 (also "date 2017-09-07")
    (re.compile(r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)"), "-", True, lambda m: (int(m[1]), int(m[2]), int(m[3]))),
    # Saturday, September 09, 2017 / September 9 2017
    (re.compile(_MONTH_RE + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b", re.I), "", True,
     lambda m: (int(m[3]), _MONTHS[m[1].lower()], int(m[2]))),
    # 9 September 2017
    (re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+" + _MONTH_RE + r",?\s+(\d{4})\b", re.I), "", True,
     lambda m: (int(m[3]), _MONTHS[m[2].lower()], int(m[1]))),
    # 2/3/17 or 02/03/2017, day first (UK order)
    (re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})(?![\d/])"), "/", False,
     lambda m: (int(m[3]) + (2000 if len(m[3]) == 2 else 0), int(m[2]), int(m[1]))),
]


_YEAR = re.compile(r"\d{4}")


def find_date(text: str) -> tuple[dt.date, int, int] | None:
    """The first date in `text` in a format the corpus uses: (date, start, end), or None."""
    best = None
    # most patterns need four digits in a row, which most texts without a date lack (4 of 5 SciFact abstracts):
    # one quick look for them spares their slow scans (finding no date in SciFact's abstracts 0.78 -> 0.45 s)
    year = _YEAR.search(text) is not None
    for pattern, needs, needs_year, parts in _DATE_PATTERNS:
        if needs not in text or (needs_year and not year):
            continue
        for m in pattern.finditer(text):
            try:
                value = dt.date(*parts(m))
            except ValueError:
                continue
            if best is None or m.start() < best[1]:
                best = (value, m.start(), m.end())
            break
    return best


class YearOnly(dt.date):
    """A date known only to its year (a file named `2018_…`, front matter `date: 2018`).

    It is a `datetime.date` (1 January of the year), so it sorts and compares as the start of that year, but it
    is written, stored and shown as the year alone ("2018"); a date filter takes it as the whole year
    (`date_span`). Arithmetic and `replace` give plain dates."""
    __slots__ = ()

    def __new__(cls, year, *_):
        if isinstance(year, (bytes, str)):  # pickle and copy pass the packed state of the date
            return super().__new__(cls, year)
        return super().__new__(cls, year, 1, 1)

    def isoformat(self) -> str:
        return f"{self.year:04d}"

    __str__ = isoformat

    def __repr__(self) -> str:
        return f"YearOnly({self.year})"

    def __format__(self, spec: str) -> str:  # f"{d}" and f"{d:<10}" give the year; strftime codes work as usual
        return super().__format__(spec) if "%" in spec else format(self.isoformat(), spec)

    def __add__(self, other):
        return dt.date(self.year, 1, 1).__add__(other)

    __radd__ = __add__

    def __sub__(self, other):
        return dt.date(self.year, 1, 1).__sub__(other)

    def replace(self, *args, **kwargs) -> dt.date:
        return dt.date(self.year, 1, 1).replace(*args, **kwargs)


def date_span(date: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last day a date stands for: the whole year for a `YearOnly`, else the day itself."""
    if isinstance(date, YearOnly):
        return dt.date(date.year, 1, 1), dt.date(date.year, 12, 31)
    return date, date


_YEAR = re.compile(r"\s*(\d{4})\s*")


def date_from_iso(value: str | None) -> dt.date | None:
    """A date as `isoformat` wrote it (and the index stores it): "2018-08-01", or "2018" for a `YearOnly`."""
    if not value:
        return None
    if len(value) == 4 and value.isdigit():
        return YearOnly(int(value))
    return dt.date.fromisoformat(value)


def parse_date(value) -> dt.date | None:
    """A front-matter or metadata date (date, datetime or string) as a date, or None if it has none; a year
    alone (2018 or "2018") is a `YearOnly`."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    year = _YEAR.fullmatch(str(value))
    if year and 1 <= int(year[1]) <= 9999:
        return YearOnly(int(year[1]))
    found = find_date(str(value))
    return found[0] if found else None


# A date in a file name: a whole date (2017-09-07, 2017_09_07, 2017.09.07, 20170907), else a year (2018), each
# standing alone (at the start or end of the name or between characters that are neither letters nor digits, so
# that "report-50", "v20180907b" or "1920x1080" are not read as dates). Only years from 1900 to next year count.
_NAME_EDGE_BEFORE, _NAME_EDGE_AFTER = r"(?<![^\W_])", r"(?![^\W_])"
_NAME_DATES = [re.compile(_NAME_EDGE_BEFORE + r"(\d{4})([-_.])(\d{1,2})\2(\d{1,2})" + _NAME_EDGE_AFTER),
               re.compile(_NAME_EDGE_BEFORE + r"(\d{4})()(\d{2})(\d{2})" + _NAME_EDGE_AFTER)]
_NAME_YEAR = re.compile(_NAME_EDGE_BEFORE + r"((?:19|20)\d{2})" + _NAME_EDGE_AFTER)


def date_from_name(name: str) -> dt.date | None:
    """The date a file name carries (extension ignored): the first whole date in it, else the first year
    alone as a `YearOnly`, else None. Years outside 1900 to next year and impossible days are not dates."""
    stem = PurePosixPath(name).stem
    latest = dt.date.today().year + 1
    found = []
    for pattern in _NAME_DATES:
        for m in pattern.finditer(stem):
            year, month, day = int(m[1]), int(m[3]), int(m[4])
            if 1900 <= year <= latest:
                try:
                    found.append((m.start(), dt.date(year, month, day)))
                except ValueError:
                    continue
    if found:
        return min(found, key=lambda f: f[0])[1]
    for m in _NAME_YEAR.finditer(stem):
        if int(m[1]) <= latest:
            return YearOnly(int(m[1]))
    return None


# ---------------------------------------------------------------- cleaning

_AD_LINE = re.compile(
    r"^(hide ad|advertisement|advert|sponsored|sponsored content|get the report|read the report|read more|"
    r"read the full report|download the report|click here|share this( article| story)?|share|tweet|"
    r"skip to (main )?content|back to top|print this page|story continues below|continue reading|"
    r"related articles?|most read|sign up to our newsletter|subscribe)[\s.!:…›»>]*$", re.I)
_URL_ONLY = re.compile(r"^(?:(?:link|source|url|more info(?:rmation)?)\s*:\s*)?<?(https?://\S+?)>?$", re.I)
_DATE_PREFIX = re.compile(r"^\s*date\s+(\d{4}-\d{1,2}-\d{1,2})\s+", re.I)


def _norm(line: str) -> str:
    """A line's identity for repeat detection: case, spacing and trailing punctuation ignored."""
    # the same as re.sub(r"[\s.!?…:;,]+$", "", re.sub(r"\s+", " ", line).strip().casefold()) (after the join
    # a space is the only whitespace left), without regular expressions: 0.37 s of cleaning SciFact
    return " ".join(line.split()).casefold().rstrip(" .!?…:;,")


def _undouble(line: str) -> str:
    """'Headline.Headline.' (a headline pasted twice without a break) becomes 'Headline.'."""
    n = len(line)
    if n >= 20 and n % 2 == 0 and line[: n // 2] == line[n // 2:]:
        return line[: n // 2]
    half = line[: (n - 1) // 2]
    if n >= 21 and line == half + " " + half:
        return half
    return line


# A date line is one date (at most "Wednesday, September 30th, 2017") and a few words such as "Published on":
# anything longer is prose, which need not be searched for dates line by line (profiled: 70 % of loading).
DATE_LINE_CHARS = 80
_DIGIT = re.compile(r"\d")


def _is_date_line(line: str) -> bool:
    """True when a line is only a date (optionally with its weekday or a word such as 'Published')."""
    if len(line) > DATE_LINE_CHARS or not _DIGIT.search(line):  # cheap: most lines are prose
        return False
    found = find_date(line)
    if not found:
        return False
    rest = line[: found[1]] + " " + line[found[2]:]
    rest = re.sub(r"\b(mon|tues|wednes|thurs|fri|satur|sun)day\b", "", rest, flags=re.I)
    rest = re.sub(r"\b(date|published|posted|updated|issued|on)\b", "", rest, flags=re.I)
    return not re.sub(r"[\s,.:|-]", "", rest)


def short(line: str, words: int = 12) -> bool:
    return len(line.split()) <= words


CLEAN_STEP = 20000  # lines cleaned between two progress reports


def clean_lines(lines: list[RawLine], common: frozenset[str] = frozenset(),
                progress: Callable[[float], None] | None = None) -> tuple[list[RawLine], list[str], dict]:
    """Drop boilerplate from `lines`: (kept lines with normalised spacing, removed lines, found metadata).

    Dropped: advertising and link-only lines, lines that are only a date (kept as metadata), a line seen
    before in the same document (repeated headlines appear once), and short lines common to many documents.
    `progress(share)` is told the share of lines done every CLEAN_STEP lines (a 50 MB file takes ~25 s).
    """
    kept, removed, found = [], [], {}
    seen: set[str] = set()
    for i, raw in enumerate(lines):
        if progress is not None and i % CLEAN_STEP == 0 and i:
            progress(i / len(lines))
        text = re.sub(r"[ \t\u00a0\u200b]+", " ", raw.text.replace("\x00", "")).strip()
        if not text:
            continue
        if not kept and not found.get("date"):
            prefix = _DATE_PREFIX.match(text)
            if prefix:
                found["date"] = parse_date(prefix.group(1))
                removed.append(prefix.group(0).strip())
                text = text[prefix.end():].strip()
        url = _URL_ONLY.match(text)
        if url:
            found.setdefault("url", url.group(1).rstrip(".,)"))
            removed.append(text)
            continue
        if _is_date_line(text):
            found.setdefault("date", find_date(text)[0])
            removed.append(text)
            continue
        if _AD_LINE.match(text):
            removed.append(text)
            continue
        text = _undouble(text)
        key = _norm(text)
        # a lead-in ending with a colon introduces what follows each time; it is not a repeated headline
        if (key in seen and not text.endswith(":")) or (key in common and short(text)):
            removed.append(text)
            continue
        seen.add(key)
        kept.append(RawLine(text, raw.page, raw.section, raw.line))
    return kept, removed, found


def common_lines(per_document: Iterable[set[str]], min_docs: int = 3, share: float = 0.5) -> frozenset[str]:
    """Short lines (normalised) that occur in at least `min_docs` documents and `share` of all of them
    (`per_document` is read once, one set at a time)."""
    counts: Counter[str] = Counter()
    n = 0
    for lines in per_document:
        counts.update(lines)
        n += 1
    need = max(min_docs, int(n * share + 0.999))
    return frozenset(k for k, c in counts.items() if c >= need)


# ---------------------------------------------------------------- assembling a Document

def _title_from(line: str, limit: int = 120) -> str:
    if len(line) <= limit:
        return line
    first = re.split(r"(?<=[.!?])\s+", line, maxsplit=1)[0]
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def _read_sidecar(path: Path) -> tuple[dict, list[str]]:
    """The sidecar's metadata and warnings: a sidecar that cannot be read is warned about and left out (the
    document is still indexed, from its own text)."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.exists():
        return {}, []
    try:
        return tomllib.loads(sidecar.read_text(encoding="utf-8")), []
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"sidecar {sidecar.name} is not valid TOML ({exc}); indexed without it"]
    except (UnicodeDecodeError, OSError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        return {}, [f"sidecar {sidecar.name} cannot be read ({why}); indexed without it"]


# metadata a user writes (front matter, sidecar): the types each key may have
_META_TYPES = {"title": (str, int, float), "url": (str,), "date": (str, dt.date, int)}  # int: a year


def _check_meta(meta: dict, where: str) -> list[str]:
    """Drop from `meta` (in place) the keys whose values have the wrong type; a warning for each."""
    warnings = []
    for key, types in _META_TYPES.items():
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            expected = "a date, a year or text" if key == "date" else "text"
            warnings.append(f"{where}: {key} = {shown} is a {type(value).__name__}, expected {expected}; ignored")
            del meta[key]
    return warnings


def read_file(path: Path) -> tuple[list[RawLine], dict]:
    """Raw lines and raw metadata (front matter and sidecar merged) of one supported file. Warnings about
    metadata left out (a bad sidecar, a wrong type) are in meta["_warnings"]."""
    kind = SUPPORTED[path.suffix.lower()]
    try:
        lines, meta = READERS[kind](path)
    except LoadError:
        raise
    except OSError as exc:
        raise LoadError(f"cannot read ({exc.strerror or type(exc).__name__})") from None
    except Exception as exc:  # a library choking on a malformed file must not stop the build
        raise LoadError(f"unreadable {kind} file ({type(exc).__name__}: {str(exc)[:80]})") from None
    warnings = _check_meta(meta, "front matter")
    sidecar, more = _read_sidecar(path)
    warnings += more + _check_meta(sidecar, f"sidecar {path.name + SIDECAR_SUFFIX}")
    meta.update(sidecar)
    if warnings:
        meta["_warnings"] = warnings
    return lines, meta


def _settle_date(meta: dict, found: dict, lines: list[RawLine], name: str) -> dt.date | None:
    """A document's date, from the most deliberate source to the least: the front matter or sidecar (the
    sidecar's wins), the file's declared publication date (HTML meta), the text (a dateline, else the first date
    in its first 400 lines), the file name (`2017-09-07_…`, `2018_…`: someone chose it), and last the creation
    date a PDF or Word file carries (often when it was exported or converted, not published)."""
    date = parse_date(meta.get("date")) or parse_date(meta.get("_date")) or found.get("date")
    if date is None:
        hit = find_date("\n".join(l.text for l in lines[:400]))
        date = hit[0] if hit else None
    return date or date_from_name(name) or parse_date(meta.get("_date_weak"))


def make_document(doc_id: str, path: Path, lines: list[RawLine], meta: dict,
                  common: frozenset[str] = frozenset(), progress: Callable[[float], None] | None = None) -> Document:
    """Clean `lines` and settle the metadata: front matter/sidecar first, then the file, then the text (the date:
    `_settle_date`; `progress` as for `clean_lines`)."""
    kind = SUPPORTED[path.suffix.lower()]
    kept, removed, found = clean_lines(lines, common, progress)
    if not kept:
        raise LoadError("no text left after cleaning")
    parts, blocks, offset = [], [], 0
    for line in kept:
        if parts:
            offset += 1
        blocks.append(Block(offset, offset + len(line.text), line.page, line.section, line.line))
        parts.append(line.text)
        offset += len(line.text)
    text = "\n".join(parts)
    title = meta.get("title") or meta.get("_title") or meta.get("_first_heading")
    if not title:
        title = next((k.text for k in kept if len(k.text.split()) >= 3), kept[0].text)
    title = _title_from(re.sub(r"\s+", " ", str(title)).strip())
    date = _settle_date(meta, found, lines, path.name)
    url = meta.get("url") or meta.get("_url") or found.get("url")
    return Document(doc=doc_id, path=path, kind=kind, title=title, date=date,
                    url=str(url) if url else None, text=text, blocks=blocks, removed=removed)


def scan(docs_dir: Path, exclude: Iterable[Path] = ()) -> tuple[list[Path], list[str]]:
    """Every file under `docs_dir` to consider (sorted) and warnings for the ones skipped.

    Only what lies inside the docs folder is read: a symbolic link (to a file or a folder) whose target is
    outside it is skipped with a warning. A link whose target is inside it is not read a second time: a
    linked folder (or a symlink loop) is read under its own name, a file reached twice once, preferably
    under its own name. Folders in `exclude` (the index, when it is inside the docs folder) are left out,
    and a folder that cannot be read is warned about by name."""
    docs_dir = Path(docs_dir)
    real_root = Path(os.path.realpath(docs_dir))
    excluded = {os.path.realpath(p) for p in exclude}
    files, warnings, seen_dirs, seen_files = [], [], set(), {}

    def rel_of(path: str | Path) -> str:
        return Path(path).relative_to(docs_dir).as_posix()

    def inside(real: str) -> bool:
        return real == str(real_root) or Path(real).is_relative_to(real_root)

    def unreadable(exc: OSError) -> None:
        where = rel_of(exc.filename) if exc.filename and Path(exc.filename) != docs_dir else "."
        warnings.append(f"{where}/: folder cannot be read ({exc.strerror or type(exc).__name__}); skipped")

    for root, dirs, names in os.walk(docs_dir, followlinks=True, onerror=unreadable):
        real = os.path.realpath(root)
        if real in seen_dirs:  # unreachable with the checks below; kept as the guard against loops
            warnings.append(f"{rel_of(root)}: folder visited twice (symlink loop); skipped")
            dirs[:] = []
            continue
        seen_dirs.add(real)
        keep = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            path = os.path.join(root, d)
            target = os.path.realpath(path)
            if not inside(target):
                warnings.append(f"{rel_of(path)}: link to a folder outside the docs folder; skipped")
            elif target in excluded:
                continue  # the index itself
            elif os.path.islink(path):  # its target is inside the folder and read there, under its own name
                loop = real == target or Path(real).is_relative_to(target)
                warnings.append(f"{rel_of(path)}: " + ("symlink loop; skipped" if loop else
                                f"link to the folder {Path(target).relative_to(real_root).as_posix()}, "
                                "which is read as itself; skipped"))
            else:
                keep.append(d)
        dirs[:] = keep
        # strings and one lstat a file, not Path objects and realpath's lstat per folder of the path: a third of
        # the time on SciFact's 5,183 files
        folder = rel_of(root)
        for name in sorted(names):
            if name.startswith(".") or name.endswith(SIDECAR_SUFFIX) or name in IGNORED_NAMES:
                continue
            rel = name if folder == "." else f"{folder}/{name}"
            if os.path.splitext(name)[1].lower() not in SUPPORTED:
                suffix = PurePosixPath(name).suffix
                warnings.append(f"{rel}: unsupported file type '{suffix or '(none)'}'; skipped")
                continue
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                mode = 0
            if stat.S_ISLNK(mode):
                target = os.path.realpath(path)
                if not inside(target):
                    warnings.append(f"{rel}: link to a file outside the docs folder; skipped")
                    continue
                regular = os.path.isfile(path)
            else:  # not a link, in a folder inside the docs folder: its real path is its folder's and its name
                target, regular = os.path.join(real, name), stat.S_ISREG(mode)
            if not regular:
                warnings.append(f"{rel}: not a regular file; skipped")
                continue
            seen_files.setdefault(target, []).append(Path(path))
    # a file reached twice (a link inside the folder to another file of it) is read once, under its own name
    for target, paths in seen_files.items():
        if len(paths) > 1:
            paths.sort(key=lambda p: (os.path.islink(p), rel_of(p)))
        files.append(paths[0])
        warnings.extend(f"{rel_of(p)}: the same file as {rel_of(paths[0])} (a link); skipped" for p in paths[1:])
    return files, warnings


def chars_read(lines: list[RawLine]) -> int:
    """The characters of a file's lines as read (each with its line break): the chunking progress bar's unit."""
    return sum(len(line.text) + 1 for line in lines)


class DocumentStream:
    """The documents of a folder, cleaned one at a time as they are iterated (once).

    Cleaning needs every file first (a short line common to many documents is boilerplate), so the files are
    read up front and their raw lines spooled to an unnamed temporary file in `spool_dir`; iterating reads
    them back one by one. A large corpus is thus never in memory all at once (at a million chunks, holding
    the raw lines of every file took ~2.4 GB). `warnings` lists the files skipped, growing as documents are
    made; `len()` is the number of files read."""

    def __init__(self, docs_dir: Path, spool_dir: Path | None = None, exclude: Iterable[Path] = ()):
        docs_dir = Path(docs_dir)
        if not docs_dir.is_dir():
            if docs_dir.exists():
                raise LoadError(f"docs folder {docs_dir} is a file, not a folder")
            raise LoadError(f"docs folder {docs_dir} does not exist")
        files, self.warnings = scan(docs_dir, exclude)
        self._spool = tempfile.TemporaryFile(dir=spool_dir, prefix="citebot-load-")
        self._count = 0
        self.chars = 0  # characters of text read (before cleaning): the chunking stage's total
        self.current_chars = 0  # ... of the document being made while iterating
        self.on_clean: Callable[[float], None] | None = None  # told the share of its lines cleaned
        try:
            self.common = common_lines(self._read_all(docs_dir, files))
        except BaseException:
            self.close()
            raise

    def _read_all(self, docs_dir: Path, files: list[Path]) -> Iterator[set[str]]:
        """Read and spool each file; yields its short lines (normalised) for `common_lines`."""
        for path in files:
            rel = path.relative_to(docs_dir).as_posix()
            try:
                lines, meta = read_file(path)
            except LoadError as exc:
                self.warnings.append(f"{rel}: {exc}; skipped")
                continue
            self.warnings.extend(f"{rel}: {w}" for w in meta.pop("_warnings", ()))
            self.chars += chars_read(lines)
            pickle.dump((rel, path, lines, meta), self._spool, protocol=pickle.HIGHEST_PROTOCOL)
            self._count += 1
            yield {_norm(line.text) for line in lines if line.text.strip() and short(line.text)}

    def __len__(self) -> int:
        return self._count

    def records(self) -> Iterator[tuple[str, Path, list[RawLine], dict]]:
        """The files as read and spooled, in order, not yet cleaned: (name, path, lines, metadata) each, for
        `make_document` (in another process: `index.chunking.clean_and_chunk`)."""
        self._spool.seek(0)
        for _ in range(self._count):
            yield pickle.load(self._spool)

    def __iter__(self) -> Iterator[Document]:
        for rel, path, lines, meta in self.records():
            self.current_chars = chars_read(lines)
            try:
                yield make_document(rel, path, lines, meta, self.common, self.on_clean)
            except LoadError as exc:
                self.warnings.append(f"{rel}: {exc}; skipped")

    def close(self) -> None:
        """Delete the spool (it has no name, so it also goes if the process dies)."""
        self._spool.close()

    def __enter__(self) -> "DocumentStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_documents(docs_dir: Path) -> tuple[list[Document], list[str]]:
    """Load and clean every supported file under `docs_dir`: (documents, warnings about skipped files)."""
    with DocumentStream(docs_dir) as stream:
        documents = list(stream)
        return documents, stream.warnings
