"""HNSW over scalar-quantized codes (FAISS ``IndexHNSWSQ``), re-ranked with full-precision vectors.

What stays in RAM: the graph and one code per vector (``fp16``: 2 bytes a dimension, ``sq8``: 1 byte),
plus 8 bytes of label per slot and a tombstone bitmap. The float32 vectors live only in the store; the
final distances of a search are computed from them (read through the loader the index is built with), so
the codes only have to rank the right records into a candidate set, not order it exactly.

Rerank width: the graph is searched with the plan's beam ``ef`` (at least the width) for
``rerank_width(k)`` = ``k + min(k * (rerank_factor - 1), RERANK_MAX_EXTRA)`` candidates (``2k`` for
k <= 20 with the default :data:`RERANK_FACTOR`, at most :data:`RERANK_MAX_EXTRA` beyond ``k`` for the
result cache's wide candidate sets), and all of them are re-ranked. The width is a function of the
plan's ``k`` and the factor only, so the planner's calibrated recall/ef curve measures search *and*
re-rank together (a calibration runs :meth:`SegmentedFaissHnsw.search` like any search).

Why not the whole beam (``ef`` candidates): every re-ranked candidate is a store read (~7 us a row
through ``rows_by_labels`` at 384-d, measured), so re-ranking a 96-wide beam cost ~0.7 ms a query. Measured
on real text (20,000 x 384, sq8, 300 held-out queries), recall@10 after re-ranking 2k / 3k / 4k
candidates: 0.9763 / 0.9763 / 0.9763 at ef 48, 0.9857 for all three at ef 64, 0.9943 at ef 96 (1k, no
extra candidates: 0.9727 / 0.9820 / 0.9903): past 2k the beam, not the width, limits recall.
``rerank_factor`` is an attribute of the index, so a planner can widen it per recall target later.

Training: ``fp16`` needs none. ``sq8`` (FAISS ``QT_8bit``: a min/max range per dimension) is trained once,
on the vectors of the first batch its first segment receives - the collection's whole contents at the
moment it outgrows ``index_threshold`` (10,000 records by default) and leaves exact search, or the first
20,000 rows of a rebuild. Later segments reuse that range (values outside it are clamped; re-ranking
repairs the order). With fewer than :data:`MIN_TRAIN` vectors (a tiny ``index_threshold``), a min/max per
dimension would be degenerate, so one symmetric range over all dimensions is used instead.

Deletes and updates: FAISS HNSW cannot remove a node. A delete clears the slot's bit in a bitmap that every
search passes to FAISS as an ``IDSelectorBitmap``; an update tombstones the old slot and appends a new one
under the same label. Tombstoned slots keep their memory until a rebuild (``Collection.compact``).

Concurrency: FAISS searches may run together; adds and tombstoning must run alone. The same gate as the
hnswlib index (``hnsw._Gate``) is used in its ef-free mode: ef is a per-query search parameter here.

Snapshot file (one per segment, listed with size and CRC32 in the snapshot manifest; see
``storage/snapshot.py``)::

    b"EMBXFHNS" | u32 format version | u32 header length | header JSON | labels int64[slots]
    | alive bitmap uint8[ceil(slots / 8)] | FAISS index (faiss.write_index's own format)

No pickle anywhere: the header is JSON, the arrays raw little-endian, the index FAISS's binary format.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import numpy as np

from ..errors import CorruptionError, FormatVersionError, InvalidArgumentError
from .base import IndexResult, LabelFilter, exact_topk
from .faiss_flat import _faiss
from .hnsw import _Gate
from .segmented import SegmentedHnsw

__all__ = [
    "MIN_TRAIN",
    "QUANTIZERS",
    "RERANK_FACTOR",
    "RERANK_MAX_EXTRA",
    "FaissHnswSegment",
    "SegmentedFaissHnsw",
    "VectorLoader",
    "rerank_width",
]

VectorLoader = Callable[[np.ndarray], np.ndarray]
"""Full-precision, index-space vectors of labels, in order; NaN rows for labels no longer stored."""

# Policy as data: quantization name -> FAISS ScalarQuantizer type ("none" never reaches this module).
# Names, not values: FAISS is imported on first use (``_faiss``), so unquantized engines never load it here.
QUANTIZERS: dict[str, str] = {
    "fp16": "QT_fp16",
    "sq8": "QT_8bit",
}
# Candidates re-ranked per result wanted, at least (see the module docstring).
RERANK_FACTOR = 2
# ... but never more than this many beyond k: quantization moves a record a few ranks, not k ranks, and
# the result cache asks for 8k candidates (each extra one is a store read).
RERANK_MAX_EXTRA = 20
# Below this many training vectors a per-dimension min/max is too noisy (one vector: zero range).
MIN_TRAIN = 1_000

_MAGIC = b"EMBXFHNS"
_FORMAT = 1
_HEAD = struct.Struct("<8sII")


def rerank_width(k: int, factor: int = RERANK_FACTOR) -> int:
    """Candidates a quantized search re-ranks for ``k`` results (see the module docstring)."""
    return k + min(k * (max(int(factor), 1) - 1), RERANK_MAX_EXTRA)


def _empty(nq: int) -> IndexResult:
    return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))


class FaissHnswSegment:
    """One FAISS HNSW-SQ graph keyed by store labels (approximate distances from the codes).

    Args:
        dim: Vector dimension (fixed).
        space: ``"ip"`` or ``"l2"`` (fixed).
        quantization: ``"fp16"`` or ``"sq8"`` (fixed).
        m: Graph degree (fixed after build).
        ef_construction: Build beam width (fixed after build).
        ef_search: Default query beam width.
        trained: A trained ``sq8`` range to reuse (another segment's :meth:`trained_params`).
    """

    kind = "faiss_hnsw"

    def __init__(
        self,
        dim: int,
        space: str,
        quantization: str,
        *,
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 96,
        trained: np.ndarray | None = None,
        _index: Any = None,
        _labels: np.ndarray | None = None,
        _alive: np.ndarray | None = None,
    ) -> None:
        if quantization not in QUANTIZERS:
            raise InvalidArgumentError(
                f"quantization must be one of {sorted(QUANTIZERS)} for a quantized HNSW index; "
                f"got {quantization!r}"
            )
        self.dim = dim
        self.space = space
        self.quantization = quantization
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        faiss = _faiss()
        if _index is None:
            metric = faiss.METRIC_INNER_PRODUCT if space == "ip" else faiss.METRIC_L2
            qtype = getattr(faiss.ScalarQuantizer, QUANTIZERS[quantization])
            _index = faiss.IndexHNSWSQ(dim, qtype, m, metric)
            _index.hnsw.efConstruction = ef_construction
            if trained is not None and not _index.is_trained:
                self._set_trained(_index, trained)
        self._index = _index
        self._storage = faiss.downcast_index(_index.storage)
        n = int(_index.ntotal)
        # slot -> label (grown by doubling); slot -> alive bit; label - base -> slot (-1: none)
        self._labels = np.full(max(n, 1024), -1, np.int64) if _labels is None else _labels
        self._alive = np.zeros((len(self._labels) + 7) // 8, np.uint8) if _alive is None else _alive
        self._base = 0
        self._slot_of = np.full(0, -1, np.int64)
        self._live = 0
        if n:
            self._reindex(n)
        self._gate = _Gate()

    # -- bookkeeping -------------------------------------------------------------------------------
    def _reindex(self, n: int) -> None:
        """Rebuild label -> slot from the slot arrays (after a load)."""
        alive = np.unpackbits(self._alive, bitorder="little")[:n].astype(bool)
        slots = np.flatnonzero(alive)
        labels = self._labels[slots]
        self._live = len(slots)
        if len(labels):
            self._base = int(labels.min())
            self._slot_of = np.full(int(labels.max()) - self._base + 1, -1, np.int64)
            self._slot_of[labels - self._base] = slots

    def _slots(self, labels: np.ndarray) -> np.ndarray:
        """Live slot of each label, -1 where it has none."""
        off = labels - self._base
        ok = (off >= 0) & (off < len(self._slot_of))
        out = np.full(len(labels), -1, np.int64)
        out[ok] = self._slot_of[off[ok]]
        return out

    def _map(self, labels: np.ndarray, slots: np.ndarray) -> None:
        """Point labels at slots, growing the label table (labels are the store's ascending row ids:
        the table spans the labels this segment ever held, 8 bytes each)."""
        lo, hi = int(labels.min()), int(labels.max())
        if not len(self._slot_of):
            self._base = lo
            self._slot_of = np.full(max(hi - lo + 1, 1024), -1, np.int64)
        if lo < self._base:
            self._slot_of = np.concatenate([np.full(self._base - lo, -1, np.int64), self._slot_of])
            self._base = lo
        if hi - self._base >= len(self._slot_of):
            grown = np.full(max(hi - self._base + 1, 2 * len(self._slot_of)), -1, np.int64)
            grown[: len(self._slot_of)] = self._slot_of
            self._slot_of = grown
        self._slot_of[labels - self._base] = slots

    def _set_alive(self, slots: np.ndarray, value: bool) -> None:
        byte, bit = slots >> 3, (slots & 7).astype(np.uint8)
        mask = np.left_shift(np.uint8(1), bit)
        if value:
            np.bitwise_or.at(self._alive, byte, mask)
        else:
            np.bitwise_and.at(self._alive, byte, np.invert(mask))

    @staticmethod
    def _set_trained(index: Any, trained: np.ndarray) -> None:
        faiss = _faiss()
        storage = faiss.downcast_index(index.storage)
        faiss.copy_array_to_vector(np.ascontiguousarray(trained, np.float32), storage.sq.trained)
        storage.is_trained = True
        index.is_trained = True

    def _train(self, vectors: np.ndarray) -> None:
        if len(vectors) >= MIN_TRAIN:
            self._index.train(vectors)
            return
        # a symmetric range over every dimension, half again as wide as the data seen (see the module
        # docstring): never degenerate, even for a single vector
        r = float(np.abs(vectors).max()) * 1.5 if len(vectors) else 1.0
        r = r if r > 0 else 1.0
        self._set_trained(
            self._index,
            np.concatenate([np.full(self.dim, -r, np.float32), np.full(self.dim, 2 * r, np.float32)]),
        )

    def trained_params(self) -> np.ndarray | None:
        """The trained quantizer range (sq8; None before training, or for fp16)."""
        if self.quantization != "sq8" or not self._index.is_trained:
            return None
        return _faiss().vector_to_array(self._storage.sq.trained).copy()

    # -- the segment interface (see SegmentedHnsw) -------------------------------------------------
    def __len__(self) -> int:
        return self._live

    @property
    def capacity(self) -> int:
        return int(self._index.ntotal)

    @property
    def tombstones(self) -> int:
        return int(self._index.ntotal) - self._live

    def add(
        self,
        labels: np.ndarray,
        vectors: np.ndarray,
        new: np.ndarray | None = None,
        num_threads: int = -1,
        *,
        polite: bool = False,
    ) -> None:
        """Insert vectors; a label already held is tombstoned and re-added (FAISS cannot update)."""
        labels = np.asarray(labels, np.int64)
        if not len(labels):
            return
        vectors = np.ascontiguousarray(vectors, np.float32)
        self._gate.enter_write(polite)
        try:
            if not self._index.is_trained:
                self._train(vectors)
            old = self._slots(labels)
            had = old >= 0
            if had.any():
                self._set_alive(old[had], False)
            start = int(self._index.ntotal)
            self._index.add(vectors)
            end = start + len(labels)
            if end > len(self._labels):
                grown = np.full(max(end, 2 * len(self._labels)), -1, np.int64)
                grown[:start] = self._labels[:start]
                self._labels = grown
                alive = np.zeros((len(grown) + 7) // 8, np.uint8)
                alive[: len(self._alive)] = self._alive
                self._alive = alive
            slots = np.arange(start, end, dtype=np.int64)
            self._labels[start:end] = labels
            self._set_alive(slots, True)
            self._map(labels, slots)
            self._live += len(labels) - int(had.sum())
        finally:
            self._gate.exit_write()

    def remove(self, labels: np.ndarray) -> int:
        """Tombstone the labels; returns how many were live (absent ones are ignored)."""
        labels = np.unique(np.asarray(labels, np.int64))
        self._gate.enter_write()
        try:
            slots = self._slots(labels)
            hit = slots >= 0
            if hit.any():
                self._set_alive(slots[hit], False)
                self._slot_of[labels[hit] - self._base] = -1
            removed = int(hit.sum())
            self._live -= removed
        finally:
            self._gate.exit_write()
        return removed

    def has(self, labels: np.ndarray) -> np.ndarray:
        """Whether each label is live here."""
        return self._slots(np.asarray(labels, np.int64)) >= 0

    def _ids(self) -> list[int]:
        return self.live_labels().tolist()

    def live_labels(self) -> np.ndarray:
        self._gate.enter_shared()
        try:
            slots = self._slot_of[self._slot_of >= 0]
            return np.sort(self._labels[slots]) if len(slots) else np.empty(0, np.int64)
        finally:
            self._gate.exit_read()

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        allowed: LabelFilter | None = None,
        num_threads: int = 1,
    ) -> IndexResult:
        """Approximate top k by the codes (raw distances of the space; the caller re-ranks)."""
        nq = queries.shape[0]
        kk = min(k, self._live)
        if kk <= 0:
            return _empty(nq)
        queries = np.ascontiguousarray(queries, np.float32)
        ef_eff = max(ef or self.ef_search, kk)
        for _attempt in range(3):
            self._gate.enter_shared()
            try:
                slots, dists = self._faiss_search(queries, kk, ef_eff, allowed)
                labels = np.where(slots >= 0, self._labels[np.maximum(slots, 0)], -1)
            finally:
                self._gate.exit_read()
            if (slots >= 0).all():
                return IndexResult(labels, dists)
            # FAISS pads with -1 when the beam met fewer than k live (allowed) nodes: many tombstones or
            # a selective filter. Widen the beam, then fall back to an exact scan of the codes.
            if ef_eff >= self._live:
                break
            ef_eff = min(ef_eff * 4, max(self._live, 1))
        return self._exact(queries, kk, allowed)

    def _faiss_search(
        self, queries: np.ndarray, k: int, ef: int, allowed: LabelFilter | None
    ) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        n = int(self._index.ntotal)
        # selectors hold raw pointers: the arrays and sub-selectors must outlive the search call
        keep: list[Any] = []
        sel: Any = None
        if self._live < n:
            sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(self._alive))
            keep.append(sel)
        if allowed is not None:
            table = self._labels
            hook = faiss.PyCallbackIDSelector(lambda slot: bool(allowed(int(table[slot]))))
            keep.append(hook)
            sel = hook if sel is None else faiss.IDSelectorAnd(sel, hook)
        params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)  # per query: no shared ef to race on
        sims, slots = self._index.search(queries, k, params=params)
        del keep
        dists = (1.0 - sims) if self.space == "ip" else sims
        dists = np.where(slots >= 0, dists, np.inf).astype(np.float32, copy=False)
        return slots.astype(np.int64, copy=False), dists

    def _exact(self, queries: np.ndarray, k: int, allowed: LabelFilter | None) -> IndexResult:
        labels = self.live_labels()
        if allowed is not None:
            labels = labels[np.fromiter((allowed(int(x)) for x in labels), bool, len(labels))]
        res = exact_topk(self.get_vectors(labels), labels, queries, k, self.space)
        if res.labels.shape[1] < k:
            pad = k - res.labels.shape[1]
            return IndexResult(
                np.pad(res.labels, ((0, 0), (0, pad)), constant_values=-1),
                np.pad(res.distances, ((0, 0), (0, pad)), constant_values=np.inf),
            )
        return res

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        """Vectors *decoded from the codes* (approximate): only for ranking candidates inside the index.
        Full-precision vectors come from the store (:meth:`SegmentedFaissHnsw.get_vectors`)."""
        labels = np.asarray(labels, np.int64)
        if not len(labels):
            return np.empty((0, self.dim), np.float32)
        self._gate.enter_shared()
        try:
            slots = self._slots(labels)
            if (slots < 0).any():
                raise KeyError(f"labels not in this segment: {labels[slots < 0][:5].tolist()}")
            out = self._storage.reconstruct_batch(slots)
        finally:
            self._gate.exit_read()
        return np.ascontiguousarray(out, np.float32).reshape(len(labels), self.dim)

    def memory_bytes(self) -> int:
        """Bytes held: codes, graph links, levels and offsets, and the label/tombstone tables."""
        hnsw = self._index.hnsw
        native = (
            int(self._storage.codes.size())
            + 4 * int(hnsw.neighbors.size())
            + 8 * int(hnsw.offsets.size())
            + 4 * int(hnsw.levels.size())
        )
        return native + self._labels.nbytes + self._alive.nbytes + self._slot_of.nbytes

    def memory_parts(self) -> dict[str, int]:
        """Resident bytes by part: codes, graph (links, levels, offsets), labels and tombstone tables."""
        hnsw = self._index.hnsw
        graph = 4 * int(hnsw.neighbors.size()) + 8 * int(hnsw.offsets.size()) + 4 * int(hnsw.levels.size())
        labels = int(self._labels.nbytes + self._alive.nbytes + self._slot_of.nbytes)
        return {"codes": int(self._storage.codes.size()), "graph": graph, "labels": labels}

    # -- snapshot file ------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write this segment to ``path`` (the format in the module docstring)."""
        self._gate.enter_write()
        try:
            n = int(self._index.ntotal)
            header = {
                "dim": self.dim,
                "space": self.space,
                "quantization": self.quantization,
                "m": self.m,
                "ef_construction": self.ef_construction,
                "slots": n,
                "live": self._live,
            }
            head = json.dumps(header, sort_keys=True).encode()
            with open(path, "wb") as fh:
                fh.write(_HEAD.pack(_MAGIC, _FORMAT, len(head)))
                fh.write(head)
                fh.write(self._labels[:n].astype("<i8").tobytes())
                fh.write(self._alive[: (n + 7) // 8].tobytes())
                writer = _faiss().PyCallbackIOWriter(fh.write)
                _faiss().write_index(self._index, writer)
                del writer  # flushes FAISS's buffered tail into fh
        finally:
            self._gate.exit_write()

    @classmethod
    def load(
        cls,
        path: Path,
        dim: int,
        space: str,
        quantization: str,
        *,
        m: int,
        ef_construction: int,
        ef_search: int,
        live: int | None = None,
    ) -> FaissHnswSegment:
        """Read a segment written by :meth:`save`, checking it matches the collection's parameters.

        Raises:
            CorruptionError: The file is not a segment file, is truncated, or disagrees with the collection.
            FormatVersionError: It was written by a newer format.
        """
        with open(path, "rb") as fh:
            header, labels, alive = _read_head(fh, path)
            want = {"dim": dim, "space": space, "quantization": quantization, "m": m}
            for key, value in want.items():
                if header.get(key) != value:
                    raise CorruptionError(
                        f"index segment {path} has {key}={header.get(key)!r}; expected {value!r}"
                    )
            reader = _faiss().PyCallbackIOReader(fh.read)
            try:
                index = _faiss().read_index(reader)
            except RuntimeError as exc:
                raise CorruptionError(f"index segment {path}: FAISS cannot read it ({exc})") from exc
            del reader
        if int(index.ntotal) != int(header["slots"]) or int(index.d) != dim:
            raise CorruptionError(
                f"index segment {path} holds {index.ntotal} x {index.d} codes; its header says "
                f"{header['slots']} x {dim}"
            )
        seg = cls(
            dim,
            space,
            quantization,
            m=m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            _index=index,
            _labels=labels,
            _alive=alive,
        )
        expected = header["live"] if live is None else live
        if len(seg) != expected:
            raise CorruptionError(f"index segment {path} has {len(seg)} live vectors; expected {expected}")
        return seg


def _read_head(fh: BinaryIO, path: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Header, slot labels and alive bitmap of a segment file (positioned at the FAISS payload after)."""
    raw = fh.read(_HEAD.size)
    if len(raw) != _HEAD.size:
        raise CorruptionError(f"index segment {path} is truncated ({len(raw)} bytes)")
    magic, version, hlen = _HEAD.unpack(raw)
    if magic != _MAGIC:
        raise CorruptionError(f"{path} is not an Embeddix quantized-HNSW segment (magic {magic!r})")
    if version > _FORMAT:
        raise FormatVersionError(
            f"index segment {path} has format {version}; this release reads up to {_FORMAT}"
        )
    try:
        header = json.loads(fh.read(hlen))
        n = int(header["slots"])
        header["live"] = int(header["live"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptionError(f"index segment {path} has a malformed header: {exc!r}") from exc
    lab = np.frombuffer(fh.read(8 * n), "<i8")
    bits = np.frombuffer(fh.read((n + 7) // 8), np.uint8)
    if len(lab) != n or len(bits) != (n + 7) // 8:
        raise CorruptionError(f"index segment {path} is truncated (expected {n} slots)")
    cap = max(n, 1024)
    labels = np.full(cap, -1, np.int64)
    labels[:n] = lab
    alive = np.zeros((cap + 7) // 8, np.uint8)
    alive[: len(bits)] = bits
    return header, labels, alive


class SegmentedFaissHnsw(SegmentedHnsw):
    """:class:`SegmentedHnsw` (segments, write buffer, background flush) over quantized FAISS segments,
    with every graph answer re-ranked from full-precision vectors.

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"``.
        quantization: ``"fp16"`` or ``"sq8"`` (fixed at creation).
        load_vectors: Full-precision index-space vectors by label (the store, through whatever cache the
            caller puts in front); used to re-rank and by :meth:`get_vectors`.
        rerank_factor: Floor of the re-rank width, per result (see :func:`rerank_width`).
        **kwargs: As for :class:`SegmentedHnsw`.
    """

    kind = "faiss_hnsw"

    def __init__(
        self,
        dim: int,
        space: str,
        *,
        quantization: str,
        load_vectors: VectorLoader,
        rerank_factor: int = RERANK_FACTOR,
        **kwargs: Any,
    ) -> None:
        if quantization not in QUANTIZERS:
            raise InvalidArgumentError(
                f"quantization must be one of {sorted(QUANTIZERS)}; got {quantization!r}"
            )
        # set before the parent's __init__, which builds the first segment through _new
        self.quantization = quantization
        self.rerank_factor = max(int(rerank_factor), 1)
        self._load_vectors = load_vectors
        super().__init__(dim, space, **kwargs)

    # The parent is typed for hnswlib segments; ours offer the same methods (duck-typed), hence the
    # ignores on the two places that name the segment type.
    def _new(self, capacity: int) -> FaissHnswSegment:  # type: ignore[override]
        segs = getattr(self, "_segs", None)
        return FaissHnswSegment(
            self.dim,
            self.space,
            self.quantization,
            m=self.m,
            ef_construction=self.ef_construction,
            ef_search=self._ef_search,
            trained=segs[0].trained_params() if segs else None,
        )

    @classmethod
    def load(cls, *args: Any, **kwargs: Any) -> NoReturn:
        """Not for this class: the parent's loader reads hnswlib files. Use :meth:`load_segments`."""
        raise TypeError(
            "SegmentedFaissHnsw.load reads no hnswlib files; use SegmentedFaissHnsw.load_segments"
        )

    @classmethod
    def load_segments(
        cls,
        paths: Sequence[Path],
        bounds: Sequence[int],
        lives: Sequence[int],
        dim: int,
        space: str,
        *,
        quantization: str,
        load_vectors: VectorLoader,
        m: int,
        ef_construction: int,
        ef_search: int,
        segment_size: int,
        write_buffer: int = 0,
        rerank_factor: int = RERANK_FACTOR,
    ) -> SegmentedFaissHnsw:
        """Load segment files written by :meth:`FaissHnswSegment.save` (a snapshot's files, in order)."""
        segs = [
            FaissHnswSegment.load(
                p,
                dim,
                space,
                quantization,
                m=m,
                ef_construction=ef_construction,
                ef_search=ef_search,
                live=lv,
            )
            for p, lv in zip(paths, lives, strict=True)
        ]
        return cls(
            dim,
            space,
            quantization=quantization,
            load_vectors=load_vectors,
            rerank_factor=rerank_factor,
            m=m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            segment_size=segment_size,
            write_buffer=write_buffer,
            _segments=segs,
            _bounds=list(bounds),
        )

    @property
    def tombstones(self) -> int:
        return sum(s.tombstones for s in self._segs)  # type: ignore[attr-defined]

    def _absent(self, labels: np.ndarray) -> np.ndarray:
        """Which labels neither a segment nor the buffer holds (vectorized: segments index labels)."""
        self.join()
        new = np.ones(len(labels), bool)
        buf = self._buf
        if buf.n:
            new &= ~np.isin(labels, buf.labels[: buf.n])
        route = self._route(labels)
        for i, seg in enumerate(self._segs):
            sel = route == i
            if sel.any():
                new[sel] &= ~seg.has(labels[sel])  # type: ignore[attr-defined]
        return new

    def search_one(self, q: np.ndarray, k: int, ef: int | None) -> tuple[list[int], list[float]] | None:
        """None: a quantized graph's answer is re-ranked, which :meth:`search` does."""
        return None

    def _graph_search(
        self,
        queries: np.ndarray,
        k: int,
        ef: int | None,
        allowed: LabelFilter | None,
        num_threads: int,
    ) -> IndexResult:
        beam = ef or self._ef_search
        width = rerank_width(k, self.rerank_factor)
        cand = super()._graph_search(queries, width, max(beam, width), allowed, num_threads)
        return self._rerank(queries, cand, k)

    def _rerank(self, queries: np.ndarray, cand: IndexResult, k: int) -> IndexResult:
        """Exact distances of the candidates from full-precision vectors; the best k per query."""
        labels = cand.labels
        width = labels.shape[1]
        if width == 0:
            return cand
        if labels.shape[0] == 1 and self.space == "ip":
            return self._rerank_one(queries[0], cand, k)
        valid = labels >= 0
        uniq, inv = np.unique(labels[valid], return_inverse=True)
        # no valid candidate at all: one zero row to gather from (every slot is masked below)
        vecs = self._load_vectors(uniq) if len(uniq) else np.zeros((1, self.dim), np.float32)
        pos = np.zeros(labels.shape, np.int64)
        pos[valid] = inv
        gathered = vecs[pos]  # (nq, width, dim)
        dots = np.einsum("qwd,qd->qw", gathered, queries)
        if self.space == "ip":
            dist = 1.0 - dots
        else:
            norms = np.einsum("qwd,qwd->qw", gathered, gathered)
            qn = np.einsum("qd,qd->q", queries, queries)
            dist = np.maximum(norms - 2.0 * dots + qn[:, None], 0.0)
        # A NaN row is a label this thread's store connection does not see: deleted since the graph
        # answered, or newer than the connection's read snapshot (a calibration's long read). It keeps the
        # graph's approximate distance instead of vanishing: dropping it cost calibration ~7% recall at
        # every ef; a deleted record's hit is dropped later anyway, when its row is not found.
        dist = np.where(np.isfinite(dist), dist, cand.distances)
        dist = np.where(valid, dist, np.inf).astype(np.float32)
        order = np.argsort(dist, axis=1, kind="stable")[:, : min(k, width)]
        out_l = np.take_along_axis(labels, order, axis=1)
        out_d = np.take_along_axis(dist, order, axis=1)
        out_l = np.where(np.isfinite(out_d), out_l, -1)
        if out_l.size and (out_l[:, -1] < 0).all():
            keep = int((out_l >= 0).sum(axis=1).max())
            out_l, out_d = out_l[:, :keep], out_d[:, :keep]
        return IndexResult(out_l, out_d)

    def _rerank_one(self, q: np.ndarray, cand: IndexResult, k: int) -> IndexResult:
        """:meth:`_rerank` of one query in inner-product space, with the same result: a search's own
        candidates are distinct labels, so the general path's unique/gather/einsum steps (~60 us of
        numpy calls after a search left the CPU caches cold) reduce to one product."""
        labels, approx = cand.labels[0], cand.distances[0]
        valid = labels >= 0
        if not valid.all():
            labels, approx = labels[valid], approx[valid]
        dist = approx.astype(np.float32)
        if len(labels):
            exact = (1.0 - self._load_vectors(labels) @ q).astype(np.float32)
            # a NaN row keeps the graph's distance (see _rerank)
            dist = np.where(np.isfinite(exact), exact, dist)
        order = np.argsort(dist, kind="stable")[:k]
        return IndexResult(labels[order][None, :], dist[order][None, :])

    def _graph_vectors(self, labels: np.ndarray) -> np.ndarray:
        # full precision from the store, never decoded codes: callers (hits' vectors, the result cache,
        # calibration) treat these as the stored vectors
        return np.ascontiguousarray(self._load_vectors(np.asarray(labels, np.int64)), np.float32)
