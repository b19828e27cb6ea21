"""The library each Discord server answers from: [servers.<guild id>] maps a server to its own documents folder
and index; other servers (and direct messages) use the default library, or none when servers.default = "none".
Server libraries are loaded on first use and let go, least recently used first, past servers.max_loaded."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from index.config import Config, PathsConfig

log = logging.getLogger(__name__)


def library_config(cfg: Config, guild_id: int) -> Config:
    """`cfg` with the paths of server `guild_id`'s own library (it must be mapped in cfg.servers.libraries), and,
    for the Milvus store, its own collections (`library_collection`)."""
    lib = cfg.servers.libraries[guild_id]
    out = copy.copy(cfg)
    out.paths = PathsConfig(docs=lib.docs, index=lib.index)
    out.milvus = dataclasses.replace(cfg.milvus, collection=library_collection(cfg.milvus.collection, lib.index))
    return out


def library_collection(prefix: str, index: str) -> str:
    """The Milvus alias of the library whose index folder is configured as `index`: the prefix, the folder as a
    name and a hash of it, so that libraries sharing one Milvus server never share collections, servers mapped to
    one index share its library, and every process reading the same config.toml finds the same alias."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", index).strip("_")[:40]
    return f"{prefix}_{slug}_{hashlib.sha1(index.encode()).hexdigest()[:8]}"


class Libraries:
    """Knowledge bases by server: `get(guild_id)` is the server's own library, the default one, or None."""

    def __init__(self, cfg: Config, default: Any = None, factory: Callable[[Config, Any], Any] | None = None):
        self.cfg = cfg
        self._default = default
        self._factory = factory or self._knowledge_base
        self._loaded: OrderedDict[Path, Any] = OrderedDict()  # by index folder: servers may share a library
        self._lock = threading.Lock()

    @property
    def default(self) -> Any:
        """The default library ([paths]), made on first use."""
        with self._lock:
            if self._default is None:
                self._default = self._factory(self.cfg, None)
            return self._default

    def _knowledge_base(self, cfg: Config, like: Any) -> Any:
        from index.kb import KnowledgeBase
        return KnowledgeBase(cfg, embedder=getattr(like, "embedder", None))  # one model for every library

    def serves(self, guild_id: int | None) -> bool:
        """True if the server (None: a DM) has a library to answer from."""
        return guild_id in self.cfg.servers.libraries or self.cfg.servers.default != "none"

    def get(self, guild_id: int | None) -> Any:
        """The knowledge base of server `guild_id` (None: a direct message), or None when it is not served."""
        if guild_id not in self.cfg.servers.libraries:
            return self.default if self.cfg.servers.default != "none" else None
        cfg = library_config(self.cfg, guild_id)
        where = cfg.index_dir
        with self._lock:
            kb = self._loaded.get(where)
            if kb is not None:
                self._loaded.move_to_end(where)
                return kb
            like = self._default or next(iter(self._loaded.values()), None)  # whose model to share
            kb = self._factory(cfg, like)
            self._loaded[where] = kb
            log.info("library of server %s loaded (%s)", guild_id, cfg.docs_dir)
            self._evict()
            return kb

    def _evict(self) -> None:
        """Let the least recently used libraries go past servers.max_loaded (never one that is building)."""
        for where in list(self._loaded):
            if len(self._loaded) <= self.cfg.servers.max_loaded:
                return
            kb = self._loaded[where]
            if getattr(kb, "building", False):
                continue
            del self._loaded[where]
            answers = getattr(kb, "answers", None)
            if answers is not None:
                answers.close()
            log.info("library %s let go (servers.max_loaded = %d)", where, self.cfg.servers.max_loaded)

    def loaded(self) -> list[Path]:
        """Index folders of the server libraries in memory, least recently used first."""
        with self._lock:
            return list(self._loaded)
