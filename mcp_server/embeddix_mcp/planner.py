"""How the tools' quality/latency knobs map onto the core's query engine: the one place to swap.

The tools take a recall target, a deadline and a hybrid weight; the core plans the beam itself from its
calibration (``Collection.search(recall=..., deadline_ms=...)``) and streams with ``search_iter``. Each
agent's searches use its own result-cache session, so one agent's cached answers are never served to
another, even on a collection shared by a grant.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from embeddix_core import Collection, Hits, SearchStep

__all__ = ["SearchPlan", "plan", "search", "stream_steps"]


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """One query's knobs, as the tool received them.

    Attributes:
        recall_target: The recall@k the caller asked for (None: the collection's default, 0.95).
        deadline_ms: The caller's latency budget, if any.
        hybrid: Whether the query also ranks by full text (``text_weight > 0``).
        text_weight: Weight of the text ranking in the fusion.
        session: The result-cache session (the calling agent).
    """

    recall_target: float | None = None
    deadline_ms: float | None = None
    hybrid: bool = False
    text_weight: float = 0.0
    session: str | None = None


def plan(
    k: int,
    *,
    recall_target: float | None = None,
    deadline_ms: float | None = None,
    text_weight: float = 0.0,
    session: str | None = None,
) -> SearchPlan:
    """Collect the knobs of one query (the core chooses the beam).

    Args:
        k: Results wanted.
        recall_target: Fraction of the true top-k wanted (0 < target <= 1), or None for the default.
        deadline_ms: Latency budget in milliseconds, or None.
        text_weight: 0 for a pure vector search; above 0 fuses a full-text ranking with that weight.
        session: The calling agent, for its own cache namespace.
    """
    del k  # the core plans per k itself
    return SearchPlan(recall_target, deadline_ms, text_weight > 0.0, text_weight, session)


def search(
    col: Collection,
    vector: Any,
    k: int,
    p: SearchPlan,
    *,
    query_text: str | None = None,
    filter: dict[str, Any] | None = None,
) -> Hits:
    """Run one planned search; ``hits.plan.ef`` and ``hits.partial`` say how it went."""
    if p.hybrid and query_text is not None:
        return col.search(
            vector,
            k,
            filter=filter,
            recall=p.recall_target,
            deadline_ms=p.deadline_ms,
            text=query_text,
            text_weight=p.text_weight,
            session=p.session,
        )
    return col.search(
        vector, k, filter=filter, recall=p.recall_target, deadline_ms=p.deadline_ms, session=p.session
    )


def stream_steps(
    col: Collection,
    vector: Any,
    k: int,
    p: SearchPlan,
    *,
    query_text: str | None = None,
    filter: dict[str, Any] | None = None,
) -> Generator[SearchStep, None, None]:
    """The progressive result sets of a streamed query (one step for hybrid or exact searches).

    Closing the iterator stops the core's work before its next pass.
    """
    if p.hybrid and query_text is not None:
        hits = search(col, vector, k, p, query_text=query_text, filter=filter)
        plan_ef = hits.plan.ef if hits.plan is not None else None
        yield SearchStep(hits, True, 0, plan_ef, None, 0.0)
        return
    yield from col.search_iter(vector, k, filter=filter, recall=p.recall_target, deadline_ms=p.deadline_ms)
