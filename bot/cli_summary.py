"""`citebot summary` and `citebot timeline`: extractive summaries and timelines in the terminal (or as JSON)."""

from __future__ import annotations

import argparse
import textwrap

from bot.printable import json_text, printable
from bot.quotes import in_quotes

WIDTH = 100


def _count(low: int, high: int, what: str):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = low - 1
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"'{value}' is not a number of {what} from {low} to {high}")
        return n
    return parse


def add_commands(sub) -> dict:
    """Add `summary` and `timeline` to the `citebot` sub-commands; returns their handlers."""
    p = sub.add_parser("summary", help="summarise one document (or a topic across documents) in sentences quoted "
                       "from it, each with its location")
    p.add_argument("doc", nargs="?", metavar="DOC", help="the document: a path relative to the docs folder, or a "
                   "unique part of its file name or title")
    p.add_argument("--topic", metavar="TEXT", help="instead of one document: the sentences of every document that "
                   "speaks to TEXT, newest document first")
    p.add_argument("--sentences", "-n", type=_count(1, 50, "sentences"), metavar="N",
                   help="sentences in the summary (default: summary.sentences, 5)")
    p.add_argument("--chars", type=_count(100, 20000, "characters"), metavar="N",
                   help="at most N characters (with --sentences, whichever limit comes first)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p = sub.add_parser("timeline", help="the passages about a topic in order of their document's date")
    p.add_argument("topic", metavar="TEXT", help="the topic, e.g. 'crime recording'")
    p.add_argument("--json", action="store_true", help="print as JSON")
    return {"summary": cmd_summary, "timeline": cmd_timeline}


# ---------------------------------------------------------------- formatting (pure)

def _date(d) -> str:
    return d.isoformat() if d else "undated"


def _numbered(n: int, text: str, location: str, extra: str = "") -> str:
    body = " ".join(text.split())
    return textwrap.fill(f"{body}  ({location}){extra}", width=WIDTH, initial_indent=f"{n:>2}. ",
                         subsequent_indent="    ")


def format_summary(summary) -> str:
    """A document summary as the terminal shows it: title, file and date, numbered sentences with locations."""
    lines = [summary.title, f"{summary.doc} · {_date(summary.date)}" + (f" · {summary.url}" if summary.url else ""),
             ""]
    lines += [_numbered(i, s.text, s.location) for i, s in enumerate(summary.sentences, 1)]
    if summary.whole:
        what = f"the whole document ({summary.total} sentence{'s' if summary.total != 1 else ''}; too short to summarise)"
    else:
        what = f"{len(summary.sentences)} of {summary.total} sentences"
    lines += ["", f"{what} · {summary.elapsed_ms:.0f} ms" + (" (cached)" if summary.cached else "")]
    return "\n".join(lines)


def format_topic(result) -> str:
    """A topic summary: one block per document, newest first, each sentence numbered with its location."""
    if not result.groups:
        return f"No document speaks to '{result.topic}'."
    lines = [f"{result.topic}: {len(result.groups)} document{'s' if len(result.groups) != 1 else ''}, newest first", ""]
    n = 0
    for g in result.groups:
        lines.append(f"{g.title} — {g.doc} · {_date(g.date)}")
        for s in g.sentences:
            n += 1
            also = f" [also in: {', '.join(s.duplicates)}]" if s.duplicates else ""
            lines.append(_numbered(n, s.text, s.location, also))
        lines.append("")
    lines.append(f"{result.elapsed_ms:.0f} ms")
    return "\n".join(lines)


def format_timeline(result) -> str:
    """A timeline: one entry per passage, oldest first, undated ones last and marked so."""
    if not result.entries:
        return f"No passage about '{result.topic}' in the documents."
    lines = [f"Timeline: {result.topic}", ""]
    for i, e in enumerate(result.entries, 1):
        lines.append(f"{_date(e.date):<10}  {e.title} — {e.doc}, {e.location}")
        lines.append(textwrap.fill(f"[{i}] {in_quotes(' '.join(e.text.split()))}", width=WIDTH, initial_indent="            ",
                                   subsequent_indent="            "))
    if any(e.date is None for e in result.entries):
        lines += ["", "undated: the document carries no date of its own; it is listed last, not placed by guesswork"]
    lines += ["", f"{result.elapsed_ms:.0f} ms"]
    return "\n".join(lines)


# ---------------------------------------------------------------- handlers

def cmd_summary(kb, args) -> int:
    from index.kb import UserError
    if args.topic is not None:
        if args.doc:
            raise UserError("give either a document or --topic, not both")
        if args.sentences or args.chars:
            raise UserError("--sentences and --chars apply to one document's summary, not to --topic")
        result = kb.topic_summary(args.topic)
        print(json_text(result.to_json(), indent=1) if args.json else printable(format_topic(result)))
        return 0
    if not args.doc:
        raise UserError("name a document to summarise (see `citebot docs`), or give --topic TEXT")
    result = kb.summary(args.doc, sentences=args.sentences, chars=args.chars)
    print(json_text(result.to_json(), indent=1) if args.json else printable(format_summary(result)))
    return 0


def cmd_timeline(kb, args) -> int:
    result = kb.timeline(args.topic)
    print(json_text(result.to_json(), indent=1) if args.json else printable(format_timeline(result)))
    return 0
