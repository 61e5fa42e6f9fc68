"""Exact ground truth and recall@k, shared by tests and benchmarks.

:func:`exact_knn` is the brute-force reference every index is compared with, so it favours being right and
deterministic over being fast: scores are accumulated in float64 by default and ties are broken by the lower
index. It still runs in bounded memory on large inputs because it walks the data in blocks and keeps only a
running top-k per query (200,000 x 768 base vectors with 1,000 queries needs a few hundred MB at most).

FAISS is deliberately not used here: its brute-force search computes in float32 and does not define an
order among ties, which would make the "truth" depend on the library version and the thread count.

:func:`recall_at_k` and :func:`recall_per_query` compare any found ids with any true ids (integer rows from
an index, string ids from a collection, lists or 2-D arrays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import DimensionMismatchError, InvalidArgumentError, InvalidVectorError
from .types import Metric

__all__ = ["KnnResult", "exact_knn", "recall_at_k", "recall_per_query"]

# Queries are scored against the data in tiles of at most this many queries x ``block_size`` rows; with
# float64 scores a 1,024 x 8,192 tile is 64 MB, which bounds the peak memory whatever the input size.
_QUERY_BLOCK = 1024


@dataclass(frozen=True, eq=False)
class KnnResult:
    """Exact nearest neighbours of a batch of queries.

    Attributes:
        indices: int64 array of shape ``(n_queries, k)``: row numbers into the data, best first.
        distances: float32 array of shape ``(n_queries, k)``, lower is better: ``1 - cos`` for cosine,
            the Euclidean distance for l2, ``1 - <q, x>`` for ip.
        metric: The metric ``distances`` is in (``"cosine"``, ``"l2"`` or ``"ip"``).
    """

    indices: np.ndarray
    distances: np.ndarray
    metric: str = "cosine"

    def __repr__(self) -> str:
        nq, k = self.indices.shape
        return f"KnnResult(n_queries={nq}, k={k}, metric={self.metric!r})"


def exact_knn(
    data: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str = "cosine",
    *,
    block_size: int = 8192,
    precision: Literal["float64", "float32"] = "float64",
) -> KnnResult:
    """Find the exact ``k`` nearest rows of ``data`` for every query, by brute force.

    The data is read ``block_size`` rows at a time, so a memory-mapped ``np.load(..., mmap_mode="r")``
    array works without being loaded whole.

    Args:
        data: The searched vectors, shape ``(n, dim)``; any real dtype (converted block by block).
        queries: The query vectors, shape ``(n_queries, dim)`` or ``(dim,)`` for one query.
        k: How many neighbours per query; if larger than ``n``, all ``n`` rows are returned.
        metric: ``"cosine"`` (both sides normalized; a zero vector has cosine 0 with everything),
            ``"l2"`` (ranked by squared Euclidean distance, reported as Euclidean distance) or ``"ip"``
            (maximum inner product). The aliases of :meth:`Metric.parse` are accepted.
        block_size: Data rows scored per step; bounds memory at about
            ``1024 * block_size * 8`` bytes for the score tile.
        precision: dtype the products are accumulated in. ``"float64"`` (default) makes near-ties come
            out the same as a float64 reference; ``"float32"`` is about twice as fast.

    Returns:
        A :class:`KnnResult` with ``min(k, n)`` columns, best first; equal distances are ordered by
        the lower row number, so the result is deterministic.

    Raises:
        InvalidArgumentError: ``k`` or ``block_size`` is not a positive integer, or the metric or
            precision is unknown.
        InvalidVectorError: An input is not 2-D (1-D for a single query) or holds NaN or infinity.
        DimensionMismatchError: ``data`` and ``queries`` have different widths.
    """
    kind = Metric.parse(metric)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer; got {k!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer) or block_size < 1:
        raise InvalidArgumentError(f"block_size must be a positive integer; got {block_size!r}")
    if precision not in ("float64", "float32"):
        raise InvalidArgumentError(f"precision must be 'float64' or 'float32'; got {precision!r}")
    dtype = np.dtype(precision)

    data = _as_matrix(data, "data")
    q = _as_matrix(queries, "queries")
    if q.shape[1] != data.shape[1]:
        raise DimensionMismatchError(
            f"queries have dimension {q.shape[1]} but data has dimension {data.shape[1]}; "
            "embed both with the same model"
        )
    q = np.asarray(q, dtype=dtype)
    _check_finite(q, "queries", 0)
    n, nq = data.shape[0], q.shape[0]
    kk = min(int(k), n)

    if kind is Metric.COSINE:
        q = q / _safe_norms(q)[:, None]
    # For l2 the ranking score is 2<q,x> - |x|^2 (higher is better); |q|^2 is constant per query and
    # only added back when converting the winners to distances.
    best_s = np.full((nq, kk), -np.inf, dtype=dtype)
    best_i = np.full((nq, kk), np.iinfo(np.int64).max, dtype=np.int64)
    if kk == 0 or nq == 0:
        return _finish(kind, q, best_s, best_i)

    for start in range(0, n, int(block_size)):
        block = np.asarray(data[start : start + int(block_size)], dtype=dtype)
        _check_finite(block, "data", start)
        _merge_block(kind, q, block, start, best_s, best_i)
    return _finish(kind, q, best_s, best_i)


def _merge_block(
    kind: Metric, q: np.ndarray, block: np.ndarray, start: int, best_s: np.ndarray, best_i: np.ndarray
) -> None:
    """Score one block of data rows (row ``start`` on) against every query; merge into ``best_*`` in place.

    ``q`` is already normalized for cosine; the block is normalized here. Queries go ``_QUERY_BLOCK`` at
    a time so the score tile stays bounded whatever the number of queries.
    """
    nq, kk = q.shape[0], best_s.shape[1]
    if kind is Metric.COSINE:
        block = block / _safe_norms(block)[:, None]
    sq_norms = np.einsum("ij,ij->i", block, block) if kind is Metric.L2 else None
    ids = np.arange(start, start + block.shape[0], dtype=np.int64)
    for qs in range(0, nq, _QUERY_BLOCK):
        scores = q[qs : qs + _QUERY_BLOCK] @ block.T
        if sq_norms is not None:
            scores *= 2.0
            scores -= sq_norms[None, :]
        top_s, top_i = _top_k(scores, ids, kk)
        best_s[qs : qs + _QUERY_BLOCK], best_i[qs : qs + _QUERY_BLOCK] = _merge(
            best_s[qs : qs + _QUERY_BLOCK], best_i[qs : qs + _QUERY_BLOCK], top_s, top_i, kk
        )


def recall_per_query(found: Any, truth: Any, k: int) -> np.ndarray:
    """Recall@k of every query: ``|found[:k] ∩ truth[:k]| / min(k, len(truth row))``.

    Rows may be lists of ints or strings, or rows of 2-D arrays. Padding entries - ``None`` and negative
    integers, which is how FAISS and filtered searches mark "no result" - are dropped from both sides
    before the first ``k`` are taken, so a query whose true row is short (fewer than ``k`` matches) is
    judged against what exists. A query with an empty true row scores 1.0: nothing could be missed.

    Args:
        found: Per query, the ids a search returned, best first.
        truth: Per query, the true ids (for instance ``exact_knn(...).indices``), best first.
        k: The cut-off; only the first ``k`` of each row count on both sides.

    Returns:
        float64 array of shape ``(n_queries,)`` with values in ``[0, 1]``.

    Raises:
        InvalidArgumentError: ``k`` is not a positive integer, an argument is not a sequence of rows,
            or ``found`` and ``truth`` have different numbers of rows.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidArgumentError(f"k must be a positive integer; got {k!r}")
    found_rows = _rows(found, "found")
    truth_rows = _rows(truth, "truth")
    if len(found_rows) != len(truth_rows):
        raise InvalidArgumentError(
            f"found has {len(found_rows)} rows but truth has {len(truth_rows)}; pass one row per query"
        )
    out = np.empty(len(truth_rows), dtype=np.float64)
    for i, (f_row, t_row) in enumerate(zip(found_rows, truth_rows, strict=True)):
        relevant = set(_clean(t_row)[:k])
        if not relevant:
            out[i] = 1.0
            continue
        hits = relevant.intersection(_clean(f_row)[:k])
        out[i] = len(hits) / len(relevant)
    return out


def recall_at_k(found: Any, truth: Any, k: int) -> float:
    """Mean recall@k over queries; see :func:`recall_per_query` for the per-query definition.

    Args:
        found: Per query, the ids a search returned, best first.
        truth: Per query, the true ids, best first.
        k: The cut-off.

    Returns:
        The mean in ``[0, 1]``; 1.0 when there are no queries.

    Raises:
        InvalidArgumentError: As :func:`recall_per_query`.
    """
    per_query = recall_per_query(found, truth, k)
    return float(per_query.mean()) if per_query.size else 1.0


def _as_matrix(x: Any, name: str) -> np.ndarray:
    """Check that ``x`` is a real 2-D matrix (a 1-D vector counts as one row) without copying it."""
    arr = np.asanyarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidVectorError(f"{name} must be a 2-D array of shape (n, dim); got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidVectorError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    return arr


def _check_finite(x: np.ndarray, name: str, offset: int) -> None:
    """Reject NaN and infinity, naming the first bad row so it can be found."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        row = offset + int(np.flatnonzero(bad)[0])
        raise InvalidVectorError(f"{name} row {row} holds NaN or infinity; every value must be finite")


def _safe_norms(x: np.ndarray) -> np.ndarray:
    """Row norms with zeros replaced by 1, so a zero vector stays zero (cosine 0) instead of NaN."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0] = 1.0
    return norms


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores``, ties resolved towards the lower id.

    ``argpartition`` picks arbitrarily among values equal to the k-th best, so rows where such a tie
    straddles the cut are redone exactly; with real-valued data that is rare and the fast path wins.
    """
    nq, width = scores.shape
    if width <= k:
        return scores, np.broadcast_to(ids, (nq, width))
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_s = np.take_along_axis(scores, part, axis=1)
    threshold = top_s.min(axis=1)
    tied_rows = np.flatnonzero((scores >= threshold[:, None]).sum(axis=1) > k)
    for r in tied_rows:
        # flatnonzero yields ascending columns and the stable sort keeps that order among equal scores.
        cand = np.flatnonzero(scores[r] >= threshold[r])
        order = np.argsort(-scores[r, cand], kind="stable")[:k]
        part[r] = cand[order]
        top_s[r] = scores[r, part[r]]
    return top_s, ids[part]


def _merge(
    s1: np.ndarray, i1: np.ndarray, s2: np.ndarray, i2: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` best of two candidate lists per row, best first, equal scores by lower id."""
    s = np.concatenate([s1, s2], axis=1)
    i = np.concatenate([i1, i2], axis=1)
    # lexsort sorts by the last key first: descending score, then ascending id.
    order = np.lexsort((i, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def _finish(kind: Metric, q: np.ndarray, best_s: np.ndarray, best_i: np.ndarray) -> KnnResult:
    """Turn the running scores into the distance convention of :class:`KnnResult`."""
    if kind is Metric.L2:
        q_sq = np.einsum("ij,ij->i", q, q)
        dist = np.sqrt(np.maximum(q_sq[:, None] - best_s, 0.0))
    else:
        dist = 1.0 - best_s
    return KnnResult(
        indices=np.ascontiguousarray(best_i, dtype=np.int64),
        distances=np.ascontiguousarray(dist, dtype=np.float32),
        metric=kind.value,
    )


def _rows(x: Any, name: str) -> Sequence[Any]:
    """View ``x`` as a sequence of rows (a 2-D array's rows, or a list of lists)."""
    if isinstance(x, np.ndarray):
        if x.ndim != 2:
            raise InvalidArgumentError(f"{name} must be 2-D (one row per query); got shape {x.shape}")
        return list(x)
    if isinstance(x, str | bytes) or not isinstance(x, Sequence):
        raise InvalidArgumentError(f"{name} must be a list of rows or a 2-D array; got {type(x).__name__}")
    return x


def _clean(row: Any) -> list[Any]:
    """Drop padding (None, negative integers) and turn numpy scalars into plain hashable Python values."""
    if isinstance(row, str | bytes) or not isinstance(row, Sequence | np.ndarray):
        raise InvalidArgumentError(f"each row must be a list or 1-D array of ids; got {type(row).__name__}")
    out: list[Any] = []
    for item in row.tolist() if isinstance(row, np.ndarray) else row:
        value = item.item() if isinstance(item, np.generic) else item
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value < 0):
            continue
        out.append(value)
    return out
