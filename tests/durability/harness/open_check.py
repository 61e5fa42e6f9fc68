"""Open a (possibly damaged) data directory and check it, in a process of its own.

Run as ``python -m durability.harness.open_check <data dir>``. Loaders of untrusted files may crash
natively (hnswlib reads a graph file without bounds checks), so the test runs this in a subprocess and
judges it by its exit code:

* 0: opened; every collection answered consistently. Prints one JSON line: per collection the store
  count, ``len(col)``, self-hits, and the warnings raised while opening.
* 10 (``TYPED_EXIT``): opening or reading raised a ``StorageError`` (``CorruptionError``,
  ``FormatVersionError``); prints ``TYPED <class name>: <message>``.
* 11 (``MISMATCH_EXIT``): opened, but answered wrongly (the JSON line says how).
* anything else: a raw exception (1, with a traceback on stderr) or death by a signal (negative).

Checks per collection: ``len(col) == col.count()`` == records scanned; no id scanned twice; every hit of a
search is a record of that collection (ids are prefixed with the collection's name, so another
collection's or directory's record is recognised); every record with a finite vector finds itself at k=1
(at least 95% of them for HNSW).
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np

__all__ = ["MISMATCH_EXIT", "TYPED_EXIT", "main"]

TYPED_EXIT = 10
MISMATCH_EXIT = 11


def _check(db: object, name: str) -> dict[str, object]:
    col = db.get_collection(name)  # type: ignore[attr-defined]
    recs = list(col.scan(include_vectors=True))
    ids = [r.id for r in recs]
    out: dict[str, object] = {"count": col.count(), "len": len(col), "scanned": len(recs)}
    problems: list[str] = []
    if not out["count"] == out["len"] == out["scanned"]:
        problems.append(f"len(col)={out['len']}, count()={out['count']}, scanned {out['scanned']}")
    if len(set(ids)) != len(ids):
        problems.append("an id is stored twice")
    good = [r for r in recs if r.vector is not None and np.isfinite(r.vector).all() and r.vector.any()]
    out["damaged_vectors"] = len(recs) - len(good)
    own = set(ids)
    foreign: list[str] = []
    self_hits = 0
    if good:
        tops = col.search_batch(np.stack([r.vector for r in good]), k=3, num_threads=1)
        for rec, top in zip(good, tops, strict=True):
            hit_ids = [h.id for h in top]
            foreign += [h for h in hit_ids if h not in own or not h.startswith(f"{name}-")]
            self_hits += bool(hit_ids) and hit_ids[0] == rec.id
        rng = np.random.default_rng(0)
        for q in rng.standard_normal((10, good[0].vector.shape[0])).astype(np.float32):
            foreign += [
                h.id for h in col.search(q, k=10) if h.id not in own or not h.id.startswith(f"{name}-")
            ]
    out["self_hits"] = self_hits
    out["finite"] = len(good)
    if foreign:
        problems.append(f"search returned records not in this collection: {sorted(set(foreign))[:5]}")
    if self_hits < 0.95 * len(good):
        problems.append(f"only {self_hits} of {len(good)} records find themselves at k=1")
    out["problems"] = problems
    return out


def main(argv: list[str]) -> int:
    from embeddix_core import Embeddix
    from embeddix_core.errors import StorageError

    result: dict[str, object] = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Embeddix.open(argv[0]) as db:
                for name in sorted(db.list_collections()):
                    result[name] = _check(db, name)
        result["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    except StorageError as exc:
        print(f"TYPED {type(exc).__name__}: {exc}", flush=True)
        return TYPED_EXIT
    print(json.dumps(result), flush=True)
    bad = any(isinstance(v, dict) and v.get("problems") for v in result.values())
    return MISMATCH_EXIT if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
