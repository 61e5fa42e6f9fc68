"""Tests for embeddix_core.query.filters: semantics (in Python and SQLite), canonical text, validation."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from embeddix_core.errors import InvalidArgumentError, InvalidFilterError
from embeddix_core.query.filters import (
    FIELD_OPERATORS,
    MAX_DEPTH,
    MAX_FIELD_LENGTH,
    Filter,
    matches_all,
    parse_filter,
)

DOC: dict[str, Any] = {
    "price": 10,
    "rating": 4.5,
    "title": "Hello World",
    "flag": True,
    "zero": 0,
    "tags": ["news", "tech"],
    "nums": [1, 2.5, 30],
    "mixed": [True, "1", 2],
    "empty": [],
}


def sql_matches(flt: Filter, metadata: dict[str, Any] | None, *, ensure_ascii: bool = False) -> bool:
    """Run the filter's SQL over a one-row table holding ``metadata`` as JSON text."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE records (metadata TEXT)")
        text = None if metadata is None else json.dumps(metadata, ensure_ascii=ensure_ascii)
        conn.execute("INSERT INTO records VALUES (?)", (text,))
        where, params = flt.to_sql()
        return conn.execute(f"SELECT count(*) FROM records WHERE {where}", params).fetchone()[0] == 1
    finally:
        conn.close()


def check(spec: dict[str, Any], metadata: dict[str, Any] | None, expected: bool) -> None:
    """Assert the expected answer from both evaluations, with both JSON encodings of non-ASCII text."""
    flt = parse_filter(spec)
    assert flt is not None
    assert flt.matches(metadata) is expected, f"python: {spec} on {metadata}"
    assert sql_matches(flt, metadata) is expected, f"sql: {spec} on {metadata}"
    assert sql_matches(flt, metadata, ensure_ascii=True) is expected, f"sql ascii: {spec} on {metadata}"


# --------------------------------------------------------------------------------------------------
# Semantics, each case checked in Python and in SQLite
# --------------------------------------------------------------------------------------------------
SEMANTICS: list[tuple[dict[str, Any], bool]] = [
    # equality, implicit and explicit; several keys are ANDed
    ({"price": 10}, True),
    ({"price": 11}, False),
    ({"price": {"$eq": 10}}, True),
    ({"price": 10.0}, True),
    ({"price": 10, "title": "Hello World"}, True),
    ({"price": 10, "title": "hello world"}, False),
    ({"title": {"$eq": "Hello"}}, False),
    # $ne is exactly NOT $eq: a missing field matches
    ({"price": {"$ne": 10}}, False),
    ({"price": {"$ne": 11}}, True),
    ({"missing": {"$ne": 1}}, True),
    ({"missing": 1}, False),
    # bools only meet bools; numbers only numbers; strings only strings
    ({"flag": True}, True),
    ({"flag": 1}, False),
    ({"flag": {"$ne": 1}}, True),
    ({"zero": False}, False),
    ({"zero": 0}, True),
    ({"price": "10"}, False),
    ({"mixed": 1}, False),
    ({"mixed": "1"}, True),
    ({"mixed": True}, True),
    ({"mixed": 2.0}, True),
    # lists: $eq matches an item (Mongo semantics)
    ({"tags": "news"}, True),
    ({"tags": "sports"}, False),
    ({"tags": {"$ne": "news"}}, False),
    ({"empty": {"$ne": "x"}}, True),
    # ordering: same type only; any list item may satisfy it
    ({"price": {"$gt": 9}}, True),
    ({"price": {"$gt": 10}}, False),
    ({"price": {"$gte": 10}}, True),
    ({"price": {"$lt": 10.5}}, True),
    ({"price": {"$lte": 9.99}}, False),
    ({"rating": {"$gt": 4}}, True),
    ({"price": {"$gt": "1"}}, False),
    ({"title": {"$gt": "Hello"}}, True),
    ({"title": {"$lt": "a"}}, True),  # code-point order: 'H' < 'a'
    ({"title": {"$gt": 1}}, False),
    ({"flag": {"$gt": 0}}, False),
    ({"nums": {"$gt": 20}}, True),
    ({"nums": {"$lt": 1}}, False),
    ({"nums": {"$gt": 2, "$lt": 3}}, True),  # 2.5 satisfies both
    ({"tags": {"$gte": "tech"}}, True),
    ({"missing": {"$lt": 100}}, False),
    # $in / $nin
    ({"price": {"$in": [1, 10]}}, True),
    ({"price": {"$in": [1, "10", True]}}, False),
    ({"price": {"$in": []}}, False),
    ({"price": {"$nin": []}}, True),
    ({"price": {"$nin": [10]}}, False),
    ({"missing": {"$nin": [10]}}, True),
    ({"flag": {"$in": [1]}}, False),
    ({"flag": {"$in": [False, True]}}, True),
    ({"tags": {"$in": ["tech", "x"]}}, True),
    ({"tags": {"$nin": ["tech", "x"]}}, False),
    ({"nums": {"$in": [2.5]}}, True),
    # $exists
    ({"price": {"$exists": True}}, True),
    ({"missing": {"$exists": True}}, False),
    ({"missing": {"$exists": False}}, True),
    ({"empty": {"$exists": True}}, True),
    # $contains: list membership, or substring of a string field
    ({"tags": {"$contains": "tech"}}, True),
    ({"tags": {"$contains": "te"}}, False),
    ({"title": {"$contains": "lo Wo"}}, True),
    ({"title": {"$contains": "lo wo"}}, False),
    ({"price": {"$contains": 10}}, False),  # a scalar number is not a list
    ({"nums": {"$contains": 30.0}}, True),
    ({"mixed": {"$contains": 1}}, False),
    ({"mixed": {"$contains": True}}, True),
    # $contains_any / $contains_all: list fields only
    ({"tags": {"$contains_any": ["x", "news"]}}, True),
    ({"tags": {"$contains_any": ["x", "y"]}}, False),
    ({"tags": {"$contains_any": []}}, False),
    ({"title": {"$contains_any": ["Hello World"]}}, False),
    ({"tags": {"$contains_all": ["tech", "news"]}}, True),
    ({"tags": {"$contains_all": ["tech", "news", "x"]}}, False),
    ({"tags": {"$contains_all": []}}, True),
    ({"empty": {"$contains_all": []}}, True),
    ({"price": {"$contains_all": []}}, False),
    ({"nums": {"$contains_all": [1.0, 30]}}, True),
    ({"mixed": {"$contains_all": [True, 2]}}, True),
    ({"mixed": {"$contains_all": [1]}}, False),
    # $text: case-sensitive substring of a string field
    ({"title": {"$text": "World"}}, True),
    ({"title": {"$text": "world"}}, False),
    ({"title": {"$text": ""}}, True),
    ({"tags": {"$text": "news"}}, False),
    ({"missing": {"$text": ""}}, False),
    # logic
    ({"$and": [{"price": 10}, {"flag": True}]}, True),
    ({"$and": [{"price": 10}, {"flag": False}]}, False),
    ({"$or": [{"price": 11}, {"flag": True}]}, True),
    ({"$or": [{"price": 11}, {"flag": False}]}, False),
    ({"$not": {"price": 10}}, False),
    ({"$not": {"missing": 10}}, True),
    ({"$not": {"missing": {"$gt": 1}}}, True),
    ({"$not": {"$not": {"price": 10}}}, True),
    ({"$not": {}}, False),
    ({"$and": [{}, {"price": 10}]}, True),
    ({"flag": True, "$or": [{}, {"price": 11}]}, True),
    ({"price": 10, "$or": [{"tags": "x"}, {"title": {"$text": "Hello"}}]}, True),
    ({"price": 10, "$not": {"tags": "news"}}, False),
    ({"$or": [{"$and": [{"price": {"$gt": 5}}, {"$not": {"flag": False}}]}, {"missing": 1}]}, True),
]


@pytest.mark.parametrize(("spec", "expected"), SEMANTICS, ids=[json.dumps(s) for s, _ in SEMANTICS])
def test_semantics_agree_in_python_and_sql(spec: dict[str, Any], expected: bool) -> None:
    check(spec, DOC, expected)


def test_json_null_counts_as_absent() -> None:
    doc = {"a": None, "b": [None, 1]}
    check({"a": {"$exists": True}}, doc, False)
    check({"a": {"$exists": False}}, doc, True)
    check({"a": {"$ne": 1}}, doc, True)
    check({"b": {"$exists": True}}, doc, True)
    check({"b": 1}, doc, True)
    check({"b": {"$contains_all": [1]}}, doc, True)


def test_numbers_compare_exactly_across_int_and_float() -> None:
    big = 2**53 + 1  # not representable as a float: must not equal 2.0**53
    check({"n": float(2**53)}, {"n": big}, False)
    check({"n": {"$gt": float(2**53)}}, {"n": big}, True)
    check({"n": big}, {"n": big}, True)
    check({"n": 2**63 - 1}, {"n": 2**63 - 1}, True)
    check({"n": 0}, {"n": -0.0}, True)


def test_non_ascii_and_unusual_field_names_are_found() -> None:
    doc = {"café": "crème", 'q"t': 1, "a.b": 2, "back\\slash": 3, "名前": ["値"], "tab\tkey": 4, "a": 5}
    check({"café": "crème"}, doc, True)
    check({'q"t': 1}, doc, True)
    check({"a.b": 2}, doc, True)
    check({"a": {"$gt": 4}, "a.b": {"$lt": 3}}, doc, True)
    check({"back\\slash": 3}, doc, True)
    check({"名前": {"$contains": "値"}}, doc, True)
    check({"名前": "値"}, doc, True)
    check({"tab\tkey": {"$in": [4]}}, doc, True)
    check({"café": {"$exists": False}}, doc, False)


def test_missing_or_empty_metadata_matches_only_negations() -> None:
    empty: list[dict[str, Any] | None] = [None, {}]
    for metadata in empty:
        check({"a": 1}, metadata, False)
        check({"a": {"$ne": 1}}, metadata, True)
        check({"a": {"$exists": False}}, metadata, True)
        check({"a": {"$nin": [1]}}, metadata, True)
        check({"$not": {"a": {"$contains_all": []}}}, metadata, True)


def test_nested_values_outside_the_model_match_no_value_operator() -> None:
    doc = {"o": {"x": 1}, "l": [[1], {"x": 1}]}
    for spec in ({"o": 1}, {"o": {"$gt": 0}}, {"l": 1}, {"l": {"$contains": 1}}, {"o": {"$in": [1]}}):
        check(spec, doc, False)
    check({"o": {"$exists": True}}, doc, True)


def test_parse_filter_none_and_empty_match_everything() -> None:
    assert parse_filter(None) is None
    assert parse_filter({}) is None
    assert parse_filter({"$and": [{}, {}]}) is None
    assert parse_filter({"$or": [{"a": 1}, {}]}) is None
    assert matches_all(None, {"a": 1}) is True
    assert matches_all(None, None) is True


def test_matches_all_uses_the_filter() -> None:
    flt = parse_filter({"a": 1})
    assert matches_all(flt, {"a": 1}) is True
    assert matches_all(flt, {"a": 2}) is False
    assert matches_all(flt, None) is False


def test_parse_filter_returns_a_parsed_filter_unchanged() -> None:
    flt = parse_filter({"a": 1})
    assert flt is not None
    assert parse_filter(flt) is flt


def test_matches_accepts_any_mapping() -> None:
    from types import MappingProxyType

    flt = parse_filter({"a": {"$contains": 2}})
    assert flt is not None
    assert flt.matches(MappingProxyType({"a": (1, 2)})) is True


# --------------------------------------------------------------------------------------------------
# Canonical text, equality, fields
# --------------------------------------------------------------------------------------------------
def canonical(spec: dict[str, Any]) -> str:
    flt = parse_filter(spec)
    assert flt is not None
    return flt.canonical


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ({"a": 1}, {"a": {"$eq": 1}}),
        ({"a": 1}, {"a": 1.0}),
        ({"a": {"$gt": 1, "$lt": 5}}, {"a": {"$lt": 5, "$gt": 1}}),
        ({"a": {"$gt": 1, "$lt": 5}}, {"$and": [{"a": {"$lt": 5}}, {"a": {"$gt": 1}}]}),
        ({"$and": [{"a": 1}, {"$and": [{"b": 2}, {"c": 3}]}]}, {"a": 1, "b": 2, "c": 3}),
        ({"$or": [{"a": 1}, {"b": 2}]}, {"$or": [{"b": 2}, {"a": 1}, {"b": 2}]}),
        ({"a": {"$in": [3, 1, 2, 1]}}, {"a": {"$in": [1, 2, 3]}}),
        ({"a": {"$in": ["x", True, 1]}}, {"a": {"$in": [1, "x", True]}}),
        ({"$not": {"a": 1}}, {"a": {"$ne": 1}}),
        ({"$not": {"a": {"$in": [1]}}}, {"a": {"$nin": [1]}}),
        ({"$not": {"a": {"$exists": True}}}, {"a": {"$exists": False}}),
        ({"$not": {"$not": {"a": 1}}}, {"a": 1}),
        ({"a": 1, "$and": [{}]}, {"a": 1}),
    ],
)
def test_equivalent_spellings_share_a_canonical_text(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert canonical(left) == canonical(right)
    assert parse_filter(left) == parse_filter(right)
    assert hash(parse_filter(left)) == hash(parse_filter(right))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"a": 1}, {"a": True}),
        ({"a": 1}, {"a": "1"}),
        ({"a": 1}, {"b": 1}),
        ({"a": {"$gt": 1}}, {"a": {"$gte": 1}}),
        ({"$or": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 2}),
    ],
)
def test_different_filters_have_different_canonical_texts(
    left: dict[str, Any], right: dict[str, Any]
) -> None:
    assert canonical(left) != canonical(right)
    assert parse_filter(left) != parse_filter(right)


def test_canonical_is_compact_sorted_json_that_parses_back() -> None:
    flt = parse_filter({"b": {"$in": [2, 1]}, "a": "x", "$not": {"c": {"$text": "é"}}})
    assert flt is not None
    assert flt.canonical == ('{"$and":[{"$not":{"c":{"$text":"é"}}},{"a":{"$eq":"x"}},{"b":{"$in":[1,2]}}]}')
    assert parse_filter(json.loads(flt.canonical)) == flt


def test_fields_lists_every_referenced_field() -> None:
    flt = parse_filter({"a": 1, "$or": [{"b": {"$gt": 1}}, {"$not": {"c.d": {"$exists": True}}}]})
    assert flt is not None
    assert flt.fields == frozenset({"a", "b", "c.d"})


def test_repr_shows_the_canonical_text() -> None:
    assert '{"a":{"$eq":1}}' in repr(parse_filter({"a": 1}))


# --------------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------------
def test_to_sql_binds_every_user_value() -> None:
    evil = "x'); DROP TABLE records; --"
    flt = parse_filter({evil: evil, "café": {"$text": evil}, "a": {"$in": [evil]}})
    assert flt is not None
    sql, params = flt.to_sql()
    assert "DROP" not in sql
    assert "café" not in sql
    assert evil in params
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE records (metadata TEXT)")
    conn.execute("INSERT INTO records VALUES (?)", (json.dumps({evil: evil, "café": evil, "a": [evil]}),))
    assert conn.execute(f"SELECT count(*) FROM records WHERE {sql}", params).fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 1


def test_to_sql_returns_a_fresh_parameter_list() -> None:
    flt = parse_filter({"a": 1})
    assert flt is not None
    _, params = flt.to_sql()
    params.append("junk")
    assert flt.to_sql()[1] == ['$."a"', 1]


def test_to_sql_accepts_a_qualified_column() -> None:
    flt = parse_filter({"a": 1})
    assert flt is not None
    sql, params = flt.to_sql("r.meta")
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE records (meta TEXT)")
    conn.execute("INSERT INTO records VALUES (?)", ('{"a": 1}',))
    assert conn.execute(f"SELECT count(*) FROM records AS r WHERE {sql}", params).fetchone()[0] == 1


@pytest.mark.parametrize("column", ["", "meta data", "m; DROP TABLE x", "1col", "a.b.c", 'm"'])
def test_to_sql_rejects_a_column_that_is_not_an_identifier(column: str) -> None:
    flt = parse_filter({"a": 1})
    assert flt is not None
    with pytest.raises(InvalidArgumentError, match="column must be a SQL identifier"):
        flt.to_sql(column)


def test_negations_never_drop_rows_through_sql_null() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE records (metadata TEXT)")
    rows = [None, "{}", '{"a": null}', '{"a": 1}', '{"a": [1, 2]}', '{"a": "x"}']
    conn.executemany("INSERT INTO records VALUES (?)", [(r,) for r in rows])
    for spec in ({"a": 1}, {"a": {"$text": "x"}}, {"a": {"$contains_all": [2]}}, {"a": {"$exists": True}}):
        flt, neg = parse_filter(spec), parse_filter({"$not": spec})
        assert flt is not None and neg is not None
        hit = conn.execute(
            f"SELECT count(*) FROM records WHERE {flt.to_sql()[0]}", flt.to_sql()[1]
        ).fetchone()
        miss = conn.execute(
            f"SELECT count(*) FROM records WHERE {neg.to_sql()[0]}", neg.to_sql()[1]
        ).fetchone()
        assert hit[0] + miss[0] == len(rows), spec


def test_long_operand_lists_need_no_parameter_per_item() -> None:
    values = list(range(50_000))
    flt = parse_filter({"a": {"$in": values}, "b": {"$contains_all": values[:3]}})
    assert flt is not None
    _, params = flt.to_sql()
    assert len(params) < 10
    check({"a": {"$in": values}}, {"a": 49_999}, True)
    check({"a": {"$nin": values}}, {"a": 50_000}, True)


def test_wide_or_stays_within_sqlite_expression_depth() -> None:
    check({"$or": [{"a": i} for i in range(2_000)]}, {"a": 1_999}, True)


# --------------------------------------------------------------------------------------------------
# Validation: type and a message naming the bad part
# --------------------------------------------------------------------------------------------------
INVALID: list[tuple[Any, list[str]]] = [
    ([{"a": 1}], ["must be a dict", "list"]),
    ("a = 1", ["must be a dict", "str"]),
    ({"price": {"$gtx": 1}}, ["'$gtx'", "'price'", "is unknown", "$eq, $ne"]),
    ({"$xor": [{"a": 1}]}, ["'$xor'", "unknown", "$and, $or, $not"]),
    ({"$eq": 1}, ["'$eq'", "must be applied to a field"]),
    ({"$and": {"a": 1}}, ["$and", "non-empty list", "got an object"]),
    ({"$or": []}, ["$or", "non-empty list", "got an empty list"]),
    ({"$and": "a"}, ["$and", "non-empty list", "str"]),
    ({"$and": [{"a": 1}, 5]}, ["must be a dict", "int", "$and[1]"]),
    ({"$or": [{"a": {"$bad": 1}}]}, ["'$bad'", "'a'", "$or[0]"]),
    ({"$not": [{"a": 1}]}, ["$not", "one filter", "a list"]),
    ({"a": {"$in": 1}}, ["$in", "'a'", "must be a list", "int"]),
    ({"a": {"$nin": "abc"}}, ["$nin", "must be a list", "str"]),
    ({"a": {"$contains_all": {"x": 1}}}, ["$contains_all", "must be a list", "object"]),
    ({"a": {"$in": [1, None]}}, ["$in", "'a'", "None"]),
    ({"a": {"$in": [[1]]}}, ["$in", "a list"]),
    ({"a": None}, ["$eq", "'a'", "None", "$exists"]),
    ({"a": {"$eq": None}}, ["$eq", "None"]),
    ({"a": [1, 2]}, ["$eq", "'a'", "a list", "$in"]),
    ({"a": {"$ne": {"$eq": 1}}}, ["$ne", "object"]),
    ({"a": {"b": 1}}, ["'a'", "non-operator key 'b'", "nested objects"]),
    ({"a": {"$eq": 1, "b": 1}}, ["'a'", "non-operator key 'b'"]),
    ({"a": {}}, ["'a'", "empty object"]),
    ({"a": {"$gt": True}}, ["$gt", "number or a string", "bool"]),
    ({"a": {"$lte": [1]}}, ["$lte", "a list"]),
    ({"a": {"$gte": None}}, ["$gte", "None"]),
    ({"a": {"$exists": 1}}, ["$exists", "True or False", "int"]),
    ({"a": {"$exists": "yes"}}, ["$exists", "str"]),
    ({"a": {"$text": 5}}, ["$text", "must be a string", "int"]),
    ({"a": {"$contains": None}}, ["$contains", "None"]),
    ({"a": float("nan")}, ["$eq", "finite", "nan"]),
    ({"a": {"$lt": float("inf")}}, ["$lt", "finite", "inf"]),
    ({"a": 2**63}, ["$eq", "64 bits", str(2**63)]),
    ({"a": {"$in": [-(2**63) - 1]}}, ["$in", "64 bits"]),
    ({"a": b"bytes"}, ["$eq", "bytes"]),
    ({"$a": 1}, ["'$a'", "unknown"]),
    ({"": 1}, ["non-empty", "''"]),
    ({1: 1}, ["field names", "int"]),
    ({"x" * (MAX_FIELD_LENGTH + 1): 1}, [f"at most {MAX_FIELD_LENGTH}", str(MAX_FIELD_LENGTH + 1)]),
    ({"a\x00b": 1}, ["field name", "NUL"]),
    ({"a": "x\x00"}, ["$eq", "'a'", "NUL"]),
    ({"a": "\ud800"}, ["$eq", "surrogate"]),
    ({"\udfff": 1}, ["field name", "surrogate"]),
]


@pytest.mark.parametrize(("spec", "parts"), INVALID, ids=[repr(s)[:60] for s, _ in INVALID])
def test_malformed_filters_raise_invalid_filter_error(spec: Any, parts: list[str]) -> None:
    with pytest.raises(InvalidFilterError) as info:
        parse_filter(spec)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert isinstance(info.value, ValueError)


def test_unknown_operator_message_lists_every_operator() -> None:
    with pytest.raises(InvalidFilterError) as info:
        parse_filter({"price": {"$gtx": 1}})
    assert str(info.value).startswith(
        "filter operator '$gtx' at 'price' is unknown; expected one of $eq, $ne"
    )
    for op in FIELD_OPERATORS:
        assert op in str(info.value)


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    ok: dict[str, Any] = {"a": 1}
    for _ in range(MAX_DEPTH):
        ok = {"$not": ok}
    assert parse_filter(ok) is not None
    with pytest.raises(InvalidFilterError, match=f"deeper than {MAX_DEPTH}"):
        parse_filter({"$and": [ok]})


def test_tuples_are_accepted_where_lists_are() -> None:
    assert parse_filter({"a": {"$in": (1, 2)}}) == parse_filter({"a": {"$in": [1, 2]}})
    assert parse_filter({"$or": ({"a": 1}, {"b": 2})}) == parse_filter({"$or": [{"a": 1}, {"b": 2}]})


def test_parsed_filters_are_memoized_only_for_plain_specs() -> None:
    import numpy as np

    from embeddix_core.query import filters as fmod

    spec = {"tag": 3, "src": {"$in": ["a", "b"]}}
    assert parse_filter(spec) is parse_filter({"tag": 3, "src": {"$in": ["a", "b"]}})
    assert parse_filter({"tag": True}).canonical != parse_filter({"tag": 3}).canonical
    assert fmod._memo_key({"tag": np.int64(3)}) is None  # not a plain type: parsed (and refused) as before
    with pytest.raises(InvalidFilterError):
        parse_filter({"tag": np.int64(3)})
    for _ in range(2):  # a refusal is never memoized
        with pytest.raises(InvalidFilterError):
            parse_filter({"tag": {"$bogus": 1}})
    assert parse_filter({}) is None and parse_filter({}) is None
