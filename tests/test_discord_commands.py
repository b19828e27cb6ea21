"""Command callbacks, checks, views and helpers of the Discord layer, called directly with stand-in interactions."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import AsyncMock, MagicMock

import discord
import pytest
from discord import app_commands

from bot.discord.client import ask_channel_ids, create_bot, intents_for
from bot.discord.cogs.admin import ALREADY_RUNNING, AdminCog
from bot.discord.cogs.ask import AskCog
from bot.discord.cogs.library import LibraryCog
from bot.discord.conversation import ThreadMemory, followup_question, strip_mentions, year_filter
from bot.discord.credentials import RedactSecrets, read_token, token_configured
from bot.discord.errors import GENERIC, NotAllowed, UserFacingError, report
from bot.discord.limits import Cooldowns
from bot.discord.options import AfterDate, BeforeDate, document_choices, parse_bound
from bot.discord.views import AnswerView, ContextView, DocumentsView
from discord_standin import FakeKnowledgeBase
from index.answer import Answer, Passage
from index.config import ConfigError, load_config
from index.kb import BuildInProgress, UserError

ROOT = Path(__file__).resolve().parent.parent
BOT_ID, MEMBER_ID, OTHER_ID = 900, 901, 902
NONE_MENTIONS = {"parse": []}


def passage(n: int) -> Passage:
    text = f"Intro {n}. The force recorded {n},300 more crimes. Outro."
    i = text.find("The force")
    return Passage(chunk_id=n, doc=f"report-{n}.txt", title=f"Report {n}", date=dt.date(2018, 1, n), url=None,
                   location=f"lines {n}–{n + 2}", text=text, start=0, end=len(text),
                   answer_spans=[(i, text.find(".", i) + 1)])


def answer(n: int = 3, confident: bool = True) -> Answer:
    return Answer("q", [passage(i) for i in range(1, n + 1)], confident, 42.0)


def make_bot(kb, **bot_settings) -> SimpleNamespace:
    cfg = load_config(ROOT / "config.toml", env={})
    cfg.bot.cooldown_seconds = 0.0
    for key, value in bot_settings.items():
        setattr(cfg.bot, key, value)
    return SimpleNamespace(cfg=cfg, kb=kb, ask_channels=ask_channel_ids(cfg), user=SimpleNamespace(id=BOT_ID),
                           offload=asyncio.to_thread)


def interaction(bot, user_id: int = MEMBER_ID, permissions: discord.Permissions | None = None, roles=(),
                on_defer=lambda: None):
    """A stand-in discord.Interaction whose responses are AsyncMocks that track is_done() like the real one."""
    it = MagicMock(spec=discord.Interaction)
    it.id, it.type, it.client, it.command = 1, discord.InteractionType.application_command, bot, None
    it.guild = SimpleNamespace(id=1)
    it.user = SimpleNamespace(id=user_id, roles=list(roles))
    it.permissions = permissions or discord.Permissions(send_messages=True)
    it.data = {}
    state = SimpleNamespace(done=False, type=None)
    response = MagicMock()

    async def defer(thinking: bool = False, ephemeral: bool = False):
        on_defer()
        state.done = True
        state.type = discord.InteractionResponseType.deferred_channel_message if thinking else \
            discord.InteractionResponseType.deferred_message_update

    async def send_message(*args, **kwargs):
        state.done = True

    response.defer = AsyncMock(side_effect=defer)
    response.send_message = AsyncMock(side_effect=send_message)
    response.edit_message = AsyncMock()
    type(response).type = property(lambda self: state.type)
    response.is_done = lambda: state.done
    it.response = response
    it.followup = MagicMock()
    it.followup.send = AsyncMock(return_value=MagicMock(spec=discord.WebhookMessage))
    it.edit_original_response = AsyncMock()
    it.delete_original_response = AsyncMock()
    return it


def sent_text(mock) -> str:
    call = mock.await_args
    return call.args[0] if call.args else call.kwargs.get("content")


# ------------------------------------------------------------------ /ask
async def test_ask_defers_at_once_then_answers_off_the_loop_with_a_follow_up():
    kb = FakeKnowledgeBase(answer=answer())
    cog = AskCog(make_bot(kb))
    it = interaction(cog.bot, on_defer=lambda: assert_not_asked(kb))
    after, before = dt.date(2017, 1, 1), dt.date(2018, 12, 31)
    await AskCog.ask.callback(cog, it, question="How many crimes?", document="report-1.txt", after=after,
                              before=before, private=True)
    it.response.defer.assert_awaited_once_with(thinking=True, ephemeral=True)
    assert kb.calls == [("ask", "How many crimes?", 10, "report-1.txt", after, before)]
    assert threading.get_ident() not in kb.threads
    kwargs = it.followup.send.await_args.kwargs
    assert kwargs["ephemeral"] is True and kwargs["wait"] is True
    assert kwargs["allowed_mentions"].to_dict() == NONE_MENTIONS
    assert kwargs["embed"].title == "How many crimes?" and kwargs["embed"].fields[0].name == "[1] Report 1"
    view = kwargs["view"]
    assert isinstance(view, AnswerView) and view.timeout is None  # persistent: see AnswerButton
    assert view.message is it.followup.send.return_value


def assert_not_asked(kb) -> None:
    assert not kb.calls, "the interaction must be deferred before the knowledge base is asked"


async def test_ask_refuses_a_long_question_with_one_ephemeral_line():
    kb = FakeKnowledgeBase(answer=answer())
    cog = AskCog(make_bot(kb, max_question_chars=20))
    it = interaction(cog.bot)
    await AskCog.ask.callback(cog, it, question="x" * 21)
    assert sent_text(it.response.send_message) == "✂️ Questions can be at most 20 characters; yours has 21."
    assert it.response.send_message.await_args.kwargs["ephemeral"] is True
    assert not kb.calls and not it.response.defer.await_count


async def test_a_question_before_the_model_is_loaded_gets_a_warming_up_reply():
    from bot.discord.limits import WARMING_UP
    from index.kb import KnowledgeBase
    kb = FakeKnowledgeBase(answer=answer())
    kb.ready = False  # KnowledgeBase.warm_up() is still loading the model in its thread
    cog = AskCog(make_bot(kb, cooldown_seconds=60.0))
    it = interaction(cog.bot)
    await AskCog.ask.callback(cog, it, question="How many crimes?")
    assert sent_text(it.response.send_message) == WARMING_UP
    assert it.response.send_message.await_args.kwargs["ephemeral"] is True
    assert not kb.calls and not it.response.defer.await_count
    kb.ready = True  # the warming-up reply did not use up the member's cooldown
    again = interaction(cog.bot)
    await AskCog.ask.callback(cog, again, question="How many crimes?")
    assert again.followup.send.await_count == 1
    # the real knowledge base: not ready until warm_up has run (or the model is loaded)
    from conftest import make_config
    real = KnowledgeBase(make_config(Path("docs"), Path("/nonexistent-index")))
    assert not real.ready
    real.warm_up(background=False)
    assert real.ready and real.warm_error is None


async def test_ask_cooldown_is_per_user():
    kb = FakeKnowledgeBase(answer=answer())
    cog = AskCog(make_bot(kb, cooldown_seconds=60.0))
    first, again, other = interaction(cog.bot), interaction(cog.bot), interaction(cog.bot, user_id=OTHER_ID)
    await AskCog.ask.callback(cog, first, question="one?")
    await AskCog.ask.callback(cog, again, question="two?")
    await AskCog.ask.callback(cog, other, question="three?")
    assert first.followup.send.await_count == 1 and other.followup.send.await_count == 1
    assert sent_text(again.response.send_message).startswith("⏳ Please wait 6")
    assert again.response.send_message.await_args.kwargs["ephemeral"] is True
    assert [c[1] for c in kb.calls] == ["one?", "three?"]


async def test_ask_user_error_becomes_one_ephemeral_line_not_a_public_one():
    kb = FakeKnowledgeBase(answer=UserError("no indexed document is dated in that range"))
    cog = AskCog(make_bot(kb, cooldown_seconds=60.0))
    it = interaction(cog.bot)
    await AskCog.ask.callback(cog, it, question="anything?", after=dt.date(1990, 1, 1))
    it.delete_original_response.assert_awaited_once()  # the public "thinking…" placeholder goes
    assert sent_text(it.followup.send) == "⚠️ no indexed document is dated in that range"
    assert it.followup.send.await_args.kwargs["ephemeral"] is True
    assert cog.cooldowns.take(MEMBER_ID) == 0.0  # nothing was answered: the turn was given back


async def test_ask_refuses_an_unknown_document_or_an_empty_question_at_once_and_keeps_the_cooldown():
    docs = [SimpleNamespace(doc="annual-report-2019.txt", title="Annual report 2019", date=None),
            SimpleNamespace(doc="annual-report-2021.txt", title="Annual report 2021", date=None)]
    kb = FakeKnowledgeBase(answer=answer(), docs=docs)
    cog = AskCog(make_bot(kb, cooldown_seconds=60.0))
    texts = []
    for options in ({"document": "budget minutes"}, {"document": "annual report"}, {"question": " ?! "}):
        it = interaction(cog.bot)
        await AskCog.ask.callback(cog, it, **{"question": "How many crimes?", **options})
        assert not it.response.defer.await_count and not kb.calls  # no public "thinking…", no work
        assert it.response.send_message.await_args.kwargs["ephemeral"] is True
        texts.append(sent_text(it.response.send_message))
    assert texts[0] == "⚠️ no indexed document matches 'budget minutes'"
    assert texts[1].startswith("⚠️ ") and "annual-report-2019.txt" in texts[1] and "annual-report-2021.txt" in texts[1]
    assert texts[2].startswith("⚠️ please ask a question in words")
    it = interaction(cog.bot)
    await AskCog.ask.callback(cog, it, question="How many crimes?", document="annual report 2021")
    it.response.defer.assert_awaited_once()  # the refusals cost no turn
    assert kb.calls[-1][3] == "annual-report-2021.txt"


async def test_a_bug_is_logged_with_its_traceback_and_shown_as_one_line(caplog):
    it = interaction(make_bot(FakeKnowledgeBase()))
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        error = app_commands.CommandInvokeError(AskCog.ask, exc)
    with caplog.at_level(logging.ERROR, logger="citebot.discord"):
        await report(it, error)
    assert "RuntimeError: boom" in caplog.text and "Traceback" in caplog.text
    assert sent_text(it.response.send_message) == GENERIC
    assert it.response.send_message.await_args.kwargs["ephemeral"] is True


async def test_a_refusal_is_shown_without_logging_a_traceback(caplog):
    it = interaction(make_bot(FakeKnowledgeBase()))
    with caplog.at_level(logging.ERROR):
        await report(it, NotAllowed("/reindex needs the Manage Server permission."))
    assert sent_text(it.response.send_message) == "⛔ /reindex needs the Manage Server permission."
    assert not caplog.records


async def test_document_autocomplete_offers_at_most_25_matching_titles():
    docs = [SimpleNamespace(doc=f"{2000 + n}_report.txt", title=f"Report of {2000 + n}", date=dt.date(2000 + n, 1, 1))
            for n in range(30)]
    kb = FakeKnowledgeBase(docs=docs)
    cog = AskCog(make_bot(kb))
    choices = await AskCog.document_autocomplete(cog, interaction(cog.bot), "")
    assert len(choices) == 25
    only = await AskCog.document_autocomplete(cog, interaction(cog.bot), "2018")
    assert [(c.name, c.value) for c in only] == [("Report of 2018 (2018-01-01)", "2018_report.txt")]
    assert document_choices([SimpleNamespace(doc="x" * 150, title="T" * 150, date=None)], "")[0].value == "T" * 100


async def test_date_options_accept_year_month_or_day():
    assert parse_bound("2018", end=False) == dt.date(2018, 1, 1)
    assert parse_bound("2018", end=True) == dt.date(2018, 12, 31)
    assert parse_bound("2016-02", end=True) == dt.date(2016, 2, 29)
    assert parse_bound(" 2018-03-07 ", end=True) == dt.date(2018, 3, 7)
    it = interaction(make_bot(FakeKnowledgeBase()))
    assert await AfterDate().transform(it, "2017-09") == dt.date(2017, 9, 1)
    assert await BeforeDate().transform(it, "2017-09") == dt.date(2017, 9, 30)
    for bad in ("yesterday", "2018-13", "2018-02-30"):
        with pytest.raises(UserFacingError):
            parse_bound(bad, end=False)


# ------------------------------------------------------------------ /reindex
async def run_checks(command, it) -> bool:
    for check in command.checks:
        await check(it)
    return True


async def test_reindex_needs_manage_server_or_the_configured_role():
    kb = FakeKnowledgeBase()
    plain = make_bot(kb)
    with pytest.raises(NotAllowed, match="Manage Server"):
        await run_checks(AdminCog.reindex, interaction(plain))
    assert await run_checks(AdminCog.reindex, interaction(plain, permissions=discord.Permissions(manage_guild=True)))
    librarian = SimpleNamespace(id=77, name="Librarian")
    with pytest.raises(NotAllowed):
        await run_checks(AdminCog.reindex, interaction(plain, roles=[librarian]))
    by_name, by_id = make_bot(kb, reindex_role="Librarian"), make_bot(kb, reindex_role="77")
    assert await run_checks(AdminCog.reindex, interaction(by_name, roles=[librarian]))
    assert await run_checks(AdminCog.reindex, interaction(by_id, roles=[librarian]))
    with pytest.raises(NotAllowed, match="Librarian"):
        await run_checks(AdminCog.reindex, interaction(by_name, roles=[SimpleNamespace(id=5, name="Other")]))


async def test_reindex_shows_progress_refuses_a_second_run_and_ends_with_the_files():
    gate = threading.Event()
    report_ = SimpleNamespace(added=["new.txt"], changed=["edited.txt"], removed=[], skipped=[], embedded=4,
                              reused=20, seconds=1.5, summary_line=lambda: "files: …")
    kb = FakeKnowledgeBase(report=report_, build_gate=gate)
    cog = AdminCog(make_bot(kb))
    cog.progress_interval = 0
    admin = discord.Permissions(manage_guild=True)
    first, second = interaction(cog.bot, permissions=admin), interaction(cog.bot, permissions=admin)
    task = asyncio.create_task(AdminCog.reindex.callback(cog, first))

    async def edited_with_progress():
        while not any("embedding 3/10" in str(c) for c in first.edit_original_response.await_args_list):
            await asyncio.sleep(0.01)
    await asyncio.wait_for(edited_with_progress(), 30)
    await AdminCog.reindex.callback(cog, second)
    assert sent_text(second.response.send_message) == ALREADY_RUNNING
    kb.answer = answer()
    asker = AskCog(cog.bot)
    question = interaction(cog.bot)
    await asyncio.wait_for(AskCog.ask.callback(asker, question, question="asked during the build?"), 30)
    assert question.followup.send.await_args.kwargs["embed"].title == "asked during the build?"
    gate.set()
    await asyncio.wait_for(task, 30)
    first.response.defer.assert_awaited_once_with(thinking=True, ephemeral=True)
    final = first.edit_original_response.await_args.kwargs["content"]
    assert final.startswith("✅ Index updated in 1.5 s: 1 added, 1 changed, 0 removed")
    assert "`new.txt`" in final and "`edited.txt`" in final
    assert kb.calls[0] == ("build", False) and threading.get_ident() not in kb.threads
    assert not cog.running


async def test_reindex_reports_a_build_running_elsewhere():
    kb = FakeKnowledgeBase(report=BuildInProgress("another build is running (pid 7); try again when it ends"))
    cog = AdminCog(make_bot(kb))
    it = interaction(cog.bot, permissions=discord.Permissions(manage_guild=True))
    await AdminCog.reindex.callback(cog, it, full=True)
    assert kb.calls == [("build", True)]
    assert it.edit_original_response.await_args.kwargs["content"].startswith("⚠️ another build is running")


def test_reindex_is_hidden_from_members_unless_a_role_is_configured():
    async def build(**settings):
        bot = create_bot(make_bot(None, **settings).cfg, None)
        await bot.setup_hook()
        return bot.tree.get_command("reindex").default_permissions
    assert asyncio.run(build()) == discord.Permissions(manage_guild=True)
    assert asyncio.run(build(reindex_role="Librarian")) is None


# ------------------------------------------------------------------ /sources and /help
async def test_sources_lists_documents_in_pages():
    docs = [SimpleNamespace(doc=f"d{n}.txt", title=f"Doc {n}", date=None, url=None, chunks=2) for n in range(15)]
    kb = FakeKnowledgeBase(docs=docs)
    cog = LibraryCog(make_bot(kb))
    it = interaction(cog.bot)
    await LibraryCog.sources.callback(cog, it)
    it.response.defer.assert_awaited_once()
    kwargs = it.followup.send.await_args.kwargs
    assert kwargs["embed"].footer.text.startswith("page 1 of 2 · 15 documents")
    view = kwargs["view"]
    assert isinstance(view, DocumentsView) and view.previous_page.disabled and not view.next_page.disabled
    press = interaction(cog.bot)
    await view.next_page.callback(press)
    page2 = press.response.edit_message.await_args.kwargs
    assert "**11. Doc 10**" in page2["embed"].description and view.next_page.disabled


async def test_help_describes_the_index_or_why_there_is_none():
    kb = FakeKnowledgeBase(info={"documents": 5, "chunks": 26, "built_at": None, "model": "m"})
    cog = LibraryCog(make_bot(kb))
    it = interaction(cog.bot)
    await LibraryCog.help.callback(cog, it)
    embed = it.followup.send.await_args.kwargs["embed"]
    assert {f.name: f.value for f in embed.fields}["Documents"] == "5"
    kb._info = UserError("no index yet; run `citebot index`")
    it = interaction(cog.bot)
    await LibraryCog.help.callback(cog, it)
    assert "no index yet" in it.followup.send.await_args.kwargs["embed"].fields[0].value


# ------------------------------------------------------------------ buttons
async def test_more_sources_pages_for_each_presser_then_says_it_was_the_last():
    kb = FakeKnowledgeBase(answer=answer(7))
    view = AnswerView(kb, answer(7), per_page=3)
    bot = make_bot(kb)
    pages = []
    for _ in range(3):
        it = interaction(bot)
        await view.more_sources.callback(it)
        pages.append(it.response.send_message.await_args)
    assert [f.name for f in pages[0].kwargs["embed"].fields] == ["[4] Report 4", "[5] Report 5", "[6] Report 6"]
    assert [f.name for f in pages[1].kwargs["embed"].fields] == ["[7] Report 7"]
    assert pages[2].args[0].startswith("That was the last page")
    assert all(p.kwargs["ephemeral"] for p in pages)
    other = interaction(bot, user_id=OTHER_ID)
    await view.more_sources.callback(other)
    assert other.response.send_message.await_args.kwargs["embed"].fields[0].name == "[4] Report 4"
    assert AnswerView(kb, answer(2), per_page=3).more_sources.disabled


async def test_votes_store_the_question_passages_and_a_hash_of_the_user():
    kb = FakeKnowledgeBase(answer=answer(4))
    view = AnswerView(kb, Answer("How many?", answer(4).passages, True, 1.0), per_page=3)
    it = interaction(make_bot(kb))
    await view.vote_down.callback(it)
    question, ids, user, vote = kb.feedback[0]
    assert (question, ids, vote) == ("How many?", [1, 2, 3], -1)
    assert str(MEMBER_ID) not in user and len(user) >= 16
    it.response.defer.assert_awaited_once_with(ephemeral=True, thinking=True)
    assert sent_text(it.followup.send).startswith("👎 Thanks") and it.followup.send.await_args.kwargs["ephemeral"]
    assert threading.get_ident() not in kb.threads


async def test_show_context_is_ephemeral_and_offers_the_other_sources():
    kb = FakeKnowledgeBase(answer=answer(3))
    view = AnswerView(kb, answer(3), per_page=5)
    it = interaction(make_bot(kb))
    await view.show_context.callback(it)
    kwargs = it.followup.send.await_args.kwargs
    assert kwargs["ephemeral"] and "**The force recorded 1,300 more crimes.**" in kwargs["embed"].description
    assert "Text before." in kwargs["embed"].description
    menu = kwargs["view"]
    assert isinstance(menu, ContextView)
    select = menu.children[0]
    assert [o.value for o in select.options] == ["1", "2", "3"]
    pick = interaction(make_bot(kb))
    select._values = ["3"]  # what discord.py sets from the interaction
    pick.data = {"values": ["3"]}
    await select.callback(pick)
    assert pick.edit_original_response.await_args.kwargs["embed"].title == "[3] Report 3"


async def test_answer_buttons_carry_the_answer_key_in_their_custom_ids():
    view = AnswerView(FakeKnowledgeBase(answer=answer()), answer(), per_page=5)
    ids = [item.custom_id for item in view.children]
    assert ids == [f"citebot:a:{view.key}:{action}" for action in ("more", "ctx", "why", "up", "down")]
    assert all(len(i) <= 100 for i in ids) and view.timeout is None


async def test_past_max_live_views_the_oldest_answers_leave_memory_but_their_buttons_still_work():
    kb = FakeKnowledgeBase(answer=answer(7))
    cog = AskCog(make_bot(kb, max_live_views=2))
    views = [cog.reply(answer(7), kb)[1] for _ in range(4)]
    await asyncio.sleep(0.2)  # saving is a background task
    assert len(cog.answers) == 2 and set(kb.saved) == {v.key for v in views}
    again = await cog.answers.get(views[0].key, kb)  # read back from the knowledge base's store
    assert again is not views[0] and again.answer.passages == views[0].answer.passages
    it = interaction(cog.bot)
    await again.more_sources.callback(it)
    assert it.response.send_message.await_args.kwargs["embed"].fields[0].name == "[6] Report 6"
    assert await cog.answers.get("0" * 16, kb) is None
    assert await cog.answers.get(views[3].key, FakeKnowledgeBase(answer=answer(7))) is None  # another library


# ------------------------------------------------------------------ helpers
def test_cooldowns_count_from_the_last_accepted_question():
    now = [100.0]
    cd = Cooldowns(10, clock=lambda: now[0])
    assert cd.take(1) == 0 and cd.take(2) == 0
    now[0] = 104
    assert cd.take(1) == pytest.approx(6)
    now[0] = 110
    assert cd.take(1) == 0
    assert Cooldowns(0).take(1) == 0 and Cooldowns(0).take(1) == 0


def test_conversation_helpers():
    assert strip_mentions("<@900> what  about <@!900> this?", 900) == "what about this?"
    assert followup_question("How did the force rate?", "what about 2018?") == "How did the force rate? what about 2018?"
    long = "this follow up question is long enough to stand on its own without context"
    assert followup_question("earlier?", long) == long
    assert year_filter("what about 2018?") == (dt.date(2018, 1, 1), dt.date(2018, 12, 31))
    assert year_filter("2017 or 2018?") is None and year_filter("no year") is None
    memory = ThreadMemory(size=2)
    for tid in (1, 2, 3):
        memory.remember(tid, f"q{tid}")
    assert 1 not in memory and memory.question(3) == "q3"


def test_intents_are_minimal_and_message_content_only_for_ask_channels():
    plain = intents_for(make_bot(None).cfg)
    assert plain.guilds and plain.guild_messages and not plain.message_content and not plain.members
    assert not plain.presences and not plain.dm_messages
    assert intents_for(make_bot(None, ask_channels=["123", 456]).cfg).message_content
    assert ask_channel_ids(make_bot(None, ask_channels=["123", 456]).cfg) == {123, 456}
    with pytest.raises(ConfigError, match="bot.ask_channels contains 'general'"):
        ask_channel_ids(make_bot(None, ask_channels=["general"]).cfg)


def test_token_comes_from_the_environment_or_the_token_file(tmp_path):
    cfg = make_bot(None).cfg
    cfg.base_dir = tmp_path
    assert not token_configured(cfg, env={})
    assert token_configured(cfg, env={"DISCORD_TOKEN": "abc"}) and read_token(cfg, env={"DISCORD_TOKEN": " abc\n"}) == "abc"
    with pytest.raises(ConfigError, match="DISCORD_TOKEN or bot.token_file"):
        read_token(cfg, env={})
    cfg.bot.token_file = "secret/token.txt"
    assert token_configured(cfg, env={})
    with pytest.raises(ConfigError, match="bot.token_file = 'secret/token.txt'"):
        read_token(cfg, env={})
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret/token.txt").write_text("")
    with pytest.raises(ConfigError, match="does not hold a token"):
        read_token(cfg, env={})
    (tmp_path / "secret/token.txt").write_text("file-token\n")
    assert read_token(cfg, env={}) == "file-token"


def test_the_token_is_redacted_from_messages_arguments_and_tracebacks():
    import io
    token = "MTIz.secret.token"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([token]))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(f"token {token} in the message")
        logger.warning("token %s in the arguments", token)
        try:
            raise RuntimeError(f"failed with {token}")
        except RuntimeError:
            logger.exception("failure")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert token not in out and out.count("[REDACTED]") == 3


def test_cli_commands_bot_and_sync(monkeypatch, capsys):
    import argparse
    import bot.discord as package
    from bot.discord.cli import add_commands
    parser = argparse.ArgumentParser()
    handlers = add_commands(parser.add_subparsers(dest="command"))
    assert set(handlers) == {"bot", "sync"}
    args = parser.parse_args(["sync", "--guild", "123"])
    monkeypatch.setattr(package, "sync_commands", lambda cfg, guild: ["help", "ask"] if guild == 123 else [])
    kb = SimpleNamespace(cfg=make_bot(None).cfg)
    assert handlers["sync"](kb, args) == 0
    assert capsys.readouterr().out == "synced 2 commands to server 123: /ask, /help\n"
    with pytest.raises(SystemExit):
        parser.parse_args(["sync", "--guild", "general"])
    ran = []
    monkeypatch.setattr(package, "run", lambda cfg, kb=None: ran.append(kb))
    built = SimpleNamespace(cfg=kb.cfg, has_index=lambda: True)
    assert handlers["bot"](built, parser.parse_args(["bot"])) == 0 and ran == [built]
