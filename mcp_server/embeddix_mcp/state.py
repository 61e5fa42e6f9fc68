"""The server's long-lived state: the database, the embedding model, grants and per-agent sessions.

One :class:`AppState` exists per server lifespan (per process over stdio and HTTP; per client connection in
the in-memory test client). It is built in a worker thread before the server answers anything: the database
is opened and the embedding model is loaded and warmed with one call, so the first ``recall`` does not pay
for either.

Threads: tools run their blocking work (embedding, core calls) in worker threads. The core allows any number
of concurrent searches and serializes writes itself; :attr:`AppState.write_lock` additionally makes this
process's read-modify-write tool calls (dedupe on ``remember``, ``feedback`` counters, ``update``) atomic
with respect to each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, overload

from embeddix_core import Collection, CollectionNotFoundError, Embeddix, EmbeddixError
from embeddix_core.embeddings import CachedEmbedder, Embedder, EmbeddingCache, MiniLMEmbedder, get_embedder

from .agents import GrantStore, docs_collection, memory_collection, split_memory_collection
from .settings import ServerSettings

__all__ = ["AgentSession", "AppState", "make_embedder", "open_state"]

log = logging.getLogger("embeddix_mcp")


@dataclass
class AgentSession:
    """What this process has done for one agent since it started (reported by ``stats``).

    The personalization engine will keep its per-agent state here too; for now these are counters and the
    last recall, which ``feedback`` uses when it is not told the query.
    """

    agent: str
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    remembered: int = 0
    deduplicated: int = 0
    recalls: int = 0
    streams: int = 0
    streams_cancelled: int = 0
    forgotten: int = 0
    updates: int = 0
    feedback: int = 0
    last_query: str | None = None
    last_recall_ids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to counters by name, e.g. ``add(recalls=1)``.

        Tools count from worker threads, and ``x += n`` on an attribute is a read and a write the GIL may
        split: the lock keeps concurrent calls from losing counts.
        """
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


@dataclass
class AppState:
    """Everything the tools share, created by the server lifespan.

    Attributes:
        settings: The settings the server was started with.
        db: The open database.
        embedder: The loaded, warmed embedding model.
        grants: Read-only grants between agents.
        sessions: Per-agent session state, by agent name.
        write_lock: Serializes this process's read-modify-write tool calls.
        started: ``time.monotonic()`` when the state was built.
    """

    settings: ServerSettings
    db: Embeddix
    embedder: Embedder
    grants: GrantStore
    sessions: dict[str, AgentSession] = field(default_factory=dict)
    write_lock: threading.RLock = field(default_factory=threading.RLock)
    started: float = field(default_factory=time.monotonic)
    _sessions_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def session(self, agent: str) -> AgentSession:
        """The session state of ``agent`` (created on first use)."""
        with self._sessions_lock:
            s = self.sessions.get(agent)
            if s is None:
                s = self.sessions[agent] = AgentSession(agent)
            return s

    def _open(self, name: str, create: bool) -> Collection | None:
        if create:
            col = self.db.get_or_create_collection(name, dim=self.embedder.dim, metric="cosine")
        else:
            try:
                col = self.db.get_collection(name)
            except CollectionNotFoundError:
                return None
        # Vectors of two models are not comparable: refuse (with the core's message) rather than mix them.
        col.check_model(self.embedder.model_id, self.embedder.dim)
        return col

    @overload
    def memories(self, agent: str, namespace: str | None, *, create: Literal[True]) -> Collection: ...
    @overload
    def memories(self, agent: str, namespace: str | None, *, create: bool) -> Collection | None: ...

    def memories(self, agent: str, namespace: str | None, *, create: bool) -> Collection | None:
        """The collection of ``agent``'s memories in ``namespace``; None if absent and not ``create``."""
        return self._open(memory_collection(agent, namespace), create)

    @overload
    def documents(self, agent: str, name: str, *, create: Literal[True]) -> Collection: ...
    @overload
    def documents(self, agent: str, name: str, *, create: bool) -> Collection | None: ...

    def documents(self, agent: str, name: str, *, create: bool) -> Collection | None:
        """``agent``'s document collection ``name``; None if absent and not ``create``."""
        return self._open(docs_collection(agent, name), create)

    def close(self) -> None:
        """Close the database (saves index snapshots). Idempotent."""
        self.db.close()


def make_embedder(settings: ServerSettings) -> Embedder:
    """The embedder ``settings`` names: MiniLM (``embed_threads`` threads) behind a cache, or hash."""
    if settings.embedder == "minilm":
        return CachedEmbedder(MiniLMEmbedder(num_threads=settings.onnx_threads), EmbeddingCache())
    return get_embedder(settings.embedder)


def open_state(
    settings: ServerSettings, embedder: Embedder | None = None, *, warm_agents: Iterable[str] = ()
) -> AppState:
    """Open the database, load and warm the embedder and the agents' indexes. Blocking: use a worker thread.

    Args:
        settings: Server settings.
        embedder: Use this embedder instead of the one ``settings.embedder`` names (tests, benchmarks).
        warm_agents: Agents whose memory collections are opened now (their indexes loaded from snapshots or
            rebuilt), so that no agent's first ``recall`` pays for it.

    Returns:
        The state; close it with :meth:`AppState.close`.
    """
    t0 = time.perf_counter()
    emb = embedder if embedder is not None else make_embedder(settings)
    probe = emb.embed_query("warm-up")  # loads the model now, not on the first tool call
    t1 = time.perf_counter()
    db = Embeddix.open(settings.data_path)
    agents = set(warm_agents)
    opened = 0
    try:
        for name in db.list_collections():
            owner = split_memory_collection(name)
            if owner is None or owner[0] not in agents:
                continue
            col = db.get_collection(name)
            opened += 1
            # One search makes the index ready (snapshots may load lazily). A collection of another model
            # is left alone: the tools refuse it with a readable error instead of the server not starting.
            if col.dim == emb.dim and col.embedding_model in (None, emb.model_id):
                try:
                    col.search(probe, 1)
                except EmbeddixError as exc:
                    log.warning("could not warm collection %r: %s", name, exc)
    except BaseException:
        db.close()
        raise
    log.info(
        "embedder %s ready in %.2fs; database %s open, %d memory collection(s) loaded, in %.2fs",
        emb.model_id,
        t1 - t0,
        settings.data_path or ":memory:",
        opened,
        time.perf_counter() - t1,
    )
    return AppState(settings=settings, db=db, embedder=emb, grants=GrantStore(db.path))
