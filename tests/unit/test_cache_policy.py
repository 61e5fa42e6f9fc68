"""The cost policy of the result cache's tiers (``embeddix_core/cache/policy.py``).

The decisions are driven by measured costs; here the policy is fed chosen costs (deterministic), and the
collection-level tests check what users see: a new query searches the plan's beam (no widening), served
answers equal fresh ones, and ``cache_info()["tiers"]`` says each tier's state and why.
"""

from __future__ import annotations

import numpy as np
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.cache.policy import TierPolicy

US = 1e-6


def _unit(rng: np.random.Generator, dim: int = 8) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_semantic_tier_stays_off_when_widening_costs_more_than_it_saves() -> None:
    p = TierPolicy("auto", True, 64, 0.95)
    rng = np.random.default_rng(0)
    assert not p.active()
    for _ in range(2000):  # new queries only, a wide beam 5x the plan's
        p.on_miss(_unit(rng, 64), 250 * US, 20 * US, False, 5.0)
    assert not p.active() and p.trials == 0
    info = p.info()["semantic"]
    assert info["state"] == "off" and info["reason"].startswith("off:") and info["near_share"] == 0.0


def test_semantic_tier_trials_then_turns_on_when_measured_costs_pay() -> None:
    p = TierPolicy("auto", True, 8, 0.95)
    rng = np.random.default_rng(1)
    src = [_unit(rng) for _ in range(8)]
    i = 0
    # every query a near duplicate of a few sources; widening barely costs more (an exact index)
    while not p.active() and i < 5000:
        p.on_miss(src[i % 8] + np.float32(1e-4) * _unit(rng), 1000 * US, 20 * US, False, 1.0)
        i += 1
    assert p.active() and p.state == "trial" and p.trials == 1
    for _ in range(100):  # the trial measures: semantic hits cheap and mostly certified
        p.on_miss(src[0], 1050 * US, 40 * US, True, 1.0)
        p.on_semantic(100 * US, served=True)
    assert p.state == "on", p.reason
    assert p.info()["semantic"]["state"] == "on" and "saves" in p.info()["semantic"]["reason"]


def test_a_trial_whose_semantic_hits_cost_more_than_a_search_ends_off() -> None:
    p = TierPolicy("auto", True, 8, 0.95)
    rng = np.random.default_rng(2)
    src = [_unit(rng) for _ in range(8)]
    for i in range(5000):
        if p.active():
            break
        p.on_miss(src[i % 8] + np.float32(1e-4) * _unit(rng), 200 * US, 20 * US, False, 1.2)
    assert p.state == "trial"
    for _ in range(100):
        p.on_miss(src[0], 900 * US, 40 * US, True, 1.2)
        p.on_semantic(300 * US, served=True)  # dearer than the search it replaces
    assert p.state == "watching" and not p.active()
    assert "measured" in p.info()["semantic"]["reason"]


def test_exact_tier_goes_off_without_repeats_and_back_on_with_them() -> None:
    p = TierPolicy("auto", False, 8, 0.95)
    rng = np.random.default_rng(3)
    for _ in range(64):
        assert p.keep(rng.bytes(16))
        p.on_miss(_unit(rng), 300 * US, 40 * US, False, 1.0)
    assert not p.exact_on and p.info()["exact"]["state"] == "off"
    keys = [rng.bytes(16) for _ in range(8)]
    for i in range(200):  # the same few queries again and again: repeats it would have served
        p.keep(keys[i % 8])
        p.on_miss(_unit(rng), 300 * US, None, False, 1.0)
        if p.exact_on:
            break
    assert p.exact_on and "would have served" in p.exact_reason


def test_searches_on_many_threads_keep_counting_while_the_exact_tier_is_off() -> None:
    # Regression: keep() trims its remembered keys without a lock; two threads trimming at once raised
    # KeyError into a search (seen in memory_bench's reconfigure part, 4 search threads).
    import threading

    p = TierPolicy("auto", False, 8, 0.95)
    p.exact_on = False
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(20_000):
                assert p.keep(rng.bytes(16)) is False
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(p._keys) <= 4096 + 4


def test_always_keeps_both_tiers_on() -> None:
    p = TierPolicy("always", True, 8, 0.95)
    rng = np.random.default_rng(4)
    for _ in range(500):
        p.on_miss(_unit(rng), 300 * US, 40 * US, False, 5.0)
    assert p.active() and p.exact_on


def _hnsw(db: Embeddix, n: int = 3000, dim: int = 24):
    x = clustered(n, dim, seed=11)
    col = db.create_collection("h", dim=dim, index_threshold=500)
    col.add([str(i) for i in range(n)], x)
    assert col.index_kind == "hnsw"
    return col, x


def test_a_new_query_searches_the_plans_beam_and_says_why() -> None:
    with Embeddix.open(None, settings=EmbeddixSettings(auto_calibrate=False)) as db:
        col, x = _hnsw(db)
        rng = np.random.default_rng(5)
        for _ in range(300):
            q = x[rng.integers(len(x))] + rng.standard_normal(x.shape[1]).astype(np.float32) * 0.3
            plain = col.explain(q, k=10)
            got = col.search(q, k=10)
            assert got.plan.result_cache == "miss" and got.plan.ef == plain.ef  # no widened beam
            assert got == col.search(q, k=10, cache=False)
        tiers = col.cache_info()["tiers"]
        assert tiers["semantic"]["state"] == "off" and tiers["semantic"]["reason"]
        assert tiers["exact"]["state"] == "off" and "repeats 0%" in tiers["exact"]["reason"]


def test_served_answers_equal_fresh_ones_on_an_agent_workload() -> None:
    # 40% repeats, 20% near duplicates, 40% new: whatever the policy decides, a served answer is what a
    # fresh search at the same plan returns (exact hits) or a verified semantic hit.
    with Embeddix.open(None, settings=EmbeddixSettings(auto_calibrate=False)) as db:
        col, x = _hnsw(db)
        rng = np.random.default_rng(6)
        seen: list[np.ndarray] = []
        worse = 0
        for _ in range(600):
            r = rng.random()
            if not seen or r < 0.4:
                q = x[rng.integers(len(x))] + rng.standard_normal(x.shape[1]).astype(np.float32) * 0.3
                seen.append(q)
            elif r < 0.8:
                q = seen[rng.integers(len(seen))]
            else:
                q = seen[rng.integers(len(seen))] + rng.standard_normal(x.shape[1]).astype(np.float32) * 1e-3
            got = col.search(q, k=10)
            fresh = col.search(q, k=10, cache=False)
            if got.plan.result_cache == "hit":
                assert [h.id for h in got] == [h.id for h in fresh]
            worse += min(h.distance for h in got) > min(h.distance for h in fresh) + 1e-5
        assert worse == 0
        info = col.cache_info()
        assert info["hits"] > 0 and info["tiers"]["exact"]["reason"]  # on or off: the costs decide


def test_personalized_searches_have_their_own_exact_tier() -> None:
    # Plain searches repeat (their exact tier stays on); one user's personalized searches never do, so
    # the personalized tier goes off on its own measurements while plain keeping stays on, and a
    # personalized repeat of a user who does repeat is served from the cache with the fresh answer.
    with Embeddix.open(None, settings=EmbeddixSettings(auto_calibrate=False)) as db:
        col, x = _hnsw(db)
        rng = np.random.default_rng(7)
        for h in col.search(x[0], k=10)[:3]:
            col.feedback(h.id, user="u", relevant=True)
        repeated = x[1] + np.float32(0.01)
        for _ in range(200):
            q = x[rng.integers(len(x))] + rng.standard_normal(x.shape[1]).astype(np.float32) * 0.3
            col.search(repeated, k=10)  # a plain repeat
            got = col.search(q, k=10, user="u")  # a new personalized query
            assert got.plan.ranking == "personalized"
            assert [h.id for h in got] == [h.id for h in col.search(q, k=10, user="u", cache=False)]
        tiers = col.cache_info()["tiers"]
        assert tiers["exact"]["state"] == "on", tiers["exact"]["reason"]
        assert tiers["personal"]["state"] == "off" and "repeats 0%" in tiers["personal"]["reason"]
        # a user who repeats turns it back on, and the repeat is served as a fresh search answers it
        q = x[2] + np.float32(0.02)
        for _ in range(200):
            got = col.search(q, k=10, user="u")
        tiers = col.cache_info()["tiers"]
        assert tiers["personal"]["state"] == "on", tiers["personal"]["reason"]
        assert got.plan.result_cache == "hit"
        assert [h.id for h in got] == [h.id for h in col.search(q, k=10, user="u", cache=False)]
