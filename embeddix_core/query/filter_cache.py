"""The labels matching recent filters, kept current under writes (the filtered search's allow-list).

Why: a filtered search needs the set of labels its filter admits, both as a hook for HNSW
(``allowed=labels.__contains__``) and as a sorted array to scan exactly when few match. Reading it from
SQLite costs a scan of the collection's metadata; the last 32 filters are kept and updated by every
write instead (a write of more than 512 records drops them: re-evaluating every cached filter on each
new record would cost more than reading them again).

Subset matrices: an exact scan of the matches is only cheap when their vectors sit in one contiguous
matrix (10,000 x 384 in ~0.5 ms on one core; 2,500 gathered label by label through an LRU took 1.6-8
ms). An entry builds one on demand (:meth:`FilterCache.matrix`: one batch read from the store, ~0.1-0.3
s for 10,000 rows) and keeps it within a byte budget shared by the cache's entries, least recently used
dropped first; a matrix larger than the whole budget is never built. Writes do not rebuild it: a
written label that is, or was, a match is marked *stale* in a new :class:`FilterMatrix` (its row may
hold an old vector, or a record no longer matching); scans skip stale rows and read those labels'
current vectors instead. Past ``STALE_MAX`` stale labels the matrix is dropped, and the next search
that wants it rebuilds it.

Concurrency: writers change an entry's set under the cache's lock; searches read it without the lock
(``set.__contains__`` is atomic under the GIL), so a search racing a write sees each record before or
after its change, and filtered hits are re-checked against their row anyway. An entry read from the
store while a write moved is used for that one search and not cached (the write updated the cached
entries, not this one); the epoch tells. A :class:`FilterMatrix` is immutable (labels, rows and stale
set published together as one object): a search reads the entry's current one once and never sees rows
that do not belong to its labels. A build reads the label array under the lock and the vectors outside
it; labels written meanwhile are collected (``_pending``) and published as stale with the matrix, so a
vector read before or after its write is never trusted. One build per entry at a time (its build lock);
writers never take that lock.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .field_types import FieldTypes
from .filter_matrix import FilterMatrix, matrix_size
from .filters import Filter
from .subset_graph import GRAPH_MIN, SubsetGraph, build_in_background

__all__ = ["STALE_MAX", "FilterCache", "FilterEntry"]

_SIZE = 32
_MAINTAIN_MAX = 512
# Stale labels a matrix absorbs before it is dropped: each costs a vector read (~1-2 us through the
# vector cache) on every scan, while a rebuild reads every row again (~8 us a row from SQLite).
STALE_MAX = 64


class FilterEntry:
    """The labels matching one filter; :meth:`array` hands out sorted arrays never changed afterwards.

    Besides the label set it carries what searches of this filter learned and built: its subset
    matrix (see the module docstring), the strategy last chosen and the measured cost of its hooked
    index searches (read and written by the executor without a lock: estimates, not state).
    """

    __slots__ = (
        "_array",
        "_build_lock",
        "_lock",
        "_pending",
        "choice",
        "filter",
        "hook_cost",
        "labels",
        "matrix",
    )

    def __init__(self, flt: Filter, labels: Sequence[int], lock: threading.Lock | None = None) -> None:
        self.filter = flt
        self.labels: set[int] = set(labels)
        self._array: np.ndarray | None = None
        self._lock = lock or threading.Lock()
        self._build_lock = threading.Lock()
        self._pending: set[int] | None = None  # labels written while a matrix build reads the store
        self.matrix: FilterMatrix | None = None
        self.choice: str | None = None  # the filter strategy last chosen for it
        self.hook_cost: float | None = None  # seconds per query per unit of ef, hooked index searches

    def array(self) -> np.ndarray:
        """The matching labels, sorted; a fresh array whenever the set changed."""
        arr = self._array
        if arr is None:
            with self._lock:  # writers hold it while they change the set: build from a still set
                arr = self._array
                if arr is None:
                    arr = np.sort(np.fromiter(self.labels, np.int64, len(self.labels)))
                    self._array = arr
        return arr

    def update(self, label: int, metadata: dict[str, Any] | None) -> bool:
        """Admit or drop one written record (None: deleted); the caller holds the lock.

        Returns:
            Whether the record is or was a match: its matrix row, if any, is stale (the caller marks it).
        """
        was = label in self.labels
        if metadata is not None and self.filter.matches(metadata):
            if not was:
                self.labels.add(label)
                self._array = None
            return True
        if was:
            self.labels.discard(label)
            self._array = None
        return was


class FilterCache:
    """The entries of the most recently used filters, and their subset matrices.

    Args:
        load: Reads the labels matching a SQL condition from the store: ``load(where, params)``.
        vectors: Reads index-space vectors of labels from the store, in order (``(n, dim)`` float32; a
            row of NaN for a label gone). None: no subset matrices.
        dim: The vector dimension (sizes a matrix before it is read).
        matrix_bytes: Memory budget of all subset matrices together.
        kinds: Reads the JSON types a metadata field holds (``kinds(field)``), for :attr:`types`; None:
            filters are not checked against stored kinds.
        space: The index's space (``"ip"`` or ``"l2"``): a matrix of at least ``GRAPH_MIN`` rows then
            gets an HNSW graph of its rows, built in the background (``subset_graph.py``). None: none.
    """

    def __init__(
        self,
        load: Callable[[str, Sequence[Any]], list[int]],
        vectors: Callable[[np.ndarray], np.ndarray] | None = None,
        *,
        dim: int = 0,
        matrix_bytes: int = 0,
        kinds: Callable[[str], set[str]] | None = None,
        space: str | None = None,
    ) -> None:
        self._space = space
        self.graph_thread: threading.Thread | None = None  # the latest graph build (tests wait on it)
        # the kinds each field holds, kept current by the same writes (see field_types.py)
        self.types = FieldTypes(kinds) if kinds is not None else None
        self._load = load
        self._vectors = vectors
        self._dim = dim
        self._budget = matrix_bytes if vectors is not None and dim > 0 else 0
        self._entries: OrderedDict[str, FilterEntry] = OrderedDict()
        self._matrices: OrderedDict[str, int] = OrderedDict()  # key -> bytes, least recently used first
        self._matrix_total = 0
        self._lock = threading.Lock()
        self._epoch = 0

    def entry(self, flt: Filter) -> FilterEntry:
        """The entry of ``flt``, read from the store on a miss."""
        key = flt.canonical
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                if key in self._matrices:
                    self._matrices.move_to_end(key)
                return entry
            epoch = self._epoch
        where, params = flt.to_sql("metadata")
        entry = FilterEntry(flt, self._load(where, params), self._lock)
        with self._lock:
            if self._epoch == epoch:  # no write landed while we read: keep it (see the module docstring)
                self._entries[key] = entry
                while len(self._entries) > _SIZE:
                    old_key, old = self._entries.popitem(last=False)
                    self._drop_matrix(old_key, old)
        return entry

    # -- subset matrices -----------------------------------------------------------------------------
    @property
    def matrix_bytes(self) -> int:
        """Memory held by subset matrices now."""
        return self._matrix_total

    def can_hold(self, entry: FilterEntry) -> bool:
        """Whether ``entry`` has, or may build, a subset matrix: it is cached and its size fits the budget."""
        if entry.matrix is not None:
            return True
        return (
            matrix_size(len(entry.labels), self._dim) <= self._budget
            and self._entries.get(entry.filter.canonical) is entry
        )

    def matrix(self, entry: FilterEntry) -> FilterMatrix | None:
        """The subset matrix of ``entry``, built now (one store read) if it has none and may hold one.

        Returns None when it may not (see :meth:`can_hold`), or when writes made the new one stale past
        ``STALE_MAX`` while it was read. A search that finds another one building waits for it.
        """
        m = entry.matrix
        if m is not None or not self.can_hold(entry):
            return m
        with entry._build_lock:
            m = entry.matrix
            return m if m is not None else self._build(entry)

    def _build(self, entry: FilterEntry) -> FilterMatrix | None:
        if self._vectors is None:
            return None
        key = entry.filter.canonical
        with self._lock:
            if self._entries.get(key) is not entry:
                return None  # evicted, or never cached: no write would keep its matrix true
            labels = np.sort(np.fromiter(entry.labels, np.int64, len(entry.labels)))
            entry._pending = set()
        try:
            vecs = np.ascontiguousarray(self._vectors(labels), np.float32)
        except BaseException:
            with self._lock:
                entry._pending = None
            raise
        gone = labels[~np.isfinite(vecs[:, 0])].tolist() if len(labels) else []  # deleted meanwhile: NaN rows
        m = FilterMatrix.build(labels, vecs)
        with self._lock:
            pending, entry._pending = entry._pending, None
            stale = pending.union(gone)
            if len(stale) > STALE_MAX or self._entries.get(key) is not entry:
                return None
            if stale:
                m = m.with_stale(sorted(stale))
            need = m.nbytes
            while self._matrices and self._matrix_total + need > self._budget:
                old_key = next(iter(self._matrices))
                self._drop_matrix(old_key, self._entries.get(old_key))
            if self._matrix_total + need > self._budget:
                return None
            entry.matrix = m
            self._matrices[key] = need
            self._matrix_total += need
        if self._space is not None and len(labels) >= GRAPH_MIN:
            if len(gone):
                vecs = vecs.copy()  # the matrix may hold vecs itself; its NaN rows are stale anyway
                vecs[~np.isfinite(vecs[:, 0])] = 0.0
            self.graph_thread = build_in_background(
                vecs, self._space, lambda graph: self._publish_graph(key, entry, m, graph)
            )
        return m

    def _publish_graph(self, key: str, entry: FilterEntry, built: FilterMatrix, graph: SubsetGraph) -> None:
        """Attach a finished graph to the matrix it was built from, if that is still the entry's (its
        stale set, grown meanwhile, carries over) and the budget holds it; else it is dropped."""
        with self._lock:
            cur = entry.matrix
            if cur is None or cur.labels is not built.labels or self._entries.get(key) is not entry:
                return
            if self._matrix_total + graph.nbytes > self._budget:
                return
            entry.matrix = dataclasses.replace(cur, graph=graph)
            self._matrices[key] = self._matrices.get(key, 0) + graph.nbytes
            self._matrix_total += graph.nbytes

    def _drop_matrix(self, key: str, entry: FilterEntry | None) -> None:
        """Forget a matrix and its bytes (under the lock)."""
        self._matrix_total -= self._matrices.pop(key, 0)
        if entry is not None:
            entry.matrix = None

    # -- writes ----------------------------------------------------------------------------------------
    def update(self, labels: Sequence[int], metas: Sequence[dict[str, Any]] | None) -> None:
        """Apply a committed write: new metadata per label, or None for deleted labels."""
        if self.types is not None and metas is not None:
            self.types.note(metas)
        with self._lock:
            self._epoch += 1
            if not self._entries:
                return
            # a write brings metadata, not documents: the sets of document filters cannot be kept
            # current, so they go (the next search reads them again; see query/doc_filter.py)
            for key in [k for k, e in self._entries.items() if e.filter.reads_documents]:
                self._drop_matrix(key, self._entries.pop(key))
            if len(labels) > _MAINTAIN_MAX:
                self._clear()
                return
            for key, entry in self._entries.items():
                touched = [
                    label
                    for i, label in enumerate(labels)
                    if entry.update(label, None if metas is None else metas[i])
                ]
                if not touched:
                    continue
                if entry._pending is not None:
                    entry._pending.update(touched)
                m = entry.matrix
                if m is not None:
                    if len(m.stale) + len(touched) > STALE_MAX:
                        self._drop_matrix(key, entry)
                    else:
                        entry.matrix = m.with_stale(touched)

    def clear(self) -> None:
        """Forget every entry (a replay or a bulk change)."""
        if self.types is not None:
            self.types.clear()
        with self._lock:
            self._epoch += 1
            self._clear()

    def _clear(self) -> None:
        for entry in self._entries.values():
            entry.matrix = None
        self._entries.clear()
        self._matrices.clear()
        self._matrix_total = 0
