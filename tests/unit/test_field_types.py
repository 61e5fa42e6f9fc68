"""A filter comparing with a kind of value its field never holds is an error, not a silent empty answer."""

from __future__ import annotations

import numpy as np
import pytest

from embeddix_core import Embeddix
from embeddix_core.errors import InvalidArgumentError, InvalidFilterError


@pytest.fixture
def col(tmp_path):
    with Embeddix.open(tmp_path / "d") as db:
        c = db.create_collection("c", dim=4)
        rng = np.random.default_rng(0)
        c.add(
            ["a", "b", "c"],
            rng.standard_normal((3, 4)).astype(np.float32),
            metadatas=[{"year": 2019, "tags": ["x", "y"]}, {"year": 2021, "ok": True}, {"year": 2022.5}],
        )
        yield c


Q = np.ones(4, np.float32)


@pytest.mark.parametrize(
    ("flt", "names"),
    [
        ({"year": {"$gt": "2020"}}, ["'year'", "'$gt'", "'2020'", "number", "e.g. 2020"]),
        ({"year": {"$in": ["2019", "x"]}}, ["'year'", "'$in'", "number"]),
        ({"tags": 3}, ["'tags'", "'$eq'", "3", "string"]),
        ({"ok": "true"}, ["'ok'", "boolean"]),
        ({"$and": [{"year": 2019}, {"tags": {"$gt": 1.5}}]}, ["'tags'", "'$gt'"]),
    ],
)
def test_a_comparison_with_another_kind_names_field_operator_value_and_stored_kind(col, flt, names):
    for call in (
        lambda: col.search(Q, k=3, filter=flt),
        lambda: col.search(Q, k=3, filter=flt, cache=False),
        lambda: col.count(flt),
        lambda: list(col.scan(flt)),
        lambda: col.search_batch(Q[None, :], k=3, filter=flt),
    ):
        with pytest.raises(InvalidFilterError) as err:
            call()
        assert isinstance(err.value, InvalidArgumentError)
        for name in names:
            assert name in str(err.value)
    assert col.count() == 3  # nothing stored was touched


def test_matching_kinds_unknown_fields_and_mixed_fields_still_answer(col):
    assert len(col.search(Q, k=3, filter={"year": {"$gt": 2020}})) == 2
    assert col.count({"tags": "x"}) == 1
    assert col.count({"nobody": "has it"}) == 0  # a field no record holds yet: no error
    assert col.count({"year": {"$in": ["2019", 2019]}}) == 1  # one operand of the stored kind
    # alternatives and negations are not required comparisons: "any kind" spellings stay valid
    assert col.count({"$or": [{"year": {"$gte": ""}}, {"year": {"$gte": -1e308}}]}) == 3
    assert col.count({"$not": {"year": "x"}}) == 3
    assert col.count({"year": {"$nin": ["x"]}}) == 3


def test_kinds_written_later_are_seen(col):
    with pytest.raises(InvalidFilterError):
        col.count({"year": "later"})
    col.add(["d"], np.ones((1, 4), np.float32), metadatas=[{"year": "later"}])
    assert col.count({"year": "later"}) == 1


def test_another_process_writing_a_new_kind_is_not_refused(tmp_path):
    with Embeddix.open(tmp_path / "d") as a, Embeddix.open(tmp_path / "d") as b:
        ca = a.create_collection("c", dim=4)
        ca.add(["x"], np.ones((1, 4), np.float32), metadatas=[{"v": 1}])
        cb = b.get_collection("c")
        with pytest.raises(InvalidFilterError):
            cb.count({"v": "s"})
        ca.add(["y"], np.ones((1, 4), np.float32), metadatas=[{"v": "s"}])
        assert cb.count({"v": "s"}) == 1
