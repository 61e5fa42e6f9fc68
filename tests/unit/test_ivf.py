"""FaissIvfIndex (IVF-Flat and IVF-PQ + rerank) against the exact oracle, and its on-disk format."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from testdata import clustered

from embeddix_core.errors import CorruptionError, EmbeddixError, FormatVersionError, InvalidArgumentError
from embeddix_core.eval import recall_at_k
from embeddix_core.index.base import VectorIndex, exact_topk
from embeddix_core.index.faiss_ivf import FaissIvfIndex, nlist_for, nprobe_for

DIM = 64
N = 16_000
THRESHOLD = 10_000


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Store:
    """The loader the index is built with: full-precision vectors by label (NaN rows for absent labels)."""

    def __init__(self, dim: int) -> None:
        self.rows: dict[int, np.ndarray] = {}
        self.dim = dim

    def put(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        for lb, v in zip(labels.tolist(), vectors, strict=True):
            self.rows[lb] = v

    def drop(self, labels: np.ndarray) -> None:
        for lb in labels.tolist():
            self.rows.pop(lb, None)

    def load(self, labels: np.ndarray) -> np.ndarray:
        nan = np.full(self.dim, np.nan, np.float32)
        return np.stack([self.rows.get(int(lb), nan) for lb in labels]).astype(np.float32)

    def exact(self, queries: np.ndarray, k: int, space: str, allowed: np.ndarray | None = None) -> np.ndarray:
        labels = np.array(sorted(self.rows), np.int64)
        if allowed is not None:
            labels = labels[np.isin(labels, allowed)]
        return exact_topk(self.load(labels), labels, queries, k, space).labels


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = _unit(clustered(N, DIM, clusters=40, seed=3))
    q = _unit(clustered(200, DIM, clusters=40, seed=4))
    labels = np.arange(N, dtype=np.int64) * 2 + 5  # sparse, not starting at 0: labels are not positions
    return labels, x, q


def _build(
    codes: str, data: tuple[np.ndarray, np.ndarray, np.ndarray], space: str = "ip"
) -> tuple[FaissIvfIndex, Store]:
    labels, x, _ = data
    store = Store(DIM)
    store.put(labels, x)
    ix = FaissIvfIndex(DIM, space, load_vectors=store.load, codes=codes, train_threshold=THRESHOLD)
    for s in range(0, N, 4_000):
        ix.add(labels[s : s + 4_000], x[s : s + 4_000])
    return ix, store


@pytest.fixture(scope="module")
def flat(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[FaissIvfIndex, Store]:
    return _build("flat", data)


@pytest.fixture(scope="module")
def pq(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[FaissIvfIndex, Store]:
    return _build("pq", data)


def test_rules() -> None:
    assert nlist_for(10_000) == 256  # 4 * sqrt = 400, capped at 39 training points a list
    assert nlist_for(200_000) == 1789
    assert nlist_for(1_000_000) == 4000
    assert nprobe_for(1024, 1789) == 1789  # the top of the planner's ladder scans every list
    assert [nprobe_for(ef, 400) for ef in (10, 96, 512)] == [4, 38, 200]
    efs = range(1, 2048, 7)
    assert all(nprobe_for(a, 900) <= nprobe_for(b, 900) for a, b in itertools.pairwise(efs))


def test_satisfies_the_protocol(flat: tuple[FaissIvfIndex, Store]) -> None:
    assert isinstance(flat[0], VectorIndex)


@pytest.mark.parametrize("codes", ["flat", "pq"])
def test_recall_against_exact(codes: str, request: pytest.FixtureRequest, data: tuple) -> None:
    ix, store = request.getfixturevalue(codes)
    q = data[2]
    assert ix.trained and len(ix) == N
    truth = store.exact(q, 10, "ip")
    res = ix.search(q, 10)  # default ef -> nprobe mapping
    assert recall_at_k(res.labels, truth, 10) >= 0.95
    # distances are the space's raw distances (1 - <a, b>), best first
    assert np.all(np.diff(res.distances, axis=1) >= -1e-6)
    ref = 1.0 - np.einsum("qkd,qd->qk", store.load(res.labels.ravel()).reshape(*res.labels.shape, DIM), q)
    np.testing.assert_allclose(res.distances, ref, atol=1e-4)


def test_pq_resident_part_is_codes_ids_and_centroids(pq: tuple[FaissIvfIndex, Store]) -> None:
    ix = pq[0]
    per_vector = ix.memory_bytes() / len(ix)
    assert per_vector < 4 * DIM  # less than one float32 vector: full vectors are not resident
    assert ix.stats().buffered == 0


def test_l2_space(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    labels, x, q = data
    store = Store(DIM)
    store.put(labels[:12_000], x[:12_000] * 3.0)
    ix = FaissIvfIndex(DIM, "l2", load_vectors=store.load, codes="pq", train_threshold=THRESHOLD)
    ix.add(labels[:12_000], x[:12_000] * 3.0)
    res = ix.search(q * 3.0, 10)
    assert recall_at_k(res.labels, store.exact(q * 3.0, 10, "l2"), 10) >= 0.95


def test_exact_before_threshold_trained_after(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    labels, x, q = data
    store = Store(DIM)
    store.put(labels, x)
    ix = FaissIvfIndex(DIM, "ip", load_vectors=store.load, codes="pq", train_threshold=THRESHOLD)
    ix.add(labels[:6_000], x[:6_000])
    ix.add(labels[6_000:9_999], x[6_000:9_999])
    assert not ix.trained and ix.nlist == 0 and ix.stats().buffered == 9_999
    held = Store(DIM)
    held.put(labels[:9_999], x[:9_999])
    res = ix.search(q, 10)
    np.testing.assert_array_equal(res.labels, held.exact(q, 10, "ip"))  # exact: identical answers
    ix.add(labels[9_999:10_000], x[9_999:10_000])
    assert ix.trained and ix.nlist == nlist_for(10_000) and len(ix) == 10_000 and ix.stats().buffered == 0


def test_adds_after_training_join_lists_without_retrain(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    labels, x, _ = data
    store = Store(DIM)
    store.put(labels, x)
    ix = FaissIvfIndex(DIM, "ip", load_vectors=store.load, codes="flat", train_threshold=THRESHOLD)
    ix.add(labels[:THRESHOLD], x[:THRESHOLD])
    nlist, ivf = ix.nlist, ix._ivf
    ix.add(labels[THRESHOLD:], x[THRESHOLD:])
    assert ix._ivf is ivf and ix.nlist == nlist and len(ix) == N  # same trained index, grown lists
    # a query equal to a late vector finds it
    res = ix.search(x[-5:], 1)
    np.testing.assert_array_equal(res.labels[:, 0], labels[-5:])
    assert ix.growth == pytest.approx(N / THRESHOLD)


@pytest.mark.parametrize("codes", ["flat", "pq"])
def test_deletes_and_updates(codes: str, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    labels, x, q = data
    ix, store = _build(codes, (labels[:12_000], x[:12_000], q))
    hits = ix.search(q, 10).labels
    gone = np.unique(hits[:, :3])
    assert ix.remove(gone) == len(gone)
    assert ix.remove(gone) == 0  # idempotent
    store.drop(gone)
    assert len(ix) == 12_000 - len(gone)
    res = ix.search(q, 10)
    assert not np.isin(res.labels, gone).any()
    assert recall_at_k(res.labels, store.exact(q, 10, "ip"), 10) >= 0.95
    # an update replaces: the label moves to the query's position and is found once
    target = int(labels[100])
    ix.add(np.array([target]), q[:1])
    store.put(np.array([target]), q[:1])
    assert len(ix) == 12_000 - len(gone)
    top = ix.search(q[:1], 10).labels[0]
    assert top[0] == target and (top == target).sum() == 1


@pytest.mark.parametrize("codes", ["flat", "pq"])
@pytest.mark.parametrize("how", ["array", "set", "callable"])
def test_filters_match_brute_force_on_the_allowed_subset(
    codes: str, how: str, request: pytest.FixtureRequest, data: tuple
) -> None:
    ix, store = request.getfixturevalue(codes)
    labels, _, q = data
    rng = np.random.default_rng(7)
    for fraction in (0.3, 0.01):
        allow = np.sort(rng.choice(labels, int(len(labels) * fraction), replace=False))
        arg = {"array": allow, "set": set(allow.tolist()).__contains__, "callable": None}[how]
        if arg is None:
            members = set(allow.tolist())

            def arg(label: int, members: set[int] = members) -> bool:
                return label in members

        res = ix.search(q[:50], 10, allowed=arg, ef=512)
        assert np.isin(res.labels[res.labels >= 0], allow).all()
        truth = store.exact(q[:50], 10, "ip", allowed=allow)
        assert recall_at_k(res.labels, truth, 10) >= 0.95


def test_filter_allowing_fewer_than_k_pads(flat: tuple[FaissIvfIndex, Store], data: tuple) -> None:
    labels, _, q = data
    res = flat[0].search(q[:3], 10, allowed=labels[[1, 2, 3]])
    assert res.labels.shape == (3, 10)
    assert set(res.labels[:, :3].ravel().tolist()) == set(labels[[1, 2, 3]].tolist())
    assert (res.labels[:, 3:] == -1).all() and np.isinf(res.distances[:, 3:]).all()
    empty = flat[0].search(q[:2], 5, allowed=np.empty(0, np.int64))
    assert (empty.labels == -1).all()


@pytest.mark.parametrize("codes", ["flat", "pq"])
def test_save_load_round_trip(
    codes: str, request: pytest.FixtureRequest, data: tuple, tmp_path: Path
) -> None:
    ix, store = request.getfixturevalue(codes)
    q = data[2]
    ix.save(tmp_path)
    back = FaissIvfIndex.load(tmp_path, DIM, "ip", load_vectors=store.load, codes=codes)
    assert back.trained and len(back) == len(ix) and back.nlist == ix.nlist
    for ef in (32, 96):
        a, b = ix.search(q, 10, ef=ef), back.search(q, 10, ef=ef)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.distances, b.distances, rtol=1e-6)
    np.testing.assert_array_equal(back.live_labels(), ix.live_labels())
    manifest = json.loads((tmp_path / "ivf.json").read_text())
    assert manifest["format_version"] == 1 and manifest["count"] == len(ix) and manifest["dim"] == DIM


def test_save_load_before_training(data: tuple, tmp_path: Path) -> None:
    labels, x, q = data
    store = Store(DIM)
    store.put(labels[:500], x[:500])
    ix = FaissIvfIndex(DIM, "ip", load_vectors=store.load, codes="pq")
    ix.add(labels[:500], x[:500])
    ix.save(tmp_path)
    back = FaissIvfIndex.load(tmp_path, DIM, "ip", load_vectors=store.load, codes="pq")
    assert not back.trained and len(back) == 500
    np.testing.assert_array_equal(back.search(q, 10).labels, ix.search(q, 10).labels)
    np.testing.assert_array_equal(back.get_vectors(labels[[3, 1]]), x[[3, 1]])


def test_manifest_mismatches_are_refused(flat: tuple[FaissIvfIndex, Store], tmp_path: Path) -> None:
    ix, store = flat
    ix.save(tmp_path)
    with pytest.raises(CorruptionError, match="dim=64; expected 32"):
        FaissIvfIndex.load(tmp_path, 32, "ip", load_vectors=store.load, codes="flat")
    with pytest.raises(CorruptionError, match="space='ip'; expected 'l2'"):
        FaissIvfIndex.load(tmp_path, DIM, "l2", load_vectors=store.load, codes="flat")
    with pytest.raises(CorruptionError, match="codes='flat'; expected 'pq'"):
        FaissIvfIndex.load(tmp_path, DIM, "ip", load_vectors=store.load, codes="pq")
    path = tmp_path / "ivf.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps({**good, "format_version": 99}))
    with pytest.raises(FormatVersionError, match="format version 99"):
        FaissIvfIndex.load(tmp_path, DIM, "ip", load_vectors=store.load, codes="flat")
    path.write_text(json.dumps({**good, "crc32": good["crc32"] ^ 1}))
    with pytest.raises(CorruptionError, match="checksum"):
        FaissIvfIndex.load(tmp_path, DIM, "ip", load_vectors=store.load, codes="flat")
    path.unlink()
    with pytest.raises(EmbeddixError, match="no IVF manifest"):
        FaissIvfIndex.load(tmp_path, DIM, "ip", load_vectors=store.load, codes="flat")


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="pq_m must divide the dimension 64; got 7"):
        FaissIvfIndex(DIM, "ip", load_vectors=np.asarray, pq_m=7)
    with pytest.raises(InvalidArgumentError, match="codes must be one of"):
        FaissIvfIndex(DIM, "ip", load_vectors=np.asarray, codes="sq4")
    ix = FaissIvfIndex(DIM, "ip", load_vectors=np.asarray)
    with pytest.raises(EmbeddixError, match="dimension 64; got 3"):
        ix.add(np.arange(2), np.zeros((2, 3), np.float32))


@pytest.mark.slow
def test_retrain_swaps_atomically_under_concurrent_searches(data: tuple) -> None:
    q = data[2]
    ix, store = _build("pq", data)
    truth = store.exact(q, 10, "ip")
    assert ix.nlist == nlist_for(12_000)  # trained when the third batch of 4,000 crossed 10,000
    errors: list[BaseException] = []
    recalls: list[float] = []
    stop = threading.Event()

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                i = rng.integers(0, len(q) - 20)
                res = ix.search(q[i : i + 20], 10)
                # every answer is complete (no half-built index: a half-filled one would miss most)
                assert (res.labels >= 0).all()
                recalls.append(recall_at_k(res.labels, truth[i : i + 20], 10))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    # a write during the retrain goes to the journal and survives the swap
    extra = np.array([10**9], np.int64)
    gate = threading.Thread(target=lambda: (ix.add(extra, q[:1]), store.put(extra, q[:1])))
    try:
        report_box: list = []
        rt = threading.Thread(target=lambda: report_box.append(ix.retrain()))
        rt.start()
        gate.start()
        gate.join()
        rt.join()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    report = report_box[0]
    assert report.count == N + 1 == len(ix)
    assert ix.nlist == nlist_for(N + 1) > nlist_for(12_000)  # the new index, sized for the new count
    assert len(recalls) > 0 and min(recalls) >= 0.8
    assert ix.search(q[:1], 1).labels[0, 0] == extra[0]
    assert recall_at_k(ix.search(q, 10).labels, store.exact(q, 10, "ip"), 10) >= 0.95


def test_watch_recall_reports_and_retrains_when_low(data: tuple) -> None:
    labels, x, q = data
    ix, _ = _build("flat", (labels[:12_000], x[:12_000], q))
    good = ix.watch_recall(q[:50], k=10, target=0.9)  # truth computed through the loader
    assert good.recall >= 0.9 and not good.retraining and good.nprobe == ix.nprobe()
    low = ix.watch_recall(q[:50], k=10, target=1.01, ef=10, retrain=True)
    assert low.retraining
    ix.join()
    assert len(ix) == 12_000 and ix.growth == 1.0


def test_writers_wait_for_a_slow_first_training_once_the_journal_is_full(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bulk load outrunning a background first training held every later vector twice (exact buffer
    # and journal) without bound: 1M x 768 reached 9.2 GB. Past journal_max the writer waits instead.
    labels, x, q = data
    store = Store(DIM)
    store.put(labels, x)
    ix = FaissIvfIndex(DIM, "ip", load_vectors=store.load, codes="flat", train_threshold=THRESHOLD)
    ix.background_training = True
    ix.journal_max = 500 * DIM * 4  # 500 vectors' worth
    started, release = threading.Event(), threading.Event()
    new_trained = ix._new_trained

    def slow(sample: np.ndarray, n: int) -> object:
        started.set()
        assert release.wait(30)
        return new_trained(sample, n)

    monkeypatch.setattr(ix, "_new_trained", slow)
    ix.add(labels[:THRESHOLD], x[:THRESHOLD])
    assert started.wait(30) and not ix.trained
    most = [0]

    def load_rest() -> None:
        for s in range(THRESHOLD, N, 250):
            ix.add(labels[s : s + 250], x[s : s + 250])
            most[0] = max(most[0], ix._journal_bytes)

    writer = threading.Thread(target=load_rest)
    writer.start()
    writer.join(1.0)
    assert writer.is_alive()  # waiting for the training: the journal is full
    assert ix.stats().buffered <= THRESHOLD + 1_000 and ix._journal_bytes <= 750 * DIM * 4
    release.set()
    writer.join(30)
    assert not writer.is_alive() and ix.trained and len(ix) == N
    assert most[0] <= 750 * (DIM * 4 + 8)
    res = ix.search(q, 10, ef=1024)  # every list: the same answers as brute force
    np.testing.assert_array_equal(res.labels, store.exact(q, 10, "ip"))
