"""Segmented HNSW: new segments open at the size limit; answers merge exactly; snapshots keep segments."""

from __future__ import annotations

import numpy as np
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.eval import exact_knn, recall_at_k
from embeddix_core.index.base import IndexResult
from embeddix_core.index.segmented import merge_topk


def test_merge_is_exact() -> None:
    a = IndexResult(np.array([[1, 2, 3]]), np.array([[0.1, 0.5, 0.9]], np.float32))
    b = IndexResult(np.array([[7, 8, -1]]), np.array([[0.2, 0.3, np.inf]], np.float32))
    m = merge_topk([a, b], 4)
    assert m.labels.tolist() == [[1, 7, 8, 2]]


def test_segments_open_route_and_persist(tmp_path) -> None:
    x = clustered(2600, 16, seed=12)
    q = clustered(60, 16, seed=13)
    s = EmbeddixSettings(auto_calibrate=False, cache_enabled=False)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.create_collection("c", dim=16, index_threshold=100, segment_size=1000)
        for i in range(0, 2600, 200):
            col.add([str(j) for j in range(i, i + 200)], x[i : i + 200])
        assert col.stats().params["segments"] == 3
        plan = col.explain(q[0], k=10)
        assert plan.segments == 3
        truth = exact_knn(x, q, 10, "cosine").indices
        found = [[int(h.id) for h in col.search(v, k=10)] for v in q]
        assert recall_at_k(found, truth, 10) >= 0.95
        batch = [[int(h.id) for h in hits] for hits in col.search_batch(q, k=10, ef=96)]
        single = [[int(h.id) for h in col.search(v, k=10, ef=96)] for v in q]
        assert batch == single
        # updates and deletes reach the right segment
        col.upsert(["5", "1500"], np.stack([x[2500], x[2501]]))
        col.delete(["2000"])
        assert {h.id for h in col.search(x[2500], k=3)} >= {"5", "2500"}
        assert "2000" not in {h.id for h in col.search(x[2000], k=5)}
        assert len(col) == 2599
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.get_collection("c")
        assert col.stats().params["segments"] == 3 and len(col) == 2599
        assert col.search(x[2600 - 1], k=1)[0].id == "2599"
        assert "2000" not in {h.id for h in col.search(x[2000], k=5)}


def test_single_query_path_equals_the_general_search(tmp_path) -> None:
    """``search_one`` (one graph, empty buffer) answers what ``search`` does; otherwise it declines."""
    x = clustered(1500, 16, seed=21)
    q = clustered(30, 16, seed=22)
    s = EmbeddixSettings(auto_calibrate=False, cache_enabled=False)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.create_collection("c", dim=16, index_threshold=100)
        col.add([str(j) for j in range(1500)], x)
        index = col._live.index
        index.join()
        ex = col._ex
        for v in q:
            u = v / np.linalg.norm(v)
            for k, ef in ((10, 32), (10, None), (3, 5), (40, 16)):
                one = index.search_one(u, k, ef)
                assert one is not None
                res = index.search(u.reshape(1, -1), k, ef=ef)
                assert one[0] == res.labels[0].tolist()
                np.testing.assert_array_equal(np.float32(one[1]), res.distances[0])
                assert ex.top_lists(u, k, ef, None) == one
        # deletes (tombstones) and a k larger than what is live
        col.delete([str(j) for j in range(0, 1500, 2)])
        index.join()
        u = q[0] / np.linalg.norm(q[0])
        labels, _ = ex.top_lists(u, 2000, 32, None)
        assert sorted(labels) == sorted(index.live_labels().tolist())
        # a buffered write: the buffer must be merged, so the general path answers
        col.add(["new"], q[1:2])
        if index._buf.n:
            assert index.search_one(u, 10, 32) is None
        found = [h.id for h in col.search(q[1], k=3, ef=32, cache=False)]
        assert found[0] == "new"
