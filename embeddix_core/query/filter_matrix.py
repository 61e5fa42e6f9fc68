"""The vectors of one filter's matches as one matrix, and its exact top-k scan.

Why one matrix: an exact scan of a filter's matches is only cheap when their vectors sit together in
memory; gathered label by label through an LRU, 10,000 of them took milliseconds.

Layout: the rows are rotated onto the principal directions of the matches (eigenvectors of their
second-moment matrix) and split in a *head*, the first ``r`` coordinates (the fewest holding 85% of
the energy, at most half of them), and a *tail*, the rest, with each tail row's norm. A rotation is
orthogonal, so dot products, norms and distances are those of the original vectors. A single query is
scored in two stages: the head alone bounds every row's score from above (Cauchy-Schwarz on the tail:
``<q_t, x_t> <= |q_t| |x_t|``); the exact scores of the best ``2k`` rows by head set a threshold (the
k-th of them); only rows whose bound reaches it are scored exactly. The answer is the exact top k: a
row left out has a bound, so a score, below k scores already found. A tolerance covers float32 rounding.
Measured on 10,000 x 384 MiniLM vectors (r = 152) on a busy 2-core machine: 140 rows reach the
threshold (p50; p90 740), and the scan takes 0.46-0.59 ms p50 against 0.72 ms for the whole matrix (the
head's product alone ~0.25 ms; r = 128 and r = 184 measured slower). Few rows, or a flat spectrum (no head
of at most half the coordinates holds 85%), get no rotation: one stage over the whole rows.

Kernels: a single query's products run on FAISS's single-threaded SIMD kernel
(``fvec_inner_products_ny``, which releases the GIL), not on BLAS: OpenBLAS splits a matrix-vector
product over every core, and on a busy machine its second thread waits for a time slice (measured on
a shared 2-core machine: 10,000 x 384 in 0.57 ms on one thread; 3.6 ms p50, 18 ms p90 on two with
another job running). Batches of queries use BLAS, where a matrix product pays for the threads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..index.base import IndexResult
from .subset_graph import SubsetGraph

__all__ = ["FilterMatrix", "dot_rows", "matrix_size"]

_ROTATE_MIN_ROWS = 2048  # below this a second stage saves less than it costs
_ROTATE_MIN_DIM = 32
_ENERGY = 0.85  # MiniLM 10,000 x 384, one busy core: r 152 0.59 ms; r 128 (0.8) 0.64; r 184 (0.9) 0.59
_COVARIANCE_SAMPLE = 4096  # rows whose second moments choose the rotation (any rotation is exact)
_TOLERANCE = 1e-4  # of |q| x the largest row norm: float32 rounding of a 384-term dot is ~1e-6 of it

_dot_rows: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def dot_rows(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``rows @ q`` on one thread (see the module docstring).

    Args:
        rows: (n, d) float32 rows (C-contiguous, or copied to be).
        q: A float32 vector of their dimension.

    Returns:
        The n dot products, float32.
    """
    global _dot_rows
    if _dot_rows is None:
        _dot_rows = _kernel()
    return _dot_rows(rows, q)


def _kernel() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    try:
        import faiss

        native, ptr = faiss.fvec_inner_products_ny, faiss.swig_ptr  # type: ignore[attr-defined]
    except (ImportError, AttributeError):  # pragma: no cover - faiss-cpu is a core dependency
        return lambda rows, q: np.einsum("ij,j->i", rows, q)  # numpy's own loop: one thread too

    # Not fvec_inner_products_by_idx (no gather): it opens an OpenMP region even for one query, and
    # waking its threads costs what BLAS's do (measured: 15-25 ms a scan on a busy machine).
    def dots(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        n, d = rows.shape
        out = np.zeros(n, np.float32)
        if n and d:
            # the kernel reads raw memory: contiguous float32 (a copy only if they are not)
            rows, q = np.ascontiguousarray(rows, np.float32), np.ascontiguousarray(q, np.float32)
            native(ptr(out), ptr(q), ptr(rows), d, n)
        return out

    return dots


def matrix_size(rows: int, dim: int) -> int:
    """Upper bound of the bytes a :class:`FilterMatrix` of ``rows`` x ``dim`` holds."""
    return rows * (4 * dim + 16) + 4 * dim * dim


def _principal(vecs: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(rotation whose rows are the principal directions, head width), or None when not worth it."""
    n, d = vecs.shape
    if n < _ROTATE_MIN_ROWS or d < _ROTATE_MIN_DIM:
        return None
    step = max(1, n // _COVARIANCE_SAMPLE)
    sample = vecs[::step]
    w, v = np.linalg.eigh((sample.T @ sample).astype(np.float64))  # ascending eigenvalues
    w = np.maximum(w[::-1], 0.0)
    total = float(w.sum())
    if total <= 0.0:
        return None
    r = int(np.searchsorted(np.cumsum(w) / total, _ENERGY)) + 1
    r = -(-r // 8) * 8  # whole SIMD lanes
    if r > d // 2:
        return None
    return np.ascontiguousarray(v[:, ::-1].T, np.float32), r


@dataclass(frozen=True, slots=True, eq=False)
class FilterMatrix:
    """One filter's matches as an immutable, exactly searchable matrix (see the module docstring).

    Attributes:
        labels: The matching labels when it was read, sorted (int64, ``(n,)``).
        head: Row ``i`` of ``labels[i]``'s vector, rotated, first ``r`` coordinates (float32, C order).
        tail: The remaining coordinates (``(n, d - r)``; ``(n, 0)`` without a rotation).
        tail_norms: Norms of the tail rows.
        sq_norms: Squared norms of the whole rows (Euclidean distances).
        rotation: ``(d, d)``, row j the j-th principal direction; None: the rows as they are.
        scale: The largest row norm (the rounding tolerance scales with it).
        stale: Labels written since the rows were read (``filter_cache.py``): their rows are never used.
        graph: An HNSW graph of the same rows once one is built (``subset_graph.py``), else None.
    """

    labels: np.ndarray
    head: np.ndarray
    tail: np.ndarray
    tail_norms: np.ndarray
    sq_norms: np.ndarray
    rotation: np.ndarray | None
    scale: float
    stale: frozenset[int] = frozenset()
    graph: SubsetGraph | None = None

    @classmethod
    def build(cls, labels: np.ndarray, vectors: np.ndarray, *, rotate: bool = True) -> FilterMatrix:
        """A matrix of ``vectors`` (index space, row i of ``labels[i]``; NaN rows score as zeros).

        Args:
            labels: Sorted int64 labels.
            vectors: (n, d) float32 rows; a NaN row (a record gone) must be marked stale by the caller.
            rotate: Allow the two-stage layout (off for a one-off scan: choosing it costs a product).
        """
        vecs = np.ascontiguousarray(vectors, np.float32)
        if len(vecs) and not np.isfinite(vecs[:, 0]).all():
            vecs = vecs.copy()
            vecs[~np.isfinite(vecs[:, 0])] = 0.0
        # huge finite vectors (l2, ip) may overflow float32 products: they rank as inf, as in exact_topk
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", vecs, vecs)
            scale = float(np.sqrt(sq.max())) if len(sq) else 0.0
            found = _principal(vecs) if rotate and np.isfinite(scale) else None
            if found is None:
                empty = np.zeros((len(vecs), 0), np.float32)
                return cls(labels, vecs, empty, np.zeros(len(vecs), np.float32), sq, None, scale)
            rotation, r = found
            coords = vecs @ rotation.T
            head = np.ascontiguousarray(coords[:, :r])
            tail = np.ascontiguousarray(coords[:, r:])
            tail_norms = np.sqrt(np.einsum("ij,ij->i", tail, tail))
        return cls(labels, head, tail, tail_norms, sq, rotation, scale)

    @property
    def nbytes(self) -> int:
        """Memory held (what the budget counts)."""
        extra = 0 if self.rotation is None else self.rotation.nbytes
        arrays = (self.labels, self.head, self.tail, self.tail_norms, self.sq_norms)
        graph = 0 if self.graph is None else self.graph.nbytes
        return sum(a.nbytes for a in arrays) + extra + graph

    def dead_rows(self) -> np.ndarray:
        """Row positions of the stale labels."""
        return self._rows_of(self.stale)

    def with_stale(self, labels: Iterable[int]) -> FilterMatrix:
        """The same rows with ``labels`` marked stale too."""
        return dataclasses.replace(self, stale=self.stale.union(labels))

    def search(self, queries: np.ndarray, k: int, space: str) -> IndexResult:
        """Exact top k of the rows not stale, as :func:`~embeddix_core.index.base.exact_topk` would rank them.

        Args:
            queries: (nq, d) float32, index space.
            k: Neighbours wanted (fewer when fewer rows are not stale).
            space: ``"ip"`` (distance ``1 - <q, x>``) or ``"l2"`` (squared Euclidean).

        Returns:
            Labels and raw distances, best first; ties broken by row (label) order.
        """
        nq = queries.shape[0]
        dead = self._rows_of(self.stale)
        kk = min(k, len(self.labels) - len(dead))
        if kk <= 0:
            return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))
        with np.errstate(over="ignore", invalid="ignore"):  # see build
            if nq == 1:
                rows, scores = self._one(np.ascontiguousarray(queries[0], np.float32), kk, space, dead)
                labels, score_rows = self.labels[rows][None, :], scores[None, :]
            else:
                labels, score_rows = self._many(queries, kk, space, dead)
            return IndexResult(labels, _distances(score_rows, queries, space))

    def _rows_of(self, labels: frozenset[int]) -> np.ndarray:
        """Row positions of those of ``labels`` that are rows."""
        if not labels:
            return np.zeros(0, np.int64)
        wanted = np.fromiter(labels, np.int64, len(labels))
        pos = np.searchsorted(self.labels, wanted)
        ok = pos < len(self.labels)
        pos, wanted = pos[ok], wanted[ok]
        return pos[self.labels[pos] == wanted]

    def _one(self, q: np.ndarray, k: int, space: str, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the best k rows for one query; score = ``<q, x>`` (minus |x|^2 / 2 for l2)."""
        qr = q if self.rotation is None else dot_rows(self.rotation, q)
        r = self.head.shape[1]
        s = dot_rows(self.head, qr[:r])
        if space == "l2":
            s -= 0.5 * self.sq_norms  # ranks like -|q - x|^2, with |q|^2 left out
        if len(dead):
            s[dead] = -np.inf
        if not self.tail.shape[1]:
            top = _best(s, k)
            return top, s[top]
        qt = np.ascontiguousarray(qr[r:])
        n = len(s)
        c = min(2 * k, n - len(dead))
        first = np.argpartition(s, n - c)[n - c :]  # the best c by head (stale rows are -inf)
        exact_first = s[first] + dot_rows(self.tail[first], qt)
        # a row is a candidate when its bound reaches the k-th best exact score among those c
        floor = np.partition(exact_first, c - k)[c - k] - _TOLERANCE * (_norm(q) * self.scale + 1e-12)
        bound = self.tail_norms * _norm(qt)
        bound += s
        cand = np.flatnonzero(bound >= floor)
        exact = s[cand] + dot_rows(self.tail[cand], qt)
        best = _best(exact, k)
        return cand[best], exact[best]

    def _many(
        self, queries: np.ndarray, k: int, space: str, dead: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores) per query: one matrix product (BLAS) over every row."""
        qr = queries if self.rotation is None else queries @ self.rotation.T
        r = self.head.shape[1]
        s = qr[:, :r] @ self.head.T
        if self.tail.shape[1]:
            s += qr[:, r:] @ self.tail.T
        if space == "l2":
            s -= 0.5 * self.sq_norms[None, :]
        if len(dead):
            s[:, dead] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.argsort(-s, axis=1)
        ps = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)
        rows = np.take_along_axis(part, order, axis=1)
        return self.labels[rows], np.take_along_axis(s, rows, axis=1)


def _norm(v: np.ndarray) -> float:
    return math.sqrt(float(v @ v))


def _best(s: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest values, largest first, ties by position."""
    idx = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
    return idx[np.lexsort((idx, -s[idx]))]


def _distances(scores: np.ndarray, queries: np.ndarray, space: str) -> np.ndarray:
    """Raw distances of the index seam from scores (``<q, x>``, or ``<q, x> - |x|^2 / 2`` for l2)."""
    if space == "ip":
        return (1.0 - scores).astype(np.float32)
    qq = np.einsum("ij,ij->i", queries, queries)[:, None]
    return np.maximum(qq - 2.0 * scores, 0.0).astype(np.float32)
