"""Caches: isolation, TTL, budget, persistence, bypass, and the semantic bound.

These test the tiers' mechanics, so both tiers are kept on (``cache_policy="always"``); when the cost
policy turns them on and off is ``test_cache_policy.py``'s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.cache import ResultCache, VectorCache


@pytest.fixture(autouse=True)
def _tiers_always_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDDIX_CACHE_POLICY", "always")


def _col(db: Embeddix, n: int = 400, dim: int = 16, **kwargs):
    x = clustered(n, dim, seed=7)
    col = db.create_collection("c", dim=dim, **kwargs)
    col.add([str(i) for i in range(n)], x, metadatas=[{"g": i % 4} for i in range(n)])
    return col, x


def test_cache_is_on_by_default_and_invisible(mem_db: Embeddix) -> None:
    col, x = _col(mem_db)
    first = col.search(x[3], k=5)
    second = col.search(x[3], k=5)
    assert first == second
    assert first.plan.result_cache == "miss" and second.plan.result_cache == "hit"
    info = col.cache_info()
    for key in ("hits", "misses", "semantic_hits", "verified_rejects", "entries", "bytes"):
        assert key in info
    assert info["hits"] == 1 and info["misses"] == 1 and info["entries"] == 1 and info["bytes"] > 0
    bypass = col.search(x[3], k=5, cache=False)
    assert bypass == first and bypass.plan.result_cache == "off"
    assert col.cache_info()["hits"] == 1


def test_cached_hits_do_not_alias(mem_db: Embeddix) -> None:
    col, x = _col(mem_db)
    col.search(x[1], k=3)[0].metadata["g"] = "poisoned"
    assert col.search(x[1], k=3)[0].metadata == {"g": 1}


def test_precise_invalidation_keeps_unaffected_entries(mem_db: Embeddix) -> None:
    col, x = _col(mem_db)
    for i in range(20):
        col.search(x[i], k=5, filter={"g": i % 4})
    assert col.cache_info()["entries"] == 20
    # a record far from every cached query and matching no filter of interest
    col.add("far", -x[0] * 50, metadatas={"g": 99})
    assert col.cache_info()["entries"] == 20
    # a record identical to query 0 with the right metadata must invalidate exactly that answer's entry
    col.add("twin", x[0], metadatas={"g": 0})
    info = col.cache_info()
    assert info["invalidated"] >= 1 and info["entries"] < 20
    hits = col.search(x[0], k=5, filter={"g": 0})
    assert "twin" in {h.id for h in hits}
    assert hits == col.search(x[0], k=5, filter={"g": 0}, cache=False)


def test_delete_and_update_drop_entries_holding_the_record(mem_db: Embeddix) -> None:
    col, x = _col(mem_db)
    top = col.search(x[5], k=3)
    col.delete(top[1].id)
    assert top[1].id not in {h.id for h in col.search(x[5], k=3)}
    col.search(x[6], k=3)
    col.update("6", documents=["new text"])
    assert col.search(x[6], k=3)[0].document == "new text"
    col.update("6", metadatas=[{"g": 42}])
    assert col.search(x[6], k=3)[0].metadata == {"g": 42}
    assert col.search(x[6], k=3, filter={"g": 42})[0].id == "6"


def test_sessions_are_isolated_and_bounded() -> None:
    s = EmbeddixSettings(cache_max_sessions=2)
    with Embeddix.open(None, settings=s) as db:
        col, x = _col(db)
        col.search(x[0], k=5, session="agent-a")
        assert col.search(x[0], k=5, session="agent-b").plan.result_cache == "miss"
        assert col.search(x[0], k=5, session="agent-a").plan.result_cache == "hit"
        assert col.search(x[0], k=5).plan.result_cache == "miss"  # the shared namespace is separate too
        col.search(x[0], k=5, session="agent-c")  # evicts the least recently used session (b)
        info = col.cache_info()
        assert info["sessions"] == 2 and info["sessions_evicted"] == 1
        assert col.search(x[0], k=5, session="agent-b").plan.result_cache == "miss"


def test_profile_version_is_part_of_the_key(mem_db: Embeddix) -> None:
    col, x = _col(mem_db)
    col.search(x[0], k=5, session="u", profile_version=1)
    assert col.search(x[0], k=5, session="u", profile_version=2).plan.result_cache == "miss"
    assert col.search(x[0], k=5, session="u", profile_version=1).plan.result_cache == "hit"


def test_ttl_expires_entries(monkeypatch) -> None:
    import embeddix_core.cache.result_cache as rc

    now = [1000.0]
    monkeypatch.setattr(rc.time, "monotonic", lambda: now[0])
    with Embeddix.open(None, settings=EmbeddixSettings(cache_ttl=10.0)) as db:
        col, x = _col(db)
        col.search(x[0], k=5)
        now[0] += 5
        assert col.search(x[0], k=5).plan.result_cache == "hit"
        now[0] += 6
        assert col.search(x[0], k=5).plan.result_cache == "miss"
        assert col.cache_info()["expired"] >= 1


def test_memory_budget_evicts_least_recently_used() -> None:
    with Embeddix.open(None, settings=EmbeddixSettings(cache_max_bytes=20_000)) as db:
        col, x = _col(db)
        for i in range(60):
            col.search(x[i], k=5)
        info = col.cache_info()
        assert info["bytes"] <= 20_000 and info["evicted"] > 0
        assert col.search(x[59], k=5).plan.result_cache == "hit"  # the most recent one stayed


def test_persistent_tier_survives_restart(tmp_path) -> None:
    s = EmbeddixSettings(cache_persist=True)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col, x = _col(db)
        col.search(x[0], k=5)
        col.search(x[1], k=5, session="agent-7", filter={"g": 1})
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.get_collection("c")
        assert col.cache_info()["entries"] == 2
        assert col.search(x[0], k=5).plan.result_cache == "hit"
        assert col.search(x[1], k=5, session="agent-7", filter={"g": 1}).plan.result_cache == "hit"
        col.add("new", x[2])  # written after the save: the saved entries could be stale
    with Embeddix.open(tmp_path / "d", settings=EmbeddixSettings()) as db:  # no persistence: no save
        db.get_collection("c").add("newer", x[3])
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        assert db.get_collection("c").cache_info()["entries"] == 0


def test_semantic_hit_is_verified_and_equals_a_fresh_search(mem_db: Embeddix) -> None:
    col, x = _col(mem_db, n=2000, dim=16)
    rng = np.random.default_rng(3)
    served = 0
    for i in range(40):
        col.search(x[i], k=5)
        q2 = x[i] + rng.standard_normal(16).astype(np.float32) * 1e-3
        hits = col.search(q2, k=5)
        fresh = col.search(q2, k=5, cache=False)
        assert [h.id for h in hits] == [h.id for h in fresh]
        np.testing.assert_allclose(
            [h.distance for h in hits], [h.distance for h in fresh], rtol=1e-4, atol=1e-5
        )
        served += hits.plan.result_cache == "semantic-hit"
    assert served > 20
    assert col.cache_info()["semantic_hits"] == served


def test_semantic_tier_rejects_when_the_bound_fails(mem_db: Embeddix) -> None:
    col, x = _col(mem_db, n=2000, dim=16)
    col.search(x[0], k=5)
    far = x[0] + np.random.default_rng(0).standard_normal(16).astype(np.float32) * 0.4
    cos = float(far @ x[0] / np.linalg.norm(far) / np.linalg.norm(x[0]))
    if cos >= 0.95:  # passes the pre-filter, so the bound must decide
        hits = col.search(far, k=5)
        assert [h.id for h in hits] == [h.id for h in col.search(far, k=5, cache=False)]


def test_inner_product_collections_have_no_semantic_tier(mem_db: Embeddix) -> None:
    x = clustered(200, 8, seed=1)
    col = mem_db.create_collection("ip", dim=8, metric="ip")
    col.add([str(i) for i in range(200)], x)
    col.search(x[0], k=3)
    assert col.search(x[0] * 1.0001, k=3).plan.result_cache == "miss"
    assert col.search(x[0], k=3).plan.result_cache == "hit"


@pytest.mark.parametrize("enabled", [False])
def test_cache_can_be_disabled(enabled: bool) -> None:
    with Embeddix.open(None, settings=EmbeddixSettings(cache_enabled=enabled)) as db:
        col, x = _col(db)
        col.search(x[0], k=3)
        assert col.search(x[0], k=3).plan.result_cache == "off"
        assert col.cache_info()["enabled"] is False


def test_beam_factor_and_probe_are_settings(monkeypatch) -> None:
    monkeypatch.setenv("EMBEDDIX_CACHE_BEAM_FACTOR", "3")
    monkeypatch.setenv("EMBEDDIX_CACHE_PROBE", "false")
    s = EmbeddixSettings(auto_calibrate=False)
    assert s.cache_beam_factor == 3.0 and s.cache_probe is False
    for name in ("cache_beam_factor", "cache_probe"):
        assert EmbeddixSettings.model_fields[name].description  # documented where it is declared
    with pytest.raises(ValueError):
        EmbeddixSettings(cache_beam_factor=0.5)  # narrower than an uncached search could not certify
    with Embeddix.open(None, settings=s) as db:
        col, x = _hnsw_col(db)
        assert col._cache.settings.beam_factor == 3.0 and col._cache.settings.probe is False
        first = col.search(x[0], k=10)
        assert first.plan.ef == max(col.explain(x[0], k=10).ef, 3 * 10 * col._cache.settings.candidate_factor)


def test_many_entries_are_found_by_hash_tables_and_stay_correct() -> None:
    rng = np.random.default_rng(5)
    with Embeddix.open(None, settings=EmbeddixSettings(cache_max_bytes=3_000_000)) as db:
        col, x = _col(db, n=3000, dim=16)
        served = tried = 0
        for round_ in range(3):
            for i in range(700):
                col.search(x[i + round_ * 7], k=5)
            ns = col._cache.namespace(None)
            assert len(ns) > 512  # past lsh._SCAN_MAX: only the hash tables find near duplicates
            col.add([f"new{round_}-{j}" for j in range(50)], x[3000 - 50 :] * 1.01)
            col.delete([str(j) for j in range(round_ * 10, round_ * 10 + 10)])
            for i in range(0, 700, 7):
                q2 = x[i + round_ * 7] + rng.standard_normal(16).astype(np.float32) * 1e-3
                hits = col.search(q2, k=5)
                fresh = col.search(q2, k=5, cache=False)
                np.testing.assert_allclose([h.distance for h in hits], [h.distance for h in fresh], atol=1e-5)
                served += hits.plan.result_cache == "semantic-hit"
                tried += 1
        assert served > tried // 2
        # every entry is in the tables once per table, and nothing else is
        ns = col._cache.namespace(None)
        slots = sorted(e.slot for e in ns.entries())
        held = [
            slot
            for tables in ns._queries.tables.values()
            for table in tables
            for got in table.values()
            for slot in (got if isinstance(got, list) else [got])
        ]
        keys = ns._queries.keys
        assert sorted(held) == sorted(slots * keys.shape[1])
        assert (keys[slots] >= 0).all() and int((keys >= 0).all(axis=1).sum()) == len(slots)


@pytest.fixture
def hnsw_db():
    # no background calibration: it clears the cache when it lands (plans change)
    with Embeddix.open(None, settings=EmbeddixSettings(auto_calibrate=False)) as db:
        yield db


def _hnsw_col(db: Embeddix, n: int = 3000, dim: int = 24):
    x = clustered(n, dim, seed=11)
    col = db.create_collection("h", dim=dim, index_threshold=500)
    col.add([str(i) for i in range(n)], x)
    assert col.index_kind == "hnsw"
    return col, x


def test_default_searches_keep_candidates_from_a_wider_beam(hnsw_db: Embeddix) -> None:
    col, x = _hnsw_col(hnsw_db)
    plain = col.explain(x[0], k=10)
    first = col.search(x[0], k=10)
    factor = col._cache.settings.candidate_factor
    assert first.plan.result_cache == "miss" and first.plan.ef == max(plain.ef, 2 * 10 * factor)
    again = col.search(x[0], k=10)
    assert again.plan.result_cache == "hit" and [h.id for h in again] == [h.id for h in first]
    # the wider beam's answer is at least as good as an uncached search's
    fresh = col.search(x[0], k=10, cache=False)
    assert fresh.plan.ef == plain.ef
    assert max(h.distance for h in first) <= max(h.distance for h in fresh) + 1e-6
    q2 = x[0] + np.random.default_rng(0).standard_normal(24).astype(np.float32) * 1e-3
    near = col.search(q2, k=10)
    assert near.plan.result_cache == "semantic-hit"
    assert [h.id for h in near] == [h.id for h in col.search(q2, k=10, ef=400, cache=False)]


def test_searches_with_their_own_beam_get_exact_hits_only(hnsw_db: Embeddix) -> None:
    col, x = _hnsw_col(hnsw_db)
    first = col.search(x[1], k=10, ef=40)
    assert first.plan.result_cache == "miss" and first.plan.ef == 40
    assert first == col.search(x[1], k=10, ef=40, cache=False)  # identical to an uncached search
    assert col.search(x[1], k=10, ef=40).plan.result_cache == "hit"
    q2 = x[1] + np.float32(1e-4)
    assert col.search(q2, k=10, ef=40).plan.result_cache == "miss"


def test_codes_are_in_the_budget_and_freed_with_their_entries() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rc = ResultCache(32, "ip")
    fam = rc.family(5, None, ())
    for i in range(20):
        d = (1 - x @ x[i]).astype(np.float32)
        order = np.argsort(d)[:40].astype(np.int64)
        need = rc.store(bytes([i]), x[i], fam, 5, None, [], order, d[order], True, 0)
        rc.attach(bytes([i]), 0, need, x[need])
    entry_bytes = sum(e.nbytes for e in rc.entries())
    assert rc.bytes == entry_bytes + rc._codes.nbytes and rc._codes.nbytes > 0
    assert all(e.allcoded for e in rc.entries())
    # a deleted record drops the entries holding it, and the codes only they held
    victim = int(rc.entries()[0].labels[3])
    dropped = rc.on_labels([victim])
    assert dropped >= 1 and victim not in rc._codes.rows
    assert rc.bytes == sum(e.nbytes for e in rc.entries()) + rc._codes.nbytes
    live = {int(lb) for e in rc.entries() for lb in e.labels}
    assert set(rc._codes.rows) == live
    rc.clear()
    assert rc.bytes == 0 and not rc._codes.rows


def test_attach_ignores_an_entry_stored_again_after_a_write() -> None:
    x = np.eye(8, dtype=np.float32)
    rc = ResultCache(8, "ip")
    fam = rc.family(2, None, ())
    labels = np.arange(4, dtype=np.int64)
    d = (1 - x[:4] @ x[0]).astype(np.float32)
    need = rc.store(b"k", x[0], fam, 2, None, [], labels, d, True, seq=1)
    rc.store(b"k", x[0], fam, 2, None, [], labels, d, True, seq=2)  # re-stored after a write
    rc.attach(b"k", 1, need, x[need])  # vectors read before that write: not kept
    assert not rc._codes.rows and not rc.entries()[0].allcoded
    rc.attach(b"k", 2, need, x[need])
    assert rc.entries()[0].allcoded


def test_vector_cache_drops_vectors_read_before_a_discard() -> None:
    store = {1: np.ones(4, np.float32), 2: np.full(4, 2, np.float32)}
    vc = VectorCache(4, lambda labels: np.stack([store[int(lb)] for lb in labels]))
    gen = vc.generation
    old = np.stack([store[1]])
    store[1] = np.full(4, 9, np.float32)  # a write lands...
    vc.discard([1])  # ...and is discarded after its commit
    vc.put(np.array([1]), old, gen)  # a reader that fetched before it must not keep the old vector
    assert vc.get(np.array([1]))[0, 0] == 9
    assert vc.get(np.array([1, 2]))[:, 0].tolist() == [9, 2] and vc.hits == 1


def test_persisted_entries_still_serve_semantic_hits(tmp_path) -> None:
    s = EmbeddixSettings(cache_persist=True)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col, x = _col(db, n=2000, dim=16)
        col.search(x[0], k=5)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.get_collection("c")
        q2 = x[0] + np.float32(1e-4)
        hits = col.search(q2, k=5)
        assert hits.plan.result_cache == "semantic-hit"  # no codes after a restart: triangle bounds
        fresh = col.search(q2, k=5, cache=False)
        assert [h.id for h in hits] == [h.id for h in fresh]
        np.testing.assert_allclose([h.distance for h in hits], [h.distance for h in fresh], atol=1e-6)


def test_semantic_lookups_probe_only_approximate_candidate_sets(hnsw_db: Embeddix) -> None:
    col, x = _hnsw_col(hnsw_db)
    sizes: list[int] = []
    knn, top_lists = col._ex.knn, col._ex.top_lists
    inside = [False]  # a search counted by top_lists (its fallback goes through knn: count it once)

    def spy(queries, k, *args, **kwargs):
        if not inside[0]:
            sizes.append(k)
        return knn(queries, k, *args, **kwargs)

    def spy_lists(q, k, *args, **kwargs):
        sizes.append(k)
        inside[0] = True
        try:
            return top_lists(q, k, *args, **kwargs)
        finally:
            inside[0] = False

    col._ex.knn = spy  # type: ignore[method-assign]
    col._ex.top_lists = spy_lists  # type: ignore[method-assign]
    col.search(x[0], k=10)
    assert sizes == [80]  # the miss: K candidates
    sizes.clear()
    q2 = x[0] + np.random.default_rng(1).standard_normal(24).astype(np.float32) * 1e-3
    assert col.search(q2, k=10).plan.result_cache == "semantic-hit"
    assert sizes == [16]  # the probe: a search for the new query, a little wider than k (certify.probe_width)
    # switched off, the lookup runs no search at all
    col._cache.settings = dataclasses.replace(col._cache.settings, probe=False)
    sizes.clear()
    q3 = x[0] + np.random.default_rng(2).standard_normal(24).astype(np.float32) * 1e-3
    assert col.search(q3, k=10).plan.result_cache == "semantic-hit" and sizes == []


def _ip_cache_around_first(rng: np.random.Generator, n: int) -> tuple:
    """n unit vectors (8-d), an "ip" ResultCache with its k=3 family, every vector's distance to x[0],
    and x[0]'s 24 nearest labels: a candidate set to store for the query x[0]."""
    x = rng.standard_normal((n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rc = ResultCache(8, "ip", similarity=0.5)
    fam = rc.family(3, None, ())
    d = (1 - x @ x[0]).astype(np.float32)
    order = np.argsort(d)[:24].astype(np.int64)
    return x, rc, fam, d, order


def test_candidate_sets_of_exact_searches_need_no_probe() -> None:
    rng = np.random.default_rng(4)
    x, rc, fam, d, order = _ip_cache_around_first(rng, 300)
    need = rc.store(b"q", x[0], fam, 3, None, [], order, d[order], True, 0, exact=True)
    rc.attach(b"q", 0, need, x[need])

    def probe(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("an exact candidate set was probed")

    q2 = x[0] + np.float32(1e-3)
    q2 /= np.linalg.norm(q2)
    found = rc.lookup(b"q2", q2, fam, 3, lambda labels: x[labels], probe)
    assert found is not None and found.kind == "semantic-hit"
    assert set(found.labels) == set(np.argsort(1 - x.astype(np.float64) @ q2)[:3].tolist())


def test_l2_namespaces_past_the_scan_find_near_duplicates_by_hash() -> None:
    # Far from the origin: hyperplanes through it would give every query the same key, and the exact
    # index's float32 distances are off by far more than their relative share (Certifier._l2_err):
    # without that allowance one of these semantic hits served the 6th neighbour for the 5th.
    rng = np.random.default_rng(8)
    with Embeddix.open(None, settings=EmbeddixSettings(cache_max_bytes=4_000_000)) as db:
        x = clustered(3000, 16, seed=9) + np.float32(50)
        col = db.create_collection("l2", dim=16, metric="l2")
        col.add([str(i) for i in range(3000)], x)
        for i in range(700):
            col.search(x[i], k=5)
        assert len(col._cache.namespace(None)) > 512
        served = 0
        x64 = x.astype(np.float64)
        for i in range(0, 700, 7):
            q2 = x[i] + rng.standard_normal(16).astype(np.float32) * 1e-3
            hits = col.search(q2, k=5)
            # against float64 truth: 50 from the origin, the index's float32 |x|^2 - 2 x.c + |c|^2 is off
            # by ~1e-2, so a fresh search may order near ties differently
            truth = np.sort(((x64 - q2.astype(np.float64)) ** 2).sum(axis=1))[:5]
            semantic = hits.plan.result_cache == "semantic-hit"  # re-ranked in float64: exact
            got = sorted(h.distance**2 for h in hits)
            np.testing.assert_allclose(
                got, truth, rtol=1e-6 if semantic else 1e-4, atol=0 if semantic else 2e-2
            )
            served += semantic
        assert served > 50


def test_candidates_are_kept_sorted_and_a_probe_may_repeat_labels() -> None:
    rng = np.random.default_rng(6)
    x, rc, fam, d, order = _ip_cache_around_first(rng, 400)
    shuffled = rng.permutation(24)
    need = rc.store(b"q", x[0], fam, 3, None, [], order[shuffled], d[order][shuffled], True, 0)
    rc.attach(b"q", 0, need, x[need])
    (entry,) = rc.entries()
    assert np.all(np.diff(entry.dists) >= 0) and entry.labels.tolist() == order.tolist()

    def probe(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # an index answer with every label twice (a segment flush in progress), best first
        d2 = (1 - x @ v).astype(np.float32)
        best = np.repeat(np.argsort(d2)[: (k + 1) // 2], 2)
        return best.astype(np.int64), d2[best]

    q2 = x[0] + np.float32(1e-3)
    q2 /= np.linalg.norm(q2)
    found = rc.lookup(b"q2", q2, fam, 3, lambda labels: x[labels], probe)
    exact = 1 - x.astype(np.float64) @ q2
    if found is not None:
        assert found.labels == np.argsort(exact)[:3].tolist()
        np.testing.assert_allclose(found.dists, np.sort(exact)[:3], atol=1e-6)
