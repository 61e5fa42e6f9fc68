"""Embedders in both directions: a core ``Embedder`` as a LlamaIndex ``BaseEmbedding``, and the reverse."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr

from embeddix_core.embeddings import Embedder, WrappedEmbedder, get_embedder

__all__ = ["EmbeddixEmbedding", "LlamaIndexEmbedder"]


class EmbeddixEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model running an Embeddix embedder (the offline MiniLM by default).

    Args:
        embedder: A core :class:`~embeddix_core.embeddings.Embedder`, or a name for
            :func:`~embeddix_core.embeddings.get_embedder` (``"minilm"``, ``"hash"``, ``"hash-256"``...).
        embed_batch_size: Texts per call to the embedder.
        **kwargs: Other ``BaseEmbedding`` fields (e.g. ``callback_manager``).

    Raises:
        InvalidArgumentError: ``embedder`` is an unknown name.
    """

    _embedder: Embedder = PrivateAttr()

    def __init__(
        self, embedder: Embedder | str = "minilm", embed_batch_size: int = 64, **kwargs: Any
    ) -> None:
        core = get_embedder(embedder) if isinstance(embedder, str) else embedder
        super().__init__(model_name=core.model_id, embed_batch_size=embed_batch_size, **kwargs)
        self._embedder = core

    @classmethod
    def class_name(cls) -> str:
        return "EmbeddixEmbedding"

    @property
    def embedder(self) -> Embedder:
        """The core embedder doing the work."""
        return self._embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed_query(query).tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.embed_documents([text])[0].tolist()  # type: ignore[no-any-return]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed_documents(texts).tolist()  # type: ignore[no-any-return]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


class LlamaIndexEmbedder(WrappedEmbedder):
    """A LlamaIndex embedding model seen as a core :class:`~embeddix_core.embeddings.Embedder`.

    ``dim`` is learnt from the first embedding (a one-text probe if it is asked for first).

    Args:
        embed_model: The LlamaIndex embedding model.
        model_id: The model's stable name; by default the wrapped core embedder's id for
            :class:`EmbeddixEmbedding`, else ``embed_model.model_name``, else the class name.
    """

    def __init__(self, embed_model: BaseEmbedding, *, model_id: str | None = None) -> None:
        name = getattr(embed_model, "model_name", None)
        default = name if isinstance(name, str) and name and name != "unknown" else embed_model.class_name()
        # The lambdas read ``self.embed_model`` on every call, so assigning another model to that public
        # attribute takes effect, as it did when these were overridden methods.
        super().__init__(
            model_id or default,
            lambda texts: self.embed_model.get_text_embedding_batch(texts),
            lambda text: self.embed_model.get_query_embedding(text),
            aembed_many=lambda texts: self.embed_model.aget_text_embedding_batch(texts),
            aembed_one=lambda text: self.embed_model.aget_query_embedding(text),
        )
        self.embed_model = embed_model

    def __repr__(self) -> str:
        return f"LlamaIndexEmbedder({self.embed_model.class_name()}, model_id={self.model_id!r})"
