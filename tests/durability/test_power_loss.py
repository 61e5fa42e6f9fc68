"""Power loss: kill -9, then drop, truncate or garble the part of the WAL that was never fsynced.

What this models is written in ``harness/powerloss.py``: the child runs the crash workload with SQLite's
automatic checkpoints off, so the database file is untouched during the run and the WAL only grows; after
the SIGKILL the WAL is cut at a random frame boundary at or above the last fsynced size (for
``durability="full"`` the size logged with the last acknowledgement, every commit being fsynced; for
``"normal"`` zero, nothing being fsynced) and the cut-off tail is dropped, zeroed, randomized or bit-flipped;
``-shm`` is deleted. Index snapshots stay as written (each is fsynced before its rename).

Expected: with "full", every acknowledged op survives (the op in flight whole or not at all) or opening
raises a typed ``StorageError``; with "normal", the records are the state after some prefix of the op
history, and the index agrees with the store.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from durability.harness.checks import (
    LOST_TAIL_REBUILD_REASONS,
    check_directory,
    history,
    parse_log,
    unexpected_warnings,
)
from durability.harness.powerloss import lose_power
from durability.harness.workload import COLLECTION, DIM, Config, Model, apply, vectors
from durability.harness.zygote import Zygote, child_env

from embeddix_core import Embeddix
from embeddix_core.config import EmbeddixSettings
from embeddix_core.errors import StorageError

ITERATIONS = max(4, int(os.environ.get("EMBEDDIX_RELIABILITY_ITERATIONS", "200")) // 20)


def _setup(data: Path, config: Config, seed: int) -> Model:
    """A directory with records in its database file (closed cleanly: no WAL left)."""
    n = config.min_records + 20
    op: dict[str, Any] = {
        "op": "add",
        "ids": [f"base-{i}" for i in range(n)],
        "vseed": seed,
        "docs": [f"base {i}" for i in range(n)],
        "metas": [{"g": i % 25} for i in range(n)],
    }
    settings = EmbeddixSettings(**config.settings())
    with Embeddix.open(data, settings=settings) as db:
        col = db.create_collection(COLLECTION, dim=DIM, **config.collection_kwargs())
        col.add(op["ids"], vectors(seed, n), op["docs"], op["metas"])
    return apply({}, op)


def _run_and_cut(
    zygote: Zygote, data: Path, config: Config, seed: int
) -> tuple[Model, list[Model], int, str]:
    rng = random.Random(seed)
    model = _setup(data, config, seed)
    log_path = data.parent / "run.log"
    spec = {
        "dir": str(data),
        "log": str(log_path),
        "seed": seed,
        "run": 1,
        "config": asdict(config),
        "power_loss": True,
    }
    pid = zygote.spawn(spec)
    deadline = time.monotonic() + 30
    while b"READY\n" not in (log_path.read_bytes() if log_path.exists() else b""):
        assert time.monotonic() < deadline, "the child never got ready"
        time.sleep(0.005)
    time.sleep(rng.uniform(0.05, 0.5))
    os.kill(pid, signal.SIGKILL)
    zygote.wait(pid)
    log = parse_log(log_path)
    floor = max(log.acked.values(), default=0) if config.durability == "full" else 0
    what = lose_power(data, floor, rng)
    states, acked = history(model, log)
    return model, states, acked, what


@pytest.mark.slow
@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_power_loss_with_full_durability_keeps_every_acknowledged_op(tmp_path: Path, index: str) -> None:
    config = Config("full", index, "compact")
    failures: list[str] = []
    typed_errors = 0
    with Zygote() as zygote:
        for i in range(ITERATIONS):
            data = tmp_path / str(i) / "data"
            data.parent.mkdir()
            _, states, acked, what = _run_and_cut(zygote, data, config, 1000 + i)
            try:
                out, _ = check_directory(data, config, states, must_reach=acked, rng=np.random.default_rng(i))
            except StorageError:
                typed_errors += 1  # allowed: a typed refusal, never a silent loss
                continue
            failures.extend(f"iteration {i} ({what}): {f}" for f in out.failures)
            odd = unexpected_warnings(out.warnings, LOST_TAIL_REBUILD_REASONS)
            failures.extend(f"iteration {i} ({what}): warning {w}" for w in odd)
    assert not failures, "\n".join(failures[:10])
    assert typed_errors < ITERATIONS, "every power cut made the store unreadable"


@pytest.mark.slow
@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_power_loss_with_normal_durability_keeps_a_prefix_of_the_history(tmp_path: Path, index: str) -> None:
    """The records are the model after some prefix of the ops (any, down to none), and the index agrees."""
    config = Config("normal", index, "compact")
    failures: list[str] = []
    lost_tails = 0
    with Zygote() as zygote:
        for i in range(ITERATIONS):
            data = tmp_path / str(i) / "data"
            data.parent.mkdir()
            _, states, acked, what = _run_and_cut(zygote, data, config, 2000 + i)
            try:
                out, observed = check_directory(
                    data, config, states, must_reach=0, rng=np.random.default_rng(i)
                )
            except StorageError:
                continue
            failures.extend(f"iteration {i} ({what}): {f}" for f in out.failures)
            if observed is not None and observed != states[acked] and observed in states[:acked]:
                lost_tails += 1
    assert not failures, "\n".join(failures[:10])
    assert lost_tails > 0, "no power cut lost an acknowledged op: the test double did not bite"


_LOST_TAIL = textwrap.dedent(
    """
    import os, sys, numpy as np
    from embeddix_core import Embeddix
    x = np.random.default_rng(1).standard_normal((320, 16)).astype(np.float32)
    db = Embeddix.open(sys.argv[1], durability="normal")
    db._store._conn.execute("PRAGMA wal_autocheckpoint=0")
    col = db.get_collection("c")
    col.add([f"new-{i}" for i in range(7)], x[300:307])  # labels 301..307
    col.delete([f"old-{i}" for i in range(3)])
    assert col.checkpoint()                               # snapshot at the new seq, fsynced
    os._exit(0)                                           # no close: the WAL holds the new commits
    """
)


def test_index_snapshot_newer_than_the_store_after_power_loss(tmp_path: Path) -> None:
    """Deterministic: commits and a snapshot after them, then the whole unsynced WAL is lost."""
    data = tmp_path / "data"
    x = np.random.default_rng(1).standard_normal((320, 16)).astype(np.float32)
    with Embeddix.open(data, durability="normal") as db:
        db.create_collection("c", dim=16, index_threshold=200).add([f"old-{i}" for i in range(300)], x[:300])
    subprocess.run([sys.executable, "-c", _LOST_TAIL, str(data)], check=True, env=child_env())
    (data / "embeddix.sqlite3-wal").write_bytes(b"")  # power cut: nothing of the WAL was synced
    (data / "embeddix.sqlite3-shm").unlink(missing_ok=True)
    with warnings.catch_warnings(record=True), Embeddix.open(data) as db:
        warnings.simplefilter("always")
        col = db.get_collection("c")
        assert col.count() == 300
        assert len(col) == col.count()
        tops = col.search_batch(x[:300], k=1, num_threads=1)
        assert [t[0].id if t else None for t in tops] == [f"old-{i}" for i in range(300)]
        # a new record reuses label 301 (the store's AUTOINCREMENT lost its tail too)
        col.add(["fresh"], x[310])
        assert col.search(x[310], k=1)[0].id == "fresh"
        assert col.search(x[300], k=1)[0].id != "fresh"
