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
``calibration_quiet_s``, or at the latest ``calibration_max_wait_s`` into a write burst: a bulk load
gets a curve while it runs (each at most 20% stale), so searches right after it are planned from a
measured curve rather than the fixed ``ef_search``. A round the index outgrew by more than 25% while it
ran does not publish, and the thread runs another round (after the next pause) while the curve is
stale, so the load's last records are measured too. A new curve is published under the collection's
write lock; ``on_curve`` then runs (the collection drops plans and cached results, which came from the
old beam widths).

Beside searches (the foreground): each rung of the ef ladder is one native call over the whole sample
(``planner.calibrate``), the exact answers stream from the store in small chunks, and before each step
the thread waits, briefly, for a gap between searches (``_yield``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._memory import trim
from ..config import EmbeddixSettings
from ..index.base import IndexResult, VectorIndex, merge_topk
from ..storage._atomic import atomic_write_bytes
from ..storage.sqlite import scan_step
from .filter_matrix import dot_rows
from .planner import EF_LADDER, PRIOR, Calibration, calibrate

__all__ = ["Calibrator"]

_RUNG_CHUNK = 8  # calibration queries per native call (see search_many in Calibrator.calibrate)...
_RUNG_WORK = 256  # ...and at most this many beam slots (queries x ef) per call

log = logging.getLogger("embeddix")

_RESERVOIR = 512
# Calibration rounds one background thread runs while the curve stays stale (a write burst ahead of it)
_ROUNDS = 8
# A round whose index grew by more than this fraction while it measured does not publish: the exact
# answers cover the labels at its start, and newer records crowding a search's k + 10 results out-rank
# them (a 31,000-record curve measured during a 100K ingest plateaued at recall 0.907 from ef 40 up)
_GROWTH_MAX = 0.25


class Calibrator:
    """The recall/latency curve of one collection and the thread that keeps it current.

    Args:
        name: The collection's name (for messages and the thread's name).
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"`` (the index's).
        normalize: Whether vectors are unit length (cosine).
        settings: Process settings (sample size, thresholds, quiet time).
        current: Returns (index, applied seq) as the collection holds them now.
        scan: Streams every stored vector of the collection, (labels, raw rows) ``chunk`` at a time:
            ``scan(chunk)`` (the exact answers read them in one pass).
        write_lock: The collection's write lock (a curve is published under it).
        on_curve: Called under the write lock after a new curve is published.
        path: Where the curve is saved (None: in memory only).
        identity: Store id, collection id and index parameters a saved curve must match.
        release: Called when the background thread ends (closes its store connection).
    """

    def __init__(
        self,
        name: str,
        dim: int,
        space: str,
        normalize: bool,
        settings: EmbeddixSettings,
        current: Callable[[], tuple[VectorIndex, int]],
        scan: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]],
        write_lock: threading.RLock,
        on_curve: Callable[[], None],
        path: Path | None,
        identity: dict[str, Any],
        *,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._scan = scan
        self._release = release
        self.name = name
        self._dim = dim
        self._space = space
        self._normalize = normalize
        self._settings = settings
        self._current = current
        self._write_lock = write_lock
        self._on_curve = on_curve
        self._path = path
        self._identity = identity
        self.curve: Calibration | None = None
        self._generation = 0  # the index's generation the curve was measured on (IVF lists swap)
        self.writes_since = 0
        self.thread: threading.Thread | None = None
        self.closing = False
        self._force = False
        self._last_write = 0.0
        # A reservoir sample of the queries this collection answers (see the module docstring).
        # the queries themselves (arrays nobody writes to again), not rows of one matrix: appending a
        # reference costs ~0.1 us where a row copy cost several on a search's cold caches
        self._reservoir: list[np.ndarray] = []
        self._dim = dim
        self._seen = 0
        self._rng = random.Random(0)
        self._lock = threading.Lock()
        self.last_search = 0.0  # time.monotonic() of the latest search (set by the collection)

    # -- bookkeeping the collection drives ---------------------------------------------------------
    def reset(self, identity: dict[str, Any]) -> None:
        """The index was replaced by another kind (a reconfigure; write lock held): forget its curve.

        A calibration still running on the old index does not publish (it checks the index it measured
        is still current); the next one measures the new index, and saves under the new ``identity``.
        """
        self._identity = identity
        self.curve = None
        self.writes_since = 0

    def wrote(self, n: int) -> None:
        """Count ``n`` written records (0: a replay) and start a calibration if the curve went stale."""
        self.writes_since += n
        self._last_write = time.monotonic()
        trim()  # at most every 0.5 s: a bulk load's freed batches go back to the OS as it runs
        self.maybe_start()

    def remember(self, q: np.ndarray) -> None:
        """Keep a uniform sample of answered queries (reservoir sampling; every 8th once full).

        ``q`` is kept by reference: the caller passes an array nobody writes to afterwards.
        """
        kept = self._reservoir
        if len(kept) >= _RESERVOIR and self._seen % 8:
            self._seen += 1  # the common case, without the lock: ~0.1 us
            return
        with self._lock:
            self._seen += 1
            n = len(kept)
            if n < _RESERVOIR:
                kept.append(q)
                if n + 1 == self._settings.calibration_min_queries:
                    cal = self.curve
                    if cal is not None and cal.source != "queries":
                        self._force = True
            else:
                j = self._rng.randrange(self._seen)  # ~0.3 us; a numpy Generator ~20
                if j < _RESERVOIR:
                    kept[j] = q
        if self._force:
            self.maybe_start()

    def _needed(self) -> bool:
        """Whether the curve is missing or stale (see the module docstring)."""
        s = self._settings
        index, _ = self._current()
        if not s.auto_calibrate or not index.approximate or len(index) < s.calibration_min_count:
            return False
        if not getattr(index, "trained", True):
            return False  # IVF below its training threshold searches exactly: nothing to measure yet
        cal = self.curve
        current = getattr(index, "generation", 0) == self._generation  # IVF: same lists as measured
        return cal is None or not current or cal.stale(len(index), self.writes_since) or self._force

    def prior(self) -> Calibration | None:
        """The curve to plan from while this collection has none: ``planner.PRIOR`` once a calibration
        is due on an HNSW index (None otherwise: small collections, ``auto_calibrate`` off and IVF keep
        ``ef_search``; an IVF ``ef`` counts lists, which the prior's HNSW beam widths do not)."""
        if self.curve is not None:
            return self.curve
        index, _ = self._current()
        if index.kind == "ivf" or not self._needed():
            return None
        return PRIOR

    def maybe_start(self) -> None:
        """Start the background calibration if the curve is missing or stale (see the module docstring)."""
        if not self._needed():
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
        # Lowest CPU priority for this thread only (Linux applies setpriority to a thread id): on a
        # small machine the calibration must not take cores from the searches it is tuning.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            # Again while the curve is still stale when a round ends: a bulk load that went on during
            # the round (or outgrew it, and the round did not publish) has made no further call to
            # maybe_start once it stopped, and the collection would stay on ef_search until 100 queries
            # were seen (the default-path benchmark's 300 queries right after a 100K ingest all were).
            for _ in range(_ROUNDS):
                if not self._wait_quiet():
                    return
                try:
                    self.calibrate()
                except Exception as exc:  # a failed calibration leaves the old curve (or ef_search) serving
                    log.warning("collection %r: calibration failed: %s", self.name, exc)
                    return
                if self.closing or not self._needed():
                    return
        finally:
            if self._release is not None:
                with contextlib.suppress(Exception):
                    self._release()
            trim(force=True)  # the pass's chunks and its connection's page cache go back to the OS

    def _wait_quiet(self) -> bool:
        """Wait until writes paused ``calibration_quiet_s`` (or ``calibration_max_wait_s`` passed); False
        when the collection is closing."""
        quiet = self._settings.calibration_quiet_s
        give_up = time.monotonic() + self._settings.calibration_max_wait_s
        while not self.closing:
            now = time.monotonic()
            idle = now - self._last_write
            if idle >= quiet or now >= give_up:
                break
            time.sleep(min(0.25, quiet - idle, max(give_up - now, 0.0)))
        return not self.closing

    # -- measuring ---------------------------------------------------------------------------------
    def calibrate(
        self, *, sample: int | None = None, k: int = 10, source: str = "auto"
    ) -> Calibration | None:
        """Measure the curve now; see ``Collection.calibrate`` for the arguments."""
        index, seq = self._current()
        if not index.approximate or len(index) <= k + 1:
            return None
        count, writes0 = len(index), self.writes_since
        generation = getattr(index, "generation", 0)
        labels = index.live_labels()
        rng = np.random.default_rng(seq)
        queries, origin = self._queries(index, labels, rng, sample, source)
        try:
            truth = self._exact_truth(labels, queries, k)
        except InterruptedError:
            return None

        # Records written while this runs (a bulk load goes on) are in the index but not in the exact
        # answers: a search finding them would count as missing true neighbours, and the curve would
        # plateau far below 1 (measured: 0.83 at ef 1024 during a 100K ingest). Labels only grow, so a
        # search whose answer holds newer labels asks again for k more (see rung) and drops every label
        # newer than the ones the truth covers.
        newest = int(labels.max()) if len(labels) else -1

        def older(found: np.ndarray, kk: int) -> np.ndarray:
            if not len(found) or int(found.max()) <= newest:
                return found[:, :kk]
            out = np.full((len(found), kk), -1, np.int64)
            for i, row in enumerate(found):
                keep = row[(row >= 0) & (row <= newest)][:kk]
                out[i, : len(keep)] = keep
            return out

        # A rung searches exactly as a served search does: the answers it asks for set the work (an HNSW
        # index searches max(ef, answers); an IVF-PQ index re-ranks max(20 x answers, ef) candidates).
        # Asking kk + k = 21 at every rung measured ef 10-20 as ef 21 (HNSW, 200,000 x 768: the planner
        # chose ef 10 for recall 0.95 on a measured 0.98 and served 0.86), and re-ranked 420 IVF-PQ
        # candidates where a served k=10 search re-ranks 200 (1M x 768: 0.957 promised, 0.948 served).
        # So a rung asks for kk; only a query whose answer holds newer labels (a load going on) is
        # searched again with room for them, at most max(ef, kk) answers (recall measured lower there,
        # the safe side).
        def wanted(kk: int, ef: int) -> int:
            return min(kk + k, max(ef, kk))

        def rung(qs: np.ndarray, kk: int, ef: int) -> np.ndarray:
            found = index.search(qs, kk, ef=max(ef, kk), num_threads=1).labels
            if not len(found) or int(found.max()) <= newest:
                return found[:, :kk]
            again = np.flatnonzero((found > newest).any(axis=1))
            n_ask = wanted(kk, ef)
            wider = index.search(qs[again], n_ask, ef=max(ef, n_ask), num_threads=1).labels
            out = older(found, kk)
            out[again] = older(wider, kk)
            return out

        def search(q: np.ndarray, kk: int, ef: int) -> np.ndarray:
            if self.closing:
                raise InterruptedError("collection closing")
            return rung(q, kk, ef)[0]

        def search_many(qs: np.ndarray, kk: int, ef: int) -> tuple[np.ndarray, float]:
            # _RUNG_CHUNK queries per native call, yielding to searches between calls: one call over the
            # whole sample held the index's read gate at the rung's ef for up to ~1 s (ef 512), and a
            # foreground search at another ef waits for the gate (default path max 361 ms, p99 21 ms)
            parts: list[np.ndarray] = []
            seconds = 0.0
            # wide beams in smaller calls: a foreground search at another ef waits for one call at most
            # (hnsw._Gate's turns), and at ef 512 eight queries took ~20 ms (default path p99 6.8 ms)
            chunk = max(1, min(_RUNG_CHUNK, _RUNG_WORK // max(ef, 1)))
            for s in range(0, len(qs), chunk):
                if self.closing:
                    raise InterruptedError("collection closing")
                if s:
                    self._yield()
                t0 = time.perf_counter()
                got = rung(qs[s : s + chunk], kk, ef)
                seconds += time.perf_counter() - t0
                parts.append(got)
            return (np.concatenate(parts) if parts else np.empty((0, kk), np.int64)), seconds

        n = len(queries)
        try:
            cal = calibrate(
                search,
                queries,
                np.full(n, -1, np.int64),
                truth,
                k=k,
                count=count,
                seq=seq,
                source=origin,
                search_many=search_many,
                pause=self._yield,
                # rungs past 512 cost more than the rest of the ladder together and no target short of
                # 0.999 needs them (a target beyond the curve gets its widest rung)
                efs=tuple(e for e in EF_LADDER if e <= 512),
            )
        except InterruptedError:
            return None
        if len(index) > count * (1 + _GROWTH_MAX) + k:
            log.info(
                "collection %r: calibration not published: the index grew from %d to %d while it ran",
                self.name,
                count,
                len(index),
            )
            return None
        with self._write_lock:
            if self._current()[0] is not index:
                return None  # the index was rebuilt meanwhile; its own calibration will follow
            self.curve = cal
            self._generation = generation
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
            kept = list(self._reservoir)
        seen = np.stack(kept) if kept else np.empty((0, self._dim), np.float32)
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
        Each sample is moved in a random direction by ``calibration_noise`` times its own
        nearest-neighbour distance. Measured against 400 held-out queries (HNSW M=16, 100K records):
        on MiniLM text, noise 1 predicted 0.953 recall at ef 10 where real queries got 0.869, noise 2
        0.862 (and 0.902 vs 0.911 at ef 16, pessimistic above); on the clustered 768-d set noise 2 was
        pessimistic throughout (0.816 vs 0.854 at ef 10). The planner keeps a margin on such a curve
        (``planner.SAMPLE_MISS_SHARE``) until real queries replace it.

        The neighbour distance comes from the index (a beam of 64 finds the nearest other record, or
        one about as near): it only scales the move, and an exact pass over every stored vector would
        double the calibration's reads.
        """
        own = index.get_vectors(qlabels)
        found = index.search(own, 2, ef=64, num_threads=1).labels
        nn = np.where(found[:, 0] == qlabels, found[:, 1], found[:, 0])
        nn = np.where(nn < 0, qlabels, nn)
        gap = np.linalg.norm(own - index.get_vectors(nn), axis=1)
        direction = rng.standard_normal(own.shape).astype(np.float32)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        queries = own + direction * (gap[:, None] * self._settings.calibration_noise)
        if self._space == "ip" and self._normalize:
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        return np.ascontiguousarray(queries, dtype=np.float32)

    def _exact_truth(self, labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
        """Exact top-k labels per query over the index's live labels, in one streamed pass over the store.

        Vectors from the store, not the index (hnswlib's get_items takes ~15x longer for 50K labels), in
        steps of ``scan_step`` rows (storage/sqlite.py: each holds the GIL only briefly), so the pass
        adds little to the process's memory and searches are not kept waiting. BLAS keeps its threads:
        changing OpenBLAS's thread count from this thread while another runs a product corrupts that
        product (seen as NaN from finite inputs in the test suite).
        """
        live = np.sort(labels)
        best: IndexResult | None = None
        for part_labels, rows in self._scan(scan_step(self._dim)):
            if self.closing:
                raise InterruptedError("collection closing")
            self._yield()
            keep = np.isin(part_labels, live, assume_unique=True)  # written after the index state: out
            part_labels, rows = part_labels[keep], rows[keep]
            if not len(part_labels):
                continue
            if self._normalize:
                # float32 norms: a ranking, not a stored vector (the 1-ulp difference to the float64
                # normalization of unit_rows cannot reorder anything but exact ties)
                norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
                norms[~(norms > 0)] = 1.0
                rows = rows / norms[:, None]
            res = _serial_topk(rows, part_labels, queries, k, self._space, self._yield)
            best = res if best is None else merge_topk([best, res], k)
        if best is None:
            return np.full((len(queries), k), -1, np.int64)
        return best.labels

    def _yield(self) -> None:
        """Wait (up to 50 ms) for a gap of 2 ms between searches: a step started meanwhile would take
        the GIL and the memory bandwidth a search needs."""
        deadline = time.monotonic() + 0.05
        while not self.closing:
            now = time.monotonic()
            if now - self.last_search >= 0.002 or now >= deadline:
                return
            time.sleep(0.001)

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


def _serial_topk(
    rows: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    k: int,
    space: str,
    pause: Callable[[], None],
    every: int = 16,
) -> IndexResult:
    """Exact top k of each query over ``rows``, one query at a time on this thread alone.

    Not ``exact_topk``'s matrix product: BLAS runs it on worker threads created at the process's normal
    priority, so a calibration's truth pass took the foreground's core however low this thread's own
    priority was (foreground p50 1.2x while it ran, 100K x 384 on two cores). FAISS's single-threaded
    kernel (``dot_rows``) keeps the work on this nice-19 thread, and ``pause`` lets searches go first
    every ``every`` queries. Same distances as ``exact_topk`` (up to float32 summation order).
    """
    n = rows.shape[0]
    kk = min(k, n)
    nq = queries.shape[0]
    out_l = np.empty((nq, kk), np.int64)
    out_d = np.empty((nq, kk), np.float32)
    sq = np.einsum("ij,ij->i", rows, rows) if space != "ip" else None
    for i in range(nq):
        if i and i % every == 0:
            pause()
        q = queries[i]
        dots = dot_rows(rows, q)
        if sq is None:
            dist = 1.0 - dots
        else:
            dist = np.maximum(sq - 2.0 * dots + float(q @ q), 0.0).astype(np.float32)
        part = np.argpartition(dist, kk - 1)[:kk] if kk < n else np.arange(n)
        order = np.lexsort((part, dist[part]))
        idx = part[order]
        out_l[i] = labels[idx]
        out_d[i] = dist[idx]
    return IndexResult(out_l, out_d)
