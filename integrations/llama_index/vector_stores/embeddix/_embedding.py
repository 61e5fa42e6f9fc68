"""Embedders in both directions: a core ``Embedder`` as a LlamaIndex ``BaseEmbedding``, and the reverse."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr

from embeddix_core import DimensionMismatchError, InvalidArgumentError
from embeddix_core.embeddings import Embedder, get_embedder

__all__ = ["EmbeddixEmbedding", "LlamaIndexEmbedder"]

_PROBE_TEXT = "dimension probe"


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


class LlamaIndexEmbedder:
    """A LlamaIndex embedding model seen as a core :class:`~embeddix_core.embeddings.Embedder`.

    ``dim`` is learnt from the first embedding (a one-text probe if it is asked for first).

    Args:
        embed_model: The LlamaIndex embedding model.
        model_id: The model's stable name; by default the wrapped core embedder's id for
            :class:`EmbeddixEmbedding`, else ``embed_model.model_name``, else the class name.
    """

    def __init__(self, embed_model: BaseEmbedding, *, model_id: str | None = None) -> None:
        self.embed_model = embed_model
        name = getattr(embed_model, "model_name", None)
        default = name if isinstance(name, str) and name and name != "unknown" else embed_model.class_name()
        self._model_id = model_id or default
        self._dim: int | None = None

    @property
    def model_id(self) -> str:
        """Stable name of the model (see the class docstring)."""
        return self._model_id

    @property
    def dim(self) -> int:
        """Vector length; the first call embeds one probe text if nothing was embedded yet."""
        if self._dim is None:
            return int(self.embed_query(_PROBE_TEXT).shape[0])
        return self._dim

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts.

        Returns:
            A float32 ``(len(texts), dim)`` array.

        Raises:
            InvalidArgumentError: ``texts`` is a single string or holds a non-string.
        """
        if isinstance(texts, str):
            raise InvalidArgumentError("texts must be a list of strings, got a single str; wrap it in a list")
        items = list(texts)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise InvalidArgumentError(f"texts[{i}] must be a str, got {type(item).__name__}")
        if not items:
            return np.zeros((0, self._dim or 0), np.float32)
        return self._matrix(self.embed_model.get_text_embedding_batch(items), len(items))

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query text.

        Returns:
            A float32 ``(dim,)`` array.
        """
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
        return self._matrix([self.embed_model.get_query_embedding(text)], 1)[0]

    def _matrix(self, raw: Any, n: int) -> np.ndarray:
        mat = np.ascontiguousarray(raw, dtype=np.float32)
        if mat.ndim != 2 or mat.shape[0] != n:
            raise DimensionMismatchError(
                f"{self._model_id} returned an array of shape {mat.shape} for {n} text(s); "
                f"expected ({n}, dim)"
            )
        if self._dim is None:
            self._dim = int(mat.shape[1])
        elif mat.shape[1] != self._dim:
            raise DimensionMismatchError(
                f"{self._model_id} returned {mat.shape[1]}-d vectors after {self._dim}-d ones"
            )
        return mat

    def __repr__(self) -> str:
        return f"LlamaIndexEmbedder({self.embed_model.class_name()}, model_id={self._model_id!r})"
