"""kill -9 at random moments, across durability levels, index types and background activity.

A child (forked from a server that imported Embeddix once, see ``harness/zygote.py``) runs a seeded random
workload of add / upsert / update / delete by id and by filter / clear / compact / checkpoint / reopen,
logging ``BEGIN`` before each call and ``ACK`` after it returned. The parent SIGKILLs it 0.05-0.6 s after it
is ready (or during its start-up, one time in eight), reopens the directory and checks it against the
model: every acknowledged op present exactly once, the op in flight applied whole or not at all,
``len(col) == col.count()``, searches returning only stored ids, recall@10 no worse than a fresh build's,
and (exact index) every record finding itself at k=1. Each directory is killed several times in a row.

The matrix is durability ("full", "normal") x index (exact; HNSW past 200 records; HNSW in segments of
100) x background activity (write-buffer flushes; a thread calling ``checkpoint()``; frequent
``compact()``; auto-calibration). ``EMBEDDIX_RELIABILITY_ITERATIONS`` sets the total kills (default 200,
split evenly); ``python -m benchmarks.reliability_long`` runs the same loop for thousands.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from durability.harness.checks import check_directory, unexpected_warnings
from durability.harness.loop import run_matrix
from durability.harness.workload import Config, apply, configs, vectors
from durability.harness.zygote import child_env

ITERATIONS = int(os.environ.get("EMBEDDIX_RELIABILITY_ITERATIONS", "120"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill9_loop_keeps_every_acknowledged_op(tmp_path: Path) -> None:
    stats = run_matrix(tmp_path, configs(), ITERATIONS, kills_per_dir=4, seed=12)
    assert stats.iterations >= min(ITERATIONS, len(configs()))
    report = (
        f"{stats.iterations} kills, {stats.ops_verified} acknowledged ops checked, lost {stats.lost}, "
        f"resurrected {stats.resurrected}, duplicates {stats.duplicates}"
    )
    assert not stats.failures, report + "\n" + "\n".join(stats.failures[:20])
    assert stats.lost == stats.resurrected == stats.duplicates == 0, report
    # a kill -9 never tears a snapshot (they are renamed into place); the only warnings allowed are index
    # rebuilds after a kill inside checkpoint() (see checks.CRASH_REBUILD_REASONS)
    unexpected = unexpected_warnings(stats.warnings)
    assert not unexpected, "\n".join(unexpected[:10])
    assert stats.ops_verified > stats.iterations, "the children acknowledged almost nothing"


def test_the_check_catches_a_lost_and_a_resurrected_record(tmp_path: Path) -> None:
    """The harness itself: a store that differs from the model by one record fails the check."""
    from embeddix_core import Embeddix

    config = Config("full", "exact", "flush")
    op = {
        "op": "add",
        "ids": ["a", "b", "c"],
        "vseed": 7,
        "docs": ["x", None, "z"],
        "metas": [{"g": 1}, {"g": 2}, {"g": 3}],
    }
    model = apply({}, op)
    data = tmp_path / "data"
    with Embeddix.open(data) as db:
        db.create_collection("c", dim=16, **config.collection_kwargs()).add(
            ["a", "b"], vectors(7, 3)[:2], ["x", None], [{"g": 1}, {"g": 2}]
        )
    rng = np.random.default_rng(0)
    out, _ = check_directory(data, config, [model], must_reach=0, rng=rng)
    assert out.lost == 1 and out.failures
    with Embeddix.open(data) as db:
        db.get_collection("c").add(["c", "d"], vectors(7, 4)[2:], ["z", None], [{"g": 3}, {"g": 4}])
    out, _ = check_directory(data, config, [model], must_reach=0, rng=rng)
    assert out.resurrected == 1 and out.failures
    # a store holding "d" is the state before an op deleting "d": allowed while that op is in flight
    # (must_reach=0), a lost write once it was acknowledged (must_reach=1)
    with_d = apply(model, {"op": "add", "ids": ["d"], "vseed": 7, "docs": [None], "metas": [{"g": 4}]})
    with_d["d"] = (vectors(7, 4)[3].tobytes(), None, '{"g": 4}')
    history = [with_d, model]
    out, _ = check_directory(data, config, history, must_reach=0, rng=rng)
    assert not out.failures and out.in_flight_absent == 1
    out, _ = check_directory(data, config, history, must_reach=1, rng=rng)
    assert out.failures and out.resurrected == 1


_CRASH_BEFORE_MANIFEST = textwrap.dedent(
    """
    import os, sys, numpy as np
    from embeddix_core import Embeddix
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    db = Embeddix.open(sys.argv[1])
    col = db.create_collection("c", dim=16, index_threshold=100, segment_size=100)
    col.add([str(i) for i in range(300)], x)
    assert col.checkpoint()                    # snapshot at seq 1: hnsw-1-0.bin .. hnsw-1-2.bin
    real = os.replace
    def replace(src, dst):
        if str(dst).endswith("manifest.json"):
            os._exit(0)                        # the process dies before the new manifest is in place
        real(src, dst)
    os.replace = replace                       # every atomic rename in the process goes through it
    col.compact()                              # a new snapshot at the same seq 1
    """
)


def test_a_snapshot_at_the_same_seq_never_overwrites_files_the_manifest_names(tmp_path: Path) -> None:
    """Found by the kill loop (normal-segmented-compact): a kill inside compact()'s snapshot at an unchanged
    seq left the old manifest naming files the new snapshot had overwritten (fixed: names carry the id)."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-c", _CRASH_BEFORE_MANIFEST, str(data)], check=True, env=child_env())
    from embeddix_core import Embeddix

    with warnings.catch_warnings(record=True) as caught, Embeddix.open(data) as db:
        warnings.simplefilter("always")
        assert len(db.get_collection("c")) == 300
    assert not [str(w.message) for w in caught]


_CRASH_BEFORE_RECORD = textwrap.dedent(
    """
    import os, sys, numpy as np
    from embeddix_core import Embeddix
    from embeddix_core.storage.sqlite import Store
    x = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    db = Embeddix.open(sys.argv[1])
    col = db.create_collection("c", dim=16, index_threshold=100)
    col.add([str(i) for i in range(300)], x[:300])
    assert col.checkpoint()                   # snapshot 1, recorded in the store
    col.add([str(i) for i in range(300, 400)], x[300:])
    Store.record_snapshot = lambda *a, **k: os._exit(0)  # killed after the manifest, before the record
    col.checkpoint()
    """
)


def test_a_kill_inside_checkpoint_leaves_a_snapshot_the_next_open_uses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-c", _CRASH_BEFORE_RECORD, str(data)], check=True, env=child_env())
    from embeddix_core import Embeddix

    with warnings.catch_warnings(record=True) as caught, Embeddix.open(data) as db:
        warnings.simplefilter("always")
        col = db.get_collection("c")
        assert len(col) == col.count() == 400
    assert not [str(w.message) for w in caught]


_CRASH_BEFORE_NEXT_MANIFEST = textwrap.dedent(
    """
    import os, sys, numpy as np
    from embeddix_core import Embeddix
    from embeddix_core.index import live
    x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    db = Embeddix.open(sys.argv[1])
    col = db.get_collection("c")               # opened from the manifest the store holds only as pending
    col.add([str(i) for i in range(400, 500)], x[400:])
    live.write_snapshot = lambda *a, **k: os._exit(0)  # killed after begin_snapshot, before the manifest
    col.checkpoint()
    """
)


def test_a_second_kill_inside_checkpoint_still_finds_the_first_snapshot(tmp_path: Path) -> None:
    """Found by the kill loop (full-segmented-snapshot): a checkpoint killed after its manifest, then the
    next one killed before its manifest, left a manifest the store no longer vouched for (a rebuild)."""
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-c", _CRASH_BEFORE_RECORD, str(data)], check=True, env=child_env())
    second = [sys.executable, "-c", _CRASH_BEFORE_NEXT_MANIFEST, str(data)]
    subprocess.run(second, check=True, env=child_env())
    from embeddix_core import Embeddix

    with warnings.catch_warnings(record=True) as caught, Embeddix.open(data) as db:
        warnings.simplefilter("always")
        col = db.get_collection("c")
        assert len(col) == col.count() == 500
    assert not [str(w.message) for w in caught]
