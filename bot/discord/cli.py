"""`citebot bot` and `citebot sync [--guild ID]`, for bot/cli.py's EXTENSIONS list (imports stay light)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable


def cmd_bot(kb: Any, args: argparse.Namespace) -> int:
    """Run the Discord bot (building the index first if there is none)."""
    from bot.discord import run
    if not kb.has_index():
        print("No index yet: building it before the bot starts.", file=sys.stderr)
        print(kb.build().summary_line(), file=sys.stderr)
    run(kb.cfg, kb=kb)
    return 0


def cmd_sync(kb: Any, args: argparse.Namespace) -> int:
    """Register the slash commands with Discord, in one server or globally."""
    from bot.discord import sync_commands
    names = sync_commands(kb.cfg, args.guild)
    where = f"server {args.guild}" if args.guild else "all servers (global; may take a while to appear)"
    print(f"synced {len(names)} commands to {where}: {', '.join('/' + n for n in sorted(names))}")
    return 0


def _snowflake(value: str) -> int:
    """A server id given on the command line."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"'{value}' is not a server id (a number such as 123456789012345678)")
    return int(value)


def add_commands(sub: Any) -> dict[str, Callable[[Any, argparse.Namespace], int]]:
    """Add the Discord sub-commands to the `citebot` parser; returns their handlers by name."""
    sub.add_parser("bot", help="run the Discord bot (token from DISCORD_TOKEN or bot.token_file)")
    p = sub.add_parser("sync", help="register the slash commands with Discord (once, and after they change)")
    p.add_argument("--guild", type=_snowflake, metavar="ID", help="only in this server (instant; for testing)")
    return {"bot": cmd_bot, "sync": cmd_sync}
