"""The terminal front end: an `Answer` as text, and the interactive chat."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from bot.printable import printable
from bot.quotes import in_quotes
from index.answer import Answer, Passage, excerpt

BOLD, YELLOW, DIM, RESET = "\033[1m", "\033[33m", "\033[2m", "\033[0m"


def _style(text: str, code: str, color: bool) -> str:
    return f"{code}{text}{RESET}" if color and text else text


def format_passage(n: int, p: Passage, color: bool, width: int = 100) -> str:
    """One numbered source: title, date, file and location, score, and the excerpt with the answer marked."""
    date = p.date.isoformat() if p.date else "undated"
    head = f"[{n}] {_style(printable(p.title, one_line=True), BOLD, color)} — {date}"
    where = printable(f"{p.doc}, {p.location}" + (f" · {p.url}" if p.url else ""), one_line=True)
    scores = " ".join(f"{k} {v:.2f}" for k, v in p.scores.items() if k != "sentence")
    lines = [head, _style(f"    {where}  ({scores})", DIM, color)]
    if p.duplicates:
        lines.append(_style(printable(f"    also in: {', '.join(p.duplicates)}", one_line=True), DIM, color))
    # without terminal colours the answer is marked the way Markdown would
    body = "".join((_style(printable(t), BOLD + YELLOW, color) if color else f"**{printable(t)}**") if bold
                   else printable(t) for t, bold in excerpt(p))
    wrapped = textwrap.fill(" ".join(body.split()), width=width, initial_indent="    ", subsequent_indent="    ")
    lines.append(wrapped)
    return "\n".join(lines)


def format_answer(answer: Answer, color: bool = False) -> str:
    """The whole answer as the terminal shows it: the quoted answer, then the numbered sources."""
    out = []
    if not answer.passages:
        return "No passage in the documents matches this question."
    if answer.confident:
        best = answer.passages[0]
        quote = best.answer_text or best.text[:300]
        out.append(_style(f"{in_quotes(' '.join(printable(quote).split()))} [1]", BOLD, color))
        out.append("")
        shown = answer.passages
    else:
        out.append("The documents do not answer this question. The closest passages, possibly related:")
        out.append("")
        shown = answer.passages[:3]
    out.extend(format_passage(i, p, color) + "\n" for i, p in enumerate(shown, 1))
    out.append(_style(f"({answer.elapsed_ms:.0f} ms)", DIM, color))
    return "\n".join(out)


CHAT_HELP = """Ask a question about the documents and press Enter. Commands:
  /docs       the indexed documents
  /history    your questions so far
  /k N        show N passages per answer
  /help       this text
  /quit       leave (Ctrl-D works too)"""


def chat(kb, out: TextIO | None = None, inp: TextIO | None = None, k: int | None = None) -> int:
    """The interactive terminal chat over the knowledge base; returns an exit code."""
    from index.kb import UserError
    out, inp = out or sys.stdout, inp or sys.stdin
    interactive = inp.isatty()
    color = out.isatty() and os.environ.get("NO_COLOR") is None
    history_file = Path(os.environ.get("CITEBOT_HISTORY", Path.home() / ".citebot_history"))
    if interactive:
        try:
            import readline
            try:
                readline.read_history_file(history_file)
            except OSError:
                pass
        except ImportError:
            readline = None
    asked: list[str] = []
    info = kb.info()
    print(f"citebot — {info['documents']} documents, {info['chunks']} passages. Type /help for commands.", file=out)
    while True:
        try:
            line = input("› ") if interactive else inp.readline()
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            break
        if not interactive and line == "":
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit", "/q", "quit", "exit"):
            break
        if line == "/help":
            print(CHAT_HELP, file=out)
            continue
        if line == "/docs":
            print(format_docs(kb.documents()), file=out)
            continue
        if line == "/history":
            print("\n".join(f"{i}. {q}" for i, q in enumerate(asked, 1)) or "(no questions yet)", file=out)
            continue
        if line.startswith("/k"):
            try:
                k = int(line.split()[1])
                if not 1 <= k <= 50:
                    raise ValueError
                print(f"showing {k} passages per answer", file=out)
            except (IndexError, ValueError):
                print("usage: /k N (1 to 50)", file=out)
            continue
        if line.startswith("/"):
            print(f"unknown command {line.split()[0]}; type /help", file=out)
            continue
        try:
            kb.follow_live()  # another process may have published a newer build meanwhile
            answer = kb.ask(line, k)
        except UserError as exc:
            print(f"! {printable(exc, one_line=True)}", file=out)
            continue
        asked.append(printable(line, one_line=True))
        print(format_answer(answer, color) + "\n", file=out)
    if interactive:
        try:
            import readline
            readline.write_history_file(history_file)
        except (ImportError, OSError):
            pass
    return 0


def format_docs(docs) -> str:
    """The documents table: date, chunks, title and file."""
    if not docs:
        return "(no documents indexed)"
    rows = [f"{'date':<10}  {'chunks':>6}  title / file"]
    for d in docs:
        # one line each, whatever the title or the file name holds (a newline, an escape sequence)
        rows.append(f"{d.date.isoformat() if d.date else 'undated':<10}  {d.chunks:>6}  "
                    f"{printable(d.title, one_line=True)}")
        rows.append(f"{'':<10}  {'':>6}  {printable(d.doc, one_line=True)}")
    return "\n".join(rows)
