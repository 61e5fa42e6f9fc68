"""Durability of feedback events: every acknowledged event survives kill -9 (issue #17)."""

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
    col = db.get_collection("c")
    rng = np.random.default_rng(int(sys.argv[1]))
    i = 0
    while True:
        rid = f"r{{int(rng.integers(200))}}"
        user = f"u{{i % 3}}"
        q = rng.standard_normal(8)
        eid = col.feedback(rid, user=user, relevant=bool(i % 2), session="s", query=q)
        print("A", user, eid, flush=True)
        i += 1
    """
)


@pytest.mark.slow
def test_acknowledged_feedback_survives_kill9(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with Embeddix.open(path) as db:
        col = db.create_collection("c", dim=8)
        col.add([f"r{i}" for i in range(200)], np.random.default_rng(0).standard_normal((200, 8)))
    acknowledged: dict[str, set[int]] = {}
    for seed in (1, 2):
        script = WRITER.format(root=str(ROOT), path=str(path))
        proc = subprocess.Popen([sys.executable, "-c", script, str(seed)], stdout=subprocess.PIPE, text=True)
        time.sleep(2.5)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        for line in out.splitlines():
            kind, user, eid = [*line.split(" "), "", ""][:3]
            if kind == "A" and eid:
                acknowledged.setdefault(user, set()).add(int(eid))
    assert sum(map(len, acknowledged.values())) > 0, "the writer acknowledged nothing before it was killed"
    with Embeddix.open(path) as db:
        col = db.get_collection("c")
        store = col._store
        for user, eids in acknowledged.items():
            stored = {r.eid for r in store.feedback_since(col._cid, user, 0)}
            missing = eids - stored
            assert not missing, (
                f"{len(missing)} acknowledged events of {user} lost, e.g. {sorted(missing)[:3]}"
            )
            profile = col.profile(user)
            assert profile.events == len(stored) and profile.version == max(stored)
