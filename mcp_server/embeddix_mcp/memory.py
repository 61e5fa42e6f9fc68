"""Agent memory on an Embeddix database: what the tools do, without the protocol that calls them.

This module is the memory domain: remember (with near-duplicate merging), recall and progressive recall,
forget, update (metadata merge), feedback counters, paging, statistics and grants; document collections are
in ``documents.py``. It imports no MCP, ASGI or web code (``tests/mcp/test_layering.py`` checks it), so
another front end (a REST route, a library call, a benchmark) gets the same behaviour by calling these
functions; the MCP tools in ``tools.py`` only parse arguments, run these in a worker thread, and render the
results as text.

Every function is blocking (embedding, core calls): call it from a worker thread in async code. Each takes
the server's :class:`~embeddix_mcp.state.AppState` and the agents involved as explicit arguments: who is
calling is the front end's business (a bearer token, a configured agent), never a caller's argument.

Errors: the caller can fix :class:`~embeddix_core.errors.EmbeddixError` (bad filter, unknown id, bad
metadata) and :class:`~embeddix_mcp.agents.AccessDeniedError` (a missing grant); their messages say what was
wrong and what is allowed. Anything else is a bug.

Read-modify-write rule: ``remember`` (dedupe), ``update`` and ``feedback`` read a record and write it back
under :attr:`AppState.write_lock`, so two such calls in this process never interleave; the core serializes
the writes themselves, also across processes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from embeddix_core import Collection, Hit, Hits, InvalidArgumentError, NotFoundError

from .agents import AccessDeniedError, Grant, check_name, memory_collection, split_memory_collection
from .models import (
    SYSTEM_KEYS,
    FeedbackCounts,
    FeedbackResult,
    ForgetResult,
    GrantInfo,
    GrantResult,
    ListResult,
    Memory,
    MemoryIn,
    NamespaceInfo,
    RecallResult,
    RememberResult,
    SessionInfo,
    StatsResult,
    StreamPass,
    UpdateResult,
    memory_from,
    stored_metadata,
    touch,
    user_metadata,
)
from .search import SearchOptions, plan_ef, search, similarity
from .state import AgentSession, AppState

__all__ = [
    "RecallStep",
    "RecallStream",
    "agent_stats",
    "feedback",
    "forget",
    "grant",
    "list_memories",
    "read_memory",
    "recall",
    "remember",
    "revoke",
    "search_memories",
    "update",
    "where",
]


# -- shared helpers --------------------------------------------------------------------------------------
def where(namespace: str | None) -> str:
    """A namespace as the words of a message: ``"the main namespace"`` or ``"namespace 'x'"``."""
    return "the main namespace" if namespace is None else f"namespace {namespace!r}"


def _check_readable(state: AppState, caller: str, owner: str, namespace: str | None) -> None:
    if not state.grants.allowed(owner, caller, namespace):
        raise AccessDeniedError(
            f"agent {owner!r} has not granted {caller!r} read access to {where(namespace)}; "
            f"the owner can call "
            f"grant(to_agent={caller!r}" + ("" if namespace is None else f", namespace={namespace!r}") + ")"
        )


def _open_for_read(state: AppState, caller: str, owner: str, namespace: str | None) -> Collection | None:
    # The grant is checked before the collection is opened, so a caller without one cannot even learn
    # whether the namespace exists.
    _check_readable(state, caller, owner, namespace)
    return state.memories(owner, namespace, create=False)


def _with_user(flt: dict[str, Any] | None, user: str | None) -> dict[str, Any] | None:
    """``flt`` narrowed to memories about end user ``user`` (the ``user`` argument is a filter shortcut)."""
    if user is None:
        return flt or None
    return {"$and": [flt, {"user": user}]} if flt else {"user": user}


def _memory_of_hit(hit: Hit, agent: str, namespace: str | None) -> Memory:
    score, fused = similarity(hit)
    return memory_from(
        hit.id, hit.document, hit.metadata, agent=agent, namespace=namespace, score=score, fused_score=fused
    )


# -- remember --------------------------------------------------------------------------------------------
def remember(
    state: AppState, agent: str, namespace: str | None, items: list[MemoryIn], threshold: float | None = None
) -> RememberResult:
    """Store ``items`` in ``agent``'s ``namespace`` as one atomic upsert.

    An item with an id replaces the memory stored under it (keeping its provenance). Without an id, and
    with ``threshold`` set, an item whose cosine similarity to an earlier item of the batch, or to the
    nearest stored memory, reaches ``threshold`` updates that memory instead (metadata merged, tags
    united) rather than storing a copy.

    Returns:
        Per item the id it is stored under, and which of those ids existed before.

    Raises:
        InvalidArgumentError: Bad metadata (checked before anything is embedded).
    """
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
                # A near-duplicate earlier in this batch (not stored yet), then one already stored: update
                # it instead of storing a copy.
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
    state.session(agent).add(remembered=len(items), deduplicated=duplicates)
    return RememberResult(ids=ids, updated=updated, namespace=namespace)


def _merge(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Metadata of a near-duplicate update: the old keys, overridden by the new, tags united."""
    merged = {**previous, **new}
    if isinstance(previous.get("tags"), list) and isinstance(new.get("tags"), list):
        merged["tags"] = list(dict.fromkeys([*previous["tags"], *new["tags"]]))
    return touch(merged)


# -- recall and progressive recall -----------------------------------------------------------------------
def search_memories(
    state: AppState,
    caller: str,
    owner: str,
    namespace: str | None,
    query: str,
    k: int,
    flt: dict[str, Any] | None = None,
    opts: SearchOptions = SearchOptions(),  # noqa: B008 (frozen: one shared default is safe)
) -> tuple[list[Memory], int | None]:
    """The ``k`` memories of ``owner`` most similar to ``query``, read by ``caller``, without bookkeeping.

    Returns:
        The memories best first, and the beam width the core used (None: exact search).

    Raises:
        AccessDeniedError: ``caller`` is not ``owner`` and holds no grant for ``namespace``.
    """
    col = _open_for_read(state, caller, owner, namespace)
    if col is None:
        return [], None
    hits = search(col, state.embedder.embed_query(query), k, query, flt, opts, caller)
    return [_memory_of_hit(h, owner, namespace) for h in hits], plan_ef(hits)


def recall(
    state: AppState,
    caller: str,
    owner: str,
    namespace: str | None,
    query: str,
    k: int,
    *,
    flt: dict[str, Any] | None = None,
    user: str | None = None,
    opts: SearchOptions = SearchOptions(),  # noqa: B008 (frozen: one shared default is safe)
) -> RecallResult:
    """Recall: :func:`search_memories`, counted in ``caller``'s session, whose last query and ids
    ``feedback`` falls back on.

    Args:
        state: The server state.
        caller: The agent asking.
        owner: Whose memories to search (``caller`` itself, or an agent that granted it read access).
        namespace: The owner's namespace (None: main).
        query: The query text.
        k: How many memories.
        flt: Metadata filter.
        user: Only memories about this end user (metadata ``user``).
        opts: Recall target, deadline and hybrid weight.

    Returns:
        The memories and how the search went; ``elapsed_ms`` counts from this call's start.

    Raises:
        AccessDeniedError: No grant. InvalidFilterError: A bad filter.
    """
    t0 = time.perf_counter()
    memories, ef = search_memories(state, caller, owner, namespace, query, k, _with_user(flt, user), opts)
    _note_recall(state, caller, query, memories, stream=False)
    elapsed = (time.perf_counter() - t0) * 1000
    return RecallResult(
        memories=memories,
        query=query,
        k=k,
        agent=owner,
        namespace=namespace,
        hybrid=opts.hybrid,
        ef=ef,
        elapsed_ms=round(elapsed, 3),
        deadline_met=None if opts.deadline_ms is None else elapsed <= opts.deadline_ms,
    )


def _note_recall(state: AppState, caller: str, query: str, memories: list[Memory], *, stream: bool) -> None:
    s = state.session(caller)
    s.add(**{"streams" if stream else "recalls": 1})
    s.last_query = query
    s.last_recall_ids = [m.id for m in memories]


@dataclass(frozen=True, slots=True)
class RecallStep:
    """One pass of a progressive recall.

    Attributes:
        index: 1-based pass number.
        final: True for the last pass; its memories are the answer.
        ef: The beam width of this pass (None: exact search).
        memories: The best memories found so far, best first.
    """

    index: int
    final: bool
    ef: int | None
    memories: list[Memory]


@dataclass
class RecallStream:
    """One progressive recall, advanced a pass at a time by :meth:`next_pass` so that a front end can
    show each pass before the search widens (the core's ``Collection.search_iter``).

    Construction does no work; the grant check, the query embedding and every pass happen in
    :meth:`next_pass` (blocking: call it in a worker thread, never two at once). End with :meth:`finish`
    (which counts the stream in the session), :meth:`cancel` (which counts a cancelled one) or, on an
    error, :meth:`close`; each stops the core before another pass, and closing twice is harmless.
    """

    state: AppState
    caller: str
    owner: str
    namespace: str | None
    query: str
    k: int
    flt: dict[str, Any] | None = None
    user: str | None = None
    opts: SearchOptions = field(default_factory=SearchOptions)
    passes: list[StreamPass] = field(default_factory=list)
    memories: list[Memory] = field(default_factory=list)
    _started: float = field(default_factory=time.perf_counter, repr=False)
    _steps: Generator[RecallStep, None, None] | None = field(default=None, repr=False)
    _done: bool = field(default=False, repr=False)

    def next_pass(self) -> RecallStep | None:
        """Run the next pass; None once the final pass has been returned (or nothing is stored).

        Raises:
            AccessDeniedError: No grant (on the first call). InvalidFilterError: A bad filter.
        """
        if self._done:
            return None
        if self._steps is None:
            self._steps = self._run()
        step = next(self._steps, None)
        if step is None or step.final:
            self._done = True
        if step is not None:
            self.memories = step.memories
            best = step.memories[0].score if step.memories else None
            self.passes.append(
                StreamPass(index=step.index, ef=step.ef, count=len(step.memories), best_score=best)
            )
        return step

    def _run(self) -> Generator[RecallStep, None, None]:
        col = _open_for_read(self.state, self.caller, self.owner, self.namespace)
        if col is None:
            return
        vec = self.state.embedder.embed_query(self.query)
        flt = _with_user(self.flt, self.user)
        if self.opts.hybrid:
            # A fused ranking has no progressive form: one search, one final pass.
            hits = search(col, vec, self.k, self.query, flt, self.opts, self.caller)
            yield RecallStep(1, True, plan_ef(hits), self._memories(hits))
            return
        steps = col.search_iter(
            vec, self.k, filter=flt, recall=self.opts.recall_target, deadline_ms=self.opts.deadline_ms
        )
        with contextlib.closing(steps):  # closing this generator closes the core's: no further pass runs
            for step in steps:
                yield RecallStep(step.step + 1, step.final, step.ef, self._memories(step.hits))

    def _memories(self, hits: Hits) -> list[Memory]:
        return [_memory_of_hit(h, self.owner, self.namespace) for h in hits]

    def close(self) -> None:
        """Stop the search before another pass (no bookkeeping). Idempotent."""
        self._done = True
        if self._steps is not None:
            self._steps.close()

    def cancel(self) -> None:
        """Stop the search and count a cancelled stream in the caller's session."""
        self.close()
        self.state.session(self.caller).add(streams_cancelled=1)

    def finish(self) -> RecallResult:
        """Stop the search, count the stream in the session, and return the last pass's result.

        Returns:
            The result; ``passes`` lists every pass made, ``elapsed_ms`` counts from construction.
        """
        self.close()
        _note_recall(self.state, self.caller, self.query, self.memories, stream=True)
        elapsed = (time.perf_counter() - self._started) * 1000
        deadline = self.opts.deadline_ms
        return RecallResult(
            memories=self.memories,
            query=self.query,
            k=self.k,
            agent=self.owner,
            namespace=self.namespace,
            hybrid=self.opts.hybrid,
            ef=self.passes[-1].ef if self.passes else None,
            elapsed_ms=round(elapsed, 3),
            passes=self.passes,
            deadline_met=None if deadline is None else elapsed <= deadline,
        )


# -- forget / update / feedback --------------------------------------------------------------------------
def forget(
    state: AppState,
    agent: str,
    namespace: str | None,
    ids: list[str] | None = None,
    flt: dict[str, Any] | None = None,
) -> ForgetResult:
    """Delete ``agent``'s memories by ids, or every one matching a non-empty filter.

    Raises:
        InvalidArgumentError: Neither or both of ``ids`` and ``flt``, or an empty filter (which would
            delete everything: a caller wanting that must say so with ids).
    """
    if (ids is None) == (flt is None):
        raise InvalidArgumentError("forget takes either ids or filter (exactly one of them)")
    if flt is not None and not flt:
        raise InvalidArgumentError(
            "forget(filter={}) would delete everything; give a non-empty filter, or ids"
        )
    col = state.memories(agent, namespace, create=False)
    if col is None:
        return ForgetResult(deleted=0, namespace=namespace)
    n = col.delete(ids) if ids is not None else col.delete(filter=flt)
    state.session(agent).add(forgotten=n)
    return ForgetResult(deleted=n, namespace=namespace)


def _get_own(state: AppState, agent: str, namespace: str | None, rid: str) -> tuple[Collection, Any]:
    col = state.memories(agent, namespace, create=False)
    rec = col.get(rid, include_vectors=False) if col is not None else None
    if col is None or rec is None:
        raise NotFoundError(
            f"no memory with id {rid!r} in {where(namespace)}; find ids with recall or list_memories"
        )
    return col, rec


def update(
    state: AppState,
    agent: str,
    namespace: str | None,
    rid: str,
    text: str | None = None,
    metadata: dict[str, Any] | None = None,
    *,
    replace_metadata: bool = False,
) -> UpdateResult:
    """Change one memory's text and/or metadata in place; its id and provenance are kept.

    ``metadata`` is merged into the stored keys (a None value removes a key), or with ``replace_metadata``
    replaces every caller key. New text is re-embedded only if it differs from the stored text.

    Raises:
        InvalidArgumentError: Neither text nor metadata, or bad metadata. NotFoundError: No such memory.
    """
    if text is None and metadata is None:
        raise InvalidArgumentError("update needs text, metadata, or both")
    patch = user_metadata(metadata, partial=not replace_metadata) if metadata is not None else None
    vec = state.embedder.embed_documents([text]) if text is not None else None  # outside the lock: slow
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
    state.session(agent).add(updates=1)
    return UpdateResult(
        memory=memory_from(rid, fresh.document, fresh.metadata, agent=agent, namespace=namespace),
        reembedded=reembed,
    )


def feedback(
    state: AppState,
    agent: str,
    namespace: str | None,
    rid: str,
    relevant: bool,
    query: str | None = None,
    user: str | None = None,
) -> FeedbackResult:
    """Count one relevant / not-relevant verdict on a memory, stored with it (so filters can use it), and
    record it as a feedback event of ``user`` in the core, which personalized recalls rank by.

    Args:
        query: The query the memory was recalled for; None: the agent's last recall in this process.
        user: Whose verdict it is (None: the agent's).

    Raises:
        NotFoundError: No such memory.
    """
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
        col.feedback(rid, user=user or agent, relevant=relevant, query=q or None)
    s.add(feedback=1)
    counts = FeedbackCounts(
        relevant=int(meta.get("feedback_relevant", 0)), irrelevant=int(meta.get("feedback_irrelevant", 0))
    )
    return FeedbackResult(id=rid, feedback=counts)


# -- listing ---------------------------------------------------------------------------------------------
def _encode_cursor(collection: str, offset: int) -> str:
    # The cursor names its collection, so a cursor of one namespace is refused in another instead of
    # silently paging from a meaningless offset.
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


def list_memories(
    state: AppState,
    caller: str,
    owner: str,
    namespace: str | None,
    cursor: str | None = None,
    limit: int = 20,
    flt: dict[str, Any] | None = None,
) -> ListResult:
    """One page of ``owner``'s memories (oldest first) as ``caller`` may read them.

    Args:
        cursor: ``next_cursor`` of the previous page; None for the first page.
        limit: Memories per page.
        flt: Metadata filter.

    Raises:
        InvalidArgumentError: A cursor not made for this namespace. AccessDeniedError: No grant.
    """
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


def read_memory(state: AppState, caller: str, owner: str, rid: str, namespace: str | None) -> Memory | None:
    """One memory of ``owner`` by id, as ``caller`` may read it; None if it does not exist.

    Raises:
        InvalidArgumentError: A malformed namespace. AccessDeniedError: No grant.
    """
    if namespace is not None:
        check_name(namespace)
    col = _open_for_read(state, caller, owner, namespace)
    rec = col.get(rid, include_vectors=False) if col is not None else None
    if rec is None:
        return None
    return memory_from(rid, rec.document, rec.metadata, agent=owner, namespace=namespace)


# -- statistics and grants -------------------------------------------------------------------------------
def _grant_info(g: Grant) -> GrantInfo:
    return GrantInfo(owner=g.owner, grantee=g.grantee, namespace=g.namespace, created_at=g.created_at)


def agent_stats(state: AppState, owner: str, viewer: str) -> StatsResult:
    """Statistics of ``owner``'s memories as ``viewer`` may see them (all if the same agent, else granted).

    Another agent sees only the namespaces granted to it, and no collections, grants or session.

    Raises:
        AccessDeniedError: ``viewer`` holds no grant from ``owner`` at all.
    """
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
        session=None if s is None else _session_info(s),
    )


def _session_info(s: AgentSession) -> SessionInfo:
    return SessionInfo(
        started_at=s.started_at,
        remembered=s.remembered,
        deduplicated=s.deduplicated,
        recalls=s.recalls,
        streams=s.streams,
        streams_cancelled=s.streams_cancelled,
        forgotten=s.forgotten,
        updates=s.updates,
        feedback=s.feedback,
    )


def grant(state: AppState, owner: str, to_agent: str, namespace: str | None = None) -> GrantResult:
    """Let ``to_agent`` read (never change) ``owner``'s ``namespace``; ``changed`` is False if it could.

    Raises:
        InvalidArgumentError: A bad name, or ``to_agent`` is ``owner``.
    """
    g, new = state.grants.grant(owner, to_agent, namespace)
    return GrantResult(grant=_grant_info(g), changed=new)


def revoke(state: AppState, owner: str, to_agent: str, namespace: str | None = None) -> GrantResult:
    """Withdraw a grant; ``changed`` says whether there was one."""
    return GrantResult(grant=None, changed=state.grants.revoke(owner, to_agent, namespace))
