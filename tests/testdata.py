"""Test data helpers shared by test modules (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import numpy as np


def clustered(n: int, dim: int, *, clusters: int = 20, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """Clustered Gaussian vectors: a harder and more realistic test than uniform noise."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centers[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)
