"""Settings: config.toml, overridden by CITEBOT_<SECTION>_<KEY> environment variables."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


class ConfigError(ValueError):
    """A setting is missing, malformed or of the wrong type; the message names the key."""


@dataclass
class PathsConfig:
    docs: str = "docs"
    index: str = ".citebot/index"


@dataclass
class EmbeddingConfig:
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 32
    device: str = "cpu"
    backend: str = "onnx-int8"
    threads: int = 0                    # CPU threads for the model; 0: one per core


@dataclass
class ChunkingConfig:
    max_tokens: int = 200
    overlap_sentences: int = 1


@dataclass
class RetrievalConfig:
    top_k: int = 5
    mode: str = "hybrid"
    min_score: float = 0.0              # confidence cut; 0 = this index's own, calibrated at build time
    calibrate: bool = True              # calibrate the confidence cut of each build (index.calibration)
    answer_sentences: int = 2
    fusion: str = "convex"              # "convex" (weighted min-max scores) or "rrf" (reciprocal rank fusion)
    dense_weight: float = 0.5           # convex fusion: weight of the dense score (1 - it for BM25)
    rrf_k: int = 60                     # rrf fusion: the constant k in 1 / (k + rank)
    candidates: int = 50                # passages each ranking contributes before fusion
    duplicate_threshold: float = 0.5    # shared word 5-grams (of the shorter passage) that make a near-duplicate
    sentence_lexical_weight: float = 0.2  # answer sentences: weight of query-word overlap beside cosine
    reread: int = 5                     # close calls: the best N sentences read again word piece by word piece (0: off)


@dataclass
class VectorsConfig:
    """How chunk vectors are stored and searched (fixed at build time, recorded in the build)."""
    exact_below: int = 50000            # chunks: below this, exact search (flat); from it on, HNSW
    hnsw_m: int = 32                    # HNSW: links per vector (memory +8*M bytes per vector)
    ef_construction: int = 80           # HNSW: search depth while building (build time vs graph quality)
    ef_search: int = 0                  # HNSW: search depth per query (latency vs recall@10); 0: by size
    storage: str = "float32"            # "float32" or "float16" (half the memory, scores within ~1e-3)


@dataclass
class SummaryConfig:
    """Settings of summaries and timelines (the [summary] section of config.toml, when the config has one)."""
    sentences: int = 5                  # sentences in a document summary
    max_chars: int = 0                  # characters in a document summary (0: no limit besides `sentences`)
    diversity: float = 0.3              # MMR: weight of redundancy against centrality (0 to 1)
    fact_boost: float = 0.5             # lift of a sentence with a grade (x1) or a figure (x0.7)
    fact_gate: float = 0.25             # ... in full only from this centrality (0 to 1) on, less below it
    lead_weight: float = 0.1            # lift of a document's opening sentences (news leads)
    min_words: int = 5                  # shorter sentences (labels, "X said:") are not chosen
    topic_per_doc: int = 3              # sentences per document in a topic summary
    topic_docs: int = 8                 # documents in a topic summary
    timeline_per_doc: int = 2           # entries per document in a timeline
    timeline_entries: int = 20          # entries in a timeline
    candidates: int = 30                # passages retrieved for a topic before sentences are scored
    margin: float = 0.12                # a document's further sentences score within this of its best
    relative: float = 0.65              # a document speaks to a topic if its best sentence scores this share
                                        # of the best one overall (and reaches retrieval.min_score)


@dataclass
class StoreConfig:
    """Where the index lives: "faiss" (FAISS + SQLite files in paths.index) or "milvus" ([milvus])."""
    backend: str = "faiss"


@dataclass
class MilvusConfig:
    """The Milvus store (store.backend = "milvus"): Milvus Lite in a file, or a Milvus server by URL."""
    uri: str = ""                       # a file path (Milvus Lite; "": milvus.db in paths.index) or http(s)://host:port
    token_env: str = "MILVUS_TOKEN"     # environment variable holding the server's token ("user:password" or API key)
    token_file: str = ""                # or a file holding it (never the token itself in config.toml)
    collection: str = "citebot"         # prefix of this library's collections; the live one is the alias of this name
    refresh_seconds: float = 5.0        # a process checks the alias this often and serves a new build (0: every question)
    lease_seconds: float = 60.0         # a builder's lease in Milvus: renewed while it builds, taken over once it runs out


@dataclass
class BotConfig:
    token_file: str = ""
    ask_channels: list = field(default_factory=list)
    use_threads: bool = True
    reindex_role: str = ""
    cooldown_seconds: float = 10.0
    max_question_chars: int = 500
    sync_on_start: bool = False
    sharded: bool = False
    view_timeout_seconds: float = 600.0
    workers: int = 1
    max_live_views: int = 1000
    allow_dms: bool = False             # slash commands in direct messages (off: servers only)
    answers_kept: int = 2000            # answers whose buttons still work (after a restart too)
    max_upload_mb: float = 20.0         # largest file /upload accepts
    watch: bool = False                 # rebuild a library when files in its documents folder change
    watch_debounce_ms: int = 3000       # ... once the folder has been quiet this long


@dataclass
class ServerLibrary:
    """One server's own library ([servers.<guild id>] in config.toml)."""
    docs: str
    index: str


@dataclass
class ServersConfig:
    """Which library each Discord server answers from."""
    default: str = "default"            # unmapped servers (and DMs): "default" library, or "none" (refused)
    max_loaded: int = 4                 # server libraries kept loaded at once; the least recently used goes
    libraries: dict = field(default_factory=dict)  # guild id -> ServerLibrary


@dataclass
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    vectors: VectorsConfig = field(default_factory=VectorsConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    milvus: MilvusConfig = field(default_factory=MilvusConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    servers: ServersConfig = field(default_factory=ServersConfig)
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def docs_dir(self) -> Path:
        return (self.base_dir / self.paths.docs).resolve()

    @property
    def index_dir(self) -> Path:
        return (self.base_dir / self.paths.index).resolve()

    @property
    def milvus_uri(self) -> str:
        """milvus.uri as the client takes it: an http(s) URL as it is, a file path made absolute (Milvus Lite)."""
        uri = self.milvus.uri
        if uri.startswith(("http://", "https://")):
            return uri
        return str((self.index_dir / "milvus.db") if not uri else (self.base_dir / Path(uri).expanduser()).resolve())

    def milvus_token(self) -> str:
        """The Milvus server's token from the environment variable milvus.token_env or the file milvus.token_file
        ("" if neither is set). Never logged."""
        token = os.environ.get(self.milvus.token_env, "") if self.milvus.token_env else ""
        if not token and self.milvus.token_file:
            path = (self.base_dir / Path(self.milvus.token_file).expanduser())
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"config: milvus.token_file = {self.milvus.token_file!r} cannot be read "
                                  f"({exc.strerror}); expected a file holding the token") from None
        return token


_CHOICES = {
    ("retrieval", "mode"): ("dense", "bm25", "hybrid"),
    ("embedding", "backend"): ("torch", "onnx-int8"),
    ("retrieval", "fusion"): ("convex", "rrf"),
    ("vectors", "storage"): ("float32", "float16"),
    ("servers", "default"): ("default", "none"),
    ("store", "backend"): ("faiss", "milvus"),
}
MAX_TOP_K = 50            # passages per answer (the CLI's -k and the bot's option take the same range)
MAX_REREAD = 16  # sentences re-read word piece by word piece in one run of the model
MAX_CHUNK_TOKENS = 510    # no BERT-style model reads more than 512 word pieces with its two special tokens
_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")
_MILVUS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_POSITIVE = {("chunking", "max_tokens"), ("embedding", "batch_size"), ("retrieval", "top_k"),
             ("bot", "max_question_chars"), ("retrieval", "rrf_k"), ("retrieval", "candidates"),
             ("vectors", "hnsw_m"), ("vectors", "ef_construction"),
             ("summary", "sentences"), ("summary", "min_words"), ("summary", "topic_per_doc"),
             ("summary", "topic_docs"), ("summary", "timeline_per_doc"), ("summary", "timeline_entries"),
             ("summary", "candidates"), ("bot", "workers"), ("bot", "max_live_views"),
             ("bot", "answers_kept"), ("servers", "max_loaded"), ("bot", "max_upload_mb"),
             ("bot", "watch_debounce_ms")}
_UNIT = {("retrieval", "dense_weight"), ("retrieval", "duplicate_threshold"),
         ("retrieval", "sentence_lexical_weight"), ("summary", "diversity"), ("summary", "fact_gate"),
         ("summary", "relative"), ("summary", "margin")}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of `default`; returns the value or raises ConfigError."""
    name = f"{section}.{key}"
    expected = type(default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"config: {name} = {value!r} is a {type(value).__name__}; expected {expected.__name__}")
    if (section, key) in _CHOICES and value not in _CHOICES[(section, key)]:
        raise ConfigError(f"config: {name} = {value!r}; expected one of {', '.join(_CHOICES[(section, key)])}")
    if (section, key) in _POSITIVE and value <= 0:
        raise ConfigError(f"config: {name} = {value!r}; expected a number above 0")
    if (section, key) in _UNIT and not 0.0 <= value <= 1.0:
        raise ConfigError(f"config: {name} = {value!r}; expected a number from 0 to 1")
    if (section, key) == ("embedding", "threads") and value < 0:
        raise ConfigError(f"config: {name} = {value!r}; expected 0 (one per core) or a number of threads")
    if (section, key) == ("vectors", "ef_search") and value < 0:
        raise ConfigError(f"config: {name} = {value!r}; expected 0 (by the index's size) or a search depth above 0")
    if (section, key) == ("vectors", "exact_below") and value < 0:
        raise ConfigError(f"config: {name} = {value!r}; expected a number of chunks, 0 or more (0: always HNSW)")
    if (section, key) == ("retrieval", "min_score") and not 0.0 <= value <= 2.0:
        raise ConfigError(f"config: {name} = {value!r}; expected 0 (calibrated per index) or a cut above 0 (up to 2)")
    if (section, key) == ("retrieval", "reread") and not (value == 0 or 2 <= value <= MAX_REREAD):
        raise ConfigError(f"config: {name} = {value!r}; expected 0 (off) or 2 to {MAX_REREAD} sentences")
    if (section, key) == ("retrieval", "top_k") and value > MAX_TOP_K:
        raise ConfigError(f"config: {name} = {value!r}; expected 1 to {MAX_TOP_K}")
    if (section, key) == ("chunking", "max_tokens") and value > MAX_CHUNK_TOKENS:
        raise ConfigError(f"config: {name} = {value!r}; expected 1 to {MAX_CHUNK_TOKENS} (and at most what the "
                          "model reads: 254 for all-MiniLM-L6-v2)")
    if (section, key) == ("embedding", "model") and not value.strip():
        raise ConfigError(f"config: {name} = {value!r}; expected a model name (e.g. all-MiniLM-L6-v2) or a "
                          "model folder's path")
    if (section, key) == ("embedding", "device") and not _DEVICE.fullmatch(value):
        raise ConfigError(f"config: {name} = {value!r}; expected cpu, cuda, cuda:N or mps")
    if (section, key) == ("milvus", "collection") and not _MILVUS_NAME.fullmatch(value):
        raise ConfigError(f"config: {name} = {value!r}; expected a Milvus name: a letter or _, then letters, digits"
                          " or _ (at most 128)")
    if (section, key) == ("milvus", "uri") and "://" in value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"config: {name} = {value!r}; expected a file path (Milvus Lite) or an http(s):// URL "
                          "(a Milvus server)")
    if (section, key) == ("milvus", "uri") and value.startswith(("http://", "https://")) and "@" in value:
        raise ConfigError(f"config: {name} holds credentials; expected a URL without them (put the token in the "
                          "environment variable named by milvus.token_env or in milvus.token_file)")
    if (section, key) == ("milvus", "lease_seconds") and not 5 <= value <= 3600:
        raise ConfigError(f"config: {name} = {value!r}; expected 5 to 3600 seconds")
    if (section, key) == ("milvus", "refresh_seconds") and value < 0:
        raise ConfigError(f"config: {name} = {value!r}; expected 0 (check on every question) or a number of seconds")
    if (section, key) == ("chunking", "overlap_sentences") and not 0 <= value <= 3:
        raise ConfigError(f"config: {name} = {value!r}; expected 0 to 3")
    return value


def _parse_env_value(raw: str) -> Any:
    """An environment value is read as a TOML value if it is one (1, true, [1, 2]), else as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read config.toml (or `path`), apply CITEBOT_<SECTION>_<KEY> overrides and validate every value."""
    env = os.environ if env is None else env
    path = Path(path or env.get("CITEBOT_CONFIG") or DEFAULT_CONFIG)
    if not path.exists():
        raise ConfigError(f"config: file {path} not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    cfg = Config(base_dir=path.resolve().parent)
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "base_dir"}
    for section, values in data.items():
        if section not in sections:
            log.warning("config: unknown section [%s] ignored", section)
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config: {section} must be a table ([{section}])")
        if section == "servers":
            values = _server_libraries(cfg.servers, values)
        _apply(sections[section], section, values)
    for name, obj in sections.items():
        prefix = f"CITEBOT_{name.upper()}_"
        overrides = {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)}
        _apply(obj, name, overrides, source="environment")
    return cfg


def _server_libraries(servers: ServersConfig, values: dict[str, Any]) -> dict[str, Any]:
    """Take the [servers.<guild id>] tables out of [servers] into `servers.libraries`; returns the other keys."""
    rest = {}
    for key, value in values.items():
        if not isinstance(value, dict):
            if key == "libraries":
                raise ConfigError("config: servers.libraries is not a key; map a server with a "
                                  "[servers.<guild id>] table holding docs and index")
            rest[key] = value
            continue
        if not key.isdigit():
            raise ConfigError(f"config: [servers.{key}]: expected a server (guild) id such as "
                              "[servers.123456789012345678]")
        for name in ("docs", "index"):
            if not isinstance(value.get(name), str) or not value[name].strip():
                raise ConfigError(f"config: servers.{key}.{name} = {value.get(name)!r}; expected a folder path "
                                  "(text)")
        unknown = set(value) - {"docs", "index"}
        if unknown:
            log.warning("config: unknown key(s) %s in [servers.%s] ignored", ", ".join(sorted(unknown)), key)
        servers.libraries[int(key)] = ServerLibrary(value["docs"].strip(), value["index"].strip())
    return rest


def _apply(obj: Any, section: str, values: dict[str, Any], source: str = "config") -> None:
    known = {f.name for f in dataclasses.fields(obj)} - {"libraries"}
    for key, value in values.items():
        if key not in known:
            log.warning("%s: unknown key %s.%s ignored", source, section, key)
            continue
        default = getattr(obj, key)
        if source == "environment" and not isinstance(default, str):
            value = _parse_env_value(value)
        setattr(obj, key, _coerce(section, key, value, default))
