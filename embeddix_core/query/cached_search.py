"""Searches through the result cache: look up, and on a miss search and keep the answer.

It wraps the executor (the search callable) and the cache; it never calls back into the collection. The
rules for what may be served are the cache's (``cache/result_cache.py``, ``cache/certify.py``); this
module decides how a miss searches so that its answer may serve later near duplicates:

* Only while the semantic tier is in use (``cache/policy.py`` turns it on where measured costs say it
  pays back; off, a miss costs what an uncached search at the same plan costs):
  an exact search's candidate set, and a default search's (no recall, deadline or ef named), may
  certify semantic hits. A default miss then searches with a beam ``beam_factor`` times wider than its
  ``candidate_factor * k`` candidates: an approximate search misses records, and a fresh search for a
  near duplicate could find one of them inside the certified ball and beat the re-ranked candidates; a
  beam twice as wide finds nearly all of what that search would (the probe covers the rest). A miss
  returns the wide search's top k, so exact hits are never worse than an uncached search either.
* Searches with their own recall target, deadline or ef keep their beam (cached and uncached answers
  identical) and get exact hits only.

A write landing while a miss searches must not be cached over: its invalidation may already have run.
Writers bump the applied sequence number after changing the index and before invalidating, so an
unchanged number when the answer is stored proves no write overlapped the search.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .. import _native
from ..cache import CacheManager, CacheSettings
from ..config import CollectionConfig, EmbeddixSettings
from ..index.live import LiveIndex
from ..types import Hits, make_hit
from .executor import SearchExecutor
from .filters import Filter
from .planner import Calibration, Plan, Planner

__all__ = ["NO_CACHE_INFO", "CachedSearch", "new_cache_manager"]

log = logging.getLogger("embeddix")

# What cache_info() says when caching is off.
NO_CACHE_INFO: dict[str, Any] = {
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


def new_cache_manager(config: CollectionConfig, s: EmbeddixSettings) -> CacheManager:
    """The result cache of a collection, from the process settings."""
    return CacheManager(
        config.dim,
        "l2" if config.metric.value == "l2" else "ip",
        config.metric.value != "ip",  # raw inner product is no metric: no semantic tier
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
            policy=s.cache_policy,
        ),
    )


class CachedSearch:
    """Default searches through the result cache.

    Args:
        cache: The collection's cache manager.
        executor: Runs the searches (and builds hits).
        live: The live index (its index identity and applied sequence number, for the write race).
        planner: Memoizes the plan variants that say how the cache served a search.
        curve: Returns the current calibration (expected recall of a widened miss).
        vectors_from_store: Loads index-space vectors of labels from the store (candidate codes).
    """

    def __init__(
        self,
        cache: CacheManager,
        executor: SearchExecutor,
        live: LiveIndex,
        planner: Planner,
        curve: Callable[[], Calibration | None],
        vectors_from_store: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.cache = cache
        self._ex = executor
        self._live = live
        self._planner = planner
        self._curve = curve
        self._load = vectors_from_store
        self._store_lock = threading.Lock()
        self._suffixes: dict[tuple[Any, ...], bytes] = {}

    def info(self) -> dict[str, Any]:
        """Counters for ``Collection.cache_info``."""
        return {**self.cache.info(), "enabled": True}

    def load(self, directory: Path, seq: int) -> None:
        """Reload persisted entries (only those saved at this very ``seq``; a cold cache is always right)."""
        try:
            self.cache.load(directory, seq)
        except Exception as exc:
            log.warning("ignoring the persistent cache in %s: %s", directory, exc)

    def save(self, directory: Path, seq: int) -> None:
        """Persist the entries (see ``cache/persist.py``); failing to is only logged."""
        try:
            self.cache.save(directory, seq)
        except Exception as exc:
            log.warning("could not save the cache in %s: %s", directory, exc)

    def search(
        self,
        q: np.ndarray,
        k: int,
        flt: Filter | None,
        plan: Plan,
        params: tuple[Any, ...],
        session: str | None,
        t0: float,
    ) -> Hits:
        """Serve from the cache, or search and keep the answer (``params``: recall, deadline, ef, profile)."""
        t1 = time.perf_counter()
        cm = self.cache
        policy = cm.policy
        ns = cm.namespace(session)
        canonical = flt.canonical if flt is not None else None
        shape = (k, canonical, params)
        family = ns.family(k, canonical, params)
        suffix = self._suffixes.get(shape)
        if suffix is None:
            # the key's parameter part, memoized: repr of the tuple costs ~2 us on cold caches
            if len(self._suffixes) >= 1024:
                self._suffixes.clear()
            suffix = self._suffixes[shape] = repr(shape).encode()
        key = q.tobytes() + suffix
        ex = self._ex

        def probe(v: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
            # a second, cheap route through the graph for a semantic lookup (see cache/certify.py):
            # a beam of k (at least 10)
            return ex.top(v, kk, max(kk, 10), flt)

        semantic = policy.active()
        rejects = ns.stats["verified_rejects"]
        found = ns.lookup(
            key, q, family, k, ex.vectors.get, probe if cm.settings.probe else None, semantic=semantic
        )
        if found is None:
            t2 = time.perf_counter()
            if semantic and ns.stats["verified_rejects"] != rejects:
                policy.on_semantic(t2 - t1, served=False)
            return self._miss(ns, key, q, k, flt, plan, params, family, t0, t1, semantic)
        if found.hits is not None:
            # Entries keep rows (metadata as JSON text), so every hit handed out is a fresh object a
            # caller may mutate without touching the cache.
            loads, metric, build = orjson.loads, ex.metric, _native.kept_to_hits
            if build is not None:
                hits = build(found.hits, metric, loads)  # the same hits, compiled (_hits.c)
            else:
                hits = [
                    make_hit(r[0], r[1], r[2], r[3], loads(r[4]) if r[4] else {}, metric) for r in found.hits
                ]
            policy.on_exact_hit(time.perf_counter() - t1)
        else:
            assert found.labels is not None and found.dists is not None
            hits = ex.to_hits(found.labels, found.dists)
            policy.on_semantic(time.perf_counter() - t1, served=True)
        return _native.new_hits(hits, False, self._planner.variant(plan, found.kind))

    def _miss(
        self,
        ns: Any,
        key: bytes,
        q: np.ndarray,
        k: int,
        flt: Filter | None,
        plan: Plan,
        params: tuple[Any, ...],
        family: int,
        t0: float,
        t1: float,
        semantic: bool,
    ) -> Hits:
        ex, live = self._ex, self._live
        exact = plan.ef is None or (flt is not None and ex.filter_strategy(flt)[0] == "exact-subset")
        default = params[:3] == (None, None, None)
        keeping = semantic and default  # candidates kept (and coded) for the semantic tier
        widened = keeping and plan.ef is not None
        ef, big, wide_ef = self._beam(plan.ef, k, keeping)
        index, seq0 = live.index, live.applied_seq
        labels, dists = ex.top_lists(q, big, ef, flt)
        rows: list[tuple[Any, ...]] = []
        hits = ex.to_hits(labels[:k], dists[:k], raw=rows, flt=flt)
        t4 = time.perf_counter()
        partial = plan.deadline_limited or (
            plan.deadline_ms is not None and (t4 - t0) * 1000.0 > plan.deadline_ms
        )
        policy = self.cache.policy
        kept = False
        if (
            not partial
            and len(hits) == min(k, len(labels))
            and live.index is index
            and (keeping or policy.keep(key))
        ):
            kept = True
            found = np.array(labels, np.int64)
            need = found[:0]
            keep_semantic = ns.semantic and semantic and (exact or widened)
            with self._store_lock:
                if live.applied_seq == seq0:
                    need = ns.store(
                        key,
                        q.copy(),
                        family,
                        k,
                        flt,
                        rows,
                        found,
                        np.array(dists, np.float32),  # the distances hnswlib gave, float32 again
                        full=len(labels) >= big,
                        seq=seq0,
                        semantic=keep_semantic,
                        exact=exact,
                        presorted=True,  # a search's answer, nearest first
                    )
            if len(need):
                # int8 codes of the candidates let a semantic hit bound their distances without the
                # store; only labels no entry has coded yet are read (a write meanwhile drops the
                # entry: see attach)
                ns.attach(key, seq0, need, self._load(need))
        t5 = time.perf_counter()
        if default:
            ratio = (wide_ef / plan.ef) if (wide_ef is not None and plan.ef) else 1.0
            policy.on_miss(q, t5 - t1, (t5 - t4) if kept else None, keeping, ratio)
        if ef == plan.ef or ef is None:
            return _native.new_hits(hits, partial, self._planner.variant(plan, "miss"))
        return _native.new_hits(hits, partial, self._wide_plan(plan, ef, big, k))

    def _beam(self, ef: int | None, k: int, keeping: bool) -> tuple[int | None, int, int | None]:
        """(ef searched, candidates kept, the widened ef) of a miss at the plan's ``ef``.

        Only while the semantic tier is in use (policy.py) does a default miss (``keeping``) search the
        wide beam whose candidates may certify near duplicates; otherwise it costs what an uncached
        search does: it asks for k, not for the beam's worth of candidates. Those would be free on
        hnswlib (the beam is the same) but not on a quantized or IVF index, whose re-rank width grows
        with the count asked (SQ8 at 100K x 384: ef 17 asked for 17 re-ranked 34 rows at a beam of 34,
        the cost and recall of ef 32, where the calibrated plan was for 20), and an entry that is not
        semantic uses none beyond its k hits (its invalidation radius is the k-th distance).
        """
        settings = self.cache.settings
        big = k * settings.candidate_factor
        if ef is None:
            # an exact search: keep what is served (more would only feed the semantic tier)
            return None, (big if keeping else k), None
        wide_ef = max(ef, math.ceil(settings.beam_factor * big))
        if keeping:
            return wide_ef, big, wide_ef
        return ef, k, wide_ef

    def _wide_plan(self, plan: Plan, ef: int, big: int, k: int) -> Plan:
        """The plan of a widened miss: its own ef and the recall the curve expects there."""
        curve = self._curve()
        return self._planner.variant(
            plan,
            "miss",
            label=f"miss@{ef}",
            ef=ef,
            steps=(ef,),
            expected_recall=curve.recall_at(ef, k) if curve is not None else plan.expected_recall,
            reason=f"{plan.reason}; the result cache searched with ef {ef} (its {big} candidates)",
        )
