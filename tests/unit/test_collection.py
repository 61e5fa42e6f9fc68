"""Collection behaviour: the public contract of issue #2, on both storage modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from testdata import clustered

import embeddix_core
from embeddix_core import (
    ClosedError,
    CollectionExistsError,
    CollectionNotFoundError,
    DuplicateIdError,
    Embeddix,
    Hit,
    NotFoundError,
    Record,
)
from embeddix_core.eval import exact_knn


def test_public_names_are_curated() -> None:
    assert embeddix_core.__all__ == sorted(embeddix_core.__all__)
    for name in ("Embeddix", "Collection", "Hit", "Record", "EmbeddixError", "NotFoundError"):
        assert name in embeddix_core.__all__


def test_quickstart_contract(db: Embeddix) -> None:
    x = clustered(50, 8)
    col = db.create_collection("docs", dim=8, metric="cosine")
    ids = [f"r{i}" for i in range(50)]
    col.add(
        ids=ids,
        vectors=x,
        documents=[f"doc {i}" for i in range(50)],
        metadatas=[{"tag": i % 5} for i in range(50)],
    )
    assert len(col) == 50 and "r3" in col and "zz" not in col
    recs = col.get(["r2", "missing", "r1"])
    assert [r.id if r else None for r in recs] == ["r2", None, "r1"]
    assert isinstance(recs[0], Record) and recs[0].metadata == {"tag": 2}
    np.testing.assert_allclose(recs[0].vector, x[2])
    with pytest.raises(NotFoundError):
        col["missing"]
    with pytest.raises(KeyError):  # NotFoundError is also a KeyError
        col["missing"]
    hits = col.search(x[3], k=10, filter={"tag": 3})
    assert hits and all(isinstance(h, Hit) for h in hits)
    assert hits[0].id == "r3" and math.isclose(hits[0].score, 1.0, abs_tol=1e-5)
    assert all(h.metadata["tag"] == 3 for h in hits) and len(hits) == 10
    assert hits[0].metric == "cosine"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    batch = col.search_batch(x[:4], k=10)
    assert [b[0].id for b in batch] == ["r0", "r1", "r2", "r3"]
    assert col.delete(ids=["r0", "r1"]) == 2
    assert col.delete(filter={"tag": 4}) == 10
    assert len(col) == 38
    assert db.list_collections() == ["docs"]
    with pytest.raises(CollectionExistsError):
        db.create_collection("docs", dim=8)
    assert db.get_or_create_collection("docs", dim=8) is col
    with pytest.raises(CollectionExistsError):
        db.get_or_create_collection("docs", dim=9)
    db.drop_collection("docs")
    with pytest.raises(CollectionNotFoundError):
        db.get_collection("docs")
    assert "docs" not in db


def test_single_and_list_forms(mem_db: Embeddix) -> None:
    col = mem_db.create_collection("c", dim=3)
    col.add("a", [1.0, 0.0, 0.0], documents="alpha", metadatas={"x": 1})
    col.add(["b"], [[0.0, 1.0, 0.0]])
    assert col.get("a") == Record("a", None, "alpha", {"x": 1})
    assert col.get("nope") is None
    assert col["b"].metadata == {}


def test_add_duplicate_is_error_and_atomic(mem_db: Embeddix) -> None:
    col = mem_db.create_collection("c", dim=2)
    col.add(["a"], [[1.0, 0.0]])
    with pytest.raises(DuplicateIdError, match="'a'"):
        col.add(["b", "a"], [[0.0, 1.0], [1.0, 1.0]])
    assert len(col) == 1 and col.get("b") is None


def test_upsert_replaces_vector_document_metadata(db: Embeddix) -> None:
    col = db.create_collection("c", dim=2)
    col.add(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], documents=["one", "two"], metadatas=[{"v": 1}, {"v": 2}])
    col.upsert(["a", "c"], [[0.0, 1.0], [1.0, 1.0]], documents=["uno", None], metadatas=[{"v": 10}, None])
    assert len(col) == 3
    a = col["a"]
    assert a.document == "uno" and a.metadata == {"v": 10}
    np.testing.assert_allclose(a.vector, [0.0, 1.0])
    assert col.search([0.0, 1.0], k=1)[0].id in {"a", "b"}
    assert {h.id for h in col.search([0.0, 1.0], k=2)} == {"a", "b"}


def test_upsert_keeps_fields_not_given(db: Embeddix) -> None:
    # issue #15: documents=None / metadatas=None keep a stored record's values (as in Chroma)
    x = clustered(200, 8, seed=4)
    col = db.create_collection("c", dim=8, index_threshold=50)
    col.add(
        [str(i) for i in range(200)],
        x,
        documents=["red fox" if i == 7 else f"doc {i}" for i in range(200)],
        metadatas=[{"tag": 3 if i in (7, 9) else 1} for i in range(200)],
    )
    q = -x[7]
    flt = {"tag": {"$gte": 3}}
    assert {h.id for h in col.search(q, k=5, filter=flt)} == {"7", "9"}  # warms filter and result caches
    col.upsert(["7", "new"], np.stack([q, x[0]]))
    assert col["7"].document == "red fox" and col["7"].metadata == {"tag": 3}
    assert col["new"].document is None and col["new"].metadata == {}
    hits = col.search(q, k=5, filter=flt)
    assert [h.id for h in hits] == ["7", "9"] and hits[0].metadata == {"tag": 3}
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert col.count(flt) == 2 and col.search(None, k=3, text="fox")[0].id == "7"
    # a field given replaces the stored one whole; the other is still kept
    col.upsert("7", q, metadatas={"tag": 0})
    assert col["7"].document == "red fox" and col["7"].metadata == {"tag": 0}
    assert [h.id for h in col.search(q, k=5, filter=flt)] == ["9"]
    col.upsert("7", q, documents="grey wolf")
    assert col["7"].metadata == {"tag": 0}
    assert col.search(None, k=3, text="fox") == [] and col.search(None, k=3, text="wolf")[0].id == "7"


def test_update_and_update_metadata(db: Embeddix) -> None:
    col = db.create_collection("c", dim=2)
    col.add(["a"], [[1.0, 0.0]], documents=["old"], metadatas=[{"k": 1, "drop": True}])
    col.update("a", documents=["new"])
    assert col["a"].document == "new" and col["a"].metadata == {"k": 1, "drop": True}
    rec = col.update_metadata("a", {"k": 2, "drop": None, "tags": ["x"]})
    assert rec.metadata == {"k": 2, "tags": ["x"]}
    col.update("a", vectors=[[0.0, 3.0]])
    np.testing.assert_allclose(col["a"].vector, [0.0, 3.0])
    assert col["a"].document == "new"
    with pytest.raises(NotFoundError):
        col.update(["a", "ghost"], documents=["x", "y"])
    assert col["a"].document == "new"
    assert col.search([0.0, 1.0], k=1, filter={"tags": {"$contains": "x"}})[0].id == "a"


def test_k_larger_than_collection_returns_everything(mem_db: Embeddix) -> None:
    x = clustered(300, 16, seed=3)
    col = mem_db.create_collection("c", dim=16, index_threshold=100)  # HNSW from 101 records on
    col.add([str(i) for i in range(300)], x, metadatas=[{"even": i % 2 == 0} for i in range(300)])
    assert col.index_kind == "hnsw"
    col.delete([str(i) for i in range(0, 300, 3)])
    hits = col.search(x[1], k=1000)
    assert len(hits) == 200 == len({h.id for h in hits})
    d = [h.distance for h in hits]
    assert d == sorted(d)
    filtered = col.search(x[1], k=1000, filter={"even": True})
    assert len(filtered) == len([i for i in range(300) if i % 2 == 0 and i % 3 != 0])
    assert all(int(h.id) % 2 == 0 for h in filtered)
    assert len(col.search_batch(x[:3], k=1000)[2]) == 200


def test_metrics_scores_and_distances(mem_db: Embeddix) -> None:
    v = np.array([[3.0, 4.0], [1.0, 0.0]], np.float32)
    q = np.array([3.0, 4.0], np.float32)
    cos = mem_db.create_collection("cos", dim=2, metric="cosine")
    l2 = mem_db.create_collection("l2", dim=2, metric="l2")
    ip = mem_db.create_collection("ip", dim=2, metric="ip")
    for c in (cos, l2, ip):
        c.add(["a", "b"], v)
    h = cos.search(q, k=2)
    assert h[0].id == "a" and math.isclose(h[0].score, 1.0, abs_tol=1e-6)
    assert math.isclose(h[1].score, 0.6, abs_tol=1e-6) and math.isclose(h[1].distance, 0.4, abs_tol=1e-6)
    h = l2.search(q, k=2)
    assert h[0].distance == pytest.approx(0.0, abs=1e-3) and h[0].score == pytest.approx(1.0, abs=1e-3)
    assert h[1].distance == pytest.approx(math.hypot(2, 4), rel=1e-5)
    assert h[1].score == pytest.approx(1 / (1 + math.hypot(2, 4)), rel=1e-5)
    h = ip.search(q, k=2)
    assert h[0].score == pytest.approx(25.0) and h[1].score == pytest.approx(3.0)
    assert {x.metric for x in h} == {"ip"}


def test_hybrid_text_and_fts_in_same_transaction(db: Embeddix) -> None:
    rng = np.random.default_rng(1)
    col = db.create_collection("c", dim=8)
    docs = [
        "the quick brown fox",
        "a lazy dog sleeps",
        "foxes are quick animals",
        "cats purr",
        "dog training",
    ]
    col.add([f"d{i}" for i in range(5)], rng.standard_normal((5, 8)), documents=docs)
    text_only = col.search(None, k=3, text="quick fox")
    assert {h.id for h in text_only} <= {"d0", "d2"} and text_only[0].id in {"d0", "d2"}
    assert all(h.metric == "bm25" for h in text_only)
    q = col["d3"].vector
    hybrid = col.search(q, k=5, text="quick fox", text_weight=0.5)
    assert {h.metric for h in hybrid} == {"cosine"} and hybrid.plan.ranking == "rrf"  # issue #15
    assert {"d0", "d2", "d3"} <= {h.id for h in hybrid[:3]}
    assert all(not math.isnan(h.distance) for h in hybrid)
    pure_vector = col.search(q, k=1, text="quick fox", text_weight=0.0)
    assert pure_vector[0].id == "d3"
    col.update("d0", documents=["nothing relevant"])
    col.delete("d2")
    assert col.search(None, k=3, text="quick fox") == []
    # FTS syntax in user text is not an error
    assert col.search(None, k=3, text='"unbalanced AND OR * NEAR(') is not None
    filtered = col.search(q, k=5, text="dog", filter={"$not": {"x": 1}})
    assert filtered


def test_mmr_diversifies(mem_db: Embeddix) -> None:
    col = mem_db.create_collection("c", dim=2)
    vecs = [[1.0, 0.0], [0.999, 0.01], [0.998, 0.02], [0.7, 0.7]]
    col.add(["a", "a2", "a3", "b"], vecs)
    plain = [h.id for h in col.search([1.0, 0.05], k=2)]
    diverse = [h.id for h in col.search([1.0, 0.05], k=2, mmr_lambda=0.3)]
    assert plain[1] != "b" and diverse[1] == "b"


def test_scan_count_stats(db: Embeddix) -> None:
    col = db.create_collection("c", dim=4)
    x = clustered(30, 4)
    col.add([f"{i:02d}" for i in range(30)], x, metadatas=[{"g": i % 3} for i in range(30)])
    assert [r.id for r in col.scan()] == [f"{i:02d}" for i in range(30)]
    assert [r.id for r in col.scan({"g": 1}, batch_size=4)] == [f"{i:02d}" for i in range(1, 30, 3)]
    assert col.count() == 30 and col.count({"g": {"$in": [0, 2]}}) == 20
    st = col.stats()
    assert st.count == 30 and st.dim == 4 and st.metric == "cosine" and st.index == "exact"


def test_close_is_idempotent_and_closed_use_raises(tmp_path) -> None:
    db = Embeddix.open(tmp_path / "d")
    col = db.create_collection("c", dim=2)
    db.close()
    db.close()
    with pytest.raises(ClosedError):
        db.list_collections()
    with pytest.raises(ClosedError):
        col.search([1.0, 0.0])
    with Embeddix.open(tmp_path / "d") as db2:
        assert db2.list_collections() == ["c"]


def test_persistence_and_snapshot_reload(tmp_path) -> None:
    x = clustered(500, 16, seed=5)
    with Embeddix.open(tmp_path / "d") as db:
        col = db.create_collection("c", dim=16, index_threshold=100, ef_search=64)
        col.add([str(i) for i in range(500)], x, documents=[f"doc {i}" for i in range(500)])
        col.delete(["7", "8"])
    with Embeddix.open(tmp_path / "d") as db:
        col = db.get_collection("c")
        st = col.stats()
        assert st.index == "hnsw" and st.snapshot_seq == st.last_seq and st.count == 498
        assert col.search(x[9], k=1)[0].id == "9"
        assert "7" not in {h.id for h in col.search(x[7], k=5)}
        col.add(["new"], x[7])  # written after the snapshot; replayed on the next open
    with Embeddix.open(tmp_path / "d") as db:
        col = db.get_collection("c")
        assert col.search(x[7], k=1)[0].id == "new" and len(col) == 499
        assert col.config.ef_search == 64


def test_exact_to_hnsw_switch_is_invisible(mem_db: Embeddix) -> None:
    x = clustered(400, 12, seed=8)
    col = mem_db.create_collection("c", dim=12, index_threshold=200)
    ids = [str(i) for i in range(400)]
    for s in range(0, 400, 50):
        col.add(ids[s : s + 50], x[s : s + 50])
        assert col.search(x[s], k=1)[0].id == ids[s]
    assert col.index_kind == "hnsw"
    truth = exact_knn(x, x[:50], 10, "cosine").indices
    found = [[int(h.id) for h in hits] for hits in col.search_batch(x[:50], k=10)]
    rec = np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)])
    assert rec >= 0.95


def test_compact_reclaims_tombstones(mem_db: Embeddix) -> None:
    x = clustered(300, 8, seed=2)
    col = mem_db.create_collection("c", dim=8, index_threshold=50)
    col.add([str(i) for i in range(300)], x)
    col.delete([str(i) for i in range(200)])
    assert col.stats().tombstones == 200
    # new records take over tombstoned slots (a batch larger than the write buffer goes to the graph)
    col.add([f"n{i}" for i in range(150)], x[:150])
    assert col.stats().tombstones == 50
    col.compact()
    assert col.stats().tombstones == 0 and len(col) == 250
    assert col.search(x[250], k=1)[0].id == "250"


def test_clear_deletes_every_record(db: Embeddix) -> None:
    col = db.create_collection("c", dim=3)
    col.add(["a", "b"], [[1.0, 0, 0], [0, 1.0, 0]])
    assert col.clear() == 2 and len(col) == 0 and col.search([1.0, 0, 0]) == []
    col.add(["a"], [[1.0, 0, 0]])
    assert col.search([1.0, 0, 0])[0].id == "a"
