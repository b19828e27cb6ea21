"""The README and the guides beside it: every relative link reaches an existing file or heading, each guide
has a table of contents, and the README stays short enough to read in five minutes (≤ 16 KB)."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ["DISCORD.md", "RETRIEVAL.md", "PERFORMANCE.md", "SECURITY.md"]
README_LIMIT = 16 * 1024

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where `#` and `[..](..)` are not markdown."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the visible text, lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors by its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a markdown text; a repeated heading gets -1, -2 ... as on GitHub."""
    seen: Counter[str] = Counter()
    out = set()
    for _, title in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(title)
        out.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return out


def links(text: str) -> list[str]:
    """The targets of the inline and reference links of a markdown text (not those inside code)."""
    prose = _prose(text)
    return _INLINE_LINK.findall(prose) + _REF_LINK.findall(prose)


def broken_links(path: Path) -> list[str]:
    """The relative links of the markdown file `path` that reach no file, or no heading of their file."""
    broken = []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
            continue  # https:, mailto: ... are not checked (no network in tests)
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no file {file_part})")
        elif fragment and dest.suffix.lower() == ".md" and fragment not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading #{fragment} in {dest.name})")
    return broken


def doc_files() -> list[Path]:
    return sorted(ROOT.glob("*.md"))


def test_the_readme_and_the_four_guides_are_there():
    names = {p.name for p in doc_files()}
    assert {"README.md", *GUIDES} <= names


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.name)
def test_every_relative_link_reaches_a_file_or_heading(path):
    assert broken_links(path) == [], f"{path.name}: broken links"


def test_readme_stays_under_16_kb():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into a guide (limit {README_LIMIT})"


@pytest.mark.parametrize("name", ["README.md", *GUIDES])
def test_each_page_lists_its_sections_in_a_table_of_contents(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    sections = [slug(t) for level, t in _HEADING.findall(_FENCE.sub("", text)) if len(level) == 2]
    assert "contents" in sections, f"{name} has no '## Contents'"
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = {t.lstrip("#") for t in links(contents)}
    missing = [s for s in sections if s != "contents" and s not in listed]
    assert missing == [], f"{name}: sections missing from its table of contents"


def test_the_checker_finds_broken_files_and_headings(tmp_path):
    (tmp_path / "GUIDE.md").write_text("# Guide\n\n## Two words: `here`\n", encoding="utf-8")
    page = tmp_path / "PAGE.md"
    page.write_text(
        "# Page\n\n## Local heading\n\n## Local heading\n\n"
        "[ok](GUIDE.md) [ok](GUIDE.md#two-words-here) [ok](#local-heading) [ok](#local-heading-1) "
        "[ok](https://example.org/nowhere.md) <https://example.org>\n"
        "[bad file](MISSING.md) [bad heading](GUIDE.md#nowhere) [bad local](#not-here)\n"
        "[bad ref]: ./gone/\n\n"
        "```\n[not a link](IN-CODE.md)\n```\nand `[nor this](CODE-SPAN.md)`\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "MISSING.md (no file MISSING.md)",
        "GUIDE.md#nowhere (no heading #nowhere in GUIDE.md)",
        "#not-here (no heading #not-here in PAGE.md)",
        "./gone/ (no file ./gone/)",
    ]


def test_slugs_follow_github():
    assert slug("3. Invite the bot to your server") == "3-invite-the-bot-to-your-server"
    assert slug("`citebot bench`") == "citebot-bench"
    assert slug("Small corpus: docs/") == "small-corpus-docs"
    assert slug("Register the slash commands (sync)") == "register-the-slash-commands-sync"
