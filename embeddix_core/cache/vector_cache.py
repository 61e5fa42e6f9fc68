"""A bounded LRU of full-precision vectors in front of a slower source (the store, or a compressed index).

Used for re-ranking: candidates come back as labels, and their exact vectors are needed. Hot labels are
served from memory; misses are fetched in one batch from the loader.

Correctness: a vector can only go stale when its record is updated or deleted, and the collection
discards those labels after the write. A reader that fetched a vector before such a write could still
insert it after the discard; a generation counter, bumped by every discard, makes it drop the vector
instead (the same rule as the row cache's).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

__all__ = ["VectorCache"]


class VectorCache:
    """LRU cache label -> float32 vector with a byte budget.

    Args:
        dim: Vector dimension.
        loader: Fetches vectors for labels, in order: ``loader(labels) -> (n, dim) float32``.
        max_bytes: Budget for cached vectors.
    """

    def __init__(
        self, dim: int, loader: Callable[[np.ndarray], np.ndarray], max_bytes: int = 32 << 20
    ) -> None:
        self.dim = dim
        self._loader = loader
        self._max = max(0, max_bytes // (dim * 4))
        self._data: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._gen = 0
        self.hits = 0
        self.misses = 0

    def get(self, labels: np.ndarray) -> np.ndarray:
        """Vectors for ``labels``, in order."""
        if not self._max:  # no budget: the loader is the cache (an on-disk collection's vector map)
            return self._loader(labels)
        data = self._data
        if not any(label in data for label in labels.tolist()):
            # none held (a semantic hit's one or two candidates, usually): one read, no per-label work
            gen = self._gen
            out = self._loader(labels)
            self.misses += len(labels)
            self.put(labels, out, gen)
            return out
        out = np.empty((len(labels), self.dim), np.float32)
        missing: list[int] = []
        with self._lock:
            for i, label in enumerate(labels.tolist()):
                vec = self._data.get(label)
                if vec is None:
                    missing.append(i)
                else:
                    self._data.move_to_end(label)
                    out[i] = vec
            self.hits += len(labels) - len(missing)
            self.misses += len(missing)
            gen = self._gen
        if missing:
            fetched = self._loader(labels[missing])
            out[missing] = fetched
            self.put(labels[missing], fetched, gen)
        return out

    @property
    def generation(self) -> int:
        """Read before fetching vectors meant for :meth:`put`."""
        return self._gen

    def put(self, labels: np.ndarray, vecs: np.ndarray, gen: int) -> None:
        """Keep vectors read from the store when the cache stood at generation ``gen``."""
        with self._lock:
            if gen != self._gen or not self._max:
                return  # a write discarded vectors meanwhile: these may predate it
            ok = np.isfinite(vecs[:, 0]).tolist()  # NaN rows: records gone
            data = self._data
            for j, label in enumerate(labels.tolist()):
                if ok[j]:
                    data[label] = vecs[j].copy()
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def discard(self, labels: np.ndarray | list[int]) -> None:
        """Forget labels whose vectors changed or were deleted."""
        with self._lock:
            self._gen += 1
            for label in np.asarray(labels, np.int64).tolist():
                self._data.pop(label, None)

    def clear(self) -> None:
        with self._lock:
            self._gen += 1
            self._data.clear()

    @property
    def nbytes(self) -> int:
        return len(self._data) * self.dim * 4
