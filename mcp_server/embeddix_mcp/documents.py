"""Document collections for RAG: create, list, drop, ingest (chunk, embed, store) and search.

A document collection belongs to one agent (core collection ``docs:<agent>:<name>``, see ``agents.py``) and
is never shared by a grant. Each document is cut into overlapping chunks (``chunking.py``) stored under
``<doc id>#<n>`` with the document's metadata plus its position (``doc_id``, ``chunk``, ``chunks``,
``start``), so re-ingesting a document id can delete exactly its old chunks first.

Like ``memory.py``, this module imports no MCP or web code, and every function blocks: call it from a
worker thread in async code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from embeddix_core import Collection, Hit, InvalidArgumentError, NotFoundError

from .agents import docs_collection
from .chunking import chunk_text
from .models import (
    Chunk,
    CollectionInfo,
    CollectionsResult,
    DocumentIn,
    DropResult,
    IngestResult,
    SearchCollectionResult,
    user_metadata,
)
from .search import SearchOptions, plan_ef, search, similarity
from .state import AppState

__all__ = [
    "INGEST_BATCH",
    "ChunkRow",
    "IngestJob",
    "create_collection",
    "drop_collection",
    "list_collections",
    "prepare_ingest",
    "search_collection",
    "store_chunks",
]

# Chunks embedded per model call during ingest: large enough to batch the model well, small enough that a
# front end can report progress (and a cancel takes effect) every few hundred milliseconds.
INGEST_BATCH = 64


def create_collection(state: AppState, agent: str, name: str) -> CollectionInfo:
    """Create ``agent``'s document collection ``name`` if it does not exist."""
    col = state.documents(agent, name, create=True)
    return CollectionInfo(name=name, count=col.count())


def list_collections(state: AppState, agent: str) -> CollectionsResult:
    """``agent``'s document collections and their chunk counts."""
    prefix = f"docs:{agent}:"
    out = []
    for full in state.db.list_collections():
        if full.startswith(prefix):
            out.append(CollectionInfo(name=full[len(prefix) :], count=state.db.get_collection(full).count()))
    return CollectionsResult(collections=out)


def drop_collection(state: AppState, agent: str, name: str) -> DropResult:
    """Delete ``agent``'s document collection ``name`` with its chunks; ``dropped`` is False if absent."""
    full = docs_collection(agent, name)
    if full not in state.db:
        return DropResult(name=name, dropped=False)
    state.db.drop_collection(full)
    return DropResult(name=name, dropped=True)


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """One chunk to store: its id (``<doc id>#<n>``), text, and metadata (the document's plus position)."""

    id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IngestJob:
    """Documents chunked, with their previous chunks deleted, waiting to be embedded and stored.

    Store it batch by batch with :func:`store_chunks` (one model call per batch), so that a front end can
    report progress between batches.
    """

    name: str
    collection: Collection = field(repr=False)
    documents: list[str]
    chunks: list[ChunkRow]
    replaced: int

    def batches(self, size: int = INGEST_BATCH) -> Iterator[list[ChunkRow]]:
        """The chunks in batches of ``size``, in document order."""
        for start in range(0, len(self.chunks), size):
            yield self.chunks[start : start + size]

    def result(self) -> IngestResult:
        """What the job stores, once every batch is stored."""
        return IngestResult(
            collection=self.name,
            documents=self.documents,
            chunks=len(self.chunks),
            replaced_chunks=self.replaced,
        )


def prepare_ingest(
    state: AppState, agent: str, name: str, documents: list[DocumentIn], chunk_size: int, overlap: int
) -> IngestJob:
    """Chunk ``documents`` for ``agent``'s collection ``name`` (created if needed).

    A document with an id replaces the chunks stored for that id (deleted now); one without gets a new id.

    Raises:
        InvalidArgumentError: ``overlap >= chunk_size`` (checked before anything changes), or bad metadata.
    """
    if overlap >= chunk_size:
        raise InvalidArgumentError(
            f"overlap must be smaller than chunk_size; got overlap={overlap}, chunk_size={chunk_size}"
        )
    col = state.documents(agent, name, create=True)
    doc_ids: list[str] = []
    chunks: list[ChunkRow] = []
    replaced = 0
    for d in documents:
        did = d.id or uuid.uuid4().hex
        meta = user_metadata(d.metadata)
        if d.id is not None:
            replaced += col.delete(filter={"doc_id": did})  # re-ingest replaces the old chunks
        pieces = chunk_text(d.text, chunk_size, overlap)
        for n, (start, piece) in enumerate(pieces):
            position = {"doc_id": did, "chunk": n, "chunks": len(pieces), "start": start}
            chunks.append(ChunkRow(f"{did}#{n}", piece, {**meta, **position}))
        doc_ids.append(did)
    return IngestJob(name, col, doc_ids, chunks, replaced)


def store_chunks(state: AppState, job: IngestJob, batch: list[ChunkRow]) -> None:
    """Embed one batch of ``job``'s chunks and upsert them (one atomic write)."""
    vecs = state.embedder.embed_documents([c.text for c in batch])
    job.collection.upsert([c.id for c in batch], vecs, [c.text for c in batch], [c.metadata for c in batch])


def search_collection(
    state: AppState,
    agent: str,
    name: str,
    query: str,
    k: int,
    flt: dict[str, Any] | None = None,
    opts: SearchOptions = SearchOptions(),  # noqa: B008 (frozen: one shared default is safe)
) -> SearchCollectionResult:
    """The ``k`` chunks of ``agent``'s collection ``name`` most relevant to ``query``, best first.

    Raises:
        NotFoundError: No such collection. InvalidFilterError: A bad filter.
    """
    col = state.documents(agent, name, create=False)
    if col is None:
        raise NotFoundError(
            f"no document collection named {name!r}; see list_collections, or create it with ingest"
        )
    hits = search(col, state.embedder.embed_query(query), k, query, flt, opts, agent)
    return SearchCollectionResult(
        collection=name, hits=[_chunk(h) for h in hits], hybrid=opts.hybrid, ef=plan_ef(hits)
    )


def _chunk(hit: Hit) -> Chunk:
    score, fused = similarity(hit)
    meta = dict(hit.metadata)
    # The position keys are the server's bookkeeping: doc_id and chunk are fields of their own, the rest
    # is not shown.
    doc_id, chunk = meta.pop("doc_id", None), meta.pop("chunk", None)
    meta.pop("start", None)
    meta.pop("chunks", None)
    return Chunk(
        id=hit.id,
        doc_id=doc_id,
        chunk=chunk,
        text=hit.document,
        score=round(score, 6),
        fused_score=None if fused is None else round(fused, 6),
        metadata=meta,
    )
