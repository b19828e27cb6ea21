"""Shared fixtures: the real model (loaded once) and a real index of docs/ built in a temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def make_config(docs: Path, index: Path, **sections):
    """A Config for `docs` and `index` with the project's defaults, and section overrides like retrieval={...}."""
    from index.config import load_config
    cfg = load_config(ROOT / "config.toml", env={})
    cfg.paths.docs = str(docs)
    cfg.paths.index = str(index)
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    return cfg


@pytest.fixture(scope="session")
def embedder():
    from index.config import EmbeddingConfig
    from index.embedding import Embedder
    e = Embedder(EmbeddingConfig())
    e.model  # load once for the whole session
    return e


BACKENDS = ("faiss", "milvus")  # store.backend values; milvus runs Milvus Lite in a file of the temporary index
_LIBRARIES: dict = {}


def library(backend: str, embedder, tmp_path_factory):
    """A KnowledgeBase over a copy of docs/ in the store `backend`, built once per session (read-only)."""
    if backend not in _LIBRARIES:
        from index.kb import KnowledgeBase
        base = tmp_path_factory.mktemp(f"kb-{backend}")
        docs = base / "docs"
        shutil.copytree(DOCS, docs)
        knowledge = KnowledgeBase(make_config(docs, base / "index", store={"backend": backend}), embedder=embedder)
        knowledge.build()
        _LIBRARIES[backend] = knowledge
    return _LIBRARIES[backend]


@pytest.fixture(scope="session")
def kb(embedder, tmp_path_factory):
    """A KnowledgeBase over a copy of docs/, built once per session (treat it as read-only)."""
    return library("faiss", embedder, tmp_path_factory)


@pytest.fixture(scope="session", params=BACKENDS)
def store_kb(request, embedder, tmp_path_factory):
    """`kb`, once with each store backend (a test module takes it by defining `kb` as this fixture)."""
    return library(request.param, embedder, tmp_path_factory)


@pytest.fixture
def docs_copy(tmp_path):
    """A private, writable copy of docs/."""
    target = tmp_path / "docs"
    shutil.copytree(DOCS, target)
    return target
