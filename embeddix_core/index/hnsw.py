"""HNSW index on hnswlib, made safe for per-query ef and concurrent use.

Per-query ef without the index-wide ``set_ef``: hnswlib searches its base layer with a beam of
``max(ef, k)`` and returns the best k of it. With the index's ef held at 1 (``_FLOOR_EF``), asking for
k = the wanted beam searches exactly the beam a ``set_ef(beam)`` search would and returns it whole,
best first; its first k are that search's answer (checked equal for ef 10-300). So unfiltered searches
of every beam width run together: a background calibration sweeping its ef ladder no longer makes a
foreground search wait for the rung call in progress, nor two callers with different ``recall=`` wait
for each other.

hnswlib raises when it cannot fill the k asked for (tombstones leaving fewer than the beam reachable);
that search is retried the old way, as filtered searches run from the start: ``set_ef`` under the
:class:`_Gate`, which lets any number of searches run together while they agree on ef (hnswlib releases
the GIL, so they really run in parallel; the beam-as-k searches are the ef group ``_FLOOR_EF``); a
search wanting another ef waits until the running ones finish, and mutations (add, delete, resize,
save) run alone. Writers never wait behind an endless stream of readers: once a writer queues, new
readers wait.

Deletes are tombstones (``mark_deleted``); the index is built with ``allow_replace_deleted`` so new
vectors take over deleted slots, which reclaims their memory without a rebuild.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import hnswlib
import numpy as np

from .base import IndexResult, LabelFilter, exact_topk

__all__ = ["HnswIndex"]

# Capacity growth factor. hnswlib keeps a mutex, a link-list pointer and a level per slot of capacity
# (~52 bytes, written at the resize), so a doubled capacity costs up to 52 bytes for each vector held;
# growing by half leaves at most a third of the slots spare. A resize moves nothing big (glibc remaps
# the vectors' block in place), so the extra resizes cost little.
_GROWTH = 1.5

# The index-wide ef of beam-as-k searches (see the module docstring): below any beam, so k sets it.
_FLOOR_EF = 1


class _Gate:
    """Shared/exclusive gate where shared holders must agree on one ef value.

    Turns: once a search waits for another ef, later searches of the current ef queue behind it instead
    of joining the running group, so a steady stream at one ef (a background calibration's rung, timed
    query by query) cannot keep a search at another ef out: it waits for the searches already inside,
    not for the stream. Measured before this: a default search waited 889 ms behind a calibration rung.
    """

    __slots__ = (
        "_active",
        "_admitted",
        "_blocked",
        "_cond",
        "_ef",
        "_lock",
        "_polite",
        "_waiting",
        "_writer",
        "_writers_waiting",
    )

    def __init__(self) -> None:
        # the bare lock for entering (C-level ``with``, ~3x cheaper than the Condition's own
        # __enter__); the Condition over the same lock for waiting
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._ef = -1
        self._writer = False
        self._writers_waiting = 0
        self._waiting = 0  # readers blocked right now
        self._admitted = 0  # readers admitted after blocking, ever (a polite writer's ticket)
        self._polite = 0  # polite writers waiting for those readers
        self._blocked = 0  # readers waiting for another ef than the running group's (see Turns)

    def enter_read(self, ef: int, index: hnswlib.Index) -> None:
        with self._lock:
            if self._writer or self._writers_waiting or self._blocked or (self._active and self._ef != ef):
                self._waiting += 1
                counted = 0  # 1 while this reader is counted in _blocked
                while True:
                    if self._writer or self._writers_waiting:
                        self._cond.wait()
                    elif not self._active:
                        # the gate is free: a reader that waited for another ef goes first (a thread
                        # that merely arrives, holding the GIL, would otherwise win every time)
                        if counted or not self._blocked:
                            break
                        self._cond.wait()
                    elif self._ef != ef:  # another ef runs: wait, and make its latecomers queue
                        if not counted:
                            counted = 1
                            self._blocked += 1
                        self._cond.wait()
                    elif self._blocked - counted:  # my ef runs, but another ef waits: after it
                        self._cond.wait()
                    else:
                        break
                self._blocked -= counted
                self._admitted_one()
            if self._active == 0 and self._ef != ef:
                index.set_ef(ef)
                self._ef = ef
            self._active += 1

    def enter_shared(self) -> None:
        """Enter alongside searches of any ef, for reads that do not use ef (vector lookups)."""
        with self._lock:
            if self._writer or self._writers_waiting:
                self._waiting += 1
                while self._writer or self._writers_waiting:
                    self._cond.wait()
                self._admitted_one()
            self._active += 1

    def _admitted_one(self) -> None:  # under the lock
        self._waiting -= 1
        self._admitted += 1
        if self._polite:
            self._cond.notify_all()

    def exit_read(self) -> None:
        with self._lock:
            self._active -= 1
            # every thread that waits is counted first, so with none counted there is nobody to wake
            # (Condition.notify_all costs ~1 us even then, on every search)
            if self._active == 0 and (self._waiting or self._writers_waiting):
                self._cond.notify_all()

    def enter_write(self, polite: bool = False) -> None:
        """Enter alone. A polite writer (one slice of a long background insert) first lets the
        readers that are already waiting in, so searches wait for one slice at most, not for all."""
        with self._cond:
            if polite and self._waiting:
                target = self._admitted + self._waiting
                self._polite += 1
                while self._waiting and self._admitted < target:
                    self._cond.wait()
                self._polite -= 1
            self._writers_waiting += 1
            while self._writer or self._active:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True

    def exit_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


class HnswIndex:
    """hnswlib HNSW index keyed by store labels.

    Args:
        dim: Vector dimension (fixed).
        space: ``"ip"`` or ``"l2"`` (fixed).
        m: Graph degree (fixed after build).
        ef_construction: Build beam width (fixed after build).
        ef_search: Default query beam width.
        capacity: Initial capacity; grows by half again (see ``_GROWTH``).
    """

    kind = "hnsw"
    snapshots = True

    def __init__(
        self,
        dim: int,
        space: str,
        *,
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 96,
        capacity: int = 16_384,
        _load: Path | None = None,
        _live: int | None = None,
    ) -> None:
        self.dim = dim
        self.space = space
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self._index = hnswlib.Index(space=space, dim=dim)
        if _load is not None:
            self._index.load_index(str(_load), allow_replace_deleted=True)
        else:
            self._index.init_index(
                max_elements=max(capacity, 1024),
                M=m,
                ef_construction=ef_construction,
                allow_replace_deleted=True,
            )
        self._index.set_num_threads(1)
        self._gate = _Gate()
        if _load is None:
            self._live = 0
        elif _live is not None:
            self._live = _live
        else:
            self._live = len(self.live_labels(_trust_count=False))

    @classmethod
    def load(
        cls,
        path: Path,
        dim: int,
        space: str,
        *,
        m: int,
        ef_construction: int,
        ef_search: int,
        live: int | None = None,
    ) -> HnswIndex:
        """Load a saved index file (written by :meth:`save`); ``live`` is the live count saved with it."""
        return cls(
            dim, space, m=m, ef_construction=ef_construction, ef_search=ef_search, _load=path, _live=live
        )

    def __len__(self) -> int:
        return self._live

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    def add(
        self,
        labels: np.ndarray,
        vectors: np.ndarray,
        new: np.ndarray | None = None,
        num_threads: int = -1,
        *,
        polite: bool = False,
    ) -> None:
        labels = np.asarray(labels, np.int64)
        if new is None:
            known = set(self._ids())
            new = np.fromiter((int(lb) not in known for lb in labels), bool, len(labels))
        n_new = int(new.sum())
        self._gate.enter_write(polite)
        try:
            deleted_slots = self._index.get_current_count() - self._live
            need = self._index.get_current_count() + max(0, n_new - deleted_slots)
            if need > self._index.get_max_elements():
                self._index.resize_index(max(need, int(self._index.get_max_elements() * _GROWTH)))
            # -1 would mean hnswlib's index default, which __init__ set to 1 for searches: name the cores
            threads = (num_threads if num_threads > 0 else (os.cpu_count() or 1)) if len(labels) > 8 else 1
            if n_new:
                # Fresh labels may take over tombstoned slots (reclaiming their memory) ...
                self._index.add_items(vectors[new], labels[new], num_threads=threads, replace_deleted=True)
            if n_new < len(labels):
                # ... but a label that exists must be updated in place: replace_deleted would give it a
                # second slot.
                old = ~new
                self._index.add_items(vectors[old], labels[old], num_threads=threads, replace_deleted=False)
            self._live += n_new
        finally:
            self._gate.exit_write()

    def remove(self, labels: np.ndarray) -> int:
        """Tombstone the labels; returns how many were live (absent ones are ignored)."""
        removed = 0
        self._gate.enter_write()
        try:
            for lb in np.asarray(labels, np.int64).tolist():
                try:
                    self._index.mark_deleted(lb)
                    removed += 1
                except RuntimeError:
                    pass  # absent or already deleted: deleting is idempotent
            self._live -= removed
        finally:
            self._gate.exit_write()
        return removed

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        allowed: LabelFilter | None = None,
        num_threads: int = 1,
    ) -> IndexResult:
        nq = queries.shape[0]
        kk = min(k, self._live)
        if kk <= 0:
            return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))
        ef_eff = max(ef or self.ef_search, kk)
        if allowed is None:
            # beam-as-k (module docstring). Not with a filter: a beam that finds fewer allowed records
            # than its width explores the whole graph before hnswlib gives up, where set_ef stops at k
            beam = min(ef_eff, self._live)
            self._gate.enter_read(_FLOOR_EF, self._index)
            try:
                labels, dists = self._index.knn_query(queries, k=beam, num_threads=num_threads)
                if beam > kk:
                    labels, dists = labels[:, :kk], np.ascontiguousarray(dists[:, :kk])
                return IndexResult(labels.astype(np.int64), dists)
            except RuntimeError:
                pass  # fewer than the beam reachable (tombstones): the set_ef search below
            finally:
                self._gate.exit_read()
        for attempt in range(3):
            self._gate.enter_read(ef_eff, self._index)
            try:
                labels, dists = self._index.knn_query(queries, k=kk, num_threads=num_threads, filter=allowed)
                return IndexResult(labels.astype(np.int64, copy=False), dists)
            except RuntimeError:
                # hnswlib raises when the beam found fewer than k live (or allowed) points, which happens
                # with many tombstones or a selective filter: widen the beam, then fall back to exact.
                ef_eff = min(ef_eff * 4, max(self._live, 1))
                if attempt == 2:
                    break
            finally:
                self._gate.exit_read()
        return self._exact(queries, kk, allowed)

    def search_one(self, q: np.ndarray, k: int, ef: int | None) -> tuple[list[int], list[float]] | None:
        """:meth:`search` of one unfiltered query, as (labels, distances) lists; None when hnswlib
        raised (fewer than the beam reachable: :meth:`search` then widens or scans).

        Why: a single default search is what users run most, and on it the arrays, their slicing and
        the :class:`IndexResult` that :meth:`search` builds cost more than a tenth of hnswlib's own
        time, cold (py-spy, 100K x 384); its caller wants lists anyway.
        """
        live = self._live
        kk = k if k < live else live
        if kk <= 0:
            return [], []
        beam = max(ef or self.ef_search, kk)
        if beam > live:
            beam = live
        gate = self._gate
        gate.enter_read(_FLOOR_EF, self._index)
        try:
            labels, dists = self._index.knn_query(q, k=beam, num_threads=1)
        except RuntimeError:
            return None
        finally:
            gate.exit_read()
        if beam > kk:
            return labels[0, :kk].tolist(), dists[0, :kk].tolist()
        return labels[0].tolist(), dists[0].tolist()

    def _exact(self, queries: np.ndarray, k: int, allowed: LabelFilter | None) -> IndexResult:
        labels = self.live_labels()
        if allowed is not None:
            labels = labels[np.fromiter((allowed(int(x)) for x in labels), bool, len(labels))]
        vecs = self.get_vectors(labels)
        res = exact_topk(vecs, labels, queries, k, self.space)
        if res.labels.shape[1] < k:  # fewer allowed than k: pad so the shape is what callers expect
            pad = k - res.labels.shape[1]
            return IndexResult(
                np.pad(res.labels, ((0, 0), (0, pad)), constant_values=-1),
                np.pad(res.distances, ((0, 0), (0, pad)), constant_values=np.inf),
            )
        return res

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        if len(labels) == 0:
            return np.empty((0, self.dim), np.float32)
        # in the gate: a resize (under the writer's side) moves the memory get_items reads
        self._gate.enter_shared()
        try:
            out = self._index.get_items(np.asarray(labels, np.int64), return_type="numpy")
        finally:
            self._gate.exit_read()
        return np.ascontiguousarray(out, dtype=np.float32)

    def _ids(self) -> list[int]:
        # hnswlib's get_ids_list walks its label map without the map's lock: it must not run while
        # add_items (from a background flush) may insert, so it takes the gate like a mutation.
        self._gate.enter_write()
        try:
            return list(self._index.get_ids_list())
        finally:
            self._gate.exit_write()

    def live_labels(self, _trust_count: bool = True) -> np.ndarray:
        labels = np.asarray(self._ids(), np.int64)
        if _trust_count and len(labels) == self._live:
            return labels
        # Rare path (compaction, exact fallback): hnswlib lists tombstoned labels too and only tells
        # them apart by refusing to return their vector.
        keep = []
        self._gate.enter_shared()
        try:
            for lb in labels.tolist():
                try:
                    self._index.get_items([lb])
                    keep.append(lb)
                except RuntimeError:
                    pass
        finally:
            self._gate.exit_read()
        return np.asarray(keep, np.int64)

    def memory_bytes(self) -> int:
        return int(self._index.index_file_size())

    def memory_parts(self) -> dict[str, int]:
        """Resident bytes by part: float32 vectors, labels, and the graph (links and levels: the rest)."""
        total = self.memory_bytes()
        n = int(self._index.element_count)
        vectors, labels = n * self.dim * 4, n * 8
        return {"vectors": vectors, "labels": labels, "graph": max(total - vectors - labels, 0)}

    def save(self, path: Path) -> None:
        self._gate.enter_write()
        try:
            self._index.save_index(str(path))
        finally:
            self._gate.exit_write()
