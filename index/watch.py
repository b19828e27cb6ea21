"""Keeping libraries fresh: watch documents folders (watchfiles) and rebuild a library when its files change,
debounced, with one log line per update. Optional (bot.watch); builds run on a thread, off the event loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger("citebot.watch")


def document_change(change: Any, path: str) -> bool:
    """True for a change that can alter the index: not hidden files or folders (partial uploads, editors' swap
    files), not files of types that are never indexed."""
    from index.documents import SIDECAR_SUFFIX, SUPPORTED
    parts = Path(path).parts
    if any(p.startswith(".") for p in parts[-6:]):
        return False
    name = parts[-1] if parts else ""
    return name.endswith(SIDECAR_SUFFIX) or Path(name).suffix.lower() in SUPPORTED or "." not in name


async def watch_libraries(folders: Mapping[Path, Callable[[], Any]], debounce_ms: int = 3000,
                          stop: asyncio.Event | None = None) -> None:
    """Until `stop` is set: when files change under a folder of `folders` (documents folder -> a function giving
    its knowledge base), build that library incrementally and log what changed."""
    from watchfiles import awatch
    roots = {Path(f).resolve(): get for f, get in folders.items()}
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    log.info("watching %d documents folder(s) for changes: %s", len(roots), ", ".join(map(str, roots)))
    async for changes in awatch(*roots, watch_filter=document_change, debounce=debounce_ms, stop_event=stop):
        touched = {root for root in roots for _, path in changes if Path(path).resolve().is_relative_to(root)}
        for root in sorted(touched):
            await _rebuild(root, roots[root], len(changes))


async def _rebuild(root: Path, get: Callable[[], Any], count: int) -> None:
    from index.kb import UserError
    try:
        kb = get()
        report = await asyncio.to_thread(kb.build)
    except UserError as exc:  # e.g. a /reindex is running: the next change builds again
        log.warning("watch: %s changed, index not updated: %s", root, exc)
        return
    except Exception:
        log.exception("watch: %s changed, index not updated", root)
        return
    log.info("watch: %s changed (%d file event%s): %s", root, count, "s" if count != 1 else "",
             report.summary_line())
