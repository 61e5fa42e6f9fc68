"""An :class:`Embedder` over another library's embedding functions (LangChain, LlamaIndex, ...).

The wrapped functions are handed over when the embedder is built rather than implemented by a subclass, so
an adapter needs nothing of this class but its constructor and public methods: every input check and output
conversion stays here, in the core, and the adapters hold no embedding logic of their own.

The wrapped model's output dimension is learned from its first answer (or one probe text when ``dim`` is
asked for first) and every later answer is checked against it, so a model that changes its output length
is caught before its vectors reach a collection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from ..errors import DimensionMismatchError
from ..metrics import timed_embed
from ._protocol import check_text, check_texts

__all__ = ["WrappedEmbedder"]

_PROBE_TEXT = "dimension probe"


class WrappedEmbedder:
    """Turns functions returning lists of floats into a core :class:`~embeddix_core.embeddings.Embedder`.

    Args:
        model_id: The model's stable name; collections store it and refuse vectors of another model.
        embed_many: Embeds a list of texts; returns one vector (any sequence of floats) per text.
        embed_one: Embeds one query text; returns one vector.
        aembed_many: Async ``embed_many``; by default ``embed_many`` runs in a worker thread.
        aembed_one: Async ``embed_one``; by default ``embed_one`` runs in a worker thread.
    """

    def __init__(
        self,
        model_id: str,
        embed_many: Callable[[list[str]], Any],
        embed_one: Callable[[str], Any],
        *,
        aembed_many: Callable[[list[str]], Awaitable[Any]] | None = None,
        aembed_one: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        self._model_id = model_id
        self._embed_many = embed_many
        self._embed_one = embed_one
        self._aembed_many = aembed_many
        self._aembed_one = aembed_one
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

    @timed_embed  # latency and texts per model (metrics.py)
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
            return self._empty()
        return self._matrix(self._embed_many(items), len(items))

    @timed_embed  # latency and texts per model (metrics.py)
    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query text.

        Returns:
            A float32 ``(dim,)`` array.

        Raises:
            InvalidArgumentError: ``text`` is not a string.
            DimensionMismatchError: The model returned a vector of another length than before.
        """
        return self._matrix([self._embed_one(check_text(text))], 1)[0]

    async def aembed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Async :meth:`embed_documents`, through the model's own async API when one was given."""
        items = check_texts(texts)
        if not items:
            return self._empty()
        if self._aembed_many is None:
            raw = await asyncio.to_thread(self._embed_many, items)
        else:
            raw = await self._aembed_many(items)
        return self._matrix(raw, len(items))

    async def aembed_query(self, text: str) -> np.ndarray:
        """Async :meth:`embed_query`, through the model's own async API when one was given."""
        item = check_text(text)
        if self._aembed_one is None:
            raw = await asyncio.to_thread(self._embed_one, item)
        else:
            raw = await self._aembed_one(item)
        return self._matrix([raw], 1)[0]

    def _empty(self) -> np.ndarray:
        # Before the first answer the dimension is unknown; probing the model for an empty batch would
        # cost a model call for nothing, so the empty result is (0, 0) until then.
        return np.zeros((0, self._dim or 0), np.float32)

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
