"""Giving freed memory back to the operating system.

Why: glibc's malloc keeps memory freed by the C libraries under us (hnswlib's graph during a resize,
SQLite's statements and page cache, numpy's temporaries in a calibration pass) in its heaps, and the
background threads get heaps of their own. On 30,000 x 384 records ingested with documents, 2,200 bytes
per vector of the process's resident memory was such free memory; ``malloc_trim(0)`` returned it. We call
it where a burst of allocations has just ended (a calibration pass, a write, a close), at most every
``_EVERY`` seconds: it walks the heaps (measured: 1 ms after ingesting 30,000 records).

Elsewhere than glibc (macOS, musl) there is no such call and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time

__all__ = ["trim"]

_EVERY = 0.5
_lock = threading.Lock()
_last = 0.0
_trim = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _trim = getattr(_libc, "malloc_trim", None)
    except OSError:  # no glibc (musl): nothing to call
        _trim = None


def trim(*, force: bool = False) -> bool:
    """Return free heap memory to the OS (glibc only); True if it ran.

    Args:
        force: Run even if it ran less than ``_EVERY`` seconds ago.
    """
    global _last
    if _trim is None:
        return False
    now = time.monotonic()
    with _lock:
        if not force and now - _last < _EVERY:
            return False
        _last = now
    _trim(0)
    return True
