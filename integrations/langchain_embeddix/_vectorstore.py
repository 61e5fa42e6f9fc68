"""``EmbeddixVectorStore``: a LangChain ``VectorStore`` over one core :class:`~embeddix_core.Collection`.

The store only translates: texts are embedded with the LangChain embeddings, records go to the core
collection (``upsert``, so adding an id twice replaces it), and hits come back as ``Document`` objects.
Converting between the two worlds happens in one place each way (:func:`_document`, :meth:`_write`).

Metadata: a ``Document``'s metadata is stored as the record's metadata, so filters see it as is. Values
must be what the core stores: str, int, float, bool, or lists of those. ``None`` values are dropped (the
core treats null as absent, so they do not come back). Anything else (nested dicts, dates) raises
:class:`~embeddix_core.InvalidMetadataError` naming the key, rather than being silently JSON-encoded into
a string no filter could see: flatten it, or encode it yourself.

Scores: ``similarity_search_with_score`` returns the core's score, higher is better (cosine similarity
for ``cosine``, ``1 / (1 + distance)`` for ``l2``, the inner product for ``ip``). The relevance scores of
``similarity_search_with_relevance_scores`` are those mapped into [0, 1] (see
:meth:`EmbeddixVectorStore._select_relevance_score_fn`).

Hybrid search: ``similarity_search(query, k, text_weight=0.5)`` (and ``similarity_search_with_score``,
their async forms) also rank the documents by BM25 full-text match on ``query`` and fuse the two rankings
by reciprocal rank (the core's ``search(..., text=query, text_weight=...)``; ``text_weight`` 0.0 is the
vector ranking alone, 1.0 the text ranking alone). The documents come in fused order, but each score is
the one a plain search gives that document (its cosine similarity, for ``cosine``), so the scores need
not decrease, and relevance scores and ``score_threshold`` mean the same as for a plain search.
``as_retriever(search_type="hybrid", search_kwargs={"k": 4, "text_weight": 0.5})`` returns an
:class:`EmbeddixHybridRetriever` doing the same (``text_weight`` defaults to 0.5 there; a
``score_threshold`` in ``search_kwargs`` drops documents whose relevance score is lower).
MMR (``max_marginal_relevance_search``, ``search_type="mmr"``) returns documents in the order picked.

Full-text restriction: every search method (and the retrievers, through ``search_kwargs``) takes
langchain-chroma's ``where_document`` keyword: ``{"$contains": "fox"}`` (case-sensitive substring),
``{"$not_contains": ...}``, ``{"$regex": ...}``, ``{"$not_regex": ...}`` and ``$and`` / ``$or`` lists of
those, alone or with ``filter``; ``delete(where_document=...)`` too. It is the core's ``where_document``
(see ``embeddix_core.query.doc_filter``): a document-less record never matches ``$contains``.

Async: the ``a*`` methods embed through the embeddings' own async API and run the core call (which is
synchronous and releases the GIL in the native index) in the default executor.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

from embeddix_core import (
    Collection,
    Embeddix,
    Hit,
    InvalidArgumentError,
    InvalidMetadataError,
    Metric,
    Record,
)

from ._embedder import LangChainEmbedder
from ._filters import to_core_filter

__all__ = ["EmbeddixHybridRetriever", "EmbeddixVectorStore"]

# Arguments of the core search that the LangChain search methods pass through: the tuning knobs,
# langchain-chroma's full-text restriction (same name, same operators), and personalization (``user``:
# re-rank by that user's feedback, recorded with ``store.collection.feedback``; ``session``).
_SEARCH_KWARGS = frozenset({"ef", "recall", "deadline_ms", "where_document", "user", "session"})
HYBRID = "hybrid"
# The fusion weight of the text ranking a hybrid retriever uses when its search_kwargs give none.
DEFAULT_TEXT_WEIGHT = 0.5


class EmbeddixVectorStore(VectorStore):
    """A LangChain vector store on an Embeddix collection (in memory, on disk, or one you pass).

    Example::

        from langchain_embeddix import EmbeddixEmbeddings, EmbeddixVectorStore

        store = EmbeddixVectorStore(embedding=EmbeddixEmbeddings(), path="./data")
        store.add_texts(["Paris is the capital of France"], metadatas=[{"source": "geo"}])
        store.similarity_search("French capital", k=1, filter={"source": "geo"})

    The collection is created on the first write, with the dimension of the first vectors, unless it
    already exists. Its embedding model id is recorded on the first write and checked on every write and
    text query (see :class:`~langchain_embeddix.LangChainEmbedder`), so vectors of two models never mix.

    Args:
        embedding: The LangChain embeddings used for texts and queries.
        collection_name: The collection's name in the database (ignored when ``collection`` is given).
        path: Data directory of an on-disk database; None for a private in-memory one.
        collection: An open core collection to use instead of opening ``path``; the store never closes it.
        metric: ``"cosine"``, ``"l2"`` or ``"ip"`` for a new collection; an existing one must match.

    Raises:
        InvalidArgumentError: ``metric`` differs from the existing collection's, or is unknown.
    """

    def __init__(
        self,
        embedding: Embeddings,
        collection_name: str = "langchain",
        path: str | Path | None = None,
        collection: Collection | None = None,
        metric: str = "cosine",
    ) -> None:
        self._embedding = embedding
        self._embedder = LangChainEmbedder(embedding)
        self._metric = Metric.parse(metric).value
        self._db: Embeddix | None = None
        self._collection: Collection | None = collection
        if collection is not None:
            self._name = collection.name
            self._metric = collection.metric
            return
        self._name = collection_name
        self._db = Embeddix.open(path)
        if collection_name in self._db:
            self._collection = self._db.get_collection(collection_name)
            if self._collection.metric != self._metric:
                self.close()
                raise InvalidArgumentError(
                    f"collection {collection_name!r} exists with metric {self._collection.metric!r}; "
                    f"asked for {self._metric!r}. Pass metric={self._collection.metric!r} or another name"
                )

    # -- properties and lifecycle ----------------------------------------------------------------
    @property
    def embeddings(self) -> Embeddings:
        """The LangChain embeddings used for texts and queries."""
        return self._embedding

    @property
    def collection(self) -> Collection | None:
        """The core collection, or None before the first write created it."""
        return self._collection

    def close(self) -> None:
        """Close the database this store opened (not a collection passed in). Idempotent."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._collection if self._collection is not None else self._name
        return f"EmbeddixVectorStore({where!r}, embedder={self._embedder!r})"

    def _collection_for_write(self, dim: int) -> Collection:
        col = self._collection
        if col is None:
            if self._db is None:
                raise InvalidArgumentError("the store is closed; create a new EmbeddixVectorStore")
            col = self._db.get_or_create_collection(self._name, dim, self._metric)
            self._collection = col
        col.check_model(self._embedder.model_id, dim)
        return col

    def _check_query_model(self) -> None:
        # A text query embedded by another model than the stored vectors' would return noise; refuse it.
        # (Reads never record a model: that happens on the first write.)
        col = self._collection
        if col is not None and col.embedding_model is not None:
            col.check_model(self._embedder.model_id)

    # -- writes ----------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed texts and store them; an id that is already stored is replaced.

        Args:
            texts: The texts.
            metadatas: One metadata dict per text (see the module docstring for allowed values).
            ids: One id per text; a missing or None id gets a fresh uuid4.

        Returns:
            The ids, in order.

        Raises:
            InvalidArgumentError: Lengths differ, an id repeats within the batch, or metadata holds a
                value the core cannot store (:class:`~embeddix_core.InvalidMetadataError`).
        """
        _no_extra(kwargs, "add_texts")
        items = list(texts)
        if not items:
            return []
        return self._write(_ids(ids, len(items)), self._embedder.embed_documents(items), items, metadatas)

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`add_texts`."""
        _no_extra(kwargs, "aadd_texts")
        items = list(texts)
        if not items:
            return []
        vectors = await self._embedder.aembed_documents(items)
        return await run_in_executor(None, self._write, _ids(ids, len(items)), vectors, items, metadatas)

    def _write(
        self, ids: list[str], vectors: np.ndarray, texts: list[str], metadatas: list[dict[str, Any]] | None
    ) -> list[str]:
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidArgumentError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
        col = self._collection_for_write(vectors.shape[1])
        # a LangChain Document replaces the stored one whole: no metadata is {}, not "keep the old"
        metas = metadatas if metadatas is not None else [{} for _ in texts]
        try:
            return col.upsert(ids, vectors, texts, metas)
        except InvalidMetadataError as exc:
            raise InvalidMetadataError(
                f"{exc}. Document metadata must be flat: flatten nested values, or json.dumps them into "
                "a string yourself"
            ) from exc

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by ids, by ``filter=`` and/or ``where_document=``, or everything when none is given.

        Absent ids are not an error.

        Args:
            ids: The ids to delete.
            **kwargs: ``filter``: a metadata filter; ``where_document``: a full-text restriction (see
                the module docstring); either or both instead of ids.

        Returns:
            True.
        """
        flt = to_core_filter(kwargs.pop("filter", None))
        where_document = kwargs.pop("where_document", None)
        _no_extra(kwargs, "delete")
        col = self._collection
        if col is None:
            return True
        if ids is not None:
            if ids:
                col.delete(list(ids))
        elif where_document is not None:
            col.delete(filter=flt or None, where_document=where_document)
        elif flt:
            col.delete(filter=flt)
        else:
            # The core's delete(filter={}) refuses to wipe a collection by accident; here wiping is the
            # documented meaning of delete(None), so say so with clear().
            col.clear()
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Async :meth:`delete`."""
        return await run_in_executor(None, self.delete, ids, **kwargs)

    # -- reads -----------------------------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents stored under ``ids``, in that order; absent ids are skipped.

        Args:
            ids: The ids.

        Returns:
            The documents found, with ``id`` set.
        """
        col = self._collection
        if col is None or not ids:
            return []
        return [_document(r) for r in col.get(list(ids), include_vectors=False) if r is not None]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Async :meth:`get_by_ids`."""
        return await run_in_executor(None, self.get_by_ids, ids)

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents nearest to ``query``, best first.

        Args:
            query: The query text.
            k: How many documents.
            filter: A metadata filter (see ``langchain_embeddix._filters``).
            **kwargs: ``where_document``: a full-text restriction such as ``{"$contains": "fox"}``
                (see the module docstring). ``text_weight`` (0..1): hybrid search, ``query`` also ranked
                by BM25 full-text match and fused with the vector ranking at this weight (see the module
                docstring); None or absent: vector search only. Core tuning knobs: ``ef`` (HNSW beam
                width), ``recall`` (target recall), ``deadline_ms``.

        Returns:
            The documents.

        Raises:
            InvalidArgumentError: ``text_weight`` is outside 0..1, or ``where_document`` is malformed.
        """
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter, **kwargs)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`similarity_search`."""
        pairs = await self.asimilarity_search_with_score(query, k, filter=filter, **kwargs)
        return [doc for doc, _ in pairs]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search`, with each document's score (higher is better, see module doc;
        a hybrid search scores each document as a plain search does, in fused order)."""
        if self._collection is None:
            return []
        self._check_query_model()
        text = _hybrid_text(query, kwargs)
        return self._search(self._embedder.embed_query(query), k, filter, kwargs, text)

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Async :meth:`similarity_search_with_score`."""
        if self._collection is None:
            return []
        self._check_query_model()
        text = _hybrid_text(query, kwargs)
        vector = await self._embedder.aembed_query(query)
        return await run_in_executor(None, self._search, vector, k, filter, kwargs, text)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents nearest to a query vector, best first.

        Args:
            embedding: The query vector.
            k: How many documents.
            filter: A metadata filter.
            **kwargs: ``where_document`` (a full-text restriction), and the core tuning knobs: ``ef``
                (HNSW beam width), ``recall`` (target recall), ``deadline_ms``.

        Returns:
            The documents.
        """
        return [doc for doc, _ in self._search(embedding, k, filter, kwargs)]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """Async :meth:`similarity_search_by_vector`."""
        pairs = await run_in_executor(None, self._search, embedding, k, filter, kwargs)
        return [doc for doc, _ in pairs]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Documents picked by maximal marginal relevance: relevant to ``query`` yet unlike each other.

        Args:
            query: The query text.
            k: How many documents.
            fetch_k: Nearest candidates MMR chooses from.
            lambda_mult: 1.0 is pure relevance, 0.0 pure diversity.
            filter: A metadata filter.
            **kwargs: ``where_document`` (a full-text restriction), and the core tuning knobs: ``ef``,
                ``recall``, ``deadline_ms``.

        Returns:
            The documents, in the order picked.
        """
        if self._collection is None:
            return []
        self._check_query_model()
        vector = self._embedder.embed_query(query)
        kwargs.update(mmr_lambda=lambda_mult, fetch_k=fetch_k)
        return [doc for doc, _ in self._search(vector, k, filter, kwargs)]

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`max_marginal_relevance_search`."""
        if self._collection is None:
            return []
        self._check_query_model()
        vector = await self._embedder.aembed_query(query)
        kwargs.update(mmr_lambda=lambda_mult, fetch_k=fetch_k)
        pairs = await run_in_executor(None, self._search, vector, k, filter, kwargs)
        return [doc for doc, _ in pairs]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` with a query vector."""
        kwargs.update(mmr_lambda=lambda_mult, fetch_k=fetch_k)
        return [doc for doc, _ in self._search(embedding, k, filter, kwargs)]

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`max_marginal_relevance_search_by_vector`."""
        kwargs.update(mmr_lambda=lambda_mult, fetch_k=fetch_k)
        pairs = await run_in_executor(None, self._search, embedding, k, filter, kwargs)
        return [doc for doc, _ in pairs]

    def _search(
        self,
        vector: Any,
        k: int,
        filter: dict[str, Any] | None,
        kwargs: dict[str, Any],
        text: tuple[str, float] | None = None,
    ) -> list[tuple[Document, float]]:
        extra = set(kwargs) - _SEARCH_KWARGS - {"mmr_lambda", "fetch_k"}
        if extra:
            raise TypeError(
                f"unexpected search argument(s) {sorted(extra)}; "
                f"supported: 'filter' and {sorted(_SEARCH_KWARGS)}"
            )
        col = self._collection
        if col is None:
            return []
        if text is not None:
            kwargs = {**kwargs, "text": text[0], "text_weight": text[1]}
        hits = col.search(vector, k, filter=to_core_filter(filter), **kwargs)
        return [(_document(h), h.score) for h in hits]

    # -- retriever -------------------------------------------------------------------------------
    def as_retriever(self, **kwargs: Any) -> VectorStoreRetriever:
        """A retriever on this store: LangChain's search types plus ``"hybrid"``.

        Args:
            **kwargs: ``search_type`` (``"similarity"``, ``"similarity_score_threshold"``, ``"mmr"`` or
                ``"hybrid"``), ``search_kwargs`` (``k``, ``filter``, ``where_document``, ``text_weight``
                for hybrid, the core's tuning knobs, and the search type's own), and the other retriever
                fields.

        Returns:
            An :class:`EmbeddixHybridRetriever` for ``"hybrid"``, else LangChain's ``VectorStoreRetriever``.
        """
        if kwargs.get("search_type") != HYBRID:
            return super().as_retriever(**kwargs)
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return EmbeddixHybridRetriever(vectorstore=self, tags=tags, **kwargs)

    # -- relevance -------------------------------------------------------------------------------
    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Map the core score of this collection's metric into a relevance in [0, 1].

        * ``cosine`` and ``ip``: the similarity clipped to [0, 1], so a threshold keeps its familiar
          cosine meaning (``ip`` assumes unit-length vectors, as most embedding models produce;
          orthogonal and opposite vectors are both "not relevant", 0).
        * ``l2``: the core score ``1 / (1 + distance)`` as is; it is already in (0, 1].
        """
        if self._metric == Metric.L2.value:
            return _identity
        return _clip01

    # -- constructors ----------------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        collection_name: str = "langchain",
        path: str | Path | None = None,
        collection: Collection | None = None,
        metric: str = "cosine",
        **kwargs: Any,
    ) -> Self:
        """Build a store (see the class arguments) and add ``texts`` to it.

        Returns:
            The store.
        """
        _no_extra(kwargs, "from_texts")
        store = cls(
            embedding, collection_name=collection_name, path=path, collection=collection, metric=metric
        )
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        collection_name: str = "langchain",
        path: str | Path | None = None,
        collection: Collection | None = None,
        metric: str = "cosine",
        **kwargs: Any,
    ) -> Self:
        """Async :meth:`from_texts`."""
        _no_extra(kwargs, "afrom_texts")
        store = await run_in_executor(None, cls, embedding, collection_name, path, collection, metric)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store


class EmbeddixHybridRetriever(VectorStoreRetriever):
    """A ``VectorStoreRetriever`` whose one search type is ``"hybrid"``: vector and BM25 full-text ranking.

    Each query calls :meth:`EmbeddixVectorStore.similarity_search` with ``text_weight`` (from
    ``search_kwargs``, default 0.5), so the query is ranked by vector and by BM25 full-text match, fused
    by reciprocal rank. With a ``score_threshold`` in ``search_kwargs`` it calls
    ``similarity_search_with_relevance_scores`` instead and keeps the documents scoring at least that:
    hybrid scores are the plain search's, so the threshold is the one ``"similarity_score_threshold"``
    takes. Built by ``EmbeddixVectorStore.as_retriever(search_type="hybrid", ...)``; the other search
    types get LangChain's own ``VectorStoreRetriever``, so this class adds to LangChain's dispatch instead
    of copying it.
    """

    search_type: str = HYBRID
    allowed_search_types: ClassVar[tuple[str, ...]] = (HYBRID,)

    def _hybrid_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        merged = self.search_kwargs | kwargs
        if merged.get("text_weight") is None:
            merged["text_weight"] = DEFAULT_TEXT_WEIGHT
        return merged

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        merged = self._hybrid_kwargs(kwargs)
        if merged.get("score_threshold") is None:
            merged.pop("score_threshold", None)
            return self.vectorstore.similarity_search(query, **merged)
        # LangChain's own method applies the threshold (and logs when nothing passes it)
        pairs = self.vectorstore.similarity_search_with_relevance_scores(query, **merged)
        return [doc for doc, _ in pairs]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        merged = self._hybrid_kwargs(kwargs)
        if merged.get("score_threshold") is None:
            merged.pop("score_threshold", None)
            return await self.vectorstore.asimilarity_search(query, **merged)
        pairs = await self.vectorstore.asimilarity_search_with_relevance_scores(query, **merged)
        return [doc for doc, _ in pairs]


def _hybrid_text(query: str, kwargs: dict[str, Any]) -> tuple[str, float] | None:
    """Take ``text_weight`` out of a search's kwargs: the text and weight of a hybrid search, or None."""
    weight = kwargs.pop("text_weight", None)
    return None if weight is None else (query, weight)


def _document_maker() -> Callable[[str, str, dict[str, Any]], Document]:
    """The fastest way to make a ``Document`` from what the core already validated.

    ``Document(...)`` validates again (3.1 us); ``model_construct`` skips validation but still walks the
    model's fields (2.7 us, a quarter of the adapter's cost per hit). The object it builds is four
    attributes: the field dict and pydantic's fields-set / extra / private slots. Setting those
    directly takes 0.8 us. The shortcut is checked against ``model_construct`` once, here, and used only
    if the two objects are identical in every attribute (a future langchain-core or pydantic that
    changes the layout gets ``model_construct``).
    """

    def slow(rid: str, text: str, metadata: dict[str, Any]) -> Document:
        return Document.model_construct(id=rid, page_content=text, metadata=metadata)

    probe = slow("probe", "text", {"k": 1})
    layout = list(probe.__dict__)
    fields_set = frozenset(probe.__pydantic_fields_set__)
    if layout != ["id", "metadata", "page_content", "type"] or probe.__pydantic_extra__ is not None:
        return slow
    doc_type = probe.__dict__["type"]
    new, set_attr = object.__new__, object.__setattr__

    def fast(rid: str, text: str, metadata: dict[str, Any]) -> Document:
        doc = new(Document)
        set_attr(doc, "__dict__", {"id": rid, "metadata": metadata, "page_content": text, "type": doc_type})
        set_attr(doc, "__pydantic_fields_set__", set(fields_set))
        set_attr(doc, "__pydantic_extra__", None)
        set_attr(doc, "__pydantic_private__", None)
        return doc

    check = fast("probe", "text", {"k": 1})
    same = all(
        getattr(check, name) == getattr(probe, name)
        for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")
    )
    return fast if same else slow


_make_document = _document_maker()


def _document(rec: Hit | Record) -> Document:
    return _make_document(rec.id, rec.document or "", rec.metadata)


def _ids(ids: Sequence[str | None] | None, n: int) -> list[str]:
    if ids is None:
        return [str(uuid.uuid4()) for _ in range(n)]
    if len(ids) != n:
        raise InvalidArgumentError(f"got {len(ids)} ids for {n} texts; expected one per text")
    return [i if i else str(uuid.uuid4()) for i in ids]


def _no_extra(kwargs: dict[str, Any], where: str) -> None:
    if kwargs:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {sorted(kwargs)}")


def _identity(score: float) -> float:
    return score


def _clip01(score: float) -> float:
    return min(1.0, max(0.0, score))
