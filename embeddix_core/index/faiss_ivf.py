"""Inverted-file index on FAISS (IVF-Flat, or IVF-PQ re-ranked with full-precision vectors).

A coarse quantizer (``nlist`` centroids, trained by FAISS k-means) cuts the space into cells; each vector
lives in the list of its nearest centroid, as itself (``codes="flat"``) or as a product-quantized code
(``codes="pq"``: ``pq_m`` bytes with 8-bit sub-quantizers). A search scans the ``nprobe`` nearest lists.

What stays in RAM with PQ: the centroids, the PQ codebooks, and per vector its code plus an 8-byte label
(``memory_bytes`` counts them). Full-precision vectors live in the store: a PQ search asks FAISS for
``rerank_width(k)`` candidates and re-ranks them with exact distances from the vectors the ``load_vectors``
callable returns (in the engine the store's loader behind the bounded vector cache; in tests an array
lookup). IVF-Flat distances are exact already and are not re-ranked.

Training threshold (documented rule): the index searches exactly over the vectors it holds until it holds
``train_threshold`` of them (default :data:`TRAIN_MIN` = 10,000). 10,000 is the least FAISS asks for to
train 8-bit PQ sub-quantizers (39 points for each of 256 centroids = 9,984) and, with the ``nlist`` rule
below, leaves at least 39 training points per coarse list. The first add that reaches the threshold
trains on (a sample of) everything held and moves it into lists; searches keep answering from the exact
buffer meanwhile. Later vectors join the lists of their nearest centroid without retraining.

nlist rule: ``nlist = clamp(round(NLIST_PER_SQRT * sqrt(n)), 1, n // 39)`` for the ``n`` vectors the index
holds when it trains (:func:`nlist_for`; 4 * sqrt(n): 400 at 10,000, 1,789 at 200,000, 4,000 at 1M, capped
so every list gets 39 training points). K-means runs on at most ``TRAIN_PER_LIST * nlist`` sampled vectors
for ``KMEANS_ITERS`` iterations: the cost of training grows with the sample times nlist, and this keeps a
1M x 768 build inside minutes on two cores while FAISS's own default (256 points a list, 25 iterations)
would take most of an hour.

ef -> nprobe (the planner's knob): ``nprobe = clamp(ceil(nlist * ef / EF_ALL_LISTS), 1, nlist)``
(:func:`nprobe_for`), i.e. ``ef`` sets the *fraction* of lists probed, ``ef / 1024``. Recall of an IVF
search depends on the fraction of the data it scans far more than on nlist, so one ef means about the
same recall whatever the collection's size; the top of the planner's ladder (1024) probes every list, an
exhaustive scan of the codes. The mapping is monotone, so the planner's calibration (recall and latency
over the ef ladder) drives IVF exactly as it drives HNSW's beam. The default ``ef_search`` of 96 probes
9.4% of the lists (168 of 1,789 at 200,000 vectors). A search whose probed lists held fewer than k
(allowed) vectors is retried with four times the probes, up to all lists.

Filters: an ``allowed`` restriction becomes a FAISS ``IDSelector`` (a bitmap over the label range when
that is small, else ``IDSelectorBatch``), never a per-vector Python callback: pass an array of allowed
labels, or the engine's ``set.__contains__`` (its set is read once). Any other callable is evaluated once
per live label in Python (O(n), documented fallback).

Deletes are physical (``remove_ids``, a scan of the lists in C++; no tombstones in a trained index). An
update removes the label, then inserts the new vector. While :meth:`FaissIvfIndex.retrain` builds a new
index, writes go to the live index *and* to a journal that is replayed onto the new one before the swap,
so nothing written during a retrain is lost.

Concurrency: any number of searches run together (FAISS searches are const); the brief mutations (list
inserts, removes, the swap) take the gate's writer side. Writers are serialized by one lock. Encoding new
vectors (coarse assignment and PQ codes, the expensive part) runs *outside* the gate, under the writer lock
only; training and retraining never block searches.

On disk (:meth:`FaissIvfIndex.save`, a directory): ``ivf.faiss`` (``faiss.write_index``: the trained
IVF index, or before training an ``IndexIDMap2`` over a flat index holding the exact buffer) and
``ivf.json``, the manifest, written last (format version, dim, space, codes, nlist, pq_m, nbits, count,
size and CRC32 of ``ivf.faiss``). Both are replaced atomically (temp file, fsync, rename, fsync dir). No
pickle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import (
    CorruptionError,
    DimensionMismatchError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidVectorError,
    NotFoundError,
)
from ..eval import recall_at_k
from ..storage._atomic import atomic_write, atomic_write_bytes
from . import _gpu
from .base import IndexResult, IndexStats, LabelFilter, exact_topk, exact_topk_over
from .hnsw import _Gate

__all__ = [
    "EF_ALL_LISTS",
    "NLIST_PER_SQRT",
    "RERANK_FACTOR",
    "TRAIN_MIN",
    "FaissIvfIndex",
    "RecallCheck",
    "RetrainReport",
    "VectorLoader",
    "nlist_for",
    "nprobe_for",
    "rerank_width",
]

log = logging.getLogger("embeddix")

VectorLoader = Callable[[np.ndarray], np.ndarray]
"""Full-precision, index-space vectors of labels, in order; NaN rows for labels no longer stored."""

# See the module docstring for each rule.
TRAIN_MIN = 10_000
NLIST_PER_SQRT = 4.0
MIN_PER_LIST = 39  # FAISS warns below 39 training points per centroid
TRAIN_PER_LIST = 50
# At most this many training vectors whatever nlist (100,000 x 768 float32 = 307 MB held while k-means
# runs): the memory profile's 1M x 768 target is 1 GB for the whole process.
TRAIN_MAX = 100_000
# A trained index retrains in the background once it holds this many times what it was trained on.
RETRAIN_GROWTH = 4.0
KMEANS_ITERS = 10
# Training vectors per PQ code word (256 for 8 bits): FAISS's own default is 256; its warning floor 39.
PQ_TRAIN_PER_CODE = 128
EF_ALL_LISTS = 1024
# PQ candidates re-ranked per result wanted (k=10 -> 200): PQ codes at 768-d move true neighbours tens of
# ranks, further than the SQ8 codes of faiss_hnsw.py (see default_pq_m for the measurement).
RERANK_FACTOR = 20
# Vectors encoded and inserted per step of a large add: searches wait for one step's insert at most.
ADD_CHUNK = 32_768
# Bytes of writes journaled while a training or retrain runs (vectors kept for the replay, and before the
# first training the exact buffer growing beside them) past which a writer waits for that build to end.
# Without it a bulk load outran a first training starved of CPU: 1M x 768 held 6.4 GB after the adds
# (VmHWM 9.2 GB, benchmarks/results/memory_bench.json) in the memory profile, whose target is 1 GB.
JOURNAL_MAX = 64 << 20
# Labels whose allow-list bitmap may be at most this many times larger (in bytes) than an
# IDSelectorBatch over the same labels (~16 bytes a label): beyond it the hash set is smaller.
_BITMAP_SLACK = 16

FORMAT_VERSION = 1


class _Journal(list[tuple[np.ndarray, np.ndarray | None]]):
    """Writes made while a training or retrain runs, replayed onto its index before the swap (in write
    order; ``None`` vectors: a removal), and the bytes they hold (the backpressure of ``add``)."""

    nbytes = 0

    def add(self, labels: np.ndarray, vectors: np.ndarray | None) -> None:
        self.append((labels, vectors))
        self.nbytes += labels.nbytes + (0 if vectors is None else vectors.nbytes)


_MAGIC = "embeddix-ivf"
_INDEX_FILE = "ivf.faiss"
_MANIFEST_FILE = "ivf.json"
CODES = ("flat", "pq")


class _Cancelled(Exception):
    """A background retrain stopped by :meth:`FaissIvfIndex.cancel`."""


def _stored_rows(vecs: np.ndarray) -> np.ndarray:
    """The rows of ``vecs`` still stored (the loader gives NaN rows for labels deleted meanwhile),
    without a copy when all are: a retrain's sample is up to 307 MB (100,000 x 768), and a masked copy
    of it (with the mask's n x d booleans) sat beside it at the memory profile's peak."""
    ok = np.isfinite(vecs[:, 0]) if len(vecs) else np.ones(0, bool)
    return vecs if ok.all() else vecs[ok]


def nlist_for(n: int) -> int:
    """Coarse lists for an index trained on ``n`` vectors (the rule in the module docstring)."""
    return max(1, min(round(NLIST_PER_SQRT * math.sqrt(max(n, 1))), n // MIN_PER_LIST))


def nprobe_for(ef: int, nlist: int) -> int:
    """Lists probed for the planner's ``ef`` (the mapping in the module docstring)."""
    return max(1, min(math.ceil(nlist * max(int(ef), 1) / EF_ALL_LISTS), nlist))


def rerank_width(k: int, factor: int = RERANK_FACTOR) -> int:
    """The least PQ candidates re-ranked with full-precision vectors for ``k`` results (a search at a
    larger ``ef`` re-ranks ``ef`` of them: the width grows with the plan's recall target)."""
    return max(k, k * max(int(factor), 1))


def default_pq_m(dim: int) -> int:
    """Sub-quantizers (= code bytes) for ``dim``: the largest divisor of dim at most max(dim / 8, 16).

    8 dimensions per 8-bit sub-quantizer (96 bytes at 768-d, 48 at 384-d) keeps codes plus label under 200
    bytes a vector. Measured on 50,000 synth768 vectors at nprobe 37% (benchmarks/ivf_bench.py scan):
    12 dimensions a sub-quantizer (64 bytes) needed 400 re-ranked candidates for recall@10 0.95 (0.918
    with 100), 8 dimensions (96 bytes) reached 0.952 with 100 and 0.957 with 200; small
    dimensions keep at least 16 sub-quantizers (4 dimensions each at 64-d), because with fewer the codes
    rank too coarsely for any affordable re-rank width to repair.
    """
    for m in range(min(max(dim // 8, 16), dim), 0, -1):
        if dim % m == 0:
            return m
    return 1  # pragma: no cover - m=1 always divides


@dataclass(frozen=True, slots=True)
class RecallCheck:
    """What :meth:`FaissIvfIndex.watch_recall` measured.

    Attributes:
        recall: Mean recall@k of the index against the truth.
        target: The target it was compared with.
        k: The cut-off.
        nprobe: Lists probed for the measurement.
        retraining: Whether a background retrain was started because ``recall < target``.
    """

    recall: float
    target: float
    k: int
    nprobe: int
    retraining: bool


@dataclass(frozen=True, slots=True)
class RetrainReport:
    """What :meth:`FaissIvfIndex.retrain` did.

    Attributes:
        count: Vectors in the new index.
        nlist: Its coarse lists.
        train_seconds: Time spent in k-means (and PQ training).
        total_seconds: Time from start to swap.
        replayed: Journaled writes applied after the build (writes that arrived during it).
    """

    count: int
    nlist: int
    train_seconds: float
    total_seconds: float
    replayed: int


class FaissIvfIndex:
    """IVF index keyed by store labels: exact below the training threshold, IVF-Flat or IVF-PQ above it.

    Args:
        dim: Vector dimension (fixed).
        space: ``"ip"`` or ``"l2"`` (fixed).
        load_vectors: Full-precision index-space vectors by label (re-ranking, :meth:`get_vectors`,
            retraining).
        codes: ``"flat"`` (full vectors in the lists) or ``"pq"`` (PQ codes, re-ranked); fixed.
        pq_m: PQ sub-quantizers = code bytes (must divide ``dim``; default :func:`default_pq_m`); fixed.
        nbits: Bits per sub-quantizer code (fixed; 8 unless memory is very tight).
        train_threshold: Vectors held before the first training (default :data:`TRAIN_MIN`).
        ef_search: Default ``ef`` of searches (mapped to nprobe by :func:`nprobe_for`).
        rerank_factor: PQ candidates re-ranked per result wanted (see :func:`rerank_width`).
        gpu: ``"auto"``, ``"on"`` or ``"off"``: k-means on a GPU (through :mod:`._gpu`) when one is present.
        seed: Seed of the training sample and k-means (reproducible builds).

    Raises:
        InvalidArgumentError: A parameter is out of range (unknown space or codes, ``pq_m`` not dividing
            ``dim``, ...).
    """

    kind = "ivf"
    approximate = True
    # In the engine, snapshots go through storage/snapshot.py (its manifest holds size, CRC32 and the
    # collection's parameters): :meth:`savers` writes one file, ``faiss.write_index``'s own format, read
    # back by :meth:`from_file`. :meth:`save` / :meth:`load` (a directory with a manifest of its own)
    # serve standalone use.
    snapshots = True

    def __init__(
        self,
        dim: int,
        space: str,
        *,
        load_vectors: VectorLoader,
        codes: str = "pq",
        pq_m: int | None = None,
        nbits: int = 8,
        train_threshold: int = TRAIN_MIN,
        ef_search: int = 96,
        rerank_factor: int = RERANK_FACTOR,
        gpu: str = "off",
        seed: int = 1234,
    ) -> None:
        if space not in ("ip", "l2"):
            raise InvalidArgumentError(f"space must be 'ip' or 'l2'; got {space!r}")
        if codes not in CODES:
            raise InvalidArgumentError(f"codes must be one of {list(CODES)}; got {codes!r}")
        if dim < 1:
            raise InvalidArgumentError(f"dim must be a positive integer; got {dim}")
        m = default_pq_m(dim) if pq_m is None else int(pq_m)
        if codes == "pq" and (m < 1 or dim % m):
            raise InvalidArgumentError(
                f"pq_m must divide the dimension {dim}; got {m} (try {default_pq_m(dim)})"
            )
        if not 1 <= nbits <= 16:
            raise InvalidArgumentError(f"nbits must be between 1 and 16; got {nbits}")
        if train_threshold < 1:
            raise InvalidArgumentError(f"train_threshold must be at least 1; got {train_threshold}")
        self.dim = dim
        self.space = space
        self.codes = codes
        self.pq_m = m if codes == "pq" else 0
        self.nbits = nbits if codes == "pq" else 0
        self.train_threshold = int(train_threshold)
        self.ef_search = int(ef_search)
        self.rerank_factor = max(int(rerank_factor), 1)
        self.gpu = gpu
        self.seed = seed
        self._load = load_vectors
        self._metric = faiss.METRIC_INNER_PRODUCT if space == "ip" else faiss.METRIC_L2
        self._ivf: Any = None  # the trained FAISS IndexIVF* (None: exact mode over the buffer)
        # exact-mode buffer: the first ``_n_held`` rows are live
        self._held_labels = np.empty(0, np.int64)
        self._held_vecs = np.empty((0, dim), np.float32)
        self._n_held = 0
        self._count = 0
        self._trained_count = 0  # vectors the current lists were trained on
        self._gate = _Gate()  # searches shared; list inserts/removes/swaps exclusive
        self._wlock = threading.RLock()  # serializes writers (add, remove, retrain's start/end, save)
        self._retrain_lock = threading.Lock()  # one retrain at a time
        self._journal: _Journal | None = None
        self.journal_max = JOURNAL_MAX
        self._retrainer: threading.Thread | None = None
        self._cancel = threading.Event()  # set by cancel(): a running retrain gives up at its next step
        self.retrain_growth = RETRAIN_GROWTH
        # the engine trains the first time on a thread (see _start_first_training); standalone use
        # trains inside the add that reaches the threshold
        self.background_training = False
        # run on a background retrain's thread as it ends (the engine releases that thread's store reader)
        self.on_thread_exit: Callable[[], None] | None = None
        self.retrains = 0  # background retrains finished (stats)
        # bumped at every swap of the lists (a training or retrain): the calibration curve measured on
        # the old lists is stale (query/calibrator.py reads it)
        self.generation = 0

    # -- capabilities and sizes ----------------------------------------------------------------------
    @property
    def trained(self) -> bool:
        """Whether the IVF lists exist (else searches are exact over the buffer)."""
        return self._ivf is not None

    @property
    def nlist(self) -> int:
        """Coarse lists of the trained index (0 before training)."""
        ivf = self._ivf
        return int(ivf.nlist) if ivf is not None else 0

    @property
    def segments(self) -> int:
        return 1

    @property
    def bounds(self) -> list[int]:
        return [0]

    def set_ef_search(self, ef: int) -> None:
        """Default ``ef`` of later searches (mapped to nprobe)."""
        self.ef_search = int(ef)

    def nprobe(self, ef: int | None = None) -> int:
        """Lists a search with ``ef`` probes (0 before training)."""
        return nprobe_for(ef or self.ef_search, self.nlist) if self.trained else 0

    def __len__(self) -> int:
        return self._count

    def stats(self) -> IndexStats:
        return IndexStats(1, self._count, 0, self._n_held, self.memory_bytes())

    def savers(self) -> list[tuple[int, Callable[[Path], None]]]:
        """One snapshot file: the FAISS index (trained), or an ID map over the exact buffer (untrained)."""
        return [(self._count, self._write_file)]

    def _write_file(self, path: Path) -> None:
        with self._wlock:  # no writer changes the index while it is serialized
            faiss.write_index(self._serializable(), str(path))

    def _serializable(self) -> Any:
        """The trained index, or an ``IndexIDMap2`` over a flat index holding the exact buffer."""
        if self._ivf is not None:
            return self._ivf
        flat = faiss.IndexFlatIP(self.dim) if self.space == "ip" else faiss.IndexFlatL2(self.dim)
        obj = faiss.IndexIDMap2(flat)
        if self._n_held:
            obj.add_with_ids(self._held_vecs[: self._n_held], self._held_labels[: self._n_held])
        return obj

    def join(self) -> None:
        """Wait for a background retrain (growth or :meth:`watch_recall`) to finish."""
        t = self._retrainer
        if t is not None:
            t.join()

    def cancel(self) -> None:
        """Stop a background retrain at its next step (the old index keeps serving); for closing."""
        self._cancel.set()
        self.join()
        self._cancel.clear()

    def memory_bytes(self) -> int:
        """Bytes held: centroids, PQ codebooks, codes and labels in the lists, and the exact buffer."""
        held = self._held_labels.nbytes + self._held_vecs.nbytes
        ivf = self._ivf
        if ivf is None:
            return held
        per_vector = int(ivf.code_size) + 8  # code + int64 label
        centroids = int(ivf.nlist) * self.dim * 4
        books = (1 << self.nbits) * self.dim * 4 if self.codes == "pq" else 0
        return held + centroids + books + int(ivf.ntotal) * per_vector

    def memory_parts(self) -> dict[str, int]:
        """Resident bytes by part: ``centroids`` (and PQ codebooks), ``codes`` (PQ) or ``vectors``
        (IVF-Flat lists), ``labels``, and ``buffer`` (exact mode before training)."""
        out = {"buffer": int(self._held_labels.nbytes + self._held_vecs.nbytes)}
        ivf = self._ivf
        if ivf is not None:
            n = int(ivf.ntotal)
            books = (1 << self.nbits) * self.dim * 4 if self.codes == "pq" else 0
            out["centroids"] = int(ivf.nlist) * self.dim * 4 + books
            out["codes" if self.codes == "pq" else "vectors"] = n * int(ivf.code_size)
            out["labels"] = n * 8
        return out

    # -- input checks --------------------------------------------------------------------------------
    def _matrix(self, x: np.ndarray, name: str) -> np.ndarray:
        arr = np.ascontiguousarray(x, np.float32)
        if arr.ndim != 2:
            raise InvalidVectorError(f"{name} must be a 2-D array of shape (n, {self.dim}); got {arr.shape}")
        if arr.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"{name} must have dimension {self.dim}; got {arr.shape[1]} (embed with the same model)"
            )
        return arr

    # -- writes --------------------------------------------------------------------------------------
    def add(self, labels: np.ndarray, vectors: np.ndarray, new: np.ndarray | None = None) -> None:
        """Insert vectors, replacing labels already held.

        Args:
            labels: (n,) int64 store labels, unique within the call.
            vectors: (n, dim) index-space vectors.
            new: Optional (n,) bool, True where the caller knows the label is absent (skips a removal scan).

        Raises:
            DimensionMismatchError: ``vectors`` has the wrong width.
            InvalidVectorError: Shapes disagree.
        """
        labels = np.ascontiguousarray(labels, np.int64)
        vectors = self._matrix(vectors, "vectors")
        if len(labels) != len(vectors):
            raise InvalidVectorError(f"got {len(labels)} labels for {len(vectors)} vectors; expected equal")
        if not len(labels):
            return
        fresh = new is not None and bool(np.all(new))
        self._wait_for_build()
        with self._wlock:
            if self._journal is not None:
                self._journal.add(labels.copy(), vectors.copy())
            if self._ivf is None:
                self._add_held(labels, vectors, fresh)
                if self._n_held >= self.train_threshold:
                    if self.background_training:
                        self._start_first_training()
                    elif self._journal is None:
                        self._train_from_held()
                return
            for s in range(0, len(labels), ADD_CHUNK):
                lab, vec = labels[s : s + ADD_CHUNK], vectors[s : s + ADD_CHUNK]
                codes = self._ivf.sa_encode(vec)  # coarse list + code: outside the gate (const)
                self._gate.enter_write(polite=True)
                try:
                    removed = 0 if fresh else int(self._ivf.remove_ids(faiss.IDSelectorBatch(lab)))
                    self._ivf.add_sa_codes(codes, lab)
                    self._count += len(lab) - removed
                finally:
                    self._gate.exit_write()
            if self.retrain_growth and self.growth >= self.retrain_growth:
                self.retrain_in_background()

    @property
    def _journal_bytes(self) -> int:
        """Bytes the running build's journal holds (0 without one)."""
        journal = self._journal
        return 0 if journal is None else journal.nbytes

    def _wait_for_build(self) -> None:
        """Backpressure (before the writer lock): wait while a build runs with a full journal.

        A training or retrain replays what was written meanwhile from the journal, which holds those
        vectors (and, before the first training, the exact buffer holds them too): a write stream faster
        than the build would grow both without bound. Past :attr:`journal_max` bytes, writers wait for
        the build to swap in (or fail, or be cancelled), as HNSW's write buffer waits for its graph.
        """
        while self._journal_bytes > self.journal_max:
            t = self._retrainer
            if t is None or not t.is_alive() or t is threading.current_thread() or self._cancel.is_set():
                return
            t.join(0.1)

    def retrain_in_background(self) -> bool:
        """Start :meth:`retrain` on a thread of its own unless one runs; True if one was started.

        Lists trained on n vectors grow long as the collection grows past n: a search probing the same
        fraction of lists scans more vectors and the centroids fit the data worse. :meth:`add` calls
        this when the index holds :data:`RETRAIN_GROWTH` times what it was trained on.
        """
        t = self._retrainer
        if t is not None and t.is_alive():
            return False
        self._retrainer = threading.Thread(
            target=self._retrain_quietly, name="embeddix-ivf-retrain", daemon=True
        )
        self._retrainer.start()
        return True

    def _retrain_quietly(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # searches and writers come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            self.retrain()
        except _Cancelled:
            log.info("IVF retrain cancelled (closing); the old index keeps serving")
        except Exception as exc:  # the old index keeps serving; the next growth step tries again
            log.warning("IVF background retrain failed, the old index keeps serving: %s", exc)
        finally:
            if self.on_thread_exit is not None:
                with contextlib.suppress(Exception):
                    self.on_thread_exit()

    def remove(self, labels: np.ndarray) -> int:
        """Delete labels; returns how many were live (absent labels are ignored)."""
        labels = np.ascontiguousarray(np.unique(np.asarray(labels, np.int64)))
        if not len(labels):
            return 0
        with self._wlock:
            if self._journal is not None:
                self._journal.add(labels, None)
            self._gate.enter_write()
            try:
                if self._ivf is None:
                    removed = self._drop_held(labels)
                else:
                    removed = int(self._ivf.remove_ids(faiss.IDSelectorBatch(labels)))
                self._count -= removed
            finally:
                self._gate.exit_write()
        return removed

    def _add_held(self, labels: np.ndarray, vectors: np.ndarray, fresh: bool) -> None:
        """Append to the exact buffer (writer lock held), replacing labels it holds."""
        self._gate.enter_write()
        try:
            if not fresh:
                self._count -= self._drop_held(labels)
            need = self._n_held + len(labels)
            if need > len(self._held_labels):
                cap = max(need, 2 * len(self._held_labels), 1024)
                lab = np.empty(cap, np.int64)
                vec = np.empty((cap, self.dim), np.float32)
                lab[: self._n_held] = self._held_labels[: self._n_held]
                vec[: self._n_held] = self._held_vecs[: self._n_held]
                self._held_labels, self._held_vecs = lab, vec
            self._held_labels[self._n_held : need] = labels
            self._held_vecs[self._n_held : need] = vectors
            self._n_held = need
            self._count += len(labels)
        finally:
            self._gate.exit_write()

    def _drop_held(self, labels: np.ndarray) -> int:
        """Remove labels from the exact buffer (gate held); returns how many it held."""
        n = self._n_held
        gone = np.isin(self._held_labels[:n], labels)
        removed = int(gone.sum())
        if removed:
            keep = ~gone
            self._held_labels[: n - removed] = self._held_labels[:n][keep]
            self._held_vecs[: n - removed] = self._held_vecs[:n][keep]
            self._n_held = n - removed
        return removed

    # -- training ------------------------------------------------------------------------------------
    def _new_trained(self, sample: np.ndarray, n: int) -> tuple[Any, float]:
        """An empty IVF index trained on ``sample`` with nlist for ``n`` vectors; and the seconds it took."""
        nlist = nlist_for(n)
        spec = f"IVF{nlist},Flat" if self.codes == "flat" else f"IVF{nlist},PQ{self.pq_m}x{self.nbits}"
        ivf: Any = faiss.index_factory(self.dim, spec, self._metric)
        ivf.cp.niter = KMEANS_ITERS
        ivf.cp.seed = self.seed
        ivf.cp.max_points_per_centroid = TRAIN_PER_LIST
        if self.codes == "pq":
            # sub-quantizer k-means: FAISS's default 25 iterations took 11.5 s of a 10,000 x 384 training
            # on one core, 10 iterations 5.1 s (spot measure; the recall floors of
            # tests/unit/test_index_choice.py and benchmarks/memory_bench.py hold with 10)
            ivf.pq.cp.niter = KMEANS_ITERS
            # FAISS's default polysemous training (codeword reordering for Hamming filtering, which we
            # never use) took 57 of 61 s of a 20,000 x 768 training
            ivf.do_polysemous_training = False
        assign = None
        if self.gpu != "off":
            # k-means' assignment step on a GPU when present (the one GPU module decides; CPU otherwise)
            assign = _gpu.maybe_to_gpu(faiss.IndexFlatL2(self.dim), self.gpu, len(sample))
            if _gpu.is_gpu_index(assign):
                ivf.clustering_index = assign
        t0 = time.perf_counter()
        if self.codes == "pq" and len(sample) > PQ_TRAIN_PER_CODE << self.nbits:
            # The coarse centroids from the whole sample, then the PQ codebooks from a part of it:
            # FAISS computes the residuals of every vector it trains the codes on (and copies its own
            # subsample of 256 a code word first), 402 MB at 100,000 x 768 over the sample's 307 MB;
            # on 128 a code word, 201 MB, and the whole sample is let go before them. ``train`` then
            # skips the coarse training (its quantizer holds nlist centroids).
            ivf.train_q1(len(sample), faiss.swig_ptr(sample), False, ivf.metric_type)
            rng = np.random.default_rng(self.seed)
            pick = np.sort(rng.choice(len(sample), PQ_TRAIN_PER_CODE << self.nbits, replace=False))
            sample = np.ascontiguousarray(sample[pick])  # the caller holds no other reference
        ivf.train(sample)
        if ivf.clustering_index is not None:
            ivf.clustering_index = None  # the GPU copy is not needed for search and never saved
        return ivf, time.perf_counter() - t0

    def train_from(self, sample: np.ndarray, n: int) -> bool:
        """Train an empty index on ``sample`` for ``n`` vectors to come; True if it trained.

        A bulk build (the engine's rebuild from the store) calls this with a sample drawn from all ``n``
        vectors before adding them, so the lists fit the whole set, instead of training on the first
        ``train_threshold`` added and retraining later. No-op when trained, holding vectors, or when
        ``n`` is below the training threshold.
        """
        with self._wlock:
            if self._ivf is not None or self._n_held or n < self.train_threshold:
                return False
            sample = self._matrix(sample, "sample")
            pick = self._sample(np.arange(len(sample), dtype=np.int64), nlist_for(n))
            ivf, _ = self._new_trained(np.ascontiguousarray(sample[pick]), n)
            self._gate.enter_write()
            try:
                self._ivf = ivf
                self.generation += 1
                self._trained_count = n
            finally:
                self._gate.exit_write()
        return True

    def sample_size(self, n: int) -> int:
        """Training vectors :meth:`train_from` uses for ``n`` vectors (draw that many, uniformly)."""
        return self._sample_cap(nlist_for(n))

    def _sample_cap(self, n_lists: int) -> int:
        floor = (1 << self.nbits) * MIN_PER_LIST if self.codes == "pq" else 0
        return max(min(TRAIN_PER_LIST * n_lists, TRAIN_MAX), floor)

    def _sample(self, labels: np.ndarray, n_lists: int) -> np.ndarray:
        """Labels of the training sample: all of them up to TRAIN_PER_LIST a list, else a seeded draw."""
        cap = self._sample_cap(n_lists)
        if len(labels) <= cap:
            return labels
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(labels, cap, replace=False))

    def _start_first_training(self) -> None:
        """Start the first training on a thread (writer lock held) unless one runs.

        The buffer's rows as of now are copied and trained on; writes meanwhile go to the buffer (still
        searched exactly) and to a journal replayed onto the new lists before the swap, as in
        :meth:`retrain`. Training 8-bit PQ codes takes seconds (measured ~5 s for 10,000 x 384 on one
        core): a write that crosses the threshold must not wait for it.
        """
        t = self._retrainer
        if self._journal is not None or (t is not None and t.is_alive()):
            return
        n = self._n_held
        labels, vectors = self._held_labels[:n].copy(), self._held_vecs[:n].copy()
        self._journal = _Journal()
        self._retrainer = threading.Thread(
            target=self._first_training, args=(labels, vectors), name="embeddix-ivf-train", daemon=True
        )
        self._retrainer.start()

    def _first_training(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        with contextlib.suppress(OSError, AttributeError):  # searches and writers come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        n = len(labels)
        try:
            pick = self._sample(np.arange(n, dtype=np.int64), nlist_for(n))
            ivf, _ = self._new_trained(np.ascontiguousarray(vectors[pick]), n)
            for s in range(0, n, ADD_CHUNK):
                if self._cancel.is_set():
                    raise _Cancelled
                ivf.add_sa_codes(ivf.sa_encode(vectors[s : s + ADD_CHUNK]), labels[s : s + ADD_CHUNK])
        except Exception as exc:  # the buffer keeps serving exactly; the next add tries again
            with self._wlock:
                self._journal = None
            if not isinstance(exc, _Cancelled):
                log.warning("IVF training failed, searching exactly meanwhile: %s", exc)
            return
        with self._wlock:
            self._swap_in(ivf)
        log.info("IVF index trained: %d vectors, nlist %d, codes %s", n, ivf.nlist, self.codes)

    def _swap_in(self, ivf: Any) -> int:
        """Replay the journal onto a newly built ``ivf`` and make it the index (writer lock held).

        The swap is one assignment under the gate's writer side: searches see the old lists or the new
        ones, never a mix. The exact buffer is emptied (a first training's rows are all in ``ivf``).

        Returns:
            Journaled writes replayed.
        """
        journal, self._journal = self._journal or _Journal(), None
        for lab, vec in journal:  # in write order: a later write of a label wins
            ivf.remove_ids(faiss.IDSelectorBatch(lab))
            if vec is not None:
                ivf.add_sa_codes(ivf.sa_encode(vec), lab)
        self._gate.enter_write()
        try:
            self._ivf = ivf
            self.generation += 1
            self._count = int(ivf.ntotal)
            self._trained_count = self._count
            self._held_labels = np.empty(0, np.int64)
            self._held_vecs = np.empty((0, self.dim), np.float32)
            self._n_held = 0
        finally:
            self._gate.exit_write()
        return len(journal)

    def _train_from_held(self) -> None:
        """First training (writer lock held): train on the buffer, fill the lists, swap under the gate.

        Searches keep answering exactly from the buffer until the swap; the buffer does not change
        meanwhile because only writers change it and this is the writer.
        """
        n = self._n_held
        labels, vectors = self._held_labels[:n], self._held_vecs[:n]
        pick = self._sample(np.arange(n, dtype=np.int64), nlist_for(n))
        ivf, _ = self._new_trained(np.ascontiguousarray(vectors[pick]), n)
        for s in range(0, n, ADD_CHUNK):
            ivf.add_sa_codes(ivf.sa_encode(vectors[s : s + ADD_CHUNK]), labels[s : s + ADD_CHUNK])
        self._gate.enter_write()
        try:
            self._ivf = ivf
            self.generation += 1
            self._trained_count = n
            self._held_labels = np.empty(0, np.int64)
            self._held_vecs = np.empty((0, self.dim), np.float32)
            self._n_held = 0
        finally:
            self._gate.exit_write()
        log.info("IVF index trained: %d vectors, nlist %d, codes %s", n, ivf.nlist, self.codes)

    def retrain(self) -> RetrainReport:
        """Train a new index on the live vectors off to the side, then swap it in atomically.

        Searches keep answering from the old index throughout and never see a half-built one: the swap
        is one assignment under the gate's writer side. Writes during the build go to the old index and
        to a journal replayed onto the new one before the swap. Full-precision vectors come from
        ``load_vectors``; labels it returns NaN for (deleted meanwhile) are skipped. Blocks the caller
        (run it in a thread for a background retrain; :meth:`watch_recall` does).

        Returns:
            What was built.
        """
        t0 = time.perf_counter()
        with self._retrain_lock:
            with self._wlock:
                if self._ivf is None:  # below the training threshold: exact search needs no training
                    return RetrainReport(self._n_held, 0, 0.0, time.perf_counter() - t0, 0)
                labels = self.live_labels()
                self._journal = _Journal()
            try:
                sample = self._sample(labels, nlist_for(len(labels)))
                # no name kept for the sample: _new_trained lets it go once the centroids are trained
                ivf, train_s = self._new_trained(
                    _stored_rows(np.ascontiguousarray(self._load(sample), np.float32)), len(labels)
                )
                for s in range(0, len(labels), ADD_CHUNK):
                    if self._cancel.is_set():
                        raise _Cancelled
                    part = labels[s : s + ADD_CHUNK]
                    v = np.ascontiguousarray(self._load(part), np.float32)
                    ok = np.isfinite(v[:, 0])  # NaN rows: deleted meanwhile (the loader's contract)
                    if not ok.all():
                        v, part = v[ok], np.ascontiguousarray(part[ok])
                    ivf.add_sa_codes(ivf.sa_encode(v), part)
            except BaseException:
                with self._wlock:
                    self._journal = None
                raise
            with self._wlock:
                replayed = self._swap_in(ivf)
                self.retrains += 1
        report = RetrainReport(self._count, int(ivf.nlist), train_s, time.perf_counter() - t0, replayed)
        log.info("IVF index retrained: %s", report)
        return report

    def watch_recall(
        self,
        queries: np.ndarray,
        truth: np.ndarray | None = None,
        *,
        k: int = 10,
        target: float = 0.95,
        ef: int | None = None,
        retrain: bool = False,
    ) -> RecallCheck:
        """Measure recall@k on a calibration sample; optionally retrain in the background when it is low.

        Args:
            queries: (nq, dim) sample queries (the planner's calibration sample).
            truth: (nq, >= k) exact labels per query, best first; None computes them here (exact scan
                through ``load_vectors``).
            k: Recall cut-off.
            target: Recall the index should reach.
            ef: The ``ef`` to measure at (default ``ef_search``).
            retrain: Start :meth:`retrain` in a background thread when ``recall < target`` (and none runs).

        Returns:
            The measurement, and whether a retrain was started (:meth:`join` waits for it).
        """
        q = self._matrix(queries, "queries")
        if truth is None:
            truth = exact_topk_over(self.get_vectors, self.live_labels(), q, k, self.space).labels
        found = self.search(q, k, ef=ef).labels
        recall = recall_at_k(found, np.asarray(truth)[:, :k], k)
        started = False
        if retrain and recall < target and self.trained:
            t = self._retrainer
            if t is None or not t.is_alive():
                self._retrainer = threading.Thread(
                    target=self.retrain, name="embeddix-ivf-retrain", daemon=True
                )
                self._retrainer.start()
                started = True
        return RecallCheck(float(recall), float(target), k, self.nprobe(ef), started)

    @property
    def growth(self) -> float:
        """Live vectors over those the lists were trained on (a cheap retrain hint: lists grow long)."""
        return self._count / self._trained_count if self._trained_count else 0.0

    # -- reads ---------------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        allowed: LabelFilter | np.ndarray | None = None,
        num_threads: int = 1,
        rerank: int | None = None,
    ) -> IndexResult:
        """k nearest live vectors per query (fewer when fewer exist), optionally restricted.

        Args:
            queries: (nq, dim) index-space queries.
            k: Results wanted per query.
            ef: Planner knob, mapped to nprobe by :func:`nprobe_for` (default ``ef_search``).
            allowed: Allowed labels: an int64 array, a ``set.__contains__``, or any label predicate
                (evaluated once per live label; see the module docstring).
            num_threads: Ignored: FAISS parallelizes a batch over its own OpenMP threads.
            rerank: PQ only: candidates re-ranked per result (default ``rerank_factor``).

        Returns:
            Labels and raw distances of the space, best first; rows padded with -1 / inf when fewer
            than k (allowed) vectors exist.
        """
        q = self._matrix(queries, "queries")
        nq = q.shape[0]
        kk = min(int(k), self._count)
        if kk <= 0:
            return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))
        allow = None if allowed is None else self._allowed_array(allowed)
        if allow is not None and not len(allow):
            return _pad(IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32)), kk)
        self._gate.enter_shared()
        try:
            ivf = self._ivf
            if ivf is None:
                return self._search_held(q, kk, allow)
            use = ef or self.ef_search
            # PQ: the planner's ef widens the re-rank with the probes (a recall target asks for both);
            # the calibration measures the pair, so the curve covers the width too
            width = kk if self.codes == "flat" else max(rerank_width(kk, rerank or self.rerank_factor), use)
            nprobe = nprobe_for(use, int(ivf.nlist))
            labels, dists = self._search_ivf(ivf, q, width, kk, nprobe, allow)
        finally:
            self._gate.exit_read()
        if self.codes == "flat":
            return IndexResult(labels, dists)
        return self._rerank(q, labels, kk)

    def _search_held(self, q: np.ndarray, k: int, allow: np.ndarray | None) -> IndexResult:
        labels, vecs = self._held_labels[: self._n_held], self._held_vecs[: self._n_held]
        if allow is not None:
            keep = np.isin(labels, allow)
            labels, vecs = labels[keep], vecs[keep]
        return _pad(exact_topk(vecs, labels, q, k, self.space), k)

    def _search_ivf(
        self, ivf: Any, q: np.ndarray, width: int, k: int, nprobe: int, allow: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search for ``width`` candidates (gate held), widening nprobe while the probed lists held
        fewer than ``k`` (allowed) vectors. Only k, not the re-rank width: widening for a short candidate
        set would make recall jump non-monotonically in ef, which the planner's calibration assumes."""
        nlist = int(ivf.nlist)
        reach = self._count if allow is None else min(self._count, len(allow))
        sel, keep = (None, None) if allow is None else _selector(allow)
        while True:
            params: Any = faiss.SearchParametersIVF()
            params.nprobe = nprobe
            if sel is not None:
                params.sel = sel
            sims, labels = ivf.search(q, width, params=params)
            short = (labels[:, : min(k, reach)] < 0).any()
            if not short or nprobe >= nlist:
                break
            nprobe = min(nprobe * 4, nlist)
        del sel, keep  # the selector holds a raw pointer into ``keep``: both lived through the search
        dists = (1.0 - sims) if self.space == "ip" else sims
        dists = np.where(labels >= 0, dists, np.inf).astype(np.float32, copy=False)
        return labels.astype(np.int64, copy=False), dists

    def _rerank(self, q: np.ndarray, labels: np.ndarray, k: int) -> IndexResult:
        """Exact distances of the candidates from full-precision vectors; the best k per query."""
        valid = labels >= 0
        uniq, inv = np.unique(labels[valid], return_inverse=True)
        vecs = np.ascontiguousarray(self._load(uniq), np.float32) if len(uniq) else np.empty((0, self.dim))
        pos = np.zeros(labels.shape, np.int64)
        pos[valid] = inv
        gathered = vecs[pos] if len(uniq) else np.zeros((*labels.shape, self.dim), np.float32)
        dots = np.einsum("qwd,qd->qw", gathered, q)
        if self.space == "ip":
            dist = 1.0 - dots
        else:
            norms = np.einsum("qwd,qwd->qw", gathered, gathered)
            dist = np.maximum(norms - 2.0 * dots + np.einsum("qd,qd->q", q, q)[:, None], 0.0)
        # padding, and records deleted since FAISS answered (NaN rows from the loader), rank last
        dist = np.where(valid & np.isfinite(dist), dist, np.inf).astype(np.float32)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        out_d = np.take_along_axis(dist, order, axis=1)
        out_l = np.where(np.isfinite(out_d), np.take_along_axis(labels, order, axis=1), -1)
        return IndexResult(out_l, out_d)

    def _allowed_array(self, allowed: LabelFilter | np.ndarray) -> np.ndarray:
        """The allowed labels as a sorted int64 array (see the module docstring on filters)."""
        if isinstance(allowed, np.ndarray):
            return np.unique(allowed.astype(np.int64, copy=False))
        owner = getattr(allowed, "__self__", None)
        if isinstance(owner, set | frozenset) and getattr(allowed, "__name__", "") == "__contains__":
            return np.unique(np.fromiter(owner.copy(), np.int64, len(owner)))
        live = self.live_labels()
        return live[np.fromiter((bool(allowed(int(x))) for x in live.tolist()), bool, len(live))]

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        """Full-precision vectors of live labels, in order (the exact buffer, else ``load_vectors``)."""
        labels = np.asarray(labels, np.int64)
        if not len(labels):
            return np.empty((0, self.dim), np.float32)
        self._gate.enter_shared()
        try:
            if self._ivf is None:
                held = self._held_labels[: self._n_held]
                order = np.argsort(held, kind="stable")
                at = np.searchsorted(held, labels, sorter=order)
                at = np.minimum(at, max(len(held) - 1, 0))
                idx = order[at] if len(held) else at
                if not len(held) or (held[idx] != labels).any():
                    missing = labels[~np.isin(labels, held)][:5].tolist()
                    raise NotFoundError(f"labels not in the index: {missing}; expected live labels")
                return self._held_vecs[idx].copy()
        finally:
            self._gate.exit_read()
        return np.ascontiguousarray(self._load(labels), np.float32)

    def live_labels(self) -> np.ndarray:
        """Every live label (sorted)."""
        self._gate.enter_shared()
        try:
            ivf = self._ivf
            if ivf is None:
                return np.sort(self._held_labels[: self._n_held])
            inv = ivf.invlists
            parts = []
            for i in range(int(ivf.nlist)):
                size = int(inv.list_size(i))
                if size:
                    parts.append(faiss.rev_swig_ptr(inv.get_ids(i), size).copy())
        finally:
            self._gate.exit_read()
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)

    # -- on disk -------------------------------------------------------------------------------------
    def _manifest(self, size: int, crc: int) -> dict[str, Any]:
        return {
            "magic": _MAGIC,
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "space": self.space,
            "codes": self.codes,
            "pq_m": self.pq_m,
            "nbits": self.nbits,
            "nlist": self.nlist,
            "trained": self.trained,
            "trained_count": self._trained_count,
            "count": self._count,
            "index_file": _INDEX_FILE,
            "size": size,
            "crc32": crc,
        }

    def save(self, directory: Path) -> None:
        """Write the index and its manifest into ``directory`` (the format in the module docstring).

        Durability: when this returns, both files are on stable storage; the manifest is written after
        the index file, so a crash in between leaves a manifest whose checksum refuses the new index
        file (and :meth:`load` raises rather than serving a mismatched pair).

        Raises:
            OSError: A file could not be written.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._wlock:  # no writer changes the index while it is serialized
            obj = self._serializable()
            path = directory / _INDEX_FILE
            size = atomic_write(path, lambda p: faiss.write_index(obj, str(p)), sync_dir=False)
            manifest = self._manifest(size, _crc32(path))
        atomic_write_bytes(
            directory / _MANIFEST_FILE, json.dumps(manifest, sort_keys=True, indent=1).encode()
        )

    @classmethod
    def from_file(
        cls,
        path: Path,
        dim: int,
        space: str,
        *,
        load_vectors: VectorLoader,
        codes: str = "pq",
        pq_m: int | None = None,
        nbits: int = 8,
        **kwargs: Any,
    ) -> FaissIvfIndex:
        """Read a snapshot file written by :meth:`savers` (the engine's snapshot manifest checked it).

        Raises:
            CorruptionError: FAISS cannot read it, or it holds another kind or shape of index.
        """
        out = cls(dim, space, load_vectors=load_vectors, codes=codes, pq_m=pq_m, nbits=nbits, **kwargs)
        try:
            index: Any = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise CorruptionError(f"IVF index file {path}: FAISS cannot read it ({exc})") from exc
        if int(index.d) != dim:
            raise CorruptionError(f"IVF index file {path} holds {index.d}-d vectors; expected {dim}")
        out._adopt(index, path, int(index.ntotal))
        return out

    def _adopt(self, index: Any, path: Path, trained_count: int) -> None:
        """Take over a FAISS index read from ``path``: the trained IVF, or the ID map of the buffer."""
        if isinstance(index, faiss.IndexIDMap2):
            n = int(index.ntotal)
            self._held_labels = faiss.vector_to_array(index.id_map).astype(np.int64)
            flat = faiss.downcast_index(index.index)
            self._held_vecs = (
                flat.reconstruct_n(0, n).astype(np.float32) if n else np.empty((0, self.dim), np.float32)
            )
            self._n_held = n
        else:
            try:
                ivf = faiss.extract_index_ivf(index)
            except RuntimeError as exc:
                raise CorruptionError(f"{path} holds a {type(index).__name__}, not an IVF index") from exc
            real: Any = faiss.downcast_index(ivf)
            is_pq = isinstance(real, faiss.IndexIVFPQ)
            if is_pq != (self.codes == "pq") or (is_pq and int(real.pq.M) != self.pq_m):
                raise CorruptionError(
                    f"IVF index file {path} holds {type(real).__name__}; expected "
                    f"codes={self.codes!r}" + (f" with pq_m={self.pq_m}" if self.codes == "pq" else "")
                )
            self._ivf = index
            self._trained_count = trained_count
        self._count = int(index.ntotal)

    @classmethod
    def load(
        cls,
        directory: Path,
        dim: int,
        space: str,
        *,
        load_vectors: VectorLoader,
        codes: str = "pq",
        pq_m: int | None = None,
        nbits: int = 8,
        **kwargs: Any,
    ) -> FaissIvfIndex:
        """Read an index written by :meth:`save`, refusing one that does not match the arguments.

        Args:
            directory: Where :meth:`save` wrote.
            dim, space, codes, pq_m, nbits: What the caller expects (the collection's parameters).
            load_vectors: As for the constructor.
            **kwargs: Runtime knobs of the constructor (``ef_search``, ``rerank_factor``, ...).

        Raises:
            FormatVersionError: The manifest has a newer format version.
            CorruptionError: A file is missing, truncated, fails its checksum, is not an IVF manifest, or
                its parameters differ from the arguments (the message names the field, the stored and
                the expected value).
        """
        directory = Path(directory)
        out = cls(dim, space, load_vectors=load_vectors, codes=codes, pq_m=pq_m, nbits=nbits, **kwargs)
        try:
            manifest = json.loads((directory / _MANIFEST_FILE).read_bytes())
        except FileNotFoundError as exc:
            raise CorruptionError(f"no IVF manifest {_MANIFEST_FILE} in {directory}") from exc
        except ValueError as exc:
            raise CorruptionError(f"IVF manifest in {directory} is not valid JSON: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("magic") != _MAGIC:
            raise CorruptionError(f"{directory / _MANIFEST_FILE} is not an Embeddix IVF manifest")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise FormatVersionError(
                f"IVF index in {directory} has format version {version!r}; this release reads up to "
                f"{FORMAT_VERSION} (upgrade Embeddix, or rebuild the index from the store)"
            )
        want = {
            "dim": out.dim,
            "space": out.space,
            "codes": out.codes,
            "pq_m": out.pq_m,
            "nbits": out.nbits,
        }
        for key, value in want.items():
            if manifest.get(key) != value:
                raise CorruptionError(
                    f"IVF index in {directory} has {key}={manifest.get(key)!r}; expected {value!r} "
                    "(it belongs to another configuration: rebuild it from the store)"
                )
        path = directory / str(manifest.get("index_file", _INDEX_FILE))
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise CorruptionError(f"IVF index file {path} is missing") from exc
        if size != manifest.get("size") or _crc32(path) != manifest.get("crc32"):
            raise CorruptionError(
                f"IVF index file {path} has size {size} and another checksum than its manifest records "
                f"(size {manifest.get('size')}, crc32 {manifest.get('crc32')}): torn or replaced"
            )
        try:
            index: Any = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise CorruptionError(f"IVF index file {path}: FAISS cannot read it ({exc})") from exc
        if int(index.d) != dim or int(index.ntotal) != manifest.get("count"):
            raise CorruptionError(
                f"IVF index file {path} holds {index.ntotal} x {index.d}; its manifest says "
                f"{manifest.get('count')} x {dim}"
            )
        if manifest.get("trained"):
            ivf = faiss.extract_index_ivf(index)
            if int(ivf.nlist) != manifest.get("nlist"):
                raise CorruptionError(
                    f"IVF index file {path} has nlist {ivf.nlist}; its manifest says {manifest.get('nlist')}"
                )
        out._adopt(index, path, int(manifest.get("trained_count") or index.ntotal))
        return out


def _pad(res: IndexResult, k: int) -> IndexResult:
    """Pad rows to k columns (-1 / inf) when fewer candidates existed."""
    short = k - res.labels.shape[1]
    if short <= 0:
        return res
    return IndexResult(
        np.pad(res.labels, ((0, 0), (0, short)), constant_values=-1),
        np.pad(res.distances, ((0, 0), (0, short)), constant_values=np.inf),
    )


def _selector(allow: np.ndarray) -> tuple[Any, np.ndarray]:
    """A FAISS selector admitting the sorted labels ``allow``: a bitmap over [0, max] when that is at most
    ``_BITMAP_SLACK`` times the size of a hash set of them (labels are dense store row ids, so usually),
    else ``IDSelectorBatch``. Returns the selector and the buffer it reads, which the caller keeps alive
    through the search."""
    top = int(allow[-1]) + 1
    if int(allow[0]) >= 0 and (top + 7) // 8 <= _BITMAP_SLACK * 16 * len(allow):
        mask = np.zeros(top, bool)
        mask[allow] = True
        bits = np.packbits(mask, bitorder="little")
        # FAISS takes the bitmap's length in *bytes* (ids at or past 8 * len(bits) are not members)
        return faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits
    return faiss.IDSelectorBatch(allow), allow  # Batch copies the ids into its own hash set


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc
