"""/upload and /remove: safe names, the type judged by content, the size limit, an incremental reindex with
the file that fails to load removed again, and an audit line per action (through the Discord stand-in)."""

from __future__ import annotations

import io
import logging
import zipfile

import pytest

from bot.discord import create_bot
from discord_standin import ADMIN, MEMBER, DiscordStandIn
from index.uploads import UploadError, content_kind, safe_name, store_upload

GOOD = b"The harbour bridge was repainted green in 2019 after a public vote by the residents.\n"


def docx_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def test_safe_names_keep_no_folders_hidden_files_or_odd_types():
    assert safe_name("../../etc/evil.md") == "evil.md" and safe_name("C:\\x\\report 2020.pdf") == "report 2020.pdf"
    assert safe_name("minutes<script>.txt") == "minutes_script_.txt"
    for bad in (".env.txt", "..", "", "notes", "run.sh", "archive.zip", "x/.hidden.md"):
        with pytest.raises(UploadError):
            safe_name(bad)
    assert len(safe_name("a" * 300 + ".pdf")) <= 120


def test_the_type_is_judged_by_content():
    assert content_kind(b"%PDF-1.7 ...") == "pdf" and content_kind(docx_bytes()) == "docx"
    assert content_kind(b"<!DOCTYPE html><html><body>x</body></html>") == "html"
    assert content_kind("plain text, ünïcode".encode()) == "text"
    assert content_kind(b"\x7fELF\x00\x01") == "other" and content_kind(b"PK\x03\x04junk") == "other"


def test_store_upload_refuses_overwriting_and_lies_about_type(tmp_path):
    assert store_upload(tmp_path, "a.txt", GOOD) == "a.txt"
    with pytest.raises(UploadError, match="replace:true"):
        store_upload(tmp_path, "a.txt", b"new text")
    assert store_upload(tmp_path, "a.txt", b"new text", replace=True) == "a.txt"
    assert (tmp_path / "a.txt").read_bytes() == b"new text"
    with pytest.raises(UploadError, match="not what the .pdf name says"):
        store_upload(tmp_path, "b.pdf", b"just text")
    with pytest.raises(UploadError, match="not a document"):
        store_upload(tmp_path, "c.docx", b"\x00\x01binary")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary file left


async def test_upload_and_remove_through_discord(tmp_path, embedder, caplog):
    from conftest import make_config
    from index.kb import KnowledgeBase
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "first.txt").write_text("The library opened a second reading room for children in 2021.\n")
    kb = KnowledgeBase(make_config(docs, tmp_path / "index"), embedder=embedder)
    kb.build()
    cfg = kb.cfg
    cfg.bot.max_upload_mb = 0.01  # 10 KB
    async with DiscordStandIn() as standin:
        bot = create_bot(cfg, kb, guild_ready_timeout=0.05)
        bot.get_cog  # noqa: B018 (created; cogs load in setup_hook)
        with caplog.at_level(logging.INFO, logger="citebot.discord"):
            async with standin.running(bot):
                bot.get_cog("Admin").progress_interval = 0.05
                refused = await standin.slash("upload", {"file": standin.attachment("a.txt", GOOD)}, user=MEMBER)
                line = (await standin.wait_for("POST", refused.callback_path)).json["data"]["content"]
                assert line == "⛔ /upload needs the Manage Server permission."

                big = standin.attachment("big.txt", GOOD, size=50_000)
                it = await standin.slash("upload", {"file": big}, user=ADMIN)
                line = (await standin.wait_for("POST", it.callback_path)).json["data"]
                assert line["flags"] == 64 and "larger than the limit of 0.01 MB" in line["content"]
                assert not standin.downloads  # refused before anything was downloaded

                files = {"file": standin.attachment("../bridge.txt", GOOD),
                         "file2": standin.attachment("fake.pdf", b"not a pdf at all"),
                         "file3": standin.attachment("broken.pdf", b"%PDF-1.4\nthis is no real pdf\n")}
                it = await standin.slash("upload", files, user=ADMIN)
                assert (await standin.wait_for("POST", it.callback_path)).json == {"type": 5, "data": {"flags": 64}}
                final = await standin.wait_for("PATCH", f"{it.webhook_path}/messages/@original",
                                               predicate=lambda c: "✅" in (c.json or {}).get("content", ""))
                text = final.json["content"]
                assert "⚠️ fake.pdf: its content is a text file, not what the .pdf name says" in text
                assert "❌ broken.pdf could not be read and was removed again" in text
                assert "📥 Added: bridge.txt" in text and "1 added" in text
                assert sorted(p.name for p in docs.iterdir()) == ["bridge.txt", "first.txt"]
                assert {d.doc for d in kb.documents()} == {"bridge.txt", "first.txt"}

                again = await standin.slash("upload", {"file": standin.attachment("bridge.txt", GOOD)}, user=ADMIN)
                final = await standin.wait_for("PATCH", f"{again.webhook_path}/messages/@original")
                assert "already exists; upload it again with replace:true" in final.json["content"]

                gone = await standin.slash("remove", {"document": "bridge"}, user=ADMIN)
                final = await standin.wait_for("PATCH", f"{gone.webhook_path}/messages/@original",
                                               predicate=lambda c: "✅" in (c.json or {}).get("content", ""))
                assert final.json["content"].startswith("🗑️ Removed bridge.txt.") and "1 removed" in final.json["content"]
                assert {d.doc for d in kb.documents()} == {"first.txt"}
    audit = caplog.text
    assert f"upload by user {ADMIN.id}" in audit and "bridge.txt" in audit and f"remove by user {ADMIN.id}" in audit
