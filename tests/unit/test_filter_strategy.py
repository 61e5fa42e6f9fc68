"""Filtered search strategies: the subset matrix, its upkeep under writes and budget, and the cost choice.

Both strategies are checked against the brute-force filtered answer; the matrix against the vectors it
must hold after every kind of write, with searches racing the writes. No wall-clock assertions: the
cost model is fed its measurements directly.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.index.base import exact_topk
from embeddix_core.query.filter_cache import STALE_MAX, FilterCache
from embeddix_core.query.filter_matrix import FilterMatrix, matrix_size
from embeddix_core.query.filter_strategy import EXACT_SUBSET, INDEX_HOOK, FilterCosts
from embeddix_core.query.filters import Filter, parse_filter

DIM = 32
N = 3000
TAG3: dict[str, Any] = {"tag": 3}


def _flt(spec: dict[str, Any]) -> Filter:
    flt = parse_filter(spec)
    assert flt is not None
    return flt


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _decaying(n: int, dim: int, seed: int) -> np.ndarray:
    """Vectors whose energy falls off along random directions (as real embeddings' does)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)) * np.exp(-np.arange(dim) / 6.0)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return np.ascontiguousarray(x @ basis.T, np.float32)


# -- the matrix's scan ------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["ip", "l2"])
@pytest.mark.parametrize("rotate", [True, False])
def test_matrix_scan_equals_exact_topk(space: str, rotate: bool) -> None:
    x = _decaying(3000, 64, 1)
    if space == "ip":
        x = _unit(x)
    labels = np.arange(5, 5 + 3 * len(x), 3, dtype=np.int64)
    m = FilterMatrix.build(labels, x, rotate=rotate)
    assert (m.rotation is not None) == rotate, "decaying spectra get the two-stage layout"
    queries = _decaying(40, 64, 2)
    if space == "ip":
        queries = _unit(queries)
    for k in (1, 10, 50):
        ref = exact_topk(x, labels, queries, k, space)
        single = [m.search(q[None], k, space) for q in queries]
        batch = m.search(queries, k, space)
        for i, res in enumerate(single):
            np.testing.assert_allclose(res.distances[0], ref.distances[i], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(batch.distances[i], ref.distances[i], rtol=1e-4, atol=1e-4)
        same = np.mean([res.labels[0].tolist() == ref.labels[i].tolist() for i, res in enumerate(single)])
        assert same >= 0.95, "labels may differ only where float32 rounding ties two distances"


def test_matrix_scan_skips_stale_rows() -> None:
    x = _unit(_decaying(2500, 48, 3))
    labels = np.arange(len(x), dtype=np.int64)
    q = _unit(_decaying(1, 48, 4))
    first = exact_topk(x, labels, q, 20, "ip").labels[0]
    stale = [*first[:5].tolist(), 10**9]  # labels that are no row are ignored
    m = FilterMatrix.build(labels, x).with_stale(stale)
    keep = ~np.isin(labels, stale)
    ref = exact_topk(x[keep], labels[keep], q, 10, "ip")
    assert m.search(q, 10, "ip").labels.tolist() == ref.labels.tolist()
    assert m.search(np.vstack([q, q]), 10, "ip").labels[1].tolist() == ref.labels[0].tolist()
    tiny = FilterMatrix.build(labels[:3], x[:3]).with_stale(labels[:3].tolist())
    assert tiny.search(q, 10, "ip").labels.shape == (1, 0)


# -- the cache's upkeep of matrices -----------------------------------------------------------------------
class FakeStore:
    """Labels with metadata and vectors, as the filter cache reads them (and counts the reads)."""

    def __init__(self, n: int, dim: int = 8) -> None:
        self.meta = {i: {"tag": i % 4} for i in range(n)}
        self.vecs = {i: np.full(dim, float(i), np.float32) for i in range(n)}
        self.dim = dim
        self.reads = 0
        self.during_read: Any = None

    def labels(self, where: str, params: Any) -> list[int]:
        return [lb for lb, m in self.meta.items() if m["tag"] == params[-1]]  # {"tag": t} only

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        self.reads += 1
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        nan = np.full(self.dim, np.nan, np.float32)
        return np.stack([self.vecs.get(lb, nan) for lb in labels.tolist()] or [nan])[: len(labels)]

    def cache(self, budget: int = 1 << 20) -> FilterCache:
        return FilterCache(self.labels, self.vectors, dim=self.dim, matrix_bytes=budget)

    def write(self, cache: FilterCache, label: int, tag: int | None, value: float | None = None) -> None:
        """Commit a write, then tell the cache (the order of the real writer)."""
        if tag is None:
            self.meta.pop(label, None)
            self.vecs.pop(label, None)
            cache.update([label], None)
            return
        self.meta[label] = {"tag": tag}
        if value is not None:
            self.vecs[label] = np.full(self.dim, value, np.float32)
        cache.update([label], [self.meta[label]])


def _check_matrix(store: FakeStore, cache: FilterCache, flt: Filter) -> None:
    """Rows not stale hold the store's vectors; every match is a fresh row or stale."""
    entry = cache.entry(flt)
    m = entry.matrix
    assert m is not None
    rows = m.search(np.eye(1, store.dim, dtype=np.float32), len(m.labels), "ip").labels[0].tolist()
    live = [lb for lb in m.labels.tolist() if lb not in m.stale]
    assert sorted(rows) == live
    for i, lb in enumerate(m.labels.tolist()):
        if lb not in m.stale:
            assert lb in entry.labels
            np.testing.assert_array_equal(m.head[i], store.vecs[lb])
    assert entry.labels - set(live) <= m.stale


def test_matrix_is_built_once_and_kept_through_small_writes() -> None:
    store = FakeStore(400)
    cache = store.cache()
    flt = _flt({"tag": 1})
    entry = cache.entry(flt)
    m = cache.matrix(entry)
    assert m is not None and store.reads == 1 and m.rotation is None
    assert m.labels.tolist() == sorted(entry.labels)
    assert cache.matrix(entry) is m and store.reads == 1
    assert cache.matrix_bytes == m.nbytes
    store.write(cache, 5, 1, value=-5.0)  # upsert of a match: new vector
    store.write(cache, 9, 2)  # update_metadata: leaves the filter
    store.write(cache, 402, 1, value=402.0)  # add: a new match
    store.write(cache, 13, None)  # delete
    store.write(cache, 6, 2)  # not a match before or after: the matrix is untouched
    m2 = entry.matrix
    assert m2 is not None and m2.head is m.head and m2.stale == {5, 9, 402, 13}
    _check_matrix(store, cache, flt)
    assert store.reads == 1


def test_matrix_is_dropped_past_stale_max_and_by_bulk_writes() -> None:
    store = FakeStore(1000)
    cache = store.cache()
    flt = _flt({"tag": 1})
    entry = cache.entry(flt)
    assert cache.matrix(entry) is not None
    for lb in range(1, 4 * (STALE_MAX + 1), 4):
        store.write(cache, lb, 1, value=float(-lb))
    assert entry.matrix is None and cache.matrix_bytes == 0
    assert cache.matrix(entry) is not None and store.reads == 2
    _check_matrix(store, cache, flt)
    cache.update(list(range(600)), [store.meta[i] for i in range(600)])  # > 512 records: entries dropped
    assert entry.matrix is None and cache.matrix_bytes == 0
    entry = cache.entry(flt)
    assert cache.matrix(entry) is not None
    cache.clear()
    assert entry.matrix is None and cache.matrix_bytes == 0


def test_a_write_while_the_matrix_is_read_is_marked_stale() -> None:
    store = FakeStore(400)
    cache = store.cache()
    flt = _flt({"tag": 1})
    entry = cache.entry(flt)
    store.during_read = lambda: (store.write(cache, 5, 1, value=-5.0), store.write(cache, 9, 2))
    m = cache.matrix(entry)
    assert m is not None and {5, 9} <= m.stale
    _check_matrix(store, cache, flt)


def test_budget_matrix_too_big_is_never_built_and_lru_is_evicted_first() -> None:
    store = FakeStore(400)
    one = matrix_size(100, store.dim)
    cache = store.cache(budget=one - 1)
    entry = cache.entry(_flt({"tag": 1}))
    assert not cache.can_hold(entry) and cache.matrix(entry) is None and store.reads == 0
    cache = store.cache(budget=2 * one)
    entries = [cache.entry(_flt({"tag": t})) for t in range(3)]
    assert cache.matrix(entries[0]) is not None and cache.matrix(entries[1]) is not None
    cache.entry(_flt({"tag": 0}))  # a search of tag 0: tag 1 is now the least recently used
    assert cache.matrix(entries[2]) is not None
    assert entries[1].matrix is None and entries[0].matrix is not None
    assert cache.matrix_bytes <= 2 * one
    assert cache.matrix_bytes == sum(e.matrix.nbytes for e in entries if e.matrix is not None)


def test_an_uncached_entry_builds_no_matrix() -> None:
    store = FakeStore(100)
    cache = store.cache()
    flt = _flt({"tag": 1})
    entry = cache.entry(flt)
    cache.clear()  # as a replay would: writes no longer reach this entry
    assert not cache.can_hold(entry) and cache.matrix(entry) is None


# -- the cost model ---------------------------------------------------------------------------------------
def test_costs_choose_the_cheaper_and_learn_from_measurements() -> None:
    store = FakeStore(100)
    entry = store.cache().entry(_flt({"tag": 1}))
    costs = FilterCosts(384)
    assert costs.choose(entry, 10_000, 32, 0.1) == EXACT_SUBSET  # the priors: ~0.5 ms against ~1 ms
    assert entry.choice == EXACT_SUBSET
    # hooked searches measured far cheaper than the prior: the entry switches
    for _ in range(30):
        costs.hooked(entry, 32, 0.1, 50e-6)
    assert entry.hook_cost is not None and entry.hook_cost * 32 < 100e-6
    assert costs.choose(entry, 10_000, 32, 0.1) == INDEX_HOOK
    # scans measured cheaper still, but within the hysteresis: the choice stays
    rate = costs.scan_rate
    costs.scanned(10_000, 46e-6)
    assert costs.scan_rate < rate
    costs.scan_rate = (45e-6 - 30e-6) / (10_000 * 384)
    assert costs.choose(entry, 10_000, 32, 0.1) == INDEX_HOOK
    costs.scan_rate = 1e-12
    assert costs.choose(entry, 10_000, 32, 0.1) == EXACT_SUBSET
    small = costs.scan_rate
    costs.scanned(100, 1.0)  # too small to say anything about the rate
    assert costs.scan_rate == small


# -- collections ------------------------------------------------------------------------------------------
def _settings(**kw: Any) -> EmbeddixSettings:
    # no "few matches" rule: every non-empty filter goes through the cost choice
    return EmbeddixSettings(auto_calibrate=False, exact_filter_min=0, exact_filter_fraction=0.0, **kw)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(N, DIM, seed=11), clustered(40, DIM, seed=12)


def _collection(db: Embeddix, x: np.ndarray, metric: str = "cosine") -> Any:
    col = db.create_collection("c", dim=DIM, metric=metric, index_threshold=500)
    col.add([str(i) for i in range(len(x))], x, metadatas=[{"tag": i % 10} for i in range(len(x))])
    return col


def _truth(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, metric: str) -> list[list[int]]:
    space = "l2" if metric == "l2" else "ip"
    vecs = x if metric != "cosine" else _unit(x)
    qs = q if metric != "cosine" else _unit(q)
    return exact_topk(vecs, ids, qs, k, space).labels.tolist()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("budget", [64 << 20, 0])
def test_both_strategies_find_the_filtered_neighbours(
    data: tuple[np.ndarray, np.ndarray], metric: str, budget: int
) -> None:
    x, q = data
    expected = EXACT_SUBSET if budget else INDEX_HOOK  # no room for a matrix: the hook
    with Embeddix.open(None, settings=_settings(filter_matrix_bytes=budget)) as db:
        col = _collection(db, x, metric)
        assert col.index_kind == "hnsw"
        plan = col.explain(q[0], 10, filter=TAG3)
        assert plan.filter_strategy == expected and plan.filter_matches == N // 10
        sub = np.flatnonzero(np.arange(N) % 10 == 3)
        truth = _truth(x[sub], sub, q, 10, metric)
        found = [[int(h.id) for h in col.search(v, k=10, filter=TAG3, cache=False)] for v in q]
        cached = [[int(h.id) for h in col.search(v, k=10, filter=TAG3)] for v in q]
        batch = [[int(h.id) for h in hits] for hits in col.search_batch(q, k=10, filter=TAG3)]
        for got in (found, cached, batch):
            assert all(int(i) % 10 == 3 for row in got for i in row)
            hits = sum(len(set(g) & set(t)) for g, t in zip(got, truth, strict=True))
            recall = hits / (10 * len(q))
            assert recall == 1.0 if expected == EXACT_SUBSET else recall >= 0.9
        assert col.explain(q[0], 10, filter=TAG3).filter_strategy == expected


def test_the_strategy_named_first_is_the_one_that_runs(data: tuple[np.ndarray, np.ndarray]) -> None:
    """The result cache asks filter_strategy before searching (may the answer certify near duplicates?):
    the search must then run that strategy, whatever the estimates say meanwhile."""
    x, q = data
    with Embeddix.open(None, settings=_settings()) as db:
        col = _collection(db, x)
        ex = col._ex  # the executor: what ran is not observable from outside
        flt = _flt(TAG3)
        assert ex.filter_strategy(flt)[0] == EXACT_SUBSET
        ex.filter_costs.scan_rate = 1.0  # estimates flip to the hook ...
        hooked: list[bool] = []
        index = col._live.index
        search = index.search

        def spy(*args: Any, **kw: Any) -> Any:
            hooked.append(kw.get("allowed") is not None)
            return search(*args, **kw)

        index.search = spy
        try:
            ex.top(_unit(q[:1])[0], 10, None, flt)  # ... but the strategy named is run
            assert hooked == []
            ex.top(_unit(q[:1])[0], 10, None, flt)  # the next search chooses afresh
            assert hooked == [True]
        finally:
            del index.search


# -- writes racing searches -------------------------------------------------------------------------------
class _History:
    """Every version each id ever had (recorded before it is written), for checking racing hits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions: dict[str, list[np.ndarray]] = {}

    def add(self, rid: str, vec: np.ndarray) -> None:
        with self.lock:
            self.versions.setdefault(rid, []).append(_unit(vec))

    def distances(self, rid: str, q: np.ndarray) -> list[float]:
        with self.lock:
            return [1.0 - float(v @ q) for v in self.versions.get(rid, [])]


@pytest.fixture
def racing(tmp_path: Any) -> Iterator[tuple[Any, _History, np.random.Generator]]:
    settings = _settings(durability="normal", write_buffer=16)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    hist = _History()
    with Embeddix.open(tmp_path / "d", settings=settings) as db:
        col = db.create_collection("r", dim=16, index_threshold=200)
        for i in range(len(x)):
            hist.add(str(i), x[i])
        col.add([str(i) for i in range(len(x))], x, metadatas=[{"tag": i % 5} for i in range(len(x))])
        yield col, hist, rng


def test_matrix_stays_true_under_writes_racing_searches(
    racing: tuple[Any, _History, np.random.Generator],
) -> None:
    col, hist, rng = racing
    assert col.explain(filter=TAG3).filter_strategy == EXACT_SUBSET
    stop = threading.Event()
    problems: list[str] = []
    searches = [0]
    queries = _unit(rng.standard_normal((64, 16)).astype(np.float32))

    def searcher(seed: int) -> None:
        r = random.Random(seed)
        try:
            while not stop.is_set():
                q = queries[r.randrange(len(queries))]
                for h in col.search(q, k=10, filter=TAG3, cache=r.random() < 0.5):
                    if h.metadata.get("tag") != 3:
                        problems.append(f"{h.id} has metadata {h.metadata}")
                    if not any(abs(d - h.distance) < 1e-4 for d in hist.distances(h.id, q)):
                        problems.append(f"{h.id} at {h.distance}: no version of it is that far")
                searches[0] += 1
        except Exception as exc:  # pragma: no cover - reported below
            problems.append(repr(exc))

    def writer() -> None:
        r = random.Random(7)
        nxt = 10_000
        try:
            while not stop.is_set():
                op = r.random()
                rid = str(r.randrange(2000))
                if op < 0.25:  # add, matching or not
                    vec = rng.standard_normal(16).astype(np.float32)
                    hist.add(str(nxt), vec)
                    col.add(str(nxt), vec, metadatas=[{"tag": r.choice([3, 4])}])
                    nxt += 1
                elif op < 0.5:  # upsert: a new vector, maybe a new tag
                    vec = rng.standard_normal(16).astype(np.float32)
                    hist.add(rid, vec)
                    col.upsert(rid, vec, metadatas=[{"tag": r.choice([3, 3, 1])}])
                elif op < 0.65:
                    col.delete(rid)
                elif op < 0.9:  # in or out of the filter, the vector kept
                    if rid in col:
                        col.update_metadata(rid, {"tag": r.choice([3, 2])})
                else:  # a batch: past STALE_MAX, the matrix is dropped and rebuilt
                    ids = [str(r.randrange(2000)) for _ in range(STALE_MAX + 10)]
                    ids = list(dict.fromkeys(ids))
                    vecs = rng.standard_normal((len(ids), 16)).astype(np.float32)
                    for i, v in zip(ids, vecs, strict=True):
                        hist.add(i, v)
                    col.upsert(ids, vecs, metadatas=[{"tag": 3} for _ in ids])
        except Exception as exc:  # pragma: no cover - reported below
            problems.append(repr(exc))

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not problems, problems[:10]
    assert searches[0] > 20

    # settled: every filtered answer is the exact one over what the store now holds
    assert col.explain(filter=TAG3).filter_strategy == EXACT_SUBSET
    records = [r for r in col.scan(include_vectors=True) if r.metadata.get("tag") == 3]
    ids = np.asarray([int(r.id) for r in records], np.int64)
    vecs = _unit(np.stack([r.vector for r in records]))
    truth = exact_topk(vecs, ids, queries, 10, "ip").labels.tolist()
    for q, t in zip(queries, truth, strict=True):
        assert [int(h.id) for h in col.search(q, k=10, filter=TAG3, cache=False)] == t


def test_hits_plan_names_the_filter_strategy_that_ran() -> None:
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    with Embeddix.open(None, settings=EmbeddixSettings(index_threshold=500, auto_calibrate=False)) as db:
        col = db.create_collection("c", dim=16)
        col.add([str(i) for i in range(3000)], x, metadatas=[{"t": i % 10} for i in range(3000)])
        for cache in (True, False):
            hits = col.search(x[0], k=5, filter={"t": 3}, cache=cache)
            assert hits.plan.filter_strategy in ("exact-subset", "index-hook")
            assert hits.plan.filter_matches == 300
        assert col.search(x[1], k=5).plan.filter_strategy is None
