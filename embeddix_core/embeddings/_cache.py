"""EmbeddingCache (memory LRU + optional diskcache tier) and CachedEmbedder, which embeds only cache misses.

On-disk value format (one diskcache entry per text; never pickle)::

    key    "<model_id>\\x00<sha256 hex of the UTF-8 text>"          (str, stored raw by diskcache)
    value  header <4s magic "EXEV"><u16 version=1><u32 dim><u32 crc32 of payload>, then
           payload: dim little-endian float32                      (bytes, stored raw by diskcache)

Durability rule: this is a cache. A ``put`` is visible to every process sharing the directory once it returns,
but may be lost on power failure (diskcache commits without a full fsync), and entries are evicted when the
directory exceeds its size limit. Nothing depends on an entry surviving; everything read back is checked
(magic, version, dimension, checksum) and an entry that fails is deleted and treated as a miss.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import diskcache
import numpy as np

from ..errors import InvalidArgumentError, StorageError
from ._protocol import Embedder, as_matrix, check_text, check_texts

__all__ = ["CachedEmbedder", "EmbeddingCache"]

_MAGIC = b"EXEV"
_VERSION = 1
_HEADER = struct.Struct("<4sHII")
_LE_FLOAT32 = np.dtype("<f4")

_MemoryKey = tuple[str, bytes]


def _digest(text: str) -> bytes:
    # surrogatepass: a lone surrogate (possible in str built from broken JSON) must hash, not raise.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _encode_vector(vector: np.ndarray) -> bytes:
    payload = np.ascontiguousarray(vector, dtype=_LE_FLOAT32).tobytes()
    return _HEADER.pack(_MAGIC, _VERSION, vector.shape[0], zlib.crc32(payload)) + payload


def _decode_vector(blob: Any) -> np.ndarray | None:
    """The vector stored in ``blob``, or ``None`` if it is not a valid, intact entry."""
    if not isinstance(blob, bytes) or len(blob) < _HEADER.size:
        return None
    magic, version, dim, crc = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size :]
    if magic != _MAGIC or version != _VERSION or len(payload) != 4 * dim or zlib.crc32(payload) != crc:
        return None
    return _frozen(np.frombuffer(payload, dtype=_LE_FLOAT32))


def _frozen(vector: np.ndarray) -> np.ndarray:
    """A private, read-only float32 copy: callers must not be able to corrupt the cache through a result."""
    out = np.array(vector, dtype=np.float32, copy=True)
    out.setflags(write=False)
    return out


class EmbeddingCache:
    """Vectors keyed by ``(model_id, sha256(text))``: a bounded in-memory LRU, optionally backed by disk.

    The memory tier holds at most ``max_items`` vectors and evicts the least recently used. With
    ``directory``, a persistent tier (a :class:`diskcache.Cache`, shared safely by threads and processes)
    keeps vectors across restarts; memory misses are looked up there and promoted. Vectors are stored as raw
    float32 bytes with a checksum, never pickled.

    Thread-safe. ``hits`` and ``misses`` count lookups of distinct texts (found in either tier: a hit).

    Args:
        max_items: Capacity of the memory tier; ``0`` disables it (disk only).
        directory: Directory of the persistent tier, created if missing; ``None`` for memory only.
        disk_size_limit: Byte budget of the persistent tier (keyword-only); diskcache evicts beyond it.

    Raises:
        InvalidArgumentError: ``max_items`` or ``disk_size_limit`` is out of range.
        StorageError: The persistent tier cannot be opened.
    """

    def __init__(
        self,
        max_items: int = 100_000,
        directory: str | Path | None = None,
        *,
        disk_size_limit: int = 2**30,
    ) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
            raise InvalidArgumentError(f"max_items must be an integer >= 0, got {max_items!r}")
        if isinstance(disk_size_limit, bool) or not isinstance(disk_size_limit, int) or disk_size_limit < 1:
            raise InvalidArgumentError(f"disk_size_limit must be a positive integer, got {disk_size_limit!r}")
        self._max_items = max_items
        self._lock = threading.Lock()
        self._memory: OrderedDict[_MemoryKey, np.ndarray] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._directory = Path(directory) if directory is not None else None
        self._disk: diskcache.Cache | None = None
        if self._directory is not None:
            with self._disk_errors("open"):
                self._disk = diskcache.Cache(str(self._directory), size_limit=disk_size_limit)

    @property
    def hits(self) -> int:
        """Lookups answered from memory or disk."""
        return self._hits

    @property
    def misses(self) -> int:
        """Lookups that found nothing."""
        return self._misses

    @property
    def max_items(self) -> int:
        """Capacity of the memory tier."""
        return self._max_items

    @property
    def directory(self) -> Path | None:
        """Directory of the persistent tier, or ``None``."""
        return self._directory

    def __len__(self) -> int:
        """Number of vectors in the memory tier."""
        with self._lock:
            return len(self._memory)

    def get_many(
        self, model_id: str, texts: Sequence[str], *, dim: int | None = None
    ) -> list[np.ndarray | None]:
        """Look up several texts.

        Args:
            model_id: The embedder's model id.
            texts: The texts.
            dim: If given, entries of another length are treated as misses.

        Returns:
            One read-only float32 vector or ``None`` per text, in order.

        Raises:
            InvalidArgumentError: ``texts`` is not a sequence of strings.
            StorageError: The persistent tier failed.
        """
        items = check_texts(texts)
        keys = [(model_id, _digest(t)) for t in items]
        found: list[np.ndarray | None] = [None] * len(items)
        pending: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                vector = self._memory.get(key)
                if vector is not None and (dim is None or vector.shape[0] == dim):
                    self._memory.move_to_end(key)
                    found[i] = vector
                else:
                    pending.append(i)
        disk = self._disk
        if pending and disk is not None:
            promoted = self._disk_get(disk, [keys[i] for i in pending], dim)
            for i, vector in zip(pending, promoted, strict=True):
                found[i] = vector
            with self._lock:
                for i, vector in zip(pending, promoted, strict=True):
                    if vector is not None:
                        self._remember(keys[i], vector)
        hits = sum(v is not None for v in found)
        with self._lock:
            self._hits += hits
            self._misses += len(found) - hits
        return found

    def put_many(self, model_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text in both tiers.

        Args:
            model_id: The embedder's model id.
            texts: The texts.
            vectors: A ``(len(texts), dim)`` array.

        Raises:
            InvalidArgumentError: ``texts`` is not a sequence of strings, or the shapes disagree.
            StorageError: The persistent tier failed.
        """
        items = check_texts(texts)
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(items):
            raise InvalidArgumentError(
                f"vectors must have shape ({len(items)}, dim) for {len(items)} texts, got {matrix.shape}"
            )
        keys = [(model_id, _digest(t)) for t in items]
        frozen = [_frozen(row) for row in matrix]
        with self._lock:
            for key, vector in zip(keys, frozen, strict=True):
                self._remember(key, vector)
        disk = self._disk
        if disk is not None:
            with self._disk_errors("write"), disk.transact():
                for key, vector in zip(keys, frozen, strict=True):
                    disk.set(self._disk_key(key), _encode_vector(vector))

    def get(self, model_id: str, text: str) -> np.ndarray | None:
        """Look up one text; see :meth:`get_many`."""
        return self.get_many(model_id, [check_text(text)])[0]

    def put(self, model_id: str, text: str, vector: np.ndarray) -> None:
        """Store one vector; see :meth:`put_many`."""
        self.put_many(model_id, [check_text(text)], np.asarray(vector, dtype=np.float32).reshape(1, -1))

    def clear(self) -> None:
        """Drop every vector from both tiers and reset the counters."""
        with self._lock:
            self._memory.clear()
            self._hits = self._misses = 0
        disk = self._disk
        if disk is not None:
            with self._disk_errors("clear"):
                disk.clear()

    def close(self) -> None:
        """Close the persistent tier. Idempotent; the memory tier stays usable, the disk tier is dropped."""
        disk, self._disk = self._disk, None
        if disk is not None:
            disk.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _remember(self, key: _MemoryKey, vector: np.ndarray) -> None:
        """Insert into the memory LRU. The caller holds ``self._lock``."""
        if self._max_items == 0:
            return
        self._memory[key] = vector
        self._memory.move_to_end(key)
        while len(self._memory) > self._max_items:
            self._memory.popitem(last=False)

    @staticmethod
    def _disk_key(key: _MemoryKey) -> str:
        # A str key: diskcache stores str raw, whereas a tuple key would be pickled.
        return f"{key[0]}\x00{key[1].hex()}"

    def _disk_get(
        self, disk: diskcache.Cache, keys: list[_MemoryKey], dim: int | None
    ) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        corrupt: list[str] = []
        # No transaction: diskcache's transact() takes SQLite's write lock, and plain reads need none.
        with self._disk_errors("read"):
            for key in keys:
                disk_key = self._disk_key(key)
                blob = disk.get(disk_key)
                vector = _decode_vector(blob) if blob is not None else None
                if blob is not None and vector is None:
                    corrupt.append(disk_key)
                out.append(vector if vector is not None and (dim is None or vector.shape[0] == dim) else None)
        if corrupt:
            with self._disk_errors("delete"):
                for disk_key in corrupt:
                    disk.delete(disk_key)
        return out

    @contextmanager
    def _disk_errors(self, action: str) -> Iterator[None]:
        """Translate diskcache/SQLite failures into StorageError at this one boundary."""
        try:
            yield
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            raise StorageError(f"embedding cache at {self._directory}: {action} failed: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"EmbeddingCache(max_items={self._max_items}, directory={self._directory!r}, "
            f"items={len(self)}, hits={self._hits}, misses={self._misses})"
        )


class CachedEmbedder:
    """An :class:`Embedder` that remembers vectors and embeds only the texts it has not seen.

    Each call looks up its distinct texts in the cache, embeds all misses in one call to the wrapped
    embedder, stores them, and returns rows in input order. A text repeated within a call is looked up and
    embedded once. ``model_id`` and ``dim`` are the wrapped embedder's, so a cached and an uncached embedder
    are interchangeable. Thread-safe if the wrapped embedder is; two threads missing the same text may both
    embed it, which is harmless.

    Args:
        embedder: The embedder to wrap.
        cache: Where vectors are kept; a new memory-only :class:`EmbeddingCache` by default.

    Raises:
        InvalidArgumentError: ``embedder`` does not satisfy the :class:`Embedder` protocol.
    """

    def __init__(self, embedder: Embedder, cache: EmbeddingCache | None = None) -> None:
        if not isinstance(embedder, Embedder):
            raise InvalidArgumentError(
                f"embedder must provide model_id, dim, embed_documents and embed_query; "
                f"got {type(embedder).__name__}"
            )
        if cache is not None and not isinstance(cache, EmbeddingCache):
            raise InvalidArgumentError(f"cache must be an EmbeddingCache, got {type(cache).__name__}")
        self._embedder = embedder
        self._cache = cache if cache is not None else EmbeddingCache()

    @property
    def model_id(self) -> str:
        """The wrapped embedder's model id."""
        return self._embedder.model_id

    @property
    def dim(self) -> int:
        """The wrapped embedder's dimension."""
        return self._embedder.dim

    @property
    def embedder(self) -> Embedder:
        """The wrapped embedder."""
        return self._embedder

    @property
    def cache(self) -> EmbeddingCache:
        """The cache (its ``hits`` / ``misses`` count this embedder's lookups)."""
        return self._cache

    def warm(self) -> CachedEmbedder:
        """Load the wrapped embedder's model now, if it has a ``warm()``; returns this embedder."""
        warm = getattr(self._embedder, "warm", None)
        if callable(warm):
            warm()
        return self

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts, embedding only cache misses; see :meth:`Embedder.embed_documents`.

        Raises:
            InvalidArgumentError: ``texts`` is a single string or holds a non-string.
            StorageError: The cache's persistent tier failed.
        """
        items = check_texts(texts)
        model_id, dim = self.model_id, self.dim
        out = np.empty((len(items), dim), dtype=np.float32)
        rows_of: dict[str, list[int]] = {}
        for row, text in enumerate(items):
            rows_of.setdefault(text, []).append(row)
        distinct = list(rows_of)
        missing: list[str] = []
        for text, vector in zip(distinct, self._cache.get_many(model_id, distinct, dim=dim), strict=True):
            if vector is None:
                missing.append(text)
            else:
                out[rows_of[text]] = vector
        if missing:
            fresh = as_matrix(self._embedder.embed_documents(missing), len(missing), dim, source=model_id)
            self._cache.put_many(model_id, missing, fresh)
            for text, vector in zip(missing, fresh, strict=True):
                out[rows_of[text]] = vector
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one text through the cache; see :meth:`Embedder.embed_query`.

        Raises:
            InvalidArgumentError: ``text`` is not a string.
        """
        return self.embed_documents([check_text(text)])[0]

    def __repr__(self) -> str:
        return f"CachedEmbedder({self._embedder!r}, {self._cache!r})"
