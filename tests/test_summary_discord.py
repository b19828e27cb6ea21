"""/summary and /timeline: command callbacks called directly with stand-in interactions, and the pure renderers."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import AsyncMock, MagicMock

import discord

from bot.discord.cogs.summary import SummaryCog, report_choices, summary_embed, timeline_embed, topic_embed
from bot.discord.errors import NO_MENTIONS
from index.config import load_config
from index.summarize import Sentence, Summary, Timeline, TimelineEntry, TopicGroup, TopicSummary

ROOT = Path(__file__).resolve().parent.parent
REINSPECTION = "2018_hmicfrs-crime-data-integrity-reinspection-press-release.txt"


def make_cog(kb) -> SummaryCog:
    cfg = load_config(ROOT / "config.toml", env={})
    cfg.bot.cooldown_seconds = 0.0
    return SummaryCog(SimpleNamespace(cfg=cfg, kb=kb, user=SimpleNamespace(id=900),
                                      offload=asyncio.to_thread))


def interaction():
    """A stand-in discord.Interaction: defer and send are AsyncMocks; is_done() follows them."""
    it = MagicMock(spec=discord.Interaction)
    it.id, it.type, it.command = 1, discord.InteractionType.application_command, None
    it.user = SimpleNamespace(id=901)
    state = SimpleNamespace(done=False, type=None)

    async def defer(thinking: bool = False, ephemeral: bool = False):
        state.done, state.type = True, discord.InteractionResponseType.deferred_channel_message

    async def send_message(*args, **kwargs):
        state.done = True

    response = MagicMock()
    response.defer = AsyncMock(side_effect=defer)
    response.send_message = AsyncMock(side_effect=send_message)
    type(response).type = property(lambda self: state.type)
    response.is_done = lambda: state.done
    it.response = response
    it.followup = MagicMock()
    it.followup.send = AsyncMock()
    it.delete_original_response = AsyncMock()
    return it


def sent(it) -> dict:
    call = it.followup.send.await_args
    return {"content": call.args[0] if call.args else call.kwargs.get("content"), **call.kwargs}


async def test_summary_of_a_report_defers_then_sends_numbered_quotes(kb):
    cog = make_cog(kb)
    it = interaction()
    await SummaryCog.summary.callback(cog, it, report="re-inspection", length=5)
    it.response.defer.assert_awaited_once()
    out = sent(it)
    embed = out["embed"]
    assert out["allowed_mentions"] is NO_MENTIONS and len(embed) <= 6000
    assert "[1]" in embed.description and "inadequate" in embed.description and "8,300" in embed.description
    assert REINSPECTION in embed.fields[0].value and embed.fields[0].value.startswith("2018 · ")  # dated by its name
    assert embed.fields[1].name == "Where" and "[1] line" in embed.fields[1].value


def refused(it) -> dict:
    """The one private line sent at once, without a public "thinking…" first."""
    it.response.defer.assert_not_awaited()
    call = it.response.send_message.await_args
    assert call.kwargs["ephemeral"]
    return {"content": call.args[0] if call.args else call.kwargs.get("content"), **call.kwargs}


async def test_summary_bad_input_is_one_ephemeral_line(kb):
    cog = make_cog(kb)
    it = interaction()
    await SummaryCog.summary.callback(cog, it, report="news")
    assert "matches 2 documents" in refused(it)["content"]
    it = interaction()
    await SummaryCog.summary.callback(cog, it, report="../config.toml")
    assert "outside the docs folder" in refused(it)["content"]
    it = interaction()
    await SummaryCog.summary.callback(cog, it, report="x", topic="y")
    assert it.response.send_message.await_args.kwargs["ephemeral"]
    it = interaction()
    await SummaryCog.summary.callback(cog, it)
    assert "Choose a report" in it.response.send_message.await_args.args[0]


async def test_summary_of_an_unknown_report_is_refused_with_choices_and_keeps_the_cooldown(kb):
    cog = make_cog(kb)
    cog.cooldowns.seconds = 60.0
    for name in ("annual report 2020", "no such report xyz"):  # each summarised an unrelated article before
        it = interaction()
        await SummaryCog.summary.callback(cog, it, report=name)
        text = refused(it)["content"]
        assert text.startswith(f"⚠️ no indexed document matches '{name}'; did you mean: ") and text.count(".txt") <= 5
    it = interaction()
    await SummaryCog.summary.callback(cog, it, report="re-inspection")
    it.response.defer.assert_awaited_once()  # the refusals did not cost the member their turn


async def test_a_topic_without_words_is_refused_at_once(kb):
    cog = make_cog(kb)
    it = interaction()
    await SummaryCog.timeline.callback(cog, it, topic=" ?? ")
    assert refused(it)["content"].startswith("⚠️ please ask a question in words")
    it = interaction()
    await SummaryCog.summary.callback(cog, it, topic="…")
    assert refused(it)["content"].startswith("⚠️ please ask a question in words")


async def test_topic_summary_and_timeline(kb):
    cog = make_cog(kb)
    it = interaction()
    await SummaryCog.summary.callback(cog, it, topic="crime recording")
    embed = sent(it)["embed"]
    assert embed.title == "Summary: crime recording" and embed.fields and "[1]" in embed.fields[0].value
    it = interaction()
    await SummaryCog.timeline.callback(cog, it, topic="crime recording")
    embed = sent(it)["embed"]
    names = [f.name for f in embed.fields]
    assert names[0].startswith("2017-") and names[-1].startswith("2018 · ")  # the 2018 release: a year only
    assert "listed last" not in embed.footer.text and len(embed) <= 6000
    it = interaction()
    await SummaryCog.timeline.callback(cog, it, topic="public contact")
    embed = sent(it)["embed"]
    names = [f.name for f in embed.fields]
    assert names[0].startswith("2017-") and names[-1].startswith("undated")  # the PEEL article has no date
    assert "listed last" in embed.footer.text and len(embed) <= 6000


async def test_report_autocomplete_is_fuzzy_and_at_most_25(kb):
    cog = make_cog(kb)
    choices = await SummaryCog.report_autocomplete(cog, interaction(), "reinspectoin")
    assert choices[0].value == REINSPECTION and len(choices) <= 25
    docs = [SimpleNamespace(doc=f"r{i}.txt", title=f"Report {i} " + "x" * 120, date=dt.date(2020, 1, 1))
            for i in range(40)]
    choices = report_choices(docs)
    assert len(choices) == 25 and all(len(c.name) <= 100 and len(c.value) <= 100 for c in choices)


async def test_work_runs_off_the_event_loop():
    loop_thread = threading.get_ident()
    seen = []

    class KB:
        def timeline(self, topic):
            seen.append(threading.get_ident())
            return Timeline(topic, [])

    it = interaction()
    await SummaryCog.timeline.callback(make_cog(KB()), it, topic="anything")
    assert seen and seen[0] != loop_thread
    assert "No document speaks" in sent(it)["embed"].description


def test_renderers_stay_within_discord_limits():
    long = "word " * 400 + "**bold** @everyone [link](http://x)"
    s = Summary("a.txt", "T" * 400, None, None, [Sentence(long, 0, 1, "lines 1–2" * 30) for _ in range(50)], 50,
                False, elapsed_ms=3)
    for embed in (summary_embed(s),
                  topic_embed(TopicSummary("t" * 300, [TopicGroup(f"d{i}.txt", "T" * 300, dt.date(2017, 1, 1), None,
                                                                  [Sentence(long, 0, 1, "line 1")] * 3)
                                                       for i in range(30)])),
                  timeline_embed(Timeline("t", [TimelineEntry(None, "d.txt", "T" * 300, None, long, "line 1", 0, 1)
                                                for _ in range(30)]))):
        assert len(embed) <= 6000 and len(embed.fields) <= 25 and len(embed.title) <= 256
        assert len(embed.description or "") <= 4096
        assert all(len(f.value) <= 1024 and len(f.name) <= 256 for f in embed.fields)
        assert "**bold**" not in (embed.description or "") + "".join(f.value for f in embed.fields)  # escaped
