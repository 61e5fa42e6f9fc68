"""Where a plain search's time goes, phase by phase, on queries the store never saw (issue #14).

A copy of the prebuilt real-text store (``benchmarks/stores.py``) is opened with default settings, its
row cache warmed, and ``search(q, k=10, ef=40, cache=False)`` runs once per held-out query while thin
timers wrap each phase: the query check (``_query``), sync, calibration bookkeeping, plan, the index
search (native hnswlib inside), the row lookup and the hit objects. Phases nest (``plain`` holds
``top`` and ``to_hits``, ``to_hits`` holds ``rows``), so the columns do not add up to ``total``. The
timers cost ~0.3 us each, charged to the phase they wrap.

Why it exists: warm micro-benchmarks (the same query repeated) put the Python around the native call at
~30 us; on new queries it is ~110 us, because the native search streams 1-2 MB of vectors through the L2
cache and every Python step after it starts cold. This script measures that case.

Run::

    python -m benchmarks.phase_profile            # 1,000 held-out queries
    python -m benchmarks.phase_profile --queries 300

Results: ``benchmarks/results/phase_profile.md``.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import datasets
from benchmarks.stores import build_store
from embeddix_core import Embeddix

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("query", "sync", "remember", "plan", "index", "top", "rows", "to_hits", "plain", "total")


def _wrap(obj: Any, name: str, label: str, out: dict[str, list[float]]) -> None:
    inner: Callable[..., Any] = getattr(obj, name)
    clock = time.perf_counter

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = clock()
        try:
            return inner(*args, **kwargs)
        finally:
            out[label].append(clock() - t)

    setattr(obj, name, timed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=1000)
    args = p.parse_args()
    ds = datasets.real_text()
    src = build_store("realtext")
    work = Path(tempfile.mkdtemp(prefix="embeddix-phase-"))
    try:
        shutil.copytree(src, work / "store")
        db = Embeddix.open(work / "store")
        col = db.get_collection("bench")
        time.sleep(2.0)  # the row cache's warm-up (~0.4 s for 100K rows) finishes
        timings: dict[str, list[float]] = collections.defaultdict(list)
        ex = col._ex
        _wrap(col, "_query", "query", timings)
        _wrap(col, "_sync", "sync", timings)
        _wrap(col._cal, "remember", "remember", timings)
        _wrap(col, "_plan", "plan", timings)
        _wrap(col._live.index, "search", "index", timings)
        _wrap(ex, "top", "top", timings)
        _wrap(ex.rows, "get", "rows", timings)
        _wrap(ex, "to_hits", "to_hits", timings)
        _wrap(ex, "plain", "plain", timings)
        queries = np.asarray(ds.queries[: args.queries], np.float32)
        for q in queries:
            t = time.perf_counter()
            col.search(q, k=10, ef=40, cache=False)
            timings["total"].append(time.perf_counter() - t)
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    skip = min(50, len(queries) // 10)  # the first searches load code and caches
    lines = [
        "# Phases of `search(q, k=10, ef=40, cache=False)` on new queries (realtext 100,000 x 384)",
        "",
        f"Command: `python -m benchmarks.phase_profile --queries {args.queries}`; first {skip} queries "
        "left out. Phases nest (see the script's docstring).",
        "",
        "| phase | p50 us | mean us |",
        "|---|---|---|",
    ]
    for name in PHASES:
        x = np.asarray(timings[name][skip:]) * 1e6
        lines.append(f"| {name} | {np.median(x):.1f} | {x.mean():.1f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "phase_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
