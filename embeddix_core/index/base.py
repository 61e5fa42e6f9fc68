"""The index seam: a Protocol, plus the exact top-k kernel every index is compared against.

Indexes speak in *labels* (the store's integer row ids) and *raw distances* of their space:

* ``"ip"`` space: ``1 - <a, b>`` (cosine collections store unit vectors, so this is ``1 - cos``);
* ``"l2"`` space: squared Euclidean distance.

The collection turns raw distances into the metric's distance and score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "FlatIndexMixin",
    "IndexResult",
    "IndexStats",
    "LabelFilter",
    "VectorIndex",
    "exact_topk",
    "exact_topk_over",
    "merge_topk",
]

LabelFilter = Callable[[int], bool]


@dataclass(frozen=True, slots=True)
class IndexResult:
    """Per-query labels and raw distances, best first; rows padded with label -1 / distance inf."""

    labels: np.ndarray  # int64 (nq, k)
    distances: np.ndarray  # float32 (nq, k)


@dataclass(frozen=True, slots=True)
class IndexStats:
    """What an index holds: its parts and their sizes (for ``Collection.stats``)."""

    segments: int
    capacity: int
    tombstones: int
    buffered: int
    memory_bytes: int


@runtime_checkable
class VectorIndex(Protocol):
    """What the collection needs from a vector index.

    The collection asks an index what it can do through these capability flags and never tests its
    class (policies as data): ``approximate`` indexes take a beam width (``ef``) per search, are
    calibrated and planned; ``snapshots`` indexes are saved to disk (``savers``) instead of rebuilt from
    the store on open.
    """

    kind: str
    dim: int
    space: str
    approximate: bool  # searches take ef; recall < 1 is possible, so the planner and calibration apply
    snapshots: bool  # savers() writes it to disk (else it is rebuilt from the store on open)

    @property
    def segments(self) -> int:
        """Independently searched parts (a plan's parallelism)."""
        ...

    @property
    def bounds(self) -> list[int]:
        """First label of each segment, saved with a snapshot."""
        ...

    def set_ef_search(self, ef: int) -> None:
        """Change the default beam width of later searches (no-op for exact indexes)."""
        ...

    def stats(self) -> IndexStats:
        """Sizes of the index's parts."""
        ...

    def savers(self) -> list[tuple[int, Callable[[Path], None]]]:
        """(live vectors, save function) per segment, for a snapshot (empty: nothing to save)."""
        ...

    def join(self) -> None:
        """Wait for background work (a write-buffer flush) to finish."""
        ...

    def __len__(self) -> int:
        """Live (not deleted) vectors."""
        ...

    def add(self, labels: np.ndarray, vectors: np.ndarray, new: np.ndarray | None = None) -> None:
        """Insert vectors (or replace those whose label exists). ``new`` marks labels known to be absent."""
        ...

    def remove(self, labels: np.ndarray) -> int | None:
        """Delete labels (absent labels are ignored); an index may return how many were live."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        allowed: LabelFilter | None = None,
        num_threads: int = 1,
    ) -> IndexResult:
        """k nearest live vectors per query row (fewer when fewer exist), optionally restricted."""
        ...

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        """The stored (index-space) vectors of live labels, in order."""
        ...

    def live_labels(self) -> np.ndarray:
        """Every live label."""
        ...

    def memory_bytes(self) -> int:
        """Approximate bytes the index holds in memory."""
        ...


class FlatIndexMixin:
    """The capabilities of an exact (flat) index: no beam, no snapshots, no background work.

    Exact indexes are small by construction (below the HNSW threshold): rebuilding one from the store
    takes milliseconds, so they are never snapshotted.
    """

    approximate = False
    snapshots = False

    @property
    def segments(self) -> int:
        return 1

    @property
    def bounds(self) -> list[int]:
        return [0]

    def set_ef_search(self, ef: int) -> None:
        """Exact searches have no beam."""

    def savers(self) -> list[tuple[int, Callable[[Path], None]]]:
        return []

    def join(self) -> None:
        """No background work."""

    def stats(self) -> IndexStats:
        n = len(self)  # type: ignore[arg-type]
        return IndexStats(1, n, 0, 0, self.memory_bytes())  # type: ignore[attr-defined]


def exact_topk(
    vectors: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    k: int,
    space: str,
    sq_norms: np.ndarray | None = None,
) -> IndexResult:
    """Exact k nearest neighbours by one matrix product (the reference every index is tested against).

    Args:
        vectors: (n, d) float32 candidates.
        labels: (n,) int64 labels of the candidates.
        queries: (nq, d) float32.
        k: Neighbours wanted; fewer come back when n < k.
        space: ``"ip"`` or ``"l2"``.
        sq_norms: Optional precomputed squared norms of ``vectors`` (l2 only).

    Returns:
        Labels and raw distances, best first; ties broken by position for determinism.
    """
    nq = queries.shape[0]
    n = vectors.shape[0]
    kk = min(k, n)
    if kk == 0:
        return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))
    # (n x d) @ (d x nq), transposed: a matrix-vector product for one query (sgemv), which BLAS runs
    # several times faster than the (1 x d) @ (d x n) sgemm spelling of the same numbers
    dots = (vectors @ queries.T).T  # (nq, n)
    if space == "ip":
        dist = 1.0 - dots
    else:
        norms = sq_norms if sq_norms is not None else np.einsum("ij,ij->i", vectors, vectors)
        qn = np.einsum("ij,ij->i", queries, queries)
        dist = np.maximum(norms[None, :] - 2.0 * dots + qn[:, None], 0.0)
    dist = dist.astype(np.float32, copy=False)
    if kk < n:
        part = np.argpartition(dist, kk - 1, axis=1)[:, :kk]
        pd = np.take_along_axis(dist, part, axis=1)
        order = np.lexsort((part, pd), axis=1) if nq > 0 else part
        idx = np.take_along_axis(part, order, axis=1)
    else:
        idx = np.argsort(dist, axis=1, kind="stable")
    return IndexResult(labels[idx], np.take_along_axis(dist, idx, axis=1))


def merge_topk(results: Sequence[IndexResult], k: int) -> IndexResult:
    """Exact top-k merge of per-segment answers (rows padded with -1 / inf)."""
    labels = np.concatenate([r.labels for r in results], axis=1)
    dists = np.concatenate([r.distances for r in results], axis=1).astype(np.float32, copy=True)
    dists[labels < 0] = np.inf
    kk = min(k, labels.shape[1])
    order = np.argsort(dists, axis=1, kind="stable")[:, :kk]
    out_l = np.take_along_axis(labels, order, axis=1)
    out_d = np.take_along_axis(dists, order, axis=1)
    if out_l.size and (out_l[:, -1] < 0).all():
        # trim columns that are padding in every row
        valid = int((out_l >= 0).sum(axis=1).max())
        out_l, out_d = out_l[:, :valid], out_d[:, :valid]
    return IndexResult(out_l, out_d)


def exact_topk_over(
    load: Callable[[np.ndarray], np.ndarray],
    labels: np.ndarray,
    queries: np.ndarray,
    k: int,
    space: str,
    chunk: int = 50_000,
) -> IndexResult:
    """Exact top-k over many labels, ``chunk`` at a time: :func:`exact_topk` per chunk, :func:`merge_topk`.

    The one exact kernel of the engine: the exact index, filtered scans, the write buffer and calibration
    all rank through :func:`exact_topk`; this streams it over vectors too many to hold at once.

    Args:
        load: Vectors of a chunk of labels, in order (index space).
        labels: Every candidate label.
        queries: (nq, d) float32.
        k: Neighbours wanted.
        space: ``"ip"`` or ``"l2"``.
        chunk: Labels loaded and scored per step.
    """
    best: IndexResult | None = None
    for s in range(0, len(labels), chunk):
        part = labels[s : s + chunk]
        res = exact_topk(load(part), part, queries, k, space)
        best = res if best is None else merge_topk([best, res], k)
    if best is None:
        return IndexResult(np.full((len(queries), 0), -1, np.int64), np.zeros((len(queries), 0), np.float32))
    return best
