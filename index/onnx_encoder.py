"""The int8 ONNX encoder (`embedding.backend = "onnx-int8"`): the packaged model exported once, offline, to ONNX
with mean pooling and normalisation inside the graph, quantised dynamically to int8, cached, and run with
onnxruntime. Same tokenizer (the model folder's), same truncation, same pooling as sentence-transformers.

Needs `onnxruntime` and `tokenizers` to run (not transformers or torch: loading takes ~0.9 s instead of ~3.6 s,
and ~210 MB instead of ~700), and `onnx` plus torch/transformers the first time (to export). The cache lives in
$CITEBOT_CACHE_DIR, else $XDG_CACHE_HOME/citebot, else ~/.cache/citebot, keyed by the model folder's files and
the library versions, so a changed model is exported again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from itertools import chain
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from index.modelfiles import EmbeddingError, tokenizer_file

log = logging.getLogger(__name__)

EXPORT_VERSION = 4  # 3: token embeddings as a second output (sentence vectors pooled at build time); 4: eager attention
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Texts per ONNX run, whatever the batch size asked: the int8 graph runs small batches faster (its attention
# scores, batch x 12 heads x tokens^2, stay in cache): 250 SciFact chunks at 2 threads 34 chunks/s in runs
# of 32, 49 in runs of 8, 60 in runs of 4 (2026-11-30, Intel Xeon, 2 cores; PERFORMANCE.md). 8, not 4: in a
# whole build the two measured alike (75-80 against 72-76 chunks/s), and 4 moved a borderline timeline pick.
RUN_TEXTS = 8
SIDE_BY_SIDE = True  # a batch's runs on one worker each, side by side (False: one run at a time on every worker)
# Texts tokenized and ordered into runs at a time: a build batch (`index.build.EMBED_BATCH`) is one block, and a
# long list is encoded as the build would encode it; the word pieces of one block are held at once
BLOCK_TEXTS = 2048
MISSING = ("embedding.backend = 'onnx-int8' needs the packages onnxruntime and onnx "
           "(pip install onnxruntime onnx), or set embedding.backend = 'torch'")


def cache_root() -> Path:
    """Where exported models are kept."""
    if os.environ.get("CITEBOT_CACHE_DIR"):
        return Path(os.environ["CITEBOT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "citebot"


def model_key(model_dir: Path) -> str:
    """A short hash of the model folder (file names, sizes, times) and the export's library versions."""
    import onnxruntime
    h = hashlib.sha256(f"v{EXPORT_VERSION} ort {onnxruntime.__version__}".encode())
    for f in sorted(Path(model_dir).rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(model_dir)} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def read_max_seq_length(model_dir: Path, default: int = 256) -> int:
    try:
        return int(json.loads((Path(model_dir) / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return default


def check_pooling(model_dir: Path) -> None:
    """The graph does mean pooling and normalisation: refuse a model configured otherwise."""
    modules = Path(model_dir) / "modules.json"
    pooling = Path(model_dir) / "1_Pooling" / "config.json"
    if not modules.exists() or not pooling.exists():
        raise EmbeddingError(f"onnx-int8: {model_dir} is not a sentence-transformers folder (modules.json, "
                             "1_Pooling); use embedding.backend = 'torch'")
    cfg = json.loads(pooling.read_text())
    kinds = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
    normalize = any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    if kinds != ["pooling_mode_mean_tokens"] or not normalize:
        raise EmbeddingError(f"onnx-int8 supports mean pooling with normalisation only ({model_dir} has {kinds}); "
                             "use embedding.backend = 'torch'")


def export_int8(model_dir: Path, target: Path) -> None:
    """Export `model_dir` (transformer + mean pooling + L2 normalisation) to ONNX and quantise it to int8
    weights at `target`."""
    try:
        import onnx  # noqa: F401  (quantize_dynamic needs it)
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise EmbeddingError(MISSING) from None
    import torch
    from transformers import AutoModel, AutoTokenizer

    class Pooled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1), hidden

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # eager attention: transformers' default (SDPA) exports its mask handling as IsNaN/Where over every
    # attention score, 22 % of the int8 graph's time; the eager graph gives the same vectors 1.3x faster
    # (PERFORMANCE.md, "Where the time goes")
    try:
        model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    except (TypeError, ValueError):  # a model class without the choice
        model = AutoModel.from_pretrained(str(model_dir))
    model.eval()
    sample = tokenizer(["an example sentence", "a second, longer example sentence"], padding=True,
                       return_tensors="pt")
    import warnings
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = Path(tmp) / "model-fp32.onnx"
        axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS}
        axes["sentence_embedding"] = {0: "batch"}
        axes["token_embeddings"] = {0: "batch", 1: "tokens"}
        with torch.no_grad():
            torch.onnx.export(Pooled(model), tuple(sample[n] for n in INPUTS), str(fp32), input_names=list(INPUTS),
                              output_names=["sentence_embedding", "token_embeddings"], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
        int8 = Path(tmp) / "model-int8.onnx"
        # per-channel int8 weights of the MatMuls only (the embedding table stays float): cosine to the float
        # model 0.995 on average, 0.99 at worst on docs/; per-tensor QInt8 gave 0.957, QUInt8 0.979
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # onnxruntime advises "pre-processing" on the root logger
        try:
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
        finally:
            root.setLevel(level)
        os.replace(int8, target)


def cached_model(model_dir: Path) -> Path:
    """The int8 ONNX file for `model_dir`, exported on first use (one process at a time) and cached."""
    folder = cache_root() / "onnx" / f"{Path(model_dir).name}-{model_key(model_dir)}"
    target = folder / "model-int8.onnx"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            log.warning("exporting %s to int8 ONNX in %s (once)", model_dir, folder)
            try:
                export_int8(Path(model_dir), target)
            except EmbeddingError:
                raise
            except Exception as exc:
                shutil.rmtree(folder, ignore_errors=True)
                raise EmbeddingError(f"onnx-int8: export of {model_dir} failed ({type(exc).__name__}: "
                                     f"{str(exc)[:200]}); use embedding.backend = 'torch'") from None
    return target


def _pad_token(model_dir: Path) -> str | None:
    """The pad token named by the folder's tokenizer_config.json or special_tokens_map.json."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            token = json.loads((model_dir / name).read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            return token
    return None


def batch_tokenizer(model_dir: Path, max_seq_length: int):
    """The model's Rust tokenizer set up once as sentence-transformers calls it (truncation at
    `max_seq_length`, special tokens included; padding to the longest text of the batch with the pad token):
    the same ids as the transformers tokenizer's `__call__` (tested), without importing transformers and torch
    (~3 s of a cold start on 2 cores). `OnnxEncoder` turns its padding off once, before any thread uses it (it
    pads each run itself, as this padding would), and never reconfigures it again, so threads can share it."""
    tok = tokenizer_file(model_dir)
    pad = _pad_token(model_dir)
    if tok is None:  # no tokenizer.json: take the Rust core of the tokenizer transformers makes
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(str(model_dir))
        if getattr(hf, "backend_tokenizer", None) is None:
            raise EmbeddingError(f"onnx-int8 needs a fast tokenizer (tokenizer.json) in {model_dir}; "
                                 "use embedding.backend = 'torch'")
        from tokenizers import Tokenizer
        tok, pad = Tokenizer.from_str(hf.backend_tokenizer.to_str()), hf.pad_token
    tok.enable_truncation(max_length=max_seq_length, strategy="longest_first")
    pad_id = tok.token_to_id(pad) if pad else None
    if pad_id is None:
        saved = tok.padding or {}
        pad, pad_id = saved.get("pad_token", "[PAD]"), saved.get("pad_id", 0)
    tok.enable_padding(pad_id=pad_id, pad_token=pad)
    return tok


class _Given:
    """A text's word pieces given by the caller (`OnnxEncoder.encode`'s `word_pieces`), framed by the special
    tokens: what a run reads of a tokenizer's `Encoding` (no offsets: the caller pools by its own counts)."""
    __slots__ = ("ids", "type_ids")

    def __init__(self, ids: np.ndarray, type_ids: np.ndarray):
        self.ids, self.type_ids = ids, type_ids


def _special_frame(tokenizer) -> tuple[np.ndarray, np.ndarray, int] | None:
    """How `tokenizer` frames one text with special tokens: (ids before, ids after, type id), read from its
    encoding of one word; None when it does not frame a text with specials before and after alone."""
    probe = tokenizer.encode("a")
    special = probe.special_tokens_mask
    inner = [i for i, m in enumerate(special) if not m]
    if not inner or any(special[i] for i in range(inner[0], inner[-1] + 1)) or len(set(probe.type_ids)) != 1:
        return None
    ids = np.asarray(probe.ids, dtype=np.int64)
    return ids[:inner[0]], ids[inner[-1] + 1:], int(probe.type_ids[0])


class OnnxEncoder:
    """The parts of a SentenceTransformer the Embedder uses (encode, tokenizer, max_seq_length, dimension),
    running the int8 graph with onnxruntime."""

    pools_as_it_runs = True  # `encode` takes `on_text` (`Embedder.encode_passages` uses it)

    def __init__(self, path: Path, model_dir: Path, max_seq_length: int, threads: int):
        self.path = path
        self.model_dir = model_dir
        self.max_seq_length = max_seq_length
        self.threads = threads
        self._tokenize = batch_tokenizer(model_dir, max_seq_length)
        self._pad_id = int((self._tokenize.padding or {}).get("pad_id", 0))
        self._tokenize.no_padding()  # `encode` pads each run itself, as this tokenizer padded (tested), to its longest text
        self._frame = _special_frame(self._tokenize)
        self._hf_tokenizer = None
        self._sessions: dict[int, object] = {}
        self._workers = None  # the threads a batch's runs go side by side on (`_pool`)
        self._lock = threading.Lock()
        session = self.session_for(1)  # what a question uses; loaded now, so a model that cannot run fails here
        self._inputs = {i.name for i in session.get_inputs()}
        self._dim = int(session.get_outputs()[0].shape[-1])

    @property
    def word_piece_room(self) -> int:
        """How many given word pieces (`encode`'s `word_pieces`) a run reads whole, besides the special tokens;
        0: this tokenizer's texts are not taken as word pieces."""
        return self.max_seq_length - len(self._frame[0]) - len(self._frame[1]) if self._frame is not None else 0

    @classmethod
    def load(cls, model_dir: str | Path, threads: int = 0) -> "OnnxEncoder":
        try:
            import onnxruntime  # noqa: F401  (a clear message now rather than on first use)
        except ImportError:
            raise EmbeddingError(MISSING) from None
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise EmbeddingError(f"onnx-int8 needs a local model folder; '{model_dir}' is not one")
        check_pooling(model_dir)
        path = cached_model(model_dir)
        return cls(path, model_dir, read_max_seq_length(model_dir), threads if threads > 0 else (os.cpu_count() or 1))

    @property
    def tokenizer(self):
        """The model folder's tokenizer as transformers loads it (what sentence-transformers would use), made
        on first use: encoding does not need it (see `batch_tokenizer`)."""
        if self._hf_tokenizer is None:
            with self._lock:
                if self._hf_tokenizer is None:
                    from transformers import AutoTokenizer
                    self._hf_tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        return self._hf_tokenizer

    @property
    def session(self):
        """The session a run of several texts uses alone (`threads` workers)."""
        return self.session_for(self.threads)

    def session_for(self, n_texts: int):
        """The session for `n_texts` texts in one run: one worker for a single text (a question: 3.6 ms against
        4.4 ms with two workers waking each other, measured on 2 cores), `threads` workers for a run of several.
        (A batch of several runs runs them side by side, each on the one-worker session: `encode`.) Each is
        made on first use (about 0.3 s and 60 MB), so a bot that only answers questions holds one."""
        threads = 1 if n_texts <= 1 else self.threads
        session = self._sessions.get(threads)
        if session is None:
            with self._lock:
                session = self._sessions.get(threads)
                if session is None:
                    import onnxruntime as ort
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = threads
                    opts.inter_op_num_threads = 1
                    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    # ONNX Runtime's workers spin after each run waiting for the next; on 2 cores that spinning
                    # took the CPU from the rest of a question (hybrid p50 at 10k chunks 16-20 -> 8.4 ms without
                    # it, 1M 28.7 -> 23.0 ms), and batch encoding is as fast without it (51.8 chunks/s both ways).
                    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                    session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
                    self._sessions[threads] = session
        return session

    def _pool(self):
        """The threads that run a batch's runs side by side (`threads` of them, made on first use)."""
        if self._workers is None:
            with self._lock:
                if self._workers is None:
                    from concurrent.futures import ThreadPoolExecutor
                    self._workers = ThreadPoolExecutor(self.threads, thread_name_prefix="citebot-encode")
        return self._workers

    def _word_pieces(self, texts: list[str], parallel: bool) -> list:
        """Each text's word pieces (a `tokenizers.Encoding`, truncated to the model's window, not padded), the
        texts cut into one contiguous part a worker when `parallel` (the tokenizer lets go of the GIL)."""
        if not parallel or len(texts) < 2 * RUN_TEXTS:
            return self._tokenize.encode_batch(texts)
        size = -(-len(texts) // self.threads)
        parts = [texts[i:i + size] for i in range(0, len(texts), size)]
        return [e for part in self._pool().map(self._tokenize.encode_batch, parts) for e in part]

    def _block_pieces(self, texts: list[str], block: range, given: Sequence[np.ndarray | None] | None,
                      parallel: bool) -> dict:
        """Each text of `block` (indices into `texts`) as a run reads it: its given word pieces framed by the
        special tokens and truncated as the tokenizer would (`_Given`), else the tokenizer's encoding of it."""
        out: dict = {}
        if given is not None and self._frame is not None:
            before, after, type_id = self._frame
            room = self.word_piece_room
            for j in block:
                ids = given[j]
                if ids is not None:
                    ids = np.concatenate((before, ids[:room].astype(np.int64), after))
                    out[j] = _Given(ids, np.full(len(ids), type_id, dtype=np.int64))
        rest = [j for j in block if j not in out]
        out.update(zip(rest, self._word_pieces([texts[j] for j in rest], parallel)))
        return out

    def get_sentence_embedding_dimension(self) -> int:
        return self._dim

    get_embedding_dimension = get_sentence_embedding_dimension

    def eval(self) -> "OnnxEncoder":
        return self

    def encode(self, texts: Sequence[str], batch_size: int = 32, normalize_embeddings: bool = True,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, output_value: str | None = "sentence_embedding",
               on_text: Callable[[int, dict], None] | None = None, progress: Callable[[int, int], None] | None = None,
               word_pieces: Sequence[np.ndarray | None] | None = None, **_) -> np.ndarray | list[dict]:
        """Unit vectors (float32), one row per text. BLOCK_TEXTS texts at a time are tokenized (on the workers),
        then run at most RUN_TEXTS to a run, the runs made of texts of like length in word pieces (sentence-
        transformers orders them by characters); the runs of a block go side by side, one worker each (`threads`
        at once).

        `output_value=None` (as in sentence-transformers): one dict per text instead, with its
        "sentence_embedding", its "token_embeddings" and the tokenizer's "offset_mapping" (into the stripped
        text) and "special_tokens_mask", without padding. With `on_text` as well, each text's dict goes to
        `on_text(its index, dict)` on the worker that ran it, as soon as its run is done, and is not kept (so a
        large batch holds one run's token outputs a worker, and the next runs go on while they are used);
        `progress(texts done, total)` is called here as runs finish.

        `word_pieces` (optional, per text): the text's word-piece ids, without special tokens, exactly as the
        tokenizer would give them (`Embedder.word_piece_ids`; None: tokenize it). They are framed, truncated
        and run as the tokenizer's own would be, so the vectors are the same; such a text's dict has no
        "offset_mapping" or "special_tokens_mask" (its caller knows where its pieces are)."""
        texts = [str(t).strip() for t in texts]
        tokens = output_value is None
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        rows: list[dict] = [{} for _ in texts]
        step = max(1, min(batch_size, RUN_TEXTS))
        pad_id = self._pad_id

        def run(idx: list[int], pieces: dict, session) -> None:
            lengths = [len(pieces[j].ids) for j in idx]
            n, width = len(idx), max(lengths)
            ids = np.full((n, width), pad_id, dtype=np.int64)
            mask = np.zeros((n, width), dtype=np.int64)
            types = np.zeros((n, width), dtype=np.int64)
            # the texts whose offsets and special-token flags are handed back: those the tokenizer read
            read = [tokens and not isinstance(pieces[j], _Given) for j in idx]
            if any(read):
                offsets = np.zeros((n, width, 2), dtype=np.int64)
                special = np.ones((n, width), dtype=np.int64)
            for r, j in enumerate(idx):  # padded as the tokenizer pads: pad id, mask 0, type 0, offsets (0, 0), special
                e, m = pieces[j], lengths[r]
                ids[r, :m] = e.ids
                mask[r, :m] = 1
                types[r, :m] = e.type_ids
                if read[r]:
                    offsets[r, :m] = np.fromiter(chain.from_iterable(e.offsets), dtype=np.int64, count=2 * m).reshape(m, 2)
                    special[r, :m] = e.special_tokens_mask
            enc = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            feed = {name: enc[name] for name in INPUTS if name in self._inputs}
            outputs = session.run(None, feed)
            out[idx] = outputs[0]
            if normalize_embeddings:  # already unit length from the graph; renormalise float rounding
                norms = np.linalg.norm(out[idx], axis=1, keepdims=True)
                out[idx] /= np.where(norms > 0, norms, 1.0)
            if tokens:
                for r, j in enumerate(idx):
                    m = lengths[r]
                    rows[j] = {"token_embeddings": outputs[1][r, :m]}
                    if read[r]:
                        rows[j].update(offset_mapping=offsets[r, :m], special_tokens_mask=special[r, :m])
                    if on_text is not None:
                        rows[j]["sentence_embedding"] = out[j]
                        on_text(int(j), rows[j])
                        rows[j] = {}
            for j in idx:
                pieces[j] = None  # each text's word pieces are let go once its run is done

        side_by_side = self.threads > 1 and len(texts) > step and SIDE_BY_SIDE
        done = 0
        for first in range(0, len(texts), BLOCK_TEXTS):
            block = range(first, min(first + BLOCK_TEXTS, len(texts)))
            pieces = self._block_pieces(texts, block, word_pieces, side_by_side)
            # runs of texts of like length in word pieces (the block's longest first): a run is padded to its
            # longest text, and the int8 graph's time grows with that length, so runs by characters (as
            # sentence-transformers makes them) read 15 % more positions on SciFact and took 1.4x as long
            order = sorted(block, key=lambda j: -len(pieces[j].ids))
            runs = [order[i:i + step] for i in range(0, len(order), step)]
            if side_by_side and len(runs) > 1:
                # runs side by side, one worker each: on 2 cores 98-103 chunks/s against 90-98 for one run at a time
                # on two workers (PERFORMANCE.md); each run holds the same texts either way, so the same vectors
                single = self.session_for(1)
                finished = self._pool().map(lambda idx: run(idx, pieces, single) or idx, runs)
            else:
                finished = (run(idx, pieces, self.session_for(len(idx))) or idx for idx in runs)
            for idx in finished:  # in order, each as its run ends
                done += len(idx)
                if progress:
                    progress(done, len(texts))
        if tokens:
            for j, row in enumerate(rows):
                row["sentence_embedding"] = out[j]
            return rows
        return out
