"""The collection: the facade users touch (add / upsert / get / delete / search / search_batch / ...).

It checks arguments, runs writes against the store, and hands everything else to parts with one job
each, built here and given what they need (none calls back into the collection):

* ``index/live.py`` - the live index: load, replay, switch exact -> HNSW, checkpoint;
* ``query/calibrator.py`` - the recall/latency curve and its background thread;
* ``query/planner.py`` - the plan of each search (beam width from the curve), cached;
* ``query/filter_cache.py`` - the labels matching recent filters, kept current under writes;
* ``query/executor.py`` - plain, filtered, hybrid, MMR, progressive and batched searches;
* ``query/cached_search.py`` - default searches through the result cache (``cache/``).

Durability and ordering rule: a write returns after the store committed it and the index applied it, so
a record is searchable as soon as ``add`` returns (``records.py`` says how).

Threads: any number of threads may search at once (the native index releases the GIL); writes run one at
a time and hold readers off only while the index applies one batch.

Processes: before a search, each thread asks SQLite whether anything was committed since it last asked;
if so, the collection replays the store's changes under its write lock and drops every derived cache
(filter labels, rows, vectors, results), whichever way the replay went (``LiveIndex.replay``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from ._validate import (
    as_matrix,
    check_ef,
    check_int,
    check_k,
    check_lookup_ids,
    check_metadata,
    check_patch,
    prepared_query,
)
from .config import PROFILES, CollectionConfig, EmbeddixSettings, profile_settings
from .embeddings._protocol import Embedder, check_texts
from .errors import (
    ClosedError,
    InvalidArgumentError,
    InvalidIdError,
    ModelMismatchError,
    NotFoundError,
)
from .metrics import OPERATIONS, Meter, timed
from .parts import Parts
from .personalize import PersonalizeConfig, Profile
from .personalize.search import personal_search
from .personalize.service import Personalizer
from .personalize.signals import check_feedback, check_user
from .query.cached_search import NO_CACHE_INFO
from .query.doc_filter import combine, recheck, recheck_batch, recheck_steps
from .query.filters import Filter, parse_filter
from .query.planner import Calibration, Plan, check_deadline, check_recall
from .reconfigure import Reconfiguration
from .reconfigure import start as start_reconfigure
from .records import merge_patch, to_record
from .storage.sqlite import CollectionRow, Store
from .types import CollectionStats, Hit, Hits, Record, SearchStep

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
        self._cid = row.cid
        self.name = row.name
        config = CollectionConfig.from_json(row.config)
        # a profile's cache budgets, where the process settings leave them at their defaults
        self._settings = settings = profile_settings(settings, config.profile)
        self._closed = False
        self._meter = Meter(OPERATIONS)  # latency and errors of the public operations (metrics.py)
        self._metric = config.metric.value
        self._parts = p = Parts.build(store, root, row, settings)
        self._live, self._ex, self._cal, self._planner = p.live, p.executor, p.calibrator, p.planner
        self._writer, self._cache, self._cached = p.writer, p.cache, p.cached
        self._prior_memo: tuple[tuple[Any, int], Calibration | None] | None = None  # see _plan
        self._write_lock = p.live.write_lock
        self._embedder: Embedder | None = None
        self._reconf: Reconfiguration | None = None
        # feedback and profiles (personalize/): events live in the store, profiles are derived from them
        self._personal = Personalizer(store, row.cid, p.live.config.dim, f"{store.store_id}:{row.cid}")
        p.open()

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
    def embedder(self) -> Embedder | None:
        """The embedder that turns documents (and text queries) into vectors when none are given."""
        return self._embedder

    def use_embedder(self, embedder: Embedder | None) -> None:
        """Embed documents passed without vectors (``add(ids, documents=[...])``) and text queries
        (``search("red fox")``) with ``embedder``, as Chroma's embedding function does (None: stop).

        Raises:
            InvalidArgumentError: Its dimension is not the collection's, or the collection records
                another embedding model (``embedding_model`` at creation).
        """
        if embedder is not None:
            for attr in ("embed_documents", "embed_query", "dim", "model_id"):
                if not hasattr(embedder, attr):
                    raise InvalidArgumentError(
                        f"embedder must implement embeddix_core.embeddings.Embedder; "
                        f"{type(embedder).__name__} has no {attr!r}"
                    )
            if int(embedder.dim) != self.dim:
                raise InvalidArgumentError(
                    f"embedder {embedder.model_id!r} makes {embedder.dim}-d vectors; collection "
                    f"{self.name!r} holds {self.dim}-d vectors"
                )
            recorded = self.config.embedding_model
            if recorded is not None and recorded != embedder.model_id:
                raise InvalidArgumentError(
                    f"collection {self.name!r} holds vectors of model {recorded!r}; embedder is "
                    f"{embedder.model_id!r}: mixing models makes distances meaningless"
                )
        self._embedder = embedder

    def _vectors_or_embed(self, vectors: Any, documents: Any) -> Any:
        """The vectors given, or the documents embedded when vectors is None (the text-in path)."""
        if vectors is not None:
            return vectors
        if documents is None:
            raise InvalidArgumentError("vectors is None and there are no documents to embed; pass vectors")
        if self._embedder is None:
            raise InvalidArgumentError(
                f"vectors is None: collection {self.name!r} has no embedder to embed the documents; pass "
                "vectors, or give it one (db.get_collection(name, embedder=...) or col.use_embedder(...))"
            )
        return self._embedder.embed_documents(check_texts(documents))

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
        if self._closed or self._live.dropped:
            self._check_open()
        dv = self._live.stale()
        if dv is None:
            return
        with self._write_lock:
            self._live.replay()
        self._live.synced(dv)

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
        if self._reconf is not None:
            self._reconf.cancel()  # before the parts: it swaps into them
        self._parts.stop_background()

    def _close(self, *, checkpoint: bool) -> None:
        if not self._closed:
            if self._reconf is not None:
                self._reconf.cancel()
            self._parts.close(checkpoint=checkpoint, min_changes=self._settings.snapshot_min_changes)
            self._closed = True

    def _drop_files(self) -> None:
        if self._reconf is not None:
            self._reconf.cancel()
        self._parts.drop_files()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed or self._live.dropped:
            raise ClosedError(
                f"collection {self.name!r} is closed or was dropped; get it again from the database"
            )

    def cache_info(self) -> dict[str, Any]:
        """Cache counters: hits, misses, semantic_hits, verified_rejects, entries, bytes, ...

        ``invalidated`` counts entries dropped by writes (precise invalidation), ``evicted`` those
        dropped for the memory budget, ``hit_rate`` the share of lookups served from the cache.
        ``tiers`` says whether each tier is used and why, from measured costs: ``exact`` and
        ``semantic`` for plain searches, ``personal`` for the exact tier of personalized ones.
        """
        return dict(NO_CACHE_INFO) if self._cached is None else self._cached.info()

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
    @timed("add")
    def add(
        self, ids: str | Sequence[str], vectors: Any = None, documents: Any = None, metadatas: Any = None
    ) -> list[str]:
        """Insert new records as one atomic batch.

        Args:
            ids: One id or a list of unique ids (non-empty strings, at most 512 bytes).
            vectors: One vector or an (n, dim) matrix / list of vectors; None: the documents are
                embedded with the collection's :attr:`embedder`.
            documents: Optional text per record (indexed for full-text search).
            metadatas: Optional metadata dict per record (str, int, float, bool or lists of those).

        Returns:
            The ids, in order.

        Raises:
            DuplicateIdError: An id is already stored (use :meth:`upsert`); nothing is written.
            InvalidArgumentError: Bad input (its subclasses say which); nothing is written.
        """
        self._check_open()
        vectors = self._vectors_or_embed(vectors, documents)
        return self._writer.put(ids, vectors, documents, metadatas, upsert=False)

    @timed("upsert")
    def upsert(
        self, ids: str | Sequence[str], vectors: Any = None, documents: Any = None, metadatas: Any = None
    ) -> list[str]:
        """Insert records, replacing any stored under the same ids, as one atomic batch.

        A stored record gets the new vector and every field given; a field not given for the batch
        (``documents=None`` or ``metadatas=None``) keeps its stored value, as in Chroma. A field given
        replaces the stored one whole: a None entry in ``documents`` clears that record's document, and
        a metadata dict replaces the old dict (use :meth:`update_metadata` to merge keys). New ids are
        inserted as by :meth:`add`.

        Args:
            ids: One id or a list of unique ids (non-empty strings, at most 512 bytes).
            vectors: One vector or an (n, dim) matrix / list of vectors; None: the documents are
                embedded with the collection's :attr:`embedder`.
            documents: Optional text per record; None keeps the stored documents.
            metadatas: Optional metadata dict per record; None keeps the stored metadata.

        Returns:
            The ids, in order.

        Raises:
            InvalidArgumentError: Bad input (its subclasses say which); nothing is written.
        """
        self._check_open()
        vectors = self._vectors_or_embed(vectors, documents)
        return self._writer.put(ids, vectors, documents, metadatas, upsert=True)

    @timed("update")
    def update(
        self, ids: str | Sequence[str], *, vectors: Any = None, documents: Any = None, metadatas: Any = None
    ) -> None:
        """Change stored records in place; every id must exist. Fields left as None are kept.

        Raises:
            NotFoundError: An id is not stored; nothing is changed.
        """
        self._check_open()
        self._writer.update(ids, vectors, documents, metadatas)

    def update_metadata(self, rid: str, patch: dict[str, Any]) -> Record:
        """Merge ``patch`` into one record's metadata (a None value removes that key).

        Returns:
            The updated record.
        """
        check_lookup_ids(rid if isinstance(rid, str) else [rid])
        patch_clean = check_patch(patch)
        with self._write_lock:
            self.update(rid, metadatas=[check_metadata(merge_patch(self[rid].metadata, patch_clean))])
        return self[rid]

    @timed("delete")
    def delete(
        self,
        ids: str | Sequence[str] | None = None,
        *,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
    ) -> int:
        """Delete records by id, or by metadata filter and/or ``where_document`` (ids or filters).

        Absent ids are not an error. Deletes are tombstones in the index, reclaimed as new records arrive.

        Args:
            ids: One id or a list of ids.
            filter: A metadata filter.
            where_document: A full-text restriction on the document (see :meth:`search`).

        Returns:
            How many records were deleted.

        Raises:
            InvalidArgumentError: Both ids and a filter, or neither; a malformed filter.
        """
        self._check_open()
        if where_document is None:
            return self._writer.delete(ids, filter)
        if ids is not None:
            raise InvalidArgumentError("delete takes ids or filter/where_document, not both")
        flt = self._filter(filter, where_document)
        # The matching ids are read, then deleted, under the write lock: no write of this process lands
        # in between (another process's could: the metadata-only delete is one statement, this is two).
        with self._write_lock:
            matched = [rec.id for rec in self._scan(flt, include_vectors=False, batch_size=1000)]
            return self._writer.delete(matched, None) if matched else 0

    def clear(self) -> int:
        """Delete every record (the collection and its settings stay).

        Returns:
            How many records were deleted.
        """
        self._check_open()
        return self._writer.clear()

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
        given = {"ef_search": ef_search, "index_threshold": index_threshold}
        self._writer.configure({key: value for key, value in given.items() if value is not None})

    def reconfigure(
        self,
        *,
        quantization: str | None = None,
        index: str | None = None,
        profile: str | None = None,
    ) -> Reconfiguration:
        """Change the index or quantization: rebuilt in the background, then swapped in atomically.

        Searches and writes go on against the old index while the new one is built from the store;
        the swap replays the writes made meanwhile, stores the new configuration and drops the old
        index's calibration and cached answers (see ``embeddix_core/reconfigure.py``). A crash at any
        point loses nothing: the old or the new index serves after a restart.

        Args:
            quantization: ``"none"``, ``"fp16"``, ``"sq8"`` or ``"pq"`` (None: the profile's, else as is).
            index: ``"auto"``, ``"flat"``, ``"hnsw"`` or ``"ivf"`` (None: the profile's, else as is).
            profile: A preset (``"latency"``, ``"balanced"``, ``"memory"``) giving the two above where
                they are not given; stored as the collection's profile (its cache budgets apply from
                the next open).

        Returns:
            A handle: ``.wait()`` blocks until the new index serves, ``.progress`` goes from 0 to 1.
            When nothing about the index changes it is already done.

        Raises:
            InvalidArgumentError: A value is not one of the choices, they do not fit together, or a
                reconfigure of this collection is still running.
        """
        self._check_open()
        with self._write_lock:
            running = self._reconf
            if running is not None and not running.done:
                raise InvalidArgumentError(
                    f"collection {self.name!r} is already being reconfigured ({running!r}); wait() for it "
                    "before starting another"
                )
            current = self._live.config
            if profile is not None and profile not in PROFILES:
                raise InvalidArgumentError(
                    f"profile must be None or one of {sorted(PROFILES)}; got {profile!r}"
                )
            preset = PROFILES[profile] if profile is not None else None
            q = quantization or (preset.quantization if preset else current.quantization)
            kind = index or (preset.index if preset and preset.quantization == q else None)
            if kind is None:
                kind = current.index if quantization is None else "auto"
            target = dataclasses.replace(
                current, quantization=q, index=kind, profile=profile or current.profile
            )
            if (target.quantization, target.approximate) == (current.quantization, current.approximate):
                self._writer.set_config(target)  # the profile or the spelling of the index only
                handle = Reconfiguration(target, current)
                handle._finish(None)
                return handle
            self._reconf = start_reconfigure(self._live, target, self._swapped, self._store.release_reader)
            return self._reconf

    def _swapped(self, target: CollectionConfig) -> None:
        """A reconfigure's new index is in place (write lock held): store the config, re-derive."""
        self._writer.set_config(target)
        self._cal.reset({"store_id": self._store.store_id, "cid": self._cid, "params": self._live.params()})
        self._parts.derived.after_curve()  # plans and cached answers came from the old index
        self._cal.maybe_start()

    def check_model(self, model_id: str, dim: int | None = None) -> None:
        """Raise if this collection was built with another embedding model (records it if none yet)."""
        if dim is not None and dim != self.dim:
            raise ModelMismatchError(
                f"collection {self.name!r} has dimension {self.dim}, but model {model_id!r} "
                f"makes {dim}-d vectors"
            )
        current = self._live.config.embedding_model
        if current is None:
            self._writer.record_model(model_id)
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
        out = [None if (row := rows.get(rid)) is None else to_record(row) for rid in id_list]
        return out[0] if single else out

    def scan(
        self,
        filter: dict[str, Any] | None = None,
        *,
        where_document: dict[str, Any] | None = None,
        include_vectors: bool = False,
        batch_size: int = 1000,
    ) -> Iterator[Record]:
        """Iterate over stored records (in insertion order), optionally filtered.

        Args:
            filter: A metadata filter, or None for every record.
            where_document: A full-text restriction on the document (see :meth:`search`).
            include_vectors: Also return vectors.
            batch_size: Rows read from the store per round trip.
        """
        self._sync()
        return self._scan(self._filter(filter, where_document), include_vectors, batch_size)

    def _scan(self, flt: Filter | None, include_vectors: bool, batch_size: int) -> Iterator[Record]:
        batch_size = check_int(batch_size, "batch_size", 1, 1_000_000)
        where, params = flt.to_sql("metadata") if flt is not None else (None, [])
        after = -1
        while rows := self._store.scan(
            self._cid, where, params, after_label=after, limit=batch_size, vectors=include_vectors
        ):
            yield from map(to_record, rows)
            after = rows[-1][0]

    def count(
        self, filter: dict[str, Any] | None = None, *, where_document: dict[str, Any] | None = None
    ) -> int:
        """How many records match ``filter`` and ``where_document`` (all records when both are None)."""
        self._sync()
        flt = self._filter(filter, where_document)
        where, params = flt.to_sql("metadata") if flt is not None else (None, [])
        return self._store.count(self._cid, where, params)

    def stats(self) -> CollectionStats:
        """Counts, index kind and parameters."""
        self._sync()
        return self._live.stats(self.name, self.metric)

    # -- feedback and personalization --------------------------------------------------------------
    def feedback(
        self,
        id: str,
        *,
        user: str,
        query: Any = None,
        relevant: bool | None = None,
        rating: float | None = None,
        dwell_s: float | None = None,
        session: str | None = None,
    ) -> int:
        """Record one relevance-feedback event of ``user`` about record ``id``.

        The signal is the first given of ``relevant`` (+1 / -1), ``rating`` (``2 * rating - 1``) and
        ``dwell_s`` (implicit, ``0.5 * min(dwell_s / dwell_full_s, 1)``); see ``personalize/``. Durable
        when this returns (the store's durability rule); the user's profile version changes.

        Args:
            id: The record the feedback is about (must be stored).
            user: Who gave it (profiles and personalized searches are per user).
            query: The query it answers: a vector, or text (embedded with the collection's embedder when
                it has one, else kept as text only). Stored with the event.
            relevant: Explicit judgement.
            rating: Graded judgement in [0, 1] (1 = best).
            dwell_s: Seconds the user spent on the record (implicit, weaker).
            session: The session the event came from.

        Returns:
            The event's id (also the user's new profile version).

        Raises:
            NotFoundError: ``id`` is not stored.
            InvalidArgumentError: No signal, a rating outside [0, 1], a negative dwell, a bad type.
        """
        self._check_open()
        args = check_feedback(id, user, session, relevant, rating, dwell_s)
        qbytes: bytes | None = None
        qtext: str | None = None
        if isinstance(query, str):
            qtext = query
            if self._embedder is not None:
                qbytes = self._query(query).astype("<f4").tobytes()
        elif query is not None:
            qbytes = self._query(query).astype("<f4").tobytes()
        return self._personal.record(args, qbytes, qtext)

    def profile(self, user: str) -> Profile:
        """The user's profile, learned from their feedback (an unknown user's is empty, version 0)."""
        self._check_open()
        return self._personal.profile(check_user(user))

    def forget_user(self, user: str) -> int:
        """Delete every trace of ``user``: their events (durably), profile, session history and cached
        personalized results in this process. Other processes rebuild the profile from the store on
        their next use and find it gone; their cached entries are keyed by a version no search reaches.

        Returns:
            How many events were deleted.
        """
        self._check_open()
        user = check_user(user)
        n = self._personal.forget(user)
        if self._cache is not None:
            # the user's namespaces (one per session) are named by hashes of the user: found by name
            for name in self._personal.forget_namespaces(user):
                self._cache.namespace(name).clear()
        return n

    def personalization(self, **changes: Any) -> PersonalizeConfig:
        """The collection's personalization settings; keyword arguments change and store them.

        Settings live with the collection in the store (table ``personalization``); see
        :class:`~embeddix_core.personalize.PersonalizeConfig` for each weight and the formula.

        Raises:
            InvalidArgumentError: An unknown setting or a value out of range (nothing is changed).
        """
        self._check_open()
        return self._personal.configure(**changes) if changes else self._personal.config

    # -- search ------------------------------------------------------------------------------------
    def _query(self, vector: Any) -> np.ndarray:
        """One query vector, checked, as the index compares it (unit length for cosine); a string is
        embedded with the collection's :attr:`embedder`."""
        if isinstance(vector, str):
            if self._embedder is None:
                raise InvalidArgumentError(
                    f"got the text {vector[:40]!r} as the query vector, and collection {self.name!r} has no "
                    "embedder; pass a vector, text=... for a full-text search, or give the collection an "
                    "embedder (db.get_collection(name, embedder=...))"
                )
            vector = self._embedder.embed_query(vector)
        return prepared_query(vector, self.dim, self._live.normalize)

    def _with_filter(self, plan: Plan, flt: Filter) -> Plan:
        """``plan`` naming how the filter runs (the executor runs what it names here: see
        ``SearchExecutor.filter_strategy``); memoized per strategy and match count."""
        strategy, matched = self._ex.filter_strategy(flt)
        return self._planner.variant(
            plan,
            plan.result_cache,
            label=f"filter:{strategy}:{matched}",
            filter_strategy=strategy,
            filter_matches=matched,
        )

    def _filter(
        self, filter: dict[str, Any] | None, where_document: dict[str, Any] | None = None
    ) -> Filter | None:
        """Parse a filter and check its comparisons against the kinds of values the fields hold; join
        a ``where_document`` to it (``query/doc_filter.py``).

        Raises:
            InvalidFilterError: malformed, or comparing with a kind no stored value of the field has
                (``{"year": {"$gt": "2020"}}`` on integer years; see ``query/field_types.py``).
        """
        flt = parse_filter(filter) if filter else None
        types = self._ex.filters.types
        if flt is not None and types is not None:
            types.check(flt)
        if where_document is None:
            return flt
        # the write sequence versions the document filter's cached label set: a documents-only update
        # changes which records match without passing through the filter cache's maintenance
        return combine(flt, where_document, self._store, self._cid, self._live.applied_seq)

    def _plan(self, k: int, recall: float | None, deadline_ms: float | None, ef: int | None) -> Plan:
        live = self._live
        curve = self._cal.curve
        if curve is None and live.index.approximate:
            # a calibration is due and not measured yet: plan from the prior. Whether one is due changes
            # only with the index or its contents (the applied sequence number), so it is asked once per
            # state, not per search (~3 us on cold caches, every default search until calibrated)
            state = (live.index, live.applied_seq)
            memo = self._prior_memo
            if memo is not None and memo[0] == state:
                curve = memo[1]
            else:
                curve = self._cal.prior()
                self._prior_memo = (state, curve)
        return self._planner.plan(k, recall, deadline_ms, ef, live.index, live.config.ef_search, curve)

    def explain(
        self,
        vector: Any = None,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
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
        strategy, matches = self._ex.filter_strategy(self._filter(filter, where_document))
        return dataclasses.replace(
            plan, plan_cached=was_cached, filter_strategy=strategy, filter_matches=matches
        )

    @timed("search")
    def search(
        self,
        vector: Any = None,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
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
        user: str | None = None,
    ) -> Hits:
        """Find the k records nearest to ``vector``, best first.

        Args:
            vector: The query vector (dimension ``dim``). May be None for a text-only search.
            k: How many hits; larger than the collection returns every (matching) record.
            filter: Metadata filter (see ``embeddix_core.query.filters``).
            where_document: Full-text restriction on the document, as Chroma's: ``{"$contains": "fox"}``
                (case-sensitive substring), ``{"$not_contains": ...}``, ``{"$regex": ...}``,
                ``{"$not_regex": ...}``, and ``{"$and": [...]}`` / ``{"$or": [...]}`` of those. A record
                without a document never matches ``$contains``/``$regex`` and always matches the
                ``$not_`` forms (see ``embeddix_core.query.doc_filter``). Such searches bypass the result
                cache.
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
            user: Personalize for this user (vector searches only, not hybrid or MMR): the
                ``candidate_factor * k`` nearest are re-ranked by the user's profile (formula in
                ``personalize/rerank.py``); hits keep ``score`` and carry ``rank_score``, and
                ``plan.ranking`` is ``"personalized"``. None (default): the plain search, unchanged.

        Returns:
            :class:`Hits` (a list of :class:`Hit`), plus ``partial`` and ``plan``. Each ``score`` is
            higher-is-better in the collection's metric (cosine similarity for ``cosine``) and is the
            same number for a record whether the search is plain, hybrid or MMR, so one threshold
            serves all three. Hybrid hits come in fused order and MMR hits in selection order, so their
            scores need not decrease; the value they were ordered by is ``Hit.rank_score`` and
            ``plan.ranking`` says which (``"vector"``, ``"rrf"``, ``"mmr"``, ``"bm25"``). A text-only
            search (no vector) has no similarity: its scores are ``-bm25`` (metric ``"bm25"``).
        """
        t0 = time.perf_counter()
        self._check_open()
        k = check_k(k)  # (the guards below save ~1 us a call on the default path)
        recall = check_recall(recall) if recall is not None else None
        deadline_ms = check_deadline(deadline_ms) if deadline_ms is not None else None
        ef = check_ef(ef) if ef is not None else None
        flt = None if filter is None and where_document is None else self._filter(filter, where_document)
        if text is not None or vector is None:
            if user is not None:
                raise InvalidArgumentError("user= personalizes vector searches; drop text= or user")
            return self._hybrid(
                vector, text, k, flt, recall, deadline_ms, ef, text_weight, fetch_k, include_vectors
            )
        q = self._query(vector)
        self._sync()
        if self._live.index.approximate:
            # kept by reference: a copy when q is, or views, the caller's own array (l2 / ip queries
            # pass through; a (1, dim) array's row is a view)
            self._cal.remember(q if q is not vector and q.base is None else q.copy())
            self._cal.last_search = time.monotonic()  # a background calibration yields to searches
        plan = self._plan(k, recall, deadline_ms, ef)
        if flt is not None:
            plan = self._with_filter(plan, flt)
        if user is not None:
            if mmr_lambda is not None:
                raise InvalidArgumentError(
                    "user= personalizes plain vector searches; drop mmr_lambda or user"
                )
            personal = self._personalized(
                q,
                k,
                flt,
                plan,
                (recall, deadline_ms, ef),
                check_user(user),
                session,
                include_vectors,
                cache and where_document is None,
            )
            if personal is not None:
                return personal
        if mmr_lambda is not None:
            hits = self._ex.mmr(q, k, flt, plan.ef, mmr_lambda, fetch_k, include_vectors)
            return recheck(Hits(hits, plan=dataclasses.replace(plan, ranking="mmr")), flt)
        # the result cache keeps and invalidates entries by metadata only: document filters bypass it
        if cache and self._cached is not None and not include_vectors and where_document is None:
            return self._cached.search(
                q, k, flt, plan, (recall, deadline_ms, ef, profile_version), session, t0
            )
        hits = self._ex.plain(q, k, flt, plan, include_vectors, t0)
        return hits if flt is None else recheck(hits, flt)

    def _hybrid(
        self,
        vector: Any,
        text: str | None,
        k: int,
        flt: Filter | None,
        recall: float | None,
        deadline_ms: float | None,
        ef: int | None,
        text_weight: float,
        fetch_k: int | None,
        include_vectors: bool,
    ) -> Hits:
        """A text-only (no vector) or hybrid search: BM25 fused with the vector ranking."""
        q = None if vector is None else self._query(vector)
        self._sync()
        plan = self._plan(k, recall, deadline_ms, ef)
        hits = self._ex.hybrid(q, text, k, flt, plan.ef, text_weight, fetch_k, include_vectors)
        plan = dataclasses.replace(plan, ranking="bm25" if q is None else "rrf")
        return recheck(Hits(hits, plan=plan), flt)

    def _personalized(
        self,
        q: np.ndarray,
        k: int,
        flt: Filter | None,
        plan: Plan,
        params: tuple[float | None, float | None, int | None],
        user: str,
        session: str | None,
        include_vectors: bool,
        cache: bool,
    ) -> Hits | None:
        """The search re-ranked for ``user`` (``personalize/search.py``), or None when there is nothing to
        personalize by: no feedback and no session de-duplication. The plain search then runs, at its
        speed and with its cache; the MCP server names every agent a user, most before any feedback."""
        pz = self._personal
        st = pz.state(user)
        if (session is None or pz.config.session_penalty <= 0) and st.events == 0:
            return None
        hits = personal_search(
            self._ex,
            self._live,
            self._planner,
            self._cache if cache and self._cache is not None else None,
            pz,
            q,
            k,
            flt,
            plan,
            params,
            user,
            session,
            include_vectors,
            st,
        )
        return recheck(hits, flt)

    @timed("search_iter")
    def search_iter(
        self,
        vector: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
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
            where_document: Full-text restriction on the document (see :meth:`search`).
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
        flt = self._filter(filter, where_document)
        q = self._query(vector)
        self._sync()
        plan = self._plan(k, recall, deadline_ms, ef)
        steps = self._ex.steps(q, k, flt, plan, self._cal.curve, stable_rounds, include_vectors, t0)
        yield from recheck_steps(steps, flt)

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

    @timed("search_batch")
    def search_batch(
        self,
        vectors: Any,
        k: int = 10,
        *,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
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
            where_document: One full-text restriction applied to every query (see :meth:`search`).
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
        flt = self._filter(filter, where_document)
        self._sync()
        plan = self._plan(k, check_recall(recall), None, check_ef(ef))
        workers = (os.cpu_count() or 1) if num_threads < 0 else num_threads
        return recheck_batch(self._ex.batch(q, k, flt, plan.ef, include_vectors, workers), flt)
