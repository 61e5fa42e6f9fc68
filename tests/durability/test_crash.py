"""Durability: every acknowledged write survives kill -9; torn snapshots are detected; two processes share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from embeddix_core import Embeddix

ROOT = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from embeddix_core import Embeddix
    db = Embeddix.open({path!r})
    col = db.get_or_create_collection("c", dim=16, index_threshold=200)
    rng = np.random.default_rng(int(sys.argv[1]))
    i = 0
    while True:
        n = int(rng.integers(1, 20))
        ids = [f"{{sys.argv[1]}}-{{i + j}}" for j in range(n)]
        col.add(ids, rng.standard_normal((n, 16)).astype("float32"), metadatas=[{{"w": sys.argv[1]}}] * n)
        if i % 7 == 0:
            col.delete([ids[0]])
            print("D", ids[0], flush=True)
        for rid in ids:
            print("A", rid, flush=True)
        i += n
    """
)


def _run_and_kill(path: Path, seed: int, seconds: float) -> tuple[set[str], set[str]]:
    script = WRITER.format(root=str(ROOT), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", script, str(seed)], stdout=subprocess.PIPE, text=True)
    time.sleep(seconds)
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    added, deleted = set(), set()
    for line in out.splitlines():
        kind, _, rid = line.partition(" ")
        if kind == "A" and rid:
            added.add(rid)
        elif kind == "D" and rid:
            deleted.add(rid)
    return added, deleted


@pytest.mark.slow
def test_acknowledged_writes_survive_kill9(tmp_path: Path) -> None:
    path = tmp_path / "data"
    acknowledged: set[str] = set()
    deleted: set[str] = set()
    for round_, secs in enumerate((2.5, 3.0)):
        a, d = _run_and_kill(path, round_, secs)
        assert a, "the writer acknowledged nothing before it was killed"
        acknowledged |= a
        deleted |= d
    with Embeddix.open(path) as db:
        col = db.get_collection("c")
        live = acknowledged - deleted
        got = col.get(sorted(live), include_vectors=True)
        missing = [rid for rid, rec in zip(sorted(live), got, strict=True) if rec is None]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        assert all(col.get(rid) is None for rid in deleted)
        # the index agrees with the store: every stored record is findable by its own vector
        for rec in got[:: max(1, len(got) // 50)]:
            assert rec is not None
            assert col.search(rec.vector, k=1)[0].id == rec.id


def test_torn_snapshot_is_detected_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "data"
    x = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    with Embeddix.open(path) as db:
        db.create_collection("c", dim=8, index_threshold=100).add([str(i) for i in range(400)], x)
    snaps = list((path / "indexes").rglob("hnsw-*.bin"))
    assert len(snaps) == 1
    with open(snaps[0], "r+b") as fh:  # tear it: flip bytes in the middle
        fh.seek(snaps[0].stat().st_size // 2)
        fh.write(b"\x00garbage\x00")
    with pytest.warns(RuntimeWarning, match="rebuilding"), Embeddix.open(path) as db:
        col = db.get_collection("c")
        assert len(col) == 400 and col.search(x[17], k=1)[0].id == "17"
    # the close above wrote a fresh snapshot, which loads without warnings
    with Embeddix.open(path) as db:
        assert db.get_collection("c").search(x[5], k=1)[0].id == "5"


def test_future_snapshot_format_is_rebuilt_not_loaded(tmp_path: Path) -> None:
    import json

    path = tmp_path / "data"
    x = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    with Embeddix.open(path) as db:
        db.create_collection("c", dim=8, index_threshold=100).add([str(i) for i in range(300)], x)
    manifest = next((path / "indexes").rglob("manifest.json"))
    data = json.loads(manifest.read_text())
    data["format_version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.warns(RuntimeWarning, match="format"), Embeddix.open(path) as db:
        assert db.get_collection("c").search(x[3], k=1)[0].id == "3"


def test_two_processes_share_one_directory(tmp_path: Path) -> None:
    path = tmp_path / "data"
    x = np.random.default_rng(2).standard_normal((50, 8)).astype(np.float32)
    with Embeddix.open(path) as db:
        col = db.create_collection("c", dim=8)
        col.add([str(i) for i in range(40)], x[:40])
        other = textwrap.dedent(
            f"""
            import sys, numpy as np
            sys.path.insert(0, {str(ROOT)!r})
            from embeddix_core import Embeddix
            x = np.random.default_rng(2).standard_normal((50, 8)).astype(np.float32)
            with Embeddix.open({str(path)!r}) as db:
                col = db.get_collection("c")
                assert len(col) == 40
                col.add([str(i) for i in range(40, 50)], x[40:])
                col.delete(["0"])
                print(len(col))
            """
        )
        out = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "49"
        # this process catches up from the store before it searches
        assert col.search(x[45], k=1)[0].id == "45"
        assert "0" not in {h.id for h in col.search(x[0], k=3)}
        assert len(col) == 49
        col.add(["mine"], x[0])
        assert col.search(x[0], k=1)[0].id == "mine"
