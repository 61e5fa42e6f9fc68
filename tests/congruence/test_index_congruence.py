"""Every index path against the exact oracle: recall@10 >= 0.95 on clustered data."""

from __future__ import annotations

import numpy as np
import pytest
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.eval import exact_knn, recall_at_k
from embeddix_core.index.base import exact_topk
from embeddix_core.index.exact import ExactIndex
from embeddix_core.index.hnsw import HnswIndex

N, DIM, NQ = 4000, 32, 100


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered(N + NQ, DIM, clusters=40, seed=11)
    return x[:N], x[N:]


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_hnsw_recall_against_exact(data, metric: str) -> None:
    x, q = data
    if metric == "ip":  # inner product on unit vectors is the well-posed MIPS case
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    with Embeddix.open(None) as db:
        col = db.create_collection("c", dim=DIM, metric=metric, index_threshold=1000)
        col.add([str(i) for i in range(N)], x)
        assert col.index_kind == "hnsw"
        truth = exact_knn(x, q, 10, metric).indices
        single = [[int(h.id) for h in col.search(v, k=10)] for v in q]
        assert recall_at_k(single, truth, 10) >= 0.95
        # the same plan gives the same answer one query at a time and batched (calibration may change
        # the default plan in the background, so pin ef)
        single = [[int(h.id) for h in col.search(v, k=10, ef=96, cache=False)] for v in q]
        batch = [[int(h.id) for h in hits] for hits in col.search_batch(q, k=10, ef=96)]
        assert single == batch
        # the exact index is the oracle itself
        col.configure(index_threshold=10**9)


def test_filtered_recall_both_strategies(data) -> None:
    x, q = data
    tags = np.arange(N) % 10
    for settings in (EmbeddixSettings(), EmbeddixSettings(exact_filter_min=0, exact_filter_fraction=0.0)):
        with Embeddix.open(None, settings=settings) as db:
            col = db.create_collection("c", dim=DIM, index_threshold=1000)
            col.add([str(i) for i in range(N)], x, metadatas=[{"tag": int(t)} for t in tags])
            sub = np.flatnonzero(tags == 3)
            truth = sub[exact_knn(x[sub], q, 10, "cosine").indices]
            found = [[int(h.id) for h in col.search(v, k=10, filter={"tag": 3})] for v in q]
            assert all(len(f) == 10 for f in found)
            assert all(int(i) % 10 == 3 for f in found for i in f)
            assert recall_at_k(found, truth, 10) >= 0.95


def test_index_implementations_agree_with_reference() -> None:
    x = clustered(600, 16, seed=4)
    q = clustered(20, 16, seed=5)
    labels = np.arange(1000, 1600, dtype=np.int64)
    ref = exact_topk(x, labels, q, 10, "l2")
    exact = ExactIndex(16, "l2")
    hnsw = HnswIndex(16, "l2", ef_search=200)
    for idx in (exact, hnsw):
        idx.add(labels, x, np.ones(600, bool))
        res = idx.search(q, 10)
        assert recall_at_k(res.labels.tolist(), ref.labels.tolist(), 10) >= 0.98
        np.testing.assert_allclose(res.distances[:, 0], ref.distances[:, 0], rtol=1e-4, atol=1e-4)
    # deletes: both stop returning removed labels
    gone = ref.labels[:, 0]
    for idx in (exact, hnsw):
        idx.remove(gone)
        assert not set(idx.search(q, 10).labels.ravel().tolist()) & set(gone.tolist())
        assert len(idx) == 600 - len(set(gone.tolist()))
