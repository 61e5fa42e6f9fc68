"""Exact search on FAISS, on a CUDA GPU when one is present and the ``gpu`` setting allows it.

GPU selection is not decided here: :mod:`._gpu` (the one module that touches CUDA FAISS) says whether a
batch runs on a GPU copy of the index (rebuilt lazily after writes); otherwise, and whenever the GPU path
fails, the CPU index answers (the tested path on machines without a GPU).

Labels are the store's labels (``IndexIDMap2``); distances follow the index seam: ``1 - <a, b>`` in "ip"
space, squared Euclidean in "l2" space.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from . import _gpu
from .base import FlatIndexMixin, IndexResult, LabelFilter

__all__ = ["FaissFlatIndex", "gpu_count"]

log = logging.getLogger("embeddix")


def _faiss() -> Any:
    """FAISS, imported on first use (an engine that never builds a FAISS index does not load it)."""
    import faiss

    return faiss


def gpu_count() -> int:
    """1 when a CUDA build of FAISS sees a GPU here, else 0 (see :func:`._gpu.gpu_available`)."""
    return 1 if _gpu.gpu_available() else 0


class FaissFlatIndex(FlatIndexMixin):
    """Brute-force FAISS index keyed by labels, GPU-accelerated when available.

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"``.
        use_gpu: None = as ``gpu`` says; False = CPU only (``gpu="off"``).
        gpu: ``"auto"``, ``"on"`` or ``"off"`` (``EmbeddixSettings.gpu``; see :mod:`._gpu`).

    Raises:
        GpuUnavailableError: ``gpu="on"`` and no GPU can be used.
    """

    kind = "exact"

    def __init__(self, dim: int, space: str, *, use_gpu: bool | None = None, gpu: str = "auto") -> None:
        self.dim = dim
        self.space = space
        faiss = _faiss()
        flat = faiss.IndexFlatIP(dim) if space == "ip" else faiss.IndexFlatL2(dim)
        self._cpu = faiss.IndexIDMap2(flat)
        self._lock = threading.Lock()
        self.gpu = "off" if use_gpu is False else gpu
        if self.gpu == "on":  # without a GPU this fails here, at creation, not at the first search
            _gpu.maybe_to_gpu(faiss.IndexFlatL2(1), "on", 0)
        self._gpu_wanted = self.gpu != "off" and _gpu.gpu_available()
        self._gpu: Any = None
        self._dirty = True

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a GPU."""
        return self._gpu_wanted

    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    def add(self, labels: np.ndarray, vectors: np.ndarray, new: np.ndarray | None = None) -> None:
        labels = np.ascontiguousarray(labels, np.int64)
        with self._lock:
            self._remove(labels)  # replacing: drop old vectors under these labels first
            self._cpu.add_with_ids(np.ascontiguousarray(vectors, np.float32), labels)
            self._dirty = True

    def remove(self, labels: np.ndarray) -> None:
        with self._lock:
            self._remove(np.ascontiguousarray(labels, np.int64))
            self._dirty = True

    def _remove(self, labels: np.ndarray) -> None:
        if len(labels) and self._cpu.ntotal:
            self._cpu.remove_ids(_faiss().IDSelectorBatch(labels))

    def _searcher(self) -> Any:
        if not self._gpu_wanted:
            return self._cpu
        if self._dirty or self._gpu is None:
            moved = _gpu.maybe_to_gpu(self._cpu, self.gpu, 0, min_batch=0)
            if not _gpu.is_gpu_index(moved):  # the copy failed ("auto"): CPU for good, logged once
                self._gpu_wanted = False
                return self._cpu
            self._gpu, self._dirty = moved, False
        return self._gpu

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        allowed: LabelFilter | None = None,
        num_threads: int = 1,
    ) -> IndexResult:
        with self._lock:
            n = int(self._cpu.ntotal)
            kk = min(k, n)
            if kk == 0:
                nq = queries.shape[0]
                return IndexResult(np.full((nq, 0), -1, np.int64), np.zeros((nq, 0), np.float32))
            q = np.ascontiguousarray(queries, np.float32)
            if allowed is not None:
                ids = self.live_labels()
                keep = ids[np.fromiter((allowed(int(x)) for x in ids), bool, len(ids))]
                params = _faiss().SearchParameters(sel=_faiss().IDSelectorBatch(keep))
                dist, lab = self._cpu.search(q, min(kk, len(keep)) or 1, params=params)
            else:
                dist, lab = self._searcher().search(q, kk)
        dist = dist.astype(np.float32, copy=False)
        if self.space == "ip":
            dist = np.where(lab >= 0, 1.0 - dist, np.inf).astype(np.float32)
        return IndexResult(lab.astype(np.int64, copy=False), dist)

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        with self._lock:
            return (
                np.stack([self._cpu.reconstruct(int(lb)) for lb in labels])
                if len(labels)
                else np.empty((0, self.dim), np.float32)
            )

    def live_labels(self) -> np.ndarray:
        return _faiss().vector_to_array(self._cpu.id_map).astype(np.int64)

    def memory_bytes(self) -> int:
        return int(self._cpu.ntotal) * (self.dim * 4 + 8)

    def memory_parts(self) -> dict[str, int]:
        """Resident bytes by part."""
        n = int(self._cpu.ntotal)
        return {"vectors": n * self.dim * 4, "labels": n * 8}
