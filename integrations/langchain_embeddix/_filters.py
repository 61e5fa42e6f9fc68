"""LangChain's dict filters, translated to the core filter language.

LangChain vector stores take Mongo-like dicts, and the core language is Mongo-like too, so most of a
filter passes through unchanged (``{"source": "x"}``, ``{"page": {"$gte": 3}}``, ``$and``/``$or``/``$not``,
``$in``, ``$nin``, ``$exists``, ``$contains``...; the core validates it and names a bad part). Two
conventions of other LangChain stores are translated:

* ``{"field": [a, b]}`` (FAISS, InMemory): ``{"field": {"$in": [a, b]}}``.
* ``{"field": {"$between": [low, high]}}`` (PGVector): ``{"field": {"$gte": low, "$lte": high}}``.

``$like``/``$ilike`` (PGVector) have no core equivalent and are rejected with a hint; callable filters
(``InMemoryVectorStore``) cannot run inside the store and are rejected too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embeddix_core import InvalidFilterError

__all__ = ["to_core_filter"]

_UNSUPPORTED = {
    "$like": "use '$text' for a case-sensitive substring match",
    "$ilike": "the core has no case-insensitive match; store a lower-cased copy and use '$text'",
}


def to_core_filter(filter: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Translate a LangChain metadata filter into the core filter language.

    Args:
        filter: A dict filter, or None.

    Returns:
        The core filter, or None for "every record".

    Raises:
        InvalidFilterError: The filter is not a dict, or uses an operator the core cannot express.
    """
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        raise InvalidFilterError(
            f"filter must be a dict such as {{'source': 'a.txt'}}; got {type(filter).__name__} "
            "(callable filters are not supported: the filter runs inside the store)"
        )
    return _node(filter)


def _node(obj: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ("$and", "$or") and isinstance(value, list):
            out[key] = [_node(v) if isinstance(v, Mapping) else v for v in value]
        elif key == "$not" and isinstance(value, Mapping):
            out[key] = _node(value)
        elif isinstance(key, str) and key.startswith("$"):
            out[key] = value  # the core rejects unknown top-level operators with its own message
        elif isinstance(value, list):
            out[key] = {"$in": value}
        elif isinstance(value, Mapping):
            out[key] = _field(key, value)
        else:
            out[key] = value
    return out


def _field(name: str, ops: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op, operand in ops.items():
        if op in _UNSUPPORTED:
            raise InvalidFilterError(f"filter on {name!r}: {op!r} is not supported; {_UNSUPPORTED[op]}")
        if op == "$between":
            if not isinstance(operand, list | tuple) or len(operand) != 2:
                raise InvalidFilterError(f"filter on {name!r}: '$between' takes [low, high]; got {operand!r}")
            out["$gte"], out["$lte"] = operand
        else:
            out[op] = operand
    return out
