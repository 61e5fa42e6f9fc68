"""Giving freed memory back to the operating system.

Why: glibc's malloc keeps memory freed by the C libraries under us (hnswlib's graph during a resize,
SQLite's statements and page cache, numpy's temporaries in a calibration pass) in its heaps, and the
background threads get heaps of their own. On 30,000 x 384 records ingested with documents, 2,200 bytes
per vector of the process's resident memory was such free memory; ``malloc_trim(0)`` returned it. We call
it where a burst of allocations has just ended (a calibration pass, a write, a close), at most every
``_EVERY`` seconds: it walks the heaps (measured: 1 ms after ingesting 30,000 records).

A trim cannot return what glibc no longer frees at all: by default it raises its mmap threshold (up to
32 MiB) each time a large block mmapped on its own is freed, after which buffers of that size (a batch's
vectors, a calibration chunk, numpy temporaries) come from the heap and stay there once freed, until the
next trim. :func:`limit_mmap_threshold` fixes the threshold (``EmbeddixSettings.malloc_mmap_threshold``,
256 KiB by default) so such buffers are mapped on their own and unmapped the moment they are freed.
Measured on 100,000 x 384 records ingested with documents (an ad-hoc run of the benchmark's ingest): right
after the ingest, 2,476-2,628 bytes per vector resident with glibc's dynamic threshold; with the HNSW
graph's 1.5x growth as well, 2,272 at 256 KiB, 2,277 at 1 MiB, 2,330 at 4 MiB; an SQ8 collection
(``benchmarks/quant_bench.py``), 766 at 256 KiB and 822 at 1 MiB. A mapped block costs a system call and
a page fault per 4 KiB touched; the one search-time allocation that large is FAISS HNSW's visited table
(one byte per vector, made per search), and an ad-hoc FAISS HNSW search on 600,000 vectors measured p50
59.4 us at 256 KiB against 57.2 us at 1 MiB and 58.6 us with glibc's default: noise-level.

Elsewhere than glibc (macOS, musl) there is no such call and this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time

__all__ = ["limit_mmap_threshold", "trim"]

_EVERY = 0.5
_lock = threading.Lock()
_last = 0.0
_trim = None
_mallopt = None
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_threshold: int | None = None  # what limit_mmap_threshold last set
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _trim = getattr(_libc, "malloc_trim", None)
        _mallopt = getattr(_libc, "mallopt", None)
    except OSError:  # no glibc (musl): nothing to call
        _trim = _mallopt = None


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


def limit_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (0: leave glibc's dynamic threshold); True if it was set.

    Process-wide, like the allocator it configures; set once per value (opening more databases with the
    same setting changes nothing). See the module docstring for why.
    """
    global _threshold
    if _mallopt is None or nbytes <= 0:
        return False
    with _lock:
        if _threshold == nbytes:
            return True
        if not _mallopt(_M_MMAP_THRESHOLD, int(nbytes)):
            return False
        _threshold = nbytes
    return True
