"""Quantized HNSW (fp16, sq8) with full-precision re-ranking, against the exact oracle.

The 20,000-vector collections are built once per quantization (module fixture): ingesting crosses the
default ``index_threshold`` (10,000), so SQ8 trains on the first 10,000 vectors at the switch, exactly as a
user's collection would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.config import QUANTIZATIONS, CollectionConfig
from embeddix_core.errors import CorruptionError, EmbeddixError, InvalidArgumentError
from embeddix_core.eval import exact_knn, recall_at_k
from embeddix_core.index.faiss_hnsw import FaissHnswSegment, SegmentedFaissHnsw, rerank_width

N, DIM, NQ = 20_000, 64, 200
DATA = clustered(N + NQ, DIM, seed=7)
BASE, QUERIES = DATA[:N], DATA[N:]  # held-out queries: never a base row
TAGS = np.arange(N) % 7


def _settings(**kw: object) -> EmbeddixSettings:
    return EmbeddixSettings(**kw)  # type: ignore[arg-type]


def _ids(hits: object) -> list[int]:
    return [int(h.id) for h in hits]  # type: ignore[attr-defined]


@pytest.fixture(scope="module", params=["fp16", "sq8"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A closed database holding collection ``c`` of BASE with ``tag`` metadata (default settings)."""
    quant = request.param
    path = tmp_path_factory.mktemp(f"q-{quant}") / "db"
    with Embeddix.open(path, settings=_settings()) as db:
        col = db.create_collection("c", dim=DIM, quantization=quant)
        for s in range(0, N, 2_000):
            col.add(
                [str(i) for i in range(s, s + 2_000)],
                BASE[s : s + 2_000],
                metadatas=[{"tag": int(t)} for t in TAGS[s : s + 2_000]],
            )
    return quant, path


@pytest.mark.slow
def test_recall_floor_and_memory(built: tuple[str, Path]) -> None:
    quant, path = built
    truth = exact_knn(BASE, QUERIES, 10, "cosine").indices
    with Embeddix.open(path, settings=_settings()) as db:
        col = db.get_collection("c")
        assert col.config.quantization == quant
        assert col.stats().index == "faiss_hnsw" and col.stats().params["quantization"] == quant
        found = [_ids(col.search(q, k=10)) for q in QUERIES]
        assert recall_at_k(found, truth, 10) >= 0.95
        # the resident index holds codes and graph, not float32 vectors
        per_vector = col.stats().params["memory_bytes"] / N
        assert per_vector < DIM * 4 + 200, per_vector
        # scores come from full-precision vectors: they match the exact distances
        hits = col.search(QUERIES[0], k=10, ef=256)
        exact = exact_knn(BASE, QUERIES[:1], 10, "cosine")
        assert [h.id for h in hits] == [str(i) for i in exact.indices[0]]
        np.testing.assert_allclose([h.distance for h in hits], exact.distances[0], atol=1e-5)


@pytest.mark.slow
def test_filters(built: tuple[str, Path]) -> None:
    _, path = built
    sub = np.flatnonzero(TAGS == 3)
    truth = sub[exact_knn(BASE[sub], QUERIES[:50], 10, "cosine").indices]
    with Embeddix.open(path, settings=_settings(auto_calibrate=False)) as db:
        col = db.get_collection("c")
        found = []
        for q in QUERIES[:50]:
            hits = col.search(q, k=10, filter={"tag": 3})
            assert all(h.metadata["tag"] == 3 for h in hits)
            found.append(_ids(hits))
        assert recall_at_k(found, truth, 10) >= 0.95


@pytest.mark.slow
def test_restart_keeps_quantization_and_answers(built: tuple[str, Path]) -> None:
    quant, path = built
    s = _settings(auto_calibrate=False, cache_enabled=False)
    with Embeddix.open(path, settings=s) as db:
        col = db.get_collection("c")
        before = [_ids(col.search(q, k=10, ef=96)) for q in QUERIES[:40]]
        col.checkpoint()
    # warnings are errors in tests: a snapshot that was not used (rebuilt) would fail here
    with Embeddix.open(path, settings=s) as db:
        col = db.get_collection("c")
        assert col.config.quantization == quant and col.stats().index == "faiss_hnsw"
        assert col.stats().snapshot_seq >= 0
        assert [_ids(col.search(q, k=10, ef=96)) for q in QUERIES[:40]] == before
    manifest = json.loads((path / "indexes" / "1" / "manifest.json").read_text())
    assert manifest["kind"] == "faiss_hnsw" and manifest["params"]["quantization"] == quant


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["fp16", "sq8"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_deletes_and_updates(tmp_path: Path, quant: str, metric: str) -> None:
    n = 6_000
    x, q = BASE[:n], QUERIES[:60]
    s = _settings(auto_calibrate=False)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.create_collection("c", dim=DIM, metric=metric, quantization=quant, index_threshold=2_000)
        for i in range(0, n, 1_000):
            col.add([str(j) for j in range(i, i + 1_000)], x[i : i + 1_000])
        gone = [str(i) for i in range(0, n, 3)]
        col.delete(gone)
        # move record 1 onto query 0: it must come first, scored at full precision
        col.upsert(["1"], q[:1])
        keep = np.array([i for i in range(n) if i % 3 and i != 1])
        for i, v in enumerate(q):
            hits = col.search(v, k=10)
            assert not {h.id for h in hits} & set(gone)
            if i == 0:
                assert hits[0].id == "1" and hits[0].distance == pytest.approx(0.0, abs=1e-5)
        truth = keep[exact_knn(x[keep], q[1:], 10, metric).indices]
        found = [[i for i in _ids(col.search(v, k=10)) if i != 1][:10] for v in q[1:]]
        assert recall_at_k(found, truth, 10) >= 0.95
        assert len(col) == n - len(gone)
        col.checkpoint()
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.get_collection("c")
        assert len(col) == n - len(gone)
        assert col.search(q[0], k=1)[0].id == "1"
        assert not {h.id for h in col.search(x[0], k=10)} & set(gone)


def test_small_threshold_trains_on_few_vectors(tmp_path: Path) -> None:
    x, q = BASE[:1_500], QUERIES[:30]
    with Embeddix.open(tmp_path / "d", settings=_settings(auto_calibrate=False)) as db:
        col = db.create_collection("c", dim=DIM, quantization="sq8", index_threshold=5)
        col.add([str(i) for i in range(6)], x[:6])  # switches at 6 records: trains on six vectors
        for i in range(6, 1_500, 100):
            col.add([str(j) for j in range(i, min(i + 100, 1_500))], x[i : i + 100])
        assert col.stats().index == "faiss_hnsw"
        truth = exact_knn(x, q, 10, "cosine").indices
        assert recall_at_k([_ids(col.search(v, k=10)) for v in q], truth, 10) >= 0.95


def test_get_vectors_are_full_precision(tmp_path: Path) -> None:
    x = BASE[:3_000]
    with Embeddix.open(tmp_path / "d", settings=_settings(auto_calibrate=False)) as db:
        col = db.create_collection("c", dim=DIM, metric="l2", quantization="sq8", index_threshold=1_000)
        col.add([str(i) for i in range(3_000)], x)
        index = col._live.index  # the engine's own reads (hits' vectors, cache, calibration) go here
        assert isinstance(index, SegmentedFaissHnsw)
        index.flush()
        labels = index.live_labels()[:50]
        got = index.get_vectors(labels)
        rec = col.get([str(i) for i in range(3_000)])
        stored = {r.id: r.vector for r in rec if r is not None}
        by_label = col._store.rows_by_labels(col._cid, labels.tolist())
        want = np.stack([stored[by_label[int(lb)].id] for lb in labels])
        np.testing.assert_array_equal(got, want)


def test_wrong_quantization_is_a_typed_error(tmp_path: Path) -> None:
    with Embeddix.open(None) as db:
        with pytest.raises(InvalidArgumentError) as err:
            db.create_collection("c", dim=8, quantization="int4")
        for choice in QUANTIZATIONS:
            assert repr(choice) in str(err.value)
        assert "'int4'" in str(err.value)
        with pytest.raises(InvalidArgumentError, match="quantization='pq' cannot be used with index='hnsw'"):
            db.create_collection("c", dim=8, quantization="pq", index="hnsw")
        db.create_collection("c", dim=8, quantization="fp16")
        with pytest.raises(EmbeddixError, match="quantization='fp16'"):
            db.create_collection("c", dim=8, quantization="sq8", exist_ok=True)
        assert (
            db.create_collection("c", dim=8, quantization="fp16", exist_ok=True).config.quantization == "fp16"
        )


def test_config_round_trip_and_old_configs() -> None:
    cfg = CollectionConfig(dim=8, quantization="sq8")
    assert CollectionConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["quantization"] == "sq8"
    # "none" is not written: an unquantized collection stores the JSON it stored before
    plain = CollectionConfig(dim=8)
    assert "quantization" not in json.loads(plain.to_json())
    old = json.dumps(
        {"dim": 8, "metric": "cosine", "hnsw_m": 16, "ef_construction": 200, "ef_search": 96,
         "index_threshold": 10000, "embedding_model": None, "segment_size": 1000000}
    )  # fmt: skip
    assert CollectionConfig.from_json(old).quantization == "none"
    assert "quantization" in CollectionConfig.FIXED


def test_segment_file_round_trip_and_corruption(tmp_path: Path) -> None:
    x = BASE[:2_000]
    seg = FaissHnswSegment(DIM, "l2", "sq8", ef_search=64)
    seg.add(np.arange(1, 2_001), x)
    seg.remove(np.arange(1, 2_001, 5))
    seg.add(np.array([2, 3]), x[:2])  # updates: old slots tombstoned, new ones appended
    path = tmp_path / "seg.bin"
    seg.save(path)
    back = FaissHnswSegment.load(path, DIM, "l2", "sq8", m=16, ef_construction=200, ef_search=64)
    assert len(back) == len(seg) == 1_600 and back.tombstones == seg.tombstones == 402
    np.testing.assert_array_equal(back.live_labels(), seg.live_labels())
    a = seg.search(x[:20], 10)
    b = back.search(x[:20], 10)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.isin(a.labels, np.arange(1, 2_001, 5)).any()
    with pytest.raises(CorruptionError):
        FaissHnswSegment.load(path, DIM, "ip", "sq8", m=16, ef_construction=200, ef_search=64)
    raw = bytearray(path.read_bytes())
    raw[:8] = b"NOTMAGIC"
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError):
        FaissHnswSegment.load(path, DIM, "l2", "sq8", m=16, ef_construction=200, ef_search=64)


def test_rerank_width() -> None:
    assert rerank_width(10) == 20
    assert rerank_width(1) == 2
    assert rerank_width(80) == 100  # the result cache's wide candidate sets: +20 at most
    assert rerank_width(10, factor=4) == 30
    assert rerank_width(10, factor=1) == 10


def test_concurrent_searches_while_writing(tmp_path: Path) -> None:
    """Searches on four threads while small writes go through the write buffer and its background flush
    into the FAISS graph (which cannot search while it inserts: the gate orders them)."""
    import threading

    x = BASE[:6_000]
    errors: list[BaseException] = []
    stop = threading.Event()
    with Embeddix.open(tmp_path / "d", settings=_settings(auto_calibrate=False)) as db:
        col = db.create_collection("c", dim=DIM, quantization="sq8", index_threshold=1_000)
        col.add([str(i) for i in range(2_000)], x[:2_000])

        def search() -> None:
            rng = np.random.default_rng(threading.get_ident() % 1000)
            while not stop.is_set():
                try:
                    hits = col.search(QUERIES[int(rng.integers(NQ))], k=10)
                    assert len(hits) == 10
                except BaseException as exc:
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=search) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(2_000, 6_000, 20):
            col.add([str(j) for j in range(i, i + 20)], x[i : i + 20])
        col.delete([str(i) for i in range(0, 6_000, 2)])
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert len(col) == 3_000
        for q in QUERIES[:20]:
            assert all(int(h.id) % 2 for h in col.search(q, k=10))


def test_one_query_rerank_equals_the_general_rerank() -> None:
    # _rerank_one (a single inner-product query) must give what the batch path gives, padding (-1)
    # and rows the store no longer has (NaN: the graph's distance is kept) included.
    from embeddix_core.index.base import IndexResult

    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((50, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    gone = {7, 11}

    def load(labels: np.ndarray) -> np.ndarray:
        out = vecs[labels].copy()
        out[np.isin(labels, list(gone))] = np.nan
        return out

    idx = SegmentedFaissHnsw(16, "ip", quantization="sq8", load_vectors=load)
    q = vecs[:1] + 0.05 * rng.standard_normal((1, 16)).astype(np.float32)
    for labels in ([3, 7, 11, 20, 1, 0, 42, -1, -1], [5, 9, 2], [-1, -1], [11, 7]):
        lab = np.asarray([labels], np.int64)
        approx = np.where(lab >= 0, rng.uniform(0, 2, lab.shape), np.inf).astype(np.float32)
        cand = IndexResult(lab, approx)
        for k in (1, 3, 10):
            one = idx._rerank_one(q[0], cand, k)
            both = idx._rerank(
                np.vstack([q, q]), IndexResult(np.vstack([lab, lab]), np.vstack([approx] * 2)), k
            )
            assert one.labels.tolist() == both.labels[:1].tolist()
            np.testing.assert_allclose(one.distances, both.distances[:1], rtol=1e-6)
