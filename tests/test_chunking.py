"""Chunking: chunks cover the text, respect the word-piece budget, and their offsets point at their text."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from index.chunking import chunk_document, split_sentences
from index.documents import Block, Document, load_documents

DOCS = Path(__file__).resolve().parent.parent / "docs"


class WordCounter:
    """One 'word piece' per whitespace-separated word, plus one per 8 characters of a long word."""

    def count(self, texts):
        return [sum(1 + len(w) // 8 for w in t.split()) for t in texts]


def make_doc(text: str) -> Document:
    blocks, pos = [], 0
    for i, line in enumerate(text.split("\n"), 1):
        blocks.append(Block(pos, pos + len(line), line=i))
        pos += len(line) + 1
    return Document("t.txt", Path("t.txt"), "text", "t", None, None, text, blocks)


def check_chunks(doc: Document, chunks, budget: int, counter) -> None:
    covered = [False] * len(doc.text)
    sentences = split_sentences(doc.text)
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text  # offsets point at the right text
        assert c.tokens <= budget and counter.count([c.text])[0] <= budget + 2  # +2: joins of split words
        # its sentences (where the answer sentence is chosen): in order, apart, from its start to its end,
        # trimmed; every sentence of the document that lies inside it is one of them (a long one in pieces)
        assert c.sentences and c.sentences[0][0] == 0 and c.sentences[-1][1] == len(c.text)
        assert all(0 <= s < e <= len(c.text) and c.text[s:e].strip() == c.text[s:e] for s, e in c.sentences)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(c.sentences, c.sentences[1:]))
        inside = {(s - c.start, e - c.start) for s, e in sentences if c.start <= s and e <= c.end}
        assert inside <= set(c.sentences)
        for i in range(c.start, c.end):
            covered[i] = True
    lost = "".join(ch for ch, cov in zip(doc.text, covered) if not cov)
    assert lost.strip() == "", f"text not in any chunk: {lost[:80]!r}"


def test_seed_documents_with_the_model_tokenizer(embedder):
    docs, _ = load_documents(DOCS)
    for doc in docs:
        chunks = chunk_document(doc, embedder, max_tokens=200, overlap=1)
        assert len(chunks) >= 2
        check_chunks(doc, chunks, 200, embedder)
        assert all(embedder.count([c.text])[0] <= 200 for c in chunks)
        # one sentence of overlap: the next chunk starts at the previous one's last sentence, unless that
        # sentence is over half the budget or leaves no room for the next one
        sentences = split_sentences(doc.text)
        for a, b in zip(chunks, chunks[1:]):
            last = [doc.text[s:e] for s, e in sentences if a.start <= s < a.end][-1]
            following = next(doc.text[s:e] for s, e in sentences if s >= a.end)
            n_last, n_next = embedder.count([last, following])
            assert b.start < a.end or n_last > 100 or n_last + n_next > 200


def test_sentences_are_not_split_unless_too_long(embedder):
    text = ("The force records 76 per cent of crimes. " * 3 + "Mr. Matthews said it was good. Dr. Who agreed. "
            "It was signed off at the end of the long process by the Cllr. Brown of the city.")
    spans = split_sentences(text)
    sentences = [text[s:e] for s, e in spans]
    assert sentences[:3] == ["The force records 76 per cent of crimes."] * 3
    assert not any(x.endswith(("Mr.", "Dr.", "Cllr.")) for x in sentences)  # no break after a title
    assert sentences[-1].startswith("It was signed")  # (blingfire breaks after "Cllr.", late in a long piece)
    assert "".join(sentences).replace(" ", "") == text.replace(" ", "")
    long = " ".join(["word"] * 900) + "."
    doc = make_doc("Short first sentence. " + long)
    chunks = chunk_document(doc, embedder, max_tokens=100, overlap=1)
    assert chunks[0].text.startswith("Short first sentence. word")  # only the over-long sentence is cut
    # blingfire reads it all as one sentence (no capital after the stop): each chunk holds one piece of it
    assert [c.sentences for c in chunks] == [((0, len(c.text)),) for c in chunks]
    assert len(chunks) >= 9
    check_chunks(doc, chunks, 100, embedder)


def test_a_single_huge_word_is_cut_by_characters(embedder):
    doc = make_doc("x" * 5000)
    chunks = chunk_document(doc, embedder, max_tokens=64, overlap=0)
    check_chunks(doc, chunks, 64, embedder)


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(words, st.sampled_from([" ", ". ", "\n", "! ", "  ", "? "])), min_size=1, max_size=120),
       st.integers(min_value=4, max_value=60), st.integers(min_value=0, max_value=3))
def test_chunker_properties(parts, budget, overlap):
    raw = "".join(w + sep for w, sep in parts)
    text = "\n".join(re.sub(r"\s+", " ", line).strip() for line in raw.split("\n"))
    if not text.strip():
        return
    doc = make_doc(text)
    counter = WordCounter()
    chunks = chunk_document(doc, counter, max_tokens=budget, overlap=overlap)
    check_chunks(doc, chunks, budget, counter)
    assert [c.ord for c in chunks] == list(range(len(chunks)))


def _wrapper_starts(line: str) -> list[int] | None:
    """Sentence starts as blingfire's own Python wrapper finds them (None where it fails)."""
    import blingfire
    try:
        _, offsets = blingfire.text_to_sentences_and_offsets(line)
    except Exception:
        return None
    return sorted({s for s, _ in offsets if 0 <= s < len(line)})


def test_sentence_starts_match_blingfires_own_wrapper_on_the_corpus():
    from index.chunking import sentence_starts
    lines = [line for p in sorted(DOCS.glob("*.txt")) for line in p.read_text().splitlines() if line.strip()]
    long_line = " ".join(lines)  # one long line: many sentences, curly quotes and pound signs
    for line in [*lines, long_line, "Mr. Smith went to Washington. He met Dr. Jones! Then? “Yes.” €5 — done."]:
        assert sentence_starts(line) == _wrapper_starts(line), line
    assert len(sentence_starts(long_line)) > 50


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab AB.?!,;'\"\t") + ["é", "€", "😀", "中文", "“", "”", "\u00a0", "Mr. ", "U.S. ",
                                                          "\x01", "Ünïcödé. "]), min_size=1, max_size=60).map("".join))
def test_sentence_starts_match_blingfires_own_wrapper_on_any_text(line):
    from index.chunking import sentence_starts
    expected = _wrapper_starts(line)
    if expected is not None:
        assert sentence_starts(line) == expected


def test_word_pieces_are_counted_in_full_even_after_the_model_truncated(embedder):
    docs, _ = load_documents(DOCS)
    long_text = docs[0].text  # far over the model's 256 word pieces
    embedder.encode([long_text])  # the model's tokenizer now truncates at 256
    texts = [long_text, "Leicestershire Police", "", "21,200 crimes — “inadequate”"]
    counted = embedder.count(texts)
    plain = embedder.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    assert counted == [len(ids) for ids in plain] and counted[0] > 600 and counted[2] == 0


def _tokenizer_counts(embedder, texts):
    return [len(e.ids) for e in embedder._word_pieces.encode_batch(list(texts), add_special_tokens=False)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.characters(max_codepoint=127), st.sampled_from(
    ["[CLS]", "[mask]", "Ünïcödé", "中文", "\u00a0", "a" * 105, "21,200", "don't", "e.g.", "\x0b", "\x7f"])),
    max_size=80).map("".join))
def test_word_pieces_counted_word_by_word_are_the_tokenizers_count(embedder, text):
    from index.embedding import WordPieceCounter
    counter = WordPieceCounter.of(embedder._word_pieces)
    assert counter is not None  # all-MiniLM-L6-v2's tokenizer is BERT-style
    texts = [text, text.upper(), f"x{text}y"]
    assert counter.count(texts) == _tokenizer_counts(embedder, texts)
    assert counter.ids(texts) == _tokenizer_ids(embedder, texts)  # the pieces themselves, word by word


def _tokenizer_ids(embedder, texts):
    from index.embedding import PIECE_DTYPE
    return [np.asarray(e.ids, dtype=PIECE_DTYPE).tobytes()
            for e in embedder._word_pieces.encode_batch(list(texts), add_special_tokens=False)]


# sentences joined by: BERT's spaces (the chunk's pieces are its sentences' one after another), nothing, or
# other characters Python counts as spaces (\x0c, which the tokenizer deletes; \u2028; \u00a0, across which the
# keyword analyser joins digit groups)
JOINS = [" ", "\n", " \t\r\n ", "", "\x0c", "\u2028", "\u00a0"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(
    ["The force recorded crime.", "Ünïcödé victims were 中文 supported!", "A [CLS] token, e.g. here.",
     "qz" * 45 + ".", "qz" * 60 + " too long for a word.", "Inspectors visited in 2017.", "Dr. Smith said so.", "\x07Bell.", "It cost 21",
     "200 in all, 1,", "500 more."]), st.sampled_from(JOINS)),
    min_size=1, max_size=30), st.integers(20, 120))
def test_chunk_word_pieces_are_the_tokenizers_pieces_of_its_text(embedder, parts, budget):
    """A chunk's `pieces`, where chunking gives them, are exactly what the model's tokenizer makes of the chunk's
    text (so the int8 encoder may read them instead); where sentences are joined by anything but BERT's spaces,
    or one was cut by characters, it has none. Its keyword terms made sentence by sentence are its text's."""
    from index.embedding import PIECE_DTYPE
    from index.bm25 import Analyzer
    from index.chunking import chunk_terms
    text = "".join(sentence + join for sentence, join in parts)
    chunks = chunk_document(make_doc(text), embedder, budget, overlap=1)
    analyzer = Analyzer()  # each chunk's keyword terms, its shared sentences analysed once: those of its text
    assert chunk_terms(chunks, analyzer) == [" ".join(analyzer(c.text)) for c in chunks]
    whole = set(split_sentences(text))
    for c in chunks:
        joins = [c.text[e:s] for (_, e), (s, _) in zip(c.sentences, c.sentences[1:])]
        if c.pieces is None:  # why: a join of another kind, or a sentence over the budget cut into pieces
            cut = any((c.start + s, c.start + e) not in whole for s, e in c.sentences)
            assert cut or any(not j or j.strip(" \t\n\r") for j in joins)
            continue
        assert len(c.pieces) == len(c.sentences)
        assert [len(b) // PIECE_DTYPE.itemsize for b in c.pieces] == embedder.count([c.text[s:e] for s, e in c.sentences])
        assert b"".join(c.pieces) == _tokenizer_ids(embedder, [c.text.strip()])[0]


def test_sentences_joined_by_a_character_the_tokenizer_deletes_give_no_word_pieces(embedder):
    """BERT's tokenizer deletes control characters, joining the words either side ("Inspectors\x1cvisited" is
    one word to it), so sentences so joined are not their pieces one after another: the chunk has none."""
    from index.chunking import _pieces
    for join, whole in ((" ", True), ("\n\t", True), ("\x1c", False), ("", False), ("\u00a0", False)):
        text = f"Inspectors{join}visited"
        units = [(0, 10, 0), (10 + len(join), len(text), 0)]
        ids = embedder.word_piece_ids(["Inspectors", "visited"])
        got = _pieces(text, units, ids)
        assert (got is not None) == whole, repr(join)
        if got is not None:
            assert b"".join(got) == _tokenizer_ids(embedder, [text])[0]
    glued = "Inspectors\x1cvisited"
    assert _tokenizer_ids(embedder, [glued])[0] != b"".join(embedder.word_piece_ids(["Inspectors", "visited"]))
    assert _pieces("a b", [(0, 1, 1), (2, 3, 1)], [b"x", None]) is None  # a sentence without ids


def test_keyword_terms_sentence_by_sentence_only_where_that_reads_as_the_text():
    """`chunk_terms` analyses a chunk sentence by sentence (its shared sentence once) only where only BERT's
    spaces stand between them: the analyser joins "21 200" across a no-break space into one number."""
    from index.bm25 import Analyzer
    from index.chunking import Chunk, chunk_terms
    analyzer = Analyzer()

    def chunk(text, start, sentences):
        return Chunk("d", 0, start, start + len(text), text, 0, None, None, "", sentences)
    glued = chunk("It cost 21\u00a0200 pounds", 0, ((0, 10), (11, 21)))
    first, second = chunk("Crime fell. It rose", 0, ((0, 11), (12, 19))), chunk("It rose again.", 12, ((0, 7), (8, 14)))
    calls = []
    counting = lambda text: calls.append(text) or analyzer(text)
    assert chunk_terms([glued, first, second], counting) == [" ".join(analyzer(c.text)) for c in (glued, first, second)]
    assert "21200" in chunk_terms([glued], analyzer)[0]
    assert calls == [glued.text, "Crime fell.", "It rose", "again."]  # "It rose", shared, analysed once


def test_chunks_have_word_pieces_only_with_a_counter_that_gives_them(embedder):
    from dataclasses import replace
    doc = make_doc("The force recorded crime. Victims were supported.\nInspectors came back.")
    assert all(c.pieces is not None for c in chunk_document(doc, embedder, 200))
    assert all(c.pieces is None for c in chunk_document(doc, WordCounter(), 200))  # counts only
    torch = type(embedder)(replace(embedder.cfg, backend="torch"))  # tokenizes for itself: no ids wanted
    assert torch.word_piece_ids(["a text"]) is None
    assert all(c.pieces is None for c in chunk_document(doc, torch, 200))
    from index.embedding import WordPieceCounter
    spanning = type(embedder)(embedder.cfg)  # an added token holding a space could join two sentences
    spanning._fast_count = WordPieceCounter(embedder._word_pieces, True, ["[CLS]", "new york"])
    assert spanning.word_piece_ids(["a text"]) is None


def test_word_pieces_of_every_sentence_of_the_docs_are_the_tokenizers_count(embedder):
    docs, _ = load_documents(DOCS)
    sentences = [d.text[s:e] for d in docs for s, e in split_sentences(d.text)]
    assert embedder.count(sentences) == _tokenizer_counts(embedder, sentences) and len(sentences) > 100
    assert embedder._fast_count  # counted word by word, not by the tokenizer


def test_word_pieces_of_a_cased_bert_tokenizer_are_its_count(embedder):
    import json
    from tokenizers import Tokenizer
    from index.embedding import WordPieceCounter
    spec = json.loads(embedder._word_pieces.to_str())
    spec["normalizer"]["lowercase"] = False  # a cased model's tokenizer: the same vocabulary, case kept
    cased = Tokenizer.from_str(json.dumps(spec))
    cased.no_truncation()
    cased.no_padding()
    from index.embedding import PIECE_DTYPE
    counter = WordPieceCounter.of(cased)
    texts = ["Hello [CLS] World", "The Police Report.", "HMICFRS inspected LEICESTERSHIRE", "x[MASK]y", "a\x07B"]
    assert counter is not None and not counter.lowercase
    assert counter.count(texts) == [len(e.ids) for e in cased.encode_batch(texts, add_special_tokens=False)]
    assert [np.frombuffer(b, dtype=PIECE_DTYPE).tolist() for b in counter.ids(texts)] == [
        e.ids for e in cased.encode_batch(texts, add_special_tokens=False)]


def test_a_tokenizer_that_is_not_bert_style_is_counted_by_the_tokenizer_itself():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from index.embedding import WordPieceCounter
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert WordPieceCounter.of(bpe) is None


def test_a_damaged_tokenizer_file_is_a_clear_error(tmp_path):
    from index.config import EmbeddingConfig
    from index.embedding import Embedder, EmbeddingError, resolve_model
    packaged = Path(resolve_model("all-MiniLM-L6-v2"))
    for item in packaged.iterdir():
        (tmp_path / item.name).symlink_to(item)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(EmbeddingError, match="cannot read the tokenizer .*tokenizer.json"):
        Embedder(EmbeddingConfig(model=str(tmp_path))).count(["Leicestershire Police"])
