"""LlamaIndex ``MetadataFilters``, translated to the core filter language.

=========================  ====================================================================
LlamaIndex                 core
=========================  ====================================================================
``EQ`` ``NE``              ``$eq`` ``$ne`` (``value=None``: ``$exists`` false / true)
``GT`` ``GTE`` ``LT``      ``$gt`` ``$gte`` ``$lt`` ``$lte``
``LTE``
``IN`` ``NIN``             ``$in`` ``$nin`` (a scalar value is a one-item list)
``CONTAINS``               ``$contains``: a list field holding the value, or a string field
                           holding it as a substring
``ANY`` ``ALL``            ``$contains_any`` ``$contains_all`` (list fields)
``TEXT_MATCH``             ``$text``: a string field containing the value (case-sensitive)
``TEXT_MATCH_INSENSITIVE`` not expressible: the core has no case-insensitive match; raises
``IS_EMPTY``               the field is missing, null, ``""`` or ``[]``
``AND`` ``OR``             ``$and`` ``$or``
``NOT``                    ``$not`` of ``$or``: none of the filters matches (LlamaIndex's meaning)
=========================  ====================================================================

Comparisons follow the core: on a list field, ``EQ``/``GT``/``IN``... match when some element does,
and values of another type never match (no error).
"""

from __future__ import annotations

import sys
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from embeddix_core import InvalidFilterError

__all__ = ["to_core_filter"]

_SAME = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.CONTAINS: "$contains",
    FilterOperator.TEXT_MATCH: "$text",
}
_LISTS = {
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$contains_any",
    FilterOperator.ALL: "$contains_all",
}


def to_core_filter(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """Translate LlamaIndex metadata filters into the core filter language.

    Args:
        filters: The filters (nested ``MetadataFilters`` allowed), or None.

    Returns:
        The core filter, or None when there is nothing to filter on.

    Raises:
        InvalidFilterError: An operator the core cannot express (``TEXT_MATCH_INSENSITIVE``), or a
            value of the wrong shape for its operator.
    """
    if filters is None or not filters.filters:
        return None
    return _group(filters)


def _group(filters: MetadataFilters) -> dict[str, Any]:
    parts = [_group(f) if isinstance(f, MetadataFilters) else _one(f) for f in filters.filters]
    if not parts:
        return {}
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:
        return {"$not": parts[0] if len(parts) == 1 else {"$or": parts}}
    if len(parts) == 1:
        return parts[0]
    return {"$and" if condition == FilterCondition.AND else "$or": parts}


def _one(f: MetadataFilter) -> dict[str, Any]:
    key, op, value = f.key, FilterOperator(f.operator), f.value
    if op == FilterOperator.IS_EMPTY:
        return _is_empty(key)
    if op == FilterOperator.TEXT_MATCH_INSENSITIVE:
        raise InvalidFilterError(
            f"filter on {key!r}: TEXT_MATCH_INSENSITIVE cannot be expressed in the Embeddix filter language "
            "(it has no case-insensitive match); use TEXT_MATCH on a lower-cased copy of the field"
        )
    if value is None:
        if op == FilterOperator.EQ:
            return {key: {"$exists": False}}
        if op == FilterOperator.NE:
            return {key: {"$exists": True}}
        raise InvalidFilterError(f"filter on {key!r}: operator {op.name} needs a value; got None")
    if op in _LISTS:
        return {key: {_LISTS[op]: list(value) if isinstance(value, list) else [value]}}
    if isinstance(value, list):
        raise InvalidFilterError(
            f"filter on {key!r}: operator {op.name} takes one value; got a list (use IN or ANY for lists)"
        )
    return {key: {_SAME[op]: value}}


def _is_empty(key: str) -> dict[str, Any]:
    # The core has no "empty" operator, so spell it out: missing/null, the string "", or a list with no
    # element. "Is a list" is $contains_all [] (true for every list); "has an element" is an element that
    # is some string, some number or some bool.
    is_list: dict[str, Any] = {key: {"$contains_all": []}}
    has_element: dict[str, Any] = {
        "$or": [
            {key: {"$gte": ""}},
            {key: {"$gte": -sys.float_info.max}},
            {key: {"$in": [True, False]}},
        ]
    }
    return {
        "$or": [
            {key: {"$exists": False}},
            {"$and": [{key: {"$eq": ""}}, {"$not": is_list}]},
            {"$and": [is_list, {"$not": has_element}]},
        ]
    }
