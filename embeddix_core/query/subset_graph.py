"""An HNSW graph over one filter's matches: a filtered search at the cost of an unfiltered one.

Why: a filtered search had two ways to run, both slow where a filter matches about a tenth of a large
collection. An exact scan of the matches' subset matrix (``filter_matrix.py``) reads every match: 10,000
x 384 takes ~0.4-0.5 ms on one core, and ~0.8 ms end to end on new queries (100K MiniLM, 10% matching).
The main graph with a filter hook pays a Python call per visited node and walks through the nine
tenths that do not match (~1.1 ms at ef 16). A graph of the matches alone answers like an unfiltered
search of a collection a tenth the size.

When: a filter whose subset matrix holds at least ``GRAPH_MIN`` rows gets a graph, built on a background
thread at the lowest CPU priority from the matrix's vectors (hnswlib, one thread; measured 1.1 s for
10,000 x 384),
and published into the matrix (``FilterMatrix.graph``); until then, and for smaller filters, the scan and
the hook serve as before. The graph is immutable: it shares the matrix's rows (row ``i`` is label
``labels[i]``) and its *stale* set, so a written label that is or was a match is never answered from
the graph; the executor scores those labels' current vectors exactly and merges them, as it does for a
scan. The graph's memory counts in the filter cache's budget with its matrix.

Recall: approximate, like the main index. The beam is the plan's ef (calibrated on the whole collection,
whose graph is larger and harder), so the subset's recall at that ef is at least the plan's expectation
in practice; the default-path benchmark measures it against the exact answer of the filtered subset.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import hnswlib
import numpy as np

from ..index.base import IndexResult

__all__ = ["GRAPH_MIN", "SubsetGraph", "build_in_background"]

GRAPH_MIN = 4096  # rows below this scan in ~0.2 ms: a graph would not pay for its build and memory
_M = 16
_EF_CONSTRUCTION = 100  # 10,000 MiniLM rows: recall@10 0.99 at ef 40 (a subset is an easy graph)
_SEARCH_EF = 10  # set once: searches pass their beam as k (knn_query(k=beam)), so no set_ef races


@dataclass(frozen=True, slots=True, eq=False)
class SubsetGraph:
    """An immutable HNSW graph of a subset matrix's rows (hnswlib labels are row positions).

    Attributes:
        index: The hnswlib index (never written after :meth:`build`).
        rows: Its row count.
        nbytes: Memory it holds (its vectors and links), for the filter cache's budget.
    """

    index: hnswlib.Index
    rows: int
    nbytes: int

    @classmethod
    def build(cls, vectors: np.ndarray, space: str) -> SubsetGraph:
        """A graph over ``vectors`` (index space; ``space`` is ``"ip"`` or ``"l2"``, the main index's)."""
        n, dim = vectors.shape
        index = hnswlib.Index(space=space, dim=dim)
        index.init_index(max_elements=max(n, 1), M=_M, ef_construction=_EF_CONSTRUCTION, random_seed=7)
        if n:
            index.add_items(vectors, np.arange(n, dtype=np.int64), num_threads=1)
        index.set_ef(_SEARCH_EF)
        # vectors, plus level-0 links (2M ids and a count) and the label, per row
        nbytes = n * (4 * dim + 4 * (2 * _M + 1) + 8)
        return cls(index, n, nbytes)

    def search(self, queries: np.ndarray, k: int, ef: int, dead: np.ndarray) -> IndexResult | None:
        """The best ``k`` rows (not ``dead``) per query, as row positions and raw distances.

        Returns None when the beam found fewer than ``k`` rows that are not dead (the caller scans).
        """
        live = self.rows - len(dead)
        kk = min(k, live)
        nq = queries.shape[0]
        if kk <= 0:
            return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))
        beam = min(max(ef, kk) + len(dead), self.rows)  # room for dead rows the beam may hold
        try:
            rows, dists = self.index.knn_query(queries, k=beam, num_threads=1)
        except RuntimeError:
            return None
        rows = rows.astype(np.int64, copy=False)
        if not len(dead):
            return IndexResult(rows[:, :kk], np.ascontiguousarray(dists[:, :kk]))
        keep = ~np.isin(rows, dead)
        out_rows = np.empty((nq, kk), np.int64)
        out_d = np.empty((nq, kk), np.float32)
        for i in range(nq):
            r, d = rows[i][keep[i]], dists[i][keep[i]]
            if len(r) < kk:
                return None
            out_rows[i], out_d[i] = r[:kk], d[:kk]
        return IndexResult(out_rows, out_d)


def build_in_background(
    vectors: np.ndarray, space: str, publish: Callable[[SubsetGraph], None]
) -> threading.Thread:
    """Build a :class:`SubsetGraph` on a daemon thread at the lowest CPU priority; ``publish(graph)``
    runs on that thread when it is done (a failed build is dropped: the scan keeps serving)."""

    def run() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            graph = SubsetGraph.build(vectors, space)
        except Exception:  # pragma: no cover - hnswlib refuses only on memory exhaustion
            return
        publish(graph)

    thread = threading.Thread(target=run, name="embeddix-subset-graph", daemon=True)
    thread.start()
    return thread
