"""Writes under injected I/O errors, run in a process of its own by ``test_io_errors.py``.

``python -m durability.harness.io_child <data dir> <on> <off> <index>``: opens the directory, writes 100
records, then runs ``<on>`` (a shell command that starts the fault: fills a small tmpfs, or creates the
LD_PRELOAD shim's trigger file), tries every kind of write, runs ``<off>``, checks that writes work
again, and prints one JSON object: for each attempted op what it raised (``"ok"``, ``"typed:<class>"`` or
``"raw:<class>"``), and what reads returned while the fault lasted and after it.

``python -m durability.harness.io_child --reopen <data dir>`` opens the directory afresh and prints the
stored ids, ``len(col)`` and ``col.count()`` as JSON (exit 10 with the class name on a StorageError).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np

__all__ = ["main"]


def reopen(data: str) -> int:
    import warnings

    from embeddix_core import Embeddix
    from embeddix_core.errors import StorageError

    try:
        with warnings.catch_warnings(record=True) as caught, Embeddix.open(data) as db:
            warnings.simplefilter("always")
            col = db.get_collection("c")
            out = {"ids": sorted(r.id for r in col.scan()), "len": len(col), "count": col.count()}
            out["warnings"] = [str(w.message) for w in caught]
    except StorageError as exc:
        print(json.dumps({"typed": type(exc).__name__, "message": str(exc)}), flush=True)
        return 10
    print(json.dumps(out), flush=True)
    return 0


def main(argv: list[str]) -> int:
    from embeddix_core import Embeddix
    from embeddix_core.errors import EmbeddixError, StorageError

    if argv[0] == "--reopen":
        return reopen(argv[1])

    data, on, off, index = argv
    threshold = 1_000_000 if index == "exact" else 50
    x = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    report: dict[str, Any] = {"during": {}, "ops": {}}

    def attempt(name: str, fn: Any) -> None:
        try:
            fn()
            report["ops"][name] = "ok"
        except StorageError as exc:
            report["ops"][name] = f"typed:{type(exc).__name__}"
        except EmbeddixError as exc:  # typed, but says nothing about the disk
            report["ops"][name] = f"other:{type(exc).__name__}: {exc}"
        except Exception as exc:
            report["ops"][name] = f"raw:{type(exc).__name__}: {exc}"

    db = Embeddix.open(data)
    col = db.create_collection("c", dim=16, index_threshold=threshold)
    col.add([f"r{i}" for i in range(100)], x[:100], metadatas=[{"g": i % 5} for i in range(100)])
    col.checkpoint()
    col.add([f"p{i}" for i in range(10)], x[340:350])  # not in the snapshot: checkpoint() has work to do
    subprocess.run(on, shell=True, check=True)
    docs = [f"doc {i} " * 40 for i in range(200)]  # large enough to need new pages, not just the cache
    attempt("add", lambda: col.add([f"n{i}" for i in range(100, 300)], x[100:300], docs))
    attempt("upsert", lambda: col.upsert(["r1", "new-1"], x[300:302]))
    attempt("update", lambda: col.update(["r2"], metadatas=[{"g": 9}]))
    attempt("delete", lambda: col.delete(["r3", "r4"]))
    attempt("delete_where", lambda: col.delete(filter={"g": 1}))
    attempt("checkpoint", col.checkpoint)
    during = report["during"]
    try:
        during["count"] = col.count()
        during["len"] = len(col)
        during["ids"] = sorted(r.id for r in col.scan())
        r1 = col.get("r1")
        during["r1_vector_kept"] = (
            r1 is not None and r1.vector is not None and bool(np.array_equal(r1.vector, x[1]))
        )
        live = set(during["ids"])
        during["self_misses"] = [
            f"r{i}" for i in range(5, 100) if f"r{i}" in live and col.search(x[i], k=1)[0].id != f"r{i}"
        ]
    except Exception as exc:
        during["error"] = f"{type(exc).__name__}: {exc}"
    subprocess.run(off, shell=True, check=True)
    after: dict[str, Any] = {}
    report["after"] = after
    try:
        col.add([f"late{i}" for i in range(50)], x[350:400])
        after["count"] = col.count()
        after["len"] = len(col)
        after["late_found"] = sum(col.search(x[350 + i], k=1)[0].id == f"late{i}" for i in range(50))
        db.close()
    except Exception as exc:
        after["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
