"""Tool inputs and outputs (pydantic models: they become the tools' JSON schemas) and the metadata rules.

A memory's metadata mixes what the caller gave with what the server keeps. The caller may set any key of
str/int/float/bool (or lists of those) plus these with a meaning: ``tags`` (a string or list of strings),
``source`` (a string), ``importance`` (0..1), ``time`` (when the remembered thing happened: ISO-8601 or
epoch seconds), ``user`` (the end user it concerns). The server owns :data:`SYSTEM_KEYS` (provenance
timestamps, feedback counters); a caller setting one gets an error naming them. Everything is stored flat in
the core record's metadata, so every key is filterable, e.g. ``{"tags": {"$contains": "work"}}`` or
``{"created_ts": {"$gte": 1735689600}}``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from embeddix_core import InvalidArgumentError

from .render import check_label

__all__ = [
    "SYSTEM_KEYS",
    "Chunk",
    "CollectionInfo",
    "CollectionsResult",
    "DeleteDocumentResult",
    "DocumentIn",
    "DocumentResult",
    "DropResult",
    "FeedbackCounts",
    "FeedbackResult",
    "ForgetResult",
    "GrantInfo",
    "GrantResult",
    "IngestResult",
    "ListResult",
    "Memory",
    "MemoryIn",
    "NamespaceInfo",
    "PeekResult",
    "RecallResult",
    "RememberResult",
    "SearchCollectionResult",
    "SessionInfo",
    "StatsResult",
    "StreamPass",
    "UpdateResult",
    "memory_from",
    "stored_metadata",
]

MetaScalar = str | int | float | bool
MetaValue = MetaScalar | list[MetaScalar]
Metadata = dict[str, MetaValue]

SYSTEM_KEYS = frozenset(
    {
        "created_at",
        "created_ts",
        "updated_at",
        "time_ts",
        "feedback_relevant",
        "feedback_irrelevant",
        "feedback_last_at",
        "feedback_last_query",
    }
)
_TYPED_KEYS = ("tags", "source", "importance", "time", "user")
ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$"
MAX_TEXT = 32_768

_FROZEN = ConfigDict(extra="forbid")


# -- inputs --------------------------------------------------------------------------------------------
class MemoryIn(BaseModel):
    """One memory to store."""

    model_config = _FROZEN

    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT, description="The text to remember.")]
    metadata: Annotated[
        Metadata | None,
        Field(
            description="Optional metadata: tags, source, importance (0..1), time, user, or any other key."
        ),
    ] = None
    id: Annotated[
        str | None,
        Field(pattern=ID_PATTERN, description="Optional id; a memory already stored under it is replaced."),
    ] = None


class DocumentIn(BaseModel):
    """One document to chunk, embed and store in a collection."""

    model_config = _FROZEN

    text: Annotated[str, Field(min_length=1, max_length=4_000_000, description="The document's full text.")]
    metadata: Annotated[Metadata | None, Field(description="Metadata copied onto every chunk.")] = None
    id: Annotated[
        str | None,
        Field(
            pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,100}$",
            description=(
                "Document id (chunks are '<id>#<n>'); default: derived from metadata.source, else new. "
                "Ingesting an id or source again replaces that document's chunks."
            ),
        ),
    ] = None


# -- outputs -------------------------------------------------------------------------------------------
class _Output(BaseModel):
    """Base of the tools' structured outputs.

    Each ``T | None`` field is published as pydantic writes it, ``{"anyOf": [{"type": T}, {"type":
    "null"}]}``, not as the shorter type list ``{"type": [T, "null"]}``. Both say the same in JSON Schema,
    but clients that map tool schemas onto a single-``type`` dialect (the OpenAPI subset of Gemini's function
    declarations) reject or weaken type lists, and the MCP Inspector's ``--strict`` check warns on every one
    of them. The type list was cheaper for the Python SDK client to validate (1.3 against 2.0 ms on a recall
    of 10 memories, of about 10 ms end to end over stdio); portability to every client is worth more than
    that client-side 0.7 ms.
    """


class FeedbackCounts(_Output):
    """Relevance feedback recorded on a memory."""

    relevant: int = 0
    irrelevant: int = 0


class Memory(_Output):
    """A stored memory, with its provenance and, in search results, its similarity to the query."""

    id: str
    text: str | None
    score: float | None = Field(
        None,
        description="Cosine similarity to the query, higher is better (1.0 = same meaning as the query).",
    )
    fused_score: float | None = Field(None, description="Hybrid searches: the fused (RRF) rank score.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="The caller's own metadata keys.")
    tags: list[str] = Field(default_factory=list)
    source: str | None = None
    importance: float | None = None
    time: str | None = None
    user: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    feedback: FeedbackCounts = Field(default_factory=FeedbackCounts)
    agent: str = Field(description="The agent that owns this memory.")
    namespace: str | None = Field(None, description="The owner's namespace (None: main namespace).")


class RememberResult(_Output):
    """What ``remember`` stored."""

    ids: list[str] = Field(description="Per input item, the id it is stored under, in input order.")
    updated: list[str] = Field(
        default_factory=list,
        description="Ids of memories that existed and were updated (same id or near-duplicate).",
    )
    namespace: str | None = None


class StreamPass(_Output):
    """One pass of a streamed search."""

    index: int
    ef: int | None = Field(None, description="Beam width of this pass (None: exact search).")
    count: int
    best_score: float | None


class RecallResult(_Output):
    """Memories best first."""

    memories: list[Memory]
    query: str
    k: int
    agent: str = Field(description="Whose memories were searched.")
    namespace: str | None = None
    hybrid: bool = False
    ef: int | None = Field(None, description="Search beam width used (None: the collection default).")
    elapsed_ms: float = 0.0
    deadline_met: bool | None = None
    passes: list[StreamPass] = Field(default_factory=list, description="stream only: the passes made.")


class ForgetResult(_Output):
    """What ``forget`` deleted."""

    deleted: int
    namespace: str | None = None


class UpdateResult(_Output):
    """The memory after ``update``."""

    memory: Memory
    reembedded: bool


class FeedbackResult(_Output):
    """The feedback counters after ``feedback``."""

    id: str
    feedback: FeedbackCounts


class ListResult(_Output):
    """One page of memories, oldest first."""

    memories: list[Memory]
    next_cursor: str | None = Field(
        None, description="Pass as cursor for the next page; None on the last page."
    )
    total: int = Field(description="How many memories match the filter.")


class NamespaceInfo(_Output):
    """One namespace of an agent."""

    namespace: str | None
    count: int
    index: str


class GrantInfo(_Output):
    """A read-only grant."""

    owner: str
    grantee: str
    namespace: str | None
    created_at: str


class SessionInfo(_Output):
    """This server process's counters for the agent."""

    started_at: str
    remembered: int
    deduplicated: int
    recalls: int
    streams: int
    streams_cancelled: int
    forgotten: int
    updates: int
    feedback: int


class StatsResult(_Output):
    """An agent's memory statistics."""

    agent: str
    total_memories: int
    namespaces: list[NamespaceInfo]
    collections: list[str] = Field(default_factory=list)
    embedder: str
    dim: int
    grants_given: list[GrantInfo] = Field(default_factory=list)
    grants_received: list[GrantInfo] = Field(default_factory=list)
    session: SessionInfo | None = None


class GrantResult(_Output):
    """A grant made or revoked."""

    grant: GrantInfo | None
    changed: bool


class CollectionInfo(_Output):
    """A document collection."""

    name: str
    count: int


class CollectionsResult(_Output):
    """The caller's document collections."""

    collections: list[CollectionInfo]


class DropResult(_Output):
    """Outcome of ``drop_collection``."""

    name: str
    dropped: bool


class IngestResult(_Output):
    """What ``ingest`` stored."""

    collection: str
    documents: list[str] = Field(description="Document ids, in input order.")
    chunks: int
    replaced_chunks: int = 0


class Chunk(_Output):
    """A document chunk: found by ``search_collection`` (with a score), or read by ``get_document``/peek."""

    id: str
    doc_id: str | None
    chunk: int | None
    text: str | None
    score: float | None = Field(None, description="search_collection only: similarity to the query.")
    fused_score: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchCollectionResult(_Output):
    """Chunks best first."""

    collection: str
    hits: list[Chunk]
    hybrid: bool = False
    ef: int | None = None


class DocumentResult(_Output):
    """One page of a document's chunks (``get_document``), in document order."""

    collection: str
    doc_ids: list[str] = Field(description="The document ids matched (several if they share a source).")
    chunks: list[Chunk]
    total: int = Field(description="How many chunks the documents have in all.")
    next_offset: int | None = Field(None, description="Pass as offset for the next page; None on the last.")


class PeekResult(_Output):
    """The first chunks stored in a collection (``peek_collection``), oldest first."""

    collection: str
    count: int = Field(description="How many chunks the collection holds in all.")
    chunks: list[Chunk]


class DeleteDocumentResult(_Output):
    """What ``delete_document`` deleted."""

    collection: str
    doc_ids: list[str] = Field(description="The document ids whose chunks were deleted.")
    deleted: int = Field(description="How many chunks were deleted (0: no such document).")


# -- metadata rules ------------------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def parse_time(value: Any) -> tuple[str, float]:
    """Normalize a caller's ``time`` (ISO-8601 string or epoch seconds) to (ISO UTC string, epoch seconds).

    Raises:
        InvalidArgumentError: The value is neither.
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(
            f"metadata['time'] must be an ISO-8601 string or epoch seconds; got {value!r}"
        )
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidArgumentError("metadata['time'] must be finite")
        dt = datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgumentError(
                f"metadata['time'] must be ISO-8601 (e.g. '2025-03-01T09:30:00Z') or epoch seconds; "
                f"got {value!r}"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        dt = dt.astimezone(UTC)
    else:
        raise InvalidArgumentError(
            f"metadata['time'] must be an ISO-8601 string or epoch seconds; got {value!r}"
        )
    return _iso(dt), dt.timestamp()


def user_metadata(meta: dict[str, Any] | None, *, partial: bool = False) -> dict[str, Any]:
    """Validate and normalize caller metadata (``partial``: a patch, where None removes a key).

    Raises:
        InvalidArgumentError: A system key is set, or a typed key has the wrong type.
    """
    out: dict[str, Any] = {}
    for key, value in (meta or {}).items():
        _check_label(key, "a metadata key")
        if key in SYSTEM_KEYS:
            raise InvalidArgumentError(
                f"metadata key {key!r} is kept by the server and cannot be set; "
                f"server keys: {sorted(SYSTEM_KEYS)}"
            )
        if value is None:
            if not partial:
                raise InvalidArgumentError(f"metadata[{key!r}] is null; null only removes a key in update()")
            out[key] = None
            if key == "time":
                out["time_ts"] = None
            continue
        if key == "tags":
            tags = [value] if isinstance(value, str) else value
            if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
                raise InvalidArgumentError(
                    f"metadata['tags'] must be a string or a list of strings; got {value!r}"
                )
            for tag in tags:
                _check_label(tag, "a tag")
            out["tags"] = list(dict.fromkeys(tags))
        elif key in ("source", "user"):
            if not isinstance(value, str):
                raise InvalidArgumentError(f"metadata[{key!r}] must be a string; got {value!r}")
            _check_label(value, f"metadata[{key!r}]")
            out[key] = value
        elif key == "importance":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise InvalidArgumentError(
                    f"metadata['importance'] must be a number from 0 to 1; got {value!r}"
                )
            out[key] = float(value)
        elif key == "time":
            out["time"], out["time_ts"] = parse_time(value)
        else:
            out[key] = value
    return out


def _check_label(value: str, what: str) -> None:
    # Labels are one short line of text by nature; a line break in one is never legitimate and is the
    # shape of a prompt-injection attempt (see render.py). Free-form metadata values and the memory text
    # may hold any text: they are escaped on output instead.
    problem = check_label(value, what)
    if problem is not None:
        raise InvalidArgumentError(problem)


def stored_metadata(meta: dict[str, Any] | None, *, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata to store for a new memory (or a replacement of ``previous``, keeping its provenance)."""
    now = _now()
    out = user_metadata(meta)
    if previous is not None:
        kept = {k: v for k, v in previous.items() if k in SYSTEM_KEYS}
        out = {**kept, **out, "updated_at": _iso(now)}
    else:
        out["created_at"] = _iso(now)
        out["created_ts"] = now.timestamp()
    return out


def touch(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with ``updated_at`` set to now."""
    return {**meta, "updated_at": _iso(_now())}


def memory_from(
    rid: str,
    text: str | None,
    meta: dict[str, Any],
    *,
    agent: str,
    namespace: str | None,
    score: float | None = None,
    fused_score: float | None = None,
) -> Memory:
    """Build the :class:`Memory` view of a stored record."""
    own = {k: v for k, v in meta.items() if k not in SYSTEM_KEYS and k not in _TYPED_KEYS}
    tags = meta.get("tags")
    importance = meta.get("importance")
    return Memory(
        id=rid,
        text=text,
        score=None if score is None else round(float(score), 6),
        fused_score=None if fused_score is None else round(float(fused_score), 6),
        metadata=own,
        tags=[str(t) for t in tags] if isinstance(tags, list) else ([tags] if isinstance(tags, str) else []),
        source=_str_or_none(meta.get("source")),
        importance=float(importance)
        if isinstance(importance, int | float) and not isinstance(importance, bool)
        else None,
        time=_str_or_none(meta.get("time")),
        user=_str_or_none(meta.get("user")),
        created_at=_str_or_none(meta.get("created_at")),
        updated_at=_str_or_none(meta.get("updated_at")),
        feedback=FeedbackCounts(
            relevant=int(meta.get("feedback_relevant", 0)), irrelevant=int(meta.get("feedback_irrelevant", 0))
        ),
        agent=agent,
        namespace=namespace,
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
