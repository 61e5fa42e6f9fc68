"""Document collections for RAG: create, list, drop, ingest (chunk, embed, store), search, and manage the
documents in a collection (read one, peek, delete one).

A document collection belongs to one agent (core collection ``docs:<agent>:<name>``, see ``agents.py``) and
is never shared by a grant. Each document is cut into overlapping chunks (``chunking.py``) stored under
``<doc id>#<n>`` with the document's metadata plus its position (``doc_id``, ``chunk``, ``chunks``,
``start``). A document is identified by its id; without one, by its ``source`` (the id is derived from it),
so that ingesting the same id or source again replaces the document instead of adding a copy.

Like ``memory.py``, this module imports no MCP or web code, and every function blocks: call it from a
worker thread in async code.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from embeddix_core import Collection, Hit, InvalidArgumentError, NotFoundError, Record

from .agents import docs_collection
from .chunking import chunk_text
from .models import (
    Chunk,
    CollectionInfo,
    CollectionsResult,
    DeleteDocumentResult,
    DocumentIn,
    DocumentResult,
    DropResult,
    IngestResult,
    PeekResult,
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
    "delete_document",
    "drop_collection",
    "finish_ingest",
    "get_document",
    "list_collections",
    "peek_collection",
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
    """Documents chunked, waiting to be embedded and stored.

    Store it batch by batch with :func:`store_chunks` (one model call per batch), so that a front end can
    report progress between batches, then call :func:`finish_ingest`.

    Replacing a document: its new chunks are upserted over the old ones (same ids ``<doc id>#<n>``), and
    :func:`finish_ingest` deletes the old chunks beyond the new count. The old version is therefore never
    missing: a search during a re-ingest finds old or new chunks, and a re-ingest that fails or is cancelled
    between batches leaves the document partly new (ingest it again to finish). A document that fits in one
    batch (``INGEST_BATCH`` chunks) is replaced by one atomic upsert, plus one delete if it got shorter.
    """

    name: str
    collection: Collection = field(repr=False)
    documents: list[str]
    chunks: list[ChunkRow]
    counts: dict[str, int]  # chunks per document id
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


def source_doc_id(source: str) -> str:
    """The document id of a document ingested without an id but with a ``source``: stable per source."""
    return "src-" + hashlib.sha256(source.encode()).hexdigest()[:24]


def prepare_ingest(
    state: AppState, agent: str, name: str, documents: list[DocumentIn], chunk_size: int, overlap: int
) -> IngestJob:
    """Chunk ``documents`` for ``agent``'s collection ``name`` (created if needed). Nothing is stored yet.

    A document with an id, or without one but with a ``source``, replaces the document stored under that
    id (see :class:`IngestJob`); one with neither gets a new id.

    Raises:
        InvalidArgumentError: ``overlap >= chunk_size``, two documents with the same id or source, or bad
            metadata (all checked before anything changes).
    """
    if overlap >= chunk_size:
        raise InvalidArgumentError(
            f"overlap must be smaller than chunk_size; got overlap={overlap}, chunk_size={chunk_size}"
        )
    doc_ids: list[str] = []
    chunks: list[ChunkRow] = []
    counts: dict[str, int] = {}
    for i, d in enumerate(documents):
        meta = user_metadata(d.metadata)
        source = meta.get("source")
        did = d.id or (source_doc_id(source) if isinstance(source, str) else uuid.uuid4().hex)
        if did in counts:
            first = doc_ids.index(did)
            raise InvalidArgumentError(
                f"documents {first} and {i} have the same "
                + (f"id {did!r}" if d.id else f"source {source!r}")
                + "; ingest each document once per call"
            )
        pieces = chunk_text(d.text, chunk_size, overlap)
        for n, (start, piece) in enumerate(pieces):
            position = {"doc_id": did, "chunk": n, "chunks": len(pieces), "start": start}
            chunks.append(ChunkRow(f"{did}#{n}", piece, {**meta, **position}))
        doc_ids.append(did)
        counts[did] = len(pieces)
    col = state.documents(agent, name, create=True)
    replaced = col.count({"doc_id": {"$in": doc_ids}})
    return IngestJob(name, col, doc_ids, chunks, counts, replaced)


def store_chunks(state: AppState, job: IngestJob, batch: list[ChunkRow]) -> None:
    """Embed one batch of ``job``'s chunks and upsert them (one atomic write)."""
    vecs = state.embedder.embed_documents([c.text for c in batch])
    job.collection.upsert([c.id for c in batch], vecs, [c.text for c in batch], [c.metadata for c in batch])


def finish_ingest(job: IngestJob) -> IngestResult:
    """Delete the chunks of the replaced versions beyond the new chunk counts; what the job stored."""
    if job.replaced:
        stale = [{"doc_id": did, "chunk": {"$gte": n}} for did, n in job.counts.items()]
        job.collection.delete(filter=stale[0] if len(stale) == 1 else {"$or": stale})
    return job.result()


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
    col = _existing(state, agent, name)
    hits = search(col, state.embedder.embed_query(query), k, query, flt, opts, agent)
    return SearchCollectionResult(
        collection=name, hits=[_chunk(h) for h in hits], hybrid=opts.hybrid, ef=plan_ef(hits)
    )


def get_document(
    state: AppState,
    agent: str,
    name: str,
    doc_id: str | None,
    source: str | None,
    offset: int = 0,
    limit: int = 100,
) -> DocumentResult:
    """One document's chunks in ``agent``'s collection ``name``, in document order, one page at a time.

    Args:
        doc_id: The document id (as ``ingest`` returned it); or
        source: The documents with this ``source`` metadata (several, ordered by id, if ids differ).
        offset: Chunks to skip (``next_offset`` of the previous page).
        limit: Chunks per page.

    Raises:
        InvalidArgumentError: Not exactly one of ``doc_id`` and ``source``.
        NotFoundError: No such collection, or no such document in it.
    """
    col = _existing(state, agent, name)
    flt = _document_filter(doc_id, source)
    records = sorted(col.scan(flt), key=_position)
    if not records:
        raise NotFoundError(
            f"no document with {_which(doc_id, source)} in collection {name!r}; see peek_collection"
        )
    page = records[offset : offset + limit]
    end = offset + len(page)
    return DocumentResult(
        collection=name,
        doc_ids=list(dict.fromkeys(str(r.metadata.get("doc_id")) for r in records)),
        chunks=[_chunk_of(r.id, r.document, r.metadata) for r in page],
        total=len(records),
        next_offset=end if end < len(records) else None,
    )


def peek_collection(state: AppState, agent: str, name: str, limit: int = 10) -> PeekResult:
    """The first ``limit`` chunks stored in ``agent``'s collection ``name`` (oldest first), and its count.

    Raises:
        NotFoundError: No such collection.
    """
    col = _existing(state, agent, name)
    first: list[Record] = []
    for record in col.scan(batch_size=limit):
        first.append(record)
        if len(first) == limit:
            break
    return PeekResult(
        collection=name, count=col.count(), chunks=[_chunk_of(r.id, r.document, r.metadata) for r in first]
    )


def delete_document(
    state: AppState, agent: str, name: str, doc_id: str | None, source: str | None
) -> DeleteDocumentResult:
    """Delete every chunk of one document (by id) or of the documents with a ``source``, in one write.

    ``deleted`` is 0 when nothing matches; after it, the id or source can be ingested afresh.

    Raises:
        InvalidArgumentError: Not exactly one of ``doc_id`` and ``source``.
        NotFoundError: No such collection.
    """
    col = _existing(state, agent, name)
    flt = _document_filter(doc_id, source)
    doc_ids = list(dict.fromkeys(str(r.metadata.get("doc_id")) for r in col.scan(flt)))
    deleted = col.delete(filter=flt) if doc_ids else 0
    return DeleteDocumentResult(collection=name, doc_ids=doc_ids, deleted=deleted)


def _existing(state: AppState, agent: str, name: str) -> Collection:
    col = state.documents(agent, name, create=False)
    if col is None:
        raise NotFoundError(
            f"no document collection named {name!r}; see list_collections, or create it with ingest"
        )
    return col


def _document_filter(doc_id: str | None, source: str | None) -> dict[str, Any]:
    if (doc_id is None) == (source is None):
        raise InvalidArgumentError("give either id (a document id) or source, not both or neither")
    return {"doc_id": doc_id} if doc_id is not None else {"source": source}


def _which(doc_id: str | None, source: str | None) -> str:
    return f"id {doc_id!r}" if doc_id is not None else f"source {source!r}"


def _position(record: Record) -> tuple[str, int]:
    chunk = record.metadata.get("chunk")
    return str(record.metadata.get("doc_id")), chunk if isinstance(chunk, int) else 0


def _chunk(hit: Hit) -> Chunk:
    score, fused = similarity(hit)
    return _chunk_of(
        hit.id,
        hit.document,
        hit.metadata,
        score=round(score, 6),
        fused_score=None if fused is None else round(fused, 6),
    )


def _chunk_of(
    rid: str,
    text: str | None,
    metadata: dict[str, Any],
    *,
    score: float | None = None,
    fused_score: float | None = None,
) -> Chunk:
    meta = dict(metadata)
    # The position keys are the server's bookkeeping: doc_id and chunk are fields of their own, the rest
    # is not shown.
    doc_id, chunk = meta.pop("doc_id", None), meta.pop("chunk", None)
    meta.pop("start", None)
    meta.pop("chunks", None)
    return Chunk(
        id=rid, doc_id=doc_id, chunk=chunk, text=text, score=score, fused_score=fused_score, metadata=meta
    )
