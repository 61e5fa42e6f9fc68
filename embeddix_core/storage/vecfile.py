"""Full-precision vectors by label in a memory-mapped scratch file: re-ranking without SQLite reads.

Re-ranking (SQ8/fp16 HNSW, IVF-PQ), personalized search and filter matrices read full-precision vectors
of a few dozen to a few hundred candidates per search. From SQLite that costs ~6 us a row (measured: 40
rows of 384-d ~0.25 ms in a personalized search, the largest part of its overhead); from a memory map it is
a fancy-index copy (~0.2 us a row). The store stays the source of truth: this file is a cache of it.

Layout: one file per collection and process, created in the data directory and unlinked at once (the
kernel frees it when the process exits, however it exits; no stale files, no sharing between processes, so
no process can see another's half-written row). Row ``label`` is at byte ``label * dim * 4``: labels are
the store's, so the file is sparse where other collections' labels fall (holes take no disk).

Validity lives in memory only: a label is served from the file when this process wrote it there since it
last cleared its bitmap. Writes (``put``) come from the collection's own commits (write-through, index
space) and from read-through misses; a delete invalidates its labels; any change the collection did not
make itself (another process's writes, a reload) clears everything (``DerivedState.drop_all``).
Concurrency: ``put`` writes with ``pwrite`` under a lock; ``get`` reads the current map without one. A
search re-ranking a record at the instant its vector is replaced may read a mix of its old and new vector
for that one score (the row is 1.5 KB); it never reads another record's vector. Rows read from the store
(a search's read-through, the warm-up after an open) go in with :meth:`fill`, which refuses them once the
collection wrote anything since they were read (``generation``): an upsert keeps its label, so a row
read just before it would otherwise overwrite the new vector with the old one.

Memory: pages are written with ``pwrite`` (never through a map). Two ways to read them:

* mapped (``mapped=True``, for float32 indexes): a read-only shared map, so a row costs a fancy-index
  copy (40 random rows of 384-d: ~21 us). Mapped pages are page cache counted in the process's RSS as file
  pages (RssFile), and far more of them than the rows read: the kernel maps the whole page-cache folio a
  read faults in, and a large ``pwrite`` (a bulk add's write-through) makes large folios (measured on ext4,
  Linux 6.18: 100 random rows of a 46 MB file made 42 MB resident; written in 64 KB pieces, 6 MB). After
  ``map_budget`` bytes of row reads the map drops its pages (``MADV_DONTNEED``: they stay in the page
  cache), which bounds the row count between drops, not the bytes mapped.
* read (``mapped=False``, for quantized indexes, whose point is memory): ``pread`` per run of consecutive
  labels into the result, nothing mapped: RssFile stays 0, at ~2.5 us a row (40 rows: ~100 us). Measured
  before it (SQ8, 100K x 384, in the ingesting process): 2,396 bytes a vector resident, of which 1,565
  were the map's file pages.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

__all__ = ["VectorFile"]

_GROW = 1.5  # the file (and the map) grow by this factor past the largest label written


class VectorFile:
    """Index-space float32 vectors by label, memory-mapped (see the module docstring).

    Args:
        directory: Where the scratch file is created (the data directory's disk; never tmpfs).
        dim: Vector dimension.
        map_budget: Bytes read through the map before its pages are dropped from the process.
        mapped: Read through a memory map (fast, file pages resident) or with ``pread`` (no resident
            pages); see the module docstring.
    """

    def __init__(self, directory: Path, dim: int, map_budget: int = 32 << 20, *, mapped: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".vectors-", suffix=".tmp")
        os.unlink(name)  # nobody else ever opens it; it is freed when the fd closes
        self._fd = fd
        self.dim = dim
        self._row = dim * 4
        self._lock = threading.Lock()
        self._map: mmap.mmap | None = None
        self._rows = np.empty((0, dim), np.float32)  # a view of the map
        self._valid = np.zeros(0, bool)
        self._budget = max(int(map_budget), self._row)
        self._read = 0
        self._gen = 0  # bumped by every change the collection makes (put, invalidate, clear)
        self.mapped = mapped
        self._size = 0  # rows the file holds room for (read mode: no map to ask)
        self.closed = False

    @property
    def generation(self) -> int:
        """Changes with every write the collection makes here; read it before reading rows to :meth:`fill`."""
        return self._gen

    # -- writes --------------------------------------------------------------------------------------
    def put(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Store index-space vectors of labels (rows with NaN are skipped: not stored any more)."""
        labels = np.asarray(labels, np.int64)
        if not len(labels) or self.closed:
            return
        vecs = np.ascontiguousarray(vectors, np.float32)
        ok = np.isfinite(vecs).all(axis=1)
        if not ok.all():
            labels, vecs = labels[ok], vecs[ok]
            if not len(labels):
                return
        with self._lock:
            if self.closed:
                return
            self._gen += 1
            self._write(labels, vecs)

    def fill(self, labels: np.ndarray, vectors: np.ndarray, generation: int) -> bool:
        """Keep rows read from the store when :attr:`generation` was ``generation``, for labels not
        served yet; False (nothing kept) when the collection wrote anything since, or the file closed."""
        labels = np.asarray(labels, np.int64)
        if not len(labels):
            return not self.closed
        vecs = np.ascontiguousarray(vectors, np.float32)
        with self._lock:
            if self.closed or self._gen != generation:
                return False
            self._grow(int(labels.max()) + 1)
            keep = ~self._valid[labels] & np.isfinite(vecs).all(axis=1)
            if keep.any():
                self._write(labels[keep], vecs[keep])
        return True

    def _write(self, labels: np.ndarray, vecs: np.ndarray) -> None:
        """Write rows and mark them served (lock held)."""
        self._grow(int(labels.max()) + 1)
        valid = self._valid
        valid[labels] = False  # readers skip them while they are rewritten
        order = np.argsort(labels, kind="stable")
        labels, vecs = labels[order], vecs[order]
        # consecutive labels (a bulk add) in one pwrite each
        breaks = np.flatnonzero(np.diff(labels) != 1) + 1
        for run in np.split(np.arange(len(labels)), breaks):
            first = int(labels[run[0]])
            os.pwrite(self._fd, vecs[run[0] : run[-1] + 1].tobytes(), first * self._row)
        valid[labels] = True

    def invalidate(self, labels: list[int] | np.ndarray) -> None:
        """Stop serving these labels (deleted, or replaced by a write not given to :meth:`put`)."""
        idx = np.asarray(labels, np.int64)
        with self._lock:  # not lost to a concurrent grow's copy of the bitmap
            self._gen += 1
            valid = self._valid
            valid[idx[(idx >= 0) & (idx < len(valid))]] = False

    def clear(self) -> None:
        """Serve nothing until written again (the store changed in ways this process did not see)."""
        with self._lock:
            self._gen += 1
            self._valid[:] = False

    def _grow(self, n_labels: int) -> None:
        """Make room for labels below ``n_labels`` (lock held): a larger sparse file, a new map."""
        if n_labels <= len(self._valid):
            return
        cap = max(int(n_labels * _GROW), 1024)
        os.ftruncate(self._fd, cap * self._row)
        self._size = cap
        if not self.mapped:
            valid = np.zeros(cap, bool)
            valid[: len(self._valid)] = self._valid
            self._valid = valid
            return
        new = mmap.mmap(self._fd, cap * self._row, mmap.MAP_SHARED, mmap.PROT_READ)
        with contextlib.suppress(AttributeError, OSError):
            new.madvise(mmap.MADV_RANDOM)  # a search reads scattered rows: no read-ahead
        valid = np.zeros(cap, bool)
        valid[: len(self._valid)] = self._valid
        # readers holding the old map and view keep them alive until they finish (never closed here)
        self._map = new
        self._rows = np.frombuffer(new, np.float32).reshape(cap, self.dim)
        self._valid = valid

    # -- reads ---------------------------------------------------------------------------------------
    def get(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of labels, and which of them were served (the others' rows are to be loaded).

        Returns:
            (vectors, served): ``vectors`` is (n, dim) with the served rows filled (others zero);
            ``served`` a bool mask.
        """
        labels = np.asarray(labels, np.int64)
        if not self.mapped:
            return self._pread(labels)
        rows, valid = self._rows, self._valid
        n = len(labels)
        if n and int(labels.min()) >= 0 and int(labels.max()) < min(len(valid), len(rows)):
            served = valid[labels]
            if served.all():  # the usual case: one gather (np.take: ~half the time of fancy indexing)
                out = np.take(rows, labels, axis=0)
                self._count_read(n)
                return out, served
        else:
            inside = (labels >= 0) & (labels < min(len(valid), len(rows)))
            served = np.zeros(n, bool)
            served[inside] = valid[labels[inside]]
        out = np.zeros((n, self.dim), np.float32)
        if served.any():
            out[served] = rows[labels[served]]
            self._count_read(int(served.sum()))
        return out, served

    def _count_read(self, rows: int) -> None:
        self._read += rows * self._row
        if self._read > self._budget:
            self._drop_pages()

    def _pread(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`get` without a map: one ``pread`` per run of consecutive labels (read mode)."""
        out = np.zeros((len(labels), self.dim), np.float32)
        served = np.zeros(len(labels), bool)
        # under the lock: close() may not free the descriptor (whose number the OS would hand to the
        # next file opened) between the check and the read, and no write is half done meanwhile
        with self._lock:
            if self.closed:
                return out, served
            valid = self._valid
            inside = (labels >= 0) & (labels < len(valid))
            served[inside] = valid[labels[inside]]
            idx = np.flatnonzero(served)
            if not len(idx):
                return out, served
            want = labels[idx]
            order = np.argsort(want, kind="stable")
            dest = idx[order]
            # Each run of consecutive labels is read straight into its rows of one sorted buffer, and
            # the buffer lands in ``out`` with one assignment: a re-rank reads ~20 scattered rows, and
            # per-run numpy work (split, frombuffer, a fancy assignment each) cost ~5 us a row, twice
            # the syscall itself. Labels asked for in order, all served (an IVF retrain's sample and
            # chunks: 100,000 x 768 is 307 MB), are read into ``out`` itself: a second buffer of that
            # size was part of the memory profile's peak.
            in_place = len(dest) == len(labels) and bool((dest[1:] > dest[:-1]).all())
            tmp = out if in_place else np.empty((len(dest), self.dim), np.float32)
            view = memoryview(tmp.data).cast("B")
            sorted_labels = want[order].tolist()
            row, fd, n_all = self._row, self._fd, len(sorted_labels)
            short: list[int] = []
            i = 0
            while i < n_all:
                j = i + 1
                while j < n_all and sorted_labels[j] == sorted_labels[j - 1] + 1:
                    j += 1
                if os.preadv(fd, [view[i * row : j * row]], sorted_labels[i] * row) != (j - i) * row:
                    short.extend(range(i, j))  # beyond the end: not written, so not served
                i = j
            if short:
                tmp[short] = 0.0
                served[dest[short]] = False
            if not in_place:
                out[dest] = tmp
        return out, served

    def _drop_pages(self) -> None:
        self._read = 0
        m = self._map
        if m is not None:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                m.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Free the file (its map goes when the last reader lets go of it)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._valid = np.zeros(0, bool)
            self._rows = np.empty((0, self.dim), np.float32)
            self._map = None
            os.close(self._fd)
