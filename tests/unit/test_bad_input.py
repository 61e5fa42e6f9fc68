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
    (dict(ids=["n"], vectors=[[1.0, 2.0]]), DimensionMismatchError, "dimension 2.*dimension is 3"),
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
    (dict(vector=[1.0, 0.0]), DimensionMismatchError, "dimension 2"),
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
