"""A bounded LRU of full-precision vectors in front of a slower source (the store, or a compressed index).

Used for re-ranking: candidates come back as labels, and their exact vectors are needed. Hot labels are
served from memory; misses are fetched in one batch from the loader.
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
        self.hits = 0
        self.misses = 0

    def get(self, labels: np.ndarray) -> np.ndarray:
        """Vectors for ``labels``, in order."""
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
        if missing:
            fetched = self._loader(labels[missing])
            out[missing] = fetched
            with self._lock:
                for j, i in enumerate(missing):
                    self._data[int(labels[i])] = fetched[j].copy()
                while len(self._data) > self._max:
                    self._data.popitem(last=False)
        return out

    def discard(self, labels: np.ndarray | list[int]) -> None:
        """Forget labels whose vectors changed or were deleted."""
        with self._lock:
            for label in np.asarray(labels, np.int64).tolist():
                self._data.pop(label, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    @property
    def nbytes(self) -> int:
        return len(self._data) * self.dim * 4
