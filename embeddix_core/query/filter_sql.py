"""Translation of a filter AST into one SQLite ``WHERE`` fragment over a JSON text column.

Split out of ``filters.py`` because it is a back end of its own, with its own constraints (SQLite 3.40's
JSON1 functions, three-valued logic, the expression-depth limit), and it must agree exactly with the
Python evaluation there; ``tests/property/test_filter_sql_congruence.py`` compares the two. The rules it
keeps - no user text in the SQL, every fragment 0 or 1 and never NULL, how a field is reached through
``json_extract`` or ``json_each`` - are in the "SQL" section of ``filters.py``'s docstring.

Aliases in the generated SQL: ``_n`` a field's node via its path, ``_k`` a top-level key row, ``_e`` a
list element (or the scalar itself), ``_w`` an operand item.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from .filter_nodes import Scalar, _AndNode, _dumps, _FieldNode, _Node, _NotNode, _OrNode

_ORDERING_SQL: Final = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
# Printable ASCII except '"' and '\\': json.dumps writes such keys verbatim, so a quoted JSON path finds them.
_PATH_SAFE: Final = re.compile(r"[ !#-\[\]-~]+")
_NUMBER_TYPES_SQL: Final = "('integer', 'real')"

_Sql: TypeAlias = tuple[str, list[Any]]
_Cond: TypeAlias = Callable[[str], _Sql]


def json_path(name: str) -> str | None:
    """The quoted JSON path of a field (None when the name cannot be quoted safely)."""
    return f'$."{name}"' if _PATH_SAFE.fullmatch(name) else None


_json_path = json_path


def _equal_sql(x: Scalar, sql_op: str = "=") -> _Cond:
    def cond(a: str) -> _Sql:
        if isinstance(x, bool):
            # json_extract and json_each turn true into 1; only the JSON type tells a bool from a number.
            return f"({a}.type = '{'true' if x else 'false'}')", []
        if isinstance(x, str):
            return f"({a}.type = 'text' AND {a}.value {sql_op} ?)", [x]
        return f"({a}.type IN {_NUMBER_TYPES_SQL} AND {a}.value {sql_op} ?)", [x]

    return cond


def _member_sql(items: tuple[Scalar, ...]) -> _Cond:
    numbers = [v for v in items if isinstance(v, int | float) and not isinstance(v, bool)]
    strings = [v for v in items if isinstance(v, str)]
    bools = sorted({"'true'" if v else "'false'" for v in items if isinstance(v, bool)})

    def cond(a: str) -> _Sql:
        # Each group is one JSON-array parameter: no limit on list length, and SQLite builds the IN
        # lookup once per statement.
        parts: list[str] = []
        params: list[Any] = []
        if numbers:
            parts.append(
                f"({a}.type IN {_NUMBER_TYPES_SQL} AND {a}.value IN (SELECT value FROM json_each(?)))"
            )
            params.append(_dumps(numbers))
        if strings:
            parts.append(f"({a}.type = 'text' AND {a}.value IN (SELECT value FROM json_each(?)))")
            params.append(_dumps(strings))
        if bools:
            parts.append(f"({a}.type IN ({', '.join(bools)}))")
        return ("(" + " OR ".join(parts) + ")" if parts else "0"), params

    return cond


def _any_element_sql(col: str, name: str, cond: _Cond) -> _Sql:
    path = _json_path(name)
    if path is not None:
        # json_each over a path yields the scalar itself, or each list item; rows with text keys are the
        # members of a (non-model) nested object, which match nothing.
        sql, params = cond("_e")
        return (
            f"EXISTS (SELECT 1 FROM json_each({col}, ?) AS _e WHERE typeof(_e.key) <> 'text' AND {sql})",
            [path, *params],
        )
    elem_sql, elem_params = cond("_e")
    self_sql, self_params = cond("_k")
    return (
        f"EXISTS (SELECT 1 FROM json_each({col}) AS _k WHERE _k.key = ? AND CASE WHEN _k.type = 'array' "
        f"THEN EXISTS (SELECT 1 FROM json_each(_k.value) AS _e WHERE {elem_sql}) ELSE {self_sql} END)",
        [name, *elem_params, *self_params],
    )


def _node_sql(col: str, name: str, cond: _Cond) -> _Sql:
    """EXISTS over the field's own node (type, value), value being JSON text for a list."""
    path = _json_path(name)
    if path is not None:
        sql, params = cond("_n")
        return (
            f"EXISTS (SELECT 1 FROM (SELECT json_type({col}, ?) AS type, json_extract({col}, ?) AS value) "
            f"AS _n WHERE {sql})",
            [path, path, *params],
        )
    sql, params = cond("_k")
    return f"EXISTS (SELECT 1 FROM json_each({col}) AS _k WHERE _k.key = ? AND {sql})", [name, *params]


def _in_list_sql(a: str, elem: _Cond) -> _Sql:
    # CASE, not AND: json_each over a non-list value (plain text) would raise "malformed JSON".
    sql, params = elem("_e")
    return (
        f"CASE WHEN {a}.type = 'array' THEN EXISTS (SELECT 1 FROM json_each({a}.value) AS _e WHERE {sql}) "
        "ELSE 0 END",
        params,
    )


def _field_sql(node: _FieldNode, col: str) -> _Sql:
    name, op, operand, items = node.name, node.op, node.scalar, node.items
    if op in ("$eq", "$ne"):
        sql, params = _any_element_sql(col, name, _equal_sql(operand))
        return (sql, params) if op == "$eq" else (f"NOT {sql}", params)
    if op in _ORDERING_SQL:
        return _any_element_sql(col, name, _equal_sql(operand, _ORDERING_SQL[op]))
    if op == "$exists":
        sql, params = _node_sql(col, name, lambda a: (f"{a}.type <> 'null'", []))
        return (sql, params) if operand else (f"NOT {sql}", params)
    if op == "$text":
        return _node_sql(col, name, lambda a: (f"({a}.type = 'text' AND instr({a}.value, ?) > 0)", [operand]))
    if op == "$contains":
        equal = _equal_sql(operand)
        if isinstance(operand, str):

            def list_or_text(a: str) -> _Sql:
                sql, params = equal("_e")
                return (
                    f"CASE {a}.type WHEN 'array' THEN EXISTS (SELECT 1 FROM json_each({a}.value) AS _e "
                    f"WHERE {sql}) WHEN 'text' THEN instr({a}.value, ?) > 0 ELSE 0 END",
                    [*params, operand],
                )

            return _node_sql(col, name, list_or_text)
        return _node_sql(col, name, lambda a: _in_list_sql(a, equal))
    if op in ("$in", "$nin"):
        sql, params = _any_element_sql(col, name, _member_sql(items))
        return (sql, params) if op == "$in" else (f"NOT {sql}", params)
    if op == "$contains_any":
        member = _member_sql(items)
        return _node_sql(col, name, lambda a: _in_list_sql(a, member))
    every = _dumps(list(items))

    def every_item(a: str) -> _Sql:
        # "No operand item is missing from the list": one JSON parameter whatever the operand's length.
        return (
            f"CASE WHEN {a}.type = 'array' THEN NOT EXISTS (SELECT 1 FROM json_each(?) AS _w WHERE NOT "
            f"EXISTS (SELECT 1 FROM json_each({a}.value) AS _e WHERE _e.value = _w.value AND CASE WHEN "
            f"_w.type IN {_NUMBER_TYPES_SQL} THEN _e.type IN {_NUMBER_TYPES_SQL} ELSE _e.type = _w.type "
            "END)) ELSE 0 END",
            [every],
        )

    return _node_sql(col, name, every_item)


def _join_sql(parts: list[_Sql], word: str) -> _Sql:
    # Balanced, so a wide $or stays shallow for SQLite's expression-depth limit.
    if len(parts) == 1:
        return parts[0]
    mid = len(parts) // 2
    left, right = _join_sql(parts[:mid], word), _join_sql(parts[mid:], word)
    return f"({left[0]} {word} {right[0]})", [*left[1], *right[1]]


def _sql(node: _Node, col: str) -> _Sql:
    if isinstance(node, _FieldNode):
        return _field_sql(node, col)
    if isinstance(node, _NotNode):
        sql, params = _sql(node.child, col)
        return f"NOT ({sql})", params
    if isinstance(node, _AndNode):
        return _join_sql([_sql(c, col) for c in node.children], "AND")
    if isinstance(node, _OrNode):
        return _join_sql([_sql(c, col) for c in node.children], "OR")
    return "1", []
