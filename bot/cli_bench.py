"""`citebot bench`: speed, memory and index size on synthetic corpora (see index/bench.py)."""

from __future__ import annotations

import json
import sys


def _sizes(value: str) -> list[int]:
    import argparse
    out = []
    for part in value.split(","):
        part = part.strip().lower().replace("_", "")
        mult = 1_000_000 if part.endswith("m") else 1000 if part.endswith("k") else 1
        try:
            n = int(float(part.rstrip("mk")) * mult)
        except ValueError:
            n = 0
        if not 10 <= n <= 2_000_000:
            raise argparse.ArgumentTypeError(f"'{part}' is not a number of chunks from 10 to 2M (e.g. 10k, 100000, 1M)")
        out.append(n)
    return out


def requested_sizes(args) -> list[int]:
    """The corpus sizes of every --chunks (each flag a list of comma-separated groups), ascending, once each."""
    return sorted({n for flag in (args.chunks or [[[10_000, 100_000]]]) for group in flag for n in group})


def add_commands(sub) -> dict:
    """Add `bench` to the `citebot` sub-commands; returns {"bench": handler}."""
    p = sub.add_parser("bench", help="measure build speed, query latency per mode, memory and index size on "
                       "synthetic corpora of realistic chunks")
    p.add_argument("--chunks", action="append", nargs="+", type=_sizes, metavar="N",
                   help="corpus sizes in chunks (10k, 100000, 1M; several after one --chunks, comma-separated or "
                        "repeated; default: 10k 100k)")
    p.add_argument("--queries", type=int, default=100, metavar="Q", help="timed questions per mode (default: 100)")
    p.add_argument("--sample", type=int, default=2000, metavar="S",
                   help="chunks encoded for real; larger corpora get synthetic vectors (default: 2000)")
    p.add_argument("--pool", type=int, default=3000, metavar="P", help="sentences drawn from the sources (default: 3000)")
    p.add_argument("--source", action="append", default=[], metavar="PATH",
                   help="more sentences: a folder of documents or a BEIR corpus.jsonl (the docs folder is always used)")
    p.add_argument("--workdir", metavar="DIR", help="keep corpora and indexes here (default: a temporary folder)")
    p.add_argument("--exact-below", type=int, metavar="N", help="override vectors.exact_below for the bench")
    p.add_argument("--storage", choices=("float32", "float16"), help="override vectors.storage for the bench")
    p.add_argument("--ef-search", type=int, metavar="EF", help="override vectors.ef_search for the bench")
    p.add_argument("--backend", choices=("torch", "onnx-int8"), help="override embedding.backend for the bench")
    p.add_argument("--in-process", action="store_true", help="time queries in this process (no cold start)")
    p.add_argument("--json", action="store_true", help="print one JSON object per size")
    p.add_argument("--corpus", metavar="DIR", help="instead: build this folder of documents as `citebot index` does "
                   "and time it against raw model.encode of the same chunks, each build batch paired with one")
    p.add_argument("--rounds", type=int, default=2, metavar="N",
                   help="with --corpus: how many builds (default: 2)")
    p.add_argument("--against", choices=("torch", "onnx-int8"),
                   help="with --corpus: then build the folder as many times with this backend and compare the two")
    return {"bench": cmd_bench}


def cmd_bench(kb, args) -> int:
    from index.bench import BenchOptions, format_result, json_result, run_bench
    from index.embedding import Embedder
    cfg = kb.cfg
    for key, value in (("exact_below", args.exact_below), ("storage", args.storage), ("ef_search", args.ef_search)):
        if value is not None:
            setattr(cfg.vectors, key, value)
    from bot.cli import CliError
    embedder = kb.embedder
    if args.backend and args.backend != cfg.embedding.backend:
        cfg.embedding.backend = args.backend
        embedder = Embedder(cfg.embedding)
    if args.against and not args.corpus:
        raise CliError("bench: --against compares two builds of a folder; give the folder with --corpus")
    if args.against and args.against == cfg.embedding.backend:
        raise CliError(f"bench: --against {args.against} is the backend being measured; choose the other one")
    if args.corpus:
        import copy
        from pathlib import Path
        from index.bench import bench_corpus, compare_backends, format_corpus_result
        from index.build import BuildError
        folder = Path(args.corpus).expanduser()
        if not folder.is_dir():
            raise CliError(f"bench: --corpus {args.corpus} is not a folder of documents")

        def log(message: str) -> None:
            print(message, file=sys.stderr, flush=True)
        rounds, workdir = max(1, args.rounds), args.workdir and Path(args.workdir)
        try:
            result = bench_corpus(cfg, embedder, folder, rounds, workdir, log=log)
            if args.against:
                other = copy.deepcopy(cfg)
                other.embedding.backend = args.against
                log(f"the same builds with backend {args.against}")
                result = compare_backends(result, bench_corpus(other, Embedder(other.embedding), folder, rounds,
                                                               workdir, log=log))
        except BuildError as exc:
            raise CliError(f"bench: {exc}") from None
        print(json.dumps(result) if args.json else format_corpus_result(result), flush=True)
        return 0
    sizes = requested_sizes(args)
    opts = BenchOptions(sizes=sizes, queries=max(5, args.queries), sample=max(10, args.sample), pool=args.pool,
                        sources=args.source, workdir=args.workdir, in_process=args.in_process)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def emit(result: dict) -> None:
        if args.json:
            print(json.dumps(json_result(result)), flush=True)
        else:
            print(format_result(result) + "\n", flush=True)

    run_bench(cfg, embedder, opts, log=log, emit=emit)
    return 0
