"""Putting the answers of several parts of a split collection back together.

Exactness rule: a plain vector search asks every part for its own top k; the global top k is among them,
so sorting their union by score and keeping k is exact, and every score is the number the part computed
from the stored vector (the same a single database computes). Hybrid searches fuse rankings that are merged
the same way, but BM25 scores each part by its own term statistics, so the text ranking of a split
collection approximates a single database's (``RayCollection.search`` says so).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from embeddix_core import CollectionStats, Hit, Hits

__all__ = ["RRF_K", "merge_hits", "merge_info", "merge_stats", "rrf", "top_by_score"]

RRF_K = 60  # the core's reciprocal-rank constant (embeddix_core/query/fusion.py), so fused scores match it


def top_by_score(hits: Iterable[Hit], k: int, *, rank: bool = False) -> list[Hit]:
    """The ``k`` best of ``hits`` by score (``rank``: by ``rank_score`` where set), stable for ties."""
    if rank:
        return sorted(hits, key=lambda h: -(h.score if h.rank_score is None else h.rank_score))[:k]
    return sorted(hits, key=lambda h: -h.score)[:k]


def merge_hits(parts: Sequence[Hits], k: int) -> Hits:
    """The global top ``k`` of the parts' answers to one search (see the module's exactness rule).

    A personalized search is ordered by ``rank_score`` (``plan.ranking == "personalized"``; a hit without
    one, from a part that holds none of the user's feedback, by its score), the others by ``score``.
    ``partial`` if any part's was; the plan is the first (personalized) part's.
    """
    plans = [p.plan for p in parts if p.plan is not None]
    # a part without the user's feedback searched plainly; any personalized part makes the whole so
    personal = [pl for pl in plans if getattr(pl, "ranking", None) == "personalized"]
    plan = personal[0] if personal else (plans[0] if plans else None)
    hits = top_by_score((h for p in parts for h in p), k, rank=bool(personal))
    return Hits(hits, partial=any(p.partial for p in parts), plan=plan)


def rrf(rankings: Sequence[Sequence[str]], weights: Sequence[float]) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion of id rankings, as the core fuses label rankings; best first."""
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if weight:
            for rank, rid in enumerate(ranking, start=RRF_K + 1):
                fused[rid] = fused.get(rid, 0.0) + weight / rank
    return sorted(fused.items(), key=lambda kv: -kv[1])


def merge_stats(name: str, parts: Sequence[CollectionStats]) -> CollectionStats:
    """One :class:`CollectionStats` for a split collection: counts added up, the index kinds named."""
    first = parts[0]
    kinds = sorted({p.index for p in parts})
    return dataclasses.replace(
        first,
        name=name,
        count=sum(p.count for p in parts),
        index="+".join(kinds),
        index_size=sum(p.index_size for p in parts),
        tombstones=sum(p.tombstones for p in parts),
        last_seq=sum(p.last_seq for p in parts),
        snapshot_seq=sum(p.snapshot_seq for p in parts),
        params={**first.params, "parts": len(parts)},
    )


def merge_info(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One ``cache_info`` for a split collection: counters added up, ``hit_rate`` recomputed."""
    out: dict[str, Any] = {}
    for info in parts:
        for key, value in info.items():
            if isinstance(value, bool):
                out[key] = out.get(key, False) or value
            elif isinstance(value, int | float):
                out[key] = out.get(key, 0) + value
            else:
                out.setdefault(key, value)
    if "hit_rate" in out:
        looked = out.get("hits", 0) + out.get("misses", 0)
        out["hit_rate"] = (out.get("hits", 0) / looked) if looked else 0.0
    return out
