"""Embeddix data directories built once from the benchmark data sets and reused by several benchmarks.

``open_store("realtext")`` returns an open :class:`~embeddix_core.Embeddix` over
``benchmarks/data/stores/realtext-<n>/`` holding the collection ``bench`` (ids ``doc-<i>``, documents = the
texts for the real-text set, metadata ``{"tag": i % 10, ...}``). A ``complete`` marker file is written
last, so an interrupted build is rebuilt instead of trusted.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks import datasets
from embeddix_core import Embeddix, EmbeddixSettings

ROOT = Path(__file__).resolve().parent / "data" / "stores"


def load_dataset(name: str) -> datasets.Dataset:
    return datasets.real_text() if name == "realtext" else datasets.synthetic()


def build_store(name: str, n: int | None = None, *, settings: EmbeddixSettings | None = None) -> Path:
    """Build (or reuse) the data directory for a data set; returns its path."""
    ds = load_dataset(name)
    n = n or ds.n_base
    path = ROOT / f"{name}-{n}"
    if (path / "complete").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    with Embeddix.open(path, settings=settings or EmbeddixSettings(auto_calibrate=False)) as db:
        col = db.create_collection("bench", dim=ds.dim, metric="cosine", index_threshold=0)
        base = np.asarray(ds.base[:n], dtype=np.float32)
        texts = ds.base_texts
        for s in range(0, n, 10_000):
            e = min(n, s + 10_000)
            col.add(
                [f"doc-{i}" for i in range(s, e)],
                base[s:e],
                documents=None if texts is None else texts[s:e],
                metadatas=[ds.metadata_for(i) for i in range(s, e)],
            )
        col.calibrate()
    (path / "complete").write_text(f"built in {time.perf_counter() - t0:.1f} s\n")
    return path


def open_store(name: str, n: int | None = None, *, settings: EmbeddixSettings | None = None) -> Embeddix:
    return Embeddix.open(build_store(name, n), settings=settings)
