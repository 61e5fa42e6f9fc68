"""The FAISS exact index (the one GPU module), tested on its CPU fallback against the numpy reference."""

from __future__ import annotations

import numpy as np
from testdata import clustered

from embeddix_core.index.base import exact_topk
from embeddix_core.index.faiss_flat import FaissFlatIndex, gpu_count


def test_gpu_is_selected_only_when_present() -> None:
    idx = FaissFlatIndex(8, "ip")
    assert idx.on_gpu == (gpu_count() > 0)
    assert not FaissFlatIndex(8, "ip", use_gpu=False).on_gpu


def test_faiss_flat_agrees_with_the_numpy_reference() -> None:
    x = clustered(500, 16, seed=2)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = clustered(10, 16, seed=3)
    labels = np.arange(100, 600, dtype=np.int64)
    for space in ("ip", "l2"):
        idx = FaissFlatIndex(16, space, use_gpu=False)
        idx.add(labels, x)
        ref = exact_topk(x, labels, q, 7, space)
        got = idx.search(q, 7)
        assert got.labels.tolist() == ref.labels.tolist()
        np.testing.assert_allclose(got.distances, ref.distances, rtol=1e-4, atol=1e-4)
        idx.remove(ref.labels[:, 0])
        assert not set(idx.search(q, 7).labels.ravel().tolist()) & set(ref.labels[:, 0].tolist())
        only = set(labels[::50].tolist())
        sub = idx.search(q, 3, allowed=only.__contains__)
        assert set(sub.labels.ravel().tolist()) <= only
        np.testing.assert_allclose(idx.get_vectors(labels[1:3]), x[1:3], rtol=1e-6)
        idx.add(labels[1:2], x[5:6])  # replace
        np.testing.assert_allclose(idx.get_vectors(labels[1:2]), x[5:6], rtol=1e-6)
        assert len(idx) == 500 - len(set(ref.labels[:, 0].tolist()))


def test_collections_can_use_the_faiss_backend() -> None:
    from embeddix_core import Embeddix, EmbeddixSettings

    x = clustered(300, 8, seed=4)
    with Embeddix.open(None, settings=EmbeddixSettings(exact_backend="faiss")) as db:
        col = db.create_collection("c", dim=8)
        col.add([str(i) for i in range(300)], x, metadatas=[{"g": i % 3} for i in range(300)])
        assert col.search(x[7], k=1)[0].id == "7"
        assert all(int(h.id) % 3 == 1 for h in col.search(x[7], k=5, filter={"g": 1}))
        col.delete(["7"])
        assert col.search(x[7], k=1)[0].id != "7"
