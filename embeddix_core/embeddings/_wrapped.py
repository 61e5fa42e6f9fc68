"""A base for embedders that wrap another library's embedding object (LangChain, LlamaIndex, ...).

The wrapped object's output dimension is learned from its first answer (or one probe text when ``dim`` is
asked for first) and every later answer is checked against it, so a model that changes its output length
is caught before its vectors reach a collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DimensionMismatchError
from ._protocol import check_text, check_texts

__all__ = ["WrappedEmbedder"]

_PROBE_TEXT = "dimension probe"


class WrappedEmbedder:
    """Turns two functions over lists of floats into a core :class:`~embeddix_core.embeddings.Embedder`.

    Subclasses implement :meth:`_embed_many` and :meth:`_embed_one`.

    Args:
        model_id: The model's stable name; collections store it and refuse vectors of another model.
    """

    def __init__(self, model_id: str) -> None:
        self._model_id = model_id
        self._dim: int | None = None

    @property
    def model_id(self) -> str:
        """Stable name of the model."""
        return self._model_id

    @property
    def dim(self) -> int:
        """Vector length; the first call embeds one probe text if nothing was embedded yet."""
        if self._dim is None:
            return int(self.embed_query(_PROBE_TEXT).shape[0])
        return self._dim

    def _embed_many(self, texts: list[str]) -> Any:
        raise TypeError(f"{type(self).__name__} must implement _embed_many")

    def _embed_one(self, text: str) -> Any:
        raise TypeError(f"{type(self).__name__} must implement _embed_one")

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts.

        Returns:
            A float32 ``(len(texts), dim)`` array.

        Raises:
            InvalidArgumentError: ``texts`` is a single string or holds a non-string.
            DimensionMismatchError: The model returned vectors of another length than before.
        """
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self._dim or 0), np.float32)
        return self._matrix(self._embed_many(items), len(items))

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query text.

        Returns:
            A float32 ``(dim,)`` array.
        """
        return self._matrix([self._embed_one(check_text(text))], 1)[0]

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
