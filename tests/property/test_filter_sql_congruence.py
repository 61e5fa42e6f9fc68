"""Congruence of the two filter evaluations: ``Filter.matches`` (Python) and ``Filter.to_sql`` (SQLite).

Hypothesis draws small tables of metadata and random valid filters; the rows SQLite selects must be
exactly the rows Python accepts. Values come from small pools so that equality and ordering collide
often, plus the awkward cases: bool vs 1, 1 vs 1.0, 2**53 + 1 vs 2.0**53, int64 extremes, field names
that a JSON path cannot address, non-ASCII text stored with and without ``ensure_ascii``, JSON null,
NULL columns, and (out of the metadata model, but still congruent) nested lists and objects.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embeddix_core.query.filters import FIELD_OPERATORS, Filter, parse_filter

FIELDS = ["a", "tags", "a.b", 'q"t', "café", "tab\tkey"]
OPERAND_FIELDS = [*FIELDS, "missing"]

_INT64 = 2**63 - 1
# Small pools make equality and ordering collide often; the wide strategies find the odd values.
_common = st.sampled_from([True, False, 0, 1, 2, -1, 1.0, 2.5, -0.0, "", "a", "b", "ab", "é", "😀", "1"])
_edge_numbers = st.sampled_from([1e300, 5e-324, 2**53 + 1, 2.0**53, _INT64, -_INT64 - 1, 0.1, 3])
_text = st.one_of(
    st.sampled_from(["", "a", "b", "ab", "ba", "A", "é", "😀", "a😀", "\n", '"', "\\", "1", "true"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=4),
)
_numbers = st.one_of(
    st.sampled_from([0, 1, 2, -1, 1.0, 2.5, -0.0]),
    _edge_numbers,
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-_INT64 - 1, _INT64),
)
_scalars = st.one_of(_common, _common, _common, _edge_numbers, _text, _numbers)
_scalar_lists = st.lists(_scalars, max_size=4)
_values = st.one_of(
    _scalars,
    _scalars,
    _scalar_lists,
    _scalar_lists,
    st.none(),
    # Outside the metadata model; both evaluations must still agree on them.
    st.lists(st.one_of(_scalars, st.none(), st.lists(_scalars, max_size=2)), max_size=3),
    st.dictionaries(st.sampled_from(["a", "x"]), _scalars, max_size=2),
)
_records = st.dictionaries(st.sampled_from(FIELDS), _values, min_size=2, max_size=len(FIELDS))
_metadata = st.one_of(_records, _records, _records, _records, _records, st.none(), st.just({}))


def _seen_scalars(rows: list[dict[str, Any] | None]) -> list[Any]:
    """Every scalar stored in the rows, list items included, so operands can hit real values."""
    out: list[Any] = []
    for md in rows:
        for value in (md or {}).values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, bool | int | float | str):
                    out.append(item)
    return out


def _filters(
    names: st.SearchStrategy[str], scalars: st.SearchStrategy[Any], texts: st.SearchStrategy[str]
) -> st.SearchStrategy[dict[str, Any]]:
    ordered = st.one_of(scalars.filter(lambda v: not isinstance(v, bool)), _numbers, _text)

    @st.composite
    def condition(draw: st.DrawFn) -> dict[str, Any]:
        name = draw(names)
        op = draw(st.sampled_from(["implicit", *FIELD_OPERATORS]))
        if op == "implicit":
            return {name: draw(scalars)}
        operand: Any
        if op in ("$eq", "$ne", "$contains"):
            operand = draw(scalars)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            operand = draw(ordered)
        elif op in ("$in", "$nin", "$contains_any", "$contains_all"):
            operand = draw(st.lists(scalars, max_size=4))
        elif op == "$exists":
            operand = draw(st.booleans())
        else:
            operand = draw(texts)
        return {name: {op: operand}}

    def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.one_of(
            st.lists(children, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
            st.lists(children, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
            children.map(lambda f: {"$not": f}),
            # Field keys and logical keys side by side in one object are ANDed.
            st.tuples(condition(), children).map(lambda p: {**p[0], "$or": [p[1]]}),
        )

    return st.recursive(
        st.one_of(condition(), condition(), condition(), condition(), st.just({})), extend, max_leaves=6
    )


@st.composite
def _cases(draw: st.DrawFn) -> tuple[list[dict[str, Any] | None], dict[str, Any]]:
    rows = draw(st.lists(_metadata, min_size=3, max_size=10))
    seen = _seen_scalars(rows)
    scalars = st.one_of(st.sampled_from(seen), st.sampled_from(seen), _scalars) if seen else _scalars
    pieces = sorted(
        {v[i:j] for v in seen if isinstance(v, str) for i in range(len(v) + 1) for j in range(i, len(v) + 1)}
    )
    texts = st.one_of(st.sampled_from(pieces), _text) if pieces else _text
    present = sorted({k for md in rows for k in md or {}})
    names = (
        st.one_of(st.sampled_from(present), st.sampled_from(OPERAND_FIELDS))
        if present
        else st.sampled_from(OPERAND_FIELDS)
    )
    return rows, draw(_filters(names, scalars, texts))


def _selected(flt: Filter, rows: list[dict[str, Any] | None], ensure_ascii: bool) -> set[int]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE records (label INTEGER PRIMARY KEY, metadata TEXT)")
        conn.executemany(
            "INSERT INTO records (label, metadata) VALUES (?, ?)",
            [
                (i, None if md is None else json.dumps(md, ensure_ascii=ensure_ascii))
                for i, md in enumerate(rows)
            ],
        )
        where, params = flt.to_sql("metadata")
        return {r[0] for r in conn.execute(f"SELECT label FROM records WHERE {where}", params)}
    finally:
        conn.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases(), ensure_ascii=st.booleans())
def test_sql_selects_exactly_the_rows_python_matches(
    case: tuple[list[dict[str, Any] | None], dict[str, Any]], ensure_ascii: bool
) -> None:
    rows, spec = case
    flt = parse_filter(spec)
    if flt is None:  # a filter that matches everything has no SQL; nothing to compare
        return
    expected = {i for i, md in enumerate(rows) if flt.matches(md)}
    assert _selected(flt, rows, ensure_ascii) == expected

    # The canonical text is itself a filter, equal to this one and selecting the same rows.
    again = parse_filter(json.loads(flt.canonical))
    assert again == flt
    assert again is not None
    assert {i for i, md in enumerate(rows) if again.matches(md)} == expected
