"""``EmbeddixVectorStore``: a LlamaIndex vector store over one core :class:`~embeddix_core.Collection`.

Node layout in a record (one place each way: :func:`._nodes.record_metadata`, used by
:meth:`EmbeddixVectorStore.add`, and :func:`._nodes.nodes_from_records`, which rebuilds the nodes
LlamaIndex's ``metadata_dict_to_node`` would; ``_nodes.py`` describes both layouts in full):

* id: the node id; vector: the node's embedding;
* document: the node's text (so hybrid and full-text search see it);
* metadata: the node's own metadata, flat, plus LlamaIndex's ``_node_type`` and ``ref_doc_id`` /
  ``doc_id`` / ``document_id``. Filters therefore see the user's metadata as is, and
  ``delete(ref_doc_id)`` is a delete by filter. The rest of the node is stored in one of two layouts:

  * layout 2, written for a ``TextNode`` whenever it can hold the node exactly: ``_node_layout: 2``, and
    ``_node_fields`` (JSON text) with the node fields that differ from the layout's fixed values
    (relationships, character offsets, templates...), absent when none do. Nothing is parsed per hit
    beyond the metadata the core parses anyway, unless the node has such fields.
  * layout 1, LlamaIndex's own (and this store's before layout 2): ``_node_content``, the rest of the node
    as JSON text. Written for other node classes and for metadata layout 2 cannot hold (a None value, a
    reserved key); always read, so stores written before layout 2 keep working.

Records written by someone else (the core, the LangChain adapter) have neither layout; they come
back as plain ``TextNode`` objects with the record's id, text and metadata.

Query modes: ``DEFAULT`` (vector), ``MMR`` (``mmr_threshold`` is the core's ``mmr_lambda``, default 0.5),
``HYBRID`` (vector + BM25 fused by reciprocal rank; ``alpha`` 1.0 is pure vector, 0.0 pure text, so the
core's ``text_weight`` is ``1 - alpha``), ``TEXT_SEARCH`` and ``SPARSE`` (BM25 over the node text).

Similarities are the core's scores, higher is better: for ``DEFAULT``, ``HYBRID`` and ``MMR`` the same
number for the same node, its similarity to the query embedding (cosine similarity for a ``cosine``
collection), so ``SimilarityPostprocessor(similarity_cutoff=...)`` keeps its meaning in every mode.
``HYBRID`` nodes come in fused order and ``MMR`` nodes in selection order, so their similarities need not
decrease (LlamaIndex's simple store reports MMR's marginal values instead, which no cutoff fits; Qdrant
reports similarities, as here). ``TEXT_SEARCH`` / ``SPARSE`` have no query embedding: their similarities
are BM25 scores (``-bm25``, positive, unbounded), comparable only with each other.

Restrictions: ``doc_ids`` is a core filter on ``ref_doc_id``. ``node_ids`` (which ``VectorStoreIndex``
sends when it keeps its own node list, e.g. with ``store_nodes_override=True``) names record ids, which the
core's filters cannot see (they see metadata), so the hits are kept by id: the search asks for k hits,
then four times as many each round, until k of them are among ``node_ids``, the collection has no more, or
the round asked for the core's largest k (100,000).
When ``node_ids`` covers the collection (the usual case) that is one search. With ``MMR``, diversity is
judged among the hits the core picked before the restriction. An empty or None ``node_ids`` / ``doc_ids``
is no restriction, as in LlamaIndex's own simple store.

Full-text restriction: ``query(..., where_document={"$contains": "fox"})``, as Chroma's LlamaIndex store
takes it (a query keyword, so ``index.as_retriever(vector_store_kwargs={"where_document": ...})``). The
operators are Chroma's: ``$contains`` (case-sensitive substring of the node text), ``$not_contains``,
``$regex``, ``$not_regex``, and ``$and`` / ``$or`` lists of those; it combines with ``filters``,
``doc_ids`` and ``node_ids`` and every mode (see ``embeddix_core.query.doc_filter``).

Durability: a record is durable when ``add`` returns (on-disk stores); ``persist`` only saves an index
snapshot so the next open is faster.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)

from embeddix_core import Collection, Embeddix, Hit, InvalidArgumentError, Metric, parse_filter

from ._filters import to_core_filter
from ._nodes import nodes_from_records, record_metadata

__all__ = ["EmbeddixVectorStore"]

# Core search arguments passed through from ``query(..., **kwargs)`` (``vector_store_kwargs``): the tuning
# knobs, and Chroma's full-text restriction under its name there.
_SEARCH_KNOBS = ("ef", "recall", "deadline_ms", "where_document", "user", "session")
_TEXT_MODES = (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE)
# Enum class attribute lookups cost ~0.1 us each; the query path compares with these instead.
_DEFAULT, _HYBRID, _MMR = VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.MMR
_SUPPORTED_MODES = (_DEFAULT, _MMR, _HYBRID, *_TEXT_MODES)
_get_id, _get_score = operator.attrgetter("id"), operator.attrgetter("score")
# The widest search a node_ids restriction asks for: the core's largest k.
_MAX_WANT = 100_000


class EmbeddixVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store on an Embeddix collection (in memory, on disk, or one you pass).

    Example::

        from llama_index.core import StorageContext, VectorStoreIndex
        from llama_index.vector_stores.embeddix import EmbeddixEmbedding, EmbeddixVectorStore

        store = EmbeddixVectorStore(path="./data")
        index = VectorStoreIndex.from_documents(
            docs, storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=EmbeddixEmbedding())
        # later, in another process:
        index = VectorStoreIndex.from_vector_store(EmbeddixVectorStore(path="./data"),
                                                   embed_model=EmbeddixEmbedding())

    Args:
        path: Data directory of an on-disk database; None for a private in-memory one.
        collection_name: The collection's name (ignored when ``collection`` is given).
        dim: Vector dimension of a new collection; None to take it from the first nodes added.
        metric: ``"cosine"``, ``"l2"`` or ``"ip"`` for a new collection; an existing one must match.
        collection: An open core collection to use instead of opening ``path``; never closed here.

    Raises:
        InvalidArgumentError: ``metric`` or ``dim`` differ from the existing collection's.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    path: str | None = None
    collection_name: str = "llama_index"
    dim: int | None = None
    metric: str = "cosine"

    _db: Embeddix | None = PrivateAttr(default=None)
    _collection: Collection | None = PrivateAttr(default=None)

    def __init__(
        self,
        path: str | Path | None = None,
        collection_name: str = "llama_index",
        dim: int | None = None,
        metric: str = "cosine",
        collection: Collection | None = None,
        **kwargs: Any,
    ) -> None:
        metric = Metric.parse(metric).value
        if collection is not None:
            super().__init__(
                collection_name=collection.name, dim=collection.dim, metric=collection.metric, **kwargs
            )
            self._collection = collection
            return
        super().__init__(
            path=None if path is None else str(path),
            collection_name=collection_name,
            dim=dim,
            metric=metric,
            **kwargs,
        )
        self._db = Embeddix.open(path)
        if collection_name in self._db:
            col = self._db.get_collection(collection_name)
            if col.metric != metric or (dim is not None and dim != col.dim):
                self.close()
                raise InvalidArgumentError(
                    f"collection {collection_name!r} exists with dim={col.dim}, metric={col.metric!r}; "
                    f"asked for dim={dim}, metric={metric!r}"
                )
            self._collection = col
            self.dim = col.dim
        elif dim is not None:
            self._collection = self._db.create_collection(collection_name, dim, metric)

    @classmethod
    def class_name(cls) -> str:
        return "EmbeddixVectorStore"

    @property
    def client(self) -> Collection | None:
        """The core collection, or None before the first ``add`` created it."""
        return self._collection

    def close(self) -> None:
        """Close the database this store opened (not a collection passed in). Idempotent."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def persist(self, persist_path: str, fs: fsspec.AbstractFileSystem | None = None) -> None:
        """Save an index snapshot (records are already durable); ``persist_path`` is not used."""
        if self._collection is not None:
            self._collection.checkpoint()

    def _collection_for_write(self, dim: int) -> Collection:
        col = self._collection
        if col is None:
            if self._db is None:
                raise InvalidArgumentError("the store is closed; create a new EmbeddixVectorStore")
            col = self._db.get_or_create_collection(self.collection_name, dim, self.metric)
            self._collection = col
            self.dim = col.dim
        return col

    # -- writes ----------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Store nodes (with embeddings); a node id already stored is replaced.

        Args:
            nodes: Nodes with ``embedding`` set.

        Returns:
            The node ids, in order.

        Raises:
            InvalidArgumentError: A node has no embedding, or metadata the core cannot store.
        """
        if not nodes:
            return []
        ids, vectors, texts, metas = [], [], [], []
        for node in nodes:
            if node.embedding is None:
                raise InvalidArgumentError(
                    f"node {node.node_id!r} has no embedding; embed nodes before adding them "
                    "(VectorStoreIndex does this with its embed_model)"
                )
            ids.append(node.node_id)
            vectors.append(node.embedding)
            texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
            metas.append(record_metadata(node, flat_metadata=self.flat_metadata))
        return self._collection_for_write(len(vectors[0])).upsert(ids, vectors, texts, metas)

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Async :meth:`add`."""
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        if self._collection is not None:
            self._collection.delete(filter={"ref_doc_id": ref_doc_id})

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Async :meth:`delete`."""
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes by id, by filter, or the nodes among ``node_ids`` that match ``filters``.

        Raises:
            InvalidArgumentError: Neither ``node_ids`` nor ``filters`` was given (use :meth:`clear`).
        """
        flt = to_core_filter(filters)
        if node_ids is None and flt is None:
            raise InvalidArgumentError(
                "delete_nodes needs node_ids or filters; use clear() to delete everything"
            )
        col = self._collection
        if col is None:
            return
        if node_ids is None:
            col.delete(filter=flt)
        elif node_ids:
            ids = node_ids if flt is None else [n.node_id for n in self.get_nodes(node_ids, filters)]
            if ids:
                col.delete(ids)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Async :meth:`delete_nodes`."""
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    def clear(self) -> None:
        """Delete every node (the collection and its settings stay)."""
        col = self._collection
        if col is None:
            return
        col.clear()

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        await asyncio.to_thread(self.clear)

    # -- reads -----------------------------------------------------------------------------------
    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Nodes by id (absent ids skipped), by filter, or both; with their embeddings.

        Args:
            node_ids: The ids, or None for every node matching ``filters``.
            filters: Metadata filters, or None.

        Returns:
            The nodes (in ``node_ids`` order when given, else insertion order).
        """
        col = self._collection
        if col is None:
            return []
        flt = to_core_filter(filters)
        if node_ids is None:
            return nodes_from_records(col.scan(flt, include_vectors=True))
        if not node_ids:
            return []
        match = parse_filter(flt)
        return nodes_from_records(
            r for r in col.get(node_ids) if r is not None and (match is None or match.matches(r.metadata))
        )

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """Async :meth:`get_nodes`."""
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Search (see the module docstring for the modes).

        Args:
            query: The query: ``query_embedding`` and/or ``query_str``, ``similarity_top_k``, ``filters``,
                ``doc_ids``, ``node_ids``, ``mode``, ``alpha``, ``mmr_threshold``.
            **kwargs: ``user`` (personalize for this user's feedback, recorded with ``col.feedback``:
                the core's ``search(user=)``), ``session``, ``where_document`` (a full-text restriction,
                see the module docstring),
                ``mmr_threshold`` (when not on the query), ``mmr_prefetch_k`` or ``mmr_prefetch_factor``
                (MMR candidates), and the core's tuning knobs ``ef`` (HNSW beam width), ``recall``
                (target recall) and ``deadline_ms``.

        Returns:
            Nodes, scores (higher is better) and ids, best first.

        Raises:
            InvalidArgumentError: An unsupported mode, a missing query embedding / query string for
                the mode, or a malformed ``where_document``.
        """
        # ``self._collection`` costs ~3 us on a pydantic model (a failed lookup, then ``__getattr__``);
        # private attributes live in ``__pydantic_private__``.
        col: Collection | None = self.__pydantic_private__["_collection"]  # type: ignore[index]
        if col is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        mode = query.mode
        vector: Any = query.query_embedding
        if (
            mode is _DEFAULT
            and vector is not None
            and query.filters is None
            and not query.doc_ids
            and not query.node_ids
        ):
            # What retrievers send: the general path below makes the same call, but its checks and
            # argument building cost ~0.7 us, a twentieth of this adapter's overhead. The list of floats
            # goes to the core as is: its list path packs them straight into float32 (~2.5 us for 384),
            # with numpy's rounding and its own errors.
            return _result(
                col.search(
                    vector,
                    query.similarity_top_k,
                    ef=kwargs.get("ef"),
                    recall=kwargs.get("recall"),
                    deadline_ms=kwargs.get("deadline_ms"),
                    where_document=kwargs.get("where_document"),
                    user=kwargs.get("user"),
                    session=kwargs.get("session"),
                )
            )
        if mode not in _SUPPORTED_MODES:
            raise InvalidArgumentError(
                f"query mode {mode.value!r} is not supported; use one of "
                f"{[m.value for m in _SUPPORTED_MODES]}"
            )
        flt = to_core_filter(query.filters)
        if query.doc_ids:
            by_doc = {"ref_doc_id": {"$in": list(query.doc_ids)}}
            flt = by_doc if flt is None else {"$and": [flt, by_doc]}
        k = query.similarity_top_k
        search: dict[str, Any] = {"filter": flt}
        for knob in _SEARCH_KNOBS:
            if kwargs.get(knob) is not None:
                search[knob] = kwargs[knob]
        if mode in _TEXT_MODES:
            k = query.sparse_top_k or k
            vector = None
            search["text"] = _query_str(query)
        elif mode == _HYBRID:
            k = query.hybrid_top_k or k
            alpha = 0.5 if query.alpha is None else query.alpha
            if not 0.0 <= alpha <= 1.0:
                raise InvalidArgumentError(
                    f"alpha must be between 0 (pure text) and 1 (pure vector); got {alpha}"
                )
            if query.query_str:
                search["text"], search["text_weight"] = query.query_str, 1.0 - alpha
        elif mode == _MMR:
            lam = query.mmr_threshold if query.mmr_threshold is not None else kwargs.get("mmr_threshold")
            search["mmr_lambda"] = 0.5 if lam is None else lam
            if kwargs.get("mmr_prefetch_k") is not None:
                search["fetch_k"] = int(kwargs["mmr_prefetch_k"])
            elif kwargs.get("mmr_prefetch_factor") is not None:
                search["fetch_k"] = int(k * kwargs["mmr_prefetch_factor"])
        if vector is None and "text" not in search:
            raise InvalidArgumentError(f"a {mode.value!r} query needs query_embedding")
        if query.node_ids:
            return _result(_search_among(col, frozenset(query.node_ids), vector, k, search))
        return _result(col.search(vector, k, **search))

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Async :meth:`query`."""
        return await asyncio.to_thread(self.query, query, **kwargs)


def _search_among(
    col: Collection, ids: frozenset[str], vector: Any, k: int, search: dict[str, Any]
) -> list[Hit]:
    """The best ``k`` hits whose ids are in ``ids`` (see "Restrictions" in the module docstring)."""
    want = k
    while True:
        hits = col.search(vector, want, **search)
        kept = [h for h in hits if h.id in ids]
        # Fewer hits than asked for means the collection (or the filter, or the text match) has no more.
        if len(kept) >= k or len(hits) < want or want >= _MAX_WANT:
            return kept[:k]
        want = min(want * 4, _MAX_WANT)


def _result(hits: list[Hit]) -> VectorStoreQueryResult:
    # The hits are this call's own, and every hit's metadata is a fresh dict (the core's contract), so the
    # nodes may take those dicts instead of copies.
    return VectorStoreQueryResult(
        nodes=nodes_from_records(hits, own_metadata=True),
        similarities=list(map(_get_score, hits)),
        ids=list(map(_get_id, hits)),
    )


def _query_str(query: VectorStoreQuery) -> str:
    if not query.query_str:
        raise InvalidArgumentError(f"a {query.mode.value!r} query needs query_str")
    return query.query_str
