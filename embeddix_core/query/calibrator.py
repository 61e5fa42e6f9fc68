"""The calibrator: measures one collection's recall/latency curve, in the background, on real queries.

Why: a recall target (``search(recall=0.95)``) means nothing without a measured curve of recall against
beam width on *this* collection. The curve is measured against the exact answer (brute force over the
stored vectors) for a ladder of ef values (``planner.calibrate``), and kept next to the index.

What it measures on: a reservoir sample of the queries the collection answered (real queries predict the
recall users get far better than stored vectors), or, until enough were seen, sampled records moved off
themselves by their nearest-neighbour distance, so they behave like unseen queries.

When: once an approximate index holds ``calibration_min_count`` records, again when it grew, shrank or
was rewritten by more than 20% (``Calibration.stale``), and once more when the reservoir first fills
with real queries. Always on a background thread at the lowest CPU priority, after writes paused for
``calibration_quiet_s``: calibrating mid-bulk-load would take CPU from it and measure a curve that is
stale a moment later. A new curve is published under the collection's write lock; ``on_curve`` then
runs (the collection drops plans and cached results, which came from the old beam widths).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EmbeddixSettings
from ..index.base import VectorIndex, exact_topk_over
from ..storage._atomic import atomic_write_bytes
from .planner import Calibration, calibrate

__all__ = ["Calibrator"]

log = logging.getLogger("embeddix")

_RESERVOIR = 512


class Calibrator:
    """The recall/latency curve of one collection and the thread that keeps it current.

    Args:
        name: The collection's name (for messages and the thread's name).
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"`` (the index's).
        normalize: Whether vectors are unit length (cosine).
        settings: Process settings (sample size, thresholds, quiet time).
        current: Returns (index, applied seq) as the collection holds them now.
        vectors: Loads index-space vectors of stored labels from the store (exact truth).
        write_lock: The collection's write lock (a curve is published under it).
        on_curve: Called under the write lock after a new curve is published.
        path: Where the curve is saved (None: in memory only).
        identity: Store id, collection id and index parameters a saved curve must match.
    """

    def __init__(
        self,
        name: str,
        dim: int,
        space: str,
        normalize: bool,
        settings: EmbeddixSettings,
        current: Callable[[], tuple[VectorIndex, int]],
        vectors: Callable[[np.ndarray], np.ndarray],
        write_lock: threading.RLock,
        on_curve: Callable[[], None],
        path: Path | None,
        identity: dict[str, Any],
    ) -> None:
        self.name = name
        self._dim = dim
        self._space = space
        self._normalize = normalize
        self._settings = settings
        self._current = current
        self._vectors = vectors
        self._write_lock = write_lock
        self._on_curve = on_curve
        self._path = path
        self._identity = identity
        self.curve: Calibration | None = None
        self.writes_since = 0
        self.thread: threading.Thread | None = None
        self.closing = False
        self._force = False
        self._last_write = 0.0
        # A reservoir sample of the queries this collection answers (see the module docstring).
        self._reservoir = np.empty((_RESERVOIR, dim), np.float32)
        self._n = 0
        self._seen = 0
        self._rng = random.Random(0)
        self._lock = threading.Lock()

    # -- bookkeeping the collection drives ---------------------------------------------------------
    def wrote(self, n: int) -> None:
        """Count ``n`` written records (0: a replay) and start a calibration if the curve went stale."""
        self.writes_since += n
        self._last_write = time.monotonic()
        self.maybe_start()

    def remember(self, q: np.ndarray) -> None:
        """Keep a uniform sample of answered queries (reservoir sampling; every 8th once full)."""
        if self._n >= _RESERVOIR and self._seen % 8:
            self._seen += 1  # the common case, without the lock: ~0.1 us
            return
        with self._lock:
            self._seen += 1
            if self._n < _RESERVOIR:
                self._reservoir[self._n] = q
                self._n += 1
                if self._n == self._settings.calibration_min_queries:
                    cal = self.curve
                    if cal is not None and cal.source != "queries":
                        self._force = True
            else:
                j = self._rng.randrange(self._seen)  # ~0.3 us; a numpy Generator ~20
                if j < _RESERVOIR:
                    self._reservoir[j] = q
        if self._force:
            self.maybe_start()

    def maybe_start(self) -> None:
        """Start the background calibration if the curve is missing or stale (see the module docstring)."""
        s = self._settings
        index, _ = self._current()
        if not s.auto_calibrate or not index.approximate or len(index) < s.calibration_min_count:
            return
        cal = self.curve
        if cal is not None and not cal.stale(len(index), self.writes_since) and not self._force:
            return
        thread = self.thread
        if thread is not None and thread.is_alive():
            return
        self.thread = threading.Thread(
            target=self._background, name=f"embeddix-calibrate-{self.name}", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        """Stop the background calibration and wait for it (see ``Collection._stop_background``)."""
        self.closing = True
        thread = self.thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join()

    def _background(self) -> None:
        quiet = self._settings.calibration_quiet_s
        while not self.closing:
            idle = time.monotonic() - self._last_write
            if idle >= quiet:
                break
            time.sleep(min(0.25, quiet - idle))
        if self.closing:
            return
        # Lowest CPU priority for this thread only (Linux applies setpriority to a thread id): on a
        # small machine the calibration must not take cores from the searches it is tuning.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            self.calibrate()
        except Exception as exc:  # a failed calibration leaves the old curve (or ef_search) serving
            log.warning("collection %r: calibration failed: %s", self.name, exc)

    # -- measuring ---------------------------------------------------------------------------------
    def calibrate(
        self, *, sample: int | None = None, k: int = 10, source: str = "auto"
    ) -> Calibration | None:
        """Measure the curve now; see ``Collection.calibrate`` for the arguments."""
        index, seq = self._current()
        if not index.approximate or len(index) <= k + 1:
            return None
        count, writes0 = len(index), self.writes_since
        labels = index.live_labels()
        rng = np.random.default_rng(seq)
        queries, origin = self._queries(index, labels, rng, sample, source)
        truth = self._exact_truth(labels, queries, k)

        def search(q: np.ndarray, kk: int, ef: int) -> np.ndarray:
            if self.closing:
                raise InterruptedError("collection closing")
            return index.search(q, kk, ef=ef).labels[0]

        n = len(queries)
        try:
            cal = calibrate(
                search, queries, np.full(n, -1, np.int64), truth, k=k, count=count, seq=seq, source=origin
            )
        except InterruptedError:
            return None
        with self._write_lock:
            if self._current()[0] is not index:
                return None  # the index was rebuilt meanwhile; its own calibration will follow
            self.curve = cal
            self.writes_since = max(0, self.writes_since - writes0)
            if cal.source == "queries":
                self._force = False
            self._on_curve()
        self.save(cal)
        log.info("collection %r calibrated: ef %s -> recall %s", self.name, cal.efs, cal.recall)
        return cal

    def _queries(
        self,
        index: VectorIndex,
        labels: np.ndarray,
        rng: np.random.Generator,
        sample: int | None,
        source: str,
    ) -> tuple[np.ndarray, str]:
        """The calibration queries and where they came from (``"queries"`` or ``"sample"``)."""
        n = min(sample or self._settings.calibration_sample, len(labels))
        with self._lock:
            seen = self._reservoir[: self._n].copy()
        use_queries = source == "queries" or (
            source == "auto" and len(seen) >= self._settings.calibration_min_queries
        )
        if use_queries and len(seen):
            return seen[rng.permutation(len(seen))[: max(n, min(len(seen), 2 * n))]], "queries"
        qlabels = rng.choice(labels, n, replace=False)
        return self._moved_records(index, labels, qlabels, rng), "sample"

    def _moved_records(
        self, index: VectorIndex, labels: np.ndarray, qlabels: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Sampled records moved off themselves, so they behave like new queries.

        A stored vector used as its own query is too easy for HNSW (the graph holds it and its exact
        neighbourhood), which would make the curve promise more recall than real, unseen queries get.
        Each sample is moved in a random direction by its own nearest-neighbour distance: the query
        lands in the same region of the data, about as far from the collection as a new point would.
        """
        own = index.get_vectors(qlabels)
        nn = self._exact_truth(labels, own, 1, exclude=qlabels)[:, 0]
        gap = np.linalg.norm(own - index.get_vectors(nn), axis=1)
        direction = rng.standard_normal(own.shape).astype(np.float32)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        queries = own + direction * (gap[:, None] * self._settings.calibration_noise)
        if self._space == "ip" and self._normalize:
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        return np.ascontiguousarray(queries, dtype=np.float32)

    def _exact_truth(
        self, labels: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> np.ndarray:
        """Exact top-k labels per query over the whole collection (optionally excluding one label each)."""
        kk = k + (1 if exclude is not None else 0)
        # vectors from the store, not the index: hnswlib's get_items takes ~15x longer for 50K labels
        best_l = exact_topk_over(self._vectors, labels, queries, kk, self._space).labels
        if exclude is None:
            return best_l
        out = np.empty((len(queries), k), np.int64)
        for i, own in enumerate(exclude.tolist()):
            row = [x for x in best_l[i].tolist() if x != own][:k]
            out[i, : len(row)] = row
            out[i, len(row) :] = -1
        return out

    # -- persistence -------------------------------------------------------------------------------
    def save(self, cal: Calibration) -> None:
        """Keep the curve next to the index (a lost curve is measured again: never worth failing for)."""
        if self._path is None or self.closing:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            doc = {
                "magic": "embeddix-calibration",
                "format_version": 1,
                **self._identity,
                "calibration": json.loads(cal.to_json()),
            }
            atomic_write_bytes(self._path, json.dumps(doc).encode())
        except OSError as exc:
            log.warning("collection %r: could not save calibration: %s", self.name, exc)

    def load(self, applied_seq: int) -> None:
        """Use the saved curve if it belongs to this store, collection and index parameters."""
        index, _ = self._current()
        if self._path is None or not self._path.exists() or not index.approximate:
            return
        try:
            doc = json.loads(self._path.read_text(encoding="utf-8"))
            if doc.get("magic") != "embeddix-calibration" or doc.get("format_version") != 1:
                return
            for key, value in self._identity.items():
                if doc.get(key, value) != value:
                    return  # another store's, collection's or index's curve: measure our own
            cal = Calibration.from_json(json.dumps(doc["calibration"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("collection %r: ignoring unreadable calibration: %s", self.name, exc)
            return
        self.curve = cal
        # transactions since the curve was measured: a conservative stand-in for records written
        self.writes_since = max(0, applied_seq - cal.seq)
