"""``EmbeddixMemory``: an AutoGen ``Memory`` on an Embeddix collection.

Record layout (one place each way: :func:`_to_text` / :meth:`EmbeddixMemory._add` and :func:`_content`):

* document: the text (``text/plain``, ``text/markdown``), or the JSON text of a dict (``application/json``);
  that text is what gets embedded;
* metadata: the ``MemoryContent.metadata`` (flat: str, int, float, bool or lists of those) plus
  ``mime_type``, so filters can select by type.

Query results carry the stored metadata plus ``score`` (cosine similarity, higher is better) and ``id``,
as AutoGen's ChromaDB memory does. Other mime types (images, binary) are rejected: there is no text to
embed.

Threads: the core calls (embedding, search, writes) run in a worker thread so the event loop stays free.
The database is opened on first use and closed by :meth:`EmbeddixMemory.close`; a later call opens it again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any, Self

from autogen_core import CancellationToken, Component
from autogen_core.memory import Memory, MemoryContent, MemoryMimeType, MemoryQueryResult, UpdateContextResult
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import SystemMessage
from pydantic import BaseModel, Field

from embeddix_core import Collection, Embeddix, InvalidArgumentError, InvalidMetadataError
from embeddix_core.embeddings import Embedder, get_embedder

__all__ = ["EmbeddixMemory", "EmbeddixMemoryConfig"]

_MIME_KEY = "mime_type"
_TEXT_TYPES = (MemoryMimeType.TEXT.value, MemoryMimeType.MARKDOWN.value)
_JSON_TYPE = MemoryMimeType.JSON.value


class EmbeddixMemoryConfig(BaseModel):
    """Configuration of :class:`EmbeddixMemory` (what ``dump_component`` writes)."""

    collection_name: str = Field("autogen_memory", description="Collection holding the memories.")
    path: str | None = Field(None, description="Data directory; None for an in-memory database.")
    k: int = Field(3, ge=1, description="Memories returned per query.")
    score_threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="Drop memories with a lower cosine similarity."
    )
    embedder: str = Field("minilm", description="Embedder name for embeddix_core's get_embedder.")
    user: str | None = Field(
        None, description="Personalize queries for this user's feedback (the core's search(user=))."
    )


class EmbeddixMemory(Memory, Component[EmbeddixMemoryConfig]):
    """An AutoGen memory that recalls by meaning, stored in an Embeddix collection.

    Example::

        memory = EmbeddixMemory(path="./agent-memory")
        await memory.add(MemoryContent(content="The user prefers metric units", mime_type="text/plain"))
        agent = AssistantAgent("assistant", model_client=client, memory=[memory])

    Before each model call the agent calls :meth:`update_context`, which searches with the last message and
    adds the ``k`` best memories to the model context as one system message.

    Args:
        collection_name: Collection holding the memories.
        path: Data directory of an on-disk database; None for a private in-memory one (gone on close).
        k: Memories returned per query.
        score_threshold: Drop memories whose cosine similarity is lower.
        embedder: An embedder name (``"minilm"``, the offline default; ``"hash"``...) or a core
            :class:`~embeddix_core.embeddings.Embedder` (dumped as its ``model_id``).
        user: Personalize every query (and so :meth:`update_context`) for this user: memories the user
            marked relevant rise, the others fall (record verdicts with ``memory.collection.feedback(id,
            user=..., relevant=...)``; ``id`` is in each recalled memory's metadata). None: plain order.

    Raises:
        InvalidArgumentError: ``k`` or ``score_threshold`` out of range, or an unknown embedder name.
    """

    component_type = "memory"
    component_config_schema = EmbeddixMemoryConfig
    component_provider_override = "autogen_embeddix.EmbeddixMemory"

    def __init__(
        self,
        collection_name: str = "autogen_memory",
        *,
        path: str | None = None,
        k: int = 3,
        score_threshold: float | None = None,
        embedder: str | Embedder = "minilm",
        user: str | None = None,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidArgumentError(f"k must be a positive integer; got {k!r}")
        if score_threshold is not None and not -1.0 <= score_threshold <= 1.0:
            raise InvalidArgumentError(f"score_threshold must be between -1 and 1; got {score_threshold}")
        self._name = collection_name
        self._path = None if path is None else str(path)
        self._k = k
        self._score_threshold = score_threshold
        self._user = user
        self._embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder
        self._embedder_name = embedder if isinstance(embedder, str) else self._embedder.model_id
        self._db: Embeddix | None = None
        self._collection: Collection | None = None
        self._lock = threading.Lock()

    @property
    def collection(self) -> Collection:
        """The core collection (opened, and created if needed, on first use)."""
        with self._lock:
            if self._collection is None:
                db = Embeddix.open(self._path)
                try:
                    col = db.get_or_create_collection(self._name, self._embedder.dim, "cosine")
                    col.check_model(self._embedder.model_id, self._embedder.dim)
                except BaseException:
                    db.close()
                    raise
                self._db, self._collection = db, col
            return self._collection

    # -- Memory protocol -------------------------------------------------------------------------
    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        """Store one memory.

        Args:
            content: Text, markdown, or a JSON dict, with optional flat metadata.
            cancellation_token: Unused (the write is short and atomic).

        Raises:
            InvalidArgumentError: Another mime type, content of the wrong type for its mime type, or
                metadata the core cannot store.
        """
        text, mime = _to_text(content)
        metadata = {**(content.metadata or {}), _MIME_KEY: mime}
        await asyncio.to_thread(self._add, text, metadata)

    def _add(self, text: str, metadata: dict[str, Any]) -> None:
        vector = self._embedder.embed_documents([text])
        try:
            self.collection.add([str(uuid.uuid4())], vector, [text], [metadata])
        except InvalidMetadataError as exc:
            raise InvalidMetadataError(f"{exc}. MemoryContent.metadata must be flat") from exc

    async def query(
        self,
        query: str | MemoryContent,
        cancellation_token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> MemoryQueryResult:
        """The memories closest in meaning to ``query``, best first.

        Args:
            query: Text, or a ``MemoryContent`` (its text is used).
            cancellation_token: Unused.
            **kwargs: ``k``, ``score_threshold``, ``user`` (override the configured ones for this call) and
                ``filter`` (a core metadata filter, e.g. ``{"mime_type": "text/markdown"}``).

        Returns:
            The memories; each one's metadata holds ``score`` and ``id`` besides what was stored.
        """
        text = query if isinstance(query, str) else _to_text(query)[0]
        k = kwargs.pop("k", self._k)
        threshold = kwargs.pop("score_threshold", self._score_threshold)
        flt = kwargs.pop("filter", None)
        user = kwargs.pop("user", self._user)
        if kwargs:
            raise TypeError(f"query() got unexpected keyword argument(s) {sorted(kwargs)}")
        hits = await asyncio.to_thread(self._search, text, k, flt, user)
        results = [
            _content(h.document, h.metadata, h.score, h.id)
            for h in hits
            if threshold is None or h.score >= threshold
        ]
        return MemoryQueryResult(results=results)

    def _search(self, text: str, k: int, flt: dict[str, Any] | None, user: str | None) -> list[Any]:
        return self.collection.search(self._embedder.embed_query(text), k, filter=flt, user=user)

    async def update_context(self, model_context: ChatCompletionContext) -> UpdateContextResult:
        """Add the memories relevant to the last message to ``model_context`` as one system message.

        Returns:
            The memories added (none when the context is empty or nothing is relevant).
        """
        messages = await model_context.get_messages()
        if not messages:
            return UpdateContextResult(memories=MemoryQueryResult(results=[]))
        text = _message_text(messages[-1].content)
        if not text:
            return UpdateContextResult(memories=MemoryQueryResult(results=[]))
        result = await self.query(text)
        if result.results:
            lines = [f"{i}. {_display(m)}" for i, m in enumerate(result.results, 1)]
            await model_context.add_message(
                SystemMessage(content="\nRelevant memory content (most relevant first):\n" + "\n".join(lines))
            )
        return UpdateContextResult(memories=result)

    async def clear(self) -> None:
        """Delete every memory (the collection stays)."""
        # A lambda, not ``self.collection.clear``: the first use of ``self.collection`` opens the database,
        # blocking I/O that belongs in the worker thread, not on the event loop.
        await asyncio.to_thread(lambda: self.collection.clear())

    async def close(self) -> None:
        """Close the database (idempotent); an in-memory memory loses its contents."""
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = None
            self._collection = None

    # -- component config ------------------------------------------------------------------------
    def _to_config(self) -> EmbeddixMemoryConfig:
        return EmbeddixMemoryConfig(
            collection_name=self._name,
            path=self._path,
            k=self._k,
            score_threshold=self._score_threshold,
            embedder=self._embedder_name,
            user=self._user,
        )

    @classmethod
    def _from_config(cls, config: EmbeddixMemoryConfig) -> Self:
        return cls(
            config.collection_name,
            path=config.path,
            k=config.k,
            score_threshold=config.score_threshold,
            embedder=config.embedder,
            user=config.user,
        )

    def __repr__(self) -> str:
        return (
            f"EmbeddixMemory({self._name!r}, path={self._path!r}, k={self._k}, "
            f"embedder={self._embedder_name!r})"
        )


def _mime(content: MemoryContent) -> str:
    mime = content.mime_type
    return mime.value if isinstance(mime, MemoryMimeType) else str(mime)


def _to_text(content: MemoryContent) -> tuple[str, str]:
    mime = _mime(content)
    value = content.content
    if mime in _TEXT_TYPES:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"{mime} memory content must be a str; got {type(value).__name__}")
        return value, mime
    if mime == _JSON_TYPE:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise InvalidArgumentError(
                    f"application/json memory content is not valid JSON ({exc})"
                ) from exc
        if not isinstance(value, dict):
            raise InvalidArgumentError(
                "application/json memory content must be a dict (or its JSON text); "
                f"got {type(value).__name__}"
            )
        return json.dumps(value, ensure_ascii=False, sort_keys=True), mime
    raise InvalidArgumentError(
        f"EmbeddixMemory stores text/plain, text/markdown and application/json content; got {mime!r} "
        "(there is no text to embed)"
    )


def _content(document: str | None, metadata: dict[str, Any], score: float, rid: str) -> MemoryContent:
    meta = dict(metadata)
    mime = str(meta.pop(_MIME_KEY, MemoryMimeType.TEXT.value))
    text = document or ""
    value: str | dict[str, Any] = json.loads(text) if mime == _JSON_TYPE else text
    meta.update(score=score, id=rid)
    known = {m.value: m for m in MemoryMimeType}
    return MemoryContent(content=value, mime_type=known.get(mime, mime), metadata=meta)


def _display(memory: MemoryContent) -> str:
    value = memory.content
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else str(value)


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part for part in content if isinstance(part, str))
    return ""
