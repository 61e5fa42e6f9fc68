"""Long reliability tier: the kill -9 loop of ``tests/durability`` for thousands of iterations.

The same harness as ``tests/durability/test_kill_loop.py`` (``tests/durability/harness``): a child runs a
seeded random workload (add, upsert, update, delete by id and by filter, clear, compact, checkpoint,
reopen) across durability ("full", "normal") x index (exact, HNSW, segmented HNSW) x background activity
(write-buffer flushes, a checkpoint thread, compaction, auto-calibration), is SIGKILLed at a random
moment, and the reopened directory is checked against the model of every acknowledged op. The CI run
does 200 kills; this does as many as asked.

Run::

    python -m benchmarks.reliability_long --iterations 5000

Results: benchmarks/results/reliability_long.json (iterations, configurations, faults injected, ops
verified, lost, resurrected, duplicates, failures). Exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from durability.harness.loop import run_matrix  # noqa: E402
from durability.harness.workload import configs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "reliability_long.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--iterations", type=int, default=5000, help="kills in total, split over configurations"
    )
    parser.add_argument("--kills-per-dir", type=int, default=8, help="kills in a row on one data directory")
    parser.add_argument("--lanes", type=int, default=2, help="directories worked on at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    cells = configs()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="embeddix-reliability-") as tmp:
        stats = run_matrix(
            Path(tmp),
            cells,
            args.iterations,
            kills_per_dir=args.kills_per_dir,
            seed=args.seed,
            lanes=args.lanes,
        )
    seconds = time.perf_counter() - start
    data = asdict(stats)
    result = {
        "iterations": stats.iterations,
        "configurations": [c.name for c in cells],
        "faults_injected": stats.faults_injected,
        "ops_verified": stats.ops_verified,
        "lost": stats.lost,
        "resurrected": stats.resurrected,
        "duplicates": stats.duplicates,
        "in_flight_applied": stats.in_flight_applied,
        "in_flight_absent": stats.in_flight_absent,
        "child_errors": stats.child_errors,
        "failures": len(stats.failures),
        "failure_examples": data["failures"][:50],
        "rebuild_warnings": len(stats.warnings),
        "warning_examples": data["warnings"][:20],
        "kills_per_dir": args.kills_per_dir,
        "seed": args.seed,
        "seconds": round(seconds, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"{stats.iterations} kills over {len(cells)} configurations in {seconds:.0f} s: "
        f"{stats.ops_verified} acknowledged ops verified, lost {stats.lost}, resurrected {stats.resurrected}, "
        f"duplicates {stats.duplicates}, {len(stats.failures)} failures, {len(stats.warnings)} rebuild warnings "
        f"-> {args.out}"
    )
    return 1 if stats.failures or stats.lost or stats.resurrected or stats.duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
