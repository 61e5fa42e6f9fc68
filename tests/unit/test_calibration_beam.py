"""A calibration rung measures the beam it names.

Regression: the calibrator asked the index for 2k + 1 answers at every rung (k + 1 for leave-one-out, k
more to drop labels newer than its exact answers), and an index searches max(ef, answers asked for): ef
10-20 were all measured at ef 21. On 200,000 x 768 the curve then promised 0.98 at ef 10, the planner
chose ef 10 for recall 0.95, and searches served 0.86. The answers asked for also set an IVF-PQ
search's re-rank width (max(20 x answers, ef)): a rung asks for k, as a served search does, and asks
again with room for newer labels only for a query that found some.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from testdata import clustered

from embeddix_core import Embeddix
from embeddix_core.index.hnsw import HnswIndex


def test_low_rungs_are_searched_at_their_own_beam(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = clustered(3000, 32, seed=5)
    db = Embeddix.open(tmp_path / "data")
    try:
        col = db.create_collection("c", dim=32, index_threshold=100)
        col.add([str(i) for i in range(len(base))], base)
        calls: list[tuple[int, int | None]] = []
        original = HnswIndex.search

        def spy(self: HnswIndex, queries: np.ndarray, k: int, *args: Any, **kwargs: Any) -> Any:
            calls.append((k, kwargs.get("ef")))
            return original(self, queries, k, *args, **kwargs)

        monkeypatch.setattr(HnswIndex, "search", spy)
        curve = col.calibrate(source="sample", k=10)
        monkeypatch.undo()
        assert curve is not None
        assert curve.efs[:4] == (10, 12, 16, 20)
        beams = {ef for _, ef in calls if ef is not None}
        # the calibrator's queries are never stored records (no leave-one-out): every rung runs as named
        assert {10, 12, 16, 20} <= beams
        assert all(ef is None or n <= ef for n, ef in calls)
        # and asks for k answers, as a served search does (nothing was written during the calibration)
        assert {n for n, ef in calls if ef is not None and ef < 64} == {10}
    finally:
        db.close()
