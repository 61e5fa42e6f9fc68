"""Query engine: calibration, recall targets, deadlines, progressive search, explain()."""

from __future__ import annotations

import asyncio

import pytest
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings, Hits, InvalidArgumentError
from embeddix_core.eval import exact_knn, recall_at_k
from embeddix_core.query.planner import progressive_steps

N, DIM = 12_000, 48


@pytest.fixture(scope="module")
def setup():
    x = clustered(N + 300, DIM, clusters=60, seed=21, spread=0.6)
    base, held_out = x[:N], x[N:]
    db = Embeddix.open(None, settings=EmbeddixSettings(auto_calibrate=False))
    col = db.create_collection("c", dim=DIM, index_threshold=1000, hnsw_m=8, ef_construction=64)
    col.add([str(i) for i in range(N)], base)
    cal = col.calibrate(sample=300)
    truth = exact_knn(base, held_out, 10, "cosine").indices
    yield col, cal, held_out, truth
    db.close()


def test_calibration_curve_is_monotone(setup) -> None:
    _, cal, _, _ = setup
    assert cal is not None and len(cal.efs) >= 3
    assert list(cal.efs) == sorted(cal.efs)
    assert all(a <= b for a, b in zip(cal.recall, cal.recall[1:], strict=False))
    assert all(a <= b for a, b in zip(cal.latency_p99_us, cal.latency_p99_us[1:], strict=False))
    assert cal.recall[0] < 0.95 <= cal.recall[-1]  # the data set is hard enough for ef to matter


@pytest.mark.parametrize("target", [0.90, 0.95, 0.99])
def test_recall_target_is_met_on_held_out_queries(setup, target: float) -> None:
    col, _, q, truth = setup
    found = [[int(h.id) for h in col.search(v, k=10, recall=target)] for v in q]
    assert recall_at_k(found, truth, 10) >= target - 0.01
    batch = [[int(h.id) for h in hits] for hits in col.search_batch(q, k=10, recall=target)]
    assert recall_at_k(batch, truth, 10) >= target - 0.01


def test_higher_target_never_picks_smaller_ef(setup) -> None:
    col, _, q, _ = setup
    efs = [col.explain(q[0], k=10, recall=r).ef for r in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)]
    assert efs == sorted(efs)


def test_explain_reflects_the_plan_used(setup) -> None:
    col, _, q, _ = setup
    plan = col.explain(q[0], k=10, recall=0.93, filter={"nothing": 1})
    hits = col.search(q[0], k=10, recall=0.93)
    assert isinstance(hits, Hits) and hits.plan is not None
    assert hits.plan.ef == plan.ef and hits.plan.index == plan.index == "hnsw"
    assert plan.calibrated and plan.expected_recall is not None and plan.expected_recall >= 0.93
    assert plan.filter_strategy == "exact-subset" and plan.filter_matches == 0
    assert col.explain(q[0], k=10, recall=0.93).plan_cached
    assert col.explain(q[0], k=10, ef=33).ef == 33


def test_deadline_marks_partial_results(setup) -> None:
    col, _, q, _ = setup
    tight = col.search(q[0], k=10, deadline_ms=0.0001)
    assert tight.partial and len(tight) == 10
    assert tight.plan is not None and tight.plan.deadline_limited
    roomy = col.search(q[0], k=10, deadline_ms=10_000)
    assert not roomy.partial
    assert roomy.plan is not None and roomy.plan.ef == col.explain(q[0], k=10, recall=0.95).ef


def test_progressive_search_widens_and_ends_like_a_plain_search(setup) -> None:
    col, _, q, _ = setup
    steps = list(col.search_iter(q[1], k=10, recall=0.99))
    assert [s.final for s in steps] == [False] * (len(steps) - 1) + [True]
    assert len(steps) >= 2
    efs = [s.ef for s in steps]
    assert efs == sorted(efs) and efs[0] <= 16
    plain = col.search(q[1], k=10, ef=steps[-1].ef)
    assert [h.id for h in steps[-1].hits] == [h.id for h in plain]
    assert progressive_steps(96, 10) == (10, 40, 96)


def test_cancelling_the_iterator_stops_work(setup) -> None:
    col, _, q, _ = setup
    calls = []
    original = col._ex.knn

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    col._ex.knn = counting  # type: ignore[method-assign]
    try:
        it = col.search_iter(q[2], k=10, recall=0.99)
        first = next(it)
        it.close()
        assert not first.final and len(calls) == 1
    finally:
        del col._ex.knn


def test_early_termination_on_stable_top_k(setup) -> None:
    col, _, q, _ = setup
    steps = list(col.search_iter(q[3], k=5, ef=1024, stable_rounds=1))
    assert steps[-1].final
    if len(steps) < len(progressive_steps(1024, 5)):
        assert [h.id for h in steps[-1].hits] == [h.id for h in steps[-2].hits]


def test_async_progressive_search(setup) -> None:
    col, _, q, _ = setup

    async def run() -> list:
        return [s async for s in col.asearch_iter(q[4], 10, recall=0.99)]

    steps = asyncio.run(run())
    assert steps[-1].final and len(steps) >= 2


def test_bad_planner_arguments(setup) -> None:
    col, _, q, _ = setup
    for kwargs in ({"recall": 0}, {"recall": 1.5}, {"deadline_ms": -1}, {"deadline_ms": float("nan")}):
        with pytest.raises(InvalidArgumentError):
            col.search(q[0], k=10, **kwargs)
    with pytest.raises(InvalidArgumentError):
        list(col.search_iter(q[0], stable_rounds=0))


def test_small_collections_search_exactly(mem_db: Embeddix) -> None:
    col = mem_db.create_collection("s", dim=4)
    col.add(["a", "b"], [[1, 0, 0, 0], [0, 1, 0, 0]])
    plan = col.explain([1, 0, 0, 0], k=1, recall=0.99)
    assert plan.index == "exact" and plan.expected_recall == 1.0
    steps = list(col.search_iter([1, 0, 0, 0], k=1))
    assert len(steps) == 1 and steps[0].final and steps[0].hits[0].id == "a"


def test_calibration_persists_and_recalibrates_when_stale(tmp_path) -> None:
    x = clustered(3000, 16, seed=3)
    s = EmbeddixSettings(calibration_min_count=500, calibration_sample=50)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.create_collection("c", dim=16, index_threshold=500)
        col.add([str(i) for i in range(1500)], x[:1500])
        col._cal.thread.join()
        first = col.calibration
        assert first is not None and first.count == 1500
        col.add([str(i) for i in range(1500, 2000)], x[1500:2000])  # +33%: stale
        col._cal.thread.join()
        assert col.calibration is not None and col.calibration.count == 2000
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.get_collection("c")
        assert col.calibration is not None and col.calibration.count == 2000
        assert col.explain(x[0], k=10).calibrated


def test_calibration_moves_to_real_queries_once_enough_were_answered() -> None:
    x = clustered(4000, 24, seed=31)
    s = EmbeddixSettings(calibration_min_count=1000, calibration_sample=60, calibration_min_queries=50)
    with Embeddix.open(None, settings=s) as db:
        col = db.create_collection("c", dim=24, index_threshold=500)
        col.add([str(i) for i in range(3000)], x[:3000])
        col._cal.thread.join()
        assert col.calibration is not None and col.calibration.source == "sample"
        for v in x[3000:3060]:
            col.search(v, k=10, cache=False)
        col._cal.thread.join()
        assert col.calibration.source == "queries"
        assert col.calibrate(source="sample").source == "sample"
        assert col.calibrate(source="queries").source == "queries"


def test_a_load_that_outgrows_a_running_calibration_gets_a_curve_of_its_final_size() -> None:
    # The last write of a bulk load found a calibration running (maybe_start does nothing then), which
    # measured the index as it was at its start: the collection kept a stale curve, plateaued below the
    # truth, and searched at ef_search until 100 queries were seen. Now a round that the index outgrew
    # does not publish, and the thread measures again while the curve is stale.
    import threading

    x = clustered(3000, 16, seed=5)
    s = EmbeddixSettings(calibration_min_count=500, calibration_sample=50, calibration_quiet_s=0.05)
    with Embeddix.open(None, settings=s) as db:
        col = db.create_collection("c", dim=16, index_threshold=500)
        cal = col._cal
        entered, release = threading.Event(), threading.Event()
        truth = cal._exact_truth

        def held(*args, **kwargs):
            if not entered.is_set():
                entered.set()
                assert release.wait(30)
            return truth(*args, **kwargs)

        cal._exact_truth = held
        col.add([str(i) for i in range(1000)], x[:1000])
        assert entered.wait(30)  # the first round took its labels at 1,000 records
        col.add([str(i) for i in range(1000, 3000)], x[1000:3000])  # the load goes on, and ends
        release.set()
        cal.thread.join(60)
        assert not cal.thread.is_alive()
        assert col.calibration is not None and col.calibration.count == 3000
        assert col.explain(x[0], k=10).calibrated


def test_until_its_first_curve_a_collection_plans_from_the_prior_not_ef_search() -> None:
    # Right after a bulk load the background calibration (lowest priority) has not measured anything
    # yet: searches used to run at the fixed ef_search (96) whatever the target. Now they plan from the
    # prior curve (planner.PRIOR): a higher target still gets a wider beam, and the plan says it is not
    # calibrated. Small collections and auto_calibrate=False keep ef_search.
    from embeddix_core.query.planner import PRIOR

    x = clustered(3000, 16, seed=7)
    slow = EmbeddixSettings(calibration_min_count=500, calibration_quiet_s=600, calibration_max_wait_s=600)
    with Embeddix.open(None, settings=slow) as db:
        col = db.create_collection("c", dim=16, index_threshold=500)
        col.add([str(i) for i in range(3000)], x)
        assert col.calibration is None  # the thread is still waiting for writes to pause
        plans = {r: col.explain(x[0], k=10, recall=r) for r in (0.9, 0.95, 0.99)}
        assert all(not p.calibrated and "prior" in p.reason for p in plans.values())
        assert plans[0.9].ef < plans[0.95].ef < plans[0.99].ef
        assert plans[0.95].ef == PRIOR.ef_for_recall(0.95, 10)[0] == col.explain(x[0], k=10).ef
        assert col.explain(x[0], k=10, ef=33).ef == 33  # an explicit ef still wins
        assert col.search(x[0], k=10).plan.ef == plans[0.95].ef
        assert col.explain(x[0], k=30, recall=0.95).ef >= 30
        cal = col.calibrate(sample=50)  # a measured curve replaces the prior at once
        assert (
            col.explain(x[0], k=10).calibrated
            and col.explain(x[0], k=10).ef == cal.ef_for_recall(0.95, 10)[0]
        )
    off = EmbeddixSettings(auto_calibrate=False)
    with Embeddix.open(None, settings=off) as db:
        col = db.create_collection("c", dim=16, index_threshold=500, ef_search=77)
        col.add([str(i) for i in range(3000)], x)
        plan = col.explain(x[0], k=10, recall=0.99)
        assert plan.ef == 77 and not plan.calibrated and "ef_search" in plan.reason


def test_the_recall_margin_grows_with_the_per_query_spread_and_survives_a_round_trip() -> None:
    # A query's misses come together, so a curve whose per-query recall spreads widely is a noisier
    # estimate of the mean than the binomial error over its sample x k slots: ef must rise with it.
    from embeddix_core.query.planner import Calibration

    efs = (64, 128, 192, 256, 320)
    rec = (0.90, 0.93, 0.945, 0.955, 0.965)
    lat = (100.0, 200.0, 300.0, 400.0, 500.0)

    def curve(sd: tuple[float, ...]) -> Calibration:
        return Calibration(10, efs, rec, lat, lat, 1_000_000, 1, 100, source="queries", recall_sd=sd)

    binomial = curve(()).ef_for_recall(0.95, 10)[0]
    narrow = curve((0.01,) * 5).ef_for_recall(0.95, 10)[0]  # below the binomial error: no change
    wide = curve((0.15,) * 5).ef_for_recall(0.95, 10)[0]  # SE 0.015 over 100 queries
    assert narrow == binomial < wide
    assert wide >= 300  # 0.95 + 0.015 is only reached past the 256 rung
    saved = curve((0.15,) * 5)
    again = Calibration.from_json(saved.to_json())
    assert again == saved and again.ef_for_recall(0.95, 10)[0] == wide
