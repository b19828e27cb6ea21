"""The embedding model: loaded once, offline by default, normalised vectors, batch encoding."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Callable, Sequence

import numpy as np

from index.config import EmbeddingConfig
from index.modelfiles import PACKAGED_NAMES, EmbeddingError, resolve_model, tokenizer_file  # noqa: F401

log = logging.getLogger(__name__)


def set_threads(threads: int = 0) -> None:
    """Fix torch's CPU thread count (0: one per core). Set explicitly: with the default, a short encode on a
    busy 2-core machine was measured at ~490 ms instead of ~15 ms (see PERFORMANCE.md)."""
    import torch
    n = threads if threads > 0 else (os.cpu_count() or 1)
    if torch.get_num_threads() != n or not getattr(set_threads, "done", False):
        torch.set_num_threads(n)
        set_threads.done = True


def _numpy(x) -> np.ndarray:
    """A torch tensor or an array as a float32 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def pool_spans(tokens: np.ndarray, offsets: np.ndarray, special: np.ndarray, spans: Sequence[tuple[int, int]],
               shift: int = 0) -> np.ndarray:
    """One unit vector per character span of a text: the mean of the token embeddings whose start falls in the
    span (special tokens excluded). `offsets` are into the text without its leading `shift` characters. A span
    with no such token gets a zero row."""
    real = (special == 0) & (offsets[:, 1] > offsets[:, 0])
    starts = offsets[real, 0] + shift  # ascending: a tokenizer's pieces come in the text's order
    return _pool_rows(tokens[real], np.searchsorted(starts, np.asarray(spans, dtype=np.int64).reshape(-1, 2)))


def pool_counts(tokens: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """`pool_spans` for a text read from its word-piece ids (`Embedder.encode_passages`'s `pieces`): span k is
    the `counts[k]` tokens after span k-1's, the first after the leading special token (the same rows that
    `pool_spans` finds by offsets, so the same vectors)."""
    ends = np.cumsum(np.asarray(counts, dtype=np.int64)) + 1
    return _pool_rows(tokens, np.stack([ends - np.asarray(counts, dtype=np.int64), ends], axis=1))


def _pool_rows(tokens: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Row k: the unit mean of `tokens[lo:hi]` for (lo, hi) = bounds[k]; a zero row where that is empty."""
    out = np.zeros((len(bounds), tokens.shape[1]), dtype=np.float32)
    # each span's tokens are a run of rows; their mean and norm as `mean(0)` and `np.linalg.norm` compute them
    # (the same bits), without their per-call overhead: 77 -> 54 µs a SciFact chunk
    for k, (lo, hi) in enumerate(bounds.tolist()):
        if hi > lo:
            v = np.add.reduce(tokens[lo:hi], axis=0)
            v /= hi - lo
            norm = float(np.sqrt(np.dot(v, v)))
            if norm > 0:
                out[k] = v / norm
    return out


# A BERT pre-token of ASCII text: a run of letters and digits, or one punctuation character (every printable
# ASCII character that is not a letter, a digit or a space is punctuation to BERT). The normalizer first
# deletes control characters (tab, newline and carriage return are spaces), joining what stood either side.
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")
MEMO_WORDS = 1 << 20  # distinct words remembered at most (about 100 MB a memo), then forgotten and remembered afresh


# A text's word-piece ids as chunking hands them to the int8 encoder (`Embedder.word_piece_ids`, `Chunk.pieces`):
# two bytes a piece (a tokenizer with a larger vocabulary gives none)
PIECE_DTYPE = np.dtype(np.uint16)


def _encodings(tokenizer, texts: Sequence[str]) -> list:
    """Each text's encoding by a `tokenizers.Tokenizer` itself (no special tokens; its truncation off)."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # fast: no offsets (tokenizers 0.21+)
    return encode(list(texts), add_special_tokens=False)


def pieces_of(tokenizer, texts: Sequence[str]) -> list[int]:
    """Word pieces of each text by a `tokenizers.Tokenizer` itself (no special tokens; its truncation off)."""
    return [len(e.ids) for e in _encodings(tokenizer, texts)]


def piece_ids_of(tokenizer, texts: Sequence[str]) -> list[bytes]:
    """Each text's word-piece ids by a `tokenizers.Tokenizer` itself, as PIECE_DTYPE bytes."""
    return [np.asarray(e.ids, dtype=PIECE_DTYPE).tobytes() for e in _encodings(tokenizer, texts)]


class WordPieceCounter:
    """Word pieces of texts for a BERT-style tokenizer (BertNormalizer, BertPreTokenizer, WordPiece), the
    same count as the tokenizer's, about 3x quicker on English text (measured on SciFact: 2.38 -> 0.75 s
    for 49,795 sentences, one core; PERFORMANCE.md, "Build speed"); `ids` gives the pieces themselves.

    WordPiece splits each pre-token alone, so a text's count is the sum of its words' counts (and its ids the
    words' ids one after another): an ASCII text is cut into BERT's pre-tokens with a regular expression and
    each distinct word is counted once, by the tokenizer itself, and remembered. Other text (accents to strip,
    CJK to split) and any text holding an added token ("[CLS]", which the tokenizer reads as one piece) go to
    the tokenizer whole."""

    def __init__(self, tokenizer, lowercase: bool, added: Sequence[str]):
        self.tokenizer = tokenizer  # truncation and padding off
        self.lowercase = lowercase
        self.added = tuple(a.lower() for a in added if a)
        self.memo: dict[str, int] = {}
        self.id_memo: dict[str, bytes] = {}

    @classmethod
    def of(cls, tokenizer) -> "WordPieceCounter | None":
        """The counter for `tokenizer` (a `tokenizers.Tokenizer`), or None when it is not BERT-style."""
        try:
            spec = json.loads(tokenizer.to_str())
        except Exception:
            return None
        norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        if (norm.get("type") != "BertNormalizer" or not norm.get("clean_text", True)
                or pre.get("type") != "BertPreTokenizer" or model.get("type") != "WordPiece"):
            return None
        return cls(tokenizer, bool(norm.get("lowercase", True)),
                   [t.get("content", "") for t in spec.get("added_tokens") or []])

    def count(self, texts: Sequence[str]) -> list[int]:
        return self._by_words(texts, self.memo, pieces_of, sum, 0)

    def ids(self, texts: Sequence[str]) -> list[bytes]:
        """Each text's word-piece ids (no special tokens), as PIECE_DTYPE bytes: the tokenizer's own."""
        return self._by_words(texts, self.id_memo, piece_ids_of, b"".join, b"")

    def _by_words(self, texts: Sequence[str], memo: dict, measure: Callable, join: Callable, empty) -> list:
        """Each text's measure (`measure(tokenizer, texts)`: counts or ids), an ASCII text's as `join` of its
        words' measures, each distinct word measured once and remembered in `memo`."""
        if len(memo) > MEMO_WORDS:
            memo.clear()
        out: list = [empty] * len(texts)
        whole: list[int] = []
        for i, text in enumerate(texts):
            if not text.isascii():
                whole.append(i)
                continue
            lowered = text.lower()
            if self.added and any(a in lowered for a in self.added):
                whole.append(i)
                continue
            words = _ASCII_WORD.findall(_ASCII_CONTROL.sub("", lowered if self.lowercase else text))
            try:
                out[i] = join(map(memo.__getitem__, words))
            except KeyError:  # words not met before: measured by the tokenizer, each once
                new = [w for w in dict.fromkeys(words) if w not in memo]
                memo.update(zip(new, measure(self.tokenizer, new)))
                out[i] = join(map(memo.__getitem__, words))
        if whole:
            for i, n in zip(whole, measure(self.tokenizer, [texts[i] for i in whole])):
                out[i] = n
        return out


class Embedder:
    """A sentence-transformers model behind a lock: `encode` texts to unit vectors, `count` word pieces."""

    def __init__(self, cfg: EmbeddingConfig):
        self.cfg = cfg
        self.name = cfg.model
        self._model = None
        self._tokenizer = None
        self._counter = None  # see _word_pieces
        self._fast_count = None  # see count
        self._offsets = None  # see _offsets_tokenizer
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self):
        if self.cfg.backend == "onnx-int8":  # its sessions take the thread count themselves; no torch import
            from index.onnx_encoder import OnnxEncoder
            return OnnxEncoder.load(resolve_model(self.name), threads=self.cfg.threads)
        set_threads(self.cfg.threads)
        from sentence_transformers import SentenceTransformer
        target = resolve_model(self.name)
        try:
            model = SentenceTransformer(target, device=self.cfg.device)
        except Exception as exc:
            raise EmbeddingError(
                f"cannot load embedding model '{self.name}' offline ({type(exc).__name__}: {str(exc)[:200]}); "
                "set embedding.model to an installed model name or a local path"
            ) from None
        model.eval()
        return model

    @property
    def dim(self) -> int:
        m = self.model
        getter = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self):
        """The model's tokenizer; loaded alone (without the weights) when only counting is needed."""
        if self._model is not None:
            return self._model.tokenizer
        if self._tokenizer is None:
            tried = None
            with self._lock:
                if self._tokenizer is None:
                    from transformers import AutoTokenizer
                    try:
                        self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.name))
                    except EmbeddingError:
                        raise
                    except Exception as exc:  # not a plain transformers folder: let the model loader try
                        tried = f"transformers: {type(exc).__name__}"
            if self._tokenizer is None:  # outside the lock: `model` takes it (it is not re-entrant)
                try:
                    self._tokenizer = self.model.tokenizer
                except EmbeddingError as exc:
                    raise EmbeddingError(
                        f"cannot load embedding model '{self.name}': not the packaged all-MiniLM-L6-v2, not a model "
                        f"folder and not in the offline Hugging Face cache (tried {tried}; {self.cfg.backend}: "
                        f"{str(exc)[:160]}); set embedding.model to an installed model or a folder") from None
        return self._tokenizer

    @property
    def max_tokens(self) -> int | None:
        """The word pieces a passage may have and still be read whole (max_seq_length less the two special
        tokens), from the model folder's sentence_bert_config.json without loading the model; None if unknown."""
        import json
        from pathlib import Path
        try:
            path = Path(resolve_model(self.name)) / "sentence_bert_config.json"
            n = int(json.loads(path.read_text())["max_seq_length"])
        except Exception:  # no folder (a hub name), no such file or key: unknown
            return None
        return n - 2 if n > 2 else None

    @property
    def _word_pieces(self):
        """The tokenizer's Rust core on its own, never truncating or padding (the model's own copy keeps
        whatever its last encode set), or None for a tokenizer without one. Read from the model folder's
        tokenizer.json when there is one, so counting imports neither transformers nor torch (a `citebot
        index` with nothing changed: 5.0 -> 1.0 s on 2 cores)."""
        if self._counter is None:
            counter = tokenizer_file(resolve_model(self.name))
            if counter is None:
                backend = getattr(self.tokenizer, "backend_tokenizer", None)
                if backend is not None:
                    from tokenizers import Tokenizer
                    counter = Tokenizer.from_str(backend.to_str())
            if counter is not None:
                counter.no_truncation()
                counter.no_padding()
            self._counter = counter or False
        return self._counter or None

    def count(self, texts: Sequence[str]) -> list[int]:
        """Word pieces of each text, without the special tokens."""
        if not texts:
            return []
        counter = self._word_pieces
        if counter is not None:  # measured 20 % quicker than the tokenizer's __call__ (PERFORMANCE.md, "Where the time goes")
            fast = self._fast_counter()
            if fast:  # a BERT-style tokenizer: word by word, remembered
                return fast.count(texts)
            return pieces_of(counter, texts)
        encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=False,
                                 return_attention_mask=False, return_token_type_ids=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def _fast_counter(self) -> WordPieceCounter | None:
        """The word-by-word counter for the model's tokenizer, or None when it is not BERT-style."""
        if self._fast_count is None:
            counter = self._word_pieces
            self._fast_count = (WordPieceCounter.of(counter) if counter is not None else None) or False
        return self._fast_count or None

    def word_piece_ids(self, texts: Sequence[str]) -> list[bytes] | None:
        """Each text's word-piece ids (no special tokens) as PIECE_DTYPE bytes, the tokenizer's own, for the int8
        encoder to read instead of tokenizing the text again (`encode_passages`'s `pieces`, from chunking:
        `index.chunking.Chunk.pieces`); None when the encoder would not use them (the torch backend tokenizes
        for itself) or the tokenizer is not BERT-style (`WordPieceCounter`)."""
        if self.cfg.backend != "onnx-int8":
            return None
        fast = self._fast_counter()
        if (not fast or fast.tokenizer.get_vocab_size() > np.iinfo(PIECE_DTYPE).max + 1
                or any(any(ch.isspace() for ch in a) for a in fast.added)):  # an added token across a space
            return None  # could join two sentences into one piece
        return fast.ids(texts)

    def _slices(self, texts: Sequence[str], step: int, progress: Callable[[int, int], None] | None):
        """Row indices of `texts` in slices of `step`, the longest in word pieces first over all of them: a slice
        then holds texts of like length in word pieces, so the model's batches of it pad little, although
        sentence-transformers orders each call's texts by characters; `progress(done, total)` after each slice
        is used."""
        order = np.argsort([-n for n in self.count([str(t) for t in texts])], kind="stable")
        for i in range(0, len(texts), step):
            rows = order[i:i + step]
            yield rows
            if progress:
                progress(i + len(rows), len(texts))

    def encode(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None,
               batch_size: int | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; `progress(done, total)` after each slice."""
        batch = batch_size or self.cfg.batch_size
        model = self.model
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not progress:  # one call: the model orders by length itself
            if len(texts):
                out[:] = model.encode(list(texts), batch_size=batch, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
            return out
        for rows in self._slices(texts, max(batch * 8, 256), progress):
            out[rows] = model.encode([texts[j] for j in rows], batch_size=batch, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return out

    def encode_passages(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                        progress: Callable[[int, int], None] | None = None,
                        batch_size: int | None = None,
                        pieces: Sequence[tuple[np.ndarray, Sequence[int]] | None] | None = None
                        ) -> tuple[np.ndarray, list[np.ndarray]]:
        """What `encode` gives, plus for each text one unit vector per span (its sentences), pooled from the
        same run's token embeddings: the mean of the tokens inside the span, in the context of the whole
        passage ("late pooling"), so sentence vectors cost no second pass of the model.

        `pieces` (optional, per text): (its word-piece ids, each span's count of them) where the ids are
        exactly the tokenizer's pieces of the stripped text, span after span, only spaces between the spans
        (`word_piece_ids`, `index.chunking.Chunk.pieces`), else None. The int8 encoder then reads them instead
        of tokenizing the text again, and pools each span's own tokens: the same vectors, sooner
        (PERFORMANCE.md, "Build speed"). Other backends tokenize the text.

        A span with no token inside the model's window (a passage longer than max_seq_length) is encoded on
        its own."""
        batch = batch_size or self.cfg.batch_size
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        pooled: list[np.ndarray] = [np.zeros((0, self.dim), dtype=np.float32)] * len(texts)
        room = getattr(self.model, "word_piece_room", 0) if pieces is not None else 0
        # a text longer than the window is cut by it, so tokenized (and its spans found by offsets)
        given = {j: p for j, p in enumerate(pieces) if p is not None and len(p[0]) <= room} if room else {}

        def take(j: int, r: dict, text: str) -> None:
            out[j] = _numpy(r["sentence_embedding"])
            if j in given:
                pooled[j] = pool_counts(_numpy(r["token_embeddings"]), given[j][1])
                return
            shift = len(text) - len(text.lstrip())
            pooled[j] = pool_spans(_numpy(r["token_embeddings"]), np.asarray(r["offset_mapping"]),
                                   np.asarray(r["special_tokens_mask"]), spans[j], shift)

        if getattr(self.model, "pools_as_it_runs", False):
            # the int8 encoder hands each text over as its run ends, on the worker that ran it: one call, so no
            # worker waits for the other at the end of every slice, and the pooling overlaps the model's runs
            # (the runs, so the vectors, are those of `encode` on the same texts: PERFORMANCE.md, "Build speed")
            texts = [str(t) for t in texts]
            ids = [given[j][0] if j in given else None for j in range(len(texts))] if given else None
            if texts:
                self.model.encode(texts, batch_size=batch, output_value=None, progress=progress,
                                  on_text=lambda j, r: take(j, r, texts[j]), word_pieces=ids)
        else:
            for rows in self._slices(texts, max(batch * 8, 256), progress):
                part = [str(texts[j]) for j in rows]
                for n, r in enumerate(self._token_outputs(part, batch)):
                    take(rows[n], r, part[n])
        # spans the window did not reach: encode them alone
        missing = [(j, k) for j, vecs in enumerate(pooled) for k in range(len(vecs)) if not vecs[k].any()]
        if missing:
            alone = self.encode([str(texts[j])[slice(*spans[j][k])] for j, k in missing], batch_size=batch)
            for (j, k), v in zip(missing, alone):
                pooled[j][k] = v
        return out, pooled

    def _token_outputs(self, texts: list[str], batch: int) -> list[dict]:
        """One model run over `texts`: per text its "sentence_embedding", "token_embeddings", "offset_mapping"
        (into the stripped text) and "special_tokens_mask"."""
        results = self.model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False, output_value=None)
        if results and "offset_mapping" not in results[0]:  # sentence-transformers: tokenize again for offsets
            # with a tokenizer of our own: sentence-transformers re-sets padding on the model's shared one at
            # every encode, so tokenizing with that one while another thread encodes can break either
            found = self._offsets_tokenizer().encode_batch([t.strip() for t in texts])
            for r, e in zip(results, found):
                m = sum(e.attention_mask)
                r["offset_mapping"] = np.asarray(e.offsets[:m])
                r["special_tokens_mask"] = np.asarray(e.special_tokens_mask[:m])
                r["token_embeddings"] = _numpy(r["token_embeddings"])[:m]
        return results

    def _offsets_tokenizer(self):
        """A private copy of the model's tokenizer set up as sentence-transformers calls it (the int8 encoder's
        `batch_tokenizer`: the same ids and offsets as transformers', tested), never reconfigured afterwards."""
        if self._offsets is None:
            from pathlib import Path
            from index.onnx_encoder import batch_tokenizer
            self._offsets = batch_tokenizer(Path(resolve_model(self.name)), self.max_seq_length)
        return self._offsets

    def word_pieces(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each text's word pieces as the model reads them, from one run over all of `texts`: their unit vectors
        (in context, special tokens left out) and where each starts in the text."""
        texts = [str(t) for t in texts]
        if not texts:
            return []
        results = self._token_outputs(texts, len(texts))
        out = []
        for text, r in zip(texts, results):
            offsets = np.asarray(r["offset_mapping"]).reshape(-1, 2)
            real = (np.asarray(r["special_tokens_mask"]) == 0) & (offsets[:, 1] > offsets[:, 0])
            vectors = _numpy(r["token_embeddings"]).astype(np.float32)[real]
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            out.append((vectors, offsets[real, 0] + (len(text) - len(text.lstrip()))))
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]
