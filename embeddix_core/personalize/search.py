"""One personalized search: a wider plain search, re-ranked for the user, through a per-user cache.

Steps (the formula is ``rerank.py``'s):

1. Candidates: the ``candidate_factor * k`` nearest records (the planner's beam for k, widened to at
   least that many), so the top k by similarity is exactly what a plain search at that beam finds.
2. Re-rank them with the user's profile; the first k by rank score are served. Each hit keeps
   ``score`` (the similarity a plain search gives it) and carries ``rank_score``; ``plan.ranking`` is
   ``"personalized"``.
3. Result cache: the user's own
   namespace (``Personalizer.namespace``), keyed by the query, k, filter,
   search parameters and the profile version, so a feedback event makes only that user's entries
   unreachable (and ``forget_user`` clears the namespace). Entries keep the whole candidate pool as their
   candidate set with K = the pool size, so the cache's write invalidation drops an entry whenever a new
   record lands inside the pool's radius (any such record could be re-ranked into the top k). Served
   rows hold the rank score where plain entries hold the score; the score is rebuilt from the distance.
   Whether a miss's answer is kept is the cache's ``personal_policy`` (an exact tier judged on
   personalized lookups alone, from what keeping and hits cost: ``cache/policy.py``). No semantic
   tier: a near query's personalized order is not certified by distances alone. Searches with session
   de-duplication on are never cached (their answer depends on the session's history).

A write landing during the search must not be cached over: as in ``query/cached_search.py`` the applied
sequence number is compared before storing, and again after (then the entry is dropped), since the
writer bumps it before invalidating.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson

from .. import _native
from ..cache import CacheManager
from ..index.live import LiveIndex
from ..query.executor import SearchExecutor
from ..query.filters import Filter
from ..query.planner import Plan, Planner
from ..types import Hits, make_hit
from .model import ProfileState
from .rerank import Candidates
from .service import Personalizer

__all__ = ["personal_search"]


def _score(d: float, metric: str) -> float:
    """The similarity ``SearchExecutor.to_hits`` gives a (served, sqrt-taken for l2) distance."""
    return 1.0 / (1.0 + d) if metric == "l2" else 1.0 - d


def personal_search(
    ex: SearchExecutor,
    live: LiveIndex,
    planner: Planner,
    cache: CacheManager | None,
    pz: Personalizer,
    q: np.ndarray,
    k: int,
    flt: Filter | None,
    plan: Plan,
    params: tuple[Any, ...],
    user: str,
    session: str | None,
    include_vectors: bool,
    st: ProfileState | None = None,
) -> Hits:
    """The personalized top k for ``user`` (see the module docstring).

    Args:
        params: (recall, deadline_ms, ef) as asked (part of the cache key).
        cache: The collection's cache manager, or None to bypass caching for this call.
        st: The user's profile state if the caller just read it (else read here).
    """
    if st is None:
        st = pz.state(user)
    cfg = pz.config
    fetch = k * cfg.candidate_factor
    ef = None if plan.ef is None else max(plan.ef, fetch)
    dedupe = session is not None and cfg.session_penalty > 0
    metric = ex.metric
    ns = None
    key = b""
    family = 0
    t1 = time.perf_counter()
    if cache is not None and not dedupe and not include_vectors:
        ns = cache.namespace(pz.namespace(user, session))
        canonical = flt.canonical if flt is not None else None
        pparams = (*params[:3], st.version, "personal")
        family = ns.family(k, canonical, pparams)
        key = q.tobytes() + repr((k, canonical, pparams)).encode()
        found = ns.lookup(key, q, family, fetch, ex.vectors.get, None, semantic=False)
        if found is not None and found.hits is not None:
            loads = orjson.loads
            hits = [
                make_hit(r[0], _score(r[2], metric), r[2], r[3], loads(r[4]) if r[4] else {}, metric, r[1])
                for r in found.hits
            ]
            cache.personal_policy.on_exact_hit(time.perf_counter() - t1)
            variant = planner.variant(plan, "hit", label="personal:hit", ranking="personalized")
            return _native.new_hits(hits, False, variant)
    index, seq0 = live.index, live.applied_seq
    listed, found_d = ex.top_lists(q, fetch, ef, flt)  # the single-query path (executor.py)
    labels, dists = np.array(listed, np.int64), np.array(found_d, np.float32)
    rows = ex.rows.get(listed)
    if len(rows) != len(listed):  # deleted after the index answered
        keep = [i for i, label in enumerate(listed) if label in rows]
        labels, dists = labels[keep], dists[keep]
        listed = labels.tolist()
    order_rows = [rows[label] for label in listed]
    ids = [r.id for r in order_rows]
    d = np.sqrt(np.maximum(dists.astype(np.float64), 0.0)) if ex.space == "l2" else dists.astype(np.float64)
    scores = 1.0 / (1.0 + d) if metric == "l2" else 1.0 - d
    cand = Candidates(
        ids,
        scores,
        ex.vectors.get(labels) if len(labels) else np.zeros((0, live.config.dim), np.float32),
        lambda: [orjson.loads(r.metadata) if r.metadata else {} for r in order_rows],
        metric,
        lambda: st.field_sums_many([r.metadata for r in order_rows], pz.field_keys),
    )
    rank = pz.rerank(user, st, cand, session)
    top = np.argsort(-rank, kind="stable")[:k]
    raw: list[tuple[Any, ...]] = []
    hits = ex.to_hits(
        labels[top].tolist(),
        dists[top].tolist(),
        include_vectors=include_vectors,
        raw=raw,
        # rows not passed: to_hits reads them again from the row cache in one compiled call (~1 us a
        # hit, _hits.c), where rows passed in take its Python loop (~3 us a hit)
        flt=flt,
        rank_scores=rank[top].tolist(),
    )
    if dedupe and session is not None:
        pz.remember(user, session, [h.id for h in hits])
    result = "off" if ns is None else "miss"
    out_plan = planner.variant(
        plan,
        result,
        label=f"personal:{result}@{ef}",
        ranking="personalized",
        ef=ef,
        steps=(ef,) if ef else (),
    )
    if ns is not None and cache is not None:
        t4 = time.perf_counter()
        policy = cache.personal_policy
        kept = (
            # measured on personalized lookups alone: keeping an answer pays only where they repeat
            policy.keep(key)
            and len(hits) == min(k, len(labels))
            and live.index is index
            and live.applied_seq == seq0
        )
        if kept:
            cached_rows = [(r[0], h.rank_score, r[2], r[3], r[4]) for r, h in zip(raw, hits, strict=True)]
            ns.store(
                key,
                q.copy(),
                family,
                fetch,  # K = the pool: any new record inside its radius drops the entry (see docstring)
                flt,
                cached_rows,
                labels.copy(),
                dists.copy(),
                full=len(labels) >= fetch,
                seq=seq0,
                semantic=False,
                exact=ef is None,
                presorted=True,
            )
            if live.applied_seq != seq0 and len(labels):
                ns.on_labels(labels[:1].tolist())  # a write overlapped: drop what we just kept
        t5 = time.perf_counter()
        policy.on_miss(q, t5 - t1, (t5 - t4) if kept else None, False, 1.0)
    return _native.new_hits(hits, False, out_plan)
