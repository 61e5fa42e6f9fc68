"""The compiled hot path (``_hits.c``), or None for each function when the extension is not built.

The extension is optional (``setup.py`` builds it when a C compiler is present); every function here
has a Python reference its callers fall back to, and ``tests/unit/test_native_hits.py`` checks both
agree:

* ``rows_to_hits``: hits from the packed row cache (``cache/row_cache.py``; reference: ``RowCache.get``
  and ``SearchExecutor.to_hits``).
* ``rows_get``: rows from the packed row cache when all are there (reference: ``RowCache.get``'s loop).
* ``kept_to_hits``: hits from a result-cache entry's rows (reference: the loop in ``cached_search.py``).
* ``prepare_query``: ``prepared_query``'s usual case, checks included, or None for the Python path
  (reference: ``as_query`` and ``unit_query``).
* ``field_sums``: a record's matched field preferences (reference: ``ProfileState._sums_of``'s loop).
* ``make_hits``: a :class:`~embeddix_core.types.Hits` without its Python ``__init__`` (reference: the
  constructor; ``new_hits`` is whichever of the two is there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .types import Hit, Hits

__all__ = ["field_sums", "kept_to_hits", "make_hits", "new_hits", "prepare_query", "rows_get", "rows_to_hits"]

rows_to_hits: Callable[..., list[Hit] | None] | None
rows_get: Callable[..., dict[int, Any] | None] | None
kept_to_hits: Callable[[list[tuple[Any, ...]], str, Callable[[Any], Any]], list[Hit]] | None
prepare_query: Callable[[Any, int, bool], Any] | None
field_sums: Callable[..., tuple[float, float] | None] | None
make_hits: Callable[[list[Hit], bool, Any], Hits] | None

try:
    from ._hits import (
        field_sums,
        kept_to_hits,
        make_hits,
        prepare_query,
        rows_get,
        rows_to_hits,
        setup,
        setup_hits,
        setup_query,
    )
except ImportError:  # pragma: no cover - built without a C compiler
    rows_to_hits = rows_get = kept_to_hits = field_sums = make_hits = prepare_query = None
else:
    # the slots a hit is built through, in the order _hits.c fills them
    setup(Hit, ("id", "score", "distance", "document", "metadata", "metric", "vector", "rank_score"))
    setup_hits(Hits, ("partial", "plan"))
    setup_query(np.ndarray, np.empty, np.dtype(np.float32))


def _hits_reference(items: list[Hit], partial: bool, plan: Any) -> Hits:
    return Hits(items, partial=partial, plan=plan)


# Hits(items, partial=partial, plan=plan), positional: the compiled constructor when built. Search
# paths build one per search, and the constructor's Python frame costs ~6 us on cold caches.
new_hits: Callable[[list[Hit], bool, Any], Hits] = make_hits if make_hits is not None else _hits_reference
