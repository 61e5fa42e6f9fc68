"""Threads: per-query ef never races (hnswlib's set_ef is index-wide); writers and readers interleave."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from testdata import clustered

from embeddix_core import Embeddix


def test_per_query_ef_does_not_race_between_threads() -> None:
    x = clustered(3000, 24, seed=9)
    q = clustered(60, 24, seed=10)
    with Embeddix.open(None) as db:
        col = db.create_collection("c", dim=24, index_threshold=500)
        col.add([str(i) for i in range(3000)], x)
        efs = [10, 16, 200, 400]
        # sequential reference per ef
        ref = {ef: [[h.id for h in col.search(v, k=10, ef=ef)] for v in q] for ef in efs}
        jobs = [(ef, i) for _ in range(3) for ef in efs for i in range(len(q))]
        rng = np.random.default_rng(0)
        rng.shuffle(jobs)

        def run(job: tuple[int, int]) -> bool:
            ef, i = job
            return [h.id for h in col.search(q[i], k=10, ef=ef)] == ref[ef][i]

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(run, jobs))


def test_writers_and_readers_interleave() -> None:
    x = clustered(2000, 16, seed=1)
    with Embeddix.open(None) as db:
        col = db.create_collection("c", dim=16, index_threshold=300)
        col.add([str(i) for i in range(500)], x[:500])
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    i = int(np.random.default_rng().integers(0, 500))
                    hits = col.search(x[i], k=5)
                    assert hits and hits[0].id == str(i)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for s in range(500, 2000, 100):
            col.add([str(i) for i in range(s, s + 100)], x[s : s + 100])
            col.delete([str(s)])
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert len(col) == 2000 - 15
        assert col.index_kind == "hnsw"
