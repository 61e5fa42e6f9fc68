"""HashEmbedder: the pure-numpy reference embedder (feature hashing, no model, no dependencies)."""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from ..errors import InvalidArgumentError
from ..metrics import timed_embed
from ._protocol import as_matrix, check_text, check_texts

__all__ = ["HashEmbedder"]

# Bumped whenever the features or the hash change: the version is part of ``model_id``, so vectors stored
# by an older algorithm are refused instead of being silently compared with new ones.
_ALGORITHM_VERSION = 1
_PERSON = b"embeddix-hash-v1"  # blake2b personalisation: exactly 16 bytes
_WORD_RE = re.compile(r"\w+")
# Texts without a single word token (``""``, ``"!!!"``) embed to this feature, so every output is a unit
# vector; a zero vector would make cosine similarity undefined downstream.
_EMPTY_FEATURE = "e:"
_MAX_SEED = 2**64


@functools.lru_cache(maxsize=1 << 16)
def _feature(feature: str, seed: int, dim: int) -> tuple[int, float]:
    """Map a feature string to ``(bucket, sign)``.

    blake2b rather than ``hash()``: Python salts ``str`` hashes per process (PYTHONHASHSEED), and these
    vectors must be identical in every process, on every machine, forever, because they are stored on disk.
    """
    digest = hashlib.blake2b(
        feature.encode("utf-8"), digest_size=8, salt=seed.to_bytes(16, "little"), person=_PERSON
    ).digest()
    value = int.from_bytes(digest, "little")
    # The top bit picks the sign: signed hashing keeps collisions from biasing every pair towards similarity.
    return value % dim, (1.0 if value >> 63 else -1.0)


def _features(text: str) -> list[tuple[str, float]]:
    """Weighted features of a text: each word token, plus the character trigrams of each word.

    Words carry weight 1; a word's trigrams share a total L2 weight of 1, so morphological neighbours ("sits",
    "sitting") overlap without long words drowning short ones.
    """
    words = _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())
    if not words:
        return [(_EMPTY_FEATURE, 1.0)]
    out: list[tuple[str, float]] = []
    for word in words:
        out.append(("w:" + word, 1.0))
        padded = f"#{word}#"
        n = len(padded) - 2
        weight = 1.0 / math.sqrt(n)
        out.extend(("t:" + padded[i : i + 3], weight) for i in range(n))
    return out


class HashEmbedder:
    """Deterministic feature-hashing embedder: the reference implementation and the test double.

    Each text is lowercased (Unicode casefold after NFKC), split into word tokens, and every word and every
    character trigram of a word is hashed (blake2b, seeded) into one of ``dim`` signed buckets; the sum is
    L2-normalised. Texts that share words or word pieces therefore have a positive cosine similarity, while
    unrelated texts are close to orthogonal. It has no notion of meaning ("car" and "automobile" are
    unrelated), which is exactly what makes it predictable in tests.

    The output depends only on ``(text, dim, seed)`` and the algorithm version, all of which are in
    :attr:`model_id`: it is identical across processes, platforms and Python versions (given the same
    Unicode tables), needs nothing beyond numpy, and embeds thousands of short texts per second.

    Thread-safe: it holds no mutable state apart from a bounded, thread-safe memo of feature hashes.

    Args:
        dim: Vector length, at least 2.
        seed: Selects an independent hash family; vectors from different seeds are unrelated.

    Raises:
        InvalidArgumentError: ``dim`` or ``seed`` is out of range or not an integer.
    """

    def __init__(self, dim: int = 384, seed: int = 0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 2 <= dim <= 65_536:
            raise InvalidArgumentError(f"dim must be an integer in [2, 65536], got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED:
            raise InvalidArgumentError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        self._dim = dim
        self._seed = seed
        suffix = f"-seed{seed}" if seed else ""
        self._model_id = f"hash-{dim}{suffix}-v{_ALGORITHM_VERSION}"

    @property
    def model_id(self) -> str:
        """``"hash-<dim>-v1"``, or ``"hash-<dim>-seed<seed>-v1"`` for a non-zero seed."""
        return self._model_id

    @property
    def dim(self) -> int:
        """Length of every vector."""
        return self._dim

    @property
    def seed(self) -> int:
        """The hash seed."""
        return self._seed

    @timed_embed  # latency and texts per model (metrics.py)
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts; see :meth:`Embedder.embed_documents`.

        Args:
            texts: The texts, in order. May be empty.

        Returns:
            A C-contiguous float32 ``(len(texts), dim)`` array of unit vectors.

        Raises:
            InvalidArgumentError: ``texts`` is a single string or holds a non-string.
        """
        items = check_texts(texts)
        matrix = np.zeros((len(items), self._dim), dtype=np.float64)
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for row, text in enumerate(items):
            for feature, weight in _features(text):
                bucket, sign = _feature(feature, self._seed, self._dim)
                rows.append(row)
                cols.append(bucket)
                vals.append(sign * weight)
        # add.at, not fancy-index assignment: several features of one text may share a bucket.
        np.add.at(matrix, (np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)), vals)
        norms = np.linalg.norm(matrix, axis=1)
        dead = np.flatnonzero(norms == 0.0)
        if dead.size:
            # Signed features cancelled out exactly (rare); fall back to the empty-text vector.
            bucket, sign = _feature(_EMPTY_FEATURE, self._seed, self._dim)
            matrix[dead] = 0.0
            matrix[dead, bucket] = sign
            norms[dead] = 1.0
        matrix /= norms[:, None]
        return as_matrix(matrix, len(items), self._dim, source=self._model_id)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one text; see :meth:`Embedder.embed_query`.

        Raises:
            InvalidArgumentError: ``text`` is not a string.
        """
        return self.embed_documents([check_text(text)])[0]

    def __repr__(self) -> str:
        return f"HashEmbedder(dim={self._dim}, seed={self._seed})"
