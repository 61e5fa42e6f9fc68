"""The one module that touches CUDA FAISS: GPU detection and moving indexes onto a GPU.

Everything else asks here (:func:`gpu_available`, :func:`maybe_to_gpu`) and never calls FAISS's GPU API
itself, so a machine with a GPU build of FAISS (``faiss-gpu``, see the ``[gpu]`` extra) runs the same code
as one without: detection says yes or no, and the CPU index is used whenever it says no.

Settings (``EmbeddixSettings.gpu``):

* ``"off"``: never use a GPU.
* ``"auto"`` (default): use one when FAISS reports a device *and* the batch is at least
  :data:`GPU_MIN_BATCH` rows; otherwise stay on the CPU and say why in one INFO log line, once per
  process (a reason is logged the first time it applies, never again).
* ``"on"``: use the GPU for every batch size; raise :class:`GpuUnavailableError` when there is none (no
  CUDA build of FAISS, or no visible device), so a misconfigured deployment fails loudly.

Batch threshold: copying an index to the device and back costs milliseconds, which a CPU search of a small
batch does not; :data:`GPU_MIN_BATCH` is a conservative default, not measured here (this machine has no
GPU): measure it on the target machine and pass ``min_batch``.

Which indexes move: FAISS can copy flat (``IndexFlat*``) and IVF (``IndexIVFFlat``, ``IndexIVFPQ``,
``IndexIVFScalarQuantizer``) indexes and ID maps over them; anything else (HNSW) stays on the CPU.

Tested on the CPU fallback with a fake GPU module standing in for FAISS (``tests/unit/test_gpu_fallback.py``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import GpuUnavailableError, InvalidArgumentError

__all__ = [
    "GPU_MIN_BATCH",
    "SETTINGS",
    "GpuUnavailableError",
    "gpu_available",
    "gpu_unavailable_reason",
    "is_gpu_index",
    "maybe_to_gpu",
]

log = logging.getLogger("embeddix")

SETTINGS = ("auto", "on", "off")
# Rows per batch from which "auto" moves work to the GPU (see the module docstring).
GPU_MIN_BATCH = 1024
# Index classes FAISS's index_cpu_to_gpu can copy (by class name: the CPU build lacks the GPU classes).
_MOVABLE = (
    "IndexFlat",
    "IndexFlatL2",
    "IndexFlatIP",
    "IndexIVFFlat",
    "IndexIVFPQ",
    "IndexIVFScalarQuantizer",
    "IndexIDMap",
    "IndexIDMap2",
)

_lock = threading.Lock()
_said: set[str] = set()  # reasons already logged (once per process)
_resources: dict[int, Any] = {}  # device -> StandardGpuResources, shared by every index on it


def _faiss() -> Any:
    """The FAISS module (a seam: tests replace it with a fake GPU build)."""
    import faiss

    return faiss


def gpu_unavailable_reason() -> str | None:
    """Why no GPU can be used here (None when one can). Never raises."""
    try:
        faiss = _faiss()
    except Exception as exc:  # an unimportable FAISS is a reason, not a crash
        return f"FAISS cannot be imported ({exc})"
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "index_cpu_to_gpu"):
        return "the installed FAISS is a CPU-only build (install a faiss-gpu build for your CUDA)"
    try:
        count = int(faiss.get_num_gpus())
    except Exception as exc:  # driver errors, missing libcuda: all mean "no GPU"
        return f"FAISS could not count GPUs ({exc})"
    if count < 1:
        return "FAISS has CUDA support but sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)"
    return None


def gpu_available() -> bool:
    """Whether a CUDA build of FAISS sees at least one GPU. Never raises."""
    return gpu_unavailable_reason() is None


def is_gpu_index(index: Any) -> bool:
    """Whether ``index`` is a FAISS GPU index (its class name starts with ``Gpu``)."""
    return type(index).__name__.startswith("Gpu")


def _say_once(reason: str) -> None:
    with _lock:
        if reason in _said:
            return
        _said.add(reason)
    log.info("FAISS GPU not used, running on the CPU: %s", reason)


def _check_setting(settings_gpu: str) -> None:
    if settings_gpu not in SETTINGS:
        raise InvalidArgumentError(f"gpu must be one of {list(SETTINGS)}; got {settings_gpu!r}")


def _resources_for(faiss: Any, device: int) -> Any:
    with _lock:
        res = _resources.get(device)
        if res is None:
            res = _resources[device] = faiss.StandardGpuResources()
        return res


def maybe_to_gpu(
    index: Any,
    settings_gpu: str,
    batch: int,
    *,
    device: int = 0,
    min_batch: int = GPU_MIN_BATCH,
) -> Any:
    """A GPU copy of ``index`` when the setting, the machine and the batch size call for one; else ``index``.

    Args:
        index: A CPU FAISS index (flat or IVF; others are returned unchanged).
        settings_gpu: ``"auto"``, ``"on"`` or ``"off"`` (see the module docstring).
        batch: Rows of the work about to run (queries, or vectors to train on / add).
        device: CUDA device number.
        min_batch: Rows from which ``"auto"`` moves (``"on"`` moves any batch).

    Returns:
        The GPU index, or the CPU ``index`` itself.

    Raises:
        InvalidArgumentError: ``settings_gpu`` is not one of the three values.
        GpuUnavailableError: ``"on"`` and no GPU can be used (no CUDA build, no device, or the copy failed).
    """
    _check_setting(settings_gpu)
    if settings_gpu == "off":
        return index
    reason = gpu_unavailable_reason()
    if reason is not None:
        if settings_gpu == "on":
            raise GpuUnavailableError(
                f"gpu='on' needs a CUDA build of FAISS and a visible GPU, but {reason}; "
                "set gpu='auto' to fall back to the CPU"
            )
        _say_once(reason)
        return index
    kind = type(index).__name__
    if kind not in _MOVABLE:
        _say_once(f"a {kind} index cannot run on a GPU in FAISS (flat and IVF indexes can)")
        return index
    if settings_gpu == "auto" and batch < min_batch:
        return index  # small batches are faster on the CPU than the copy to the device (not logged: routine)
    faiss = _faiss()
    try:
        return faiss.index_cpu_to_gpu(_resources_for(faiss, device), device, index)
    except Exception as exc:  # out of device memory, unsupported parameters, driver trouble
        if settings_gpu == "on":
            raise GpuUnavailableError(
                f"gpu='on' but FAISS could not copy a {kind} to GPU {device}: {exc}"
            ) from exc
        _say_once(f"copying a {kind} to GPU {device} failed ({exc})")
        return index
