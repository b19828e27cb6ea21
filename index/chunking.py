"""Chunks: sentences from a real segmenter, packed to a budget of the embedding model's own word pieces."""

from __future__ import annotations

import ctypes
import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from index.documents import Document
from index.embedding import PIECE_DTYPE

# blingfire splits after these; a sentence ending in one is joined to the next ("Mr. Matthews").
_ABBREVIATION = re.compile(
    r"(?:^|[\s(“\"'])(?:Mr|Mrs|Ms|Mx|Dr|Prof|St|No|Nos|Insp|Supt|Sgt|Det|Cllr|Rev|Gen|Col|Capt|Lt|Hon|Sr|Jr|"
    r"vs|etc|e\.g|i\.e|approx|Ch|Con|PC|DC|DS|DI|Co|Ltd|Inc|Fig|Vol|pp?|para|cf)\.$")
# longer than any abbreviation above with its full stop and the character before it, so that a search of a
# piece's last ABBREVIATION_TAIL characters finds what a search of the whole piece finds ("^" can match at
# the tail's start only if the piece is no longer than the tail)
ABBREVIATION_TAIL = 12


class TokenCounter(Protocol):
    """Counts word pieces of texts the way the embedding model will."""

    def count(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class Chunk:
    """A passage of a document: its verbatim text, offsets into the cleaned text, and location."""
    doc: str
    ord: int
    start: int
    end: int
    text: str
    tokens: int
    page: int | None
    section: str | None
    location: str
    # its sentences as (start, end) in `text`: the document's sentences inside the chunk (a sentence too long for
    # one chunk is there as the pieces it was cut into); the answer sentences are chosen among them
    sentences: tuple[tuple[int, int], ...] = ()
    # each sentence's word-piece ids (`index.embedding.PIECE_DTYPE` bytes) when they are exactly the model
    # tokenizer's pieces of `text` one sentence after another (a counter that gives ids, the chunk `spaced`, no
    # sentence cut): the int8 encoder reads them instead of tokenizing the text again
    # (`Embedder.encode_passages`). None: the encoder tokenizes the text
    pieces: tuple[bytes, ...] | None = None

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


class _SentenceBuffers(threading.local):
    """blingfire's output buffers, kept and grown as needed (one set per thread): making ctypes arrays for
    every line cost three times the segmentation itself."""
    size = 0

    def get(self, size: int):
        if size > self.size:
            self.size = max(size, 2 * self.size, 4096)
            self.out = ctypes.create_string_buffer(self.size)
            self.starts, self.ends = (ctypes.c_int32 * self.size)(), (ctypes.c_int32 * self.size)()
        return self.out, self.starts, self.ends


_buffers = _SentenceBuffers()


def sentence_starts(line: str) -> list[int]:
    """Where blingfire's sentences begin in `line` (character offsets, ascending, each inside the line).

    The same blingfire function as `blingfire.text_to_sentences_and_offsets`, whose Python wrapper makes
    new buffers for every call and turns UTF-8 byte offsets into character offsets one byte at a time
    (profiled: a quarter of a build's time outside the model). Here the buffers are reused, ASCII needs no
    mapping and other text is mapped with NumPy."""
    import blingfire

    data = line.encode("utf-8")
    size = len(data) * 2  # the room blingfire's own wrapper gives it
    if not size:
        return []
    out, starts, ends = _buffers.get(size)
    n = blingfire.blingfire.TextToSentencesWithOffsets(ctypes.c_char_p(data), ctypes.c_int(len(data)),
                                                       ctypes.byref(out), ctypes.byref(starts), ctypes.byref(ends),
                                                       ctypes.c_int(size))
    if n <= 0 or n > size:
        return []
    count = ctypes.string_at(out, n).split(b"\0", 1)[0].count(b"\n") + 1
    offsets = {o for o in starts[:count] if 0 <= o < len(data)}
    if len(data) != len(line):  # not ASCII: byte offset -> index of the character starting there
        import numpy as np
        lead = (np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80
        offsets = set((np.cumsum(lead) - 1)[sorted(offsets)].tolist())
    return sorted(offsets)


def split_sentences(text: str, base: int = 0) -> list[tuple[int, int]]:
    """Sentence spans of `text` (offsets + `base`), line by line; together they cover every non-space character."""
    spans: list[tuple[int, int]] = []
    for line in re.finditer(r"[^\n]+", text):
        chunk = line.group(0)
        if not chunk.strip():
            continue
        starts = sentence_starts(chunk) or [0]
        lead = len(chunk) - len(chunk.lstrip())
        starts = [max(s, lead) for s in starts]
        starts[0] = lead
        pieces = []
        for i, s in enumerate(starts):
            e = starts[i + 1] if i + 1 < len(starts) else len(chunk)
            piece = chunk[s:e].rstrip()
            if not piece:
                continue
            # the abbreviation ends the piece, so its last ABBREVIATION_TAIL characters decide (a search of the
            # whole piece tried the pattern at every character: 0.46 s of a SciFact build)
            if pieces and _ABBREVIATION.search(chunk[max(pieces[-1][0], pieces[-1][1] - ABBREVIATION_TAIL):pieces[-1][1]]):
                pieces[-1] = (pieces[-1][0], s + len(piece))
            else:
                pieces.append((s, s + len(piece)))
        offset = base + line.start()
        spans.extend((offset + s, offset + e) for s, e in pieces)
    return spans


def _split_long(text: str, start: int, end: int, budget: int, counter: TokenCounter) -> list[tuple[int, int, int]]:
    """Cut one over-long sentence into pieces of at most `budget` word pieces, on word boundaries if possible."""
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    counts = counter.count([text[s:e] for s, e in words])
    pieces: list[tuple[int, int, int]] = []
    cur_start, cur_end, cur_tokens = None, None, 0
    for (s, e), n in zip(words, counts):
        if n > budget:  # one "word" longer than the budget (a URL, a base64 blob): cut it by characters
            if cur_start is not None:
                pieces.append((cur_start, cur_end, cur_tokens))
                cur_start, cur_tokens = None, 0
            pieces.extend(_split_chars(text, s, e, budget, counter))
            continue
        if cur_start is not None and cur_tokens + n > budget:
            pieces.append((cur_start, cur_end, cur_tokens))
            cur_start, cur_tokens = None, 0
        if cur_start is None:
            cur_start = s
        cur_end, cur_tokens = e, cur_tokens + n
    if cur_start is not None:
        pieces.append((cur_start, cur_end, cur_tokens))
    return pieces


def _split_chars(text: str, start: int, end: int, budget: int, counter: TokenCounter) -> list[tuple[int, int, int]]:
    pieces, pos, width = [], start, max(budget, 8)
    while pos < end:
        stop = min(end, pos + width)
        n = counter.count([text[pos:stop]])[0]
        while n > budget and stop - pos > 1:
            stop = pos + max(1, (stop - pos) // 2)
            n = counter.count([text[pos:stop]])[0]
        pieces.append((pos, stop, n))
        pos = stop
    return pieces


def spaced(text: str, spans: Sequence[Sequence[int]]) -> bool:
    """Whether only BERT's spaces (space, tab, newline, carriage return; at least one) stand between each span
    of `text` and the next: then the tokenizer reads the text as the spans' word pieces one after another, and
    the keyword analyser as their terms. (Other space characters the tokenizer would delete, or read as a
    piece, or join the words either side of; the analyser joins digit groups across a no-break space.)"""
    for a, b in zip(spans, spans[1:]):
        if b[0] <= a[1] or text[a[1]:b[0]].strip(" \t\n\r"):
            return False
    return True


def _pieces(text: str, units: Sequence[tuple[int, int, int]], ids: Sequence[bytes | None]) -> tuple[bytes, ...] | None:
    """A chunk's `pieces`: its sentences' ids, if each has them and the chunk is `spaced`."""
    if any(b is None for b in ids) or not spaced(text, units):
        return None
    return tuple(ids)


def chunk_terms(chunks: Sequence[Chunk], analyzer: Callable[[str], list[str]]) -> list[str]:
    """Each chunk's keyword terms by `analyzer`, joined by spaces: the same terms as analysing its text. Where
    the chunk is `spaced` they are its sentences' terms one after another (the analyser's words never cross a
    space), so the sentence a chunk shares with the one before (`overlap`) is analysed once."""
    out, before = [], {}
    for c in chunks:
        if not spaced(c.text, c.sentences):
            out.append(" ".join(analyzer(c.text)))
            before = {}
            continue
        own = {}
        for s, e in c.sentences:
            key = (c.start + s, c.start + e)
            terms = before.get(key)
            own[key] = terms if terms is not None else " ".join(analyzer(c.text[s:e]))
        out.append(" ".join(t for t in own.values() if t))
        before = own
    return out


COUNT_SLICE = 5000  # sentences counted at a time, so that progress moves within a large file


def chunk_document(document: Document, counter: TokenCounter, max_tokens: int = 200,
                   overlap: int = 1, progress: Callable[[int], None] | None = None) -> list[Chunk]:
    """Pack the document's sentences into chunks of at most `max_tokens` word pieces, `overlap` sentences shared.

    A sentence is split only when it alone exceeds the budget. Chunks never cross a PDF page boundary.
    `progress(offset)` is told how far into the text the work is, as it goes (a large file takes minutes).
    """
    text = document.text
    spans = split_sentences(text)
    counts: list[int] = []
    ids_of = getattr(counter, "word_piece_ids", None)  # ids as well as counts, where the counter gives them
    ids: list[bytes | None] | None = [] if ids_of is not None else None
    for i in range(0, len(spans), COUNT_SLICE):
        part = [text[s:e] for s, e in spans[i:i + COUNT_SLICE]]
        found = ids_of(part) if ids is not None else None
        if found is None:
            ids = None
            counts.extend(counter.count(part))
        else:
            ids.extend(found)
            counts.extend(len(b) // PIECE_DTYPE.itemsize for b in found)
        if progress:
            progress(spans[min(i + COUNT_SLICE, len(spans)) - 1][1])
    units: list[tuple[int, int, int]] = []
    unit_ids: list[bytes | None] = []
    for k, ((s, e), n) in enumerate(zip(spans, counts)):
        if n > max_tokens:  # cut into pieces, whose ids are not known
            cut = _split_long(text, s, e, max_tokens, counter)
            units.extend(cut)
            unit_ids.extend([None] * len(cut))
        else:
            units.append((s, e, n))
            unit_ids.append(ids[k] if ids is not None else None)
    pages = [document.page_at(s) for s, _, _ in units]
    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j, total = i, 0
        while j < len(units) and total + units[j][2] <= max_tokens and pages[j] == pages[i]:
            total += units[j][2]
            j += 1
        j = max(j, i + 1)
        start, end = units[i][0], units[j - 1][1]
        chunks.append(Chunk(document.doc, len(chunks), start, end, text[start:end], total, pages[i],
                            document.section_at(start), document.location(start, end),
                            tuple((s - start, e - start) for s, e, _ in units[i:j]),
                            _pieces(text, units[i:j], unit_ids[i:j])))
        if j >= len(units):
            break
        nxt = j
        # step back over up to `overlap` sentences: at most half the budget, and the next sentence must still fit
        while j - nxt < overlap and nxt - 1 > i and pages[nxt - 1] == pages[j]:
            shared = sum(u[2] for u in units[nxt - 1:j])
            if shared > max_tokens // 2 or shared + units[j][2] > max_tokens:
                break
            nxt -= 1
        i = nxt
    return chunks


# ---------------------------------------------------------------- cleaning and chunking in worker processes

_worker: dict = {}


def start_worker(embedding_cfg, common: frozenset[str], max_tokens: int, overlap: int,
                 analyzer: Callable[[str], list[str]], busy=None, slots=None) -> None:
    """A chunking process's setup (`ProcessPoolExecutor` initializer): its own word-piece counter, made from
    the configuration as the build's own is (it reads only the model's tokenizer), the build's settings and
    the keyword index's analyser (`index.bm25.Analyzer`: inherited, the worker being forked). `busy`: a shared
    array of two integers a worker, where `clean_and_chunk` says which batch and which file of it it is on (the
    worker's place in it taken from the shared counter `slots`), so the build can name a file a worker is stuck
    on."""
    import signal
    from index.embedding import Embedder
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the build's to handle: it stops the workers
    slot = None
    if busy is not None and slots is not None:
        with slots.get_lock():
            slot, slots.value = slots.value, slots.value + 1
    _worker.update(counter=Embedder(embedding_cfg), common=common, max_tokens=max_tokens, overlap=overlap,
                   analyzer=analyzer, busy=busy if slot is not None and 2 * slot < len(busy) else None, slot=slot)


def _on(batch: int, item: int) -> None:
    """Say which batch and which file of it this worker is on (-1, -1: none)."""
    busy = _worker.get("busy")
    if busy is not None:
        slot = 2 * _worker["slot"]
        busy[slot], busy[slot + 1] = batch, item


def clean_and_chunk(records: list[tuple], batch: int = -1) -> list[tuple]:
    """In a chunking process: each spooled file (`DocumentStream.records`) cleaned into its Document and
    chunked, as the build does it in its own process, and each chunk's keyword terms analysed (joined by
    spaces: one string a chunk is quicker to send than a list). Per record (name, Document, chunks, terms,
    characters read), or (name, None, why it was skipped, None, characters read). `batch`: the build's number
    for these records, said with each file's place as the worker comes to it (`start_worker`)."""
    from index.documents import LoadError, chars_read, make_document
    out = []
    analyzer = _worker["analyzer"]
    for item, (rel, path, lines, meta) in enumerate(records):
        _on(batch, item)
        raw = chars_read(lines)
        try:
            document = make_document(rel, path, lines, meta, _worker["common"])
        except LoadError as exc:
            out.append((rel, None, str(exc), None, raw))
            continue
        chunks = chunk_document(document, _worker["counter"], _worker["max_tokens"], _worker["overlap"])
        out.append((rel, document, chunks, chunk_terms(chunks, analyzer), raw))
    _on(-1, -1)
    return out
