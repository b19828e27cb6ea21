"""Load: the real discord.py client, connected to the local Discord stand-in, answering from the real index of docs/.

- 200 /ask interactions delivered at once are all deferred and all answered with an embed;
- meanwhile the event loop keeps turning (a monitor measures how late its 50 ms sleeps wake) and the gateway
  heartbeat keeps being sent and acknowledged, on the one connection it started with;
- memory stays flat over 2,000 questions.

The figures are printed (`pytest -m slow -s`) and written to /tmp/citebot-load.json. The bounds asserted are
generous sanity limits, not benchmarks: the figures themselves are the result.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest

from bot.discord import create_bot
from discord_standin import MEMBER_PERMISSIONS, DiscordStandIn, User

pytestmark = pytest.mark.slow

RESULTS = Path("/tmp/citebot-load.json")
FIGURES: dict[str, Any] = {}
LIVE_VIEWS = 200
HEARTBEAT_MS = 500          # the HELLO interval the stand-in announces (Discord's is ~41 s)
QUESTIONS = [
    "How was Leicestershire Police rated for public contact?",
    "How many crimes were not recorded?",
    "What did the 2018 reinspection find about crime data integrity?",
    "Was the force's effectiveness rated as requiring improvement?",
    "What share of crimes went unrecorded?",
    "How did the police respond to reports of rape?",
    "When was the force last inspected?",
    "What did the news say about crime recording in September 2017?",
]
_PATH = re.compile(r"/(?:interactions/\d+|webhooks/\d+)/(itoken-[^/]+)(?:/callback)?")


def rss_mb() -> float:
    """This process's resident set size in MB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def record(**figures: Any) -> None:
    """Print figures and merge them into the JSON results file."""
    FIGURES.update(figures)
    for key, value in figures.items():
        print(f"  {key}: {value}")
    RESULTS.write_text(json.dumps(FIGURES, indent=2, sort_keys=True))


class LagMonitor:
    """A task that sleeps 50 ms in a loop and records how late it wakes (the event loop's lag), and the
    client's heartbeat latency as it goes."""

    def __init__(self, bot: Any, period: float = 0.05):
        self.bot, self.period = bot, period
        self.max_lag = 0.0
        self.lags: list[float] = []
        self.max_latency = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.period)
            lag = time.perf_counter() - start - self.period
            self.lags.append(lag)
            self.max_lag = max(self.max_lag, lag)
            latency = self.bot.latency
            if math.isfinite(latency):
                self.max_latency = max(self.max_latency, latency)

    def __enter__(self) -> "LagMonitor":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()


def client(kb: Any, **bot_settings: Any):
    cfg = copy.deepcopy(kb.cfg)
    cfg.bot.cooldown_seconds = 0.0  # each asker is a distinct member too
    for key, value in bot_settings.items():
        setattr(cfg.bot, key, value)
    return create_bot(cfg, kb, guild_ready_timeout=0.05)


def askers(first: int, count: int) -> list[User]:
    return [User(1200000000000000000 + i, f"asker-{i}", permissions=MEMBER_PERMISSIONS)
            for i in range(first, first + count)]


async def ask_all(standin: DiscordStandIn, users: list[User], timeout: float = 180) -> dict[str, Any]:
    """Deliver one /ask per user at once; wait until each is deferred and followed up; the calls seen."""
    tokens, sent_at = [], time.monotonic()
    for i, user in enumerate(users):
        it = await standin.slash("ask", {"question": QUESTIONS[i % len(QUESTIONS)]}, user=user)
        tokens.append(it.token)
        await asyncio.sleep(0)  # events arrive from the network one by one; do not hog the loop delivering them
    wanted = set(tokens)
    deferred: dict[str, float] = {}   # token → seconds from the first event to its deferral (±20 ms)
    answered: dict[str, dict] = {}
    seen, deadline = 0, time.monotonic() + timeout
    while (len(deferred) < len(wanted) or len(answered) < len(wanted)) and time.monotonic() < deadline:
        calls = standin.calls
        for call in calls[seen:]:
            match = _PATH.fullmatch(call.path)
            if call.method != "POST" or not match or match.group(1) not in wanted:
                continue
            token = match.group(1)
            if call.path.endswith("/callback") and call.json == {"type": 5}:
                deferred.setdefault(token, time.monotonic() - sent_at)
            elif call.path.startswith("/webhooks/") and call.json.get("embeds"):
                answered[token] = call.json
        seen = len(calls)
        await asyncio.sleep(0.02)
    return {"deferred": deferred, "answered": answered, "wanted": wanted}


def forget(standin: DiscordStandIn) -> None:
    """Drop what the stand-in recorded, so that its own memory does not count as the bot's."""
    standin.calls.clear()
    standin.messages.clear()
    standin._originals.clear()
    standin._where.clear()


@pytest.fixture
async def standin():
    async with DiscordStandIn(heartbeat_interval=HEARTBEAT_MS) as server:
        yield server
        assert not server.unhandled, f"calls the stand-in could not answer: {server.unhandled[:5]}"


async def test_200_concurrent_asks_are_all_answered_without_stalling_the_loop_or_the_heartbeat(standin, kb):
    async with standin.running(client(kb)) as bot:
        assert await asyncio.to_thread(kb.wait_ready, 120)
        await asyncio.sleep(1.5)  # let a few heartbeats go by first
        beats_before = len(standin.heartbeats)
        assert beats_before >= 1, "no heartbeat before the burst"
        gc.collect()
        rss_before = rss_mb()
        with LagMonitor(bot) as monitor:
            start = time.perf_counter()
            seen = await ask_all(standin, askers(0, 200))
            wall = time.perf_counter() - start
            await asyncio.sleep(1.0)  # and a heartbeat or two after it
        gc.collect()
        rss_after = rss_mb()
        beats = standin.heartbeats[beats_before - 1:]
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        record(concurrent_asks=200, concurrent_deferred=len(seen["deferred"]),
               concurrent_answered=len(seen["answered"]), concurrent_wall_s=round(wall, 2),
               concurrent_questions_per_s=round(200 / wall, 1), max_loop_lag_ms=round(monitor.max_lag * 1000, 1),
               mean_loop_lag_ms=round(1000 * sum(monitor.lags) / max(1, len(monitor.lags)), 2),
               heartbeats_during_burst=len(beats) - 1, heartbeat_interval_ms=HEARTBEAT_MS,
               max_heartbeat_gap_ms=round(1000 * max(gaps, default=0), 1),
               max_heartbeat_latency_ms=round(monitor.max_latency * 1000, 1),
               latency_after_ms=round(bot.latency * 1000, 1), gateway_connections=len(standin.identify),
               max_time_to_deferral_s=round(max(seen["deferred"].values(), default=0), 2),
               concurrent_rss_before_mb=round(rss_before, 1), concurrent_rss_after_mb=round(rss_after, 1))

        assert set(seen["deferred"]) == seen["wanted"], f"{200 - len(seen['deferred'])} of 200 never deferred"
        assert set(seen["answered"]) == seen["wanted"], f"{200 - len(seen['answered'])} of 200 never answered"
        assert all(body["embeds"][0]["fields"] and body["allowed_mentions"] == {"parse": []}
                   for body in seen["answered"].values())
        assert max(seen["deferred"].values()) < 3.0  # Discord's deadline for acknowledging an interaction
        assert monitor.max_lag < 0.25, f"the event loop stalled {monitor.max_lag * 1000:.0f} ms"
        # the heartbeat kept going at its interval, was acknowledged, and the client never reconnected
        assert len(beats) - 1 >= int(wall / (HEARTBEAT_MS / 1000)) - 1
        assert max(gaps, default=0) < 3 * HEARTBEAT_MS / 1000
        assert math.isfinite(bot.latency) and bot.latency < 1.0
        assert monitor.max_latency < 1.0  # ≈ one interval at worst: discord.py notes the send time after the ack may land
        assert len(standin.identify) == 1 and len(standin._sockets) == 1 and not bot.is_closed()


async def test_memory_stays_flat_over_2000_questions(standin, kb):
    """No leak, and a bound: with the default button timeout (600 s) every answer's view, and the Answer it
    holds (about 50 KB, measured), would live on for 10 minutes, so 2,000 questions in half a minute grew RSS by
    ~85 MB before bot.max_live_views; with the cap (200 here, so that it fills in the second batch) the oldest
    answers' buttons expire early and memory stays flat past it."""
    batches, size = 20, 100
    rss: dict[int, float] = {}
    async with standin.running(client(kb, max_live_views=LIVE_VIEWS)) as bot:
        assert await asyncio.to_thread(kb.wait_ready, 120)
        start = time.perf_counter()
        rss[0] = rss_mb()
        for batch in range(1, batches + 1):
            seen = await ask_all(standin, askers(batch * size, size))
            assert len(seen["answered"]) == size, f"batch {batch}: {size - len(seen['answered'])} unanswered"
            forget(standin)
            gc.collect()
            rss[batch] = rss_mb()
        wall = time.perf_counter() - start
        views = len(bot._connection._view_store._views)
    growth = rss[batches] - rss[2]
    record(memory_questions=batches * size, memory_wall_s=round(wall, 1),
           memory_questions_per_s=round(batches * size / wall, 1), rss_start_mb=round(rss[0], 1),
           rss_after_batch_2_mb=round(rss[2], 1), rss_after_2000_mb=round(rss[batches], 1),
           rss_growth_mb=round(growth, 1), rss_by_batch_mb=[round(rss[b], 1) for b in range(batches + 1)],
           live_answer_views=views, max_live_views=LIVE_VIEWS,
           view_timeout_s=bot.cfg.bot.view_timeout_seconds)
    assert views <= LIVE_VIEWS + 5  # + the few a batch's last greying-out edits may still hold
    assert growth < 50, f"RSS grew {growth:.1f} MB between question 200 and question 2,000"


async def test_an_upload_indexed_during_a_burst_of_questions_does_not_stall_the_loop(standin, embedder, tmp_path):
    """/upload of a ~150 KB document (about 200 passages to chunk and embed) while 100 questions arrive: the
    build runs on a thread of its own, so the event loop keeps turning and every question is answered."""
    import shutil
    from conftest import DOCS, make_config
    from discord_standin import ADMIN
    from index.kb import KnowledgeBase
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    kb = KnowledgeBase(make_config(docs, tmp_path / "index"), embedder=embedder)
    await asyncio.to_thread(kb.build)
    paragraph = ("The committee reviewed the harbour accounts for the year {n} and found that maintenance of the "
                 "northern pier cost {m} thousand pounds more than planned, mostly for timber and labour. ")
    text = "\n\n".join(paragraph.format(n=1900 + i % 120, m=i) * 3 for i in range(250)).encode()
    async with standin.running(client(kb)) as bot:
        assert await asyncio.to_thread(kb.wait_ready, 120)
        with LagMonitor(bot) as monitor:
            start = time.perf_counter()
            upload = await standin.slash("upload", {"file": standin.attachment("harbour-accounts.txt", text)},
                                         user=ADMIN)
            seen = await ask_all(standin, askers(5000, 100))
            done = await standin.wait_for("PATCH", f"{upload.webhook_path}/messages/@original", timeout=300,
                                          predicate=lambda c: "✅" in (c.json or {}).get("content", ""))
            wall = time.perf_counter() - start
    record(upload_bytes=len(text), upload_questions=100, upload_answered=len(seen["answered"]),
           upload_wall_s=round(wall, 2), upload_max_loop_lag_ms=round(monitor.max_lag * 1000, 1),
           upload_mean_loop_lag_ms=round(1000 * sum(monitor.lags) / max(1, len(monitor.lags)), 2),
           upload_reply=done.json["content"].splitlines()[-1][:120])
    assert "harbour-accounts.txt" in done.json["content"] and "1 added" in done.json["content"]
    assert set(seen["answered"]) == seen["wanted"]
    assert monitor.max_lag < 0.25, f"the event loop stalled {monitor.max_lag * 1000:.0f} ms"
