"""The collection: the facade users touch (add / upsert / get / delete / search / search_batch / ...).

Durability and ordering rule: a write returns after the store committed it (see ``storage.sqlite``), and
the in-memory index has applied it, so a record is searchable as soon as ``add`` returns. Writes of one
process are serialized by the collection's write lock, so the index applies them in ``seq`` order; writes
of other processes on the same directory are replayed from the store (by ``seq``) before the next search.

Threads: any number of threads may search at once (the native index releases the GIL); writes run one at
a time and hold readers off only while the index applies one batch.

Processes: before a search, each thread asks SQLite whether anything was committed since it last asked
(``PRAGMA data_version`` on its own connection); if so, the collection replays the store's changes under
its write lock and drops every derived cache (filter labels, rows, vectors, results), whichever way the
replay went (changes applied, snapshot reloaded, or rebuilt). Snapshots are written and loaded under a
lock shared with other processes (``storage/locks.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import orjson

from ._validate import (
    as_matrix,
    as_query,
    check_documents,
    check_ef,
    check_fraction,
    check_ids,
    check_int,
    check_k,
    check_lookup_ids,
    check_metadata,
    check_metadatas,
    check_patch,
    check_text_query,
    dump_metadata,
    unit_query,
    unit_rows,
)
from .cache import CacheManager, CacheSettings, VectorCache
from .cache.row_cache import RowCache
from .config import CollectionConfig, EmbeddixSettings
from .errors import (
    ClosedError,
    CollectionNotFoundError,
    InvalidArgumentError,
    InvalidIdError,
    ModelMismatchError,
    NotFoundError,
    StorageError,
)
from .index.base import IndexResult, VectorIndex, exact_topk
from .index.exact import ExactIndex
from .index.faiss_flat import FaissFlatIndex, gpu_count
from .index.segmented import SegmentedHnsw, shared_pool
from .query.filters import Filter, parse_filter
from .query.fusion import fts_query, mmr_select, rrf_fuse
from .query.planner import (
    DEADLINE_SAFETY,
    Calibration,
    Plan,
    calibrate,
    check_deadline,
    check_recall,
    progressive_steps,
)
from .storage._atomic import atomic_write_bytes
from .storage.locks import SnapshotLock
from .storage.snapshot import (
    SnapshotIdentity,
    read_snapshot,
    remove_snapshots,
    remove_stale,
    write_snapshot,
)
from .storage.sqlite import CollectionRow, Store
from .types import CollectionStats, Hit, Hits, Metric, Record, SearchStep, make_hit

if TYPE_CHECKING:
    from .database import Embeddix

__all__ = ["Collection"]

log = logging.getLogger("embeddix")

_FILTER_CACHE_SIZE = 32
_RESERVOIR = 512
_BATCH_CHUNK = 500  # queries per native call in a pipelined search_batch (measured: 500 > 200)
_BATCH_POOL: ThreadPoolExecutor | None = None
_BATCH_POOL_LOCK = threading.Lock()


def _batch_pool() -> ThreadPoolExecutor:
    """Threads that run search_batch's native calls (their own pool: those tasks never wait on others,
    so callers sitting in any other pool cannot deadlock it)."""
    global _BATCH_POOL
    with _BATCH_POOL_LOCK:
        if _BATCH_POOL is None:
            _BATCH_POOL = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 2, thread_name_prefix="embeddix-batch"
            )
        return _BATCH_POOL


# Above this batch size, re-evaluating every cached filter on every new record costs more than
# recomputing the filters lazily from the store.
_FILTER_MAINTAIN_MAX = 512


class _FilterEntry:
    """The labels matching one filter, kept current under writes.

    Concurrency: writers change ``labels`` under the collection's filter lock; searches read it without
    that lock (``set.__contains__`` is atomic under the GIL), so a search racing a write sees the set
    before or after each record's change. :meth:`array` hands out sorted arrays that are never modified
    after they are published (a search holds on to one while it reads vectors for those labels).
    """

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
        if metadata is not None and self.filter.matches(metadata):
            if label not in self.labels:
                self.labels.add(label)
                self._array = None
        elif label in self.labels:
            self.labels.discard(label)
            self._array = None


class Collection:
    """A named set of records (id, vector, document, metadata) with vector, filtered and text search.

    Get one from :meth:`Embeddix.create_collection` or :meth:`Embeddix.get_collection`; don't
    construct it directly. It behaves like a mapping that can search: ``len(col)``, ``id in col``,
    ``col[id]``.
    """

    def __init__(self, db: Embeddix, row: CollectionRow, settings: EmbeddixSettings) -> None:
        self._db = db
        self._store: Store = db._store
        self._cid = row.cid
        self.name = row.name
        self._config = CollectionConfig.from_json(row.config)
        self._settings = settings
        self._space = "l2" if self._config.metric == Metric.L2 else "ip"
        self._normalize = self._config.metric == Metric.COSINE
        self._metric = self._config.metric.value
        self._write_lock = threading.RLock()
        self._filters: OrderedDict[str, _FilterEntry] = OrderedDict()
        self._filters_lock = threading.Lock()
        # bumped by every change to the cached filters: an entry read from the store while it moved
        # may predate a write that already updated the others, so it is not cached
        self._filters_epoch = 0
        self._closed = False
        self._snapshot_seq = 0
        # per thread: the data version of that thread's store connection when it last synced
        self._seen = threading.local()
        index_dir = self._index_dir()
        self._snap_lock = SnapshotLock(None if index_dir is None else index_dir.with_suffix(".lock"))
        self._index: VectorIndex
        self._applied_seq = 0
        self._calibration: Calibration | None = None
        self._writes_since_cal = 0
        self._cal_thread: threading.Thread | None = None
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self._cache: CacheManager | None = None
        # Full-precision vectors for re-ranking cached candidates: an LRU in front of the store
        # (hnswlib's get_items costs ~13 us per vector; a store fetch of 80 rows ~1 us each)
        self._vectors = VectorCache(self.dim, self._vectors_from_store, max_bytes=settings.vector_cache_bytes)
        # Rows (id, document, metadata) for building hits: SQLite costs ~2 us a row, a dict ~0.1 us
        self._rows = RowCache(self._rows_from_store, settings.row_cache_bytes)
        self._cache_store_lock = threading.Lock()
        self._plan_variants: dict[tuple[int, str], tuple[Plan, Plan]] = {}
        # A reservoir sample of the queries this collection answers: calibration on real queries
        # predicts the recall users get far better than any sample of stored vectors.
        self._reservoir = np.empty((_RESERVOIR, self.dim), np.float32)
        self._reservoir_n = 0
        self._reservoir_seen = 0
        self._reservoir_rng = random.Random(0)
        self._reservoir_lock = threading.Lock()
        if settings.cache_enabled:
            self._cache = CacheManager(
                self.dim,
                self._space,
                self._config.metric != Metric.IP,  # raw inner product is no metric: no semantic tier
                CacheSettings(
                    enabled=True,
                    max_bytes=settings.cache_max_bytes,
                    session_max_bytes=settings.cache_session_max_bytes,
                    max_sessions=settings.cache_max_sessions,
                    ttl=settings.cache_ttl,
                    semantic=settings.cache_semantic,
                    similarity=settings.cache_similarity,
                    candidate_factor=settings.cache_candidate_factor,
                    persist=settings.cache_persist,
                    beam_factor=settings.cache_beam_factor,
                    probe=settings.cache_probe,
                ),
            )
        self._load_index()
        self._load_calibration()
        self._load_cache()
        self._maybe_calibrate()

    # -- properties --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Vector dimension (fixed at creation)."""
        return self._config.dim

    @property
    def metric(self) -> str:
        """``"cosine"``, ``"l2"`` or ``"ip"`` (fixed at creation)."""
        return self._metric

    @property
    def config(self) -> CollectionConfig:
        """The collection's stored parameters."""
        return self._config

    @property
    def embedding_model(self) -> str | None:
        """The embedding model id this collection was built with, if one was recorded."""
        return self._config.embedding_model

    @property
    def index_kind(self) -> str:
        """``"exact"`` or ``"hnsw"``: the index now serving searches."""
        return self._index.kind

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, dim={self.dim}, metric={self.metric!r}, count={len(self)})"

    # -- mapping behaviour -------------------------------------------------------------------------
    def __len__(self) -> int:
        self._sync()
        return len(self._index)

    def __contains__(self, rid: object) -> bool:
        if not isinstance(rid, str) or rid != rid.encode("utf-8", "replace").decode("utf-8"):
            return False  # no stored id is anything but valid Unicode text
        self._sync()
        return bool(self._store.rows_by_ids(self._cid, [rid], vectors=False))

    def __getitem__(self, rid: str) -> Record:
        if not isinstance(rid, str):
            raise InvalidIdError(
                f"col[id] takes one id (a string); got {type(rid).__name__} {rid!r:.60}; "
                "use get() for several"
            )
        rec = self.get(rid)
        if rec is None:
            raise NotFoundError(f"no record with id {rid!r} in collection {self.name!r}")
        return rec

    # -- index lifecycle ---------------------------------------------------------------------------
    def _index_dir(self) -> Path | None:
        root = self._db.path
        return None if root is None else root / "indexes" / str(self._cid)

    def _index_params(self) -> dict[str, Any]:
        c = self._config
        return {
            "dim": c.dim,
            "space": self._space,
            "m": c.hnsw_m,
            "ef_construction": c.ef_construction,
            "segment_size": c.segment_size,
        }

    def _prepare(self, vectors: np.ndarray, *, copy: bool = True) -> np.ndarray:
        """Vectors as the index stores them: unit length for cosine, as given otherwise."""
        if not self._normalize:
            return vectors
        return unit_rows(vectors)  # norms in float64: 2e20 overflows float32, 1e-25 underflows it

    def _new_hnsw(self, capacity: int) -> SegmentedHnsw:
        c = self._config
        return SegmentedHnsw(
            c.dim,
            self._space,
            m=c.hnsw_m,
            ef_construction=c.ef_construction,
            ef_search=c.ef_search,
            segment_size=c.segment_size,
            capacity=capacity,
            write_buffer=self._settings.write_buffer,
        )

    def _new_exact(self, capacity: int) -> VectorIndex:
        """The exact index: FAISS on a GPU when one is present (``exact_backend="auto"``), else numpy."""
        backend = self._settings.exact_backend
        if backend == "faiss" or (backend == "auto" and gpu_count() > 0):
            return FaissFlatIndex(self.dim, self._space)
        return ExactIndex(self.dim, self._space, capacity=capacity)

    def _load_index(self) -> None:
        """Load the snapshot and replay later writes, or build the index from the store."""
        directory = self._index_dir()
        if directory is None:
            self._rebuild()
            return
        # the shared lock keeps snapshot writers (and their prunes) out; the read transaction makes the
        # rebuild's scan and the replay after it read one state of the store
        with self._snap_lock.hold(exclusive=False), self._store.read_snapshot():
            seq, pruned = self._store.seq(self._cid)
            record = self._store.snapshot_record(self._cid)
            identity = SnapshotIdentity(
                self._store.store_id, self._cid, record.accepts() if record is not None else {}
            )
            index: SegmentedHnsw | None = None
            try:
                snap = read_snapshot(directory, "hnsw", self._index_params(), identity)
                if snap is not None and not pruned <= snap.seq <= seq:
                    raise StorageError(
                        f"snapshot seq {snap.seq} is outside the store's range {pruned}..{seq}"
                    )
                if snap is not None:
                    c = self._config
                    index = SegmentedHnsw.load(
                        snap.paths,
                        snap.extra.get("bounds", [0]),
                        snap.lives,
                        c.dim,
                        self._space,
                        m=c.hnsw_m,
                        ef_construction=c.ef_construction,
                        ef_search=c.ef_search,
                        segment_size=c.segment_size,
                        write_buffer=self._settings.write_buffer,
                    )
            except (StorageError, RuntimeError, ValueError) as exc:  # hnswlib: RuntimeError
                warnings.warn(
                    f"collection {self.name!r}: ignoring the index snapshot and rebuilding it "
                    f"from the store ({exc})",
                    RuntimeWarning,
                    stacklevel=3,
                )
                snap, index = None, None
            if snap is None or index is None:
                self._rebuild(seq)
                return
            self._index = index
            self._applied_seq = self._snapshot_seq = snap.seq
            self._replay()

    def _rebuild(self, seq: int | None = None) -> None:
        """Build the index from every live record in the store."""
        if seq is None:
            seq = self._store.seq(self._cid)[0]
        count = self._store.count(self._cid)
        index: VectorIndex
        if count > self._config.index_threshold:
            index = self._new_hnsw(count + 1024)
        else:
            index = self._new_exact(max(count, 1024))
        after = -1
        while True:
            rows = self._store.scan(self._cid, None, (), after_label=after, limit=20_000, vectors=True)
            if not rows:
                break
            labels = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            vecs = np.frombuffer(b"".join(r[4] for r in rows), np.float32).reshape(len(rows), self.dim)
            index.add(labels, self._prepare(vecs), np.ones(len(rows), bool))
            after = rows[-1][0]
        self._index = index
        self._applied_seq = seq
        self._snapshot_seq = -1  # whatever is on disk was not used: the next checkpoint writes one
        # Writes committed while we scanned have seq > seq and are replayed (re-applying is harmless).
        self._replay()

    def _replay(self) -> None:
        """Apply writes committed by others (other processes or handles) since ``_applied_seq``.

        Whatever path it takes, a replay that changed anything drops every cache derived from the old
        state: rows, vectors, filter label sets and cached results.
        """
        # One read transaction: the sequence number, the changes and the deletions come from one state
        # of the store. Read one by one, a snapshot by another process could prune a deletion between
        # the reads, and this index would keep that record as a ghost for good.
        with self._store.read_snapshot():
            try:
                seq, pruned = self._store.seq(self._cid)
            except CollectionNotFoundError:
                self._closed = True
                raise CollectionNotFoundError(
                    f"collection {self.name!r} was dropped (by another handle or process); get it again "
                    "from the database"
                ) from None
            if seq == self._applied_seq:
                return
            reload = pruned > self._applied_seq or seq < self._applied_seq
            if not reload:
                for rows in self._store.changes_since(self._cid, self._applied_seq):
                    labels = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                    vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(
                        len(rows), self.dim
                    )
                    self._index.add(labels, self._prepare(vecs))
                gone = self._store.deletions_since(self._cid, self._applied_seq)
                if gone:
                    self._index.remove(np.asarray(gone, np.int64))
                self._applied_seq = seq
        if reload:
            # Deletions we never saw were pruned after a newer snapshot (or the store went back in
            # time): start over from the snapshot the store vouches for, or from the store itself. Out of
            # the read transaction above: the snapshot must be read with the store's current record.
            self._load_index()
        self._clear_filters()
        self._vectors.clear()
        self._rows.clear()
        if self._cache is not None:
            self._cache.clear()  # other processes' writes: we do not know their vectors here
        self._maybe_switch()
        self._wrote(0)

    def _sync(self) -> None:
        """Catch up with writes from other processes (cheap when there are none)."""
        if self._closed:
            self._check_open()
        if self._store.path is None:
            return
        dv = self._store.data_version()  # read first: a commit after this read shows up next time
        seen = self._seen
        if getattr(seen, "dv", None) == dv:
            return
        with self._write_lock:
            self._replay()
        seen.dv = dv

    def _maybe_switch(self) -> None:
        """Move from the exact index to HNSW once the collection outgrows the threshold."""
        index = self._index
        if not isinstance(index, SegmentedHnsw) and len(index) > self._config.index_threshold:
            if self._cache is not None:
                self._cache.clear()
            self._plans.clear()
            labels = index.live_labels()
            hnsw = self._new_hnsw(len(labels) * 2)
            hnsw.add(labels, index.get_vectors(labels), np.ones(len(labels), bool))
            self._index = hnsw
            log.info("collection %r switched to HNSW at %d records", self.name, len(labels))

    def checkpoint(self) -> bool:
        """Save an index snapshot so the next open loads it instead of rebuilding or replaying.

        Safe with other processes on the same directory: snapshots are made one at a time under a
        lock between processes, each after replaying every committed write, and a snapshot no newer
        than the one already saved (by any process) is not written again.

        Returns:
            True if a snapshot was written (in-memory databases and exact indexes have none).
        """
        return self._checkpoint(force=False)

    def _checkpoint(self, *, force: bool) -> bool:
        self._check_open()
        directory = self._index_dir()
        if directory is None:
            return False
        with self._write_lock, self._snap_lock.hold(exclusive=True):
            self._replay()
            index = self._index
            if not isinstance(index, SegmentedHnsw):
                return False
            seq = self._applied_seq
            record = self._store.snapshot_record(self._cid)
            # _snapshot_seq is -1 after a rebuild: the snapshot on disk (if any) was not usable
            done = record.seq if record is not None and record.seq is not None else -1
            if not force and done >= seq and self._snapshot_seq >= 0:
                self._snapshot_seq = seq  # another handle or process saved this state already
                return False
            # vouched for before its manifest exists: a crash before record_snapshot still finds it
            snapshot_id = uuid.uuid4().hex
            self._store.begin_snapshot(self._cid, snapshot_id, seq)
            snap = write_snapshot(
                directory,
                "hnsw",
                seq,
                self._index_params(),
                index.savers(),
                {"bounds": index.bounds},
                identity=SnapshotIdentity(self._store.store_id, self._cid),
                snapshot_id=snapshot_id,
            )
            # only now may the deletions it contains be pruned: see Store.record_snapshot
            self._store.record_snapshot(self._cid, snap.snapshot_id, seq)
            remove_stale(directory, "hnsw", snap)
            self._snapshot_seq = seq
            return True

    def _stop_background(self) -> None:
        """Stop the calibration thread and wait for the index's background flush.

        Both run native code (hnswlib) on threads of their own. A daemon thread still inside native code
        when the interpreter finalizes is torn down mid-call, and hnswlib's worker threads then abort the
        process ("terminate called without an active exception"); so this runs before finalization, on
        close and at exit.
        """
        self._closing = True
        thread = self._cal_thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join()
        index = getattr(self, "_index", None)
        if isinstance(index, SegmentedHnsw):
            index.join()

    def _close(self, *, checkpoint: bool) -> None:
        if self._closed:
            return
        self._stop_background()
        if checkpoint:
            try:
                changes = self._applied_seq - self._snapshot_seq
                if changes >= self._settings.snapshot_min_changes:
                    self.checkpoint()
            except Exception as exc:  # closing must not fail because a snapshot could not be written
                log.warning("collection %r: snapshot on close failed: %s", self.name, exc)
            self._save_cache()
        if isinstance(self._index, SegmentedHnsw):
            self._index.join()  # no background flush may outlive the collection
        self._closed = True

    _closing = False
    _force_recalibrate = False
    _last_write = 0.0
    _plan_segments = 0

    # -- result cache (see cache/result_cache.py for the rules) ------------------------------------
    def _cache_dir(self) -> Path | None:
        root = self._db.path
        return None if root is None else root / "cache" / str(self._cid)

    def _load_cache(self) -> None:
        directory = self._cache_dir()
        if self._cache is None or directory is None or not self._settings.cache_persist:
            return
        try:
            self._cache.load(directory, self._applied_seq)
        except Exception as exc:  # a cold cache is always correct
            log.warning("collection %r: ignoring the persistent cache: %s", self.name, exc)

    def _save_cache(self) -> None:
        directory = self._cache_dir()
        if self._cache is None or directory is None or not self._settings.cache_persist:
            return
        try:
            self._cache.save(directory, self._applied_seq)
        except Exception as exc:
            log.warning("collection %r: could not save the cache: %s", self.name, exc)

    def cache_info(self) -> dict[str, Any]:
        """Cache counters: hits, misses, semantic_hits, verified_rejects, entries, bytes, ...

        ``invalidated`` counts entries dropped by writes (precise invalidation), ``evicted`` those
        dropped for the memory budget, ``hit_rate`` the share of lookups served from the cache.
        """
        if self._cache is None:
            return {
                "hits": 0,
                "misses": 0,
                "semantic_hits": 0,
                "verified_rejects": 0,
                "entries": 0,
                "bytes": 0,
                "invalidated": 0,
                "evicted": 0,
                "expired": 0,
                "sessions": 0,
                "hit_rate": 0.0,
                "enabled": False,
            }
        return {**self._cache.info(), "enabled": True}

    def cache_clear(self) -> None:
        """Drop every cached result (all sessions)."""
        if self._cache is not None:
            self._cache.clear()

    # -- calibration (see query/planner.py for the rules) ------------------------------------------
    def _wrote(self, n: int) -> None:
        self._writes_since_cal += n
        self._last_write = time.monotonic()
        index = self._index
        if self._plans and (not isinstance(index, SegmentedHnsw) or index.segments != self._plan_segments):
            self._plans.clear()
        self._plan_segments = index.segments if isinstance(index, SegmentedHnsw) else 0
        self._maybe_calibrate()

    def _maybe_calibrate(self) -> None:
        s = self._settings
        index = self._index
        if (
            not s.auto_calibrate
            or not isinstance(index, SegmentedHnsw)
            or len(index) < s.calibration_min_count
        ):
            return
        cal = self._calibration
        if (
            cal is not None
            and not cal.stale(len(index), self._writes_since_cal)
            and not self._force_recalibrate
        ):
            return
        thread = self._cal_thread
        if thread is not None and thread.is_alive():
            return
        self._cal_thread = threading.Thread(
            target=self._calibrate_in_background, name=f"embeddix-calibrate-{self.name}", daemon=True
        )
        self._cal_thread.start()

    def _calibrate_in_background(self) -> None:
        # Wait for writes to pause: calibrating in the middle of a bulk load would take CPU from it
        # and measure a curve that is stale a moment later.
        quiet = self._settings.calibration_quiet_s
        while not self._closing:
            idle = time.monotonic() - self._last_write
            if idle >= quiet:
                break
            time.sleep(min(0.25, quiet - idle))
        if self._closing or self._closed:
            return
        # Lowest CPU priority for this thread only (Linux applies setpriority to a thread id): on a
        # small machine the calibration must not take cores from the searches it is tuning.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            self.calibrate()
        except Exception as exc:  # a failed calibration leaves the old curve (or ef_search) serving
            log.warning("collection %r: calibration failed: %s", self.name, exc)

    def calibrate(
        self, *, sample: int | None = None, k: int = 10, source: str = "auto"
    ) -> Calibration | None:
        """Measure the recall/latency curve now (normally done in the background).

        Args:
            sample: Queries to use (default from settings).
            k: The k of recall@k.
            source: ``"queries"``: the reservoir of real queries this collection has answered;
                ``"sample"``: the collection's own vectors, each moved off itself; ``"auto"``: real
                queries once at least ``calibration_min_queries`` were seen, else the sample.

        Returns:
            The new calibration, or None for an exact index (which needs none).
        """
        self._check_open()
        index = self._index
        if not isinstance(index, SegmentedHnsw) or len(index) <= k + 1:
            return None
        count, seq, writes0 = len(index), self._applied_seq, self._writes_since_cal
        labels = index.live_labels()
        rng = np.random.default_rng(seq)
        n = min(sample or self._settings.calibration_sample, len(labels))
        with self._reservoir_lock:
            seen = self._reservoir[: self._reservoir_n].copy()
        use_queries = source == "queries" or (
            source == "auto" and len(seen) >= self._settings.calibration_min_queries
        )
        if use_queries and len(seen):
            queries = seen[rng.permutation(len(seen))[: max(n, min(len(seen), 2 * n))]]
            origin = "queries"
        else:
            qlabels = rng.choice(labels, n, replace=False)
            queries = self._calibration_queries(index, labels, qlabels, rng)
            origin = "sample"
        n = len(queries)
        truth = self._exact_truth(index, labels, queries, k)

        def search(q: np.ndarray, kk: int, ef: int) -> np.ndarray:
            if self._closing:
                raise InterruptedError("collection closing")
            return index.search(q, kk, ef=ef).labels[0]

        try:
            cal = calibrate(
                search, queries, np.full(n, -1, np.int64), truth, k=k, count=count, seq=seq, source=origin
            )
        except InterruptedError:
            return None
        with self._write_lock:
            if self._index is not index:
                return None  # the index was rebuilt meanwhile; its own calibration will follow
            self._calibration = cal
            self._writes_since_cal = max(0, self._writes_since_cal - writes0)
            if cal.source == "queries":
                self._force_recalibrate = False
            self._plans.clear()
            if self._cache is not None:
                self._cache.clear()  # plans choose new beam widths: cached answers came from the old ones
        self._save_calibration(cal)
        log.info("collection %r calibrated: ef %s -> recall %s", self.name, cal.efs, cal.recall)
        return cal

    def _remember_query(self, q: np.ndarray) -> None:
        """Keep a uniform sample of answered queries (reservoir sampling; every 8th once full)."""
        if not isinstance(self._index, SegmentedHnsw):
            return
        with self._reservoir_lock:
            self._reservoir_seen += 1
            if self._reservoir_n < _RESERVOIR:
                self._reservoir[self._reservoir_n] = q
                self._reservoir_n += 1
                if self._reservoir_n == self._settings.calibration_min_queries:
                    cal = self._calibration
                    if cal is not None and cal.source != "queries":
                        self._force_recalibrate = True
            else:
                j = self._reservoir_rng.randrange(self._reservoir_seen)  # ~0.3 us; a numpy Generator ~20
                if j < _RESERVOIR:
                    self._reservoir[j] = q
        if self._force_recalibrate:
            self._maybe_calibrate()

    def _calibration_queries(
        self, index: SegmentedHnsw, labels: np.ndarray, qlabels: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Sampled records moved off themselves, so they behave like new queries.

        A stored vector used as its own query is too easy for HNSW (the graph holds it and its exact
        neighbourhood), which would make the curve promise more recall than real, unseen queries get.
        Each sample is moved in a random direction by its own nearest-neighbour distance: the query
        lands in the same region of the data, about as far from the collection as a new point would.
        """
        own = index.get_vectors(qlabels)
        nn = self._exact_truth(index, labels, own, 1, exclude=qlabels)[:, 0]
        gap = np.linalg.norm(own - index.get_vectors(nn), axis=1)
        direction = rng.standard_normal(own.shape).astype(np.float32)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        queries = own + direction * (gap[:, None] * self._settings.calibration_noise)
        if self._space == "ip" and self._normalize:
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        return np.ascontiguousarray(queries, dtype=np.float32)

    def _exact_truth(
        self,
        index: SegmentedHnsw,
        labels: np.ndarray,
        queries: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
    ) -> np.ndarray:
        """Exact top-k labels per query over the whole collection (optionally excluding one label each)."""
        kk = k + (1 if exclude is not None else 0)
        best_l = np.empty((len(queries), 0), np.int64)
        best_d = np.empty((len(queries), 0), np.float32)
        for s in range(0, len(labels), 50_000):
            chunk = labels[s : s + 50_000]
            # from the store, not the index: hnswlib's get_items takes ~15x longer for 50K labels
            part = exact_topk(self._vectors_from_store(chunk), chunk, queries, kk, self._space)
            best_l = np.concatenate([best_l, part.labels], axis=1)
            best_d = np.concatenate([best_d, part.distances], axis=1)
            order = np.argsort(best_d, axis=1, kind="stable")[:, :kk]
            best_l = np.take_along_axis(best_l, order, axis=1)
            best_d = np.take_along_axis(best_d, order, axis=1)
        if exclude is None:
            return best_l
        out = np.empty((len(queries), k), np.int64)
        for i, own in enumerate(exclude.tolist()):
            row = [x for x in best_l[i].tolist() if x != own][:k]
            out[i, : len(row)] = row
            out[i, len(row) :] = -1
        return out

    def _calibration_path(self) -> Path | None:
        d = self._index_dir()
        return None if d is None else d / "calibration.json"

    def _save_calibration(self, cal: Calibration) -> None:
        path = self._calibration_path()
        if path is None or self._closed:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            doc = {
                "magic": "embeddix-calibration",
                "format_version": 1,
                "store_id": self._store.store_id,
                "cid": self._cid,
                "params": self._index_params(),
                "calibration": json.loads(cal.to_json()),
            }
            atomic_write_bytes(path, json.dumps(doc).encode())
        except OSError as exc:  # a lost calibration is measured again; not worth failing for
            log.warning("collection %r: could not save calibration: %s", self.name, exc)

    def _load_calibration(self) -> None:
        path = self._calibration_path()
        if path is None or not path.exists() or not isinstance(self._index, SegmentedHnsw):
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("magic") != "embeddix-calibration" or doc.get("format_version") != 1:
                return
            if doc.get("params") != self._index_params():
                return
            if (
                doc.get("store_id", self._store.store_id) != self._store.store_id
                or doc.get("cid", self._cid) != self._cid
            ):
                return  # another store's or collection's curve: measure our own
            cal = Calibration.from_json(json.dumps(doc["calibration"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("collection %r: ignoring unreadable calibration: %s", self.name, exc)
            return
        self._calibration = cal
        # transactions since the curve was measured: a conservative stand-in for records written
        self._writes_since_cal = max(0, self._applied_seq - cal.seq)

    @property
    def calibration(self) -> Calibration | None:
        """The recall/latency curve in use, if the collection has been calibrated."""
        return self._calibration

    def _drop_files(self) -> None:
        directory = self._index_dir()
        if directory is not None:
            remove_snapshots(directory)
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(
                f"collection {self.name!r} is closed or was dropped; get it again from the database"
            )

    # -- writes ------------------------------------------------------------------------------------
    def add(
        self, ids: str | Sequence[str], vectors: Any, documents: Any = None, metadatas: Any = None
    ) -> list[str]:
        """Insert new records as one atomic batch.

        Args:
            ids: One id or a list of unique ids (non-empty strings, at most 512 bytes).
            vectors: One vector or an (n, dim) matrix / list of vectors.
            documents: Optional text per record (indexed for full-text search).
            metadatas: Optional metadata dict per record (str, int, float, bool or lists of those).

        Returns:
            The ids, in order.

        Raises:
            DuplicateIdError: An id is already stored (use :meth:`upsert`); nothing is written.
            InvalidArgumentError: Bad input (its subclasses say which); nothing is written.
        """
        return self._put(ids, vectors, documents, metadatas, upsert=False)

    def upsert(
        self, ids: str | Sequence[str], vectors: Any, documents: Any = None, metadatas: Any = None
    ) -> list[str]:
        """Insert records, replacing any stored under the same ids, as one atomic batch.

        Arguments are those of :meth:`add`.
        """
        return self._put(ids, vectors, documents, metadatas, upsert=True)

    def _put(self, ids: Any, vectors: Any, documents: Any, metadatas: Any, *, upsert: bool) -> list[str]:
        self._check_open()
        mat = as_matrix(vectors, self.dim)
        id_list = check_ids(ids, mat.shape[0])
        docs = check_documents(documents, len(id_list))
        metas = check_metadatas(metadatas, len(id_list))
        prepared = self._prepare(mat)
        blobs = [row.tobytes() for row in mat]
        meta_json = [dump_metadata(m) for m in metas]
        with self._write_lock:
            self._sync_locked()
            res = self._store.put(self._cid, id_list, blobs, docs, meta_json, upsert=upsert)
            self._apply_put(res.labels, res.created, res.seq, prepared, metas)
        return id_list

    def _sync_locked(self) -> None:
        """Catch up before a write (the write lock is held): a sequence-number read when nothing changed."""
        if self._store.path is not None:
            self._replay()

    def _apply_put(
        self,
        labels: list[int],
        created: list[bool],
        seq: int,
        prepared: np.ndarray,
        metas: list[dict[str, Any]],
    ) -> None:
        if seq != self._applied_seq + 1:
            self._replay()  # another process wrote in between: replay brings ours in too, in order
            return
        self._index.add(np.asarray(labels, np.int64), prepared, np.asarray(created, bool))
        self._applied_seq = seq
        self._update_filters(labels, metas)
        replaced = [lb for lb, new in zip(labels, created, strict=True) if not new]
        if replaced:
            self._vectors.discard(replaced)
            self._rows.discard(replaced)
        if self._cache is not None:
            if replaced:
                self._cache.on_labels(replaced)
            self._cache.on_insert(prepared, metas, labels)
        self._maybe_switch()
        self._wrote(len(labels))

    def update(
        self, ids: str | Sequence[str], *, vectors: Any = None, documents: Any = None, metadatas: Any = None
    ) -> None:
        """Change stored records in place; every id must exist. Fields left as None are kept.

        Raises:
            NotFoundError: An id is not stored; nothing is changed.
        """
        self._check_open()
        id_list = check_ids(ids)
        n = len(id_list)
        docs = check_documents(documents, n) if documents is not None else None
        metas = check_metadatas(metadatas, n) if metadatas is not None else None
        if vectors is not None:
            mat = as_matrix(vectors, self.dim)
            if mat.shape[0] != n:
                raise InvalidArgumentError(f"got {mat.shape[0]} vectors for {n} ids; expected one per id")
            with self._write_lock:
                current = self._store.rows_by_ids(self._cid, id_list, vectors=False)
                missing = [i for i in id_list if i not in current]
                if missing:
                    raise NotFoundError(
                        f"cannot update {len(missing)} id(s) that are not stored, "
                        f"e.g. {missing[0]!r}; nothing was changed"
                    )
                new_docs = docs if docs is not None else [current[i][1] for i in id_list]
                new_metas = (
                    metas
                    if metas is not None
                    else [json.loads(current[i][2]) if current[i][2] else {} for i in id_list]
                )
                self._put(id_list, mat, new_docs, new_metas, upsert=True)
            return
        with self._write_lock:
            self._sync_locked()
            res = self._store.update(
                self._cid, id_list, docs, [dump_metadata(m) for m in metas] if metas is not None else None
            )
            if res.seq != self._applied_seq + 1:
                self._replay()
                return
            self._applied_seq = res.seq
            self._rows.discard(res.labels)
            if metas is not None:
                self._update_filters(res.labels, metas)
            if self._cache is not None:
                # changed documents/metadata make cached hits stale; new metadata may also admit the
                # record into filtered answers it was not part of, exactly like an insert
                self._cache.on_labels(res.labels)
                if metas is not None:
                    self._cache.on_insert(
                        self._index.get_vectors(np.asarray(res.labels, np.int64)), metas, res.labels
                    )

    def update_metadata(self, rid: str, patch: dict[str, Any]) -> Record:
        """Merge ``patch`` into one record's metadata (a None value removes that key).

        Returns:
            The updated record.
        """
        check_lookup_ids(rid if isinstance(rid, str) else [rid])
        patch_clean = check_patch(patch)
        with self._write_lock:
            rec = self[rid]
            merged = dict(rec.metadata)
            for key, value in patch_clean.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            self.update(rid, metadatas=[check_metadata(merged)])
        return self[rid]

    def delete(self, ids: str | Sequence[str] | None = None, *, filter: dict[str, Any] | None = None) -> int:
        """Delete records by id or by metadata filter (exactly one of the two).

        Absent ids are not an error. Deletes are tombstones in the index, reclaimed as new records arrive.

        Returns:
            How many records were deleted.
        """
        self._check_open()
        if (ids is None) == (filter is None):
            raise InvalidArgumentError("delete takes ids or filter (exactly one of them)")
        with self._write_lock:
            self._sync_locked()
            if ids is not None:
                labels, seq = self._store.delete_ids(self._cid, check_ids(ids))
            else:
                flt = parse_filter(filter)
                if flt is None:
                    raise InvalidArgumentError(
                        "delete(filter={}) would delete everything; pass a non-empty filter, or drop the "
                        "collection"
                    )
                where, params = flt.to_sql("metadata")
                labels, seq = self._store.delete_where(self._cid, where, params)
            if not labels:
                return 0
            if seq != self._applied_seq + 1:
                self._replay()
                return len(labels)
            self._index.remove(np.asarray(labels, np.int64))
            self._applied_seq = seq
            self._update_filters(labels, None)
            self._vectors.discard(labels)
            self._rows.discard(labels)
            if self._cache is not None:
                self._cache.on_labels(labels)
            self._wrote(len(labels))
        return len(labels)

    def clear(self) -> int:
        """Delete every record (the collection and its settings stay).

        Returns:
            How many records were deleted.
        """
        self._check_open()
        with self._write_lock:
            self._sync_locked()
            labels, seq = self._store.delete_where(self._cid, "1", [])
            if not labels:
                return 0
            if seq != self._applied_seq + 1:
                self._replay()
                return len(labels)
            self._index.remove(np.asarray(labels, np.int64))
            self._applied_seq = seq
            self._clear_filters()
            self._vectors.clear()
            self._rows.clear()
            if self._cache is not None:
                self._cache.clear()
            self._wrote(len(labels))
        return len(labels)

    def compact(self) -> None:
        """Rebuild the index from the live records, reclaiming every tombstone, and save a snapshot."""
        self._check_open()
        with self._write_lock:
            if self._cache is not None:
                self._cache.clear()
            self._rebuild()
            self._checkpoint(force=True)

    def configure(self, *, ef_search: int | None = None, index_threshold: int | None = None) -> None:
        """Change runtime parameters (stored with the collection)."""
        changes: dict[str, Any] = {}
        if ef_search is not None:
            changes["ef_search"] = ef_search
        if index_threshold is not None:
            changes["index_threshold"] = index_threshold
        if not changes:
            return
        import dataclasses

        with self._write_lock:
            cfg = dataclasses.replace(self._config, **changes)
            self._store.set_config(self._cid, cfg.to_json())
            self._config = cfg
            if isinstance(self._index, SegmentedHnsw):
                self._index.ef_search = cfg.ef_search
            self._plans.clear()
            if self._cache is not None:
                self._cache.clear()
            self._maybe_switch()

    def check_model(self, model_id: str, dim: int | None = None) -> None:
        """Raise if this collection was built with another embedding model (records it if none yet)."""
        if dim is not None and dim != self.dim:
            raise ModelMismatchError(
                f"collection {self.name!r} has dimension {self.dim}, but model {model_id!r} "
                f"makes {dim}-d vectors"
            )
        current = self._config.embedding_model
        if current is None:
            import dataclasses

            with self._write_lock:
                cfg = dataclasses.replace(self._config, embedding_model=model_id)
                self._store.set_config(self._cid, cfg.to_json())
                self._config = cfg
        elif current != model_id:
            raise ModelMismatchError(
                f"collection {self.name!r} was built with embedding model {current!r}; "
                "it cannot be used with "
                f"{model_id!r} (vectors of different models are not comparable)"
            )

    # -- filter label cache ------------------------------------------------------------------------
    def _filter_entry(self, flt: Filter) -> _FilterEntry:
        key = flt.canonical
        with self._filters_lock:
            entry = self._filters.get(key)
            if entry is not None:
                self._filters.move_to_end(key)
                return entry
            epoch = self._filters_epoch
        where, params = flt.to_sql("metadata")
        entry = _FilterEntry(flt, self._store.labels_where(self._cid, where, params), self._filters_lock)
        with self._filters_lock:
            # A write that landed while we read the store updated the cached entries, not this one:
            # use it for this search (it raced that write anyway), but do not keep it.
            if self._filters_epoch == epoch:
                self._filters[key] = entry
                while len(self._filters) > _FILTER_CACHE_SIZE:
                    self._filters.popitem(last=False)
        return entry

    def _update_filters(self, labels: Sequence[int], metas: Sequence[dict[str, Any]] | None) -> None:
        with self._filters_lock:
            self._filters_epoch += 1
            if not self._filters:
                return
            if len(labels) > _FILTER_MAINTAIN_MAX:
                self._filters.clear()
                return
            for entry in self._filters.values():
                for i, label in enumerate(labels):
                    entry.update(label, None if metas is None else metas[i])

    def _clear_filters(self) -> None:
        with self._filters_lock:
            self._filters_epoch += 1
            self._filters.clear()

    # -- reads -------------------------------------------------------------------------------------
    @overload
    def get(self, ids: str, *, include_vectors: bool = True) -> Record | None: ...  # type: ignore[overload-overlap]
    @overload
    def get(self, ids: Sequence[str], *, include_vectors: bool = True) -> list[Record | None]: ...

    def get(
        self, ids: str | Sequence[str], *, include_vectors: bool = True
    ) -> Record | list[Record | None] | None:
        """Fetch records by id.

        Args:
            ids: One id, or a list of ids.
            include_vectors: Also return the stored vectors.

        Returns:
            For one id, the record or None; for a list, records in the order asked, None where absent.
        """
        self._sync()  # the store answers; this notices a collection dropped by another process
        id_list, single = check_lookup_ids(ids)
        if not id_list:
            return []
        rows = self._store.rows_by_ids(self._cid, id_list, vectors=include_vectors)
        out: list[Record | None] = []
        for rid in id_list:
            row = rows.get(rid)
            if row is None:
                out.append(None)
                continue
            vec = np.frombuffer(row[3], np.float32).copy() if include_vectors and row[3] is not None else None
            out.append(Record(rid, vec, row[1], json.loads(row[2]) if row[2] else {}))
        return out[0] if single else out

    def scan(
        self, filter: dict[str, Any] | None = None, *, include_vectors: bool = False, batch_size: int = 1000
    ) -> Iterator[Record]:
        """Iterate over stored records (in insertion order), optionally filtered.

        Args:
            filter: A metadata filter, or None for every record.
            include_vectors: Also return vectors.
            batch_size: Rows read from the store per round trip.
        """
        self._sync()
        flt = parse_filter(filter)
        batch_size = check_int(batch_size, "batch_size", 1, 1_000_000)
        where, params = flt.to_sql("metadata") if flt is not None else (None, [])
        after = -1
        while True:
            rows = self._store.scan(
                self._cid, where, params, after_label=after, limit=batch_size, vectors=include_vectors
            )
            if not rows:
                return
            for _label, rid, doc, meta, vec in rows:
                yield Record(
                    rid,
                    np.frombuffer(vec, np.float32).copy() if vec is not None else None,
                    doc,
                    json.loads(meta) if meta else {},
                )
            after = rows[-1][0]

    def count(self, filter: dict[str, Any] | None = None) -> int:
        """How many records match ``filter`` (all records when None)."""
        self._sync()
        flt = parse_filter(filter)
        if flt is None:
            return self._store.count(self._cid)
        where, params = flt.to_sql("metadata")
        return self._store.count(self._cid, where, params)

    def stats(self) -> CollectionStats:
        """Counts, index kind and parameters."""
        self._sync()
        index = self._index
        size = index.capacity if isinstance(index, SegmentedHnsw) else len(index)
        tomb = index.tombstones if isinstance(index, SegmentedHnsw) else 0
        c = self._config
        return CollectionStats(
            name=self.name,
            count=len(index),
            dim=c.dim,
            metric=self.metric,
            index=index.kind,
            index_size=size,
            tombstones=tomb,
            last_seq=self._applied_seq,
            snapshot_seq=self._snapshot_seq,
            embedding_model=c.embedding_model,
            params={
                "segments": index.segments if isinstance(index, SegmentedHnsw) else 1,
                "write_buffered": index.buffered if isinstance(index, SegmentedHnsw) else 0,
                "segment_size": c.segment_size,
                "hnsw_m": c.hnsw_m,
                "ef_construction": c.ef_construction,
                "ef_search": c.ef_search,
                "index_threshold": c.index_threshold,
                "memory_bytes": index.memory_bytes(),
            },
        )

    # -- search ------------------------------------------------------------------------------------
    def _knn(
        self, queries: np.ndarray, k: int, ef: int | None, flt: Filter | None, num_threads: int = 1
    ) -> IndexResult:
        """Nearest labels for prepared queries, restricted to a filter's matches when given.

        Strategy: when few records match (at most ``exact_filter_min`` or ``exact_filter_fraction`` of
        the collection), scan exactly those; otherwise search the index with the match set as a filter
        hook, which keeps exploring until it has k allowed results.
        """
        index = self._index
        if flt is None:
            return index.search(queries, k, ef=ef, num_threads=num_threads)
        entry = self._filter_entry(flt)
        matched = len(entry.labels)
        small = self._scan_exactly(matched, index)
        if matched == 0:
            nq = queries.shape[0]
            return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))
        if small:
            labels = entry.array()
            # vectors through the LRU in front of the store: hnswlib's get_items makes a Python float
            # per coordinate (~13 us a vector), which would dominate a scan of a few thousand
            vecs = (
                self._vectors.get(labels) if isinstance(index, SegmentedHnsw) else index.get_vectors(labels)
            )
            return exact_topk(vecs, labels, queries, k, self._space)
        # hnswlib's filtered search already keeps exploring until its beam holds ef *allowed* points,
        # so the beam need not grow with selectivity (measured: recall@10 0.994 at ef 32, 10% match).
        ef_f = max(ef or self._config.ef_search, k)
        return index.search(
            queries, min(k, matched), ef=ef_f, allowed=entry.labels.__contains__, num_threads=num_threads
        )

    def _query(self, vector: Any) -> np.ndarray:
        """One query vector, checked, as the index compares it (unit length for cosine)."""
        q, sq = as_query(vector, self.dim)
        return unit_query(q, sq) if self._normalize else q

    def _to_hits(
        self,
        labels: Sequence[int],
        dists: Sequence[float],
        *,
        include_vectors: bool,
        scores: Sequence[float] | None = None,
        metric: str | None = None,
        raw: list[tuple[Any, ...]] | None = None,
        rows: dict[int, tuple[Any, ...]] | None = None,
        flt: Filter | None = None,
    ) -> list[Hit]:
        """Hits for index labels (rows looked up unless the caller fetched them already).

        With ``flt``, a row whose metadata no longer matches is left out: the label set that admitted it
        was read before a write that changed it, and the row after (read skew between two reads).
        """
        if rows is None:
            rows = (
                self._store.rows_by_labels(self._cid, labels, vectors=True)
                if include_vectors
                else self._rows.get(labels)
            )
        l2 = self._space == "l2"
        out: list[Hit] = []
        loads = orjson.loads
        m = metric or self._metric
        get = rows.get
        for i, label in enumerate(labels):
            row = get(label)
            if row is None:
                continue  # deleted after the index answered
            d = dists[i]
            if scores is not None:
                score = scores[i]
            elif l2:
                d = d**0.5
                score = 1.0 / (1.0 + d)
            else:
                score = 1.0 - d
            meta = loads(row[3]) if row[3] else {}
            if flt is not None and not flt.matches(meta):
                continue
            if include_vectors:
                vec = np.frombuffer(row[4], np.float32).copy()
                out.append(Hit(row[1], score, d, row[2], meta, m, vec))
            else:
                out.append(make_hit(row[1], score, d, row[2], meta, m))
            if raw is not None:
                raw.append((row[1], score, d, row[2], row[3]))
        return out

    def _plan(self, k: int, recall: float | None, deadline_ms: float | None, ef: int | None) -> Plan:
        """Choose the index pass for a search (cached; see ``query/planner.py``)."""
        index = self._index
        if not isinstance(index, SegmentedHnsw):
            return Plan("exact", None, 1.0, recall, deadline_ms, steps=(0,), reason="exact search")
        key = (k, recall, deadline_ms, ef)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        cal = self._calibration
        target = recall if recall is not None else self._settings.default_recall
        limited = False
        if ef is not None:
            use = max(int(ef), k)
            reason = "ef given by the caller"
        elif cal is None:
            use = max(self._config.ef_search, k)
            reason = "not calibrated yet: the collection's ef_search"
        else:
            use, _ = cal.ef_for_recall(target, k)
            reason = f"smallest ef whose calibrated recall@{cal.k} reaches {target}"
            if deadline_ms is not None:
                fit = cal.ef_for_budget(deadline_ms * 1000.0 * DEADLINE_SAFETY, k)
                if fit is None or fit < use:
                    use = fit if fit is not None else max(k, cal.efs[0])
                    limited = True
                    reason = f"deadline {deadline_ms} ms allows ef {use} at most (p99 latency model)"
        if self._cache is not None and ef is None and recall is None and deadline_ms is None:
            # Default searches keep factor*k candidates for the result cache, found with the same beam
            # as the search itself (cached and uncached answers stay identical), so their beam is at
            # least that wide. The semantic tier needs them: on MiniLM text, 80 exact candidates
            # certify 92% of near-duplicate queries (cosine 0.998), 40 only 60%. Searches that name a
            # recall target, a deadline or ef keep their own beam and cache fewer candidates.
            floor = k * self._cache.settings.candidate_factor
            if use < floor:
                use = floor
                reason += f"; at least {floor} so the result cache keeps {floor} candidates"
        expected = cal.recall_at(use, k) if cal is not None else None
        plan = Plan(
            "hnsw",
            use,
            expected,
            recall,
            deadline_ms,
            steps=(use,),
            calibrated=cal is not None,
            deadline_limited=limited,
            segments=index.segments,
            parallel_segments=index.segments > 1 and (os.cpu_count() or 1) > 1,
            reason=reason,
        )
        if len(self._plans) > 256:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _filter_strategy(self, flt: Filter | None) -> tuple[str | None, int | None]:
        if flt is None:
            return None, None
        matched = len(self._filter_entry(flt).labels)
        return ("exact-subset" if self._scan_exactly(matched, self._index) else "index-hook"), matched

    def _scan_exactly(self, matched: int, index: VectorIndex) -> bool:
        """The filter strategy rule: scan the matches exactly when they are few (or there is no HNSW)."""
        s = self._settings
        few = matched <= max(s.exact_filter_min, s.exact_filter_fraction * len(index))
        return few or not isinstance(index, SegmentedHnsw)

    def explain(
        self,
        vector: Any = None,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        recall: float | None = None,
        deadline_ms: float | None = None,
        ef: int | None = None,
    ) -> Plan:
        """The plan a search with these arguments would run, as data (nothing is searched).

        Returns:
            The :class:`~embeddix_core.query.planner.Plan`: index, ef, expected recall, filter strategy,
            whether the plan cache served it.
        """
        self._check_open()
        k = check_k(k)
        recall, deadline_ms = check_recall(recall), check_deadline(deadline_ms)
        ef = check_ef(ef)
        if vector is not None:
            self._query(vector)
        self._sync()
        key = (k, recall, deadline_ms, ef)
        was_cached = key in self._plans
        plan = self._plan(k, recall, deadline_ms, ef)
        strategy, matches = self._filter_strategy(parse_filter(filter) if filter else None)
        return dataclasses.replace(
            plan, plan_cached=was_cached, filter_strategy=strategy, filter_matches=matches
        )

    def search(
        self,
        vector: Any = None,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        recall: float | None = None,
        deadline_ms: float | None = None,
        ef: int | None = None,
        text: str | None = None,
        text_weight: float = 0.5,
        mmr_lambda: float | None = None,
        fetch_k: int | None = None,
        include_vectors: bool = False,
        cache: bool = True,
        session: str | None = None,
        profile_version: int = 0,
    ) -> Hits:
        """Find the k records nearest to ``vector``, best first.

        Args:
            vector: The query vector (dimension ``dim``). May be None for a text-only search.
            k: How many hits; larger than the collection returns every (matching) record.
            filter: Metadata filter (see ``embeddix_core.query.filters``).
            recall: The recall@k wanted (e.g. 0.95); the planner picks the beam width from the
                collection's calibration. Default: the collection's default target (0.95).
            deadline_ms: Time budget; the planner picks the widest beam its latency model fits, and the
                result is marked ``partial`` when that is narrower than the recall target asks.
            ef: An explicit HNSW beam width (overrides ``recall``).
            text: Hybrid search: also rank documents by BM25 full-text match and fuse by reciprocal rank.
            text_weight: Weight of the text ranking in the fusion (0..1; the vector ranking gets the rest).
            mmr_lambda: If set, diversify with maximal marginal relevance (1.0 = pure relevance).
            fetch_k: Candidates considered by MMR / hybrid fusion (default ``max(4k, 20)``).
            include_vectors: Return stored vectors in the hits.
            cache: Use the result caches (default True); False bypasses every cache for this call.
            session: A per-agent/session cache namespace (its entries are never served to others).
            profile_version: The caller's personalization profile version (part of the cache key, so a
                profile change invalidates only that profile's entries).

        Returns:
            :class:`Hits` (a list of :class:`Hit`) with ``score`` higher-is-better in the collection's
            metric (``"rrf"`` for hybrid searches, ``"bm25"`` for text-only ones), plus ``partial`` and
            ``plan``.
        """
        t0 = time.perf_counter()
        self._check_open()
        k = check_k(k)
        if recall is not None:
            recall = check_recall(recall)
        if deadline_ms is not None:
            deadline_ms = check_deadline(deadline_ms)
        if ef is not None:
            ef = check_ef(ef)
        flt = parse_filter(filter) if filter else None
        if text is not None or vector is None:
            plan = self._plan(k, recall, deadline_ms, ef)
            return Hits(
                self._hybrid(vector, text, k, flt, plan.ef, text_weight, fetch_k, include_vectors), plan=plan
            )
        q = self._query(vector)
        self._sync()
        if self._reservoir_n < _RESERVOIR or self._reservoir_seen % 8 == 0:
            self._remember_query(q)
        else:
            self._reservoir_seen += 1
        plan = self._plan(k, recall, deadline_ms, ef)
        if mmr_lambda is not None:
            return Hits(self._mmr(q, k, flt, plan.ef, mmr_lambda, fetch_k, include_vectors), plan=plan)
        cm = self._cache
        if cache and cm is not None and not include_vectors:
            return self._cached_search(
                cm, q, k, flt, plan, (recall, deadline_ms, ef, profile_version), session, t0
            )
        res = self._knn(q.reshape(1, -1), k, plan.ef, flt)
        labels = res.labels[0]
        if labels.size and labels[-1] < 0:
            keep = labels >= 0
            hits = self._to_hits(
                labels[keep].tolist(),
                res.distances[0][keep].tolist(),
                include_vectors=include_vectors,
                flt=flt,
            )
        else:
            hits = self._to_hits(
                labels.tolist(), res.distances[0].tolist(), include_vectors=include_vectors, flt=flt
            )
        partial = plan.deadline_limited
        if deadline_ms is not None and (time.perf_counter() - t0) * 1000.0 > deadline_ms:
            partial = True
        return Hits(hits, partial=partial, plan=plan)

    def _cached_search(
        self,
        cm: CacheManager,
        q: np.ndarray,
        k: int,
        flt: Filter | None,
        plan: Plan,
        params: tuple[Any, ...],
        session: str | None,
        t0: float,
    ) -> Hits:
        ns = cm.namespace(session)
        canonical = flt.canonical if flt is not None else None
        family = ns.family(k, canonical, params)
        key = q.tobytes() + repr((k, canonical, params)).encode()
        index = self._index

        def probe(v: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
            # a second, cheap route through the graph for a semantic lookup (see ResultCache._certify):
            # a beam of k (at least 10)
            res = self._knn(v.reshape(1, -1), kk, max(kk, 10), flt)
            labels, dists = res.labels[0], res.distances[0]
            if labels.size and labels[-1] < 0:  # padding (-1) only ever trails the found labels
                live = labels >= 0
                return labels[live], dists[live]
            return labels, dists

        found = ns.lookup(key, q, family, k, self._vectors.get, probe if cm.settings.probe else None)
        if found is not None:
            if found.hits is not None:
                # Entries keep rows (metadata as JSON text), so every hit handed out is a fresh object a
                # caller may mutate without touching the cache.
                loads, metric = orjson.loads, self._metric
                hits = [
                    make_hit(r[0], r[1], r[2], r[3], loads(r[4]) if r[4] else {}, metric) for r in found.hits
                ]
            else:
                assert found.labels is not None and found.dists is not None
                hits = self._to_hits(found.labels, found.dists, include_vectors=False)
            return Hits(hits, plan=self._plan_variant(plan, found.kind))
        big = k * cm.settings.candidate_factor
        ef = plan.ef
        # Which candidate sets may certify semantic hits (the argument is in cache/result_cache.py): an
        # exact search's, and a default search's, whose beam is widened here to beam_factor * K. An
        # approximate search misses records, and a fresh search for a near-duplicate query can find one
        # of them inside the certified ball and beat the re-ranked candidates; a beam twice as wide as the
        # fresh search's finds nearly all of what that one would (the probe above covers the rest). A
        # miss returns the wide search's top k, so exact hits are never worse than an uncached search
        # either. Searches with their own recall target, deadline or ef keep their beam (identical to an
        # uncached search) and get exact hits only.
        exact = ef is None or (flt is not None and self._filter_strategy(flt)[0] == "exact-subset")
        widened = ef is not None and params[:3] == (None, None, None)
        if ef is not None:
            if widened:
                ef = max(ef, math.ceil(cm.settings.beam_factor * big))
            else:
                big = max(k, min(big, ef))
        semantic = ns.semantic and (exact or widened)
        # A write landing while we search must not be cached over: its invalidation may already have
        # run. Writers bump _applied_seq after changing the index and before invalidating, so an
        # unchanged number at store time proves no write overlapped this search.
        seq0 = self._applied_seq
        res = self._knn(q.reshape(1, -1), big, ef, flt)
        keep = res.labels[0] >= 0
        labels, dists = res.labels[0][keep], res.distances[0][keep]
        rows: list[tuple[Any, ...]] = []
        hits = self._to_hits(
            labels[:k].tolist(), dists[:k].tolist(), include_vectors=False, raw=rows, flt=flt
        )
        partial = plan.deadline_limited or (
            plan.deadline_ms is not None and (time.perf_counter() - t0) * 1000.0 > plan.deadline_ms
        )
        if not partial and len(hits) == min(k, len(labels)) and self._index is index:
            need = labels[:0]
            with self._cache_store_lock:
                if self._applied_seq == seq0:
                    need = ns.store(
                        key,
                        q.copy(),
                        family,
                        k,
                        flt,
                        rows,
                        labels.copy(),
                        dists.copy(),
                        full=len(labels) >= big,
                        seq=seq0,
                        semantic=semantic,
                        exact=exact,
                    )
            if len(need):
                # int8 codes of the candidates let a semantic hit bound their distances without the
                # store; only labels no entry has coded yet are read (a write meanwhile drops the
                # entry: see attach)
                ns.attach(key, seq0, need, self._vectors_from_store(need))
        if ef == plan.ef or ef is None:
            return Hits(hits, partial=partial, plan=self._plan_variant(plan, "miss"))
        vkey = (id(plan), f"miss@{ef}")  # memoized like _plan_variant's
        got = self._plan_variants.get(vkey)
        if got is None or got[0] is not plan:
            cal = self._calibration
            wide = dataclasses.replace(
                plan,
                result_cache="miss",
                ef=ef,
                steps=(ef,),
                expected_recall=cal.recall_at(ef, k) if cal is not None else plan.expected_recall,
                reason=f"{plan.reason}; the result cache searched with ef {ef} (its {big} candidates)",
            )
            got = self._plan_variants[vkey] = (plan, wide)
        return Hits(hits, partial=partial, plan=got[1])

    def _rows_from_store(self, labels: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        return self._store.rows_by_labels(self._cid, labels, vectors=False)

    def _vectors_from_store(self, labels: np.ndarray) -> np.ndarray:
        """Index-space vectors (unit length for cosine) of stored labels, read from the store."""
        wanted = labels.tolist()
        rows = self._store.rows_by_labels(self._cid, wanted, vectors=True)
        if len(rows) == len(wanted):  # one copy out of the joined blobs (a semantic hit fetches ~11)
            joined = b"".join([rows[label][4] for label in wanted])
            out = np.frombuffer(joined, np.float32).reshape(len(wanted), self.dim).copy()
        else:
            out = np.empty((len(wanted), self.dim), np.float32)
            for i, label in enumerate(wanted):
                row = rows.get(label)
                if row is None:  # deleted meanwhile: NaN re-ranks as infinitely far
                    out[i] = np.nan
                else:
                    out[i] = np.frombuffer(row[4], np.float32)
        if self._normalize:
            out = unit_rows(out, keep_zeros=True)  # NaN (gone) or zero rows stay as they are
        return out

    def _plan_variant(self, plan: Plan, result_cache: str) -> Plan:
        """``plan`` with ``result_cache`` set, memoized (dataclasses.replace costs ~10 us per call)."""
        key = (id(plan), result_cache)
        got = self._plan_variants.get(key)
        if got is None or got[0] is not plan:
            if len(self._plan_variants) > 1024:
                self._plan_variants.clear()
            got = self._plan_variants[key] = (plan, dataclasses.replace(plan, result_cache=result_cache))
        return got[1]

    def search_iter(
        self,
        vector: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        recall: float | None = None,
        deadline_ms: float | None = None,
        ef: int | None = None,
        stable_rounds: int | None = None,
        include_vectors: bool = False,
    ) -> Generator[SearchStep, None, None]:
        """Progressive search: yield result sets of increasing quality, the last with ``final=True``.

        The first pass uses a narrow beam (fast); each later pass widens it about four-fold up to the
        planned ef, so a caller (an LLM pipeline, the MCP ``stream`` tool) can start on the first
        results. Closing the iterator (``break``, ``close()``) stops the work: no further pass runs.

        Args:
            vector: The query vector.
            k: Hits per step.
            filter: Metadata filter.
            recall: Recall target of the final pass (see :meth:`search`).
            deadline_ms: Time budget: a pass that would not fit the time left is not started, and the
                last step is then marked final with ``hits.partial``.
            ef: Explicit beam width of the final pass.
            stable_rounds: Stop early, marking the step final, once the top-k ids have not changed for
                this many consecutive passes (None: never stop early).
            include_vectors: Return stored vectors in the hits.

        Yields:
            :class:`SearchStep` objects; the final step equals a plain search at the same ``ef``.
        """
        t0 = time.perf_counter()
        self._check_open()
        k = check_k(k)
        recall, deadline_ms = check_recall(recall), check_deadline(deadline_ms)
        ef = check_ef(ef)
        if stable_rounds is not None and (not isinstance(stable_rounds, int) or stable_rounds < 1):
            raise InvalidArgumentError(
                f"stable_rounds must be a positive integer or None; got {stable_rounds!r}"
            )
        flt = parse_filter(filter) if filter else None
        q = self._query(vector).reshape(1, -1)
        self._sync()
        plan = self._plan(k, recall, deadline_ms, ef)
        steps: tuple[int | None, ...] = progressive_steps(plan.ef, k) if plan.ef is not None else (None,)
        cal = self._calibration
        prev: list[str] | None = None
        stable = 0
        last_ms = 0.0
        for i, step_ef in enumerate(steps):
            elapsed = (time.perf_counter() - t0) * 1000.0
            if deadline_ms is not None and i > 0 and step_ef is not None:
                # predicted cost of this pass: the calibrated p99, or the last pass scaled by beam width
                if cal is not None:
                    predicted = cal.latency_at(step_ef) / 1000.0 / DEADLINE_SAFETY
                else:
                    predicted = last_ms * step_ef / max(steps[i - 1] or 1, 1)
                if elapsed + predicted > deadline_ms:
                    return
            s0 = time.perf_counter()
            res = self._knn(q, k, step_ef, flt)
            keep = res.labels[0] >= 0
            hits = self._to_hits(
                res.labels[0][keep].tolist(),
                res.distances[0][keep].tolist(),
                include_vectors=include_vectors,
                flt=flt,
            )
            last_ms = (time.perf_counter() - s0) * 1000.0
            ids = [h.id for h in hits]
            stable = stable + 1 if ids == prev else 0
            prev = ids
            final = i == len(steps) - 1 or (stable_rounds is not None and stable >= stable_rounds)
            elapsed = (time.perf_counter() - t0) * 1000.0
            if not final and deadline_ms is not None and step_ef is not None:
                nxt = steps[i + 1]
                predicted = (
                    cal.latency_at(nxt) / 1000.0 / DEADLINE_SAFETY
                    if cal is not None and nxt is not None
                    else last_ms * (nxt or 1) / max(step_ef, 1)
                )
                final = elapsed + predicted > deadline_ms
            partial = final and (
                (i < len(steps) - 1 and stable_rounds is None)
                or plan.deadline_limited
                or (deadline_ms is not None and elapsed > deadline_ms)
            )
            expected = 1.0 if step_ef is None else (cal.recall_at(step_ef, k) if cal is not None else None)
            step_plan = dataclasses.replace(plan, ef=step_ef, steps=tuple(x for x in steps if x is not None))
            yield SearchStep(
                Hits(hits, partial=partial, plan=step_plan), final, i, step_ef, expected, elapsed
            )
            if final:
                return

    async def asearch_iter(self, vector: Any, k: int = 10, **kwargs: Any) -> AsyncIterator[SearchStep]:
        """Async form of :meth:`search_iter`: each pass runs in a worker thread; cancelling stops it."""
        it = self.search_iter(vector, k, **kwargs)
        try:
            while True:
                step = await asyncio.to_thread(next, it, None)
                if step is None:
                    return
                yield step
                if step.final:
                    return
        finally:
            it.close()

    def _mmr(
        self,
        q: np.ndarray,
        k: int,
        flt: Filter | None,
        ef: int | None,
        lambda_mult: float,
        fetch_k: int | None,
        include_vectors: bool,
    ) -> list[Hit]:
        lambda_mult = check_fraction(lambda_mult, "mmr_lambda")
        fk = max(fetch_k or max(4 * k, 20), k)
        res = self._knn(q.reshape(1, -1), fk, ef, flt)
        keep = res.labels[0] >= 0
        labels, dists = res.labels[0][keep], res.distances[0][keep]
        if len(labels) == 0:
            return []
        picked = mmr_select(q, self._vectors.get(labels), k, lambda_mult)
        return self._to_hits(
            [int(labels[i]) for i in picked],
            [float(dists[i]) for i in picked],
            include_vectors=include_vectors,
            flt=flt,
        )

    def _hybrid(
        self,
        vector: Any,
        text: str | None,
        k: int,
        flt: Filter | None,
        ef: int | None,
        text_weight: float,
        fetch_k: int | None,
        include_vectors: bool,
    ) -> list[Hit]:
        if text is None:
            raise InvalidArgumentError("search needs a query vector, or text for a full-text search")
        text = check_text_query(text)
        text_weight = check_fraction(text_weight, "text_weight")
        self._sync()
        fk = max(fetch_k or max(4 * k, 20), k)
        allowed = self._filter_entry(flt).labels if flt is not None else None
        text_ranking: list[int] = []
        bm25: dict[int, float] = {}
        query = fts_query(text)
        if query is not None:
            # Over-fetch when filtering, since non-matching text hits are dropped afterwards.
            limit = fk * (4 if allowed is not None else 1)
            for label, score in self._store.fts(self._cid, query, limit):
                if allowed is None or label in allowed:
                    text_ranking.append(label)
                    bm25[label] = score
            text_ranking = text_ranking[:fk]
        if vector is None:
            labels = text_ranking[:k]
            return self._to_hits(
                labels,
                [bm25[lb] for lb in labels],
                include_vectors=include_vectors,
                scores=[-bm25[lb] for lb in labels],
                metric="bm25",
            )
        q = self._query(vector)
        res = self._knn(q.reshape(1, -1), fk, ef, flt)
        keep = res.labels[0] >= 0
        vec_ranking = res.labels[0][keep].tolist()
        dist = dict(zip(vec_ranking, res.distances[0][keep].tolist(), strict=True))
        fused = rrf_fuse([vec_ranking, text_ranking], [1.0 - text_weight, text_weight])[:k]
        missing = [lb for lb, _ in fused if lb not in dist]
        if missing:
            # Text-only candidates get their true vector distance too, so every hit's distance is real.
            vecs = self._vectors.get(np.asarray(missing, np.int64))
            exact = exact_topk(
                vecs, np.asarray(missing, np.int64), q.reshape(1, -1), len(missing), self._space
            )
            dist.update(zip(exact.labels[0].tolist(), exact.distances[0].tolist(), strict=True))
        labels = [lb for lb, _ in fused]
        return self._to_hits(
            labels,
            [dist[lb] for lb in labels],
            include_vectors=include_vectors,
            scores=[s for _, s in fused],
            flt=flt,
            metric="rrf",
        )

    def search_batch(
        self,
        vectors: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        recall: float | None = None,
        ef: int | None = None,
        include_vectors: bool = False,
        num_threads: int = -1,
    ) -> list[list[Hit]]:
        """Search many queries in one native call (multi-threaded; hnswlib releases the GIL).

        Args:
            vectors: (n, dim) query matrix.
            k: Hits per query.
            filter: One metadata filter applied to every query.
            recall: Recall target (see :meth:`search`).
            ef: Explicit HNSW beam width.
            include_vectors: Return stored vectors in the hits.
            num_threads: Native threads (-1 = all cores).

        Returns:
            One list of hits per query row, in order.
        """
        self._check_open()
        k = check_k(k)
        mat = as_matrix(vectors, self.dim, what="query vectors")
        q = self._prepare(mat)
        flt = parse_filter(filter) if filter else None
        self._sync()
        plan = self._plan(k, check_recall(recall), None, check_ef(ef))
        workers = (os.cpu_count() or 1) if num_threads < 0 else num_threads
        n = len(q)
        if workers <= 1 or n < 2 * _BATCH_CHUNK:
            return self._batch_hits(
                self._knn(q, k, plan.ef, flt, num_threads=workers), include_vectors, workers, flt
            )
        # A pipeline: the native search of the next chunk (on every core, without the GIL) runs while
        # this thread turns the previous chunk into hits. Building hits is serial Python, a seventh of
        # the work at 10 hits a query; done after one native call, it capped 2 threads at ~1.7x.
        pool = _batch_pool()
        starts = range(0, n, _BATCH_CHUNK)
        pending = pool.submit(self._knn, q[:_BATCH_CHUNK], k, plan.ef, flt, workers)
        out: list[list[Hit]] = []
        for s in starts:
            res = pending.result()
            if s + _BATCH_CHUNK < n:
                nxt = q[s + _BATCH_CHUNK : s + 2 * _BATCH_CHUNK]
                pending = pool.submit(self._knn, nxt, k, plan.ef, flt, workers)
            out.extend(self._batch_hits(res, include_vectors, workers, flt))
        return out

    def _batch_hits(
        self, res: IndexResult, include_vectors: bool, workers: int = 1, flt: Filter | None = None
    ) -> list[list[Hit]]:
        # The rows come from the row cache (misses fetched on two connections at once when there are
        # many: SQLite releases the GIL while it steps), and the hit objects are built once, here.
        labels = res.labels
        uniq = np.unique(labels[labels >= 0]).tolist()
        if include_vectors:
            rows = self._store.rows_by_labels(self._cid, uniq, vectors=True)
        elif workers > 1 and len(uniq) >= 1000:
            half = len(uniq) // 2
            other = shared_pool().submit(self._rows.get, uniq[:half])
            rows = self._rows.get(uniq[half:])
            rows.update(other.result())
        else:
            rows = self._rows.get(uniq)
        return [
            self._to_hits(lab_row, dist_row, include_vectors=include_vectors, rows=rows, flt=flt)
            for lab_row, dist_row in zip(labels.tolist(), res.distances.tolist(), strict=True)
        ]
