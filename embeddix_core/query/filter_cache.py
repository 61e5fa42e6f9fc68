"""The labels matching recent filters, kept current under writes (the filtered search's allow-list).

Why: a filtered search needs the set of labels its filter admits, both as a hook for HNSW
(``allowed=labels.__contains__``) and as a sorted array to scan exactly when few match. Reading it from
SQLite costs a scan of the collection's metadata; the last 32 filters are kept and updated by every
write instead (a write of more than 512 records drops them: re-evaluating every cached filter on each
new record would cost more than reading them again).

Concurrency: writers change an entry's set under the cache's lock; searches read it without the lock
(``set.__contains__`` is atomic under the GIL), so a search racing a write sees each record before or
after its change, and filtered hits are re-checked against their row anyway. An entry read from the
store while a write moved is used for that one search and not cached (the write updated the cached
entries, not this one); the epoch tells.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .filters import Filter

__all__ = ["FilterCache", "FilterEntry"]

_SIZE = 32
_MAINTAIN_MAX = 512


class FilterEntry:
    """The labels matching one filter; :meth:`array` hands out sorted arrays never changed afterwards."""

    __slots__ = ("_array", "_lock", "filter", "labels")

    def __init__(self, flt: Filter, labels: Sequence[int], lock: threading.Lock | None = None) -> None:
        self.filter = flt
        self.labels: set[int] = set(labels)
        self._array: np.ndarray | None = None
        self._lock = lock or threading.Lock()

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

    def update(self, label: int, metadata: dict[str, Any] | None) -> None:
        """Admit or drop one written record (None: deleted); the caller holds the lock."""
        if metadata is not None and self.filter.matches(metadata):
            if label not in self.labels:
                self.labels.add(label)
                self._array = None
        elif label in self.labels:
            self.labels.discard(label)
            self._array = None


class FilterCache:
    """The entries of the most recently used filters.

    Args:
        load: Reads the labels matching a SQL condition from the store: ``load(where, params)``.
    """

    def __init__(self, load: Callable[[str, Sequence[Any]], list[int]]) -> None:
        self._load = load
        self._entries: OrderedDict[str, FilterEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0

    def entry(self, flt: Filter) -> FilterEntry:
        """The entry of ``flt``, read from the store on a miss."""
        key = flt.canonical
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            epoch = self._epoch
        where, params = flt.to_sql("metadata")
        entry = FilterEntry(flt, self._load(where, params), self._lock)
        with self._lock:
            if self._epoch == epoch:  # no write landed while we read: keep it (see the module docstring)
                self._entries[key] = entry
                while len(self._entries) > _SIZE:
                    self._entries.popitem(last=False)
        return entry

    def update(self, labels: Sequence[int], metas: Sequence[dict[str, Any]] | None) -> None:
        """Apply a committed write: new metadata per label, or None for deleted labels."""
        with self._lock:
            self._epoch += 1
            if not self._entries:
                return
            if len(labels) > _MAINTAIN_MAX:
                self._entries.clear()
                return
            for entry in self._entries.values():
                for i, label in enumerate(labels):
                    entry.update(label, None if metas is None else metas[i])

    def clear(self) -> None:
        """Forget every entry (a replay or a bulk change)."""
        with self._lock:
            self._epoch += 1
            self._entries.clear()
