"""The compiled hot path (``_hits.c``), or None for each function when the extension is not built.

The extension is optional (``setup.py`` builds it when a C compiler is present); every function here
has a Python reference its callers fall back to, and ``tests/unit/test_native_hits.py`` checks both
agree:

* ``rows_to_hits``: hits from the packed row cache (``cache/row_cache.py``; reference: ``RowCache.get``
  and ``SearchExecutor.to_hits``).
* ``rows_get``: rows from the packed row cache when all are there (reference: ``RowCache.get``'s loop).
* ``kept_to_hits``: hits from a result-cache entry's rows (reference: the loop in ``cached_search.py``).
* ``query_norm``: a query's norm and unit-length copy (reference: ``as_query`` and ``unit_query``).
* ``field_sums``: a record's matched field preferences (reference: ``ProfileState._sums_of``'s loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .types import Hit

__all__ = ["field_sums", "kept_to_hits", "query_norm", "rows_get", "rows_to_hits"]

rows_to_hits: Callable[..., list[Hit] | None] | None
rows_get: Callable[..., dict[int, Any] | None] | None
kept_to_hits: Callable[[list[tuple[Any, ...]], str, Callable[[Any], Any]], list[Hit]] | None
query_norm: Callable[[Any, Any], float] | None
field_sums: Callable[..., tuple[float, float] | None] | None

try:
    from ._hits import field_sums, kept_to_hits, query_norm, rows_get, rows_to_hits, setup
except ImportError:  # pragma: no cover - built without a C compiler
    rows_to_hits = rows_get = kept_to_hits = query_norm = field_sums = None
else:
    # the slots a hit is built through, in the order _hits.c fills them
    setup(Hit, ("id", "score", "distance", "document", "metadata", "metric", "vector", "rank_score"))
