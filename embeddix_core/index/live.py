"""The live index of one collection: load, replay, switch exact -> HNSW, checkpoint (its lifecycle).

The store is the source of truth; the index is derived from it and trails it by a sequence number
(``applied_seq``: every write with a larger ``seq`` is not in the index yet). Three ways bring it up to
date, all under the collection's write lock:

* the writer applies its own write directly when it is the next one (``seq == applied_seq + 1``);
* :meth:`LiveIndex.replay` applies what others (processes, handles) committed, read in one read
  transaction so that the sequence number, the changed rows and the deletions come from one state of
  the store (read one by one, a prune between the reads left a ghost for good);
* :meth:`LiveIndex.load` starts over from the snapshot the store vouches for, or from the store itself.

Whenever a replay changed the index, ``on_replay`` runs (the collection drops its derived caches there):
whichever path changed it, nothing cached from the old state survives.

Snapshots: written under the exclusive snapshot lock after a replay, never older than the one the store
recorded, vouched for by the store before the manifest appears; loaded under the shared lock (see
``storage/locks.py`` and ``storage/snapshot.py``).
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import unit_rows
from ..config import CollectionConfig, EmbeddixSettings
from ..errors import CollectionNotFoundError, StorageError
from ..storage.locks import SnapshotLock
from ..storage.snapshot import SnapshotIdentity, manifest_id, read_snapshot, remove_stale, write_snapshot
from ..storage.sqlite import Store, scan_step
from ..storage.vecfile import VectorFile
from ..types import CollectionStats
from .base import VectorIndex
from .exact import ExactIndex
from .faiss_flat import FaissFlatIndex, gpu_count
from .faiss_hnsw import SegmentedFaissHnsw
from .faiss_ivf import FaissIvfIndex
from .segmented import SegmentedHnsw

__all__ = ["LiveIndex"]

# A reopened quantized collection's vectors are read into its vector map in the background up to this
# size (see LiveIndex.warm_vectors); larger ones fill on demand, as searches read them.
_WARM_MAX_BYTES = 1 << 30


class LiveIndex:
    """The index serving one collection, kept in step with the store.

    Args:
        store: The durable store.
        cid: The collection's id in the store.
        name: The collection's name (for messages).
        config: Its stored parameters (``config`` may be replaced later by ``configure``).
        settings: Process settings (write buffer, exact backend, ...).
        directory: Where its snapshots live (None in memory: no snapshots).
        on_replay: Called, under the write lock, whenever a replay or reload changed the index.
    """

    def __init__(
        self,
        store: Store,
        cid: int,
        name: str,
        config: CollectionConfig,
        settings: EmbeddixSettings,
        directory: Path | None,
        on_replay: Callable[[], None],
    ) -> None:
        self.store = store
        self.cid = cid
        self.name = name
        self.config = config
        self.settings = settings
        self.directory = directory
        self.space = "l2" if config.metric.value == "l2" else "ip"
        self.normalize = config.metric.value == "cosine"
        self.write_lock = threading.RLock()
        self.applied_seq = 0
        self.dropped = False  # the store no longer has the collection (another handle dropped it)
        # -1: whatever is on disk was not used (a rebuild), so the next checkpoint writes one
        self.snapshot_seq = 0
        self.index: VectorIndex
        self._on_replay = on_replay
        # per thread: the data version of that thread's store connection when it last synced
        self._seen = threading.local()
        self._snap_lock = SnapshotLock(None if directory is None else directory.with_suffix(".lock"))
        # full-precision vectors for re-ranking (storage/vecfile.py); on disk only. Read through a map
        # for float32 indexes; with pread for quantized ones, whose point is memory: a map's file pages
        # count in RSS (2.4 KB a vector on SQ8 at 384-d, where the index holds 0.6 KB). The mode is the
        # one at open: a reconfigure keeps it until the next open.
        self.vecfile: VectorFile | None = (
            None
            if directory is None
            else VectorFile(
                directory.parent,
                config.dim,
                settings.vector_cache_bytes,
                mapped=config.quantization == "none",
            )
        )

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def quantized(self) -> bool:
        """Whether the approximate index keeps quantized codes (FAISS HNSW-SQ) instead of float32."""
        return self.config.quantization != "none"

    @property
    def approx(self) -> str:
        """The index above the threshold: ``"hnsw"``, ``"ivf"`` or ``"flat"`` (none: exact for ever)."""
        return self.config.approximate

    @property
    def snapshot_kind(self) -> str:
        """The snapshot kind of the approximate index (its files' prefix, checked on load)."""
        if self.approx == "ivf":
            return FaissIvfIndex.kind
        return SegmentedFaissHnsw.kind if self.quantized else "hnsw"

    def params(self) -> dict[str, Any]:
        """Index parameters a snapshot (and a calibration curve) must match to be used."""
        c = self.config
        params: dict[str, Any] = {
            "dim": c.dim,
            "space": self.space,
            "m": c.hnsw_m,
            "ef_construction": c.ef_construction,
            "segment_size": c.segment_size,
        }
        if self.quantized:
            # only when quantized: unquantized collections keep the exact parameters (and so the
            # snapshots and calibration curves) they had before quantization existed
            params["quantization"] = c.quantization
        if self.approx != "hnsw":
            params["index"] = self.approx
        return params

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as the index stores them: unit length for cosine, as given otherwise."""
        if not self.normalize:
            return vectors
        return unit_rows(vectors)  # norms in float64: 2e20 overflows float32, 1e-25 underflows it

    # -- building ----------------------------------------------------------------------------------
    def _hnsw_args(self) -> dict[str, Any]:
        """The graph parameters, the same for a new graph and a loaded one."""
        c = self.config
        return {
            "m": c.hnsw_m,
            "ef_construction": c.ef_construction,
            "ef_search": c.ef_search,
            "segment_size": c.segment_size,
            "write_buffer": self.settings.write_buffer,
        }

    def _new_ivf(self) -> FaissIvfIndex:
        index = FaissIvfIndex(
            self.dim,
            self.space,
            load_vectors=self.load_vectors,
            codes="pq" if self.config.quantization == "pq" else "flat",
            ef_search=self.config.ef_search,
            gpu=self.settings.gpu,
        )
        # a background retrain reads vectors on its own thread: give back that thread's store reader
        index.on_thread_exit = self.store.release_reader
        index.background_training = True  # a write crossing the threshold must not wait for k-means
        return index

    def _new_hnsw(self, capacity: int) -> VectorIndex:
        """The approximate index: hnswlib over float32 vectors, FAISS HNSW over codes when quantized,
        or IVF lists (``index="ivf"`` or ``quantization="pq"``)."""
        if self.approx == "ivf":
            return self._new_ivf()
        if self.quantized:
            return SegmentedFaissHnsw(
                self.dim,
                self.space,
                quantization=self.config.quantization,
                load_vectors=self.load_vectors,
                capacity=capacity,
                **self._hnsw_args(),
            )
        return SegmentedHnsw(self.dim, self.space, capacity=capacity, **self._hnsw_args())

    def _load_hnsw(self, paths: list[Path], bounds: list[int], lives: list[int]) -> VectorIndex:
        """The approximate index from a snapshot's segment files."""
        if self.approx == "ivf":
            fresh = self._new_ivf()
            index = FaissIvfIndex.from_file(
                paths[0],
                self.dim,
                self.space,
                load_vectors=self.load_vectors,
                codes=fresh.codes,
                ef_search=self.config.ef_search,
                gpu=self.settings.gpu,
            )
            index.on_thread_exit = fresh.on_thread_exit
            index.background_training = True
            return index
        if self.quantized:
            return SegmentedFaissHnsw.load_segments(
                paths,
                bounds,
                lives,
                self.dim,
                self.space,
                quantization=self.config.quantization,
                load_vectors=self.load_vectors,
                **self._hnsw_args(),
            )
        return SegmentedHnsw.load(paths, bounds, lives, self.dim, self.space, **self._hnsw_args())

    def load_vectors(self, labels: np.ndarray) -> np.ndarray:
        """Full-precision index-space vectors of labels, read from the store (NaN rows: no longer stored).

        A quantized index re-ranks with these and serves ``get_vectors`` from them: it holds codes only.
        """
        vf = self.vecfile
        if vf is None:
            return self._store_vectors(labels)
        generation = vf.generation  # before the store read: a write after it refuses the fill
        out, served = vf.get(labels)
        if served.all():
            return out
        miss = ~served
        got = self._store_vectors(labels[miss])
        out[miss] = got
        vf.fill(labels[miss], got, generation)  # read through: the next search reads them from the map
        return out

    def warm_vectors(self, stop: Callable[[], bool]) -> int:
        """Fill the vector map from one scan of the store; returns how many rows went in.

        Why: a reopened quantized collection re-ranks every search from the store until each candidate
        was read once (measured on SQ8, 100K x 384: explicit-ef p50 1.5 ms after a reopen against 0.54 ms
        in the ingesting process). Only for quantized HNSW (whose every search re-ranks) whose vectors
        fit ``_WARM_MAX_BYTES``; the scan is one read snapshot, so it stops at the first write the
        collection makes meanwhile (``VectorFile.fill`` refuses rows read before it), or when ``stop()``.
        """
        vf = self.vecfile
        if vf is None or not self.quantized or len(self.index) * self.dim * 4 > _WARM_MAX_BYTES:
            return 0
        generation = vf.generation
        n = 0
        for labels, raw in self.store.scan_vectors(self.cid, scan_step(self.dim)):
            if stop():
                break
            vecs = unit_rows(raw, keep_zeros=True) if self.normalize else raw
            if not vf.fill(labels, vecs, generation):
                break
            n += len(labels)
        return n

    def _store_vectors(self, labels: np.ndarray) -> np.ndarray:
        out = self.store.vectors_by_labels(self.cid, np.asarray(labels).tolist(), self.dim)
        # NaN (gone) rows stay NaN; unit length for cosine, as the index stores them
        return unit_rows(out, keep_zeros=True) if self.normalize else out

    def _new_exact(self, capacity: int) -> VectorIndex:
        """The exact index: FAISS on a GPU when one is present (``exact_backend="auto"``), else numpy."""
        backend, gpu = self.settings.exact_backend, self.settings.gpu
        if backend == "faiss" or (backend == "auto" and gpu != "off" and gpu_count() > 0):
            return FaissFlatIndex(self.dim, self.space, gpu=gpu)
        return ExactIndex(self.dim, self.space, capacity=capacity)

    def load(self) -> None:
        """Load the snapshot the store vouches for and replay later writes, or build from the store."""
        if self.directory is None:
            self.rebuild()
            return
        # the shared lock keeps snapshot writers (and their prunes) out; the read transaction makes the
        # rebuild's scan and the replay after it read one state of the store
        with self._snap_lock.hold(exclusive=False), self.store.read_transaction():
            seq, pruned = self.store.seq(self.cid)
            record = self.store.snapshot_record(self.cid)
            identity = SnapshotIdentity(self.store.store_id, self.cid, record.accepts() if record else {})
            index: VectorIndex | None = None
            try:
                snap = read_snapshot(self.directory, self.snapshot_kind, self.params(), identity)
                if snap is not None and not pruned <= snap.seq <= seq:
                    raise StorageError(
                        f"snapshot seq {snap.seq} is outside the store's range {pruned}..{seq}"
                    )
                if snap is not None:
                    bounds = snap.extra.get("bounds", [0])
                    index = self._load_hnsw(snap.paths, bounds, snap.lives)
            except (StorageError, RuntimeError, ValueError) as exc:  # hnswlib, FAISS: RuntimeError
                warnings.warn(
                    f"collection {self.name!r}: ignoring the index snapshot and rebuilding it "
                    f"from the store ({exc})",
                    RuntimeWarning,
                    stacklevel=4,
                )
                snap, index = None, None
            if snap is None or index is None:
                self.rebuild(seq)
                return
            self.index = index
            self.applied_seq = self.snapshot_seq = snap.seq
            self.replay()

    def rebuild(self, seq: int | None = None, *, progress: Callable[[int, int], None] | None = None) -> None:
        """Build the index from every live record in the store.

        Args:
            seq: The store's sequence number as of the scan (read here when None).
            progress: Called with (rows added, rows to add) after each chunk; may raise to stop.
        """
        if seq is None:
            seq = self.store.seq(self.cid)[0]
        count = self.store.count(self.cid)
        index: VectorIndex
        if count > self.config.index_threshold and self.approx != "flat":
            index = self._new_hnsw(count + 1024)
            if isinstance(index, FaissIvfIndex):
                # train once on a sample of everything, then add: lists that fit the whole collection
                sample = self.store.sample_labels(self.cid, index.sample_size(count))
                vecs = self.load_vectors(sample)
                index.train_from(vecs[np.isfinite(vecs).all(axis=1)], count)
                del vecs
        else:
            index = self._new_exact(max(count, 1024))
        after, done = -1, 0
        while True:
            rows = self.store.scan(self.cid, None, (), after_label=after, limit=20_000, vectors=True)
            if not rows:
                break
            labels = np.fromiter((r.label for r in rows), np.int64, len(rows))
            vecs = np.frombuffer(b"".join(r.vector or b"" for r in rows), np.float32).reshape(
                len(rows), self.dim
            )
            index.add(labels, self.prepare(vecs), np.ones(len(rows), bool))
            after = rows[-1][0]
            done += len(rows)
            if progress is not None:
                progress(done, count)
        self.index = index
        self.applied_seq = seq
        self.snapshot_seq = -1
        # Writes committed while we scanned have seq > seq and are replayed (re-applying is harmless).
        self.replay()

    # -- catching up -------------------------------------------------------------------------------
    def replay(self) -> bool:
        """Apply writes committed by others since ``applied_seq`` (the write lock is held).

        Returns:
            Whether the index changed (``on_replay`` has run then).

        Raises:
            CollectionNotFoundError: The collection was dropped meanwhile.
        """
        # Most calls (every write checks first) find nothing new: one plain read says so, and only a
        # replay with something to apply pays for the read transaction below.
        if self._committed_seq() == self.applied_seq:
            return False
        with self.store.read_transaction():
            seq, pruned = self._committed_seq(with_pruned=True)
            if seq == self.applied_seq:
                return False
            reload = pruned > self.applied_seq or seq < self.applied_seq
            if not reload:
                for rows in self.store.changes_since(self.cid, self.applied_seq):
                    labels = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                    vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(
                        len(rows), self.dim
                    )
                    self.index.add(labels, self.prepare(vecs))
                gone = self.store.deletions_since(self.cid, self.applied_seq)
                if gone:
                    self.index.remove(np.asarray(gone, np.int64))
                self.applied_seq = seq
        if reload:
            # Deletions we never saw were pruned after a newer snapshot (or the store went back in
            # time): start over from the snapshot the store vouches for, or from the store itself. Out
            # of the read transaction above: the snapshot must be read with the store's current record.
            self.load()
        self._on_replay()
        return True

    def _committed_seq(self, *, with_pruned: bool = False) -> Any:
        """The store's (seq, pruned_seq) with ``with_pruned``, else its seq; a dropped collection raises."""
        try:
            seq, pruned = self.store.seq(self.cid)
        except CollectionNotFoundError:
            self.dropped = True
            raise CollectionNotFoundError(
                f"collection {self.name!r} was dropped (by another handle or process); get it again "
                "from the database"
            ) from None
        return (seq, pruned) if with_pruned else seq

    def stale(self) -> int | None:
        """This thread's store data version if something was committed since it last synced, else None.

        ~2 us (``PRAGMA data_version``); read before replaying, so a commit after it shows next time.
        """
        if self.store.path is None:
            return None
        dv = self.store.data_version()
        return None if getattr(self._seen, "dv", None) == dv else dv

    def synced(self, dv: int) -> None:
        """Remember that this thread caught up as of data version ``dv`` (from :meth:`stale`)."""
        self._seen.dv = dv

    def switch_if_grown(self) -> bool:
        """Move from the exact index to HNSW once the collection outgrows the threshold; True if it did."""
        index = self.index
        if index.approximate or len(index) <= self.config.index_threshold or self.approx == "flat":
            return False
        labels = index.live_labels()
        hnsw = self._new_hnsw(len(labels) * 3 // 2)
        hnsw.add(labels, index.get_vectors(labels), np.ones(len(labels), bool))
        self.index = hnsw
        return True

    def apply(self, seq: int, change: Callable[[VectorIndex], object]) -> bool:
        """Apply one of our own writes, committed at ``seq``, to the index.

        Returns:
            True if it was applied directly (it was the next write); False if another write came in
            between, in which case a replay brought ours in too, in order.
        """
        if seq != self.applied_seq + 1:
            self.replay()
            return False
        change(self.index)
        self.applied_seq = seq
        return True

    def stats(self, name: str, metric: str) -> CollectionStats:
        """Counts, index kind and parameters (see ``Collection.stats``)."""
        index = self.index
        st = index.stats()
        c = self.config
        return CollectionStats(
            name=name,
            count=len(index),
            dim=c.dim,
            metric=metric,
            index=index.kind,
            index_size=st.capacity,
            tombstones=st.tombstones,
            last_seq=self.applied_seq,
            snapshot_seq=self.snapshot_seq,
            embedding_model=c.embedding_model,
            params={
                "segments": st.segments,
                "write_buffered": st.buffered,
                "segment_size": c.segment_size,
                "hnsw_m": c.hnsw_m,
                "ef_construction": c.ef_construction,
                "ef_search": c.ef_search,
                "index_threshold": c.index_threshold,
                "memory_bytes": st.memory_bytes,
            }
            # quantized collections only: the default path's stats stay as they were
            | ({"quantization": c.quantization} if self.quantized else {})
            | ({"index": c.index} if c.index != "auto" else {})
            | ({"profile": c.profile} if c.profile else {}),
            memory=self._memory(index, len(index)),
        )

    def _memory(self, index: VectorIndex, count: int) -> dict[str, Any]:
        """Bytes resident and on disk, by part (see ``CollectionStats``)."""
        parts_of = getattr(index, "memory_parts", None)
        resident: dict[str, int] = (
            {k: v for k, v in parts_of().items() if v} if parts_of else {"index": index.memory_bytes()}
        )
        resident["total"] = sum(resident.values())
        snapshot = 0
        if self.directory is not None and self.directory.is_dir():
            snapshot = sum(f.stat().st_size for f in self.directory.iterdir() if f.is_file())
        store_file = 0
        if self.store.path is not None and self.store.path.exists():
            store_file = self.store.path.stat().st_size
        disk = {"vectors": count * self.dim * 4, "snapshot": snapshot, "store_file": store_file}
        per = {
            "resident": round(resident["total"] / count, 1) if count else 0.0,
            "disk": round((disk["vectors"] + snapshot) / count, 1) if count else 0.0,
        }
        return {"resident": resident, "disk": disk, "per_vector": per}

    # -- snapshots ---------------------------------------------------------------------------------
    def checkpoint(self, *, force: bool) -> bool:
        """Save a snapshot (see the module docstring); True if one was written."""
        directory = self.directory
        if directory is None:
            return False
        with self.write_lock, self._snap_lock.hold(exclusive=True):
            self.replay()
            index = self.index
            if not index.snapshots:
                return False
            seq = self.applied_seq
            record = self.store.snapshot_record(self.cid)
            done = record.seq if record is not None and record.seq is not None else -1
            pending = (record.pending_id, record.pending_seq) if record is not None else (None, None)
            if pending[0] is not None and pending[1] is not None and manifest_id(directory) == pending:
                # An earlier checkpoint died between its manifest and its record. Finish it now:
                # begin_snapshot below replaces the pending id, and the store would then vouch for
                # neither the manifest on disk nor (until it is written) the new one.
                self.store.record_snapshot(self.cid, pending[0], pending[1])
                done = pending[1]
            if not force and done >= seq and self.snapshot_seq >= 0:
                self.snapshot_seq = seq  # another handle or process saved this state already
                return False
            # vouched for before its manifest exists: a crash before record_snapshot still finds it
            snapshot_id = uuid.uuid4().hex
            self.store.begin_snapshot(self.cid, snapshot_id, seq)
            snap = write_snapshot(
                directory,
                self.snapshot_kind,
                seq,
                self.params(),
                index.savers(),
                {"bounds": index.bounds},
                identity=SnapshotIdentity(self.store.store_id, self.cid),
                snapshot_id=snapshot_id,
            )
            # only now may the deletions it contains be pruned: see Store.record_snapshot
            self.store.record_snapshot(self.cid, snap.snapshot_id, seq)
            remove_stale(directory, self.snapshot_kind, snap)
            self.snapshot_seq = seq
            return True
