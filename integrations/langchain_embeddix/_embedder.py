"""Embedders in both directions: a LangChain ``Embeddings`` as a core ``Embedder``, and the reverse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from embeddix_core.embeddings import Embedder, get_embedder
from embeddix_core.embeddings._protocol import check_text, check_texts
from embeddix_core.embeddings._wrapped import WrappedEmbedder

__all__ = ["EmbeddixEmbeddings", "LangChainEmbedder"]

# Attributes LangChain embedding classes use for the model name, in the order we trust them.
_MODEL_ATTRS = ("model", "model_name", "model_id", "deployment")


class EmbeddixEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` backed by an Embeddix embedder (the offline MiniLM by default).

    Args:
        embedder: A core :class:`~embeddix_core.embeddings.Embedder`, or a name for
            :func:`~embeddix_core.embeddings.get_embedder` (``"minilm"``, ``"hash"``, ``"hash-256"``...).

    Raises:
        InvalidArgumentError: ``embedder`` is an unknown name.
    """

    def __init__(self, embedder: Embedder | str = "minilm") -> None:
        self._embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder

    @property
    def embedder(self) -> Embedder:
        """The core embedder doing the work."""
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts for storage.

        Args:
            texts: The texts.

        Returns:
            One vector (list of floats) per text.
        """
        return self._embedder.embed_documents(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """Embed a query text.

        Args:
            text: The query.

        Returns:
            The vector.
        """
        return self._embedder.embed_query(text).tolist()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"EmbeddixEmbeddings({self._embedder!r})"


class LangChainEmbedder(WrappedEmbedder):
    """A LangChain ``Embeddings`` seen as a core :class:`~embeddix_core.embeddings.Embedder`.

    Vectors come back as C-contiguous float32 arrays, checked for shape once here. ``dim`` is learnt from
    the first embedding (a one-text probe if it is asked for first) and then fixed.

    Args:
        embeddings: The LangChain embeddings object.
        model_id: The model's stable name; by default the wrapped core embedder's id for
            :class:`EmbeddixEmbeddings`, else the object's ``model``/``model_name`` attribute, else its
            class name. Collections store it and refuse vectors of another model.
    """

    def __init__(self, embeddings: Embeddings, *, model_id: str | None = None) -> None:
        super().__init__(model_id or _model_id_of(embeddings))
        self.embeddings = embeddings

    def _embed_many(self, texts: list[str]) -> Any:
        return self.embeddings.embed_documents(texts)

    def _embed_one(self, text: str) -> Any:
        return self.embeddings.embed_query(text)

    async def aembed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed_documents` through the model's own async API."""
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self._dim or 0), np.float32)
        return self._matrix(await self.embeddings.aembed_documents(items), len(items))

    async def aembed_query(self, text: str) -> np.ndarray:
        """:meth:`embed_query` through the model's own async API."""
        return self._matrix([await self.embeddings.aembed_query(check_text(text))], 1)[0]

    def __repr__(self) -> str:
        return f"LangChainEmbedder({type(self.embeddings).__name__}, model_id={self._model_id!r})"


def _model_id_of(embeddings: Embeddings) -> str:
    if isinstance(embeddings, EmbeddixEmbeddings):
        return embeddings.embedder.model_id
    for attr in _MODEL_ATTRS:
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(embeddings).__name__
