"""The memory-mapped vector file under re-ranking (storage/vecfile.py): a cache of the store, never wrong."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.storage.vecfile import VectorFile


@pytest.mark.parametrize("mapped", [True, False])
def test_put_get_invalidate_clear_and_grow(tmp_path: Path, mapped: bool) -> None:
    vf = VectorFile(tmp_path, 4, mapped=mapped)
    assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing left behind, ever
    rng = np.random.default_rng(0)
    v = rng.standard_normal((10, 4)).astype(np.float32)
    vf.put(np.arange(10), v)
    got, served = vf.get(np.array([3, 0, 9, 10, 5000, -1]))
    assert served.tolist() == [True, True, True, False, False, False]
    np.testing.assert_array_equal(got[:3], v[[3, 0, 9]])
    vf.put(np.array([5000, 7]), np.stack([v[1], v[2]]))  # grows; replaces 7
    got, served = vf.get(np.array([5000, 7, 8]))
    assert served.all()
    np.testing.assert_array_equal(got, np.stack([v[1], v[2], v[8]]))
    vf.put(np.array([20]), np.full((1, 4), np.nan, np.float32))  # not stored any more: skipped
    assert not vf.get(np.array([20]))[1].any()
    vf.invalidate([7, 123_456])
    assert vf.get(np.array([7, 8]))[1].tolist() == [False, True]
    vf.clear()
    assert not vf.get(np.arange(10))[1].any()
    vf.close()
    vf.put(np.arange(3), v[:3])  # after close: ignored, reads serve nothing
    assert not vf.get(np.arange(3))[1].any()


@pytest.mark.parametrize("mapped", [True, False])
def test_readers_during_growth(tmp_path: Path, mapped: bool) -> None:
    vf = VectorFile(tmp_path, 8, map_budget=4096, mapped=mapped)  # tiny budget: pages dropped over and over
    base = np.arange(8, dtype=np.float32)
    vf.put(np.arange(100), np.tile(base, (100, 1)) + np.arange(100, dtype=np.float32)[:, None])
    stop = threading.Event()
    bad: list[str] = []

    def read() -> None:
        while not stop.is_set():
            got, served = vf.get(np.arange(100))
            rows = got[served]
            expect = base + np.arange(100, dtype=np.float32)[served][:, None]
            if not np.array_equal(rows, expect):
                bad.append("a row that is not its label's")

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for n in range(200, 20_000, 997):  # each put past the end remaps the file
        vf.put(np.array([n]), np.zeros((1, 8), np.float32))
    stop.set()
    for t in threads:
        t.join()
    assert not bad


def test_reranked_scores_follow_other_processes_writes(tmp_path: Path) -> None:
    """Two handles (as two processes would): a vector replaced through one is re-ranked with its new
    value by the other (the replay clears what the other had mapped)."""
    s = EmbeddixSettings(index_threshold=100, auto_calibrate=False, cache_enabled=False)
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((500, 16)).astype(np.float32)
    with Embeddix.open(tmp_path, settings=s) as a, Embeddix.open(tmp_path, settings=s) as b:
        ca = a.create_collection("c", dim=16, quantization="sq8")
        ca.add([str(i) for i in range(500)], vecs)
        cb = b.get_collection("c")
        assert ca.search(vecs[7], k=1)[0].id == "7"  # read through: now mapped in a's file
        cb.upsert(["7"], -vecs[7:8])  # b moves record 7 to the opposite side
        hit = ca.search(-vecs[7], k=1, ef=200)[0]
        assert hit.id == "7" and abs(hit.score - 1.0) < 1e-5  # the new vector's exact score
        assert all(h.id != "7" for h in ca.search(vecs[7], k=5, ef=200))


@pytest.mark.parametrize("mapped", [True, False])
def test_fill_never_overwrites_a_write_made_after_the_read(tmp_path: Path, mapped: bool) -> None:
    """Rows read from the store go in only if the collection wrote nothing since (an upsert keeps its
    label: a row read before it must not replace its new vector)."""
    vf = VectorFile(tmp_path, 4, mapped=mapped)
    old, new = np.ones((1, 4), np.float32), np.full((1, 4), 2.0, np.float32)
    gen = vf.generation  # a reader notes the generation, then reads the old row from the store
    vf.put(np.array([5]), new)  # the writer's commit lands first
    assert not vf.fill(np.array([5]), old, gen)
    np.testing.assert_array_equal(vf.get(np.array([5]))[0], new)
    gen = vf.generation
    assert vf.fill(np.array([5, 6]), np.vstack([old, old]), gen)  # 5 is served already: kept as is
    got, served = vf.get(np.array([5, 6]))
    assert served.all()
    np.testing.assert_array_equal(got, np.vstack([new, old]))
    for change in (lambda: vf.invalidate([9]), vf.clear):
        gen = vf.generation
        change()
        assert not vf.fill(np.array([7]), old, gen)
    vf.close()
    assert not vf.fill(np.array([7]), old, vf.generation)


def test_a_reopened_quantized_collection_warms_its_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((3000, 16)).astype(np.float32)
    settings = EmbeddixSettings(index_threshold=1000)
    with Embeddix.open(tmp_path / "d", settings=settings) as db:
        col = db.create_collection("c", dim=16, quantization="sq8")
        col.add([str(i) for i in range(3000)], vecs)
    with Embeddix.open(tmp_path / "d", settings=settings) as db:
        col = db.get_collection("c")
        parts = col._parts
        if parts._warmer is not None:
            parts._warmer.join()
        vf = col._live.vecfile
        assert vf is not None and not vf.mapped  # quantized: read with pread, nothing mapped
        labels = col._live.index.live_labels()
        got, served = vf.get(labels)
        assert served.all()
        # the store's vectors in index space: unit length for a cosine collection
        np.testing.assert_allclose(got, col._live._store_vectors(labels), rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.ones(3000), rtol=1e-5)
        col.search(vecs[0], 10, cache=False)  # a re-ranked search
        fd_link = Path(f"/proc/self/fd/{vf._fd}")
        if fd_link.exists():  # Linux: the file is never mapped, so none of its pages count in RSS
            name = os.readlink(fd_link)
            assert name not in Path("/proc/self/maps").read_text()
