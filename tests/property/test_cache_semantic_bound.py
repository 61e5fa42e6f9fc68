"""The verified semantic tier under hypothesis, on the cache itself (no index in between).

Every candidate set here is the exact top K of its query, which is the case the bound is a proof for:
then a semantic hit must be exactly the top k of the new query over the whole data set, whatever the
codes say (codes only choose which candidates are re-ranked exactly; some candidates have none and are
bounded by the triangle inequality instead), and whatever the probe returns (it stands for a cheap
index search for the new query: real records with their float32 distances, but not necessarily the
nearest). Distances are compared with the float64 re-rank of the stored float32 vectors.
"""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, given, settings

from embeddix_core.cache import ResultCache


def _raw32(x: np.ndarray, q: np.ndarray, space: str) -> np.ndarray:
    """Distances as an index computes them: float32."""
    if space == "ip":
        return (np.float32(1) - x @ q).astype(np.float32)
    return np.einsum("ij,ij->i", x - q, x - q).astype(np.float32)


def _raw64(x: np.ndarray, q: np.ndarray, space: str) -> np.ndarray:
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if space == "ip":
        return 1.0 - x64 @ q64
    return np.einsum("ij,ij->i", x64 - q64, x64 - q64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    space=st.sampled_from(["ip", "l2"]),
    dim=st.integers(2, 24),
    n=st.integers(2, 160),
    k=st.integers(1, 8),
    factor=st.integers(1, 6),
    noise=st.sampled_from([0.0, 1e-4, 1e-3, 1e-2, 0.05, 0.2]),
    coded=st.floats(0.0, 1.0),
    clusters=st.integers(1, 6),
    probe_share=st.sampled_from([None, 0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_served_semantic_hit_is_the_exact_top_k(
    space: str,
    dim: int,
    n: int,
    k: int,
    factor: int,
    noise: float,
    coded: float,
    clusters: int,
    probe_share: float | None,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32) * 3
    x = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32)
    q = (centers[0] + rng.standard_normal(dim)).astype(np.float32)
    if space == "ip":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q /= np.linalg.norm(q)
    x = np.ascontiguousarray(x, np.float32)
    big = k * factor
    d = _raw32(x, q, space)
    order = np.argsort(d, kind="stable")[:big]
    rc = ResultCache(dim, space, similarity=0.0)
    fam = rc.family(k, None, ())
    need = rc.store(b"q", q, fam, k, None, [], order.astype(np.int64), d[order], len(order) >= big, 0)
    take = need[rng.random(len(need)) < coded]  # the rest stay without a code
    rc.attach(b"q", 0, take, x[take])

    q2 = (
        q + noise * rng.standard_normal(dim).astype(np.float32) * max(1.0, float(np.linalg.norm(q)))
    ).astype(np.float32)
    if space == "ip":
        q2 /= np.linalg.norm(q2)
    fetched: list[int] = []

    def vectors(labels: np.ndarray) -> np.ndarray:
        fetched.append(len(labels))
        return x[labels]

    def probe(v: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        # an "index search" over a random share of the records: real ones, maybe not the nearest
        seen = np.flatnonzero(rng.random(n) < (probe_share or 0.0))
        d32 = _raw32(x[seen], v, space)
        best = np.argsort(d32, kind="stable")[:kk]
        return seen[best].astype(np.int64), d32[best]

    found = rc.lookup(b"q2", q2, fam, k, vectors, None if probe_share is None else probe)
    if found is None or found.kind != "semantic-hit":
        return
    assert found.labels is not None and found.dists is not None
    exact = _raw64(x, q2, space)
    kk = min(k, n)
    best = np.sort(exact)[:kk]
    assert len(found.labels) == kk
    # the served distances are the exact ones, in order, and they are the k smallest of the whole set
    # (probe records carry the float32 distance the "index" computed)
    np.testing.assert_allclose(found.dists, exact[found.labels], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sort(exact[found.labels]), best, rtol=1e-6, atol=1e-6)
    assert np.all(np.diff(found.dists) >= 0)
    assert sum(fetched) <= len(order)


def test_semantic_hits_happen_and_fetch_only_a_few_vectors() -> None:
    """The same set-up, deterministic: near duplicates are served, re-ranking k plus a few exactly."""
    rng = np.random.default_rng(1)
    dim, n, k = 64, 5000, 10
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rc = ResultCache(dim, "ip", similarity=0.9)
    fam = rc.family(k, None, ())
    served = 0
    fetched: list[int] = []
    for i in range(30):
        q = x[i] + 0.5 * rng.standard_normal(dim).astype(np.float32)
        q /= np.linalg.norm(q)
        d = _raw32(x, q, "ip")
        order = np.argsort(d)[:80].astype(np.int64)
        key = bytes([i])
        need = rc.store(key, q, fam, k, None, [], order, d[order], True, 0)
        rc.attach(key, 0, need, x[need])
        q2 = q + 0.002 * rng.standard_normal(dim).astype(np.float32)
        q2 /= np.linalg.norm(q2)

        def vectors(labels: np.ndarray) -> np.ndarray:
            fetched.append(len(labels))
            return x[labels]

        found = rc.lookup(key + b"'", q2, fam, k, vectors)
        if found is not None and found.kind == "semantic-hit":
            served += 1
            assert found.labels is not None
            exact = _raw64(x, q2, "ip")
            assert set(found.labels) == set(np.argsort(exact)[:k].tolist())
    assert served >= 25
    assert max(fetched) <= k + 5 and np.median(fetched) <= k + 2
