"""The filter AST: node types, the builders that normalise them, and their canonical text.

Split out of ``filters.py`` so that both back ends - Python closures (``filters.py``) and SQL
(``filter_sql.py``) - read one shared tree, and the SQL one needs nothing of the parser or of the Python
evaluation. Nodes are built only through the ``_make_*`` functions, which normalise (flatten, sort, dedupe,
push ``$not`` into operators) and set ``text``, the node's canonical JSON: equal filters get equal text,
which is what :attr:`Filter.canonical` and every cache key built on it rely on. The language itself is
described in ``filters.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, cast

Scalar: TypeAlias = str | int | float | bool
# $not of these is another operator, so equivalent spellings share one canonical text.
_NEGATION: Final = {"$eq": "$ne", "$ne": "$eq", "$in": "$nin", "$nin": "$in"}


@dataclass(frozen=True, slots=True)
class _TrueNode:
    text: str = "{}"


@dataclass(frozen=True, slots=True)
class _FieldNode:
    name: str
    op: str
    operand: Scalar | tuple[Scalar, ...]
    text: str

    @property
    def scalar(self) -> Scalar:
        """The operand of a single-value operator (the parser guarantees the shape)."""
        return cast(Scalar, self.operand)

    @property
    def items(self) -> tuple[Scalar, ...]:
        """The operand of a list operator ($in, $nin, $contains_any, $contains_all)."""
        return cast(tuple[Scalar, ...], self.operand)


@dataclass(frozen=True, slots=True)
class _AndNode:
    children: tuple[_Node, ...]
    text: str


@dataclass(frozen=True, slots=True)
class _OrNode:
    children: tuple[_Node, ...]
    text: str


@dataclass(frozen=True, slots=True)
class _NotNode:
    child: _Node
    text: str


_Node: TypeAlias = _TrueNode | _FieldNode | _AndNode | _OrNode | _NotNode
_TRUE: Final = _TrueNode()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _make_field(name: str, op: str, operand: Scalar | tuple[Scalar, ...]) -> _FieldNode:
    shown = list(operand) if isinstance(operand, tuple) else operand
    return _FieldNode(name, op, operand, _dumps({name: {op: shown}}))


def _make_and(children: Iterable[_Node]) -> _Node:
    flat: dict[str, _Node] = {}
    for child in children:
        if isinstance(child, _AndNode):
            flat.update((c.text, c) for c in child.children)
        elif not isinstance(child, _TrueNode):
            flat[child.text] = child
    if not flat:
        return _TRUE
    if len(flat) == 1:
        return next(iter(flat.values()))
    kids = tuple(flat[k] for k in sorted(flat))
    return _AndNode(kids, '{"$and":[' + ",".join(k.text for k in kids) + "]}")


def _make_or(children: Iterable[_Node]) -> _Node:
    flat: dict[str, _Node] = {}
    for child in children:
        if isinstance(child, _TrueNode):
            return _TRUE
        if isinstance(child, _OrNode):
            flat.update((c.text, c) for c in child.children)
        else:
            flat[child.text] = child
    if len(flat) == 1:
        return next(iter(flat.values()))
    kids = tuple(flat[k] for k in sorted(flat))
    return _OrNode(kids, '{"$or":[' + ",".join(k.text for k in kids) + "]}")


def _make_not(child: _Node) -> _Node:
    if isinstance(child, _NotNode):
        return child.child
    if isinstance(child, _FieldNode):
        if child.op in _NEGATION:
            return _make_field(child.name, _NEGATION[child.op], child.operand)
        if child.op == "$exists":
            return _make_field(child.name, "$exists", not child.operand)
    return _NotNode(child, '{"$not":' + child.text + "}")


def _fields_of(node: _Node) -> frozenset[str]:
    if isinstance(node, _FieldNode):
        return frozenset((node.name,))
    if isinstance(node, _AndNode | _OrNode):
        return frozenset().union(*(_fields_of(c) for c in node.children))
    if isinstance(node, _NotNode):
        return _fields_of(node.child)
    return frozenset()
