"""kill -9 during IVF-PQ training and during ``reconfigure``: nothing acknowledged is lost, and the old
or the new index serves after a restart (never a half-built one)."""

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
DIM = 32

# Writes batches and prints each acknowledged id; with "reconfigure" it first starts a rebuild to IVF-PQ
# of the collection the test prepared, so the kill lands while the new index is being built.
CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from embeddix_core import Embeddix
    mode = sys.argv[1]
    db = Embeddix.open({path!r})
    if mode == "reconfigure":
        col = db.get_collection("c")
        handle = col.reconfigure(quantization="pq")
        print("S started", flush=True)
    else:
        col = db.get_or_create_collection("c", dim={dim}, profile="memory")
    rng = np.random.default_rng(int(sys.argv[2]))
    i = 0
    while True:
        ids = [f"{{mode}}-{{sys.argv[2]}}-{{i + j}}" for j in range(500)]
        col.add(ids, rng.standard_normal((500, {dim})).astype("float32"))
        for rid in ids:
            print("A", rid, flush=True)
        i += 500
    """
)


def _run_and_kill(path: Path, mode: str, seed: int, seconds: float) -> set[str]:
    script = CHILD.format(root=str(ROOT), path=str(path), dim=DIM)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, mode, str(seed)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(seconds)
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    # the last line may be cut short by the kill: only whole lines were acknowledged
    return {line[2:] for line in out.split("\n")[:-1] if line.startswith("A ")}


def _check(path: Path, acknowledged: set[str]) -> str:
    """Every acknowledged record is stored and found by its own vector; returns the serving index."""
    with Embeddix.open(path) as db:
        col = db.get_collection("c")
        ids = sorted(acknowledged)
        got = col.get(ids, include_vectors=True)
        missing = [rid for rid, rec in zip(ids, got, strict=True) if rec is None]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        assert len(col) >= len(acknowledged)
        kind = col.stats().index
        assert kind == ("ivf" if col.config.quantization == "pq" else kind)
        for rec in got[:: max(1, len(got) // 40)]:
            assert rec is not None
            assert col.search(rec.vector, k=1, recall=0.99)[0].id == rec.id
        return kind


@pytest.mark.slow
def test_kill9_during_ivf_pq_training(tmp_path: Path) -> None:
    """Batches cross 10,000 (first training, inside a write) and 40,000 (a background retrain)."""
    acknowledged: set[str] = set()
    seed = 0
    while len(acknowledged) < 12_000 and seed < 8:  # kills at varied points until past the threshold
        acknowledged |= _run_and_kill(tmp_path, "train", seed, (2.5, 4.0, 3.2)[seed % 3])
        seed += 1
    assert len(acknowledged) > 10_000, "the writer never reached the training threshold"
    assert _check(tmp_path, acknowledged) == "ivf"


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [0.8, 3.0])
def test_kill9_during_reconfigure(tmp_path: Path, seconds: float) -> None:
    rng = np.random.default_rng(5)
    with Embeddix.open(tmp_path) as db:
        col = db.create_collection("c", dim=DIM)
        base = [f"base-{i}" for i in range(20_000)]
        col.add(base, rng.standard_normal((20_000, DIM)).astype(np.float32))
    acknowledged = set(base) | _run_and_kill(tmp_path, "reconfigure", 1, seconds)
    kind = _check(tmp_path, acknowledged)
    assert kind in ("hnsw", "ivf")  # the old or the new index, whichever the stored config names
