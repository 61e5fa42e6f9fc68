"""The compiled hits builder (embeddix_core/_hits.c) against its Python reference (RowCache.get + to_hits)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings, _native
from embeddix_core.cache.row_cache import RowCache
from embeddix_core.types import Hit, StoredRow, make_hit

native = pytest.importorskip("embeddix_core._hits", reason="the compiled hits builder is not built")

ROWS = [
    StoredRow(0, "plain", "a document", '{"a":1,"b":"x"}', None),
    StoredRow(1, "no-doc", None, '{"tag":3}', None),
    StoredRow(2, "no-meta", "text", None, None),
    StoredRow(3, "empty-meta", "", "", None),
    StoredRow(4, "ünïcode-id", "日本語のドキュメント ✓", '{"k":"välue"}', None),
    StoredRow(5, "", None, None, None),
    StoredRow(130, "far label", "on another page", '{"n":[1,2,{"d":null}]}', None),
]


def reference(cache: RowCache, labels: list[int], dists: list[float], l2: bool, metric: str) -> tuple:
    """What SearchExecutor.to_hits builds from RowCache.get (its Python loop, inlined)."""
    rows = cache.get(labels)
    hits, raw = [], []
    for label, d in zip(labels, dists, strict=True):
        row = rows[label]
        if l2:
            d = d**0.5
            score = 1.0 / (1.0 + d)
        else:
            score = 1.0 - d
        meta = orjson.loads(row.metadata) if row.metadata else {}
        hits.append(make_hit(row.id, score, d, row.document, meta, metric))
        raw.append((row.id, score, d, row.document, row.metadata))
    return hits, raw


@pytest.mark.parametrize("l2", [False, True])
def test_equal_to_the_python_path(l2: bool) -> None:
    cache = RowCache(lambda labels: {}, 1 << 20)
    cache.put(ROWS)
    labels = [130, 4, 0, 1, 2, 3, 5]
    dists = [0.25, 0.0, 1.5, 0.125, 2.0, 0.75, 0.5]
    metric = "l2" if l2 else "cosine"
    raw: list[tuple] = []
    got = cache.hits(labels, dists, l2, metric, orjson.loads, raw)
    want, want_raw = reference(cache, labels, dists, l2, metric)
    assert got is not None and all(type(h) is Hit for h in got)
    assert got == want
    assert [h.metric for h in got] == [metric] * len(labels)
    assert all(h.vector is None and h.rank_score is None for h in got)
    assert raw == want_raw
    ranked = cache.hits(labels, dists, l2, metric, orjson.loads, None, [float(i) for i in range(len(labels))])
    assert ranked is not None and [h.rank_score for h in ranked] == [float(i) for i in range(len(labels))]
    assert [h.id for h in ranked] == [h.id for h in got]
    with pytest.raises(ValueError, match="fewer rank scores"):
        cache.hits(labels, dists, l2, metric, orjson.loads, None, [1.0])
    # every hit owns its metadata: two builds never share a dict
    again = cache.hits(labels, dists, l2, metric, orjson.loads, None)
    assert again is not None and again[0].metadata is not got[0].metadata


def test_a_row_not_cached_gives_none_and_builds_nothing() -> None:
    cache = RowCache(lambda labels: {}, 1 << 20)
    cache.put(ROWS[:3])
    raw: list[tuple] = []
    assert cache.hits([0, 1, 99], [0.1, 0.2, 0.3], False, "cosine", orjson.loads, raw) is None
    assert raw == []
    cache.discard([1])  # a record updated or deleted: its row is gone from the cache
    assert cache.hits([0, 1], [0.1, 0.2], False, "cosine", orjson.loads, None) is None
    assert cache.hits([], [], False, "cosine", orjson.loads, None) == []


def test_evicted_rows_are_not_read() -> None:
    # a small budget: the oldest chunks are dropped, their offsets stay in the table (stale)
    cache = RowCache(lambda labels: {}, 4000)
    cache.put([StoredRow(i, f"id-{i}", "d" * 100, orjson.dumps({"i": i}).decode(), None) for i in range(200)])
    held = [i for i in range(200) if cache.hits([i], [0.0], False, "cosine", orjson.loads, None) is not None]
    assert 0 < len(held) < 200 and 0 not in held
    got = cache.hits(held, [0.0] * len(held), False, "cosine", orjson.loads, None)
    assert got is not None and [h.metadata["i"] for h in got] == held


def test_bad_input_is_a_typed_error() -> None:
    cache = RowCache(lambda labels: {}, 1 << 20)
    cache.put(ROWS)
    with pytest.raises(ValueError, match="fewer distances"):
        cache.hits([0, 1], [0.1], False, "cosine", orjson.loads, None)
    with pytest.raises(ValueError, match=">= 0"):
        cache.hits([-1], [0.1], False, "cosine", orjson.loads, None)
    with pytest.raises(orjson.JSONDecodeError):
        bad = RowCache(lambda labels: {}, 1 << 20)
        bad.put([StoredRow(0, "x", None, "{not json", None)])
        bad.hits([0], [0.1], False, "cosine", orjson.loads, None)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_searches_equal_with_and_without_the_extension(tmp_path, monkeypatch, metric: str) -> None:
    x = clustered(300, 16, seed=5)
    s = EmbeddixSettings(auto_calibrate=False)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.create_collection("c", dim=16, metric=metric)
        col.add(
            [f"r{i}" for i in range(300)],
            x,
            documents=[None if i % 7 == 0 else f"dóc {i}" for i in range(300)],
            metadatas=[{"i": i, "even": i % 2 == 0} if i % 5 else {} for i in range(300)],
        )
        queries = x[:20] + 0.01
        flt = {"even": True}
        fast = [col.search(q, k=10, cache=False) for q in queries]
        fast_f = [col.search(q, k=10, filter=flt, cache=False) for q in queries]
        col.feedback("r3", user="u", relevant=True)
        col.feedback("r4", user="u", relevant=False)
        personal = [col.search(q, k=10, user="u", cache=False) for q in queries]  # with rank scores
        assert all(h.rank_score is not None for hits in personal for h in hits)
        with monkeypatch.context() as m:
            m.setattr(_native, "rows_to_hits", None)
            m.setattr(_native, "rows_get", None)
            slow_personal = [col.search(q, k=10, user="u", cache=False) for q in queries]

        def fields(runs: list) -> list:
            return [(h.id, h.score, h.distance, h.document, h.metadata) for hits in runs for h in hits]

        # the profile decays with time, so rank scores move in the last digits between two calls
        assert fields(slow_personal) == fields(personal)
        ranks = [h.rank_score for hits in personal for h in hits]
        assert [h.rank_score for hits in slow_personal for h in hits] == pytest.approx(ranks, rel=1e-6)
        cached = [col.search(q, k=10) for q in queries]
        served = [col.search(q, k=10) for q in queries]  # exact hits: kept_to_hits
        assert {h.plan.result_cache for h in served} == {"hit"}
        monkeypatch.setattr(_native, "rows_to_hits", None)
        monkeypatch.setattr(_native, "kept_to_hits", None)
        monkeypatch.setattr(_native, "prepare_query", None)
        monkeypatch.setattr(_native, "new_hits", _native._hits_reference)
        slow = [col.search(q, k=10, cache=False) for q in queries]
        slow_f = [col.search(q, k=10, filter=flt, cache=False) for q in queries]
        served_slow = [col.search(q, k=10) for q in queries]
        assert {h.plan.result_cache for h in served_slow} == {"hit"}
        assert fast == slow and fast_f == slow_f and cached == slow and served == slow and served_slow == slow
        served[0][0].metadata["mutated"] = True  # a served hit is the caller's: the entry is untouched
        assert "mutated" not in col.search(queries[0], k=10)[0].metadata
        assert all(h.metadata.get("even") for hits in fast_f for h in hits)
        assert all(math.isfinite(h.score) for hits in fast for h in hits)
        assert len(fast[0]) == 10 and isinstance(fast[0][0].score, float)
        assert np.allclose([h.distance for h in fast[3]], [h.distance for h in slow[3]])


@pytest.mark.parametrize("normalize", [True, False])
def test_query_preparation_equals_the_python_path(normalize: bool) -> None:
    from embeddix_core._validate import as_query, prepared_query, unit_query

    rng = np.random.default_rng(3)
    cases = [rng.standard_normal(64).astype(np.float32) * s for s in (1e-30, 1e-3, 1.0, 1e3, 1e30)]
    cases.append(np.full(64, 1e-45, np.float32))  # denormals: the scale is beyond float32 (Python path)
    for v in cases:
        q, sq = as_query(v, 64)
        want = unit_query(q, sq) if normalize else q
        got = prepared_query(v, 64, normalize)
        assert got.dtype == np.float32 and got.shape == (64,)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # the caller's array is never written to
    v = np.ones(64, np.float32)
    prepared_query(v, 64, normalize)
    assert (v == 1).all()


def test_query_preparation_errors_are_the_python_paths() -> None:
    from embeddix_core._validate import prepared_query
    from embeddix_core.errors import DimensionMismatchError, InvalidVectorError

    with pytest.raises(InvalidVectorError, match="all zeros"):
        prepared_query(np.zeros(8, np.float32), 8, True)
    assert (prepared_query(np.zeros(8, np.float32), 8, False) == 0).all()  # fine for l2 / ip
    for bad in (np.inf, np.nan):
        v = np.ones(8, np.float32)
        v[3] = bad
        for normalize in (True, False):
            with pytest.raises(InvalidVectorError):
                prepared_query(v, 8, normalize)
    with pytest.raises(DimensionMismatchError):
        prepared_query(np.ones(7, np.float32), 8, True)
    # other inputs convert as before
    assert prepared_query([3.0, 4.0], 2, True).tolist() == pytest.approx([0.6, 0.8])
    assert prepared_query(np.array([3.0, 4.0]), 2, True).dtype == np.float32
    assert prepared_query(np.ones(16, np.float32)[::2], 8, False).flags.c_contiguous
    # the compiled call takes only its usual case; everything else is left to the Python path
    ok = np.ones(4, np.float32)
    assert native.prepare_query(ok, 4, False) is ok
    assert native.prepare_query(ok, 4, True).tolist() == [0.5] * 4
    for other in (np.ones(4, np.float64), ok[::2], np.ones((1, 4), np.float32), [1.0] * 4, ok.view(np.int32)):
        assert native.prepare_query(other, 4, True) is None
    assert native.prepare_query(ok, 5, True) is None
    assert native.prepare_query(np.zeros(4, np.float32), 4, False) is None
    assert native.prepare_query(np.full(4, 1e-45, np.float32), 4, True) is None  # denormals
    with pytest.raises(TypeError):
        native.prepare_query(ok, 4)  # type: ignore[call-arg]


def test_kept_rows_to_hits_equal_the_python_loop() -> None:
    rows = [("a", 0.5, 0.5, "doc", '{"x":1}'), ("b", 0.25, 0.75, None, None), ("c", 0.1, 0.9, "", "")]
    got = native.kept_to_hits(rows, "l2", orjson.loads)
    want = [make_hit(r[0], r[1], r[2], r[3], orjson.loads(r[4]) if r[4] else {}, "l2") for r in rows]
    assert got == want and all(type(h) is Hit and h.vector is None and h.rank_score is None for h in got)
    with pytest.raises(TypeError, match="5-tuple"):
        native.kept_to_hits([("a", 0.5)], "l2", orjson.loads)


def test_row_reads_equal_the_python_loop(monkeypatch) -> None:
    store = {r.label: r for r in ROWS}
    cache = RowCache(lambda labels: {lb: store[lb] for lb in labels if lb in store}, 1 << 20)
    cache.put(ROWS)
    labels = [130, 4, 0, 1, 2, 3, 5]
    got = cache.get(labels)
    assert list(got) == labels and all(type(r) is StoredRow for r in got.values())
    assert got == {r.label: r for r in ROWS}
    parts = (cache._pages, cache._chunks, cache._first, cache._chunk)
    assert native.rows_get(*parts, [0, 77], StoredRow) is None  # 77 is not cached
    cache.discard([4])  # not cached any more: the Python path reads it from the loader
    monkeypatch.setattr(_native, "rows_get", None)
    assert cache.get(labels) == got


def test_field_sums_equal_the_python_loop(monkeypatch) -> None:
    from embeddix_core.personalize.model import ProfileState, field_keys

    st = ProfileState(4, 3600.0)
    st.fields = {
        ("tag", "i", 3): [0.5, 1.0],
        ("flag", "b", True): [-0.25, 0.5],
        ("src", "s", "chat"): [1.5, 2.0],
        ("tag", "i", 1): [2.0, 2.0],  # 1 and True are equal keys in Python: the tag keeps them apart
    }
    texts = [
        '{"tag":3,"flag":true,"src":"chat","x":1.5}',
        '{"tag":1,"flag":1}',
        '{"tag":true}',
        '{"src":"' + "c" * 80 + '"}',  # longer than kept values: matches nothing
        '{"tag":[3]}',  # a list: the general path
        '{"a":{"b":1},"n":null}',
        "[1,2]",
        "{not json",
        orjson.dumps({f"f{i}": i for i in range(40)}).decode(),  # more fields than kept
    ]

    def keys(text: str) -> list:
        return field_keys(orjson.loads(text))

    fast = [st._sums_of(t) for t in texts]
    fast_many = st.field_sums_many([*texts[:6], None], keys)
    monkeypatch.setattr(_native, "field_sums", None)
    st._sums.clear()
    slow = [st._sums_of(t) for t in texts]
    assert fast == slow
    assert fast[:4] == [(1.75, 3.5), (2.0, 2.0), (0.0, 0.0), (0.0, 0.0)] and fast[4] is None
    slow_many = st.field_sums_many([*texts[:6], None], keys)
    assert all((a == b).all() for a, b in zip(fast_many, slow_many, strict=True))


def test_compiled_hits_constructor_equals_the_class() -> None:
    from embeddix_core.types import Hits

    items = [make_hit("a", 0.1, 0.9, "doc", {"x": 1}, "cosine")]
    for partial, plan in ((False, None), (True, "plan")):
        got = native.make_hits(items, partial, plan)
        want = Hits(items, partial=partial, plan=plan)
        assert type(got) is Hits and got == want and got.partial is partial and got.plan == plan
        assert repr(got) == repr(want)
    got = native.make_hits(items, False, None)
    got.append(items[0])  # a list of its own, not a view of the items
    assert len(items) == 1 and len(got) == 2
    with pytest.raises(TypeError, match="must be a list"):
        native.make_hits(tuple(items), False, None)
    with pytest.raises(TypeError, match="3 arguments"):
        native.make_hits(items)  # type: ignore[call-arg]
