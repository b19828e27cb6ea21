"""Privacy: slash commands in direct messages only when bot.allow_dms is on, voter ids as an HMAC under a secret
of this install, and one vote per member and answer."""

from __future__ import annotations

import copy
import hashlib
import stat

import pytest

from bot.discord import create_bot
from discord_standin import (APP_ID, DM_ID, GUILD_ID, LIBRARIAN, MEMBER, DiscordStandIn, FakeKnowledgeBase)
from index.answer import Answer, Passage
from index.config import load_config
from index.kb import user_hash, voter_key
from index.store import FeedbackStore
from test_discord_commands import ROOT, answer


@pytest.fixture
async def standin():
    async with DiscordStandIn() as server:
        yield server
        assert not server.unhandled, f"calls the stand-in could not answer: {server.unhandled}"


def bot_for(kb, **settings):
    cfg = load_config(ROOT / "config.toml", env={})
    cfg.bot.cooldown_seconds = 0.0
    for key, value in settings.items():
        setattr(cfg.bot, key, value)
    return create_bot(cfg, kb, guild_ready_timeout=0.05)


async def test_commands_are_registered_for_servers_only_and_refused_in_a_dm_by_default(standin):
    kb = FakeKnowledgeBase(answer=answer())
    bot = bot_for(kb, sync_on_start=True)
    assert bot.cfg.bot.allow_dms is False  # the default in config.toml
    async with standin.running(bot):
        put = await standin.wait_for("PUT", f"/applications/{APP_ID}/commands")
        assert put.json and all(c["contexts"] == [0] and c["dm_permission"] is False for c in put.json)
        it = await standin.slash("ask", {"question": "How many crimes?"}, channel_id=DM_ID)
        refusal = (await standin.wait_for("POST", it.callback_path)).json
        assert refusal["type"] == 4 and refusal["data"]["flags"] == 64
        assert refusal["data"]["content"].startswith("⚠️ I only answer in servers")
        typing = await standin.autocomplete("ask", {"question": "x", "document": "rep"}, "document",
                                            channel_id=DM_ID)
        assert (await standin.wait_for("POST", typing.callback_path)).json["data"]["choices"] == []
        assert not [c for c in kb.calls if c[0] == "ask"] and not standin.find("POST", it.webhook_path)


async def test_with_allow_dms_on_commands_answer_in_a_dm(standin):
    kb = FakeKnowledgeBase(answer=answer())
    async with standin.running(bot_for(kb, sync_on_start=True, allow_dms=True)):
        put = await standin.wait_for("PUT", f"/applications/{APP_ID}/commands")
        ask = next(c for c in put.json if c["name"] == "ask")
        assert ask.get("contexts") is None and ask["dm_permission"] is True
        it = await standin.slash("ask", {"question": "How many crimes?"}, channel_id=DM_ID)
        follow_up = await standin.wait_for("POST", it.webhook_path)
        assert follow_up.json["embeds"][0]["title"] == "How many crimes?"


async def test_votes_carry_an_hmac_and_a_second_vote_replaces_the_first(standin, tmp_path):
    store = FeedbackStore(tmp_path)

    class KB(FakeKnowledgeBase):
        def voter_id(self, user_id):
            return user_hash(user_id, voter_key(tmp_path))

        def record_feedback(self, question, chunk_ids, voter, vote):
            super().record_feedback(question, chunk_ids, voter, vote)
            store.record(question, chunk_ids, [str(i) for i in chunk_ids], voter, vote)

    kb = KB(answer=answer())
    async with standin.running(bot_for(kb)):
        it = await standin.slash("ask", {"question": "How many crimes?"})
        message = await standin.wait_for("POST", it.webhook_path)
        for user, button in ((LIBRARIAN, "👍"), (LIBRARIAN, "👎"), (MEMBER, "👍")):
            press = await standin.press(message.response, message.custom_ids()[button], user=user)
            await standin.wait_for("POST", press.webhook_path)
    rows = store.all()
    assert [(r["vote"]) for r in rows] == [-1, 1]  # the librarian's 👍 was replaced by their 👎
    librarian = kb.feedback[0][2]
    assert kb.feedback[1][2] == librarian and str(LIBRARIAN.id) not in librarian
    assert librarian != hashlib.sha256(f"citebot:{LIBRARIAN.id}".encode()).hexdigest()[:32]  # the old fixed salt
    assert rows[0]["user_hash"] == librarian and rows[1]["user_hash"] != librarian


def test_the_voter_secret_is_random_per_install_private_and_kept(tmp_path):
    first = voter_key(tmp_path / "a")
    path = tmp_path / "a" / "voter.key"
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert voter_key(tmp_path / "a") == first  # read back, not made again
    assert voter_key(tmp_path / "b") != first  # another install, another secret
    assert user_hash(42, first) != user_hash(42, voter_key(tmp_path / "b"))
    assert user_hash(42, first) == user_hash("42", first) and len(user_hash(42, first)) == 64


def test_the_confidence_threshold_is_the_live_searchers(kb):
    assert kb.confidence_threshold() == kb.searcher().min_score > 0  # the calibrated cut, or the configured one
