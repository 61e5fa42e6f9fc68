"""The :class:`Embedder` protocol and the input/output checks every embedder shares.

All embedders convert their input once, through :func:`check_texts` / :func:`check_text`, and their output
once, through :func:`as_matrix`, so every implementation rejects the same bad input with the same message
and returns the same array layout (C-contiguous float32, ``(n, dim)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import DimensionMismatchError, InvalidArgumentError

__all__ = ["Embedder", "as_matrix", "check_text", "check_texts"]


@runtime_checkable
class Embedder(Protocol):
    """Turns text into fixed-length float32 vectors.

    Implementations are thread-safe: any method may be called from several threads at once.
    ``model_id`` names the model *and* its output space: two embedders with the same ``model_id`` return the
    same vector for the same text (up to float rounding), so collections store it and refuse to mix models.
    """

    @property
    def model_id(self) -> str:
        """Stable name of the model and its vector space, e.g. ``"hash-384-v1"``."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector this embedder returns."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts.

        Args:
            texts: The texts, in order. May be empty.

        Returns:
            A C-contiguous float32 array of shape ``(len(texts), dim)``; row ``i`` embeds ``texts[i]``.

        Raises:
            InvalidArgumentError: ``texts`` is a single string or holds something that is not a string.
        """
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one text.

        Args:
            text: The text.

        Returns:
            A C-contiguous float32 array of shape ``(dim,)``.

        Raises:
            InvalidArgumentError: ``text`` is not a string.
        """
        ...


def check_texts(texts: Any) -> list[str]:
    """Validate a batch of texts and return it as a list.

    A lone ``str`` is rejected rather than embedded character by character, the classic mistake of passing
    ``"hello"`` where ``["hello"]`` was meant.

    Raises:
        InvalidArgumentError: ``texts`` is a string, bytes, not iterable, or holds a non-string.
    """
    if isinstance(texts, str | bytes | bytearray):
        raise InvalidArgumentError(
            f"texts must be a sequence of strings, got a single {type(texts).__name__}; "
            f"wrap it in a list (embed_documents([text])) or call embed_query(text)"
        )
    try:
        items = list(texts)
    except TypeError:
        raise InvalidArgumentError(
            f"texts must be a sequence of strings, got {type(texts).__name__}"
        ) from None
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidArgumentError(
                f"texts[{i}] must be a str, got {type(item).__name__}; convert it with str() or drop it"
            )
    return items


def check_text(text: Any) -> str:
    """Validate a single text.

    Raises:
        InvalidArgumentError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(f"text must be a str, got {type(text).__name__}")
    return text


def as_matrix(vectors: Any, n: int, dim: int, *, source: str) -> np.ndarray:
    """Convert an embedder's raw output to a C-contiguous float32 ``(n, dim)`` array and check its shape.

    Args:
        vectors: What the model returned.
        n: The number of texts that were embedded.
        dim: The dimension the embedder declares.
        source: The embedder's name, for the error message.

    Raises:
        DimensionMismatchError: The output has another shape (a model that disagrees with its declared
            ``dim``).
    """
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if n == 0 and matrix.size == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if matrix.shape != (n, dim):
        raise DimensionMismatchError(
            f"{source} returned an array of shape {matrix.shape}, expected ({n}, {dim}); "
            f"the model does not match the embedder's declared dimension"
        )
    return matrix
