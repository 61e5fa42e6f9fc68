"""The routing table, the shard's fences and the catalog's create / drop / split, without Ray.

The catalog and the shards are plain Python (Ray only carries their calls), so these run everywhere: the
catalog talks to in-process :class:`ShardServer` objects through the same ``send(shard, method, *args)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from embeddix_ray import RayCollection, RayEmbeddix, ShardUnavailableError
from embeddix_ray._catalog import Catalog
from embeddix_ray._errors import StaleRoutingError
from embeddix_ray._routing import ROUTING_FILE, SPLITTING, Placement, RoutingTable, part_of
from embeddix_ray._shard import ShardServer
from testdata import clustered

from embeddix_core import (
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptionError,
    DuplicateIdError,
    Embeddix,
    FormatVersionError,
    InvalidArgumentError,
)


def test_public_names() -> None:
    import embeddix_ray

    assert embeddix_ray.__all__ == sorted(embeddix_ray.__all__)
    assert set(embeddix_ray.__all__) == {"RayCollection", "RayEmbeddix", "ShardUnavailableError"}
    assert issubclass(ShardUnavailableError, ConnectionError)
    assert RayCollection.__module__ == "embeddix_ray._collection"


def test_part_of_is_stable_across_processes_and_spreads_ids() -> None:
    # golden values: the hash is BLAKE2b, never Python's salted hash(); changing it would strand records
    assert [part_of(w, 7) for w in ("alice", "é", "id-0", "id-1")] == [2, 2, 0, 3]
    assert part_of("a", 1) == 0
    counts = np.bincount([part_of(f"r{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900, counts  # about 1000 each


def test_table_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    t = RoutingTable.new(3, 500).with_entry("c", Placement((1,), 1, create={"dim": 4}), bump=True)
    t.save(tmp_path)
    assert RoutingTable.load(tmp_path) == t
    doc = json.loads((tmp_path / ROUTING_FILE).read_text())
    assert doc["format"] == "embeddix-ray-routing" and doc["format_version"] == 1 and doc["version"] == 1

    doc["collections"]["c"]["parts"] = [2]  # an edit without a new checksum
    (tmp_path / ROUTING_FILE).write_text(json.dumps(doc))
    with pytest.raises(CorruptionError, match="checksum"):
        RoutingTable.load(tmp_path)
    (tmp_path / ROUTING_FILE).write_text("{not json")
    with pytest.raises(CorruptionError, match="not JSON"):
        RoutingTable.load(tmp_path)
    t.save(tmp_path)
    doc = json.loads((tmp_path / ROUTING_FILE).read_text())
    doc["format_version"] = 99
    (tmp_path / ROUTING_FILE).write_text(json.dumps(doc))
    with pytest.raises(FormatVersionError, match="99"):
        RoutingTable.load(tmp_path)


class Cluster:
    """A catalog and its shards in this process, wired as the Ray actors wire them."""

    def __init__(self, root: Path, shards: int, split_at: int = 1_000_000) -> None:
        self.root = root
        self.servers: dict[int, ShardServer] = {}
        self.catalog = Catalog(str(root), shards, split_at, self.send)
        for i in range(shards):
            self.server(i)

    def server(self, i: int) -> ShardServer:
        if i not in self.servers:
            t = self.catalog.table
            self.servers[i] = ShardServer(str(self.root / f"shard-{i}"), t.store_id, i, send=self.send)
        return self.servers[i]

    def send(self, shard: int, method: str, *args: Any) -> Any:
        return getattr(self.server(shard), method)(*args)

    def col(self, name: str, shard: int) -> Any:
        return self.server(shard).db.get_collection(name)

    def close(self) -> None:
        for s in self.servers.values():
            s.close()


def test_create_places_on_least_loaded_shard_and_checks_existing(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 3)
    homes = [c.catalog.create(f"c{i}", 4, "cosine", {}, False)["parts"] for i in range(4)]
    assert homes == [[0], [1], [2], [0]]
    with pytest.raises(CollectionExistsError):
        c.catalog.create("c0", 4, "cosine", {}, False)
    assert c.catalog.create("c0", 4, "cosine", {}, True)["parts"] == [0]
    with pytest.raises(CollectionExistsError, match="dim=4"):  # the engine's own comparison
        c.catalog.create("c0", 8, "cosine", {}, True)
    with pytest.raises(InvalidArgumentError):
        c.catalog.create("bad name!", 4, "cosine", {}, False)
    assert "bad name!" not in c.catalog.table.collections
    c.close()


def test_split_moves_records_by_hash_and_keeps_every_one(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 4)
    c.catalog.create("big", 8, "l2", {"index_threshold": 50}, False)
    x = clustered(300, 8)
    ids = [f"r{i}" for i in range(300)]
    e = c.catalog.table.collections["big"]
    c.send(
        0,
        "put",
        "big",
        e.epoch,
        False,
        ids,
        x,
        [f"doc {i}" for i in range(300)],
        [{"i": i} for i in range(300)],
    )
    entry = c.catalog.split("big", 3)
    assert entry["parts"] == [0, 1, 2] and entry["state"] == "ready"
    parts = tuple(entry["parts"])
    for i, shard in enumerate(parts):
        here = [r.id for r in c.col("big", shard).scan()]
        assert all(parts[part_of(rid, 3)] == shard for rid in here)
        assert c.col("big", shard).config.index_threshold == 50  # created like the source
        assert len(here) > 50, i
    assert sum(len(c.col("big", s)) for s in parts) == 300
    rec = c.col("big", parts[part_of("r7", 3)]).get("r7")
    assert rec.document == "doc 7" and rec.metadata == {"i": 7}
    np.testing.assert_array_equal(rec.vector, x[7])  # the stored vector, bit for bit
    with pytest.raises(InvalidArgumentError, match="from 3 to 4"):
        c.catalog.split("big", 2)
    c.close()


def test_a_split_interrupted_by_a_crash_is_finished_on_restart(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 2)
    c.catalog.create("big", 4, "cosine", {}, False)
    e = c.catalog.table.collections["big"]
    x = clustered(120, 4)
    c.send(0, "put", "big", e.epoch, False, [f"r{i}" for i in range(120)], x, None, None)
    # the catalog wrote "splitting" and died before moving anything
    moving = Placement((0, 1), c.catalog.table.version + 1, SPLITTING, e.create, moving_from=(0,))
    c.catalog.table.with_entry("big", moving, bump=True).save(tmp_path)
    c.close()
    c2 = Cluster(tmp_path, 2)
    assert c2.catalog.table.collections["big"].state == SPLITTING
    c2.catalog.resume()
    entry = c2.catalog.table.collections["big"]
    assert entry.state == "ready" and entry.parts == (0, 1)
    assert len(c2.col("big", 0)) + len(c2.col("big", 1)) == 120
    assert len(c2.col("big", 1)) > 30
    c2.close()


def test_fences_refuse_stale_calls_and_survive_a_restart(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1)
    c.catalog.create("c", 4, "cosine", {}, False)
    old = c.catalog.table.collections["c"].epoch
    c.catalog.drop("c")
    with pytest.raises(StaleRoutingError):
        c.send(0, "call", "c", old, "count", (), {})
    c.catalog.create("c", 4, "cosine", {}, False)  # recreated: a newer epoch passes the fence
    new = c.catalog.table.collections["c"].epoch
    assert new > old and c.send(0, "call", "c", new, "count", (), {}) == 0
    c.close()
    again = ShardServer(str(tmp_path / "shard-0"), c.catalog.table.store_id, 0)
    with pytest.raises(StaleRoutingError):  # the fence is durable
        again.call("c", old, "count", (), {})
    again.close()
    with pytest.raises(CollectionNotFoundError):
        Catalog(str(tmp_path), None, None, c.send).drop("missing")


def test_an_interrupted_drop_is_finished_on_restart(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 1)
    c.catalog.create("c", 4, "cosine", {}, False)
    c.send(0, "fence", "c", c.catalog.table.version + 1)  # the drop fenced the shard, then died
    c.catalog.resume()
    assert "c" not in c.catalog.table.collections
    c.close()


def test_shard_refuses_another_stores_directory_and_a_missing_one(tmp_path: Path) -> None:
    ShardServer(str(tmp_path / "s"), "store-a", 0).close()
    with pytest.raises(CorruptionError, match="store-a"):
        ShardServer(str(tmp_path / "s"), "store-b", 0)
    with pytest.raises(CorruptionError):
        ShardServer(str(tmp_path / "s"), "store-a", 1)
    with pytest.raises(Exception, match="no data"):
        ShardServer(str(tmp_path / "elsewhere"), "store-a", 0, must_exist=True)


def test_a_resent_add_counts_its_first_attempt(tmp_path: Path) -> None:
    s = ShardServer(str(tmp_path / "s"), "st", 0)
    s.create("c", 1, 2, "l2", {}, True)
    assert s.put("c", 1, False, ["a", "b"], [[1, 0], [0, 1]], None, None) == (["a", "b"], 2)
    with pytest.raises(DuplicateIdError):
        s.put("c", 1, False, ["a", "b"], [[1, 0], [0, 1]], None, None)
    assert s.put("c", 1, False, ["a", "b"], [[1, 0], [0, 1]], None, None, True) == (["a", "b"], 2)
    with pytest.raises(DuplicateIdError):  # resent, but "z" is new: the first attempt never committed
        s.put("c", 1, False, ["a", "z"], [[1, 0], [0, 1]], None, None, True)
    s.close()


def test_open_without_ray_or_a_directory_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgumentError, match="data directory"):
        RayEmbeddix.open(":memory:")
    with pytest.raises(InvalidArgumentError, match="shards"):
        RayEmbeddix.open("/tmp/x", shards=0)
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    for mod in ("embeddix_ray._remote", "embeddix_ray._router"):
        monkeypatch.delitem(__import__("sys").modules, mod, raising=False)
    with pytest.raises(ImportError, match=r"embeddix\[ray\]"):
        RayEmbeddix.open("/tmp/x")


def test_scan_pages_continue_one_pass(tmp_path: Path) -> None:
    s = ShardServer(str(tmp_path / "s"), "st", 0)
    s.create("c", 1, 2, "l2", {}, True)
    s.put("c", 1, False, [f"r{i:03}" for i in range(25)], np.ones((25, 2)), None, None)
    pages = [s.scan_page("c", 1, None, None, False, "tok", off, 10) for off in (0, 10, 20)]
    assert [r.id for p in pages for r in p] == [f"r{i:03}" for i in range(25)]
    # a page whose scan is gone (a restart) reopens it and skips
    assert [r.id for r in s.scan_page("c", 1, None, None, False, "other", 20, 10)] == [
        f"r{i:03}" for i in range(20, 25)
    ]
    s.close()
    with Embeddix.open(tmp_path / "s") as db:  # the shard directory is an ordinary Embeddix database
        assert len(db.get_collection("c")) == 25


def test_requests_over_the_budget_split_once_in_the_background(tmp_path: Path) -> None:
    import time

    c = Cluster(tmp_path, 4, split_at=50)
    c.catalog.create("c", 4, "cosine", {}, False)
    e = c.catalog.table.collections["c"]
    c.send(0, "put", "c", e.epoch, False, [f"r{i}" for i in range(80)], clustered(80, 4), None, None)
    c.catalog.request_split("c", 40)  # under the budget: nothing
    assert c.catalog.table.collections["c"].parts == (0,)
    for _ in range(3):  # several routers saw the same write: one split, not three
        c.catalog.request_split("c", 80)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        entry = c.catalog.table.collections["c"]
        if entry.state == "ready" and len(entry.parts) > 1:
            break
        time.sleep(0.02)
    time.sleep(0.3)
    assert c.catalog.table.collections["c"].parts == (0, 1)
    assert len(c.col("c", 0)) + len(c.col("c", 1)) == 80
    c.close()


def test_a_shard_saves_snapshots_of_what_was_written(tmp_path: Path) -> None:
    import time

    s = ShardServer(str(tmp_path / "s"), "st", 0, checkpoint_s=0.05)
    s.create("c", 1, 8, "l2", {"index_threshold": 20}, True)  # an HNSW index: it has snapshots
    s.put("c", 1, False, [f"r{i}" for i in range(60)], clustered(60, 8), None, None)
    deadline = time.monotonic() + 10
    while not list((tmp_path / "s" / "indexes").rglob("manifest.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    # saved while open (a kill now would load it), not only by close()
    assert list((tmp_path / "s" / "indexes").rglob("manifest.json"))
    s.close()


def test_a_written_collection_is_snapshotted_once_its_writes_pause(tmp_path: Path) -> None:
    # A killed shard reopens from its directory: without a snapshot it rebuilds the graph from the store
    # first (6.5 s for 20,000 records in ray_bench). A load followed by reads is saved once writes pause,
    # not only every checkpoint_s (here 600 s: only the pause can save it within the wait below).
    import time

    s = ShardServer(str(tmp_path / "s"), "store-a", 0, checkpoint_s=600)
    try:
        s.create("c", 1, 8, "cosine", {"index_threshold": 100}, True)
        s.put("c", 1, False, [str(i) for i in range(500)], clustered(500, 8, seed=2), None, None)
        col = s.db.get_collection("c")

        def snapshot() -> int:
            return int(col.stats().memory["disk"].get("snapshot", 0))

        before = snapshot()
        deadline = time.monotonic() + 60
        while snapshot() <= before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert snapshot() > before
    finally:
        s.close()
