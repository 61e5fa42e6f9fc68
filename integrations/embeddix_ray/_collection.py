"""A collection of a sharded store: the API of :class:`embeddix_core.Collection`, served by shard actors.

Single-part collections (the default: a collection lives whole on one shard) forward every call to that
shard unchanged, so their answers are the engine's own. Split collections route by id hash (writes, ``get``,
``feedback``) or ask every part and merge (searches, counts, deletes by filter); see ``_merge.py`` for what
is exact. Differences from a single database, all on split collections only:

* a write batch is atomic per part: a batch one part refuses may be written on the others (an ``add``
  refused for a duplicate id is removed from them again);
* hybrid and text-only searches rank text by each part's own BM25 statistics (approximate);
* personalization learns from the feedback each part holds (per part), and ``profile`` is the first
  part's; ``explain`` and ``calibrate`` report the first part's plan and curve;
* ``search_iter`` yields one final step (the merged search) instead of progressive passes.

Embedders run here, in the router's process, never in the shards: documents are embedded before they are
sent, text queries before they are searched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from embeddix_core import (
    Calibration,
    CollectionConfig,
    CollectionStats,
    DuplicateIdError,
    Embeddix,
    Hit,
    Hits,
    InvalidArgumentError,
    InvalidIdError,
    NotFoundError,
    Plan,
    Record,
    SearchStep,
)
from embeddix_core.embeddings import Embedder

from ._errors import StaleRoutingError
from ._merge import merge_hits, merge_info, merge_stats, rrf, top_by_score
from ._routing import READY, Placement

if TYPE_CHECKING:  # the router imports Ray: this module must import without it
    from ._router import Job, Router

__all__ = ["RayCollection"]


def _candidates(k: int, fetch_k: int | None) -> int:
    """How many candidates the engine's MMR and hybrid searches consider (its default: ``max(4k, 20)``)."""
    return max(fetch_k or max(4 * k, 20), k)


class RayCollection:
    """A named set of records spread over the shard actors of a :class:`~embeddix_ray.RayEmbeddix`.

    Get one from ``RayEmbeddix.create_collection`` / ``get_collection``; it behaves like
    :class:`embeddix_core.Collection` (``len(col)``, ``id in col``, ``col[id]``, and the same verbs).
    Threads: any number may use one handle at once.
    """

    def __init__(
        self, router: Router, name: str, info: dict[str, Any], embedder: Embedder | None = None
    ) -> None:
        self.name = name
        self._router = router
        self._info = info
        self._embedder: Embedder | None = None
        if embedder is not None:
            self.use_embedder(embedder)

    # -- properties --------------------------------------------------------------------------------
    @property
    def config(self) -> CollectionConfig:
        """The collection's stored parameters (the first part's; every part has the same)."""
        return CollectionConfig(**self._info["config"])

    @property
    def dim(self) -> int:
        """Vector dimension (fixed at creation)."""
        return int(self._info["config"]["dim"])

    @property
    def metric(self) -> str:
        """``"cosine"``, ``"l2"`` or ``"ip"`` (fixed at creation)."""
        return str(self._info["config"]["metric"])

    @property
    def embedding_model(self) -> str | None:
        """The embedding model id this collection was built with, if one was recorded."""
        return self._info["config"].get("embedding_model")

    @property
    def index_kind(self) -> str:
        """``"exact"`` or ``"hnsw"`` (``"exact+hnsw"`` when the parts of a split collection differ)."""
        kinds = {info["index_kind"] for info in self._each_info()}
        return "+".join(sorted(kinds))

    @property
    def calibration(self) -> Calibration | None:
        """The first part's recall/latency curve, if it has been calibrated."""
        return self._each_info()[0]["calibration"]

    @property
    def parts(self) -> tuple[int, ...]:
        """The shards holding this collection (one unless it was split)."""
        return self._router.placement(self.name).parts

    @property
    def embedder(self) -> Embedder | None:
        """The embedder that turns documents (and text queries) into vectors when none are given."""
        return self._embedder

    def use_embedder(self, embedder: Embedder | None) -> None:
        """Embed documents passed without vectors and text queries with ``embedder`` (None: stop).

        Raises:
            InvalidArgumentError: Its dimension is not the collection's, or the collection records
                another embedding model.
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
            recorded = self.embedding_model
            if recorded is not None and recorded != embedder.model_id:
                raise InvalidArgumentError(
                    f"collection {self.name!r} holds vectors of model {recorded!r}; embedder is "
                    f"{embedder.model_id!r}: mixing models makes distances meaningless"
                )
        self._embedder = embedder

    def __repr__(self) -> str:
        return (
            f"RayCollection(name={self.name!r}, dim={self.dim}, metric={self.metric!r}, "
            f"parts={list(self.parts)})"
        )

    # -- routing helpers ---------------------------------------------------------------------------
    def _job(self, entry: Placement, shard: int, method: str, *args: Any, **kwargs: Any) -> Job:
        return (shard, "call", (self.name, entry.epoch, method, args, kwargs))

    def _first(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``method`` on the first part (the only one, unless split)."""
        return self._router.routed(
            self.name, lambda e: self._router.gather([self._job(e, e.parts[0], method, *args, **kwargs)])[0]
        )

    def _every(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """``method`` on every part at once; the answers in part order."""
        return self._router.routed(
            self.name,
            lambda e: self._router.gather([self._job(e, p, method, *args, **kwargs) for p in e.parts]),
        )

    def _each_info(self) -> list[dict[str, Any]]:
        infos = self._router.routed(
            self.name, lambda e: self._router.gather([(p, "info", (self.name, e.epoch)) for p in e.parts])
        )
        self._info = infos[0]
        return infos

    def _vectors_or_embed(self, vectors: Any, documents: Any) -> Any:
        if vectors is None and documents is not None and self._embedder is not None:
            return self._embedder.embed_documents(documents)
        return vectors  # None without an embedder: the shard raises the engine's error about it

    def _query(self, vector: Any) -> Any:
        if isinstance(vector, str) and self._embedder is not None:
            return self._embedder.embed_query(vector)
        return vector

    # -- mapping behaviour -------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(self._every("__len__"))

    def __contains__(self, rid: object) -> bool:
        if not isinstance(rid, str):
            return False
        return bool(
            self._router.routed(
                self.name,
                lambda e: self._router.gather([self._job(e, e.home(rid), "__contains__", rid)])[0],
            )
        )

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

    # -- writes ------------------------------------------------------------------------------------
    def add(
        self, ids: str | Sequence[str], vectors: Any = None, documents: Any = None, metadatas: Any = None
    ) -> list[str]:
        """Insert new records (see :meth:`embeddix_core.Collection.add`).

        Raises:
            DuplicateIdError: An id is already stored; nothing is written.
            InvalidArgumentError: Bad input; nothing is written (on a split collection, see the module).
        """
        return self._put(False, ids, self._vectors_or_embed(vectors, documents), documents, metadatas)

    def upsert(
        self, ids: str | Sequence[str], vectors: Any = None, documents: Any = None, metadatas: Any = None
    ) -> list[str]:
        """Insert or replace records (see :meth:`embeddix_core.Collection.upsert`)."""
        return self._put(True, ids, self._vectors_or_embed(vectors, documents), documents, metadatas)

    def _put(self, upsert: bool, ids: Any, vectors: Any, documents: Any, metadatas: Any) -> list[str]:
        def op(e: Placement) -> list[str]:
            groups = _group(e, ids, vectors, documents, metadatas)
            if groups is None:  # one part, or input only the engine can judge: it gets the batch whole
                groups = {e.parts[0]: (None, (ids, vectors, documents, metadatas))}
            jobs = [(p, "put", (self.name, e.epoch, upsert, *cols)) for p, (_, cols) in groups.items()]
            answers = self._router.gather(jobs, errors=True)
            failed = [a for a in answers if isinstance(a, BaseException)]
            if failed:
                if not upsert and isinstance(failed[0], DuplicateIdError):
                    # an add is all or nothing: take back what the other parts wrote
                    for p, answer in zip(groups, answers, strict=True):
                        if not isinstance(answer, BaseException):
                            self._router.send(p, "call", self.name, e.epoch, "delete", (answer[0],), {})
                raise failed[0]
            self._maybe_split(e, max(a[1] for a in answers))
            if len(groups) == 1:
                return list(answers[0][0])
            out: list[str | None] = [None] * sum(len(a[0]) for a in answers)
            for (positions, _), answer in zip(groups.values(), answers, strict=True):
                for pos, rid in zip(positions or range(len(answer[0])), answer[0], strict=True):
                    out[pos] = rid
            return [rid for rid in out if rid is not None]

        return self._router.routed(self.name, op)

    def _maybe_split(self, entry: Placement, count: int) -> None:
        table = self._router.table
        if count > table.split_at and len(entry.parts) < table.shards:
            self._router.ask_catalog("request_split", self.name, count)

    def update(
        self, ids: str | Sequence[str], *, vectors: Any = None, documents: Any = None, metadatas: Any = None
    ) -> None:
        """Change stored records in place (see :meth:`embeddix_core.Collection.update`).

        Raises:
            NotFoundError: An id is not stored; nothing is changed (on that part, if split).
        """

        def op(e: Placement) -> None:
            groups = _group(e, ids, vectors, documents, metadatas) or {
                e.parts[0]: (None, (ids, vectors, documents, metadatas))
            }
            self._router.gather(
                [
                    self._job(e, p, "update", cols[0], vectors=cols[1], documents=cols[2], metadatas=cols[3])
                    for p, (_, cols) in groups.items()
                ]
            )

        self._router.routed(self.name, op)

    def update_metadata(self, rid: str, patch: dict[str, Any]) -> Record:
        """Merge ``patch`` into one record's metadata (see ``Collection.update_metadata``)."""
        return self._on_home(rid, "update_metadata", rid, patch)

    def _on_home(self, rid: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        """``method`` on the part holding ``rid`` (the first part when ``rid`` is no id: it raises)."""
        return self._router.routed(
            self.name,
            lambda e: self._router.gather(
                [self._job(e, e.home(rid) if isinstance(rid, str) else e.parts[0], method, *args, **kwargs)]
            )[0],
        )

    def delete(
        self,
        ids: str | Sequence[str] | None = None,
        *,
        filter: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
    ) -> int:
        """Delete records by id, or by filter (see :meth:`embeddix_core.Collection.delete`).

        Returns:
            How many records were deleted.
        """
        kw = {"filter": filter, "where_document": where_document}
        if ids is None:
            return sum(self._every("delete", None, **kw))

        def op(e: Placement) -> int:
            groups = _group(e, ids) if filter is None and where_document is None else None
            if groups is None:
                groups = {e.parts[0]: (None, (ids,))}
            return sum(
                self._router.gather([self._job(e, p, "delete", c[0], **kw) for p, (_, c) in groups.items()])
            )

        return int(self._router.routed(self.name, op))

    def clear(self) -> int:
        """Delete every record (the collection stays). Returns how many were deleted."""
        return sum(self._every("clear"))

    def compact(self) -> None:
        """Rebuild every part's index from its live records and save snapshots."""
        self._every("compact")

    def configure(self, *, ef_search: int | None = None, index_threshold: int | None = None) -> None:
        """Change runtime parameters on every part (stored with each)."""
        self._every("configure", ef_search=ef_search, index_threshold=index_threshold)
        self._each_info()

    def check_model(self, model_id: str, dim: int | None = None) -> None:
        """Raise if this collection was built with another embedding model (records it if none yet)."""
        if model_id == self.embedding_model and dim in (None, self.dim):
            return  # a recorded model never changes: the MCP server asks on every call, at no round trip
        self._every("check_model", model_id, dim)
        if self.embedding_model is None:
            self._each_info()

    def checkpoint(self) -> bool:
        """Save index snapshots on every part. Returns True if any part wrote one."""
        return any(self._every("checkpoint"))

    def calibrate(
        self, *, sample: int | None = None, k: int = 10, source: str = "auto"
    ) -> Calibration | None:
        """Measure every part's recall/latency curve now; returns the first part's."""
        return self._every("calibrate", sample=sample, k=k, source=source)[0]

    def cache_info(self) -> dict[str, Any]:
        """Cache counters (added up over the parts of a split collection)."""
        infos = self._every("cache_info")
        return infos[0] if len(infos) == 1 else merge_info(infos)

    def cache_clear(self) -> None:
        """Drop every cached result (all sessions, every part)."""
        self._every("cache_clear")

    # -- reads -------------------------------------------------------------------------------------
    @overload
    def get(self, ids: str, *, include_vectors: bool = True) -> Record | None: ...  # type: ignore[overload-overlap]
    @overload
    def get(self, ids: Sequence[str], *, include_vectors: bool = True) -> list[Record | None]: ...

    def get(
        self, ids: str | Sequence[str], *, include_vectors: bool = True
    ) -> Record | list[Record | None] | None:
        """Fetch records by id: for one id the record or None, for a list the records in order."""

        def op(e: Placement) -> Any:
            groups = _group(e, ids)
            if groups is None:
                return self._router.gather(
                    [self._job(e, e.parts[0], "get", ids, include_vectors=include_vectors)]
                )[0]
            jobs = [
                self._job(e, p, "get", c[0], include_vectors=include_vectors) for p, (_, c) in groups.items()
            ]
            if isinstance(ids, str):
                return self._router.gather(jobs)[0]
            out: list[Record | None] = [None] * len(list(ids))
            for (positions, _), recs in zip(groups.values(), self._router.gather(jobs), strict=True):
                for pos, rec in zip(positions or (), recs, strict=True):
                    out[pos] = rec
            return out

        return self._router.routed(self.name, op)

    def scan(
        self,
        filter: dict[str, Any] | None = None,
        *,
        where_document: dict[str, Any] | None = None,
        include_vectors: bool = False,
        batch_size: int = 1000,
    ) -> Iterator[Record]:
        """Iterate over stored records (part by part; in insertion order within each), optionally filtered."""
        token = uuid.uuid4().hex
        for index in range(len(self.parts)):
            offset = 0
            while True:

                def page(e: Placement, i: int = index, at: int = offset) -> list[Record]:
                    args = (
                        self.name,
                        e.epoch,
                        filter,
                        where_document,
                        include_vectors,
                        token,
                        at,
                        batch_size,
                    )
                    return self._router.send(e.parts[i], "scan_page", *args) if i < len(e.parts) else []

                rows = self._router.routed(self.name, page)
                yield from rows
                if len(rows) < batch_size:
                    break
                offset += len(rows)

    def count(
        self, filter: dict[str, Any] | None = None, *, where_document: dict[str, Any] | None = None
    ) -> int:
        """How many records match ``filter`` and ``where_document`` (all records when both are None)."""
        return sum(self._every("count", filter, where_document=where_document))

    def stats(self) -> CollectionStats:
        """Counts, index kind and parameters (added up over the parts of a split collection)."""
        parts = self._every("stats")
        return parts[0] if len(parts) == 1 else merge_stats(self.name, parts)

    # -- feedback and personalization --------------------------------------------------------------
    def feedback(self, id: str, *, user: str, query: Any = None, **signal: Any) -> int:
        """Record one relevance-feedback event (see :meth:`embeddix_core.Collection.feedback`), on the part
        holding ``id``. A text ``query`` is embedded here when the collection has an embedder."""
        return int(self._on_home(id, "feedback", id, user=user, query=self._query(query), **signal))

    def profile(self, user: str) -> Any:
        """The user's profile (the first part's, for a split collection)."""
        return self._first("profile", user)

    def forget_user(self, user: str) -> int:
        """Delete every trace of ``user`` on every part. Returns how many events were deleted."""
        return sum(self._every("forget_user", user))

    def personalization(self, **changes: Any) -> Any:
        """The personalization settings; keyword arguments change them on every part."""
        return self._every("personalization", **changes)[0]

    # -- search ------------------------------------------------------------------------------------
    def explain(self, vector: Any = None, k: int = 10, **kwargs: Any) -> Plan:
        """The plan a search would run (the first part's, for a split collection)."""
        return self._first("explain", self._query(vector), k, **kwargs)

    def search(
        self,
        vector: Any = None,
        k: int = 10,
        *,
        text: str | None = None,
        text_weight: float = 0.5,
        mmr_lambda: float | None = None,
        fetch_k: int | None = None,
        **kwargs: Any,
    ) -> Hits:
        """Find the k records nearest to ``vector``, best first (see :meth:`embeddix_core.Collection.search`
        for every argument: ``filter``, ``where_document``, ``recall``, ``deadline_ms``, ``ef``,
        ``include_vectors``, ``cache``, ``session``, ``profile_version``, ``user``).

        On a split collection a plain search is exact over the parts (the union of their top k holds the
        global top k); MMR selects from the global candidates exactly as a single database does; hybrid
        and text-only searches use each part's BM25 statistics (see the module).
        """
        q = self._query(vector)
        every = {"text": text, "text_weight": text_weight, "mmr_lambda": mmr_lambda, "fetch_k": fetch_k}

        def op(e: Placement) -> Hits:
            if not e.split:
                return self._router.gather([self._job(e, e.parts[0], "search", q, k, **every, **kwargs)])[0]
            if text is not None and q is not None:
                return self._hybrid(e, q, k, text, text_weight, fetch_k, kwargs)
            if mmr_lambda is not None and text is None and q is not None:
                return self._mmr(e, q, k, mmr_lambda, fetch_k, kwargs)
            answers = self._router.gather(
                [self._job(e, p, "search", q, k, **every, **kwargs) for p in e.parts]
            )
            return merge_hits(answers, k)

        return self._router.routed(self.name, op)

    def _mmr(
        self, e: Placement, q: Any, k: int, mmr_lambda: float, fetch_k: int | None, kwargs: dict[str, Any]
    ) -> Hits:
        """MMR over the global candidates: the parts' nearest ``fetch_k`` merged, then the engine's own MMR
        run on exactly those (an in-memory collection), so the picks are a single database's."""
        fk = _candidates(k, fetch_k)
        want_vectors = bool(kwargs.get("include_vectors", False))
        ask = {**kwargs, "include_vectors": True, "cache": False}
        answers = self._router.gather([self._job(e, p, "search", q, fk, **ask) for p in e.parts])
        pool = merge_hits(answers, fk)
        if not pool:
            return Hits([], plan=pool.plan)
        with Embeddix.open(None) as scratch:
            col = scratch.create_collection("mmr", self.dim, self.metric, index_threshold=2**62)
            col.add([h.id for h in pool], np.stack([h.vector for h in pool if h.vector is not None]))
            picked = col.search(q, k, mmr_lambda=mmr_lambda, fetch_k=fk, cache=False)
        by_id = {h.id: h for h in pool}
        hits = [
            dataclasses.replace(
                by_id[p.id], rank_score=p.rank_score, vector=by_id[p.id].vector if want_vectors else None
            )
            for p in picked
        ]
        plan = None if pool.plan is None else dataclasses.replace(pool.plan, ranking="mmr")
        return Hits(hits, partial=pool.partial, plan=plan)

    def _hybrid(
        self,
        e: Placement,
        q: Any,
        k: int,
        text: str,
        text_weight: float,
        fetch_k: int | None,
        kwargs: dict[str, Any],
    ) -> Hits:
        """Reciprocal-rank fusion of the merged vector ranking and the merged text ranking."""
        fk = _candidates(k, fetch_k)
        answers = self._router.gather(
            [(p, "hybrid_parts", (self.name, e.epoch, q, text, fk, kwargs)) for p in e.parts]
        )
        by_vector = merge_hits([a[0] for a in answers], fk)
        by_text = top_by_score((h for a in answers for h in a[1]), fk)
        scored = {h.id: h for a in answers for h in a[2]}
        scored.update({h.id: h for h in by_vector})
        # the core checks text_weight; here it only needs to be a number (the parts refused anything else)
        fused = rrf([[h.id for h in by_vector], [h.id for h in by_text]], [1.0 - text_weight, text_weight])[
            :k
        ]
        hits = [dataclasses.replace(scored[rid], rank_score=score) for rid, score in fused]
        plan = by_vector.plan
        return Hits(hits, plan=None if plan is None else dataclasses.replace(plan, ranking="rrf"))

    def search_batch(self, vectors: Any, k: int = 10, **kwargs: Any) -> list[list[Hit]]:
        """Search many queries at once (see :meth:`embeddix_core.Collection.search_batch`); on a split
        collection every part searches the whole batch and each row is merged exactly."""
        answers = self._every("search_batch", vectors, k, **kwargs)
        if len(answers) == 1:
            return list(answers[0])
        return [top_by_score((h for part in rows for h in part), k) for rows in zip(*answers, strict=True)]

    def search_iter(self, vector: Any, k: int = 10, **kwargs: Any) -> Generator[SearchStep, None, None]:
        """Progressive search (see :meth:`embeddix_core.Collection.search_iter`): the shard's passes, streamed
        as it makes them. A split collection yields one final step, the merged search."""
        t0 = time.perf_counter()
        q = self._query(vector)
        for attempt in range(3):
            entry = self._router.placement(self.name, fresh=attempt > 0)
            if entry.split or entry.state != READY:
                break
            steps = self._router.stream(entry.parts[0], self.name, entry.epoch, q, k, kwargs)
            try:
                first = next(steps, None)
            except StaleRoutingError:
                continue  # placed elsewhere since the table was read: read it again
            if first is not None:
                yield first
                if not first.final:
                    yield from steps
            return
        plain = {key: v for key, v in kwargs.items() if key != "stable_rounds"}
        hits = self.search(q, k, **plain)
        ef = None if hits.plan is None else hits.plan.ef
        yield SearchStep(hits, True, 0, ef, None, (time.perf_counter() - t0) * 1000.0)

    async def asearch_iter(self, vector: Any, k: int = 10, **kwargs: Any) -> AsyncIterator[SearchStep]:
        """Async form of :meth:`search_iter`: each step is awaited in a worker thread."""
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


def _group(
    entry: Placement, ids: Any, *columns: Any
) -> dict[int, tuple[list[int] | None, tuple[Any, ...]]] | None:
    """Split a batch by home shard: ``{shard: (positions in the batch, (ids, *columns))}``.

    None when the collection has one part or the batch is not well formed (a bad id, columns of the wrong
    length): the first part then gets it whole and raises the engine's own error.
    """
    if not entry.split:
        return None
    if isinstance(ids, str):
        return {entry.home(ids): (None, (ids, *columns))}
    try:
        id_list = list(ids)
        n = len(id_list)
        rows = [None if c is None else list(c) for c in columns]
    except TypeError:
        return None
    if (
        not n
        or not all(isinstance(rid, str) for rid in id_list)
        or any(r is not None and len(r) != n for r in rows)
    ):
        return None
    if columns and columns[0] is not None and np.ndim(columns[0]) != 2:
        return None
    by_home: dict[int, list[int]] = {}
    for pos, rid in enumerate(id_list):
        by_home.setdefault(entry.home(rid), []).append(pos)
    out: dict[int, tuple[list[int] | None, tuple[Any, ...]]] = {}
    for home, positions in by_home.items():
        picked = tuple(None if r is None else [r[i] for i in positions] for r in rows)
        out[home] = (positions, ([id_list[i] for i in positions], *picked))
    return out
