"""`citebot doctor`: checks the configuration, the Discord token (never shown), the documents folder, the index,
the model and its ONNX cache, and says what to fix. Exit status 0 when nothing needs fixing."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable

OK, WARN, BAD = "✓", "!", "✗"


def checks(kb: Any) -> list[tuple[str, str, str]]:
    """(mark, what, detail or what to fix) for each part of this install."""
    cfg = kb.cfg
    out: list[tuple[str, str, str]] = [(OK, "config", f"read from {cfg.base_dir} (every key valid)")]
    out.append(_token(cfg))
    out.append(_docs("documents", cfg.docs_dir))
    out += _index(kb)
    out += _model(cfg)
    for guild_id, lib in sorted(cfg.servers.libraries.items()):
        from index.libraries import library_config
        out.append(_docs(f"server {guild_id} documents", library_config(cfg, guild_id).docs_dir))
    return out


def _token(cfg: Any) -> tuple[str, str, str]:
    from bot.discord.credentials import TOKEN_ENV, read_token, token_configured
    from index.config import ConfigError
    if not token_configured(cfg):
        return (WARN, "Discord token", f"not set: the bot cannot start (the terminal chat works); set {TOKEN_ENV} "
                                       "or bot.token_file (a file holding only the token)")
    try:
        token = read_token(cfg)
    except ConfigError as exc:
        return (BAD, "Discord token", str(exc))
    where = TOKEN_ENV if os.environ.get(TOKEN_ENV, "").strip() else "bot.token_file"
    shape = "looks like a bot token" if token.count(".") == 2 else "does not look like a bot token (three parts)"
    return (OK if token.count(".") == 2 else WARN, "Discord token", f"set in {where} ({len(token)} characters, {shape})")


def _docs(what: str, folder: Path) -> tuple[str, str, str]:
    from index.documents import SUPPORTED
    if not folder.is_dir():
        return (BAD, what, f"{folder} is not a folder: create it and put documents in it (or fix paths.docs)")
    if not os.access(folder, os.R_OK | os.X_OK):
        return (BAD, what, f"{folder} cannot be read by this user")
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    if not files:
        return (WARN, what, f"{folder} holds no documents ({', '.join(sorted(SUPPORTED))})")
    return (OK, what, f"{folder}: {len(files)} document file{'s' if len(files) != 1 else ''}")


def _index(kb: Any) -> list[tuple[str, str, str]]:
    from index.kb import UserError
    where = kb.cfg.index_dir
    out = []
    writable = where if where.exists() else where.parent
    while not writable.exists() and writable != writable.parent:
        writable = writable.parent
    if not os.access(writable, os.W_OK):
        out.append((BAD, "index folder", f"{where} is not writable by this user (builds, votes and answers are "
                                          "stored there)"))
    if not kb.has_index():
        return out + [(BAD, "index", f"none in {where}: run `citebot index`")]
    try:
        info = kb.info()
    except UserError as exc:
        return out + [(BAD, "index", f"{exc}")]
    out.append((OK, "index", f"{info['documents']} documents, {info['chunks']} passages, built "
                             f"{info.get('built_at') or '?'} with {info.get('model') or '?'}"))
    return out + [_cut(info)]


def _cut(info: dict) -> tuple[str, str, str]:
    """The confidence cut in use: fixed by config, calibrated for this index, or in need of `citebot index`."""
    from index.calibration import VERSION
    cut = f"{info['confidence_cut']:.3f}"
    if info.get("cut_fixed"):
        return (OK, "confidence cut", f"{cut}, fixed by retrieval.min_score (0 calibrates it for each index)")
    version = info.get("calibration_version")
    if not info.get("cut_calibrated"):
        return (WARN, "confidence cut", f"{cut}, a default: this index was built before cuts were calibrated; "
                                        "`citebot index` calibrates it (nothing is embedded again)")
    if version != VERSION:
        return (WARN, "confidence cut", f"{cut}, calibrated by an older rule (version {version}, now {VERSION}); "
                                        "`citebot index` calibrates it again in seconds (nothing is embedded again)")
    return (OK, "confidence cut", f"{cut}, calibrated for this index")


def _model(cfg: Any) -> list[tuple[str, str, str]]:
    from index.modelfiles import EmbeddingError, resolve_model
    try:
        path = Path(resolve_model(cfg.embedding.model))
    except EmbeddingError as exc:
        return [(BAD, "model", str(exc))]
    if not path.is_dir():
        return [(BAD, "model", f"{cfg.embedding.model} is not a model folder on this machine (no download at run "
                               "time): install it or set embedding.model to a local folder")]
    out = [(OK, "model", f"{cfg.embedding.model} at {path}")]
    if cfg.embedding.backend == "onnx-int8":
        try:
            from index.onnx_encoder import cache_root, model_key
            folder = cache_root() / "onnx" / f"{path.name}-{model_key(path)}"
        except ImportError:
            return out + [(BAD, "ONNX", "embedding.backend = 'onnx-int8' needs onnxruntime and onnx "
                                        "(pip install onnxruntime onnx), or set embedding.backend = 'torch'")]
        if folder.is_dir() and any(folder.glob("*.onnx")):
            out.append((OK, "ONNX cache", f"{folder}"))
        else:
            out.append((WARN, "ONNX cache", f"not made yet ({folder}): the first start exports the int8 model, "
                                            "~1 minute; run `citebot ask test` once to make it now"))
    return out


def cmd_doctor(kb: Any, args: argparse.Namespace) -> int:
    """Print one line per check; exit 1 if anything must be fixed."""
    results = checks(kb)
    for mark, what, detail in results:
        print(f"{mark} {what}: {detail}")
    bad = sum(mark == BAD for mark, _, _ in results)
    print("nothing to fix" if not bad else f"{bad} thing{'s' if bad != 1 else ''} to fix")
    return 1 if bad else 0


def add_commands(sub: Any) -> dict[str, Callable[[Any, argparse.Namespace], int]]:
    """Add `citebot doctor` to the parser."""
    sub.add_parser("doctor", help="check the config, token, documents, index and model, and say what to fix")
    return {"doctor": cmd_doctor}
