"""The parts of one collection, built together and wired once (see ``collection.py`` for what each does).

Each part is given what it needs when it is built - a loader, a lock, a hook - and none holds the
collection. The two hooks (``on_replay`` of the live index, ``on_curve`` of the calibrator) are bound
late, to the derived state built after them, because the derived state needs both parts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .cache import CacheManager, VectorCache
from .cache.row_cache import RowCache
from .config import CollectionConfig, EmbeddixSettings
from .index.live import LiveIndex
from .query.cached_search import CachedSearch, new_cache_manager
from .query.calibrator import Calibrator
from .query.executor import SearchExecutor
from .query.filter_cache import FilterCache
from .query.filter_sql import json_path
from .query.planner import Planner
from .records import DerivedState, RecordWriter
from .storage.snapshot import remove_snapshots
from .storage.sqlite import CollectionRow, Store

__all__ = ["Parts"]

log = logging.getLogger("embeddix")


@dataclass(slots=True)
class Parts:
    """A collection's parts (built by :meth:`build`; the index itself is loaded by the caller)."""

    live: LiveIndex
    executor: SearchExecutor
    calibrator: Calibrator
    planner: Planner
    derived: DerivedState
    writer: RecordWriter
    cache: CacheManager | None
    cached: CachedSearch | None
    cache_dir: Path | None
    store: Store
    cid: int
    rows: RowCache
    _warmer: threading.Thread | None = None
    _closing: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def build(cls, store: Store, root: Path | None, row: CollectionRow, settings: EmbeddixSettings) -> Parts:
        """Build the parts of the collection ``row`` of ``store`` under data directory ``root``."""
        cid = row.cid
        config = CollectionConfig.from_json(row.config)
        index_dir = None if root is None else root / "indexes" / str(cid)
        live = LiveIndex(store, cid, row.name, config, settings, index_dir, lambda: derived.after_replay())
        load_vectors = live.load_vectors  # the store's float32 vectors, in index space
        # Full-precision vectors for re-ranking cached candidates: an LRU in front of the store
        # (hnswlib's get_items costs ~13 us per vector; a store fetch of 80 rows ~1 us each)
        # (on disk, the loader reads a memory-mapped vector file at ~0.2 us a row: an LRU of single
        # rows in front of it would only add its own ~1 us a row, so it gets no budget there)
        vector_budget = 0 if live.vecfile is not None else settings.vector_cache_bytes
        vectors = VectorCache(config.dim, load_vectors, max_bytes=vector_budget)
        # Rows (id, document, metadata) for building hits, packed in memory (see cache/row_cache.py)
        rows = RowCache(lambda labels: store.rows_by_labels(cid, labels), settings.row_cache_bytes)
        filters = FilterCache(
            lambda where, params: store.labels_where(cid, where, params),
            load_vectors,
            dim=config.dim,
            matrix_bytes=settings.filter_matrix_bytes,
            kinds=lambda field: _field_kinds(store, cid, field),
            space=live.space,
        )
        cache = new_cache_manager(config, settings) if settings.cache_enabled else None
        planner = Planner(settings.default_recall)
        executor = SearchExecutor(live, store, cid, config.metric.value, settings, rows, vectors, filters)
        calibrator = Calibrator(
            row.name,
            config.dim,
            live.space,
            live.normalize,
            settings,
            lambda: (live.index, live.applied_seq),
            lambda chunk: store.scan_vectors(cid, chunk),
            live.write_lock,
            lambda: derived.after_curve(),
            None if index_dir is None else index_dir / "calibration.json",
            {"store_id": store.store_id, "cid": cid, "params": live.params()},
            release=store.release_reader,
        )
        derived = DerivedState(row.name, live, filters, rows, vectors, cache, planner, calibrator)
        cached = None
        if cache is not None:
            cached = CachedSearch(cache, executor, live, planner, lambda: calibrator.curve, load_vectors)
        return cls(
            live,
            executor,
            calibrator,
            planner,
            derived,
            RecordWriter(store, cid, live, derived),
            cache,
            cached,
            None if root is None or not settings.cache_persist else root / "cache" / str(cid),
            store,
            cid,
            rows,
        )

    def open(self) -> None:
        """Load the index (snapshot + replay, or a rebuild), the saved curve and cache; start calibrating."""
        self.live.load()
        self.calibrator.load(self.live.applied_seq)
        if self.cached is not None and self.cache_dir is not None:
            self.cached.load(self.cache_dir, self.live.applied_seq)
        self.calibrator.maybe_start()
        self._start_warming()

    def _start_warming(self) -> None:
        """Read the newest rows into the row cache in the background (a reopened collection's hits
        would otherwise come from SQLite, ~100 us a search, until each row had been hit once), then a
        quantized index's vectors into the vector map (``LiveIndex.warm_vectors``)."""
        if self.store.path is None or len(self.live.index) == 0 or self.rows.nbytes:
            return  # in memory: one shared connection, not to be used from another thread
        self._warmer = threading.Thread(
            target=self._warm, name=f"embeddix-rows-{self.live.name}", daemon=True
        )
        self._warmer.start()

    def _warm(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # searches and writers come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            # 512 rows a step: building a step's row objects holds the GIL (see storage.sqlite.scan_step)
            self.rows.warm(self.store.scan_rows(self.cid, 512), self._closing.is_set)
            # then a quantized index's full-precision vectors, which its every search re-ranks with
            self.live.warm_vectors(self._closing.is_set)
        except Exception as exc:  # a warm-up that failed leaves the caches filling on misses
            log.debug("collection %r: warm-up stopped: %s", self.live.name, exc)
        finally:
            with contextlib.suppress(Exception):
                self.store.release_reader()

    def stop_background(self) -> None:
        """Stop the calibration thread and wait for the index's background flush.

        Both run native code (hnswlib) on threads of their own. A daemon thread still inside native code
        when the interpreter finalizes is torn down mid-call, and hnswlib's worker threads then abort the
        process ("terminate called without an active exception"); so this runs before finalization, on
        close and at exit.
        """
        self.calibrator.stop()
        self._closing.set()
        if self._warmer is not None:
            self._warmer.join()
        index = getattr(self.live, "index", None)
        if index is not None:
            cancel = getattr(index, "cancel", None)  # IVF: a background retrain stops at its next step
            if cancel is not None:
                cancel()
            index.join()

    def close(self, *, checkpoint: bool, min_changes: int) -> None:
        """Stop background work; with ``checkpoint``, save a snapshot (if enough changed) and the cache."""
        self.stop_background()
        if checkpoint:
            try:
                if self.live.applied_seq - self.live.snapshot_seq >= min_changes:
                    self.live.checkpoint(force=False)
            except Exception as exc:  # closing must not fail because a snapshot could not be written
                log.warning("collection %r: snapshot on close failed: %s", self.live.name, exc)
            if self.cached is not None and self.cache_dir is not None:
                self.cached.save(self.cache_dir, self.live.applied_seq)
        self.live.index.join()  # no background flush may outlive the collection
        if self.live.vecfile is not None:
            self.live.vecfile.close()

    def drop_files(self) -> None:
        """Delete the collection's index files (it was dropped from the store)."""
        self.stop_background()
        if self.live.vecfile is not None:
            self.live.vecfile.close()
        if self.live.directory is not None:
            remove_snapshots(self.live.directory)


def _field_kinds(store: Store, cid: int, field: str) -> set[str]:
    """The JSON types a metadata field holds (an unquotable name: none known, so never an error)."""
    path = json_path(field)
    return set() if path is None else store.metadata_kinds(cid, path)
