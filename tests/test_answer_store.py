"""Answers kept for their buttons (index.store.AnswerStore): read back whole, the newest `keep` only."""

from __future__ import annotations

import datetime as dt

from index.answer import Answer, Passage
from index.store import AnswerStore


def make(n: int) -> Answer:
    p = Passage(chunk_id=n, doc=f"r{n}.txt", title="T", date=dt.date(2018, 1, 2), url=None, location="p. 1",
                text="One. Two.", start=0, end=9, answer_spans=[(0, 4)], scores={"dense": 0.5, "sentence": 0.3},
                duplicates=["copy.txt"], duplicate_ids=[9])
    return Answer(f"question {n}?", [p], True, 12.5, mode="hybrid", filters={"doc": "r.txt"})


def test_an_answer_is_read_back_whole_and_only_the_newest_are_kept(tmp_path):
    store = AnswerStore(tmp_path, keep=3)
    for n in range(5):
        store.put(f"{n:016x}", make(n))
    assert store.get(f"{4:016x}") == make(4)
    assert [store.get(f"{n:016x}") is None for n in range(5)] == [True, True, False, False, False]
    again = AnswerStore(tmp_path, keep=3)  # another process after a restart
    assert again.get(f"{3:016x}") == make(3) and again.get("missing") is None


def test_a_year_only_date_and_merged_parts_come_back_as_they_were(tmp_path):
    from index.documents import YearOnly
    answer = make(1)
    answer.passages[0].date = YearOnly(2018)
    answer.passages[0].parts = [(1, 0, 9), (2, 9, 20)]
    store = AnswerStore(tmp_path)
    store.put("k", answer)
    again = store.get("k")
    assert again == answer and isinstance(again.passages[0].date, YearOnly)


def test_an_unreadable_entry_is_as_if_expired(tmp_path):
    store = AnswerStore(tmp_path)
    store.put("k", make(1))
    store._connect().execute("UPDATE answers SET data = ?", (b"not zlib",)).connection.commit()
    assert store.get("k") is None
