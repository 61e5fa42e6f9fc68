"""The GPU module: detection never raises, "auto" falls back to the CPU with one log line, "on" fails loudly.

This machine has no GPU; the "available" branch is driven through a fake FAISS GPU build (the module's
``_faiss`` seam), which records what would have been moved.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import faiss
import numpy as np
import pytest

from embeddix_core.errors import EmbeddixError, InvalidArgumentError
from embeddix_core.index import _gpu
from embeddix_core.index.faiss_ivf import FaissIvfIndex


class GpuIndexFlat:
    """Stands in for a FAISS GPU index (its class name is what ``is_gpu_index`` looks at)."""

    def __init__(self, cpu: Any) -> None:
        self.cpu = cpu


def fake_gpu_faiss(gpus: int = 1, copy_fails: bool = False) -> SimpleNamespace:
    moved: list[tuple[int, Any]] = []

    def index_cpu_to_gpu(res: Any, device: int, index: Any) -> GpuIndexFlat:
        if copy_fails:
            raise RuntimeError("out of device memory")
        moved.append((device, index))
        return GpuIndexFlat(index)

    return SimpleNamespace(
        get_num_gpus=lambda: gpus,
        StandardGpuResources=lambda: object(),
        index_cpu_to_gpu=index_cpu_to_gpu,
        moved=moved,
    )


@pytest.fixture(autouse=True)
def fresh_module_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gpu, "_said", set())
    monkeypatch.setattr(_gpu, "_resources", {})


def test_this_machine_has_no_gpu_and_detection_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _gpu.gpu_available() is False
    assert "CPU-only" in (_gpu.gpu_unavailable_reason() or "") or "no GPU" in (
        _gpu.gpu_unavailable_reason() or ""
    )

    def broken() -> Any:
        raise OSError("libcudart.so: cannot open shared object file")

    monkeypatch.setattr(_gpu, "_faiss", broken)
    assert _gpu.gpu_available() is False
    counting_fails = SimpleNamespace(
        get_num_gpus=lambda: 1 / 0, StandardGpuResources=object, index_cpu_to_gpu=lambda *a: None
    )
    monkeypatch.setattr(_gpu, "_faiss", lambda: counting_fails)
    assert _gpu.gpu_available() is False


def test_auto_falls_back_with_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    index = faiss.IndexFlatL2(8)
    with caplog.at_level(logging.INFO, logger="embeddix"):
        for _ in range(3):
            assert _gpu.maybe_to_gpu(index, "auto", 100_000) is index
    lines = [r for r in caplog.records if "GPU not used" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "CPU" in lines[0].getMessage()


def test_on_without_gpu_raises_a_typed_error() -> None:
    with pytest.raises(_gpu.GpuUnavailableError, match="needs a CUDA build of FAISS") as info:
        _gpu.maybe_to_gpu(faiss.IndexFlatL2(8), "on", 10)
    assert isinstance(info.value, EmbeddixError)


def test_off_never_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_gpu_faiss()
    monkeypatch.setattr(_gpu, "_faiss", lambda: fake)
    index = faiss.IndexFlatL2(8)
    assert _gpu.maybe_to_gpu(index, "off", 10**6) is index and not fake.moved


def test_bad_setting() -> None:
    with pytest.raises(InvalidArgumentError, match="gpu must be one of"):
        _gpu.maybe_to_gpu(faiss.IndexFlatL2(8), "yes", 10)


def test_available_branch_moves_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_gpu_faiss()
    monkeypatch.setattr(_gpu, "_faiss", lambda: fake)
    assert _gpu.gpu_available() is True
    index = faiss.IndexFlatIP(8)
    assert _gpu.maybe_to_gpu(index, "auto", 10, min_batch=100) is index  # small batch: CPU
    moved = _gpu.maybe_to_gpu(index, "auto", 100, min_batch=100)
    assert _gpu.is_gpu_index(moved) and moved.cpu is index
    forced = _gpu.maybe_to_gpu(index, "on", 1, device=0)  # "on": any batch size
    assert _gpu.is_gpu_index(forced)
    assert [d for d, _ in fake.moved] == [0, 0]
    assert len(_gpu._resources) == 1  # one resources object per device, shared


def test_ivf_moves_hnsw_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_gpu_faiss()
    monkeypatch.setattr(_gpu, "_faiss", lambda: fake)
    ivf = faiss.index_factory(8, "IVF4,Flat")
    assert _gpu.is_gpu_index(_gpu.maybe_to_gpu(ivf, "auto", 10**5))
    hnsw = faiss.IndexHNSWFlat(8, 16)
    assert _gpu.maybe_to_gpu(hnsw, "on", 10**5) is hnsw


def test_failed_copy(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake = fake_gpu_faiss(copy_fails=True)
    monkeypatch.setattr(_gpu, "_faiss", lambda: fake)
    index = faiss.IndexFlatL2(8)
    with caplog.at_level(logging.INFO, logger="embeddix"):
        assert _gpu.maybe_to_gpu(index, "auto", 10**5) is index
    assert "out of device memory" in caplog.text
    with pytest.raises(_gpu.GpuUnavailableError, match="could not copy"):
        _gpu.maybe_to_gpu(index, "on", 10**5)


def test_ivf_training_with_auto_equals_cpu_path() -> None:
    """gpu="auto" on this machine: training runs on the CPU and answers equal the gpu="off" build."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2_000, 16)).astype(np.float32)
    q = rng.standard_normal((20, 16)).astype(np.float32)
    out = []
    for gpu in ("off", "auto"):
        ix = FaissIvfIndex(
            16, "l2", load_vectors=lambda lb: x[lb], codes="flat", train_threshold=2_000, gpu=gpu
        )
        ix.add(np.arange(2_000), x)
        assert ix.trained
        out.append(ix.search(q, 5).labels)
    np.testing.assert_array_equal(out[0], out[1])
