"""Processes that exit without ``close()`` end normally, and leave a directory that opens again.

Issue #12: processes that calibrated, searched from a thread pool and exited without closing died of
SIGABRT ("terminate called without an active exception") in 2 of 5 runs: a background thread was still
inside native code when the interpreter shut down. Here several such processes run at once, each in one
of the ways a program ends without closing - falling off the end, ``sys.exit`` while the calibration
runs, an uncaught exception - and every one must end with its own exit code, never a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import embeddix_core
from embeddix_core import Embeddix

CODE_ROOT = str(Path(embeddix_core.__file__).resolve().parents[1])
N = 1500
DIM = 32

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np
    from embeddix_core import Embeddix

    path, variant, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    db = Embeddix.open(path)
    col = db.get_or_create_collection("c", dim={dim}, index_threshold=100)
    if len(col) == 0:
        vecs = rng.standard_normal(({n}, {dim})).astype("float32")
        for s in range(0, {n}, 250):  # batches: the write buffer flushes in the background meanwhile
            col.add([f"r{{i}}" for i in range(s, s + 250)], vecs[s : s + 250],
                    metadatas=[{{"g": i % 3}} for i in range(s, s + 250)])
    queries = rng.standard_normal((64, {dim})).astype("float32")
    if variant == "exit-mid-calibration":
        # the background calibration starts once the collection is big enough and writes are quiet
        deadline = time.monotonic() + 30
        while col._cal.thread is None and time.monotonic() < deadline:
            col.search(queries[0], 5)
            time.sleep(0.01)
        sys.exit(0)
    pool = ThreadPoolExecutor(4)
    futures = [pool.submit(col.search, q, 10, filter={{"g": i % 3}} if i % 2 else None)
               for i, q in enumerate(queries)]
    if variant == "exception":
        raise RuntimeError("boom at top level")
    if variant == "pool-left-running":
        time.sleep(rng.random() * 0.05)
        sys.exit(0)  # searches still queued in the pool
    for f in futures:
        f.result()
    col.add(["late"], rng.standard_normal({dim}).astype("float32"))  # a write left for replay
    time.sleep(rng.random() * 0.2)
    # falls off the end: no close(), the pool and the background threads are still there
    """
)

# (variant, exit code expected)
VARIANTS = [
    ("fall-off-the-end", 0),
    ("fall-off-the-end", 0),
    ("exit-mid-calibration", 0),
    ("exit-mid-calibration", 0),
    ("pool-left-running", 0),
    ("exception", 1),
]


def _describe(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


@pytest.mark.slow
def test_exit_without_close_never_aborts_and_the_directory_reopens(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDDIX_")}
    env.update(
        PYTHONPATH=CODE_ROOT,
        EMBEDDIX_DURABILITY="normal",
        EMBEDDIX_AUTO_CALIBRATE="true",
        EMBEDDIX_CALIBRATION_MIN_COUNT="500",
        EMBEDDIX_CALIBRATION_QUIET_S="0",
        EMBEDDIX_CALIBRATION_SAMPLE="100",
        EMBEDDIX_WRITE_BUFFER="64",
    )
    script = SCRIPT.format(n=N, dim=DIM)
    # each process its own directory (they run at once), plus a second round on the first directories
    # so that processes also start from what an unclosed one left behind
    runs = [(tmp_path / f"d{i}", variant, expected) for i, (variant, expected) in enumerate(VARIANTS)]
    runs += [(tmp_path / "d0", "exit-mid-calibration", 0), (tmp_path / "d2", "fall-off-the-end", 0)]
    failures = []
    for batch in (runs[: len(VARIANTS)], runs[len(VARIANTS) :]):
        procs = [
            (
                path,
                variant,
                expected,
                subprocess.Popen(
                    [sys.executable, "-c", script, str(path), variant, str(i)],
                    env=env,
                    cwd=tmp_path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for i, (path, variant, expected) in enumerate(batch)
        ]
        for path, variant, expected, proc in procs:
            _, err = proc.communicate(timeout=300)
            if proc.returncode != expected:
                failures.append(
                    f"{path.name} {variant}: {_describe(proc.returncode)} (expected {expected})\n"
                    + err[-1500:]
                )
            elif variant == "exception" and "boom at top level" not in err:
                failures.append(f"{path.name} {variant}: the exception was not reported:\n{err[-1500:]}")
    assert not failures, f"{len(failures)} of {len(runs)} processes ended badly:\n" + "\n".join(failures)

    for path in sorted({r[0] for r in runs}):
        with Embeddix.open(path) as db:
            col = db.get_collection("c")
            count = col.count()
            assert len(col) == count and count in (N, N + 1), (path.name, len(col), count)
            rec = col.get("r7", include_vectors=True)
            assert rec is not None and rec.vector is not None
            assert col.search(rec.vector, 1)[0].id == "r7"
            assert col.search(np.ones(DIM, np.float32), 5, filter={"g": 1})
