"""Stored rows (id, document, metadata) packed in memory in front of SQLite, for building hits.

Why: a search returns hits with their documents and metadata, and turning 10 labels into rows cost
~100 us from SQLite when the rows were not in its page cache (a new query's hits usually are not: ten
B-tree descents and a page read each), where the HNSW search itself takes ~170 us at 100K x 384. Rows
written by this process are put here at the commit (write-through), and rows read from SQLite on a miss
are kept, so a hit's row costs ~1 us.

Layout, chosen for bytes per row (a dict of row tuples costs ~240 bytes of overhead per row, more than
a typical row): rows are appended to fixed-size chunks (``bytearray``, allocated once, so growth never
copies), each as a 16-byte header (encoded length; characters of id, document and metadata, or
``_NONE``) and the three strings UTF-8 encoded back to back. A two-level table (page number -> an
``array('q')`` of 64 offsets) maps a label to its row's global offset; -1 is "not here". Labels are
global to the store, so one collection's labels can be sparse; the pages are counted in the budget.

Eviction is by chunk, oldest first: dropping a chunk makes every offset below the first live chunk
stale without touching them, so an eviction costs nothing per row. A row read again is appended anew.

Correctness: labels are never reused by the store, so a row can only go stale when its record is
updated, upserted or deleted; the collection discards those labels after the commit (and puts the new
row when it knows it whole). A reader that fetched a row before such a write could still insert the old
row after the discard; a generation counter, bumped by every discard, makes it drop the row instead.
"""

from __future__ import annotations

import struct
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .. import _native
from ..types import Hit, StoredRow

__all__ = ["RowCache"]

Row = StoredRow

_HEAD = struct.Struct("<IIII")  # encoded bytes, then characters of id, document, metadata
_NONE = 0xFFFFFFFF  # a None document or metadata
_PAGE_BITS = 6
_PAGE_MASK = (1 << _PAGE_BITS) - 1
_PAGE_BYTES = (8 << _PAGE_BITS) + 120  # the offsets, the array object and its dict slot
_MAX_CHUNK = 1 << 20
_MIN_CHUNK = 1 << 10


class RowCache:
    """label -> store row, bounded by the bytes it holds (see the module docstring).

    Args:
        loader: Fetches rows for labels: ``loader(labels) -> {label: StoredRow}`` (absent labels are
            left out).
        max_bytes: Budget for the packed rows and their label table (0 disables the cache: every call
            goes to the loader).
    """

    def __init__(self, loader: Callable[[Sequence[int]], dict[int, Row]], max_bytes: int) -> None:
        self._loader = loader
        self._max = max(0, int(max_bytes))
        # a chunk is an eighth of the budget at most, so eviction frees memory in small steps
        self._chunk = max(_MIN_CHUNK, min(_MAX_CHUNK, self._max // 8))
        self._max_row = self._chunk // 4  # larger rows are served by the loader every time
        self._lock = threading.Lock()
        self._gen = 0
        self._reset()

    def _reset(self) -> None:
        self._chunks: list[bytearray] = []
        self._live: list[int] = []  # valid rows in each chunk
        self._first = 0  # global number of self._chunks[0]
        self._pos = self._chunk  # write position in the last chunk (full: start a new one)
        self._pages: dict[int, array[int]] = {}
        self._count = 0

    # -- reads -------------------------------------------------------------------------------------
    def get(self, labels: Sequence[int]) -> dict[int, Row]:
        """Rows for ``labels`` (deleted labels are absent from the result)."""
        fast = _native.rows_get
        if fast is not None and self._max:
            with self._lock:  # every row here: one compiled call (_hits.c), else the loop below
                found = fast(self._pages, self._chunks, self._first, self._chunk, labels, Row)
            if found is not None:
                return found
        out: dict[int, Row] = {}
        missing: list[int] = []
        size = self._chunk
        with self._lock:
            pages = self._pages
            chunks = self._chunks
            first = self._first
            low = first * size
            for label in labels:
                page = pages.get(label >> _PAGE_BITS)
                off = -1 if page is None else page[label & _PAGE_MASK]
                if off < low:
                    missing.append(label)
                    continue
                chunk = chunks[off // size - first]
                pos = off % size
                n, a, b, c = _HEAD.unpack_from(chunk, pos)
                pos += 16
                text = chunk[pos : pos + n].decode()
                doc = None if b == _NONE else text[a : a + b]
                meta = None if c == _NONE else text[a + (0 if b == _NONE else b) :]
                out[label] = Row(label, text[:a], doc, meta, None)
        if missing:
            gen = self._gen
            fetched = self._loader(missing)
            out.update(fetched)
            if self._max:
                with self._lock:
                    if gen == self._gen:  # else a write discarded rows meanwhile: these may predate it
                        self._append(fetched.values(), keep_present=True)
        return out

    def hits(
        self,
        labels: Sequence[int],
        dists: Sequence[float],
        l2: bool,
        metric: str,
        loads: Callable[[str], Any],
        raw: list[tuple[Any, ...]] | None,
        rank_scores: Sequence[float] | None = None,
    ) -> list[Hit] | None:
        """Hits for ``labels`` built in one compiled call (``_hits.c``), or None: the extension is not
        built, or a label's row is not here (the caller then builds them from :meth:`get`).

        Each hit is what ``SearchExecutor.to_hits`` makes of the row (score from the distance as there,
        metadata parsed by ``loads``); with ``raw``, each hit's (id, score, distance, document, metadata
        JSON) is appended to it; ``rank_scores`` become the hits' ``rank_score``.
        """
        build = _native.rows_to_hits
        if build is None or not self._max:
            return None
        with self._lock:
            return build(
                self._pages,
                self._chunks,
                self._first,
                self._chunk,
                labels,
                dists,
                l2,
                metric,
                loads,
                raw,
                rank_scores,
            )

    # -- writes ------------------------------------------------------------------------------------
    def put(self, rows: Iterable[Row]) -> None:
        """Keep rows just committed (write-through; their labels were discarded first if replaced)."""
        if self._max:
            with self._lock:
                self._append(rows, keep_present=False)

    def warm(self, batches: Iterable[list[Row]], stop: Callable[[], bool]) -> int:
        """Keep rows read from the store (newest first) until the budget is nearly full; returns how many.

        ``batches`` come from one statement, so one read snapshot: once a write has discarded rows, every
        later batch may predate it, and the warm stops. It also stops when ``stop()`` says so.
        """
        kept = 0
        if not self._max:
            return 0
        gen = self._gen
        for rows in batches:
            if stop():
                break
            with self._lock:
                if gen != self._gen:
                    break
                before = self._count
                self._append(rows, keep_present=True)
                kept += self._count - before
                if self._bytes() + self._chunk > self._max:
                    break  # full: rows read later would only push out the newer ones
        return kept

    def discard(self, labels: Iterable[int]) -> None:
        """Forget rows whose record changed or was deleted (call after the write committed)."""
        with self._lock:
            self._gen += 1
            for label in labels:
                self._unset(int(label))

    def clear(self) -> None:
        with self._lock:
            self._gen += 1
            self._reset()

    # -- internals (under the lock) ----------------------------------------------------------------
    def _offset(self, label: int) -> int:
        page = self._pages.get(label >> _PAGE_BITS)
        off = -1 if page is None else page[label & _PAGE_MASK]
        return off if off >= self._first * self._chunk else -1

    def _unset(self, label: int) -> None:
        off = self._offset(label)
        if off >= 0:
            self._pages[label >> _PAGE_BITS][label & _PAGE_MASK] = -1
            self._live[off // self._chunk - self._first] -= 1
            self._count -= 1

    def _append(self, rows: Iterable[Row], *, keep_present: bool) -> None:
        size = self._chunk
        for row in rows:
            label = row.label
            if self._offset(label) >= 0:
                if keep_present:
                    continue  # another reader (or the writer) kept it first
                self._unset(label)
            rid, doc, meta = row.id, row.document, row.metadata
            data = (rid + (doc or "") + (meta or "")).encode()
            n = len(data) + 16
            if n > self._max_row:
                continue
            key = label >> _PAGE_BITS
            page = self._pages.get(key)
            if page is None:
                if (len(self._pages) + 1) * _PAGE_BYTES > self._max // 2:
                    self._compact_pages()
                page = self._pages[key] = array("q", [-1]) * (1 << _PAGE_BITS)
            if self._pos + n > size:
                self._new_chunk()
            chunk = self._chunks[-1]
            pos = self._pos
            _HEAD.pack_into(
                chunk,
                pos,
                len(data),
                len(rid),
                _NONE if doc is None else len(doc),
                _NONE if meta is None else len(meta),
            )
            chunk[pos + 16 : pos + n] = data
            self._pos = pos + n
            page[label & _PAGE_MASK] = (self._first + len(self._chunks) - 1) * size + pos
            self._live[-1] += 1
            self._count += 1

    def _new_chunk(self) -> None:
        self._chunks.append(bytearray(self._chunk))
        self._live.append(0)
        self._pos = 0
        while len(self._chunks) > 1 and self._bytes() > self._max:
            self._chunks.pop(0)
            self._count -= self._live.pop(0)
            self._first += 1

    def _compact_pages(self) -> None:
        """Drop pages whose every offset went stale; if the table alone is still half the budget (labels
        spread thin over a huge range), start over rather than let the table crowd out the rows."""
        low = self._first * self._chunk
        self._pages = {key: page for key, page in self._pages.items() if max(page) >= low}
        if len(self._pages) * _PAGE_BYTES > self._max // 4:
            self._reset()

    def _bytes(self) -> int:
        return len(self._chunks) * self._chunk + len(self._pages) * _PAGE_BYTES

    @property
    def nbytes(self) -> int:
        """Bytes held: the chunks allocated and the label table."""
        return self._bytes()

    def __len__(self) -> int:
        return self._count
