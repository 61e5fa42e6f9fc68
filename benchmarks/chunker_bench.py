"""Chunker benchmark (issue #15): our ``chunk_text`` against the libraries that could replace it.

Candidates, each asked for chunks of at most ``size`` characters sharing about ``overlap`` characters:

* ``embeddix``: ``embeddix_mcp.chunking.chunk_text`` (what ``ingest`` uses);
* ``langchain-default``: langchain-text-splitters' ``RecursiveCharacterTextSplitter`` as users meet it
  (separators paragraph, line, space, character; ``add_start_index=True`` for the offsets we return);
* ``langchain-sentences``: the same splitter given our boundary list (paragraph, line, sentence ends,
  ``;``, ``,``, space) with the separator kept at the end of the chunk, the closest it gets to ours;
* ``llamaindex``: LlamaIndex's ``SentenceSplitter`` with a character "tokenizer" (``tokenizer=list``), so
  that its sizes are characters too (it returns no offsets; finding them would cost extra).

Text: the real texts of ``benchmarks/data/realtext-100000/base_texts.jsonl`` (Debian package descriptions
and docstring paragraphs), about 4 MB, laid out three ways and cut into documents of about 20 KB (``ingest``
chunks one document at a time):

* ``prose``: five texts to a paragraph joined by spaces, paragraphs separated by a blank line;
* ``long``: forty texts to a paragraph (about 3 KB, longer than a chunk), blank lines between them, so a
  chunker must find its cuts inside paragraphs;
* ``lines``: one text a line (a list, a changelog).

Measured per candidate: throughput (MB of UTF-8 per second, best of ``--repeat`` passes, one thread),
chunk count and size percentiles, and the fraction of chunks (all but each document's last) whose end is a
sentence boundary: the chunk ends with ``.``, ``!`` or ``?`` (optionally followed by a closing quote or
bracket), or the document continues with a line break right after it. Chunks larger than ``size`` are
counted too (they break the contract ``ingest`` documents).

Run::

    python -m benchmarks.chunker_bench                   # size 1000, overlap 100 (ingest's defaults)
    python -m benchmarks.chunker_bench --size 300 --overlap 50

A candidate whose library is not installed is reported as missing. Results:
``benchmarks/results/chunker_bench.json`` (one entry per size/overlap) and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "realtext-100000" / "base_texts.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "chunker_bench.json"

# A chunk ends a sentence when its last visible characters are a terminator and optional closers.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")

Chunker = Callable[[str], list[str]]


def load_corpus(target_bytes: int, doc_bytes: int) -> dict[str, list[str]]:
    """The three layouts of about ``target_bytes`` of real text, as documents of about ``doc_bytes``."""
    texts: list[str] = []
    total = 0
    with DATA.open(encoding="utf-8") as f:
        for line in f:
            text = " ".join(json.loads(line)["text"].split())
            texts.append(text)
            total += len(text.encode()) + 1
            if total >= target_bytes:
                break
    paragraphs = [" ".join(texts[i : i + 5]) for i in range(0, len(texts), 5)]
    long_paragraphs = [" ".join(texts[i : i + 40]) for i in range(0, len(texts), 40)]
    return {
        "prose": _documents(paragraphs, "\n\n", doc_bytes),
        "long": _documents(long_paragraphs, "\n\n", doc_bytes),
        "lines": _documents(texts, "\n", doc_bytes),
    }


def _documents(parts: list[str], sep: str, doc_bytes: int) -> list[str]:
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for part in parts:
        current.append(part)
        size += len(part) + len(sep)
        if size >= doc_bytes:
            docs.append(sep.join(current))
            current, size = [], 0
    if current:
        docs.append(sep.join(current))
    return docs


def candidates(size: int, overlap: int) -> dict[str, Chunker | str]:
    """Each candidate's chunk function, or the reason it cannot run here."""
    out: dict[str, Chunker | str] = {}
    from embeddix_mcp.chunking import chunk_text

    out["embeddix"] = lambda text: [c for _, c in chunk_text(text, size, overlap)]
    try:
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError:
        out["langchain-default"] = out["langchain-sentences"] = "pip install langchain-text-splitters"
    else:
        default = RecursiveCharacterTextSplitter(
            chunk_size=size, chunk_overlap=overlap, length_function=len, add_start_index=True
        )
        sentences = RecursiveCharacterTextSplitter(
            chunk_size=size,
            chunk_overlap=overlap,
            length_function=len,
            add_start_index=True,
            separators=["\n\n", "\n", ". ", "! ", "? ", "; ", ", ", " ", ""],
            keep_separator="end",
        )
        # create_documents is the call that reports start offsets (what chunk_text returns).
        out["langchain-default"] = lambda text: [d.page_content for d in default.create_documents([text])]
        out["langchain-sentences"] = lambda text: [d.page_content for d in sentences.create_documents([text])]
    try:
        from llama_index.core.node_parser import SentenceSplitter
    except ImportError:
        out["llamaindex"] = "pip install llama-index-core"
    else:
        splitter = SentenceSplitter(chunk_size=size, chunk_overlap=overlap, tokenizer=list)
        out["llamaindex"] = splitter.split_text
    return out


def _boundary_stats(docs: list[str], chunked: list[list[str]]) -> tuple[int, int]:
    """(chunks ending at a sentence boundary, chunks considered): every chunk but a document's last."""
    hits = considered = 0
    for doc, chunks in zip(docs, chunked, strict=True):
        pos = 0
        for chunk in chunks[:-1]:
            at = doc.find(chunk, pos)
            considered += 1
            if at == -1:  # a splitter that rewrote whitespace; judge the chunk's own text only
                hits += bool(_SENTENCE_END.search(chunk))
                continue
            pos = at + 1
            end = at + len(chunk)
            rest = doc[end : end + 3].lstrip(" \t")
            hits += bool(_SENTENCE_END.search(chunk)) or rest.startswith("\n")
    return hits, considered


def measure(name: str, chunk: Chunker, docs: list[str], size: int, repeat: int) -> dict[str, Any]:
    """Throughput, size distribution and boundary quality of one chunker on one layout."""
    mb = sum(len(d.encode()) for d in docs) / 1e6
    best = float("inf")
    chunked: list[list[str]] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        chunked = [chunk(d) for d in docs]
        best = min(best, time.perf_counter() - t0)
    lengths = sorted(len(c) for cs in chunked for c in cs)
    hits, considered = _boundary_stats(docs, chunked)
    q = statistics.quantiles(lengths, n=20)
    return {
        "chunker": name,
        "mb": round(mb, 3),
        "mb_per_s": round(mb / best, 2),
        "chunks": len(lengths),
        "size_p5": round(q[0]),
        "size_p50": round(statistics.median(lengths)),
        "size_p95": round(q[-1]),
        "size_max": lengths[-1],
        "over_size": sum(n > size for n in lengths),
        "sentence_end_fraction": round(hits / max(1, considered), 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every candidate on every layout, print a table and write the JSON results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--overlap", type=int, default=100)
    p.add_argument("--mb", type=float, default=4.0, help="MB of text (default 4)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    corpus = load_corpus(int(args.mb * 1e6), 20_000)
    rows: list[dict[str, Any]] = []
    for name, chunk in candidates(args.size, args.overlap).items():
        for layout, docs in corpus.items():
            if isinstance(chunk, str):
                rows.append({"chunker": name, "layout": layout, "missing": chunk})
                continue
            rows.append({"layout": layout, **measure(name, chunk, docs, args.size, args.repeat)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    header = ("chunker", "layout", "mb_per_s", "chunks", "size_p5", "size_p50", "size_p95", "size_max")
    header += ("over_size", "sentence_end_fraction")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row.get(h, row.get("missing", "-"))) for h in header))
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[f"size{args.size}_overlap{args.overlap}"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
