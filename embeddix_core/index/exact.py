"""Exact (brute-force) index: a growable numpy matrix searched by one BLAS product.

Used below the HNSW threshold and as the oracle in tests. Deleted rows are swapped with the last live row,
so the matrix stays dense and a search never reads a tombstone.

Threads: one lock covers mutations and searches. A swap-delete or a reallocation seen half-done would
return a wrong row; exact indexes are small (below the HNSW threshold), so a search holds it < 1 ms.
"""

from __future__ import annotations

import threading

import numpy as np

from .base import FlatIndexMixin, IndexResult, LabelFilter, exact_topk

__all__ = ["ExactIndex"]


class ExactIndex(FlatIndexMixin):
    """Brute-force index over a dense float32 matrix.

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"``.
        capacity: Initial rows reserved; doubles as needed.
    """

    kind = "exact"

    def __init__(self, dim: int, space: str, capacity: int = 1024) -> None:
        self.dim = dim
        self.space = space
        self._vecs = np.empty((max(capacity, 16), dim), np.float32)
        self._labels = np.empty(max(capacity, 16), np.int64)
        self._norms = np.empty(max(capacity, 16), np.float32)
        self._n = 0
        self._pos: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._n

    def _grow(self, need: int) -> None:
        cap = self._vecs.shape[0]
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        vecs = np.empty((new_cap, self.dim), np.float32)
        vecs[: self._n] = self._vecs[: self._n]
        labels = np.empty(new_cap, np.int64)
        labels[: self._n] = self._labels[: self._n]
        norms = np.empty(new_cap, np.float32)
        norms[: self._n] = self._norms[: self._n]
        self._vecs, self._labels, self._norms = vecs, labels, norms

    def add(self, labels: np.ndarray, vectors: np.ndarray, new: np.ndarray | None = None) -> None:
        with self._lock:
            self._add(np.asarray(labels, np.int64), vectors)

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        self._grow(self._n + len(labels))
        norms = np.einsum("ij,ij->i", vectors, vectors)
        for j, lb in enumerate(labels.tolist()):
            row = self._pos.get(lb)
            if row is None:
                row = self._n
                self._n += 1
                self._pos[lb] = row
                self._labels[row] = lb
            self._vecs[row] = vectors[j]
            self._norms[row] = norms[j]

    def remove(self, labels: np.ndarray) -> None:
        with self._lock:
            self._remove(labels)

    def _remove(self, labels: np.ndarray) -> None:
        for lb in np.asarray(labels, np.int64).tolist():
            row = self._pos.pop(lb, None)
            if row is None:
                continue
            last = self._n - 1
            if row != last:
                moved = int(self._labels[last])
                self._vecs[row] = self._vecs[last]
                self._labels[row] = moved
                self._norms[row] = self._norms[last]
                self._pos[moved] = row
            self._n = last

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        allowed: LabelFilter | None = None,
        num_threads: int = 1,
    ) -> IndexResult:
        with self._lock:
            return self._search(queries, k, allowed)

    def _search(self, queries: np.ndarray, k: int, allowed: LabelFilter | None) -> IndexResult:
        n = self._n
        if allowed is not None:
            rows = np.fromiter((i for i in range(n) if allowed(int(self._labels[i]))), np.int64)
            return exact_topk(self._vecs[rows], self._labels[rows], queries, k, self.space, self._norms[rows])
        return exact_topk(self._vecs[:n], self._labels[:n], queries, k, self.space, self._norms[:n])

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        with self._lock:
            rows = [self._pos[int(lb)] for lb in labels]
            return self._vecs[rows]

    def has(self, label: int) -> bool:
        return label in self._pos

    def live_labels(self) -> np.ndarray:
        with self._lock:
            return self._labels[: self._n].copy()

    def memory_bytes(self) -> int:
        return int(self._vecs.nbytes + self._labels.nbytes + self._norms.nbytes)

    def memory_parts(self) -> dict[str, int]:
        """Resident bytes by part (allocated capacity: the arrays grow ahead of the count)."""
        return {"vectors": int(self._vecs.nbytes + self._norms.nbytes), "labels": int(self._labels.nbytes)}
