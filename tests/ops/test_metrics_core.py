"""``db.metrics()`` and ``embeddix_core.metrics``: counters move with the calls made, histograms read back
the durations put in, the snapshot is plain JSON, and recommendations carry their measurements."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest

from embeddix_core import ClosedError, DimensionMismatchError, Embeddix, InvalidArgumentError, metrics
from embeddix_core.embeddings import HashEmbedder
from embeddix_core.metrics import EXPORT_EDGES, LatencyHistogram, Meter, recommendations

DIM = 16


def _ops(db: Embeddix, name: str) -> dict[str, Any]:
    ops: dict[str, Any] = db.metrics()["collections"][name]["operations"]
    return ops


@pytest.fixture
def db() -> Any:
    with Embeddix.open(None) as d:
        yield d


def test_every_operation_is_counted_with_its_errors_by_type(db: Embeddix) -> None:
    rng = np.random.default_rng(0)
    col = db.create_collection("c", dim=DIM)
    col.add([f"r{i}" for i in range(50)], rng.random((50, DIM)))
    col.upsert(["r1", "new"], rng.random((2, DIM)))
    before = _ops(db, "c")
    for _ in range(7):
        col.search(rng.random(DIM), k=3)
    col.search_batch(rng.random((4, DIM)), k=3)
    steps = list(col.search_iter(rng.random(DIM), k=3))
    assert steps[-1].final
    it = col.search_iter(rng.random(DIM), k=3)
    next(it)
    it.close()  # closed early: still one successful call
    assert col.delete(["r2", "absent"]) == 1
    col.update_metadata("r3", {"seen": True})  # one update, not two: it calls update() once
    with pytest.raises(DimensionMismatchError):
        col.search(rng.random(DIM + 1))
    with pytest.raises(InvalidArgumentError):
        col.add(["bad"], rng.random((1, DIM)), metadatas=[{"k": object()}])
    with pytest.raises(InvalidArgumentError):
        next(col.search_iter(rng.random(DIM), k=0))  # a generator fails at its first step
    after = _ops(db, "c")

    counts = {op: after[op]["count"] - before[op]["count"] for op in metrics.OPERATIONS}
    want = {"search": 7, "search_batch": 1, "search_iter": 2, "add": 0, "upsert": 0, "update": 1, "delete": 1}
    assert counts == want
    assert before["add"]["count"] == 1 and before["upsert"]["count"] == 1
    assert after["search"]["errors"] == {"DimensionMismatchError": 1}
    assert after["add"]["error_count"] == 1 and sum(after["add"]["errors"].values()) == 1
    assert after["search_iter"]["error_count"] == 1
    s = after["search"]
    lat = s["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert s["buckets"][-1][1] <= s["count"]
    assert [le for le, _ in s["buckets"]] == [le for le, _ in EXPORT_EDGES]
    assert all(a[1] <= b[1] for a, b in zip(s["buckets"], s["buckets"][1:], strict=False))


def test_snapshot_is_json_and_reports_cache_index_calibration_and_background(db: Embeddix) -> None:
    rng = np.random.default_rng(1)
    col = db.create_collection("h", dim=DIM, index_threshold=100)
    vecs = rng.random((400, DIM)).astype(np.float32)
    col.add([str(i) for i in range(400)], vecs)
    col.calibrate(sample=20)
    for _ in range(3):
        col.search(vecs[0], k=5)  # the same query: the exact tier serves the repeats
    snap = db.metrics()
    json.dumps(snap, allow_nan=False)  # plain data, no inf or NaN
    c = snap["collections"]["h"]
    info = col.cache_info()
    assert c["cache"]["hits"] == info["hits"] >= 2 and c["cache"]["misses"] == info["misses"]
    assert c["cache"]["enabled"] and set(c["cache"]["tiers"]) == {"exact", "semantic", "personal"}
    stats = col.stats()
    assert c["index"]["index"] == stats.index == "hnsw" and c["index"]["approximate"]
    assert c["index"]["count"] == 400 and c["index"]["dim"] == DIM
    assert c["index"]["memory_bytes"] == stats.params["memory_bytes"] > 0
    cal = c["calibration"]
    assert cal["calibrated"] and cal["measured_at_count"] == 400 and cal["curve"]
    assert {"ef", "recall", "latency_us", "latency_p99_us"} <= set(cal["curve"][0])
    bg = c["background"]
    assert {"calibrating", "write_buffered", "flushing", "reconfiguring"} <= set(bg)
    assert not bg["reconfiguring"] and bg["write_buffered"] >= 0


def test_embedding_calls_are_counted_per_model_with_their_texts(db: Embeddix) -> None:
    emb = HashEmbedder(dim=DIM, seed=12345)
    col = db.create_collection("t", dim=DIM, embedder=emb)
    before = db.metrics()["embed"].get(emb.model_id, {"count": 0, "texts": 0})
    col.add(["a", "b", "c"], documents=["red fox", "blue whale", "green frog"])
    col.search("red fox", k=1)
    after = db.metrics()["embed"][emb.model_id]
    assert after["count"] - before["count"] == 2  # one batch of three, one query
    assert after["texts"] - before["texts"] == 4


def test_concurrent_searches_lose_no_count(db: Embeddix) -> None:
    rng = np.random.default_rng(2)
    col = db.create_collection("p", dim=DIM)
    col.add([str(i) for i in range(100)], rng.random((100, DIM)))
    queries = rng.random((50, DIM))
    before = _ops(db, "p")["search"]["count"]

    def run() -> None:
        for q in queries:
            col.search(q, k=3, cache=False)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _ops(db, "p")["search"]["count"] - before == 200


def test_filter_by_name_and_closed_database(db: Embeddix) -> None:
    db.create_collection("a", dim=DIM)
    db.create_collection("b", dim=DIM)
    assert sorted(db.metrics()["collections"]) == ["a", "b"]
    assert sorted(db.metrics(["b", "zzz"])["collections"]) == ["b"]
    db.close()
    with pytest.raises(ClosedError):
        db.metrics()


def test_histogram_quantiles_are_within_a_bucket_of_the_truth() -> None:
    h = LatencyHistogram()
    rng = np.random.default_rng(3)
    values = rng.lognormal(mean=12.0, sigma=1.0, size=20_000).astype(np.int64)  # ~160 us median
    for v in values:
        h.observe(int(v))
    snap = h.snapshot()
    assert snap.count == len(values) and snap.sum_ns == int(values.sum()) and snap.max_ns == values.max()
    for q in (0.5, 0.9, 0.99):
        got, true = snap.quantile(q), float(np.quantile(values, q)) / 1e9
        assert got is not None and abs(got - true) <= 0.13 * true, (q, got, true)
    assert LatencyHistogram().snapshot().quantile(0.5) is None
    cum = snap.cumulative()
    for (le, n), _ in zip(cum[:-1], EXPORT_EDGES, strict=False):
        assert n == int((values < le * 1e9).sum())  # exact at every exported edge
    assert cum[-1] == [float("inf"), len(values)]
    h.observe(1 << 50)  # beyond the last bucket: kept, in the overflow bucket
    assert h.snapshot().count == len(values) + 1


def test_meter_counts_errors_by_operation_and_type() -> None:
    m = Meter(("x", "y"))
    m.failed("x", KeyError("k"))
    m.failed("x", KeyError("k"))
    m.failed("y", ValueError())
    snap = m.snapshot()
    assert snap["x"]["errors"] == {"KeyError": 2} and snap["y"]["error_count"] == 1
    assert snap["x"]["count"] == 0 and snap["x"]["latency_ms"]["p50"] is None


# -- recommendations: each rule on a snapshot shaped like db.metrics(), with its numbers --------------------
def _collection(**over: Any) -> dict[str, Any]:
    op = {"count": 0, "errors": {}, "error_count": 0, "sum_seconds": 0.0, "buckets": []}
    op["latency_ms"] = {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    c: dict[str, Any] = {
        "operations": {name: dict(op) for name in metrics.OPERATIONS},
        "index": {
            "count": 1000,
            "dim": 384,
            "index": "hnsw",
            "approximate": True,
            "index_size": 1000,
            "tombstones": 0,
            "memory_bytes": 2_000_000,
            "ef_search": 96,
            "index_threshold": 10_000,
        },
        "cache": {
            "enabled": True,
            "hits": 0,
            "semantic_hits": 0,
            "misses": 0,
            "hit_rate": 0.0,
            "bytes": 0,
            "tiers": {"exact": {"state": "on"}, "semantic": {"state": "off"}},
        },
        "calibration": {"calibrated": True, "running": False, "writes_since": 0, "stale": False},
        "background": {"calibrating": False, "write_buffered": 0, "flushing": False},
    }
    for path, value in over.items():
        part, key = path.split("__")
        c[part][key] = value
    return c


def _all(c: dict[str, Any]) -> list[metrics.Recommendation]:
    recs = recommendations({"collections": {"c": c}, "embed": {}})
    for r in recs:
        assert r.measurement and r.collection == "c" and r.level in ("info", "suggest", "warn")
        json.dumps(r.as_dict(), allow_nan=False)
    return recs


def _kinds(c: dict[str, Any]) -> dict[str, Any]:
    return {r.kind: r for r in _all(c)}


def test_sq8_recommendation_states_the_vectors_and_bytes() -> None:
    rec = _kinds(_collection(index__count=100_000, index__memory_bytes=170_000_000))["memory"]
    assert rec.measurement["saving_bytes"] == 100_000 * 384 * 3
    assert rec.measurement["vector_bytes_now"] == 100_000 * 384 * 4
    assert (
        "sq8 would save 115 MB" in rec.message and "100,000 vectors x 384 d float32 = 154 MB" in rec.message
    )
    assert "memory" not in _kinds(_collection(index__count=100_000, index__quantization="sq8"))
    assert "memory" not in _kinds(_collection(index__count=100))  # too little to matter


def test_latency_cache_calibration_index_and_error_rules() -> None:
    search = {
        "count": 500,
        "errors": {"InvalidFilterError": 20},
        "error_count": 20,
        "sum_seconds": 2.5,
        "buckets": [],
        "latency_ms": {"mean": 5.0, "p50": 4.0, "p90": 6.0, "p99": 60.0, "max": 80.0},
    }
    c = _collection(
        index__index="exact",
        index__approximate=False,
        index__count=9_000,
        index__tombstones=3_000,
        index__index_size=12_000,
        cache__misses=990,
        cache__hits=10,
        cache__hit_rate=0.01,
        background__write_buffered=800,
    )
    c["operations"]["search"] = search
    recs = _all(c)
    latency = [r.message for r in recs if r.kind == "latency"]
    assert any("index_threshold=10,000" in m and "4.00 ms at the median" in m for m in latency)
    assert any("p99 is 15x the median" in m for m in latency)
    got = _kinds(c)
    assert got["cache"].measurement["lookups"] == 1000 and "1.0%" in got["cache"].message
    assert got["errors"].measurement["errors"] == {"InvalidFilterError": 20}
    index_recs = [r for r in recs if r.kind == "index"]
    assert {"tombstones", "write_buffered"} <= {k for r in index_recs for k in r.measurement}
    uncal = _kinds(_collection(calibration__calibrated=False))["calibration"]
    assert uncal.level == "warn" and "ef_search=96" in uncal.message


def test_a_reconfigure_is_background_work_until_it_is_swapped_in(db: Embeddix) -> None:
    rng = np.random.default_rng(4)
    col = db.create_collection("r", dim=DIM, index_threshold=100)
    col.add([str(i) for i in range(300)], rng.random((300, DIM)))
    assert db.metrics()["collections"]["r"]["background"]["reconfigure_progress"] is None  # none ran
    handle = col.reconfigure(quantization="fp16")
    handle.wait(60)
    c = db.metrics()["collections"]["r"]
    assert c["background"]["reconfiguring"] is False and c["background"]["reconfigure_progress"] == 1.0
    assert c["index"]["quantization"] == "fp16"
