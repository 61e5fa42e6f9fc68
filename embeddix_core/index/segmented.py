"""Segmented HNSW: a large collection as several HNSW graphs, searched in parallel and merged exactly.

Routing rule: segment i holds the labels from ``bounds[i]`` up to the next bound. Labels are assigned in
increasing order by the store, so new records go to the last segment; once it holds ``segment_size``
vectors, the next new label opens a segment. Updates and deletes find their segment by binary search.

Search: every segment answers its own top k; the answers are merged by distance, which is exact (the
global top k is inside the union of the per-segment top k). For a single query with two or more segments,
the segments are searched at once on a thread pool (hnswlib releases the GIL), which shortens latency on
idle cores; batches already use every core across queries, so their segments run one after another.

Write buffer: a single new vector costs ~1 ms to insert into a 100K x 384 graph on one thread (~2 ms at
768-d), while a batch insert spreads that work over every core. So small additions of *new* labels first
go to a buffer that searches scan exactly and merge with the graph's answer. Once it holds
``write_buffer`` vectors, a background thread inserts them into the graph, ``FLUSH_SLICE`` at a time
on every core, while writers go on appending: a write never waits for the graph unless the buffer
reaches its limit (``BUFFER_LIMIT`` times ``write_buffer``), which is how a stream faster than the graph
can absorb is slowed down to the graph's pace instead of growing the exact scan without bound. The
flusher runs at a lower CPU priority, so on a busy machine writers and searches keep their cores.

Readers never lock the buffer: it is copy-on-write (appends write rows past the published length and then
publish a longer view; removals and flushes publish new arrays under ``_cond``), and a flush inserts into
the graph *before* it drops the rows from the buffer, so a search that reads the buffer first and the graph
second sees every vector at least once. ``_flushes`` is odd while a flush moves rows and is bumped again
when it ends; a search that read it odd, or saw it change, drops duplicate labels in the merge.

Only the background flusher and the one writer (the collection holds its write lock) mutate the index.
Every mutation other than a buffer append first waits for the flusher to go idle (:meth:`join`), so the
two never touch a graph at once. Snapshots flush first, so a snapshot holds everything up to its seq.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .base import IndexResult, IndexStats, LabelFilter, exact_topk, merge_topk
from .hnsw import HnswIndex

__all__ = ["BUFFER_LIMIT", "SegmentedHnsw"]

log = logging.getLogger("embeddix_core")

# The buffer holds at most this many times ``write_buffer`` vectors (1,024 by default): a burst of small
# writes proceeds at the store's pace for that long; past it, each write waits for the flush in progress.
# The scan of a full buffer costs ~50 us per query at 768-d, which bounds what a burst adds to searches.
BUFFER_LIMIT = 8
# A flush inserts this many vectors per hold of the graph's write gate. hnswlib cannot
# search while it inserts, so searches wait for one slice (~16 ms at 384-d, ~32 ms at 768-d on two
# cores) and then go first, instead of waiting for the whole chunk.
FLUSH_SLICE = 32

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="embeddix-segment")
        return _POOL


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
    approximate = True
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
        self._limit = self.write_buffer * BUFFER_LIMIT
        self._buf = self._empty_buffer()
        # Odd while a flush moves rows from the buffer into a graph (see the module docstring).
        self._flushes = 0
        # Live vectors, graph and buffer each counted once. Only the writer changes it (a flush moves
        # rows without changing the count), so len() never double-counts rows in flight.
        self._count = sum(len(sg) for sg in self._segs)
        # Guards publishing the buffer and the flusher's state; writers wait on it for buffer room.
        self._cond = threading.Condition(threading.Lock())
        self._flusher: threading.Thread | None = None

    def _empty_buffer(self) -> _Buffer:
        size = max(self._limit, 1)
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

    def set_ef_search(self, ef: int) -> None:
        self.ef_search = ef

    def stats(self) -> IndexStats:
        return IndexStats(self.segments, self.capacity, self.tombstones, self.buffered, self.memory_bytes())

    @property
    def bounds(self) -> list[int]:
        return list(self._bounds)

    def segment_lives(self) -> list[int]:
        return [len(s) for s in self._segs]

    def __len__(self) -> int:
        return self._count

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
        if new is None:
            new = self._absent(labels)
        n_new = int(new.sum())
        small = self.write_buffer and n_new == len(labels) and len(labels) <= self.write_buffer
        if small and self._append(labels, vectors):
            self._count += n_new
            return
        self.flush()
        self._add_now(labels, vectors, new, num_threads)
        self._count += n_new

    def _append(self, labels: np.ndarray, vectors: np.ndarray) -> bool:
        """Put new labels in the buffer (waiting for room while a flush runs); False if it is full."""
        with self._cond:
            while self._buf.n + len(labels) > self._limit and self._flusher is not None:
                self._cond.wait()
            buf = self._buf
            n = buf.n
            if n + len(labels) > self._limit:
                return False
            # rows below n are never rewritten: readers holding the old view see a stable prefix
            buf.labels[n : n + len(labels)] = labels
            buf.vectors[n : n + len(labels)] = vectors
            self._buf = _Buffer(buf.labels, buf.vectors, n + len(labels))
            if self._buf.n >= self.write_buffer and self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="embeddix-flush", daemon=True)
                self._flusher.start()
        return True

    def _flush_loop(self) -> None:
        """Background flusher: move the buffer into the graph, ``write_buffer`` rows at a time, until
        fewer than that wait."""
        # A lower CPU priority for this thread and the insert threads hnswlib starts from it (Linux
        # applies setpriority to one thread id; new threads inherit it): writers and searches come
        # first, the graph takes the cycles they leave. Not the calibration's 19: under a steady read
        # load the flush must still progress, or writers would stall at the buffer's limit.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            while True:
                with self._cond:
                    buf = self._buf
                    if buf.n < self.write_buffer:
                        return
                try:
                    # one chunk at a time: a writer waiting at the limit waits for one chunk, not all
                    self._move(buf, self.write_buffer)
                except Exception as exc:
                    # The rows stay in the buffer (searched exactly; the store holds them anyway). The
                    # next flush on the writer's thread (at the buffer's limit, or a snapshot) retries
                    # them and raises there.
                    log.warning("background insert of %d buffered vectors failed: %s", buf.n, exc)
                    return
        finally:
            with self._cond:
                self._flusher = None
                self._cond.notify_all()

    def _move(self, buf: _Buffer, n: int) -> None:
        """Insert the buffer's first ``n`` rows into the graph, then drop them from the buffer."""
        # graph first, then the buffer: a concurrent search sees each vector at least once
        self._flushes += 1
        try:
            for s in range(0, n, FLUSH_SLICE):
                e = min(s + FLUSH_SLICE, n)
                self._add_now(
                    buf.labels[s:e].copy(), buf.vectors[s:e].copy(), np.ones(e - s, bool), -1, polite=True
                )
            with self._cond:
                cur = self._buf  # may have grown past n since (appends write past the published length)
                fresh = self._empty_buffer()
                rest = cur.n - n
                fresh.labels[:rest] = cur.labels[n : cur.n]
                fresh.vectors[:rest] = cur.vectors[n : cur.n]
                fresh.n = rest
                self._buf = fresh
                self._cond.notify_all()  # room for writers waiting at the limit
        finally:
            self._flushes += 1

    def join(self) -> None:
        """Wait until no background flush runs (before any mutation other than a buffer append)."""
        with self._cond:
            while self._flusher is not None:
                self._cond.wait()

    def flush(self) -> None:
        """Insert the whole write buffer into the graph now (the caller holds the collection's lock)."""
        self.join()
        buf = self._buf
        if buf.n:
            self._move(buf, buf.n)

    def _absent(self, labels: np.ndarray) -> np.ndarray:
        """Which labels neither a graph nor the buffer holds."""
        self.join()
        new = np.ones(len(labels), bool)
        buf = self._buf
        if buf.n:
            new &= ~np.isin(labels, buf.labels[: buf.n])
        for i, seg in enumerate(self._segs):
            known = set(seg._ids())
            if known:
                in_seg = self._route(labels) == i
                new &= ~(in_seg & np.fromiter((int(x) in known for x in labels), bool, len(labels)))
        return new

    def _add_now(
        self,
        labels: np.ndarray,
        vectors: np.ndarray,
        new: np.ndarray,
        num_threads: int,
        *,
        polite: bool = False,
    ) -> None:
        if not self.segment_size:
            self._segs[0].add(labels, vectors, new, num_threads=num_threads, polite=polite)
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
                self._segs[i].add(
                    labels[sel], vectors[sel], np.ones(len(sel), bool), num_threads=num_threads, polite=polite
                )
            idx = idx[len(take) :]

    def remove(self, labels: np.ndarray) -> None:
        labels = np.unique(np.asarray(labels, np.int64))
        self.join()
        buf = self._buf
        if buf.n:
            held = np.isin(buf.labels[: buf.n], labels)
            if held.any():
                keep = np.flatnonzero(~held)
                fresh = self._empty_buffer()
                fresh.labels[: len(keep)] = buf.labels[keep]
                fresh.vectors[: len(keep)] = buf.vectors[keep]
                fresh.n = len(keep)
                with self._cond:
                    self._buf = fresh
                self._count -= int(held.sum())
                labels = labels[~np.isin(labels, buf.labels[: buf.n])]
                if not len(labels):
                    return
        route = self._route(labels)
        for i in np.unique(route).tolist():
            self._count -= self._segs[i].remove(labels[route == i])

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
        # the counter before the buffer, the buffer before the graph (see the module docstring)
        flushes = self._flushes
        buf = self._buf
        if buf.n:
            head = self._buffer_search(buf, queries, k, allowed)
            res = self._graph_search(queries, k, ef, allowed, num_threads)
            if flushes & 1 or self._flushes != flushes:
                return _dedupe(merge_topk([head, res], 2 * k), k)
            return merge_topk([head, res] if res.labels.shape[1] else [head], k)
        return self._graph_search(queries, k, ef, allowed, num_threads)

    def search_one(self, q: np.ndarray, k: int, ef: int | None) -> tuple[list[int], list[float]] | None:
        """One unfiltered query as (labels, distances) lists, when a single graph holds every vector
        (no buffered rows, one segment): that graph's :meth:`HnswIndex.search_one`. None otherwise,
        and the caller takes :meth:`search`.

        A buffer read empty here needs no merge: a flush inserts into the graph before it drops rows
        from the buffer, so every vector is in the graph (see the module docstring).
        """
        segs = self._segs
        if self._buf.n or len(segs) != 1:
            return None
        return segs[0].search_one(q, k, ef)

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
        # buffer first, graphs second: a row a flush moves in between is seen twice, never missed
        flushes = self._flushes
        buf = self._buf
        head = buf.labels[: buf.n].copy()
        labels = np.concatenate([s.live_labels() for s in self._segs] + [head])
        return np.unique(labels) if flushes & 1 or self._flushes != flushes else labels

    def memory_bytes(self) -> int:
        return sum(s.memory_bytes() for s in self._segs) + self._buf.vectors.nbytes

    def memory_parts(self) -> dict[str, int]:
        """Resident bytes by part, summed over segments; ``buffer``: the write buffer's float32 rows."""
        out: dict[str, int] = {}
        for seg in self._segs:
            for part, size in seg.memory_parts().items():
                out[part] = out.get(part, 0) + size
        out["buffer"] = int(self._buf.vectors.nbytes + self._buf.labels.nbytes)
        return out

    def savers(self) -> list[tuple[int, Callable[[Path], None]]]:
        """(live count, save function) per segment, for the snapshot writer (flushes the buffer first)."""
        self.flush()
        return [(len(sg), sg.save) for sg in self._segs]


def first_label_bounds(bounds: Sequence[int]) -> list[int]:
    """Bounds as stored in a manifest (validated: ascending, starting at 0)."""
    out = [int(b) for b in bounds]
    if not out or out[0] != 0 or any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"segment bounds must ascend from 0; got {out}")
    return out
