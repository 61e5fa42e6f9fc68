"""Result fusion and diversification: reciprocal-rank fusion (hybrid search) and MMR."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_FTS_TERMS", "RRF_K", "fts_query", "mmr_select", "rrf_fuse"]

RRF_K = 60  # the constant of Cormack et al. (2009); dampens the weight of the very first ranks
# FTS5 evaluates an OR query term by term, each a posting-list merge: 100,000 distinct words took 9 s on
# 2,000 documents (issue #12). A question has a few words; 64 keeps every real query whole and bounds
# the cost of a pasted document.
MAX_FTS_TERMS = 64
_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """Turn free text into a safe FTS5 query: every word quoted, ORed (BM25 ranks by how many match).

    User text can hold FTS5 syntax (quotes, AND, NEAR, '*', ':'); quoting each word makes any text a
    valid query. Only the first :data:`MAX_FTS_TERMS` distinct words (case-folded, in order of first
    appearance) are searched; the rest of the text is ignored.

    Returns:
        The FTS5 query, or None when the text has no words.
    """
    seen: dict[str, None] = {}
    # finditer, not findall: the scan stops at the last term kept instead of listing every word first
    for match in _WORD.finditer(text.lower()):
        seen[match.group()] = None
        if len(seen) >= MAX_FTS_TERMS:
            break
    if not seen:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in seen)


def rrf_fuse(
    rankings: Sequence[Sequence[int]], weights: Sequence[float], k: int = RRF_K
) -> list[tuple[int, float]]:
    """Weighted reciprocal-rank fusion.

    Args:
        rankings: Lists of labels, each best first.
        weights: One weight per ranking (a weight of 0 ignores that ranking).
        k: The RRF constant.

    Returns:
        (label, fused score) pairs, best first; ties keep first-seen order.
    """
    scores: dict[int, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        if w == 0:
            continue
        for rank, label in enumerate(ranking):
            scores[label] = scores.get(label, 0.0) + w / (k + rank + 1)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def mmr_select(
    query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float = 0.5
) -> list[tuple[int, float]]:
    """Maximal marginal relevance: pick k of the candidates, trading relevance against redundancy.

    Similarities are cosine (candidates and query are normalized here), so the trade-off means the
    same for every metric.

    Args:
        query: (d,) query vector.
        candidates: (n, d) candidate vectors, best first.
        k: How many to pick.
        lambda_mult: 1.0 = pure relevance, 0.0 = pure diversity.

    Returns:
        (index into ``candidates``, marginal relevance when picked) pairs in the order picked; the
        marginal relevance is ``lambda_mult * cos(query, c) - (1 - lambda_mult) * max cos(c, picked)``
        (the first pick has no picked neighbour: ``lambda_mult * cos(query, c)``). It never increases
        from one pick to the next: the redundancy term only grows as picks are added.
    """
    n = candidates.shape[0]
    if n == 0 or k <= 0:
        return []
    # float64: l2 and ip collections may hold finite vectors (2e20 per coordinate) whose float32 norms
    # overflow, which would turn every similarity into NaN
    wide = np.asarray(candidates, np.float64)
    norms = np.linalg.norm(wide, axis=1)
    norms[norms == 0] = 1.0
    cand = wide / norms[:, None]
    q = np.asarray(query, np.float64)
    qn = float(np.linalg.norm(q)) or 1.0
    rel = cand @ (q / qn)
    sim = cand @ cand.T
    first = int(np.argmax(rel))
    picked = [(first, float(lambda_mult * rel[first]))]
    max_sim = sim[first].copy()
    chosen = np.zeros(n, bool)
    chosen[first] = True
    while len(picked) < min(k, n):
        score = lambda_mult * rel - (1.0 - lambda_mult) * max_sim
        score[chosen] = -np.inf
        nxt = int(np.argmax(score))
        picked.append((nxt, float(score[nxt])))
        chosen[nxt] = True
        np.maximum(max_sim, sim[nxt], out=max_sim)
    return picked
