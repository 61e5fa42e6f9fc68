"""The collection: the facade users touch (add / upsert / get / delete / search / search_batch / ...).

It checks arguments, runs writes against the store, and hands everything else to parts with one job
each, built here and given what they need (none calls back into the collection):

* ``index/live.py`` - the live index: load, replay, switch exact -> HNSW, checkpoint;
* ``query/calibrator.py`` - the recall/latency curve and its background thread;
* ``query/planner.py`` - the plan of each search (beam width from the curve), cached;
* ``query/filter_cache.py`` - the labels matching recent filters, kept current under writes;
* ``query/executor.py`` - plain, filtered, hybrid, MMR, progressive and batched searches;
* ``query/cached_search.py`` - default searches through the result cache (``cache/``).

Durability and ordering rule: a write returns after the store committed it (see ``storage.sqlite``), and
the in-memory index has applied it, so a record is searchable as soon as ``add`` returns. Writes of one
process are serialized by the collection's write lock, so the index applies them in ``seq`` order; writes
of other processes on the same directory are replayed from the store (by ``seq``) before the next search.

Threads: any number of threads may search at once (the native index releases the GIL); writes run one at
a time and hold readers off only while the index applies one batch.

Processes: before a search, each thread asks SQLite whether anything was committed since it last asked;
if so, the collection replays the store's changes under its write lock and drops every derived cache
(filter labels, rows, vectors, results), whichever way the replay went (``LiveIndex.replay``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from ._validate import (
    as_matrix,
    as_query,
    check_documents,
    check_ef,
    check_ids,
    check_int,
    check_k,
    check_lookup_ids,
    check_metadata,
    check_metadatas,
    check_patch,
    dump_metadata,
    unit_query,
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
)
from .index.live import LiveIndex
from .query.cached_search import CachedSearch
from .query.calibrator import Calibrator
from .query.executor import SearchExecutor, vector_loader
from .query.filter_cache import FilterCache
from .query.filters import parse_filter
from .query.planner import Calibration, Plan, Planner, check_deadline, check_recall
from .storage.sqlite import CollectionRow, Store
from .types import CollectionStats, Hit, Hits, Metric, Record, SearchStep

__all__ = ["Collection"]

log = logging.getLogger("embeddix")


class Collection:
    """A named set of records (id, vector, document, metadata) with vector, filtered and text search.

    Get one from :meth:`Embeddix.create_collection` or :meth:`Embeddix.get_collection`; don't
    construct it directly. It behaves like a mapping that can search: ``len(col)``, ``id in col``,
    ``col[id]``.
    """

    def __init__(
        self, store: Store, root: Path | None, row: CollectionRow, settings: EmbeddixSettings
    ) -> None:
        self._store = store
        self._cid = cid = row.cid
        self.name = row.name
        self._settings = settings
        self._closed = False
        self._root = root
        config = CollectionConfig.from_json(row.config)
        self._metric = config.metric.value
        index_dir = None if root is None else root / "indexes" / str(cid)
        self._live = live = LiveIndex(store, cid, row.name, config, settings, index_dir, self._after_replay)
        self._write_lock = live.write_lock
        load_vectors = vector_loader(store, cid, config.dim, live.normalize)
        # Full-precision vectors for re-ranking cached candidates: an LRU in front of the store
        # (hnswlib's get_items costs ~13 us per vector; a store fetch of 80 rows ~1 us each)
        self._vectors = VectorCache(config.dim, load_vectors, max_bytes=settings.vector_cache_bytes)
        # Rows (id, document, metadata) for building hits: SQLite costs ~2 us a row, a dict ~0.1 us
        self._rows = RowCache(lambda labels: store.rows_by_labels(cid, labels), settings.row_cache_bytes)
        self._filters = FilterCache(lambda where, params: store.labels_where(cid, where, params))
        self._cache = self._new_cache(config, settings) if settings.cache_enabled else None
        self._planner = Planner(
            settings.default_recall, settings.cache_candidate_factor if self._cache else 0
        )
        self._ex = SearchExecutor(
            live, store, cid, self._metric, settings, self._rows, self._vectors, self._filters
        )
        self._cal = Calibrator(
            row.name,
            config.dim,
            live.space,
            live.normalize,
            settings,
            lambda: (live.index, live.applied_seq),
            load_vectors,
            live.write_lock,
            self._after_curve,
            None if index_dir is None else index_dir / "calibration.json",
            {"store_id": store.store_id, "cid": cid, "params": live.params()},
        )
        self._cached = (
            None
            if self._cache is None
            else CachedSearch(
                self._cache, self._ex, live, self._planner, lambda: self._cal.curve, load_vectors
            )
        )
        live.load()
        self._cal.load(live.applied_seq)
        self._load_cache()
        self._cal.maybe_start()

    @staticmethod
    def _new_cache(config: CollectionConfig, s: EmbeddixSettings) -> CacheManager:
        return CacheManager(
            config.dim,
            "l2" if config.metric == Metric.L2 else "ip",
            config.metric != Metric.IP,  # raw inner product is no metric: no semantic tier
            CacheSettings(
                enabled=True,
                max_bytes=s.cache_max_bytes,
                session_max_bytes=s.cache_session_max_bytes,
                max_sessions=s.cache_max_sessions,
                ttl=s.cache_ttl,
                semantic=s.cache_semantic,
                similarity=s.cache_similarity,
                candidate_factor=s.cache_candidate_factor,
                persist=s.cache_persist,
                beam_factor=s.cache_beam_factor,
                probe=s.cache_probe,
            ),
        )

    # -- properties --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Vector dimension (fixed at creation)."""
        return self._live.config.dim

    @property
    def metric(self) -> str:
        """``"cosine"``, ``"l2"`` or ``"ip"`` (fixed at creation)."""
        return self._metric

    @property
    def config(self) -> CollectionConfig:
        """The collection's stored parameters."""
        return self._live.config

    @property
    def embedding_model(self) -> str | None:
        """The embedding model id this collection was built with, if one was recorded."""
        return self._live.config.embedding_model

    @property
    def index_kind(self) -> str:
        """``"exact"`` or ``"hnsw"``: the index now serving searches."""
        return self._live.index.kind

    @property
    def calibration(self) -> Calibration | None:
        """The recall/latency curve in use, if the collection has been calibrated."""
        return self._cal.curve

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, dim={self.dim}, metric={self.metric!r}, count={len(self)})"

    # -- mapping behaviour -------------------------------------------------------------------------
    def __len__(self) -> int:
        self._sync()
        return len(self._live.index)

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

    # -- keeping the parts in step -----------------------------------------------------------------
    def _sync(self) -> None:
        """Catch up with writes from other processes (~2 us when there are none)."""
        if self._closed:
            self._check_open()
        dv = self._live.stale()
        if dv is None:
            return
        with self._write_lock:
            self._catch_up()
        self._live.synced(dv)

    def _catch_up(self) -> None:
        """Replay what others committed (the write lock is held)."""
        try:
            self._live.replay()
        except CollectionNotFoundError:
            self._closed = True
            raise

    def _after_replay(self) -> None:
        # the index changed under every derived cache: none of them may serve the old state
        self._filters.clear()
        self._vectors.clear()
        self._rows.clear()
        if self._cache is not None:
            self._cache.clear()  # other processes' writes: we do not know their vectors here
        self._switch_if_grown()
        self._wrote(0)

    def _after_curve(self) -> None:
        self._planner.clear()
        if self._cache is not None:
            self._cache.clear()  # plans choose new beam widths: cached answers came from the old ones

    def _switch_if_grown(self) -> None:
        if self._live.switch_if_grown():
            if self._cache is not None:
                self._cache.clear()
            self._planner.clear()
            log.info("collection %r switched to HNSW at %d records", self.name, len(self._live.index))

    def _wrote(self, n: int) -> None:
        index = self._live.index
        self._planner.index_changed(index.approximate, index.segments)
        self._cal.wrote(n)

    def checkpoint(self) -> bool:
        """Save an index snapshot so the next open loads it instead of rebuilding or replaying.

        Safe with other processes on the same directory: snapshots are made one at a time under a
        lock between processes, each after replaying every committed write, and a snapshot no newer
        than the one already saved (by any process) is not written again.

        Returns:
            True if a snapshot was written (in-memory databases and exact indexes have none).
        """
        self._check_open()
        return self._live.checkpoint(force=False)

    def _stop_background(self) -> None:
        """Stop the calibration thread and wait for the index's background flush.

        Both run native code (hnswlib) on threads of their own. A daemon thread still inside native code
        when the interpreter finalizes is torn down mid-call, and hnswlib's worker threads then abort the
        process ("terminate called without an active exception"); so this runs before finalization, on
        close and at exit.
        """
        self._cal.stop()
        index = getattr(self._live, "index", None)
        if index is not None:
            index.join()

    def _close(self, *, checkpoint: bool) -> None:
        if self._closed:
            return
        self._stop_background()
        if checkpoint:
            try:
                changes = self._live.applied_seq - self._live.snapshot_seq
                if changes >= self._settings.snapshot_min_changes:
                    self.checkpoint()
            except Exception as exc:  # closing must not fail because a snapshot could not be written
                log.warning("collection %r: snapshot on close failed: %s", self.name, exc)
            self._save_cache()
        self._live.index.join()  # no background flush may outlive the collection
        self._closed = True

    def _drop_files(self) -> None:
        from .storage.snapshot import remove_snapshots

        if self._live.directory is not None:
            remove_snapshots(self._live.directory)
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(
                f"collection {self.name!r} is closed or was dropped; get it again from the database"
            )

    # -- result cache (see cache/result_cache.py for the rules) ------------------------------------
    def _cache_dir(self) -> Path | None:
        return None if self._root is None else self._root / "cache" / str(self._cid)

    def _load_cache(self) -> None:
        directory = self._cache_dir()
        if self._cache is None or directory is None or not self._settings.cache_persist:
            return
        try:
            self._cache.load(directory, self._live.applied_seq)
        except Exception as exc:  # a cold cache is always correct
            log.warning("collection %r: ignoring the persistent cache: %s", self.name, exc)

    def _save_cache(self) -> None:
        directory = self._cache_dir()
        if self._cache is None or directory is None or not self._settings.cache_persist:
            return
        try:
            self._cache.save(directory, self._live.applied_seq)
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
        return self._cal.calibrate(sample=sample, k=k, source=source)

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
        prepared = self._live.prepare(mat)
        blobs = [row.tobytes() for row in mat]
        meta_json = [dump_metadata(m) for m in metas]
        with self._write_lock:
            self._catch_up()
            res = self._store.put(self._cid, id_list, blobs, docs, meta_json, upsert=upsert)
            labels = np.asarray(res.labels, np.int64)
            created = np.asarray(res.created, bool)
            if self._live.apply(res.seq, lambda index: index.add(labels, prepared, created)):
                self._after_put(res.labels, res.created, prepared, metas)
        return id_list

    def _after_put(
        self, labels: list[int], created: list[bool], prepared: np.ndarray, metas: list[dict[str, Any]]
    ) -> None:
        self._filters.update(labels, metas)
        replaced = [lb for lb, new in zip(labels, created, strict=True) if not new]
        if replaced:
            self._vectors.discard(replaced)
            self._rows.discard(replaced)
        if self._cache is not None:
            if replaced:
                self._cache.on_labels(replaced)
            self._cache.on_insert(prepared, metas, labels)
        self._switch_if_grown()
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
            self._update_with_vectors(id_list, vectors, docs, metas)
            return
        with self._write_lock:
            self._catch_up()
            res = self._store.update(
                self._cid, id_list, docs, [dump_metadata(m) for m in metas] if metas is not None else None
            )
            if not self._live.apply(res.seq, lambda index: None):
                return
            self._rows.discard(res.labels)
            if metas is not None:
                self._filters.update(res.labels, metas)
            if self._cache is not None:
                # changed documents/metadata make cached hits stale; new metadata may also admit the
                # record into filtered answers it was not part of, exactly like an insert
                self._cache.on_labels(res.labels)
                if metas is not None:
                    labels = np.asarray(res.labels, np.int64)
                    self._cache.on_insert(self._live.index.get_vectors(labels), metas, res.labels)

    def _update_with_vectors(
        self,
        id_list: list[str],
        vectors: Any,
        docs: list[str | None] | None,
        metas: list[dict[str, Any]] | None,
    ) -> None:
        mat = as_matrix(vectors, self.dim)
        if mat.shape[0] != len(id_list):
            raise InvalidArgumentError(
                f"got {mat.shape[0]} vectors for {len(id_list)} ids; expected one per id"
            )
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
            self._catch_up()
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
            if labels and self._remove(labels, seq):
                self._filters.update(labels, None)
                self._vectors.discard(labels)
                self._rows.discard(labels)
                if self._cache is not None:
                    self._cache.on_labels(labels)
                self._wrote(len(labels))
        return len(labels)

    def _remove(self, labels: list[int], seq: int) -> bool:
        gone = np.asarray(labels, np.int64)
        return self._live.apply(seq, lambda index: index.remove(gone))

    def clear(self) -> int:
        """Delete every record (the collection and its settings stay).

        Returns:
            How many records were deleted.
        """
        self._check_open()
        with self._write_lock:
            self._catch_up()
            labels, seq = self._store.delete_where(self._cid, "1", [])
            if labels and self._remove(labels, seq):
                self._filters.clear()
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
            self._live.rebuild()
            self._live.checkpoint(force=True)

    def configure(self, *, ef_search: int | None = None, index_threshold: int | None = None) -> None:
        """Change runtime parameters (stored with the collection)."""
        changes: dict[str, Any] = {}
        if ef_search is not None:
            changes["ef_search"] = ef_search
        if index_threshold is not None:
            changes["index_threshold"] = index_threshold
        if not changes:
            return
        with self._write_lock:
            self._set_config(dataclasses.replace(self._live.config, **changes))
            self._live.index.set_ef_search(self._live.config.ef_search)
            self._planner.clear()
            if self._cache is not None:
                self._cache.clear()
            self._switch_if_grown()

    def _set_config(self, cfg: CollectionConfig) -> None:
        self._store.set_config(self._cid, cfg.to_json())
        self._live.config = cfg

    def check_model(self, model_id: str, dim: int | None = None) -> None:
        """Raise if this collection was built with another embedding model (records it if none yet)."""
        if dim is not None and dim != self.dim:
            raise ModelMismatchError(
                f"collection {self.name!r} has dimension {self.dim}, but model {model_id!r} "
                f"makes {dim}-d vectors"
            )
        current = self._live.config.embedding_model
        if current is None:
            with self._write_lock:
                self._set_config(dataclasses.replace(self._live.config, embedding_model=model_id))
        elif current != model_id:
            raise ModelMismatchError(
                f"collection {self.name!r} was built with embedding model {current!r}; "
                "it cannot be used with "
                f"{model_id!r} (vectors of different models are not comparable)"
            )

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
        index = self._live.index
        st = index.stats()
        c = self._live.config
        return CollectionStats(
            name=self.name,
            count=len(index),
            dim=c.dim,
            metric=self.metric,
            index=index.kind,
            index_size=st.capacity,
            tombstones=st.tombstones,
            last_seq=self._live.applied_seq,
            snapshot_seq=self._live.snapshot_seq,
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
            },
        )

    # -- search ------------------------------------------------------------------------------------
    def _query(self, vector: Any) -> np.ndarray:
        """One query vector, checked, as the index compares it (unit length for cosine)."""
        q, sq = as_query(vector, self.dim)
        return unit_query(q, sq) if self._live.normalize else q

    def _plan(self, k: int, recall: float | None, deadline_ms: float | None, ef: int | None) -> Plan:
        index = self._live.index
        return self._planner.plan(
            k,
            recall,
            deadline_ms,
            ef,
            approximate=index.approximate,
            segments=index.segments,
            ef_search=self._live.config.ef_search,
            curve=self._cal.curve,
        )

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
        was_cached = self._planner.has(k, recall, deadline_ms, ef)
        plan = self._plan(k, recall, deadline_ms, ef)
        strategy, matches = self._ex.filter_strategy(parse_filter(filter) if filter else None)
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
            q = None if vector is None else self._query(vector)
            self._sync()
            plan = self._plan(k, recall, deadline_ms, ef)
            hits = self._ex.hybrid(q, text, k, flt, plan.ef, text_weight, fetch_k, include_vectors)
            return Hits(hits, plan=plan)
        q = self._query(vector)
        self._sync()
        if self._live.index.approximate:
            self._cal.remember(q)
        plan = self._plan(k, recall, deadline_ms, ef)
        if mmr_lambda is not None:
            return Hits(self._ex.mmr(q, k, flt, plan.ef, mmr_lambda, fetch_k, include_vectors), plan=plan)
        if cache and self._cached is not None and not include_vectors:
            return self._cached.search(
                q, k, flt, plan, (recall, deadline_ms, ef, profile_version), session, t0
            )
        return self._ex.plain(q, k, flt, plan, include_vectors, t0)

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
        q = self._query(vector)
        self._sync()
        plan = self._plan(k, recall, deadline_ms, ef)
        yield from self._ex.steps(q, k, flt, plan, self._cal.curve, stable_rounds, include_vectors, t0)

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
        q = self._live.prepare(as_matrix(vectors, self.dim, what="query vectors"))
        flt = parse_filter(filter) if filter else None
        self._sync()
        plan = self._plan(k, check_recall(recall), None, check_ef(ef))
        workers = (os.cpu_count() or 1) if num_threads < 0 else num_threads
        return self._ex.batch(q, k, flt, plan.ef, include_vectors, workers)
