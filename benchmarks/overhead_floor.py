"""Where a single search's time goes above raw hnswlib, layer by layer, in one process.

Why: the default-path acceptance (#14) asks ``search(q, k=10, ef=E, cache=False)`` for at most 1.1x raw
hnswlib's ``knn_query`` at E. Raw hnswlib returns two arrays; a search returns hits, each with its id,
document, parsed metadata and score. This script times, on the engine's own graph and the same
held-out queries, each layer from the bare graph call to the public search, so the share of the gap
that any Python wrapper must pay (building the hits) is separated from the share the engine's own code
adds (checks, planning, the gate, bookkeeping).

Protocol: a collection of the real-text set is ingested as a user would (``create_collection`` with
defaults, 1,000 records per ``add``, documents and metadata), background calibration is let finish,
then each held-out query runs once through every layer below, in an order rotated query by query
(the first layer to touch a query's graph nodes pays their cache misses), each after evicting L2 as
``default_path_bench`` does:

* ``raw``: ``hnswlib.Index.knn_query`` on the collection's graph (beam-as-k at ef E, as the engine
  asks it), nothing else.
* ``labels``: the index's single-query path (``search_one``: the gate, the call, two lists).
* ``floor``: the least a search returning hits can do with the engine's parts: query normalization
  (compiled), ``search_one``, hits from the row cache (compiled), a ``Hits``.
* ``explicit``: ``col.search(q, k=10, ef=E, cache=False)``.

Run: ``python -m benchmarks.overhead_floor`` (``--n 20000`` for a quick run). Writes
``benchmarks/results/overhead_floor.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks import datasets

RESULTS = Path(__file__).resolve().parent / "results"
K = 10
_EVICT = np.ones(1 << 19, np.float32)  # 2 MiB: this machine's L2 per core (see default_path_bench)


def _calibrating() -> bool:
    return any(t.name.startswith("embeddix-calibrate-") for t in threading.enumerate())


def run(n: int | None, ef: int, queries: int) -> dict[str, Any]:
    from embeddix_core import Embeddix
    from embeddix_core._native import new_hits
    from embeddix_core._validate import prepared_query

    ds = datasets.real_text()
    assert ds.path is not None and ds.base_texts is not None
    n = min(n or ds.n_base, ds.n_base)
    base = np.load(ds.path / "base.npy", mmap_mode="r")
    qs = np.ascontiguousarray(ds.queries[:queries], dtype=np.float32)
    work = Path(tempfile.mkdtemp(prefix="embeddix-overhead-"))
    try:
        db = Embeddix.open(work / "d")
        col = db.create_collection("bench", dim=ds.dim, metric="cosine")
        t0 = time.perf_counter()
        for s in range(0, n, 1000):
            e = min(n, s + 1000)
            col.add(
                [f"doc-{i}" for i in range(s, e)],
                np.asarray(base[s:e], dtype=np.float32),
                documents=ds.base_texts[s:e],
                metadatas=[ds.metadata_for(i) for i in range(s, e)],
            )
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        while _calibrating() and time.perf_counter() - t0 < 600:
            time.sleep(0.05)
        index = col._live.index
        index.join()  # the write buffer flushed: one graph holds every vector
        segs = getattr(index, "_segs", None)
        if not segs or len(segs) != 1 or not hasattr(segs[0], "_index"):
            raise RuntimeError(f"expected one hnswlib segment, got {type(index).__name__}")
        seg = segs[0]
        graph = seg._index
        rows, dim, loads = col._ex.rows, ds.dim, orjson.loads
        plan = col._plan(K, None, None, ef)

        def raw(q: np.ndarray) -> Any:
            return graph.knn_query(q, k=ef)  # the engine leaves the index-wide ef at 1: beam-as-k

        def labels(q: np.ndarray) -> Any:
            return seg.search_one(q, K, ef)

        def floor(q: np.ndarray) -> Any:
            found = seg.search_one(prepared_query(q, dim, True), K, ef)
            assert found is not None
            hits = rows.hits(found[0], found[1], False, "cosine", loads, None)
            assert hits is not None, "a row is not in the row cache"
            return new_hits(hits, False, plan)

        def explicit(q: np.ndarray) -> Any:
            return col.search(q, k=K, ef=ef, cache=False)

        layers = {"raw": raw, "labels": labels, "floor": floor, "explicit": explicit}
        names = list(layers)
        unit = qs / np.linalg.norm(qs, axis=1, keepdims=True)  # raw and labels take the prepared query
        lat: dict[str, list[float]] = {name: [] for name in names}
        for i in range(len(qs)):
            r = i % len(names)
            for name in names[r:] + names[:r]:
                q = qs[i] if name in ("floor", "explicit") else unit[i]
                _EVICT.sum()
                t = time.perf_counter()
                layers[name](q)
                lat[name].append(time.perf_counter() - t)
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    p50 = {name: float(np.median(v)) * 1e3 for name, v in lat.items()}
    return {
        "dataset": ds.name,
        "n": n,
        "ef": ef,
        "queries": len(qs),
        "ingest_s": ingest_s,
        "p50_ms": p50,
        "p99_ms": {name: float(np.percentile(v, 99)) * 1e3 for name, v in lat.items()},
        "over_raw": {name: p50[name] / p50["raw"] for name in names},
    }


def render(out: dict[str, Any]) -> str:
    lines = [
        f"# Search overhead by layer ({out['dataset']}, n={out['n']:,}, ef={out['ef']}, "
        f"{out['queries']} held-out queries, cold L2 each)",
        "",
        "| layer | p50 ms | p99 ms | over raw |",
        "|---|---|---|---|",
    ]
    for name, p50 in out["p50_ms"].items():
        lines.append(f"| {name} | {p50:.3f} | {out['p99_ms'][name]:.3f} | {out['over_raw'][name]:.2f}x |")
    lines += [
        "",
        "`floor` is the least a search that returns hits (id, document, parsed metadata, score) can do "
        "with the engine's compiled parts; `explicit` minus `floor` is what the engine's own Python "
        "adds (checks, planning, bookkeeping).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="records (default: the whole data set)")
    ap.add_argument("--ef", type=int, default=40, help="beam width of every layer (default 40)")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries (default 1000)")
    args = ap.parse_args(argv)
    out = run(args.n, args.ef, args.queries)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overhead_floor.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "overhead_floor.md").write_text(render(out))
    print(render(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
