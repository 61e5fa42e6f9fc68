"""Writes of one collection: the store first, then the live index, then everything derived from it.

Durability and ordering rule: a write returns after the store committed it (``storage/sqlite.py``) and
the in-memory index applied it, so a record is searchable as soon as ``add`` returns. The collection's
write lock serializes one process's writes, so the index applies them in ``seq`` order; when another
process committed in between, a replay brings ours in too, in order (``LiveIndex.apply``).

Derived state, kept true after every write or replay (:class:`DerivedState`): the filter label sets
(updated per record), the row and vector caches (changed labels discarded *after* the commit; their
generation counters keep a racing reader from putting an older row back), the result cache (precise
invalidation: see ``cache/result_cache.py``), the plans (dropped when the index changes shape) and the
calibration's write count. A replay, whose writes we did not see, drops all of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._validate import as_matrix, check_documents, check_ids, check_metadatas, dump_metadata
from .cache import CacheManager, VectorCache
from .cache.row_cache import RowCache
from .config import CollectionConfig
from .errors import InvalidArgumentError, NotFoundError
from .index.live import LiveIndex
from .query.calibrator import Calibrator
from .query.filter_cache import FilterCache
from .query.filters import parse_filter
from .query.planner import Planner
from .storage.sqlite import Store
from .types import Record, StoredRow

__all__ = ["DerivedState", "RecordWriter", "merge_patch", "to_record"]

log = logging.getLogger("embeddix")


# An IVF whose calibrated recall at ef_search fell below target retrains once it holds this many times
# what it was trained on (below that, more probes, which the planner picks anyway, are the cheaper cure)
IVF_RECALL_RETRAIN_GROWTH = 1.5


class DerivedState:
    """Everything one collection derives from its records, and the rules that keep it true.

    Args:
        name: The collection's name (for messages).
        live: The live index.
        filters: Filter label sets.
        rows: The row cache.
        vectors: The full-precision vector cache.
        cache: The result cache (None when caching is off).
        planner: The plan cache.
        calibrator: The calibration (its write count).
    """

    def __init__(
        self,
        name: str,
        live: LiveIndex,
        filters: FilterCache,
        rows: RowCache,
        vectors: VectorCache,
        cache: CacheManager | None,
        planner: Planner,
        calibrator: Calibrator,
    ) -> None:
        self.name = name
        self._live = live
        self._filters = filters
        self._rows = rows
        self._vectors = vectors
        self._cache = cache
        self._planner = planner
        self._cal = calibrator

    def after_replay(self) -> None:
        """The index changed under every derived cache: none of them may serve the old state."""
        self.drop_all()
        self.switch_if_grown()
        self.wrote(0)

    def drop_all(self) -> None:
        if self._live.vecfile is not None:
            self._live.vecfile.clear()
        self._filters.clear()
        self._vectors.clear()
        self._rows.clear()
        if self._cache is not None:
            self._cache.clear()  # other processes' writes: we do not know their vectors here

    def after_curve(self) -> None:
        """A new calibration: plans choose new beam widths, cached answers came from the old ones.

        An IVF index is also judged by it: when the curve says the collection's default ``ef_search``
        no longer reaches the recall target and the lists hold much more than they were trained on, the
        index retrains in the background (the lists fit the data worse as it grows; ``faiss_ivf.py``).
        """
        self._planner.clear()
        if self._cache is not None:
            self._cache.clear()
        index, cal = self._live.index, self._cal.curve
        if cal is not None and getattr(index, "kind", "") == "ivf" and getattr(index, "trained", False):
            low = cal.recall_at(self._live.config.ef_search, cal.k) < self._planner.default_recall
            if low and index.growth >= IVF_RECALL_RETRAIN_GROWTH:  # type: ignore[attr-defined]
                index.retrain_in_background()  # type: ignore[attr-defined]

    def after_put(
        self,
        labels: list[int],
        created: list[bool],
        prepared: np.ndarray,
        metas: list[dict[str, Any]],
        rows: list[StoredRow],
    ) -> None:
        self._filters.update(labels, metas)
        if self._live.vecfile is not None:
            self._live.vecfile.put(np.asarray(labels, np.int64), prepared)  # write-through
        replaced = [lb for lb, new in zip(labels, created, strict=True) if not new]
        if replaced:
            self._vectors.discard(replaced)
            self._rows.discard(replaced)
        self._rows.put(rows)  # after the discard: a reader's older copy can no longer be kept
        if self._cache is not None:
            if replaced:
                self._cache.on_labels(replaced)
            self._cache.on_insert(prepared, metas, labels)
        self.switch_if_grown()
        self.wrote(len(labels))

    def after_update(self, labels: list[int], metas: list[dict[str, Any]] | None) -> None:
        self._rows.discard(labels)
        if metas is not None:
            self._filters.update(labels, metas)
        if self._cache is not None:
            # changed documents/metadata make cached hits stale; new metadata may also admit the
            # record into filtered answers it was not part of, exactly like an insert
            self._cache.on_labels(labels)
            if metas is not None:
                vecs = self._live.index.get_vectors(np.asarray(labels, np.int64))
                self._cache.on_insert(vecs, metas, labels)

    def after_delete(self, labels: list[int]) -> None:
        self._filters.update(labels, None)
        if self._live.vecfile is not None:
            self._live.vecfile.invalidate(labels)
        self._vectors.discard(labels)
        self._rows.discard(labels)
        if self._cache is not None:
            self._cache.on_labels(labels)
        self.wrote(len(labels))

    def after_clear(self, n: int) -> None:
        self.drop_all()
        self.wrote(n)

    def switch_if_grown(self) -> None:
        if self._live.switch_if_grown():
            if self._cache is not None:
                self._cache.clear()
            self._planner.clear()
            log.info("collection %r switched to HNSW at %d records", self.name, len(self._live.index))

    def wrote(self, n: int) -> None:
        index = self._live.index
        self._planner.index_changed(index.approximate, index.segments)
        self._cal.wrote(n)


class RecordWriter:
    """The write paths of one collection (see the module docstring for their order).

    Args:
        store: The durable store.
        cid: The collection's id in the store.
        live: The live index (holds the write lock).
        derived: What to keep true after each write.
    """

    def __init__(self, store: Store, cid: int, live: LiveIndex, derived: DerivedState) -> None:
        self._store = store
        self._cid = cid
        self._live = live
        self._derived = derived

    def put(self, ids: Any, vectors: Any, documents: Any, metadatas: Any, *, upsert: bool) -> list[str]:
        """Insert (or, with ``upsert``, replace) a batch atomically; returns the ids in order.

        ``documents`` / ``metadatas`` None: replaced records keep theirs (the store reads them in the
        write transaction), and the derived state is told the metadata each record has afterwards.
        """
        live = self._live
        mat = as_matrix(vectors, live.dim)
        id_list = check_ids(ids, mat.shape[0])
        docs = check_documents(documents, len(id_list)) if documents is not None else None
        metas = check_metadatas(metadatas, len(id_list)) if metadatas is not None else None
        prepared = live.prepare(mat)
        blobs = [row.tobytes() for row in mat]
        meta_json = [dump_metadata(m) for m in metas] if metas is not None else None
        with live.write_lock:
            live.replay()
            res = self._store.put(self._cid, id_list, blobs, docs, meta_json, upsert=upsert)
            labels = np.asarray(res.labels, np.int64)
            created = np.asarray(res.created, bool)
            if live.apply(res.seq, lambda index: index.add(labels, prepared, created)):
                if metas is None:
                    metas = [json.loads(m) if m else {} for m in res.metadatas or [None] * len(id_list)]
                rows = _written_rows(res.labels, res.created, id_list, docs, meta_json)
                self._derived.after_put(res.labels, res.created, prepared, metas, rows)
        return id_list

    def update(self, ids: Any, vectors: Any, documents: Any, metadatas: Any) -> None:
        """Change stored records in place (fields left as None are kept); every id must exist."""
        id_list = check_ids(ids)
        n = len(id_list)
        docs = check_documents(documents, n) if documents is not None else None
        metas = check_metadatas(metadatas, n) if metadatas is not None else None
        if vectors is not None:
            self._update_with_vectors(id_list, vectors, docs, metas)
            return
        live = self._live
        with live.write_lock:
            live.replay()
            meta_json = [dump_metadata(m) for m in metas] if metas is not None else None
            res = self._store.update(self._cid, id_list, docs, meta_json)
            if live.apply(res.seq, lambda index: None):
                self._derived.after_update(res.labels, metas)

    def _update_with_vectors(
        self,
        id_list: list[str],
        vectors: Any,
        docs: list[str | None] | None,
        metas: list[dict[str, Any]] | None,
    ) -> None:
        # a new vector is an upsert of the whole record (fields not given are kept, see put)
        mat = as_matrix(vectors, self._live.dim)
        if mat.shape[0] != len(id_list):
            raise InvalidArgumentError(
                f"got {mat.shape[0]} vectors for {len(id_list)} ids; expected one per id"
            )
        with self._live.write_lock:
            current = self._store.rows_by_ids(self._cid, id_list, vectors=False)
            missing = [i for i in id_list if i not in current]
            if missing:
                raise NotFoundError(
                    f"cannot update {len(missing)} id(s) that are not stored, "
                    f"e.g. {missing[0]!r}; nothing was changed"
                )
            # fields left as None are kept by the store inside the write transaction
            self.put(id_list, mat, docs, metas, upsert=True)

    def delete(self, ids: str | Sequence[str] | None, flt: dict[str, Any] | None) -> int:
        """Delete by ids or by a non-empty filter (exactly one); returns how many were deleted."""
        if (ids is None) == (flt is None):
            raise InvalidArgumentError("delete takes ids or filter (exactly one of them)")
        live = self._live
        with live.write_lock:
            live.replay()
            if ids is not None:
                labels, seq = self._store.delete_ids(self._cid, check_ids(ids))
            else:
                parsed = parse_filter(flt)
                if parsed is None:
                    raise InvalidArgumentError(
                        "delete(filter={}) would delete everything; pass a non-empty filter, or drop the "
                        "collection"
                    )
                where, params = parsed.to_sql("metadata")
                labels, seq = self._store.delete_where(self._cid, where, params)
            if labels and self._remove(labels, seq):
                self._derived.after_delete(labels)
        return len(labels)

    def clear(self) -> int:
        """Delete every record; returns how many were deleted."""
        live = self._live
        with live.write_lock:
            live.replay()
            labels, seq = self._store.delete_where(self._cid, "1", [])
            if labels and self._remove(labels, seq):
                self._derived.after_clear(len(labels))
        return len(labels)

    def _remove(self, labels: list[int], seq: int) -> bool:
        gone = np.asarray(labels, np.int64)
        return self._live.apply(seq, lambda index: index.remove(gone))

    def configure(self, changes: dict[str, Any]) -> None:
        """Store new runtime parameters and apply them (see ``Collection.configure``)."""
        if not changes:
            return
        with self._live.write_lock:
            self.set_config(dataclasses.replace(self._live.config, **changes))
            self._live.index.set_ef_search(self._live.config.ef_search)
            self._derived.after_curve()  # plans and cached answers came from the old parameters
            self._derived.switch_if_grown()

    def record_model(self, model_id: str) -> None:
        """Remember the embedding model of a collection that has none recorded yet."""
        with self._live.write_lock:
            if self._live.config.embedding_model is None:
                self.set_config(dataclasses.replace(self._live.config, embedding_model=model_id))

    def set_config(self, cfg: CollectionConfig) -> None:
        self._store.set_config(self._cid, cfg.to_json())
        self._live.config = cfg


def _written_rows(
    labels: list[int],
    created: list[bool],
    ids: list[str],
    docs: list[str | None] | None,
    meta_json: list[str | None] | None,
) -> list[StoredRow]:
    """The rows a put stored, where they are known whole: every new record, and a replaced one when
    both its document and metadata were given (else the store kept a field we did not read)."""
    whole = docs is not None and meta_json is not None
    return [
        StoredRow(
            label,
            ids[i],
            docs[i] if docs is not None else None,
            meta_json[i] if meta_json is not None else None,
            None,
        )
        for i, (label, new) in enumerate(zip(labels, created, strict=True))
        if new or whole
    ]


def to_record(row: StoredRow) -> Record:
    """A stored row as a :class:`Record` (a fresh vector array and metadata dict each time)."""
    vec = np.frombuffer(row.vector, np.float32).copy() if row.vector is not None else None
    return Record(row.id, vec, row.document, json.loads(row.metadata) if row.metadata else {})


def merge_patch(metadata: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with ``patch`` applied: keys set, None values removed."""
    merged = dict(metadata)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
