"""Filtered search through a graph of the filter's matches (query/subset_graph.py): recall against the
exact answer of the filtered subset, writes after the graph was built, and the budget."""

from __future__ import annotations

import numpy as np
import pytest
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.eval import exact_knn, recall_at_k
from embeddix_core.query import filter_cache
from embeddix_core.query.subset_graph import SubsetGraph

N, DIM = 12_000, 32


def _meta(i: int) -> dict[str, int]:
    return {"tag": i % 4}


@pytest.fixture
def small_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filter_cache, "GRAPH_MIN", 1000)


def _collection(db: Embeddix, x: np.ndarray):
    col = db.create_collection("c", dim=DIM, index_threshold=1000)
    col.add([str(i) for i in range(len(x))], x, metadatas=[_meta(i) for i in range(len(x))])
    return col


def _ready(col, q: np.ndarray) -> None:
    """A first filtered search builds the subset matrix, which starts the graph; wait for it."""
    first = col.search(q, k=10, filter={"tag": 1}, ef=64, cache=False)
    assert first.plan.filter_strategy == "exact-subset"
    thread = col._ex.filters.graph_thread
    assert thread is not None
    thread.join(60)


def test_a_filter_with_a_graph_finds_its_exact_neighbours(small_graphs) -> None:
    x = clustered(N + 200, DIM, clusters=40, seed=11, spread=0.6)
    base, queries = x[:N], x[N:]
    subset = np.arange(1, N, 4)  # tag == 1
    truth = subset[exact_knn(base[subset], queries, 10, "cosine").indices]
    with Embeddix.open(None, settings=EmbeddixSettings(auto_calibrate=False)) as db:
        col = _collection(db, base)
        _ready(col, queries[0])
        hits = [col.search(q, k=10, filter={"tag": 1}, ef=64, cache=False) for q in queries]
        assert {h.plan.filter_strategy for h in hits} == {"subset-graph"}
        assert all(hit.metadata["tag"] == 1 for h in hits for hit in h)
        assert recall_at_k([[int(hit.id) for hit in h] for h in hits], truth, 10) >= 0.95
        # a batch goes through the same graph
        batch = col.search_batch(queries[:20], k=10, filter={"tag": 1}, ef=64)
        assert [[h.id for h in b] for b in batch] == [[h.id for h in s] for s in hits[:20]]
        # the default path (result cache on, planner's ef) too
        assert col.search(queries[0], k=10, filter={"tag": 1}).plan.filter_strategy == "subset-graph"


def test_writes_after_the_build_are_answered_from_the_store_not_the_graph(small_graphs) -> None:
    x = clustered(N + 10, DIM, clusters=40, seed=12, spread=0.6)
    base, q = x[:N], x[N]
    with Embeddix.open(None, settings=EmbeddixSettings(auto_calibrate=False)) as db:
        col = _collection(db, base)
        _ready(col, q)
        before = col.search(q, k=10, filter={"tag": 1}, ef=64, cache=False)
        assert before.plan.filter_strategy == "subset-graph"
        top = [h.id for h in before]
        col.add(["new"], q[None, :] * 1.0, metadatas=[{"tag": 1}])  # a new match, the nearest
        col.update_metadata(top[0], {"tag": 2})  # a match no more
        col.delete([top[1]])  # gone
        col.upsert([top[2]], -q[None, :], metadatas=[{"tag": 1}])  # still a match, moved far away
        after = col.search(q, k=10, filter={"tag": 1}, ef=64, cache=False)
        assert after.plan.filter_strategy == "subset-graph"
        ids = [h.id for h in after]
        assert ids[0] == "new"
        assert top[0] not in ids and top[1] not in ids and top[2] not in ids
        assert all(h.metadata["tag"] == 1 for h in after)
        assert set(top[3:]) <= set(ids)  # the rest of the old answer stays


def test_no_graph_beyond_the_budget_and_none_below_graph_min(small_graphs, monkeypatch) -> None:
    x = clustered(N + 1, DIM, clusters=40, seed=13, spread=0.6)
    # room for the 3,000 x 32 matrix (~0.4 MB) but not for its graph too
    tight = EmbeddixSettings(auto_calibrate=False, filter_matrix_bytes=500_000)
    with Embeddix.open(None, settings=tight) as db:
        col = _collection(db, x[:N])
        _ready(col, x[N])
        assert col.search(x[N], k=10, filter={"tag": 1}, ef=64).plan.filter_strategy == "exact-subset"
    monkeypatch.setattr(filter_cache, "GRAPH_MIN", 5000)
    with Embeddix.open(None, settings=EmbeddixSettings(auto_calibrate=False)) as db:
        col = _collection(db, x[:N])
        col.search(x[N], k=10, filter={"tag": 1}, ef=64, cache=False)
        assert col._ex.filters.graph_thread is None


def test_the_graph_skips_dead_rows() -> None:
    x = clustered(2000, 16, seed=14)
    g = SubsetGraph.build(x, "l2")
    full = g.search(x[:1], 5, 32, np.zeros(0, np.int64))
    assert full is not None and full.labels[0, 0] == 0
    dead = full.labels[0, :3].copy()
    found = g.search(x[:1], 5, 32, dead)
    assert found is not None and not set(found.labels[0].tolist()) & set(dead.tolist())
    assert found.labels[0, :2].tolist() == full.labels[0, 3:5].tolist()
    alone = g.search(x[:1], 5, 5, np.arange(1, 2000))  # one row alive: one answer
    assert alone is not None and alone.labels.tolist() == [[0]]
