"""The metadata filter language: one small Mongo-like language, evaluated in Python and in SQLite.

Adapters (LangChain, LlamaIndex, MCP tools) translate their own filter syntax into this one. A filter is
parsed and validated once by :func:`parse_filter` into a :class:`Filter`, which can then

* test one record's metadata in Python (:meth:`Filter.matches`, precompiled closures, used per record
  when cached filter bitmaps are maintained),
* become a SQLite ``WHERE`` fragment over a JSON text column (:meth:`Filter.to_sql`), and
* name itself (:attr:`Filter.canonical`, deterministic JSON text for cache keys).

The Python and SQL evaluations agree exactly; ``tests/property/test_filter_sql_congruence.py`` checks it.

Metadata model
--------------
A record's metadata is a JSON object whose values are strings, numbers (int, float) and booleans, or
lists of those. A JSON ``null`` (Python ``None``) value is the same as an absent key. Three assumptions
are the metadata validator's job, not this module's: integers fit in 64 bits (SQLite turns larger ones
into floats), floats are finite (JSON has no NaN), and strings hold no U+0000 (SQLite's JSON functions
cut text at NUL). Nested objects are outside the model; should one appear anyway, it simply matches no
value operator (it still counts as present for ``$exists``), in both evaluations.

Syntax
------
* ``{"field": value}``: equality, the same as ``{"field": {"$eq": value}}``.
* ``{"field": {"$op": operand, ...}}``: several operators on one field are ANDed.
* ``{"$and": [f, ...]}``, ``{"$or": [f, ...]}``: a non-empty list of filters. ``{"$not": f}``.
* Several keys in one object (fields and logical operators alike) are ANDed.
* ``None`` and ``{}`` match every record (:func:`parse_filter` returns None); a nested ``{}`` is "true".

Field names are non-empty strings of at most 256 characters that do not start with ``$`` and hold no NUL.

Semantics
---------
Types: numbers compare only with numbers (int and float freely, exactly: ``2**53 + 1 != 2.0**53``),
strings only with strings (by code point, case-sensitive), booleans only with booleans (``True`` is not
``1``). In the language a type mismatch is no match; a collection additionally refuses a comparison
whose operand has a kind none of the field's stored values has (``field_types.py``: an error that
names them, since such a filter could only ever return nothing). "Element" below means: the value
itself when the field holds a scalar, each item when it holds a list (Mongo semantics).

=================  ==================  ==============================================================
operator           operand             a record matches when
=================  ==================  ==============================================================
``$eq``            scalar              some element equals the operand
``$ne``            scalar              not ``$eq`` (so a missing field matches)
``$gt`` ``$gte``   number or string    some element compares so with the operand (same type only)
``$lt`` ``$lte``
``$in``            list of scalars     some element equals some operand item (``[]`` matches nothing)
``$nin``           list of scalars     not ``$in`` (``[]`` matches everything)
``$exists``        bool                ``True``: the field is present and not null; ``False``: the opposite
``$contains``      scalar              the field is a list with an item equal to the operand, or the field
                                       is a string and the operand a string that is a substring of it
``$contains_any``  list of scalars     the field is a list with an item equal to some operand item
``$contains_all``  list of scalars     the field is a list holding every operand item (``[]``: any list)
``$text``          string              the field is a string containing the operand (case-sensitive)
``$not``           filter              the sub-filter does not match (missing fields included)
=================  ==================  ==============================================================

A scalar operand is a str, int (within 64 bits), finite float, or bool; ``None``, lists (except where a
list is expected) and dicts are rejected with :class:`~embeddix_core.errors.InvalidFilterError`, as is
every other malformed filter. Strings must be valid Unicode without NUL.

SQL
---
:meth:`Filter.to_sql` never puts user text into the SQL: values, JSON paths and field names all go as
bound parameters. Every fragment evaluates to 0 or 1, never NULL, so ``NOT`` inverts exactly (SQL's
three-valued logic would otherwise drop rows whose field is missing). A NULL column behaves as ``{}``.

A field is reached in one of two ways. Names of printable ASCII without ``"`` or ``\\`` use the JSON path
``$."name"`` (the fast way). Other names are looked up by scanning the
object's keys with ``json_each`` and comparing the decoded key, because SQLite 3.40 (Python 3.11's) has
no escape for ``"`` inside a path and matches path labels against the *raw* key text, so ``"café"``
would miss a key stored as ``"caf\\u00e9"`` by ``json.dumps``'s default ``ensure_ascii=True``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeAlias, cast

from ..errors import InvalidArgumentError, InvalidFilterError
from .filter_nodes import (
    Scalar,
    _AndNode,
    _FieldNode,
    _fields_of,
    _make_and,
    _make_field,
    _make_not,
    _make_or,
    _Node,
    _NotNode,
    _OrNode,
    _TrueNode,
)
from .filter_sql import _ORDERING_SQL, _Sql, _sql

__all__ = [
    "FIELD_OPERATORS",
    "LOGICAL_OPERATORS",
    "MAX_DEPTH",
    "MAX_FIELD_LENGTH",
    "Filter",
    "matches_all",
    "parse_filter",
]

FIELD_OPERATORS: Final = (
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$exists",
    "$contains",
    "$contains_any",
    "$contains_all",
    "$text",
)
LOGICAL_OPERATORS: Final = ("$and", "$or", "$not")
MAX_FIELD_LENGTH: Final = 256
# Nesting of $and/$or/$not. Deeper filters are not written by people; the cap keeps Python's recursion
# and SQLite's expression-depth limit (1000) far away.
MAX_DEPTH: Final = 32

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_SET_OPERATORS: Final = frozenset({"$in", "$nin", "$contains_any", "$contains_all"})
_COLUMN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")

Metadata: TypeAlias = Mapping[str, Any]
_Pred: TypeAlias = Callable[[Any], bool]
_Match: TypeAlias = Callable[[Metadata], bool]
_TypedKey: TypeAlias = tuple[int, Scalar]
_EMPTY: Final[Mapping[str, Any]] = {}
# Tuples, not ``int | float`` unions: isinstance with a tuple is faster, and matches() runs per record.
_SEQUENCE: Final = (list, tuple)
_NUMBER: Final = (int, float)


# --------------------------------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------------------------------
def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _at(name: str, loc: str) -> str:
    return f"at {name!r}" + (f" in {loc}" if loc else "")


def _where(loc: str) -> str:
    return f"in {loc}" if loc else "at the top level"


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise InvalidFilterError(
            f"{what} contains a NUL character (U+0000), which SQLite's JSON functions cannot compare; "
            f"got {_show(text)}; remove the NUL"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidFilterError(
            f"{what} must be valid Unicode text; got {_show(text)} with an unpaired surrogate"
        ) from exc


def _check_field_name(name: Any, loc: str) -> str:
    if not isinstance(name, str):
        raise InvalidFilterError(
            f"filter keys must be field names (str) or $and/$or/$not; got {_kind(name)} {_show(name)} "
            f"{_where(loc)}"
        )
    if not name:
        raise InvalidFilterError(f"filter field names must be non-empty strings; got '' {_where(loc)}")
    if len(name) > MAX_FIELD_LENGTH:
        raise InvalidFilterError(
            f"filter field names must be at most {MAX_FIELD_LENGTH} characters; got {len(name)} "
            f"({_show(name)}) {_where(loc)}"
        )
    _check_text(name, f"filter field name {_show(name)}")
    return name


def _scalar(value: Any, op: str, name: str, loc: str) -> Scalar:
    """Validate one scalar operand and normalise it (integral floats become ints)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidFilterError(
                f"filter operand of {op} {_at(name, loc)} must fit in 64 bits "
                f"({_INT64_MIN}..{_INT64_MAX}); got {value}"
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilterError(
                f"filter operand of {op} {_at(name, loc)} must be a finite number; got {value!r}"
            )
        # 1.0 and 1 compare alike in Python and SQLite; one spelling gives one canonical text.
        if value.is_integer() and _INT64_MIN <= value <= _INT64_MAX:
            return int(value)
        return float(value)
    if isinstance(value, str):
        _check_text(value, f"filter operand of {op} {_at(name, loc)}")
        return str(value)
    hint = ""
    if value is None:
        hint = "; to select records without the field use {'$exists': False}"
    elif isinstance(value, list | tuple):
        hint = "; to match any of several values use $in, to require several list items $contains_all"
    elif isinstance(value, Mapping):
        hint = "; nested objects are not part of the metadata model"
    raise InvalidFilterError(
        f"filter operand of {op} {_at(name, loc)} must be a str, int, float or bool; "
        f"got {_kind(value)} {_show(value)}{hint}"
    )


def _scalar_list(value: Any, op: str, name: str, loc: str) -> tuple[Scalar, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidFilterError(
            f"filter operand of {op} {_at(name, loc)} must be a list of str/int/float/bool; "
            f"got {_kind(value)} {_show(value)}"
        )
    items: dict[_TypedKey, Scalar] = {}
    for v in value:
        scalar = _scalar(v, op, name, loc)
        key = _typed_key(scalar)
        if key is not None:  # always, for a scalar; the check narrows the type
            items[key] = scalar
    # Set semantics: sorted and deduplicated, so the canonical text does not depend on the spelling.
    return tuple(items[k] for k in sorted(items))


def _parse_operator(name: str, op: Any, operand: Any, loc: str) -> _FieldNode:
    if op in ("$eq", "$ne", "$contains"):
        return _make_field(name, op, _scalar(operand, op, name, loc))
    if op in _ORDERING_SQL:
        value = _scalar(operand, op, name, loc)
        if isinstance(value, bool):
            raise InvalidFilterError(
                f"filter operand of {op} {_at(name, loc)} must be a number or a string; got bool {value!r}"
            )
        return _make_field(name, op, value)
    if op in _SET_OPERATORS:
        return _make_field(name, op, _scalar_list(operand, op, name, loc))
    if op == "$exists":
        if not isinstance(operand, bool):
            raise InvalidFilterError(
                f"filter operand of $exists {_at(name, loc)} must be True or False; "
                f"got {_kind(operand)} {_show(operand)}"
            )
        return _make_field(name, op, operand)
    if op == "$text":
        if not isinstance(operand, str):
            raise InvalidFilterError(
                f"filter operand of $text {_at(name, loc)} must be a string; "
                f"got {_kind(operand)} {_show(operand)}"
            )
        return _make_field(name, op, _scalar(operand, op, name, loc))
    raise InvalidFilterError(
        f"filter operator {_show(op)} {_at(name, loc)} is unknown; "
        f"expected one of {', '.join(FIELD_OPERATORS)}"
    )


def _parse_field(name: str, value: Any, loc: str) -> list[_Node]:
    if isinstance(value, Mapping):
        if not value:
            raise InvalidFilterError(
                f"filter value {_at(name, loc)} is an empty object; expected a value or operators such as "
                "{'$eq': ...}"
            )
        plain = [k for k in value if not (isinstance(k, str) and k.startswith("$"))]
        if plain:
            raise InvalidFilterError(
                f"filter value {_at(name, loc)} is an object with the non-operator key {_show(plain[0])}; "
                f"expected operators ({', '.join(FIELD_OPERATORS)}) or a scalar value; nested objects are "
                "not part of the metadata model"
            )
        return [_parse_operator(name, op, operand, loc) for op, operand in value.items()]
    return [_make_field(name, "$eq", _scalar(value, "$eq", name, loc))]


def _parse_node(obj: Any, loc: str, depth: int) -> _Node:
    if not isinstance(obj, Mapping):
        raise InvalidFilterError(
            f"a filter must be a dict (JSON object) such as {{'genre': 'news'}}; got {_kind(obj)} "
            f"{_show(obj)} {_where(loc)}"
        )
    if depth > MAX_DEPTH:
        raise InvalidFilterError(
            f"filter nesting of $and/$or/$not is deeper than {MAX_DEPTH} levels {_where(loc)}; flatten it"
        )
    nodes: list[_Node] = []
    for key, value in obj.items():
        if isinstance(key, str) and key.startswith("$"):
            here = f"{loc}.{key}" if loc else key
            if key in ("$and", "$or"):
                if not isinstance(value, list | tuple) or not value:
                    got = (
                        "an empty list"
                        if isinstance(value, list | tuple)
                        else f"{_kind(value)} {_show(value)}"
                    )
                    raise InvalidFilterError(
                        f"{key} {_where(loc)} expects a non-empty list of filters; got {got}"
                    )
                children = [_parse_node(v, f"{here}[{i}]", depth + 1) for i, v in enumerate(value)]
                nodes.append(_make_and(children) if key == "$and" else _make_or(children))
            elif key == "$not":
                if not isinstance(value, Mapping):
                    raise InvalidFilterError(
                        f"$not {_where(loc)} expects one filter (a dict); got {_kind(value)} {_show(value)}"
                    )
                nodes.append(_make_not(_parse_node(value, here, depth + 1)))
            elif key in FIELD_OPERATORS:
                raise InvalidFilterError(
                    f"filter operator {key!r} {_where(loc)} must be applied to a field, as in "
                    f"{{'price': {{{key!r}: ...}}}}; expected a field name or one of "
                    f"{', '.join(LOGICAL_OPERATORS)}"
                )
            else:
                raise InvalidFilterError(
                    f"filter operator {key!r} {_where(loc)} is unknown; expected a field name or one of "
                    f"{', '.join(LOGICAL_OPERATORS)}"
                )
        else:
            nodes.extend(_parse_field(_check_field_name(key, loc), value, loc))
    return _make_and(nodes)


# --------------------------------------------------------------------------------------------------
# Python evaluation: closures built once per filter
# --------------------------------------------------------------------------------------------------
def _typed_key(value: Any) -> _TypedKey | None:
    """A hashable key under which two values are equal exactly when the filter language says so."""
    # bool first: it is an int subclass, and True must not meet 1.
    if isinstance(value, bool):
        return (0, value)
    if isinstance(value, _NUMBER):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return None


def _equals(x: Scalar) -> _Pred:
    if isinstance(x, bool):
        return lambda y: y is x
    if isinstance(x, str):
        return lambda y: y == x and isinstance(y, str)
    return lambda y: y == x and isinstance(y, _NUMBER) and not isinstance(y, bool)


def _ordering(op: str, x: Scalar) -> _Pred:
    if isinstance(x, str):
        if op == "$gt":
            return lambda y: isinstance(y, str) and y > x
        if op == "$gte":
            return lambda y: isinstance(y, str) and y >= x
        if op == "$lt":
            return lambda y: isinstance(y, str) and y < x
        return lambda y: isinstance(y, str) and y <= x

    def number(y: Any) -> bool:
        return isinstance(y, _NUMBER) and not isinstance(y, bool)

    if op == "$gt":
        return lambda y: number(y) and y > x
    if op == "$gte":
        return lambda y: number(y) and y >= x
    if op == "$lt":
        return lambda y: number(y) and y < x
    return lambda y: number(y) and y <= x


def _member_of(items: tuple[Scalar, ...]) -> _Pred:
    keys = frozenset(_typed_key(v) for v in items)
    return lambda y: _typed_key(y) in keys


def _any_element(name: str, pred: _Pred) -> _Match:
    def match(md: Metadata) -> bool:
        value = md.get(name)
        if isinstance(value, _SEQUENCE):
            return any(map(pred, value))
        return pred(value)

    return match


def _equals_field(name: str, x: Scalar) -> _Match:
    """``$eq``, the most common test, with the scalar comparison inlined (one call less per record)."""
    pred = _equals(x)
    if isinstance(x, bool):

        def match_bool(md: Metadata) -> bool:
            value = md.get(name)
            if isinstance(value, _SEQUENCE):
                return any(map(pred, value))
            return value is x

        return match_bool
    if isinstance(x, str):

        def match_str(md: Metadata) -> bool:
            value = md.get(name)
            if isinstance(value, _SEQUENCE):
                return any(map(pred, value))
            return value == x and isinstance(value, str)

        return match_str

    def match_number(md: Metadata) -> bool:
        value = md.get(name)
        if isinstance(value, _SEQUENCE):
            return any(map(pred, value))
        return value == x and isinstance(value, _NUMBER) and not isinstance(value, bool)

    return match_number


def _compile_field(node: _FieldNode) -> _Match:
    name, op, operand, items = node.name, node.op, node.scalar, node.items
    if op in ("$eq", "$ne"):
        match = _equals_field(name, operand)
        return match if op == "$eq" else lambda md: not match(md)
    if op in _ORDERING_SQL:
        return _any_element(name, _ordering(op, operand))
    if op == "$exists":
        if operand:
            return lambda md: md.get(name) is not None
        return lambda md: md.get(name) is None
    if op == "$text":
        text = cast(str, operand)

        def has_text(md: Metadata) -> bool:
            value = md.get(name)
            return isinstance(value, str) and text in value

        return has_text
    if op == "$contains":
        x, equal = operand, _equals(operand)

        def contains(md: Metadata) -> bool:
            value = md.get(name)
            if isinstance(value, _SEQUENCE):
                return any(map(equal, value))
            return isinstance(x, str) and isinstance(value, str) and x in value

        return contains
    if op in ("$in", "$nin"):
        match = _any_element(name, _member_of(items))
        return match if op == "$in" else lambda md: not match(md)
    if op == "$contains_any":
        member = _member_of(items)

        def contains_any(md: Metadata) -> bool:
            value = md.get(name)
            return isinstance(value, _SEQUENCE) and any(map(member, value))

        return contains_any
    wanted = frozenset(_typed_key(v) for v in items)

    def contains_all(md: Metadata) -> bool:
        value = md.get(name)
        return isinstance(value, _SEQUENCE) and wanted <= {_typed_key(y) for y in value}

    return contains_all


def _compile(node: _Node) -> _Match:
    if isinstance(node, _FieldNode):
        return _compile_field(node)
    if isinstance(node, _NotNode):
        inner = _compile(node.child)
        return lambda md: not inner(md)
    if isinstance(node, _AndNode | _OrNode):
        parts = tuple(_compile(c) for c in node.children)
        if isinstance(node, _AndNode):
            if len(parts) == 2:
                a, b = parts
                return lambda md: a(md) and b(md)
            return lambda md: all(p(md) for p in parts)
        if len(parts) == 2:
            a, b = parts
            return lambda md: a(md) or b(md)
        return lambda md: any(p(md) for p in parts)
    return lambda md: True


# --------------------------------------------------------------------------------------------------
# Public surface: the Filter, its constructor and helpers. The AST is in filter_nodes.py, the SQL
# translation in filter_sql.py.
# --------------------------------------------------------------------------------------------------
def _quote_column(column: str) -> str:
    if not isinstance(column, str) or not _COLUMN.fullmatch(column):
        raise InvalidArgumentError(
            f"column must be a SQL identifier such as 'metadata' or 'records.metadata'; got {_show(column)}"
        )
    return ".".join(f'"{part}"' for part in column.split("."))


@dataclass(frozen=True, slots=True)
class Filter:
    """A validated metadata filter. Build it with :func:`parse_filter`, not directly.

    Two filters are equal (and hash alike) when their canonical texts are equal.

    Attributes:
        canonical: Deterministic JSON text of the normalised filter, for cache keys: object keys are
            sorted, several conditions become a sorted ``$and``, ``{"a": 1}`` is written
            ``{"a":{"$eq":1}}``, operand lists of ``$in``-like operators are sorted and deduplicated, and
            ``$not`` of ``$eq``/``$in``/``$exists`` becomes ``$ne``/``$nin``/``$exists`` of the opposite.
            ``parse_filter(json.loads(f.canonical))`` gives back an equal filter.
        fields: The metadata field names the filter reads.
    """

    # True for filters that also select on the document (``doc_filter.RecordFilter``): a write's
    # maintenance of cached label sets sees metadata only, so their sets cannot be kept current.
    reads_documents: ClassVar[bool] = False

    canonical: str
    fields: frozenset[str]
    _root: _Node = field(repr=False, compare=False)
    _match: _Match = field(repr=False, compare=False)
    _sql_cache: dict[str, _Sql] = field(default_factory=dict, repr=False, compare=False)

    def matches(self, metadata: Metadata | None) -> bool:
        """Evaluate the filter on one record's metadata in Python.

        Args:
            metadata: The record's metadata; None counts as ``{}``.

        Returns:
            True when the record matches; exactly the rows ``to_sql`` selects.
        """
        return self._match(_EMPTY if metadata is None else metadata)

    def to_sql(self, column: str = "metadata") -> tuple[str, list[Any]]:
        """Translate the filter into a SQLite ``WHERE`` fragment over a JSON text column.

        The fragment is 0 or 1 for every row (never NULL), uses only ``?`` placeholders, and needs
        SQLite's JSON1 functions (built into Python 3.11's sqlite3). A NULL column counts as ``{}``.

        Args:
            column: The JSON column, as ``name`` or ``table.name`` (plain SQL identifiers only).

        Returns:
            ``(sql, params)``: the fragment and a fresh list of its parameters, in order.

        Raises:
            InvalidArgumentError: ``column`` is not a plain identifier.
        """
        cached = self._sql_cache.get(column)
        if cached is None:
            cached = _sql(self._root, _quote_column(column))
            self._sql_cache[column] = cached
        return cached[0], list(cached[1])


def parse_filter(obj: Mapping[str, Any] | Filter | None) -> Filter | None:
    """Validate a filter expression and compile it.

    Args:
        obj: The filter as a dict (see the module docstring for the language), an already parsed
            :class:`Filter` (returned as is), or None.

    Returns:
        The compiled filter, or None when it matches everything (None, ``{}``, or e.g. ``{"$and": [{}]}``).

    Raises:
        InvalidFilterError: The filter is malformed; the message names the offending part.
    """
    if obj is None or isinstance(obj, Filter):
        return obj
    key = _memo_key(obj)
    if key is not None:
        got = _PARSED.get(key, _MISSING)
        if got is not _MISSING:
            return got  # type: ignore[return-value]
    root = _parse_node(obj, "", 0)
    flt = None if isinstance(root, _TrueNode) else _new_filter(root)
    if key is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = flt
    return flt


def _new_filter(root: _Node) -> Filter:
    return Filter(canonical=root.text, fields=_fields_of(root), _root=root, _match=_compile(root))


# Parsed filters by their spec's repr: an agent repeats the same few filters, and parsing one cold cost
# ~45 us of a 0.3 ms filtered search. Only specs built of plain JSON types (exact dict, list, str, int,
# float, bool, None) are kept: for those repr tells apart every spec that parses differently (1, 1.0
# and True; key order, which does not change the meaning, only makes another entry). A Filter is
# immutable (its SQL memo holds the same text for everyone), so one object serves every caller.
_PARSED: dict[str, Filter | None] = {}
_PARSED_MAX = 512
_MISSING = object()
_PLAIN = (str, int, float, bool, type(None))


def _memo_key(obj: Any) -> str | None:
    if type(obj) is not dict or not _plain(obj, 0):
        return None
    return repr(obj)


def _plain(value: Any, depth: int) -> bool:
    t = type(value)
    if t in _PLAIN:
        return True
    if depth > 8:
        return False
    if t is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    if t is list:
        return all(_plain(v, depth + 1) for v in value)
    return False


def matches_all(filter: Filter | None, metadata: Metadata | None) -> bool:
    """Evaluate an optional filter: None matches every record.

    Args:
        filter: A filter from :func:`parse_filter`, or None.
        metadata: The record's metadata; None counts as ``{}``.

    Returns:
        True when the record matches.
    """
    return True if filter is None else filter.matches(metadata)
