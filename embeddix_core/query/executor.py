"""The search executor: plain, filtered, hybrid, MMR, progressive and batched searches over the live index.

It turns a checked query and a plan into hits, and nothing else: arguments are checked and plans made by
the collection and the planner, results cached by ``cached_search``. Every search reads the index the
live index holds *now* (``live.index``), so a switch or a reload between two searches is never mixed
into one.

Filters: a filtered search either scans the matches exactly (``"exact-subset"``, from the filter's
subset matrix) or searches the approximate index with the match set as its filter hook (``"index-hook"``,
which keeps exploring until it has k allowed results); ``filter_strategy.py`` says which, by measured
cost. Every filtered hit is re-checked against its row (a write may have changed it between the label
set and the row read).

Scores: higher is better and say their metric: ``1 - d`` for cosine and inner product, ``1 / (1 + d)``
for Euclidean distance ``d``, and ``-bm25`` for text only (``"bm25"``). Hybrid and MMR searches order
their hits by another value (the fused rank, the marginal relevance: ``Hit.rank_score``) but score each
hit as a plain search would, so a threshold means the same for every search with a query vector.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson

from .. import _native
from .._validate import check_fraction, check_text_query
from ..cache import VectorCache
from ..cache.row_cache import RowCache
from ..config import EmbeddixSettings
from ..errors import InvalidArgumentError
from ..index.base import IndexResult, VectorIndex, exact_topk, merge_topk
from ..index.live import LiveIndex
from ..index.segmented import shared_pool
from ..storage.sqlite import Store
from ..types import Hit, Hits, SearchStep, StoredRow, make_hit
from .filter_cache import FilterCache, FilterEntry
from .filter_matrix import FilterMatrix
from .filter_strategy import EXACT_SUBSET, INDEX_HOOK, SUBSET_GRAPH, FilterCosts
from .filters import Filter
from .fusion import fts_query, mmr_select, rrf_fuse
from .planner import DEADLINE_SAFETY, Calibration, Plan, progressive_steps

__all__ = ["SearchExecutor"]

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


class SearchExecutor:
    """Runs searches for one collection.

    Args:
        live: The live index (read for its current index on every search).
        store: The durable store (full-text search, rows with vectors).
        cid: The collection's id in the store.
        metric: The collection's metric name (``"cosine"``, ``"l2"``, ``"ip"``).
        settings: Process settings (the filter strategy thresholds).
        rows: The row cache in front of the store.
        vectors: The full-precision vector cache in front of the store.
        filters: The filter label cache.
    """

    def __init__(
        self,
        live: LiveIndex,
        store: Store,
        cid: int,
        metric: str,
        settings: EmbeddixSettings,
        rows: RowCache,
        vectors: VectorCache,
        filters: FilterCache,
    ) -> None:
        self._live = live
        self._store = store
        self._cid = cid
        self.metric = metric
        self.space = live.space
        self._settings = settings
        self.rows = rows
        self.vectors = vectors
        self.filters = filters
        self.filter_costs = FilterCosts(live.config.dim)
        # filter_strategy's answer, kept for the next knn of that filter on this thread (see _strategy)
        self._pinned = threading.local()

    # -- the index pass ----------------------------------------------------------------------------
    def knn(
        self, queries: np.ndarray, k: int, ef: int | None, flt: Filter | None, num_threads: int = 1
    ) -> IndexResult:
        """Nearest labels for prepared queries, restricted to a filter's matches when given."""
        index = self._live.index
        if flt is None:
            return index.search(queries, k, ef=ef, num_threads=num_threads)
        entry = self.filters.entry(flt)
        matched = len(entry.labels)
        if matched == 0:
            nq = queries.shape[0]
            return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))
        ef_f = max(ef or self._live.config.ef_search, k)
        strategy = self._strategy(entry, matched, index, ef_f)
        if strategy == SUBSET_GRAPH:
            m = entry.matrix
            found = None if m is None or m.graph is None else self._graph(entry, m, queries, k, ef_f)
            return found if found is not None else self._scan(entry, queries, k, index)
        if strategy == EXACT_SUBSET:
            return self._scan(entry, queries, k, index)
        # hnswlib's filtered search already keeps exploring until its beam holds ef *allowed* points,
        # so the beam need not grow with selectivity (measured: recall@10 0.994 at ef 32, 10% match).
        t0 = time.perf_counter()
        res = index.search(
            queries, min(k, matched), ef=ef_f, allowed=entry.labels.__contains__, num_threads=num_threads
        )
        if queries.shape[0] == 1:
            self.filter_costs.hooked(entry, ef_f, matched / max(len(index), 1), time.perf_counter() - t0)
        return res

    def scan_exactly(self, matched: int, index: VectorIndex) -> bool:
        """Whether a filter's matches are always scanned exactly: few of them, or an exact index."""
        s = self._settings
        few = matched <= max(s.exact_filter_min, s.exact_filter_fraction * len(index))
        return few or not index.approximate

    def filter_strategy(self, flt: Filter | None) -> tuple[str | None, int | None]:
        """(``"exact-subset"`` or ``"index-hook"``, matching records) for a filter; (None, None) without.

        The next :meth:`knn` of this filter on this thread runs the strategy named here, so a caller that
        asks first (the result cache: may an exact candidate set certify near duplicates?) is told the
        truth.
        """
        if flt is None:
            return None, None
        entry = self.filters.entry(flt)
        matched = len(entry.labels)
        if matched == 0:
            return EXACT_SUBSET, 0
        strategy = self._choose(entry, matched, self._live.index, None, sticky=True)
        self._pinned.value = (flt.canonical, strategy)
        return strategy, matched

    def _strategy(self, entry: FilterEntry, matched: int, index: VectorIndex, ef: int) -> str:
        """The strategy of this search: the one filter_strategy just named on this thread, or a choice."""
        pinned = getattr(self._pinned, "value", None)
        if pinned is not None:
            self._pinned.value = None
            if pinned[0] == entry.filter.canonical:
                return str(pinned[1])
        return self._choose(entry, matched, index, ef)

    def _choose(
        self, entry: FilterEntry, matched: int, index: VectorIndex, ef: int | None, *, sticky: bool = False
    ) -> str:
        """The rules of ``filter_strategy.py``; ``sticky``: the entry's last choice when it has one."""
        m = entry.matrix
        if m is not None and m.graph is not None and index.approximate:
            return SUBSET_GRAPH
        if self.scan_exactly(matched, index):
            return EXACT_SUBSET
        if not self.filters.can_hold(entry):
            return INDEX_HOOK
        if sticky and entry.choice is not None:
            return entry.choice
        ef_f = ef or self._live.config.ef_search
        return self.filter_costs.choose(entry, matched, ef_f, matched / max(len(index), 1))

    def _scan(self, entry: FilterEntry, queries: np.ndarray, k: int, index: VectorIndex) -> IndexResult:
        """Exact top k over the filter's matches: its subset matrix, else vectors gathered by label."""
        m = self.filters.matrix(entry)
        if m is not None:
            t0 = time.perf_counter()
            res = self._scan_matrix(entry, m, queries, k)
            if queries.shape[0] == 1:
                self.filter_costs.scanned(len(m.labels), time.perf_counter() - t0)
            return res
        labels = entry.array()
        # vectors through the LRU in front of the store: hnswlib's get_items makes a Python float
        # per coordinate (~13 us a vector), which would dominate a scan of a few thousand
        vecs = self.vectors.get(labels) if index.approximate else index.get_vectors(labels)
        return self._scan_rows(labels, vecs, queries, k)

    def _scan_matrix(self, entry: FilterEntry, m: FilterMatrix, queries: np.ndarray, k: int) -> IndexResult:
        """Exact top k from a subset matrix: its rows but the stale ones, and the stale labels read now."""
        return self._with_fresh(entry, m, m.search(queries, k, self.space), queries, k)

    def _graph(
        self, entry: FilterEntry, m: FilterMatrix, queries: np.ndarray, k: int, ef: int
    ) -> IndexResult | None:
        """Top k from the subset matrix's graph (``subset_graph.py``) and the stale labels read now;
        None when the graph's beam held fewer than k rows that are not stale (the caller scans)."""
        assert m.graph is not None
        found = m.graph.search(queries, k, ef, m.dead_rows())
        if found is None:
            return None
        res = IndexResult(m.labels[found.labels], found.distances)
        return self._with_fresh(entry, m, res, queries, k)

    def _with_fresh(
        self, entry: FilterEntry, m: FilterMatrix, res: IndexResult, queries: np.ndarray, k: int
    ) -> IndexResult:
        """``res`` (from the matrix's rows) merged with the stale labels still matching, scored now."""
        if not m.stale:
            return res
        current = entry.labels
        fresh = np.asarray(sorted(lb for lb in m.stale if lb in current), np.int64)
        if not len(fresh):
            return res
        # the stale labels still matching, with the vectors they hold now
        return merge_topk([res, self._scan_rows(fresh, self.vectors.get(fresh), queries, k)], k)

    def _scan_rows(self, labels: np.ndarray, vecs: np.ndarray, queries: np.ndarray, k: int) -> IndexResult:
        """Exact top k over vectors just read (a NaN row: a record deleted meanwhile, left out)."""
        ok = np.isfinite(vecs[:, 0]) if len(vecs) else np.ones(0, bool)
        if not ok.all():
            labels, vecs = labels[ok], vecs[ok]
        return FilterMatrix.build(labels, vecs, rotate=False).search(queries, k, self.space)

    def top(self, q: np.ndarray, k: int, ef: int | None, flt: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """(labels, raw distances) of one query, padding removed."""
        res = self.knn(q.reshape(1, -1), k, ef, flt)
        labels, dists = res.labels[0], res.distances[0]
        if labels.size and labels[-1] < 0:  # padding (-1) only ever trails the found labels
            keep = labels >= 0
            return labels[keep], dists[keep]
        return labels, dists

    def top_lists(
        self, q: np.ndarray, k: int, ef: int | None, flt: Filter | None
    ) -> tuple[list[int], list[float]]:
        """:meth:`top` as lists: unfiltered, through the index's single-query path where it has one."""
        if flt is None:
            one = getattr(self._live.index, "search_one", None)
            found = one(q, k, ef) if one is not None else None
            if found is not None:
                return found
        labels, dists = self.top(q, k, ef, flt)
        return labels.tolist(), dists.tolist()

    # -- hits --------------------------------------------------------------------------------------
    def to_hits(
        self,
        labels: Sequence[int],
        dists: Sequence[float],
        *,
        include_vectors: bool = False,
        scores: Sequence[float] | None = None,
        metric: str | None = None,
        raw: list[tuple[Any, ...]] | None = None,
        rows: dict[int, StoredRow] | None = None,
        flt: Filter | None = None,
        rank_scores: Sequence[float] | None = None,
    ) -> list[Hit]:
        """Hits for index labels (rows looked up unless the caller fetched them already).

        With ``flt``, a row whose metadata no longer matches is left out: the label set that admitted it
        was read before a write that changed it, and the row after (read skew between two reads). With
        ``raw``, each hit's (id, score, distance, document, metadata JSON) is appended for the cache.
        ``rank_scores`` (one per label) become the hits' ``rank_score``: what a hybrid or MMR search
        ordered them by, while ``score`` stays the similarity from ``dists``.
        """
        if rows is None and not include_vectors and scores is None:
            # the common case, compiled (cache/row_cache.py: RowCache.hits); None when a row is not
            # in the row cache, and then the loop below, which reads the store
            start = len(raw) if raw is not None else 0
            m = metric or self.metric
            built = self.rows.hits(labels, dists, self.space == "l2", m, orjson.loads, raw, rank_scores)
            if built is not None:
                return built if flt is None else _matching(built, flt, raw, start)
        if rows is None:
            rows = (
                self._store.rows_by_labels(self._cid, labels, vectors=True)
                if include_vectors
                else self.rows.get(labels)
            )
        l2 = self.space == "l2"
        out: list[Hit] = []
        loads = orjson.loads
        m = metric or self.metric
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
            meta = loads(row.metadata) if row.metadata else {}
            if flt is not None and not flt.matches(meta):
                continue
            rank = None if rank_scores is None else rank_scores[i]
            if include_vectors and row.vector is not None:
                vec = np.frombuffer(row.vector, np.float32).copy()
                out.append(Hit(row.id, score, d, row.document, meta, m, vec, rank))
            else:
                out.append(make_hit(row.id, score, d, row.document, meta, m, rank))
            if raw is not None:
                raw.append((row.id, score, d, row.document, row.metadata))
        return out

    # -- searches ----------------------------------------------------------------------------------
    def plain(
        self, q: np.ndarray, k: int, flt: Filter | None, plan: Plan, include_vectors: bool, t0: float
    ) -> Hits:
        """One uncached search at the plan's beam width."""
        labels, dists = self.top_lists(q, k, plan.ef, flt)
        hits = self.to_hits(labels, dists, include_vectors=include_vectors, flt=flt)
        deadline = plan.deadline_ms
        partial = plan.deadline_limited or (
            deadline is not None and (time.perf_counter() - t0) * 1000.0 > deadline
        )
        return _native.new_hits(hits, partial, plan)

    def mmr(
        self,
        q: np.ndarray,
        k: int,
        flt: Filter | None,
        ef: int | None,
        lambda_mult: Any,
        fetch_k: int | None,
        include_vectors: bool,
    ) -> list[Hit]:
        """Maximal marginal relevance over ``fetch_k`` candidates (1.0 = pure relevance).

        The hits come in selection order. Each ``score`` is the record's similarity from the candidate
        search, the very number a plain search gives it, so scores need not decrease down the list; the
        marginal relevance each was picked by is its ``rank_score``. Qdrant's MMR reports scores the
        same way (LlamaIndex's simple store reports the marginal value, which no similarity threshold
        can be applied to).
        """
        lambda_mult = check_fraction(lambda_mult, "mmr_lambda")
        fk = max(fetch_k or max(4 * k, 20), k)
        labels, dists = self.top(q, fk, ef, flt)
        if len(labels) == 0:
            return []
        picked = mmr_select(q, self.vectors.get(labels), k, lambda_mult)
        return self.to_hits(
            [int(labels[i]) for i, _ in picked],
            [float(dists[i]) for i, _ in picked],
            include_vectors=include_vectors,
            flt=flt,
            rank_scores=[m for _, m in picked],
        )

    def hybrid(
        self,
        q: np.ndarray | None,
        text: Any,
        k: int,
        flt: Filter | None,
        ef: int | None,
        text_weight: Any,
        fetch_k: int | None,
        include_vectors: bool,
    ) -> list[Hit]:
        """BM25 full-text ranking fused with the vector ranking by reciprocal rank (text only if no q).

        With a query vector the hits come in fused order, but each ``score`` is the record's similarity
        to ``q`` (its distance from the vector search, or computed from its stored vector when only the
        text ranking found it), the number a plain search gives it: a threshold keeps its meaning. The
        fused value is ``rank_score``. Without one there is no similarity: the score is ``-bm25``
        (metric ``"bm25"``, higher is better, unbounded), comparable only with other text-only scores.
        """
        if text is None:
            raise InvalidArgumentError("search needs a query vector, or text for a full-text search")
        text = check_text_query(text)
        text_weight = check_fraction(text_weight, "text_weight")
        fk = max(fetch_k or max(4 * k, 20), k)
        text_ranking, bm25 = self._text_ranking(text, fk, flt)
        if q is None:
            labels = text_ranking[:k]
            return self.to_hits(
                labels,
                [bm25[lb] for lb in labels],
                include_vectors=include_vectors,
                scores=[-bm25[lb] for lb in labels],
                metric="bm25",
            )
        found, found_d = self.top(q, fk, ef, flt)
        vec_ranking = found.tolist()
        dist = dict(zip(vec_ranking, found_d.tolist(), strict=True))
        fused = rrf_fuse([vec_ranking, text_ranking], [1.0 - text_weight, text_weight])[:k]
        missing = [lb for lb, _ in fused if lb not in dist]
        if missing:
            # Text-only candidates get their true vector distance too, so every hit's distance is real.
            lab = np.asarray(missing, np.int64)
            exact = exact_topk(self.vectors.get(lab), lab, q.reshape(1, -1), len(missing), self.space)
            dist.update(zip(exact.labels[0].tolist(), exact.distances[0].tolist(), strict=True))
        labels = [lb for lb, _ in fused]
        return self.to_hits(
            labels,
            [dist[lb] for lb in labels],
            include_vectors=include_vectors,
            flt=flt,
            rank_scores=[s for _, s in fused],
        )

    def _text_ranking(self, text: str, fk: int, flt: Filter | None) -> tuple[list[int], dict[int, float]]:
        allowed = self.filters.entry(flt).labels if flt is not None else None
        ranking: list[int] = []
        bm25: dict[int, float] = {}
        query = fts_query(text)
        if query is None:
            return ranking, bm25
        # Over-fetch when filtering, since non-matching text hits are dropped afterwards.
        limit = fk * (4 if allowed is not None else 1)
        for label, score in self._store.fts(self._cid, query, limit):
            if allowed is None or label in allowed:
                ranking.append(label)
                bm25[label] = score
        return ranking[:fk], bm25

    def steps(
        self,
        q: np.ndarray,
        k: int,
        flt: Filter | None,
        plan: Plan,
        curve: Calibration | None,
        stable_rounds: int | None,
        include_vectors: bool,
        t0: float,
    ) -> Generator[SearchStep, None, None]:
        """The passes of a progressive search (see ``Collection.search_iter``)."""
        deadline_ms = plan.deadline_ms
        steps: tuple[int | None, ...] = progressive_steps(plan.ef, k) if plan.ef is not None else (None,)
        prev: list[str] | None = None
        stable = 0
        last_ms = 0.0
        for i, step_ef in enumerate(steps):
            if deadline_ms is not None and i > 0 and step_ef is not None:
                elapsed = (time.perf_counter() - t0) * 1000.0
                if elapsed + _predict(curve, step_ef, steps[i - 1], last_ms) > deadline_ms:
                    return
            s0 = time.perf_counter()
            labels, dists = self.top(q, k, step_ef, flt)
            hits = self.to_hits(labels.tolist(), dists.tolist(), include_vectors=include_vectors, flt=flt)
            last_ms = (time.perf_counter() - s0) * 1000.0
            ids = [h.id for h in hits]
            stable = stable + 1 if ids == prev else 0
            prev = ids
            final = i == len(steps) - 1 or (stable_rounds is not None and stable >= stable_rounds)
            elapsed = (time.perf_counter() - t0) * 1000.0
            if not final and deadline_ms is not None and step_ef is not None:
                final = elapsed + _predict(curve, steps[i + 1], step_ef, last_ms) > deadline_ms
            partial = final and (
                (i < len(steps) - 1 and stable_rounds is None)
                or plan.deadline_limited
                or (deadline_ms is not None and elapsed > deadline_ms)
            )
            expected = (
                1.0 if step_ef is None else (curve.recall_at(step_ef, k) if curve is not None else None)
            )
            step_plan = dataclasses.replace(plan, ef=step_ef, steps=tuple(x for x in steps if x is not None))
            yield SearchStep(
                Hits(hits, partial=partial, plan=step_plan), final, i, step_ef, expected, elapsed
            )
            if final:
                return

    def batch(
        self, q: np.ndarray, k: int, flt: Filter | None, ef: int | None, include_vectors: bool, workers: int
    ) -> list[list[Hit]]:
        """Many queries in native calls on every core; one list of hits per query row."""
        n = len(q)
        if workers <= 1 or n < 2 * _BATCH_CHUNK:
            return self._batch_hits(
                self.knn(q, k, ef, flt, num_threads=workers), include_vectors, workers, flt
            )
        # A pipeline: the native search of the next chunk (on every core, without the GIL) runs while
        # this thread turns the previous chunk into hits. Building hits is serial Python, a seventh of
        # the work at 10 hits a query; done after one native call, it capped 2 threads at ~1.7x.
        pool = _batch_pool()
        pending = pool.submit(self.knn, q[:_BATCH_CHUNK], k, ef, flt, workers)
        out: list[list[Hit]] = []
        for s in range(0, n, _BATCH_CHUNK):
            res = pending.result()
            if s + _BATCH_CHUNK < n:
                nxt = q[s + _BATCH_CHUNK : s + 2 * _BATCH_CHUNK]
                pending = pool.submit(self.knn, nxt, k, ef, flt, workers)
            out.extend(self._batch_hits(res, include_vectors, workers, flt))
        return out

    def _batch_hits(
        self, res: IndexResult, include_vectors: bool, workers: int, flt: Filter | None
    ) -> list[list[Hit]]:
        # The rows come from the row cache (misses fetched on two connections at once when there are
        # many: SQLite releases the GIL while it steps), and the hit objects are built once, here.
        labels = res.labels
        uniq = np.unique(labels[labels >= 0]).tolist()
        if include_vectors:
            rows = self._store.rows_by_labels(self._cid, uniq, vectors=True)
        elif workers > 1 and len(uniq) >= 1000:
            half = len(uniq) // 2
            other = shared_pool().submit(self.rows.get, uniq[:half])
            rows = self.rows.get(uniq[half:])
            rows.update(other.result())
        else:
            rows = self.rows.get(uniq)
        return [
            self.to_hits(lab_row, dist_row, include_vectors=include_vectors, rows=rows, flt=flt)
            for lab_row, dist_row in zip(labels.tolist(), res.distances.tolist(), strict=True)
        ]


def _matching(hits: list[Hit], flt: Filter, raw: list[tuple[Any, ...]] | None, start: int) -> list[Hit]:
    """The hits whose metadata still match ``flt`` (see ``to_hits``), and their ``raw`` entries."""
    keep = [flt.matches(h.metadata) for h in hits]
    if all(keep):
        return hits
    if raw is not None:
        raw[start:] = [r for r, ok in zip(raw[start:], keep, strict=True) if ok]
    return [h for h, ok in zip(hits, keep, strict=True) if ok]


def _predict(curve: Calibration | None, ef: int | None, prev_ef: int | None, last_ms: float) -> float:
    """Predicted ms of a pass at ``ef``: the calibrated p99, or the last pass scaled by beam width."""
    if curve is not None and ef is not None:
        return curve.latency_at(ef) / 1000.0 / DEADLINE_SAFETY
    return last_ms * (ef or 1) / max(prev_ef or 1, 1)
