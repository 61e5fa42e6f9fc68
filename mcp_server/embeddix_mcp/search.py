"""How a query's quality and latency knobs reach the core: the one place the domain calls ``search``.

The front ends take a recall target, a deadline and a hybrid weight; the core plans the beam itself from its
calibration (``Collection.search(recall=..., deadline_ms=...)``; ``Collection.explain`` shows the plan it
would run), so nothing here plans: :class:`SearchOptions` carries the knobs, :func:`search` makes the one
call, and :func:`similarity` turns a hit's score into the cosine similarity the results report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from embeddix_core import Collection, Hit, Hits

__all__ = ["SearchOptions", "plan_ef", "search", "similarity"]


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """One query's knobs, handed to the core planner unchanged.

    Attributes:
        recall_target: The recall@k wanted (None: the collection's default).
        deadline_ms: Latency budget in milliseconds, or None.
        text_weight: 0 for a search by meaning only; above 0 the query's words are also ranked by full
            text and fused with this weight (a hybrid search).
        personal_user: Re-rank for this user's feedback (the core's ``search(user=...)``); None: not
            personalized. The core searches plainly for a user without feedback; hybrid searches are
            never personalized (the core ranks those by fusion).
    """

    recall_target: float | None = None
    deadline_ms: float | None = None
    text_weight: float = 0.0
    personal_user: str | None = None

    @property
    def hybrid(self) -> bool:
        """Whether the search also ranks by full text."""
        return self.text_weight > 0.0


def search(
    col: Collection,
    vector: np.ndarray,
    k: int,
    query: str,
    flt: dict[str, Any] | None,
    opts: SearchOptions,
    session: str,
) -> Hits:
    """One search of ``col`` for ``vector`` (and, if hybrid, ``query``'s words).

    ``session`` is the calling agent: each agent's searches use its own result-cache session, so one
    agent's cached answers are never served to another, even on a collection shared by a grant.
    """
    if opts.hybrid:
        return col.search(
            vector,
            k,
            filter=flt,
            recall=opts.recall_target,
            deadline_ms=opts.deadline_ms,
            text=query,
            text_weight=opts.text_weight,
            session=session,
        )
    return col.search(
        vector,
        k,
        filter=flt,
        recall=opts.recall_target,
        deadline_ms=opts.deadline_ms,
        session=session,
        user=opts.personal_user,
    )


def similarity(hit: Hit) -> tuple[float, float | None]:
    """(cosine similarity, fused score or None).

    The core scores a hybrid hit as a plain search would (cosine similarity for the server's cosine
    collections) and keeps the fused RRF value, which ordered the hits, in ``rank_score``.
    """
    if hit.metric in ("cosine", "ip"):
        return hit.score, hit.rank_score
    return 1.0 - hit.distance, hit.rank_score


def plan_ef(hits: Hits) -> int | None:
    """The beam width the core's plan used for ``hits`` (None: exact search, or no plan reported)."""
    return hits.plan.ef if hits.plan is not None else None
