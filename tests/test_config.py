"""Configuration: defaults, environment overrides, and errors that name the key."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from index.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_project_config_loads_with_every_section():
    cfg = load_config(ROOT / "config.toml", env={})
    assert cfg.docs_dir == ROOT / "docs"
    assert cfg.embedding.model == "all-MiniLM-L6-v2" and cfg.chunking.max_tokens == 200


def test_environment_overrides(tmp_path):
    cfg = load_config(ROOT / "config.toml", env={"CITEBOT_RETRIEVAL_TOP_K": "8", "CITEBOT_PATHS_DOCS": str(tmp_path),
                                                 "CITEBOT_BOT_ASK_CHANNELS": "[123, 456]",
                                                 "CITEBOT_BOT_REINDEX_ROLE": "789",
                                                 "CITEBOT_RETRIEVAL_MIN_SCORE": "1"})
    assert cfg.retrieval.top_k == 8 and cfg.docs_dir == tmp_path
    assert cfg.bot.ask_channels == [123, 456] and cfg.bot.reindex_role == "789"
    assert cfg.retrieval.min_score == 1.0


@pytest.mark.parametrize("text, message", [
    ("[retrieval]\ntop_k = 'five'\n", "retrieval.top_k = 'five' is a str; expected int"),
    ("[retrieval]\nmode = 'magic'\n", "expected one of dense, bm25, hybrid"),
    ("[chunking]\nmax_tokens = 0\n", "chunking.max_tokens = 0; expected a number above 0"),
    ("[bot]\nuse_threads = 'yes'\n", "bot.use_threads"),
    ("[vectors]\nef_search = -1\n", "vectors.ef_search = -1; expected 0 (by the index's size) or a search depth"),
    ("[paths\n", "not valid TOML"),
    ("[retrieval]\ntop_k = 51\n", "retrieval.top_k = 51; expected 1 to 50"),
    ("[retrieval]\nreread = 17\n", "retrieval.reread = 17; expected 0 (off) or 2 to 16 sentences"),
    ("[retrieval]\nreread = 1\n", "retrieval.reread = 1; expected 0 (off) or 2 to 16 sentences"),
    ("[chunking]\nmax_tokens = 600\n", "chunking.max_tokens = 600; expected 1 to 510 (and at most what the model "
                                       "reads: 254 for all-MiniLM-L6-v2)"),
    ("[embedding]\nmodel = ''\n", "embedding.model = ''; expected a model name (e.g. all-MiniLM-L6-v2) or a "
                                  "model folder's path"),
    ("[embedding]\nmodel = '  '\n", "embedding.model = '  '; expected a model name"),
    ("[embedding]\ndevice = 'tpu'\n", "embedding.device = 'tpu'; expected cpu, cuda, cuda:N or mps"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, env={})


def test_bad_environment_value_names_the_key():
    with pytest.raises(ConfigError, match="embedding.batch_size"):
        load_config(ROOT / "config.toml", env={"CITEBOT_EMBEDDING_BATCH_SIZE": "lots"})


def test_unknown_keys_are_warned_not_fatal(tmp_path, caplog):
    path = tmp_path / "c.toml"
    path.write_text("[retrieval]\ntop_kk = 3\n[extras]\nx = 1\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(path, env={})
    assert cfg.retrieval.top_k == 5
    assert "retrieval.top_kk" in caplog.text and "[extras]" in caplog.text


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "mps"])
def test_devices_accepted(tmp_path, device):
    path = tmp_path / "c.toml"
    path.write_text(f"[embedding]\ndevice = '{device}'\n")
    assert load_config(path, env={}).embedding.device == device


def test_chunks_longer_than_the_model_reads_are_refused_before_building(tmp_path, embedder):
    """max_seq_length 256 of the default model, less its two special tokens: 254 word pieces per passage."""
    from conftest import make_config
    from index.kb import KnowledgeBase, UserError
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Some text about parking.\n")
    cfg = make_config(tmp_path / "docs", tmp_path / "index", chunking={"max_tokens": 300})
    with pytest.raises(UserError, match=re.escape("config: chunking.max_tokens = 300 is more than model "
                                                  "all-MiniLM-L6-v2 reads (254 word pieces besides its 2 special "
                                                  "tokens); expected 1 to 254")):
        KnowledgeBase(cfg, embedder=embedder).build()
    assert not (tmp_path / "index").exists()


def test_store_backend_and_milvus_keys(tmp_path, monkeypatch):
    cfg = load_config(ROOT / "config.toml", env={})
    assert cfg.store.backend == "faiss" and cfg.milvus_uri == str(cfg.index_dir / "milvus.db")
    cfg = load_config(ROOT / "config.toml", env={"CITEBOT_STORE_BACKEND": "milvus",
                                                 "CITEBOT_MILVUS_URI": "http://milvus.internal:19530",
                                                 "CITEBOT_MILVUS_COLLECTION": "reports_2024"})
    assert cfg.store.backend == "milvus" and cfg.milvus_uri == "http://milvus.internal:19530"
    assert cfg.milvus.collection == "reports_2024"
    cfg = load_config(ROOT / "config.toml", env={"CITEBOT_MILVUS_URI": "data/lib.db"})
    assert cfg.milvus_uri == str(ROOT / "data" / "lib.db")
    # the token comes from the environment variable named in config, or from a file; never from config itself
    monkeypatch.setenv("MILVUS_TOKEN", "root:Milvus")
    assert cfg.milvus_token() == "root:Milvus"
    monkeypatch.delenv("MILVUS_TOKEN")
    (tmp_path / "token").write_text("secret-key\n")
    cfg.milvus.token_file = str(tmp_path / "token")
    assert cfg.milvus_token() == "secret-key"
    cfg.milvus.token_file = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="milvus.token_file = .*cannot be read"):
        cfg.milvus_token()


@pytest.mark.parametrize("env, message", [
    ({"CITEBOT_STORE_BACKEND": "qdrant"}, "store.backend = 'qdrant'; expected one of faiss, milvus"),
    ({"CITEBOT_MILVUS_URI": "grpc://h:19530"}, "milvus.uri = 'grpc://h:19530'; expected a file path (Milvus Lite)"
                                               " or an http(s):// URL"),
    ({"CITEBOT_MILVUS_COLLECTION": "my-lib"}, "milvus.collection = 'my-lib'; expected a Milvus name"),
    ({"CITEBOT_MILVUS_REFRESH_SECONDS": "-1"}, "milvus.refresh_seconds = -1.0; expected 0"),
    ({"CITEBOT_MILVUS_LEASE_SECONDS": "1"}, "milvus.lease_seconds = 1.0; expected 5 to 3600 seconds"),
])
def test_bad_store_values_name_the_key(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "config.toml", env=env)


def test_a_token_in_the_milvus_url_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "config.toml", env={"CITEBOT_MILVUS_URI": "https://root:s3cret@milvus.internal:19530"})
    assert "milvus.uri holds credentials" in str(info.value) and "s3cret" not in str(info.value)
