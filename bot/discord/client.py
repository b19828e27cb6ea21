"""The citebot Discord client: a commands.Bot (or AutoShardedBot) whose setup_hook loads one cog per feature."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.errors import NO_MENTIONS, NOT_SERVED, NotServed, report
from index.config import ConfigError

log = logging.getLogger("citebot.discord")
EXTENSIONS = ("bot.discord.cogs.ask", "bot.discord.cogs.library", "bot.discord.cogs.admin")
OPTIONAL_EXTENSIONS = ("bot.discord.cogs.summary",)  # loaded when the module exists
T = TypeVar("T")


def ask_channel_ids(cfg: Any) -> frozenset[int]:
    """bot.ask_channels as channel ids; ConfigError naming the key for anything that is not one."""
    ids = set()
    for value in cfg.bot.ask_channels:
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit():
            raise ConfigError(f"config: bot.ask_channels contains {value!r}; expected channel ids "
                              "(numbers such as 123456789012345678)")
        ids.add(int(text))
    return frozenset(ids)


def intents_for(cfg: Any) -> discord.Intents:
    """Only what the bot uses: guilds and guild messages, plus message content when ask-channels are configured."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = bool(ask_channel_ids(cfg))
    return intents


SERVERS_ONLY = "⚠️ I only answer in servers (direct messages are turned off by the bot's owner: bot.allow_dms)."


def restrict_to_servers(tree: app_commands.CommandTree) -> None:
    """Register every command of `tree` for servers only (no DMs, no group DMs) when bot.allow_dms is off."""
    tree.allowed_contexts = app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False)
    for command in tree.get_commands():
        if isinstance(command, (app_commands.Command, app_commands.Group)):
            command.guild_only = True  # dm_permission: false, for clients that predate contexts


class CitebotTree(app_commands.CommandTree):
    """The command tree: every command error becomes one ephemeral line (and a logged traceback if it is a bug)."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Outside a server, with bot.allow_dms off: refuse (a command still registered with DMs allowed, or a
        client that ignores contexts); an autocomplete there gets no choices."""
        if interaction.guild_id is not None or self.client.cfg.bot.allow_dms:
            return True
        if interaction.type is discord.InteractionType.application_command and not interaction.response.is_done():
            await interaction.response.send_message(SERVERS_ONLY, ephemeral=True, allowed_mentions=NO_MENTIONS)
        elif interaction.type is discord.InteractionType.autocomplete and not interaction.response.is_done():
            await interaction.response.autocomplete([])
        return False

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Report a command's error to its user (and a bug to the log)."""
        await report(interaction, error)


class _Citebot:
    """What both client classes share: configuration, knowledge base, cogs and event handlers."""

    def __init__(self, cfg: Any, kb: Any, **options: Any):
        factory = options.pop("library_factory", None)  # tests: (config, like) -> knowledge base
        options.setdefault("intents", intents_for(cfg))
        super().__init__(command_prefix=commands.when_mentioned, help_command=None, tree_cls=CitebotTree,
                         allowed_mentions=NO_MENTIONS, **options)
        self.cfg = cfg
        self.kb = kb  # the default library (None: made on first use)
        from index.libraries import Libraries
        self.libraries = Libraries(cfg, kb, factory=factory)
        self.ask_channels = ask_channel_ids(cfg)
        # the knowledge base's work runs on a small pool of its own: a burst of questions on the default
        # executor's many threads fights the event loop for the GIL (measured: 269 ms stalls with 200 at once; SECURITY.md, "Load")
        self.pool = ThreadPoolExecutor(max_workers=cfg.bot.workers, thread_name_prefix="citebot-kb")

    def kb_for(self, guild_id: int | None) -> Any:
        """The library of server `guild_id` (None: a direct message); NotServed when it has none."""
        kb = self.libraries.get(guild_id)
        if kb is None:
            raise NotServed(NOT_SERVED)
        if kb is not self.kb and not getattr(kb, "ready", True):
            kb.warm_up()  # a server library loaded just now: its index opens in the background
        return kb

    async def offload(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on the bot's worker pool, awaited without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    def start_watching(self) -> asyncio.Task:
        """bot.watch: rebuild each library (the default one, and every mapped server's) when its folder changes."""
        from index.libraries import library_config
        from index.watch import watch_libraries
        folders: dict = {}
        for guild_id in self.cfg.servers.libraries:
            folders.setdefault(library_config(self.cfg, guild_id).docs_dir,
                               functools.partial(self.libraries.get, guild_id))
        if self.cfg.servers.default != "none":
            folders.setdefault(self.cfg.docs_dir, lambda: self.libraries.default)
        self._watch_stop = asyncio.Event()
        self.watcher = asyncio.create_task(watch_libraries(folders, self.cfg.bot.watch_debounce_ms,
                                                           self._watch_stop))
        return self.watcher

    async def close(self) -> None:
        """Finish saving the latest answers (their buttons must work after the restart), disconnect, then let the
        worker pool go (work under way finishes; queued work is dropped)."""
        answers = getattr(self, "answers", None)
        if answers is not None:
            await answers.flush()
        watcher = getattr(self, "watcher", None)
        if watcher is not None:
            self._watch_stop.set()
            await asyncio.gather(watcher, return_exceptions=True)
        await super().close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def setup_hook(self) -> None:
        """Start loading the model in the background (the bot connects meanwhile), load the cogs, and sync the
        command tree only when bot.sync_on_start says so."""
        warm_up = getattr(self.kb, "warm_up", None)
        if warm_up is not None:
            warm_up()  # a daemon thread; questions get a "warming up" reply until it is done
        for name in EXTENSIONS:
            await self.load_extension(name)
        for name in OPTIONAL_EXTENSIONS:
            if importlib.util.find_spec(name) is not None:
                await self.load_extension(name)
        if not self.cfg.bot.allow_dms:
            restrict_to_servers(self.tree)
        if self.cfg.bot.watch:
            self.start_watching()
        if self.cfg.bot.sync_on_start:
            synced = await self.tree.sync()
            log.info("synced %d slash commands globally (bot.sync_on_start)", len(synced))

    async def on_ready(self) -> None:
        """Log the connection (never the token)."""
        log.info("connected as %s (id %s) to %d servers", self.user, self.user.id, len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        """Prefix commands are not used: the cogs' listeners handle messages."""


class CitebotBot(_Citebot, commands.Bot):
    """citebot on one gateway connection."""


class ShardedCitebotBot(_Citebot, commands.AutoShardedBot):
    """citebot on as many shards as Discord recommends (bot.sharded = true)."""


def create_bot(cfg: Any, kb: Any, **options: Any) -> commands.Bot:
    """A new client for `cfg` answering from `kb` (options go to discord.py, e.g. guild_ready_timeout)."""
    cls = ShardedCitebotBot if cfg.bot.sharded else CitebotBot
    return cls(cfg, kb, **options)
