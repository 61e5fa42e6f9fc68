"""The MCP tools, resources and prompt: thin translations between MCP calls and the memory domain.

Each tool validates its arguments through its signature (pydantic ``Field`` constraints become the JSON
schema the model sees), runs the domain function (``memory.py``, ``documents.py``: embedding, core calls,
bookkeeping) in a worker thread, and returns the domain's pydantic result as structured output next to a
short readable text, in which every stored value goes through :func:`~embeddix_mcp.render.untrusted`.
Errors the model can fix (a bad filter, an unknown id, a missing grant) come back as ``ToolError`` text
saying what was wrong and what is allowed; anything else is logged by the SDK and reported as a generic tool
error, and the server keeps serving.

What stays here is what only exists because of MCP: the argument schemas, argument combinations that only
the tool signatures allow (``remember(text=...)`` vs ``remember(items=...)``), progress and log
notifications, cancellation, and the text rendering.

Who is calling: over HTTP the authenticated bearer token names the agent; otherwise (stdio, in-process) it
is ``settings.agent``. A tool never takes the caller's identity as an argument.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from embeddix_core import EmbeddixError

from . import documents as rag
from . import memory
from .agents import AccessDeniedError
from .models import (
    ID_PATTERN,
    MAX_TEXT,
    Chunk,
    CollectionInfo,
    CollectionsResult,
    DeleteDocumentResult,
    DocumentIn,
    DocumentResult,
    DropResult,
    FeedbackResult,
    ForgetResult,
    GrantResult,
    IngestResult,
    ListResult,
    Memory,
    MemoryIn,
    PeekResult,
    RecallResult,
    RememberResult,
    SearchCollectionResult,
    StatsResult,
    UpdateResult,
)
from .render import count, untrusted, validation_message
from .search import SearchOptions
from .state import AppState

__all__ = ["register"]

T = TypeVar("T")

_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,47}$"
_AGENT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
_INGEST_BATCH = 64

# -- argument types: their Field descriptions and bounds are what the model reads -------------------------
Query = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT, description="What to look for, in plain language.")
]
K = Annotated[int, Field(ge=1, le=100, description="How many results to return (1-100).")]
FilterArg = Annotated[
    dict[str, Any] | None,
    Field(
        description=(
            'Metadata filter, Mongo-like: {"tags": {"$contains": "work"}}, {"importance": {"$gte": 0.5}}, '
            '{"source": {"$in": ["chat", "email"]}}. Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists '
            "$contains $contains_any $contains_all $text $and $or $not."
        )
    ),
]
NamespaceArg = Annotated[
    str | None,
    Field(
        pattern=_NAME_PATTERN,
        description="Sub-namespace (1-48 letters, digits, _ - .); omit for the main namespace.",
    ),
]
FromAgent = Annotated[
    str | None,
    Field(
        pattern=_AGENT_PATTERN,
        description="Read another agent's memories; needs that agent's grant. Omit for your own.",
    ),
]
RecallTarget = Annotated[
    float | None,
    Field(gt=0.0, le=1.0, description="Fraction of the exact top-k wanted, e.g. 0.95 (higher is slower)."),
]
Deadline = Annotated[
    int | None,
    Field(ge=1, le=60_000, description="Latency budget in ms; a tight budget searches less widely."),
]
TextWeight = Annotated[
    float,
    Field(
        ge=0.0,
        le=1.0,
        description="0: by meaning only; above 0 also by the query's words (hybrid), with this weight.",
    ),
]
Personalize = Annotated[
    bool,
    Field(
        description="Re-rank by your feedback on earlier recalls (as the user, when given, else as you); "
        "false: plain similarity order. No effect before any feedback, or with text_weight above 0."
    ),
]
UserArg = Annotated[
    str | None,
    Field(min_length=1, max_length=256, description="Only memories about this end user (metadata 'user')."),
]
CollectionName = Annotated[
    str, Field(pattern=_NAME_PATTERN, description="Collection name (1-48 letters, digits, _ - .).")
]
DocId = Annotated[
    str | None,
    Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,100}$",
        description="The document id, as ingest returned it. Give id or source.",
    ),
]
DocSource = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=256,
        description="The documents whose metadata source is this. Give id or source.",
    ),
]
MemoryId = Annotated[
    str, Field(pattern=ID_PATTERN, description="A memory id, as returned by remember or recall.")
]

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
_DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


# -- plumbing --------------------------------------------------------------------------------------------
def _state(ctx: Context) -> AppState:
    state = ctx.request_context.lifespan_context
    if not isinstance(state, AppState):  # a server built without build_server's lifespan
        raise RuntimeError("the Embeddix MCP tools need the AppState lifespan of build_server()")
    return state


def _caller(state: AppState) -> str:
    """The calling agent: the bearer token's agent over authenticated HTTP, else the configured agent."""
    token = get_access_token()
    return token.client_id if token is not None else state.settings.agent


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work in a worker thread; core and access errors become errors the model reads."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    except (EmbeddixError, AccessDeniedError) as exc:
        raise ToolError(str(exc)) from exc


def _result(model: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


async def _log(ctx: Context, data: Any) -> None:
    """Send a log notification (only delivered to clients that opted in with a log level).

    MCP 2026-07-28 deprecates logging in favour of nothing yet; clients that still ask for it get the
    stream's partial results this way too. The SDK warns on every call, which would say nothing new here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        pending = ctx.session.send_log_message(
            level="info", data=data, logger="embeddix.stream", related_request_id=ctx.request_id
        )
    await pending


def _short(text: str | None, n: int = 160) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _format_memories(memories: list[Memory]) -> str:
    """One line per memory: ``N. [score] "text" (id "..."; tags [...]; ...)``.

    Every stored value goes through :func:`untrusted`, so no text, tag or id can add a line or forge
    another memory's number, score or id (see render.py).
    """
    lines = []
    for i, m in enumerate(memories, 1):
        extra = [f"id {untrusted(m.id)}"]
        if m.tags:
            extra.append(f"tags {untrusted(m.tags)}")
        if m.source:
            extra.append(f"source {untrusted(m.source)}")
        if m.created_at:
            extra.append(f"stored {untrusted(m.created_at[:19] + 'Z')}")
        score = "" if m.score is None else f"[{m.score:.3f}] "
        lines.append(f"{i}. {score}{untrusted(_short(m.text, 400))} ({'; '.join(extra)})")
    return "\n".join(lines)


# -- remember ----------------------------------------------------------------------------------------------
async def remember(
    ctx: Context,
    text: Annotated[
        str | None, Field(min_length=1, max_length=MAX_TEXT, description="One memory's text.")
    ] = None,
    metadata: Annotated[
        dict[str, Any] | None,
        Field(
            description=(
                "Metadata for text: tags (list of strings), source, importance (0..1), time "
                "(ISO-8601 or epoch seconds), user, or any key of string/number/bool/list values."
            )
        ),
    ] = None,
    items: Annotated[
        list[MemoryIn] | None,
        Field(
            min_length=1,
            max_length=1000,
            description='Many memories at once: [{"text": ..., "metadata": {...}}].',
        ),
    ] = None,
    namespace: NamespaceArg = None,
    dedupe_threshold: Annotated[
        float | None,
        Field(
            ge=0.5,
            le=1.0,
            description=(
                "If set (e.g. 0.97), a memory this similar to a stored one updates "
                "that one instead of storing a copy."
            ),
        ),
    ] = None,
) -> Annotated[CallToolResult, RememberResult]:
    """Store memories for later recall: one (text, metadata) or many (items). Returns the ids."""
    if (text is None) == (items is None):
        raise ToolError(
            "remember takes either text (one memory) or items (a list of memories), not both or neither"
        )
    if text is not None:
        try:
            batch = [MemoryIn(text=text, metadata=metadata)]
        except ValidationError as exc:
            raise ToolError(validation_message(exc)) from exc
    else:
        if metadata is not None:
            raise ToolError(
                "metadata goes inside each item when using items: [{'text': ..., 'metadata': {...}}]"
            )
        batch = list(items or [])
    state = _state(ctx)
    res = await _run(memory.remember, state, _caller(state), namespace, batch, dedupe_threshold)
    n_new = len(set(res.ids) - set(res.updated))
    text_out = f"Remembered {count(len(batch), 'item')} in {memory.where(namespace)}: {n_new} new"
    if res.updated:
        # Updated ids may be ones stored directly through the core, so they are rendered as data too.
        text_out += f", {len(res.updated)} existing updated {untrusted(res.updated)}"
    return _result(res, text_out + f". Ids: {untrusted(res.ids)}")


# -- recall / stream -------------------------------------------------------------------------------------
def _recall_text(res: RecallResult) -> str:
    if not res.memories:
        return f"No memories found for {untrusted(res.query)}."
    n = len(res.memories)
    head = f"{count(n, 'memory', 'memories')} for {untrusted(res.query)}, best first:"
    return head + "\n" + _format_memories(res.memories)


async def recall(
    ctx: Context,
    query: Query,
    k: K = 5,
    filter: FilterArg = None,
    namespace: NamespaceArg = None,
    from_agent: FromAgent = None,
    text_weight: TextWeight = 0.0,
    recall_target: RecallTarget = None,
    deadline_ms: Deadline = None,
    user: UserArg = None,
    personalize: Personalize = True,
) -> Annotated[CallToolResult, RecallResult]:
    """Find the stored memories most relevant to a query, best first, with similarity scores (1.0 = same)."""
    state = _state(ctx)
    caller = _caller(state)
    opts = SearchOptions(
        recall_target, deadline_ms, text_weight, personal_user=(user or caller) if personalize else None
    )
    res = await _run(
        memory.recall,
        state,
        caller,
        from_agent or caller,
        namespace,
        query,
        k,
        flt=filter,
        user=user,
        opts=opts,
    )
    return _result(res, _recall_text(res))


async def stream(
    ctx: Context,
    query: Query,
    k: K = 5,
    filter: FilterArg = None,
    namespace: NamespaceArg = None,
    from_agent: FromAgent = None,
    text_weight: TextWeight = 0.0,
    recall_target: RecallTarget = None,
    deadline_ms: Deadline = None,
    user: UserArg = None,
) -> Annotated[CallToolResult, RecallResult]:
    """Like recall, answered progressively: partial results arrive as progress notifications while the search
    widens; the final result is the complete set. Cancel the request to stop it."""
    state = _state(ctx)
    caller = _caller(state)
    opts = SearchOptions(recall_target, deadline_ms, text_weight)
    run = memory.RecallStream(
        state, caller, from_agent or caller, namespace, query, k, flt=filter, user=user, opts=opts
    )
    try:
        while (step := await _run(run.next_pass)) is not None:
            # The number of passes is known only at the end: until then, announce one more.
            total = step.index if step.final else step.index + 1
            partial = {
                "pass": step.index,
                "final": step.final,
                "ef": step.ef,
                "memories": [
                    {"id": m.id, "score": m.score, "text": _short(m.text, 200)} for m in step.memories
                ],
            }
            await ctx.report_progress(step.index, total, untrusted(partial))
            await _log(ctx, {**partial, "memories": [m.model_dump(mode="json") for m in step.memories]})
            if step.final:
                break
    except anyio.get_cancelled_exc_class():
        run.cancel()
        raise
    finally:
        run.close()  # stops the core's progressive search before another pass
    res = run.finish()
    return _result(res, _recall_text(res) + f"\n({count(len(res.passes), 'pass', 'passes')})")


# -- forget / update / feedback -----------------------------------------------------------------------------
async def forget(
    ctx: Context,
    ids: Annotated[
        list[Annotated[str, Field(pattern=ID_PATTERN)]] | None,
        Field(min_length=1, max_length=1000, description="Ids of the memories to delete."),
    ] = None,
    filter: FilterArg = None,
    namespace: NamespaceArg = None,
) -> Annotated[CallToolResult, ForgetResult]:
    """Delete memories by ids, or every memory matching a (non-empty) metadata filter."""
    state = _state(ctx)
    res = await _run(memory.forget, state, _caller(state), namespace, ids, filter)
    n = res.deleted
    return _result(res, f"Deleted {count(n, 'memory', 'memories')}.")


async def update(
    ctx: Context,
    id: MemoryId,
    text: Annotated[
        str | None,
        Field(min_length=1, max_length=MAX_TEXT, description="New text (the memory is re-embedded)."),
    ] = None,
    metadata: Annotated[
        dict[str, Any] | None,
        Field(description="Metadata changes, merged into the memory's; a null value removes a key."),
    ] = None,
    replace_metadata: Annotated[
        bool, Field(description="Replace all caller metadata instead of merging.")
    ] = False,
    namespace: NamespaceArg = None,
) -> Annotated[CallToolResult, UpdateResult]:
    """Change a memory's text and/or metadata in place (its id and creation time are kept)."""
    state = _state(ctx)
    res = await _run(
        memory.update, state, _caller(state), namespace, id, text, metadata, replace_metadata=replace_metadata
    )
    return _result(res, f"Updated {id}" + (" (text re-embedded)" if res.reembedded else "") + ".")


async def feedback(
    ctx: Context,
    id: MemoryId,
    relevant: Annotated[bool, Field(description="Whether the memory was useful for the query.")],
    query: Annotated[
        str | None,
        Field(max_length=MAX_TEXT, description="The query it was recalled for (default: your last recall)."),
    ] = None,
    namespace: NamespaceArg = None,
    user: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=256,
            description="The end user this verdict is for (default: you); recall personalizes by it.",
        ),
    ] = None,
) -> Annotated[CallToolResult, FeedbackResult]:
    """Record whether a recalled memory was relevant: counts are kept with the memory, and later recalls
    rank by this feedback (see recall's personalize)."""
    state = _state(ctx)
    caller = _caller(state)
    res = await _run(memory.feedback, state, caller, namespace, id, relevant, query, user or caller)
    c = res.feedback
    return _result(
        res,
        f"Noted: {id} {'relevant' if relevant else 'not relevant'} "
        f"(relevant {c.relevant}, not relevant {c.irrelevant}).",
    )


# -- list / stats ------------------------------------------------------------------------------------------
async def list_memories(
    ctx: Context,
    cursor: Annotated[
        str | None, Field(max_length=1024, description="next_cursor from the previous page.")
    ] = None,
    limit: Annotated[int, Field(ge=1, le=200, description="Memories per page (1-200).")] = 20,
    filter: FilterArg = None,
    namespace: NamespaceArg = None,
    from_agent: FromAgent = None,
) -> Annotated[CallToolResult, ListResult]:
    """Page through stored memories, oldest first (optionally filtered)."""
    state = _state(ctx)
    caller = _caller(state)
    res = await _run(
        memory.list_memories, state, caller, from_agent or caller, namespace, cursor, limit, filter
    )
    more = f" More: call again with cursor={res.next_cursor!r}." if res.next_cursor else ""
    return _result(
        res,
        f"{len(res.memories)} of {count(res.total, 'memory', 'memories')}:\n"
        + _format_memories(res.memories)
        + more,
    )


def _stats_text(res: StatsResult) -> str:
    parts = [f"Agent {res.agent}: {count(res.total_memories, 'memory', 'memories')}"]
    # Namespace and collection names come from the database, which the core API can also write.
    parts += [
        f"  {'(main)' if n.namespace is None else untrusted(n.namespace)}: {n.count} ({n.index} index)"
        for n in res.namespaces
    ]
    if res.collections:
        parts.append("Document collections: " + untrusted(res.collections))
    parts.append(f"Embedder: {res.embedder} ({res.dim}-d)")
    if res.grants_given:
        parts.append(
            "Shared with: "
            + ", ".join(f"{g.grantee} ({untrusted(g.namespace or 'main')})" for g in res.grants_given)
        )
    if res.grants_received:
        parts.append(
            "Readable from: "
            + ", ".join(f"{g.owner} ({untrusted(g.namespace or 'main')})" for g in res.grants_received)
        )
    return "\n".join(parts)


async def stats(ctx: Context) -> Annotated[CallToolResult, StatsResult]:
    """Your memory statistics: memories per namespace, document collections, grants, session counters."""
    state = _state(ctx)
    agent = _caller(state)
    res = await _run(memory.agent_stats, state, agent, agent)
    return _result(res, _stats_text(res))


# -- grants ------------------------------------------------------------------------------------------------
async def grant(
    ctx: Context,
    to_agent: Annotated[str, Field(pattern=_AGENT_PATTERN, description="The agent that may read.")],
    namespace: NamespaceArg = None,
) -> Annotated[CallToolResult, GrantResult]:
    """Let another agent read (never change) your memories in one namespace, via recall(from_agent=you)."""
    state = _state(ctx)
    res = await _run(memory.grant, state, _caller(state), to_agent, namespace)
    return _result(
        res,
        f"{to_agent} {'can now' if res.changed else 'could already'} read "
        f"{memory.where(namespace)} of your memories.",
    )


async def revoke(
    ctx: Context,
    to_agent: Annotated[str, Field(pattern=_AGENT_PATTERN, description="The agent to stop sharing with.")],
    namespace: NamespaceArg = None,
) -> Annotated[CallToolResult, GrantResult]:
    """Withdraw a read grant made with grant()."""
    state = _state(ctx)
    res = await _run(memory.revoke, state, _caller(state), to_agent, namespace)
    return _result(
        res,
        f"{to_agent} {'can no longer' if res.changed else 'could not'} read "
        f"{memory.where(namespace)} of your memories.",
    )


# -- document collections (RAG) ------------------------------------------------------------------------------
async def create_collection(ctx: Context, name: CollectionName) -> Annotated[CallToolResult, CollectionInfo]:
    """Create a document collection for ingest/search_collection (no error if it exists)."""
    state = _state(ctx)
    agent = _caller(state)
    info = await _run(rag.create_collection, state, agent, name)
    return _result(info, f"Collection {name!r} ready ({info.count} chunks).")


async def list_collections(ctx: Context) -> Annotated[CallToolResult, CollectionsResult]:
    """Your document collections and their chunk counts."""
    state = _state(ctx)
    res = await _run(rag.list_collections, state, _caller(state))
    text = (
        "\n".join(f"{untrusted(c.name)}: {c.count} chunks" for c in res.collections)
        or "No document collections."
    )
    return _result(res, text)


async def drop_collection(ctx: Context, name: CollectionName) -> Annotated[CallToolResult, DropResult]:
    """Delete a document collection and all its chunks."""
    state = _state(ctx)
    res = await _run(rag.drop_collection, state, _caller(state), name)
    return _result(
        res,
        f"Dropped collection {name!r}." if res.dropped else f"No collection named {name!r}; nothing dropped.",
    )


async def ingest(
    ctx: Context,
    collection: CollectionName,
    documents: Annotated[
        list[DocumentIn],
        Field(
            min_length=1,
            max_length=1000,
            description='Documents: [{"text": ..., "metadata": {...}, "id": ...}].',
        ),
    ],
    chunk_size: Annotated[int, Field(ge=100, le=20_000, description="Largest chunk, in characters.")] = 1000,
    overlap: Annotated[
        int, Field(ge=0, le=5000, description="Characters shared by consecutive chunks.")
    ] = 100,
) -> Annotated[CallToolResult, IngestResult]:
    """Chunk, embed and store documents in a document collection (created if needed); reports progress."""
    state = _state(ctx)
    job = await _run(rag.prepare_ingest, state, _caller(state), collection, documents, chunk_size, overlap)
    total, done = len(job.chunks), 0
    for batch in job.batches():
        await _run(rag.store_chunks, state, job, batch)
        done += len(batch)
        await ctx.report_progress(done, total, f"embedded {done}/{total} chunks")
    res = await _run(rag.finish_ingest, job)
    replaced = f" (replacing {count(res.replaced_chunks, 'old chunk')})" if res.replaced_chunks else ""
    return _result(
        res,
        f"Ingested {count(len(res.documents), 'document')} as {count(res.chunks, 'chunk')} "
        f"into {collection!r}{replaced}. "
        f"Document ids: {untrusted(res.documents)}",
    )


async def search_collection(
    ctx: Context,
    collection: CollectionName,
    query: Query,
    k: K = 5,
    filter: FilterArg = None,
    text_weight: TextWeight = 0.0,
    recall_target: RecallTarget = None,
    deadline_ms: Deadline = None,
) -> Annotated[CallToolResult, SearchCollectionResult]:
    """Search a document collection: the chunks most relevant to the query, best first."""
    state = _state(ctx)
    opts = SearchOptions(recall_target, deadline_ms, text_weight)
    res = await _run(rag.search_collection, state, _caller(state), collection, query, k, filter, opts)
    lines = [
        f"{i}. [{h.score:.3f}] {untrusted(_short(h.text, 400))} (doc {untrusted(h.doc_id)}, "
        f"chunk {untrusted(h.chunk)})"
        for i, h in enumerate(res.hits, 1)
    ]
    return _result(res, "\n".join(lines) or f"No chunks found in {collection!r}.")


def _chunks_text(chunks: list[Chunk]) -> str:
    return "\n".join(
        f"{untrusted(c.id)} (doc {untrusted(c.doc_id)}, chunk {untrusted(c.chunk)}): "
        f"{untrusted(_short(c.text, 400))}" + (f" metadata {untrusted(c.metadata)}" if c.metadata else "")
        for c in chunks
    )


async def get_document(
    ctx: Context,
    collection: CollectionName,
    id: DocId = None,
    source: DocSource = None,
    offset: Annotated[int, Field(ge=0, description="Chunks to skip: next_offset of the previous page.")] = 0,
    limit: Annotated[int, Field(ge=1, le=1000, description="Chunks per page (1-1000).")] = 100,
) -> Annotated[CallToolResult, DocumentResult]:
    """One document's chunks, in order, by its id or its source (a page at a time)."""
    state = _state(ctx)
    res = await _run(rag.get_document, state, _caller(state), collection, id, source, offset, limit)
    more = f" More: call again with offset={res.next_offset}." if res.next_offset is not None else ""
    head = f"{len(res.chunks)} of {count(res.total, 'chunk')} of document(s) {untrusted(res.doc_ids)}:"
    return _result(res, head + "\n" + _chunks_text(res.chunks) + more)


async def peek_collection(
    ctx: Context,
    collection: CollectionName,
    limit: Annotated[int, Field(ge=1, le=100, description="How many chunks to show (1-100).")] = 10,
) -> Annotated[CallToolResult, PeekResult]:
    """The first chunks stored in a document collection, with their metadata, and its chunk count."""
    state = _state(ctx)
    res = await _run(rag.peek_collection, state, _caller(state), collection, limit)
    head = f"{len(res.chunks)} of {count(res.count, 'chunk')} in {collection!r}:"
    return _result(res, head + "\n" + _chunks_text(res.chunks) if res.chunks else f"{collection!r} is empty.")


async def delete_document(
    ctx: Context, collection: CollectionName, id: DocId = None, source: DocSource = None
) -> Annotated[CallToolResult, DeleteDocumentResult]:
    """Delete one document's chunks (by id), or those of every document with a source; ingest it afresh."""
    state = _state(ctx)
    res = await _run(rag.delete_document, state, _caller(state), collection, id, source)
    if not res.deleted:
        return _result(res, f"No such document in {collection!r}; nothing deleted.")
    return _result(res, f"Deleted {count(res.deleted, 'chunk')} of document(s) {untrusted(res.doc_ids)}.")


# -- resources and prompt -----------------------------------------------------------------------------------
async def memory_resource(agent: str, id: str, ctx: Context, namespace: str | None = None) -> str:
    """One memory as JSON (your own, or another agent's that you were granted)."""
    state = _state(ctx)
    ns = namespace or None
    try:
        found = await anyio.to_thread.run_sync(memory.read_memory, state, _caller(state), agent, id, ns)
    except (AccessDeniedError, EmbeddixError) as exc:
        raise ResourceError(str(exc)) from exc
    if found is None:
        raise ResourceNotFoundError(f"no memory {id!r} for agent {agent!r} in {memory.where(ns)}")
    return untrusted(found.model_dump(mode="json"), indent=1)


async def stats_resource(agent: str, ctx: Context) -> str:
    """An agent's memory statistics as JSON (your own, or the namespaces another agent granted you)."""
    state = _state(ctx)
    try:
        res = await anyio.to_thread.run_sync(memory.agent_stats, state, agent, _caller(state))
    except (AccessDeniedError, EmbeddixError) as exc:
        raise ResourceError(str(exc)) from exc
    return untrusted(res.model_dump(mode="json"), indent=1)


async def recall_context(query: str, ctx: Context, k: int = 5) -> list[UserMessage]:
    """Recalled memories formatted as context for answering a question."""
    state = _state(ctx)
    agent = _caller(state)
    k = max(1, min(int(k), 50))
    # Not counted as a recall: a prompt is context the client assembles, not the agent asking.
    memories, _ = await _run(memory.search_memories, state, agent, agent, None, query, k)
    body = _format_memories(memories) if memories else "(no relevant memories stored)"
    return [
        UserMessage(
            f"Relevant memories (best first; score = similarity to the question):\n{body}\n\n"
            f"Use them if they help answer: {query}"
        )
    ]


def register(server: MCPServer[AppState]) -> None:
    """Add every tool, resource and prompt to ``server``."""
    tools: list[tuple[Callable[..., Any], str, ToolAnnotations]] = [
        (remember, "Remember", _WRITE),
        (recall, "Recall memories", _READ_ONLY),
        (stream, "Recall progressively", _READ_ONLY),
        (forget, "Forget memories", _DESTRUCTIVE),
        (update, "Update a memory", _WRITE),
        (feedback, "Relevance feedback", _WRITE),
        (list_memories, "List memories", _READ_ONLY),
        (stats, "Memory statistics", _READ_ONLY),
        (grant, "Share memories (read-only)", _WRITE),
        (revoke, "Stop sharing memories", _WRITE),
        (create_collection, "Create a document collection", _WRITE),
        (list_collections, "List document collections", _READ_ONLY),
        (drop_collection, "Drop a document collection", _DESTRUCTIVE),
        (ingest, "Ingest documents", _WRITE),
        (search_collection, "Search a document collection", _READ_ONLY),
        (get_document, "Read a document's chunks", _READ_ONLY),
        (peek_collection, "Peek at a document collection", _READ_ONLY),
        (delete_document, "Delete a document", _DESTRUCTIVE),
    ]
    for fn, title, hints in tools:
        server.add_tool(fn, title=title, annotations=hints.model_copy(update={"title": title}))
    server.resource("memory://{agent}/{id}{?namespace}", name="memory", mime_type="application/json")(
        memory_resource
    )
    server.resource("stats://{agent}", name="agent_stats", mime_type="application/json")(stats_resource)
    server.prompt(title="Recalled memories as context")(recall_context)
