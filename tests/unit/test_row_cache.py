"""The row cache behind hits: never serves a row older than the last acknowledged write."""

from __future__ import annotations

from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.cache.row_cache import RowCache
from embeddix_core.types import StoredRow


def test_hits_follow_every_kind_of_write(tmp_path) -> None:
    x = clustered(50, 8, seed=41)
    s = EmbeddixSettings(auto_calibrate=False, cache_enabled=False)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.create_collection("c", dim=8)
        col.add([str(i) for i in range(50)], x, documents=[f"doc {i}" for i in range(50)])
        first = col.search(x[7], k=1)[0]
        assert (first.id, first.document, first.metadata) == ("7", "doc 7", {})
        col.update("7", documents=["changed"], metadatas=[{"v": 1}])
        hit = col.search(x[7], k=1)[0]
        assert (hit.document, hit.metadata) == ("changed", {"v": 1})
        col.update_metadata("7", {"v": 2})
        assert col.search(x[7], k=1)[0].metadata == {"v": 2}
        col.upsert("7", x[7], documents="upserted", metadatas={"v": 3})
        hit = col.search(x[7], k=1)[0]
        assert (hit.document, hit.metadata) == ("upserted", {"v": 3})
        col.delete(["7"])
        assert "7" not in {h.id for h in col.search(x[7], k=5)}
        # a hit's metadata is the caller's to change: the next search is unaffected
        col.search(x[8], k=1)[0].metadata["x"] = 1
        assert col.search(x[8], k=1)[0].metadata == {}
        # batches read through the same cache
        batch = col.search_batch(x[8:10], k=1)
        assert [h[0].id for h in batch] == ["8", "9"] and batch[0][0].document == "doc 8"


def test_another_process_writes_are_seen(tmp_path) -> None:
    x = clustered(20, 8, seed=42)
    s = EmbeddixSettings(auto_calibrate=False, cache_enabled=False)
    a = Embeddix.open(tmp_path / "d", settings=s)
    b = Embeddix.open(tmp_path / "d", settings=s)  # a second handle stands in for a second process
    try:
        ca = a.create_collection("c", dim=8)
        ca.add([str(i) for i in range(20)], x, documents=["old"] * 20)
        cb = b.get_collection("c")
        assert cb.search(x[3], k=1)[0].document == "old"
        ca.update("3", documents=["new"])
        assert cb.search(x[3], k=1)[0].document == "new"
    finally:
        a.close()
        b.close()


def test_a_fetch_racing_a_write_is_not_kept() -> None:
    store = {1: StoredRow(1, "a", "old", None, None)}
    cache: RowCache

    def loader(labels):
        got = {lb: store[lb] for lb in labels if lb in store}
        # a write commits and discards while this fetch is in flight
        store[1] = StoredRow(1, "a", "new", None, None)
        cache.discard([1])
        return got

    cache = RowCache(loader, 1 << 20)
    assert cache.get([1])[1][2] == "old"  # served to this caller (it asked before the write) ...
    assert len(cache) == 0  # ... but not kept
    cache = RowCache(lambda labels: {lb: store[lb] for lb in labels}, 1 << 20)
    assert cache.get([1])[1][2] == "new" and len(cache) == 1


def test_budget_evicts_oldest_first() -> None:
    rows = {i: StoredRow(i, f"id{i}", "d" * 100, None, None) for i in range(100)}
    fetched: list[int] = []

    def loader(labels):
        fetched.extend(labels)
        return {lb: rows[lb] for lb in labels}

    cache = RowCache(loader, 4000)
    for i in range(100):
        cache.get([i])
    assert 0 < len(cache) < 40 and cache.nbytes <= 4000
    fetched.clear()
    assert cache.get(list(range(95, 100))).keys() == set(range(95, 100))
    assert fetched == []  # the newest rows stayed
    cache.get([0])
    assert fetched == [0]  # the oldest went first


def test_packed_rows_round_trip_every_field_shape() -> None:
    rows = [
        StoredRow(1, "a", None, None, None),
        StoredRow(2, "b", "", "", None),
        StoredRow(3, "ünïcödé ✓", "документ 🦊", '{"k":"värde"}', None),
        StoredRow(1 << 40, "far", "label far away", None, None),
    ]
    cache = RowCache(lambda labels: {}, 1 << 20)
    cache.put(rows)
    assert len(cache) == 4
    got = cache.get([r.label for r in rows] + [99])
    assert [got[r.label] for r in rows] == rows and 99 not in got
    cache.discard([3])
    assert 3 not in cache.get([3]) and len(cache) == 3
    cache.put([StoredRow(2, "b", "new", None, None)])  # a replaced row: the newest wins
    assert cache.get([2])[2].document == "new" and len(cache) == 3


def test_rows_larger_than_a_chunk_quarter_are_served_not_kept() -> None:
    big = StoredRow(5, "big", "x" * 10_000, None, None)
    cache = RowCache(lambda labels: {5: big} if 5 in labels else {}, 16 << 10)
    assert cache.get([5])[5] == big and len(cache) == 0


def test_sparse_labels_stay_within_budget() -> None:
    # labels spread thin (one collection among many in a store): the label table counts in the budget
    cache = RowCache(lambda labels: {}, 64 << 10)
    cache.put(StoredRow(i * 1000, f"id{i}", "d", None, None) for i in range(5000))
    assert cache.nbytes <= 64 << 10
    last = cache.get([4999 * 1000])
    assert last[4999 * 1000].id == "id4999"
