"""The store seam: which index root (and so which snapshots) a configuration uses."""

from __future__ import annotations

from index.store import IndexRoot


def open_root(cfg) -> IndexRoot:
    """The index root of the configured store (store.backend): FAISS + SQLite builds in paths.index, or Milvus
    (`index.milvus_store.MilvusRoot`, which stages each build there and publishes it to Milvus)."""
    if cfg.store.backend == "milvus":
        from index.milvus_store import MilvusRoot
        return MilvusRoot(cfg)
    return IndexRoot(cfg.index_dir)
