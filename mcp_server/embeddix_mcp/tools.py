"""The MCP tools, resources and prompt: thin translations between MCP calls and core calls.

Each tool validates its arguments through its signature (pydantic ``Field`` constraints become the JSON
schema the model sees), runs the blocking work (embedding, core calls) in a worker thread, and returns a
pydantic model as structured output next to a short readable text. Errors the model can fix (a bad filter,
an unknown id, a missing grant) come back as ``ToolError`` text saying what was wrong and what is allowed;
anything else is logged by the SDK and reported as a generic tool error, and the server keeps serving.

Who is calling: over HTTP the authenticated bearer token names the agent; otherwise (stdio, in-process) it
is ``settings.agent``. A tool never takes the caller's identity as an argument.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import time
import uuid
import warnings
from collections.abc import Callable
from itertools import islice
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from embeddix_core import Collection, EmbeddixError, Hit, InvalidArgumentError, NotFoundError

from . import planner
from .agents import AccessDeniedError, check_name, docs_collection, memory_collection, split_memory_collection
from .chunking import chunk_text
from .models import (
    ID_PATTERN,
    MAX_TEXT,
    SYSTEM_KEYS,
    Chunk,
    CollectionInfo,
    CollectionsResult,
    DocumentIn,
    DropResult,
    FeedbackCounts,
    FeedbackResult,
    ForgetResult,
    GrantInfo,
    GrantResult,
    IngestResult,
    ListResult,
    Memory,
    MemoryIn,
    NamespaceInfo,
    RecallResult,
    RememberResult,
    SearchCollectionResult,
    SessionInfo,
    StatsResult,
    StreamPass,
    UpdateResult,
    memory_from,
    stored_metadata,
    touch,
    user_metadata,
)
from .render import untrusted, validation_message
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
UserArg = Annotated[
    str | None,
    Field(min_length=1, max_length=256, description="Only memories about this end user (metadata 'user')."),
]
CollectionName = Annotated[
    str, Field(pattern=_NAME_PATTERN, description="Collection name (1-48 letters, digits, _ - .).")
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


def _where(namespace: str | None) -> str:
    return "the main namespace" if namespace is None else f"namespace {namespace!r}"


def _check_readable(state: AppState, caller: str, owner: str, namespace: str | None) -> None:
    if not state.grants.allowed(owner, caller, namespace):
        raise AccessDeniedError(
            f"agent {owner!r} has not granted {caller!r} read access to {_where(namespace)}; "
            f"the owner can call "
            f"grant(to_agent={caller!r}" + ("" if namespace is None else f", namespace={namespace!r}") + ")"
        )


def _combine(flt: dict[str, Any] | None, user: str | None) -> dict[str, Any] | None:
    if user is None:
        return flt or None
    return {"$and": [flt, {"user": user}]} if flt else {"user": user}


def _similarity(hit: Hit) -> tuple[float, float | None]:
    """(cosine similarity, fused score or None): hybrid hits carry the RRF score, but a real distance too."""
    if hit.metric in ("cosine", "ip"):
        return hit.score, None
    return 1.0 - hit.distance, hit.score


def _memory_of_hit(hit: Hit, agent: str, namespace: str | None) -> Memory:
    score, fused = _similarity(hit)
    return memory_from(
        hit.id, hit.document, hit.metadata, agent=agent, namespace=namespace, score=score, fused_score=fused
    )


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
def _remember(
    state: AppState, agent: str, namespace: str | None, items: list[MemoryIn], threshold: float | None
) -> RememberResult:
    metas = [user_metadata(it.metadata) for it in items]  # reject bad metadata before embedding anything
    vecs = state.embedder.embed_documents([it.text for it in items])
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    ids: list[str] = []
    updated: list[str] = []
    duplicates = 0
    batch: dict[str, tuple[int, dict[str, Any]]] = {}  # id -> (row of vecs, metadata): one upsert at the end
    with state.write_lock:
        col = state.memories(agent, namespace, create=True)
        given = [it.id for it in items if it.id is not None]
        existing = {r.id: r for r in col.get(given, include_vectors=False) if r is not None} if given else {}
        for i, it in enumerate(items):
            if it.id is not None:
                prev = existing.get(it.id)
                batch[it.id] = (
                    i,
                    stored_metadata(it.metadata, previous=None if prev is None else prev.metadata),
                )
                if prev is not None and it.id not in updated:
                    updated.append(it.id)
                ids.append(it.id)
                continue
            if threshold is not None:
                # A near-duplicate earlier in this batch, then one already stored: update it instead.
                dup = next((ids[j] for j in range(i) if float(unit[i] @ unit[j]) >= threshold), None)
                if dup is not None:
                    batch[dup] = (i, _merge(batch[dup][1], metas[i]))
                    ids.append(dup)
                    duplicates += 1
                    continue
                hits = col.search(vecs[i], 1)
                if hits and hits[0].score >= threshold:
                    target = hits[0].id
                    batch[target] = (i, _merge(hits[0].metadata, metas[i]))
                    if target not in updated:
                        updated.append(target)
                    ids.append(target)
                    duplicates += 1
                    continue
            rid = uuid.uuid4().hex
            batch[rid] = (i, stored_metadata(it.metadata))
            ids.append(rid)
        order = list(batch)
        rows = [batch[r][0] for r in order]
        col.upsert(order, vecs[rows], [items[r].text for r in rows], [batch[r][1] for r in order])
    s = state.session(agent)
    s.remembered += len(items)
    s.deduplicated += duplicates
    return RememberResult(ids=ids, updated=updated, namespace=namespace)


def _merge(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Metadata of a near-duplicate update: the old keys, overridden by the new, tags united."""
    merged = {**previous, **new}
    if isinstance(previous.get("tags"), list) and isinstance(new.get("tags"), list):
        merged["tags"] = list(dict.fromkeys([*previous["tags"], *new["tags"]]))
    return touch(merged)


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
    agent = _caller(state)
    res = await _run(_remember, state, agent, namespace, batch, dedupe_threshold)
    n_new = len(set(res.ids) - set(res.updated))
    text_out = f"Remembered {len(batch)} item(s) in {_where(namespace)}: {n_new} new"
    if res.updated:
        # Updated ids may be ones stored directly through the core, so they are rendered as data too.
        text_out += f", {len(res.updated)} existing updated {untrusted(res.updated)}"
    return _result(res, text_out + f". Ids: {untrusted(res.ids)}")


# -- recall / stream -------------------------------------------------------------------------------------
def _open_for_read(state: AppState, caller: str, owner: str, namespace: str | None) -> Collection | None:
    _check_readable(state, caller, owner, namespace)
    return state.memories(owner, namespace, create=False)


def _recall(
    state: AppState,
    caller: str,
    owner: str,
    namespace: str | None,
    query: str,
    k: int,
    flt: dict[str, Any] | None,
    p: planner.SearchPlan,
) -> tuple[list[Memory], int | None]:
    col = _open_for_read(state, caller, owner, namespace)
    if col is None:
        return [], None
    vec = state.embedder.embed_query(query)
    hits = planner.search(col, vec, k, p, query_text=query, filter=flt)
    ef = hits.plan.ef if hits.plan is not None else None
    return [_memory_of_hit(h, owner, namespace) for h in hits], ef


def _note_recall(state: AppState, caller: str, query: str, memories: list[Memory], *, stream: bool) -> None:
    s = state.session(caller)
    if stream:
        s.streams += 1
    else:
        s.recalls += 1
    s.last_query = query
    s.last_recall_ids = [m.id for m in memories]


def _recall_text(res: RecallResult) -> str:
    if not res.memories:
        return f"No memories found for {untrusted(res.query)}."
    n = len(res.memories)
    head = f"{n} memor{'y' if n == 1 else 'ies'} for {untrusted(res.query)}, best first:"
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
) -> Annotated[CallToolResult, RecallResult]:
    """Find the stored memories most relevant to a query, best first, with similarity scores (1.0 = same)."""
    t0 = time.perf_counter()
    state = _state(ctx)
    caller = _caller(state)
    owner = from_agent or caller
    p = planner.plan(
        k, recall_target=recall_target, deadline_ms=deadline_ms, text_weight=text_weight, session=caller
    )
    memories, ef = await _run(_recall, state, caller, owner, namespace, query, k, _combine(filter, user), p)
    _note_recall(state, caller, query, memories, stream=False)
    elapsed = (time.perf_counter() - t0) * 1000
    res = RecallResult(
        memories=memories,
        query=query,
        k=k,
        agent=owner,
        namespace=namespace,
        hybrid=p.hybrid,
        ef=ef,
        elapsed_ms=round(elapsed, 3),
        deadline_met=None if deadline_ms is None else elapsed <= deadline_ms,
    )
    return _result(res, _recall_text(res))


def _prepare_stream(
    state: AppState, caller: str, owner: str, namespace: str | None, query: str
) -> tuple[Collection | None, np.ndarray | None]:
    col = _open_for_read(state, caller, owner, namespace)
    return (col, state.embedder.embed_query(query)) if col is not None else (None, None)


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
    t0 = time.perf_counter()
    state = _state(ctx)
    caller = _caller(state)
    owner = from_agent or caller
    flt = _combine(filter, user)
    p = planner.plan(
        k, recall_target=recall_target, deadline_ms=deadline_ms, text_weight=text_weight, session=caller
    )
    col, vec = await _run(_prepare_stream, state, caller, owner, namespace, query)
    done: list[StreamPass] = []
    memories: list[Memory] = []
    steps = planner.stream_steps(col, vec, k, p, query_text=query, filter=flt) if col is not None else None
    try:
        while steps is not None:
            step = await _run(next, steps, None)
            if step is None:
                break
            memories = [_memory_of_hit(h, owner, namespace) for h in step.hits]
            i = step.step + 1
            done.append(
                StreamPass(
                    index=i,
                    ef=step.ef,
                    count=len(memories),
                    best_score=memories[0].score if memories else None,
                )
            )
            total = i if step.final else i + 1  # the number of passes is known only at the end
            partial = {
                "pass": i,
                "final": step.final,
                "ef": step.ef,
                "memories": [{"id": m.id, "score": m.score, "text": _short(m.text, 200)} for m in memories],
            }
            await ctx.report_progress(i, total, untrusted(partial))
            await _log(ctx, {**partial, "memories": [m.model_dump(mode="json") for m in memories]})
            if step.final:
                break
    except anyio.get_cancelled_exc_class():
        state.session(caller).streams_cancelled += 1
        raise
    finally:
        if steps is not None:
            steps.close()  # stops the core's progressive search before another pass
    _note_recall(state, caller, query, memories, stream=True)
    elapsed = (time.perf_counter() - t0) * 1000
    res = RecallResult(
        memories=memories,
        query=query,
        k=k,
        agent=owner,
        namespace=namespace,
        hybrid=p.hybrid,
        ef=done[-1].ef if done else None,
        elapsed_ms=round(elapsed, 3),
        passes=done,
        deadline_met=None if deadline_ms is None else elapsed <= deadline_ms,
    )
    return _result(res, _recall_text(res) + f"\n({len(done)} pass(es))")


# -- forget / update / feedback -----------------------------------------------------------------------------
def _forget(
    state: AppState, agent: str, namespace: str | None, ids: list[str] | None, flt: dict[str, Any] | None
) -> int:
    col = state.memories(agent, namespace, create=False)
    if col is None:
        return 0
    n = col.delete(ids) if ids is not None else col.delete(filter=flt)
    state.session(agent).forgotten += n
    return n


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
    if (ids is None) == (filter is None):
        raise ToolError("forget takes either ids or filter (exactly one of them)")
    if filter is not None and not filter:
        raise ToolError("forget(filter={}) would delete everything; give a non-empty filter, or ids")
    state = _state(ctx)
    agent = _caller(state)
    n = await _run(_forget, state, agent, namespace, ids, filter)
    return _result(
        ForgetResult(deleted=n, namespace=namespace), f"Deleted {n} memor{'y' if n == 1 else 'ies'}."
    )


def _get_own(state: AppState, agent: str, namespace: str | None, rid: str) -> tuple[Collection, Any]:
    col = state.memories(agent, namespace, create=False)
    rec = col.get(rid, include_vectors=False) if col is not None else None
    if col is None or rec is None:
        raise NotFoundError(
            f"no memory with id {rid!r} in {_where(namespace)}; find ids with recall or list_memories"
        )
    return col, rec


def _update(
    state: AppState,
    agent: str,
    namespace: str | None,
    rid: str,
    text: str | None,
    metadata: dict[str, Any] | None,
    replace_metadata: bool,
) -> UpdateResult:
    patch = user_metadata(metadata, partial=not replace_metadata) if metadata is not None else None
    vec = state.embedder.embed_documents([text]) if text is not None else None
    with state.write_lock:
        col, rec = _get_own(state, agent, namespace, rid)
        meta = dict(rec.metadata)
        if patch is not None:
            if replace_metadata:
                meta = {k: v for k, v in meta.items() if k in SYSTEM_KEYS} | patch
            else:
                for key, value in patch.items():
                    if value is None:
                        meta.pop(key, None)
                    else:
                        meta[key] = value
        meta = touch(meta)
        reembed = text is not None and text != rec.document
        if reembed:
            col.update(rid, vectors=vec, documents=[text], metadatas=[meta])
        else:
            col.update(rid, metadatas=[meta])
        fresh = col[rid]
    state.session(agent).updates += 1
    return UpdateResult(
        memory=memory_from(rid, fresh.document, fresh.metadata, agent=agent, namespace=namespace),
        reembedded=reembed,
    )


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
    if text is None and metadata is None:
        raise ToolError("update needs text, metadata, or both")
    state = _state(ctx)
    agent = _caller(state)
    res = await _run(_update, state, agent, namespace, id, text, metadata, replace_metadata)
    return _result(res, f"Updated {id}" + (" (text re-embedded)" if res.reembedded else "") + ".")


def _feedback(
    state: AppState, agent: str, namespace: str | None, rid: str, relevant: bool, query: str | None
) -> FeedbackResult:
    s = state.session(agent)
    with state.write_lock:
        col, rec = _get_own(state, agent, namespace, rid)
        meta = dict(rec.metadata)
        key = "feedback_relevant" if relevant else "feedback_irrelevant"
        meta[key] = int(meta.get(key, 0)) + 1
        meta["feedback_last_at"] = touch({})["updated_at"]
        q = query if query is not None else s.last_query
        if q:
            meta["feedback_last_query"] = q[:500]
        col.update(rid, metadatas=[meta])
    s.feedback += 1
    counts = FeedbackCounts(
        relevant=int(meta.get("feedback_relevant", 0)), irrelevant=int(meta.get("feedback_irrelevant", 0))
    )
    return FeedbackResult(id=rid, feedback=counts)


async def feedback(
    ctx: Context,
    id: MemoryId,
    relevant: Annotated[bool, Field(description="Whether the memory was useful for the query.")],
    query: Annotated[
        str | None,
        Field(max_length=MAX_TEXT, description="The query it was recalled for (default: your last recall)."),
    ] = None,
    namespace: NamespaceArg = None,
) -> Annotated[CallToolResult, FeedbackResult]:
    """Record whether a recalled memory was relevant; counts are kept with the memory."""
    state = _state(ctx)
    agent = _caller(state)
    res = await _run(_feedback, state, agent, namespace, id, relevant, query)
    c = res.feedback
    return _result(
        res,
        f"Noted: {id} {'relevant' if relevant else 'not relevant'} "
        f"(relevant {c.relevant}, not relevant {c.irrelevant}).",
    )


# -- list / stats ------------------------------------------------------------------------------------------
def _encode_cursor(collection: str, offset: int) -> str:
    raw = json.dumps({"v": 1, "c": collection, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, collection: str) -> int:
    try:
        doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = int(doc["o"])
        same = doc.get("v") == 1 and doc.get("c") == collection and offset >= 0
    except (ValueError, KeyError, TypeError, binascii.Error):
        same = False
    if not same:
        raise InvalidArgumentError(
            "cursor is not one list_memories returned for this namespace; omit it to start over"
        )
    return offset


def _list(
    state: AppState,
    caller: str,
    owner: str,
    namespace: str | None,
    cursor: str | None,
    limit: int,
    flt: dict[str, Any] | None,
) -> ListResult:
    name = memory_collection(owner, namespace)
    offset = _decode_cursor(cursor, name) if cursor else 0
    col = _open_for_read(state, caller, owner, namespace)
    if col is None:
        return ListResult(memories=[], next_cursor=None, total=0)
    total = col.count(flt)
    # Offset paging over the store's insertion order; a memory deleted between pages shifts later ones by one.
    recs = list(islice(col.scan(flt), offset, offset + limit))
    nxt = offset + len(recs)
    memories = [memory_from(r.id, r.document, r.metadata, agent=owner, namespace=namespace) for r in recs]
    return ListResult(
        memories=memories, next_cursor=_encode_cursor(name, nxt) if nxt < total else None, total=total
    )


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
    res = await _run(_list, state, caller, from_agent or caller, namespace, cursor, limit, filter)
    more = f" More: call again with cursor={res.next_cursor!r}." if res.next_cursor else ""
    return _result(
        res, f"{len(res.memories)} of {res.total} memories:\n" + _format_memories(res.memories) + more
    )


def _grant_info(g: Any) -> GrantInfo:
    return GrantInfo(owner=g.owner, grantee=g.grantee, namespace=g.namespace, created_at=g.created_at)


def agent_stats(state: AppState, owner: str, viewer: str) -> StatsResult:
    """Statistics of ``owner``'s memories as ``viewer`` may see them (all if the same agent, else granted)."""
    namespaces: list[NamespaceInfo] = []
    collections: list[str] = []
    for name in state.db.list_collections():
        split = split_memory_collection(name)
        if split is not None and split[0] == owner:
            if not state.grants.allowed(owner, viewer, split[1]):
                continue
            st = state.db.get_collection(name).stats()
            namespaces.append(NamespaceInfo(namespace=split[1], count=st.count, index=st.index))
        elif owner == viewer and name.startswith(f"docs:{owner}:"):
            collections.append(name.split(":", 2)[2])
    if owner != viewer and not namespaces:
        raise AccessDeniedError(f"agent {owner!r} has not granted {viewer!r} read access to anything")
    s = state.session(owner) if owner == viewer else None
    return StatsResult(
        agent=owner,
        total_memories=sum(n.count for n in namespaces),
        namespaces=namespaces,
        collections=collections,
        embedder=state.embedder.model_id,
        dim=state.embedder.dim,
        grants_given=[_grant_info(g) for g in state.grants.given_by(owner)] if s else [],
        grants_received=[_grant_info(g) for g in state.grants.received_by(owner)] if s else [],
        session=None
        if s is None
        else SessionInfo(
            started_at=s.started_at,
            remembered=s.remembered,
            deduplicated=s.deduplicated,
            recalls=s.recalls,
            streams=s.streams,
            streams_cancelled=s.streams_cancelled,
            forgotten=s.forgotten,
            updates=s.updates,
            feedback=s.feedback,
        ),
    )


def _stats_text(res: StatsResult) -> str:
    parts = [f"Agent {res.agent}: {res.total_memories} memories"]
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
    res = await _run(agent_stats, state, agent, agent)
    return _result(res, _stats_text(res))


# -- grants ------------------------------------------------------------------------------------------------
async def grant(
    ctx: Context,
    to_agent: Annotated[str, Field(pattern=_AGENT_PATTERN, description="The agent that may read.")],
    namespace: NamespaceArg = None,
) -> Annotated[CallToolResult, GrantResult]:
    """Let another agent read (never change) your memories in one namespace, via recall(from_agent=you)."""
    state = _state(ctx)
    owner = _caller(state)
    g, new = await _run(state.grants.grant, owner, to_agent, namespace)
    return _result(
        GrantResult(grant=_grant_info(g), changed=new),
        f"{to_agent} {'can now' if new else 'could already'} read your {_where(namespace)}.",
    )


async def revoke(
    ctx: Context,
    to_agent: Annotated[str, Field(pattern=_AGENT_PATTERN, description="The agent to stop sharing with.")],
    namespace: NamespaceArg = None,
) -> Annotated[CallToolResult, GrantResult]:
    """Withdraw a read grant made with grant()."""
    state = _state(ctx)
    owner = _caller(state)
    changed = await _run(state.grants.revoke, owner, to_agent, namespace)
    return _result(
        GrantResult(grant=None, changed=changed),
        f"{to_agent} {'can no longer' if changed else 'could not'} read your {_where(namespace)}.",
    )


# -- document collections (RAG) ------------------------------------------------------------------------------
def _create_collection(state: AppState, agent: str, name: str) -> CollectionInfo:
    col = state.documents(agent, name, create=True)
    return CollectionInfo(name=name, count=col.count())


async def create_collection(ctx: Context, name: CollectionName) -> Annotated[CallToolResult, CollectionInfo]:
    """Create a document collection for ingest/search_collection (no error if it exists)."""
    state = _state(ctx)
    agent = _caller(state)
    info = await _run(_create_collection, state, agent, name)
    return _result(info, f"Collection {name!r} ready ({info.count} chunks).")


def _list_collections(state: AppState, agent: str) -> CollectionsResult:
    prefix = f"docs:{agent}:"
    out = []
    for full in state.db.list_collections():
        if full.startswith(prefix):
            out.append(CollectionInfo(name=full[len(prefix) :], count=state.db.get_collection(full).count()))
    return CollectionsResult(collections=out)


async def list_collections(ctx: Context) -> Annotated[CallToolResult, CollectionsResult]:
    """Your document collections and their chunk counts."""
    state = _state(ctx)
    res = await _run(_list_collections, state, _caller(state))
    text = (
        "\n".join(f"{untrusted(c.name)}: {c.count} chunks" for c in res.collections)
        or "No document collections."
    )
    return _result(res, text)


def _drop(state: AppState, agent: str, name: str) -> bool:
    full = docs_collection(agent, name)
    if full not in state.db:
        return False
    state.db.drop_collection(full)
    return True


async def drop_collection(ctx: Context, name: CollectionName) -> Annotated[CallToolResult, DropResult]:
    """Delete a document collection and all its chunks."""
    state = _state(ctx)
    dropped = await _run(_drop, state, _caller(state), name)
    return _result(
        DropResult(name=name, dropped=dropped),
        f"Dropped collection {name!r}." if dropped else f"No collection named {name!r}; nothing dropped.",
    )


def _ingest_prepare(
    state: AppState, agent: str, name: str, documents: list[DocumentIn], size: int, overlap: int
) -> tuple[Collection, list[str], list[tuple[str, str, dict[str, Any]]], int]:
    col = state.documents(agent, name, create=True)
    doc_ids: list[str] = []
    chunks: list[tuple[str, str, dict[str, Any]]] = []
    replaced = 0
    for d in documents:
        did = d.id or uuid.uuid4().hex
        meta = user_metadata(d.metadata)
        if d.id is not None:
            replaced += col.delete(filter={"doc_id": did})  # re-ingest replaces the old chunks
        pieces = chunk_text(d.text, size, overlap)
        for n, (start, piece) in enumerate(pieces):
            chunks.append(
                (
                    f"{did}#{n}",
                    piece,
                    {**meta, "doc_id": did, "chunk": n, "chunks": len(pieces), "start": start},
                )
            )
        doc_ids.append(did)
    return col, doc_ids, chunks, replaced


def _ingest_batch(state: AppState, col: Collection, batch: list[tuple[str, str, dict[str, Any]]]) -> None:
    vecs = state.embedder.embed_documents([c[1] for c in batch])
    col.upsert([c[0] for c in batch], vecs, [c[1] for c in batch], [c[2] for c in batch])


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
    if overlap >= chunk_size:
        raise ToolError(
            f"overlap must be smaller than chunk_size; got overlap={overlap}, chunk_size={chunk_size}"
        )
    state = _state(ctx)
    agent = _caller(state)
    col, doc_ids, chunks, replaced = await _run(
        _ingest_prepare, state, agent, collection, documents, chunk_size, overlap
    )
    for start in range(0, len(chunks), _INGEST_BATCH):
        await _run(_ingest_batch, state, col, chunks[start : start + _INGEST_BATCH])
        done = min(start + _INGEST_BATCH, len(chunks))
        await ctx.report_progress(done, len(chunks), f"embedded {done}/{len(chunks)} chunks")
    res = IngestResult(collection=collection, documents=doc_ids, chunks=len(chunks), replaced_chunks=replaced)
    return _result(res, f"Ingested {len(doc_ids)} document(s) as {len(chunks)} chunks into {collection!r}.")


def _search_collection(
    state: AppState,
    agent: str,
    name: str,
    query: str,
    k: int,
    flt: dict[str, Any] | None,
    p: planner.SearchPlan,
) -> tuple[list[Chunk], int | None]:
    col = state.documents(agent, name, create=False)
    if col is None:
        raise NotFoundError(
            f"no document collection named {name!r}; see list_collections, or create it with ingest"
        )
    hits = planner.search(col, state.embedder.embed_query(query), k, p, query_text=query, filter=flt)
    out = []
    for h in hits:
        score, fused = _similarity(h)
        meta = dict(h.metadata)
        doc_id, chunk = meta.pop("doc_id", None), meta.pop("chunk", None)
        meta.pop("start", None)
        meta.pop("chunks", None)
        out.append(
            Chunk(
                id=h.id,
                doc_id=doc_id,
                chunk=chunk,
                text=h.document,
                score=round(score, 6),
                fused_score=None if fused is None else round(fused, 6),
                metadata=meta,
            )
        )
    return out, (hits.plan.ef if hits.plan is not None else None)


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
    agent = _caller(state)
    p = planner.plan(
        k, recall_target=recall_target, deadline_ms=deadline_ms, text_weight=text_weight, session=agent
    )
    hits, ef = await _run(_search_collection, state, agent, collection, query, k, filter, p)
    res = SearchCollectionResult(collection=collection, hits=hits, hybrid=p.hybrid, ef=ef)
    lines = [
        f"{i}. [{h.score:.3f}] {untrusted(_short(h.text, 400))} (doc {untrusted(h.doc_id)}, "
        f"chunk {untrusted(h.chunk)})"
        for i, h in enumerate(hits, 1)
    ]
    return _result(res, "\n".join(lines) or f"No chunks found in {collection!r}.")


# -- resources and prompt -----------------------------------------------------------------------------------
def _read_memory(state: AppState, caller: str, owner: str, rid: str, namespace: str | None) -> str:
    try:
        if namespace is not None:
            check_name(namespace)
        col = _open_for_read(state, caller, owner, namespace)
    except (AccessDeniedError, EmbeddixError) as exc:
        raise ResourceError(str(exc)) from exc
    rec = col.get(rid, include_vectors=False) if col is not None else None
    if rec is None:
        raise ResourceNotFoundError(f"no memory {rid!r} for agent {owner!r} in {_where(namespace)}")
    memory = memory_from(rid, rec.document, rec.metadata, agent=owner, namespace=namespace)
    return untrusted(memory.model_dump(mode="json"), indent=1)


async def memory_resource(agent: str, id: str, ctx: Context, namespace: str | None = None) -> str:
    """One memory as JSON (your own, or another agent's that you were granted)."""
    state = _state(ctx)
    return await anyio.to_thread.run_sync(_read_memory, state, _caller(state), agent, id, namespace or None)


async def stats_resource(agent: str, ctx: Context) -> str:
    """An agent's memory statistics as JSON (your own, or the namespaces another agent granted you)."""
    state = _state(ctx)
    try:
        res = await anyio.to_thread.run_sync(agent_stats, state, agent, _caller(state))
    except (AccessDeniedError, EmbeddixError) as exc:
        raise ResourceError(str(exc)) from exc
    return untrusted(res.model_dump(mode="json"), indent=1)


async def recall_context(query: str, ctx: Context, k: int = 5) -> list[UserMessage]:
    """Recalled memories formatted as context for answering a question."""
    state = _state(ctx)
    agent = _caller(state)
    k = max(1, min(int(k), 50))
    p = planner.plan(k, session=agent)
    memories, _ = await _run(_recall, state, agent, agent, None, query, k, None, p)
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
    ]
    for fn, title, hints in tools:
        server.add_tool(fn, title=title, annotations=hints.model_copy(update={"title": title}))
    server.resource("memory://{agent}/{id}{?namespace}", name="memory", mime_type="application/json")(
        memory_resource
    )
    server.resource("stats://{agent}", name="agent_stats", mime_type="application/json")(stats_resource)
    server.prompt(title="Recalled memories as context")(recall_context)
