"""bot.watch: a change in a documents folder rebuilds that library (debounced), with a log line per update."""

from __future__ import annotations

import asyncio
import logging
import textwrap

from watchfiles import Change

from bot.discord import create_bot
from discord_standin import FakeKnowledgeBase
from index.build import BuildReport
from index.config import load_config
from index.watch import document_change


def test_only_changes_that_can_alter_the_index_count():
    assert document_change(Change.added, "/d/report.pdf") and document_change(Change.deleted, "/d/sub/notes.md")
    assert document_change(Change.modified, "/d/report.pdf.meta.toml")
    assert not document_change(Change.added, "/d/.upload-x1.part") and not document_change(Change.added, "/d/a.exe")
    assert not document_change(Change.added, "/d/.git/index")


async def wait_for(condition, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not come true")


async def test_the_bot_rebuilds_the_library_whose_folder_changed(tmp_path, caplog):
    (tmp_path / "docs").mkdir()
    (tmp_path / "club").mkdir()
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent("""
        [paths]
        docs = "docs"
        index = "index"
        [bot]
        watch = true
        watch_debounce_ms = 50
        [servers.77]
        docs = "club"
        index = "club-index"
        """), encoding="utf-8")
    cfg = load_config(path, env={})
    default, club = FakeKnowledgeBase(report=BuildReport(added=["a.txt"])), FakeKnowledgeBase(report=BuildReport())
    bot = create_bot(cfg, default, library_factory=lambda config, like: club)
    with caplog.at_level(logging.INFO, logger="citebot.watch"):
        task = bot.start_watching()
        try:
            await asyncio.sleep(0.3)  # the watcher is set up
            (tmp_path / "docs" / "a.txt").write_text("A new document.\n")
            await wait_for(lambda: ("build", False) in default.calls)
            assert not club.calls
            (tmp_path / "club" / ".upload-1.part").write_text("half an upload")  # ignored
            (tmp_path / "club" / "b.md").write_text("# B\n\nAnother one.\n")
            await wait_for(lambda: ("build", False) in club.calls)
            assert default.calls.count(("build", False)) == 1
        finally:
            bot._watch_stop.set()
            await asyncio.wait_for(task, 10)
    assert f"watch: {tmp_path / 'docs'} changed" in caplog.text and "files: 1 added" in caplog.text
