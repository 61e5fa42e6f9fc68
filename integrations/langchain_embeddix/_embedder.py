"""Embedders in both directions: a LangChain ``Embeddings`` as a core ``Embedder``, and the reverse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from embeddix_core import DimensionMismatchError, InvalidArgumentError
from embeddix_core.embeddings import Embedder, get_embedder

__all__ = ["EmbeddixEmbeddings", "LangChainEmbedder"]

# Probed only when ``dim`` is asked for before anything was embedded.
_PROBE_TEXT = "dimension probe"
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


class LangChainEmbedder:
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
        self.embeddings = embeddings
        self._model_id = model_id or _model_id_of(embeddings)
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
            InvalidArgumentError: ``texts`` is a single string.
            DimensionMismatchError: The model returned vectors of another length than before.
        """
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self._dim or 0), np.float32)
        return self._matrix(self.embeddings.embed_documents(items), len(items))

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query text.

        Returns:
            A float32 ``(dim,)`` array.
        """
        return self._matrix([self.embeddings.embed_query(_check_text(text))], 1)[0]

    async def aembed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed_documents` through the model's own async API."""
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self._dim or 0), np.float32)
        return self._matrix(await self.embeddings.aembed_documents(items), len(items))

    async def aembed_query(self, text: str) -> np.ndarray:
        """:meth:`embed_query` through the model's own async API."""
        return self._matrix([await self.embeddings.aembed_query(_check_text(text))], 1)[0]

    def _matrix(self, raw: Any, n: int) -> np.ndarray:
        try:
            mat = np.ascontiguousarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DimensionMismatchError(
                f"{self._model_id} returned vectors numpy cannot read as one float matrix ({exc}); "
                "its vectors must all have the same length"
            ) from exc
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
        return f"LangChainEmbedder({type(self.embeddings).__name__}, model_id={self._model_id!r})"


def _model_id_of(embeddings: Embeddings) -> str:
    if isinstance(embeddings, EmbeddixEmbeddings):
        return embeddings.embedder.model_id
    for attr in _MODEL_ATTRS:
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(embeddings).__name__


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise InvalidArgumentError("texts must be a list of strings, got a single str; wrap it in a list")
    items = list(texts)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidArgumentError(f"texts[{i}] must be a str, got {type(item).__name__}")
    return items


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
    return text
