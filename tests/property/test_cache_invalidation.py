"""Cache correctness under hypothesis.

* Invalidation: after any sequence of writes, every cached answer equals a fresh (uncached) search.
* Bound soundness: every semantic hit equals a fresh exact re-rank of the whole collection.

The collection stays below the HNSW threshold, so a fresh search is exact and the comparison is exact.
"""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from embeddix_core import Embeddix, EmbeddixSettings

DIM = 5
IDS = st.sampled_from([f"r{i}" for i in range(30)])
VEC = (
    st.lists(st.integers(-6, 6), min_size=DIM, max_size=DIM)
    .filter(lambda v: any(v))
    .map(lambda v: np.asarray(v, np.float32))
)
META = st.fixed_dictionaries({"g": st.integers(0, 2)})
FILTERS = st.sampled_from([None, {"g": 0}, {"g": {"$in": [1, 2]}}, {"$not": {"g": 1}}])


class CacheMachine(RuleBasedStateMachine):
    @initialize(metric=st.sampled_from(["cosine", "l2"]))
    def open(self, metric: str) -> None:
        self.db = Embeddix.open(None, settings=EmbeddixSettings(cache_similarity=0.5))
        self.col = self.db.create_collection("c", dim=DIM, metric=metric)
        self.queries: list[tuple[np.ndarray, int, dict | None, str | None]] = []

    def teardown(self) -> None:
        self.db.close()

    @rule(ids=st.lists(IDS, min_size=1, max_size=4, unique=True), data=st.data())
    def upsert(self, ids: list[str], data: st.DataObject) -> None:
        self.col.upsert(
            ids, np.stack([data.draw(VEC) for _ in ids]), metadatas=[data.draw(META) for _ in ids]
        )

    @rule(ids=st.lists(IDS, min_size=1, max_size=4, unique=True), data=st.data())
    def upsert_vectors_only(self, ids: list[str], data: st.DataObject) -> None:
        self.col.upsert(ids, np.stack([data.draw(VEC) for _ in ids]))  # stored metadata is kept

    @rule(ids=st.lists(IDS, min_size=1, max_size=3, unique=True))
    def delete(self, ids: list[str]) -> None:
        self.col.delete(ids)

    @rule(rid=IDS, meta=META)
    def update_metadata(self, rid: str, meta: dict) -> None:
        if self.col.get(rid, include_vectors=False) is not None:
            self.col.update(rid, metadatas=[meta])

    @rule(q=VEC, k=st.integers(1, 6), flt=FILTERS, session=st.sampled_from([None, "a", "b"]))
    def search(self, q: np.ndarray, k: int, flt: dict | None, session: str | None) -> None:
        hits = self.col.search(q, k=k, filter=flt, session=session)
        fresh = self.col.search(q, k=k, filter=flt, cache=False)
        self._same(hits, fresh)
        self.queries.append((q, k, flt, session))

    @rule(data=st.data(), noise=st.floats(1e-4, 0.3))
    def near_duplicate(self, data: st.DataObject, noise: float) -> None:
        if not self.queries:
            return
        q, k, flt, session = data.draw(st.sampled_from(self.queries))
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
        q2 = (q + rng.standard_normal(DIM).astype(np.float32) * noise * float(np.linalg.norm(q))).astype(
            np.float32
        )
        hits = self.col.search(q2, k=k, filter=flt, session=session)
        self._same(hits, self.col.search(q2, k=k, filter=flt, cache=False))

    @staticmethod
    def _same(hits, fresh) -> None:
        assert len(hits) == len(fresh)

        # Compared in index space (squared for l2): the exact index computes |x|^2 - 2 x.c + |c|^2 in
        # float32, off by ~1e-5 for these vectors, and a square root turns that into ~3e-3 next to zero
        # (a semantic hit's float64 re-rank said 3.4e-4 where the index said 0).
        def raw(h) -> float:
            return h.distance**2 if h.metric == "l2" else h.distance

        np.testing.assert_allclose([raw(h) for h in hits], [raw(f) for f in fresh], rtol=1e-4, atol=1e-4)
        # ids may differ only between equidistant records
        for h, f in zip(hits, fresh, strict=True):
            if h.id != f.id:
                assert abs(raw(h) - raw(f)) <= 1e-4
            else:
                assert h.metadata == f.metadata and h.document == f.document

    @invariant()
    def cached_answers_equal_fresh_searches(self) -> None:
        if not hasattr(self, "col"):
            return
        for q, k, flt, session in self.queries[-8:]:
            self._same(
                self.col.search(q, k=k, filter=flt, session=session),
                self.col.search(q, k=k, filter=flt, cache=False),
            )


CacheMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCacheMachine = CacheMachine.TestCase
