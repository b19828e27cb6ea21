"""End to end: the real discord.py client, connected to the local Discord stand-in, answering from the real index."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import re
from typing import Any

import pytest

import bot.discord as citebot_discord
from bot.discord import create_bot
from discord_standin import (ADMIN, APP_ID, ASK_ID, BOT, BOT_ID, GENERAL_ID, GUILD_ID, LIBRARIAN, MEMBER,
                             OTHER_BOT, TOKEN, DiscordStandIn)

PEEL = "hmicfrs-peel-public-contact-rated-adequate.txt"
QUESTION = "What grade did inspectors give the force for how it deals with the public?"
NONE_MENTIONS = {"parse": []}
MESSAGE_CONTENT = 1 << 15


class SpyKB:
    """The real knowledge base, with its questions recorded and its writes (feedback, builds) kept out of it."""

    def __init__(self, kb: Any):
        self._kb = kb
        self.asked: list[tuple] = []
        self.feedback: list[tuple] = []
        self.builds = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kb, name)

    def ask(self, question: str, k: int | None = None, **filters: Any):
        self.asked.append((question, k, filters))
        return self._kb.ask(question, k, **filters)

    def record_feedback(self, *args: Any) -> None:
        self.feedback.append(args)

    def build(self, *args: Any, **kwargs: Any):
        self.builds += 1
        raise AssertionError("these tests never rebuild the shared index")


@pytest.fixture
async def standin():
    async with DiscordStandIn() as server:
        yield server
        assert not server.unhandled, f"calls the stand-in could not answer: {server.unhandled}"


@pytest.fixture
def spy(kb) -> SpyKB:
    return SpyKB(kb)


def client(spy: SpyKB, **bot_settings: Any):
    cfg = copy.deepcopy(spy._kb.cfg)
    cfg.bot.cooldown_seconds = 0.0
    for key, value in bot_settings.items():
        setattr(cfg.bot, key, value)
    return create_bot(cfg, spy, guild_ready_timeout=0.05)


def cites(call, doc: str, field: int = 0) -> bool:
    return f"`{doc}`" in call.json["embeds"][0]["fields"][field]["value"]


async def test_slash_ask_is_deferred_then_followed_up_with_an_embed_citing_the_document(standin, spy):
    async with standin.running(client(spy)) as bot:
        assert not standin.identify[0]["intents"] & MESSAGE_CONTENT
        it = await standin.slash("ask", {"question": QUESTION})
        deferral = await standin.wait_for("POST", it.callback_path)
        follow_up = await standin.wait_for("POST", it.webhook_path)
        assert deferral.json == {"type": 5}  # "thinking…", public
        assert standin.calls.index(deferral) < standin.calls.index(follow_up)
        assert follow_up.query.get("wait") in ("1", "true")
        embed = follow_up.json["embeds"][0]
        assert embed["title"] == QUESTION
        assert embed["description"].startswith("> “") and embed["description"].endswith("[1]")
        assert embed["fields"][0]["name"].startswith("[1] ") and cites(follow_up, PEEL)
        assert "**" in embed["fields"][0]["value"] and " ms" in embed["footer"]["text"]
        assert follow_up.json["allowed_mentions"] == NONE_MENTIONS
        assert set(follow_up.custom_ids()) == {"More sources", "Show context", "Why?", "👍", "👎"}
        assert spy.asked == [(QUESTION, 10, {"doc": None, "after": None, "before": None})]

        private = await standin.slash("ask", {"question": QUESTION, "after": "2017-09", "before": "2017-09",
                                              "private": True}, user=ADMIN)
        assert (await standin.wait_for("POST", private.callback_path)).json == {"type": 5, "data": {"flags": 64}}
        follow_up = await standin.wait_for("POST", private.webhook_path)
        assert follow_up.json["flags"] == 64
        assert all("2017-09-0" in f["value"] for f in follow_up.json["embeds"][0]["fields"])
        assert spy.asked[-1][2] == {"doc": None, "after": dt.date(2017, 9, 1), "before": dt.date(2017, 9, 30)}

        one_doc = await standin.slash("ask", {"question": QUESTION, "document": PEEL}, user=LIBRARIAN)
        follow_up = await standin.wait_for("POST", one_doc.webhook_path)
        assert all(f"`{PEEL}`" in f["value"] for f in follow_up.json["embeds"][0]["fields"])

        no_match = await standin.slash("ask", {"question": QUESTION, "document": "annual report 2020"}, user=BOT)
        error = (await standin.wait_for("POST", no_match.callback_path)).json  # at once, privately, no "thinking…"
        assert error["type"] == 4 and error["data"]["flags"] == 64
        assert error["data"]["content"].startswith("⚠️ no indexed document matches 'annual report 2020'; did you mean")
        assert not standin.find("POST", no_match.webhook_path)

        typing = await standin.autocomplete("ask", {"question": "x", "document": "peel"}, focused="document")
        choices = (await standin.wait_for("POST", typing.callback_path)).json
        assert choices["type"] == 8 and [c["value"] for c in choices["data"]["choices"]] == [PEEL]


async def test_a_mention_is_answered_in_a_new_thread_and_a_follow_up_there_uses_the_first_question(standin, spy):
    async with standin.running(client(spy)):
        message = await standin.post(f"<@{BOT_ID}> {QUESTION}", mentions=[BOT])
        thread = await standin.wait_for("POST", f"/channels/{GENERAL_ID}/messages/{message['id']}/threads")
        assert thread.json["name"] == QUESTION
        thread_id = thread.response["id"]
        answer = await standin.wait_for("POST", f"/channels/{thread_id}/messages")
        assert cites(answer, PEEL) and answer.json["allowed_mentions"] == NONE_MENTIONS
        assert set(answer.custom_ids()) == {"More sources", "Show context", "Why?", "👍", "👎"}

        start = len(standin.calls)
        await standin.post(f"<@{BOT_ID}> what about 2018?", channel_id=int(thread_id), mentions=[BOT], author=LIBRARIAN)
        follow_up = await standin.wait_for("POST", f"/channels/{thread_id}/messages", start=start)
        assert follow_up.json["embeds"][0]["title"] == f"{QUESTION} what about 2018?"
        assert spy.asked[-1][0] == f"{QUESTION} what about 2018?"
        assert not standin.find("POST", f"/channels/{thread_id}/messages/{message['id']}/threads", start=start)


async def test_a_follow_up_without_a_mention_gets_one_hint_in_the_thread(standin, spy):
    async with standin.running(client(spy)):
        message = await standin.post(f"<@{BOT_ID}> {QUESTION}", mentions=[BOT])
        thread = await standin.wait_for("POST", f"/channels/{GENERAL_ID}/messages/{message['id']}/threads")
        thread_id = thread.response["id"]
        await standin.wait_for("POST", f"/channels/{thread_id}/messages")
        start = len(standin.calls)
        await standin.post("what about 2018?", channel_id=int(thread_id), author=LIBRARIAN)  # no mention
        hint = await standin.wait_for("POST", f"/channels/{thread_id}/messages", start=start)
        assert hint.json["content"].startswith("💡 ") and "@citebot what about 2018?" in hint.json["content"]
        assert hint.json["allowed_mentions"] == NONE_MENTIONS
        await standin.post("and 2019?", channel_id=int(thread_id), author=MEMBER)
        await standin.post("hello?", channel_id=GENERAL_ID, author=MEMBER)  # not a bot thread: nothing
        await asyncio.sleep(0.3)
        assert len(standin.find("POST", re.compile(r"/channels/\d+/messages"), start=start)) == 1  # once
        assert len(spy.asked) == 1


async def test_an_ask_channel_answers_every_message_and_ignores_bots(standin, spy):
    async with standin.running(client(spy, ask_channels=[str(ASK_ID)], use_threads=False)):
        assert standin.identify[0]["intents"] & MESSAGE_CONTENT
        from_bot = await standin.post(QUESTION, channel_id=ASK_ID, author=OTHER_BOT)
        from_itself = await standin.post(QUESTION, channel_id=ASK_ID, author=BOT)
        from_member = await standin.post(QUESTION, channel_id=ASK_ID, author=MEMBER)
        reply = await standin.wait_for("POST", f"/channels/{ASK_ID}/messages")
        assert str(reply.json["message_reference"]["message_id"]) == from_member["id"] and cites(reply, PEEL)
        assert reply.json["allowed_mentions"] == {"parse": [], "replied_user": False}
        await standin.post(QUESTION, channel_id=GENERAL_ID, author=MEMBER)  # not an ask-channel, no mention
        await asyncio.sleep(0.2)
        replies = standin.find("POST", f"/channels/{ASK_ID}/messages")
        assert len(replies) == 1 and [q for q, *_ in spy.asked] == [QUESTION]
        assert not any(m["id"] in str(c.json) for m in (from_bot, from_itself) for c in standin.calls)
        assert not standin.find("POST", f"/channels/{GENERAL_ID}/messages")


async def test_button_presses_show_context_and_record_a_vote(standin, spy):
    async with standin.running(client(spy)):
        it = await standin.slash("ask", {"question": QUESTION})
        answer = await standin.wait_for("POST", it.webhook_path)
        buttons = answer.custom_ids()

        press = await standin.press(answer.response, buttons["Show context"], user=LIBRARIAN)
        assert (await standin.wait_for("POST", press.callback_path)).json == {"type": 5, "data": {"flags": 64}}
        context = await standin.wait_for("POST", press.webhook_path)
        assert context.json["flags"] == 64 and context.json["embeds"][0]["title"].startswith("[1] ")
        assert PEEL in context.json["embeds"][0]["footer"]["text"]

        vote = await standin.press(answer.response, buttons["👍"], user=LIBRARIAN)
        await standin.wait_for("POST", vote.callback_path)
        thanks = await standin.wait_for("POST", vote.webhook_path)
        assert thanks.json["content"].startswith("👍 Thanks") and thanks.json["flags"] == 64
        question, chunk_ids, user_hash, value = spy.feedback[0]
        assert question == QUESTION and value == 1 and len(chunk_ids) == 5
        assert str(LIBRARIAN.id) not in user_hash

        more = await standin.press(answer.response, buttons["More sources"], user=MEMBER)
        page = (await standin.wait_for("POST", more.callback_path)).json
        assert page["type"] == 4 and page["data"]["flags"] == 64
        assert page["data"]["embeds"][0]["fields"][0]["name"].startswith("[6] ")


async def test_reindex_by_a_member_without_permission_is_refused(standin, spy):
    async with standin.running(client(spy)):
        it = await standin.slash("reindex", {}, user=MEMBER)
        refusal = await standin.wait_for("POST", it.callback_path)
        assert refusal.json["type"] == 4 and refusal.json["data"]["flags"] == 64
        assert refusal.json["data"]["content"] == "⛔ /reindex needs the Manage Server permission."
        assert refusal.json["data"]["allowed_mentions"] == NONE_MENTIONS
        assert spy.builds == 0


async def test_sources_and_help_answer_from_the_index(standin, spy):
    async with standin.running(client(spy)):
        sources = await standin.slash("sources")
        listing = await standin.wait_for("POST", sources.webhook_path)
        assert PEEL in listing.json["embeds"][0]["description"]
        assert listing.json["embeds"][0]["footer"]["text"].startswith("page 1 of 1 · 5 documents")
        help_ = await standin.slash("help")
        about = await standin.wait_for("POST", help_.webhook_path)
        fields = {f["name"]: f["value"] for f in about.json["embeds"][0]["fields"]}
        assert fields["Documents"] == "5" and about.json["flags"] == 64


async def test_sync_registers_the_commands_for_one_server(standin, spy):
    names = await asyncio.wait_for(citebot_discord.sync(spy._kb.cfg, GUILD_ID, token=TOKEN), 30)
    assert sorted(names) == ["ask", "help", "reindex", "remove", "sources", "summary", "timeline", "upload"]
    put = await standin.wait_for("PUT", f"/applications/{APP_ID}/guilds/{GUILD_ID}/commands")
    ask = next(c for c in put.json if c["name"] == "ask")
    assert [o["name"] for o in ask["options"]] == ["question", "document", "after", "before", "private"]
    assert next(o for o in ask["options"] if o["name"] == "document")["autocomplete"] is True
    assert not standin.find("PUT", f"/applications/{APP_ID}/commands")


async def test_serve_reads_the_token_from_the_environment_and_never_logs_it(standin, spy, monkeypatch, caplog):
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        task = asyncio.create_task(citebot_discord.serve(spy._kb.cfg, spy, guild_ready_timeout=0.05))
        try:
            identify = await standin.identified()
            assert identify["token"] == TOKEN
            it = await standin.slash("help")
            await standin.wait_for("POST", it.webhook_path)
            logging.getLogger("citebot.discord").warning("about to leak %s", TOKEN)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert TOKEN not in caplog.text and "about to leak [REDACTED]" in caplog.text


async def test_the_sharded_client_connects_through_the_gateway_it_is_given(standin, spy):
    async with standin.running(client(spy, sharded=True)) as bot:
        assert bot.shard_count == 1 and standin.identify[0]["shard"] == [0, 1]
        assert standin.find("GET", "/gateway/bot")
        it = await standin.slash("help")
        about = await standin.wait_for("POST", it.webhook_path)
        assert about.json["embeds"][0]["title"] == "citebot"


async def test_a_rejected_token_or_a_missing_intent_is_reported_as_a_configuration_error(spy):
    from index.config import ConfigError
    async with DiscordStandIn(token="another-token") as server:
        with pytest.raises(ConfigError, match="Discord rejected the bot token"):
            await asyncio.wait_for(citebot_discord.serve(spy._kb.cfg, spy, token=TOKEN), 30)
        assert server.find("GET", "/users/@me")
    cfg = copy.deepcopy(spy._kb.cfg)
    cfg.bot.ask_channels = [ASK_ID]
    async with DiscordStandIn(allow_message_content=False):
        with pytest.raises(ConfigError, match="Message Content intent"):
            await asyncio.wait_for(citebot_discord.serve(cfg, spy, token=TOKEN, guild_ready_timeout=0.05), 30)


async def test_a_failure_while_answering_a_mention_is_one_line_in_the_thread_and_a_traceback_in_the_log(
        standin, spy, caplog):
    from discord_standin import FakeKnowledgeBase
    from bot.discord.errors import GENERIC
    broken = FakeKnowledgeBase(answer=RuntimeError("index on fire"))
    bot = create_bot(spy._kb.cfg, broken, guild_ready_timeout=0.05)
    with caplog.at_level(logging.ERROR, logger="citebot.discord"):
        async with standin.running(bot):
            message = await standin.post(f"<@{BOT_ID}> anything?", mentions=[BOT])
            thread = await standin.wait_for("POST", f"/channels/{GENERAL_ID}/messages/{message['id']}/threads")
            line = await standin.wait_for("POST", f"/channels/{thread.response['id']}/messages")
    assert line.json["content"] == GENERIC and line.json["allowed_mentions"] == NONE_MENTIONS
    assert "RuntimeError: index on fire" in caplog.text


async def test_answer_buttons_work_after_a_restart_and_an_expired_answer_says_so(standin, spy):
    async with standin.running(client(spy)):
        it = await standin.slash("ask", {"question": QUESTION})
        answer = await standin.wait_for("POST", it.webhook_path)
    buttons = answer.custom_ids()
    key = buttons["More sources"].split(":")[2]
    assert await asyncio.to_thread(spy._kb.load_answer, key) is not None  # saved by the time the client closed
    from index.kb import KnowledgeBase
    restarted = SpyKB(KnowledgeBase(spy._kb.cfg, embedder=spy._kb.embedder))  # nothing in memory
    async with standin.running(client(restarted)):
        more = await standin.press(answer.response, buttons["More sources"], user=MEMBER)
        page = (await standin.wait_for("POST", more.callback_path)).json
        assert page["type"] == 4 and page["data"]["flags"] == 64
        assert page["data"]["embeds"][0]["fields"][0]["name"].startswith("[6] ")

        context = await standin.press(answer.response, buttons["Show context"], user=LIBRARIAN)
        shown = await standin.wait_for("POST", context.webhook_path)
        first = answer.json["embeds"][0]["fields"][0]["value"].split("`")[1]  # the file cited as [1]
        assert shown.json["flags"] == 64 and shown.json["embeds"][0]["title"].startswith("[1] ")
        assert first in shown.json["embeds"][0]["footer"]["text"]

        vote = await standin.press(answer.response, buttons["👎"], user=LIBRARIAN)
        assert (await standin.wait_for("POST", vote.webhook_path)).json["content"].startswith("👎 Thanks")
        assert restarted.feedback[0][0] == QUESTION and restarted.feedback[0][3] == -1

        why = await standin.press(answer.response, buttons["Why?"], user=MEMBER)
        why = (await standin.wait_for("POST", why.callback_path)).json
        assert why["data"]["flags"] == 64 and "confidence threshold of 0." in why["data"]["embeds"][0]["description"]

        gone = copy.deepcopy(answer.response)  # an answer no longer kept: another key in the same message
        for row in gone["components"]:
            for c in row["components"]:
                c["custom_id"] = c["custom_id"].replace(key, "f" * 16)
        expired = await standin.press(gone, f"citebot:a:{'f' * 16}:more", user=MEMBER)
        reply = (await standin.wait_for("POST", expired.callback_path)).json
        assert reply["type"] == 4 and reply["data"]["flags"] == 64
        assert reply["data"]["content"].startswith("⌛ This answer has expired") and QUESTION in reply["data"]["content"]
    assert not restarted.asked  # nothing was asked again: the answer came from the store
