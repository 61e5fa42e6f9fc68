"""One page-cache budget for every SQLite connection of the process (see :func:`share_page_cache_budget`)."""

from __future__ import annotations

import sqlite3
import threading

__all__ = ["share_page_cache_budget"]

_HEAP_LOCK = threading.Lock()
_HEAP_BUDGETS: dict[int, int] = {}  # id(store) -> its page-cache budget
_HEAP_HEADROOM = 4 << 20  # statements, schemas and FTS buffers on top of the page caches


def share_page_cache_budget(owner: object, cache_bytes: int | None) -> None:
    """Hold every connection of the process to one page-cache budget (None: ``owner`` closed).

    Each connection has its own page cache (the writer, one reader per searching thread, the background
    calibration's), and each used to grow to 64 MiB: at 100K x 384 with documents that was most of the
    process's memory. SQLite's soft heap limit is process-wide: above it, page caches recycle their
    least recently used clean pages instead of growing. It is kept at the sum of the open stores'
    budgets plus ``_HEAP_HEADROOM`` (a limit, not an allocation). A limit the application set itself
    and that is larger is left alone.
    """
    with _HEAP_LOCK:
        before = sum(_HEAP_BUDGETS.values()) + _HEAP_HEADROOM if _HEAP_BUDGETS else 0
        if cache_bytes is None:
            _HEAP_BUDGETS.pop(id(owner), None)
        else:
            _HEAP_BUDGETS[id(owner)] = max(cache_bytes, 1 << 20)
        limit = sum(_HEAP_BUDGETS.values()) + _HEAP_HEADROOM if _HEAP_BUDGETS else 0
        conn = sqlite3.connect(":memory:")
        try:
            current = int(conn.execute("PRAGMA soft_heap_limit").fetchone()[0])
            if current in (0, before) or current < limit:  # ours (or none): follow the open stores
                conn.execute(f"PRAGMA soft_heap_limit={limit}")
        finally:
            conn.close()
