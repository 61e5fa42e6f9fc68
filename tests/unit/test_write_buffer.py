"""The HNSW write buffer: small additions wait in an exactly-searched buffer, then enter the graph at once.

Every test compares against the exact answer: a buffered vector must be as findable as one in the graph,
deleting or updating it must act at once, and a snapshot must never miss it.
"""

from __future__ import annotations

import threading

import numpy as np
from testdata import clustered

from embeddix_core import Embeddix, EmbeddixSettings
from embeddix_core.index.base import exact_topk
from embeddix_core.index.segmented import SegmentedHnsw


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _index(buffer: int = 16) -> SegmentedHnsw:
    return SegmentedHnsw(8, "ip", ef_search=64, write_buffer=buffer, capacity=1024)


def test_buffered_vectors_are_found_exactly_and_flush_into_the_graph() -> None:
    x = _unit(clustered(300, 8, seed=31))
    idx = _index(16)
    idx.add(np.arange(200), x[:200])  # a batch larger than the buffer goes straight to the graph
    assert idx.buffered == 0
    for i in range(200, 215):
        idx.add(np.array([i]), x[i : i + 1])
    assert idx.buffered == 15 and len(idx) == 215
    truth = exact_topk(x[:215], np.arange(215), x[200:215], 5, "ip")
    res = idx.search(x[200:215], 5, ef=200)
    assert res.labels[:, 0].tolist() == list(range(200, 215))  # each buffered vector finds itself first
    assert (res.labels == truth.labels).mean() >= 0.95
    assert sorted(idx.live_labels().tolist()) == list(range(215))
    np.testing.assert_allclose(idx.get_vectors(np.array([3, 207])), x[[3, 207]], rtol=1e-6)
    idx.add(np.array([215]), x[215:216])  # the 16th fills the buffer: one batch into the graph
    idx.join()  # ... inserted by a background thread
    assert idx.buffered == 0 and len(idx) == 216
    assert idx.search(x[215:216], 1).labels[0, 0] == 215


def test_delete_and_update_of_buffered_labels() -> None:
    x = _unit(clustered(120, 8, seed=32))
    idx = _index(32)
    idx.add(np.arange(100), x[:100])
    for i in range(100, 110):
        idx.add(np.array([i]), x[i : i + 1])
    idx.remove(np.array([103, 5]))  # one buffered, one in the graph
    assert idx.buffered == 9 and len(idx) == 108
    found = idx.search(x[[103, 5]], 3, ef=100).labels
    assert 103 not in found and 5 not in found
    # replacing a buffered label's vector (an upsert) must not leave a second copy anywhere
    idx.add(np.array([104]), x[119:120], new=np.array([False]))
    res = idx.search(x[119:120], 3, ef=100)
    assert res.labels[0, 0] == 104 and res.labels[0].tolist().count(104) == 1
    assert len(idx) == 108


def test_filtered_search_applies_to_the_buffer() -> None:
    x = _unit(clustered(80, 8, seed=33))
    idx = _index(64)
    idx.add(np.arange(70), x[:70])
    for i in range(70, 80):
        idx.add(np.array([i]), x[i : i + 1])
    even = lambda lb: lb % 2 == 0  # noqa: E731
    res = idx.search(x[71:72], 5, ef=100, allowed=even)
    assert all(lb % 2 == 0 for lb in res.labels[0].tolist())
    truth = exact_topk(x[::2], np.arange(0, 80, 2), x[71:72], 5, "ip")
    assert res.labels[0].tolist() == truth.labels[0].tolist()


def test_searches_racing_flushes_see_every_vector_once() -> None:
    x = _unit(clustered(2000, 8, seed=34))
    idx = _index(8)
    idx.add(np.arange(500), x[:500])
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            n = len(idx)
            res = idx.search(x[:4], 10, ef=64)
            for row in res.labels.tolist():
                kept = [lb for lb in row if lb >= 0]
                if len(kept) != len(set(kept)):
                    errors.append(f"duplicate labels {row}")
            if n < 500:
                errors.append("lost vectors")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(500, 2000):
        idx.add(np.array([i]), x[i : i + 1])
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(idx) == 2000 and sorted(idx.live_labels().tolist()) == list(range(2000))


def test_writes_go_on_while_the_buffer_flushes_and_wait_at_its_limit() -> None:
    """A full buffer flushes in the background; appends continue until the buffer's limit, never past."""
    from embeddix_core.index.segmented import BUFFER_LIMIT

    x = _unit(clustered(3000, 8, seed=37))
    idx = _index(8)
    idx.add(np.arange(1000), x[:1000])
    stop = threading.Event()
    errors: list[str] = []
    done = [1000]  # labels below done[0] were acknowledged before a reader looks

    def reader() -> None:
        while not stop.is_set():
            upto = done[0]
            probe = np.array([upto - 1, upto // 2])
            # every acknowledged vector is readable whether it sits in the buffer, moves, or is in a graph
            if not np.allclose(idx.get_vectors(probe), x[probe]):
                errors.append(f"wrong vectors for {probe}")
            live = idx.live_labels()
            if len(np.unique(live)) != len(live) or not np.isin(np.arange(upto), live).all():
                errors.append(f"live labels lost or repeated rows below {upto}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    most = 0
    for i in range(1000, 3000):
        idx.add(np.array([i]), x[i : i + 1])
        done[0] = i + 1
        most = max(most, idx.buffered)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert most <= 8 * BUFFER_LIMIT
    idx.join()
    assert idx.buffered < 8 and len(idx) == 3000
    truth = exact_topk(x, np.arange(3000), x[2900:], 1, "ip")
    assert (idx.search(x[2900:], 1, ef=100).labels == truth.labels).mean() >= 0.98
    idx.remove(np.arange(2990, 3000))  # removal waits for the flusher and reaches buffer and graph
    assert len(idx) == 2990 and not np.isin(np.arange(2990, 3000), idx.live_labels()).any()


def test_collection_single_adds_are_searchable_and_survive_snapshot_and_replay(tmp_path) -> None:
    x = clustered(700, 16, seed=35)
    s = EmbeddixSettings(auto_calibrate=False, cache_enabled=False, write_buffer=64)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.create_collection("c", dim=16, index_threshold=100)
        col.add([str(i) for i in range(600)], x[:600])
        for i in range(600, 650):
            col.add(str(i), x[i])
            assert col.search(x[i], k=1)[0].id == str(i)  # read-your-writes from the buffer
        assert col.stats().params["write_buffered"] == 50
    # close wrote a snapshot: it must hold the buffered records (it flushed them first)
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.get_collection("c")
        assert len(col) == 650 and col.stats().params["write_buffered"] == 0
        assert col.search(x[640], k=1)[0].id == "640"
        for i in range(650, 660):
            col.add(str(i), x[i])
        col.delete(["655", "10"])
        db.close()
    with Embeddix.open(tmp_path / "d", settings=s) as db:
        col = db.get_collection("c")
        assert len(col) == 658
        assert col.search(x[659], k=1)[0].id == "659"
        assert "655" not in {h.id for h in col.search(x[655], k=5)}


def test_pipelined_search_batch_equals_single_searches(monkeypatch) -> None:
    import embeddix_core.query.executor as collection_module

    monkeypatch.setattr(collection_module, "_BATCH_CHUNK", 7)  # many chunks from a small batch
    x = clustered(400, 8, seed=36)
    s = EmbeddixSettings(auto_calibrate=False, cache_enabled=False)
    with Embeddix.open(None, settings=s) as db:
        col = db.create_collection("c", dim=8, index_threshold=100)
        col.add([str(i) for i in range(400)], x, documents=[f"d{i}" for i in range(400)])
        q = x[:50] + 0.01
        batch = col.search_batch(q, k=5, ef=64, num_threads=2)
        single = [col.search(v, k=5, ef=64) for v in q]
        assert [[(h.id, h.document) for h in b] for b in batch] == [
            [(h.id, h.document) for h in r] for r in single
        ]


def test_a_polite_writer_lets_waiting_searches_in_between_slices() -> None:
    """A background flush holds the graph one slice at a time; searches already waiting go first."""
    import hnswlib

    from embeddix_core.index.hnsw import _Gate

    gate, index = _Gate(), hnswlib.Index("ip", 4)
    order: list[str] = []
    gate.enter_write()  # slice 1 in progress
    waiting = threading.Event()

    def search() -> None:
        waiting.set()
        gate.enter_read(16, index)
        order.append("search")
        gate.exit_read()

    t = threading.Thread(target=search)
    t.start()
    waiting.wait()
    while gate._waiting == 0:  # the search is blocked behind slice 1
        threading.Event().wait(0.001)
    gate.exit_write()
    gate.enter_write(polite=True)  # slice 2: only after the waiting search ran
    order.append("slice 2")
    gate.exit_write()
    t.join()
    assert order == ["search", "slice 2"]
