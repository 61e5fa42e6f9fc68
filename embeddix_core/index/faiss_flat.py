"""Exact search on FAISS, on a CUDA GPU when one is present: the one GPU module.

Selection rule: :func:`gpu_count` asks FAISS how many GPUs it can use; that is non-zero only with a
GPU build of FAISS (``faiss-gpu``, see the ``[gpu]`` extra) *and* a visible device. With a GPU, searches
run on a GPU copy of the index, rebuilt lazily after writes; otherwise, and whenever the GPU path fails,
the CPU index answers (the tested path on machines without a GPU).

Labels are the store's labels (``IndexIDMap2``); distances follow the index seam: ``1 - <a, b>`` in "ip"
space, squared Euclidean in "l2" space.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ..errors import MissingExtraError
from .base import FlatIndexMixin, IndexResult, LabelFilter

__all__ = ["FaissFlatIndex", "gpu_count"]

log = logging.getLogger("embeddix")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise MissingExtraError.for_extra("FAISS exact search", "gpu", exc) from exc
    return faiss


def gpu_count() -> int:
    """GPUs FAISS can use here (0 without a GPU build of FAISS or without a device)."""
    try:
        faiss = _faiss()
        return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except Exception:  # any driver or build problem means: no GPU
        return 0


class FaissFlatIndex(FlatIndexMixin):
    """Brute-force FAISS index keyed by labels, GPU-accelerated when available.

    Args:
        dim: Vector dimension.
        space: ``"ip"`` or ``"l2"``.
        use_gpu: None = use a GPU if :func:`gpu_count` finds one; False = CPU only.
    """

    kind = "exact"

    def __init__(self, dim: int, space: str, *, use_gpu: bool | None = None) -> None:
        faiss = _faiss()
        self.dim = dim
        self.space = space
        flat = faiss.IndexFlatIP(dim) if space == "ip" else faiss.IndexFlatL2(dim)
        self._cpu = faiss.IndexIDMap2(flat)
        self._lock = threading.Lock()
        self._gpu_wanted = gpu_count() > 0 if use_gpu is None else bool(use_gpu) and gpu_count() > 0
        self._gpu: Any = None
        self._gpu_res: Any = None
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
            try:
                faiss = _faiss()
                self._gpu_res = self._gpu_res or faiss.StandardGpuResources()
                self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._cpu)
                self._dirty = False
            except Exception as exc:  # fall back for good: a half-working GPU is worse than none
                log.warning("FAISS GPU unavailable (%s); searching on the CPU", exc)
                self._gpu_wanted = False
                return self._cpu
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
