"""The `citebot` command line: index, ask, chat, docs, run."""

from __future__ import annotations

import argparse
import importlib
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("citebot")


class CliError(Exception):
    """A problem to report in one line with a non-zero exit code."""


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a date; use YYYY-MM-DD") from None


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 50:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number from 1 to 50")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citebot", description="Answers questions about a folder of documents "
                                     "with quoted passages and their sources.")
    parser.add_argument("--config", metavar="PATH", help="config file (default: config.toml of the project, "
                        "or $CITEBOT_CONFIG)")
    parser.add_argument("--docs", metavar="DIR", help="documents folder (overrides paths.docs)")
    parser.add_argument("--index", metavar="DIR", help="index folder (overrides paths.index)")
    parser.add_argument("--store", choices=("faiss", "milvus"),
                        help="where the index lives (overrides store.backend; milvus: see PERFORMANCE.md)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("index", help="build or update the index of the documents folder")
    p.add_argument("--rebuild", action="store_true", help="embed every chunk again instead of reusing vectors")

    p = sub.add_parser("ask", help="answer one question (or one per line from stdin with '-')")
    p.add_argument("question", help="the question, or - to read one question per line from stdin")
    p.add_argument("-k", type=_positive, default=None, help="number of passages (default: retrieval.top_k)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON (one object per line)")
    p.add_argument("--doc", help="only this document: its path relative to the docs folder, a part of its file "
                   "name or title (as for `summary`), or a glob")
    p.add_argument("--after", type=_date, help="only documents dated on or after YYYY-MM-DD")
    p.add_argument("--before", type=_date, help="only documents dated on or before YYYY-MM-DD")
    p.add_argument("--mode", choices=("dense", "bm25", "hybrid"),
                   help="retrieval: vectors, keywords or both fused (default: retrieval.mode)")

    sub.add_parser("chat", help="terminal chat over the documents (builds the index if needed)")
    p = sub.add_parser("docs", help="list the indexed documents with title, date and chunk count")
    p.add_argument("--json", action="store_true", help="print as JSON")
    sub.add_parser("run", help="the main job: the Discord bot if a token is configured, else the terminal chat")
    for module in EXTENSIONS:
        COMMANDS.update(importlib.import_module(module).add_commands(sub))
    return parser


def load(args) -> "object":
    from index.config import load_config
    cfg = load_config(args.config)
    cwd = Path.cwd()
    if args.docs:
        cfg.paths.docs = str((cwd / args.docs).resolve())
    if args.index:
        cfg.paths.index = str((cwd / args.index).resolve())
    if getattr(args, "store", None):
        cfg.store.backend = args.store
    return cfg


def _progress_bar():
    """A progress callback that draws tqdm bars on stderr, one per stage."""
    from tqdm import tqdm
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in ("chunking", "embedding") or total <= 0:
            return
        bar = bars.get(stage)
        if bar is None:  # chunking counts characters of text, so a large file moves the bar as it goes
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="char" if stage == "chunking" else "chunk",
                                     unit_scale=stage == "chunking", file=sys.stderr, leave=False,
                                     dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close() -> None:  # a build that failed half-way: clear its bars before the error line
        for bar in bars.values():
            bar.close()
    progress.close = close
    return progress


def _build(kb, rebuild: bool = False):
    progress = _progress_bar()
    try:
        return kb.build(rebuild=rebuild, progress=progress)
    finally:
        progress.close()


def _warnings(report) -> None:
    from bot.printable import printable
    for warning in report.skipped:
        print(f"warning: {printable(warning, one_line=True)}", file=sys.stderr)


def cmd_index(kb, args) -> int:
    report = _build(kb, args.rebuild)
    _warnings(report)
    print(report.summary_line())
    return 0


def _ensure_index(kb) -> None:
    """Bring the index up to date before an interactive session (cheap when nothing changed). When it cannot
    be updated (a read-only index folder, another process building it) and there is an index, the session
    goes on with the live one and says so."""
    from index.kb import BuildInProgress, IndexReadOnly
    try:
        report = _build(kb)
    except IndexReadOnly as exc:
        if not kb.has_index():
            raise
        print(f"note: {exc}: answering from the existing index, which cannot be updated", file=sys.stderr)
        return
    except BuildInProgress as exc:
        if not kb.has_index():
            raise
        print(f"note: an update of the index is in progress ({exc}): answering from the live index meanwhile",
              file=sys.stderr)
        return
    _warnings(report)
    print(report.summary_line(), file=sys.stderr)


def cmd_ask(kb, args) -> int:
    from bot.console import format_answer
    from bot.printable import json_text, printable
    from index.kb import UserError
    filters = {"doc": args.doc, "after": args.after, "before": args.before, "mode": args.mode}
    if args.question != "-":
        answer = kb.ask(args.question, args.k, **filters)
        _note_stale(kb)
        if args.json:
            print(json_text(answer.to_json()))
        else:
            print(format_answer(answer, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
        return 0
    status = 0
    for n, line in enumerate(sys.stdin):
        question = line.rstrip("\r\n")
        try:  # every input line gets exactly one answer or one error, blank ones too
            answer = kb.ask(question, args.k, **filters)
        except UserError as exc:
            status = 1
            if args.json:
                print(json_text({"question": question, "error": str(exc)}), flush=True)
            else:
                print(f"! {printable(exc, one_line=True)}\n", flush=True)
            continue
        if n == 0:
            _note_stale(kb)
        if args.json:
            print(json_text(answer.to_json()), flush=True)
        else:
            print(format_answer(answer) + "\n", flush=True)
    return status


def _note_stale(kb) -> None:
    note = kb.stale_settings()
    if note:
        print(f"note: {note}", file=sys.stderr)


def cmd_docs(kb, args) -> int:
    from bot.console import format_docs
    from bot.printable import json_text
    docs = kb.documents()
    if args.json:
        print(json_text([{"doc": d.doc, "title": d.title, "date": d.date.isoformat() if d.date else None,
                          "url": d.url, "chunks": d.chunks} for d in docs], indent=1))
    else:
        print(format_docs(docs))
    return 0


def cmd_chat(kb, args) -> int:
    from bot.console import chat
    _ensure_index(kb)
    return chat(kb)


def cmd_run(kb, args) -> int:
    try:
        from bot import discord as discord_bot
    except ImportError:
        discord_bot = None
    if discord_bot is not None and discord_bot.token_configured(kb.cfg):
        _ensure_index(kb)
        discord_bot.run(kb.cfg, kb=kb)
        return 0
    print("No Discord token configured (DISCORD_TOKEN or bot.token_file): starting the terminal chat.",
          file=sys.stderr)
    return cmd_chat(kb, args)


COMMANDS = {"index": cmd_index, "ask": cmd_ask, "chat": cmd_chat, "docs": cmd_docs, "run": cmd_run}
# Modules that add their own sub-commands: each has add_commands(subparsers) -> {name: handler(kb, args)}.
# Keep their top-level imports light: `citebot --help` imports them all.
EXTENSIONS: list[str] = ["bot.cli_retrieval", "bot.cli_summary", "bot.cli_bench", "bot.discord.cli", "bot.cli_doctor"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for noisy in ("sentence_transformers", "transformers", "huggingface_hub", "faiss", "bm25s"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from index.config import ConfigError
    from index.kb import UserError
    try:
        cfg = load(args)
        from index.kb import KnowledgeBase
        kb = KnowledgeBase(cfg)
        return COMMANDS[args.command](kb, args)
    except (UserError, ConfigError, CliError) as exc:
        from bot.printable import printable
        print(f"citebot: {printable(exc, one_line=True)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
