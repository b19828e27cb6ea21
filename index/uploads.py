"""Documents added and removed from Discord (/upload, /remove): safe file names, the type checked by content,
and the file written or deleted inside the documents folder only."""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from pathlib import Path

UPLOAD_TYPES = {".txt": "text", ".md": "text", ".html": "html", ".htm": "html", ".pdf": "pdf", ".docx": "docx"}
_SAFE = re.compile(r"[^\w.()\- ]+")
MAX_NAME = 120


class UploadError(ValueError):
    """An upload refused; str() is the one line shown to the admin."""


def safe_name(name: str) -> str:
    """The file name to store an attachment under: no folders, no hidden file, only letters, digits, spaces and
    . ( ) - _; UploadError when nothing usable is left or the type is not a document type."""
    base = re.split(r"[\\/]", str(name or ""))[-1].strip()
    base = _SAFE.sub("_", base).strip(" .") if not base.startswith(".") else ""
    if not base or base.startswith("."):
        raise UploadError(f"'{name}' is not a usable file name (no folders or hidden files)")
    stem, dot, suffix = base.rpartition(".")
    if not dot or f".{suffix.lower()}" not in UPLOAD_TYPES:
        raise UploadError(f"'{name}': only {', '.join(sorted(t.lstrip('.') for t in UPLOAD_TYPES))} files "
                          "can be uploaded")
    if len(base) > MAX_NAME:
        base = stem[: MAX_NAME - len(suffix) - 1].rstrip() + "." + suffix
    return base


def content_kind(data: bytes) -> str:
    """What the bytes are: "pdf", "docx", "html", "text", or "other" (judged by content, not by name)."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                return "docx" if "word/document.xml" in z.namelist() else "other"
        except zipfile.BadZipFile:
            return "other"
    if b"\x00" in data[:8192]:
        return "other"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "other"
    head = text[:4096].lstrip().lower()
    if head.startswith(("<!doctype html", "<html")) or re.search(r"<(html|body|head|p|div)[\s>]", head):
        return "html"
    return "text"


def check_content(name: str, data: bytes) -> None:
    """UploadError unless the content is what the file name says (a .txt or .md may also hold HTML-like text)."""
    expected = UPLOAD_TYPES[Path(name).suffix.lower()]
    kind = content_kind(data)
    if kind == expected or (expected == "text" and kind == "html"):
        return
    what = {"other": "not a document (binary or unknown content)"}.get(kind, f"a {kind} file")
    raise UploadError(f"{name}: its content is {what}, not what the .{Path(name).suffix.lstrip('.')} name says")


def store_upload(docs_dir: Path, name: str, data: bytes, replace: bool = False) -> str:
    """Write an uploaded document into `docs_dir` under its safe name (atomically); returns that name."""
    name = safe_name(name)
    check_content(name, data)
    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    target = docs_dir / name
    if target.exists() and not replace:
        raise UploadError(f"{name} already exists; upload it again with replace:true to overwrite it")
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=docs_dir)  # hidden: never indexed
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return name


def delete_document(docs_dir: Path, doc: str) -> None:
    """Delete document `doc` (a path relative to `docs_dir`, never outside it) and its metadata sidecar."""
    root = Path(docs_dir).resolve()
    path = (root / doc).resolve()
    if not path.is_relative_to(root) or path == root:
        raise UploadError(f"'{doc}' is outside the documents folder")
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".meta.toml").unlink(missing_ok=True)
