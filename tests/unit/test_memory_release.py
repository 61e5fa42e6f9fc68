"""Memory handed back to the OS: glibc's fixed mmap threshold and the HNSW graph's capacity growth."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from embeddix_core import Embeddix, EmbeddixSettings, _memory
from embeddix_core.index.hnsw import _GROWTH, HnswIndex

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or _memory._mallopt is None, reason="glibc's mallopt only"
)


@glibc
def test_open_fixes_the_mmap_threshold_from_the_settings(tmp_path, monkeypatch):
    calls: list[tuple[int, int]] = []
    real = _memory._mallopt

    def spy(param: int, value: int) -> int:
        calls.append((param, value))
        return real(param, value)

    monkeypatch.setattr(_memory, "_mallopt", spy)
    monkeypatch.setattr(_memory, "_threshold", None)
    with Embeddix.open(tmp_path / "a", settings=EmbeddixSettings(malloc_mmap_threshold=512 << 10)):
        pass
    assert calls == [(_memory._M_MMAP_THRESHOLD, 512 << 10)]
    # the same value again is not set again; another value is
    with Embeddix.open(tmp_path / "b", settings=EmbeddixSettings(malloc_mmap_threshold=512 << 10)):
        pass
    assert len(calls) == 1
    with Embeddix.open(tmp_path / "c", settings=EmbeddixSettings(malloc_mmap_threshold=256 << 10)):
        pass
    assert calls[-1] == (_memory._M_MMAP_THRESHOLD, 256 << 10)


@glibc
def test_zero_leaves_glibc_alone(tmp_path, monkeypatch):
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(_memory, "_mallopt", lambda p, v: calls.append((p, v)) or 1)
    monkeypatch.setattr(_memory, "_threshold", None)
    with Embeddix.open(tmp_path, settings=EmbeddixSettings(malloc_mmap_threshold=0)):
        pass
    assert calls == []
    assert _memory.limit_mmap_threshold(0) is False


def test_the_setting_is_bounded():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        EmbeddixSettings(malloc_mmap_threshold=-1)
    with pytest.raises(ValidationError):
        EmbeddixSettings(malloc_mmap_threshold=64 << 20)


def test_hnsw_capacity_grows_by_half_not_double():
    rng = np.random.default_rng(0)
    idx = HnswIndex(8, "l2", capacity=1024, ef_construction=16)
    vecs = rng.standard_normal((1025, 8)).astype(np.float32)
    idx.add(np.arange(1025), vecs)
    assert idx.capacity == int(1024 * _GROWTH)
    # what was added is all there
    got = idx.search(vecs[:5], 1, ef=64)
    assert got.labels[:, 0].tolist() == [0, 1, 2, 3, 4]
