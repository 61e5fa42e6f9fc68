"""Segmented HNSW: a large collection as several HNSW graphs, searched in parallel and merged exactly.

Routing rule: segment i holds the labels from ``bounds[i]`` up to the next bound. Labels are assigned in
increasing order by the store, so new records go to the last segment; once it holds ``segment_size``
vectors, the next new label opens a segment. Updates and deletes find their segment by binary search.

Search: every segment answers its own top k; the answers are merged by distance, which is exact (the
global top k is inside the union of the per-segment top k). For a single query with two or more segments,
the segments are searched at once on a thread pool (hnswlib releases the GIL), which shortens latency on
idle cores; batches already use every core across queries, so their segments run one after another.

Write buffer: a single new vector costs ~1 ms to insert into a 100K-vector graph on one thread, while a
batch insert spreads that work over every core. So small additions of *new* labels first go to a
buffer of up to ``write_buffer`` vectors that searches scan exactly (a few microseconds for 128 x 384)
and merge with the graph's answer; a full buffer is inserted as one multi-threaded batch. Readers never
lock it: the buffer is copy-on-write (appends write a fresh row and then publish a longer view; removals
and flushes publish new arrays), and a flush inserts into the graph *before* it empties the buffer, so a
search that reads the buffer first and the graph second sees every vector at least once (duplicates are
dropped in the merge). Snapshots flush first, so a snapshot always holds everything up to its seq.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import IndexResult, LabelFilter, exact_topk
from .hnsw import HnswIndex

__all__ = ["SegmentedHnsw"]

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="embeddix-segment")
        return _POOL


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


class _Buffer:
    """An immutable view of the write buffer: rows ``[:n]`` of ``labels``/``vectors`` never change."""

    __slots__ = ("labels", "n", "vectors")

    def __init__(self, labels: np.ndarray, vectors: np.ndarray, n: int) -> None:
        self.labels = labels
        self.vectors = vectors
        self.n = n


def _dedupe(res: IndexResult, k: int) -> IndexResult:
    """Drop repeated labels from merged rows (a vector caught in the buffer and the graph at once)."""
    rows_l, rows_d = [], []
    for lab, dist in zip(res.labels, res.distances, strict=True):
        _, first = np.unique(lab, return_index=True)
        keep = np.sort(first)
        keep = keep[lab[keep] >= 0][:k]
        rows_l.append(lab[keep])
        rows_d.append(dist[keep])
    width = max(len(r) for r in rows_l)
    out_l = np.full((len(rows_l), width), -1, np.int64)
    out_d = np.full((len(rows_l), width), np.inf, np.float32)
    for i, (lab, dist) in enumerate(zip(rows_l, rows_d, strict=True)):
        out_l[i, : len(lab)] = lab
        out_d[i, : len(dist)] = dist
    return IndexResult(out_l, out_d)


class SegmentedHnsw:
    """One or more :class:`HnswIndex` segments behind the index interface.

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"``.
        m: HNSW graph degree.
        ef_construction: Build beam width.
        ef_search: Default query beam width.
        segment_size: Vectors per segment before a new one opens (0 = never).
        capacity: Initial capacity of the first segment.
        write_buffer: Most new vectors held in the exactly-searched write buffer (0 = insert at once).
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
        segment_size: int = 0,
        capacity: int = 16_384,
        write_buffer: int = 0,
        _segments: list[HnswIndex] | None = None,
        _bounds: list[int] | None = None,
    ) -> None:
        self.dim = dim
        self.space = space
        self.m = m
        self.ef_construction = ef_construction
        self._ef_search = ef_search
        self.segment_size = segment_size
        if _segments:
            self._segs = _segments
            self._bounds = list(_bounds or [0])
        else:
            cap = capacity if not segment_size else min(capacity, segment_size)
            self._segs = [self._new(cap)]
            self._bounds = [0]
        self.write_buffer = max(int(write_buffer), 0)
        self._buf = self._empty_buffer()
        self._flushes = 0  # bumped after every flush, so a search can tell that it raced one

    def _empty_buffer(self) -> _Buffer:
        size = max(self.write_buffer, 1)
        return _Buffer(np.empty(size, np.int64), np.empty((size, self.dim), np.float32), 0)

    def _new(self, capacity: int) -> HnswIndex:
        return HnswIndex(
            self.dim,
            self.space,
            m=self.m,
            ef_construction=self.ef_construction,
            ef_search=self._ef_search,
            capacity=max(capacity, 1024),
        )

    @classmethod
    def load(
        cls,
        paths: Sequence[Path],
        bounds: Sequence[int],
        lives: Sequence[int],
        dim: int,
        space: str,
        *,
        m: int,
        ef_construction: int,
        ef_search: int,
        segment_size: int,
        write_buffer: int = 0,
    ) -> SegmentedHnsw:
        segs = [
            HnswIndex.load(p, dim, space, m=m, ef_construction=ef_construction, ef_search=ef_search, live=lv)
            for p, lv in zip(paths, lives, strict=True)
        ]
        return cls(
            dim,
            space,
            m=m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            segment_size=segment_size,
            write_buffer=write_buffer,
            _segments=segs,
            _bounds=list(bounds),
        )

    # -- properties ------------------------------------------------------------------------------
    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = value
        for seg in self._segs:
            seg.ef_search = value

    @property
    def segments(self) -> int:
        return len(self._segs)

    @property
    def bounds(self) -> list[int]:
        return list(self._bounds)

    def segment_lives(self) -> list[int]:
        return [len(s) for s in self._segs]

    def __len__(self) -> int:
        return sum(len(s) for s in self._segs) + self._buf.n

    @property
    def buffered(self) -> int:
        """Vectors waiting in the write buffer (searched exactly, not yet in a graph)."""
        return self._buf.n

    @property
    def capacity(self) -> int:
        return sum(s.capacity for s in self._segs)

    @property
    def tombstones(self) -> int:
        return sum(s._index.get_current_count() - len(s) for s in self._segs)

    # -- writes ----------------------------------------------------------------------------------
    def _route(self, labels: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self._bounds, np.int64), labels, side="right") - 1

    def add(
        self, labels: np.ndarray, vectors: np.ndarray, new: np.ndarray | None = None, num_threads: int = -1
    ) -> None:
        labels = np.asarray(labels, np.int64)
        buf = self._buf
        if new is None:
            new = self._absent(labels)
        if self.write_buffer and bool(new.all()) and buf.n + len(labels) <= self.write_buffer:
            # Small batches of new labels wait in the buffer (rows below buf.n are never rewritten).
            n = buf.n
            buf.labels[n : n + len(labels)] = labels
            buf.vectors[n : n + len(labels)] = vectors
            self._buf = _Buffer(buf.labels, buf.vectors, n + len(labels))
            if self._buf.n >= self.write_buffer:
                self.flush()
            return
        self.flush()
        self._add_now(labels, vectors, new, num_threads)

    def flush(self) -> None:
        """Insert the write buffer into the graph in one multi-threaded batch (caller holds the lock)."""
        buf = self._buf
        if buf.n == 0:
            return
        n = buf.n
        # graph first, then an empty buffer: a concurrent search sees each vector at least once; the
        # counter moves before and after, so a search that overlapped any part of this knows to dedupe
        self._flushes += 1
        self._add_now(buf.labels[:n].copy(), buf.vectors[:n].copy(), np.ones(n, bool), -1)
        self._buf = self._empty_buffer()
        self._flushes += 1

    def _absent(self, labels: np.ndarray) -> np.ndarray:
        """Which labels neither a graph nor the buffer holds."""
        new = np.ones(len(labels), bool)
        buf = self._buf
        if buf.n:
            new &= ~np.isin(labels, buf.labels[: buf.n])
        for i, seg in enumerate(self._segs):
            known = set(seg._index.get_ids_list())
            if known:
                in_seg = self._route(labels) == i
                new &= ~(in_seg & np.fromiter((int(x) in known for x in labels), bool, len(labels)))
        return new

    def _add_now(self, labels: np.ndarray, vectors: np.ndarray, new: np.ndarray, num_threads: int) -> None:
        if not self.segment_size:
            self._segs[0].add(labels, vectors, new, num_threads=num_threads)
            return
        # existing labels: update in their own segment
        old = ~new
        if old.any():
            route = self._route(labels[old])
            for i in np.unique(route).tolist():
                sel = np.flatnonzero(old)[route == i]
                self._segs[i].add(
                    labels[sel], vectors[sel], np.zeros(len(sel), bool), num_threads=num_threads
                )
        # new labels: fill the last segment, open new ones as it fills
        idx = np.flatnonzero(new)
        while idx.size:
            last = self._segs[-1]
            room = self.segment_size - len(last)  # tombstoned slots are reused by new vectors
            if room <= 0 and labels[idx[0]] > self._bounds[-1]:
                self._segs.append(self._new(min(self.segment_size, max(len(idx), 1024))))
                self._bounds.append(int(labels[idx[0]]))
                continue
            take = idx[: max(room, 0)] if room > 0 else idx
            route = self._route(labels[take])
            for i in np.unique(route).tolist():
                sel = take[route == i]
                self._segs[i].add(labels[sel], vectors[sel], np.ones(len(sel), bool), num_threads=num_threads)
            idx = idx[len(take) :]

    def remove(self, labels: np.ndarray) -> None:
        labels = np.asarray(labels, np.int64)
        buf = self._buf
        if buf.n:
            held = np.isin(buf.labels[: buf.n], labels)
            if held.any():
                keep = np.flatnonzero(~held)
                fresh = self._empty_buffer()
                fresh.labels[: len(keep)] = buf.labels[keep]
                fresh.vectors[: len(keep)] = buf.vectors[keep]
                fresh.n = len(keep)
                self._buf = fresh
                labels = labels[~np.isin(labels, buf.labels[: buf.n])]
                if not len(labels):
                    return
        route = self._route(labels)
        for i in np.unique(route).tolist():
            self._segs[i].remove(labels[route == i])

    # -- reads -----------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        allowed: LabelFilter | None = None,
        num_threads: int = 1,
    ) -> IndexResult:
        buf = self._buf  # read before the graph (see the module docstring)
        if buf.n:
            flushes = self._flushes
            head = self._buffer_search(buf, queries, k, allowed)
            res = self._graph_search(queries, k, ef, allowed, num_threads)
            merged = merge_topk([head, res] if res.labels.shape[1] else [head], k)
            return merged if self._flushes == flushes else _dedupe(merge_topk([head, res], 2 * k), k)
        return self._graph_search(queries, k, ef, allowed, num_threads)

    def _buffer_search(
        self, buf: _Buffer, queries: np.ndarray, k: int, allowed: LabelFilter | None
    ) -> IndexResult:
        labels, vectors = buf.labels[: buf.n], buf.vectors[: buf.n]
        if allowed is not None:
            keep = np.fromiter((allowed(int(x)) for x in labels), bool, len(labels))
            labels, vectors = labels[keep], vectors[keep]
        return exact_topk(vectors, labels, queries, k, self.space)  # merge_topk takes any width

    def _graph_search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int | None,
        allowed: LabelFilter | None,
        num_threads: int,
    ) -> IndexResult:
        segs = self._segs
        if len(segs) == 1:
            return segs[0].search(queries, k, ef=ef, allowed=allowed, num_threads=num_threads)
        if queries.shape[0] == 1 and (os.cpu_count() or 1) > 1:
            futures = [
                shared_pool().submit(s.search, queries, k, ef=ef, allowed=allowed, num_threads=1)
                for s in segs
            ]
            parts = [f.result() for f in futures]
        else:
            parts = [s.search(queries, k, ef=ef, allowed=allowed, num_threads=num_threads) for s in segs]
        return merge_topk([p for p in parts if p.labels.shape[1]] or parts[:1], k)

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, np.int64)
        buf = self._buf
        if buf.n:
            held = np.isin(labels, buf.labels[: buf.n])
            if held.any():
                out = np.empty((len(labels), self.dim), np.float32)
                pos = {int(lb): i for i, lb in enumerate(buf.labels[: buf.n].tolist())}
                out[held] = buf.vectors[[pos[int(lb)] for lb in labels[held].tolist()]]
                if (~held).any():
                    out[~held] = self._graph_vectors(labels[~held])
                return out
        return self._graph_vectors(labels)

    def _graph_vectors(self, labels: np.ndarray) -> np.ndarray:
        if len(self._segs) == 1:
            return self._segs[0].get_vectors(labels)
        out = np.empty((len(labels), self.dim), np.float32)
        route = self._route(labels)
        for i in np.unique(route).tolist():
            sel = route == i
            out[sel] = self._segs[i].get_vectors(labels[sel])
        return out

    def live_labels(self) -> np.ndarray:
        buf = self._buf
        return np.concatenate([s.live_labels() for s in self._segs] + [buf.labels[: buf.n].copy()])

    def memory_bytes(self) -> int:
        return sum(s.memory_bytes() for s in self._segs) + self._buf.vectors.nbytes

    def savers(self) -> list[tuple[int, Callable[[Path], None]]]:
        """(live count, save function) per segment, for the snapshot writer (flushes the buffer first)."""
        self.flush()
        return [(len(s), s.save) for s in self._segs]


def first_label_bounds(bounds: Sequence[int]) -> list[int]:
    """Bounds as stored in a manifest (validated: ascending, starting at 0)."""
    out = [int(b) for b in bounds]
    if not out or out[0] != 0 or any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"segment bounds must ascend from 0; got {out}")
    return out
