"""Bad input: a typed EmbeddixError whose message says what was expected and what came; nothing changes."""

from __future__ import annotations

import numpy as np
import pytest

from embeddix_core import (
    CollectionNotFoundError,
    DimensionMismatchError,
    DuplicateIdError,
    Embeddix,
    EmbeddixError,
    InvalidArgumentError,
    InvalidFilterError,
    InvalidIdError,
    InvalidMetadataError,
    InvalidVectorError,
)


@pytest.fixture
def col(db: Embeddix):
    c = db.create_collection("c", dim=3)
    c.add(
        ["a", "b"], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], documents=["x", "y"], metadatas=[{"t": 1}, {"t": 2}]
    )
    return c


def _unchanged(col) -> None:
    assert len(col) == 2
    assert [r.id for r in col.scan()] == ["a", "b"]
    assert col.search([1.0, 0.0, 0.0], k=1)[0].id == "a"


BAD_WRITES = [
    (dict(ids=["n"], vectors=[[1.0, 2.0]]), DimensionMismatchError, "expected dimension 3.*got 2"),
    (dict(ids=["n"], vectors=[[1.0, float("nan"), 0.0]]), InvalidVectorError, "NaN"),
    (dict(ids=["n"], vectors=[[1.0, float("inf"), 0.0]]), InvalidVectorError, "infinity"),
    (dict(ids=["n"], vectors=[["a", "b", "c"]]), InvalidVectorError, "numeric"),
    (dict(ids=[], vectors=np.zeros((0, 3))), InvalidVectorError, "empty"),
    (dict(ids=["n", "n"], vectors=[[1.0, 0, 0], [0, 1.0, 0]]), InvalidIdError, "more than once"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0], [0, 1.0, 0]]), InvalidArgumentError, "1 ids for 2 vectors"),
    (dict(ids=[5], vectors=[[1.0, 0, 0]]), InvalidIdError, "must be a string"),
    (dict(ids=[""], vectors=[[1.0, 0, 0]]), InvalidIdError, "empty"),
    (dict(ids=["x" * 600], vectors=[[1.0, 0, 0]]), InvalidIdError, "600 bytes"),
    (dict(ids=["n"], vectors=[[0.0, 0, 0]]), InvalidVectorError, "all zeros"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0]], metadatas=[{"o": {"nested": 1}}]), InvalidMetadataError, "dict"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0]], metadatas=[{"o": object()}]), InvalidMetadataError, "object"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0]], metadatas=[{"o": float("nan")}]), InvalidMetadataError, "finite"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0]], metadatas=["notadict"]), InvalidMetadataError, "must be a dict"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0]], documents=[3]), InvalidArgumentError, "documents"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0]], metadatas=[{"o": 2**70}]), InvalidMetadataError, "64 bits"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0]], metadatas=[{"o": "a\x00b"}]), InvalidMetadataError, "NUL"),
    (dict(ids=["n"], vectors=[[1.0, 0, 0]], documents=["\udc80"]), InvalidArgumentError, "Unicode"),
    (dict(ids=["\udc80"], vectors=[[1.0, 0, 0]]), InvalidIdError, "Unicode"),
    (dict(ids=["n", "a"], vectors=[[1.0, 0, 0], [0, 0, 1.0]]), DuplicateIdError, "'a'"),
]


@pytest.mark.parametrize(("kwargs", "exc", "msg"), BAD_WRITES)
def test_bad_writes_raise_typed_errors_and_change_nothing(col, kwargs, exc, msg) -> None:
    with pytest.raises(exc, match=msg) as info:
        col.add(**kwargs)
    assert isinstance(info.value, EmbeddixError)
    _unchanged(col)
    if exc is not DuplicateIdError:
        with pytest.raises(exc):
            col.upsert(**kwargs)
        _unchanged(col)


BAD_SEARCHES = [
    (dict(vector=[1.0, 0.0]), DimensionMismatchError, "expected dimension 3.*got 2"),
    (dict(vector=[np.nan, 0.0, 0.0]), InvalidVectorError, "NaN"),
    (dict(vector=[[1.0, 0, 0], [0, 1.0, 0]]), InvalidVectorError, "search_batch"),
    (dict(vector=[1.0, 0, 0], k=0), InvalidArgumentError, "positive"),
    (dict(vector=[1.0, 0, 0], k=-3), InvalidArgumentError, "positive"),
    (dict(vector=[1.0, 0, 0], k=2.5), InvalidArgumentError, "integer"),
    (dict(vector=[1.0, 0, 0], filter={"t": {"$bogus": 1}}), InvalidFilterError, r"\$bogus"),
    (dict(vector=[1.0, 0, 0], filter={"$or": []}), InvalidFilterError, r"\$or"),
    (dict(vector=[1.0, 0, 0], filter=["t"]), InvalidFilterError, "list"),
    (dict(vector=None), InvalidArgumentError, "query vector, or text"),
    (dict(vector=[1.0, 0, 0], mmr_lambda=2.0), InvalidArgumentError, "mmr_lambda"),
    (dict(vector=[1.0, 0, 0], text="x", text_weight=1.5), InvalidArgumentError, "text_weight"),
]


@pytest.mark.parametrize(("kwargs", "exc", "msg"), BAD_SEARCHES)
def test_bad_searches_raise_typed_errors(col, kwargs, exc, msg) -> None:
    with pytest.raises(exc, match=msg):
        col.search(**kwargs)
    _unchanged(col)


def test_bad_batch_search_and_deletes(col) -> None:
    with pytest.raises(InvalidVectorError, match="empty"):
        col.search_batch(np.zeros((0, 3)))
    with pytest.raises(DimensionMismatchError):
        col.search_batch(np.zeros((2, 4)))
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        col.delete()
    with pytest.raises(InvalidArgumentError, match="everything"):
        col.delete(filter={})
    with pytest.raises(InvalidFilterError):
        col.delete(filter={"t": {"$gt": None}})
    assert col.delete(["absent"]) == 0
    _unchanged(col)


def test_unknown_collection_and_bad_parameters(db: Embeddix) -> None:
    with pytest.raises(CollectionNotFoundError, match="nope"):
        db.get_collection("nope")
    with pytest.raises(KeyError):
        db.drop_collection("nope")
    with pytest.raises(InvalidArgumentError, match="dim"):
        db.create_collection("x", dim=0)
    with pytest.raises(InvalidArgumentError, match="metric"):
        db.create_collection("x", dim=3, metric="hamming")
    with pytest.raises(InvalidArgumentError, match="collection name"):
        db.create_collection("bad/name", dim=3)
    assert db.list_collections() == []


def test_list_queries_take_the_fast_path_with_numpys_answers_and_errors(col) -> None:
    as_list = col.search([0.9, 0.1, 0.0], k=2)
    as_array = col.search(np.array([0.9, 0.1, 0.0], np.float32), k=2)
    assert [(h.id, h.score) for h in as_list] == [(h.id, h.score) for h in as_array]
    assert col.search([1, 0, 0], k=1)[0].id == "a"  # ints are numbers too
    with pytest.raises(InvalidVectorError, match="NaN or infinity"):
        col.search([float("nan"), 0.0, 0.0], k=1)
    with pytest.raises(InvalidVectorError, match="NaN or infinity"):
        col.search([1e300, 0.0, 0.0], k=1)  # finite as a double, infinite as float32
    with pytest.raises(InvalidVectorError, match="numeric"):
        col.search(["x", 0.0, 0.0], k=1)
    with pytest.raises(DimensionMismatchError):
        col.search([1.0, 0.0], k=1)
    assert len(col) == 2


# -- issue #12, defect 9 ------------------------------------------------------------------------------
BAD_EFS = ["abc", 0, -1, 2.5, 2.0, True, 1e9, 100_001, [64], float("nan")]


@pytest.mark.parametrize("ef", BAD_EFS, ids=repr)
def test_bad_ef_is_rejected_by_every_search_entry_point(col, ef) -> None:
    q = [1.0, 0.0, 0.0]
    calls = [
        lambda: col.search(q, k=1, ef=ef),
        lambda: col.search_batch([q], k=1, ef=ef),
        lambda: next(col.search_iter(q, k=1, ef=ef)),
        lambda: col.explain(q, k=1, ef=ef),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match=r"ef must be an integer from 1 to 100000") as info:
            call()
        assert repr(ef)[:3] in str(info.value) or str(ef)[:3] in str(info.value)  # names what came
    _unchanged(col)


@pytest.mark.parametrize("ef", [None, 1, 64, np.int64(8), 100_000])
def test_good_ef_is_accepted(col, ef) -> None:
    q = [1.0, 0.0, 0.0]
    assert col.search(q, k=1, ef=ef)[0].id == "a"
    assert col.search_batch([q], k=1, ef=ef)[0][0].id == "a"
    assert [s.hits[0].id for s in col.search_iter(q, k=1, ef=ef)][-1] == "a"
    col.explain(q, k=1, ef=ef)


def test_check_ef_names_what_was_expected_and_what_came() -> None:
    from embeddix_core._validate import MAX_EF, check_ef

    assert check_ef(None) is None
    assert check_ef(np.int32(7)) == 7 and type(check_ef(np.int32(7))) is int
    assert check_ef(MAX_EF) == MAX_EF
    with pytest.raises(InvalidArgumentError, match=r"from 1 to 100000 or None; got str 'abc'"):
        check_ef("abc")
    with pytest.raises(InvalidArgumentError, match=r"got bool True"):
        check_ef(True)
    with pytest.raises(InvalidArgumentError, match=r"got 0$"):
        check_ef(0)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_huge_and_tiny_finite_vectors_find_themselves(db: Embeddix, metric: str) -> None:
    col = db.create_collection("extreme", dim=4, metric=metric)
    vectors = {
        "huge": [2e20, 2e20, 2e20, 2e20],  # squares overflow float32
        "tiny": [1e-25, 0.0, 0.0, 0.0],  # squares underflow float32 to zero
        "denormal": [0.0, 0.0, 1e-40, 0.0],  # its inverse norm is beyond float32
        "plain": [0.1, 0.9, 0.2, 0.3],
    }
    col.add(list(vectors), list(vectors.values()))
    if metric != "cosine":
        return  # l2/ip rank by raw magnitude: only the write (no overflow, no warning) is checked there
    for rid, v in vectors.items():
        hits = col.search(v, k=1, cache=False)
        assert hits[0].id == rid
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert col.search_batch([v], k=1)[0][0].id == rid
        assert col.search(v, k=2, mmr_lambda=0.5)[0].id == rid
    assert len(col) == 4


def test_true_zero_vector_is_still_rejected_by_cosine(col) -> None:
    with pytest.raises(InvalidVectorError, match="all zeros"):
        col.add(["z"], [[0.0, 0.0, 0.0]])
    with pytest.raises(InvalidVectorError, match="all zeros"):
        col.search([0.0, 0.0, 0.0], k=1)
    with pytest.raises(InvalidVectorError, match="all zeros"):
        col.search_batch([[0.0, 0.0, 0.0]], k=1)
    _unchanged(col)


def test_as_query_squared_norm_neither_overflows_nor_underflows() -> None:
    from embeddix_core._validate import as_query

    _, sq = as_query(np.full(4, 2e20, np.float32), 4)
    assert sq == pytest.approx(4 * float(np.float32(2e20)) ** 2)
    _, sq = as_query([1e-25, 0.0, 0.0, 0.0], 4)
    assert sq == pytest.approx(float(np.float32(1e-25)) ** 2)
    assert sq > 0


NON_FINITE = [
    ([1.0, float("nan"), 0.0], "nan.*position 1"),
    ([1.0, 0.0, float("-inf")], "-inf.*position 2"),
    ([1e300, 0.0, 0.0], r"1e\+300 at position 0, beyond float32's range"),
    ([1.0, 0.0, 10**400], "integer too large"),
    ([1.0, None, 0.0], "NoneType None"),
    ([1.0, "2", 0.0], "numeric"),
    (np.array([1j, 0, 0]), "complex"),
    (b"abc", "bytes"),
    ({"a": 1.0}, "dict"),
]


@pytest.mark.parametrize(("vector", "msg"), NON_FINITE)
def test_non_finite_or_non_numeric_vectors_say_what_came(col, vector, msg) -> None:
    for call in (
        lambda: col.add(["n"], [vector] if isinstance(vector, list) else vector),
        lambda: col.search(vector, k=1),
        lambda: col.search_batch([vector] if isinstance(vector, list) else vector, k=1),
    ):
        with pytest.raises(InvalidVectorError, match=msg):
            call()
    _unchanged(col)


@pytest.mark.parametrize("key", ["$x", "$and", "$", "k" * 257])
def test_metadata_keys_no_filter_can_address_are_rejected(col, key) -> None:
    expect = r"may not start with '\$'" if key.startswith("$") else "at most 256 characters"
    with pytest.raises(InvalidMetadataError, match=expect):
        col.add(["n"], [[1.0, 1.0, 0.0]], metadatas=[{key: 1}])
    with pytest.raises(InvalidMetadataError, match=expect):
        col.update(["a"], metadatas=[{key: 1}])
    with pytest.raises(InvalidMetadataError, match=expect):
        col.update_metadata("a", {key: 1})
    _unchanged(col)
    assert col["a"].metadata == {"t": 1}


ODD_KEYS = [
    "a b",
    'q"uote',
    "it's",
    "a.b",
    "a.b.c",
    "café",
    "日本語",
    "back\\slash",
    "tab\tkey",
    "[0]",
    "*",
    "k" * 256,
]


def test_every_storable_metadata_key_round_trips_through_filters(db: Embeddix) -> None:
    col = db.create_collection("keys", dim=2)
    for i, key in enumerate(ODD_KEYS):
        col.add([f"r{i}"], [[1.0, float(i)]], metadatas=[{key: i, "other": -1}])
    for i, key in enumerate(ODD_KEYS):
        want = [f"r{i}"]
        for flt in (
            {key: i},
            {key: {"$gte": i, "$lt": i + 1}},
            {key: {"$exists": True}},
            {key: {"$in": [i]}},
        ):
            assert [r.id for r in col.scan(flt)] == want, (key, flt)
            assert col.count(flt) == 1, (key, flt)
            assert [h.id for h in col.search([1.0, 0.0], k=50, filter=flt)] == want, (key, flt)
        assert col[want[0]].metadata[key] == i


def test_fts_query_keeps_a_bounded_number_of_terms() -> None:
    from embeddix_core.query.fusion import MAX_FTS_TERMS, fts_query

    megabyte = " ".join(f"w{i}" for i in range(200_000))
    query = fts_query(megabyte)
    assert query is not None
    assert query.count(" OR ") == MAX_FTS_TERMS - 1
    assert query.startswith('"w0" OR "w1" OR ')  # the first distinct words, in order
    assert fts_query("Fox fox FOX") == '"fox"'
    assert fts_query('a "b" NEAR(c) d*:') == '"a" OR "b" OR "near" OR "c" OR "d"'
    assert fts_query("   ...   ") is None


def test_a_megabyte_text_query_is_refused_or_bounded(col) -> None:
    from embeddix_core._validate import MAX_TEXT_QUERY_CHARS

    text = "word " * 200_000
    try:
        hits = col.search(None, k=5, text=text)
    except InvalidArgumentError as exc:
        assert f"at most {MAX_TEXT_QUERY_CHARS}" in str(exc) and str(len(text)) in str(exc)
    else:
        assert list(hits) == []  # bounded by fts_query's term cap (no document holds "word")
    with pytest.raises(InvalidArgumentError, match="text must be a string; got int"):
        col.search(None, k=5, text=5)  # type: ignore[arg-type]


def test_check_text_query_limit() -> None:
    from embeddix_core._validate import MAX_TEXT_QUERY_CHARS, check_text_query

    assert check_text_query("x" * MAX_TEXT_QUERY_CHARS) == "x" * MAX_TEXT_QUERY_CHARS
    with pytest.raises(InvalidArgumentError, match=rf"{MAX_TEXT_QUERY_CHARS + 1} characters.*at most"):
        check_text_query("x" * (MAX_TEXT_QUERY_CHARS + 1))
    with pytest.raises(InvalidArgumentError, match="got bytes"):
        check_text_query(b"fox")


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        (dict(documents=5), "documents must be a list.*got int"),
        (dict(documents={"x"}), "documents must be a list.*got set"),
        (dict(metadatas=5), "metadatas must be a list.*got int"),
        (dict(metadatas=b"ab"), "metadatas must be a list.*got bytes"),
    ],
)
def test_non_list_documents_and_metadatas_are_typed_errors(col, kwargs, msg) -> None:
    with pytest.raises(InvalidArgumentError, match=msg):
        col.add(["n"], [[1.0, 1.0, 0.0]], **kwargs)
    with pytest.raises(InvalidArgumentError, match=msg):
        col.update(["a"], **kwargs)
    _unchanged(col)
