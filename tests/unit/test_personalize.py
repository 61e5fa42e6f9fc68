"""Feedback, profiles and personalized search (embeddix_core/personalize, issue #17)."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import orjson
import pytest

from embeddix_core import Embeddix
from embeddix_core.collection import Collection
from embeddix_core.errors import InvalidArgumentError, InvalidIdError, NotFoundError
from embeddix_core.personalize import PersonalizeConfig
from embeddix_core.personalize.model import ProfileState, field_keys
from embeddix_core.personalize.rerank import Candidates, NumpyReranker, reference_scores

DIM = 16


def _data(n: int = 400, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict[str, object]]]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"r{i}" for i in range(n)]
    metas: list[dict[str, object]] = [{"tag": i % 5, "src": "ab"[i % 2]} for i in range(n)]
    return ids, vecs, metas


@pytest.fixture
def col(tmp_path: Path) -> Collection:
    db = Embeddix.open(tmp_path / "d")
    c = db.create_collection("c", dim=DIM)
    ids, vecs, metas = _data()
    c.add(ids, vecs, metadatas=metas)
    yield c
    db.close()


def _rank(hits: list, rid: str) -> int:
    ids = [h.id for h in hits]
    return ids.index(rid) if rid in ids else len(ids)


def test_user_none_gives_byte_identical_results(col: Collection) -> None:
    q = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    before = [(h.id, h.score, h.distance, h.metadata, h.rank_score) for h in col.search(q, 10, cache=False)]
    col.feedback("r1", user="a", relevant=True)
    col.feedback("r2", user="a", relevant=False)
    col.search(q, 10, user="a")
    for cache in (False, True, True):
        after = [
            (h.id, h.score, h.distance, h.metadata, h.rank_score) for h in col.search(q, 10, cache=cache)
        ]
        assert after == before


def test_liked_records_rise_and_disliked_fall(col: Collection) -> None:
    q = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    plain = col.search(q, 20, cache=False)
    low, high = plain[15].id, plain[1].id
    for _ in range(3):
        col.feedback(low, user="u", relevant=True, query=q)
        col.feedback(high, user="u", rating=0.0)
    mine = col.search(q, 20, user="u")
    assert _rank(mine, low) < 15
    assert _rank(mine, high) > 1
    assert mine.plan.ranking == "personalized"
    # scores stay similarities; rank scores are bounded and ordered
    ranks = [h.rank_score for h in mine]
    assert all(0.0 <= r <= 1.0 for r in ranks) and ranks == sorted(ranks, reverse=True)
    by_id = {h.id: h.score for h in plain}
    assert all(abs(h.score - by_id[h.id]) < 1e-6 for h in mine if h.id in by_id)


def test_user_a_never_changes_user_b(col: Collection) -> None:
    q = np.random.default_rng(2).standard_normal(DIM).astype(np.float32)
    b_before = [(h.id, h.rank_score) for h in col.search(q, 10, user="b")]
    plain = col.search(q, 30, cache=False)
    for h in plain[10:20]:
        col.feedback(h.id, user="a", relevant=True)
    assert [h.id for h in col.search(q, 10, user="a")] != [h.id for h in plain[:10]]
    assert [(h.id, h.rank_score) for h in col.search(q, 10, user="b")] == b_before
    assert [(h.id, h.rank_score) for h in col.search(q, 10, user="b", cache=False)] == b_before


def test_feedback_invalidates_only_that_users_cache(col: Collection) -> None:
    q = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    col.search(q, 10, user="a")
    col.search(q, 10, user="b")
    assert col.search(q, 10, user="b").plan.result_cache == "hit"
    assert col.search(q, 10, user="a").plan.result_cache == "hit"
    v = col.profile("a").version
    col.feedback(col.search(q, 10, cache=False)[5].id, user="a", relevant=True)
    assert col.profile("a").version > v
    assert col.search(q, 10, user="a").plan.result_cache == "miss"
    assert col.search(q, 10, user="b").plan.result_cache == "hit"


def test_decay_fades_a_profile(col: Collection) -> None:
    now = [1_000_000.0]
    col._personal.clock = lambda: now[0]
    col.personalization(half_life_s=100.0)
    col.feedback("r3", user="u", relevant=True)
    p0 = col.profile("u")
    now[0] += 100.0
    p1 = col.profile("u")
    assert p1.strength == pytest.approx(0.5 / 1.5)
    assert p0.strength == pytest.approx(0.5)
    now[0] += 10_000.0
    assert col.profile("u").strength < 1e-20
    # a newer event outweighs an old opposite one: the record statistic follows the newer
    col.feedback("r4", user="u", relevant=False)
    now[0] += 1000.0
    col.feedback("r4", user="u", relevant=True)
    st = col._personal.state("u")
    assert st.records["r4"][0] > 0


def test_forget_user_leaves_no_trace(col: Collection, tmp_path: Path) -> None:
    q = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)
    col.feedback("r5", user="gone", relevant=True, session="s1", query=q)
    col.search(q, 10, user="gone")
    col.search(q, 10, user="gone", session="s1")
    col.search(q, 10, user="stay")
    entries = col.cache_info()["entries"]
    assert col.forget_user("gone") == 1
    assert col.cache_info()["entries"] == entries - 2
    assert not col._personal.known("gone")
    p = col.profile("gone")
    assert (p.version, p.events, p.vector_norm, p.records) == (0, 0, 0.0, 0)
    col._personal.forget("gone")  # profile() above rebuilt an empty one; drop it for the check below
    assert not col._personal.known("gone")
    db_file = next((tmp_path / "d").glob("*.sqlite3"))
    with sqlite3.connect(db_file) as conn:
        assert conn.execute("SELECT COUNT(*) FROM feedback WHERE user = 'gone'").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM feedback WHERE user != 'gone'").fetchone()[0] == 0
    assert col.search(q, 10, user="stay").plan.result_cache == "hit"


def test_profile_is_rebuilt_from_durable_events(tmp_path: Path) -> None:
    ids, vecs, metas = _data()
    with Embeddix.open(tmp_path / "d") as db:
        c = db.create_collection("c", dim=DIM)
        c.add(ids, vecs, metadatas=metas)
        c.feedback("r1", user="u", relevant=True)
        c.feedback("r2", user="u", rating=0.9, query="some text")
        c.feedback("r7", user="u", dwell_s=12.0, session="s")
        before = c.profile("u")
    with Embeddix.open(tmp_path / "d") as db:
        after = db.get_collection("c").profile("u")
    assert (after.version, after.events, after.records) == (before.version, 3, before.records)
    assert after.vector_norm == pytest.approx(before.vector_norm)
    assert [(f.field, f.value) for f in after.field_preferences] == [
        (f.field, f.value) for f in before.field_preferences
    ]


@pytest.mark.parametrize("on_disk", [True, False])
def test_every_search_sees_events_written_through_another_handle(tmp_path: Path, on_disk: bool) -> None:
    """A profile skips its store check while nothing was committed; every commit (another handle's, as
    another process's; this handle's own, also on an in-memory store) still reaches the next search."""
    ids, vecs, metas = _data()
    q = np.random.default_rng(8).standard_normal(DIM).astype(np.float32)
    db = Embeddix.open(tmp_path / "d" if on_disk else None)
    try:
        c = db.create_collection("c", dim=DIM)
        c.add(ids, vecs, metadatas=metas)
        c.feedback("r3", user="u", relevant=True)
        first = c.profile("u")
        assert c.profile("u").version == first.version  # nothing new: the same state
        c.feedback("r4", user="u", relevant=False)
        assert (c.profile("u").events, c.profile("u").version) == (2, first.version + 1)
        if on_disk:
            with Embeddix.open(tmp_path / "d") as other:
                o = other.get_collection("c")
                o.feedback("r9", user="u", relevant=True)
                assert c.profile("u").events == 3
                c.search(q, 10, user="u")
                o.forget_user("u")
            assert c.profile("u").events == 0
            assert c.search(q, 10, user="u").plan.ranking != "personalized"
    finally:
        db.close()


def test_bad_feedback_is_refused(col: Collection) -> None:
    with pytest.raises(NotFoundError):
        col.feedback("nope", user="u", relevant=True)
    with pytest.raises(InvalidArgumentError, match="needs a signal"):
        col.feedback("r1", user="u")
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(InvalidArgumentError, match="rating"):
            col.feedback("r1", user="u", rating=bad)
    with pytest.raises(InvalidArgumentError, match="relevant"):
        col.feedback("r1", user="u", relevant=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="dwell_s"):
        col.feedback("r1", user="u", dwell_s=-1)
    with pytest.raises(InvalidArgumentError, match="user"):
        col.feedback("r1", user="", relevant=True)
    with pytest.raises(InvalidIdError):
        col.feedback(3, user="u", relevant=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        col.feedback("r1", user="u", relevant=True, query=np.zeros(3, np.float32))
    with pytest.raises(InvalidArgumentError, match="sum to at most 1"):
        col.personalization(w_profile=0.9, w_feedback=0.5)
    with pytest.raises(InvalidArgumentError, match="unknown"):
        col.personalization(nope=1)
    with pytest.raises(InvalidArgumentError):
        col.search(np.zeros(DIM, np.float32), 5, user="u", mmr_lambda=0.5)
    assert col.profile("u").events == 0  # nothing refused was stored


def test_session_dedupe_demotes_returned_records(col: Collection) -> None:
    q = np.random.default_rng(6).standard_normal(DIM).astype(np.float32)
    col.personalization(session_penalty=0.5)
    first = [h.id for h in col.search(q, 5, user="u", session="s")]
    second = [h.id for h in col.search(q, 5, user="u", session="s")]
    assert not set(first) & set(second)
    assert [h.id for h in col.search(q, 5, user="u", session="other")] == first


def test_settings_are_stored_with_the_collection(tmp_path: Path) -> None:
    with Embeddix.open(tmp_path / "d") as db:
        db.create_collection("c", dim=DIM).personalization(w_profile=0.4, half_life_s=60.0)
    with Embeddix.open(tmp_path / "d") as db:
        cfg = db.get_collection("c").personalization()
    assert (cfg.w_profile, cfg.half_life_s) == (0.4, 60.0)
    assert PersonalizeConfig.from_json(cfg.to_json()) == cfg


def test_a_store_without_the_feedback_tables_opens_and_gains_them(tmp_path: Path) -> None:
    ids, vecs, metas = _data(50)
    with Embeddix.open(tmp_path / "d") as db:
        db.create_collection("c", dim=DIM).add(ids, vecs, metadatas=metas)
    db_file = next((tmp_path / "d").glob("*.sqlite3"))
    with sqlite3.connect(db_file) as conn:  # as a store written before issue #17 looks
        conn.execute("DROP TABLE feedback")
        conn.execute("DROP TABLE personalization")
    with Embeddix.open(tmp_path / "d") as db:
        c = db.get_collection("c")
        assert len(c) == 50
        c.feedback("r1", user="u", relevant=True)
        assert c.profile("u").events == 1


def test_vectorized_reranker_matches_the_reference() -> None:
    rng = np.random.default_rng(7)
    cfg = PersonalizeConfig(
        w_profile=0.3, w_feedback=0.2, w_fields=0.1, w_recency=0.1, recency_field="t", session_penalty=0.2
    )
    st = ProfileState(DIM, cfg.half_life_s)
    metas = [{"tag": i % 4, "t": 1000.0 - i, "l": ["x", "y"][: i % 3]} for i in range(40)]
    vecs = rng.standard_normal((40, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)  # index space of a cosine collection
    for eid in range(1, 30):
        i = int(rng.integers(40))
        unit = vecs[i] / np.linalg.norm(vecs[i])
        st.apply(
            eid,
            float(rng.uniform(-1, 1)),
            900.0 + eid,
            unit.astype(np.float64),
            field_keys(metas[i]),
            f"r{i}",
        )
    cand = Candidates([f"r{i}" for i in range(40)], rng.uniform(0, 1, 40), vecs, lambda: metas, "cosine")
    seen = frozenset({"r3", "r9"})
    fast = NumpyReranker().scores(cand, st, cfg, seen, 1100.0)
    ref = reference_scores(cand, st, cfg, seen, 1100.0)
    np.testing.assert_allclose(fast, ref, atol=1e-9)
    assert fast.min() >= 0.0 and fast.max() <= 1.0
    # the memoized field sums (what searches pass) give the same scores, and a new event resets them
    texts = [orjson.dumps(m).decode() for m in metas]

    def keys(text: str) -> list[object]:
        return field_keys(orjson.loads(text))

    for _ in range(2):
        memoized = dataclasses.replace(cand, field_sums=lambda: st.field_sums_many(texts, keys))
        np.testing.assert_allclose(NumpyReranker().scores(memoized, st, cfg, seen, 1100.0), ref, atol=1e-9)
        st.apply(99, 1.0, 1000.0, None, field_keys(metas[0]), "r0")
        ref = reference_scores(cand, st, cfg, seen, 1100.0)


def test_field_sums_read_off_the_metadata_equal_the_sums_over_its_field_keys() -> None:
    # ProfileState.field_sums reads only the fields a profile has preferences on; every kind of value
    # field_keys treats specially must give the sums field_keys' keys give (lists and records with more
    # fields than it keeps take its own path).
    st = ProfileState(DIM, 86400.0)
    long = "s" * 80
    liked = [
        {"tag": 1, "flag": True, "src": "a", "long": long},
        {"tag": True, "flag": 1, "src": "b", "n": None},
        {"tag": 2, "l": ["a", 1, True], "src": "a"},
        {f"f{i}": i for i in range(40)},
    ]
    for eid, meta in enumerate(liked, start=1):
        st.apply(eid, 1.0 if eid % 2 else -0.5, 1000.0 + eid, None, field_keys(meta), f"r{eid}")
    probes = [
        *liked,
        {"tag": 1.0, "flag": "True", "src": "a", "x": {"tag": 1}},
        {"src": long, "tag": 2, "flag": False},
        {"l": ["a"], "tag": 1},
        {f"f{i}": i for i in range(39, -1, -1)},  # over the cap, in another order
        {},
    ]
    for meta in probes:
        text = orjson.dumps(meta).decode()
        want_net = want_wt = 0.0
        for key in field_keys(meta):
            got = st.fields.get(key)
            if got is not None:
                want_net += got[0]
                want_wt += got[1]
        net, wt = st.field_sums(text, lambda t: field_keys(orjson.loads(t)))
        assert net == pytest.approx(want_net, abs=1e-12) and wt == pytest.approx(want_wt, abs=1e-12), meta
