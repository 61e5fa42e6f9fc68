"""Plain result types: frozen dataclasses with readable reprs, never bare tuples."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CollectionStats", "Hit", "Hits", "Metric", "Record", "SearchStep", "StoredRow"]


class StoredRow(NamedTuple):
    """One record as the store holds it: the one row layout from the store to the hits.

    A NamedTuple, not a dataclass: rows are made per SQLite row on a cache miss and read per hit, where a
    tuple's construction (~0.3 us) and field access cost least. ``metadata`` stays JSON text until a hit
    is built (most cached rows never become hits); ``vector`` is float32 bytes, None when not read.
    """

    label: int
    id: str
    document: str | None
    metadata: str | None
    vector: bytes | None


class Metric(StrEnum):
    """Distance metric of a collection, fixed at creation.

    * ``cosine``: distance ``1 - cos(a, b)``; score ``cos(a, b)`` (1.0 for identical directions).
    * ``l2``: Euclidean distance; score ``1 / (1 + distance)`` (1.0 for identical vectors).
    * ``ip``: inner product; distance ``1 - <a, b>``; score ``<a, b>``.
    """

    COSINE = "cosine"
    L2 = "l2"
    IP = "ip"

    @classmethod
    def parse(cls, value: str | Metric) -> Metric:
        """Turn a user-given metric name into a :class:`Metric`.

        Accepts the aliases ``"euclidean"``, ``"inner_product"``, ``"dot"``.
        """
        from .errors import InvalidArgumentError

        if isinstance(value, Metric):
            return value
        key = str(value).strip().lower()
        aliases = {"euclidean": "l2", "inner_product": "ip", "dot": "ip", "cos": "cosine"}
        key = aliases.get(key, key)
        try:
            return cls(key)
        except ValueError:
            raise InvalidArgumentError(f"metric must be one of 'cosine', 'l2', 'ip'; got {value!r}") from None


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result.

    Attributes:
        id: The record's id.
        score: Similarity, higher is better (see :class:`Metric` for each metric's formula).
        distance: The metric's distance, lower is better.
        document: The stored text, or None.
        metadata: The stored metadata (a fresh dict; mutating it changes nothing stored).
        metric: Which metric ``score`` and ``distance`` are in (``"bm25"`` for a text-only search).
        vector: The stored vector when asked for with ``include_vectors=True``, else None.
        rank_score: The value the hits were *ordered* by when that is not ``score``, else None: the
            fused reciprocal-rank score of a hybrid search, the marginal relevance at selection of an
            MMR search (``hits.plan.ranking`` names which). ``score`` stays the similarity a plain
            search gives the same record, so one threshold means the same for every kind of search.
    """

    id: str
    score: float
    distance: float
    document: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    metric: str = "cosine"
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)
    rank_score: float | None = None


def _hit_maker() -> Any:
    """A constructor for :class:`Hit` that skips the dataclass ``__init__`` (2x faster on the hot path).

    Frozen dataclasses assign each field through ``object.__setattr__``; calling the slot descriptors
    directly does the same work without the per-field lookups. Used where thousands of hits a second
    are built from store rows (every field given but ``vector``, which is None).
    """
    new = object.__new__
    set_id, set_score, set_dist, set_doc, set_meta, set_metric, set_vec, set_rank = (
        Hit.__dict__[name].__set__
        for name in ("id", "score", "distance", "document", "metadata", "metric", "vector", "rank_score")
    )

    def make(
        rid: str,
        score: float,
        distance: float,
        document: str | None,
        metadata: dict[str, Any],
        metric: str,
        rank_score: float | None = None,
    ) -> Hit:
        hit = new(Hit)
        set_id(hit, rid)
        set_score(hit, score)
        set_dist(hit, distance)
        set_doc(hit, document)
        set_meta(hit, metadata)
        set_metric(hit, metric)
        set_vec(hit, None)
        # every slot is set: an unset slot raises AttributeError on read instead of giving the default
        set_rank(hit, rank_score)
        return hit

    return make


make_hit = _hit_maker()


@dataclass(frozen=True, slots=True)
class Record:
    """A stored record as returned by ``get`` and ``scan``."""

    id: str
    vector: np.ndarray | None = field(repr=False, compare=False)
    document: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CollectionStats:
    """What ``Collection.stats()`` reports.

    ``memory`` says where the bytes are: ``resident`` (the index in RAM, by part: ``graph``, ``codes``,
    ``vectors`` (float32), ``centroids``, ``labels``, ``buffer``, and ``total``), ``disk`` (``vectors``:
    the full-precision vectors in the store, ``snapshot``: the index files, ``store_file``: the whole
    SQLite file, shared by every collection) and ``per_vector`` (``resident`` and ``disk`` bytes per live
    vector). Caches (rows, vectors, results) are reported by ``cache_info()``.
    """

    name: str
    count: int
    dim: int
    metric: str
    index: str
    index_size: int
    tombstones: int
    last_seq: int
    snapshot_seq: int
    embedding_model: str | None
    params: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)


class Hits(list[Hit]):
    """The hits of one search, best first: a plain list, plus how it was obtained.

    "Best first" is the order of the search's ranking (``plan.ranking``): by ``score`` for a vector
    or text-only search, by the fused rank for a hybrid one and in selection order for MMR, where the
    scores (similarities, comparable with a plain search's) need not decrease.

    Attributes:
        partial: True when a deadline cut the search short of the plan (fewer passes or a narrower beam
            than the recall target asked for); the hits are the best found in the time.
        plan: The plan that ran (see ``Collection.explain``), or None.
    """

    __slots__ = ("partial", "plan")

    def __init__(self, hits: Any = (), *, partial: bool = False, plan: Any = None) -> None:
        super().__init__(hits)
        self.partial = partial
        self.plan = plan

    def __repr__(self) -> str:
        flag = ", partial=True" if self.partial else ""
        return f"Hits({list.__repr__(self)}{flag})"


@dataclass(frozen=True, slots=True)
class SearchStep:
    """One result set of a progressive search (``Collection.search_iter``).

    Attributes:
        hits: The best hits found so far.
        final: True for the last step; its hits equal a plain search at the same ``ef``.
        step: 0-based step number.
        ef: The beam width of this pass (None for exact search).
        expected_recall: Recall@k the calibration predicts for this pass.
        elapsed_ms: Time since the search started.
        source: ``"index"`` or ``"cache"``.
    """

    hits: Hits
    final: bool
    step: int
    ef: int | None
    expected_recall: float | None
    elapsed_ms: float
    source: str = "index"
