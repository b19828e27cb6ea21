"""Faults: SIGKILL of `citebot index --rebuild` at several points never loses the live index; stale locks
are recovered; a second build in another process is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_config
from index.kb import KnowledgeBase

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "The inspectorate visited the force control room in the spring of that year.",
    "Officers said that staffing levels on night shifts had fallen sharply.",
    "Victims of burglary were not always told about the progress of their case.",
    "The report found that neighbourhood teams were often taken away for other duties.",
    "Call handlers answered most emergency calls within ten seconds.",
    "Inspectors examined a sample of incident records from the previous six months.",
]


def big_docs(target: Path, extra: int = 40) -> Path:
    """docs/ plus `extra` synthetic reports, so a rebuild lasts long enough to be interrupted."""
    shutil.copytree(ROOT / "docs", target)
    for i in range(extra):
        body = " ".join(SENTENCES[(i + j) % len(SENTENCES)] + f" Paragraph {i}-{j}." for j in range(40))
        (target / f"synthetic-{i:02d}.txt").write_text(f"Synthetic report number {i}\n{body}\n")
    return target


def citebot(*args, docs: Path, index: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bot.cli", "--docs", str(docs), "--index", str(index), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(condition, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return False


def builds(index: Path) -> set[str]:
    path = index / "builds"
    return {p.name for p in path.iterdir()} if path.exists() else set()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder):
    base = tmp_path_factory.mktemp("faults")
    docs = big_docs(base / "docs")
    index = base / "index"
    kb = KnowledgeBase(make_config(docs, index), embedder=embedder)
    kb.build()
    return docs, index


def assert_live_index_answers(docs, index, embedder):
    kb = KnowledgeBase(make_config(docs, index), embedder=embedder)
    answer = kb.ask("How many crimes does the force fail to record each year?")
    assert any("21,200" in p.text for p in answer.passages)
    assert len(kb.documents()) == 45


@pytest.mark.parametrize("point", ["start", "chunking", "embedding", "writing"])
def test_sigkill_during_rebuild_keeps_the_old_index(corpus, embedder, point):
    docs, index = corpus
    live = (index / "current").resolve()
    before = builds(index)
    proc = citebot("index", "--rebuild", docs=docs, index=index)
    try:
        if point == "start":
            time.sleep(0.3)
        elif point == "writing":  # the new build directory exists but is not yet published
            assert wait_for(lambda: builds(index) - before or proc.poll() is not None)
        else:  # the progress bar of that stage is on stderr
            fd = proc.stderr.fileno()
            os.set_blocking(fd, False)
            seen = b""

            def stage_started():
                nonlocal seen
                try:
                    seen += os.read(fd, 65536)
                except BlockingIOError:
                    pass
                return point.encode() in seen or proc.poll() is not None
            assert wait_for(stage_started)
        assert proc.poll() is None, "the build finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # never half a build: the old one, or (if the kill came just after the swap) the complete new one
    assert (index / "current").resolve() == live or point == "writing"
    assert_live_index_answers(docs, index, embedder)
    # the lock died with the process: the next build runs (and sweeps the half-written directory)
    done = citebot("index", docs=docs, index=index)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "0 embedded" in out
    assert builds(index) <= {live.name, (index / "current").resolve().name}
    assert_live_index_answers(docs, index, embedder)


def test_a_second_build_process_is_refused(corpus):
    docs, index = corpus
    first = citebot("index", "--rebuild", docs=docs, index=index)
    try:
        lock = index / "build.lock"
        assert wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid))
        second = citebot("index", docs=docs, index=index)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 1
        assert f"another build is running (pid {first.pid})" in err and "Traceback" not in err
    finally:
        first.communicate(timeout=300)
    assert first.returncode == 0
