"""Agent and namespace names, and the durable grant store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embeddix_core import InvalidArgumentError, StorageError
from embeddix_mcp.agents import GRANTS_FILE, GrantStore, memory_collection, split_memory_collection


def test_collection_names_cannot_cross_agents() -> None:
    assert memory_collection("alice") == "agent:alice"
    assert memory_collection("alice", "work") == "agent:alice:work"
    assert split_memory_collection("agent:alice:work") == ("alice", "work")
    assert split_memory_collection("docs:alice:x") is None
    for bad in ("bob:x", "", ".hidden", "-x", "a" * 49, "a/b"):
        with pytest.raises(InvalidArgumentError):
            memory_collection("alice", bad)
    with pytest.raises(InvalidArgumentError):
        memory_collection("alice:bob")


def test_grants_are_durable_shared_and_checksummed(tmp_path: Path) -> None:
    store = GrantStore(tmp_path)
    g, new = store.grant("alice", "bob")
    assert new and g.namespace is None and store.allowed("alice", "bob")
    assert store.grant("alice", "bob") == (g, False)
    store.grant("alice", "carol", "work")
    assert not store.allowed("alice", "bob", "work") and store.allowed("alice", "carol", "work")
    assert not store.allowed("bob", "alice") and store.allowed("bob", "bob")
    other = GrantStore(tmp_path)  # another process on the same directory
    assert other.allowed("alice", "bob") and [x.grantee for x in other.given_by("alice")] == ["bob", "carol"]
    assert other.revoke("alice", "bob") and not other.revoke("alice", "bob")
    assert not store.allowed("alice", "bob")  # the first store re-reads the changed file
    with pytest.raises(InvalidArgumentError):
        store.grant("alice", "alice")
    path = tmp_path / GRANTS_FILE
    doc = json.loads(path.read_text())
    doc["grants"][0]["grantee"] = "mallory"
    path.write_text(json.dumps(doc))
    with pytest.raises(StorageError, match="checksum"):
        GrantStore(tmp_path).allowed("alice", "mallory", "work")
    assert list(tmp_path.glob(".grants-*")) == []  # no temporary files left behind


def test_in_memory_grants() -> None:
    store = GrantStore(None)
    store.grant("a", "b")
    assert store.allowed("a", "b") and store.received_by("b")[0].owner == "a"
