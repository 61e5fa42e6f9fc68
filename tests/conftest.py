"""Shared fixtures: clustered data sets and databases (in memory and on disk)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from embeddix_core import Embeddix


@pytest.fixture
def mem_db() -> Iterator[Embeddix]:
    db = Embeddix.open(None)
    yield db
    db.close()


@pytest.fixture
def disk_db(tmp_path: Path) -> Iterator[Embeddix]:
    db = Embeddix.open(tmp_path / "data")
    yield db
    db.close()


@pytest.fixture(params=["memory", "disk"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Embeddix]:
    d = Embeddix.open(None if request.param == "memory" else tmp_path / "data")
    yield d
    d.close()
