"""A backup carries the MCP server's grants file, and a restore puts it back (``cli/_transfer.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embeddix_core import CorruptionError, Embeddix, InvalidArgumentError
from embeddix_core.cli._transfer import SIDECAR_FILES, backup_database, restore_database
from embeddix_mcp.agents import GRANTS_FILE, GrantStore


def _database(data: Path) -> None:
    with Embeddix.open(data) as db:
        db.create_collection("agent:alice", dim=4).add(["m1"], np.ones((1, 4)))


def test_the_core_names_the_servers_grants_file() -> None:
    assert GRANTS_FILE in SIDECAR_FILES  # the core cannot import the server: the name is written twice


def test_backup_and_restore_keep_grants(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _database(data)
    GrantStore(data).grant("alice", "bob")
    GrantStore(data).grant("alice", "carol", "work")
    manifest = backup_database(data, tmp_path / "bk")
    assert set(manifest["files"]) == {"embeddix.sqlite3", GRANTS_FILE}
    assert (tmp_path / "bk" / GRANTS_FILE).read_bytes() == (data / GRANTS_FILE).read_bytes()

    restore_database(tmp_path / "bk", tmp_path / "restored")
    grants = GrantStore(tmp_path / "restored")
    assert grants.allowed("alice", "bob") and grants.allowed("alice", "carol", "work")
    assert not grants.allowed("alice", "carol")
    with Embeddix.open(tmp_path / "restored") as db:
        assert db.get_collection("agent:alice").get("m1") is not None


def test_without_grants_the_backup_is_the_store_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _database(data)
    assert set(backup_database(data, tmp_path / "bk")["files"]) == {"embeddix.sqlite3"}
    restore_database(tmp_path / "bk", tmp_path / "restored")
    assert not (tmp_path / "restored" / GRANTS_FILE).exists()


def test_restore_never_overwrites_other_grants_and_checks_the_copy(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _database(data)
    GrantStore(data).grant("alice", "bob")
    backup_database(data, tmp_path / "bk")

    other = tmp_path / "other"
    other.mkdir()
    GrantStore(other).grant("dave", "erin")  # a directory holding other grants (and no database)
    with pytest.raises(InvalidArgumentError, match="other contents"):
        restore_database(tmp_path / "bk", other)
    assert not (other / "embeddix.sqlite3").exists()
    assert GrantStore(other).allowed("dave", "erin")

    again = tmp_path / "again"  # an interrupted restore run again: the same grants file is kept
    again.mkdir()
    (again / GRANTS_FILE).write_bytes((data / GRANTS_FILE).read_bytes())
    restore_database(tmp_path / "bk", again)
    assert GrantStore(again).allowed("alice", "bob")

    damaged = tmp_path / "bk" / GRANTS_FILE
    doc = json.loads(damaged.read_text())
    doc["grants"] = []
    damaged.write_text(json.dumps(doc))
    with pytest.raises(CorruptionError, match=GRANTS_FILE):
        restore_database(tmp_path / "bk", tmp_path / "third")
