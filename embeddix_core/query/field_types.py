"""Which kinds of values each metadata field holds, so a filter that compares with another kind is an error.

Why: the filter language compares numbers only with numbers, strings with strings, booleans with
booleans, and a mismatch matches nothing (``filters.py``). Against stored data that is almost always a
mistake: ``{"year": {"$gt": "2020"}}`` on integer years returns ``[]`` with no hint, in the core and
through every adapter, where Chroma says "Expected operand value to be an int or a float". So before a
filter runs, each comparison is checked against the kinds the field holds in this collection; when no
stored value could ever compare with the operand, :class:`~embeddix_core.errors.InvalidFilterError`
names the field, the operator, the value and the stored kinds (an MCP client gets it as a tool error it
can act on).

Kinds: ``number`` (int or float), ``string``, ``boolean``; a list field counts its items' kinds (an
element matches, see ``filters.py``). A field no record holds is not an error (it may simply not be
written yet), nor is one that holds several kinds, one of them the operand's.

Where the kinds come from: per field, once, two SQLite JSON queries over the collection (``load``), then
kept current by every write of this process (``note``); a replay of other processes' writes clears
them (``clear``), and they are read again on next use. Deletes never remove a kind: a stale kind only
makes the check more lenient, never wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import InvalidFilterError
from .filter_nodes import _AndNode, _FieldNode, _Node
from .filters import Filter

__all__ = ["FieldTypes", "kind_of"]

# SQLite json_type names -> kinds
SQL_KINDS = {"integer": "number", "real": "number", "text": "string", "true": "boolean", "false": "boolean"}
# operators that need an element equal to / ordered against the operand ($ne and $nin of a kind the
# field never holds match every record: not an empty answer, so not checked)
_COMPARED = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte", "$in", "$contains"})


def kind_of(value: Any) -> str | None:
    """The kind of a scalar metadata value (None for anything else)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _kinds_of(value: Any) -> Iterable[str]:
    if isinstance(value, list):
        for item in value:
            kind = kind_of(item)
            if kind is not None:
                yield kind
    else:
        kind = kind_of(value)
        if kind is not None:
            yield kind


class FieldTypes:
    """The kinds each field holds in one collection.

    Args:
        load: ``load(field)`` -> the SQLite ``json_type`` names the field's values and list items have
            in the store.
    """

    def __init__(self, load: Callable[[str], set[str]]) -> None:
        self._load = load
        self._kinds: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def kinds(self, field: str) -> frozenset[str]:
        """The kinds ``field`` holds (read from the store on first use)."""
        with self._lock:
            got = self._kinds.get(field)
            if got is not None:
                return frozenset(got)
        loaded = {SQL_KINDS[t] for t in self._load(field) if t in SQL_KINDS}
        with self._lock:
            # a write noted meanwhile added to what the store said: keep both
            got = self._kinds.setdefault(field, set())
            got |= loaded
            return frozenset(got)

    def note(self, metadatas: Iterable[Mapping[str, Any] | None]) -> None:
        """Add the kinds of written records' values (fields not read yet are left to ``load``)."""
        with self._lock:
            if not self._kinds:
                return
            for meta in metadatas:
                if not meta:
                    continue
                for field, value in meta.items():
                    known = self._kinds.get(field)
                    if known is not None:
                        known.update(_kinds_of(value))

    def clear(self) -> None:
        """Forget every field (a replay of other processes' writes)."""
        with self._lock:
            self._kinds.clear()

    def check(self, flt: Filter) -> None:
        """Raise when a comparison every match must pass can match no stored value (no common kind).

        Raises:
            InvalidFilterError: naming the field, the operator, the value and the kinds stored.
        """
        for node in _field_nodes(flt._root):
            if node.op not in _COMPARED:
                continue
            operands = node.items if isinstance(node.operand, tuple) else (node.scalar,)
            wanted = {k for k in map(kind_of, operands) if k is not None}
            if not wanted:
                continue
            stored = self.kinds(node.name)
            if stored and not (wanted & stored):
                # before failing a caller, ask the store again: another process may have written the
                # kind since this process last replayed its writes
                with self._lock:
                    self._kinds.pop(node.name, None)
                stored = self.kinds(node.name)
            if stored and not (wanted & stored):
                value = list(node.operand) if isinstance(node.operand, tuple) else node.operand
                have = " and ".join(sorted(stored))
                raise InvalidFilterError(
                    f"filter {{{node.name!r}: {{{node.op!r}: {value!r}}}}} compares a "
                    f"{' or '.join(sorted(wanted))} with field {node.name!r}, whose stored values are "
                    f"{have}: it could match nothing. Pass a {have} value{_example(operands, stored)}"
                )


def _example(operands: Iterable[Any], stored: frozenset[str]) -> str:
    """`` (e.g. 2020, not '2020')`` when a string operand spells a number the field could hold."""
    if stored != {"number"}:
        return ""
    for x in operands:
        if isinstance(x, str):
            try:
                num = float(x)
            except ValueError:
                continue
            shown = int(num) if num.is_integer() else num
            return f" (e.g. {shown!r}, not {x!r})"
    return ""


def _field_nodes(node: _Node) -> Iterable[_FieldNode]:
    """The comparisons every match must pass: the filter itself or the members of its ``$and`` chains.

    Under ``$or`` a comparison is one alternative (adapters spell "any kind" as one per kind, e.g.
    LlamaIndex's IS_EMPTY), and under ``$not`` a comparison that can never hold makes the filter match:
    neither is a filter that can only return nothing, so neither is checked.
    """
    if isinstance(node, _FieldNode):
        yield node
    elif isinstance(node, _AndNode):
        for child in node.children:
            yield from _field_nodes(child)
