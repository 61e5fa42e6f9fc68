"""``embeddix ingest``: files to chunks to vectors to one atomic write per file, skipping what is stored.

Order of work and why:

1. Every file is read and checked whole (``_sources.py``) and chunked. A bad file is reported with its path
   and line and skipped; the others go on.
2. The chunks already stored are dropped before anything is embedded (embedding is the expensive step):
   a chunk is stored when its id is stored with the same ``content_hash``. That makes a re-run resumable:
   the files written before an interruption are skipped, the rest are ingested.
3. Each file's remaining chunks are embedded in batches (the progress bar counts them) and written with
   **one** ``upsert``: one SQLite transaction, so a file is in the store whole or not at all, and a crash
   or Ctrl-C mid-file leaves nothing of that file.

Ids: a document the file gives an id (JSONL ``id``, CSV ``id`` column) keeps it, with ``#<n>`` appended
when it is cut into several chunks; a chunk of any other document gets ``sha256(source, text)`` (32 hex
digits), so the same text from the same file always lands on the same id and is never stored twice.
A changed file adds its new chunks; the chunks of its old version stay until deleted (their
``source`` metadata finds them).

Metadata added to every chunk: ``source`` (the path relative to the directory argument, or the file
name), ``chunk`` and ``start`` (its position in the document), ``line`` (JSONL and CSV) and
``content_hash``; these win over the file's own metadata of the same name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..collection import Collection
from ..embeddings._protocol import Embedder
from ..errors import InvalidArgumentError
from ._sources import BadFileError, Document, read_documents

__all__ = ["EMBED_BATCH", "Chunk", "FilePlan", "IngestResult", "find_files", "ingest_files", "plan_file"]

# Chunks per embedding call: large enough to batch the model well, small enough that the progress bar
# (and Ctrl-C) moves every fraction of a second on a small CPU.
EMBED_BATCH = 64

Chunker = Callable[[str, int, int], list[tuple[int, str]]]


def load_chunker() -> Chunker:
    """The chunker ingest cuts text with: the MCP server's (``embeddix_core/text/chunking.py``)."""
    from ..text.chunking import chunk_text

    return chunk_text


@dataclass(frozen=True, slots=True)
class Chunk:
    """One record to store: id, text and metadata (the file's plus what ingest adds)."""

    id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FilePlan:
    """One file's chunks, split into those to store and the count already stored."""

    path: Path
    source: str
    chunks: tuple[Chunk, ...]
    already_stored: int


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What an ingest did.

    Attributes:
        files: Files ingested (wholly stored, or found already stored).
        stored: Chunks embedded and written.
        skipped: Chunks found already stored (same id and content hash) and not embedded again.
        failed: One message per file skipped as bad (path and line first).
    """

    files: int
    stored: int
    skipped: int
    failed: tuple[str, ...]


def content_hash(text: str) -> str:
    """The hash a chunk is recognised by on a re-run (32 hex digits of SHA-256)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def find_files(paths: Sequence[Path], glob: str) -> list[tuple[Path, str]]:
    """The files to ingest, each with its ``source`` name, in a stable order.

    A file argument is taken whatever its name; a directory contributes the files under it matching
    ``glob`` (recursively), without hidden files or directories (``.git`` and the like).

    Raises:
        InvalidArgumentError: A path does not exist.
    """
    out: list[tuple[Path, str]] = []
    for given in paths:
        if given.is_dir():
            for p in sorted(given.rglob(glob)):
                rel = p.relative_to(given)
                if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                    out.append((p, rel.as_posix()))
        elif given.is_file():
            out.append((given, given.name))
        else:
            raise InvalidArgumentError(
                f"expected a file or a directory to ingest; {str(given)!r} does not exist"
            )
    return out


def to_chunks(
    docs: Iterable[Document], source: str, chunk: Chunker, chunk_size: int, overlap: int
) -> list[Chunk]:
    """Cut documents into chunks with their ids and metadata (see the module docstring)."""
    out: list[Chunk] = []
    seen: set[str] = set()
    for doc in docs:
        pieces = chunk(doc.text, chunk_size, overlap)
        for n, (start, text) in enumerate(pieces):
            if doc.id is None:
                rid = hashlib.sha256(f"{source}\0{text}".encode()).hexdigest()[:32]
                if rid in seen:
                    continue  # the same text twice in one file: one record
            else:
                rid = doc.id if len(pieces) == 1 else f"{doc.id}#{n}"
            seen.add(rid)
            added: dict[str, Any] = {"source": source, "chunk": n, "start": start}
            if doc.line is not None:
                added["line"] = doc.line
            added["content_hash"] = content_hash(text)
            out.append(Chunk(rid, text, {**doc.metadata, **added}))
    return out


def plan_file(
    col: Collection, path: Path, source: str, chunk: Chunker, chunk_size: int, overlap: int
) -> FilePlan:
    """Read, check and chunk one file, and leave out the chunks ``col`` already stores.

    Raises:
        BadFileError: The file cannot be ingested (nothing of it is planned).
    """
    chunks = to_chunks(read_documents(path), source, chunk, chunk_size, overlap)
    if not chunks:
        return FilePlan(path, source, (), 0)
    try:
        stored = col.get([c.id for c in chunks], include_vectors=False)
    except InvalidArgumentError as exc:  # an id the store refuses (e.g. too long once "#<n>" is added)
        raise BadFileError(path, None, str(exc)) from None
    todo = tuple(
        c
        for c, rec in zip(chunks, stored, strict=True)
        if rec is None or rec.metadata.get("content_hash") != c.metadata["content_hash"]
    )
    return FilePlan(path, source, todo, len(chunks) - len(todo))


def ingest_files(
    col: Collection,
    embedder: Embedder,
    files: Sequence[tuple[Path, str]],
    *,
    chunk_size: int,
    overlap: int,
    progress: Callable[[int], Any] | None = None,
    on_total: Callable[[int], Any] | None = None,
    on_bad_file: Callable[[str], Any] | None = None,
) -> IngestResult:
    """Ingest ``files`` into ``col`` (see the module docstring for the order of work).

    Args:
        col: The collection (its dimension is the embedder's).
        embedder: Embeds the chunks.
        files: ``(path, source)`` pairs from :func:`find_files`.
        chunk_size: Largest chunk, in characters.
        overlap: Characters shared by consecutive chunks of a document.
        progress: Called with the number of chunks after each embedded batch.
        on_total: Called once with the number of chunks to embed, before the first batch.
        on_bad_file: Called with the message of each file skipped as bad.

    Returns:
        What was stored, skipped and failed.

    Raises:
        MissingExtraError: The chunker is not available (see :func:`load_chunker`).
    """
    chunk = load_chunker()
    plans: list[FilePlan] = []
    failed: list[str] = []
    for path, source in files:
        try:
            plans.append(plan_file(col, path, source, chunk, chunk_size, overlap))
        except BadFileError as exc:
            failed.append(str(exc))
            if on_bad_file is not None:
                on_bad_file(str(exc))
    if on_total is not None:
        on_total(sum(len(p.chunks) for p in plans))
    stored = 0
    for plan in plans:
        if plan.chunks:
            _store_file(col, embedder, plan, progress)
            stored += len(plan.chunks)
    skipped = sum(p.already_stored for p in plans)
    return IngestResult(len(plans), stored, skipped, tuple(failed))


def _store_file(
    col: Collection, embedder: Embedder, plan: FilePlan, progress: Callable[[int], Any] | None
) -> None:
    texts = [c.text for c in plan.chunks]
    parts = []
    for start in range(0, len(texts), EMBED_BATCH):
        batch = texts[start : start + EMBED_BATCH]
        parts.append(embedder.embed_documents(batch))
        if progress is not None:
            progress(len(batch))
    # the file's one write: all its chunks in one transaction (see the module docstring)
    col.upsert(
        [c.id for c in plan.chunks],
        np.concatenate(parts),
        texts,
        [c.metadata for c in plan.chunks],
    )
