"""A hypothesis state machine over add / upsert / update / delete / search with a restart rule.

The model is a plain dict; searches are compared with the brute-force answer over the model. The index
threshold is tiny so both the exact index and HNSW (with its tombstones and snapshots) are exercised;
on sets this small an HNSW beam of 96 sees every node, so its answers must be exact.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from embeddix_core import DuplicateIdError, Embeddix, NotFoundError
from embeddix_core.eval import exact_knn

DIM = 6
IDS = st.sampled_from([f"id{i}" for i in range(40)])
VEC = (
    st.lists(st.integers(-8, 8), min_size=DIM, max_size=DIM)
    .filter(lambda v: any(v))
    .map(lambda v: np.asarray(v, np.float32))
)
META = st.fixed_dictionaries({"g": st.integers(0, 3)})


class CollectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="embeddix-sm-"))
        self.model: dict[str, tuple[np.ndarray, dict]] = {}

    @initialize(threshold=st.sampled_from([0, 5, 1000]))
    def open(self, threshold: int) -> None:
        self.db = Embeddix.open(self.tmp / "d", durability="normal")
        self.col = self.db.create_collection("c", dim=DIM, metric="l2", index_threshold=threshold)

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(ids=st.lists(IDS, min_size=1, max_size=5, unique=True), data=st.data())
    def add(self, ids: list[str], data: st.DataObject) -> None:
        vecs = [data.draw(VEC) for _ in ids]
        metas = [data.draw(META) for _ in ids]
        if any(i in self.model for i in ids):
            try:
                self.col.add(ids, np.stack(vecs), metadatas=metas)
            except DuplicateIdError:
                return
            raise AssertionError("add of an existing id did not raise")
        self.col.add(ids, np.stack(vecs), metadatas=metas)
        for i, v, m in zip(ids, vecs, metas, strict=True):
            self.model[i] = (v, m)

    @rule(ids=st.lists(IDS, min_size=1, max_size=5, unique=True), data=st.data())
    def upsert(self, ids: list[str], data: st.DataObject) -> None:
        vecs = [data.draw(VEC) for _ in ids]
        metas = [data.draw(META) for _ in ids]
        self.col.upsert(ids, np.stack(vecs), metadatas=metas)
        for i, v, m in zip(ids, vecs, metas, strict=True):
            self.model[i] = (v, m)

    @rule(ids=st.lists(IDS, min_size=1, max_size=5, unique=True), data=st.data())
    def upsert_vectors_only(self, ids: list[str], data: st.DataObject) -> None:
        # metadatas=None: stored records keep their metadata, new ones get none (issue #15)
        vecs = [data.draw(VEC) for _ in ids]
        self.col.upsert(ids, np.stack(vecs))
        for i, v in zip(ids, vecs, strict=True):
            self.model[i] = (v, self.model[i][1] if i in self.model else {})

    @rule(rid=IDS, meta=META)
    def update_metadata(self, rid: str, meta: dict) -> None:
        if rid in self.model:
            self.col.update(rid, metadatas=[meta])
            self.model[rid] = (self.model[rid][0], meta)
        else:
            try:
                self.col.update(rid, metadatas=[meta])
            except NotFoundError:
                return
            raise AssertionError("update of an absent id did not raise")

    @rule(ids=st.lists(IDS, min_size=1, max_size=4, unique=True))
    def delete(self, ids: list[str]) -> None:
        n = self.col.delete(ids)
        assert n == sum(i in self.model for i in ids)
        for i in ids:
            self.model.pop(i, None)

    @rule(g=st.integers(0, 3))
    def delete_by_filter(self, g: int) -> None:
        n = self.col.delete(filter={"g": g})
        gone = [i for i, (_, m) in self.model.items() if m.get("g") == g]
        assert n == len(gone)
        for i in gone:
            del self.model[i]

    @rule()
    def restart(self) -> None:
        self.db.close()
        self.db = Embeddix.open(self.tmp / "d", durability="normal")
        self.col = self.db.get_collection("c")

    @precondition(lambda self: bool(self.model))
    @rule(q=VEC, k=st.integers(1, 50), g=st.none() | st.integers(0, 3))
    def search(self, q: np.ndarray, k: int, g: int | None) -> None:
        items = [(i, v) for i, (v, m) in self.model.items() if g is None or m.get("g") == g]
        flt = None if g is None else {"g": g}
        hits = self.col.search(q, k=k, filter=flt)
        assert len(hits) == min(k, len(items))
        if not items:
            return
        ids = [i for i, _ in items]
        truth = exact_knn(np.stack([v for _, v in items]), q[None, :], k, "l2")
        true_d = truth.distances[0]
        # compare distances (ties make ids ambiguous), and every hit must really be in the model
        np.testing.assert_allclose([h.distance for h in hits], true_d[: len(hits)], rtol=1e-4, atol=1e-3)
        for h in hits:
            assert h.id in ids
            assert h.metadata == self.model[h.id][1]

    @invariant()
    def counts_agree(self) -> None:
        if hasattr(self, "col"):
            assert len(self.col) == len(self.model)


CollectionMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCollectionMachine = CollectionMachine.TestCase
