"""``where_document``: Chroma's full-text restriction in the core, checked against brute force.

Every operator, alone and with a metadata filter, on every method that takes one (search in each of its
forms, scan, count, delete, explain); the answers are compared with a Python evaluation of the same
predicate over every record, and search recall with the exact restricted answer. Writes (including a
documents-only update, which bypasses the filter cache's maintenance) must change what matches.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from testdata import clustered

from embeddix_core import Collection, Embeddix, InvalidArgumentError, InvalidFilterError
from embeddix_core.query.doc_filter import parse_where_document

DIM = 16
N = 400
WORDS = ["fox", "Fox", "whale", "bee", "honey", "tea", "green", "moon", "river", "stone"]

Pred = Callable[[str | None], bool]


def _contains(text: str) -> Pred:
    return lambda d: d is not None and text in d


def _not(pred: Pred) -> Pred:
    return lambda d: not pred(d)


def _regex(pattern: str) -> Pred:
    compiled = re.compile(pattern)
    return lambda d: d is not None and compiled.search(d) is not None


# (where_document, the same predicate written plainly in Python)
CASES: list[tuple[dict[str, Any], Pred]] = [
    ({"$contains": "fox"}, _contains("fox")),
    ({"$contains": "Fox"}, _contains("Fox")),  # case-sensitive: "fox" and "Fox" differ
    ({"$contains": "ee h"}, _contains("ee h")),  # a substring across a word boundary
    ({"$not_contains": "fox"}, _not(_contains("fox"))),
    ({"$regex": r"^(bee|tea)\b"}, _regex(r"^(bee|tea)\b")),
    ({"$not_regex": r"o{1}n"}, _not(_regex(r"o{1}n"))),
    (
        {"$and": [{"$contains": "honey"}, {"$not_contains": "tea"}]},
        lambda d: _contains("honey")(d) and not _contains("tea")(d),
    ),
    (
        {"$or": [{"$contains": "whale"}, {"$contains": "moon"}, {"$contains": "stone"}]},
        lambda d: any(_contains(w)(d) for w in ("whale", "moon", "stone")),
    ),
    (
        {"$or": [{"$regex": "river$"}, {"$and": [{"$contains": "green"}, {"$not_regex": "fox|Fox"}]}]},
        lambda d: _regex("river$")(d) or (_contains("green")(d) and not _regex("fox|Fox")(d)),
    ),
]
IDS = [str(wd) for wd, _ in CASES]


def _document(rng: random.Random, i: int) -> str | None:
    if i % 9 == 0:
        return None  # some records have no document
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))


@pytest.fixture(params=["memory", "disk"])
def col(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Collection]:
    db = Embeddix.open(None if request.param == "memory" else tmp_path / "data")
    # index_threshold well below N: searches run on HNSW, so both filter strategies are exercised
    c = db.create_collection("docs", DIM, index_threshold=100)
    rng = random.Random(7)
    c.add(
        [f"r{i}" for i in range(N)],
        clustered(N, DIM, seed=3),
        documents=[_document(rng, i) for i in range(N)],
        metadatas=[{"n": i % 5} for i in range(N)],
    )
    yield c
    db.close()


def _docs(c: Collection) -> dict[str, tuple[str | None, dict[str, Any]]]:
    return {r.id: (r.document, r.metadata) for r in c.scan()}


def _expected(c: Collection, pred: Pred, meta: Callable[[dict[str, Any]], bool] = lambda m: True) -> set[str]:
    return {rid for rid, (doc, md) in _docs(c).items() if pred(doc) and meta(md)}


def _exact_top(c: Collection, q: np.ndarray, allowed: set[str], k: int) -> list[str]:
    recs = {r.id: r.vector for r in c.scan(include_vectors=True)}
    ids = sorted(allowed)
    if not ids:
        return []
    m = np.stack([recs[i] for i in ids]).astype(np.float64)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    qq = q / np.linalg.norm(q)
    order = np.argsort(-(m @ qq), kind="stable")
    return [ids[i] for i in order[:k]]


# -- semantics, as Chroma 1.5 answers ---------------------------------------------------------------------
def test_operators_match_chroma_on_a_small_collection(mem_db: Embeddix) -> None:
    c = mem_db.create_collection("small", 2)
    c.add(
        ["a", "b", "c"],
        [[1, 0], [0, 1], [1, 1]],
        documents=["Red fox", None, "blue whale"],
        metadatas=[{"x": 1}, {"x": 2}, {"x": 3}],
    )
    # what chromadb 1.5.9's get(where_document=...) returns on the same three records
    chroma = [
        ({"$contains": "fox"}, {"a"}),
        ({"$not_contains": "fox"}, {"b", "c"}),
        ({"$contains": "red"}, set()),
        ({"$regex": "^R"}, {"a"}),
        ({"$not_regex": "^R"}, {"b", "c"}),
        ({"$or": [{"$contains": "fox"}, {"$contains": "whale"}]}, {"a", "c"}),
        ({"$and": [{"$contains": "e"}, {"$not_contains": "fox"}]}, {"c"}),
        ({"$regex": "(?i)red"}, {"a"}),
    ]
    for wd, ids in chroma:
        assert {r.id for r in c.scan(where_document=wd)} == ids, wd
        assert c.count(where_document=wd) == len(ids), wd
        assert {h.id for h in c.search([1, 0], 3, where_document=wd)} == ids, wd


def test_a_record_without_document_matches_only_the_negations(mem_db: Embeddix) -> None:
    c = mem_db.create_collection("none", 2)
    c.add(["x"], [[1, 0]])
    assert c.count(where_document={"$contains": "a"}) == 0
    assert c.count(where_document={"$regex": ".*"}) == 0
    assert c.count(where_document={"$not_contains": "a"}) == 1
    assert c.count(where_document={"$not_regex": ".*"}) == 1


# -- agreement with brute force ---------------------------------------------------------------------------
@pytest.mark.parametrize(("wd", "pred"), CASES, ids=IDS)
def test_scan_and_count_equal_brute_force(col: Collection, wd: dict[str, Any], pred: Pred) -> None:
    want = _expected(col, pred)
    assert 0 < len(want) < N, "each case selects some records, not all"
    assert {r.id for r in col.scan(where_document=wd)} == want
    assert col.count(where_document=wd) == len(want)
    with_meta = _expected(col, pred, lambda m: m["n"] in (1, 3))
    assert {r.id for r in col.scan({"n": {"$in": [1, 3]}}, where_document=wd)} == with_meta
    assert col.count({"n": {"$in": [1, 3]}}, where_document=wd) == len(with_meta)


@pytest.mark.parametrize(("wd", "pred"), CASES, ids=IDS)
def test_search_returns_only_matches_with_high_recall(
    col: Collection, wd: dict[str, Any], pred: Pred
) -> None:
    assert col.index_kind == "hnsw"
    queries = clustered(20, DIM, seed=11)
    allowed = _expected(col, pred)
    allowed_meta = _expected(col, pred, lambda m: m["n"] != 2)
    found = total = 0
    for q in queries:
        for flt, ok in ((None, allowed), ({"n": {"$ne": 2}}, allowed_meta)):
            hits = col.search(q, 10, filter=flt, where_document=wd)
            assert {h.id for h in hits} <= ok
            exact = _exact_top(col, q, ok, 10)
            assert len(hits) == len(exact)
            found += len({h.id for h in hits} & set(exact))
            total += len(exact)
            assert all(pred(h.document) for h in hits)
    assert found / total >= 0.95


def test_k_beyond_the_matches_returns_every_match(col: Collection) -> None:
    wd, pred = CASES[3]
    want = _expected(col, pred)
    assert {h.id for h in col.search(clustered(1, DIM, seed=5)[0], N, where_document=wd)} == want


def test_every_search_form_takes_it(col: Collection) -> None:
    wd, pred = CASES[6]
    allowed = _expected(col, pred)
    q = clustered(4, DIM, seed=9)
    # progressive search: every step, and the final one equals a plain search
    steps = list(col.search_iter(q[0], 5, where_document=wd))
    assert steps[-1].final
    for step in steps:
        assert {h.id for h in step.hits} <= allowed
    assert [h.id for h in steps[-1].hits] == [
        h.id for h in col.search(q[0], 5, where_document=wd, cache=False)
    ]
    # batch: one restriction for every query
    batch = col.search_batch(q, 5, where_document=wd)
    assert len(batch) == 4
    for hits, query in zip(batch, q, strict=True):
        assert {h.id for h in hits} <= allowed
        assert [h.id for h in hits] == [h.id for h in col.search(query, 5, where_document=wd, cache=False)]
        assert len(hits) == min(5, len(allowed))
    # MMR and hybrid (the text ranking is restricted too)
    assert {h.id for h in col.search(q[1], 5, where_document=wd, mmr_lambda=0.5)} <= allowed
    hybrid = col.search(q[1], 5, text="honey", where_document=wd)
    assert hybrid and {h.id for h in hybrid} <= allowed
    text_only = col.search(None, 50, text="honey", where_document={"$not_contains": "tea"})
    assert text_only and all(
        "honey" in (h.document or "") and "tea" not in (h.document or "") for h in text_only
    )
    # explain names the restricted set's size
    plan = col.explain(q[2], 5, where_document=wd)
    assert plan.filter_matches == len(allowed)


def test_the_restriction_is_a_filter_equal_for_equal_meaning() -> None:
    a = parse_where_document({"$and": [{"$contains": "x"}, {"$regex": "y"}]})
    b = parse_where_document({"$and": [{"$regex": "y"}, {"$and": [{"$contains": "x"}]}]})
    assert a is not None and b is not None and a.canonical == b.canonical
    assert parse_where_document({"$or": [{"$contains": "x"}, {"$contains": "x"}]}) == parse_where_document(
        {"$contains": "x"}
    )
    assert parse_where_document(None) is None


# -- writes change what matches ---------------------------------------------------------------------------
@pytest.mark.parametrize("wd", [{"$contains": "zebra"}, {"$regex": "zeb+ra"}], ids=["contains", "regex"])
def test_writes_change_what_matches(col: Collection, wd: dict[str, Any]) -> None:
    q = clustered(1, DIM, seed=21)[0]
    assert col.search(q, 5, where_document=wd) == []  # and the label set is cached now
    # a documents-only update: no metadata passes through the filter cache's maintenance
    col.update(["r5", "r6"], documents=["a zebra", "zebra crossing"])
    assert {h.id for h in col.search(q, 5, where_document=wd)} == {"r5", "r6"}
    assert col.count(where_document=wd) == 2
    col.upsert("r7", clustered(1, DIM, seed=22)[0], documents=["zebbra"])
    assert {h.id for h in col.search(q, 5, where_document=wd)} == (
        {"r5", "r6", "r7"} if "$regex" in wd else {"r5", "r6"}
    )
    col.update("r5", documents=["a horse"])
    assert "r5" not in {h.id for h in col.search(q, 5, where_document=wd)}
    col.delete("r6")
    assert "r6" not in {h.id for h in col.search(q, 5, where_document=wd)}
    col.add("new", clustered(1, DIM, seed=23)[0], documents=["zebra new"])
    assert "new" in {h.id for h in col.search(q, 5, where_document=wd)}
    # the metadata part keeps being maintained as before
    col.update_metadata("new", {"n": 99})
    assert [h.id for h in col.search(q, 5, filter={"n": 99}, where_document=wd)] == ["new"]


def test_delete_by_where_document(col: Collection) -> None:
    wd, pred = CASES[7]
    want = _expected(col, pred, lambda m: m["n"] == 0)
    assert col.delete(filter={"n": 0}, where_document=wd) == len(want) > 0
    assert not (want & set(_docs(col)))
    assert len(col) == N - len(want)
    gone_regex = _expected(col, _regex("^tea"))
    assert col.delete(where_document={"$regex": "^tea"}) == len(gone_regex)
    assert col.count(where_document={"$regex": "^tea"}) == 0
    assert col.delete(where_document={"$contains": "no such words"}) == 0
    with pytest.raises(InvalidArgumentError, match="not both"):
        col.delete(["r1"], where_document={"$contains": "fox"})


# -- the result cache ---------------------------------------------------------------------------------------
def test_cache_never_serves_one_restriction_for_another(col: Collection) -> None:
    q = clustered(1, DIM, seed=31)[0]
    plain = col.search(q, 10)
    assert col.search(q, 10) == plain  # cached now
    fox = col.search(q, 10, where_document={"$contains": "fox"})
    whale = col.search(q, 10, where_document={"$contains": "whale"})
    assert all("fox" in (h.document or "") for h in fox)
    assert all("whale" in (h.document or "") for h in whale)
    assert {h.id for h in fox} != {h.id for h in whale}
    assert col.search(q, 10, where_document={"$contains": "fox"}) == fox
    assert col.search(q, 10) == plain


# -- bad input ----------------------------------------------------------------------------------------------
BAD: list[tuple[Any, str]] = [
    ({}, "exactly one operator"),
    ({"$contains": "a", "$regex": "b"}, "exactly one operator"),
    ({"$foo": "x"}, "unknown; expected one of"),
    ({"contains": "x"}, "unknown; expected one of"),
    ({"$contains": 3}, "must be a non-empty string; got int 3"),
    ({"$not_contains": None}, "must be a non-empty string; got None"),
    ({"$contains": ""}, "non-empty string; got ''"),
    ({"$contains": "a\x00b"}, "NUL"),
    ({"$regex": "("}, "must be a regular expression"),
    ({"$and": []}, "non-empty list of expressions; got an empty list"),
    ({"$or": {"$contains": "x"}}, "non-empty list of expressions; got an object"),
    ({"$and": [{"$contains": "x"}, "y"]}, "must be a dict"),
    ("fox", "must be a dict"),
]


@pytest.mark.parametrize(("wd", "message"), BAD, ids=[repr(b) for b, _ in BAD])
def test_bad_input_raises_a_typed_error(col: Collection, wd: Any, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=re.escape(message)) as info:
        col.search(clustered(1, DIM)[0], 3, where_document=wd)
    assert isinstance(info.value, InvalidArgumentError)
    for call in (
        lambda: col.count(where_document=wd),
        lambda: list(col.scan(where_document=wd)),
        lambda: col.delete(where_document=wd),
    ):
        with pytest.raises(InvalidFilterError):
            call()
    assert len(col) == N
