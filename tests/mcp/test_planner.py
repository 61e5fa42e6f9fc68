"""The knob -> core query engine mapping."""

from __future__ import annotations

import numpy as np

from embeddix_core import Embeddix
from embeddix_mcp import planner


def test_knobs_reach_the_core_planner() -> None:
    x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    with Embeddix.open(None) as db:
        col = db.create_collection("c", dim=8)
        col.add([str(i) for i in range(50)], x, documents=[f"doc {i}" for i in range(50)])
        p = planner.plan(5, recall_target=0.99, deadline_ms=50, session="alice")
        hits = planner.search(col, x[3], 5, p)
        assert hits[0].id == "3" and hits.plan is not None and hits.plan.recall_target == 0.99
        hy = planner.plan(5, text_weight=0.3)
        assert hy.hybrid and not planner.plan(5).hybrid
        assert planner.search(col, x[3], 5, hy, query_text="doc 3")[0].metric == "rrf"
        steps = list(planner.stream_steps(col, x[3], 5, p))
        assert steps[-1].final and steps[-1].hits[0].id == "3"
        assert len(list(planner.stream_steps(col, x[3], 5, hy, query_text="doc 3"))) == 1
