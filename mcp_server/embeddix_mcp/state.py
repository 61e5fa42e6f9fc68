"""The server's long-lived state: the database, the embedding model, grants and per-agent sessions.

One :class:`AppState` exists per server lifespan (per process over stdio and HTTP; per client connection in
the in-memory test client). The server opens the database before it answers anything, and loads the embedding
model in a background thread (:func:`open_state` with ``background=True``): the first start of MiniLM
prepares the model for tens of seconds, and a client must not wait that long for ``initialize``, nor an HTTP
server stay unreachable. The loader warms the model with one call and the agents' indexes with one search,
so that the first ``recall`` pays for neither; until it is done, :attr:`AppState.embedder` blocks (tools
that need the model wait in their worker thread) and ``/healthz`` says ``warming``. What the loader does and
how long it took goes to the ``embeddix_mcp.startup`` logger.

Threads: tools run their blocking work (embedding, core calls) in worker threads. The core allows any number
of concurrent searches and serializes writes itself; :attr:`AppState.write_lock` additionally makes this
process's read-modify-write tool calls (dedupe on ``remember``, ``feedback`` counters, ``update``) atomic
with respect to each other.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast, overload

from embeddix_core import Collection, CollectionNotFoundError, Embeddix, EmbeddixError, EmbeddixSettings
from embeddix_core.embeddings import (
    CachedEmbedder,
    Embedder,
    EmbeddingCache,
    MiniLMEmbedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    get_embedder,
)

from .agents import GrantStore, docs_collection, memory_collection, split_memory_collection
from .settings import STARTUP_LOGGER, ServerSettings

__all__ = ["AgentSession", "AppState", "make_embedder", "open_state"]

log = logging.getLogger("embeddix_mcp")
startup_log = logging.getLogger(STARTUP_LOGGER)


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
        grants: Read-only grants between agents.
        sessions: Per-agent session state, by agent name.
        write_lock: Serializes this process's read-modify-write tool calls.
        started: ``time.monotonic()`` when the state was built.
    """

    settings: ServerSettings
    db: Embeddix
    grants: GrantStore
    sessions: dict[str, AgentSession] = field(default_factory=dict)
    write_lock: threading.RLock = field(default_factory=threading.RLock)
    started: float = field(default_factory=time.monotonic)
    _sessions_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Model loading: _loaded is set once _embedder or _error is; _life_lock orders the loader's index
    # warm-up against close(), so that the loader never searches a closed database.
    _embedder: Embedder | None = field(default=None, repr=False)
    _error: EmbeddixError | None = field(default=None, repr=False)
    _loaded: threading.Event = field(default_factory=threading.Event, repr=False)
    _life_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def embedder(self) -> Embedder:
        """The loaded, warmed embedding model; blocks until the loader is done (call from a worker thread).

        Raises:
            EmbeddixError: The model failed to load, or the server closed before it was loaded.
        """
        self._loaded.wait()
        if self._embedder is None:
            raise self._error or EmbeddixError("the embedding model is not loaded")
        return self._embedder

    @property
    def status(self) -> Literal["warming", "ok", "failed"]:
        """Whether the model is still loading, ready, or failed to load (never blocks)."""
        if not self._loaded.is_set():
            return "warming"
        return "ok" if self._embedder is not None else "failed"

    @property
    def loaded_embedder(self) -> Embedder | None:
        """The embedder if it is ready, else None (never blocks)."""
        return self._embedder if self._loaded.is_set() else None

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

    def load(self, embedder: Embedder | None, warm_agents: Iterable[str]) -> None:
        """Load and warm the embedder (``settings.embedder`` unless given), then warm the agents' indexes.

        Run by :func:`open_state`, in a background thread or not. Never raises: a failure is logged and
        kept, and every later use of :attr:`embedder` raises it.
        """
        try:
            t0 = time.perf_counter()
            name = self.settings.embedder if embedder is None else type(embedder).__name__
            # Only MiniLM prepares anything on a first start (its ONNX export); the others load or ask.
            note = " (the first start prepares it, which can take about 30 s)" if name == "minilm" else ""
            startup_log.info("loading embedding model %r%s", name, note)
            emb = embedder if embedder is not None else make_embedder(self.settings)
            probe = emb.embed_query("warm-up")  # loads the model now, not on the first tool call
            startup_log.info(
                "embedding model %s (%d-d) ready in %.1fs", emb.model_id, emb.dim, time.perf_counter() - t0
            )
            t1 = time.perf_counter()
            opened = self._warm(emb, probe, set(warm_agents))
            startup_log.info(
                "%d memory collection(s) loaded in %.1fs; ready", opened, time.perf_counter() - t1
            )
            self._embedder = emb
        except Exception as exc:
            log.exception("the embedding model could not be loaded")
            self._error = EmbeddixError(
                f"the embedding model could not be loaded ({exc}); see the server log"
            )
        finally:
            self._loaded.set()

    def _warm(self, emb: Embedder, probe: Any, agents: set[str]) -> int:
        opened = 0
        with self._life_lock:  # close() may run meanwhile: never touch a closed database
            if self._closed:
                return 0
            names = self.db.list_collections()
        for name in names:
            owner = split_memory_collection(name)
            if owner is None or owner[0] not in agents:
                continue
            with self._life_lock:
                if self._closed:
                    break
                col = self.db.get_collection(name)
                opened += 1
                # One search makes the index ready (snapshots may load lazily). A collection of another
                # model is left alone: the tools refuse it with a readable error instead of the server not
                # starting.
                if col.dim == emb.dim and col.embedding_model in (None, emb.model_id):
                    try:
                        col.search(probe, 1)
                    except EmbeddixError as exc:
                        log.warning("could not warm collection %r: %s", name, exc)
        return opened

    def close(self) -> None:
        """Close the database (saves index snapshots). Idempotent. Tools still waiting for the model fail."""
        with self._life_lock:
            self._closed = True
            if not self._loaded.is_set():
                self._error = EmbeddixError("the server closed before the embedding model was loaded")
                self._loaded.set()
            self.db.close()


def make_embedder(settings: ServerSettings) -> Embedder:
    """The embedder ``settings`` names, without loading it (no model load, no request).

    MiniLM (``embed_threads`` threads), a local sentence-transformers model and an OpenAI-compatible
    endpoint sit behind an in-memory cache (a repeated query is embedded once; for an endpoint, that is a
    request saved); the hash embedder is cheaper than a cache lookup.

    Raises:
        EmbeddixError: An ``st:`` model is not on this machine (``ModelNotFoundError``), or an argument is
            out of range.
    """
    name = settings.embedder
    if name == "minilm":
        return CachedEmbedder(MiniLMEmbedder(num_threads=settings.onnx_threads), EmbeddingCache())
    if name.startswith("st:"):
        return CachedEmbedder(SentenceTransformerEmbedder(name[len("st:") :]), EmbeddingCache())
    if name.startswith("openai:"):
        model, base_url = settings.openai_target
        key = settings.openai_api_key
        remote = OpenAIEmbedder(
            model, base_url, key.get_secret_value() if key is not None else None, dim=settings.embed_dim
        )
        return CachedEmbedder(remote, EmbeddingCache())
    return get_embedder(name)


def open_state(
    settings: ServerSettings,
    embedder: Embedder | None = None,
    *,
    warm_agents: Iterable[str] = (),
    background: bool = False,
) -> AppState:
    """Open the database and load the embedder and the agents' indexes (see :meth:`AppState.load`).

    Blocking (the database open, and the model unless ``background``): use a worker thread in async code.

    Args:
        settings: Server settings.
        embedder: Use this embedder instead of the one ``settings.embedder`` names (tests, benchmarks).
        warm_agents: Agents whose memory collections are opened now (their indexes loaded from snapshots or
            rebuilt), so that no agent's first ``recall`` pays for it.
        background: Return once the database is open and load the model in a daemon thread.

    Returns:
        The state; close it with :meth:`AppState.close`.

    Raises:
        EmbeddixError: Not ``background``, and the model could not be loaded (the database is closed).
    """
    if address := os.environ.get("EMBEDDIX_RAY_ADDRESS"):  # --ray-address: the sharded store on Ray
        from embeddix_ray import RayEmbeddix  # the same collection API (tests/ray compares them call by call)

        db = cast(Embeddix, RayEmbeddix.open(settings.data_path or "", address=address))
    else:
        # the engine reads the server's config file too (its own keys; see embeddix_core/config.py)
        db = Embeddix.open(settings.data_path, settings=EmbeddixSettings(config=settings.config))
    state = AppState(settings=settings, db=db, grants=GrantStore(db.path))
    startup_log.info("database %s open", settings.data_path or ":memory:")
    agents = list(warm_agents)
    if background:
        threading.Thread(
            target=state.load, args=(embedder, agents), name="embeddix-model-loader", daemon=True
        ).start()
        return state
    state.load(embedder, agents)
    if state._error is not None:
        state.close()
        raise state._error
    return state
