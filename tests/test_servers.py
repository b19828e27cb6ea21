"""One bot, several servers, separate libraries: [servers.<guild id>] in config.toml, the lazily loaded libraries
(least recently used let go), and a server never seeing another server's documents."""

from __future__ import annotations

import asyncio

import datetime as dt
import textwrap

import pytest

from bot.discord import create_bot
from discord_standin import (ADMIN, DM_ID, GENERAL_ID, GUILD_ID, MEMBER, OTHER_GENERAL_ID, OTHER_GUILD_ID,
                             DiscordStandIn, FakeKnowledgeBase)
from index.answer import Answer, Passage
from index.config import ConfigError, load_config
from index.libraries import Libraries


def write_config(tmp_path, servers: str):
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(servers), encoding="utf-8")
    return path


def test_servers_map_to_their_own_folders_and_bad_tables_name_the_key(tmp_path):
    cfg = load_config(write_config(tmp_path, f"""
        [servers]
        default = "none"
        max_loaded = 2
        [servers.{OTHER_GUILD_ID}]
        docs = "club/docs"
        index = "club/index"
        """), env={})
    assert cfg.servers.default == "none" and cfg.servers.max_loaded == 2
    assert cfg.servers.libraries[OTHER_GUILD_ID].docs == "club/docs"
    for text, message in (('[servers.general]\ndocs = "a"\nindex = "b"', r"\[servers.general\]: expected a server"),
                          ('[servers.123]\ndocs = "a"', r"servers.123.index = None; expected a folder path"),
                          ('[servers]\ndefault = "all"', r"servers.default = 'all'; expected one of default, none"),
                          ('[servers]\nmax_loaded = 0', r"servers.max_loaded = 0; expected a number above 0")):
        with pytest.raises(ConfigError, match=message):
            load_config(write_config(tmp_path, text), env={})


def test_libraries_load_lazily_share_an_index_and_let_the_least_recently_used_go(tmp_path):
    cfg = load_config(write_config(tmp_path, """
        [servers]
        max_loaded = 2
        [servers.1]
        docs = "a"
        index = "a-index"
        [servers.2]
        docs = "b"
        index = "b-index"
        [servers.3]
        docs = "c"
        index = "c-index"
        [servers.4]
        docs = "a"
        index = "a-index"
        """), env={})
    made = []

    def factory(config, like):
        made.append(config.paths.index)
        return FakeKnowledgeBase()

    libraries = Libraries(cfg, default="the default", factory=factory)
    assert made == [] and libraries.get(None) == "the default" and libraries.get(99) == "the default"
    a = libraries.get(1)
    assert libraries.get(4) is a and made == ["a-index"]  # two servers, one library
    libraries.get(2)
    libraries.get(1)  # a is now the most recently used
    libraries.get(3)  # over the budget of 2: b goes
    assert [p.name for p in libraries.loaded()] == ["a-index", "c-index"]
    libraries.get(2)
    assert made == ["a-index", "b-index", "c-index", "b-index"]  # b loaded again
    cfg.servers.default = "none"
    assert libraries.get(99) is None and libraries.get(None) is None and libraries.get(1) is not None


def passage(doc: str, n: int = 1) -> Passage:
    text = f"The {doc} library says {n}."
    return Passage(chunk_id=n, doc=doc, title=doc.upper(), date=dt.date(2020, 1, n), url=None, location="line 1",
                   text=text, start=0, end=len(text), answer_spans=[(0, len(text))])


def library(doc: str) -> FakeKnowledgeBase:
    docs = [type("Doc", (), {"doc": doc, "title": doc.upper(), "date": None, "chunks": 1, "url": None})()]
    return FakeKnowledgeBase(answer=Answer("q", [passage(doc, n) for n in range(1, 8)], True, 1.0), docs=docs)


async def test_a_server_never_sees_another_servers_documents_through_commands_dms_or_buttons(tmp_path):
    cfg = load_config(write_config(tmp_path, f"""
        [bot]
        cooldown_seconds = 0.0
        allow_dms = true
        [servers.{OTHER_GUILD_ID}]
        docs = "other/docs"
        index = "other/index"
        """), env={})
    default, other = library("default-report.txt"), library("other-report.txt")
    bot = create_bot(cfg, default, guild_ready_timeout=0.05, library_factory=lambda config, like: other)

    def cited(call) -> set[str]:
        return {f["value"].split("`")[1] for f in call.json["embeds"][0]["fields"] if "`" in f["value"]}

    async with DiscordStandIn(second_guild=True) as standin:
        async with standin.running(bot):
            here = await standin.slash("ask", {"question": "What does it say?"})
            there = await standin.slash("ask", {"question": "What does it say?"}, channel_id=OTHER_GENERAL_ID)
            dm = await standin.slash("ask", {"question": "What does it say?"}, channel_id=DM_ID)
            answers = {name: await standin.wait_for("POST", it.webhook_path)
                       for name, it in (("here", here), ("there", there), ("dm", dm))}
            assert cited(answers["here"]) == {"default-report.txt"} == cited(answers["dm"])
            assert cited(answers["there"]) == {"other-report.txt"}
            assert len(default.calls) == 2 and [c[0] for c in other.calls] == ["ask"]

            typing = await standin.autocomplete("ask", {"question": "x", "document": "report"}, "document",
                                                channel_id=OTHER_GENERAL_ID)
            choices = (await standin.wait_for("POST", typing.callback_path)).json["data"]["choices"]
            assert [c["value"] for c in choices] == ["other-report.txt"]
            sources = await standin.slash("sources", channel_id=OTHER_GENERAL_ID)
            listing = (await standin.wait_for("POST", sources.webhook_path)).json["embeds"][0]["description"]
            assert "other-report.txt" in listing and "default-report.txt" not in listing
            refused = await standin.slash("ask", {"question": "q", "document": "default-report.txt"},
                                          channel_id=OTHER_GENERAL_ID)
            line = (await standin.wait_for("POST", refused.callback_path)).json["data"]["content"]
            assert line.startswith("⚠️ no indexed document matches 'default-report.txt'")

            # a button of server A's answer pressed from server B (or a DM) cannot show A's sources
            more = answers["here"].custom_ids()["More sources"]
            for channel in (OTHER_GENERAL_ID,):
                press = await standin.press(answers["here"].response, more, user=MEMBER, channel_id=channel)
                reply = (await standin.wait_for("POST", press.callback_path)).json
                assert reply["data"]["content"].startswith("⌛ This answer has expired")
            press = await standin.press(answers["there"].response, answers["there"].custom_ids()["More sources"],
                                        user=MEMBER, channel_id=OTHER_GENERAL_ID)
            page = (await standin.wait_for("POST", press.callback_path)).json["data"]["embeds"][0]
            assert {f["value"].split("`")[1] for f in page["fields"]} == {"other-report.txt"}
            context = await standin.press(answers["there"].response, answers["there"].custom_ids()["Show context"],
                                          user=MEMBER, channel_id=GENERAL_ID)
            assert (await standin.wait_for("POST", context.callback_path)).json["data"]["content"].startswith("⌛")

            reindex = await standin.slash("reindex", {}, user=ADMIN, channel_id=OTHER_GENERAL_ID)
            await standin.wait_for("PATCH", f"{reindex.webhook_path}/messages/@original")
            # that first edit ("starting") may come before the build thread has called build: wait for it
            for _ in range(1000):
                if ("build", False) in other.calls:
                    break
                await asyncio.sleep(0.01)
            assert ("build", False) in other.calls and not [c for c in default.calls if c[0] == "build"]


async def test_an_unmapped_server_is_refused_when_the_default_is_none(tmp_path):
    cfg = load_config(write_config(tmp_path, f"""
        [bot]
        cooldown_seconds = 0.0
        [servers]
        default = "none"
        [servers.{OTHER_GUILD_ID}]
        docs = "other/docs"
        index = "other/index"
        """), env={})
    other = library("other-report.txt")
    bot = create_bot(cfg, None, guild_ready_timeout=0.05, library_factory=lambda config, like: other)
    async with DiscordStandIn(second_guild=True) as standin:
        async with standin.running(bot):
            it = await standin.slash("ask", {"question": "What does it say?"}, channel_id=GENERAL_ID)
            refusal = (await standin.wait_for("POST", it.callback_path)).json
            assert refusal["data"]["flags"] == 64 and refusal["data"]["content"].startswith("⛔ This server has no library")
            served = await standin.slash("ask", {"question": "What does it say?"}, channel_id=OTHER_GENERAL_ID)
            assert "other-report.txt" in str((await standin.wait_for("POST", served.webhook_path)).json["embeds"])
    assert GUILD_ID != OTHER_GUILD_ID


def test_real_libraries_index_and_answer_from_their_own_folders_only(tmp_path, embedder):
    for name, text in (("a", "The harbour bridge was repainted green in 2019 after a public vote."),
                       ("b", "The library opened a second reading room for children in 2021.")):
        (tmp_path / name / "docs").mkdir(parents=True)
        (tmp_path / name / "docs" / f"{name}-notes.txt").write_text(text + "\n", encoding="utf-8")
    cfg = load_config(write_config(tmp_path, """
        [paths]
        docs = "a/docs"
        index = "a/index"
        [servers.7]
        docs = "b/docs"
        index = "b/index"
        """), env={})
    from index.kb import KnowledgeBase
    default = KnowledgeBase(cfg, embedder=embedder)
    libraries = Libraries(cfg, default)
    served = libraries.get(7)
    assert served.embedder is embedder and served.cfg.index_dir == tmp_path / "b" / "index"
    default.build()
    served.build()
    for kb, own in ((default, "a-notes.txt"), (served, "b-notes.txt")):
        for question in ("When was the bridge repainted?", "When did the reading room open?"):
            assert {p.doc for p in kb.ask(question).passages} == {own}
    assert [d.doc for d in served.documents()] == ["b-notes.txt"]
